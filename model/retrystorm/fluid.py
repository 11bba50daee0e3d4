"""The deterministic fluid (mean-field) model of a scenario.

Requests are treated as a continuous mass: at the incident's scale (hundreds of
connections, tens of thousands queued) the law of large numbers makes the
random system follow this deterministic path closely [Whitt2006],
[LiuWhitt2012]. One replay of an hour takes a fraction of a second.

The state
---------
On a grid of steps of length ``dt`` (``scenario.time_step``), with ``t_n = n dt``:

* the proxy queue, by arrival step (*age-structured*): ``Q[b, j]`` is the mass
  that joined the queue in step ``b`` and is still waiting, by class ``j``:
  a live client attempt with attempt number ``k = 0..R`` (its client still
  waits), an *orphan* (its client gave up or its pod went down), or a pod's
  init query. The proxy serves FIFO, so the queue is the mass that arrived in
  ``(t - w(t), t]`` with ``w(t)`` the head-of-line wait, ``w <= T_q``; this is
  Liu and Whitt's head-of-line formulation for a many-server fluid queue with
  time-varying servers and a deterministic patience [LiuWhitt2012], computed
  exactly (up to the grid) by a ring buffer with a head pointer;
* connections held: executing mass and mass held by a locked query, each split
  into live attempts by arrival step (so that a client timeout during service
  turns them into orphans at the right time), orphans and init queries;
* the retry orbit: retries scheduled for later steps, by attempt number;
* the fraction of pods up and the pods coming back after a restart;
* a retry-budget token bucket, the failure share over a trailing 5 s window
  and the circuit breaker's state.

The equations, per step
-----------------------
1. Events: a lock that ends releases its held queries to execution; a cold
   restart drops the queue and the connections and takes every pod down.
2. Pods: pods whose restart delay has passed come up and each sends
   ``init_queries`` connection requests. While the failure share ``phi`` is
   above ``crash_failure_share``, or while the head-of-line wait ``w`` exceeds
   ``probe_timeout`` (health checks that need a connection time out,
   `health_checks_fail`), a fraction ``1 - exp(-dt / crash_after)`` of the
   up pods crashes; a rollback restarts ``dt / duration`` of them. The live
   attempts of pods that go down fail (fast error to the client); their
   waiting requests stay queued as orphans (``cancel_abandoned``: dropped).
3. Timeouts: live mass of age ``T_c`` (the client timeout) becomes orphan, in
   the queue and in service (``cancel_abandoned``: dropped from the queue);
   mass of age ``T_q`` leaves the queue (queue timeout).
4. Arrivals: fresh requests ``lambda(t) dt`` and the retries due; shedding,
   pods down (a share ``max(0, 1 - u)`` when fewer than one pod is up), the
   breaker and the bounded tier's cap reject attempts fast; the rest join the
   queue.
5. Service, with ``c(t)`` connections, ``H`` held, ``B`` executing, locked
   share ``s`` (share of queries on a locked table) and per-connection rate
   ``mu_b = (1/service_time) / max(1, 1 + alpha (b - 1))`` at ``b`` held
   connections. If the queue can keep every free connection busy through the
   step (saturated), the free connections ``F = c - H`` fill first, then
   connections are refilled as they complete; the executing mass decays as
   ``B' = -s mu B``, so::

       X = B (1 - exp(-s mu dt)) / s   (X = B mu dt when s = 0),  G = F + X

   are the step's completions and grants (exact for the fluid). Otherwise the
   whole queue ``Q0`` and the step's arrivals ``A`` enter service at once::

       X = (B + (1 - s) Q0) (1 - e) + (1 - s) A (1 - (1 - e) / (mu dt)),
       e = exp(-mu dt),

   the exact solution of ``B' = (1 - s) a - mu B`` for uniform arrivals. The
   exponential update keeps the step exact even when ``mu dt`` is near 1.
   Grants come from the head of the queue (FIFO); a share ``s`` of them is
   held by the lock. Completions are taken evenly from the executing mass
   (memoryless service): live completions are goodput, orphan completions
   wasted work, init completions init throughput.
6. A queue above ``queue_limit`` rejects its newest arrivals.
7. Every failed live attempt ``k < R`` asks the token bucket for a retry and
   is scheduled ``k + 1`` after its backoff delay (jitter spreads it over the
   steps, rounded to the nearest step and at least one step later); attempt
   ``R`` failing ends its request. The failure share and the breaker are
   updated.

The replay starts in the normal steady state at the initial demand (a
warm-up of 40 mean service times before t = 0, with no events), or empty when
the pool cannot carry that demand.

Conservation holds exactly at every step: every attempt and init query that
arrived is queued, held, completed, timed out, rejected or dropped; and every
fresh request has succeeded, failed for good, or is live or in the orbit.

Approximations (the fluid against the per-request semantics): timeouts and
backoff delays are rounded to the grid; within a step completions are taken
evenly from the executing mass (so mass that entered during the step is treated
as old mass); the bounded tier's cap is applied at the start of a step with the
previous step's completions as the room they free; the pod count is a real
number (a share ``1 - u`` of attempts fails for want of a pod only when
``u < 1``); the crash rules read the failure share and the head-of-line wait
of the previous step (the wait in whole steps), and the health checks' own
connection requests are not modelled (one per pod and probe period, a small
load next to client traffic).

References
----------
[Whitt2006], [LiuWhitt2012] (the many-server fluid queue with time-varying
servers and deterministic patience), [Bronson2021] and [Huang2022] (the
sustaining loop of retries and wasted work).

Examples
--------
The incident's 45 s lock leaves its system stuck in the bad state (over
50,000 waiting, pods crashing while most of their connection requests fail)
until the cold restart, which empties it:

>>> from retrystorm.scenario import default_scenario
>>> run = simulate_fluid(default_scenario())
>>> run.good_at(2279.0), round(float(run.queue[run.index_at(2279.0)]), -3)
(False, 58000.0)
>>> run.recovery_time(after=2280.0, before=3000.0) < 300.0
True
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from retrystorm._trajectory import SampledReplay
from retrystorm._validation import check_nonnegative, check_positive
from retrystorm.errors import InvalidParameterError
from retrystorm.retries import attempts_per_request
from retrystorm.scenario import Backoff, Event, Scenario

__all__ = [
    "FAILURE_WINDOW",
    "GOODPUT_TOLERANCE",
    "FluidTrajectory",
    "budgeted_attempts_per_request",
    "good_queue_threshold",
    "good_state_goodput_share",
    "health_checks_fail",
    "is_good_state",
    "late_share",
    "pod_crash_rate",
    "retry_probability_cap",
    "saturated_service_rate",
    "saturated_wait",
    "simulate_fluid",
]

GOODPUT_TOLERANCE = 1e-3
"""Goodput may fall short of demand by this share in the good state."""

FAILURE_WINDOW = 5.0
"""Seconds over which the failure share of connection requests is measured."""

_BUDGET_WINDOW = 10.0  # s of fresh requests' tokens the retry budget can bank
_ROUNDING = 1e-9


# -- closed forms shared with the equilibria -----------------------------------------


def late_share(wait: float, client_timeout: float, service_rate: float) -> float:
    """Return the share of attempts served after their client gave up.

    An attempt that waited ``wait`` seconds and then holds a connection for an
    exponential time of rate ``service_rate`` completes after its client's
    timeout with probability ``exp(-service_rate (client_timeout - wait))``
    when ``wait < client_timeout``, and surely otherwise.

    Parameters
    ----------
    wait
        Seconds waited for a connection (>= 0).
    client_timeout
        The client's timeout in seconds (> 0).
    service_rate
        Per-connection service rate per second (> 0).

    Returns
    -------
    float
        The late share, in [0, 1].

    Examples
    --------
    >>> late_share(120.0, 40.0, 2.5)
    1.0
    >>> round(late_share(30.0, 40.0, 2.5), 12)
    0.0
    """
    if wait >= client_timeout:
        return 1.0
    return math.exp(-service_rate * (client_timeout - wait))


def retry_probability_cap(max_retries: int, retry_budget: float) -> float:
    """Return the largest per-attempt retry probability a budget allows.

    A retry budget ``beta`` (retries per fresh request, in the long run) lets a
    request that fails every attempt retry with probability ``q`` per failure,
    where ``q + q**2 + ... + q**R = beta``; without a budget ``q = 1``.

    Examples
    --------
    >>> retry_probability_cap(3, math.inf)
    1.0
    >>> round(retry_probability_cap(1, 0.1), 12)
    0.1
    """
    if max_retries == 0 or retry_budget >= max_retries:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(200):  # bisection to double precision
        middle = 0.5 * (low + high)
        total = sum(middle**k for k in range(1, max_retries + 1))
        low, high = (middle, high) if total < retry_budget else (low, middle)
    return 0.5 * (low + high)


def budgeted_attempts_per_request(
    failure_probability: float, max_retries: int, retry_budget: float = math.inf
) -> float:
    """Return the mean attempts per request when each attempt fails with ``p``.

    ``N_beta(p) = min(N(p), 1 + beta)`` with ``N(p) = 1 + p + ... + p**R =
    (1 - p**(R+1)) / (1 - p)`` (`retrystorm.retries.attempts_per_request`): a
    budget of ``beta`` retries per fresh request caps the retries. Equivalently
    ``N_beta(p) = 1 + q + ... + q**R`` with ``q = min(p, q_beta)`` and
    ``q_beta`` from `retry_probability_cap`.

    Parameters
    ----------
    failure_probability
        Probability ``p`` that an attempt fails, in [0, 1].
    max_retries
        ``R`` >= 0.
    retry_budget
        ``beta`` >= 0, retries per fresh request (``inf``: none).

    Returns
    -------
    float
        ``N_beta`` in [1, R + 1].

    Notes
    -----
    The cap ``1 + beta`` is the bound of
    `retrystorm.retries.retry_budget_amplification` (whose further cap
    ``R + 1`` changes nothing here, as ``N(p) <= R + 1``). It is written out
    rather than called because that function checks ``beta`` (a negative or
    NaN budget raises there), while this one leaves ``beta`` to its callers
    and runs inside the equilibria's solver loops.

    Examples
    --------
    >>> budgeted_attempts_per_request(1.0, 3)
    4.0
    >>> budgeted_attempts_per_request(1.0, 3, 0.5)
    1.5
    """
    attempts = float(attempts_per_request(failure_probability, max_retries))
    return min(attempts, 1.0 + retry_budget)


def saturated_service_rate(scenario: Scenario) -> float:
    """Return the per-connection service rate (per s) with the pool full.

    ``mu_c = (1/service_time) / max(1, 1 + alpha (c - 1))``; the pool then
    completes ``c mu_c`` requests per second.
    """
    database = scenario.database
    load = max(1.0, 1.0 + database.contention * (scenario.proxy.pool_size - 1))
    return 1.0 / (database.service_time * load)


def saturated_wait(scenario: Scenario) -> float:
    """Return the head-of-line wait (s) of a saturated queue, ``w_sat``.

    ``w_sat = min(T_q, K / kappa, T_c if cancel_abandoned, (P m - c) / kappa if
    bounded)``: the queueing timeout, the queue limit ``K`` drained at the pool's
    throughput ``kappa = c mu_c``, the client timeout when abandoned requests
    are cancelled, and the room a bounded tier (``P`` pods of ``m``) leaves.
    """
    proxy, web = scenario.proxy, scenario.web
    capacity = proxy.pool_size * saturated_service_rate(scenario)
    waits = [proxy.queue_timeout, proxy.queue_limit / capacity]
    if proxy.cancel_abandoned:
        waits.append(scenario.clients.timeout)
    if web.mode == "bounded" and web.concurrency_per_pod is not None:
        room = web.pods * web.concurrency_per_pod - proxy.pool_size
        waits.append(max(0.0, room) / capacity)
    return min(waits)


def health_checks_fail(scenario: Scenario, head_wait: float) -> bool:
    """Whether the pods' health checks fail at a head-of-line wait (s).

    A health check that asks the proxy for a connection fails when it is not
    granted within ``web.probe_timeout``: in a FIFO queue a new request waits
    about the head-of-line wait, so the checks fail while
    ``head_wait > probe_timeout``. Without a probe timeout (or with ``inf``)
    the checks do not depend on the database and never fail here.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> scenario = default_scenario().with_changes({"web.probe_timeout": 1.0})
    >>> health_checks_fail(scenario, 0.5), health_checks_fail(scenario, 2.0)
    (False, True)
    """
    probe = scenario.web.probe_timeout
    return probe is not None and head_wait > probe * (1.0 + _ROUNDING)


def pod_crash_rate(scenario: Scenario, head_wait: float, failure_share: float) -> float:
    """Return the rate (per s) at which each up pod crashes.

    ``1 / crash_after`` while either crash rule holds: the share of failed
    connection requests exceeds ``crash_failure_share``, or the health checks
    fail (`health_checks_fail`); else 0, and always 0 without ``crash_after``.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> scenario = default_scenario().with_changes({"web.probe_timeout": 1.0})
    >>> pod_crash_rate(scenario, 120.0, 0.0) == 1.0 / scenario.web.crash_after
    True
    >>> pod_crash_rate(scenario, 0.0, 0.0)
    0.0
    """
    web = scenario.web
    if web.crash_after is None:
        return 0.0
    failing = failure_share > web.crash_failure_share
    if failing or health_checks_fail(scenario, head_wait):
        return 1.0 / web.crash_after
    return 0.0


def _on_time(wait: float, client_timeout: float, mu: float, crash: float) -> float:
    """Share of attempts served after ``wait`` on time, their pod crashing at ``crash``.

    ``exp(-h w) mu / (mu + h) (1 - exp(-(mu + h)(T_c - w)))`` for ``w < T_c``:
    the pod survives the wait and the service ends before both the client's
    timeout and a crash (`retrystorm.equilibria.on_time_share`).
    """
    if wait >= client_timeout:
        return 0.0
    if crash == 0.0:
        return -math.expm1(-mu * (client_timeout - wait))
    total = mu + crash
    return (
        math.exp(-crash * wait)
        * mu
        / total
        * -math.expm1(-total * (client_timeout - wait))
    )


def good_queue_threshold(scenario: Scenario) -> float:
    """Return the largest queue (requests) of the good state: the pool size.

    A full pool serves that many in one mean service time, which is small
    against a bad state of tens of thousands.
    """
    return float(scenario.proxy.pool_size)


def is_good_state(
    queue: NDArray[np.float64] | float,
    goodput: NDArray[np.float64] | float,
    demand: NDArray[np.float64] | float,
    queue_threshold: float,
) -> NDArray[np.bool_]:
    """Return the spec's good-state test, elementwise.

    Good: ``queue <= queue_threshold`` and ``goodput >= (1 - 1e-3) demand``.

    Examples
    --------
    >>> bool(is_good_state(3.0, 119.95, 120.0, 100.0))
    True
    >>> bool(is_good_state(3.0, 100.0, 120.0, 100.0))
    False
    """
    queue_ok = np.asarray(queue) <= queue_threshold
    goodput_ok = np.asarray(goodput) >= (1.0 - GOODPUT_TOLERANCE) * np.asarray(demand)
    return np.asarray(queue_ok & goodput_ok)


# -- the result ----------------------------------------------------------------------


# The untriggered replay that measures the good state's goodput runs this many
# mean service times beyond every attempt's timeout and backoff.
_SETTLE_SERVICES = 20.0


def good_state_goodput_share(
    scenario: Scenario, time_step: float | None = None
) -> float:
    """Return the share of fresh requests the untriggered system serves in time.

    The scenario is replayed without its events, at its peak request rate,
    until every attempt's timeouts and backoff have passed and then
    `_SETTLE_SERVICES` mean service times more; the share is its goodput over
    its demand at the end. Where service times are short against the client
    timeout the share is 1 to many digits; where they are not, some requests
    outlive their clients even in the good state (an exponential service time
    exceeds ``T_c`` with probability ``exp(-mu T_c)``, and the fluid's step
    adds to it), and the good state is judged against this share, not
    against all of the demand. A system whose untriggered queue does not stay
    below `good_queue_threshold` has no good state to measure: 1.

    Parameters
    ----------
    scenario
        The validated scenario.
    time_step
        The replay's step (s); default the scenario's.

    Returns
    -------
    float
        In [0, 1].
    """
    clients = scenario.clients
    rate = clients.peak_request_rate
    if rate <= 0.0:
        return 1.0
    settle = (
        clients.longest_attempts_time
        + _SETTLE_SERVICES * scenario.database.service_time
    )
    quiet = scenario.with_changes(
        {"events": [], "clients.rate_profile": None, "clients.request_rate": rate}
    )
    replay = simulate_fluid(quiet, horizon=settle, time_step=time_step)
    if replay.queue[-1] > good_queue_threshold(scenario):
        return 1.0
    return min(1.0, max(0.0, float(replay.goodput[-1] / replay.fresh_rate[-1])))


@dataclass(frozen=True)
class FluidTrajectory(SampledReplay):
    """A fluid replay sampled at the end of each step.

    Levels (requests or pods) are the state at ``time``; rates (per second)
    are averages over the step that ends at ``time``; ``cum_*`` are totals
    from t = 0 to ``time``.

    Attributes
    ----------
    scenario
        The scenario replayed.
    time
        End of each step (s).
    queue
        Requests waiting for a connection.
    in_service
        Connections held (executing or held by a lock).
    locked
        Connections held by queries on a locked table.
    orbit
        Retries scheduled but not yet sent.
    pods_up
        Pods up (a real number in the fluid).
    head_wait
        Head-of-line wait: age of the oldest waiting request (s).
    fresh_rate
        Fresh requests per second (the demand).
    attempt_rate
        Client attempts sent per second (fresh + retries).
    retry_rate
        Retries sent per second.
    throughput
        Completions per second (goodput + wasted + init).
    goodput
        Completions per second whose client still waited.
    wasted_rate
        Completions per second whose client had given up.
    init_rate
        Init-query completions per second.
    queue_timeout_rate
        Requests per second that timed out in the proxy queue.
    rejected_rate
        Attempts or init queries rejected fast per second (shed, no pod up,
        breaker, bounded tier, queue limit).
    dropped_rate
        Requests per second removed without service (cancellation, cold
        restart).
    client_timeout_rate
        Live attempts per second whose client timed out.
    failed_request_rate
        Requests per second that failed for good (retries exhausted or
        refused by the budget).
    failure_share
        Share of failed connection requests over the trailing window.
    capacity
        Completions per second the pool can give at most: its connections
        (or those still held after the pool shrank) times the service rate.
    breaker_open
        Whether the breaker is open (attempts fail fast).
    cum_offered, cum_completed, cum_timed_out, cum_rejected, cum_dropped
        Totals of the connection-request balance (client attempts plus init
        queries).
    cum_fresh, cum_succeeded, cum_failed_requests
        Totals of the request balance.
    live
        Live attempts waiting or held (their client waits).
    """

    scenario: Scenario
    time: NDArray[np.float64]
    queue: NDArray[np.float64]
    in_service: NDArray[np.float64]
    locked: NDArray[np.float64]
    orbit: NDArray[np.float64]
    pods_up: NDArray[np.float64]
    head_wait: NDArray[np.float64]
    fresh_rate: NDArray[np.float64]
    attempt_rate: NDArray[np.float64]
    retry_rate: NDArray[np.float64]
    throughput: NDArray[np.float64]
    goodput: NDArray[np.float64]
    wasted_rate: NDArray[np.float64]
    init_rate: NDArray[np.float64]
    queue_timeout_rate: NDArray[np.float64]
    rejected_rate: NDArray[np.float64]
    dropped_rate: NDArray[np.float64]
    client_timeout_rate: NDArray[np.float64]
    failed_request_rate: NDArray[np.float64]
    failure_share: NDArray[np.float64]
    capacity: NDArray[np.float64]
    breaker_open: NDArray[np.bool_]
    cum_offered: NDArray[np.float64]
    cum_completed: NDArray[np.float64]
    cum_timed_out: NDArray[np.float64]
    cum_rejected: NDArray[np.float64]
    cum_dropped: NDArray[np.float64]
    cum_fresh: NDArray[np.float64]
    cum_succeeded: NDArray[np.float64]
    cum_failed_requests: NDArray[np.float64]
    live: NDArray[np.float64]

    _hold_slack: ClassVar[float] = _ROUNDING

    @property
    def events(self) -> tuple[Event, ...]:
        """The scenario's events."""
        return self.scenario.events

    @property
    def time_step(self) -> float:
        """The step of the replay in seconds."""
        return float(self.time[1] - self.time[0]) if len(self.time) > 1 else 0.0

    @property
    def demand(self) -> NDArray[np.float64]:
        """Fresh requests per second (same as `fresh_rate`)."""
        return self.fresh_rate

    @cached_property
    def good_share(self) -> float:
        """Share of the demand served in time in the good state.

        See `good_state_goodput_share`: 1 unless requests outlive their
        clients even without a trigger.
        """
        return good_state_goodput_share(self.scenario, self.time_step or None)

    @property
    def is_good(self) -> NDArray[np.bool_]:
        """The good-state test at each step (see `is_good_state`).

        The demand it holds the goodput to is the share of it that the
        untriggered system serves in time (`good_share`).
        """
        threshold = good_queue_threshold(self.scenario)
        demand = self.fresh_rate * self.good_share
        return is_good_state(self.queue, self.goodput, demand, threshold)

    def recovered_at(
        self,
        after: float | None = None,
        before: float | None = None,
        hold: float | None = None,
    ) -> float | None:
        """Return the time (s) of the sample at which `recovery_time` recovers."""
        index = self._recovery_index(*self._recovery_window(after, before, hold))
        return float(self.time[index]) if index is not None else None


