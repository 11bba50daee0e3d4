"""Discrete-event simulation of a scenario, request by request, with SimPy.

The simulation replays exactly the system a scenario file describes (see
`retrystorm.scenario`), one request and one attempt at a time, so that the
fluid model (`retrystorm.fluid`), a mean-field limit of the same system, can be
checked against it.

What is simulated
-----------------
* Clients: fresh requests arrive as a Poisson stream of rate
  ``request_rate(t)`` (piecewise constant). Each attempt waits at most
  ``clients.timeout``; a failed attempt ``k < max_retries`` is retried after
  ``min(cap, initial * multiplier**k)`` seconds with the chosen jitter, if the
  retry budget (a token bucket: ``retry_budget`` tokens per fresh request,
  one per retry, at most 10 s of tokens) allows; otherwise the request fails
  for good. A client that gives up retries at once, even though its attempt
  may still be queued: that attempt is an *orphan*, and its later service is
  *wasted work*.
* Web tier: ``pods`` pods behind a balancer that gives attempts to the up pods
  in turn; with no pod up, an attempt fails fast. ``bounded``: at most
  ``pods up * concurrency_per_pod`` client attempts waiting for or holding a
  connection (orphans included), the excess rejected fast. While the share of
  failed connection requests (queue timeouts and queue-limit rejections, over
  the trailing `retrystorm.fluid.FAILURE_WINDOW` seconds, tier-wide) is above
  ``crash_failure_share``, or while the head-of-line wait (the age of the
  oldest waiting request) exceeds ``probe_timeout`` (the pods' health checks
  time out waiting for a connection), each up pod's crash clock runs: it
  crashes at rate ``1/crash_after``; both rules are read every
  ``FAILURE_WINDOW / 20`` seconds. The health checks' own connection requests
  are not simulated (as in the fluid model). A pod that goes down (crash,
  rollback, cold restart) fails the attempts its clients wait for, is down
  ``restart_delay`` seconds and then sends ``init_queries`` connection
  requests (no client, no retry). The circuit
  breaker opens when that share exceeds its threshold, fails attempts fast for
  ``open_duration`` seconds, then lets ``probe_share`` of them through until the
  share (once requests resolve) decides: back to open or closed.
* Proxy: ``pool_size`` connections, one FIFO queue, each waiting request
  leaves after ``queue_timeout`` seconds with an error, ``queue_limit`` rejects
  arrivals when full, and with ``cancel_abandoned`` a waiting request whose
  client gave up or whose pod went down is removed at once.
* Database: exponential service of mean ``service_time``; with contention
  ``alpha`` and ``b`` connections held, each serves at rate
  ``(1/service_time) / max(1, 1 + alpha (b - 1))``. A query on a locked table
  holds its connection until the lock ends and then needs a fresh exponential
  service time (memoryless: the same law as its remaining time).
* Events: locks, capacity drops (the pool shrinks to ``fraction`` of its
  size, rounded to whole connections, halves up; requests in service finish),
  rolling restarts (pod ``i`` restarted at ``at + i * duration / pods`` if it
  is up; the fluid model restarts a share ``dt / duration`` of the up pods per
  step instead), cold restarts (queue and connections emptied, every pod down
  for ``duration``), shedding.

Every change is a callback of a SimPy timeout on the environment's event heap;
no SimPy process is used. Timeouts that are the same for every request (the
client timeout, the queueing timeout) expire in the order they were set, so a
single timer re-armed for the oldest pending deadline serves them all, and a
request costs about three heap entries.

Scaled-down replicas
--------------------
``scale`` multiplies the extensive quantities: fresh request rates,
``proxy.pool_size`` (rounded to whole connections, with a `RuntimeWarning` if
that changes it), ``web.init_queries`` (a mean per start: a pod sends
``floor(x)`` or ``floor(x) + 1`` queries), ``proxy.queue_limit``, the bounded
tier's cap ``concurrency_per_pod`` and the retry budget's token capacity; the
contention is evaluated at ``b / scale`` held connections, so the
per-connection rate at a given share of the pool is that of the full system.
Times, shares, fractions, ``max_retries`` and the number of pods are not
scaled. The fluid model of the full scenario times ``scale`` is then the
mean-field limit of the replica: levels and rates of the replica divided by
``scale`` estimate the full system's, with a random error that shrinks like
``1 / sqrt(scale)``.

References
----------
[LiuWhitt2012] and [Whitt2006] for the fluid limit the simulation checks;
[Bronson2021] and [Huang2022] for the retry loop and wasted work;
[LawKelton2000] for the confidence intervals of `replicate`.

Examples
--------
>>> from retrystorm.scenario import default_scenario
>>> run = simulate_events(default_scenario(), seed=7, horizon=300.0, scale=0.05)
>>> int(run.conservation_residual.max()), int(run.request_residual.max())
(0, 0)
>>> bool(run.peak_queue > 100)
True
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, cast

import numpy as np
import simpy
from numpy.typing import NDArray
from scipy import stats

from retrystorm._trajectory import SampledReplay
from retrystorm._validation import check_integer, check_positive
from retrystorm.equilibria import good_state_failure_share
from retrystorm.errors import InvalidParameterError
from retrystorm.fluid import FAILURE_WINDOW, GOODPUT_TOLERANCE, good_queue_threshold
from retrystorm.scenario import Scenario

__all__ = [
    "Estimate",
    "ReplicationSummary",
    "SimulationTrajectory",
    "final_backlog",
    "goodput_by_phase",
    "phase_windows",
    "replicate",
    "simulate_events",
]

_CONFIDENCE = 0.95
_BUDGET_WINDOW = 10.0  # s of fresh requests' tokens the retry budget can bank
_TICK = FAILURE_WINDOW / 20.0  # s between updates of the failure share
_ROUNDING = 1e-9
_VERDICTS = ("stable", "recovers", "metastable")


# -- results -------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A mean over replications with its 95 % confidence half-width.

    Attributes
    ----------
    mean
        Sample mean.
    half_width
        Half-width of the 95 % confidence interval from the t distribution with
        ``count - 1`` degrees of freedom; ``inf`` when ``count < 2``.
    count
        Number of values averaged.
    """

    mean: float
    half_width: float
    count: int

    @property
    def low(self) -> float:
        """Lower end of the confidence interval."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """Upper end of the confidence interval."""
        return self.mean + self.half_width


@dataclass(frozen=True)
class SimulationTrajectory(SampledReplay):
    """One simulated replay, sampled at the end of each sample interval.

    The fields mirror `retrystorm.fluid.FluidTrajectory`. Levels are the state
    at ``time``; rates (per second) are counts over the interval that ends at
    ``time`` divided by its length; ``cum_*`` are counts from t = 0 to
    ``time``. Everything is in the units of the replica (see ``scale``).

    Attributes
    ----------
    scenario
        The scenario replayed (unscaled).
    scale
        The replica's scale: levels and rates divided by it estimate the full
        system's.
    time
        End of each sample interval (s).
    queue
        Requests waiting for a connection.
    in_service
        Connections held (executing or held by a lock).
    locked
        Connections held by queries on a locked table.
    orbit
        Retries scheduled but not yet sent.
    pods_up
        Pods up.
    head_wait
        Age of the oldest waiting request (s); 0 with an empty queue.
    fresh_rate
        Fresh requests per second (realised; see `demand` for the mean).
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
        Requests per second that failed for good.
    failure_rate
        Attempts per second whose client saw them fail (client timeout, queue
        timeout, a fast rejection, its pod going down).
    failure_share
        Share of failed connection requests over the trailing window.
    capacity
        Completions per second the pool in effect can give at most.
    breaker_open
        Whether the breaker is open at ``time``.
    live
        Attempts whose client waits for them.
    cum_offered, cum_completed, cum_timed_out, cum_rejected, cum_dropped
        The connection-request balance (client attempts plus init queries).
    cum_fresh, cum_succeeded, cum_failed_requests
        The request balance.
    cum_attempts, cum_retries, cum_init_queries
        Client attempts sent (fresh and retries), retries sent, init queries
        sent.
    cum_wasted, cum_client_timeouts, cum_pod_errors, cum_budget_denied
        Wasted completions, client timeouts, attempts failed by their pod going
        down, retries refused by the budget.
    cum_crashes
        Pod crashes.
    """

    scenario: Scenario
    scale: float
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
    failure_rate: NDArray[np.float64]
    failure_share: NDArray[np.float64]
    capacity: NDArray[np.float64]
    breaker_open: NDArray[np.bool_]
    live: NDArray[np.float64]
    cum_offered: NDArray[np.float64]
    cum_completed: NDArray[np.float64]
    cum_timed_out: NDArray[np.float64]
    cum_rejected: NDArray[np.float64]
    cum_dropped: NDArray[np.float64]
    cum_fresh: NDArray[np.float64]
    cum_succeeded: NDArray[np.float64]
    cum_failed_requests: NDArray[np.float64]
    cum_attempts: NDArray[np.float64]
    cum_retries: NDArray[np.float64]
    cum_init_queries: NDArray[np.float64]
    cum_wasted: NDArray[np.float64]
    cum_client_timeouts: NDArray[np.float64]
    cum_pod_errors: NDArray[np.float64]
    cum_budget_denied: NDArray[np.float64]
    cum_crashes: NDArray[np.float64]

    @property
    def sample_interval(self) -> float:
        """Length of a sample interval in seconds."""
        return float(self.time[0])

    @property
    def demand(self) -> NDArray[np.float64]:
        """Mean fresh requests per second over each interval (scaled demand)."""
        clients, width = self.scenario.clients, self.sample_interval
        expected = [clients.requests_between(t - width, t) for t in self.time]
        return np.asarray(expected) * (self.scale / width)

    @property
    def queue_threshold(self) -> float:
        """Largest queue of the good state: the fluid model's, times `scale`."""
        return good_queue_threshold(self.scenario) * self.scale

    @cached_property
    def good_failure_share(self) -> float:
        """Share of requests that fail for good even in the good state.

        See `retrystorm.equilibria.good_state_failure_share`.
        """
        return good_state_failure_share(self.scenario)

    @property
    def is_good(self) -> NDArray[np.bool_]:
        """The good-state test at each sample.

        Good: ``queue <= queue_threshold`` and, over the interval, at most a
        share ``GOODPUT_TOLERANCE`` (1e-3) of the requests that ended failed
        for good, beyond those that fail even in the good state. This is
        the fluid model's test ``goodput >= (1 - 1e-3) demand`` read at the
        level of requests: the goodput of one interval is a random count
        whose noise alone exceeds 1e-3 of the demand, whereas in the good
        state few requests are lost. Single attempts may fail by chance in a
        small replica (a bounded tier's cap reached in a burst) and succeed
        on retry; like the fluid test, this one does not count them.
        """
        width = self.sample_interval
        lost = self.failed_request_rate * width
        ended = lost + self.goodput * width
        # Requests that outlive their clients even in the good state
        # (`good_failure_share`) are lost at random: their count may exceed
        # its mean by three standard deviations.
        baseline = self.good_failure_share
        noise = 3.0 * np.sqrt(baseline * (1.0 - baseline) * ended)
        few_lost = lost <= (baseline + GOODPUT_TOLERANCE) * ended + noise + _ROUNDING
        return np.asarray((self.queue <= self.queue_threshold) & few_lost)

    @property
    def verdict(self) -> str:
        """``stable``, ``recovers`` or ``metastable`` from `recovery_time`."""
        return _verdict(self.recovery_time())


