"""retrystorm: will a short stall turn into a self-sustaining outage?

Queueing models of retries, timeouts and backpressure, for capacity planning
and design reviews. Time is in seconds and rates are per second throughout.
"""

from __future__ import annotations

from retrystorm.errors import (
    ConvergenceError,
    InvalidParameterError,
    RetrystormError,
    ScenarioError,
    StateSpaceTooLargeError,
    UnstableSystemError,
)

__version__ = "0.1.0"

__all__ = [
    "ConvergenceError",
    "InvalidParameterError",
    "RetrystormError",
    "ScenarioError",
    "StateSpaceTooLargeError",
    "UnstableSystemError",
    "__version__",
]