# -- the engine ----------------------------------------------------------------------


def _retry_kernels(backoff: Backoff, max_retries: int, dt: float) -> NDArray[Any]:
    """Return, per retry k = 1..R, the share of retries sent j = 1, 2, ... steps later.

    The delay ``D`` is rounded to the nearest step, at least one step.
    """
    bounds = [_delay_bounds(backoff, retry) for retry in range(1, max_retries + 1)]
    longest = max((math.floor(hi / dt + 0.5) + 1 for _, hi in bounds), default=1)
    kernels = np.zeros((max_retries, max(1, longest)))
    for row, (low, high) in enumerate(bounds):
        kernels[row] = _delay_weights(low, high, dt, kernels.shape[1])
    return kernels


def _delay_bounds(backoff: Backoff, retry: int) -> tuple[float, float]:
    """Return the uniform range of the delay before ``retry`` (a point: no jitter)."""
    delay = backoff.delay(retry)
    if backoff.jitter == "full":
        return 0.0, delay
    if backoff.jitter == "equal":
        return 0.5 * delay, delay
    return delay, delay


def _delay_weights(low: float, high: float, dt: float, size: int) -> NDArray[Any]:
    """Shares of a delay uniform on [low, high] rounded to steps 1..size."""
    weights = np.zeros(size)
    if high - low <= _ROUNDING * max(1.0, high):
        weights[max(1, math.floor(low / dt + 0.5)) - 1] = 1.0
        return weights
    # Step j collects delays in [(j - 1/2) dt, (j + 1/2) dt); step 1 also the
    # delays below dt/2 (a retry goes out one step later at the earliest).
    edges = (np.arange(size + 1) + 0.5) * dt
    edges[0] = -math.inf
    cdf = np.clip((np.clip(edges, low, high) - low) / (high - low), 0.0, 1.0)
    shares: NDArray[Any] = np.diff(cdf)
    return np.asarray(shares / shares.sum())


