"""Retry amplification: attempts per request, layers, budgets, adaptive throttling.

Write-up: ``amplification.md``. The package functions are in
``retrystorm.retries``.
"""

from __future__ import annotations

import itertools

import sympy as sp

from proofs._framework import (
    Theorem,
    exhaustive,
    induction,
    show_equal,
    show_nonnegative,
    show_positive,
    show_true,
    symbolic,
)

__all__ = [
    "ATTEMPTS",
    "FORWARDED",
    "THEOREMS",
    "THROTTLE",
    "attempts_closed",
    "p",
    "retries",
]

p = sp.Symbol("p", positive=True)  # failure probability of one attempt, 0 < p < 1
retries = sp.Symbol("R", integer=True, nonnegative=True)
k = sp.Symbol("k", integer=True, nonnegative=True)
layers = sp.Symbol("L", integer=True, nonnegative=True)
lam = sp.Symbol("lambda", positive=True)
budget = sp.Symbol("b", nonnegative=True)
capacity = sp.Symbol("C_s", positive=True)  # the capacity c mu, requests per second
requests = sp.Symbol("requests", nonnegative=True)
accepts = sp.Symbol("accepts", nonnegative=True)
multiplier = sp.Symbol("K", positive=True)


def attempts_closed(probability: sp.Expr, retry_count: sp.Expr) -> sp.Expr:
    """``(1 - p^(R+1)) / (1 - p)``, the proved mean attempts per request."""
    return (1 - probability ** (retry_count + 1)) / (1 - probability)


ATTEMPTS = attempts_closed(p, retries)
THROTTLE = (requests - multiplier * accepts) / (requests + 1)  # when positive
FORWARDED = requests * (1 - THROTTLE)


# --- attempts per request -------------------------------------------------------


@symbolic(
    "attempt k (k = 0..R) is made iff the k attempts before it failed: probability p^k "
    "(independent attempts); the mean is sum_{k=0}^{R} p^k"
)
def _attempt_made() -> None:
    # E[attempts] = sum_k P(attempt k is made), attempts being a sum of indicators.
    show_equal(sp.Sum(p**k, (k, 0, 2)).doit(), 1 + p + p**2, "three attempts")


_geometric = induction(
    "sum_{k=0}^{R} p^k = (1 - p^(R+1)) / (1 - p) for p != 1",
    retries,
    start=0,
    initial=sp.Integer(1),
    recurrence=lambda previous, count: previous + p ** (count + 1),
    closed=lambda count: attempts_closed(p, count),
)


@symbolic(
    "at p = 1 (every attempt fails) the mean is R + 1, the limit of the closed form"
)
def _at_one() -> None:
    show_equal(sp.limit(ATTEMPTS, p, 1), retries + 1, "limit p -> 1")
    show_equal(sp.summation(sp.Integer(1), (k, 0, retries)), retries + 1, "sum of ones")


@symbolic("increasing in R: A(p, R+1) - A(p, R) = p^(R+1) > 0")
def _increasing_in_retries() -> None:
    difference = attempts_closed(p, retries + 1) - ATTEMPTS
    show_equal(difference, p ** (retries + 1), "difference in R")
    show_positive(p ** (retries + 1), "sign")


@symbolic(
    "increasing in p: d/dp sum_{k=0}^{R} p^k = sum_{k=1}^{R} k p^(k-1), every term "
    "positive for p > 0 (strictly increasing for R >= 1)"
)
def _increasing_in_p() -> None:
    j = sp.Symbol("j", integer=True, positive=True)
    show_equal(sp.diff(p**j, p), j * p ** (j - 1), "termwise derivative")
    show_positive(j * p ** (j - 1), "each term")
    show_equal(sp.diff(sp.Sum(p**k, (k, 0, 1)).doit(), p), 1, "the k = 1 term")


# --- layers ---------------------------------------------------------------------

_layers_worst = induction(
    "worst case, every attempt failing: N_0 = 1, N_{L+1} = N_L (R + 1) gives (R + 1)^L",
    layers,
    start=0,
    initial=sp.Integer(1),
    recurrence=lambda previous, _: previous * (retries + 1),
    closed=lambda count: (retries + 1) ** count,
)


def _call_outcomes(
    depth: int, failure: tuple[sp.Symbol, ...], caps: tuple[int, ...]
) -> list[tuple[sp.Expr, sp.Expr, bool]]:
    """Every outcome of one call at ``depth``: (probability, bottom attempts, success).

    A try at the bottom layer fails with probability ``failure[-1]``. A try at
    a higher layer makes one call to the layer below and fails if that call
    fails or, independently, with probability ``failure[depth]``.
    """
    own = failure[depth]
    if depth == len(caps) - 1:
        try_outcomes = [(1 - own, sp.Integer(1), True), (own, sp.Integer(1), False)]
    else:
        try_outcomes = []
        for prob, bottom, ok in _call_outcomes(depth + 1, failure, caps):
            if ok:
                try_outcomes.append((prob * (1 - own), bottom, True))
                try_outcomes.append((prob * own, bottom, False))
            else:
                try_outcomes.append((prob, bottom, False))
    outcomes: list[tuple[sp.Expr, sp.Expr, bool]] = []
    frontier: list[tuple[sp.Expr, sp.Expr]] = [(sp.Integer(1), sp.Integer(0))]
    for _ in range(caps[depth] + 1):
        failed_so_far = []
        for (prob, bottom), (t_prob, t_bottom, t_ok) in itertools.product(
            frontier, try_outcomes
        ):
            if t_ok:
                outcomes.append((prob * t_prob, bottom + t_bottom, True))
            else:
                failed_so_far.append((prob * t_prob, bottom + t_bottom))
        frontier = failed_so_far
    outcomes.extend((prob, bottom, False) for prob, bottom in frontier)
    return outcomes


