"""Design limits of a scenario: the settings that keep its queues bounded.

A design review asks for numbers: which proxy queueing timeout, which cap on
concurrent requests, how many retries, how many connections, how long a
migration may lock a table. `compute_limits` answers each for a scenario, with
the reason the limit holds, the assumption it rests on, the model that
produced it and its numerical tolerance, and says whether the scenario's
current setting lies inside it.

Notation: fresh demand ``lambda`` (the peak request rate, per s), ``c``
connections, ``mu`` the per-connection service rate with the pool full
(contention included; the slowest, so every limit below errs on the safe
side), ``kappa = c mu``, client timeout ``T_c``, queueing timeout ``T_q``,
``R`` retries, tolerance ``epsilon`` and ``s_eps = log(1/epsilon)/mu`` the
service time exceeded with probability ``epsilon`` (`service_quantile`).

The limits
----------
``queue_timeout_max``
    Largest ``T_q`` for which a request that waited the whole timeout still
    completes before its client gives up, with probability ``1 - epsilon``:
    ``T_q + s_eps <= T_c``, so ``T_q = T_c - s_eps`` (`largest_queue_timeout`).
    Then no work is wasted, and without pod crashes no bad equilibrium exists
    [Bronson2021] (crashing pods can still sustain one: see the lock limit).
``queue_timeout_min``
    Smallest ``T_q`` with ``P(time out in the queue) <= epsilon`` at normal
    load: the exact M/M/c+D abandonment probability (`retrystorm.MMcD`),
    decreasing in ``T_q`` from Erlang B, root-found by Brent's method on
    ``log T_q``.
``queue_limit_max``, ``queue_limit_min``
    Most waiting requests ``K`` whose full queue drains in time:
    ``K / kappa + s_eps <= T_c`` (`largest_queue_limit`); fewest with blocking
    at most ``epsilon`` in M/M/c/K at normal load (`retrystorm.MMcK`,
    integer search).
``concurrency_per_pod_max``, ``concurrency_per_pod_min``
    The same window as a cap of a bounded web tier of ``P`` pods, which holds
    at most ``N = P m`` attempts waiting or served: ``m <= (c + K_max) / P``;
    and ``N`` at least the fewest with blocking at most ``epsilon`` (Erlang B
    with ``N`` servers below the pool size, ``c + K_min`` from it on).
``max_retries``, ``max_retry_budget``
    No self-sustaining bad state even when every attempt fails:
    ``lambda N(1) + I < kappa`` with ``N(1) = min(R + 1, 1 + b)``
    (`retrystorm.equilibria.bad_equilibrium_exists`) and ``I`` the init
    queries of pods that crash as fast as they can (`restart_query_rate`):
    ``R = ceil((kappa - I)/lambda) - 2`` (`largest_retry_count`) and any
    ``b < (kappa - I)/lambda - 1`` (`largest_retry_budget`).
``min_connections``
    Fewest connections with ``P(wait > t_w) <= epsilon`` at normal load in
    M/M/c (`retrystorm.MMc`), ``t_w`` a tenth of the client timeout unless
    given.
``max_connections``, ``max_useful_connections``
    The database's connection limit (``database.max_connections``; None when
    the scenario does not state it), and with contention the pool size beyond
    which one more connection adds at most ``epsilon / service_time`` of
    throughput (`useful_pool_size`).
``max_lock_duration``, ``max_capacity_drop``, ``max_request_rate_for_trigger``
    The longest lock, the deepest capacity drop of a given length and the
    highest demand after which the system still returns to the good state by
    itself: the review's verdict is ``stable`` or ``recovers``. Infinite (the
    whole pool for a drop) when no stable bad equilibrium exists
    (`retrystorm.equilibria.find_equilibria`); otherwise bisection over fluid
    replays (`retrystorm.fluid.simulate_fluid`), which assumes the verdict is
    monotone in the varied quantity.
``client_timeout_min``, ``client_timeout_min_ordering``
    A client timeout from a latency percentile of the path below: the
    ``percentile`` quantile of the M/M/c response time (`response_time_quantile`);
    and the ordering a client timeout must keep with the proxy:
    ``T_c >= w_max + s_eps``, ``w_max`` the longest wait the proxy or the tier
    allows.

References
----------
[Bronson2021], [Huang2022] (wasted work sustains a metastable state);
[SREBook2016] (retry budgets); [Brooker2019] (timeouts from percentiles);
[GrossHarris2008] (M/M/c response time); [BaccelliHebuterne1981],
[Zeltyn2004] (M/M/c+D); [Whitt2006], [LiuWhitt2012] (the fluid model).

Examples
--------
>>> from retrystorm.scenario import default_scenario
>>> incident = default_scenario()
>>> limits = compute_limits(incident, replays=False)
>>> limits.queue_timeout_max.inside  # the 120 s proxy timeout
False
>>> remedied = compute_limits(incident.variant("proxy-timeout-30s"), replays=False)
>>> remedied.queue_timeout_max.inside, remedied.queue_timeout_min.inside
(True, True)
>>> limits.max_connections.reason
'not stated (database.max_connections)'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq

from retrystorm._search import smallest_whole
from retrystorm._validation import (
    check_fraction,
    check_integer,
    check_nonnegative,
    check_positive,
)
from retrystorm.equilibria import (
    EquilibriumReport,
    bad_equilibrium_exists,
    boundary_wait,
    find_equilibria,
    on_time_share,
    settling_time,
)
from retrystorm.erlang import erlang_b, servers_for_blocking
from retrystorm.errors import InvalidParameterError
from retrystorm.fluid import (
    FluidTrajectory,
    saturated_service_rate,
    saturated_wait,
    simulate_fluid,
)
from retrystorm.mmc import MMc
from retrystorm.mmcd import MMcD
from retrystorm.mmck import MMcK
from retrystorm.scenario import Scenario

__all__ = [
    "LIMIT_NAMES",
    "Limit",
    "Limits",
    "compute_limits",
    "largest_queue_limit",
    "largest_queue_timeout",
    "largest_retry_budget",
    "largest_retry_count",
    "response_time_quantile",
    "response_time_tail",
    "restart_query_rate",
    "service_quantile",
    "survives_trigger",
    "useful_pool_size",
]

Progress = Callable[[str], None]
"""Called with a short label after each replay; the CLI draws a progress bar."""

_DEFAULT_LOCK_AT = 60.0  # s: a lock added to a scenario without one starts here
_DEFAULT_TRIGGER = 60.0  # s: its length, and the default length of a capacity drop
_ROOT_RTOL = 1e-10  # relative tolerance of Brent's method on log T_q
_SEARCH_CAP = 2**40  # most waiting requests or connections an integer search tries
_DRAIN_SHARE = 0.01  # a backlog whose low points fall by more is still draining
_EXACT_INTEGERS = 2**52  # floats hold every whole number up to here
_COUNT_UNITS = frozenset({"requests", "per pod", "retries", "connections"})
_SINGULAR = {"requests": "request", "retries": "retry", "connections": "connection"}


# -- closed forms (proved in proofs/limits.py) ---------------------------------------


def service_quantile(service_rate: float, tail: float) -> float:
    """Return the service time (s) exceeded with probability ``tail``.

    Parameters
    ----------
    service_rate
        ``mu``, services per second of one connection (> 0).
    tail
        ``epsilon`` in (0, 1).

    Returns
    -------
    float
        ``s_eps = log(1/epsilon) / mu``, the solution of ``exp(-mu s) = epsilon``.

    Examples
    --------
    >>> round(service_quantile(2.5, 1e-4), 6)
    3.684136
    """
    mu = check_positive("service_rate", service_rate)
    epsilon = check_fraction("tail", tail)
    return -math.log(epsilon) / mu


def largest_queue_timeout(
    client_timeout: float, service_rate: float, tail: float
) -> float | None:
    """Return the largest queueing timeout (s) that wastes no work.

    Parameters
    ----------
    client_timeout
        ``T_c``, the shortest timeout of the proxy's callers (s).
    service_rate
        ``mu`` per second.
    tail
        ``epsilon``: the accepted probability that a request served after the
        longest wait completes after its client gave up.

    Returns
    -------
    float or None
        ``T_c - s_eps``, the root of ``exp(-mu (T_c - T_q)) = epsilon``; None
        when it is not positive (the service time alone reaches the client
        timeout).

    Notes
    -----
    A request that waited ``T_q`` and then holds its connection for an
    exponential time is late with probability ``exp(-mu (T_c - T_q))``,
    increasing in ``T_q`` [Bronson2021]; theorem ``limits.queue_timeout``.

    Examples
    --------
    >>> round(largest_queue_timeout(40.0, 2.5, 1e-4), 4)
    36.3159
    """
    timeout = check_positive("client_timeout", client_timeout)
    largest = timeout - service_quantile(service_rate, tail)
    return largest if largest > 0.0 else None


def largest_queue_limit(
    client_timeout: float, service_rate: float, servers: int, tail: float
) -> int | None:
    """Return the most waiting requests whose full queue drains in time.

    Parameters
    ----------
    client_timeout
        ``T_c`` (s).
    service_rate
        ``mu`` per second.
    servers
        ``c`` connections.
    tail
        ``epsilon``.

    Returns
    -------
    int or None
        ``K = floor(c mu (T_c - s_eps))``, the largest whole ``K`` with
        ``K / (c mu) + s_eps <= T_c``; None when ``T_c <= s_eps``.

    Notes
    -----
    The last of ``K`` waiting requests gets a connection after the ``K``
    ahead of it completed, ``K / (c mu)`` seconds in the fluid view
    [Whitt2006]; theorem ``limits.queue_limit``.

    Examples
    --------
    >>> largest_queue_limit(40.0, 2.5, 100, 1e-4)
    9078
    """
    count = check_integer("servers", servers)
    mu = check_positive("service_rate", service_rate)
    room = check_positive("client_timeout", client_timeout) - service_quantile(mu, tail)
    if room < 0.0:
        return None
    return math.floor(count * mu * room)


def restart_query_rate(
    pods: int, init_queries: int, crash_after: float | None, restart_delay: float
) -> float:
    """Return the init queries per second of pods crashing as fast as they can.

    Parameters
    ----------
    pods
        ``P`` pods.
    init_queries
        ``n`` connection requests a starting pod makes.
    crash_after
        ``1/h``: seconds to crash while connection requests fail; None for
        pods that never crash.
    restart_delay
        ``D``, seconds a crashed pod is down.

    Returns
    -------
    float
        ``I = P n h / (1 + h D)``: a share ``1/(1 + h D)`` of the pods is up
        and each crashes at rate ``h``; ``I`` grows with ``h``, so this is the
        most any crash rate gives. 0 without crashes.

    Examples
    --------
    >>> restart_query_rate(20, 5, 30.0, 20.0)
    2.0
    """
    count = check_integer("pods", pods)
    queries = check_integer("init_queries", init_queries, minimum=0)
    delay = check_nonnegative("restart_delay", restart_delay)
    if crash_after is None:
        return 0.0
    rate = 1.0 / check_positive("crash_after", crash_after)
    return count * queries * rate / (1.0 + rate * delay)


def largest_retry_count(
    request_rate: float, capacity: float, init_rate: float = 0.0
) -> int | None:
    """Return the most retries for which no bad state exists when all attempts fail.

    Parameters
    ----------
    request_rate
        ``lambda``, fresh requests per second (> 0).
    capacity
        ``kappa = c mu``, completions per second of the full pool.
    init_rate
        ``I``, init queries per second (`restart_query_rate`).

    Returns
    -------
    int or None
        ``R = ceil((kappa - I)/lambda) - 2``, the largest whole ``R`` with
        ``(R + 1) lambda + I < kappa``; None when not even ``R = 0`` meets it.

    Notes
    -----
    When every attempt fails each request makes ``R + 1`` attempts; the
    saturated equilibrium exists iff they outrun the pool
    (`retrystorm.equilibria.bad_equilibrium_exists`) [Bronson2021];
    theorem ``limits.retries``.

    Examples
    --------
    >>> largest_retry_count(120.0, 250.0, 2.0)
    1
    >>> largest_retry_count(100.0, 250.0)
    1
    """
    rate = check_positive("request_rate", request_rate)
    room = check_positive("capacity", capacity) - check_nonnegative(
        "init_rate", init_rate
    )
    retries = math.ceil(room / rate) - 2
    # The quotient rounds: at a boundary within an ulp, settle the whole
    # number on the products themselves, as the condition states them.
    while (retries + 2) * rate < room:
        retries += 1
    while retries >= 0 and (retries + 1) * rate >= room:
        retries -= 1
    return retries if retries >= 0 else None


def largest_retry_budget(
    request_rate: float, capacity: float, init_rate: float = 0.0
) -> float | None:
    """Return the supremum of the retry budgets that leave no bad state.

    Parameters
    ----------
    request_rate
        ``lambda`` per second (> 0).
    capacity
        ``kappa`` per second.
    init_rate
        ``I`` per second.

    Returns
    -------
    float or None
        ``b* = (kappa - I)/lambda - 1``: every budget ``b < b*`` gives
        ``(1 + b) lambda + I < kappa`` for any number of retries; None when
        ``b* <= 0`` (the demand alone fills the pool).

    Notes
    -----
    A budget of ``b`` retries per fresh request caps the attempts per request
    at ``1 + b`` [SREBook2016]; theorem ``limits.retry_budget``.

    Examples
    --------
    >>> round(largest_retry_budget(120.0, 250.0), 6)
    1.083333
    """
    rate = check_positive("request_rate", request_rate)
    room = check_positive("capacity", capacity) - check_nonnegative(
        "init_rate", init_rate
    )
    budget = room / rate - 1.0
    return budget if budget > 0.0 else None


def useful_pool_size(service_time: float, contention: float, tail: float) -> float:
    """Return the pool size beyond which a connection adds no throughput to speak of.

    Parameters
    ----------
    service_time
        ``s``, mean seconds a request holds its connection (> 0).
    contention
        ``alpha >= 0`` (see `retrystorm.scenario.Database`).
    tail
        ``epsilon``: the smallest gain that counts, as a share of one
        connection's uncontended rate ``1/s``.

    Returns
    -------
    float
        The smallest ``c >= 1`` with ``kappa(c + 1) - kappa(c) <= epsilon / s``,
        ``kappa(c) = c / (s (1 + alpha (c - 1)))``; ``inf`` without contention.

    Notes
    -----
    ``kappa(c + 1) - kappa(c) = (1 - alpha) / (s (1 + alpha c)(1 + alpha (c -
    1)))``, decreasing in ``c``; with ``u = alpha c`` the threshold is the
    positive root of ``u^2 + (2 - alpha) u + (1 - alpha)(1 - 1/epsilon) = 0``
    (theorem ``limits.useful_connections``).

    Examples
    --------
    >>> useful_pool_size(0.4, 0.0, 1e-4)
    inf
    >>> useful_pool_size(0.4, 0.01, 1e-4)
    9851.0
    """
    check_positive("service_time", service_time)
    alpha = check_nonnegative("contention", contention)
    epsilon = check_fraction("tail", tail)
    if alpha == 0.0:
        return math.inf
    if alpha >= 1.0:
        return 1.0
    target = (1.0 - alpha) / epsilon
    # The positive root of u^2 + b u - q = 0, written without cancellation.
    slope, product = 2.0 - alpha, (1.0 - alpha) * (1.0 / epsilon - 1.0)
    root = 2.0 * product / (slope + math.sqrt(slope * slope + 4.0 * product))
    if root / alpha > _EXACT_INTEGERS:
        # Beyond the exact integers the ceiling is lost in rounding (or overflows).
        return float(root / alpha)
    size = max(1, math.ceil(root / alpha))
    # The ceiling of a rounded root may be one off: step to the exact threshold.
    for _ in range(4):
        if size > 1 and _gain_denominator(size - 1, alpha) >= target:
            size -= 1
        elif _gain_denominator(size, alpha) < target:
            size += 1
    return float(size)


def _gain_denominator(size: int, alpha: float) -> float:
    """Return ``(1 + alpha c)(1 + alpha (c - 1))``.

    One more connection adds ``(1 - alpha) / s`` over this to the throughput.
    """
    return (1.0 + alpha * size) * (1.0 + alpha * (size - 1))


def response_time_tail(queue: MMc, t: float) -> float:
    """Return ``P(wait + service > t)`` in a stable M/M/c queue.

    Parameters
    ----------
    queue
        The queue (stable).
    t
        Seconds (>= 0).

    Returns
    -------
    float
        ``(1 - C) e^(-mu t) + C (gamma e^(-mu t) - mu e^(-gamma t)) / (gamma -
        mu)`` with ``C`` the Erlang C probability and ``gamma = c mu -
        lambda``; at ``gamma = mu`` the second term is ``C (1 + mu t)
        e^(-mu t)``.

    Raises
    ------
    UnstableSystemError
        The queue has no steady state.

    Notes
    -----
    The wait is 0 with probability ``1 - C`` and otherwise Exp(``gamma``); the
    service is an independent Exp(``mu``); the tail of the sum of the two
    exponentials is the formula [GrossHarris2008] (Sec. 2.3, M/M/c waiting
    times). The second term is evaluated as ``e^(-mu t) (1 + mu t
    h((gamma - mu) t))`` with ``h(u) = (1 - e^-u)/u`` near ``gamma = mu``, so
    the case needs no special treatment (theorem ``limits.response_time``).

    Examples
    --------
    >>> q = MMc(arrival_rate=9.0, service_rate=5.0, servers=2)
    >>> round(response_time_tail(q, 1.0), 6)
    0.391639
    """
    time = check_nonnegative("t", t)
    queue.wait_tail(0.0)  # raises UnstableSystemError without a steady state
    mu, waiting = queue.service_rate, queue.wait_probability
    gap = queue.servers * mu - queue.arrival_rate
    return (1.0 - waiting) * math.exp(-mu * time) + waiting * _sum_tail(gap, mu, time)


def _sum_tail(gap: float, mu: float, time: float) -> float:
    """``P(Y + S > t)`` for independent Y ~ Exp(gap), S ~ Exp(mu)."""
    spread = (gap - mu) * time
    if abs(spread) <= 1.0:
        # Near gap = mu the difference quotient cancels: use h(u) = (1 - e^-u)/u.
        ratio = -math.expm1(-spread) / spread if spread != 0.0 else 1.0
        return math.exp(-mu * time) * (1.0 + mu * time * ratio)
    if gap > mu:
        return math.exp(-mu * time) * (gap - mu * math.exp(-spread)) / (gap - mu)
    return math.exp(-gap * time) * (mu - gap * math.exp(spread)) / (mu - gap)


def response_time_quantile(queue: MMc, level: float) -> float:
    """Return the ``level`` quantile of the response time of a stable M/M/c queue.

    Parameters
    ----------
    queue
        The queue (stable).
    level
        In (0, 1), e.g. 0.999 for the 99.9th percentile.

    Returns
    -------
    float
        The ``t`` with ``response_time_tail(queue, t) = 1 - level``, found by
        Brent's method to a relative tolerance of 1e-12.

    Raises
    ------
    UnstableSystemError
        The queue has no steady state.

    Examples
    --------
    >>> q = MMc(arrival_rate=120.0, service_rate=2.5, servers=100)
    >>> round(response_time_quantile(q, 0.999), 4)
    2.7631
    """
    target = 1.0 - check_fraction("level", level)
    high = 1.0 / queue.service_rate
    while response_time_tail(queue, high) > target:
        high *= 2.0
    return float(
        brentq(
            lambda t: response_time_tail(queue, t) - target,
            0.0,
            high,
            xtol=1e-300,
            rtol=1e-12,
        )
    )


# -- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """One design limit, the current setting, and why the limit holds.

    Attributes
    ----------
    name
        The key (``queue_timeout_max`` ...).
    value
        The limit in `unit`; ``inf`` when unbounded; None when no value meets
        the target or a fact is missing (the reason says which).
    current
        The scenario's current setting in `unit` (``inf`` for none, e.g. no
        queue limit), or None when it has none that compares.
    inside
        Whether the current setting lies inside the limit; None when it cannot
        be compared.
    unit
        The unit of `value` and `current`.
    reason
        Why the limit holds, in a sentence.
    assumption
        What it rests on.
    model
        The model and method that produced it.
    tolerance
        Bound on the numerical error of `value`, in `unit` (0 for a closed
        form or an exact integer search).
    """

    name: str
    value: float | None
    current: float | None
    inside: bool | None
    unit: str
    reason: str
    assumption: str
    model: str
    tolerance: float

    @property
    def unbounded(self) -> bool:
        """Whether the limit is infinite (any value is inside)."""
        return self.value is not None and math.isinf(self.value)

    @property
    def unbounded_current(self) -> bool:
        """Whether the current setting is unlimited (no cap, no queue limit)."""
        return self.current is not None and math.isinf(self.current)

    @property
    def value_text(self) -> str:
        """The value with its unit, for people."""
        return _quantity_text(self.value, self.unit, missing="none")

    @property
    def current_text(self) -> str:
        """The current setting with its unit, for people."""
        return _quantity_text(self.current, self.unit, missing="-")

    def to_dict(self) -> dict[str, Any]:
        """Return the limit as plain data: infinities become None (JSON null)."""
        return {
            "value": _plain_number(self.value, self.unit),
            "unbounded": self.unbounded,
            "current": _plain_number(self.current, self.unit),
            "inside": self.inside,
            "unit": self.unit,
            "reason": self.reason,
            "assumption": self.assumption,
            "model": self.model,
            "tolerance": self.tolerance,
        }


@dataclass(frozen=True)
class Limits:
    """Every design limit of a scenario (see the module docstring).

    Attributes
    ----------
    scenario
        Name of the scenario.
    epsilon
        The tolerance of the targets (a probability).
    queue_timeout_max, queue_timeout_min
        The window of safe proxy queueing timeouts (s).
    queue_limit_max, queue_limit_min
        The window of safe proxy queue limits (waiting requests).
    concurrency_per_pod_max, concurrency_per_pod_min
        The same window as a cap of a bounded web tier (attempts per pod).
    max_retries, max_retry_budget
        The most retries, and the supremum of retry budgets, for which no bad
        state exists even when every attempt fails.
    min_connections, max_connections, max_useful_connections
        Pool size: the fewest that meet the waiting-time target, the most the
        database accepts, and the most that still add throughput.
    max_lock_duration, max_capacity_drop, max_request_rate_for_trigger
        The longest lock (s), the deepest capacity drop (share of the pool)
        and the highest demand (requests/s) the design survives.
    client_timeout_min, client_timeout_min_ordering
        The client timeout from the latency percentile, and the one the
        proxy's longest wait requires (s).
    """

    scenario: str
    epsilon: float
    queue_timeout_max: Limit
    queue_timeout_min: Limit
    queue_limit_max: Limit
    queue_limit_min: Limit
    concurrency_per_pod_max: Limit
    concurrency_per_pod_min: Limit
    max_retries: Limit
    max_retry_budget: Limit
    min_connections: Limit
    max_connections: Limit
    max_useful_connections: Limit
    max_lock_duration: Limit
    max_capacity_drop: Limit
    max_request_rate_for_trigger: Limit
    client_timeout_min: Limit
    client_timeout_min_ordering: Limit

    def __iter__(self) -> Iterator[Limit]:
        """Iterate over the limits in the order of `LIMIT_NAMES`."""
        return (getattr(self, name) for name in LIMIT_NAMES)

    def __getitem__(self, name: str) -> Limit:
        """Return the limit called ``name``."""
        if name not in LIMIT_NAMES:
            raise KeyError(name)
        limit: Limit = getattr(self, name)
        return limit

    @property
    def queue_timeout_window(self) -> tuple[float, float] | None:
        """``(min, max)`` of the safe queueing timeouts (s), or None when empty."""
        low, high = self.queue_timeout_min.value, self.queue_timeout_max.value
        if low is None or high is None or low > high:
            return None
        return low, high

    @property
    def recommendations(self) -> tuple[str, ...]:
        """Concrete changes that bring the current settings inside the limits."""
        return tuple(_recommendations(self))

    def to_dict(self) -> dict[str, Any]:
        """Return the limits as plain data (for JSON).

        Each limit's value is under its name (seconds, requests, ...; null for
        unbounded or missing), and with its current value, reason, assumption,
        model and tolerance under ``details``.
        """
        values = {limit.name: _plain_number(limit.value, limit.unit) for limit in self}
        return {
            "scenario": self.scenario,
            "epsilon": self.epsilon,
            **values,
            "queue_timeout_window_exists": self.queue_timeout_window is not None,
            "details": {limit.name: limit.to_dict() for limit in self},
            "recommendations": list(self.recommendations),
        }


LIMIT_NAMES: tuple[str, ...] = tuple(
    f.name for f in fields(Limits) if f.name not in ("scenario", "epsilon")
)
"""The names of the limits, in the order they are reported."""


def _plain_number(value: float | None, unit: str) -> float | int | None:
    """Return ``value`` for JSON: None for infinities, whole counts as int."""
    if value is None or math.isinf(value):
        return None
    if unit in _COUNT_UNITS and float(value).is_integer():
        return int(value)
    return value


def _quantity_text(value: float | None, unit: str, missing: str) -> str:
    """Format a value with its unit: ``36.3 s``, ``9,078 requests``, ``unbounded``."""
    if value is None:
        return missing
    if math.isinf(value):
        return "unbounded"
    if unit.startswith("share"):
        return f"{value:.1%}"
    if value == 1.0 and unit in _SINGULAR:
        return f"1 {_SINGULAR[unit]}"
    if float(value).is_integer() and abs(value) >= 1.0:
        return f"{value:,.0f} {unit}"
    return f"{value:.4g} {unit}"


def _at_most(current: float | None, value: float | None) -> bool | None:
    """Whether ``current <= value`` (None when either is missing)."""
    if current is None or value is None:
        return None
    return current <= value


def _at_least(current: float | None, value: float | None) -> bool | None:
    """Whether ``current >= value`` (None when either is missing)."""
    if current is None or value is None:
        return None
    return current >= value


# -- the normal-load models ----------------------------------------------------------


@dataclass(frozen=True)
class _System:
    """The quantities every limit uses, read once from the scenario."""

    scenario: Scenario
    epsilon: float
    demand: float  # lambda, peak fresh requests per second
    servers: int  # c
    mu: float  # per-connection rate with the pool full
    client_timeout: float  # the shortest timeout of the proxy's callers

    @property
    def capacity(self) -> float:
        """``kappa = c mu`` per second."""
        return self.servers * self.mu

    @property
    def stable(self) -> bool:
        """Whether the pool carries the demand at normal load."""
        return 0.0 < self.demand < self.capacity

    @property
    def service_tail(self) -> float:
        """``s_eps`` (s)."""
        return service_quantile(self.mu, self.epsilon)


def _system(scenario: Scenario, epsilon: float) -> _System:
    return _System(
        scenario=scenario,
        epsilon=epsilon,
        demand=scenario.clients.peak_request_rate,
        servers=scenario.proxy.pool_size,
        mu=saturated_service_rate(scenario),
        # The scenario has no web-tier timeout: the clients are the only callers.
        client_timeout=scenario.clients.timeout,
    )


_SLOWEST = (
    "exponential service at the per-connection rate with the pool full "
    "(contention included)"
)


def _queue_timeout_max(system: _System) -> Limit:
    value = largest_queue_timeout(system.client_timeout, system.mu, system.epsilon)
    current = system.scenario.proxy.queue_timeout
    if value is None:
        reason = (
            f"the service time alone exceeds the {system.client_timeout:g} s client "
            f"timeout with probability above {system.epsilon:g}: no queueing "
            "timeout avoids wasted work"
        )
    else:
        reason = (
            f"a request that waited {value:.4g} s still completes within the "
            f"{system.client_timeout:g} s client timeout with probability "
            f"{1 - system.epsilon:g} ({system.service_tail:.3g} s of service "
            "left): no work is wasted, so retries alone cannot sustain a bad state"
        )
    return Limit(
        name="queue_timeout_max",
        value=value,
        current=current,
        inside=_at_most(current, value) if value is not None else False,
        unit="s",
        reason=reason,
        assumption=(
            f"{_SLOWEST}; the client timeout counts from the attempt's send; pods "
            "that crash under load can sustain a bad state even without waste"
        ),
        model="closed form T_c - log(1/epsilon)/mu (proofs: limits.queue_timeout)",
        tolerance=0.0,
    )


def _overflow_share(system: _System) -> float:
    """Return ``max(0, 1 - c mu / lambda)``: the share no waiting room can save."""
    return max(0.0, 1.0 - system.capacity / system.demand)


def _abandonment(system: _System, timeout: float) -> float:
    return MMcD(
        arrival_rate=system.demand,
        service_rate=system.mu,
        servers=system.servers,
        timeout=timeout,
    ).abandonment_probability


def _log_share(share: float) -> float:
    """``log(share)``, with a share that underflowed to 0 at the smallest double.

    A target of 1e-300 brackets its root where the share underflows; the
    smallest positive double keeps the sign of the difference for any target
    a double can hold.
    """
    return math.log(max(share, math.ulp(0.0)))


def _smallest_queue_timeout(system: _System) -> float | None:
    """Return the root of P(abandon; T_q) = epsilon in M/M/c+D, or 0, or None."""
    epsilon = system.epsilon
    if erlang_b(system.servers, system.demand / system.mu) <= epsilon:
        return 0.0  # the limit T_q -> 0 is Erlang B: any timeout meets it
    if _overflow_share(system) >= epsilon:
        return None  # P(abandon) decreases to 1 - c mu / lambda as T_q grows
    high = 1.0 / system.capacity
    while _abandonment(system, high) > epsilon:
        high *= 2.0
    low = high / 2.0
    while _abandonment(system, low) <= epsilon:
        low /= 2.0
    root = math.exp(
        brentq(
            lambda x: _log_share(_abandonment(system, math.exp(x))) - math.log(epsilon),
            math.log(low),
            math.log(high),
            xtol=_ROOT_RTOL,
        )
    )
    # Step onto the side that meets the target.
    while _abandonment(system, root) > epsilon:
        root *= 1.0 + _ROOT_RTOL
    return root


def _queue_timeout_min(system: _System) -> Limit:
    value = _smallest_queue_timeout(system) if system.demand > 0.0 else 0.0
    current = system.scenario.proxy.queue_timeout
    if value is None:
        reason = (
            f"at {system.demand:.4g} requests/s the pool of {system.capacity:.4g}/s "
            f"lets more than {system.epsilon:g} of requests time out whatever the "
            "timeout"
        )
    elif value == 0.0:
        reason = (
            "even with no waiting at all (Erlang B) at most "
            f"{system.epsilon:g} of requests would fail at normal load"
        )
    else:
        reason = (
            f"shorter timeouts fail more than {system.epsilon:g} of requests in the "
            f"queue at {system.demand:.4g} requests/s"
        )
    return Limit(
        name="queue_timeout_min",
        value=value,
        current=current,
        inside=_at_least(current, value) if value is not None else False,
        unit="s",
        reason=reason,
        assumption=f"Poisson arrivals at the peak demand, {_SLOWEST}, no retries",
        model=(
            "Erlang B, the M/M/c+D limit as T_q -> 0"
            if value == 0.0
            else "exact M/M/c+D abandonment probability, Brent's method on log T_q"
        ),
        tolerance=(value or 0.0) * _ROOT_RTOL * 2.0,
    )


def _queue_limit_max(system: _System) -> Limit:
    value = largest_queue_limit(
        system.client_timeout, system.mu, system.servers, system.epsilon
    )
    current = system.scenario.proxy.queue_limit
    if value is None:
        reason = "the service time alone exceeds the client timeout"
    else:
        reason = (
            f"a full queue of {value:,} drains in {value / system.capacity:.4g} s at "
            f"{system.capacity:.4g} completions/s, leaving {system.service_tail:.3g} s "
            "of service within the client timeout: no work is wasted"
        )
    return Limit(
        name="queue_limit_max",
        value=float(value) if value is not None else None,
        current=current,
        inside=_at_most(current, value) if value is not None else False,
        unit="requests",
        reason=reason,
        assumption=f"FIFO, the full pool serving, {_SLOWEST}",
        model="closed form floor(c mu (T_c - log(1/epsilon)/mu)) (limits.queue_limit)",
        tolerance=0.0,
    )


def _blocking(system: _System, room: int) -> float:
    return MMcK(
        arrival_rate=system.demand,
        service_rate=system.mu,
        servers=system.servers,
        capacity=system.servers + room,
    ).blocking_probability


def _smallest_queue_limit(system: _System) -> int | None:
    """Return the fewest waiting places with blocking at most epsilon, or None."""
    epsilon = system.epsilon
    if _overflow_share(system) >= epsilon:
        return None  # blocking decreases to 1 - c mu / lambda as K grows
    if _blocking(system, 0) <= epsilon:
        return 0
    # Blocking decreases in K: the target holds from some K on.
    return smallest_whole(
        lambda room: _blocking(system, room) <= epsilon, cap=_SEARCH_CAP
    )


def _queue_limit_min(system: _System) -> Limit:
    value = _smallest_queue_limit(system) if system.demand > 0.0 else 0
    current = system.scenario.proxy.queue_limit
    reason = (
        f"fewer waiting places reject more than {system.epsilon:g} of requests at "
        f"{system.demand:.4g} requests/s"
        if value is not None
        else f"the pool cannot carry {system.demand:.4g} requests/s"
    )
    return Limit(
        name="queue_limit_min",
        value=float(value) if value is not None else None,
        current=current,
        inside=_at_least(current, value) if value is not None else False,
        unit="requests",
        reason=reason,
        assumption=f"Poisson arrivals at the peak demand, {_SLOWEST}, no retries",
        model="exact M/M/c/K blocking probability, integer bisection",
        tolerance=0.0,
    )


def _current_cap(scenario: Scenario) -> float:
    """Return the bounded tier's cap per pod, or inf for an async tier."""
    web = scenario.web
    if web.mode == "bounded" and web.concurrency_per_pod is not None:
        return float(web.concurrency_per_pod)
    return math.inf