@dataclass(frozen=True)
class _Plan:
    """Per-step inputs precomputed from the scenario's events and demand."""

    fresh: NDArray[Any]  # fresh requests sent in each step
    capacity: NDArray[Any]  # connections in each step
    shed: NDArray[Any]  # share of attempts shed in each step
    rollback: NDArray[Any]  # share of up pods restarted in each step
    locked: NDArray[Any]  # (steps, tables): table locked in the step
    locked_share: NDArray[Any]  # share of queries on a locked table, per step
    releases: dict[int, tuple[int, ...]]  # step -> tables whose lock ends then
    cold_start: frozenset[int]
    cold_end: dict[int, int]  # step a cold restart ends -> its start


def _step_range(at: float, duration: float, dt: float, steps: int) -> range:
    """Return the steps n with ``at <= n dt < at + duration``, on the grid."""
    first = math.floor(at / dt + 0.5)
    last = math.floor((at + duration) / dt + 0.5)
    return range(max(0, first), min(steps, max(first + 1, last)))


def _plan(scenario: Scenario, dt: float, steps: int, warm: int = 0) -> _Plan:
    """Turn the scenario's demand and events into per-step arrays.

    The first ``warm`` steps precede t = 0: the initial demand, no events.
    """
    clients = scenario.clients
    starts = np.arange(steps) * dt
    fresh = np.array(
        [clients.requests_between(t, t + dt) for t in starts]
        if clients.rate_profile is not None
        else np.full(steps, float(clients.request_rate or 0.0) * dt)
    )
    fresh = np.concatenate([np.full(warm, fresh[0] if steps else 0.0), fresh])
    steps += warm
    capacity = np.full(steps, float(scenario.proxy.pool_size))
    shed = np.zeros(steps)
    rollback = np.zeros(steps)
    tables = [table.name for table in scenario.database.tables]
    locked = np.zeros((steps, len(tables)), dtype=bool)
    cold_start: set[int] = set()
    cold_end: dict[int, int] = {}
    for event in scenario.events:
        span = _step_range(event.at + warm * dt, event.duration, dt, steps)
        if event.kind == "lock":
            locked[span.start : span.stop, tables.index(event.table)] = True
        elif event.kind == "capacity":
            window = capacity[span.start : span.stop]
            np.minimum(window, scenario.proxy.pool_size * event.fraction, out=window)
        elif event.kind == "shed":
            window = shed[span.start : span.stop]
            np.maximum(window, event.fraction, out=window)
        elif event.kind == "rollback":
            rollback[span.start : span.stop] += dt / event.duration
        elif event.kind == "cold_restart" and span:
            cold_start.add(span.start)
            cold_end[span.stop] = span.start
    ended = np.zeros_like(locked)
    ended[1:] = locked[:-1] & ~locked[1:]
    releases = {
        int(step): tuple(int(t) for t in np.flatnonzero(ended[step]))
        for step in np.flatnonzero(ended.any(axis=1))
    }
    shares = np.array([table.share for table in scenario.database.tables])
    return _Plan(
        fresh=fresh,
        capacity=capacity,
        shed=shed,
        rollback=np.minimum(rollback, 1.0),
        locked=locked,
        locked_share=(locked * shares).sum(axis=1),
        releases=releases,
        cold_start=frozenset(cold_start),
        cold_end=cold_end,
    )


