"""Equilibria of the fluid model: good, bad and the boundary between them.

With the trigger absent and a constant fresh request rate ``lambda``, the fluid
model of `retrystorm.fluid` settles in one of at most two stable states, and
this module finds them in closed form or by a one-dimensional fixed point.

Notation: ``c`` connections, ``mu_c`` the per-connection service rate with the
pool full (contention included), ``kappa = c mu_c`` the pool's throughput,
``T_c`` the client timeout, ``T_q`` the queueing timeout, ``R`` retries,
``beta`` the retry budget, ``w`` the head-of-line wait and ``w_sat`` its value
when the queue is saturated (`retrystorm.fluid.saturated_wait`).

The one-dimensional reduction
-----------------------------
While the queue neither fills nor empties, every attempt waits about ``w``
and then holds a connection for an exponential time, so it is late (served
after its client gave up) with probability ``p(w) = exp(-mu_c (T_c - w))`` for
``w < T_c`` and 1 beyond (`retrystorm.fluid.late_share`). Each late attempt
retries, so the attempt rate is::

    x(w) = lambda N_beta(p(w)),  N_beta(p) = min(1 + p + ... + p**R, 1 + beta)

(`retrystorm.fluid.budgeted_attempts_per_request`), increasing in ``w``. The FIFO
queue's head-of-line wait drifts as ``dw/dt = 1 - kappa / x(w)``
[LiuWhitt2012]: up when attempts arrive faster than the pool serves them.

Theorems (the fluid model, no circuit breaker)
----------------------------------------------
1. *Good equilibrium* (``w = 0``): exists iff ``x_0 < kappa_0``, where ``x_0``
   is the attempt rate with no waiting (late only by service) and
   ``kappa_0`` the most the pool (or a bounded tier's cap, if smaller) serves.
   It is stable: ``dw/dt = 1 - kappa / x_0 < 0`` pushes any queue back to 0.
2. *Saturated (bad) equilibrium* (``w = w_sat``): let ``g = 1 - p(w_sat)`` be
   the share of served attempts that are on time. Without crashes it exists
   iff ``lambda N_beta(1 - g) > kappa`` (`bad_equilibrium_exists`), with
   attempt rate ``x_sat = min(x_u, lambda (1 + beta))`` where
   ``x_u = kappa g / (1 - (1 - kappa g / lambda)**(1/(R+1)))`` (``x_u =
   lambda (R + 1)`` when ``g = 0``) (`saturated_attempt_rate`). It is stable
   when it exists: the drift ``1 - kappa / x_sat > 0`` holds the wait at its
   cap, and the attempt map ``x -> lambda N_beta(1 - kappa g / x)`` has slope
   below 1 at the fixed point (checked numerically and reported).
3. *Boundary equilibrium*: the ``w*`` in ``(0, w_sat)`` with
   ``x(w*) = kappa`` (`boundary_wait`); it exists iff both others exist, and
   it is unstable (slope ``d/dw (1 - kappa/x(w)) = x'(w*) / kappa > 0``). Its
   queue ``kappa w*`` is the backlog beyond which the system does not return.
4. *Corollaries*. When ``T_q >= T_c`` (no limit, no cancellation), ``g = 0``
   and a bad equilibrium exists iff ``lambda min(R + 1, 1 + beta) > kappa``:
   every served request is wasted and the amplification alone decides
   [Bronson2021]. When ``w_sat`` is well below ``T_c`` (a short queueing
   timeout, a queue limit ``K`` with ``K / kappa`` small, a bounded tier),
   ``g`` is near 1 and the bad equilibrium needs ``lambda`` itself near
   ``kappa``.
5. *Health checks that need the database* (``probe_timeout = T_p``): while
   ``w > T_p`` the checks fail and every up pod crashes at ``h =
   1/crash_after``, so a share ``u = P / (1 + h D)`` of the ``P`` pods is up
   (crashes ``u h`` balance returns ``(P - u)/D``), restarts add ``I = u h
   n_init`` init queries per second, a share ``pi = min(1, u)`` of the
   attempts gets past the pods, and an attempt is on time only if its pod
   survives until it is served (``g_h(w)``, `on_time_share`). The arrivals
   ``a(w) = pi lambda N_beta(1 - pi g_h(w)) + I`` for ``w > T_p`` (``x(w)``
   below) rise with ``w`` on each side of ``T_p`` and, when ``pi = 1``, jump
   up at ``T_p``; the boundary is where they first rise through ``kappa``
   (``T_p`` itself if they jump across it). The bad equilibrium crashes when
   ``w_sat > T_p``.

Stability is read from the sign of the drift ``dw/dt`` at the corner
equilibria (``w = 0`` and ``w = w_sat``) and from its slope at the interior one
(the boundary), all reported as ``slope`` with the convention *negative =
stable*; for the bad equilibrium also from the slope of the attempt map.

Crashes and init queries: in the saturated state the share of connection
requests that fail is ``phi = 1 - kappa / (pi x + I)`` (when the queueing
timeout or the queue limit sheds the excess). When ``phi`` exceeds
``crash_failure_share``, or when the health checks fail (``w_sat > T_p``,
Theorem 5), pods crash at rate ``h = 1/crash_after`` and restart after
``D``: a share ``1 / (1 + h D)`` of pods is up, restarts bring
``I = u h n_init`` init queries per second, and a queued or served attempt is
on time only if its pod survives (``g_h(w) = exp(-h w) mu/(mu + h)
(1 - exp(-(mu + h)(T_c - w)))``). The fixed point is then solved numerically
(Brent's method); a saturated state that exists only with crashes (attempts
they kill, init queries) counts when a crash rule holds in it; when a rule
sits at its threshold the crash rate is solved so that it holds there (a
sliding state). A circuit breaker has no fixed point (it cycles); with one,
the bad equilibrium's stability is decided by a fluid replay from it.

The critical backlog: the smallest initial queue (in the quasi-static state of
`retrystorm.fluid.simulate_fluid` with a matching orbit) from which the fluid
model does not return to the good state within the horizon, found by bisection
to a stated relative tolerance; the boundary equilibrium's queue
``kappa w*`` is its one-dimensional prediction, reported beside it.

References
----------
[Whitt2006], [LiuWhitt2012] (fluid queues with deterministic patience),
[Bronson2021], [Huang2022] (metastable failures), [SREBook2016] (retry
budgets).

Examples
--------
>>> from retrystorm.scenario import default_scenario
>>> report = find_equilibria(default_scenario())
>>> report.classification
'vulnerable'
>>> [e.kind for e in report.equilibria]
['good', 'boundary', 'bad']

In the bad state every request waits 120 s and is wasted: 3 x 160 = 480
attempts per second arrive, the health checks do not query the database, so all
20 pods stay up, and the queue holds 480 x 120 s:

>>> bad = report.equilibria[-1]
>>> round(bad.queue), round(bad.pods_up, 6)
(57600, 20.0)

With health checks that query the database (1 s probe timeout) they fail: 12 of
the 20 pods are up (crashing every 30 s, back after 20 s), and the queue holds
(480 attempts + 2 init queries per second) x 120 s:

>>> probed = default_scenario().variant("health-checks-query-db")
>>> bad = find_equilibria(probed).equilibria[-1]
>>> round(bad.queue), round(bad.pods_up, 6)
(57840, 12.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import brentq

from retrystorm._validation import check_nonnegative, check_positive, check_probability
from retrystorm.errors import InvalidParameterError
from retrystorm.fluid import (
    _FLOWS,
    _STATE,
    GOODPUT_TOLERANCE,
    _Engine,
    _on_time,
    _quasi_static,
    _total,
    budgeted_attempts_per_request,
    good_queue_threshold,
    late_share,
    pod_crash_rate,
    saturated_service_rate,
    saturated_wait,
)
from retrystorm.scenario import Scenario

__all__ = [
    "Equilibrium",
    "EquilibriumReport",
    "bad_equilibrium_exists",
    "boundary_wait",
    "find_equilibria",
    "good_equilibrium_exists",
    "good_state_failure_share",
    "on_time_share",
    "saturated_attempt_rate",
    "settling_time",
]

Classification = Literal["stable", "vulnerable", "overloaded"]
_SLOPE_STEP = 1e-6  # relative step of the central difference of the attempt map


# -- closed forms (the theorems of the module docstring) -----------------------------


def on_time_share(
    wait: float, client_timeout: float, service_rate: float, crash_rate: float = 0.0
) -> float:
    """Return ``g``: the share of attempts served after ``wait`` that are on time.

    ``g = exp(-h w) mu / (mu + h) (1 - exp(-(mu + h)(T_c - w)))`` for ``w < T_c``
    (0 otherwise), with ``h`` the crash rate of the attempt's pod; for ``h = 0``
    this is ``1 - late_share(w, T_c, mu)``.

    Examples
    --------
    >>> on_time_share(120.0, 40.0, 2.5)
    0.0
    >>> round(on_time_share(39.0, 40.0, 2.5), 6)
    0.917915
    """
    check_nonnegative("wait", wait)
    check_positive("client_timeout", client_timeout)
    check_positive("service_rate", service_rate)
    check_nonnegative("crash_rate", crash_rate)
    return _on_time(wait, client_timeout, service_rate, crash_rate)


def saturated_attempt_rate(
    request_rate: float,
    throughput: float,
    on_time: float,
    max_retries: int,
    retry_budget: float = math.inf,
) -> float:
    """Return the attempt rate ``x_sat`` of a saturated pool (per second).

    The fixed point of ``x = lambda N_beta(1 - kappa g / x)`` (Theorem 2 of
    the module docstring)::

        x_u = kappa g / (1 - (1 - kappa g / lambda)**(1/(R+1)))  (0 < kappa g < lambda)
        x_u = lambda (R + 1)                                     (g = 0)
        x_u = lambda                                             (kappa g >= lambda)
        x_sat = min(x_u, lambda (1 + beta))

    Parameters
    ----------
    request_rate
        ``lambda``, fresh requests per second (>= 0).
    throughput
        ``kappa``, completions per second of the full pool (> 0).
    on_time
        ``g`` in [0, 1], share of served attempts whose client still waits.
    max_retries
        ``R`` >= 0.
    retry_budget
        ``beta`` >= 0 (``inf``: none).

    Returns
    -------
    float
        ``x_sat`` per second; a saturated equilibrium exists iff it exceeds
        ``kappa``.

    Notes
    -----
    In equilibrium the successes ``kappa g`` equal ``lambda (1 - p**(R+1))``
    (each request succeeds unless all ``R + 1`` attempts fail) and the attempt
    rate is ``lambda (1 - p**(R+1)) / (1 - p)``; eliminating ``p`` gives
    ``x_u``. A binding budget caps the retries at ``beta lambda``.

    Examples
    --------
    >>> saturated_attempt_rate(120.0, 250.0, 0.0, 3)
    480.0
    >>> saturated_attempt_rate(120.0, 250.0, 0.0, 3, 0.1)
    132.0
    """
    rate = check_nonnegative("request_rate", request_rate)
    kappa = check_positive("throughput", throughput)
    good = check_probability("on_time", on_time)
    budget = check_nonnegative("retry_budget", retry_budget, allow_inf=True)
    ceiling = rate * (1.0 + budget)
    if rate == 0.0:
        return 0.0
    successes = kappa * good
    if successes >= rate:
        unbudgeted = rate
    elif successes / rate < 1e-200:
        # The root is lambda (R + 1) (1 + O(s / lambda)): the limit is exact in
        # double precision here, and the formula below would lose every digit
        # once s / lambda is subnormal.
        unbudgeted = rate * (max_retries + 1)
    else:
        # 1 - (1 - s/lambda)**(1/(R+1)), accurate also for tiny s/lambda.
        succeeding = -math.expm1(math.log1p(-successes / rate) / (max_retries + 1))
        # Below the smallest float the ratio tends to its limit lambda (R + 1).
        unbudgeted = (
            successes / succeeding if succeeding > 0.0 else rate * (max_retries + 1)
        )
    return min(unbudgeted, ceiling)


def bad_equilibrium_exists(
    request_rate: float,
    throughput: float,
    on_time: float,
    max_retries: int,
    retry_budget: float = math.inf,
) -> bool:
    """Whether a saturated (bad) equilibrium exists, without crashes.

    Theorem 2: iff ``lambda N_beta(1 - g) > kappa``, equivalently
    ``saturated_attempt_rate(...) > kappa``.

    Examples
    --------
    >>> bad_equilibrium_exists(120.0, 250.0, 0.0, 3)
    True
    >>> bad_equilibrium_exists(120.0, 250.0, 0.0, 3, retry_budget=0.5)
    False
    >>> bad_equilibrium_exists(120.0, 250.0, 1.0 - 1e-9, 3)
    False
    """
    check_nonnegative("request_rate", request_rate)
    check_positive("throughput", throughput)
    check_probability("on_time", on_time)
    amplified = budgeted_attempts_per_request(1.0 - on_time, max_retries, retry_budget)
    return request_rate * amplified > throughput


def good_equilibrium_exists(attempt_rate: float, capacity: float) -> bool:
    """Whether the good equilibrium exists: ``x_0 < kappa_0`` (Theorem 1).

    Examples
    --------
    >>> good_equilibrium_exists(120.0, 250.0)
    True
    """
    check_nonnegative("attempt_rate", attempt_rate)
    check_positive("capacity", capacity)
    return attempt_rate < capacity


def boundary_wait(
    request_rate: float,
    throughput: float,
    client_timeout: float,
    service_rate: float,
    max_retries: int,
    *,
    retry_budget: float = math.inf,
    probe_timeout: float | None = None,
    crash_rate: float = 0.0,
    init_rate: float = 0.0,
    passing: float = 1.0,
) -> float | None:
    """Return the boundary wait ``w*``: where the arrivals reach ``kappa`` (Theorem 3).

    Below the probe timeout ``T_p`` (everywhere without one) the arrivals are
    the attempts ``lambda N_beta(exp(-mu (T_c - w)))``; beyond it the health
    checks fail (Theorem 5): pods crash at ``h``, a share ``pi`` of the
    attempts gets past the pods, attempts are on time with probability
    ``g_h(w)`` (`on_time_share`), and restarts add ``I`` init queries per
    second, so the arrivals are ``pi lambda N_beta(1 - pi g_h(w)) + I``.

    Parameters
    ----------
    request_rate
        ``lambda``, fresh requests per second (>= 0).
    throughput
        ``kappa``, completions per second of the full pool (> 0).
    client_timeout
        ``T_c`` in seconds (> 0).
    service_rate
        ``mu``, per-connection service rate per second (> 0).
    max_retries
        ``R`` >= 0.
    retry_budget
        ``beta`` >= 0 (``inf``: none).
    probe_timeout
        ``T_p`` in seconds (> 0), or None: health checks that do not use the
        database.
    crash_rate
        ``h``, crashes per second of each up pod beyond ``T_p`` (>= 0).
    init_rate
        ``I``, init queries per second beyond ``T_p`` (>= 0).
    passing
        ``pi``, share of attempts past the pods beyond ``T_p``, in (0, 1]:
        ``min(1, pods up)``.

    Returns
    -------
    float or None
        The head-of-line wait (s) in ``(0, T_c)`` at which the arrivals first
        rise through ``kappa`` (``T_p`` itself when they jump across it
        there), or None when they do not. The boundary exists only if
        ``w* < w_sat``; the caller checks that.

    Notes
    -----
    On each side of ``T_p`` the arrivals rise with ``w`` (the late share and
    ``1 - g_h`` rise, ``N_beta`` is nondecreasing), so the first crossing is
    found by Brent's method on the side where the sign changes.

    Examples
    --------
    >>> round(boundary_wait(120.0, 250.0, 40.0, 2.5, 3), 3)
    39.776
    >>> crashing = {"probe_timeout": 1.0, "crash_rate": 1 / 30, "init_rate": 2.0}
    >>> round(boundary_wait(120.0, 250.0, 40.0, 2.5, 3, **crashing), 3)
    24.621
    """
    rate = check_nonnegative("request_rate", request_rate)
    kappa = check_positive("throughput", throughput)
    timeout = check_positive("client_timeout", client_timeout)
    mu = check_positive("service_rate", service_rate)
    crash = check_nonnegative("crash_rate", crash_rate)
    init = check_nonnegative("init_rate", init_rate)
    share = check_probability("passing", passing)
    if share == 0.0:
        raise InvalidParameterError("passing", "must be positive", passing)
    probe = timeout
    if probe_timeout is not None:
        probe = min(timeout, check_positive("probe_timeout", probe_timeout))

    def calm(late: float) -> float:
        return (
            rate * budgeted_attempts_per_request(late, max_retries, retry_budget)
            - kappa
        )

    def crashing(wait: float) -> float:
        late = 1.0 - share * on_time_share(wait, timeout, mu, crash)
        return (
            share
            * rate
            * budgeted_attempts_per_request(late, max_retries, retry_budget)
            + init
            - kappa
        )

    at_zero, at_probe = late_share(0.0, timeout, mu), late_share(probe, timeout, mu)
    if rate == 0.0 or calm(at_zero) >= 0.0:
        return None
    if calm(at_probe) > 0.0:
        # Solved in the late share: exact where the wait nears T_c.
        late = float(brentq(calm, at_zero, at_probe, xtol=1e-15, rtol=1e-14))
        return timeout + math.log(late) / mu
    if probe >= timeout or crashing(timeout) <= 0.0:
        return None
    if crashing(probe) >= 0.0:
        return probe  # the failing health checks push the arrivals across kappa
    return float(brentq(crashing, probe, timeout, xtol=1e-12, rtol=1e-14))


# -- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class Equilibrium:
    """One equilibrium of the fluid model (constant demand, no trigger).

    Attributes
    ----------
    kind
        ``"good"`` (empty queue), ``"bad"`` (saturated) or ``"boundary"``
        (the unstable state between them).
    queue
        Requests waiting for a connection.
    head_wait
        Head-of-line wait (s).
    attempt_rate
        Client attempts per second.
    throughput
        Completions per second (goodput + wasted + init).
    goodput
        Completions per second whose client still waits.
    wasted_share
        Share of the throughput that is wasted (client gone).
    failure_share
        Share of fresh requests that fail for good.
    connection_failure_share
        Share of connection requests that fail (the crash and breaker input).
    pods_up
        Pods up.
    stable
        Whether it is locally stable.
    slope
        Stability measure of the wait drift ``dw/dt = 1 - kappa / x(w)``
        (negative = stable): at the corners the drift pointing into the
        state space's interior, at the boundary its slope ``x'(w*)/kappa``.
    attempt_map_slope
        For the bad equilibrium, the slope of ``x -> lambda N_beta(1 - S(x)/x)``
        at the fixed point (stable when below 1 in size); else 0.
    stability
        How ``stable`` was decided: ``"drift"`` (the closed form) or
        ``"replay"`` (a fluid replay from the state, with a circuit breaker).
    """

    kind: Literal["good", "bad", "boundary"]
    queue: float
    head_wait: float
    attempt_rate: float
    throughput: float
    goodput: float
    wasted_share: float
    failure_share: float
    connection_failure_share: float
    pods_up: float
    stable: bool
    slope: float
    attempt_map_slope: float = 0.0
    stability: Literal["drift", "replay"] = "drift"


@dataclass(frozen=True)
class EquilibriumReport:
    """The equilibria of a scenario's system and what they mean.

    Attributes
    ----------
    equilibria
        Good, boundary and bad equilibria that exist, in that order.
    classification
        ``"stable"`` (one good equilibrium, no self-sustaining bad one),
        ``"vulnerable"`` (a good one and a stable bad one) or ``"overloaded"``
        (no good one).
    critical_backlog
        Smallest initial queue (requests) from which the fluid model does not
        return to the good state within the horizon; None when no stable bad
        equilibrium exists (or no good one).
    boundary_backlog
        The boundary equilibrium's queue ``kappa w*`` (the one-dimensional
        prediction of the critical backlog), or None.
    reason
        One sentence on why.
    request_rate
        The constant demand used (requests per second).
    capacity
        The pool's throughput ``kappa`` (completions per second).
    """

    equilibria: tuple[Equilibrium, ...]
    classification: Classification
    critical_backlog: float | None
    boundary_backlog: float | None
    reason: str
    request_rate: float
    capacity: float

    def of_kind(self, kind: str) -> Equilibrium | None:
        """Return the equilibrium of ``kind``, or None."""
        return next((e for e in self.equilibria if e.kind == kind), None)


# -- the good equilibrium ------------------------------------------------------------


def _service_rate_at(scenario: Scenario, held: float) -> float:
    """Per-connection service rate (per s) with ``held`` connections held."""
    database = scenario.database
    load = max(1.0, 1.0 + database.contention * (held - 1.0))
    return 1.0 / (database.service_time * load)


def _good_capacity(scenario: Scenario) -> tuple[float, float]:
    """Return (most connections clients can hold, their throughput per s)."""
    web, pool = scenario.web, float(scenario.proxy.pool_size)
    if web.mode == "bounded" and web.concurrency_per_pod is not None:
        pool = min(pool, float(web.pods * web.concurrency_per_pod))
    return pool, pool * _service_rate_at(scenario, pool)


def _held_for(scenario: Scenario, throughput: float) -> float:
    """Return the connections held to complete ``throughput`` per s (b for b mu_b)."""
    mu, alpha = 1.0 / scenario.database.service_time, scenario.database.contention
    held = throughput / mu
    if held <= 1.0 or alpha == 0.0:
        return held
    if alpha * throughput >= mu:
        return math.inf
    return throughput * (1.0 - alpha) / (mu - alpha * throughput)


def good_state_failure_share(scenario: Scenario) -> float:
    """Return the share of fresh requests that fail for good in the good state.

    At the peak request rate, from the good equilibrium (Theorem 1): the
    requests whose every attempt outlives its client, each attempt served
    with no wait; 0 where there is no good equilibrium.

    Examples
    --------
    One attempt, exponential service of mean 0.4375 s, a 2 s client timeout:
    ``exp(-2 / 0.4375)``.

    >>> from retrystorm.scenario import parse_scenario
    >>> scenario = parse_scenario({
    ...     "scenario": {"name": "x", "horizon": 60.0, "time_step": 0.1},
    ...     "clients": {"request_rate": 10.0, "timeout": 2.0, "max_retries": 0},
    ...     "web": {"pods": 1}, "proxy": {"pool_size": 6, "queue_timeout": 2.0},
    ...     "database": {"service_time": 0.4375}})
    >>> round(good_state_failure_share(scenario), 6)
    0.010343
    """
    rate = scenario.clients.peak_request_rate
    good = _good(scenario, rate) if rate > 0.0 else None
    return good.failure_share if good is not None else 0.0


def _good(scenario: Scenario, rate: float) -> Equilibrium | None:
    """Return the good equilibrium (Theorem 1), or None."""
    clients = scenario.clients
    connections, capacity = _good_capacity(scenario)
    attempts = rate
    for _ in range(200):  # monotone iteration from below to the least fixed point
        held = _held_for(scenario, attempts)
        if held >= connections:
            return None
        late = late_share(0.0, clients.timeout, _service_rate_at(scenario, held))
        update = rate * budgeted_attempts_per_request(
            late, clients.max_retries, clients.retry_budget
        )
        if abs(update - attempts) <= 1e-13 * max(1.0, attempts):
            break
        attempts = update
    if not good_equilibrium_exists(attempts, capacity):
        return None
    goodput = attempts * (1.0 - late)
    return Equilibrium(
        kind="good",
        queue=0.0,
        head_wait=0.0,
        attempt_rate=attempts,
        throughput=attempts,
        goodput=goodput,
        wasted_share=late,
        failure_share=max(0.0, 1.0 - goodput / rate) if rate > 0.0 else 0.0,
        connection_failure_share=0.0,
        pods_up=float(scenario.web.pods),
        stable=True,
        slope=1.0 - capacity / attempts if attempts > 0.0 else -1.0,
    )


# -- the saturated equilibrium -------------------------------------------------------


@dataclass(frozen=True)
class _Regime:
    """The saturated state's inputs at a given crash rate ``h``."""

    crash_rate: float
    pods_up: float
    init_rate: float
    passing: float
    wait: float
    sheds_at_proxy: bool  # the excess fails in the proxy (timeout or limit)
    queue_cap: float
    on_time: float