@dataclass(frozen=True)
class ReplicationSummary:
    """Independent replications of one scenario, summarised.

    Levels and rates are in the replica's units: divide by ``scale`` for the
    full system.

    Attributes
    ----------
    scenario
        The scenario replayed (unscaled).
    scale
        The replicas' scale.
    replications
        Number of replications.
    peak_queue
        Largest queue of each replication (requests) before the first
        intervention (the end of the verdict window), averaged: the backlog
        the trigger built, whatever the intervention does next.
    goodput
        Mean goodput (requests per second) in each phase of `phase_windows`.
    final_backlog
        Each replication's `final_backlog` (the mean queue over the end of
        the verdict window), averaged: the level a stuck system stays at.
    recovery_time
        Seconds from the end of the trigger to the recovery, over the
        replications that recovered (None if none did).
    verdicts
        How many replications ended ``stable``, ``recovers``, ``metastable``.
    peak_queues
        Each replication's largest queue before the first intervention.
    recovery_times
        Each replication's recovery time (None: it did not recover).
    final_backlogs
        Each replication's final backlog.
    """

    scenario: Scenario
    scale: float
    replications: int
    peak_queue: Estimate
    goodput: Mapping[str, Estimate]
    recovery_time: Estimate | None
    verdicts: Mapping[str, int]
    peak_queues: tuple[float, ...]
    recovery_times: tuple[float | None, ...]
    final_backlog: Estimate
    final_backlogs: tuple[float, ...]

    @property
    def verdict(self) -> str:
        """The verdict most replications reached (ties: the worse one)."""
        return max(reversed(_VERDICTS), key=lambda name: self.verdicts[name])


class _Sampled(Protocol):
    """What `goodput_by_phase` reads: a fluid or simulated trajectory."""

    @property
    def scenario(self) -> Scenario: ...

    @property
    def time(self) -> NDArray[np.float64]: ...

    @property
    def goodput(self) -> NDArray[np.float64]: ...

    @property
    def queue(self) -> NDArray[np.float64]: ...


