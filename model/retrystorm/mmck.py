"""The M/M/c/K queue: a bounded queue that refuses arrivals when it is full."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

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
from retrystorm._validation import (
    check_fraction,
    check_integer,
    check_nonnegative,
    check_positive,
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


def _log_inverse_b(servers: int, load: float, load_gap: float) -> float:
    """Return ``log(1 / B(servers, load))`` for a scalar (``servers`` may be 0)."""
    value = log_inverse_erlang_b(
        np.array(float(servers)), np.array(load), np.array(load_gap)
    )
    return float(value)


@dataclass(frozen=True, kw_only=True)
class MMcK:
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

    arrival_rate: float
    service_rate: float
    servers: int
    capacity: int

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "arrival_rate", check_positive("arrival_rate", self.arrival_rate)
        )
        object.__setattr__(
            self, "service_rate", check_positive("service_rate", self.service_rate)
        )
        servers = check_integer("servers", self.servers)
        object.__setattr__(self, "servers", servers)
        capacity = check_integer("capacity", self.capacity)
        if capacity < servers:
            raise InvalidParameterError(
                "capacity", f"must be at least `servers` ({servers})", self.capacity
            )
        object.__setattr__(self, "capacity", capacity)

    @property
    def offered_load(self) -> float:
        """Offered load ``lambda / mu`` in erlangs."""
        return self.arrival_rate / self.service_rate

    @property
    def utilization(self) -> float:
        """Offered utilisation ``lambda / (c mu)``, dimensionless (may exceed 1)."""
        return self.arrival_rate / (self.servers * self.service_rate)

    @cached_property
    def _log_rho(self) -> float:
        """``log rho``, through ``log1p`` near 1 where ``c mu - lambda`` is exact."""
        c_mu = self.servers * self.service_rate
        relative_gap = (
            capacity_gap(self.servers, self.service_rate, self.arrival_rate) / c_mu
        )
        if abs(relative_gap) < 0.5:
            return math.log1p(-relative_gap)
        return math.log(self.arrival_rate) - math.log(c_mu)

    @property
    def _queue_room(self) -> int:
        """Waiting places ``m = K - c``."""
        return self.capacity - self.servers

    @property
    def _pivot(self) -> int:
        """Queue index ``p`` of the reference state: ``c`` if ``rho <= 1``, else ``K``.

        Weights are taken relative to the most likely end of the geometric
        queue, so that no log is a large number added and later subtracted
        (at ``rho = 1.5`` and a million places that would cost ten digits).
        """
        return 0 if self._log_rho <= 0.0 else self._queue_room

    def _log_queue_sum(self, first: ArrayLike, last: int) -> FloatArray:
        """``log sum_{j=first}^{last} rho^(j - p)``, vectorised (``-inf`` if empty)."""
        log_rho = self._log_rho
        start = np.asarray(first, dtype=float)
        count = last - start + 1
        if self._pivot == 0:
            return start * log_rho + log_geometric_sum(log_rho, count)
        return (self._queue_room - last) * -log_rho + log_geometric_sum(-log_rho, count)

    @cached_property
    def _log_below(self) -> float:
        """``log sum_{k<c} pi_k / pi_c = log((c/a) / B(c - 1, a))``: no cancellation."""
        c, mu, lam = self.servers, self.service_rate, self.arrival_rate
        load = self.offered_load
        load_gap = capacity_gap(c - 1, mu, lam) / mu
        return math.log(c / load) + _log_inverse_b(c - 1, load, load_gap)

    @cached_property
    def _log_pi_pivot(self) -> float:
        """``log pi_(c+p)`` from the normalisation."""
        shifted_below = self._log_below - self._pivot * self._log_rho
        queue = float(self._log_queue_sum(0, self._queue_room))
        return -float(np.logaddexp(shifted_below, queue))

    @cached_property
    def _log_admitted(self) -> float:
        """``log(1 - pi_K)``: log of the probability an arrival is admitted."""
        shifted_below = self._log_below - self._pivot * self._log_rho
        queue = float(self._log_queue_sum(0, self._queue_room - 1))
        return self._log_pi_pivot + float(np.logaddexp(shifted_below, queue))

    @property
    def blocking_probability(self) -> float:
        """Probability that an arrival is refused, ``pi_K``."""
        m = self._queue_room
        return math.exp(self._log_pi_pivot + float(self._log_queue_sum(m, m)))

    @property
    def throughput(self) -> float:
        """Rate of admitted (and so of served) requests, requests per second."""
        return self.arrival_rate * math.exp(self._log_admitted)

    @property
    def occupancy(self) -> float:
        """Mean fraction of servers busy, ``throughput / (c mu)``."""
        return min(1.0, self.throughput / (self.servers * self.service_rate))

    @property
    def wait_probability(self) -> float:
        """Probability that an admitted request waits before service."""
        queue = float(self._log_queue_sum(0, self._queue_room - 1))
        return min(1.0, math.exp(self._log_pi_pivot + queue - self._log_admitted))

    @property
    def mean_queue_length(self) -> float:
        """Mean number of waiting requests ``L_q``."""
        m = self._queue_room
        if m == 0:
            return 0.0
        queue = float(self._log_queue_sum(0, m))
        mean_index = truncated_geometric_mean(self._log_rho, m)
        return math.exp(self._log_pi_pivot + queue) * mean_index

    @property
    def mean_wait(self) -> float:
        """Mean time in queue of an admitted request, seconds."""
        return self.mean_queue_length / self.throughput

    @property
    def mean_response_time(self) -> float:
        """Mean time in system of an admitted request (wait plus service), seconds."""
        return self.mean_wait + 1.0 / self.service_rate

    @property
    def mean_in_system(self) -> float:
        """Mean number of requests in the system ``L``."""
        return self.mean_queue_length + self.throughput / self.service_rate

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
        if count >= c:
            return math.exp(
                self._log_pi_pivot + float(self._log_queue_sum(count - c, count - c))
            )
        log_pi_c = self._log_pi_pivot + float(self._log_queue_sum(0, 0))
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
        m = self._queue_room
        if time == 0.0:
            return self.wait_probability
        if m == 0:
            return 0.0
        x = self.servers * self.service_rate * time

        def log_term(i: FloatArray) -> FloatArray:
            return log_poisson_term(i, x) + self._log_queue_sum(i, m - 1)

        log_sum = log_sum_logconcave(log_term, 0, m)
        return min(1.0, math.exp(self._log_pi_pivot + log_sum - self._log_admitted))

    def wait_quantile(self, q: float) -> float:
        """Return the ``q``-quantile of an admitted request's wait, seconds.

        Raises
        ------
        InvalidParameterError
            If ``q`` is not strictly between 0 and 1.
        """
        level = check_fraction("q", q)
        scale = (self._queue_room + 1) / (self.servers * self.service_rate)
        return quantile_from_tail(self.wait_tail, level, scale)

    def summary(self) -> dict[str, float]:
        """Return every scalar quantity by property name."""
        return {name: float(getattr(self, name)) for name in _SUMMARY_FIELDS}
