"""The exact continuous-time Markov chain of a queue with timeouts and retries.

The fluid model says whether a system recovers *on average*; a small system is
noisy, and a stuck state may still escape by chance. This module builds the
stochastic model itself as a sparse generator and solves it exactly (up to a
reported truncation): the stationary law, the transient law from any start,
the expected time to get back to a good region, the spectral gap, and the
probability mass of a bad region [Isaacs2025], [Stewart2009].

The system
----------
Fresh requests arrive in a Poisson stream at ``arrival_rate``. ``servers``
identical servers (database connections) serve one request each for an
exponential time of rate ``service_rate``. A request that finds every server
busy waits in one queue of at most ``queue_limit`` requests; an *attempt*
(fresh or retried) that finds the queue full is *blocked*.

A waiting request has a patience (its client's timeout) that runs while it
waits; a request that reaches a server is served to the end and succeeds. The
patience is either exponential (``abandonment_rate``) or a fixed ``timeout``
approximated by ``timeout_phases`` exponential phases (an Erlang law of mean
``timeout``). When it runs out the client gives up on that attempt; then

- with ``cancel_abandoned`` the request leaves the queue (Erlang-A);
- otherwise it stays queued as an *orphan* and is served later as *wasted
  work*, unless the proxy drops it first (after an exponential time of mean
  ``orphan_timeout``).

A blocked attempt or a client that gave up retries with probability
``retry_probability``: the request joins the *orbit* and each orbiting
request retries after an exponential time of rate ``retry_rate``
[FalinTempleton1997]. With probability ``1 - retry_probability`` it is lost.
Without ``retry_rate`` there is no orbit and every failure is final.

The states
----------
A state is ``(busy, counts, orbit)``:

- ``busy`` in ``0..servers``: busy servers. The servers never idle while
  requests wait, so ``busy < servers`` implies an empty queue;
- ``counts``, the waiting requests by class: ``timeout_phases`` classes of live
  requests, one per patience phase (one class without patience or with
  exponential patience), plus one class of orphans when abandoned requests
  are not cancelled; at most ``queue_limit`` in all;
- ``orbit`` in ``0..orbit_limit``: requests waiting to retry.

With ``d`` waiting classes and queue room ``L`` there are ``servers +
C(L + d, d)`` server-and-queue configurations, times ``orbit_limit + 1``.
The classic models keep ``d = 1``, a birth-death queue (times the orbit);
orphans and patience phases are tracked only when asked for, because each
adds a dimension.

The transitions (rates per second)
----------------------------------
With ``lambda = arrival_rate``, ``mu = service_rate``, ``p =
retry_probability``, ``k = timeout_phases``, ``n_i`` live requests in patience
phase ``i`` and phase rate ``nu = k / timeout`` (or ``theta =
abandonment_rate``, ``k = 1``):

- fresh arrival, rate ``lambda``: served if a server is idle, else queued in
  phase 1, else blocked;
- retry, rate ``orbit * retry_rate``: the orbit loses one and the attempt is
  handled as an arrival;
- a blocked attempt joins the orbit with ``p`` (a blocked retry stays in it),
  else is lost;
- service completion, rate ``busy * mu``: the next waiting request starts
  service, or a server goes idle;
- patience phase ``i < k``, rate ``n_i nu``: the request moves to phase
  ``i + 1``;
- patience runs out, rate ``n_k nu``: the request is removed (cancelled) or
  becomes an orphan; its client retries (orbit ``+ 1``) with ``p``;
- the proxy drops an orphan, rate ``orphans / orphan_timeout``.

The next request to start service is an orphan if there is one, else a live
request of the highest patience phase. This is the order of a FIFO queue when
the patience is a fixed timeout (the oldest requests are those that timed out
first), and the Erlang phases tend to it as ``timeout_phases`` grows, so the
chain tends to M/M/c+D (`retrystorm.MMcD`); `RetryChain.phase_approximation`
reports the remaining error.

Goodput is the rate at which live requests start service, wasted work the
rate at which orphans do; in steady state these are the completion rates.

Truncation
----------
The orbit is cut at ``orbit_limit``: a request that would join a full orbit is
lost. An unbounded queue (``queue_limit=None``) is cut at ``queue_truncation``
(by default the lowest level that a dominating queue, geometric or Poisson,
exceeds with probability below 1e-13): arrivals that would exceed it are
dropped and retries wait in the orbit. The stationary probability of the cut levels
and the loss rate they cause are reported (`StationaryResult.truncation_mass`,
`StationaryResult.truncation_loss_rate`) and a `RuntimeWarning` is issued
when the mass exceeds 1e-6.

Solutions
---------
Linear systems are solved by sparse LU (minimum-degree order for one waiting
class, nested dissection for several) or, for chains of several classes above
200,000 states, by GMRES with a Gauss-Seidel preconditioner
(`RetryChain.solver_method`). Regions (`Region`) are thresholds on the queue
and the orbit; `RetryChain.default_regions` gives the good and bad regions
the command line uses.

What the chain leaves out (against the scenario specification): the client
timeout counts only waiting, not service; backoff delays are exponential and
the number of retries geometric; pods, circuit breakers, locks and other
events are not modelled. `chain_from_scenario` lists what it drops.

References
----------
[Isaacs2025] A CTMC over queue length and retry orbit; recovery times from
hitting times and the spectral gap.
[FalinTempleton1997] Retrial queues (the orbit and its M/M/1 closed form).
[GarnettMandelbaumReiman2002] Erlang-A, the special case with exponential
patience.
[Stewart2009] Numerical solution of Markov chains.
[George1973] Nested dissection.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import scipy.stats
from numpy.typing import NDArray

from retrystorm import _sparse
from retrystorm._validation import (
    check_integer,
    check_positive,
    check_probability,
)
from retrystorm.errors import InvalidParameterError, StateSpaceTooLargeError
from retrystorm.fluid import saturated_service_rate
from retrystorm.mmcd import MMcD
from retrystorm.scenario import Backoff, Scenario

__all__ = [
    "ChainState",
    "HittingTime",
    "PhaseApproximation",
    "Region",
    "RetryChain",
    "StationaryResult",
    "TransientResult",
    "chain_from_scenario",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

# Tail probability below which an unbounded queue is cut (automatic level).
TRUNCATION_TAIL = 1e-13
# Stationary mass at the truncation levels above which a warning is issued.
TRUNCATION_WARNING = 1e-6
# The default cap on the number of states.
DEFAULT_MAX_STATES = 2_000_000
# Chains of several waiting classes up to this size are solved by sparse LU.
_DIRECT_LIMIT = 200_000


# -- regions and states ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChainState:
    """One state of a `RetryChain`, in counts of requests.

    Parameters
    ----------
    busy
        Busy servers.
    waiting
        Live requests waiting (their clients still wait); placed in the first
        patience phase, as if they had just arrived.
    orphans
        Waiting requests whose clients have given up (only for chains with
        ``cancel_abandoned=False``).
    orbit
        Requests waiting to retry.

    Examples
    --------
    >>> ChainState(busy=2, waiting=5)
    ChainState(busy=2, waiting=5, orphans=0, orbit=0)
    """

    busy: int
    waiting: int = 0
    orphans: int = 0
    orbit: int = 0

    def __post_init__(self) -> None:
        for name in ("busy", "waiting", "orphans", "orbit"):
            value = check_integer(name, getattr(self, name), minimum=0)
            object.__setattr__(self, name, value)


@dataclass(frozen=True, kw_only=True)
class Region:
    """A set of chain states picked by thresholds on the queue and the orbit.

    Build one with `Region.good` or `Region.bad`. The queue counts every
    waiting request, live or orphan; the orbit counts requests waiting to
    retry.

    Parameters
    ----------
    kind
        ``"good"``: the queue is at most ``queue`` *and* the orbit at most
        ``orbit``. ``"bad"``: the queue is at least ``queue`` *or* the orbit at
        least ``orbit``.
    queue
        The queue threshold (requests); ``None``: no condition on the queue.
    orbit
        The orbit threshold (requests); ``None``: no condition on the orbit.

    Examples
    --------
    >>> Region.bad(min_queue=50)
    Region(kind='bad', queue=50, orbit=None)
    """

    kind: Literal["good", "bad"]
    queue: int | None = None
    orbit: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("good", "bad"):
            raise InvalidParameterError("kind", "must be 'good' or 'bad'", self.kind)
        for name in ("queue", "orbit"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_integer(name, value, minimum=0))
        if self.kind == "bad" and self.queue is None and self.orbit is None:
            rule = "needs a queue or an orbit threshold (it would be empty)"
            raise InvalidParameterError("region", rule, self)

    @classmethod
    def good(
        cls, *, max_queue: int | None = None, max_orbit: int | None = None
    ) -> Region:
        """Return the states with queue ``<= max_queue`` and orbit ``<= max_orbit``."""
        return cls(kind="good", queue=max_queue, orbit=max_orbit)

    @classmethod
    def bad(
        cls, *, min_queue: int | None = None, min_orbit: int | None = None
    ) -> Region:
        """Return the states with queue ``>= min_queue`` or orbit ``>= min_orbit``."""
        return cls(kind="bad", queue=min_queue, orbit=min_orbit)

    def contains(self, queue: IntArray, orbit: IntArray) -> BoolArray:
        """Return a mask of the states (given by their queue and orbit) inside."""
        if self.kind == "good":
            inside = np.ones(queue.shape, dtype=bool)
            if self.queue is not None:
                inside &= queue <= self.queue
            if self.orbit is not None:
                inside &= orbit <= self.orbit
            return inside
        inside = np.zeros(queue.shape, dtype=bool)
        if self.queue is not None:
            inside |= queue >= self.queue
        if self.orbit is not None:
            inside |= orbit >= self.orbit
        return inside


# -- results ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, eq=False)
class StationaryResult:
    """The stationary law of a `RetryChain` and its summaries.

    Rates are per second, counts in requests. Every summary is an expectation
    under the stationary law ``pi``.

    Attributes
    ----------
    probabilities
        ``pi``, one entry per state (see `RetryChain.state_table`).
    arrival_rate
        The fresh arrival rate of the chain, per second.
    mean_busy
        Mean busy servers.
    mean_queue
        Mean waiting requests (live and orphans).
    mean_orphans
        Mean waiting orphans.
    mean_orbit
        Mean requests in the orbit.
    all_busy_probability
        Probability that every server is busy (an arriving fresh request must
        wait: Erlang C in M/M/c).
    throughput
        Service completions per second, ``mu E[busy]``.
    goodput
        Live requests starting service per second (successes).
    wasted_rate
        Orphans starting service per second (wasted work).
    attempt_rate
        Attempts (fresh and retried) per second.
    retry_attempt_rate
        Retried attempts per second, ``retry_rate E[orbit]``.
    blocking_probability
        Share of attempts that find the queue full (a real ``queue_limit``).
    abandonment_probability
        Share of attempts whose client gives up while they wait.
    loss_rate
        Requests that fail for good, per second (give-ups without retry and
        truncation losses).
    truncation_mass
        Probability of the states at a truncation level (the orbit limit, the
        truncation of an unbounded queue).
    truncation_loss_rate
        Requests per second lost to truncation rather than to the model.
    residual
        ``max |pi Q|`` relative to the largest exit rate: the solver error.
    in_system_distribution
        ``P(busy + queue = n)`` for ``n = 0, 1, ...``.
    orbit_distribution
        ``P(orbit = j)`` for ``j = 0..orbit_limit``.
    """

    probabilities: FloatArray = field(repr=False)
    arrival_rate: float
    mean_busy: float
    mean_queue: float
    mean_orphans: float
    mean_orbit: float
    all_busy_probability: float
    throughput: float
    goodput: float
    wasted_rate: float
    attempt_rate: float
    retry_attempt_rate: float
    blocking_probability: float
    abandonment_probability: float
    loss_rate: float
    truncation_mass: float
    truncation_loss_rate: float
    residual: float
    in_system_distribution: FloatArray = field(repr=False)
    orbit_distribution: FloatArray = field(repr=False)

    @property
    def wasted_share(self) -> float:
        """Share of service spent on orphans, ``wasted / (goodput + wasted)``."""
        total = self.goodput + self.wasted_rate
        return self.wasted_rate / total if total > 0.0 else 0.0

    @property
    def success_probability(self) -> float:
        """Share of fresh requests that eventually succeed, ``goodput / lambda``."""
        return min(1.0, self.goodput / self.arrival_rate)

    @property
    def mean_in_system(self) -> float:
        """Mean requests waiting or in service."""
        return self.mean_busy + self.mean_queue

    def summary(self) -> dict[str, float]:
        """Return the scalar summaries by name (for tables and JSON)."""
        names = (
            "mean_busy", "mean_queue", "mean_orphans", "mean_orbit",
            "all_busy_probability", "throughput", "goodput", "wasted_rate",
            "wasted_share", "attempt_rate", "retry_attempt_rate",
            "blocking_probability", "abandonment_probability", "loss_rate",
            "success_probability", "truncation_mass", "truncation_loss_rate",
            "residual",
        )  # fmt: skip
        return {name: float(getattr(self, name)) for name in names}


@dataclass(frozen=True, kw_only=True, eq=False)
class TransientResult:
    """The law of a `RetryChain` at given times, summarised.

    Attributes
    ----------
    times
        The times (s) after the start, increasing.
    mean_busy, mean_queue, mean_orphans, mean_orbit
        Expected counts at each time.
    throughput
        Expected completion rate at each time, per second.
    goodput
        Expected rate at which live requests start service, per second.
    wasted_rate
        Expected rate at which orphans start service, per second.
    region_mass
        Probability of the region passed to `RetryChain.transient` (by default
        the bad region) at each time.
    distributions
        The full laws, one row per time, if asked for; else ``None``.
    """

    times: FloatArray
    mean_busy: FloatArray
    mean_queue: FloatArray
    mean_orphans: FloatArray
    mean_orbit: FloatArray
    throughput: FloatArray
    goodput: FloatArray
    wasted_rate: FloatArray
    region_mass: FloatArray
    distributions: FloatArray | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class HittingTime:
    """Expected time to reach a target region, from a start region or state.

    Attributes
    ----------
    mean
        Expected time (s) from the start, weighted by the stationary law
        restricted to the start region (a state: that state); ``inf`` if the
        target may be missed for ever.
    worst
        The largest expected time (s) over the start states.
    worst_state
        A start state with that largest expected time.
    start_mass
        Stationary probability of the start region: how often the system is
        found there.
    """

    mean: float
    worst: float
    worst_state: ChainState
    start_mass: float


@dataclass(frozen=True, kw_only=True)
class PhaseApproximation:
    """How far ``k`` Erlang phases are from a fixed timeout.

    Attributes
    ----------
    phases, doubled_phases
        ``k`` and ``2k``.
    abandonment_probability, doubled_abandonment_probability
        The stationary abandonment probability with ``k`` and ``2k`` phases.
    mean_queue, doubled_mean_queue
        The stationary mean queue with ``k`` and ``2k`` phases.
    exact_abandonment_probability, exact_mean_queue
        M/M/c+D (`retrystorm.MMcD`), when the chain is that model (no orbit,
        abandoned requests cancelled, no queue limit); else ``None``.
    """

    phases: int
    doubled_phases: int
    abandonment_probability: float
    doubled_abandonment_probability: float
    mean_queue: float
    doubled_mean_queue: float
    exact_abandonment_probability: float | None
    exact_mean_queue: float | None

    @property
    def abandonment_change(self) -> float:
        """Change of the abandonment probability from ``k`` to ``2k`` phases."""
        return abs(self.doubled_abandonment_probability - self.abandonment_probability)

    @property
    def abandonment_error(self) -> float | None:
        """Error of the abandonment probability with ``k`` phases against M/M/c+D."""
        exact = self.exact_abandonment_probability
        return None if exact is None else abs(self.abandonment_probability - exact)


# -- the state space --------------------------------------------------------------


def _count_vectors(classes: int, levels: int) -> int:
    """Return how many vectors of ``classes`` counts sum to at most ``levels``."""
    return math.comb(levels + classes, classes)


def _vectors(classes: int, levels: int) -> IntArray:
    """All count vectors with sum <= ``levels``, in lexicographic order."""
    rows = np.zeros((1, 0), dtype=np.int64)
    remaining = np.array([levels], dtype=np.int64)
    for _ in range(classes):
        sizes = remaining + 1
        parent = np.repeat(np.arange(rows.shape[0]), sizes)
        starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
        value = np.arange(parent.size, dtype=np.int64) - starts
        rows = np.column_stack([rows[parent], value])
        remaining = remaining[parent] - value
    return rows


def _binomial_table(top: int, width: int) -> IntArray:
    """``table[n, k] = C(n, k)`` for ``n <= top``, ``k <= width`` (Pascal)."""
    table = np.zeros((top + 1, width + 1), dtype=np.int64)
    table[:, 0] = 1
    for n in range(1, top + 1):
        table[n, 1:] = table[n - 1, 1:] + table[n - 1, :-1]
    return table


def _rank(vectors: IntArray, levels: int, table: IntArray) -> IntArray:
    """Lexicographic rank of count vectors among those with sum <= ``levels``.

    Vectors before ``v`` differ first in coordinate ``i`` with a smaller value
    ``t < v_i``; the rest then sums to at most ``R_i - t`` over ``d - 1 - i``
    coordinates. Summing those counts over ``t`` (hockey-stick identity) gives
    ``sum_i C(R_i + m_i + 1, m_i + 1) - C(R_i - v_i + m_i + 1, m_i + 1)`` with
    ``m_i = d - 1 - i`` and ``R_i = levels - (v_0 + ... + v_(i-1))``.
    """
    classes = vectors.shape[1]
    rank = np.zeros(vectors.shape[0], dtype=np.int64)
    remaining = np.full(vectors.shape[0], levels, dtype=np.int64)
    for i in range(classes):
        m = classes - 1 - i
        value = vectors[:, i]
        rank += (
            table[remaining + m + 1, m + 1] - table[remaining - value + m + 1, m + 1]
        )
        remaining = remaining - value
    return rank


@dataclass(frozen=True, eq=False)
class _Layout:
    """The enumerated states: per-state counts and the index arithmetic."""

    servers: int
    live: int  # live classes (patience phases)
    orphan_class: bool
    levels: int  # queue room L
    orbit_size: int  # orbit_limit + 1
    busy: IntArray
    counts: IntArray  # (states, classes)
    orbit: IntArray
    config: IntArray
    table: IntArray

    @property
    def size(self) -> int:
        return int(self.busy.size)

    @property
    def classes(self) -> int:
        return int(self.counts.shape[1])

    @cached_property
    def queue(self) -> IntArray:
        return np.asarray(self.counts.sum(axis=1), dtype=np.int64)

    @cached_property
    def orphans(self) -> IntArray:
        if not self.orphan_class:
            return np.zeros(self.size, dtype=np.int64)
        return np.asarray(self.counts[:, -1], dtype=np.int64)

    def index(self, config: IntArray, orbit: IntArray) -> IntArray:
        return config * self.orbit_size + orbit

    def queue_config(self, counts: IntArray) -> IntArray:
        """Return the configuration index of full servers with these queue counts."""
        return self.servers + _rank(counts, self.levels, self.table)

    @cached_property
    def head(self) -> IntArray:
        """The class of the next request to start service (-1: queue empty)."""
        live = self.counts[:, : self.live]
        # Highest live phase holding a request: FIFO order for a fixed timeout.
        highest = self.live - 1 - np.argmax(live[:, ::-1] > 0, axis=1)
        head = np.where(live.sum(axis=1) > 0, highest, -1)
        if self.orphan_class:
            head = np.where(self.counts[:, -1] > 0, self.live, head)
        return np.asarray(head, dtype=np.int64)


def _build_layout(
    servers: int, live: int, orphan_class: bool, levels: int, orbit_size: int
) -> _Layout:
    """Enumerate configurations (idle servers, then full servers by queue) x orbit."""
    classes = live + int(orphan_class)
    vectors = _vectors(classes, levels)
    config_busy = np.concatenate(
        [np.arange(servers), np.full(vectors.shape[0], servers)]
    ).astype(np.int64)
    config_counts = np.vstack([np.zeros((servers, classes), dtype=np.int64), vectors])
    configs = config_busy.size
    return _Layout(
        servers=servers,
        live=live,
        orphan_class=orphan_class,
        levels=levels,
        orbit_size=orbit_size,
        busy=np.repeat(config_busy, orbit_size),
        counts=np.repeat(config_counts, orbit_size, axis=0),
        orbit=np.tile(np.arange(orbit_size, dtype=np.int64), configs),
        config=np.repeat(np.arange(configs, dtype=np.int64), orbit_size),
        table=_binomial_table(levels + classes + 1, classes + 1),
    )


def _available_memory() -> int | None:
    """Bytes of memory available to a new allocation, if the system says."""
    meminfo = Path("/proc/meminfo")
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _bytes_per_state(states: int, classes: int) -> int:
    """Return an upper estimate of the bytes one state costs, built and solved.

    About ``6 + 2 d`` transitions a state, stored three times while the
    sparse matrix is assembled and transposed (index, index, value: 24 bytes
    each), the per-state counts, and the LU factor of the stationary solve
    (12 bytes an entry). Its fill was measured at about ``3.5 log2(n)``
    entries a state on two-dimensional chains (one waiting class) and about
    ``14 n^(1/3)`` on three-dimensional ones in nested-dissection order;
    larger chains of several classes are solved iteratively, without fill.
    """
    transitions = 6 + 2 * classes
    if classes == 1:
        fill = 4.0 * math.log2(max(states, 2))
    elif states <= _DIRECT_LIMIT:
        fill = 16.0 * states ** (1.0 / 3.0)
    else:
        fill = 4.0 * transitions
    return int(3 * 24 * transitions + 8 * (classes + 6) + 12 * fill)


# -- the chain ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RetryChain:
    """The continuous-time Markov chain of a queue with timeouts and retries.

    The states, transitions and truncation are described in the module
    docstring. The generator is built on first use and cached, as are the
    stationary law and the spectral gap.

    Parameters
    ----------
    arrival_rate
        Fresh requests per second ``lambda`` (finite, > 0).
    service_rate
        Completions per second of one busy server ``mu`` (finite, > 0).
    servers
        Number of servers ``c``, a positive integer.
    queue_limit
        Most waiting requests (not counting those in service); ``None`` for an
        unbounded queue, truncated at ``queue_truncation``.
    abandonment_rate
        Rate ``theta`` (per second) at which a waiting client gives up:
        exponential patience of mean ``1 / theta`` s. Exclusive with
        ``timeout``.
    timeout
        A fixed client patience (s) while waiting, approximated by
        ``timeout_phases`` Erlang phases. Exclusive with ``abandonment_rate``.
    timeout_phases
        Number of Erlang phases ``k`` for ``timeout`` (1: exponential).
    cancel_abandoned
        True: a request whose client gave up leaves the queue. False: it stays
        as an orphan and its service is wasted work.
    orphan_timeout
        Mean time (s) an orphan stays queued before the proxy drops it
        (exponential); ``None``: orphans wait until served. Only with
        ``cancel_abandoned=False``.
    retry_rate
        Rate (per second) at which each orbiting request retries; ``None``: no
        orbit, failures are final.
    retry_probability
        Probability that a blocked attempt or a client that gave up retries
        (``1 -`` the give-up probability); 1 is the classic persistent orbit.
    orbit_limit
        Truncation of the orbit (requests); required with ``retry_rate``.
    queue_truncation
        Truncation level of an unbounded queue; default: automatic (module
        docstring). Only with ``queue_limit=None``.
    max_states
        The largest state space allowed.

    Raises
    ------
    InvalidParameterError
        A rate that is not finite and positive, a count that is not a
        non-negative integer, a probability outside [0, 1], or parameters that
        do not go together (both patience forms, phases without a timeout, an
        orbit limit without a retry rate, an unbounded queue that cannot be
        truncated automatically).
    StateSpaceTooLargeError
        The chain would have more than ``max_states`` states or need more
        memory than is available; raised before anything is allocated.

    Notes
    -----
    Special cases, each checked against its closed form in the tests:
    M/M/c (Erlang C) with no patience, orbit or limit; M/M/c/K with
    ``queue_limit = K - c``; Erlang-A (M/M/c+M) with ``abandonment_rate``;
    M/M/c+D as the limit of many ``timeout_phases``; and the classic M/M/1
    retrial queue with ``queue_limit=0``, ``retry_probability=1``, whose mean
    orbit is ``lambda^2 (mu + theta) / (mu theta (mu - lambda))``
    [FalinTempleton1997].

    References
    ----------
    [Isaacs2025], [FalinTempleton1997], [GarnettMandelbaumReiman2002],
    [Stewart2009].

    Examples
    --------
    An M/M/2 queue with a room of 3 waiting requests (M/M/2/5):

    >>> chain = RetryChain(arrival_rate=1.0, service_rate=1.0, servers=2,
    ...                    queue_limit=3)
    >>> chain.state_count
    6
    >>> round(chain.stationary().blocking_probability, 6)
    0.021277
    """

    arrival_rate: float
    service_rate: float
    servers: int
    queue_limit: int | None = None
    abandonment_rate: float | None = None
    timeout: float | None = None
    timeout_phases: int = 1
    cancel_abandoned: bool = True
    orphan_timeout: float | None = None
    retry_rate: float | None = None
    retry_probability: float = 1.0
    orbit_limit: int | None = None
    queue_truncation: int | None = None
    max_states: int = DEFAULT_MAX_STATES

    def __post_init__(self) -> None:
        self._check_rates()
        self._check_patience()
        self._check_orbit()
        self._check_queue()
        self._check_size()

    # -- validation ---------------------------------------------------------

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def _check_rates(self) -> None:
        for name in ("arrival_rate", "service_rate"):
            self._set(name, check_positive(name, getattr(self, name)))
        self._set("servers", check_integer("servers", self.servers))
        self._set("max_states", check_integer("max_states", self.max_states))

    def _check_patience(self) -> None:
        if self.abandonment_rate is not None and self.timeout is not None:
            rule = "cannot be given together with `timeout` (choose one patience)"
            raise InvalidParameterError("abandonment_rate", rule, self.abandonment_rate)
        for name in ("abandonment_rate", "timeout", "orphan_timeout"):
            value = getattr(self, name)
            if value is not None:
                self._set(name, check_positive(name, value))
        self._set(
            "timeout_phases", check_integer("timeout_phases", self.timeout_phases)
        )
        if self.timeout_phases != 1 and self.timeout is None:
            rule = "needs a `timeout` (phases approximate a fixed timeout)"
            raise InvalidParameterError("timeout_phases", rule, self.timeout_phases)
        if not isinstance(self.cancel_abandoned, bool):
            raise InvalidParameterError(
                "cancel_abandoned", "must be True or False", self.cancel_abandoned
            )
        if self.orphan_timeout is not None and (
            self.cancel_abandoned or not self.patient
        ):
            rule = "needs a patience and cancel_abandoned=False (orphans to drop)"
            raise InvalidParameterError("orphan_timeout", rule, self.orphan_timeout)

    def _check_orbit(self) -> None:
        self._set(
            "retry_probability",
            check_probability("retry_probability", self.retry_probability),
        )
        if self.retry_rate is not None:
            self._set("retry_rate", check_positive("retry_rate", self.retry_rate))
            if self.orbit_limit is None:
                rule = "must be given with `retry_rate` (it truncates the orbit)"
                raise InvalidParameterError("orbit_limit", rule, None)
        if self.orbit_limit is not None:
            if self.retry_rate is None:
                rule = "needs a `retry_rate` (there is no orbit without retries)"
                raise InvalidParameterError("orbit_limit", rule, self.orbit_limit)
            self._set("orbit_limit", check_integer("orbit_limit", self.orbit_limit))

    def _check_queue(self) -> None:
        if self.queue_limit is not None:
            self._set(
                "queue_limit", check_integer("queue_limit", self.queue_limit, minimum=0)
            )
            if self.queue_truncation is not None:
                rule = "applies only to an unbounded queue (`queue_limit=None`)"
                raise InvalidParameterError(
                    "queue_truncation", rule, self.queue_truncation
                )
        elif self.queue_truncation is not None:
            self._set(
                "queue_truncation",
                check_integer("queue_truncation", self.queue_truncation),
            )

    def _check_size(self) -> None:
        levels = self.queue_levels
        configs = self.servers + _count_vectors(self.classes, levels)
        states = configs * self.orbit_size
        per_state = _bytes_per_state(states, self.classes)
        needed = states * per_state
        if states > self.max_states:
            raise StateSpaceTooLargeError(states, self.max_states, needed)
        available = _available_memory()
        if available is not None and needed > available:
            raise StateSpaceTooLargeError(states, available // per_state, needed)

    # -- derived sizes ------------------------------------------------------

    @property
    def patient(self) -> bool:
        """Whether waiting requests have a patience (a timeout)."""
        return self.abandonment_rate is not None or self.timeout is not None

    @property
    def has_orbit(self) -> bool:
        """Whether failed requests may retry from an orbit."""
        return self.retry_rate is not None

    @property
    def tracks_orphans(self) -> bool:
        """Whether orphans (abandoned but still queued) are a class of the state."""
        return self.patient and not self.cancel_abandoned

    @property
    def classes(self) -> int:
        """Number of waiting classes ``d``: patience phases, plus orphans."""
        return self.timeout_phases + int(self.tracks_orphans)

    @property
    def orbit_size(self) -> int:
        """Number of orbit levels, ``orbit_limit + 1`` (1 without an orbit)."""
        return 1 if self.orbit_limit is None else self.orbit_limit + 1

    @property
    def phase_rate(self) -> float:
        """Rate (per second) of one patience phase; 0 without a patience."""
        if self.timeout is not None:
            return self.timeout_phases / self.timeout
        return self.abandonment_rate if self.abandonment_rate is not None else 0.0

    @property
    def effective_retry_probability(self) -> float:
        """Probability that a failed request retries (0 without an orbit)."""
        return self.retry_probability if self.has_orbit else 0.0

    @cached_property
    def queue_levels(self) -> int:
        """The queue room ``L``: the limit, or the truncation of an unbounded queue."""
        if self.queue_limit is not None:
            return self.queue_limit
        if self.queue_truncation is not None:
            return self.queue_truncation
        return self._automatic_truncation()

    @property
    def truncated_queue(self) -> bool:
        """Whether the queue's room is a truncation rather than a real limit."""
        return self.queue_limit is None

    def _automatic_truncation(self) -> int:
        """Return the lowest level a dominating queue exceeds with probability < 1e-13.

        Attempts arrive at most at ``Lambda = lambda + retry_rate orbit_limit``.
        Two dominating queues bound the number waiting: a geometric one when
        ``Lambda < c mu``; and, when every waiting request leaves within its
        patience (plus the orphan timeout), an infinite-server queue whose
        stationary count is Poisson with mean ``Lambda`` times the mean time a
        request can wait. The smaller level of the two is used.
        """
        births = self.arrival_rate + (self.retry_rate or 0.0) * (self.orbit_size - 1)
        capacity = self.servers * self.service_rate
        levels = []
        if births < capacity:
            ratio = math.log(births / capacity)
            levels.append(math.ceil(math.log(TRUNCATION_TAIL) / ratio))
        if self.patient and (self.cancel_abandoned or self.orphan_timeout is not None):
            patience = (
                self.timeout if self.timeout is not None else 1.0 / self.phase_rate
            )
            longest = patience + (self.orphan_timeout or 0.0)
            tail = scipy.stats.poisson.isf(TRUNCATION_TAIL, births * longest)
            levels.append(int(tail) + 1)
        if not levels:
            rule = (
                "must be given: the queue is unbounded and can grow without limit "
                f"(arrivals up to {births:g}/s against service {capacity:g}/s)"
            )
            raise InvalidParameterError("queue_truncation", rule, None)
        return max(1, min(levels))

    @property
    def state_count(self) -> int:
        """Number of states of the chain (computed without building it)."""
        configs = self.servers + _count_vectors(self.classes, self.queue_levels)
        return configs * self.orbit_size

    # -- the generator ------------------------------------------------------

    @cached_property
    def _layout(self) -> _Layout:
        return _build_layout(
            self.servers,
            self.timeout_phases,
            self.tracks_orphans,
            self.queue_levels,
            self.orbit_size,
        )

    @cached_property
    def _elimination_order(self) -> IntArray | None:
        """Nested-dissection order for LU on chains of several classes."""
        if self.classes == 1:
            return None
        layout = self._layout
        coordinates = np.column_stack([layout.busy, layout.counts, layout.orbit])
        return _sparse.nested_dissection(coordinates)

    @cached_property
    def generator(self) -> sp.csr_matrix:
        """The generator ``Q`` (CSR): ``Q[i, j]`` the rate from state i to j."""
        return _assemble_generator(self, self._layout)

    def state_table(self) -> dict[str, IntArray]:
        """Return the per-state counts: ``busy``, ``queue``, ``orphans``, ``orbit``.

        Entry ``i`` of each array describes state ``i``, the order of every
        distribution this chain returns.
        """
        layout = self._layout
        return {
            "busy": layout.busy,
            "queue": layout.queue,
            "orphans": layout.orphans,
            "orbit": layout.orbit,
        }

    def state_index(self, state: ChainState) -> int:
        """Return the index of ``state``.

        Raises
        ------
        InvalidParameterError
            The state is not one of the chain's states.
        """
        layout = self._layout
        self._check_state(state)
        if state.busy < self.servers:
            config = state.busy
        else:
            counts = np.zeros((1, self.classes), dtype=np.int64)
            counts[0, 0] = state.waiting
            if self.tracks_orphans:
                counts[0, -1] = state.orphans
            config = int(layout.queue_config(counts)[0])
        return int(layout.index(np.array(config), np.array(state.orbit)))

    def _check_state(self, state: ChainState) -> None:
        if not isinstance(state, ChainState):
            raise InvalidParameterError("initial_state", "must be a ChainState", state)
        queued = state.waiting + state.orphans
        top = self.orbit_size - 1
        problems = [
            (state.busy > self.servers, f"busy must be at most {self.servers}"),
            (
                queued > 0 and state.busy < self.servers,
                "requests wait only if all busy",
            ),
            (queued > self.queue_levels, f"at most {self.queue_levels} may wait"),
            (
                state.orphans > 0 and not self.tracks_orphans,
                "this chain has no orphans",
            ),
            (state.orbit > top, f"the orbit holds at most {top}"),
        ]
        for broken, rule in problems:
            if broken:
                raise InvalidParameterError(
                    "state", f"is not a state of this chain: {rule}", state
                )

    def _state_of(self, index: int) -> ChainState:
        layout = self._layout
        queue = int(layout.queue[index])
        orphans = int(layout.orphans[index])
        return ChainState(
            busy=int(layout.busy[index]),
            waiting=queue - orphans,
            orphans=orphans,
            orbit=int(layout.orbit[index]),
        )

    # -- regions ------------------------------------------------------------

    def default_regions(self) -> tuple[Region, Region | None]:
        """Return the default good and bad regions ``(good, bad)``.

        Good: at most ``servers`` waiting and at most ``servers`` in the orbit
        (a backlog a full pool clears in one mean service time, as in the
        fluid model's good state). Bad: a queue at least ``c mu`` times the
        mean patience (the head of the queue then waits about as long as a
        client does, so most attempts time out), or, without a patience, half
        the queue room; or an orbit at least half the orbit limit. Each bad
        threshold is kept above the good one; ``bad`` is ``None`` if no state
        qualifies.
        """
        c = self.servers
        good = Region.good(max_queue=c, max_orbit=c if self.has_orbit else None)
        if self.patient:
            patience = (
                self.timeout if self.timeout is not None else 1.0 / self.phase_rate
            )
            queue = math.ceil(c * self.service_rate * patience)
        else:
            queue = math.ceil(self.queue_levels / 2)
        queue = max(queue, c + 1)
        bad_queue = queue if queue <= self.queue_levels else None
        bad_orbit = None
        if self.has_orbit:
            orbit = max(c + 1, math.ceil((self.orbit_size - 1) / 2))
            bad_orbit = orbit if orbit <= self.orbit_size - 1 else None
        if bad_queue is None and bad_orbit is None:
            return good, None
        return good, Region.bad(min_queue=bad_queue, min_orbit=bad_orbit)

    def region_mask(self, region: Region) -> BoolArray:
        """Return the mask of the states in ``region``."""
        layout = self._layout
        return region.contains(layout.queue, layout.orbit)

    # -- solutions ----------------------------------------------------------

    def stationary(
        self, *, method: Literal["auto", "direct", "iterative"] = "auto"
    ) -> StationaryResult:
        """Return the stationary law and its summaries.

        Parameters
        ----------
        method
            ``"direct"``: sparse LU. ``"iterative"``: GMRES with a Gauss-Seidel
            preconditioner. ``"auto"`` (default): `solver_method`.

        Returns
        -------
        StationaryResult
            The law and its summaries.

        Raises
        ------
        ConvergenceError
            The iterative solver stopped above its tolerance.

        Warns
        -----
        RuntimeWarning
            The truncation levels hold more than 1e-6 of the stationary mass:
            raise ``orbit_limit`` or ``queue_truncation``.

        Notes
        -----
        Solves ``pi Q = 0`` with one balance equation replaced by fixing a
        state's probability, then normalises [Stewart2009].
        """
        if method not in ("auto", "direct", "iterative"):
            rule = "must be 'auto', 'direct' or 'iterative'"
            raise InvalidParameterError("method", rule, method)
        chosen: Literal["direct", "iterative"] = (
            self.solver_method if method == "auto" else method
        )
        if chosen == self.solver_method:
            result = self._default_stationary
        else:
            result = self._solve_stationary(chosen)
        if result.truncation_mass > TRUNCATION_WARNING:
            warnings.warn(
                f"the truncation levels hold {result.truncation_mass:.2g} of the "
                "stationary mass: raise orbit_limit or queue_truncation for exact "
                "summaries",
                RuntimeWarning,
                stacklevel=2,
            )
        return result

    @property
    def solver_method(self) -> Literal["direct", "iterative"]:
        """The linear solver used by default: ``"direct"`` or ``"iterative"``.

        Sparse LU for chains with one waiting class (a two-dimensional grid of
        queue and orbit, whose LU fill stays near ``n log n``) or at most
        200,000 states (in nested-dissection order); GMRES with a
        Gauss-Seidel preconditioner for larger chains of several waiting
        classes, where the LU fill outgrows memory.
        """
        if self.classes == 1 or self.state_count <= _DIRECT_LIMIT:
            return "direct"
        return "iterative"

    @cached_property
    def _default_stationary(self) -> StationaryResult:
        return self._solve_stationary(self.solver_method)

    def _solve_stationary(
        self, method: Literal["direct", "iterative"]
    ) -> StationaryResult:
        generator = self.generator
        probabilities = _sparse.stationary_distribution(
            generator, method=method, order=self._elimination_order
        )
        scale = float(np.abs(generator.diagonal()).max())
        residual = float(np.abs(generator.T @ probabilities).max()) / scale
        return _stationary_result(self, probabilities, residual)

    def _initial(self, initial_state: ChainState | FloatArray) -> FloatArray:
        if isinstance(initial_state, ChainState):
            start = np.zeros(self.state_count)
            start[self.state_index(initial_state)] = 1.0
            return start
        start = np.asarray(initial_state, dtype=np.float64)
        if start.shape != (self.state_count,) or not np.all(np.isfinite(start)):
            rule = (
                f"must be a ChainState or a distribution over {self.state_count} states"
            )
            raise InvalidParameterError("initial_state", rule, "array")
        if np.any(start < 0.0) or not math.isclose(
            float(start.sum()), 1.0, rel_tol=1e-9
        ):
            rule = "must be non-negative and sum to 1"
            raise InvalidParameterError("initial_state", rule, float(start.sum()))
        return start

    def transient(
        self,
        initial_state: ChainState | FloatArray,
        times: FloatArray | list[float],
        *,
        region: Region | None = None,
        keep_distributions: bool = False,
    ) -> TransientResult:
        """Return the law at ``times`` after starting in ``initial_state``.

        Parameters
        ----------
        initial_state
            A state (for example a full queue after a lock) or a distribution.
        times
            Non-negative times (s), increasing.
        region
            The region whose probability is reported at each time; default the
            bad region of `default_regions` (all zeros if there is none).
        keep_distributions
            Also return the full law at every time (memory: states x times).

        Returns
        -------
        TransientResult
            Expected counts and rates at each time.

        Raises
        ------
        InvalidParameterError
            A state outside the chain, or times that are negative, not finite
            or not increasing.

        Notes
        -----
        ``p(t) = p(0) exp(Q t)``, applied step by step with
        `scipy.sparse.linalg.expm_multiply`; the cost grows with ``t`` times
        the largest exit rate.
        """
        start = self._initial(initial_state)
        grid = _check_times(times)
        mask = self._region_or_bad(region)
        rates = _per_state(self)
        rows = []
        columns: dict[str, list[float]] = {name: [] for name in _TRANSIENT_FIELDS}
        for law in _sparse.propagate(self.generator, start, grid):
            for name in _TRANSIENT_FIELDS:
                columns[name].append(float(law @ rates[name]))
            columns["region_mass"][-1] = float(law[mask].sum())
            if keep_distributions:
                rows.append(law.copy())
        arrays = {name: np.array(values) for name, values in columns.items()}
        return TransientResult(
            times=grid,
            distributions=np.array(rows) if keep_distributions else None,
            **arrays,
        )

    def _region_or_bad(self, region: Region | None) -> BoolArray:
        if region is not None:
            return self.region_mask(region)
        bad = self.default_regions()[1]
        return (
            self.region_mask(bad)
            if bad is not None
            else np.zeros(self.state_count, bool)
        )

    def bad_region_mass(
        self, region: Region | None = None, distribution: FloatArray | None = None
    ) -> float:
        """Return the probability of ``region`` (default: the bad region).

        Parameters
        ----------
        region
            The region; default the bad region of `default_regions`.
        distribution
            A law over the states; default the stationary law.

        Returns
        -------
        float
            The probability, in [0, 1].
        """
        law = (
            self._default_stationary.probabilities
            if distribution is None
            else distribution
        )
        return float(np.asarray(law)[self._region_or_bad(region)].sum())

    def expected_hitting_time(
        self, from_region: Region | ChainState, to_region: Region
    ) -> HittingTime:
        """Return the expected time to reach ``to_region``.

        Parameters
        ----------
        from_region
            A start region (started from the stationary law restricted to it,
            the quasi-stationary view of "found there") or one state.
        to_region
            The target.

        Returns
        -------
        HittingTime
            The mean and the worst case over the start states.

        Raises
        ------
        InvalidParameterError
            The start region holds no state of the chain.

        Notes
        -----
        The expected hitting times ``h`` solve ``Q_BB h_B = -1`` on the states
        ``B`` outside the target, with ``h = 0`` on it; a state from which the
        target can be missed for ever gets ``inf`` [Stewart2009].
        """
        target = self.region_mask(to_region)
        times = _sparse.expected_hitting_times(
            self.generator,
            target,
            method=self.solver_method,
            order=self._elimination_order,
        )
        if isinstance(from_region, ChainState):
            index = self.state_index(from_region)
            law = self._default_stationary.probabilities
            return HittingTime(
                mean=float(times[index]),
                worst=float(times[index]),
                worst_state=from_region,
                start_mass=float(law[index]),
            )
        start = self.region_mask(from_region)
        if not np.any(start):
            raise InvalidParameterError(
                "from_region", "holds no state of this chain", from_region
            )
        return self._hitting_summary(times, start)

    def _hitting_summary(self, times: FloatArray, start: BoolArray) -> HittingTime:
        law = self._default_stationary.probabilities
        weights = np.where(start, law, 0.0)
        mass = float(weights.sum())
        if mass <= 0.0:
            # Never visited in steady state: weigh the start states equally.
            weights = start.astype(float)
        weights = weights / weights.sum()
        with np.errstate(invalid="ignore"):
            # inf times zero weight is no contribution, not NaN.
            mean = float(np.sum(np.where(weights > 0.0, weights * times, 0.0)))
        candidates = np.where(start, times, -np.inf)
        worst_index = int(np.argmax(candidates))
        return HittingTime(
            mean=mean,
            worst=float(times[worst_index]),
            worst_state=self._state_of(worst_index),
            start_mass=mass,
        )

    def escape_time(self) -> HittingTime | None:
        """Return the expected time from the bad region to the good one.

        The regions are those of `default_regions`; ``None`` when the chain
        has no bad state.
        """
        good, bad = self.default_regions()
        return None if bad is None else self.expected_hitting_time(bad, good)

    @cached_property
    def _gap(self) -> float:
        return _sparse.slowest_decay_rate(
            self.generator,
            self._default_stationary.probabilities,
            method=self.solver_method,
            order=self._elimination_order,
        )

    def spectral_gap(self) -> float:
        """Return the spectral gap of the generator, per second.

        Returns
        -------
        float
            ``-Re(lambda_2)`` for the non-zero eigenvalue ``lambda_2`` of ``Q``
            with the largest real part: ``p(t) - pi`` decays like
            ``exp(-gap t)`` in the long run.

        Notes
        -----
        Computed on the generator balanced by ``sqrt(pi)`` (same eigenvalues,
        symmetric for a reversible chain, so not spoiled by the extreme
        non-normality of queue generators): dense eigenvalues up to 500
        states; above, shift-invert ARPACK (`scipy.sparse.linalg.eigs`)
        around a small positive shift, which returns the eigenvalues nearest
        0. For a non-reversible chain a
        complex eigenvalue far from 0 could have a larger real part than
        those found; in the chains here the slowest modes are real and near
        0. A gap near ``1 / escape time`` is the signature of metastability
        [Isaacs2025].
        """
        return self._gap

    def relaxation_time(self) -> float:
        """Return ``1 / spectral_gap()``, seconds (``inf`` for a zero gap)."""
        gap = self.spectral_gap()
        return math.inf if gap == 0.0 else 1.0 / gap

    def mixing_time(
        self, epsilon: float = 0.25, initial_state: ChainState | None = None
    ) -> float:
        """Return the time (s) for the law to come within ``epsilon`` of steady state.

        Parameters
        ----------
        epsilon
            Distance in (0, 1).
        initial_state
            ``None``: the spectral estimate ``log(1 / epsilon) / gap``, the time
            the slowest mode needs to shrink by ``epsilon``. A state: the first
            time the total-variation distance from that start falls to
            ``epsilon`` (doubling, then bisection to 1 %).

        Returns
        -------
        float
            Seconds.
        """
        epsilon = _check_open_unit("epsilon", epsilon)
        if initial_state is None:
            return math.log(1.0 / epsilon) * self.relaxation_time()
        start = self._initial(initial_state)
        return _first_time_within(self, start, epsilon)

    def phase_approximation(self) -> PhaseApproximation:
        """Return the error of the Erlang-phase approximation of the timeout.

        Solves the chain with ``k`` and ``2k`` phases; when the chain is
        M/M/c+D (no orbit, abandoned requests cancelled, no queue limit), also
        compares with its exact solution (`retrystorm.MMcD`).

        Raises
        ------
        InvalidParameterError
            The chain has no fixed ``timeout``.
        """
        if self.timeout is None:
            raise InvalidParameterError(
                "timeout", "must be set to measure phases", None
            )
        doubled = replace(self, timeout_phases=2 * self.timeout_phases)
        here, there = self._default_stationary, doubled._default_stationary
        exact_abandon, exact_queue = self._exact_deterministic()
        return PhaseApproximation(
            phases=self.timeout_phases,
            doubled_phases=doubled.timeout_phases,
            abandonment_probability=here.abandonment_probability,
            doubled_abandonment_probability=there.abandonment_probability,
            mean_queue=here.mean_queue,
            doubled_mean_queue=there.mean_queue,
            exact_abandonment_probability=exact_abandon,
            exact_mean_queue=exact_queue,
        )

    def _exact_deterministic(self) -> tuple[float | None, float | None]:
        if self.has_orbit or self.tracks_orphans or self.queue_limit is not None:
            return None, None
        assert self.timeout is not None
        exact = MMcD(
            arrival_rate=self.arrival_rate,
            service_rate=self.service_rate,
            servers=self.servers,
            timeout=self.timeout,
        )
        return exact.abandonment_probability, exact.mean_queue_length


