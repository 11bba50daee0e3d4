"""Hypothesis strategies shared by the test modules.

Each strategy draws parameters in the units of the public API: rates per
second, times in seconds, whole numbers of servers.
"""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = ["servers", "service_rates", "utilizations"]

servers = st.integers(min_value=1, max_value=500)
service_rates = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)
utilizations = st.floats(min_value=1e-4, max_value=0.999, allow_nan=False)
