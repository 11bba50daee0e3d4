"""The closed-form design limits: each solves the equation that defines it.

Write-up: ``limits.md``. The package functions are in ``retrystorm.limits``.

Notation: fresh demand ``lambda``, per-connection service rate ``mu``, ``c``
connections, pool capacity ``kappa = c mu``, client timeout ``T_c``, queueing
timeout ``T_q``, tolerance ``epsilon``, init-query rate ``I``, ``P`` pods.
Integer limits are written with their rounding as ``x - f`` (floor) or
``x + f`` (ceiling) with a fractional part ``0 <= f < 1``, so that the two
inequalities that make a whole number the largest (or smallest) one are
identities in ``f``.
"""

from __future__ import annotations

import sympy as sp

from proofs._framework import (
    Theorem,
    show_equal,
    show_nonnegative,
    show_positive,
    symbolic,
)
from proofs.amplification import attempts_closed

__all__ = [
    "BUDGET_LIMIT",
    "QUEUE_LIMIT_REAL",
    "QUEUE_TIMEOUT_LIMIT",
    "RESPONSE_TAIL",
    "RESTART_RATE",
    "RETRY_REAL",
    "SERVICE_QUANTILE",
    "THEOREMS",
    "USEFUL_ROOT",
    "alpha",
    "budget",
    "capacity",
    "client_timeout",
    "contention_gain",
    "crash_rate",
    "delay",
    "epsilon",
    "gamma",
    "init_rate",
    "lam",
    "mu",
    "pods",
    "queries",
    "servers",
    "service_time",
    "t",
    "waiting",
]

lam = sp.Symbol("lambda", positive=True)  # fresh requests per second
mu = sp.Symbol("mu", positive=True)  # per-connection service rate, per second
servers = sp.Symbol("c", positive=True)  # connections (a positive real suffices)
capacity = sp.Symbol("kappa", positive=True)  # c mu, completions per second
client_timeout = sp.Symbol("T_c", positive=True)
queue_timeout = sp.Symbol("T_q", positive=True)
epsilon = sp.Symbol("epsilon", positive=True)  # 0 < epsilon < 1
init_rate = sp.Symbol("I", nonnegative=True)
budget = sp.Symbol("b", nonnegative=True)
retries = sp.Symbol("R", integer=True, nonnegative=True)
frac = sp.Symbol("f", nonnegative=True)  # a fractional part, 0 <= f < 1
pods = sp.Symbol("P", positive=True)
queries = sp.Symbol("n", positive=True)
crash_rate = sp.Symbol("h", positive=True)
delay = sp.Symbol("D", positive=True)
up = sp.Symbol("u", positive=True)
service_time = sp.Symbol("s", positive=True)
alpha = sp.Symbol("alpha", positive=True)  # contention, 0 < alpha < 1 where used
size = sp.Symbol("c", positive=True)  # pool size in the contention theorem
gamma = sp.Symbol("gamma", positive=True)  # c mu - lambda, the waiting-time rate
waiting = sp.Symbol("C", positive=True)  # Erlang C, the probability of waiting
t = sp.Symbol("t", positive=True)
y = sp.Symbol("y", positive=True)
gap = sp.Symbol("g", positive=True)  # a positive difference
wait = sp.Symbol("w", positive=True)

SERVICE_QUANTILE = sp.log(1 / epsilon) / mu  # s_eps, exceeded with probability eps
QUEUE_TIMEOUT_LIMIT = client_timeout - SERVICE_QUANTILE  # T_q*
QUEUE_LIMIT_REAL = capacity * QUEUE_TIMEOUT_LIMIT  # K* before the floor
RETRY_REAL = (capacity - init_rate) / lam  # R* = ceil(RETRY_REAL) - 2
BUDGET_LIMIT = (capacity - init_rate) / lam - 1  # b*
RESTART_RATE = pods * queries * crash_rate / (1 + crash_rate * delay)  # I(h)
# u = alpha c solves (1 + u)(1 - alpha + u) = (1 - alpha)/epsilon:
USEFUL_ROOT = (
    -(2 - alpha) + sp.sqrt((2 - alpha) ** 2 + 4 * (1 - alpha) * (1 / epsilon - 1))
) / 2


