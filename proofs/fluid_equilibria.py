"""Equilibria of the retry loop around a saturated pool, in one dimension.

The stationary overload fluid of Whitt (2006) gives the head-of-line wait of a
saturated queue; the share of served attempts that finish after their client
gave up follows; and the attempt rate ``x`` then closes a one-dimensional
fixed-point equation ``x = lambda N(p(x))``. Write-up: ``fluid_equilibria.md``.

Notation: fresh demand ``lambda``, pool capacity ``kappa = c mu`` (requests
per second), attempt rate ``x``, mean attempts per request ``N(p)`` when each
attempt fails with probability ``p``, late share ``omega`` (served attempts
that complete after their client's timeout), saturated goodput
``g = kappa (1 - omega)``.
"""

from __future__ import annotations

import sympy as sp

from proofs._framework import (
    Theorem,
    show_equal,
    show_nonnegative,
    show_positive,
    show_zero,
    symbolic,
)
from proofs.amplification import attempts_closed

__all__ = [
    "BAD_ATTEMPT_RATE",
    "BAD_FAILURE",
    "PODS_UP",
    "THEOREMS",
    "late_share_exponential",
    "on_time_with_crashes",
]

lam = sp.Symbol("lambda", positive=True)  # fresh requests per second
kappa = sp.Symbol("kappa", positive=True)  # pool capacity c mu, per second
x = sp.Symbol("x", positive=True)  # attempt rate at the pool, per second
p = sp.Symbol("p", positive=True)  # failure probability of an attempt, 0 < p < 1
omega = sp.Symbol("omega", positive=True)  # late share, 0 < omega < 1
retries = sp.Symbol("R", integer=True, nonnegative=True)
budget_ratio = sp.Symbol("q_b", positive=True)  # the budget's retry-probability cap
queue_timeout = sp.Symbol("T_q", positive=True)
client_timeout = sp.Symbol("T_c", positive=True)
queue_limit = sp.Symbol("K", positive=True)
theta = sp.Symbol("theta", positive=True)
mu = sp.Symbol("mu", positive=True)
u = sp.Symbol("u", positive=True)
h = sp.Symbol("h", positive=True)  # a positive excess

goodput = kappa * (1 - omega)  # g, the saturated goodput


def late_share_exponential(wait: sp.Expr) -> sp.Expr:
    """``exp(-mu (T_c - w))``: served after the client gave up, for ``w < T_c``."""
    return sp.exp(-mu * (client_timeout - wait))


crash = sp.Symbol("h", positive=True)  # crash rate of an up pod, per second
pods = sp.Symbol("P", positive=True)  # pods
restart = sp.Symbol("D", positive=True)  # restart delay, seconds
remaining = sp.Symbol("r", positive=True)  # T_c - w > 0


def on_time_with_crashes(wait: sp.Expr) -> sp.Expr:
    """``g_h(w) = exp(-h w) mu/(mu + h) (1 - exp(-(mu + h)(T_c - w)))``, ``w < T_c``."""
    return (
        sp.exp(-crash * wait)
        * mu
        / (mu + crash)
        * (1 - sp.exp(-(mu + crash) * (client_timeout - wait)))
    )


PODS_UP = pods / (1 + crash * restart)  # u: pods up in the crash-restart balance

# The bad (saturated) equilibrium without a budget, for 0 <= omega < 1:
BAD_FAILURE = (1 - goodput / lam) ** (1 / (retries + 1))  # p*
BAD_ATTEMPT_RATE = goodput / (1 - BAD_FAILURE)  # x*


# --- the stationary overload fluid (Whitt 2006) -----------------------------------


@symbolic(
    "hard queue timeout T_q, x > kappa: the head-of-line equation x (1 - F(w)) = kappa "
    "is met at w = T_q (x (1 - F(T_q-)) = x > kappa > 0 = x (1 - F(T_q))); the queue "
    "holds int_0^{T_q} x du = x T_q and a share 1 - kappa/x times out"
)
def _hard_timeout() -> None:
    arrival = kappa + h  # x > kappa
    show_positive(arrival - kappa, "x (1 - F(T_q-)) exceeds kappa")
    show_equal(
        sp.integrate(arrival, (u, 0, queue_timeout)), arrival * queue_timeout, "queue"
    )
    show_equal((arrival - kappa) / arrival, 1 - kappa / arrival, "timed-out share")


