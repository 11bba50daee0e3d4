"""Erlang-A (M/M/c+M): balance equations, P(abandon) = theta E[Q] / lambda, theta -> 0.

Death rate ``min(k, c) mu + max(k - c, 0) theta`` in state ``k``. The weights
above ``c`` are ``pi_{c+j} = pi_c r_j`` with ``r_0 = 1`` and
``r_{j+1} = r_j lambda / (c mu + (j + 1) theta)``; the proofs use only this
recurrence, through the opaque sequence ``Rj``. Write-up: ``erlang_a.md``.
"""

from __future__ import annotations

import sympy as sp

from proofs._framework import (
    Check,
    Method,
    Theorem,
    branch,
    induction,
    show_equal,
    show_nonnegative,
    symbolic,
)
from proofs._symbols import c, lam, mu, rho, t, theta

__all__ = ["THEOREMS", "abandonment_from_queue", "r_value"]

j = sp.Symbol("j", integer=True, nonnegative=True)
i = sp.Symbol("i", integer=True, positive=True)
Rj = sp.Function("R")  # r_j, the weight of state c + j relative to state c


def _factor(place: sp.Expr, rate: sp.Expr = theta) -> sp.Expr:
    """``lambda / (c mu + place * theta)``: the ratio r_place / r_{place-1}."""
    return lam / (c * mu + place * rate)


def r_value(
    places: int, arrival: float, service: float, servers: int, abandon: float
) -> float:
    """Numerical ``r_places`` from the recurrence (for the tests)."""
    value = 1.0
    for place in range(1, places + 1):
        value *= arrival / (servers * service + place * abandon)
    return value


def abandonment_from_queue(mean_queue: sp.Expr) -> sp.Expr:
    """The proved identity P(abandon) = theta E[Q] / lambda."""
    return theta * mean_queue / lam


# --- balance equations --------------------------------------------------------


@symbolic(
    "states c + j, j >= 1: (lambda + c mu + j theta) pi_{c+j} = lambda pi_{c+j-1} + (c "
    "mu + (j+1) theta) pi_{c+j+1}"
)
def _balance_above() -> None:
    here = Rj(i)
    before = here / _factor(i)  # r_{i-1} = r_i (c mu + i theta) / lambda
    after = here * _factor(i + 1)
    flow_out = (lam + c * mu + i * theta) * here
    flow_in = lam * before + (c * mu + (i + 1) * theta) * after
    show_equal(flow_out, flow_in, "balance at c + j")


@symbolic(
    "state c: (lambda + c mu) pi_c = lambda pi_{c-1} + (c mu + theta) pi_{c+1}; states "
    "below c as in M/M/c"
)
def _balance_at_c() -> None:
    weight_c = (lam / mu) ** c / sp.factorial(c)
    weight_below = (lam / mu) ** (c - 1) / sp.factorial(c - 1)
    flow_out = (lam + c * mu) * weight_c
    flow_in = lam * weight_below + (c * mu + theta) * weight_c * _factor(1)
    show_equal(flow_out, flow_in, "balance at c")


@symbolic(
    "for every theta > 0 the ratio r_{j+1}/r_j tends to 0, so sum_j r_j converges "
    "(ratio test): Erlang-A is stable at every load"
)
def _always_stable() -> None:
    show_equal(sp.limit(_factor(j + 1), j, sp.oo), 0, "limit of the ratio")


# --- P(abandon) = theta E[Q] / lambda -----------------------------------------

_telescoping = induction(
    "a customer with j ahead in the queue is served with probability prod_{l=0}^{j} "
    "(c mu + l theta)/(c mu + (l+1) theta) = c mu / (c mu + (j+1) theta)",
    j,
    start=0,
    initial=c * mu / (c * mu + theta),
    recurrence=lambda previous, ahead: (
        previous * (c * mu + (ahead + 1) * theta) / (c * mu + (ahead + 2) * theta)
    ),
    closed=lambda ahead: c * mu / (c * mu + (ahead + 1) * theta),
)


@symbolic(
    "each stage of that race is won with probability (c mu + l theta)/(c mu + (l+1) "
    "theta): l + 1 exponential clocks of rate c mu (the queue ahead) and l theta (its "
    "patience) against the tagged patience theta"
)
def _race_stage() -> None:
    ell = sp.Symbol("l", integer=True, nonnegative=True)
    ahead_moves = c * mu + ell * theta  # a service or an abandonment ahead
    show_equal(
        ahead_moves / (ahead_moves + theta),
        (c * mu + ell * theta) / (c * mu + (ell + 1) * theta),
        "competing exponentials",
    )


