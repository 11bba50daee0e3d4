"""M/M/c: balance equations, Erlang C, mean wait, waiting-time tail, Erlang B.

The birth-death chain of M/M/c has birth rate ``lambda`` and death rate
``min(k, c) mu`` in state ``k``. Everything below is derived from it; the
write-up is ``mmc.md``.
"""

from __future__ import annotations

import sympy as sp

from proofs._framework import (
    Check,
    Method,
    Theorem,
    branch,
    exhaustive,
    induction,
    show_equal,
    show_nonnegative,
    show_positive,
    symbolic,
)
from proofs._symbols import (
    S,
    a,
    c,
    lam,
    mu,
    partial_sum_at_zero,
    rho,
    t,
    unfold_partial_sum,
)

__all__ = [
    "ERLANG_B",
    "ERLANG_C",
    "MEAN_QUEUE",
    "MEAN_WAIT",
    "THEOREMS",
    "WAIT_QUANTILE",
    "WAIT_TAIL",
]

k = sp.Symbol("k", integer=True, positive=True)
j = sp.Symbol("j", integer=True, nonnegative=True)
n = sp.Symbol("n", integer=True, nonnegative=True)
q = sp.Symbol("q", positive=True)  # a probability level, 0 < q < 1
u = sp.Symbol("u", positive=True)  # an integration variable (time)

# Unnormalised stationary weights, relative to pi_0 (the product form).
x_c = a**c / sp.factorial(c)  # the weight of state c


def below(state: sp.Expr) -> sp.Expr:
    """Weight of a state ``k <= c``: ``a^k / k!``."""
    return a**state / sp.factorial(state)


def above(state: sp.Expr) -> sp.Expr:
    """Weight of a state ``k >= c``: ``a^c / c! * rho^(k - c)``."""
    return x_c * rho ** (state - c)


# The proved expressions (in lambda, mu, c and the partial sum S(c - 1)).
TAIL_WEIGHT = x_c / (1 - rho)  # sum of the weights of the states k >= c, rho < 1
ERLANG_C = TAIL_WEIGHT / (S(c - 1) + TAIL_WEIGHT)
ERLANG_B = x_c / S(c)
MEAN_QUEUE = ERLANG_C * rho / (1 - rho)
MEAN_WAIT = ERLANG_C / (c * mu - lam)
WAIT_TAIL = ERLANG_C * sp.exp(-(c * mu - lam) * t)
WAIT_QUANTILE = sp.log(ERLANG_C / (1 - q)) / (c * mu - lam)  # for q > 1 - C


def _series(term: sp.Expr, step: str) -> sp.Expr:
    """Sum ``term`` over j >= 0 and keep the piece valid for ``rho < 1``.

    ``lambda`` is written as ``r c mu`` so that sympy sees the ratio ``r = rho``
    of the geometric series and reports its convergence condition ``r < 1``.
    """
    r = sp.Symbol("r", positive=True)
    value = sp.summation(term.subs(lam, r * c * mu), (j, 0, sp.oo))
    return branch(value, r < 1, step).subs(r, rho)


# --- the stationary distribution --------------------------------------------


@symbolic("state 0: lambda pi_0 = mu pi_1")
def _balance_at_zero() -> None:
    show_equal(lam * below(0), mu * below(1), "balance at state 0")


@symbolic(
    "states 1 <= k <= c - 1: (lambda + k mu) pi_k = lambda pi_{k-1} + (k+1) mu pi_{k+1}"
)
def _balance_below() -> None:
    flow_out = (lam + k * mu) * below(k)
    flow_in = lam * below(k - 1) + (k + 1) * mu * below(k + 1)
    show_equal(flow_out, flow_in, "balance at 1 <= k <= c - 1")


@symbolic(
    "state c: (lambda + c mu) pi_c = lambda pi_{c-1} + c mu pi_{c+1}, both forms agree "
    "at c"
)
def _balance_at_c() -> None:
    show_equal(below(c), above(c), "the two forms of pi_c agree")
    flow_out = (lam + c * mu) * above(c)
    flow_in = lam * below(c - 1) + c * mu * above(c + 1)
    show_equal(flow_out, flow_in, "balance at state c")