@symbolic(
    "exponential patience theta, x > kappa: w = log(x/kappa)/theta solves x e^{-theta "
    "w} = kappa; the queue int_0^w x e^{-theta u} du = (x - kappa)/theta, so theta Q = "
    "x - kappa (the fluid form of P(abandon) = theta E[Q]/lambda)"
)
def _exponential_patience() -> None:
    arrival = kappa + h
    wait = sp.log(arrival / kappa) / theta
    show_equal(arrival * sp.exp(-theta * wait), kappa, "head-of-line equation")
    queue = sp.integrate(arrival * sp.exp(-theta * u), (u, 0, wait))
    show_equal(queue, (arrival - kappa) / theta, "queue content")


@symbolic(
    "queue limit K, x > kappa: the full queue drains FIFO at kappa, so w = K/kappa; "
    "with a timeout too, w = min(T_q, K/kappa) (the queue holds min(x_a T_q, K))"
)
def _queue_limit() -> None:
    # Full queue K drained at kappa: the last admitted waits K / kappa.
    show_equal(
        sp.integrate(kappa, (u, 0, queue_limit / kappa)), queue_limit, "drain time"
    )
    # If K/kappa > T_q the admitted rate x_a = K/T_q exceeds kappa and all wait T_q.
    excess = sp.Symbol("e", positive=True)  # K = kappa T_q + excess
    limit = kappa * queue_timeout + excess
    show_positive(
        limit / queue_timeout - kappa, "K > kappa T_q: admitted rate above kappa"
    )


@symbolic(
    "late share: a served attempt waited w and holds a connection Exp(mu): it ends "
    "after the client's timeout T_c with probability exp(-mu (T_c - w)) for w < T_c (1 "
    "for w >= T_c; 1{w + s > T_c} with a deterministic service allowance s)"
)
def _late_share() -> None:
    remaining = client_timeout - queue_timeout  # w = T_q < T_c
    tail = sp.integrate(mu * sp.exp(-mu * u), (u, h, sp.oo)).subs(h, remaining)
    show_equal(tail, late_share_exponential(queue_timeout), "P(service > T_c - w)")


# --- the fixed point ------------------------------------------------------------------


@symbolic(
    "in saturation (x > kappa) an attempt succeeds iff it is served (share kappa/x) "
    "and in time (1 - omega): p(x) = 1 - g/x, strictly increasing from omega (x = "
    "kappa) to 1 (x -> oo), and goodput x (1 - p(x)) = g"
)
def _failure_map() -> None:
    failure = 1 - goodput / x
    show_positive(
        sp.diff(failure, x).subs(omega, 1 / (1 + h)), "dp/dx > 0 (0 < omega < 1)"
    )
    show_equal(failure.subs(x, kappa), omega, "p(kappa) = omega")
    show_equal(sp.limit(failure, x, sp.oo), 1, "p -> 1")
    show_equal(x * (1 - failure), goodput, "goodput")


@symbolic(
    "equilibria in saturation <-> roots p in (omega, 1) of psi(p) = lambda N(p)(1 - p) "
    "= g; for N = A(p, R): psi = lambda (1 - p^(R+1)), psi' = -lambda (R+1) p^R < 0; "
    "with a budget N = min(A(p, R), 1 + b): psi' = -lambda (1 + b) < 0 where the cap "
    "binds"
)
def _psi_decreasing() -> None:
    attempts = attempts_closed(p, retries)
    psi = lam * attempts * (1 - p)
    show_equal(psi, lam * (1 - p ** (retries + 1)), "psi for A(p, R)")
    show_positive(-sp.diff(lam * (1 - p ** (retries + 1)), p), "psi' < 0")
    b = sp.Symbol("b", nonnegative=True)
    show_positive(-sp.diff(lam * (1 + b) * (1 - p), p), "psi' < 0 on the budget branch")


@symbolic(
    "psi(1) = 0 < g and psi strictly decreasing, so a root in (omega, 1) exists, and "
    "is unique, iff psi(omega) > g, i.e. iff lambda N(omega) > kappa (psi(omega) - g = "
    "(1 - omega)(lambda N(omega) - kappa))"
)
def _existence() -> None:
    n_omega = sp.Symbol("N_omega", positive=True)
    psi_omega = lam * n_omega * (1 - omega)
    show_equal(
        psi_omega - goodput, (1 - omega) * (lam * n_omega - kappa), "psi(omega) - g"
    )
    show_equal(
        (lam * attempts_closed(p, retries) * (1 - p)).subs(p, 1), 0, "psi(1) = 0"
    )