def _cap_assumption(system: _System) -> str:
    return (
        f"all {system.scenario.web.pods} pods up; the tier holds at most pods x cap "
        "attempts waiting for or holding a connection"
    )


def _concurrency_max(system: _System, queue_limit: Limit) -> Limit:
    pods, current = system.scenario.web.pods, _current_cap(system.scenario)
    value = None
    if queue_limit.value is not None:
        value = float(math.floor((system.servers + queue_limit.value) / pods))
    reason = (
        f"{pods} pods x {value:,.0f} in flight leave at most "
        f"{queue_limit.value:,.0f} waiting behind the {system.servers} connections "
        "(the queue limit window)"
        if value is not None and queue_limit.value is not None and value >= 1
        else "no cap keeps the full queue within the client timeout"
    )
    if value is not None and value < 1:
        value = None
    return Limit(
        name="concurrency_per_pod_max",
        value=value,
        current=current,
        inside=_at_most(current, value) if value is not None else False,
        unit="per pod",
        reason=reason,
        assumption=_cap_assumption(system),
        model="closed form floor((c + K_max) / pods) (limits.concurrency_cap)",
        tolerance=0.0,
    )


def _fewest_in_flight(system: _System, queue_limit: Limit) -> int | None:
    """Return the smallest tier-wide cap N with blocking at most epsilon, or None.

    Below the pool size the tier is an Erlang loss system with N servers; from
    the pool size on it is M/M/c/N, whose window starts at ``c + K_min``.
    """
    if system.demand == 0.0:
        return 1
    loss = servers_for_blocking(system.demand / system.mu, system.epsilon)
    if loss <= system.servers:
        return loss
    if queue_limit.value is None:
        return None
    return system.servers + int(queue_limit.value)