@symbolic("states k >= c + 1: (lambda + c mu) pi_k = lambda pi_{k-1} + c mu pi_{k+1}")
def _balance_above() -> None:
    state = c + k  # k >= 1
    flow_out = (lam + c * mu) * above(state)
    flow_in = lam * above(state - 1) + c * mu * above(state + 1)
    show_equal(flow_out, flow_in, "balance at k >= c + 1")


@symbolic("for rho < 1 the weights of states k >= c sum to (a^c / c!) / (1 - rho)")
def _tail_weight() -> None:
    show_equal(_series(above(c + j), "geometric series"), TAIL_WEIGHT, "tail weight")


def _divergence_step() -> None:
    # With rho = 1 + d (d >= 0) and a tail weight w_j = w_0 + e (e >= 0), the
    # next weight rho w_j exceeds w_0 by d w_0 + e + d e >= 0.
    d, e, w0 = sp.symbols("d e w0", nonnegative=True)
    show_equal(above(c + j + 1) / above(c + j), rho, "ratio of successive weights")
    show_nonnegative((1 + d) * (w0 + e) - w0, "inductive step j -> j + 1")


_divergence = Check(
    "for rho >= 1 every weight pi_{c+j} >= pi_c > 0, so no distribution exists",
    Method.INDUCTION,
    _divergence_step,
    "on j >= 0; base case pi_c >= pi_c",
)


@symbolic("P(N >= c) = (a^c/c!)/(1-rho) / (S(c-1) + (a^c/c!)/(1-rho)) = Erlang C")
def _erlang_c_is_tail() -> None:
    total = S(c - 1) + _series(above(c + j), "geometric series")
    show_equal(_series(above(c + j), "geometric series") / total, ERLANG_C, "P(N >= c)")


@symbolic("one server: C = rho")
def _single_server() -> None:
    one = partial_sum_at_zero(ERLANG_C.subs(c, 1))
    show_equal(one, lam / mu, "C at c = 1")


@exhaustive(
    "the closed form equals sum_{k>=c} pi_k / sum_k pi_k", "c = 1..6, a symbolic"
)
def _small_c() -> None:
    r = sp.Symbol("r", positive=True)
    for servers in range(1, 7):
        load = r * servers  # offered load at utilisation r
        low = sum(load**i / sp.factorial(i) for i in range(servers))
        high = load**servers / sp.factorial(servers) / (1 - r)
        closed = ERLANG_C.subs(mu, 1).subs(lam, load).subs(c, servers)
        closed = closed.subs(S(servers - 1), low)
        show_equal(closed, high / (low + high), f"Erlang C at c = {servers}")


# --- mean queue, mean wait ----------------------------------------------------


@symbolic("E[Q] = sum_j j pi_{c+j} = C rho / (1 - rho)")
def _mean_queue() -> None:
    total = S(c - 1) + TAIL_WEIGHT
    queue = _series(j * above(c + j), "series of j rho^j") / total
    show_equal(queue, MEAN_QUEUE, "E[Q]")


@symbolic("E[W] = E[Q] / lambda = C / (c mu - lambda) (Little's law)")
def _mean_wait() -> None:
    show_equal(MEAN_QUEUE / lam, MEAN_WAIT, "Little's law for the queue")


@symbolic("E[busy servers] = sum_k min(k, c) pi_k = a, so E[N] = E[Q] + a")
def _busy_servers() -> None:
    # sum_{k=1}^{c-1} k a^k/k! = a sum_{k=0}^{c-2} a^k/k! = a (S(c-1) - a^(c-1)/(c-1)!)
    show_equal(k * below(k), a * below(k - 1), "k a^k/k! = a a^(k-1)/(k-1)!")
    lower = a * (S(c - 1) - below(c - 1))
    upper = c * _series(above(c + j), "geometric series")
    total = S(c - 1) + TAIL_WEIGHT
    show_equal((lower + upper) / total, a, "mean number of busy servers")