@symbolic(
    "without a budget the root is p* = (1 - g/lambda)^(1/(R+1)), x* = g/(1 - p*): it "
    "satisfies x* = lambda A(p*, R) and p(x*) = p*"
)
def _closed_form() -> None:
    show_equal(
        lam * attempts_closed(BAD_FAILURE, retries),
        BAD_ATTEMPT_RATE,
        "x* = lambda A(p*)",
    )
    show_equal(1 - goodput / BAD_ATTEMPT_RATE, BAD_FAILURE, "p(x*) = p*")


@symbolic(
    "with a budget b the root is x* = min(x_u, lambda (1 + b)), x_u the root without "
    "one: if the cap binds at p*, lambda (1 - p*^(R+1)) >= g = lambda (1 - p_u^(R+1)), "
    "so p* <= p_u and x_u = g/(1 - p_u) >= g/(1 - p*) = lambda (1 + b); else x* = x_u "
    "= lambda A(p_u, R) <= lambda (1 + b)"
)
def _budget_root() -> None:
    # g/(1 - p) is increasing in p on (0, 1): its derivative g/(1 - p)^2 > 0.
    v = sp.Symbol("v", positive=True)  # p = 1/(1 + v) covers 0 < p < 1
    increase = sp.diff(goodput / (1 - p), p).subs({omega: 1 / (1 + h), p: 1 / (1 + v)})
    show_positive(increase, "g/(1-p) increasing")
    # 1 - p^(R+1) decreases in p:
    # lambda (1 - p*^(R+1)) >= lambda (1 - p_u^(R+1)) iff p* <= p_u.
    show_positive(-sp.diff(1 - p ** (retries + 1), p), "1 - p^(R+1) decreasing")


@symbolic(
    "omega = 1 (every served attempt is late): g = 0, p = 1 throughout saturation, and "
    "the only candidate is x* = lambda N(1) (= lambda (R+1) without a budget, lambda "
    "min(R+1, 1+b) with one): a bad equilibrium iff lambda N(1) > kappa"
)
def _all_late() -> None:
    show_equal((1 - goodput / x).subs(omega, 1), 1, "p = 1")
    show_equal(sp.limit(attempts_closed(p, retries), p, 1), retries + 1, "N(1) = R + 1")


# --- stability ------------------------------------------------------------------------


def _chain_rule_slope() -> tuple[sp.Expr, sp.Symbol, sp.Symbol]:
    """G'(x) for G(x) = lambda N(1 - g/x), with N(p) -> n, N'(p) -> dn."""
    n, dn = sp.symbols("n dn", positive=True)
    slope = lam * dn * sp.diff(1 - goodput / x, x)
    return slope, n, dn


@symbolic(
    "with dx/dt = (G(x) - x)/tau, G(x) = lambda N(p(x)): at a saturated equilibrium "
    "G'(x*) = N'(p)(1 - p)/N(p), and G'(x*) < 1 iff psi'(p*) < 0; so the bad "
    "equilibrium is locally stable (eigenvalue (G' - 1)/tau < 0) wherever it exists"
)
def _slope() -> None:
    slope, n, dn = _chain_rule_slope()
    at_equilibrium = slope.subs(x, goodput / (1 - p)).subs(
        omega, 1 - lam * n * (1 - p) / kappa
    )
    show_equal(at_equilibrium, dn * (1 - p) / n, "G'(x*)")
    psi_slope = lam * (dn * (1 - p) - n)  # d/dp [lambda N(p)(1 - p)]
    show_equal((at_equilibrium - 1) * lam * n, psi_slope, "G' - 1 = psi' / (lambda N)")


@symbolic(
    "without a budget G'(x*) = 1 - (lambda/g)(R+1) p^R (1 - p) < 1 at the root g = "
    "lambda (1 - p^(R+1)), and G' >= 0 (N nondecreasing)"
)
def _slope_no_budget() -> None:
    attempts = attempts_closed(p, retries)
    slope = sp.diff(attempts, p) * (1 - p) / attempts
    g_star = lam * (1 - p ** (retries + 1))
    show_equal(slope, 1 - lam / g_star * (retries + 1) * p**retries * (1 - p), "G'(x*)")
    g_positive, rest = sp.symbols("g r", positive=True)  # g* > 0 and 1 - p > 0
    show_positive(lam / g_positive * (retries + 1) * p**retries * rest, "G' < 1")