def _concurrency_min(system: _System, queue_limit: Limit) -> Limit:
    pods, current = system.scenario.web.pods, _current_cap(system.scenario)
    fewest = _fewest_in_flight(system, queue_limit)
    value = float(math.ceil(fewest / pods)) if fewest is not None else None
    return Limit(
        name="concurrency_per_pod_min",
        value=value,
        current=current,
        inside=_at_least(current, value) if value is not None else False,
        unit="per pod",
        reason=(
            f"{pods} pods x a smaller cap hold fewer than {fewest:,} attempts, and "
            f"reject more than {system.epsilon:g} of them at normal load"
            if fewest is not None
            else queue_limit.reason
        ),
        assumption=_cap_assumption(system),
        model=(
            "ceil(N/pods), N the fewest in flight with blocking <= epsilon: Erlang B "
            "below the pool size, M/M/c/N from it on (integer searches)"
        ),
        tolerance=0.0,
    )


# -- retries -------------------------------------------------------------------------


def _init_rate(scenario: Scenario) -> float:
    web = scenario.web
    return restart_query_rate(
        web.pods, web.init_queries, web.crash_after, web.restart_delay
    )


def _retry_assumption(init: float) -> str:
    text = "every attempt fails (the worst case), demand at its peak"
    if init > 0.0:
        text += (
            f"; pods crash as fast as they can and their init queries add "
            f"{init:.3g} requests/s"
        )
    return text