# -- generator assembly ---------------------------------------------------------


class _Transitions:
    """Collects (source, target, rate) triples of a generator."""

    def __init__(self) -> None:
        self.sources: list[IntArray] = []
        self.targets: list[IntArray] = []
        self.rates: list[FloatArray] = []

    def add(
        self, mask: BoolArray, target: IntArray, rate: NDArray[Any] | float
    ) -> None:
        """Add the transitions of the states in ``mask`` (target, rate per state)."""
        rate_array = np.broadcast_to(np.asarray(rate, dtype=np.float64), mask.shape)
        chosen = mask & (rate_array > 0.0)
        source = np.flatnonzero(chosen)
        goes = np.broadcast_to(target, mask.shape)[chosen]
        moving = goes != source
        self.sources.append(source[moving])
        self.targets.append(goes[moving])
        self.rates.append(rate_array[chosen][moving])

    def matrix(self, size: int) -> sp.csr_matrix:
        """Assemble the generator: summed off-diagonal rates, diagonal ``-sum``."""
        sources = np.concatenate(self.sources)
        targets = np.concatenate(self.targets)
        rates = np.concatenate(self.rates)
        off = sp.csr_matrix((rates, (sources, targets)), shape=(size, size))
        exits = np.asarray(off.sum(axis=1)).ravel()
        return (off - sp.diags(exits)).tocsr()