def _regime(scenario: Scenario, crash_rate: float) -> _Regime:
    web, proxy, clients = scenario.web, scenario.proxy, scenario.clients
    mu = saturated_service_rate(scenario)
    kappa = proxy.pool_size * mu
    pods_up = web.pods / (1.0 + crash_rate * web.restart_delay)
    waits = {"timeout": proxy.queue_timeout, "limit": proxy.queue_limit / kappa}
    queue_cap = proxy.queue_limit
    if proxy.cancel_abandoned:
        waits["cancel"] = clients.timeout
    if web.mode == "bounded" and web.concurrency_per_pod is not None:
        room = max(0.0, pods_up * web.concurrency_per_pod - proxy.pool_size)
        waits["bounded"] = room / kappa
        queue_cap = min(queue_cap, room)
    limiter = min(waits, key=lambda name: waits[name])
    wait = waits[limiter]
    return _Regime(
        crash_rate=crash_rate,
        pods_up=pods_up,
        init_rate=pods_up * crash_rate * web.init_queries,
        passing=min(1.0, pods_up),
        wait=wait,
        sheds_at_proxy=limiter in ("timeout", "limit"),
        queue_cap=queue_cap,
        on_time=on_time_share(wait, clients.timeout, mu, crash_rate),
    )


def _successes(kappa: float, regime: _Regime, attempts: float) -> float:
    """On-time completions per second S(x) with attempt rate ``attempts``."""
    client = regime.passing * attempts
    return kappa * regime.on_time * client / (client + regime.init_rate)