# -- public functions ------------------------------------------------------------


def simulate_events(
    scenario: Scenario,
    *,
    seed: int | np.random.Generator,
    horizon: float | None = None,
    sample_interval: float = 1.0,
    scale: float = 1.0,
) -> SimulationTrajectory:
    """Simulate a scenario request by request (one seeded replication).

    Parameters
    ----------
    scenario
        The validated scenario.
    seed
        A non-negative integer seed or a numpy ``Generator``: the only source
        of randomness.
    horizon
        End of the replay (s); default ``scenario.horizon``.
    sample_interval
        Seconds between samples (rates are averaged over each interval).
    scale
        The replica's scale (module docstring, "Scaled-down replicas"): 0.1
        turns a 100-connection pool into 10 and 120 requests per second into 12.

    Returns
    -------
    SimulationTrajectory
        The replay, sampled every ``sample_interval`` seconds.

    Raises
    ------
    InvalidParameterError
        A bad seed, a non-positive or infinite horizon, sample interval or
        scale, a sample interval longer than the horizon, or a scale that
        leaves no connection.

    Warns
    -----
    RuntimeWarning
        ``pool_size * scale``, or the pool a capacity event leaves, is not a
        whole number: the replica's pool is rounded, so its capacity is not
        exactly ``scale`` times the full one.

    Notes
    -----
    The semantics are those of the scenario specification, event by event
    (module docstring). Conservation holds exactly at every sample:
    ``cum_offered = queue + in_service + cum_completed + cum_timed_out +
    cum_rejected + cum_dropped`` and ``cum_fresh = cum_succeeded +
    cum_failed_requests + live + orbit``.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> quiet = default_scenario().with_changes({"events": []})
    >>> run = simulate_events(quiet, seed=1, horizon=200.0, scale=0.1)
    >>> float(run.queue.max()) <= 10.0, float(run.cum_client_timeouts[-1])
    (True, 0.0)
    """
    generator = _generator(seed)
    horizon = check_positive(
        "horizon", horizon if horizon is not None else scenario.horizon
    )
    interval = check_positive("sample_interval", sample_interval)
    if interval > horizon:
        rule = f"must not exceed the horizon ({horizon} s)"
        raise InvalidParameterError("sample_interval", rule, sample_interval)
    config = _config(scenario, check_positive("scale", scale))
    samples = max(1, math.floor(horizon / interval + 0.5))
    rows = _run(config, generator, interval, samples)
    return _trajectory(scenario, config, rows, interval)


def replicate(
    scenario: Scenario,
    *,
    replications: int,
    seed: int,
    horizon: float | None = None,
    sample_interval: float = 1.0,
    scale: float = 1.0,
) -> ReplicationSummary:
    """Run independent replications and summarise them with 95 % intervals.

    Parameters
    ----------
    scenario
        The validated scenario.
    replications
        Number of independent replications (at least 2).
    seed
        Non-negative integer; replication ``i`` uses the ``i``-th stream
        spawned from ``numpy.random.SeedSequence(seed)``.
    horizon, sample_interval, scale
        As in `simulate_events`.

    Returns
    -------
    ReplicationSummary
        Means and 95 % confidence half-widths (t distribution) of the peak
        queue, the goodput per phase and the recovery time, and the verdicts.

    Raises
    ------
    InvalidParameterError
        Fewer than 2 replications, a bad seed, or a bad argument of
        `simulate_events`.

    Notes
    -----
    The half-width is ``t_{0.975, n-1} s / sqrt(n)`` with ``s`` the sample
    standard deviation of the ``n`` values ([LawKelton2000], 9.4.1);
    replications are independent, so the interval is exact for normal values
    and asymptotically right otherwise.

    References
    ----------
    [LawKelton2000]

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> summary = replicate(
    ...     default_scenario(), replications=2, seed=3, horizon=240.0, scale=0.05
    ... )
    >>> sum(summary.verdicts.values())
    2
    """
    count = check_integer("replications", replications, minimum=2)
    _check_seed(seed)
    streams = np.random.SeedSequence(seed).spawn(count)
    runs = [
        simulate_events(
            scenario,
            seed=np.random.default_rng(stream),
            horizon=horizon,
            sample_interval=sample_interval,
            scale=scale,
        )
        for stream in streams
    ]
    return _summary(scenario, scale, runs)


def phase_windows(
    scenario: Scenario, horizon: float | None = None
) -> dict[str, tuple[float, float]]:
    """Return the phases of a replay as name -> (start s, end s).

    ``before`` the trigger, the ``trigger`` itself (lock and capacity events,
    first start to last end), ``after`` it up to the first intervention (cold
    restart) or the horizon, and ``intervention`` from there to the horizon.
    Empty phases are left out; without a trigger the whole replay is ``before``.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> phase_windows(default_scenario())
    {'before': (0.0, 60.0), 'trigger': (60.0, 105.0),
     'after': (105.0, 2280.0), 'intervention': (2280.0, 3000.0)}
    """
    end = float(horizon if horizon is not None else scenario.horizon)
    start, stop = scenario.trigger_start, scenario.trigger_end
    if start is None or stop is None:
        return {"before": (0.0, end)}
    intervention = scenario.first_intervention
    window_end = min(end, intervention if intervention is not None else end)
    bounds = {
        "before": (0.0, min(start, end)),
        "trigger": (min(start, end), min(stop, end)),
        "after": (min(stop, end), max(min(stop, end), window_end)),
        "intervention": (window_end, end),
    }
    return {name: (low, high) for name, (low, high) in bounds.items() if high > low}


def goodput_by_phase(trajectory: _Sampled) -> dict[str, float]:
    """Return the mean goodput (per s) in each phase of `phase_windows`.

    Works on a `SimulationTrajectory` or a `retrystorm.fluid.FluidTrajectory`:
    a sample belongs to the phase its interval ends in.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> from retrystorm.fluid import simulate_fluid
    >>> fluid = simulate_fluid(default_scenario(), horizon=120.0)
    >>> phases = goodput_by_phase(fluid)
    >>> list(phases), bool(phases["trigger"] < 0.1 * phases["before"])
    (['before', 'trigger', 'after'], True)
    """
    time, goodput = trajectory.time, trajectory.goodput
    horizon = float(time[-1])
    means = {}
    for name, (start, end) in phase_windows(trajectory.scenario, horizon).items():
        inside = (time > start + _ROUNDING) & (time <= end + _ROUNDING)
        if inside.any():
            means[name] = float(goodput[inside].mean())
    return means


