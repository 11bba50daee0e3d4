"""The M/M/c/K queue: a bounded queue that refuses arrivals when it is full.

The formulas live in one vectorised kernel, `_mmck_arrays`, shared by the
`MMcK` class (on scalars) and by parameter sweeps (on whole grids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from retrystorm._birth_death import (
    FloatArray,
    capacity_gap,
    log_geometric_sum,
    log_poisson_term,
    log_sum_logconcave,
    quantile_from_tail,
    truncated_geometric_mean,
)
from retrystorm._queue_model import QueueModel, float_arrays
from retrystorm._validation import (
    check_fraction,
    check_integer,
    check_nonnegative,
)
from retrystorm.erlang import log_inverse_erlang_b
from retrystorm.errors import InvalidParameterError

__all__ = ["MMcK"]

# The scalar quantities of `MMcK.summary`, in the order they are reported.
_SUMMARY_FIELDS = (
    "utilization",
    "occupancy",
    "blocking_probability",
    "throughput",
    "wait_probability",
    "mean_wait",
    "mean_queue_length",
    "mean_response_time",
    "mean_in_system",
)


class _MMcKState(NamedTuple):
    """The logs every M/M/c/K quantity is built from, elementwise.

    Queue states ``c + j`` (``j = 0..m``, ``m = K - c``) have weights
    ``rho^(j - p)`` relative to a pivot ``p``: ``0`` when ``rho <= 1`` and
    ``m`` above, the most likely end of the geometric queue, so that no log
    is a large number added and later subtracted (at ``rho = 1.5`` and a
    million places that would cost ten digits).
    """

    log_rho: FloatArray
    pivot: FloatArray
    room: FloatArray
    log_pi_pivot: FloatArray
    log_admitted: FloatArray


def _log_queue_sum(state: _MMcKState, first: ArrayLike, last: ArrayLike) -> FloatArray:
    """``log sum_{j=first}^{last} rho^(j - p)`` elementwise (``-inf`` if empty)."""
    log_rho = state.log_rho
    start = np.asarray(first, dtype=float)
    stop = np.asarray(last, dtype=float)
    count = stop - start + 1.0
    low = state.pivot == 0.0
    # Each side only where it is needed (a scalar model needs one of them).
    if low.all():
        return start * log_rho + log_geometric_sum(log_rho, count)
    from_top = (state.room - stop) * -log_rho + log_geometric_sum(-log_rho, count)
    if not low.any():
        return np.asarray(from_top)
    from_servers = start * log_rho + log_geometric_sum(log_rho, count)
    return np.asarray(np.where(low, from_servers, from_top))


def _mmck_state(
    arrival_rate: ArrayLike,
    service_rate: ArrayLike,
    servers: ArrayLike,
    capacity: ArrayLike,
) -> _MMcKState:
    """Return the normalised logs of the M/M/c/K law, elementwise."""
    lam, mu, c, top = float_arrays(arrival_rate, service_rate, servers, capacity)
    room = top - c
    c_mu = c * mu

    # log rho through log1p near 1, where c mu - lambda is formed exactly.
    relative_gap = capacity_gap(c, mu, lam) / c_mu
    log_rho = np.where(
        np.abs(relative_gap) < 0.5,
        np.log1p(-relative_gap),
        np.log(lam) - np.log(c_mu),
    )
    pivot = np.where(log_rho <= 0.0, 0.0, room)
    partial = _MMcKState(log_rho, pivot, room, log_rho, log_rho)

    # sum_{k<c} pi_k / pi_c = (c/a) / B(c - 1, a): a sum without cancellation.
    load = lam / mu
    load_gap = capacity_gap(c - 1.0, mu, lam) / mu
    log_below = np.log(c / load) + log_inverse_erlang_b(c - 1.0, load, load_gap)
    shifted_below = log_below - pivot * log_rho

    # Normalise; 1 - pi_K leaves out the top state.
    log_pi_pivot = -np.logaddexp(shifted_below, _log_queue_sum(partial, 0.0, room))
    log_admitted = log_pi_pivot + np.logaddexp(
        shifted_below, _log_queue_sum(partial, 0.0, room - 1.0)
    )
    return _MMcKState(log_rho, pivot, room, log_pi_pivot, log_admitted)


def _mmck_quantities(
    arrival_rate: ArrayLike,
    service_rate: ArrayLike,
    servers: ArrayLike,
    state: _MMcKState,
) -> dict[str, FloatArray]:
    """Every scalar quantity of M/M/c/K from its normalised logs."""
    lam = np.asarray(arrival_rate, dtype=float)
    mu = np.asarray(service_rate, dtype=float)
    c_mu = np.asarray(servers, dtype=float) * mu
    room = state.room

    throughput = lam * np.exp(state.log_admitted)
    log_waiting = state.log_pi_pivot + _log_queue_sum(state, 0.0, room - 1.0)
    log_queue = state.log_pi_pivot + _log_queue_sum(state, 0.0, room)
    mean_index = truncated_geometric_mean(state.log_rho, room)
    mean_queue_length = np.where(room == 0.0, 0.0, np.exp(log_queue) * mean_index)
    mean_wait = mean_queue_length / throughput
    return {
        "offered_load": lam / mu,
        "utilization": lam / c_mu,
        "occupancy": np.minimum(1.0, throughput / c_mu),
        "blocking_probability": np.exp(
            state.log_pi_pivot + _log_queue_sum(state, room, room)
        ),
        "throughput": throughput,
        "wait_probability": np.minimum(1.0, np.exp(log_waiting - state.log_admitted)),
        "mean_wait": mean_wait,
        "mean_queue_length": mean_queue_length,
        "mean_response_time": mean_wait + 1.0 / mu,
        "mean_in_system": mean_queue_length + throughput / mu,
    }


def _mmck_arrays(
    arrival_rate: ArrayLike,
    service_rate: ArrayLike,
    servers: ArrayLike,
    capacity: ArrayLike,
) -> dict[str, FloatArray]:
    """Return every M/M/c/K quantity elementwise over broadcast parameter arrays.

    The inputs are not checked (the callers do): rates finite and positive,
    ``servers`` whole numbers >= 1 and ``capacity`` whole numbers >=
    ``servers``.
    """
    state = _mmck_state(arrival_rate, service_rate, servers, capacity)
    return _mmck_quantities(arrival_rate, service_rate, servers, state)


@dataclass(frozen=True, kw_only=True)
class MMcK(QueueModel):
    """The M/M/c/K queue in steady state: at most ``capacity`` requests inside.

    Poisson arrivals, ``servers`` exponential servers and room for
    ``capacity - servers`` waiting requests; an arrival that finds
    ``capacity`` requests in the system is refused (backpressure). Always
    stable.

    Parameters
    ----------
    arrival_rate
        Poisson arrival rate ``lambda``, requests per second (finite, > 0).
    service_rate
        Service rate of one server ``mu``, requests per second (finite, > 0).
    servers
        Number of servers ``c``, a positive integer.
    capacity
        Most requests in the system ``K`` (in service plus waiting), an
        integer ``>= servers``. ``capacity == servers`` is the Erlang loss
        system M/M/c/c.

    Raises
    ------
    InvalidParameterError
        If a rate is not finite and positive, ``servers`` is not a positive
        integer, or ``capacity`` is not an integer at least ``servers``.

    Notes
    -----
    The birth-death chain on ``0..K`` has ``pi_k`` proportional to ``a^k / k!``
    for ``k <= c`` and to ``pi_c rho^(k-c)`` above, with ``a = lambda / mu``
    and ``rho = a / c`` [Kleinrock1975] (Sec. 3.6 for one server). Arrivals see
    time averages (PASTA), so the blocking probability is ``pi_K``.

    The waiting-time quantities (`wait_probability`, `mean_wait`,
    `mean_response_time`, `wait_tail`, `wait_quantile`) are for *admitted*
    requests; Little's law holds with the `throughput`
    ``lambda (1 - pi_K)``. An admitted arrival that finds ``c + j`` requests
    waits for ``j + 1`` departures at rate ``c mu``, so
    ``P(W > t) = sum_j pi_(c+j) / (1 - pi_K) P(Poisson(c mu t) <= j)``.

    All sums are taken in log space (geometric sums in closed form through
    ``expm1``), exact for any ``rho`` including 1 and for a million servers.

    References
    ----------
    [Kleinrock1975] Queueing Systems vol. 1, Sec. 3.6 (M/M/1/K) and 3.7 (M/M/m/m).
    [GrossHarris2008] Fundamentals of Queueing Theory, Ch. 2 (M/M/c/K).

    Examples
    --------
    >>> q = MMcK(arrival_rate=50.0, service_rate=10.0, servers=4, capacity=6)
    >>> round(q.blocking_probability, 6)
    0.293543
    >>> round(q.throughput, 4)
    35.3229
    """

    capacity: int

    _summary_fields = _SUMMARY_FIELDS

    def __post_init__(self) -> None:
        super().__post_init__()
        capacity = check_integer("capacity", self.capacity)
        if capacity < self.servers:
            raise InvalidParameterError(
                "capacity",
                f"must be at least `servers` ({self.servers})",
                self.capacity,
            )
        object.__setattr__(self, "capacity", capacity)

    @cached_property
    def _state(self) -> _MMcKState:
        """The normalised logs of the law, from the shared kernel."""
        return _mmck_state(
            self.arrival_rate, self.service_rate, self.servers, self.capacity
        )

    @cached_property
    def _quantities(self) -> dict[str, FloatArray]:
        """Every scalar quantity, from the shared kernel."""
        return _mmck_quantities(
            self.arrival_rate, self.service_rate, self.servers, self._state
        )

    @property
    def blocking_probability(self) -> float:
        """Probability that an arrival is refused, ``pi_K``."""
        return float(self._quantities["blocking_probability"])

    @property
    def throughput(self) -> float:
        """Rate of admitted (and so of served) requests, requests per second."""
        return float(self._quantities["throughput"])

    @property
    def occupancy(self) -> float:
        """Mean fraction of servers busy, ``throughput / (c mu)``."""
        return float(self._quantities["occupancy"])

    @property
    def wait_probability(self) -> float:
        """Probability that an admitted request waits before service."""
        return float(self._quantities["wait_probability"])

    @property
    def mean_queue_length(self) -> float:
        """Mean number of waiting requests ``L_q``."""
        return float(self._quantities["mean_queue_length"])

    @property
    def mean_wait(self) -> float:
        """Mean time in queue of an admitted request, seconds."""
        return float(self._quantities["mean_wait"])

    @property
    def mean_response_time(self) -> float:
        """Mean time in system of an admitted request (wait plus service), seconds."""
        return float(self._quantities["mean_response_time"])

    @property
    def mean_in_system(self) -> float:
        """Mean number of requests in the system ``L``."""
        return float(self._quantities["mean_in_system"])

    def state_probability(self, n: int) -> float:
        """Return ``P(N = n)``, the steady-state probability of ``n`` requests inside.

        Raises
        ------
        InvalidParameterError
            If ``n`` is not an integer in ``0..capacity``.
        """
        count = check_integer("n", n, minimum=0)
        if count > self.capacity:
            raise InvalidParameterError(
                "n", f"must be at most `capacity` ({self.capacity})", n
            )
        c = self.servers
        log_pi_pivot = float(self._state.log_pi_pivot)
        if count >= c:
            index = count - c
            return math.exp(
                log_pi_pivot + float(_log_queue_sum(self._state, index, index))
            )
        log_pi_c = log_pi_pivot + float(_log_queue_sum(self._state, 0, 0))
        load = self.offered_load
        log_ratio = log_poisson_term(float(count), load) - log_poisson_term(
            float(c), load
        )
        return math.exp(log_pi_c + float(log_ratio))

    def wait_tail(self, t: float) -> float:
        """Return ``P(W > t)`` for an admitted request, ``t`` in seconds.

        Raises
        ------
        InvalidParameterError
            If ``t`` is negative, infinite or NaN.

        Notes
        -----
        Exchanging the order of summation gives ``P(W > t) (1 - pi_K) =
        sum_{i<m} P(Poisson(x) = i) sum_{j=i}^{m-1} pi_(c+j)`` with
        ``x = c mu t``; the terms are log-concave in ``i`` and are summed from
        their mode outward until the rest is below double precision.
        """
        time = check_nonnegative("t", t)
        m = self.capacity - self.servers
        if time == 0.0:
            return self.wait_probability
        if m == 0:
            return 0.0
        x = self.servers * self.service_rate * time

        def log_term(i: FloatArray) -> FloatArray:
            return log_poisson_term(i, x) + _log_queue_sum(self._state, i, m - 1)

        log_sum = log_sum_logconcave(log_term, 0, m)
        log_tail = float(self._state.log_pi_pivot + log_sum - self._state.log_admitted)
        return min(1.0, math.exp(log_tail))

    def wait_quantile(self, q: float) -> float:
        """Return the ``q``-quantile of an admitted request's wait, seconds.

        Raises
        ------
        InvalidParameterError
            If ``q`` is not strictly between 0 and 1.
        """
        level = check_fraction("q", q)
        scale = (self.capacity - self.servers + 1) / (self.servers * self.service_rate)
        return quantile_from_tail(self.wait_tail, level, scale)
