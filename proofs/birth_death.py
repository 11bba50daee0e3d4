"""Mean first-passage times of a birth-death chain, in closed form.

A chain on ``0..M`` with birth rates ``b_k`` (``k < M``) and death rates
``d_k`` (``k >= 1``), reflected at ``M``. Write-up: ``birth_death.md``.
"""

from __future__ import annotations

import sympy as sp

from proofs._framework import Theorem, show_equal, symbolic

__all__ = ["THEOREMS", "passage_times", "solved_passage_times"]

# The largest chain whose hitting-time equations are solved in full below.
_LARGEST = 4


def _rates(top: int) -> tuple[list[sp.Symbol], list[sp.Symbol]]:
    """Positive symbols ``b_0..b_(M-1)`` and ``d_1..d_M`` (index k is rate k)."""
    births = list(sp.symbols(f"b0:{top}", positive=True))
    deaths = [sp.Integer(0), *sp.symbols(f"d1:{top + 1}", positive=True)]
    return births, deaths


def passage_times(top: int) -> list[sp.Expr]:
    """The closed form: ``T_n = sum_{k=1}^{n} sum_{j>=k} pi_j / (pi_k d_k)``, n=0..M."""
    births, deaths = _rates(top)
    weights = [sp.Integer(1)]
    for k in range(1, top + 1):
        weights.append(weights[-1] * births[k - 1] / deaths[k])
    steps = [
        sum(weights[k:], sp.Integer(0)) / (weights[k] * deaths[k])
        for k in range(1, top + 1)
    ]
    return [sum(steps[:n], sp.Integer(0)) for n in range(top + 1)]


def solved_passage_times(top: int) -> list[sp.Expr]:
    """The expected times to reach 0, solved from ``Q_BB h = -1`` by sympy."""
    births, deaths = _rates(top)
    times = list(sp.symbols(f"h1:{top + 1}"))
    h = [sp.Integer(0), *times]
    equations = []
    for k in range(1, top + 1):
        up = births[k] * (h[k + 1] - h[k]) if k < top else 0
        equations.append(sp.Eq(up + deaths[k] * (h[k - 1] - h[k]), -1))
    solution = sp.solve(equations, times, dict=True)[0]
    return [sp.Integer(0), *(solution[name] for name in times)]


@symbolic(
    "one step down, tau_k = sum_{j>=k} pi_j / (pi_k d_k), solves "
    "d_k tau_k = 1 + b_k tau_(k+1) for every k < M, and tau_M = 1 / d_M"
)
def _one_step() -> None:
    b, d, d_next, rest = sp.symbols("b_k d_k d_k1 S", positive=True)
    # S = sum_{j>=k+1} pi_j / pi_(k+1); pi_(k+1) / pi_k = b_k / d_(k+1).
    tau_next = rest / d_next
    tau = (1 + b / d_next * rest) / d
    show_equal(d * tau, 1 + b * tau_next, "first-step equation of tau_k")
    pi_top = sp.Symbol("pi_M", positive=True)
    show_equal(pi_top / (pi_top * d), 1 / d, "top state: tau_M = 1 / d_M")


@symbolic(
    f"for M = 1..{_LARGEST}, the solution of the hitting-time equations equals "
    "the sum of the one-step times, from every start state"
)
def _whole_system() -> None:
    for top in range(1, _LARGEST + 1):
        closed, solved = passage_times(top), solved_passage_times(top)
        for n in range(1, top + 1):
            show_equal(solved[n], closed[n], f"M = {top}, start {n}")


@symbolic("M/M/1 cut at M = 3 (b = lambda, d = mu): from 1 to 0 is a busy period")
def _mm1_case() -> None:
    lam, mu = sp.symbols("lambda mu", positive=True)
    births, deaths = _rates(3)
    values = dict.fromkeys(births, lam) | dict.fromkeys(deaths[1:], mu)
    one = passage_times(3)[1].subs(values)
    show_equal(one, (mu**3 - lam**3) / (mu**3 * (mu - lam)), "cut busy period")


THEOREMS = (
    Theorem(
        key="birth_death.passage_time",
        title="birth-death chains: mean first-passage time down, sum of products",
        statement=(
            "with pi_k = prod_{i<k} b_i / d_(i+1), the mean time from n to reach "
            "target m < n is sum_{k=m+1}^{n} sum_{j=k}^{M} pi_j / (pi_k d_k)"
        ),
        assumptions=(
            "b_k > 0 for k < M, d_k > 0 for k >= 1, reflected at M (finite chain)",
        ),
        sources=("KarlinTaylor1975",),
        used_by=(
            "retrystorm.escape.log_mean_passage_time",
            "retrystorm.escape.estimate_escape_time",
        ),
        checks=(_one_step, _whole_system, _mm1_case),
    ),
)