def contention_gain(pool: sp.Expr) -> sp.Expr:
    """``kappa(c) = c / (s (1 + alpha (c - 1)))``, the full pool's throughput."""
    return pool / (service_time * (1 + alpha * (pool - 1)))


def _sum_tail_closed(rate: sp.Expr) -> sp.Expr:
    """``P(Y + S > t)`` for Y ~ Exp(rate), S ~ Exp(mu), rate != mu."""
    return (rate * sp.exp(-mu * t) - mu * sp.exp(-rate * t)) / (rate - mu)


RESPONSE_TAIL = (1 - waiting) * sp.exp(-mu * t) + waiting * _sum_tail_closed(gamma)


# --- the queueing timeout and the client timeout ---------------------------------


@symbolic(
    "the service time exceeded with probability epsilon: exp(-mu s_eps) = epsilon for "
    "s_eps = log(1/epsilon)/mu"
)
def _service_quantile() -> None:
    show_equal(sp.exp(-mu * SERVICE_QUANTILE), epsilon, "exp(-mu s_eps)")


@symbolic(
    "T_q* = T_c - s_eps solves exp(-mu (T_c - T_q)) = epsilon, and the late share is "
    "increasing in T_q (derivative mu exp(-mu (T_c - T_q)) > 0): every T_q <= T_q* "
    "has late share <= epsilon, every larger one more"
)
def _queue_timeout() -> None:
    late = sp.exp(-mu * (client_timeout - queue_timeout))
    show_equal(late.subs(queue_timeout, QUEUE_TIMEOUT_LIMIT), epsilon, "late(T_q*)")
    show_positive(sp.diff(late, queue_timeout), "late share increasing in T_q")


@symbolic(
    "the ordering: for the longest wait w the smallest client timeout with late share "
    "<= epsilon is w + s_eps (the late share decreases in T_c)"
)
def _client_ordering() -> None:
    late = sp.exp(-mu * (client_timeout - wait))
    show_equal(late.subs(client_timeout, wait + SERVICE_QUANTILE), epsilon, "at w+s")
    show_positive(-sp.diff(late, client_timeout), "late share decreasing in T_c")


# --- the queue limit and the concurrency cap ---------------------------------------


@symbolic(
    "K* = floor(kappa (T_c - s_eps)) = kappa (T_c - s_eps) - f, 0 <= f < 1: K*/kappa "
    "+ s_eps <= T_c (slack f/kappa) and (K* + 1)/kappa + s_eps > T_c (excess "
    "(1 - f)/kappa)"
)
def _queue_limit() -> None:
    largest = QUEUE_LIMIT_REAL - frac
    show_equal(
        client_timeout - (largest / capacity + SERVICE_QUANTILE),
        frac / capacity,
        "K* drains in time",
    )
    show_equal(
        (largest + 1) / capacity + SERVICE_QUANTILE - client_timeout,
        (1 - frac) / capacity,
        "K* + 1 does not",
    )
    show_positive((1 - frac).subs(frac, 1 - gap) / capacity, "(1 - f)/kappa > 0")


@symbolic(
    "a bounded tier of P pods with cap m leaves P m - c waiting places; m* = floor((c "
    "+ K)/P) = (c + K)/P - f: P m* - c = K - P f <= K and P (m* + 1) - c = K + P (1 - "
    "f) > K"
)
def _concurrency_cap() -> None:
    limit = sp.Symbol("K", nonnegative=True)
    cap = (servers + limit) / pods - frac
    show_equal(limit - (pods * cap - servers), pods * frac, "m* leaves at most K")
    show_equal(pods * (cap + 1) - servers - limit, pods * (1 - frac), "m* + 1 more")


# --- retries and budgets -----------------------------------------------------------