_STATE = (
    "queue",
    "in_service",
    "locked",
    "orbit",
    "pods_up",
    "head_wait",
    "failure_share",
    "breaker_open",
    "live",
)
_FLOWS = (
    "fresh",
    "attempts",
    "retries",
    "completed",
    "goodput",
    "wasted",
    "init_done",
    "timed_out",
    "rejected",
    "limit_rejected",
    "dropped",
    "client_timeouts",
    "failed_requests",
    "capacity",
    "offered",
)


class _Engine:
    """The fluid state and its step; see the module docstring for the equations.

    Totals of the queue and of the held connections are kept as running sums
    next to the arrays (so a step costs a few array operations, not one per
    total) and re-summed from the arrays whenever many bins change at once.
    """

    def __init__(
        self, scenario: Scenario, horizon: float, dt: float, *, warm: bool = True
    ) -> None:
        self.scenario = scenario
        self.dt = dt
        recorded = max(1, math.floor(horizon / dt + 0.5))
        self.warm_steps = _warm_steps(scenario, dt) if warm else 0
        self.steps = self.warm_steps + recorded
        self._init_constants(scenario, dt)
        self._init_state(scenario)
        self.plan = _plan(scenario, dt, recorded, self.warm_steps)
        self.rows: list[tuple[float, ...]] = []
        self.initial_offered = 0.0
        self.initial_requests = 0.0
        self.n = 0

    # -- set-up -------------------------------------------------------------

    def _init_constants(self, scenario: Scenario, dt: float) -> None:
        clients, web, proxy = scenario.clients, scenario.web, scenario.proxy
        self.retries = clients.max_retries
        self.live_columns = self.retries + 1
        self.orphan = self.live_columns  # queue column of orphans
        self.init = self.live_columns + 1  # queue column of init queries
        self.client_steps = _steps(clients.timeout, dt)
        self.queue_steps = _steps(proxy.queue_timeout, dt)
        self.restart_steps = _steps(web.restart_delay, dt)
        self.window_steps = _steps(FAILURE_WINDOW, dt)
        self.kernels = _retry_kernels(clients.backoff, self.retries, dt)
        self.kernels_by_step = np.ascontiguousarray(self.kernels.T)
        self.mu = 1.0 / scenario.database.service_time
        self.alpha = scenario.database.contention
        self.shares = np.array([table.share for table in scenario.database.tables])
        self.cancel = proxy.cancel_abandoned
        self.queue_limit = proxy.queue_limit
        self.crash_share = (
            -math.expm1(-dt / web.crash_after) if web.crash_after is not None else 0.0
        )
        self.crash_failure_share = web.crash_failure_share
        probe = web.probe_timeout if web.probe_timeout is not None else math.inf
        self.probe_limit = probe * (1.0 + _ROUNDING)
        self.budget = clients.retry_budget
        self.budget_cap = max(
            1.0, self.budget * clients.peak_request_rate * _BUDGET_WINDOW
        )

    def _init_state(self, scenario: Scenario) -> None:
        tables = len(scenario.database.tables)
        # Queue: one row per arrival step, ring-indexed (bins older than the
        # queueing timeout have left, so T_q / dt + 1 rows suffice).
        self.queue_ring = self.queue_steps + 1
        self.q = np.zeros((self.queue_ring, self.live_columns + 2))
        self.bin_mass = [0.0] * self.queue_ring
        self.queued = self.queued_live = self.queued_init = 0.0
        self.head = 0
        # Connections: live mass by arrival step (up to the client timeout),
        # orphans and init queries as totals; executing and locked apart.
        self.service_ring = self.client_steps + 1
        self.e_live = np.zeros((self.service_ring, self.live_columns))
        self.e_live_total = self.e_orphan = self.e_init = 0.0
        self.l_live = np.zeros((tables, self.service_ring, self.live_columns))
        self.l_orphan = np.zeros(tables)
        self.l_init = np.zeros(tables)
        self.l_live_total = self.locked_total = 0.0
        # Pods, orbit, budget, failure share, breaker.
        self.pods_up = float(scenario.web.pods)
        total = self.steps + self.kernels.shape[1] + self.restart_steps + 2
        self.pod_returns = np.zeros(total)
        self.schedule = np.zeros((total, self.live_columns))  # retries due, by k
        self.orbit = 0.0
        self.tokens = self.budget_cap
        self.window_failed = [0.0] * self.window_steps
        self.window_granted = [0.0] * self.window_steps
        self.share = self.window_total = 0.0
        self.breaker = "closed"
        self.breaker_until = 0
        self.cold = False
        self.client_completions = 0.0
        self.failed = np.zeros(self.live_columns)  # failed live attempts, by k

    def _resync(self) -> None:
        """Recompute the running totals from the arrays."""
        self.bin_mass = self.q.sum(axis=1).tolist()
        self.queued = float(sum(self.bin_mass))
        self.queued_live = _total(self.q[:, : self.live_columns])
        self.queued_init = _total(self.q[:, self.init])
        self.e_live_total = _total(self.e_live)
        self.l_live_total = _total(self.l_live)
        self.locked_total = self.l_live_total + float(
            self.l_orphan.sum() + self.l_init.sum()
        )

    def start_with_backlog(self, backlog: float) -> None:
        """Start from a queue of ``backlog`` requests in its quasi-static state.

        The queue holds the attempts of the last ``w0`` seconds at the attempt
        rate ``x(w0)`` that a head-of-line wait ``w0`` sustains (attempt ``k``
        at rate ``lambda q**k``, ``q`` the retry probability of an attempt that
        waited ``w0``), with ``x(w0) w0 = backlog`` (beyond the saturated wait,
        denser); the pool is full with requests from the head; the orbit holds
        the retries those attempts' failures have scheduled. Where the health
        checks fail at ``w0`` the pods are in their crash-restart balance: a
        share ``1 / (1 + h D)`` is up, the rest come back over the restart
        delay, the queue holds their init queries, and a queued attempt whose
        pod has crashed since it arrived is an orphan.
        """
        if backlog <= 0.0:
            return
        profile = _backlog_profile(self.scenario, backlog)
        bins = min(
            max(1, math.floor(profile.wait / self.dt + 0.5)), self.queue_steps - 1
        )
        # Scaled so that the queue holds exactly ``backlog`` on the grid.
        scale = backlog / (profile.arrivals * bins * self.dt)
        for age in range(1, bins + 1):
            self._seed_bin(age, profile, scale)
        self._seed_service(bins)
        self._seed_orbit(profile.sent * scale)
        self._seed_pods(profile)
        self.head = -bins
        self._resync()

    def _seed_bin(self, age: int, profile: _Backlog, scale: float) -> None:
        row = self.q[(-age) % self.queue_ring]
        client = profile.admitted * (scale * self.dt)
        survived = math.exp(-profile.crash * age * self.dt)
        if age >= self.client_steps:
            row[self.orphan] += _total(client)
        else:
            row[: self.live_columns] += client * survived
            row[self.orphan] += _total(client) * (1.0 - survived)
        row[self.init] += profile.init_rate * scale * self.dt

    def _seed_service(self, bins: int) -> None:
        # The pool is full with requests like those at the head of the queue.
        held = float(self.scenario.proxy.pool_size)
        head = self.q[(-bins) % self.queue_ring]
        share = head / _total(head)
        self.e_live[(-bins) % self.service_ring] = held * share[: self.live_columns]
        self.e_orphan = held * float(share[self.orphan])
        self.e_init = held * float(share[self.init])

    def _seed_orbit(self, rates: NDArray[Any]) -> None:
        # Retries k scheduled at a constant rate in the past: the share still
        # pending j steps ahead is the kernel's tail from step j on.
        for retry in range(1, self.live_columns):
            tail = np.cumsum(self.kernels[retry - 1][::-1])[::-1]
            pending = rates[retry] * self.dt * tail
            self.schedule[: len(pending), retry] += pending
            self.orbit += _total(pending)

    def _seed_pods(self, profile: _Backlog) -> None:
        # Pods down in the crash-restart balance come back evenly over the delay.
        self.pods_up = profile.pods_up
        down = float(self.scenario.web.pods) - profile.pods_up
        if down > 0.0:
            self.pod_returns[: self.restart_steps] += down / self.restart_steps

    # -- the step -------------------------------------------------------------

    def advance(self, steps: int) -> None:
        """Run ``steps`` more steps (at most up to the horizon)."""
        stop = min(self.steps, self.n + steps)
        while self.n < stop:
            self._step(self.n)
            self.n += 1

    def _step(self, n: int) -> None:
        if n == self.warm_steps:
            # t = 0: what is in the system now was offered before the replay.
            self.initial_offered = self.queued + self._held()
            self.initial_requests = (
                self.queued_live + self.e_live_total + self.l_live_total + self.orbit
            )
        flows = dict.fromkeys(_FLOWS, 0.0)
        failed = self.failed
        failed[:] = 0.0
        self._events(n, failed, flows)
        init_arrivals = self._pods(n, failed, flows)
        self._client_timeout(n - self.client_steps, failed, flows)
        self._queue_timeout(n - self.queue_steps, failed, flows)
        self._arrivals(n, init_arrivals, failed, flows)
        self._service(n, flows)
        if self.queued > self.queue_limit:
            self._queue_limit(n, failed, flows)
        self._schedule_retries(n, failed, flows)
        self._update_share(n, flows)
        self._update_breaker(n)
        flows["offered"] = flows["attempts"] + init_arrivals
        if n >= self.warm_steps:
            self._record(n, flows)

    # 1. events ---------------------------------------------------------------

    def _events(self, n: int, failed: NDArray[Any], flows: dict[str, float]) -> None:
        if n in self.plan.cold_start:
            self._cold_stop(n, failed, flows)
        for table in self.plan.releases.get(n, ()):
            self._release_lock(table)

    def _release_lock(self, table: int) -> None:
        live = self.l_live[table]
        mass = _total(live)
        self.e_live += live
        self.e_live_total += mass
        self.e_orphan += float(self.l_orphan[table])
        self.e_init += float(self.l_init[table])
        live[:] = 0.0
        self.l_orphan[table] = self.l_init[table] = 0.0
        self.l_live_total = _total(self.l_live)
        self.locked_total = self.l_live_total + float(
            self.l_orphan.sum() + self.l_init.sum()
        )

    def _cold_stop(self, n: int, failed: NDArray[Any], flows: dict[str, float]) -> None:
        # Everything is dropped: live attempts fail (their clients retry),
        # every pod goes down and pending restarts are cancelled.
        failed += self.q[:, : self.live_columns].sum(axis=0)
        failed += self.e_live.sum(axis=0) + self.l_live.sum(axis=(0, 1))
        flows["dropped"] += self.queued + self._held()
        for array in (self.q, self.e_live, self.l_live, self.l_orphan, self.l_init):
            array[:] = 0.0
        self.e_orphan = self.e_init = 0.0
        self.head = n
        self._resync()
        self.pods_up = 0.0
        self.pod_returns[n:] = 0.0
        self.cold = True

    # 2. pods -----------------------------------------------------------------

    def _pods(self, n: int, failed: NDArray[Any], flows: dict[str, float]) -> float:
        """Pods come up (returning their init queries) and go down."""
        web = self.scenario.web
        starting = 0.0
        if n in self.plan.cold_end:
            self.cold = False
            starting = float(web.pods) - self.pods_up
        elif not self.cold:
            starting = float(self.pod_returns[n])
        self.pods_up += starting
        if self.cold or self.pods_up <= 0.0:
            return starting * web.init_queries
        crash = self.crash_share if self._crashing(n) else 0.0
        down_share = 1.0 - (1.0 - crash) * (1.0 - float(self.plan.rollback[n]))
        if down_share > 0.0:
            going = self.pods_up * down_share
            self.pods_up -= going
            self.pod_returns[n + self.restart_steps] += going
            self._fail_live_share(n, down_share, failed, flows)
        return starting * web.init_queries

    def _ring_slices(self, first: int, last: int) -> list[slice]:
        """Return the ring rows of queue bins ``first..last`` as one or two slices."""
        if last < first:
            return []
        ring = self.queue_ring
        if last - first + 1 >= ring:
            return [slice(None)]
        start, stop = first % ring, last % ring
        if start <= stop:
            return [slice(start, stop + 1)]
        return [slice(start, ring), slice(0, stop + 1)]

    def _crashing(self, n: int) -> bool:
        """Whether a crash rule holds at the start of step ``n`` (`pod_crash_rate`).

        Both inputs are those of the end of the previous step: the failure
        share, and the head-of-line wait ``(n - head) dt`` of a non-empty queue.
        """
        if self.crash_share == 0.0:
            return False
        if self.share > self.crash_failure_share:
            return True
        # health_checks_fail, with its threshold read once (this runs every step).
        return self.queued > 0.0 and (n - self.head) * self.dt > self.probe_limit

    def _fail_live_share(
        self, n: int, share: float, failed: NDArray[Any], flows: dict[str, float]
    ) -> None:
        """Fail the live attempts of pods going down; their requests stay as orphans."""
        # Every live attempt belongs to an up pod (the balancer spreads them
        # evenly), so the pods going down take the same share of each bin.
        # Only bins younger than the client timeout still hold live mass.
        for rows in self._ring_slices(max(self.head, n - self.client_steps), n - 1):
            live = self.q[rows, : self.live_columns]
            lost_by_attempt = np.add.reduce(live, axis=0) * share
            lost_total = _total(lost_by_attempt)
            failed += lost_by_attempt
            self.queued_live -= lost_total
            if not self.cancel:
                self.q[rows, self.orphan] += np.add.reduce(live, axis=1) * share
            live *= 1.0 - share
        if self.cancel:
            # Cancelled: the pod's waiting requests (init queries too) leave.
            init_lost = self.q[:, self.init] * share
            self.q[:, self.init] -= init_lost
            self.queued_init -= _total(init_lost)
            self.bin_mass = self.q.sum(axis=1).tolist()
            remaining = float(sum(self.bin_mass))
            flows["dropped"] += self.queued - remaining
            self.queued = remaining
        executing_by_attempt = np.add.reduce(self.e_live, axis=0) * share
        self.e_live *= 1.0 - share
        moved = _total(executing_by_attempt)
        failed += executing_by_attempt
        self.e_live_total -= moved
        self.e_orphan += moved
        if self.l_live_total > 0.0:
            holding = self.l_live * share
            self.l_live -= holding
            self.l_orphan += holding.sum(axis=(1, 2))
            failed += holding.sum(axis=(0, 1))
            self.l_live_total -= _total(holding)

    # 3. timeouts -------------------------------------------------------------

    def _client_timeout(
        self, bin_index: int, failed: NDArray[Any], flows: dict[str, float]
    ) -> None:
        """Live mass that arrived in ``bin_index`` reaches the client timeout."""
        if bin_index >= self.head:
            self._orphan_waiting(bin_index % self.queue_ring, failed, flows)
        slot = bin_index % self.service_ring
        executing = self.e_live[slot]
        mass = _total(executing)
        if mass > 0.0:
            failed += executing
            self.e_live_total -= mass
            self.e_orphan += mass
            flows["client_timeouts"] += mass
            executing[:] = 0.0
        if self.l_live_total > 0.0:
            holding = self.l_live[:, slot]
            per_table = holding.sum(axis=1)
            mass = _total(per_table)
            failed += holding.sum(axis=0)
            self.l_orphan += per_table
            self.l_live_total -= mass
            flows["client_timeouts"] += mass
            holding[:] = 0.0

    def _orphan_waiting(
        self, slot: int, failed: NDArray[Any], flows: dict[str, float]
    ) -> None:
        """Turn the waiting live mass of ``slot`` into orphans (or cancel it)."""
        if self.bin_mass[slot] <= 0.0:
            return
        row = self.q[slot]
        live = row[: self.live_columns]
        mass = _total(live)
        failed += live
        live[:] = 0.0
        flows["client_timeouts"] += mass
        self.queued_live -= mass
        if self.cancel:
            flows["dropped"] += mass
            self.queued -= mass
            self.bin_mass[slot] -= mass
        else:
            row[self.orphan] += mass

    def _queue_timeout(
        self, bin_index: int, failed: NDArray[Any], flows: dict[str, float]
    ) -> None:
        """Mass that arrived in ``bin_index`` reaches the queueing timeout."""
        if bin_index < self.head:
            return
        slot = bin_index % self.queue_ring
        mass = self.bin_mass[slot]
        if mass > 0.0:
            row = self.q[slot]
            live = row[: self.live_columns]
            failed += live
            flows["timed_out"] += mass
            self.queued -= mass
            self.queued_live -= _total(live)
            self.queued_init -= float(row[self.init])
            row[:] = 0.0
            self.bin_mass[slot] = 0.0
        self.head = bin_index + 1

    # 4. arrivals -------------------------------------------------------------

    def _arrivals(
        self,
        n: int,
        init_arrivals: float,
        failed: NDArray[Any],
        flows: dict[str, float],
    ) -> None:
        attempts = self.schedule[n].copy()
        retries = _total(attempts) - float(attempts[0])
        self.orbit -= retries
        attempts[0] = fresh = float(self.plan.fresh[n])
        sent = fresh + retries
        flows.update(fresh=fresh, retries=retries, attempts=sent)
        passing = self._pass_share(n)
        admitted = sent * passing
        room = self._bounded_room()
        if admitted > room:
            passing *= room / admitted
            admitted = room
        if passing < 1.0:
            failed += attempts * (1.0 - passing)
            flows["rejected"] += sent - admitted
            attempts *= passing
        slot = n % self.queue_ring
        row = self.q[slot]
        row[: self.live_columns] = attempts
        row[self.orphan] = 0.0
        row[self.init] = init_arrivals
        self.bin_mass[slot] = admitted + init_arrivals
        self.queued += admitted + init_arrivals
        self.queued_live += admitted
        self.queued_init += init_arrivals

    def _pass_share(self, n: int) -> float:
        """Share of attempts past the balancer, the pods and the breaker."""
        if self.breaker == "open":
            return 0.0
        passing = (1.0 - float(self.plan.shed[n])) * min(1.0, self.pods_up)
        breaker = self.scenario.web.circuit_breaker
        if self.breaker == "half_open" and breaker is not None:
            passing *= breaker.probe_share
        return passing

    def _bounded_room(self) -> float:
        """Return the attempts the bounded tier still admits this step (inf: async)."""
        web = self.scenario.web
        if web.mode != "bounded" or web.concurrency_per_pod is None:
            return math.inf
        in_flight = self.queued - self.queued_init + self._held_by_clients()
        cap = self.pods_up * web.concurrency_per_pod
        return max(0.0, cap - in_flight + self.client_completions)

    # 5. service --------------------------------------------------------------

    def _held(self) -> float:
        return self.e_live_total + self.e_orphan + self.e_init + self.locked_total

    def _held_by_clients(self) -> float:
        locked_init = _total(self.l_init) if self.locked_total > 0.0 else 0.0
        return self.e_live_total + self.e_orphan + self.locked_total - locked_init

    def _service(self, n: int, flows: dict[str, float]) -> None:
        arrived = self.bin_mass[n % self.queue_ring]
        held = self._held()
        connections = float(self.plan.capacity[n])
        share = float(self.plan.locked_share[n])
        load = max(1.0, 1.0 + self.alpha * (min(connections, held + self.queued) - 1.0))
        mu = self.mu / load
        granted, completed = _serve(
            waiting=self.queued - arrived,
            arrived=arrived,
            executing=held - self.locked_total,
            locked=self.locked_total,
            connections=connections,
            share=share,
            mu=mu,
            dt=self.dt,
        )
        if granted > 0.0:
            lock_shares = self.shares * self.plan.locked[n] if share > 0.0 else None
            self._grant(n, granted, share, lock_shares)
        self._complete(completed, flows)
        flows["granted"] = granted
        # Connections held beyond a shrunken pool still serve until they finish.
        flows["capacity"] = max(connections, held) * mu * self.dt

    def _grant(
        self, n: int, granted: float, share: float, lock_shares: NDArray[Any] | None
    ) -> None:
        """Move ``granted`` mass from the head of the queue onto connections."""
        remaining = granted
        while remaining > 0.0 and self.head <= n:
            slot = self.head % self.queue_ring
            mass = self.bin_mass[slot]
            row = self.q[slot]
            bin_index = self.head
            if mass - remaining <= _ROUNDING * max(1.0, mass):
                taken = row.copy()
                row[:] = 0.0
                self.bin_mass[slot] = 0.0
                remaining -= mass
                self.head += 1
            else:
                taken = row * (remaining / mass)
                row -= taken
                self.bin_mass[slot] = mass - remaining
                mass, remaining = remaining, 0.0
            if mass > 0.0:
                self._hold(bin_index, taken, mass, share, lock_shares)
        self._skip_empty_bins(n)

    def _skip_empty_bins(self, n: int) -> None:
        while self.head <= n and self.bin_mass[self.head % self.queue_ring] <= 0.0:
            self.head += 1

    def _hold(
        self,
        bin_index: int,
        taken: NDArray[Any],
        mass: float,
        share: float,
        lock_shares: NDArray[Any] | None,
    ) -> None:
        """Put mass taken from arrival step ``bin_index`` on connections."""
        live = taken[: self.live_columns]
        live_mass = _total(live)
        orphans, inits = float(taken[self.orphan]), float(taken[self.init])
        self.queued -= mass
        self.queued_live -= live_mass
        self.queued_init -= inits
        slot = bin_index % self.service_ring
        executing = 1.0 - share
        if live_mass > 0.0:
            self.e_live[slot] += executing * live
            self.e_live_total += executing * live_mass
        self.e_orphan += executing * orphans
        self.e_init += executing * inits
        if lock_shares is not None:
            self.l_live[:, slot] += lock_shares[:, None] * live
            self.l_orphan += lock_shares * orphans
            self.l_init += lock_shares * inits
            self.l_live_total += share * live_mass
            self.locked_total += share * mass

    def _complete(self, completed: float, flows: dict[str, float]) -> None:
        """Take ``completed`` evenly from the executing mass (memoryless service)."""
        executing = self.e_live_total + self.e_orphan + self.e_init
        share = min(1.0, completed / executing) if executing > 0.0 else 0.0
        # Running totals can sit a rounding error below 0 once emptied.
        goodput = share * max(0.0, self.e_live_total)
        wasted = share * max(0.0, self.e_orphan)
        init_done = share * max(0.0, self.e_init)
        if share > 0.0:
            self.e_live *= 1.0 - share
        self.e_live_total -= goodput
        self.e_orphan -= wasted
        self.e_init -= init_done
        self.client_completions = goodput + wasted
        flows.update(
            goodput=goodput,
            wasted=wasted,
            init_done=init_done,
            completed=goodput + wasted + init_done,
        )

    # 6. queue limit ------------------------------------------------------------

    def _queue_limit(
        self, n: int, failed: NDArray[Any], flows: dict[str, float]
    ) -> None:
        """Reject the newest waiting mass above ``queue_limit``."""
        excess = self.queued - self.queue_limit
        bin_index = n
        while excess > 0.0 and bin_index >= self.head:
            slot = bin_index % self.queue_ring
            mass = self.bin_mass[slot]
            if mass > 0.0:
                taken = self.q[slot] * min(1.0, excess / mass)
                self.q[slot] -= taken
                failed += taken[: self.live_columns]
                removed = min(mass, excess)
                flows["rejected"] += removed
                flows["limit_rejected"] += removed
                excess -= removed
            bin_index -= 1
        self._resync()
        self._skip_empty_bins(n)

    # 7. retries, failure share, breaker -----------------------------------------

    def _schedule_retries(
        self, n: int, failed: NDArray[Any], flows: dict[str, float]
    ) -> None:
        """Turn this step's failed live attempts into retries or failed requests."""
        wanting = failed[: self.retries]
        total = _total(wanting)
        gave_up = float(failed[self.retries])
        if self.budget < math.inf:
            fresh = float(self.plan.fresh[n])
            self.tokens = min(self.budget_cap, self.tokens + self.budget * fresh)
            allowed = min(total, self.tokens)
            self.tokens -= allowed
            if total > 0.0:
                gave_up += total - allowed
                wanting = wanting * (allowed / total)
                total = allowed
        if total > 0.0:
            width = self.kernels_by_step.shape[0]
            due = self.schedule[n + 1 : n + 1 + width, 1:]
            due += self.kernels_by_step * wanting
            self.orbit += total
        flows["failed_requests"] = gave_up

    def _update_share(self, n: int, flows: dict[str, float]) -> None:
        """Update the failure share of connection requests over the trailing window."""
        slot = n % self.window_steps
        self.window_failed[slot] = flows["timed_out"] + flows["limit_rejected"]
        self.window_granted[slot] = flows["granted"]
        failed = sum(self.window_failed)
        self.window_total = failed + sum(self.window_granted)
        self.share = failed / self.window_total if self.window_total > 0.0 else 0.0

    def _update_breaker(self, n: int) -> None:
        breaker = self.scenario.web.circuit_breaker
        if breaker is None:
            return
        above = self.share > breaker.failure_threshold
        if self.breaker == "closed" and above:
            self._open_breaker(n, breaker.open_duration)
        elif self.breaker == "open" and n + 1 >= self.breaker_until:
            self.breaker = "half_open"
        elif self.breaker == "half_open" and self.window_total > 0.0:
            if above:
                self._open_breaker(n, breaker.open_duration)
            else:
                self.breaker = "closed"

    def _open_breaker(self, n: int, duration: float) -> None:
        self.breaker = "open"
        self.breaker_until = n + 1 + _steps(duration, self.dt)

    # -- records ------------------------------------------------------------------

    def _record(self, n: int, flows: dict[str, float]) -> None:
        queue = max(0.0, self.queued)
        wait = (n + 1 - self.head) * self.dt if queue > 0.0 else 0.0
        state = (
            queue,
            self._held(),
            self.locked_total,
            self.orbit,
            self.pods_up,
            wait,
            self.share,
            float(self.breaker == "open"),
            self.queued_live + self.e_live_total + self.l_live_total,
        )
        self.rows.append(state + _flow_values(flows))

    def trajectory(self) -> FluidTrajectory:
        """Return the samples recorded so far as a `FluidTrajectory`."""
        table = np.array(self.rows, dtype=float).reshape(-1, len(_STATE) + len(_FLOWS))
        column = {name: table[:, i] for i, name in enumerate(_STATE + _FLOWS)}
        rate = {name: column[name] / self.dt for name in _FLOWS}
        cumulative = {name: np.cumsum(column[name]) for name in _FLOWS}
        return FluidTrajectory(
            scenario=self.scenario,
            time=(np.arange(len(table), dtype=float) + 1.0) * self.dt,
            queue=column["queue"],
            in_service=column["in_service"],
            locked=column["locked"],
            orbit=column["orbit"],
            pods_up=column["pods_up"],
            head_wait=column["head_wait"],
            fresh_rate=rate["fresh"],
            attempt_rate=rate["attempts"],
            retry_rate=rate["retries"],
            throughput=rate["completed"],
            goodput=rate["goodput"],
            wasted_rate=rate["wasted"],
            init_rate=rate["init_done"],
            queue_timeout_rate=rate["timed_out"],
            rejected_rate=rate["rejected"],
            dropped_rate=rate["dropped"],
            client_timeout_rate=rate["client_timeouts"],
            failed_request_rate=rate["failed_requests"],
            failure_share=column["failure_share"],
            capacity=rate["capacity"],
            breaker_open=column["breaker_open"] > 0.5,
            cum_offered=cumulative["offered"] + self.initial_offered,
            cum_completed=cumulative["completed"],
            cum_timed_out=cumulative["timed_out"],
            cum_rejected=cumulative["rejected"],
            cum_dropped=cumulative["dropped"],
            cum_fresh=cumulative["fresh"] + self.initial_requests,
            cum_succeeded=cumulative["goodput"],
            cum_failed_requests=cumulative["failed_requests"],
            live=column["live"],
        )


