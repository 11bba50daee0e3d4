"""The M/M/c+D queue: every waiting request gives up after exactly ``timeout``.

The formulas live in one vectorised kernel, `_mmcd_arrays`, shared by the
`MMcD` class (on scalars) and by parameter sweeps (on whole grids).
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
    log_h1,
    log_h2,
    quantile_from_tail,
)
from retrystorm._queue_model import QueueModel, float_arrays
from retrystorm._validation import check_fraction, check_nonnegative, check_positive
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


def _log_inverse_b(
    servers: ArrayLike, service_rate: ArrayLike, arrival_rate: ArrayLike
) -> FloatArray:
    """Return ``log(1 / B(servers, lambda / mu))`` elementwise; ``servers`` may be 0."""
    mu = np.asarray(service_rate, dtype=float)
    lam = np.asarray(arrival_rate, dtype=float)
    load_gap = capacity_gap(servers, mu, lam) / mu
    return log_inverse_erlang_b(np.asarray(servers, dtype=float), lam / mu, load_gap)


def _log_waiting_integral(
    beta: ArrayLike, timeout: ArrayLike, c_mu: ArrayLike, time: ArrayLike
) -> FloatArray:
    """``log int_t^inf exp(lambda min(x, T) - c mu x) dx`` for ``0 <= t < T``.

    ``beta = c mu - lambda``; the integral splits at the timeout into
    ``e^(-beta t) (T - t) h1(beta (T - t))`` and ``e^(-beta T) / (c mu)``.
    """
    b = np.asarray(beta, dtype=float)
    top = np.asarray(timeout, dtype=float)
    start = np.asarray(time, dtype=float)
    left = top - start
    before = -b * start + np.log(left) + log_h1(b * left)
    after = -b * top - np.log(c_mu)
    return np.asarray(np.logaddexp(before, after))


class _MMcDState(NamedTuple):
    """``beta = c mu - lambda`` (any sign) and ``log pi_(c-1)``, elementwise."""

    beta: FloatArray
    log_pi_before_full: FloatArray


def _mmcd_state(
    arrival_rate: ArrayLike,
    service_rate: ArrayLike,
    servers: ArrayLike,
    timeout: ArrayLike,
) -> _MMcDState:
    """Return ``beta`` and ``log pi_(c-1)`` from the normalisation of ``V``."""
    lam, mu, c, top = float_arrays(arrival_rate, service_rate, servers, timeout)
    beta = capacity_gap(c, mu, lam)
    log_idle = _log_inverse_b(c - 1.0, mu, lam)
    log_mass = np.log(lam) + _log_waiting_integral(beta, top, c * mu, 0.0)
    return _MMcDState(beta, -np.logaddexp(log_idle, log_mass))


def _mmcd_quantities(
    arrival_rate: ArrayLike,
    service_rate: ArrayLike,
    servers: ArrayLike,
    timeout: ArrayLike,
    state: _MMcDState,
) -> dict[str, FloatArray]:
    """Every scalar quantity of M/M/c+D from ``beta`` and ``log pi_(c-1)``."""
    lam = np.asarray(arrival_rate, dtype=float)
    mu = np.asarray(service_rate, dtype=float)
    c = np.asarray(servers, dtype=float)
    top = np.asarray(timeout, dtype=float)
    c_mu = c * mu
    log_pi, log_lam = state.log_pi_before_full, np.log(lam)

    log_waiting = log_pi + log_lam + _log_waiting_integral(state.beta, top, c_mu, 0.0)
    wait_probability = np.minimum(1.0, np.exp(log_waiting))
    abandonment = np.exp(log_pi + log_lam - state.beta * top - np.log(c_mu))

    # Busy servers: c P(V > 0) + sum_{k<c} k pi_k, the sum being (c - 1)
    # pi_(c-1) / B(c - 2, a) for c >= 2: positive terms, exact in overload.
    several = c > 1.0
    below_servers = np.where(several, c - 2.0, 0.0)
    log_below = np.log(np.where(several, c - 1.0, 1.0)) + _log_inverse_b(
        below_servers, mu, lam
    )
    busy = c * wait_probability + np.where(several, np.exp(log_pi + log_below), 0.0)

    # E[V; 0 < V <= T] = lambda pi_(c-1) T^2 h2(beta T); timed-out waits add T.
    served_part = np.exp(
        log_pi + log_lam + 2.0 * np.log(top) + log_h2(state.beta * top)
    )
    mean_wait = served_part + top * abandonment
    throughput = mu * busy
    return {
        "offered_load": lam / mu,
        "utilization": lam / c_mu,
        "occupancy": np.minimum(1.0, busy / c),
        "abandonment_probability": abandonment,
        "throughput": throughput,
        "mean_busy_servers": busy,
        "wait_probability": wait_probability,
        "mean_wait": mean_wait,
        "mean_wait_served": served_part / (throughput / lam),
        "mean_queue_length": lam * mean_wait,
        "mean_response_time": mean_wait + busy / lam,
        "mean_in_system": lam * mean_wait + busy,
    }


def _mmcd_arrays(
    arrival_rate: ArrayLike,
    service_rate: ArrayLike,
    servers: ArrayLike,
    timeout: ArrayLike,
) -> dict[str, FloatArray]:
    """Return every M/M/c+D quantity elementwise over broadcast parameter arrays.

    The inputs are not checked (the callers do): rates and timeouts finite
    and positive, ``servers`` whole numbers >= 1.
    """
    state = _mmcd_state(arrival_rate, service_rate, servers, timeout)
    return _mmcd_quantities(arrival_rate, service_rate, servers, timeout, state)


@dataclass(frozen=True, kw_only=True)
class MMcD(QueueModel):
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

    timeout: float

    _summary_fields = _SUMMARY_FIELDS

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "timeout", check_positive("timeout", self.timeout))

    @cached_property
    def _state(self) -> _MMcDState:
        """``beta`` and ``log pi_(c-1)`` from the shared kernel."""
        return _mmcd_state(
            self.arrival_rate, self.service_rate, self.servers, self.timeout
        )

    @cached_property
    def _quantities(self) -> dict[str, FloatArray]:
        """Every scalar quantity, from the shared kernel."""
        return _mmcd_quantities(
            self.arrival_rate,
            self.service_rate,
            self.servers,
            self.timeout,
            self._state,
        )

    @property
    def wait_probability(self) -> float:
        """Probability that an arrival finds every server busy and waits."""
        return float(self._quantities["wait_probability"])

    @property
    def abandonment_probability(self) -> float:
        """Probability that an arrival times out before service, ``P(V > T)``."""
        return float(self._quantities["abandonment_probability"])

    @property
    def mean_busy_servers(self) -> float:
        """Mean number of busy servers.

        ``c P(V > 0) + sum_{k<c} k pi_k`` with ``sum_{k<c} k pi_k = (c - 1)
        pi_(c-1) / B(c - 2, a)``: positive terms, exact in heavy overload.
        """
        return float(self._quantities["mean_busy_servers"])

    @property
    def throughput(self) -> float:
        """Rate of served requests, requests per second."""
        return float(self._quantities["throughput"])

    @property
    def occupancy(self) -> float:
        """Mean fraction of servers busy."""
        return float(self._quantities["occupancy"])

    @property
    def mean_wait(self) -> float:
        """Mean time in queue over all arrivals (served or timed out), seconds."""
        return float(self._quantities["mean_wait"])

    @property
    def mean_wait_served(self) -> float:
        """Mean time in queue of the requests that are served, seconds."""
        return float(self._quantities["mean_wait_served"])

    @property
    def mean_queue_length(self) -> float:
        """Mean number of waiting requests ``L_q = lambda mean_wait``."""
        return float(self._quantities["mean_queue_length"])

    @property
    def mean_response_time(self) -> float:
        """Mean time in system over all arrivals, seconds.

        ``mean_wait + (1 - P(abandon)) / mu``: a request that times out spends
        only its wait in the system.
        """
        return float(self._quantities["mean_response_time"])

    @property
    def mean_in_system(self) -> float:
        """Mean number of requests in the system (waiting or in service)."""
        return float(self._quantities["mean_in_system"])

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
        c_mu = self.servers * self.service_rate
        log_integral = _log_waiting_integral(self._state.beta, self.timeout, c_mu, time)
        log_mass = math.log(self.arrival_rate) + float(log_integral)
        return min(1.0, math.exp(float(self._state.log_pi_before_full) + log_mass))

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
