"""M/M/c+D: the offered wait of a queue with a hard queueing timeout T.

The offered (virtual) wait ``V`` is the time an arrival would wait for a
connection if it never gave up. It has an atom at 0 (a connection is free)
and, on ``x > 0``, the density ``f(x) = lambda pi_{c-1} exp(lambda min(x, T)
- c mu x)``. An arrival is served iff ``V < T``. Write-up: ``mmcd.md``.
"""

from __future__ import annotations

import sympy as sp

from proofs._framework import Theorem, show_equal, symbolic
from proofs._symbols import S, a, c, lam, mu
from proofs.mmc import ERLANG_B, ERLANG_C, MEAN_WAIT

__all__ = [
    "ABANDONMENT",
    "ATOM_WEIGHT",
    "MEAN_QUEUE_D",
    "MEAN_WAIT_ALL",
    "MEAN_WAIT_SERVED",
    "P_FREE",
    "THEOREMS",
    "WAIT_PROBABILITY_D",
    "WAIT_TAIL_D",
    "timeout",
]

timeout = sp.Symbol("T", positive=True)
x = sp.Symbol("x", positive=True)  # a level of the offered wait
y = sp.Symbol("y", positive=True)  # an integration variable
h = sp.Symbol("h", positive=True)  # x = T + h above the timeout
s = sp.Symbol("s", positive=True)  # x = T s, 0 < s <= 1, below the timeout
p = sp.Symbol("p", positive=True)  # pi_{c-1}, fixed by normalisation

cmu = c * mu
gap = cmu - lam  # may have either sign: M/M/c+D is stable at every load


def density_below(level: sp.Expr) -> sp.Expr:
    """``f`` on ``0 < x <= T``: ``lambda p exp(-(c mu - lambda) x)``."""
    return lam * p * sp.exp(-gap * level)


def density_above(level: sp.Expr) -> sp.Expr:
    """``f`` on ``x > T``: ``lambda p exp(lambda T - c mu x)``."""
    return lam * p * sp.exp(lam * timeout - cmu * level)


# Integrals of f / (lambda p) below and above T (gap != 0).
BELOW = (1 - sp.exp(-gap * timeout)) / gap
ABOVE = sp.exp(-gap * timeout) / cmu
# Weight of the atom V = 0 relative to pi_{c-1}: sum_{k<c} pi_k / pi_{c-1}.
ATOM_WEIGHT = S(c - 1) * sp.factorial(c - 1) / a ** (c - 1)
P_CM1 = 1 / (ATOM_WEIGHT + lam * (BELOW + ABOVE))  # pi_{c-1}

# The proved expressions (substitute p = P_CM1 for the normalised values).
WAIT_PROBABILITY_D = lam * p * (BELOW + ABOVE)  # P(V > 0)
P_FREE = p * ATOM_WEIGHT  # P(V = 0)
ABANDONMENT = lam * p * ABOVE  # P(V > T)
SERVED_WAIT_MASS = (  # int_0^T x f(x) dx
    lam * p * (1 - (1 + gap * timeout) * sp.exp(-gap * timeout)) / gap**2
)
MEAN_WAIT_ALL = SERVED_WAIT_MASS + timeout * ABANDONMENT  # E[min(V, T)]
MEAN_WAIT_SERVED = SERVED_WAIT_MASS / (1 - ABANDONMENT)  # E[V | V < T]
MEAN_QUEUE_D = lam * MEAN_WAIT_ALL  # Little's law for the waiting room
level = sp.Symbol("t_w", positive=True)  # a wait level below the timeout
WAIT_TAIL_D = (
    lam
    * p
    * (  # P(V > t) = P(min(V, T) > t) for 0 <= t < T
        (sp.exp(-gap * level) - sp.exp(-gap * timeout)) / gap + ABOVE
    )
)


def normalised(expr: sp.Expr) -> sp.Expr:
    """``expr`` with ``pi_{c-1}`` set by normalisation."""
    return expr.subs(p, P_CM1)


# --- the density --------------------------------------------------------------


def _level_crossing_rhs(level: sp.Expr, served_up_to: sp.Expr) -> sp.Expr:
    """Up-crossing rate of ``level``: jumps of size Exp(c mu) that pass it.

    From V = 0 with c - 1 busy (rate lambda pi_{c-1}), and from V = y in
    (0, level) by arrivals that will be served (y < T, so up to
    ``served_up_to = min(level, T)``).
    """
    from_atom = lam * p * sp.exp(-cmu * level)
    # one exponential in y: powsimp merges exp(-gap y) exp(c mu y) before integrating
    integrand = sp.powsimp(density_below(y) * sp.exp(-cmu * (level - y)))
    from_density = lam * sp.integrate(integrand, (y, 0, served_up_to))
    return from_atom + from_density


@symbolic(
    "level crossing below T: f(x) = lambda pi_{c-1} e^{-c mu x} + lambda int_0^x f(y) "
    "e^{-c mu (x - y)} dy for 0 < x <= T"
)
def _crossing_below() -> None:
    level = timeout * s
    show_equal(density_below(level), _level_crossing_rhs(level, level), "x <= T")