_flow_values = operator.itemgetter(*_FLOWS)
_WARM_SERVICE_TIMES = 40  # exp(-40): the warm-up forgets the empty start


def _warm_steps(scenario: Scenario, dt: float) -> int:
    """Return the steps run before t = 0 to reach the normal steady state.

    The system has been running at its initial demand before the replay
    starts: the pool holds its steady in-service mass. When the pool (or a
    bounded tier) cannot carry that demand there is no normal state and the
    replay starts empty (0 steps).
    """
    clients, database, web = scenario.clients, scenario.database, scenario.web
    demand = float(clients.rate_at(np.zeros(1))[0])
    room = float(scenario.proxy.pool_size)
    if web.mode == "bounded" and web.concurrency_per_pod is not None:
        room = min(room, float(web.pods * web.concurrency_per_pod))
    held = demand * database.service_time
    slowdown = max(1.0, 1.0 + database.contention * (min(held, room) - 1.0))
    if held * slowdown >= room:
        return 0
    warm = _steps(_WARM_SERVICE_TIMES * database.service_time * slowdown, dt)
    return max(warm, _steps(clients.timeout, dt) + 1)


def _total(array: NDArray[Any]) -> float:
    """Sum of every element (np.add.reduce: no wrapper overhead on small arrays)."""
    return float(np.add.reduce(array, axis=None))