def _max_retries(system: _System) -> Limit:
    clients, init = system.scenario.clients, _init_rate(system.scenario)
    room = system.capacity - init
    value: float | None
    if system.demand == 0.0 or (
        room > 0.0
        and not bad_equilibrium_exists(
            system.demand, room, 0.0, _SEARCH_CAP, clients.retry_budget
        )
    ):
        value = math.inf
        reason = (
            "the retry budget alone keeps the attempts below the pool's capacity"
            if system.demand > 0.0
            else "no demand"
        )
    else:
        retries = (
            largest_retry_count(system.demand, system.capacity, init)
            if room > 0.0
            else None
        )
        value = float(retries) if retries is not None else None
        reason = (
            f"with {_quantity_text(retries, 'retries', '')} per request at most "
            f"{(retries + 1) * system.demand:.4g} attempts/s (+ {init:.3g} init "
            f"queries/s) arrive when every attempt fails, below the pool's "
            f"{system.capacity:.4g}/s: no saturated state sustains itself"
            if retries is not None
            else "even without retries the demand fills the pool"
        )
    current = float(clients.max_retries)
    return Limit(
        name="max_retries",
        value=value,
        current=current,
        inside=_at_most(current, value) if value is not None else False,
        unit="retries",
        reason=reason,
        assumption=_retry_assumption(init),
        model="closed form ceil((kappa - I)/lambda) - 2 (limits.retries)",
        tolerance=0.0,
    )