def final_backlog(trajectory: _Sampled) -> float:
    """Return the mean queue (requests) at the end of the verdict window.

    The mean over the samples of the last ``2 * clients.timeout`` seconds
    (the hold of the good state) before the first intervention (cold restart)
    or the end of the replay: the level a stuck system stays at, about 0 for
    one that recovered. Works on a `SimulationTrajectory` or a
    `retrystorm.fluid.FluidTrajectory`. Unlike the peak, it does not pick the
    largest random excursion of a fluctuating stuck state.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> from retrystorm.fluid import simulate_fluid
    >>> round(final_backlog(simulate_fluid(default_scenario())), -3)
    58000.0
    """
    time, queue = trajectory.time, trajectory.queue
    scenario = trajectory.scenario
    end = float(time[-1])
    intervention = scenario.first_intervention
    if intervention is not None:
        end = min(end, intervention)
    start = end - 2.0 * scenario.clients.timeout
    inside = (time > start + _ROUNDING) & (time <= end + _ROUNDING)
    if not inside.any():
        inside = time <= end + _ROUNDING
    return float(queue[inside].mean()) if inside.any() else float(queue[0])


# -- checks and set-up -------------------------------------------------------------


def _check_seed(seed: object) -> None:
    """Raise unless ``seed`` is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InvalidParameterError("seed", "must be a non-negative integer", seed)


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    """Return the generator to draw from: the one given, or one seeded."""
    if isinstance(seed, np.random.Generator):
        return seed
    _check_seed(seed)
    return np.random.default_rng(int(seed))


@dataclass(frozen=True)
class _Event:
    """One scenario event with its table as an index."""

    kind: str
    at: float
    duration: float
    table: int
    fraction: float


@dataclass(frozen=True)
class _Config:
    """The scenario flattened into the numbers the engine reads, already scaled."""

    scale: float
    rate_starts: tuple[float, ...]
    rate_values: tuple[float, ...]
    timeout: float
    max_retries: int
    retry_budget: float
    budget_capacity: float
    backoff: tuple[float, float, float]  # initial, multiplier, cap
    jitter: str
    bounded: bool
    pods: int
    concurrency_per_pod: float
    crash_after: float
    crash_failure_share: float
    probe_timeout: float  # inf: the health checks do not use the database
    restart_delay: float
    init_queries: float
    breaker: tuple[float, float, float] | None  # threshold, open s, probe share
    pool_size: int
    queue_timeout: float
    queue_limit: float
    cancel_abandoned: bool
    service_time: float
    contention: float
    table_shares: tuple[float, ...]
    events: tuple[_Event, ...]


def _config(scenario: Scenario, scale: float) -> _Config:
    """Flatten and scale ``scenario`` (module docstring, "Scaled-down replicas")."""
    clients, web, proxy = scenario.clients, scenario.web, scenario.proxy
    profile = clients.rate_profile or ((0.0, float(clients.request_rate or 0.0)),)
    breaker = web.circuit_breaker
    return _Config(
        scale=scale,
        rate_starts=tuple(float(start) for start, _ in profile),
        rate_values=tuple(float(rate) * scale for _, rate in profile),
        timeout=clients.timeout,
        max_retries=clients.max_retries,
        retry_budget=clients.retry_budget,
        budget_capacity=max(
            1.0,
            clients.retry_budget * clients.peak_request_rate * scale * _BUDGET_WINDOW,
        ),
        backoff=(
            clients.backoff.initial,
            clients.backoff.multiplier,
            clients.backoff.cap,
        ),
        jitter=clients.backoff.jitter,
        bounded=web.mode == "bounded",
        pods=web.pods,
        concurrency_per_pod=float(web.concurrency_per_pod or 0) * scale,
        crash_after=web.crash_after if web.crash_after is not None else math.inf,
        crash_failure_share=web.crash_failure_share,
        probe_timeout=(
            web.probe_timeout if web.probe_timeout is not None else math.inf
        ),
        restart_delay=web.restart_delay,
        init_queries=web.init_queries * scale,
        breaker=(
            (breaker.failure_threshold, breaker.open_duration, breaker.probe_share)
            if breaker is not None
            else None
        ),
        pool_size=_scaled_pool(scenario, scale),
        queue_timeout=proxy.queue_timeout,
        queue_limit=proxy.queue_limit * scale,
        cancel_abandoned=proxy.cancel_abandoned,
        service_time=scenario.database.service_time,
        contention=scenario.database.contention,
        table_shares=tuple(table.share for table in scenario.database.tables),
        events=_events(scenario),
    )


def _scaled_pool(scenario: Scenario, scale: float) -> int:
    """Return the replica's pool: ``pool_size * scale`` rounded, at least one.

    Warns when the pool, or the pool during a capacity event, is not a whole
    number of connections in the replica.
    """
    pool_size = scenario.proxy.pool_size
    exact = pool_size * scale
    pool = _whole(exact)
    if pool < 1:
        rule = (
            f"must leave at least one connection (pool_size {pool_size} * scale < 0.5)"
        )
        raise InvalidParameterError("scale", rule, scale)
    _warn_unless_whole(exact, f"the replica's pool has {pool} connections")
    for event in scenario.events:
        if event.kind == "capacity":
            during = pool * event.fraction
            message = (
                f"a capacity event leaves the replica {_whole(during)} connections"
            )
            _warn_unless_whole(during, message)
    return pool


def _whole(connections: float) -> int:
    """Return ``connections`` rounded to the nearest whole number (halves up)."""
    return math.floor(connections + 0.5)


def _warn_unless_whole(exact: float, message: str) -> None:
    """Warn that a replica's connections differ from the scaled ones."""
    if abs(_whole(exact) - exact) > _ROUNDING * max(1.0, exact):
        warnings.warn(
            f"{message} for {exact:.6g} scaled: its capacity is not exactly scale "
            "times the full system's",
            RuntimeWarning,
            stacklevel=5,
        )


def _events(scenario: Scenario) -> tuple[_Event, ...]:
    """Return the scenario's events with lock tables as indices."""
    tables = [table.name for table in scenario.database.tables]
    return tuple(
        _Event(
            kind=event.kind,
            at=event.at,
            duration=event.duration,
            table=tables.index(event.table) if event.kind == "lock" else -1,
            fraction=getattr(event, "fraction", 0.0),
        )
        for event in scenario.events
    )


# -- the engine ------------------------------------------------------------------

_QUEUED, _SERVING, _LOCKED, _DONE = 0, 1, 2, 3
_BLOCK = 4096  # random numbers drawn per numpy call


class _Random:
    """Buffered draws from one numpy Generator: one numpy call per block."""

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator = generator
        self._exponentials: list[float] = []
        self._uniforms: list[float] = []

    def exponential(self) -> float:
        """Return a standard exponential draw (mean 1)."""
        try:
            return self._exponentials.pop()
        except IndexError:
            self._exponentials = self.generator.standard_exponential(_BLOCK).tolist()
            return self._exponentials.pop()

    def uniform(self) -> float:
        """Return a uniform draw on [0, 1)."""
        try:
            return self._uniforms.pop()
        except IndexError:
            self._uniforms = self.generator.random(_BLOCK).tolist()
            return self._uniforms.pop()


