"""M/M/c/K: closed forms of the bounded queue and its limit M/M/c as K -> oo.

The chain is M/M/c cut at ``K`` requests in the system (``m = K - c`` waiting
places); arrivals that find ``K`` present are refused. Write-up: ``mmck.md``.
"""

from __future__ import annotations

import sympy as sp

from proofs._framework import Theorem, induction, show_equal, symbolic
from proofs._symbols import S, a, c, lam, mu, rho
from proofs.mmc import ERLANG_C, MEAN_QUEUE, MEAN_WAIT

__all__ = [
    "BLOCKING",
    "MEAN_QUEUE_K",
    "MEAN_WAIT_K",
    "NORMALISER",
    "THEOREMS",
    "WAIT_PROBABILITY_K",
    "m",
]

m = sp.Symbol("m", integer=True, nonnegative=True)  # waiting places, K - c
j = sp.Symbol("j", integer=True, nonnegative=True)
r = sp.Symbol("r", positive=True)  # the utilisation rho as a free symbol, r != 1

x_c = a**c / sp.factorial(c)


def _geometric(top: sp.Expr, ratio: sp.Expr = rho) -> sp.Expr:
    """Closed form of ``sum_{j=0}^{top} ratio^j`` (ratio != 1)."""
    return (1 - ratio ** (top + 1)) / (1 - ratio)


def _weighted_geometric(top: sp.Expr, ratio: sp.Expr = rho) -> sp.Expr:
    """Closed form of ``sum_{j=0}^{top} j ratio^j`` (ratio != 1)."""
    return (
        ratio
        * (1 - (top + 1) * ratio**top + top * ratio ** (top + 1))
        / (1 - ratio) ** 2
    )


# The proved expressions, in lambda, mu, c, m = K - c and S(c - 1), for rho != 1.
NORMALISER = S(c - 1) + x_c * _geometric(m)
BLOCKING = x_c * rho**m / NORMALISER
MEAN_QUEUE_K = x_c * _weighted_geometric(m) / NORMALISER
THROUGHPUT_K = lam * (1 - BLOCKING)
MEAN_WAIT_K = MEAN_QUEUE_K / THROUGHPUT_K  # admitted requests, by Little's law
# P(an admitted request waits) = P(c <= N <= K - 1) / (1 - P(N = K)), by PASTA.
WAIT_PROBABILITY_K = x_c * _geometric(m - 1) / NORMALISER / (1 - BLOCKING)


@symbolic(
    "top state K = c + m: c mu pi_K = lambda pi_{K-1}; the other states as in M/M/c"
)
def _balance_at_top() -> None:
    top = x_c * rho**m
    show_equal(c * mu * top, lam * x_c * rho ** (m - 1), "balance at K")


_finite_geometric = induction(
    "sum_{j=0}^{m} rho^j = (1 - rho^(m+1)) / (1 - rho) for rho != 1",
    m,
    start=0,
    initial=sp.Integer(1),
    recurrence=lambda previous, top: previous + r ** (top + 1),
    closed=lambda top: _geometric(top, r),
)

_finite_weighted = induction(
    "sum_{j=0}^{m} j rho^j = rho (1 - (m+1) rho^m + m rho^(m+1)) / (1 - rho)^2",
    m,
    start=0,
    initial=sp.Integer(0),
    recurrence=lambda previous, top: previous + (top + 1) * r ** (top + 1),
    closed=lambda top: _weighted_geometric(top, r),
)


@symbolic(
    "mean busy servers = throughput / mu (summing the cut equations lambda pi_{k-1} = "
    "min(k, c) mu pi_k over k = 1..K)"
)
def _busy_is_throughput() -> None:
    k = sp.Symbol("k", integer=True, positive=True)
    below = a**k / sp.factorial(k)
    show_equal(lam * below.subs(k, k - 1), k * mu * below, "cut below c")
    show_equal(lam * x_c * rho**j, c * mu * x_c * rho ** (j + 1), "cut above c")


@symbolic("one server, one place (K = 2): blocking = rho^2 / (1 + rho + rho^2)")
def _small_case() -> None:
    value = BLOCKING.subs({c: 1, m: 1}).subs(S(0), 1)
    show_equal(value, rho.subs(c, 1) ** 2 / (1 + a + a**2), "M/M/1/2 blocking")


# --- K -> oo ------------------------------------------------------------------

v = sp.Symbol("v", positive=True)  # rho = exp(-v) covers 0 < rho < 1


def _limit(expr: sp.Expr) -> sp.Expr:
    """Limit of ``expr`` as m -> oo with rho = exp(-v), v > 0 (so rho < 1)."""
    written = expr.subs(lam, sp.exp(-v) * c * mu)
    return sp.limit(written, m, sp.oo).subs(v, -sp.log(rho))


@symbolic(
    "as K -> oo with rho < 1: the normaliser tends to S(c-1) + (a^c/c!)/(1 - rho)"
)
def _normaliser_limit() -> None:
    show_equal(_limit(NORMALISER), S(c - 1) + x_c / (1 - rho), "normaliser")


@symbolic(
    "blocking -> 0, P(wait) -> Erlang C, E[Q] -> C rho/(1 - rho), E[W] -> C/(c mu - "
    "lambda), throughput -> lambda"
)
def _limits() -> None:
    show_equal(_limit(BLOCKING), 0, "blocking")
    show_equal(_limit(WAIT_PROBABILITY_K), ERLANG_C, "wait probability")
    show_equal(_limit(MEAN_QUEUE_K), MEAN_QUEUE, "mean queue")
    show_equal(_limit(MEAN_WAIT_K), MEAN_WAIT, "mean wait")
    show_equal(_limit(THROUGHPUT_K), lam, "throughput")


THEOREMS = (
    Theorem(
        key="mmck.closed_form",
        title="M/M/c/K: blocking, mean queue, wait probability in closed form",
        statement=(
            "with m = K - c, Z = S(c-1) + (a^c/c!)(1 - rho^(m+1))/(1 - rho): P(block) "
            "= (a^c/c!) rho^m / Z, E[Q] = (a^c/c!) sum_j j rho^j / Z, throughput "
            "lambda (1 - P(block)), E[W] = E[Q] / throughput"
        ),
        assumptions=("rho != 1 (the package treats rho = 1 as the limit)", "PASTA"),
        sources=("GrossHarris2008", "Kleinrock1975"),
        used_by=("retrystorm.MMcK",),
        checks=(
            _balance_at_top,
            _finite_geometric,
            _finite_weighted,
            _busy_is_throughput,
            _small_case,
        ),
    ),
    Theorem(
        key="mmck.limit",
        title="M/M/c/K tends to M/M/c as K -> oo when rho < 1",
        statement=(
            "for rho < 1, as K -> oo: P(block) -> 0, P(wait) -> C, E[Q] and E[W] -> "
            "their M/M/c values, throughput -> lambda"
        ),
        assumptions=("0 < rho < 1",),
        sources=("GrossHarris2008",),
        used_by=("retrystorm.MMcK", "retrystorm.MMc"),
        checks=(_normaliser_limit, _limits),
    ),
)