def _max_retry_budget(system: _System) -> Limit:
    init = _init_rate(system.scenario)
    room = system.capacity - init
    value: float | None = math.inf
    reason = "no demand"
    if system.demand > 0.0:
        value = (
            largest_retry_budget(system.demand, system.capacity, init)
            if room > 0.0
            else None
        )
        reason = (
            f"below {value:.4g} retries per request the attempts stay below "
            f"{system.capacity:.4g}/s whatever the retry count"
            if value is not None
            else "even without retries the demand fills the pool"
        )
    current = system.scenario.clients.retry_budget
    inside = None if value is None else (current < value or math.isinf(value))
    return Limit(
        name="max_retry_budget",
        value=value,
        current=current,
        inside=inside if value is not None else False,
        unit="retries per request",
        reason=reason + " (the bound itself is excluded)",
        assumption=_retry_assumption(init),
        model="closed form (kappa - I)/lambda - 1 (limits.retry_budget)",
        tolerance=0.0,
    )


# -- connections ---------------------------------------------------------------------


def _rate_with(scenario: Scenario, servers: int) -> float:
    """Per-connection service rate (per s) with ``servers`` connections busy."""
    database = scenario.database
    return 1.0 / (
        database.service_time * max(1.0, 1.0 + database.contention * (servers - 1))
    )


def _meets_wait(system: _System, servers: int, wait: float) -> bool:
    mu = _rate_with(system.scenario, servers)
    if system.demand >= servers * mu:
        return False
    queue = MMc(arrival_rate=system.demand, service_rate=mu, servers=servers)
    return queue.wait_tail(wait) <= system.epsilon


def _fewest_connections(system: _System, wait: float) -> int | None:
    """Smallest c meeting the wait target (doubling, then bisection), or None."""
    return smallest_whole(
        lambda servers: _meets_wait(system, servers, wait), cap=_SEARCH_CAP
    )


def _min_connections(system: _System, wait: float) -> Limit:
    value = _fewest_connections(system, wait) if system.demand > 0.0 else 1
    current = float(system.scenario.proxy.pool_size)
    return Limit(
        name="min_connections",
        value=float(value) if value is not None else None,
        current=current,
        inside=_at_least(current, value) if value is not None else False,
        unit="connections",
        reason=(
            f"fewer connections let more than {system.epsilon:g} of requests wait "
            f"over {wait:.3g} s at {system.demand:.4g} requests/s"
            if value is not None
            else "contention caps the throughput below the demand"
        ),
        assumption=(
            "Poisson arrivals at the peak demand; with contention every connection "
            "serves at the full-pool rate; the target is monotone in the pool size"
        ),
        model="exact M/M/c waiting-time tail, doubling then integer bisection",
        tolerance=0.0,
    )