# --- waiting-time tail --------------------------------------------------------


def _erlang_density(phases: sp.Expr, rate: sp.Expr, at: sp.Expr) -> sp.Expr:
    """Density of the sum of ``phases`` independent exponentials of ``rate``."""
    return (
        rate**phases
        * at ** (phases - 1)
        * sp.exp(-rate * at)
        / sp.factorial(phases - 1)
    )


@symbolic(
    "given N = c + j at arrival (weight (1 - rho) rho^j given W > 0), W ~ Erlang(j+1, "
    "c mu); the mixture density is (c mu - lambda) exp(-(c mu - lambda) t)"
)
def _conditional_density() -> None:
    weight = above(c + j) / TAIL_WEIGHT
    show_equal(weight, (1 - rho) * rho**j, "conditional law of the queue seen")
    mixture = sp.summation(weight * _erlang_density(j + 1, c * mu, t), (j, 0, sp.oo))
    mixture = branch(mixture, True, "exponential series")
    show_equal(mixture, (c * mu - lam) * sp.exp(-(c * mu - lam) * t), "mixture density")


@symbolic(
    "P(W > t) = C int_t^oo (c mu - lambda) e^{-(c mu - lambda) u} du = C e^{-(c mu - "
    "lambda) t} for rho < 1"
)
def _tail() -> None:
    gap = sp.Symbol("delta", positive=True)  # c mu - lambda > 0 when rho < 1
    survival = sp.integrate(gap * sp.exp(-gap * u), (u, t, sp.oo))
    show_equal(ERLANG_C * survival.subs(gap, c * mu - lam), WAIT_TAIL, "P(W > t)")


@symbolic("int_0^oo P(W > t) dt equals the mean wait C / (c mu - lambda)")
def _tail_integrates_to_mean() -> None:
    gap = sp.Symbol("delta", positive=True)
    area = sp.integrate(sp.exp(-gap * u), (u, 0, sp.oo)).subs(gap, c * mu - lam)
    show_equal(ERLANG_C * area, MEAN_WAIT, "area under the tail")


@symbolic(
    "the q-quantile: P(W > t_q) = 1 - q at t_q = log(C / (1 - q)) / (c mu - lambda), "
    "which is >= 0 iff q >= 1 - C (else t_q = 0)"
)
def _quantile() -> None:
    show_equal(WAIT_TAIL.subs(t, WAIT_QUANTILE), 1 - q, "tail at the quantile")


# --- Erlang B -----------------------------------------------------------------


def _erlang_b_closed(servers: sp.Expr) -> sp.Expr:
    return a**servers / sp.factorial(servers) / S(servers)


def _erlang_b_recurrence(previous: sp.Expr, servers: sp.Expr) -> sp.Expr:
    # B(n + 1) = a B(n) / (n + 1 + a B(n))
    return a * previous / (servers + 1 + a * previous)


def _unfold_b(expr: sp.Expr, servers: sp.Expr) -> sp.Expr:
    return partial_sum_at_zero(unfold_partial_sum(expr, servers + 1))


_b_recurrence = induction(
    "B(0) = 1, B(n+1) = a B(n) / (n + 1 + a B(n)) gives B(n) = (a^n/n!) / sum_{i<=n} "
    "a^i/i!",
    n,
    start=0,
    initial=sp.Integer(1),
    recurrence=_erlang_b_recurrence,
    closed=_erlang_b_closed,
    definitions=_unfold_b,
)


@symbolic(
    "in M/M/c/c, pi_k ~ a^k/k! solves the balance equations (the top state c "
    "included), so by PASTA the blocking probability is pi_c = B(c)"
)
def _erlang_b_is_blocking() -> None:
    show_equal(c * mu * below(c), lam * below(c - 1), "balance at the top state c")
    show_equal(
        below(c) / unfold_partial_sum(S(c), c),
        unfold_partial_sum(ERLANG_B, c),
        "pi_c normalised by sum_{k<=c} a^k/k!",
    )