def _shifted(
    counts: IntArray, add: int | None, remove: IntArray | int | None
) -> IntArray:
    """Return counts with one request added to ``add``, one taken from ``remove``."""
    result = counts.copy()
    rows = np.arange(counts.shape[0])
    if add is not None:
        result[:, add] += 1
    if remove is not None:
        result[rows, remove] -= 1
    return result


def _queue_target(layout: _Layout, mask: BoolArray, counts: IntArray) -> IntArray:
    """State index after a queue change, for the states in ``mask`` (full servers)."""
    target = np.zeros(layout.size, dtype=np.int64)
    if np.any(mask):
        config = layout.queue_config(counts[mask])
        target[mask] = layout.index(config, layout.orbit[mask])
    return target


def _assemble_generator(chain: RetryChain, layout: _Layout) -> sp.csr_matrix:
    """Build the generator of ``chain`` on ``layout`` (module docstring table)."""
    moves = _Transitions()
    _add_arrivals(chain, layout, moves)
    _add_services(chain, layout, moves)
    _add_patience(chain, layout, moves)
    return moves.matrix(layout.size)


def _add_arrivals(chain: RetryChain, layout: _Layout, moves: _Transitions) -> None:
    """Fresh arrivals and retries: served, queued in phase 1, or blocked."""
    c, orbit = layout.servers, layout.orbit
    idle = layout.busy < c
    room = ~idle & (layout.queue < layout.levels)
    blocked = ~idle & ~room
    joined = _queue_target(layout, room, _shifted(layout.counts, 0, None))
    served = layout.index(layout.config + 1, orbit)
    lam, p = chain.arrival_rate, chain.effective_retry_probability
    top = layout.orbit_size - 1

    moves.add(idle, served, lam)
    moves.add(room, joined, lam)
    if not chain.truncated_queue:
        # A blocked fresh request joins the orbit with probability p.
        moves.add(
            blocked & (orbit < top), layout.index(layout.config, orbit + 1), lam * p
        )
    if chain.retry_rate is None:
        return
    retries = orbit * chain.retry_rate
    moves.add(idle, layout.index(layout.config + 1, orbit - 1), retries)
    moves.add(room, joined - 1, retries)
    if not chain.truncated_queue:
        # A blocked retry stays in the orbit with p, else leaves it for good.
        moves.add(blocked, layout.index(layout.config, orbit - 1), retries * (1.0 - p))


