"""The M/M/c+D queue: every waiting request gives up after exactly ``timeout``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from retrystorm._birth_death import (
    capacity_gap,
    log_h1,
    log_h2,
    quantile_from_tail,
)
from retrystorm._validation import (
    check_fraction,
    check_integer,
    check_nonnegative,
    check_positive,
)
from retrystorm.erlang import log_inverse_erlang_b

__all__ = ["MMcD"]

# The scalar quantities of `MMcD.summary`, in the order they are reported.
_SUMMARY_FIELDS = (
    "utilization",
    "occupancy",
    "abandonment_probability",
    "throughput",
    "wait_probability",
    "mean_wait",
    "mean_wait_served",
    "mean_queue_length",
    "mean_response_time",
    "mean_in_system",
)


def _log_inverse_b(servers: int, service_rate: float, arrival_rate: float) -> float:
    """Return ``log(1 / B(servers, lambda / mu))``; ``servers`` may be 0."""
    load = arrival_rate / service_rate
    load_gap = capacity_gap(servers, service_rate, arrival_rate) / service_rate
    value = log_inverse_erlang_b(
        np.array(float(servers)), np.array(load), np.array(load_gap)
    )
    return float(value)


@dataclass(frozen=True, kw_only=True)
class MMcD:
    """The M/M/c+D queue in steady state: a queue with a hard waiting timeout.

    Poisson arrivals, ``servers`` exponential servers, one first-come-
    first-served queue without limit, and the same patience ``timeout`` for
    every request: a request that has waited ``timeout`` seconds leaves
    unserved (a connection proxy's queueing timeout). Always stable.

    Parameters
    ----------
    arrival_rate
        Poisson arrival rate ``lambda``, requests per second (finite, > 0).
    service_rate
        Service rate of one server ``mu``, requests per second (finite, > 0).
    servers
        Number of servers ``c``, a positive integer.
    timeout
        Longest wait ``T`` before a request gives up, seconds (finite, > 0).

    Raises
    ------
    InvalidParameterError
        If a rate or the timeout is not finite and positive, or ``servers`` is
        not a positive integer.

    Notes
    -----
    Let ``V`` be the offered wait, the wait of an arrival that would never
    give up. Its law has an atom at 0 and, for ``x > 0``, the density
    ``v(x) = lambda pi_(c-1) exp(lambda min(x, T) - c mu x)``
    [BaccelliHebuterne1981], [Zeltyn2004], [ZeltynMandelbaum2005]:
    level crossing of ``V`` gives ``v(x) = lambda pi_(c-1) e^(-c mu x) +
    lambda int_0^x v(u) 1{u < T} e^(-c mu (x - u)) du``, whose solution is the
    formula. ``pi_(c-1)``, the probability of exactly ``c - 1`` busy servers,
    follows from ``P(V = 0) = pi_(c-1) / B(c - 1, a)`` and normalisation. With
    ``beta = c mu - lambda``, every integral is of an exponential:

    - `abandonment_probability` ``= P(V > T) = lambda pi_(c-1) e^(-beta T) /
      (c mu)``,
    - ``P(V > 0) = lambda pi_(c-1) (T h1(beta T) + e^(-beta T) / (c mu))`` with
      ``h1(u) = (1 - e^-u) / u``,
    - `mean_wait` ``= E[min(V, T)] = lambda pi_(c-1) (T^2 h2(beta T) + T
      e^(-beta T) / (c mu))`` with ``h2(u) = int_0^1 v e^(-u v) dv``.

    ``h1`` and ``h2`` are evaluated in log space by series near 0 and
    without overflow for ``beta T`` of either sign, so ``lambda = c mu`` and
    heavy overload need no special case.

    Waiting times are over *all arrivals* (an abandoning request waits exactly
    ``timeout``): `mean_wait` ``= L_q / lambda``, `wait_tail` is
    ``P(min(V, T) > t)``, and `mean_response_time` ``= mean_wait + (1 -
    P(abandon)) / mu``; `mean_wait_served` is ``E[W | served]``.

    References
    ----------
    [BaccelliHebuterne1981] On queues with impatient customers.
    [Zeltyn2004] Call centers with impatient customers (the M/M/n+G queue).
    [ZeltynMandelbaum2005] Many-server asymptotics of the M/M/n+G queue.

    Examples
    --------
    >>> q = MMcD(arrival_rate=50 / 180, service_rate=1 / 180, servers=50,
    ...          timeout=300.0)
    >>> round(q.abandonment_probability, 4)
    0.0108
    >>> round(q.mean_wait / 60, 3)
    2.297
    """

    arrival_rate: float
    service_rate: float
    servers: int
    timeout: float

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "arrival_rate", check_positive("arrival_rate", self.arrival_rate)
        )
        object.__setattr__(
            self, "service_rate", check_positive("service_rate", self.service_rate)
        )
        object.__setattr__(self, "servers", check_integer("servers", self.servers))
        object.__setattr__(self, "timeout", check_positive("timeout", self.timeout))

    @property
    def offered_load(self) -> float:
        """Offered load ``lambda / mu`` in erlangs."""
        return self.arrival_rate / self.service_rate

    @property
    def utilization(self) -> float:
        """Offered utilisation ``lambda / (c mu)``, dimensionless (may exceed 1)."""
        return self.arrival_rate / (self.servers * self.service_rate)

    @cached_property
    def _beta(self) -> float:
        """``c mu - lambda``, requests per second (exact rounding; any sign)."""
        return capacity_gap(self.servers, self.service_rate, self.arrival_rate)

    @cached_property
    def _log_pi_before_full(self) -> float:
        """``log pi_(c-1)``, from the normalisation of the law of ``V``."""
        log_idle = _log_inverse_b(
            self.servers - 1, self.service_rate, self.arrival_rate
        )
        log_mass = math.log(self.arrival_rate) + self._log_waiting_integral(0.0)
        return -float(np.logaddexp(log_idle, log_mass))

    def _log_waiting_integral(self, time: float) -> float:
        """``log int_t^inf exp(lambda min(x, T) - c mu x) dx`` for ``0 <= t < T``."""
        beta, timeout = self._beta, self.timeout
        c_mu = self.servers * self.service_rate
        left = timeout - time
        before = -beta * time + math.log(left) + log_h1(beta * left)
        after = -beta * timeout - math.log(c_mu)
        return float(np.logaddexp(before, after))

    @property
    def wait_probability(self) -> float:
        """Probability that an arrival finds every server busy and waits."""
        log_mass = math.log(self.arrival_rate) + self._log_waiting_integral(0.0)
        return min(1.0, math.exp(self._log_pi_before_full + log_mass))

    @property
    def abandonment_probability(self) -> float:
        """Probability that an arrival times out before service, ``P(V > T)``."""
        c_mu = self.servers * self.service_rate
        log_value = (
            self._log_pi_before_full
            + math.log(self.arrival_rate)
            - self._beta * self.timeout
            - math.log(c_mu)
        )
        return math.exp(log_value)

    @cached_property
    def mean_busy_servers(self) -> float:
        """Mean number of busy servers.

        ``c P(V > 0) + sum_{k<c} k pi_k`` with ``sum_{k<c} k pi_k = (c - 1)
        pi_(c-1) / B(c - 2, a)``: positive terms, exact in heavy overload.
        """
        c = self.servers
        busy = c * self.wait_probability
        if c == 1:
            return busy
        log_below = math.log(c - 1) + _log_inverse_b(
            c - 2, self.service_rate, self.arrival_rate
        )
        return busy + math.exp(self._log_pi_before_full + log_below)

    @property
    def throughput(self) -> float:
        """Rate of served requests, requests per second."""
        return self.service_rate * self.mean_busy_servers

    @property
    def occupancy(self) -> float:
        """Mean fraction of servers busy."""
        return min(1.0, self.mean_busy_servers / self.servers)

    @cached_property
    def _log_wait_served_part(self) -> float:
        """``log E[V; 0 < V <= T] = log(lambda pi_(c-1) T^2 h2(beta T))``."""
        timeout = self.timeout
        return (
            self._log_pi_before_full
            + math.log(self.arrival_rate)
            + 2.0 * math.log(timeout)
            + log_h2(self._beta * timeout)
        )

    @property
    def mean_wait(self) -> float:
        """Mean time in queue over all arrivals (served or timed out), seconds."""
        return math.fsum(
            (
                math.exp(self._log_wait_served_part),
                self.timeout * self.abandonment_probability,
            )
        )

    @property
    def mean_wait_served(self) -> float:
        """Mean time in queue of the requests that are served, seconds."""
        served_fraction = self.throughput / self.arrival_rate
        return math.exp(self._log_wait_served_part) / served_fraction

    @property
    def mean_queue_length(self) -> float:
        """Mean number of waiting requests ``L_q = lambda mean_wait``."""
        return self.arrival_rate * self.mean_wait

    @property
    def mean_response_time(self) -> float:
        """Mean time in system over all arrivals, seconds.

        ``mean_wait + (1 - P(abandon)) / mu``: a request that times out spends
        only its wait in the system.
        """
        return self.mean_wait + self.mean_busy_servers / self.arrival_rate

    @property
    def mean_in_system(self) -> float:
        """Mean number of requests in the system (waiting or in service)."""
        return self.mean_queue_length + self.mean_busy_servers

    def wait_tail(self, t: float) -> float:
        """Return ``P(W > t)`` over all arrivals, ``t`` in seconds.

        ``W = min(V, T)``, so the tail is ``P(V > t)`` below the timeout and 0
        from it on.

        Raises
        ------
        InvalidParameterError
            If ``t`` is negative, infinite or NaN.
        """
        time = check_nonnegative("t", t)
        if time >= self.timeout:
            return 0.0
        log_mass = math.log(self.arrival_rate) + self._log_waiting_integral(time)
        return min(1.0, math.exp(self._log_pi_before_full + log_mass))

    def wait_quantile(self, q: float) -> float:
        """Return the ``q``-quantile of the wait over all arrivals, seconds.

        The wait has an atom at ``timeout`` of size `abandonment_probability`,
        so every level above ``1 - abandonment_probability`` gives ``timeout``.

        Raises
        ------
        InvalidParameterError
            If ``q`` is not strictly between 0 and 1.
        """
        level = check_fraction("q", q)
        scale = min(self.timeout, 1.0 / (self.servers * self.service_rate))
        return quantile_from_tail(self.wait_tail, level, scale, upper=self.timeout)

    def summary(self) -> dict[str, float]:
        """Return every scalar quantity by property name."""
        return {name: float(getattr(self, name)) for name in _SUMMARY_FIELDS}
