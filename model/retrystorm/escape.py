"""The expected time for a stuck system to escape its bad state by chance.

The fluid model says that a metastable system stays in its bad state; the
stochastic model says it leaves eventually, by a lucky run of fluctuations.
`escape_time` says how long that takes on average, from the bad region of
the Markov chain of a scenario (`retrystorm.chain.chain_from_scenario`) to
its good region, by one of two methods:

- ``"exact chain"``: when the chain of the scenario at full size has at most
  `EXACT_STATE_BUDGET` states, its hitting-time equations are solved
  (`retrystorm.RetryChain.escape_time`): exact for the chain's model.
- ``"birth-death reduction"``: otherwise a one-dimensional birth-death chain
  of the live backlog (`reduced_birth_death`) and the closed form of its
  mean first-passage time (`log_mean_passage_time`), computed in log space
  so that 10^5000 seconds is representable.

The reduction
-------------
The state is the number ``k`` of live requests in the system (in service or
waiting, not counting orphans). With ``c`` servers of rate ``mu``, fresh
arrivals ``lambda``, exponential patience of rate ``nu = 1 / timeout``, retry
probability ``p`` and ``L = max(k - c, 0)`` live requests waiting:

- births ``lambda + p nu L``: fresh arrivals plus retries, with the orbit
  quasi-static (each give-up comes back as one retry with probability ``p``);
- deaths ``k mu`` while a server is idle; above, with abandoned requests
  cancelled, ``c mu + nu L`` (served or given up); with orphans left in the
  queue and served first, ``max(nu L, c mu)``: give-ups leave the live
  backlog, and the pool serves live requests only with the capacity the
  new orphans leave, ``c mu - nu L``;
- a queue limit stops births at the top.

Orphans are taken as served as fast as they appear while the pool can, and
as never served otherwise: the reduction forgets the orphan backlog, which in
the exact chain must drain before live requests are served again. That makes
escape look easier than it is, and the measured effect is large (see
`REDUCTION_ACCURACY`): the estimate is a lower estimate of the exponent.

Large-deviation theory for density-dependent chains says that ``log T`` grows
linearly in the system size ``N`` (servers, rates and queues times ``N``),
``log T ~ N Delta V`` with ``Delta V`` the quasi-potential barrier
[FreidlinWentzell1998], [ShwartzWeiss1995], [Kurtz1970]; for a birth-death
chain ``Delta V`` is the sum of ``log(d_k / b_k)`` across the uphill stretch,
which the passage-time formula reproduces. The validation in the tests
compares growth rates in ``N`` of the reduction and of the exact chain.

References
----------
[KarlinTaylor1975] (birth-death passage times), [FreidlinWentzell1998],
[ShwartzWeiss1995], [Kurtz1970] (metastability and large deviations),
[Isaacs2025] (recovery times of a CTMC of a metastable system).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

from retrystorm._validation import check_integer, check_positive, check_probability
from retrystorm.chain import Region, RetryChain, _ScenarioMapping, chain_from_scenario
from retrystorm.errors import InvalidParameterError, StateSpaceTooLargeError
from retrystorm.scenario import Scenario

__all__ = [
    "EXACT_STATE_BUDGET",
    "REDUCTION_ACCURACY",
    "EscapeEstimate",
    "escape_time",
    "estimate_escape_time",
    "log_mean_passage_time",
    "reduced_birth_death",
]

FloatArray = NDArray[np.float64]
Method = Literal["exact chain", "birth-death reduction"]

# The exact chain is used up to this many states: the hitting-time system of
# a chain with orphans (three dimensions) solves in about a second at this size.
EXACT_STATE_BUDGET = 30_000
# A century, in seconds: an expected escape beyond it does not happen in practice.
_CENTURY = 100 * 365.25 * 86_400.0
_LOG10_YEAR = math.log10(365.25 * 86_400.0)
# Stationary weight (in nats below the peak) from which the reduced chain is cut.
_TAIL_NATS = 60.0

REDUCTION_ACCURACY = (
    "a lower estimate, good for the order of the exponent only: on the "
    "validation grid (12 metastable chains with orphans, five configurations "
    "of one to three servers) the exact chain's time was 0.5 to 15 times this "
    "estimate, and its logarithm grew 1.0 to 2.5 times as fast per added "
    "server, so at full size the real expected time is longer, by a factor "
    "that grows exponentially with the size"
)
_EXACT_ACCURACY = (
    "exact for the chain's model to solver precision; the chain leaves out "
    "events, pods, crashes, the circuit breaker, the client timeout during "
    "service, and takes the timeout as exponential and the retries as "
    "geometric (see chain_from_scenario)"
)


@dataclass(frozen=True, kw_only=True)
class EscapeEstimate:
    """The expected time to escape the bad state by chance.

    Attributes
    ----------
    method
        ``"exact chain"`` or ``"birth-death reduction"`` (module docstring).
    expected_seconds
        The expected time (s) from the bad region to the good one; ``inf``
        when it exceeds a double.
    log10_seconds
        ``log10`` of it, finite even when ``expected_seconds`` overflows.
    from_region, to_region
        The bad and the good region, in queue terms.
    scale
        The chain's scale (1: full size) when the exact chain was solved.
    state_count
        The number of states of the chain that was solved (exact or reduced).
    accuracy
        What the number is good for, with the measured error of the method.
    notes
        What the model leaves out or assumes.
    """

    method: Method
    expected_seconds: float
    log10_seconds: float
    from_region: str
    to_region: str
    scale: float | None
    state_count: int | None
    accuracy: str
    notes: tuple[str, ...] = ()

    @property
    def log10_years(self) -> float:
        """``log10`` of the expected time in years (of 365.25 days)."""
        return self.log10_seconds - _LOG10_YEAR

    @property
    def never_in_practice(self) -> bool:
        """Whether the expected time exceeds a century (escape needs intervention)."""
        return self.log10_seconds > math.log10(_CENTURY)

    def to_dict(self) -> dict[str, Any]:
        """Return the estimate as plain data (an overflowed time becomes None)."""
        seconds = self.expected_seconds
        return {
            "method": self.method,
            "expected_seconds": seconds if math.isfinite(seconds) else None,
            "log10_seconds": self.log10_seconds,
            "log10_years": self.log10_years,
            "never_in_practice": self.never_in_practice,
            "from_region": self.from_region,
            "to_region": self.to_region,
            "scale": self.scale,
            "state_count": self.state_count,
            "accuracy": self.accuracy,
            "notes": list(self.notes),
        }


# -- the birth-death passage time ----------------------------------------------------


def log_mean_passage_time(
    birth_rates: ArrayLike, death_rates: ArrayLike, start: ArrayLike, target: int
) -> float:
    """Return ``log`` of the mean time for a birth-death chain to fall to ``target``.

    Parameters
    ----------
    birth_rates
        ``b_k`` (per second) for the states ``k = 0..M``: positive below the
        top ``M``; the top's entry is ignored.
    death_rates
        ``d_k`` (per second): positive for ``k >= 1``; ``d_0`` is ignored.
    start
        Non-negative weights of the start states (normalised here), with
        some weight above ``target``; a one-hot vector starts in one state.
    target
        The chain stops on reaching a state ``<= target``, ``0 <= target < M``.

    Returns
    -------
    float
        The natural logarithm of the mean passage time in seconds.

    Raises
    ------
    InvalidParameterError
        Rates of different lengths, fewer than two states, a rate that is not
        finite and positive where it is used, a bad ``start`` or ``target``.

    Notes
    -----
    With ``pi_k = prod_{i<k} b_i / d_{i+1}`` (the stationary law of the
    chain reflected at ``M``, unnormalised), the mean time to go from ``k``
    to ``k - 1`` is ``tau_k = sum_{j=k}^{M} pi_j / (pi_k d_k)``, and from
    ``n`` to ``target`` it is ``sum_{k=target+1}^{n} tau_k``
    [KarlinTaylor1975]; ``proofs/birth_death.py`` checks the formula against
    the hitting-time equations. Every sum is a ``logsumexp`` of logarithms,
    so that times beyond ``1e308`` s keep their digits.

    Examples
    --------
    M/M/1 with ``lambda = 1``, ``mu = 2`` cut at 40: from 1 to 0 takes a busy
    period, ``1 / (mu - lambda) = 1`` s (up to the negligible cut):

    >>> import numpy as np
    >>> births, deaths = np.full(41, 1.0), np.full(41, 2.0)
    >>> start = np.zeros(41); start[1] = 1.0
    >>> round(float(np.exp(log_mean_passage_time(births, deaths, start, 0))), 9)
    1.0
    """
    births, deaths, weights = _check_chain(birth_rates, death_rates, start, target)

    # log pi_k as a cumulative sum of log ratios: no product can overflow.
    log_pi = np.concatenate(([0.0], np.cumsum(np.log(births[:-1] / deaths[1:]))))
    # log sum_{j>=k} pi_j for every k, from the top down.
    log_tail = np.logaddexp.accumulate(log_pi[::-1])[::-1]
    log_tau = (
        log_tail[target + 1 :] - log_pi[target + 1 :] - np.log(deaths[target + 1 :])
    )

    # Each tau_k counts for every start state at or above k.
    with np.errstate(divide="ignore"):  # no start weight above k: log 0 = -inf
        log_reach = np.log(np.cumsum(weights[::-1])[::-1][target + 1 :])
    return float(logsumexp(log_tau + log_reach))


def _check_chain(
    birth_rates: ArrayLike, death_rates: ArrayLike, start: ArrayLike, target: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate the inputs of `log_mean_passage_time`; return them as arrays."""
    births = _rate_array("birth_rates", birth_rates)
    deaths = _rate_array("death_rates", death_rates)
    if births.size != deaths.size or births.size < 2:
        rule = "must have the same length as `death_rates`, at least 2 states"
        raise InvalidParameterError("birth_rates", rule, births.size)
    if not np.all(births[:-1] > 0.0):
        rule = "must be positive below the top state"
        raise InvalidParameterError("birth_rates", rule, float(births[:-1].min()))
    if not np.all(deaths[1:] > 0.0):
        rule = "must be positive above state 0"
        raise InvalidParameterError("death_rates", rule, float(deaths[1:].min()))
    top = births.size - 1
    level = check_integer("target", target, minimum=0)
    if level >= top:
        raise InvalidParameterError(
            "target", f"must be below the top state {top}", level
        )
    weights = np.asarray(start, dtype=np.float64).ravel()
    if weights.shape != births.shape or not np.all(np.isfinite(weights)):
        rule = f"must be {births.size} finite weights"
        raise InvalidParameterError("start", rule, weights.size)
    if np.any(weights < 0.0) or not np.any(weights[level + 1 :] > 0.0):
        rule = "must be non-negative with weight above `target`"
        raise InvalidParameterError("start", rule, float(weights.sum()))
    return births, deaths, weights / weights.sum()