# Upper incomplete gamma: 1 / B(c) = e^a a^(-c) Gamma(c + 1, a).
s_real = sp.Symbol("s", positive=True)
y = sp.Symbol("y", positive=True)


@symbolic(
    "Gamma(s+1, y) = s Gamma(s, y) + y^s e^{-y} for s > 0: equal derivatives in y and "
    "equal values at y = 0"
)
def _gamma_recurrence() -> None:
    lhs = sp.uppergamma(s_real + 1, y)
    rhs = s_real * sp.uppergamma(s_real, y) + y**s_real * sp.exp(-y)
    show_equal(sp.diff(lhs, y), sp.diff(rhs, y), "derivatives in y")
    show_equal(lhs.subs(y, 0), rhs.subs(y, 0), "values at y = 0")


def _incomplete_gamma_closed(servers: sp.Expr) -> sp.Expr:
    # Claim: Gamma(n + 1, y) = n! e^{-y} sum_{i <= n} y^i / i!  (here y = a).
    return sp.factorial(servers) * sp.exp(-a) * S(servers)


def _incomplete_gamma_recurrence(previous: sp.Expr, servers: sp.Expr) -> sp.Expr:
    # Gamma(n + 2, a) = (n + 1) Gamma(n + 1, a) + a^(n+1) e^{-a}, by the lemma above.
    return (servers + 1) * previous + a ** (servers + 1) * sp.exp(-a)


_gamma_sum = induction(
    "Gamma(n + 1, a) = n! e^{-a} S(n) for every integer n >= 0 (Gamma(1, a) = e^{-a})",
    n,
    start=0,
    initial=sp.uppergamma(1, a),
    recurrence=_incomplete_gamma_recurrence,
    closed=_incomplete_gamma_closed,
    definitions=_unfold_b,
)


@symbolic(
    "hence 1 / B(c) = e^a a^(-c) Gamma(c + 1, a) = Q(c + 1, a) / P(Poisson(a) = c), Q "
    "the regularised upper incomplete gamma function"
)
def _erlang_b_gamma() -> None:
    show_equal(
        1 / ERLANG_B,
        sp.exp(a) * a ** (-c) * _incomplete_gamma_closed(c),
        "1 / B via the incomplete gamma function",
    )
    regularised = _incomplete_gamma_closed(c) / sp.gamma(c + 1)
    poisson_mass = sp.exp(-a) * a**c / sp.factorial(c)
    show_equal(1 / ERLANG_B, regularised / poisson_mass, "1 / B = Q / Poisson mass")


# --- C from B -----------------------------------------------------------------


@symbolic(
    "C = B / (1 - rho (1 - B)) for every c (symbolic in c; S(c) = S(c-1) + a^c/c!)"
)
def _c_from_b() -> None:
    blocking = unfold_partial_sum(ERLANG_B, c)
    show_equal(blocking / (1 - rho * (1 - blocking)), ERLANG_C, "C from B")
    # the form the package evaluates in log space: C = c / ((c - a) / B + a)
    show_equal(c / ((c - a) / blocking + a), ERLANG_C, "C = c / ((c - a)/B + a)")


@symbolic("for rho < 1, 0 < B < C < 1 (waiting is likelier than blocking)")
def _b_below_c() -> None:
    # With the weights written as x = a^c/c! > 0, s = S(c-1) > 0, 0 < r < 1:
    x, s, r = sp.symbols("x s r", positive=True)
    blocking = x / (s + x)
    waiting = (x / (1 - r)) / (s + x / (1 - r))
    h = sp.Symbol("h", positive=True)  # r = 1 / (1 + h) covers 0 < r < 1
    show_positive((waiting - blocking).subs(r, 1 / (1 + h)), "C - B > 0")
    show_positive(1 - waiting.subs(r, 1 / (1 + h)), "1 - C > 0")