def _steps(seconds: float, dt: float) -> int:
    """Return ``seconds`` as a whole number of steps, at least one."""
    return max(1, math.floor(seconds / dt + 0.5))


def _serve(
    *,
    waiting: float,
    arrived: float,
    executing: float,
    locked: float,
    connections: float,
    share: float,
    mu: float,
    dt: float,
) -> tuple[float, float]:
    """Return (granted, completed) for one step of the pool (module docstring, 5.).

    ``waiting`` queued before the step, ``arrived`` during it; ``executing`` and
    ``locked`` connections held; ``share`` of grants held by a lock.
    """
    held = executing + locked
    free = connections - held
    if free < -_ROUNDING * connections:
        # Over capacity (the pool shrank): no grant until completions make room.
        completed = executing * -math.expm1(-mu * dt)
        granted = min(waiting + arrived, max(0.0, connections - (held - completed)))
        return granted, completed
    free = max(0.0, free)
    filled = executing + (1.0 - share) * free
    if share > 0.0:
        refill = filled * -math.expm1(-share * mu * dt) / share
    else:
        refill = filled * mu * dt
    demand = waiting + arrived
    if demand >= free + refill:
        return free + refill, refill
    decay = -math.expm1(-mu * dt)
    completed = (executing + (1.0 - share) * waiting) * decay + (
        1.0 - share
    ) * arrived * (1.0 - decay / (mu * dt))
    completed = min(
        completed, connections * mu * dt, executing + (1.0 - share) * demand
    )
    granted = demand - max(0.0, held + demand - completed - connections)
    return granted, completed