def _attempt_map(
    scenario: Scenario, rate: float, regime: _Regime, attempts: float
) -> float:
    """Return lambda N_beta(1 - S(x)/x): the attempt rate a saturated pool induces."""
    clients = scenario.clients
    kappa = scenario.proxy.pool_size * saturated_service_rate(scenario)
    late = 1.0 - min(1.0, _successes(kappa, regime, attempts) / attempts)
    return rate * budgeted_attempts_per_request(
        late, clients.max_retries, clients.retry_budget
    )


def _saturated_rate(scenario: Scenario, rate: float, regime: _Regime) -> float | None:
    """Return the attempt rate of the saturated state in ``regime``, or None."""
    clients = scenario.clients
    kappa = scenario.proxy.pool_size * saturated_service_rate(scenario)
    if regime.crash_rate == 0.0 and regime.passing == 1.0:
        attempts = saturated_attempt_rate(
            rate, kappa, regime.on_time, clients.max_retries, clients.retry_budget
        )
        return attempts if attempts > kappa else None
    top = rate * budgeted_attempts_per_request(
        1.0, clients.max_retries, clients.retry_budget
    )
    low = max(rate, (kappa - regime.init_rate) / regime.passing)
    if top <= low:
        return None

    def excess(attempts: float) -> float:
        return _attempt_map(scenario, rate, regime, attempts) - attempts

    if excess(low) <= 0.0:
        return None
    if excess(top) >= 0.0:
        return top
    return float(brentq(excess, low, top, xtol=1e-12, rtol=1e-13))