THEOREMS = (
    Theorem(
        key="mmc.stationary",
        title="the M/M/c product form solves the balance equations iff rho < 1",
        statement=(
            "pi_k proportional to a^k/k! (k <= c) and a^c/c! rho^(k-c) (k >= c) solves "
            "the global balance equations of M/M/c; it is a distribution iff rho < 1."
        ),
        assumptions=("lambda, mu > 0", "c a positive integer", "rho = lambda/(c mu)"),
        sources=("Kleinrock1975", "GrossHarris2008"),
        used_by=("retrystorm.MMc", "retrystorm.erlang_c"),
        checks=(
            _balance_at_zero,
            _balance_below,
            _balance_at_c,
            _balance_above,
            _tail_weight,
            _divergence,
        ),
    ),
    Theorem(
        key="mmc.erlang_c",
        title="Erlang C is the stationary P(N >= c) = P(wait) (PASTA)",
        statement="C(c, a) = (a^c/c!)/(1-rho) / (sum_{k<c} a^k/k! + (a^c/c!)/(1-rho))",
        assumptions=("rho < 1", "Poisson arrivals see time averages (PASTA)"),
        sources=("Kleinrock1975", "GrossHarris2008"),
        used_by=("retrystorm.erlang_c", "retrystorm.MMc.wait_probability"),
        checks=(_erlang_c_is_tail, _single_server, _small_c),
    ),
    Theorem(
        key="mmc.mean_wait",
        title="mean queue, mean wait and mean number in M/M/c",
        statement=(
            "E[Q] = C rho/(1 - rho), E[W] = C/(c mu - lambda), E[busy] = a, E[N] = "
            "E[Q] + a, E[response] = E[W] + 1/mu"
        ),
        assumptions=("rho < 1", "Little's law"),
        sources=("Kleinrock1975", "GrossHarris2008"),
        used_by=(
            "retrystorm.MMc.mean_queue_length",
            "retrystorm.MMc.mean_wait",
            "retrystorm.MMc.mean_in_system",
            "retrystorm.MMc.mean_response_time",
        ),
        checks=(_mean_queue, _mean_wait, _busy_servers),
    ),
    Theorem(
        key="mmc.wait_tail",
        title="the M/M/c waiting-time tail is C exp(-(c mu - lambda) t)",
        statement="P(W > t) = C exp(-(c mu - lambda) t) for t >= 0; its quantiles",
        assumptions=(
            "rho < 1",
            (
                "FIFO; an arrival that finds c + j present waits for j + 1 departures, "
                "each after an exponential time of rate c mu (memoryless service)"
            ),
            "PASTA",
        ),
        sources=("Kleinrock1975", "GrossHarris2008"),
        used_by=("retrystorm.MMc.wait_tail", "retrystorm.MMc.wait_quantile"),
        checks=(_conditional_density, _tail, _tail_integrates_to_mean, _quantile),
    ),
    Theorem(
        key="erlang_b.recurrence",
        title="the Erlang B recurrence computes Erlang B",
        statement=(
            "B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1)) gives (a^k/k!)/sum_{i<=k} "
            "a^i/i!"
        ),
        assumptions=("a > 0",),
        sources=("Jagerman1974", "GrossHarris2008"),
        used_by=("retrystorm.erlang_b",),
        checks=(_b_recurrence, _erlang_b_is_blocking),
    ),
    Theorem(
        key="erlang_b.incomplete_gamma",
        title="1/B = e^a a^(-c) Gamma(c+1, a)",
        statement="1 / B(c, a) = e^a a^(-c) Gamma(c + 1, a) for every integer c >= 0",
        assumptions=("a > 0",),
        sources=("Jagerman1974",),
        used_by=("retrystorm.erlang_b",),
        checks=(_gamma_recurrence, _gamma_sum, _erlang_b_gamma),
    ),
    Theorem(
        key="erlang.c_from_b",
        title="C = B / (1 - rho (1 - B))",
        statement=(
            "for every c >= 1 and 0 < rho < 1: C = B / (1 - rho (1 - B)) and B < C < 1"
        ),
        assumptions=("rho < 1",),
        sources=("GrossHarris2008", "Kleinrock1975"),
        used_by=("retrystorm.erlang_c",),
        checks=(_c_from_b, _b_below_c),
    ),
)