def _add_services(chain: RetryChain, layout: _Layout, moves: _Transitions) -> None:
    """Completions: a server frees up, or the head of the queue starts service."""
    mu, c = chain.service_rate, layout.servers
    empty = layout.queue == 0
    moves.add(
        (layout.busy > 0) & empty,
        layout.index(layout.config - 1, layout.orbit),
        layout.busy * mu,
    )
    waiting = ~empty
    head = np.where(waiting, layout.head, 0)
    moved = _queue_target(layout, waiting, _shifted(layout.counts, None, head))
    moves.add(waiting, moved, c * mu)


def _add_patience(chain: RetryChain, layout: _Layout, moves: _Transitions) -> None:
    """Patience phases, give-ups (to the orbit with ``p``) and orphan drops."""
    if not chain.patient:
        return
    nu, k = chain.phase_rate, layout.live
    for phase in range(k - 1):
        mask = layout.counts[:, phase] > 0
        shifted = _shifted(layout.counts, phase + 1, np.full(layout.size, phase))
        moves.add(
            mask, _queue_target(layout, mask, shifted), layout.counts[:, phase] * nu
        )
    last = k - 1
    mask = layout.counts[:, last] > 0
    orphan = layout.live if layout.orphan_class else None
    after = _queue_target(
        layout, mask, _shifted(layout.counts, orphan, np.full(layout.size, last))
    )
    rate = layout.counts[:, last] * nu
    p = chain.effective_retry_probability
    top = layout.orbit_size - 1
    # The client gives up: retry with p (an orbit at its limit loses it).
    moves.add(mask & (layout.orbit < top), after + 1, rate * p)
    moves.add(mask, after, np.where(layout.orbit < top, rate * (1.0 - p), rate))
    if chain.orphan_timeout is not None:
        orphans = layout.orphans
        mask = orphans > 0
        dropped = _shifted(
            layout.counts, None, np.full(layout.size, layout.classes - 1)
        )
        moves.add(
            mask, _queue_target(layout, mask, dropped), orphans / chain.orphan_timeout
        )