@exhaustive(
    "Wald's identity through two layers: E[bottom attempts] = A(p_1, R_1) A(p_2, R_2) "
    "with p_1 the failure probability of a top try (its call below fails, or it fails "
    "on its own)",
    "exact enumeration of every outcome, R_1, R_2 in {0, 1, 2}, probabilities symbolic",
)
def _wald_two_layers() -> None:
    own, bottom = sp.symbols("e p_2", positive=True)
    for caps in itertools.product(range(3), repeat=2):
        outcomes = _call_outcomes(0, (own, bottom), caps)
        show_equal(sum(prob for prob, _, _ in outcomes), 1, f"total probability {caps}")
        mean = sum(prob * count for prob, count, _ in outcomes)
        call_fails = bottom ** (caps[1] + 1)
        top_failure = 1 - (1 - own) * (1 - call_fails)
        expected = attempts_closed(top_failure, caps[0]) * attempts_closed(
            bottom, caps[1]
        )
        show_equal(mean, expected, f"mean bottom attempts at R = {caps}")


# --- retry budget ---------------------------------------------------------------


@symbolic(
    "with retries <= b lambda per second, attempts <= (1 + b) lambda; with at most R "
    "retries per request as well (A(p, R) <= A(1, R) = R + 1 by monotonicity in p), "
    "attempts <= min(1 + b, R + 1) lambda"
)
def _budget_bound() -> None:
    slack = sp.Symbol("s", nonnegative=True)
    # retry rate = b lambda - slack (within budget): (1 + b) lambda - attempts = slack
    attempts = lam + (budget * lam - slack)
    show_nonnegative((1 + budget) * lam - attempts, "attempts within (1 + b) lambda")


@symbolic(
    "if (1 + b) lambda < c mu, the attempt rate stays below c mu whatever fails: "
    "retries alone cannot overload the server"
)
def _budget_stability() -> None:
    margin, slack = sp.symbols("m s", positive=True)
    attempts = (1 + budget) * lam - slack  # any attempt rate within the bound
    cap = (1 + budget) * lam + margin  # c mu above the bound
    show_positive(cap - attempts, "capacity above the attempt rate")


# --- adaptive throttling ----------------------------------------------------------


@symbolic("0 <= P < 1: requests - K accepts < requests + 1")
def _throttle_range() -> None:
    show_positive((requests + 1) - (requests - multiplier * accepts), "numerator below")
    show_true(sp.Max(0, THROTTLE) >= 0, "non-negative")


@symbolic(
    "while P > 0 the backend receives requests (1 - P) = requests (1 + K accepts) / "
    "(requests + 1) < 1 + K accepts"
)
def _throttle_forwarded() -> None:
    show_equal(
        FORWARDED, requests * (1 + multiplier * accepts) / (requests + 1), "forwarded"
    )
    show_positive((1 + multiplier * accepts) - FORWARDED, "below 1 + K accepts")


THEOREMS = (
    Theorem(
        key="retries.attempts",
        title="attempts per request: (1 - p^(R+1)) / (1 - p), increasing in p and R",
        statement=(
            "with independent attempts failing with probability p and R retries, the "
            "mean number of attempts is (1 - p^(R+1))/(1 - p) (R + 1 at p = 1), "
            "increasing in p and in R"
        ),
        assumptions=("attempts fail independently with probability p", "0 <= p <= 1"),
        sources=("SREBook2016",),
        used_by=("retrystorm.attempts_per_request",),
        checks=(
            _attempt_made,
            _geometric,
            _at_one,
            _increasing_in_retries,
            _increasing_in_p,
        ),
    ),
    Theorem(
        key="retries.layers",
        title="amplification across retrying layers: (R + 1)^L, and the mean by Wald",
        statement=(
            "worst case prod_i (R_i + 1), = (R + 1)^L for equal layers; mean prod_i "
            "A(p_i, R_i) when the tries of a call are independent and alike"
        ),
        assumptions=(
            "worst case: every attempt fails",
            "mean: whether try k of a call is made depends only on tries 1..k-1 (Wald)",
        ),
        sources=("SREBook2016cascading",),
        used_by=(
            "retrystorm.layered_amplification",
            "retrystorm.expected_layered_attempts",
        ),
        checks=(_layers_worst, _wald_two_layers),
    ),
    Theorem(
        key="retries.budget",
        title="a retry budget b bounds attempts per request by 1 + b",
        statement=(
            "attempt rate <= (1 + b) lambda; (1 + b) lambda < c mu rules out overload"
        ),
        assumptions=(
            "retries per second never exceed b times fresh requests per second",
        ),
        sources=("SREBook2016",),
        used_by=("retrystorm.retry_budget_amplification",),
        checks=(_budget_bound, _budget_stability),
    ),
    Theorem(
        key="retries.throttle",
        title="adaptive throttling keeps the load sent within K accepts + 1",
        statement=(
            "P = max(0, (requests - K accepts)/(requests + 1)) lies in [0, 1) and, "
            "while positive, forwards requests (1 + K accepts)/(requests + 1) < 1 + K "
            "accepts"
        ),
        assumptions=("0 <= accepts <= requests", "K > 0"),
        sources=("SREBook2016",),
        used_by=("retrystorm.adaptive_throttle_probability",),
        checks=(_throttle_range, _throttle_forwarded),
    ),
)