def _max_connections(system: _System) -> Limit:
    stated = system.scenario.database.max_connections
    current = float(system.scenario.proxy.pool_size)
    value = float(stated) if stated is not None else None
    return Limit(
        name="max_connections",
        value=value,
        current=current,
        inside=_at_most(current, value),
        unit="connections",
        reason=(
            f"the database accepts {stated:,} connections from all pods and "
            "proxies together"
            if stated is not None
            else "not stated (database.max_connections)"
        ),
        assumption="the proxy is the database's only client",
        model="the scenario's database.max_connections",
        tolerance=0.0,
    )


def _max_useful_connections(system: _System) -> Limit:
    database = system.scenario.database
    value = useful_pool_size(database.service_time, database.contention, system.epsilon)
    current = float(system.scenario.proxy.pool_size)
    return Limit(
        name="max_useful_connections",
        value=value,
        current=current,
        inside=_at_most(current, value),
        unit="connections",
        reason=(
            "without contention every connection adds a full connection's throughput"
            if math.isinf(value)
            else f"beyond {value:,.0f} connections one more adds at most "
            f"{system.epsilon:g} of a connection's throughput (contention "
            f"{database.contention:g})"
        ),
        assumption="throughput c / (s (1 + alpha (c - 1))) with the pool full",
        model="closed form (limits.useful_connections)",
        tolerance=0.0,
    )


# -- client timeouts -----------------------------------------------------------------


def _client_timeout_min(system: _System, percentile: float) -> Limit:
    current = system.scenario.clients.timeout
    value: float | None = None
    if system.stable:
        queue = MMc(
            arrival_rate=system.demand, service_rate=system.mu, servers=system.servers
        )
        value = response_time_quantile(queue, percentile)
    elif system.demand == 0.0:
        value = -math.log1p(-percentile) / system.mu
    return Limit(
        name="client_timeout_min",
        value=value,
        current=current,
        inside=_at_least(current, value) if value is not None else False,
        unit="s",
        reason=(
            f"the {percentile:.4g} quantile of wait plus service at normal load: a "
            "shorter client timeout gives up on requests that are merely slow"
            if value is not None
            else "the pool cannot carry the demand: the latency has no percentile"
        ),
        assumption=f"Poisson arrivals at the peak demand, {_SLOWEST}",
        model="exact M/M/c response-time tail (limits.response_time), Brent's method",
        tolerance=(value or 0.0) * 1e-12,
    )


def _longest_wait(scenario: Scenario) -> float:
    """Return the longest wait the proxy or the tier allows, cancellation aside."""
    if scenario.proxy.cancel_abandoned:
        scenario = scenario.with_changes({"proxy.cancel_abandoned": False})
    return saturated_wait(scenario)


def _client_timeout_ordering(system: _System) -> Limit:
    wait = _longest_wait(system.scenario)
    value = wait + system.service_tail
    current = system.scenario.clients.timeout
    return Limit(
        name="client_timeout_min_ordering",
        value=value,
        current=current,
        inside=_at_least(current, value),
        unit="s",
        reason=(
            f"a request may wait {wait:.4g} s for a connection and then hold it "
            f"{system.service_tail:.3g} s: a shorter client timeout gives up on "
            "requests the database still serves (wasted work)"
        ),
        assumption=f"{_SLOWEST}; the longest wait is min(T_q, K/(c mu), tier room)",
        model="closed form w_max + log(1/epsilon)/mu (limits.queue_timeout)",
        tolerance=0.0,
    )


# -- replays: the longest lock, the deepest drop, the highest demand -----------------


def _window_end(scenario: Scenario) -> float:
    """End of the review's judged window: the first cold restart, or the horizon."""
    first = scenario.first_intervention
    return scenario.horizon if first is None else min(first, scenario.horizon)


def _quiet_from(scenario: Scenario) -> float:
    """When every event but a cold restart has ended (s)."""
    ends = [e.end for e in scenario.events if e.kind != "cold_restart"]
    return max(ends, default=0.0)


def survives_trigger(scenario: Scenario) -> bool:
    """Whether the review's verdict of ``scenario`` is ``stable`` or ``recovers``.

    The replay is cut short once the verdict is certain: the system is back in
    the good state for twice the client timeout; or, when a bad state can last
    (a saturated equilibrium exists, or pods crash, or a breaker trips), after
    every event but a cold restart has ended it has stayed out of the good
    state for a settling time (queueing timeout plus every attempt's client
    timeout and backoff) with a head-of-line wait beyond the boundary
    equilibrium's and a backlog that no longer falls. Otherwise the review's
    own replay (to the horizon) decides.

    Parameters
    ----------
    scenario
        A scenario with a trigger (a lock or a capacity event).

    Returns
    -------
    bool
        True when the system returns to the good state by itself.

    Raises
    ------
    InvalidParameterError
        The scenario has no trigger.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> survives_trigger(default_scenario().with_changes({"events.0.duration": 5.0}))
    True
    """
    trigger_end = scenario.trigger_end
    if trigger_end is None:
        raise InvalidParameterError("scenario", "must have a trigger", scenario.name)
    end = _window_end(scenario)
    hold = 2.0 * scenario.clients.timeout
    settle = settling_time(scenario)
    decided_by = max(trigger_end, _quiet_from(scenario)) + settle
    for horizon in sorted({trigger_end + hold + settle, decided_by + hold}):
        if horizon >= end:
            break
        verdict = _early_verdict(scenario, horizon, hold, decided_by)
        if verdict is not None:
            return verdict
    # The review's own replay and judgement.
    trajectory = simulate_fluid(scenario)
    return trajectory.recovery_time(hold=hold) is not None


def _early_verdict(
    scenario: Scenario, horizon: float, hold: float, decided_by: float
) -> bool | None:
    """Replay to ``horizon``: True (recovered), False (stuck), or None (unsure)."""
    trajectory = simulate_fluid(scenario, horizon=horizon)
    moment = trajectory.recovered_at(before=horizon, hold=hold)
    if moment is not None and moment + hold <= float(trajectory.time[-1]):
        return True
    if horizon < decided_by or not _can_stay_bad(scenario):
        return None
    recent = trajectory.time > horizon - settling_time(scenario)
    beyond = _point_of_no_return(scenario)
    stuck = (trajectory.head_wait[recent] >= beyond) & ~trajectory.is_good[recent]
    return False if bool(stuck.all()) and not _draining(trajectory, recent) else None


def _can_stay_bad(scenario: Scenario) -> bool:
    """Return whether a bad state can last once every event has ended.

    Always with crashes or a breaker (there is no cheap test), else iff the
    saturated equilibrium exists (`bad_equilibrium_exists`): without one a
    backlog drains, however slowly, so no replay may be cut short.
    """
    web, clients = scenario.web, scenario.clients
    if web.crash_after is not None or web.circuit_breaker is not None:
        return True
    mu = saturated_service_rate(scenario)
    return bad_equilibrium_exists(
        clients.peak_request_rate,
        scenario.proxy.pool_size * mu,
        on_time_share(saturated_wait(scenario), clients.timeout, mu),
        clients.max_retries,
        clients.retry_budget,
    )


def _draining(trajectory: FluidTrajectory, recent: NDArray[np.bool_]) -> bool:
    """Return whether the backlog's low points fell by over 1 % in the window."""
    queue = trajectory.queue[recent]
    half = len(queue) // 2
    return bool(queue[half:].min() < (1.0 - _DRAIN_SHARE) * queue[:half].min())


def _point_of_no_return(scenario: Scenario) -> float:
    """Return the head-of-line wait (s) above which the backlog grows by itself.

    The boundary equilibrium's wait ``w*`` (`retrystorm.equilibria.boundary_wait`,
    without crashes): above it retries bring more attempts than the pool
    serves. Without one, the saturated wait less two steps.
    """
    clients = scenario.clients
    mu = saturated_service_rate(scenario)
    top = saturated_wait(scenario) - 2.0 * scenario.time_step
    boundary = boundary_wait(
        clients.peak_request_rate,
        scenario.proxy.pool_size * mu,
        clients.timeout,
        mu,
        clients.max_retries,
        retry_budget=clients.retry_budget,
    )
    return top if boundary is None else min(boundary, top)


def _bisect(
    passes: Callable[[float], bool], low: float, high: float, tolerance: float
) -> float:
    """Largest value that passes, given ``passes(low)`` and not ``passes(high)``.

    Assumes the outcome is monotone: passing up to a threshold, failing beyond.
    """
    while high - low > tolerance:
        middle = 0.5 * (low + high)
        if passes(middle):
            low = middle
        else:
            high = middle
    return low


def _busiest_table(scenario: Scenario) -> str:
    return max(scenario.database.tables, key=lambda table: table.share).name