@symbolic(
    "level crossing above T: f(x) = lambda pi_{c-1} e^{-c mu x} + lambda int_0^T f(y) "
    "e^{-c mu (x - y)} dy for x > T"
)
def _crossing_above() -> None:
    level = timeout + h
    show_equal(density_above(level), _level_crossing_rhs(level, timeout), "x > T")


@symbolic(
    "the two pieces agree at x = T, and f(0+) = lambda pi_{c-1}: V leaves 0 as often "
    "as it returns to 0"
)
def _continuity() -> None:
    show_equal(density_below(timeout), density_above(timeout), "continuity at T")
    show_equal(density_below(0), lam * p, "rate of returns to 0")


@symbolic(
    "the states k < c (V = 0) weigh pi_{c-1} (c-1)!/a^(c-1) S(c-1): lambda pi_{k-1} = "
    "k mu pi_k for k < c"
)
def _atom() -> None:
    k = sp.Symbol("k", integer=True, positive=True)
    weight = a**k / sp.factorial(k)
    show_equal(lam * weight.subs(k, k - 1), k * mu * weight, "cut below c")
    show_equal(
        ATOM_WEIGHT, S(c - 1) / (a ** (c - 1) / sp.factorial(c - 1)), "relative weight"
    )


# --- integrals ----------------------------------------------------------------


g = sp.Symbol("g", real=True, nonzero=True)  # c mu - lambda, either sign but not 0


def _integral(expr: sp.Expr, *limits: tuple[sp.Symbol, sp.Expr, sp.Expr]) -> sp.Expr:
    """Integrate with ``lambda = c mu - g``, ``g != 0`` (the non-critical case)."""
    value = sp.integrate(expr.subs(lam, cmu - g), *limits)
    return value.subs(g, gap)


@symbolic(
    "int_0^T f = lambda pi_{c-1} (1 - e^{-(c mu - lambda) T})/(c mu - lambda), "
    "int_T^oo f = lambda pi_{c-1} e^{-(c mu - lambda) T}/(c mu)"
)
def _integrals() -> None:
    show_equal(_integral(density_below(x), (x, 0, timeout)), lam * p * BELOW, "below T")
    show_equal(
        _integral(density_above(x), (x, timeout, sp.oo)), lam * p * ABOVE, "above T"
    )


@symbolic(
    "normalisation: P(V = 0) + P(V > 0) = 1 fixes pi_{c-1} = 1 / (atom weight + lambda "
    "(int_0^T + int_T^oo) f / (lambda pi_{c-1})); then P(abandon) = P(V > T)"
)
def _normalisation() -> None:
    show_equal(normalised(P_FREE + WAIT_PROBABILITY_D), 1, "normalisation")


@symbolic(
    "mean waits: int_0^T x f(x) dx, E[min(V, T)] = int_0^T P(V > x) dx, E[queue] = "
    "lambda E[min(V, T)] (Little)"
)
def _mean_waits() -> None:
    show_equal(
        _integral(x * density_below(x), (x, 0, timeout)), SERVED_WAIT_MASS, "int x f"
    )
    survival = _integral(density_below(y), (y, x, timeout)) + ABANDONMENT
    show_equal(_integral(survival, (x, 0, timeout)), MEAN_WAIT_ALL, "tail integral")


@symbolic(
    "the wait tail below the timeout: P(V > t) = lambda pi_{c-1} ((e^{-(c mu - lambda) "
    "t} - e^{-(c mu - lambda) T})/(c mu - lambda) + e^{-(c mu - lambda) T}/(c mu))"
)
def _tail() -> None:
    survival = _integral(density_below(x), (x, level, timeout)) + lam * p * ABOVE
    show_equal(survival, WAIT_TAIL_D, "P(V > t), t < T")
    show_equal(WAIT_TAIL_D.subs(level, 0), WAIT_PROBABILITY_D, "P(V > 0)")


@symbolic(
    "the package's forms: P(V = 0) = pi_{c-1} / B(c-1, a) and sum_{k<c} k pi_k = a "
    "(P(V = 0) - pi_{c-1}) = (c-1) pi_{c-1} / B(c-2, a)"
)
def _package_forms() -> None:
    def inverse_b(
        servers: sp.Expr,
    ) -> sp.Expr:  # 1 / B(servers, a) = S(servers) servers!/a^servers
        return S(servers) * sp.factorial(servers) / a**servers

    show_equal(ATOM_WEIGHT, inverse_b(c - 1), "atom weight = 1 / B(c-1, a)")
    unfolded = inverse_b(c - 1).subs(
        S(c - 1), S(c - 2) + a ** (c - 1) / sp.factorial(c - 1)
    )
    show_equal(
        a * (unfolded - 1),
        (c - 1) * inverse_b(c - 2),
        "a (1/B(c-1) - 1) = (c-1)/B(c-2)",
    )


