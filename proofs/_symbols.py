"""Symbols and definitions shared by the proofs, with their assumptions.

Rates and times are positive reals, counts are integers. ``S(m)`` stands for
the partial exponential sum ``sum_{i=0}^{m} a^i / i!`` with ``a`` the offered
load; the proofs use only its definition, ``S(0) = 1`` and
``S(m) = S(m - 1) + a^m / m!``, applied by `partial_sum_at_zero` and
`unfold_partial_sum`.
The helpers `evaluate` and `partial_sum_value` turn a proved expression into
a number at given parameters, for the tests that compare it with the package.
"""

from __future__ import annotations

from collections.abc import Mapping

import mpmath
import sympy as sp

__all__ = [
    "S",
    "a",
    "c",
    "evaluate",
    "lam",
    "mu",
    "partial_sum_at_zero",
    "partial_sum_value",
    "rho",
    "t",
    "theta",
    "unfold_partial_sum",
]

lam = sp.Symbol("lambda", positive=True)
mu = sp.Symbol("mu", positive=True)
theta = sp.Symbol("theta", positive=True)
t = sp.Symbol("t", positive=True)
c = sp.Symbol("c", integer=True, positive=True)

a = lam / mu
rho = lam / (c * mu)

S = sp.Function("S")


def unfold_partial_sum(expr: sp.Expr, top: sp.Expr, load: sp.Expr = a) -> sp.Expr:
    """Rewrite ``S(top)`` in ``expr`` as ``S(top - 1) + load^top / top!``.

    This is the definition of the partial sum, the only property of ``S`` the
    proofs rely on (with ``S(0) = 1``, see `partial_sum_at_zero`).
    """
    return expr.subs(S(top), S(top - 1) + load**top / sp.factorial(top))


def partial_sum_at_zero(expr: sp.Expr) -> sp.Expr:
    """Replace ``S(0)`` by its value 1."""
    return expr.subs(S(0), 1)


def partial_sum_value(load: float | mpmath.mpf, m: int, dps: int = 50) -> mpmath.mpf:
    """``sum_{i=0}^{m} load^i / i!`` in ``dps``-digit arithmetic."""
    with mpmath.workdps(dps):
        term = mpmath.mpf(1)
        total = mpmath.mpf(1)
        x = mpmath.mpf(load)
        for i in range(1, m + 1):
            term = term * x / i
            total += term
        return total


def evaluate(expr: sp.Expr, values: Mapping[sp.Symbol, float], dps: int = 50) -> float:
    """Evaluate a proved expression at numbers, with ``S`` summed exactly.

    ``values`` must give every free symbol (``c`` as an int). Each float is
    taken as the exact rational it represents, the result is computed to
    ``dps`` significant digits (sympy raises if cancellation leaves fewer) and
    returned as a float.
    """
    exact = {symbol: sp.Rational(value) for symbol, value in values.items()}
    substituted = expr.subs(exact)
    partial_sums = [
        e for e in substituted.atoms(sp.core.function.AppliedUndef) if e.func == S
    ]
    if partial_sums:
        load = a.subs(exact)
        substituted = substituted.subs(
            {e: _partial_sum_exact(load, int(e.args[0])) for e in partial_sums}
        )
    return float(sp.N(substituted, dps, strict=True))


def _partial_sum_exact(load: sp.Expr, m: int) -> sp.Expr:
    """``sum_{i=0}^{m} load^i / i!`` as an exact rational for a rational load."""
    term = sp.Integer(1)
    total = sp.Integer(1)
    for i in range(1, m + 1):
        term = term * load / i
        total += term
    return total