@symbolic(
    "when every attempt fails a request makes N(1) = R + 1 attempts; R* = ceil(x) - 2 "
    "with x = (kappa - I)/lambda and ceil(x) = x + f, 0 <= f < 1: (R* + 1) lambda + I "
    "- kappa = (f - 1) lambda < 0 and (R* + 2) lambda + I - kappa = f lambda >= 0"
)
def _retries() -> None:
    p = sp.Symbol("p", positive=True)
    show_equal(sp.limit(attempts_closed(p, retries), p, 1), retries + 1, "N(1)")
    largest = RETRY_REAL + frac - 2
    show_equal(
        (largest + 1) * lam + init_rate - capacity, (frac - 1) * lam, "R* is below"
    )
    show_equal((largest + 2) * lam + init_rate - capacity, frac * lam, "R* + 1 is not")
    show_positive((1 - frac).subs(frac, 1 - gap) * lam, "(1 - f) lambda > 0")
    show_nonnegative(frac * lam, "f lambda >= 0")


@symbolic(
    "a budget b caps the attempts per request at 1 + b (N_b(1) = min(R + 1, 1 + b)); "
    "b* = (kappa - I)/lambda - 1 solves (1 + b) lambda + I = kappa, and (1 + b) lambda "
    "+ I grows with b (slope lambda): every b < b* leaves no bad state for any R"
)
def _budget() -> None:
    show_equal((1 + BUDGET_LIMIT) * lam + init_rate, capacity, "b* is the root")
    show_positive(sp.diff((1 + budget) * lam + init_rate, budget), "increasing in b")
    below = BUDGET_LIMIT - gap
    show_equal(capacity - ((1 + below) * lam + init_rate), gap * lam, "slack below b*")


@symbolic(
    "pods crashing at rate h and down for D: a share u = 1/(1 + h D) is up (balance u "
    "h = (1 - u)/D), so init queries arrive at I(h) = P n h/(1 + h D), increasing in h "
    "(I' = P n/(1 + h D)^2): the fastest crash rate 1/crash_after gives the most"
)
def _restart_rate() -> None:
    share = 1 / (1 + crash_rate * delay)
    show_equal(share * crash_rate, (1 - share) / delay, "balance of up and down pods")
    show_equal(pods * share * crash_rate * queries, RESTART_RATE, "I = P u h n")
    show_equal(
        sp.diff(RESTART_RATE, crash_rate),
        pods * queries / (1 + crash_rate * delay) ** 2,
        "dI/dh",
    )
    show_positive(sp.diff(RESTART_RATE, crash_rate), "I increasing in h")


# --- connections -------------------------------------------------------------------


@symbolic(
    "with contention the gain of connection c + 1 is kappa(c + 1) - kappa(c) = (1 - "
    "alpha)/(s (1 + alpha c)(1 + alpha (c - 1))), decreasing in c; with u = alpha c "
    "the threshold gain epsilon/s is reached where (1 + u)(1 - alpha + u) = (1 - "
    "alpha)/epsilon, whose positive root is USEFUL_ROOT"
)
def _useful_connections() -> None:
    gain = contention_gain(size + 1) - contention_gain(size)
    denominator = (1 + alpha * size) * (1 + alpha * (size - 1))
    show_equal(gain, (1 - alpha) / (service_time * denominator), "the gain")
    show_positive(
        sp.diff(denominator, size).subs(alpha, 1 / (1 + gap)), "denominator grows"
    )
    root = USEFUL_ROOT
    show_equal((1 + root) * (1 - alpha + root), (1 - alpha) / epsilon, "the root")
    show_equal(
        denominator.subs(size, root / alpha), (1 + root) * (1 - alpha + root), "u"
    )


@symbolic(
    "the other root of the quadratic is negative for 0 < alpha < 1, 0 < epsilon < 1, "
    "so USEFUL_ROOT is the only threshold: the roots sum to -(2 - alpha) < 0 and "
    "multiply to (1 - alpha)(1 - 1/epsilon) < 0"
)
def _useful_root_unique() -> None:
    a_small = 1 / (1 + gap)  # 0 < alpha < 1
    e_small = 1 / (1 + y)  # 0 < epsilon < 1
    product = ((1 - alpha) * (1 - 1 / epsilon)).subs({alpha: a_small, epsilon: e_small})
    show_positive(-product, "product of the roots < 0")


# --- the M/M/c response time ---------------------------------------------------------


