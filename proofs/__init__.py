"""Machine-checked derivations of the formulas retrystorm relies on.

Each module states a group of theorems and checks them with sympy; the
Markdown file beside it gives the statement, assumptions, steps, sources and
the package functions that rely on it. ``python -m proofs`` runs them all.
"""

from __future__ import annotations

from proofs import (
    amplification,
    birth_death,
    erlang_a,
    fluid_equilibria,
    limits,
    mmc,
    mmcd,
    mmck,
)
from proofs._framework import Theorem

__all__ = ["ALL_THEOREMS"]

ALL_THEOREMS: tuple[Theorem, ...] = (
    *mmc.THEOREMS,
    *mmck.THEOREMS,
    *erlang_a.THEOREMS,
    *mmcd.THEOREMS,
    *amplification.THEOREMS,
    *fluid_equilibria.THEOREMS,
    *limits.THEOREMS,
    *birth_death.THEOREMS,
)