def _rate_array(name: str, values: ArrayLike) -> FloatArray:
    """Return finite, non-negative rates as a float array."""
    try:
        rates = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InvalidParameterError(name, "must be numbers", values) from None
    if not np.all(np.isfinite(rates)) or np.any(rates < 0.0):
        raise InvalidParameterError(name, "must be finite and non-negative", values)
    return rates


# -- the reduction of the retry chain ------------------------------------------------


@dataclass(frozen=True)
class _Reduced:
    """The reduced chain: rates per live count, and the region thresholds."""

    births: FloatArray
    deaths: FloatArray
    servers: int
    good_queue: int
    bad_queue: int


def reduced_birth_death(
    *,
    arrival_rate: float,
    service_rate: float,
    servers: int,
    timeout: float,
    cancel_abandoned: bool,
    retry_probability: float,
    queue_limit: int | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Return the birth and death rates of the live-backlog reduction.

    Parameters
    ----------
    arrival_rate
        Fresh requests per second ``lambda``.
    service_rate
        Completions per second of one server ``mu``.
    servers
        Number of servers ``c``.
    timeout
        Mean patience (s) of a waiting client, taken as exponential.
    cancel_abandoned
        Whether a request whose client gave up leaves the queue (else it
        stays as an orphan and is served first).
    retry_probability
        Probability ``p`` that a client that gave up retries (0: no retries).
    queue_limit
        Most waiting requests; ``None``: unbounded (the reduced chain is cut
        where its stationary weight is ``e^-60`` below its peak).

    Returns
    -------
    births, deaths : numpy.ndarray
        Rates (per second) for the live counts ``k = 0..M``, the entry ``k``
        of each array; ``M - c`` is the top of the live queue.

    Raises
    ------
    InvalidParameterError
        A rate or count out of range, or an unbounded queue that retries
        every give-up (``p = 1``: the reduced backlog would grow for ever).

    Notes
    -----
    The rates of the module docstring. Without a queue limit the top is the
    first state past the upper equilibrium (where births fall below deaths
    for good) whose weight has fallen 60 nats below the peak.

    Examples
    --------
    >>> births, deaths = reduced_birth_death(
    ...     arrival_rate=1.0, service_rate=1.0, servers=1, timeout=2.0,
    ...     cancel_abandoned=True, retry_probability=0.0, queue_limit=2)
    >>> births.tolist(), deaths.tolist()
    ([1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.5, 2.0])
    """
    reduced = _reduce(
        arrival_rate,
        service_rate,
        servers,
        timeout,
        cancel_abandoned,
        retry_probability,
        queue_limit,
    )
    return reduced.births, reduced.deaths


def _reduce(  # noqa: PLR0917 (the chain's parameters, one each)
    arrival_rate: float,
    service_rate: float,
    servers: int,
    timeout: float,
    cancel_abandoned: bool,
    retry_probability: float,
    queue_limit: int | None,
) -> _Reduced:
    """Build the reduced chain (validated)."""
    lam = check_positive("arrival_rate", arrival_rate)
    mu = check_positive("service_rate", service_rate)
    c = check_integer("servers", servers)
    nu = 1.0 / check_positive("timeout", timeout)
    p = check_probability("retry_probability", retry_probability)
    if not isinstance(cancel_abandoned, bool):
        raise InvalidParameterError(
            "cancel_abandoned", "must be True or False", cancel_abandoned
        )
    wanted = max(math.ceil(c * mu / nu), c + 1)
    room = _queue_room(lam, c, nu, p, queue_limit)
    if queue_limit is None:
        # Unbounded: the room is a truncation, and reaches the bad region.
        room = max(room, wanted)
    if room == 0:
        rule = "must be at least 1: without a queue there is no backlog to escape"
        raise InvalidParameterError("queue_limit", rule, queue_limit)
    # The bad region as in `RetryChain.default_regions`: at least c mu / nu
    # waiting (most attempts time out), above the good region's c; a full
    # queue stands in where the room is shorter; the good region shrinks below
    # it if the whole queue is shorter than c.
    bad = min(wanted, room)
    good = min(c, bad - 1)

    # Live counts k = 0..c+room; L = k - c of them wait.
    k = np.arange(c + room + 1, dtype=np.float64)
    waiting = np.maximum(k - c, 0.0)
    births = lam + p * nu * waiting
    births[-1] = 0.0
    busy = np.minimum(k, c) * mu
    if cancel_abandoned:
        deaths = busy + nu * waiting
    else:
        deaths = np.where(k <= c, busy, np.maximum(nu * waiting, c * mu))
    if queue_limit is None:
        # The cut drops a negligible tail, never the bad region.
        births, deaths = _cut(births, deaths, lowest_top=c + bad)
    return _Reduced(births, deaths, c, good, bad)


def _queue_room(
    lam: float, c: int, nu: float, p: float, queue_limit: int | None
) -> int:
    """Return the live-queue room: the limit, or a level past the upper equilibrium."""
    if queue_limit is not None:
        return check_integer("queue_limit", queue_limit, minimum=0)
    if p >= 1.0:
        rule = "must be below 1 with an unbounded queue (the backlog never falls)"
        raise InvalidParameterError("retry_probability", rule, p)
    # Births equal deaths at most at L = lambda / ((1 - p) nu) (all give up).
    upper = lam / ((1.0 - p) * nu)
    # Past it births/deaths <= (lambda + p nu L)/(nu L), which falls to below
    # (1 + p)/2 by L = 2 upper: 60 nats more need at most 60 / log(2/(1+p)).
    extra = 60.0 / math.log(2.0 / (1.0 + p))
    return math.ceil(2.0 * upper + extra + 10.0 * math.sqrt(upper) + c)


def _cut(
    births: FloatArray, deaths: FloatArray, *, lowest_top: int
) -> tuple[FloatArray, FloatArray]:
    """Cut an unbounded reduced chain where its weight is far below its peak.

    The top is never below ``lowest_top``.
    """
    log_pi = np.concatenate(([0.0], np.cumsum(np.log(births[:-1] / deaths[1:]))))
    peak = int(np.argmax(log_pi))
    far = np.flatnonzero(log_pi[peak:] < log_pi[peak] - _TAIL_NATS)
    if far.size == 0:
        return births, deaths
    top = max(peak + int(far[0]), lowest_top)
    if top >= births.size - 1:
        return births, deaths
    births = births[: top + 1].copy()
    births[-1] = 0.0
    return births, deaths[: top + 1]


def estimate_escape_time(
    *,
    arrival_rate: float,
    service_rate: float,
    servers: int,
    timeout: float,
    cancel_abandoned: bool,
    retry_probability: float,
    queue_limit: int | None = None,
) -> EscapeEstimate:
    """Estimate the escape time of a retry chain by the birth-death reduction.

    Parameters
    ----------
    arrival_rate, service_rate, servers, timeout, cancel_abandoned
        As in `retrystorm.RetryChain` (one patience phase: exponential).
    retry_probability
        Probability that a client that gave up retries; 0 without retries.
    queue_limit
        Most waiting requests, or ``None``.

    Returns
    -------
    EscapeEstimate
        From the bad region (queue at least ``c mu timeout``, the chain's
        default) to the good one (queue at most ``c``), started from the
        reduced chain's stationary law on the bad region.

    Raises
    ------
    InvalidParameterError
        See `reduced_birth_death`.

    Notes
    -----
    `REDUCTION_ACCURACY` states the measured error against the exact chain
    (`retrystorm.RetryChain.escape_time`); the tests hold it.

    Examples
    --------
    One server, ``lambda = 0.7``, ``mu = 1``, patience 2 s, orphans kept and
    retries with ``p = 2/3``:

    >>> estimate = estimate_escape_time(
    ...     arrival_rate=0.7, service_rate=1.0, servers=1, timeout=2.0,
    ...     cancel_abandoned=False, retry_probability=2 / 3)
    >>> estimate.method, round(estimate.expected_seconds, 1)
    ('birth-death reduction', 11.4)
    """
    reduced = _reduce(
        arrival_rate,
        service_rate,
        servers,
        timeout,
        cancel_abandoned,
        retry_probability,
        queue_limit,
    )
    log_time = _reduced_log_time(reduced)
    return EscapeEstimate(
        method="birth-death reduction",
        expected_seconds=_exp_or_inf(log_time),
        log10_seconds=log_time / math.log(10.0),
        from_region=f"at least {reduced.bad_queue:,} live "
        f"request{'' if reduced.bad_queue == 1 else 's'} waiting",
        to_region=f"at most {reduced.good_queue:,} waiting",
        scale=None,
        state_count=int(reduced.births.size),
        accuracy=REDUCTION_ACCURACY,
        notes=(
            (
                "one-dimensional reduction of the live backlog; the retry orbit "
                "is taken as quasi-static and the orphan backlog is forgotten"
            ),
        ),
    )


def _reduced_log_time(reduced: _Reduced) -> float:
    """Mean passage time (log s) from the bad region's law to the good region."""
    births, deaths = reduced.births, reduced.deaths
    log_pi = np.concatenate(([0.0], np.cumsum(np.log(births[:-1] / deaths[1:]))))
    first_bad = reduced.servers + reduced.bad_queue
    # The stationary law restricted to the bad region, relative to its peak there.
    weights = np.zeros(births.size)
    bad = log_pi[first_bad:]
    weights[first_bad:] = np.exp(bad - bad.max())
    target = reduced.servers + reduced.good_queue
    return log_mean_passage_time(births, deaths, weights, target)


def _exp_or_inf(log_value: float) -> float:
    """``exp(log_value)``, or ``inf`` beyond a double."""
    return (
        math.exp(log_value) if log_value < math.log(np.finfo(float).max) else math.inf
    )


# -- the scenario --------------------------------------------------------------------


def escape_time(
    scenario: Scenario, *, max_states: int = EXACT_STATE_BUDGET
) -> EscapeEstimate:
    """Return the expected time for the scenario's system to escape by chance.

    Parameters
    ----------
    scenario
        A validated `retrystorm.Scenario`; its steady system after the
        trigger is mapped to a chain by `retrystorm.chain_from_scenario`.
    max_states
        The exact chain is solved at full size if it has at most this many
        states; else the birth-death reduction is used.

    Returns
    -------
    EscapeEstimate
        The expected time from the bad region to the good one, the method,
        its accuracy and what it leaves out.

    Raises
    ------
    InvalidParameterError
        ``max_states`` is not a positive integer.

    Notes
    -----
    Exact: `retrystorm.RetryChain.escape_time` between the chain's default
    regions (a full queue stands in for the bad region when no state reaches
    the default threshold). Reduction: `estimate_escape_time` with the
    chain's parameters at full size. Both use one exponential patience phase
    for the timeout.

    Examples
    --------
    The incident: far too large for the exact chain, and stuck for good.

    >>> from retrystorm.scenario import default_scenario
    >>> estimate = escape_time(default_scenario())
    >>> estimate.method, estimate.never_in_practice
    ('birth-death reduction', True)
    """
    budget = check_integer("max_states", max_states)
    try:
        chain = chain_from_scenario(scenario, scale=1.0, max_states=budget)
    except StateSpaceTooLargeError:
        return _reduced_estimate(scenario)
    return _exact_estimate(chain)


def _exact_estimate(chain: RetryChain) -> EscapeEstimate:
    """Solve the chain's hitting-time equations from the bad to the good region."""
    good, bad = chain.default_regions()
    if bad is None:
        bad = Region.bad(min_queue=chain.queue_levels)
    hitting = chain.expected_hitting_time(bad, good)
    seconds = float(hitting.mean)
    return EscapeEstimate(
        method="exact chain",
        expected_seconds=seconds,
        log10_seconds=math.log10(seconds) if seconds > 0.0 else -math.inf,
        from_region=_describe(bad, "at least", "or"),
        to_region=_describe(good, "at most", "and"),
        scale=1.0,
        state_count=int(chain.state_count),
        accuracy=_EXACT_ACCURACY,
        notes=("started from the stationary law restricted to the bad region",),
    )


def _describe(region: Region, bound: str, joint: str) -> str:
    """Describe a region's thresholds in queue terms."""
    parts = []
    if region.queue is not None:
        parts.append(f"{bound} {region.queue:,} waiting")
    if region.orbit is not None:
        parts.append(f"{bound} {region.orbit:,} waiting to retry")
    return f" {joint} ".join(parts)


def _reduced_estimate(scenario: Scenario) -> EscapeEstimate:
    """Estimate by the reduction, with the scenario's chain parameters at full size."""
    mapping = _ScenarioMapping.of(scenario)
    limit = scenario.proxy.queue_limit
    probability = mapping.retry_probability if mapping.retry_rate is not None else 0.0
    return estimate_escape_time(
        arrival_rate=scenario.clients.peak_request_rate,
        service_rate=mapping.service_rate,
        servers=scenario.proxy.pool_size,
        timeout=mapping.timeout,
        cancel_abandoned=mapping.cancel_abandoned,
        retry_probability=probability,
        queue_limit=round(limit) if math.isfinite(limit) else None,
    )