def _failure_share(kappa: float, regime: _Regime, attempts: float) -> float:
    """Share of connection requests failing at the proxy in the saturated state."""
    if not regime.sheds_at_proxy:
        return 0.0
    arriving = regime.passing * attempts + regime.init_rate
    return max(0.0, 1.0 - kappa / arriving)


def _crash_regime(scenario: Scenario, rate: float) -> tuple[_Regime, float] | None:
    """Find the crash rate consistent with the crash rules; return (regime, x).

    In the saturated state pods crash at ``1/crash_after`` while a rule holds
    (`retrystorm.fluid.pod_crash_rate`): the failure share of connection
    requests is above ``crash_failure_share``, or the saturated wait exceeds
    ``probe_timeout`` (the health checks fail). The state without crashes is
    taken when it exists and no rule holds in it; else the state at the full
    crash rate when a rule holds there (it may exist only because of the
    crashes: attempts they kill and init queries); else a sliding state in
    which pods crash just fast enough to hold a rule at its threshold.
    """
    web = scenario.web
    kappa = scenario.proxy.pool_size * saturated_service_rate(scenario)

    def state(crash_rate: float) -> tuple[_Regime, float | None, float]:
        regime = _regime(scenario, crash_rate)
        attempts = _saturated_rate(scenario, rate, regime)
        share = _failure_share(kappa, regime, attempts) if attempts else 0.0
        return regime, attempts, share

    def crashing(found: tuple[_Regime, float | None, float]) -> bool:
        regime, attempts, share = found
        rule = pod_crash_rate(scenario, regime.wait, share) > 0.0
        return attempts is not None and rule

    calm = state(0.0)
    if web.crash_after is None or (calm[1] is not None and not crashing(calm)):
        return (calm[0], calm[1]) if calm[1] is not None else None
    fastest = state(1.0 / web.crash_after)
    if crashing(fastest) and fastest[1] is not None:
        return fastest[0], fastest[1]
    if calm[1] is None:
        return None
    # Sliding state: pods crash just fast enough to hold a rule at its threshold.
    low, high = 0.0, 1.0 / web.crash_after
    for _ in range(100):
        middle = 0.5 * (low + high)
        if crashing(state(middle)):
            low = middle
        else:
            high = middle
    regime, attempts, _ = state(0.5 * (low + high))
    return (regime, attempts) if attempts is not None else None