@dataclass(frozen=True)
class _Backlog:
    """The quasi-static state of a queue whose requests all wait ``wait``."""

    wait: float  # head-of-line wait w0 (s)
    sent: NDArray[Any]  # client attempts sent per s, by attempt number k
    admitted: NDArray[Any]  # of those, per s past the pods into the queue
    init_rate: float  # init queries per s of pods restarting after crashes
    crash: float  # crash rate of each up pod (per s)
    pods_up: float

    @property
    def arrivals(self) -> float:
        """Connection requests joining the queue per second."""
        return _total(self.admitted) + self.init_rate


def _quasi_static(
    scenario: Scenario, wait: float, crash: float | None = None
) -> _Backlog:
    """Return the state in which every attempt waits ``wait`` seconds.

    Below the saturated wait nothing fails at the proxy, so only the health
    checks' rule can crash pods: at rate ``h`` a share ``u = P / (1 + h D)`` of
    the pods is up (crashes ``u h`` balance returns ``(P - u) / D``), restarts
    send ``u h n_init`` init queries per second, and an attempt succeeds when
    it passes the pods (``min(1, u)``), is served before its client's timeout
    and its pod survives until then (`_on_time`). ``crash`` overrides the
    crash rate ``h`` that the rule gives at ``wait``.
    """
    clients, web = scenario.clients, scenario.web
    if crash is None:
        crash = pod_crash_rate(scenario, wait, 0.0)
    pods_up = web.pods / (1.0 + crash * web.restart_delay)
    passing = min(1.0, pods_up)
    on_time = _on_time(wait, clients.timeout, saturated_service_rate(scenario), crash)
    ratio = min(
        1.0 - passing * on_time,
        retry_probability_cap(clients.max_retries, clients.retry_budget),
    )
    sent = clients.peak_request_rate * ratio ** np.arange(clients.max_retries + 1)
    return _Backlog(
        wait=wait,
        sent=sent,
        admitted=passing * sent,
        init_rate=pods_up * crash * web.init_queries,
        crash=crash,
        pods_up=pods_up,
    )