# -- per-state rates and summaries -----------------------------------------------

_TRANSIENT_FIELDS = (
    "mean_busy",
    "mean_queue",
    "mean_orphans",
    "mean_orbit",
    "throughput",
    "goodput",
    "wasted_rate",
    "region_mass",
)


def _per_state(chain: RetryChain) -> dict[str, NDArray[Any]]:
    """Per-state counts and event rates whose expectations are the summaries."""
    layout = chain._layout
    c, lam, mu = layout.servers, chain.arrival_rate, chain.service_rate
    p = chain.effective_retry_probability
    orbit = layout.orbit.astype(float)
    retries = orbit * (chain.retry_rate or 0.0)
    attempts = lam + retries
    idle = layout.busy < c
    waiting = layout.queue > 0
    head_orphan = waiting & (layout.head == layout.live)
    full = ~idle & (layout.queue >= layout.levels)
    blocked = (
        np.where(full, attempts, 0.0)
        if not chain.truncated_queue
        else np.zeros(layout.size)
    )
    blocked_fresh = (
        np.where(full, lam, 0.0) if not chain.truncated_queue else np.zeros(layout.size)
    )
    abandon = layout.counts[:, layout.live - 1] * chain.phase_rate
    at_top = layout.orbit == layout.orbit_size - 1
    failures = blocked_fresh + abandon
    overflow = np.where(at_top, p * failures, 0.0)
    dropped = (
        np.where(full, lam, 0.0) if chain.truncated_queue else np.zeros(layout.size)
    )
    return {
        "mean_busy": layout.busy.astype(float),
        "mean_queue": layout.queue.astype(float),
        "mean_orphans": layout.orphans.astype(float),
        "mean_orbit": orbit,
        "throughput": layout.busy * mu,
        "goodput": np.where(idle, attempts, 0.0)
        + np.where(waiting & ~head_orphan, c * mu, 0.0),
        "wasted_rate": np.where(head_orphan, c * mu, 0.0),
        "attempt_rate": attempts,
        "retry_attempt_rate": retries,
        "blocked": blocked,
        "abandon": abandon,
        "loss_rate": (1.0 - p) * (failures + blocked - blocked_fresh)
        + overflow
        + dropped,
        "truncation_loss_rate": overflow + dropped,
        "region_mass": np.zeros(layout.size),
    }