@symbolic(
    "termwise: r_j (j+1) theta / (c mu + (j+1) theta) = (theta / lambda) (j+1) r_{j+1}"
)
def _termwise() -> None:
    abandon_given_j = 1 - c * mu / (c * mu + (j + 1) * theta)
    show_equal(
        Rj(j) * abandon_given_j,
        theta / lam * (j + 1) * Rj(j) * _factor(j + 1),
        "abandonment weight of state c + j",
    )


@symbolic(
    "summing (PASTA; positive terms, so reindexing is allowed): P(abandon) = "
    "(theta/lambda) sum_{j>=1} j pi_{c+j} = theta E[Q] / lambda"
)
def _sum_reindexed() -> None:
    # sum_{j>=0} pi_c (theta/lambda)(j+1) r_{j+1} = (theta/lambda) sum_{k>=1} k pi_c r_k
    shifted = sp.Sum(theta / lam * (j + 1) * Rj(j + 1), (j, 0, sp.oo))
    direct = sp.Sum(theta / lam * j * Rj(j), (j, 1, sp.oo))
    show_equal(shifted.change_index(j, j + 1), direct, "index shift j -> j - 1")


@symbolic(
    "flow conservation: the cut equations lambda pi_{k-1} = d_k pi_k hold for every k "
    ">= 1; summed they give lambda = mu E[busy] + theta E[Q], so the share not served, "
    "1 - mu E[busy]/lambda, is theta E[Q]/lambda"
)
def _flow() -> None:
    k = sp.Symbol("k", integer=True, positive=True)
    below = (lam / mu) ** k / sp.factorial(k)
    show_equal(lam * below.subs(k, k - 1), k * mu * below, "cut below c")
    show_equal(
        lam * Rj(j),
        (c * mu + (j + 1) * theta) * Rj(j) * _factor(j + 1),
        "cut above c",
    )
    busy, queue = sp.symbols("E_busy E_Q", positive=True)
    queue_from_cuts = sp.solve(sp.Eq(lam, mu * busy + theta * queue), queue)[0]
    show_equal(
        1 - mu * busy / lam,
        abandonment_from_queue(queue).subs(queue, queue_from_cuts),
        "share not served",
    )


# --- theta -> 0 ---------------------------------------------------------------


@symbolic("each factor lambda / (c mu + i theta) tends to rho as theta -> 0")
def _factor_limit() -> None:
    show_equal(sp.limit(_factor(i), theta, 0), rho, "factor limit")


_termwise_limit = induction(
    "for each fixed j, lim_{theta->0} r_j = rho^j (a limit of a finite product)",
    j,
    start=0,
    initial=sp.Integer(1),
    recurrence=lambda previous, place: (
        previous * sp.limit(_factor(place + 1), theta, 0)
    ),
    closed=lambda place: rho**place,
)


def _domination_step() -> None:
    # r_{j+1} = r_j * f with r_j <= rho^j and f <= rho, all non-negative:
    # rho^(j+1) - r_{j+1} = rho (rho^j - r_j) + r_j (rho - f) >= 0.
    gap_r, gap_f, r_j = sp.symbols("g_r g_f r_j", nonnegative=True)
    show_nonnegative(rho - _factor(i), "each factor is at most rho")
    power = r_j + gap_r  # rho^j = r_j + g_r
    factor = rho - gap_f  # f = rho - g_f
    show_nonnegative(sp.expand(rho * power - r_j * factor), "inductive step")


_domination = Check(
    "domination: 0 <= r_j <= rho^j for every theta >= 0 (so j r_j <= j rho^j, "
    "summable for rho < 1)",
    Method.INDUCTION,
    _domination_step,
    "on j >= 0; base case r_0 = 1 = rho^0",
)


@symbolic(
    "with the termwise limits and the summable bound, Tannery's theorem gives sum_j "
    "r_j -> 1/(1-rho) and sum_j j r_j -> rho/(1-rho)^2: P(wait), E[Q], E[W] tend to "
    "their M/M/c values and P(abandon) = theta E[Q]/lambda -> 0"
)
def _conclusion() -> None:
    r = sp.Symbol("r", positive=True)
    geometric = sp.summation(r**j, (j, 0, sp.oo))
    weighted = sp.summation(j * r**j, (j, 0, sp.oo))
    show_equal(branch(geometric, r < 1, "series"), 1 / (1 - r), "sum of the limits")
    show_equal(
        branch(weighted, r < 1, "series"), r / (1 - r) ** 2, "sum of j times the limits"
    )
    bound = sp.Symbol("Q_max", positive=True)  # E[Q] <= the M/M/c E[Q] by domination
    show_equal(sp.limit(abandonment_from_queue(bound), theta, 0), 0, "P(abandon) -> 0")