class _Attempt:
    """One connection request: a client's attempt, or a pod's init query."""

    __slots__ = ("epoch", "init", "joined", "live", "number", "pod", "sent", "where")

    def __init__(self, number: int, sent: float) -> None:
        self.number = number  # attempt index k (0: first try); -1: init query
        self.init = number < 0
        self.sent = sent
        self.joined = sent
        self.live = False  # True while a client waits for this attempt
        self.pod = -1
        self.where = _DONE
        self.epoch = 0  # the proxy's epoch when it got a connection


class _Engine:
    """The system's state and the callbacks that change it, on a SimPy heap.

    Every change happens in a callback of a SimPy timeout; no SimPy process is
    used, so a request costs a few heap entries and no generator frames.
    """

    def __init__(self, config: _Config, generator: np.random.Generator) -> None:
        self.config = config
        self.env = simpy.Environment()
        self.random = _Random(generator)
        self.generator = generator
        self._init_proxy(config)
        self._init_clients(config)
        self._init_pods(config)
        self._init_counters()

    # -- state -------------------------------------------------------------

    def _init_proxy(self, config: _Config) -> None:
        self.queue: deque[_Attempt] = deque()
        self.waiting = 0
        self.busy = 0
        self.client_in_proxy = 0  # client attempts waiting for or holding a connection
        self.pool = config.pool_size
        self.queue_timer = False
        self.epoch = 0  # bumped by a cold restart: older connections are gone
        self.active: list[_Attempt] = []  # in service and not locked (contention)
        self.pool_version = 0
        self.parked: list[list[_Attempt]] = [[] for _ in config.table_shares]
        self.lock_depth = [0] * len(config.table_shares)
        self.locked_share = 0.0
        self.capacity_fractions: list[float] = []
        self.shed_fractions: list[float] = []

    def _init_clients(self, config: _Config) -> None:
        self.pending: deque[_Attempt] = deque()  # live attempts, in send order
        self.client_timer = False
        self.orbit = 0
        self.tokens = config.budget_capacity
        self.rate_index = 0

    def _init_pods(self, config: _Config) -> None:
        self.up = [True] * config.pods
        self.up_list = list(range(config.pods))
        self.pod_epoch = [0] * config.pods
        self.members: list[dict[_Attempt, None]] = [{} for _ in range(config.pods)]
        self.round_robin = 0
        self.cold = False
        self.window: deque[tuple[int, int]] = deque()
        self.window_failed = 0
        self.window_granted = 0
        self.tick_failed = 0
        self.tick_granted = 0
        self.share = 0.0
        self.breaker = "closed"
        self.breaker_until = 0.0

    def _init_counters(self) -> None:
        self.live_count = 0
        self.failures = 0
        self.locked = 0
        self.fresh = 0
        self.attempts = 0
        self.retries = 0
        self.init_queries = 0
        self.completed = 0
        self.good = 0
        self.wasted = 0
        self.init_completed = 0
        self.queue_timeouts = 0
        self.rejected = 0
        self.dropped = 0
        self.client_timeouts = 0
        self.pod_errors = 0
        self.gave_up = 0
        self.budget_denied = 0
        self.crashes = 0

    # -- scheduling --------------------------------------------------------

    def _after(
        self,
        delay: float,
        callback: Callable[[simpy.Event], None],
        value: object = None,
    ) -> None:
        """Call ``callback(event)`` ``delay`` seconds from now."""
        simpy.events.Timeout(self.env, delay, value).callbacks.append(callback)

    def start(self) -> None:
        """Schedule the first arrival, the scenario's events and the pod ticks."""
        self._next_fresh()
        for event in self.config.events:
            self._after(event.at, self._on_event, event)
        if self.config.crash_after < math.inf or self.config.breaker is not None:
            self._after(_TICK, self._on_tick)

    # -- clients -----------------------------------------------------------

    def _next_fresh(self) -> None:
        """Draw the next fresh arrival of the piecewise-constant Poisson stream."""
        config, now = self.config, self.env.now
        starts = config.rate_starts
        while self.rate_index + 1 < len(starts) and starts[self.rate_index + 1] <= now:
            self.rate_index += 1
        rate = config.rate_values[self.rate_index]
        following = (
            starts[self.rate_index + 1]
            if self.rate_index + 1 < len(starts)
            else math.inf
        )
        delay = self.random.exponential() / rate if rate > 0.0 else math.inf
        if now + delay < following:
            self._after(delay, self._on_fresh)
        elif following < math.inf:
            # Memoryless: at a change of rate the next gap is drawn afresh.
            self._after(following - now, self._on_rate_change)

    def _on_rate_change(self, _event: simpy.Event) -> None:
        self._next_fresh()

    def _on_fresh(self, _event: simpy.Event) -> None:
        self.fresh += 1
        config = self.config
        if config.retry_budget < math.inf:
            self.tokens = min(config.budget_capacity, self.tokens + config.retry_budget)
        self._send(0)
        self._next_fresh()

    def _on_retry(self, event: simpy.Event) -> None:
        self.orbit -= 1
        self.retries += 1
        self._send(cast(int, event.value))

    def _send(self, number: int) -> None:
        """Send attempt ``number`` of a request through the edge to a pod."""
        self.attempts += 1
        if not self._admitted():
            self.rejected += 1
            self._client_failed(number)
            return
        attempt = _Attempt(number, self.env.now)
        pod = self.up_list[self.round_robin % len(self.up_list)]
        self.round_robin += 1
        attempt.pod = pod
        attempt.live = True
        self.live_count += 1
        self.members[pod][attempt] = None
        self.pending.append(attempt)
        if not self.client_timer:
            self._arm_client_timer(attempt)
        self.client_in_proxy += 1
        self._connect(attempt)

    def _admitted(self) -> bool:
        """Whether the edge lets an attempt through (else a fast error)."""
        config = self.config
        pods_up = len(self.up_list)
        if pods_up == 0:
            return False
        if self.shed_fractions and self.random.uniform() < max(self.shed_fractions):
            return False
        if self.breaker != "closed" and not self._breaker_admits():
            return False
        cap = config.concurrency_per_pod * pods_up
        return not (config.bounded and self.client_in_proxy + 1 > cap)

    def _client_failed(self, number: int) -> None:
        """Retry a failed attempt ``number`` after its backoff, or give up."""
        config = self.config
        self.failures += 1
        if number >= config.max_retries:
            self.gave_up += 1
            return
        if config.retry_budget < math.inf:
            if self.tokens < 1.0:
                self.budget_denied += 1
                self.gave_up += 1
                return
            self.tokens -= 1.0
        self.orbit += 1
        self._after(self._backoff(number + 1), self._on_retry, number + 1)

    def _backoff(self, retry: int) -> float:
        """Delay before retry ``retry`` (1 = the first retry), with jitter."""
        config = self.config
        initial, multiplier, cap = config.backoff
        delay = min(cap, initial * multiplier ** (retry - 1))
        if config.jitter == "full":
            return delay * self.random.uniform()
        if config.jitter == "equal":
            return delay * (0.5 + 0.5 * self.random.uniform())
        return delay

    def _arm_client_timer(self, attempt: _Attempt) -> None:
        self.client_timer = True
        delay = max(0.0, attempt.sent + self.config.timeout - self.env.now)
        self._after(delay, self._on_client_timer)

    def _on_client_timer(self, _event: simpy.Event) -> None:
        # Every client waits the same time, so deadlines come in send order
        # and one timer, re-armed for the oldest live attempt, serves them all.
        self.client_timer = False
        pending = self.pending
        limit = self.env.now - self.config.timeout + _ROUNDING
        while pending:
            attempt = pending[0]
            if not attempt.live:
                pending.popleft()
            elif attempt.sent > limit:
                self._arm_client_timer(attempt)
                return
            else:
                pending.popleft()
                self._client_gives_up(attempt)

    def _client_gives_up(self, attempt: _Attempt) -> None:
        attempt.live = False
        self.live_count -= 1
        self.client_timeouts += 1
        self.members[attempt.pod].pop(attempt, None)
        if self.config.cancel_abandoned and attempt.where == _QUEUED:
            self._drop(attempt)
        self._client_failed(attempt.number)

    # -- proxy and database ------------------------------------------------

    def _connect(self, attempt: _Attempt) -> None:
        """Ask the proxy for a connection: serve, queue, or reject."""
        if self.busy < self.pool and self.waiting == 0:
            self._start(attempt)
            return
        if self.waiting + 1 > self.config.queue_limit:
            self.rejected += 1
            self.tick_failed += 1
            self._leave_proxy(attempt)
            self._proxy_error(attempt)
            return
        attempt.where = _QUEUED
        attempt.joined = self.env.now
        self.queue.append(attempt)
        self.waiting += 1
        if not self.queue_timer:
            self._arm_queue_timer(attempt)

    def _leave_proxy(self, attempt: _Attempt) -> None:
        attempt.where = _DONE
        if not attempt.init:
            self.client_in_proxy -= 1

    def _proxy_error(self, attempt: _Attempt) -> None:
        """Pass a proxy error to the waiting client (if any), which retries."""
        self.members[attempt.pod].pop(attempt, None)
        if attempt.live:
            attempt.live = False
            self.live_count -= 1
            self._client_failed(attempt.number)

    def _arm_queue_timer(self, attempt: _Attempt) -> None:
        self.queue_timer = True
        delay = max(0.0, attempt.joined + self.config.queue_timeout - self.env.now)
        self._after(delay, self._on_queue_timer)

    def _on_queue_timer(self, _event: simpy.Event) -> None:
        # FIFO with one queueing timeout: the oldest waiter times out first,
        # so one timer, re-armed for the head of the queue, serves them all.
        self.queue_timer = False
        queue = self.queue
        limit = self.env.now - self.config.queue_timeout + _ROUNDING
        while queue:
            attempt = queue[0]
            if attempt.where != _QUEUED:
                queue.popleft()
            elif attempt.joined > limit:
                self._arm_queue_timer(attempt)
                return
            else:
                queue.popleft()
                self.waiting -= 1
                self.queue_timeouts += 1
                self.tick_failed += 1
                self._leave_proxy(attempt)
                self._proxy_error(attempt)

    def _drop(self, attempt: _Attempt) -> None:
        """Remove a waiting request from the queue (its client or pod is gone)."""
        self.waiting -= 1
        self.dropped += 1
        self._leave_proxy(attempt)

    def _serve_queue(self) -> None:
        """Give every free connection to the oldest waiting request."""
        queue = self.queue
        while self.waiting and self.busy < self.pool:
            attempt = queue.popleft()
            if attempt.where == _QUEUED:
                self.waiting -= 1
                self._start(attempt)

    def _start(self, attempt: _Attempt) -> None:
        """Give ``attempt`` a connection; a query on a locked table holds it."""
        self.busy += 1
        self.tick_granted += 1
        attempt.epoch = self.epoch
        if self.locked_share > 0.0:
            draw = self.random.uniform()
            if draw < self.locked_share:
                self._park(attempt, draw)
                return
        self._serve(attempt)

    def _park(self, attempt: _Attempt, draw: float) -> None:
        """Hold ``attempt`` on its connection until its table's lock ends."""
        table = -1
        for index, share in enumerate(self.config.table_shares):
            if self.lock_depth[index] > 0:
                table = index
                if draw < share:
                    break
                draw -= share
        attempt.where = _LOCKED
        self.locked += 1
        self.parked[table].append(attempt)
        if self.config.contention > 0.0:
            self._reschedule_pool()

    def _serve(self, attempt: _Attempt) -> None:
        """Begin (or resume, memoryless) the exponential service of ``attempt``."""
        attempt.where = _SERVING
        if self.config.contention > 0.0:
            self.active.append(attempt)
            self._reschedule_pool()
        else:
            duration = self.random.exponential() * self.config.service_time
            self._after(duration, self._on_complete, attempt)

    def _on_complete(self, event: simpy.Event) -> None:
        attempt = cast(_Attempt, event.value)
        if attempt.where == _SERVING and attempt.epoch == self.epoch:
            self._finish(attempt)

    def _reschedule_pool(self) -> None:
        # With contention every connection's rate depends on the busy count:
        # the next completion among the n active requests is exponential with
        # rate n * rate(busy), redrawn at each change (memoryless), and the
        # request that completes is uniform among the active ones.
        self.pool_version += 1
        active = len(self.active)
        if active:
            config = self.config
            load = max(1.0, 1.0 + config.contention * (self.busy / config.scale - 1.0))
            rate = active / (config.service_time * load)
            delay = self.random.exponential() / rate
            self._after(delay, self._on_pool_complete, self.pool_version)

    def _on_pool_complete(self, event: simpy.Event) -> None:
        if event.value != self.pool_version:
            return
        active = self.active
        index = min(int(self.random.uniform() * len(active)), len(active) - 1)
        attempt = active[index]
        last = active.pop()
        if last is not attempt:
            active[index] = last
        self._finish(attempt)
        self._reschedule_pool()

    def _finish(self, attempt: _Attempt) -> None:
        """Complete ``attempt``: goodput if its client still waits, else waste."""
        self.busy -= 1
        self.completed += 1
        self._leave_proxy(attempt)
        if attempt.init:
            self.init_completed += 1
            self.members[attempt.pod].pop(attempt, None)
        elif attempt.live:
            attempt.live = False
            self.live_count -= 1
            self.good += 1
            self.members[attempt.pod].pop(attempt, None)
        else:
            self.wasted += 1
        self._serve_queue()

    # -- pods --------------------------------------------------------------

    def _pod_down(self, pod: int) -> None:
        """Take ``pod`` down: its waiting clients get an error at once."""
        self.up[pod] = False
        self.pod_epoch[pod] += 1
        self.up_list.remove(pod)
        members, self.members[pod] = self.members[pod], {}
        cancel = self.config.cancel_abandoned
        for attempt in members:
            if cancel and attempt.where == _QUEUED:
                self._drop(attempt)
            if attempt.live:
                attempt.live = False
                self.live_count -= 1
                self.pod_errors += 1
                self._client_failed(attempt.number)

    def _pod_start(self, pod: int) -> None:
        """Bring ``pod`` up; its init queries join the connection queue."""
        if self.up[pod]:
            return
        self.up[pod] = True
        self.up_list.append(pod)
        mean = self.config.init_queries
        count = int(mean) + (self.random.uniform() < mean - int(mean))
        for _ in range(count):
            attempt = _Attempt(-1, self.env.now)
            attempt.pod = pod
            self.members[pod][attempt] = None
            self.init_queries += 1
            self._connect(attempt)

    def _restart_later(self, pod: int) -> None:
        self._after(
            self.config.restart_delay, self._on_restart, (pod, self.pod_epoch[pod])
        )

    def _on_restart(self, event: simpy.Event) -> None:
        pod, epoch = cast(tuple[int, int], event.value)
        if self.pod_epoch[pod] == epoch and not self.cold:
            self._pod_start(pod)

    def _on_tick(self, _event: simpy.Event) -> None:
        # The share of failed connection requests over a trailing window,
        # tier-wide: the balancer spreads attempts evenly, so every pod sees
        # the same share and a per-pod count would only add noise.
        self.window.append((self.tick_failed, self.tick_granted))
        self.window_failed += self.tick_failed
        self.window_granted += self.tick_granted
        self.tick_failed = self.tick_granted = 0
        if len(self.window) > _WINDOW_TICKS:
            failed, granted = self.window.popleft()
            self.window_failed -= failed
            self.window_granted -= granted
        total = self.window_failed + self.window_granted
        share = self.window_failed / total if total else 0.0
        self.share = share
        self._crash_pods(share)
        if self.config.breaker is not None:
            self._update_breaker(share, total)
        self._after(_TICK, self._on_tick)

    def _crash_pods(self, share: float) -> None:
        # Each up pod crashes at rate 1/crash_after while a crash rule holds
        # (memoryless: a Bernoulli draw per pod and tick).
        config = self.config
        if not self.up_list:
            return
        failing = share > config.crash_failure_share
        if not failing and self._head_wait() <= config.probe_timeout:
            return
        probability = -math.expm1(-_TICK / config.crash_after)
        count = int(self.generator.binomial(len(self.up_list), probability))
        if count == 0:
            return
        chosen = self.generator.choice(len(self.up_list), size=count, replace=False)
        for pod in [self.up_list[i] for i in sorted(chosen.tolist())]:
            self.crashes += 1
            self._pod_down(pod)
            self._restart_later(pod)

    def _update_breaker(self, share: float, total: int) -> None:
        threshold, open_duration, _ = self.config.breaker or (1.0, 0.0, 1.0)
        now = self.env.now
        if self.breaker == "closed" and share > threshold:
            self.breaker, self.breaker_until = "open", now + open_duration
        elif self.breaker == "open" and now >= self.breaker_until - _ROUNDING:
            self.breaker = "half_open"
        elif self.breaker == "half_open" and total:
            if share > threshold:
                self.breaker, self.breaker_until = "open", now + open_duration
            else:
                self.breaker = "closed"

    def _breaker_admits(self) -> bool:
        if self.breaker == "open":
            return False
        _, _, probe_share = self.config.breaker or (1.0, 0.0, 1.0)
        return self.random.uniform() < probe_share

    # -- scenario events ---------------------------------------------------

    def _on_event(self, event: simpy.Event) -> None:
        spec = cast(_Event, event.value)
        if spec.kind == "lock":
            self._set_lock(spec.table, +1)
        elif spec.kind == "capacity":
            self.capacity_fractions.append(spec.fraction)
            self._resize_pool()
        elif spec.kind == "shed":
            self.shed_fractions.append(spec.fraction)
        elif spec.kind == "rollback":
            pods = self.config.pods
            for pod in range(pods):
                self._after(pod * spec.duration / pods, self._on_rollback, pod)
        elif spec.kind == "cold_restart":
            self._cold_stop()
        self._after(spec.duration, self._on_event_end, spec)

    def _on_event_end(self, event: simpy.Event) -> None:
        spec = cast(_Event, event.value)
        if spec.kind == "lock":
            self._set_lock(spec.table, -1)
        elif spec.kind == "capacity":
            self.capacity_fractions.remove(spec.fraction)
            self._resize_pool()
        elif spec.kind == "shed":
            self.shed_fractions.remove(spec.fraction)
        elif spec.kind == "cold_restart":
            self.cold = False
            for pod in range(self.config.pods):
                self._pod_start(pod)

    def _set_lock(self, table: int, change: int) -> None:
        self.lock_depth[table] += change
        shares = self.config.table_shares
        self.locked_share = sum(
            s for s, d in zip(shares, self.lock_depth, strict=True) if d
        )
        if self.lock_depth[table] == 0:
            parked, self.parked[table] = self.parked[table], []
            for attempt in parked:
                if attempt.where == _LOCKED and attempt.epoch == self.epoch:
                    self.locked -= 1
                    self._serve(attempt)

    def _resize_pool(self) -> None:
        fraction = min(self.capacity_fractions, default=1.0)
        self.pool = _whole(self.config.pool_size * fraction)
        self._serve_queue()

    def _on_rollback(self, event: simpy.Event) -> None:
        pod = cast(int, event.value)
        if self.up[pod] and not self.cold:
            self._pod_down(pod)
            self._restart_later(pod)

    def _cold_stop(self) -> None:
        """Stop everything: the proxy and database emptied, every pod down."""
        self.cold = True
        for attempt in self.queue:
            if attempt.where == _QUEUED:
                attempt.where = _DONE
        self.dropped += self.waiting + self.busy
        self.queue = deque()
        self.waiting = self.busy = self.client_in_proxy = 0
        self.epoch += 1
        self.active = []
        self.pool_version += 1
        self.parked = [[] for _ in self.parked]
        self.locked = 0
        for pod in range(self.config.pods):
            if self.up[pod]:
                self._pod_down(pod)
            else:
                self.pod_epoch[pod] += 1

    # -- observation -------------------------------------------------------

    def _head_wait(self) -> float:
        """Return the age (s) of the oldest waiting request; 0 with no queue."""
        queue = self.queue
        while queue and queue[0].where != _QUEUED:
            queue.popleft()
        return self.env.now - queue[0].joined if queue else 0.0

    def snapshot(self) -> tuple[float, ...]:
        """Return the state and every cumulative counter, in `_COLUMNS` order."""
        head_wait = self._head_wait()
        config = self.config
        load = max(1.0, 1.0 + config.contention * (self.pool / config.scale - 1.0))
        return (
            self.waiting, self.busy, self.locked, self.orbit, len(self.up_list),
            head_wait, self.share, float(self.breaker == "open"),
            self.pool / (config.service_time * load), self.live_count,
            self.fresh, self.attempts, self.retries, self.init_queries,
            self.completed, self.good, self.wasted, self.init_completed,
            self.queue_timeouts, self.rejected, self.dropped, self.client_timeouts,
            self.pod_errors, self.gave_up, self.budget_denied, self.crashes,
            self.failures,
        )  # fmt: skip