def _truncation_mask(chain: RetryChain) -> BoolArray:
    layout = chain._layout
    mask = np.zeros(layout.size, dtype=bool)
    if chain.has_orbit:
        mask |= layout.orbit == layout.orbit_size - 1
    if chain.truncated_queue:
        mask |= layout.queue == layout.levels
    return mask


def _stationary_result(
    chain: RetryChain, law: FloatArray, residual: float
) -> StationaryResult:
    rates = _per_state(chain)
    expect = {name: float(law @ values) for name, values in rates.items()}
    layout = chain._layout
    attempts = expect["attempt_rate"]
    in_system = np.bincount(layout.busy + layout.queue, weights=law).astype(float)
    orbit = np.bincount(layout.orbit, weights=law, minlength=layout.orbit_size).astype(
        float
    )
    return StationaryResult(
        probabilities=law,
        arrival_rate=chain.arrival_rate,
        mean_busy=expect["mean_busy"],
        mean_queue=expect["mean_queue"],
        mean_orphans=expect["mean_orphans"],
        mean_orbit=expect["mean_orbit"],
        all_busy_probability=float(law[layout.busy == layout.servers].sum()),
        throughput=expect["throughput"],
        goodput=expect["goodput"],
        wasted_rate=expect["wasted_rate"],
        attempt_rate=attempts,
        retry_attempt_rate=expect["retry_attempt_rate"],
        blocking_probability=expect["blocked"] / attempts,
        abandonment_probability=expect["abandon"] / attempts,
        loss_rate=expect["loss_rate"],
        truncation_mass=float(law[_truncation_mask(chain)].sum()),
        truncation_loss_rate=expect["truncation_loss_rate"],
        residual=residual,
        in_system_distribution=in_system,
        orbit_distribution=orbit,
    )