# --- the package's series forms and the waiting-time tail -----------------------

s_sym = sp.Symbol("s", positive=True)  # c mu / theta
z_sym = sp.Symbol("z", positive=True)  # lambda e^{-theta t} / theta
x_sym = sp.Symbol("x", positive=True)  # a level of the offered wait
y_sym = sp.Symbol("y", positive=True)  # an integration variable
p_before = sp.Symbol("p", positive=True)  # pi_{c-1}
p_full = sp.Symbol("pi_c", positive=True)  # pi_c = lambda pi_{c-1} / (c mu)
SeriesA = sp.Function("A")  # A(z) = sum_j z^j / ((s+1)...(s+j)), entire in z
cmu = c * mu


def _series_term(index: sp.Expr) -> sp.Expr:
    """``z^j / ((s+1)...(s+j))``, the j-th term of A(z)."""
    return z_sym**index / sp.rf(s_sym + 1, index)


def _offered_density(level: sp.Expr) -> sp.Expr:
    """``lambda pi_{c-1} exp(lambda H(x) - c mu x)``, ``H(x) = (1 - e^{-theta"
    " x})/theta``."""
    return (
        lam
        * p_before
        * sp.exp(lam * (1 - sp.exp(-theta * level)) / theta - cmu * level)
    )


@symbolic(
    "the package's sums: r_j = z^j/((s+1)...(s+j)) with s = c mu/theta, z = "
    "lambda/theta, and D = sum_j j r_j = s + (z - s) S, S = sum_j r_j (the cut "
    "equations summed)"
)
def _queue_sum_identity() -> None:
    ratio = (_series_term(j + 1) / _series_term(j)).subs(
        {s_sym: cmu / theta, z_sym: lam / theta}
    )
    show_equal(ratio, _factor(j + 1), "r_{j+1} / r_j")
    total, weighted = sp.symbols("S D", positive=True)
    summed_cuts = sp.Eq(lam * total, cmu * (total - 1) + theta * weighted)
    solved = sp.solve(summed_cuts, weighted)[0]
    show_equal(solved, cmu / theta + (lam - cmu) / theta * total, "D = s + (z - s) S")


@symbolic(
    "the offered wait V of M/M/c+M has density lambda pi_{c-1} exp(lambda H(x) - c mu "
    "x), H(x) = (1 - e^{-theta x})/theta: it solves the level-crossing equation f(x) = "
    "lambda pi_{c-1} e^{-c mu x} + lambda int_0^x e^{-theta y} f(y) e^{-c mu (x-y)} dy"
)
def _offered_density_check() -> None:
    rhs = lam * p_before * sp.exp(-cmu * x_sym) + lam * sp.integrate(
        sp.exp(-theta * y_sym)
        * _offered_density(y_sym)
        * sp.exp(-cmu * (x_sym - y_sym)),
        (y_sym, 0, x_sym),
    )
    show_equal(_offered_density(x_sym), rhs, "level crossing")


@symbolic(
    "series lemma: z A(z) = s (A(z) - 1) + z A'(z), from z t_j = (s + j + 1) t_{j+1} "
    "and z d/dz t_j = j t_j, summed over j (A converges for every z)"
)
def _series_lemma() -> None:
    show_equal(
        z_sym * _series_term(j), (s_sym + j + 1) * _series_term(j + 1), "termwise"
    )
    show_equal(
        z_sym * sp.diff(_series_term(j), z_sym), j * _series_term(j), "derivative"
    )
    term = sp.Function("t_term")  # t_j, any summable sequence
    shifted = sp.Sum((s_sym + j + 1) * term(j + 1), (j, 0, sp.oo)).change_index(
        j, j + 1
    )
    show_equal(shifted, sp.Sum((s_sym + j) * term(j), (j, 1, sp.oo)), "index shift")