def _bad(scenario: Scenario, rate: float) -> Equilibrium | None:
    """Return the saturated equilibrium (Theorem 2, with crashes), or None."""
    found = _crash_regime(scenario, rate)
    if found is None:
        return None
    regime, attempts = found
    kappa = scenario.proxy.pool_size * saturated_service_rate(scenario)
    arriving = regime.passing * attempts + regime.init_rate
    goodput = _successes(kappa, regime, attempts)
    init_done = kappa * regime.init_rate / arriving
    step = _SLOPE_STEP * attempts
    map_slope = (
        _attempt_map(scenario, rate, regime, attempts + step)
        - _attempt_map(scenario, rate, regime, attempts - step)
    ) / (2.0 * step)
    drift = 1.0 - kappa / arriving
    return Equilibrium(
        kind="bad",
        queue=min(arriving * regime.wait, regime.queue_cap),
        head_wait=regime.wait,
        attempt_rate=attempts,
        throughput=kappa,
        goodput=goodput,
        wasted_share=(kappa - goodput - init_done) / kappa,
        failure_share=1.0 - goodput / rate,
        connection_failure_share=_failure_share(kappa, regime, attempts),
        pods_up=regime.pods_up,
        stable=drift > 0.0 and abs(map_slope) < 1.0,
        slope=-drift,
        attempt_map_slope=map_slope,
    )