# -- small helpers -----------------------------------------------------------------


def _check_times(times: FloatArray | list[float]) -> FloatArray:
    try:
        grid = np.asarray(times, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InvalidParameterError("times", "must be numbers", times) from None
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid < 0.0):
        raise InvalidParameterError(
            "times", "must be finite, non-negative numbers", times
        )
    if np.any(np.diff(grid) < 0.0):
        raise InvalidParameterError("times", "must be increasing", times)
    return grid


def _check_open_unit(name: str, value: float) -> float:
    result = check_positive(name, value)
    if result >= 1.0:
        raise InvalidParameterError(name, "must lie strictly between 0 and 1", value)
    return result


def _first_time_within(chain: RetryChain, start: FloatArray, epsilon: float) -> float:
    """First time the total-variation distance to ``pi`` reaches ``epsilon``."""
    target = chain._default_stationary.probabilities
    generator = chain.generator

    def distance(time: float) -> float:
        law = next(_sparse.propagate(generator, start, np.array([time])))
        return _sparse.total_variation(law, target)

    if _sparse.total_variation(start, target) <= epsilon:
        return 0.0
    scale = float(np.abs(generator.diagonal()).max())
    low, high = 0.0, 1.0 / scale
    # Double until within epsilon (the distance decreases in t), then bisect.
    for _ in range(200):
        if distance(high) <= epsilon:
            break
        low, high = high, 2.0 * high
    while high - low > 0.01 * high:
        middle = 0.5 * (low + high)
        if distance(middle) <= epsilon:
            high = middle
        else:
            low = middle
    return high