_COLUMNS = (
    "queue", "in_service", "locked", "orbit", "pods_up",
    "head_wait", "failure_share", "breaker_open",
    "capacity", "live",
    "fresh", "attempts", "retries", "init_queries",
    "completed", "good", "wasted", "init_completed",
    "queue_timeouts", "rejected", "dropped", "client_timeouts",
    "pod_errors", "gave_up", "budget_denied", "crashes",
    "failures",
)  # fmt: skip
_WINDOW_TICKS = round(FAILURE_WINDOW / _TICK)


# -- running and recording -----------------------------------------------------------


def _run(
    config: _Config, generator: np.random.Generator, interval: float, samples: int
) -> NDArray[np.float64]:
    """Run the engine and return one row of `_COLUMNS` per sample."""
    engine = _Engine(config, generator)
    engine.start()
    rows = []
    for index in range(1, samples + 1):
        engine.env.run(until=index * interval)
        rows.append(engine.snapshot())
    return np.asarray(rows, dtype=np.float64)


def _trajectory(
    scenario: Scenario, config: _Config, rows: NDArray[np.float64], interval: float
) -> SimulationTrajectory:
    """Assemble the sampled rows into a `SimulationTrajectory`."""
    column = {name: rows[:, index] for index, name in enumerate(_COLUMNS)}

    def rate(name: str) -> NDArray[np.float64]:
        return np.diff(column[name], prepend=0.0) / interval

    offered = column["attempts"] + column["init_queries"]
    return SimulationTrajectory(
        scenario=scenario,
        scale=config.scale,
        time=np.arange(1, len(rows) + 1, dtype=np.float64) * interval,
        queue=column["queue"],
        in_service=column["in_service"],
        locked=column["locked"],
        orbit=column["orbit"],
        pods_up=column["pods_up"],
        head_wait=column["head_wait"],
        fresh_rate=rate("fresh"),
        attempt_rate=rate("attempts"),
        retry_rate=rate("retries"),
        throughput=rate("completed"),
        goodput=rate("good"),
        wasted_rate=rate("wasted"),
        init_rate=rate("init_completed"),
        queue_timeout_rate=rate("queue_timeouts"),
        rejected_rate=rate("rejected"),
        dropped_rate=rate("dropped"),
        client_timeout_rate=rate("client_timeouts"),
        failed_request_rate=rate("gave_up"),
        failure_rate=rate("failures"),
        failure_share=column["failure_share"],
        capacity=column["capacity"],
        breaker_open=column["breaker_open"] > 0.5,
        live=column["live"],
        cum_offered=offered,
        cum_completed=column["completed"],
        cum_timed_out=column["queue_timeouts"],
        cum_rejected=column["rejected"],
        cum_dropped=column["dropped"],
        cum_fresh=column["fresh"],
        cum_succeeded=column["good"],
        cum_failed_requests=column["gave_up"],
        cum_attempts=column["attempts"],
        cum_retries=column["retries"],
        cum_init_queries=column["init_queries"],
        cum_wasted=column["wasted"],
        cum_client_timeouts=column["client_timeouts"],
        cum_pod_errors=column["pod_errors"],
        cum_budget_denied=column["budget_denied"],
        cum_crashes=column["crashes"],
    )