# -- the boundary --------------------------------------------------------------------


def _boundary(scenario: Scenario, rate: float) -> Equilibrium | None:
    """Return the unstable equilibrium between the good and the bad one, or None.

    ``scenario`` has the constant demand ``rate``. Beyond the probe timeout
    the pods crash at ``1/crash_after`` (Theorem 5), which `boundary_wait`
    takes into account.
    """
    clients, web = scenario.clients, scenario.web
    mu = saturated_service_rate(scenario)
    kappa = scenario.proxy.pool_size * mu
    crash = pod_crash_rate(scenario, math.inf, 0.0)  # the health checks' rule
    pods_up = web.pods / (1.0 + crash * web.restart_delay)
    wait = boundary_wait(
        rate,
        kappa,
        clients.timeout,
        mu,
        clients.max_retries,
        retry_budget=clients.retry_budget,
        probe_timeout=web.probe_timeout if crash > 0.0 else None,
        crash_rate=crash,
        init_rate=pods_up * crash * web.init_queries,
        passing=min(1.0, pods_up),
    )
    if wait is None or wait >= saturated_wait(scenario):
        return None
    # At the wait of a jump (w* = probe_timeout) the state is the crashing one.
    crashing = crash > 0.0 and wait >= (web.probe_timeout or math.inf)
    state = _quasi_static(scenario, wait, crash if crashing else 0.0)
    goodput = _total(state.admitted) * _on_time(wait, clients.timeout, mu, state.crash)
    step = _SLOPE_STEP * max(1.0, wait)
    rising = (
        _quasi_static(scenario, wait + step).arrivals
        - _quasi_static(scenario, max(0.0, wait - step)).arrivals
    ) / (2.0 * step)
    return Equilibrium(
        kind="boundary",
        queue=state.arrivals * wait,
        head_wait=wait,
        attempt_rate=_total(state.sent),
        throughput=kappa,
        goodput=goodput,
        wasted_share=max(0.0, (kappa - goodput - state.init_rate) / kappa),
        failure_share=max(0.0, 1.0 - goodput / rate),
        connection_failure_share=0.0,
        pods_up=state.pods_up,
        stable=False,
        slope=rising / kappa,
    )