@symbolic(
    "Y ~ Exp(gamma), S ~ Exp(mu) independent, gamma != mu: P(Y + S > t) = P(Y > t) + "
    "int_0^t gamma e^{-gamma y} e^{-mu (t - y)} dy = (gamma e^{-mu t} - mu "
    "e^{-gamma t})/(gamma - mu)"
)
def _sum_of_exponentials() -> None:
    for rate in (mu + gap, mu / (1 + gap)):  # gamma > mu, then gamma < mu
        integrand = rate * sp.exp(-rate * y) * sp.exp(-mu * (t - y))
        # Factor e^{-mu t} out: what is left is a single exponential in y.
        factored = rate * sp.exp(-mu * t) * sp.exp((mu - rate) * y)
        show_equal(integrand, factored, "factor e^{-mu t}")
        integral = (
            rate
            * sp.exp(-mu * t)
            * sp.integrate(sp.exp(sp.expand((mu - rate) * y)), (y, 0, t), conds="none")
        )
        show_equal(sp.exp(-rate * t) + integral, _sum_tail_closed(rate), f"{rate}")


@symbolic(
    "the M/M/c response time: the wait is 0 with probability 1 - C and Exp(c mu - "
    "lambda) otherwise [GrossHarris2008], so P(W + S > t) = (1 - C) e^{-mu t} + C P(Y "
    "+ S > t) = RESPONSE_TAIL; at gamma = mu its limit is (1 - C) e^{-mu t} + C (1 + "
    "mu t) e^{-mu t}"
)
def _response_tail() -> None:
    mixed = (1 - waiting) * sp.exp(-mu * t) + waiting * _sum_tail_closed(gamma)
    show_equal(mixed, RESPONSE_TAIL, "the mixture")
    at_mu = sp.limit(_sum_tail_closed(gamma), gamma, mu)
    show_equal(at_mu, (1 + mu * t) * sp.exp(-mu * t), "gamma -> mu")


@symbolic(
    "the form without cancellation: with u = (gamma - mu) t, P(Y + S > t) = e^{-mu t} "
    "(1 + mu t (1 - e^{-u})/u), finite and continuous through u = 0"
)
def _stable_form() -> None:
    u = (gamma - mu) * t
    show_equal(
        sp.exp(-mu * t) * (1 + mu * t * (1 - sp.exp(-u)) / u),
        _sum_tail_closed(gamma),
        "rewritten",
    )


@symbolic(
    "the response-time tail decreases strictly in t (its derivative is minus a "
    "positive density), so each percentile has exactly one root"
)
def _tail_decreasing() -> None:
    tail = (1 - waiting) * sp.exp(-mu * t) + waiting * _sum_tail_closed(gamma)
    spread = (gamma - mu) * t
    density = (1 - waiting) * mu * sp.exp(-mu * t) + waiting * gamma * mu * sp.exp(
        -mu * t
    ) * (1 - sp.exp(-spread)) / (gamma - mu)
    show_equal(-sp.diff(tail, t), density, "minus the derivative")
    # (1 - e^{-u})/(gamma - mu) > 0 on both sides of gamma = mu: with gamma = mu
    # +- g write e^{g t} = 1 + z, z > 0 (t = log(1 + z)/g).
    z = sp.Symbol("z", positive=True)
    ratio = (1 - sp.exp(-spread)) / (gamma - mu)
    at_z = {t: sp.log(1 + z) / gap}
    faster = ratio.subs(gamma, mu + gap).subs(at_z)
    slower = ratio.subs(gamma, mu - gap).subs(at_z)
    show_equal(faster, z / ((1 + z) * gap), "gamma = mu + g")
    show_equal(slower, z / gap, "gamma = mu - g")
    one_c = 1 / (1 + y)  # 0 < C < 1
    for positive_ratio in (z / ((1 + z) * gap), z / gap):
        show_positive(
            (1 - one_c) * mu + one_c * gamma * mu * positive_ratio, "positive density"
        )