def _backlog_profile(scenario: Scenario, backlog: float) -> _Backlog:
    """Return the quasi-static state whose queue holds ``backlog`` requests."""
    top = saturated_wait(scenario)
    full = _quasi_static(scenario, top)
    if full.arrivals * top <= backlog:
        return full
    low, high = 0.0, top
    for _ in range(100):  # bisection on (arrivals at w) w = backlog, rising in w
        middle = 0.5 * (low + high)
        if _quasi_static(scenario, middle).arrivals * middle < backlog:
            low = middle
        else:
            high = middle
    return _quasi_static(scenario, high)


def simulate_fluid(
    scenario: Scenario,
    *,
    horizon: float | None = None,
    time_step: float | None = None,
    initial_backlog: float = 0.0,
) -> FluidTrajectory:
    """Replay a scenario with the deterministic fluid model.

    Parameters
    ----------
    scenario
        The validated scenario.
    horizon
        End of the replay (s); default ``scenario.horizon``.
    time_step
        Step (s); default ``scenario.time_step``. At most a tenth of the
        shortest timeout.
    initial_backlog
        Requests waiting at t = 0, in the quasi-static state of their head-of-
        line wait, with a matching retry orbit (see the Notes); default empty.

    Returns
    -------
    FluidTrajectory
        The replay, one sample per step.

    Raises
    ------
    InvalidParameterError
        A non-positive horizon or time step, a step too coarse for the
        timeouts, or a negative backlog.

    Notes
    -----
    The equations are in the module docstring. The initial backlog ``Q0``
    consists of the attempts of the last ``w0`` seconds, arrived at the rate
    ``x(w0) = lambda (1 + q + ... + q**R)`` of a system whose every attempt
    waits ``w0``, with ``q`` the probability such an attempt is served late
    (capped by the retry budget) and ``x(w0) w0 = Q0``; the pool is full and
    the orbit holds the retries their failures scheduled. At the boundary
    equilibrium this state is an equilibrium of the fluid model.

    References
    ----------
    [LiuWhitt2012], [Whitt2006].

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> quiet = default_scenario().with_changes({"events": []})
    >>> run = simulate_fluid(quiet, horizon=60.0)
    >>> round(float(run.goodput[-1]), 6), float(run.queue.max())
    (160.0, 0.0)
    """
    horizon = check_positive(
        "horizon", horizon if horizon is not None else scenario.horizon
    )
    dt = check_positive(
        "time_step", time_step if time_step is not None else scenario.time_step
    )
    backlog = check_nonnegative("initial_backlog", initial_backlog)
    shortest = min(scenario.clients.timeout, scenario.proxy.queue_timeout)
    if dt * 10.0 > shortest:
        rule = f"must be at most a tenth of the shortest timeout ({shortest} s)"
        raise InvalidParameterError("time_step", rule, dt)
    engine = _Engine(scenario, horizon, dt, warm=backlog == 0.0)
    engine.start_with_backlog(backlog)
    engine.advance(engine.steps)
    return engine.trajectory()