@symbolic(
    "delay-independent: for y'(t) = -a y(t) + b y(t - d) with a > |b| no root of s = "
    "-a + b e^{-s d} has Re s >= 0 (|s + a|^2 - a^2 = sigma^2 + 2 a sigma + w^2 >= 0 "
    "while |b e^{-s d}| <= |b| < a); here a = 1/tau, b = G'/tau, 0 <= G' < 1"
)
def _delay_independent() -> None:
    sigma, w, a_rate = sp.symbols("sigma w a", nonnegative=True)
    show_nonnegative(
        sp.expand((sigma + a_rate) ** 2 + w**2 - a_rate**2), "|s + a| >= a"
    )


# --- the reduction in the head-of-line wait -------------------------------------------

wait = sp.Symbol("w", positive=True)


@symbolic(
    "x(w) = lambda N(exp(-mu (T_c - w))) is nondecreasing in w < T_c: the late share "
    "has derivative mu exp(-mu (T_c - w)) > 0 and N is nondecreasing (retries.attempts)"
)
def _rate_increasing_in_wait() -> None:
    show_positive(sp.diff(late_share_exponential(wait), wait), "late share increasing")


@symbolic(
    "with dw/dt = 1 - kappa / x(w): at an interior zero x(w*) = kappa the slope is "
    "x'(w*)/kappa >= 0 (unstable when positive); the corner w = 0 is an equilibrium "
    "iff x(0) < kappa, the corner w_sat iff x(w_sat) > kappa"
)
def _drift_slope() -> None:
    rate = sp.Function("x")
    rising = sp.Symbol("x_prime", nonnegative=True)  # x'(w*)
    drift = 1 - kappa / rate(wait)
    slope = sp.diff(drift, wait).subs(sp.Derivative(rate(wait), wait), rising)
    show_equal(slope.subs(rate(wait), kappa), rising / kappa, "slope at x(w*) = kappa")


@symbolic(
    "the corner w_sat and the saturated root agree: x(w_sat) = lambda N(omega) > kappa "
    "iff the saturated fixed point x* exceeds kappa (equilibria.bad); with x "
    "nondecreasing, an interior zero lies between the corners iff both are equilibria, "
    "and it is unique where x is strictly increasing"
)
def _corners() -> None:
    n_omega = sp.Symbol("N_omega", positive=True)
    show_equal(
        lam * n_omega * (1 - omega) - goodput,
        (1 - omega) * (lam * n_omega - kappa),
        "same sign as lambda N(omega) - kappa",
    )


# --- good equilibrium and timeout ordering --------------------------------------------


@symbolic(
    "the good equilibrium: below saturation no attempt waits and (service allowance "
    "within T_c) none fails, so x = lambda N(0) = lambda; it exists iff lambda < kappa "
    "and G is constant near it (G' = 0: locally stable)"
)
def _good() -> None:
    show_equal(attempts_closed(p, retries).subs(p, 0), 1, "N(0) = 1")
    show_equal(sp.diff(lam * attempts_closed(sp.Integer(0), retries), x), 0, "G' = 0")


@symbolic(
    "timeout ordering: if w + s < T_c (w = min(T_q, K/kappa, ...)) then omega = 0, and "
    "with lambda < kappa: lambda N(0) = lambda < kappa, so no saturated equilibrium "
    "exists and the good equilibrium is the only one"
)
def _timeout_ordering() -> None:
    show_equal(attempts_closed(p, retries).subs(p, 0), 1, "N(0) = 1")
    margin = sp.Symbol("m", positive=True)  # kappa = lambda + margin
    show_positive(
        (lam + margin) - lam * attempts_closed(p, retries).subs(p, 0), "no root"
    )


@symbolic(
    "the same with the late share of exponential service: omega = exp(-mu (T_c - w)) "
    "is positive, so the exact condition is lambda A(omega, R) < kappa, met when "
    "lambda (1 + omega ... + omega^R) < kappa; omega -> 0 as T_c - w -> oo"
)
def _exponential_ordering() -> None:
    show_equal(
        sp.limit(late_share_exponential(queue_timeout), client_timeout, sp.oo),
        0,
        "omega",
    )


# --- health checks that need the database ----------------------------------------