# -- replays: stability with a breaker, and the critical backlog ---------------------


def _steady(scenario: Scenario, rate: float) -> Scenario:
    """Return the scenario with no events and a constant fresh rate ``rate``."""
    changes: dict[str, object] = {"events": []}
    if (
        scenario.clients.rate_profile is not None
        or scenario.clients.request_rate != rate
    ):
        changes["clients.rate_profile"] = None
        changes["clients.request_rate"] = rate
    return scenario.with_changes(changes)


def _recovers(steady: Scenario, backlog: float, horizon: float) -> bool:
    """Whether the fluid model returns to the good state from ``backlog``."""
    engine = _Engine(steady, horizon, steady.time_step, warm=backlog == 0.0)
    engine.start_with_backlog(backlog)
    clients, dt = steady.clients, steady.time_step
    hold = max(1, round(2.0 * clients.timeout / dt))
    patience = max(1, round(settling_time(steady) / dt))
    threshold = good_queue_threshold(steady)
    saturated = saturated_wait(steady) - 2.0 * dt
    fresh_at = len(_STATE) + _FLOWS.index("fresh")
    goodput_at = len(_STATE) + _FLOWS.index("goodput")
    queue_at, wait_at = _STATE.index("queue"), _STATE.index("head_wait")
    while engine.n < engine.steps:
        engine.advance(hold)
        if not engine.rows:
            continue  # still warming up before t = 0
        rows = np.asarray(engine.rows[-max(hold, patience) :])
        fresh, goodput = rows[:, fresh_at], rows[:, goodput_at]
        good = (rows[:, queue_at] <= threshold) & (
            goodput >= (1.0 - GOODPUT_TOLERANCE) * fresh
        )
        if len(rows) >= hold and good[-hold:].all():
            return True
        stuck = (rows[:, wait_at] >= saturated) & ~good
        if len(rows) >= patience and stuck[-patience:].all():
            return False
    return False