def _first(scenario: Scenario, kind: str) -> Any:
    return next((e for e in scenario.events if e.kind == kind), None)


def _with_trigger(scenario: Scenario, trigger: dict[str, Any]) -> Scenario:
    """Return the scenario with ``trigger`` as its only lock or capacity event."""
    others = [
        e.model_dump() for e in scenario.events if e.kind not in ("lock", "capacity")
    ]
    return scenario.with_changes({"events": [*others, trigger]})


def _lock_trigger(scenario: Scenario) -> dict[str, Any]:
    lock = _first(scenario, "lock")
    if lock is not None:
        return dict(lock.model_dump())
    start = scenario.trigger_start
    return {
        "kind": "lock",
        "at": _DEFAULT_LOCK_AT if start is None else start,
        "duration": _DEFAULT_TRIGGER,
        "table": _busiest_table(scenario),
    }


def _classification(scenario: Scenario, report: EquilibriumReport | None) -> str:
    # Only the class is needed: a coarse critical backlog is good enough.
    return (report or find_equilibria(scenario, tolerance=0.5)).classification


@dataclass(frozen=True)
class _Replays:
    """What the replayed limits share: the scenario, its class and the counter."""

    scenario: Scenario
    classification: str
    tick: Progress

    def check(self, changed: Scenario, label: str) -> bool:
        outcome = survives_trigger(changed)
        self.tick(label)
        return outcome


def _fluid_assumption(what: str) -> str:
    return (
        f"the fluid model of the review; the verdict is monotone in the {what} "
        "(bisection); other triggers removed, interventions kept"
    )


def _settled_by_equilibria(
    replays: _Replays, name: str, unit: str, current: float | None, widest: float
) -> Limit | None:
    """Return the limit when the equilibria alone decide it, else None.

    Without a good equilibrium no trigger can be survived (no value); without
    a bad one every trigger is, up to ``widest``.
    """
    value: float | None
    inside: bool | None
    if replays.classification == "overloaded":
        value, inside = None, False
        reason = "no good state exists at this demand: the pool cannot carry it"
    elif replays.classification == "stable":
        value, inside = widest, True if current is not None else None
        reason = (
            "no self-sustaining bad equilibrium exists: the system returns to "
            "the good state after any trigger"
        )
    else:
        return None
    return Limit(
        name=name,
        value=value,
        current=current,
        inside=inside,
        unit=unit,
        reason=reason,
        assumption="the equilibria of the fluid model without the trigger",
        model="closed form from the equilibria (proofs: equilibria.bad)",
        tolerance=0.0,
    )


def _max_lock_duration(replays: _Replays, tolerance: float) -> Limit:
    scenario = replays.scenario
    lock = _first(scenario, "lock")
    current = float(lock.duration) if lock is not None else None
    settled = _settled_by_equilibria(
        replays, "max_lock_duration", "s", current, math.inf
    )
    if settled is not None:
        return settled
    trigger = _lock_trigger(scenario)
    cap = _window_end(scenario) - trigger["at"] - 2.0 * scenario.clients.timeout

    def passes(duration: float) -> bool:
        changed = _with_trigger(scenario, {**trigger, "duration": duration})
        return replays.check(changed, f"lock {duration:.4g} s")

    value, bounded = _threshold(passes, current or _DEFAULT_TRIGGER, cap, tolerance)
    table = trigger["table"]
    reason = (
        f"a longer lock on table {table!r} pushes the backlog past the point of no "
        "return: the system stays in the bad state after the lock ends"
        if bounded
        else f"every lock on table {table!r} the review's window can judge is "
        f"survived (up to {cap:.4g} s)"
    )
    if value is None:
        reason = "the replay window is too short to judge any lock"
    return Limit(
        name="max_lock_duration",
        value=value,
        current=current,
        inside=_at_most(current, value),
        unit="s",
        reason=reason,
        assumption=_fluid_assumption("lock duration"),
        model="bisection over fluid replays (review verdict stable/recovers)",
        tolerance=tolerance,
    )


def _threshold(
    passes: Callable[[float], bool], start: float, cap: float, tolerance: float
) -> tuple[float | None, bool]:
    """Largest passing value in [0, cap]: (value, whether a failing one was found).

    Doubles from ``start`` until a value fails (or ``cap``), then bisects; a
    vanishing trigger is taken to pass (the normal state is good).
    """
    if cap <= tolerance:
        return None, False
    low, high = 0.0, min(max(start, tolerance), cap)
    while passes(high):
        if high >= cap:
            return high, False
        low, high = high, min(2.0 * high, cap)
    return _bisect(passes, low, high, tolerance), True


def _drop_trigger(scenario: Scenario, duration: float | None) -> dict[str, Any]:
    lock, drop = _first(scenario, "lock"), _first(scenario, "capacity")
    if duration is None:
        event = lock or drop
        duration = float(event.duration) if event is not None else _DEFAULT_TRIGGER
    start = scenario.trigger_start
    return {
        "kind": "capacity",
        "at": _DEFAULT_LOCK_AT if start is None else start,
        "duration": check_positive("drop_duration", duration),
        "fraction": 0.0,
    }


def _max_capacity_drop(
    replays: _Replays, duration: float | None, tolerance: float
) -> Limit:
    scenario = replays.scenario
    trigger = _drop_trigger(scenario, duration)
    drop = _first(scenario, "capacity")
    current = (
        1.0 - float(drop.fraction)
        if drop is not None and drop.duration == trigger["duration"]
        else None
    )
    name, unit = "max_capacity_drop", "share of the pool"
    settled = _settled_by_equilibria(replays, name, unit, current, 1.0)
    if settled is not None:
        return settled

    def passes(depth: float) -> bool:
        changed = _with_trigger(scenario, {**trigger, "fraction": 1.0 - depth})
        return replays.check(changed, f"capacity drop {depth:.0%}")

    length = trigger["duration"]
    if passes(1.0):
        value, reason = 1.0, f"even losing the whole pool for {length:g} s is survived"
    else:
        value = _bisect(passes, 0.0, 1.0, tolerance)  # no drop at all passes
        reason = (
            f"losing more of the pool for {length:g} s leaves the system in the bad "
            "state after the pool is back"
        )
    return Limit(
        name=name,
        value=value,
        current=current,
        inside=_at_most(current, value),
        unit=unit,
        reason=reason,
        assumption=_fluid_assumption("depth of the drop"),
        model=f"bisection over fluid replays of a {length:g} s capacity drop",
        tolerance=tolerance,
    )


def _with_demand(scenario: Scenario, rate: float) -> Scenario:
    """Return the scenario with its peak demand scaled to ``rate`` per second."""
    clients = scenario.clients
    if clients.rate_profile is None:
        return scenario.with_changes({"clients.request_rate": rate})
    scale = rate / clients.peak_request_rate
    profile = [[start, value * scale] for start, value in clients.rate_profile]
    return scenario.with_changes({"clients.rate_profile": profile})


def _max_request_rate(replays: _Replays, tolerance: float) -> Limit:
    scenario = replays.scenario
    if scenario.trigger_end is None:
        scenario = _with_trigger(scenario, _lock_trigger(scenario))
    current = scenario.clients.peak_request_rate
    capacity = scenario.proxy.pool_size * saturated_service_rate(scenario)
    step = tolerance * capacity

    def passes(rate: float) -> bool:
        changed = _with_demand(scenario, rate)
        return replays.check(changed, f"demand {rate:.4g}/s")

    if current > 0.0 and current < capacity and passes(current):
        value = _bisect(passes, current, capacity, step)
    else:
        # No demand passes (nothing to recover); the pool's capacity does not.
        value = _bisect(passes, 0.0, min(current, capacity), step)
    return Limit(
        name="max_request_rate_for_trigger",
        value=value,
        current=current,
        inside=_at_most(current, value),
        unit="requests/s",
        reason=(
            f"above it the trigger (ending at {scenario.trigger_end:g} s) leaves the "
            "system in the bad state"
        ),
        assumption=_fluid_assumption("demand") + "; a rate profile is scaled",
        model="bisection over fluid replays between 0 and the pool's capacity",
        tolerance=step,
    )


def _not_replayed(name: str, unit: str, current: float | None) -> Limit:
    return Limit(
        name=name,
        value=None,
        current=current,
        inside=None,
        unit=unit,
        reason="not computed (replays switched off)",
        assumption="",
        model="fluid replays",
        tolerance=0.0,
    )