@symbolic("flow conservation: lambda (1 - P(abandon)) = mu E[busy servers]")
def _flow() -> None:
    # E[busy] = sum_{k<c} k pi_k + c P(V > 0),
    # sum_{k<c} k pi_k = a (P(V = 0) - pi_{c-1}).
    busy = a * (P_FREE - p) + c * WAIT_PROBABILITY_D
    show_equal(normalised(mu * busy), normalised(lam * (1 - ABANDONMENT)), "throughput")


# --- limits -------------------------------------------------------------------

delta = sp.Symbol("delta", positive=True)  # c mu - lambda > 0 for the T -> oo limit


def _as_gap(expr: sp.Expr) -> sp.Expr:
    return expr.subs(lam, cmu - delta)


def _unfold_c(expr: sp.Expr) -> sp.Expr:
    return expr.subs(S(c), S(c - 1) + a**c / sp.factorial(c))


@symbolic(
    "T -> oo with lambda < c mu: P(abandon) -> 0, P(V > 0) -> Erlang C, E[min(V, T)] "
    "-> C / (c mu - lambda): M/M/c+D tends to M/M/c"
)
def _limit_large_timeout() -> None:
    for expr, target, name in (
        (ABANDONMENT, 0, "abandonment"),
        (WAIT_PROBABILITY_D, ERLANG_C, "wait probability"),
        (MEAN_WAIT_ALL, MEAN_WAIT, "mean wait"),
    ):
        limit = sp.limit(_as_gap(normalised(expr)), timeout, sp.oo)
        show_equal(limit, _as_gap(sp.sympify(target)), name)


@symbolic(
    "T -> 0: P(abandon) -> Erlang B(c, a): M/M/c+D tends to the loss system M/M/c/c"
)
def _limit_zero_timeout() -> None:
    limit = sp.limit(normalised(ABANDONMENT), timeout, 0)
    show_equal(limit, _unfold_c(ERLANG_B), "abandonment at T = 0")


@symbolic(
    "lambda = c mu (gap 0) is the removable limit: P(V > 0) -> lambda pi_{c-1} (T + "
    "1/(c mu))"
)
def _critical_load() -> None:
    excess = sp.Symbol("e", real=True)  # lambda - c mu
    limit = sp.limit(WAIT_PROBABILITY_D.subs(lam, cmu + excess), excess, 0)
    show_equal(limit, cmu * p * (timeout + 1 / cmu), "critical load")


THEOREMS = (
    Theorem(
        key="mmcd.density",
        title="M/M/c+D: the offered-wait density solves the level-crossing equation",
        statement=(
            "f(x) = lambda pi_{c-1} exp(lambda min(x, T) - c mu x) on x > 0 solves the "
            "level-crossing (Volterra) equation of the offered wait, whose solution is "
            "unique"
        ),
        assumptions=(
            "FIFO; an arrival is served iff its offered wait is below T",
            (
                "with all c busy, the offered wait jumps by an Exp(c mu) time at each "
                "arrival that will be served (memoryless service)"
            ),
            (
                "level crossing: in steady state, down-crossings and up-crossings of "
                "every level occur at the same rate"
            ),
        ),
        sources=("BaccelliHebuterne1981", "Zeltyn2004", "ZeltynMandelbaum2005"),
        used_by=("retrystorm.MMcD",),
        checks=(_crossing_below, _crossing_above, _continuity, _atom),
    ),
    Theorem(
        key="mmcd.quantities",
        title="M/M/c+D: P(abandon), mean waits and flow conservation",
        statement=(
            "P(abandon) = lambda pi_{c-1} e^{-(c mu - lambda) T}/(c mu); E[min(V,T)] "
            "and E[V | V < T] in closed form; lambda (1 - P(abandon)) = mu E[busy]"
        ),
        assumptions=("lambda != c mu (the critical load is the continuous limit)",),
        sources=("BaccelliHebuterne1981", "Zeltyn2004", "ZeltynMandelbaum2005"),
        used_by=(
            "retrystorm.MMcD.abandonment_probability",
            "retrystorm.MMcD.mean_wait",
            "retrystorm.MMcD.wait_probability",
            "retrystorm.MMcD.wait_tail",
            "retrystorm.MMcD.mean_wait_served",
            "retrystorm.MMcD.throughput",
        ),
        checks=(
            _integrals,
            _normalisation,
            _tail,
            _mean_waits,
            _package_forms,
            _flow,
            _critical_load,
        ),
    ),
    Theorem(
        key="mmcd.limits",
        title="M/M/c+D tends to M/M/c as T -> oo (rho < 1) and to M/M/c/c as T -> 0",
        statement=(
            "as T -> oo with rho < 1: P(abandon) -> 0, P(wait) -> C, E[W] -> C/(c mu - "
            "lambda); as T -> 0: P(abandon) -> B(c, a)"
        ),
        assumptions=("0 < rho < 1 for the limit T -> oo",),
        sources=("Zeltyn2004",),
        used_by=("retrystorm.MMcD", "retrystorm.MMc", "retrystorm.erlang_b"),
        checks=(_limit_large_timeout, _limit_zero_timeout),
    ),
)