def settling_time(scenario: Scenario) -> float:
    """Seconds after which a saturated fluid state has forgotten its start.

    The proxy's queueing timeout plus the longest a client keeps a request
    alive (`Clients.longest_attempts_time`).
    """
    return scenario.proxy.queue_timeout + scenario.clients.longest_attempts_time


def _critical_backlog(
    steady: Scenario, top: float, horizon: float, tolerance: float
) -> float | None:
    """Bisection for the smallest backlog the fluid model does not drain."""
    if _recovers(steady, top, horizon):
        return None
    if not _recovers(steady, 0.0, horizon):
        return 0.0
    low, high = 0.0, top
    while high - low > tolerance * top:
        middle = 0.5 * (low + high)
        if _recovers(steady, middle, horizon):
            low = middle
        else:
            high = middle
    return high


# -- the report ----------------------------------------------------------------------


def find_equilibria(
    scenario: Scenario,
    *,
    request_rate: float | None = None,
    tolerance: float = 0.01,
    horizon: float | None = None,
) -> EquilibriumReport:
    """Find the equilibria of a scenario's system with the trigger absent.

    Parameters
    ----------
    scenario
        The scenario; its events are ignored.
    request_rate
        Constant demand (per s); default ``clients.request_rate`` or the peak
        of a rate profile.
    tolerance
        Relative tolerance (of the bad equilibrium's queue) of the critical
        backlog's bisection.
    horizon
        Seconds each replay of the bisection may run; default the scenario's
        horizon.

    Returns
    -------
    EquilibriumReport
        The equilibria, the classification and the critical backlog.

    Raises
    ------
    InvalidParameterError
        A negative request rate or a tolerance outside (0, 1).

    Notes
    -----
    See the module docstring for the theorems. The classification follows
    the equilibria: ``overloaded`` without a good one, ``vulnerable`` with a
    good one and a stable bad one, ``stable`` otherwise.

    References
    ----------
    [Whitt2006], [LiuWhitt2012], [Bronson2021].
    """
    rate = check_nonnegative(
        "request_rate",
        request_rate
        if request_rate is not None
        else scenario.clients.peak_request_rate,
    )
    if not 0.0 < tolerance < 1.0:
        raise InvalidParameterError(
            "tolerance", "must lie strictly between 0 and 1", tolerance
        )
    horizon = check_positive(
        "horizon", horizon if horizon is not None else scenario.horizon
    )
    steady = _steady(scenario, rate)
    good, boundary, bad = (
        _good(steady, rate),
        _boundary(steady, rate),
        _bad(steady, rate),
    )
    if bad is not None and steady.web.circuit_breaker is not None:
        persists = not _recovers(steady, bad.queue, horizon)
        bad = _replace_stability(bad, persists)
    critical = None
    if good is not None and bad is not None and bad.stable:
        critical = _critical_backlog(steady, bad.queue, horizon, tolerance)
    classification = _classify(good, bad)
    found = tuple(e for e in (good, boundary, bad) if e is not None)
    kappa = steady.proxy.pool_size * saturated_service_rate(steady)
    return EquilibriumReport(
        equilibria=found,
        classification=classification,
        critical_backlog=critical,
        boundary_backlog=boundary.queue if boundary is not None else None,
        reason=_reason(steady, rate, kappa, good, bad),
        request_rate=rate,
        capacity=kappa,
    )


def _replace_stability(bad: Equilibrium, persists: bool) -> Equilibrium:
    """Return the bad equilibrium with its stability decided by a replay."""
    fields = {**bad.__dict__, "stable": persists, "stability": "replay"}
    return Equilibrium(**fields)


def _classify(good: Equilibrium | None, bad: Equilibrium | None) -> Classification:
    if good is None:
        return "overloaded"
    if bad is not None and bad.stable:
        return "vulnerable"
    return "stable"


def _reason(
    scenario: Scenario,
    rate: float,
    kappa: float,
    good: Equilibrium | None,
    bad: Equilibrium | None,
) -> str:
    """One sentence on why the system is classified as it is."""
    clients = scenario.clients
    if good is None:
        return (
            f"no good equilibrium: {rate:.4g} requests/s need more than the "
            f"{kappa:.4g}/s the pool serves"
        )
    if bad is None or not bad.stable:
        why = (
            "its breaker breaks it up"
            if bad is not None
            else "served attempts are on time or the retries cannot outrun the pool"
        )
        return (
            f"only the good equilibrium is self-sustaining ({good.attempt_rate:.4g} "
            f"attempts/s below the pool's {kappa:.4g}/s); {why}"
        )
    pods = scenario.web.pods
    crashing = (
        f"; pods crash and restart (about {bad.pods_up:.3g} of {pods} up)"
        if bad.pods_up < pods * (1.0 - 1e-9)
        else ""
    )
    return (
        f"two self-sustaining states: at normal load {good.attempt_rate:.4g} "
        f"attempts/s fit in the pool's {kappa:.4g}/s, but once requests wait "
        f"{bad.head_wait:.4g} s "
        f"(client timeout {clients.timeout:.4g} s) {bad.wasted_share:.0%} of the work "
        f"is wasted and retries keep {bad.attempt_rate:.4g} attempts/s arriving"
        f"{crashing}"
    )