@symbolic(
    "an attempt that waited w is on time iff its pod survives the wait and its "
    "Exp(mu) service ends before both the client's timeout and a crash: g_h(w) = "
    "e^{-h w} int_0^{T_c - w} mu e^{-mu s} e^{-h s} ds = e^{-h w} mu/(mu + h) (1 - "
    "e^{-(mu + h)(T_c - w)}); at h -> 0 it is 1 - exp(-mu (T_c - w))"
)
def _on_time_with_crashes() -> None:
    s = sp.Symbol("s", positive=True)
    wait_ = sp.Symbol("w", positive=True)
    integral = sp.exp(-crash * wait_) * sp.integrate(
        mu * sp.exp(-mu * s) * sp.exp(-crash * s), (s, 0, remaining)
    )
    closed = on_time_with_crashes(wait_).subs(client_timeout, wait_ + remaining)
    show_equal(integral, closed, "g_h as the survival integral")
    show_equal(
        sp.limit(on_time_with_crashes(wait_), crash, 0),
        1 - late_share_exponential(wait_),
        "h -> 0: one minus the late share",
    )


@symbolic(
    "g_h(w) decreases in w (dg_h/dw < 0 for w < T_c) and in h (the integrand "
    "mu e^{-mu s} e^{-h (w + s)} decreases in h), so g_h <= g_0: crashes only make "
    "attempts fail"
)
def _on_time_decreasing() -> None:
    wait_ = sp.Symbol("w", positive=True)
    slope = sp.diff(on_time_with_crashes(wait_), wait_)
    show_positive(-slope.subs(client_timeout, wait_ + remaining), "-dg_h/dw > 0")
    s = sp.Symbol("s", positive=True)
    integrand = mu * sp.exp(-mu * s) * sp.exp(-crash * (wait_ + s))
    show_positive(-sp.diff(integrand, crash), "integrand decreases in h")


@symbolic(
    "pods crash at h while up and are down D after each crash: in balance the "
    "crashes u h equal the returns (P - u)/D, so u = P/(1 + h D), and restarts "
    "send u h n_init init queries per second"
)
def _pods_balance() -> None:
    show_zero(PODS_UP * crash - (pods - PODS_UP) / restart, "crashes = returns")


@symbolic(
    "beyond T_p the arrivals a(w) = pi lambda N(1 - pi g_h(w)) + I rise with w "
    "(da/dw = pi^2 lambda N'(q) (-g_h'(w)) >= 0); with pi = 1 they jump up at T_p "
    "(lambda N(1 - g_h) + I >= lambda N(1 - g_0): g_h <= g_0, N nondecreasing), so "
    "the arrivals cross kappa at most once, at the boundary or at the jump"
)
def _arrivals_rising() -> None:
    passing = sp.Symbol("pi", positive=True)
    dn = sp.Symbol("dn", nonnegative=True)  # N'(q) >= 0
    falling = sp.Symbol("g_prime", positive=True)  # -g_h'(w) > 0
    slope = passing * lam * dn * passing * falling
    show_nonnegative(slope, "da/dw >= 0")
    gap = sp.Symbol("delta", nonnegative=True)  # N(1 - g_h) - N(1 - g_0) >= 0
    init = sp.Symbol("I", nonnegative=True)
    show_nonnegative(lam * gap + init, "the jump at T_p is upward")