THEOREMS = (
    Theorem(
        key="limits.queue_timeout",
        title="the largest queueing timeout that wastes no work, and its ordering",
        statement=(
            "T_q* = T_c - log(1/epsilon)/mu is the largest queueing timeout for which "
            "a request served after the longest wait is late with probability at most "
            "epsilon; dually T_c >= w + log(1/epsilon)/mu for a longest wait w"
        ),
        assumptions=(
            "exponential service of rate mu once a connection is granted",
            "the client timeout counts from the moment the attempt was sent",
        ),
        sources=("Bronson2021", "Whitt2006"),
        used_by=(
            "retrystorm.limits.service_quantile",
            "retrystorm.limits.largest_queue_timeout",
            "retrystorm.limits.compute_limits",
        ),
        checks=(_service_quantile, _queue_timeout, _client_ordering),
    ),
    Theorem(
        key="limits.queue_limit",
        title="the largest queue limit (and tier cap) whose full queue drains in time",
        statement=(
            "K* = floor(c mu (T_c - log(1/epsilon)/mu)) is the largest whole K with "
            "K/(c mu) + log(1/epsilon)/mu <= T_c; a tier of P pods with cap m holds P "
            "m - c waiting, so m* = floor((c + K*)/P)"
        ),
        assumptions=(
            "FIFO, the full pool completing c mu per second (fluid drain time)",
            "exponential service",
        ),
        sources=("Whitt2006", "Bronson2021"),
        used_by=(
            "retrystorm.limits.largest_queue_limit",
            "retrystorm.limits.compute_limits",
        ),
        checks=(_queue_limit, _concurrency_cap),
    ),
    Theorem(
        key="limits.retries",
        title="the most retries without a bad state when every attempt fails",
        statement=(
            "with N(1) = R + 1 attempts per request, R* = ceil((kappa - I)/lambda) - 2 "
            "is the largest whole R with (R + 1) lambda + I < kappa"
        ),
        assumptions=(
            "every attempt fails (the worst case of the bad state)",
            "the bad state exists iff lambda N(1) + I > kappa (equilibria.bad)",
        ),
        sources=("Bronson2021", "Huang2022"),
        used_by=(
            "retrystorm.limits.largest_retry_count",
            "retrystorm.equilibria.bad_equilibrium_exists",
        ),
        checks=(_retries,),
    ),
    Theorem(
        key="limits.retry_budget",
        title="the retry budgets that leave no bad state, and the worst init load",
        statement=(
            "b* = (kappa - I)/lambda - 1: every budget b < b* gives (1 + b) lambda + I "
            "< kappa for any R; the init load of crashing pods I(h) = P n h/(1 + h D) "
            "is largest at the fastest crash rate"
        ),
        assumptions=(
            "a budget caps the attempts per request at 1 + b",
            "pods crash at rate h while up and stay down for D",
        ),
        sources=("SREBook2016",),
        used_by=(
            "retrystorm.limits.largest_retry_budget",
            "retrystorm.limits.restart_query_rate",
        ),
        checks=(_budget, _restart_rate),
    ),
    Theorem(
        key="limits.useful_connections",
        title="the pool size beyond which contention eats the gain of a connection",
        statement=(
            "with kappa(c) = c/(s (1 + alpha (c - 1))) the gain of one more connection "
            "is (1 - alpha)/(s (1 + alpha c)(1 + alpha (c - 1))), decreasing; it falls "
            "to epsilon/s at c = USEFUL_ROOT/alpha"
        ),
        assumptions=("0 < alpha < 1", "0 < epsilon < 1", "the pool full"),
        sources=("Brooker2021",),
        used_by=("retrystorm.limits.useful_pool_size",),
        checks=(_useful_connections, _useful_root_unique),
    ),
    Theorem(
        key="limits.response_time",
        title="the M/M/c response-time tail, a mixture of two exponentials",
        statement=(
            "P(W + S > t) = (1 - C) e^{-mu t} + C (gamma e^{-mu t} - mu e^{-gamma "
            "t})/(gamma - mu), gamma = c mu - lambda, with limit (1 - C) e^{-mu t} + C "
            "(1 + mu t) e^{-mu t} at gamma = mu; strictly decreasing in t"
        ),
        assumptions=(
            "M/M/c in steady state (lambda < c mu), FIFO",
            "the wait is 0 w.p. 1 - C, else Exp(c mu - lambda) (mmc.wait_tail)",
        ),
        sources=("GrossHarris2008", "Brooker2019"),
        used_by=(
            "retrystorm.limits.response_time_tail",
            "retrystorm.limits.response_time_quantile",
        ),
        checks=(_sum_of_exponentials, _response_tail, _stable_form, _tail_decreasing),
    ),
)