# -- assembly ------------------------------------------------------------------------


def compute_limits(
    scenario: Scenario,
    *,
    epsilon: float = 1e-4,
    wait_target: float | None = None,
    percentile: float = 0.999,
    drop_duration: float | None = None,
    duration_tolerance: float = 0.5,
    drop_tolerance: float = 0.02,
    rate_tolerance: float = 0.01,
    replays: bool = True,
    equilibria: EquilibriumReport | None = None,
    progress: Progress | None = None,
) -> Limits:
    """Compute the design limits of a scenario (see the module docstring).

    Parameters
    ----------
    scenario
        The scenario.
    epsilon
        Tolerance of every target: the accepted probability of a late
        request, a timeout in the queue, a rejection, a long wait.
    wait_target
        Seconds of waiting whose exceedance `min_connections` keeps below
        ``epsilon``; default a tenth of the client timeout.
    percentile
        Latency percentile of `client_timeout_min`, in (0, 1).
    drop_duration
        Length (s) of the capacity drop of `max_capacity_drop`; default the
        scenario's lock (or capacity event), else 60 s.
    duration_tolerance
        Bisection tolerance of `max_lock_duration` (s).
    drop_tolerance
        Bisection tolerance of `max_capacity_drop` (share of the pool).
    rate_tolerance
        Bisection tolerance of `max_request_rate_for_trigger`, as a share of
        the pool's capacity.
    replays
        Compute the three limits that need fluid replays.
    equilibria
        The scenario's equilibria, if already known (saves a computation).
    progress
        Called with a label after each replay.

    Returns
    -------
    Limits
        Every limit with the current value, the reason and the model.

    Raises
    ------
    InvalidParameterError
        A tolerance, level or duration out of range.

    Notes
    -----
    The closed forms are proved in ``proofs/limits.py``. Each replayed limit
    is found by bisection, which assumes the verdict is monotone in the varied
    quantity (longer locks, deeper drops and more demand are no easier to
    survive); a circuit breaker or pod crashes can break that assumption.

    References
    ----------
    [Bronson2021], [SREBook2016], [Brooker2019], [Whitt2006].
    """
    epsilon = check_fraction("epsilon", epsilon)
    percentile = check_fraction("percentile", percentile)
    check_positive("duration_tolerance", duration_tolerance)
    check_fraction("drop_tolerance", drop_tolerance)
    check_fraction("rate_tolerance", rate_tolerance)
    if drop_duration is not None:
        check_positive("drop_duration", drop_duration)
    wait = check_positive(
        "wait_target",
        wait_target if wait_target is not None else 0.1 * scenario.clients.timeout,
    )
    system = _system(scenario, epsilon)
    queue_max, queue_min = _queue_limit_max(system), _queue_limit_min(system)
    fluid = _fluid_limits(
        scenario,
        replays=replays,
        report=equilibria,
        tick=progress or (lambda _label: None),
        options=(drop_duration, duration_tolerance, drop_tolerance, rate_tolerance),
    )
    return Limits(
        scenario=scenario.name,
        epsilon=epsilon,
        queue_timeout_max=_queue_timeout_max(system),
        queue_timeout_min=_queue_timeout_min(system),
        queue_limit_max=queue_max,
        queue_limit_min=queue_min,
        concurrency_per_pod_max=_concurrency_max(system, queue_max),
        concurrency_per_pod_min=_concurrency_min(system, queue_min),
        max_retries=_max_retries(system),
        max_retry_budget=_max_retry_budget(system),
        min_connections=_min_connections(system, wait),
        max_connections=_max_connections(system),
        max_useful_connections=_max_useful_connections(system),
        client_timeout_min=_client_timeout_min(system, percentile),
        client_timeout_min_ordering=_client_timeout_ordering(system),
        **fluid,
    )


def _fluid_limits(
    scenario: Scenario,
    *,
    replays: bool,
    report: EquilibriumReport | None,
    tick: Progress,
    options: tuple[float | None, float, float, float],
) -> dict[str, Limit]:
    """Return the three limits found by fluid replays (or placeholders without them)."""
    if not replays:
        lock = _first(scenario, "lock")
        return {
            "max_lock_duration": _not_replayed(
                "max_lock_duration", "s", lock.duration if lock else None
            ),
            "max_capacity_drop": _not_replayed(
                "max_capacity_drop", "share of the pool", None
            ),
            "max_request_rate_for_trigger": _not_replayed(
                "max_request_rate_for_trigger",
                "requests/s",
                scenario.clients.peak_request_rate,
            ),
        }
    drop_duration, duration_tolerance, drop_tolerance, rate_tolerance = options
    state = _Replays(scenario, _classification(scenario, report), tick)
    return {
        "max_lock_duration": _max_lock_duration(state, duration_tolerance),
        "max_capacity_drop": _max_capacity_drop(state, drop_duration, drop_tolerance),
        "max_request_rate_for_trigger": _max_request_rate(state, rate_tolerance),
    }


# -- recommendations -----------------------------------------------------------------


def _recommendations(limits: Limits) -> Iterator[str]:
    """Turn the limits the current settings break into concrete changes."""
    yield from _queue_advice(limits)
    yield from _retry_advice(limits)
    yield from _pool_advice(limits)
    yield from _trigger_advice(limits)
    client = limits.client_timeout_min
    if client.inside is False and client.value is not None:
        yield (
            f"raise the client timeout to at least {client.value:.3g} s (the "
            "latency percentile of the path below it)"
        )


def _queue_advice(limits: Limits) -> Iterator[str]:
    high, low = limits.queue_timeout_max, limits.queue_timeout_min
    ordering = limits.client_timeout_min_ordering
    if limits.queue_timeout_window is None and high.inside is False:
        yield (
            f"no proxy queueing timeout is both short enough ({high.value_text}) and "
            f"long enough ({low.value_text}) at this load; add connections or raise "
            f"the client timeout to at least {ordering.value_text}"
        )
    elif high.inside is False and ordering.inside is False:
        floor = f" (and at least {low.value:.3g} s)" if low.value else ""
        yield (
            f"set the proxy queueing timeout to at most {high.value:.3g} s{floor} "
            f"(now {high.current_text})"
        )
    cap_high = limits.concurrency_per_pod_max
    cap_low = limits.concurrency_per_pod_min
    if cap_high.inside is False and cap_high.value is not None and not ordering.inside:
        least = f"{cap_low.value:,.0f} and " if cap_low.value is not None else ""
        now = "no cap" if cap_high.unbounded_current else cap_high.current_text
        yield (
            f"cap the web tier at between {least}{cap_high.value:,.0f} attempts in "
            f"flight per pod (now {now}), or limit the proxy queue to at most "
            f"{limits.queue_limit_max.value_text}"
        )
    elif cap_low.inside is False and cap_low.value is not None:
        yield f"raise the web tier's cap to at least {cap_low.value:,.0f} per pod"


def _retry_advice(limits: Limits) -> Iterator[str]:
    retries, budget = limits.max_retries, limits.max_retry_budget
    if retries.inside is False and retries.value is not None:
        most = int(retries.value)
        text = (
            "do not retry failed requests automatically"
            if most == 0
            else f"retry at most {'once' if most == 1 else f'{most:,} times'} "
            "per request"
        )
        if budget.value is not None:
            text += f", or add a retry budget below {budget.value:.3g} per request"
        yield text


def _pool_advice(limits: Limits) -> Iterator[str]:
    low, high = limits.min_connections, limits.max_connections
    if low.inside is False and low.value is not None:
        yield f"use at least {low.value:,.0f} connections in the proxy pool"
    if high.inside is False and high.value is not None:
        yield f"use at most {high.value:,.0f} connections (the database's limit)"
    useful = limits.max_useful_connections
    if useful.inside is False and useful.value is not None:
        yield (f"connections beyond {useful.value:,.0f} add no throughput (contention)")


def _trigger_advice(limits: Limits) -> Iterator[str]:
    lock = limits.max_lock_duration
    if lock.value is not None and math.isfinite(lock.value):
        now = (
            f"; the {lock.current_text} lock is not survived"
            if lock.inside is False
            else ""
        )
        yield f"keep locks on hot tables under {lock.value:.3g} s{now}"
    rate = limits.max_request_rate_for_trigger
    if rate.inside is False and rate.value is not None:
        yield (
            f"the trigger is survived only below {rate.value:.4g} requests/s "
            f"(now {rate.current_text})"
        )