def _peak_before(run: SimulationTrajectory, moment: float | None) -> float:
    """Return the largest queue of the samples before ``moment`` (all if None)."""
    if moment is None or moment <= run.time[0]:
        return run.peak_queue
    return float(run.queue[run.time <= moment + _ROUNDING].max())


def _verdict(recovery_time: float | None) -> str:
    """``stable`` (good when the trigger ends), ``recovers`` or ``metastable``."""
    if recovery_time is None:
        return "metastable"
    return "stable" if recovery_time == 0.0 else "recovers"


def _estimate(values: list[float]) -> Estimate:
    """Mean and t-based 95 % half-width of ``values``."""
    count = len(values)
    mean = float(np.mean(values))
    if count < 2:
        return Estimate(mean=mean, half_width=math.inf, count=count)
    spread = float(np.std(values, ddof=1))
    quantile = float(stats.t.ppf(0.5 + _CONFIDENCE / 2.0, count - 1))
    return Estimate(
        mean=mean, half_width=quantile * spread / math.sqrt(count), count=count
    )


def _summary(
    scenario: Scenario, scale: float, runs: list[SimulationTrajectory]
) -> ReplicationSummary:
    """Summarise replications: peaks, goodput per phase, recovery, verdicts."""
    intervention = scenario.first_intervention
    peaks = [_peak_before(run, intervention) for run in runs]
    finals = [final_backlog(run) for run in runs]
    recoveries = [run.recovery_time() for run in runs]
    phases = [goodput_by_phase(run) for run in runs]
    recovered = [value for value in recoveries if value is not None]
    verdicts = dict.fromkeys(_VERDICTS, 0)
    for value in recoveries:
        verdicts[_verdict(value)] += 1
    return ReplicationSummary(
        scenario=scenario,
        scale=scale,
        replications=len(runs),
        peak_queue=_estimate(peaks),
        goodput={name: _estimate([p[name] for p in phases]) for name in phases[0]},
        recovery_time=_estimate(recovered) if recovered else None,
        verdicts=verdicts,
        peak_queues=tuple(peaks),
        recovery_times=tuple(recoveries),
        final_backlog=_estimate(finals),
        final_backlogs=tuple(finals),
    )