@symbolic(
    "P(V > t) = pi_c exp(y (1 - e^{-theta t}) - c mu t) A(y e^{-theta t}), y = "
    "lambda/theta: its derivative is minus the density (lemma, and c mu pi_c = lambda "
    "pi_{c-1}) and it tends to 0 as t -> oo (A(0) = 1)"
)
def _offered_tail() -> None:
    y_load = lam / theta

    def tail(at: sp.Expr, z: sp.Expr) -> sp.Expr:
        return p_full * sp.exp(y_load - z - cmu * at) * SeriesA(z)

    z_of_t = y_load * sp.exp(-theta * t)
    derivative = sp.diff(tail(t, z_sym), t) + sp.diff(tail(t, z_sym), z_sym) * sp.diff(
        z_of_t, t
    )
    lemma = (z_sym * SeriesA(z_sym) - s_sym * (SeriesA(z_sym) - 1)) / z_sym  # A'(z)
    derivative = derivative.subs(sp.Derivative(SeriesA(z_sym), z_sym), lemma)
    derivative = derivative.subs(s_sym, cmu / theta).subs(z_sym, z_of_t)
    density = _offered_density(t).subs(p_before, cmu * p_full / lam)
    show_equal(derivative, -density, "d/dt P(V > t) = -f(t)")
    show_equal(
        sp.limit(sp.exp(y_load - z_of_t - cmu * t), t, sp.oo), 0, "vanishes at oo"
    )
    show_equal(_series_term(0), 1, "A(0) = 1")


@symbolic(
    "P(W > t) = e^{-theta t} P(V > t): the wait is min(V, patience) with an "
    "independent Exp(theta) patience"
)
def _wait_tail() -> None:
    u = sp.Symbol("u", positive=True)
    survival = sp.integrate(theta * sp.exp(-theta * u), (u, t, sp.oo))
    show_equal(survival, sp.exp(-theta * t), "patience survival")


THEOREMS = (
    Theorem(
        key="erlang_a.stationary",
        title="Erlang-A: the product form solves the balance equations at every load",
        statement=(
            "pi_k ~ a^k/k! (k <= c), pi_{c+j} = pi_c prod_{i=1}^{j} lambda/(c mu + i "
            "theta); a distribution for every lambda when theta > 0"
        ),
        assumptions=("lambda, mu, theta > 0", "c a positive integer"),
        sources=("GarnettMandelbaumReiman2002", "MandelbaumZeltyn2009"),
        used_by=("retrystorm.ErlangA",),
        checks=(_balance_above, _balance_at_c, _always_stable, _queue_sum_identity),
    ),
    Theorem(
        key="erlang_a.abandonment",
        title="Erlang-A: P(abandon) = theta E[Q] / lambda",
        statement=(
            "the share of arrivals that abandon equals theta E[Q] / lambda, both per "
            "customer (PASTA and the race against the queue ahead) and by flow "
            "conservation"
        ),
        assumptions=(
            "FIFO",
            "exponential patience of rate theta, independent",
            "PASTA",
        ),
        sources=("GarnettMandelbaumReiman2002", "MandelbaumZeltyn2009"),
        used_by=("retrystorm.ErlangA.abandonment_probability",),
        checks=(_race_stage, _telescoping, _termwise, _sum_reindexed, _flow),
    ),
    Theorem(
        key="erlang_a.limit",
        title="Erlang-A tends to M/M/c as theta -> 0 when rho < 1",
        statement=(
            "for rho < 1, as theta -> 0 the Erlang-A distribution, P(wait), E[Q], E[W] "
            "tend to those of M/M/c, and P(abandon) -> 0"
        ),
        assumptions=(
            "0 < rho < 1",
            "Tannery's theorem (dominated convergence for series)",
        ),
        sources=("GarnettMandelbaumReiman2002",),
        used_by=("retrystorm.ErlangA", "retrystorm.MMc"),
        checks=(_factor_limit, _termwise_limit, _domination, _conclusion),
    ),
    Theorem(
        key="erlang_a.wait_tail",
        title="Erlang-A: the offered wait and the waiting-time tail",
        statement=(
            "P(V > t) = pi_c exp(y (1 - e^{-theta t}) - c mu t) A(y e^{-theta t}) and "
            "P(W > t) = e^{-theta t} P(V > t), y = lambda/theta, A(z) = sum_j "
            "z^j/((s+1)..(s+j))"
        ),
        assumptions=(
            "FIFO; level crossing of the offered wait (as for M/M/c+D, mmcd.md)",
            "patience Exp(theta), independent of the state an arrival finds",
        ),
        sources=("MandelbaumZeltyn2009", "ZeltynMandelbaum2005", "Zeltyn2004"),
        used_by=("retrystorm.ErlangA.wait_tail", "retrystorm.ErlangA.wait_quantile"),
        checks=(_offered_density_check, _series_lemma, _offered_tail, _wait_tail),
    ),
)