# -- from a scenario ---------------------------------------------------------------


def chain_from_scenario(
    scenario: Scenario,
    *,
    scale: float | None = None,
    timeout_phases: int = 1,
    orbit_limit: int | None = None,
    max_states: int = DEFAULT_MAX_STATES,
) -> RetryChain:
    """Return the chain of a scenario's steady system, scaled down to fit.

    Parameters
    ----------
    scenario
        A validated `retrystorm.Scenario`.
    scale
        Factor on the pool, the request rate and the queue limit (``servers =
        round(pool_size scale)`` >= 1); default: the largest of ``1, 1/2, 1/5,
        1/10, 1/20, ...`` whose chain has at most ``max_states`` states.
    timeout_phases
        Erlang phases for the timeout.
    orbit_limit
        Orbit truncation; default four times the orbit of the fully failing
        state, ``lambda p / (1 - p) / retry_rate``, and at least 20.
    max_states
        The largest state space allowed.

    Returns
    -------
    RetryChain
        The chain (see the Notes for the mapping).

    Raises
    ------
    StateSpaceTooLargeError
        Even the smallest scale (one server) needs more than ``max_states``.

    Notes
    -----
    The mapping, and what it leaves out:

    - ``servers = pool_size x scale``, ``arrival_rate = peak request rate x
      scale``, ``service_rate`` the per-connection rate of a full pool
      (contention at full load); the scaled queue limit, or for an unbounded
      queue a truncation at twice the saturated queue ``c mu T_q``.
    - Patience: the proxy's queue timeout if it is no longer than the client
      timeout (the proxy fails the request first and the client retries),
      else the client timeout, with ``cancel_abandoned`` from the proxy and
      orphans dropped after a mean of ``T_q - T_c`` seconds.
    - Retries: ``retry_probability = min(R / (R + 1), b / (1 + b))`` for
      ``R`` retries and a budget ``b``: a geometric number of retries with
      the same mean as ``R`` when every attempt fails, capped by the budget.
      ``retry_rate`` is one over the mean backoff delay (at least 1 ms).
    - Left out: events (locks, capacity drops, restarts, shedding: the chain
      is the system after the trigger), pods, crashes and the circuit
      breaker, the bounded web tier, init queries, several tables, time-
      varying demand, and the client timeout during service.

    Examples
    --------
    The incident with the remedy of a 30 s proxy timeout, below the client
    timeout (so no orphans), scaled to fit 20,000 states:

    >>> from retrystorm.scenario import default_scenario
    >>> remedy = default_scenario().with_changes({"proxy.queue_timeout": 30.0})
    >>> chain = chain_from_scenario(remedy, max_states=20_000)
    >>> chain.timeout, chain.cancel_abandoned, chain.state_count <= 20_000
    (30.0, True, True)
    """
    phases = check_integer("timeout_phases", timeout_phases)
    limit = check_integer("max_states", max_states)
    mapping = _ScenarioMapping.of(scenario)
    if orbit_limit is not None:
        mapping = replace(
            mapping, orbit_limit=check_integer("orbit_limit", orbit_limit)
        )
    if scale is not None:
        return mapping.chain(scenario, check_positive("scale", scale), phases, limit)
    smallest = 1.0 / scenario.proxy.pool_size
    candidates = [s for s in _scale_ladder() if s >= smallest] + [smallest]
    last_error: StateSpaceTooLargeError | None = None
    for candidate in candidates:
        try:
            return mapping.chain(scenario, candidate, phases, limit)
        except StateSpaceTooLargeError as error:
            last_error = error
    assert last_error is not None
    raise last_error


def _scale_ladder() -> list[float]:
    """Return 1, 1/2, 1/5, 1/10, 1/20, ... down to 2e-7."""
    return [step / 10.0**power for power in range(7) for step in (1.0, 0.5, 0.2)]


def _mean_delay(backoff: Backoff, retry: int) -> float:
    """Return the mean backoff delay (s) before retry ``retry``, with its jitter."""
    factor = {"none": 1.0, "full": 0.5, "equal": 0.75}[backoff.jitter]
    return float(backoff.delay(retry)) * factor


@dataclass(frozen=True, kw_only=True)
class _ScenarioMapping:
    """The scale-free chain parameters of a scenario (`chain_from_scenario`)."""

    service_rate: float
    timeout: float
    cancel_abandoned: bool
    orphan_timeout: float | None
    retry_rate: float | None
    retry_probability: float
    orbit_limit: int | None = None

    @classmethod
    def of(cls, scenario: Scenario) -> _ScenarioMapping:
        """Return the mapping of ``scenario`` (the Notes of `chain_from_scenario`)."""
        clients, proxy = scenario.clients, scenario.proxy
        retries, budget = clients.max_retries, clients.retry_budget
        probability = retries / (retries + 1.0)
        if math.isfinite(budget):
            probability = min(probability, budget / (1.0 + budget))
        client_first = clients.timeout < proxy.queue_timeout
        orphans = client_first and not proxy.cancel_abandoned
        retry_rate = None
        if retries > 0 and probability > 0.0:
            delays = [_mean_delay(clients.backoff, k) for k in range(1, retries + 1)]
            retry_rate = 1.0 / max(1e-3, math.fsum(delays) / len(delays))
        return cls(
            service_rate=saturated_service_rate(scenario),
            timeout=clients.timeout if client_first else proxy.queue_timeout,
            cancel_abandoned=not orphans,
            orphan_timeout=proxy.queue_timeout - clients.timeout if orphans else None,
            retry_rate=retry_rate,
            retry_probability=probability,
        )

    def chain(
        self, scenario: Scenario, scale: float, phases: int, max_states: int
    ) -> RetryChain:
        """Return the chain of ``scenario`` at one scale."""
        servers = max(1, round(scenario.proxy.pool_size * scale))
        arrival = scenario.clients.peak_request_rate * scale
        limit = scenario.proxy.queue_limit
        queue_limit = round(limit * scale) if math.isfinite(limit) else None
        truncation = None
        if queue_limit is None:
            saturated = servers * self.service_rate * scenario.proxy.queue_timeout
            truncation = max(2 * servers, math.ceil(2.0 * saturated))
        orbit_limit = self.orbit_limit
        if self.retry_rate is not None and orbit_limit is None:
            p = self.retry_probability
            failing = arrival * p / max(1.0 - p, 1e-9) / self.retry_rate
            orbit_limit = max(20, math.ceil(4.0 * failing))
        return RetryChain(
            arrival_rate=arrival,
            service_rate=self.service_rate,
            servers=servers,
            queue_limit=queue_limit,
            timeout=self.timeout,
            timeout_phases=phases,
            cancel_abandoned=self.cancel_abandoned,
            orphan_timeout=self.orphan_timeout,
            retry_rate=self.retry_rate,
            retry_probability=self.retry_probability,
            orbit_limit=orbit_limit,
            queue_truncation=truncation,
            max_states=max_states,
        )