THEOREMS = (
    Theorem(
        key="fluid.saturated_wait",
        title="the stationary overload fluid: head-of-line wait, queue and late share",
        statement=(
            "for x > kappa: w = T_q and Q = x T_q (hard timeout); w = "
            "log(x/kappa)/theta and Q = (x - kappa)/theta (exponential patience); w = "
            "K/kappa (queue limit); the late share is exp(-mu (T_c - w)) for w < T_c, "
            "1 otherwise"
        ),
        assumptions=(
            "stationary fluid, FIFO, constant attempt rate x",
            (
                "exponential service of rate mu (late share), or a deterministic "
                "allowance s"
            ),
        ),
        sources=("Whitt2006", "LiuWhitt2012"),
        used_by=("retrystorm.fluid.saturated_wait", "retrystorm.fluid.late_share"),
        checks=(_hard_timeout, _exponential_patience, _queue_limit, _late_share),
    ),
    Theorem(
        key="equilibria.bad",
        title="a self-sustaining bad equilibrium exists iff lambda N(omega) > kappa",
        statement=(
            "the saturated attempt rate lambda N(omega) (omega the late share at the "
            "saturated wait) exceeds c mu iff the retry loop has a saturated "
            "equilibrium; it is unique"
        ),
        assumptions=(
            (
                "mean field: attempts fail independently with the stationary failure "
                "probability"
            ),
            (
                "N continuous, nondecreasing, with N(p)(1 - p) strictly decreasing "
                "(true for A(p, R) and for the budgeted A(min(p, q_b), R))"
            ),
            "lambda N(omega) != kappa (the boundary case has no saturated root)",
        ),
        sources=("Whitt2006", "Bronson2021", "Huang2022", "SREBook2016"),
        used_by=(
            "retrystorm.equilibria.saturated_attempt_rate",
            "retrystorm.equilibria.bad_equilibrium_exists",
            "retrystorm.fluid.budgeted_attempts_per_request",
        ),
        checks=(
            _failure_map,
            _psi_decreasing,
            _existence,
            _closed_form,
            _budget_root,
            _all_late,
        ),
    ),
    Theorem(
        key="equilibria.stability",
        title="the bad equilibrium is locally stable, for any retry delay",
        statement=(
            "at the saturated equilibrium 0 <= G'(x*) < 1, so the linearised "
            "attempt-rate dynamics tau x' = G(x) - x decay, also with a retry delay d"
        ),
        assumptions=("the one-dimensional reduction to the attempt rate",),
        sources=("Whitt2006", "HaleVerduynLunel1993"),
        used_by=("retrystorm.equilibria.find_equilibria",),
        checks=(_slope, _slope_no_budget, _delay_independent),
    ),
    Theorem(
        key="equilibria.boundary",
        title="in the head-of-line wait: two stable corners and an unstable boundary",
        statement=(
            "with dw/dt = 1 - kappa/x(w), x(w) = lambda N(late share at w) "
            "nondecreasing: w = 0 is an equilibrium iff x(0) < kappa, w_sat iff lambda "
            "N(omega) > kappa, and between them a zero of x(w) = kappa with slope "
            "x'(w*)/kappa > 0 (unstable)"
        ),
        assumptions=(
            (
                "the quasi-static reduction: every attempt waits about the "
                "head-of-line wait w"
            ),
            "dw/dt = 1 - kappa/x(w) for a FIFO queue",
        ),
        sources=("LiuWhitt2012", "Whitt2006"),
        used_by=(
            "retrystorm.equilibria.boundary_wait",
            "retrystorm.equilibria.find_equilibria",
        ),
        checks=(_rate_increasing_in_wait, _drift_slope, _corners),
    ),
    Theorem(
        key="equilibria.timeout_ordering",
        title="timeout ordering and lambda < c mu leave only the good equilibrium",
        statement=(
            "if no request can be served after its client gave up (w + s < T_c with w "
            "= min(T_q, K/(c mu))) and lambda < c mu, the good equilibrium is the only "
            "one"
        ),
        assumptions=("service within the allowance s", "mean field as above"),
        sources=("Whitt2006", "Bronson2021"),
        used_by=(
            "retrystorm.equilibria.good_equilibrium_exists",
            "retrystorm.equilibria.on_time_share",
            "retrystorm.fluid.saturated_wait",
        ),
        checks=(_good, _timeout_ordering, _exponential_ordering),
    ),
    Theorem(
        key="equilibria.health_checks",
        title="health checks on the database: crashes beyond the probe timeout",
        statement=(
            "while the head-of-line wait exceeds the probe timeout T_p, pods crash at "
            "h: u = P/(1 + h D) are up, I = u h n_init init queries per second "
            "arrive, an attempt is on time with probability g_h(w) = e^{-h w} mu/(mu "
            "+ h)(1 - e^{-(mu + h)(T_c - w)}) <= g_0(w), and the arrivals rise with w "
            "on each side of T_p, jumping up at T_p when pi = min(1, u) = 1"
        ),
        assumptions=(
            "each up pod crashes at the constant rate h (memoryless) while w > T_p",
            "a crashed pod is down D seconds; the balancer spreads attempts evenly",
            "the quasi-static reduction: every attempt waits about w",
        ),
        sources=("LiuWhitt2012", "SREBook2016cascading", "Sendcloud2025"),
        used_by=(
            "retrystorm.equilibria.on_time_share",
            "retrystorm.equilibria.boundary_wait",
            "retrystorm.equilibria.find_equilibria",
        ),
        checks=(
            _on_time_with_crashes,
            _on_time_decreasing,
            _pods_balance,
            _arrivals_rising,
        ),
    ),
)
