"""Erlang-A, the M/M/c+M queue: waiting requests give up at an exponential rate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import gammainc

from retrystorm._birth_death import (
    FloatArray,
    capacity_gap,
    deviance,
    log_gamma_residual,
    log_poisson_term,
    log_sum_logconcave,
    quantile_from_tail,
)
from retrystorm._validation import (
    check_fraction,
    check_integer,
    check_nonnegative,
    check_positive,
)
from retrystorm.erlang import log_inverse_erlang_b

__all__ = ["ErlangA", "servers_for_abandonment"]

# The scalar quantities of `ErlangA.summary`, in the order they are reported.
_SUMMARY_FIELDS = (
    "utilization",
    "occupancy",
    "abandonment_probability",
    "throughput",
    "wait_probability",
    "mean_wait",
    "mean_queue_length",
    "mean_response_time",
    "mean_in_system",
)


def _queue_sums(s: float, z: float, difference: float) -> tuple[float, float, float]:
    """Return ``(log S, log (S - 1), log D)`` for the queue part of Erlang-A.

    ``S = sum_{j>=0} z^j / ((s+1)(s+2)...(s+j))`` and ``D = sum_j j z^j /
    ((s+1)...(s+j))``, for ``s, z > 0``; ``difference`` is ``z - s`` as
    accurately as the caller knows it.

    Notes
    -----
    ``S = P(s, z) / f(s; z)`` with ``P`` the regularised lower incomplete gamma
    function and ``f(s; z) = e^-z z^s / Gamma(s + 1)``, and ``D = s + (z - s) S``
    [GarnettMandelbaumReiman2002] (the function ``A(x, y)`` there is ``S``).
    For ``z >= max(s, 1)``, ``P >= 1/2`` and both forms are free of
    cancellation. Below, ``D`` would be a difference of nearly equal numbers,
    so both sums are taken term by term: the ``j``-th term is
    ``exp(-j log(s/z) - deviance(s + j, s) - G(s + j) + G(s))`` with
    ``G = log_gamma_residual``, each exact to a few ulp; the terms fall from
    ``j = 0`` and the tail is bounded explicitly (`log_sum_logconcave`). No
    state space is truncated.
    """
    if z >= max(s, 1.0):
        log_s = math.log(float(gammainc(s, z))) - float(
            log_poisson_term(s, z, -difference)
        )
        log_t = log_s + math.log1p(-math.exp(-log_s))
        log_d = math.log(s)
        if difference > 0.0:
            log_d = float(np.logaddexp(log_d, math.log(difference) + log_s))
        return log_s, log_t, log_d

    ratio = difference / s
    log_s_over_z = -math.log1p(ratio) if abs(ratio) < 0.5 else math.log(s) - math.log(z)
    residual_s = float(log_gamma_residual(s))

    def log_term(j: FloatArray) -> FloatArray:
        shifted = s + j
        return (
            -j * log_s_over_z
            - deviance(shifted, s, j)
            - log_gamma_residual(shifted)
            + residual_s
        )

    def log_weighted(j: FloatArray) -> FloatArray:
        return np.log(j) + log_term(j)

    log_s = log_sum_logconcave(log_term, 0, None)
    log_t = log_sum_logconcave(log_term, 1, None)
    log_d = log_sum_logconcave(log_weighted, 1, None)
    return log_s, log_t, log_d


def _log_inverse_b(servers: int, load: float, load_gap: float) -> float:
    """Return ``log(1 / B(servers, load))`` for a scalar (``servers`` may be 0)."""
    value = log_inverse_erlang_b(
        np.array(float(servers)), np.array(load), np.array(load_gap)
    )
    return float(value)


@dataclass(frozen=True, kw_only=True)
class ErlangA:
    """The Erlang-A (M/M/c+M) queue in steady state.

    Poisson arrivals, ``servers`` exponential servers, one first-come-
    first-served queue without limit, and a patience for every request that
    is exponential with rate ``abandonment_rate``: a request still waiting
    when its patience runs out leaves unserved. Always stable.

    Parameters
    ----------
    arrival_rate
        Poisson arrival rate ``lambda``, requests per second (finite, > 0).
    service_rate
        Service rate of one server ``mu``, requests per second (finite, > 0).
    servers
        Number of servers ``c``, a positive integer.
    abandonment_rate
        Rate ``theta`` at which one waiting request gives up, per second
        (finite, > 0); the mean patience is ``1 / theta`` seconds.

    Raises
    ------
    InvalidParameterError
        If a rate is not finite and positive or ``servers`` is not a positive
        integer.

    Notes
    -----
    The number in system is a birth-death chain with death rate
    ``min(k, c) mu + max(k - c, 0) theta`` [GarnettMandelbaumReiman2002].
    With ``s = c mu / theta`` and ``y = lambda / theta``,
    ``pi_(c+j) / pi_c = y^j / ((s+1)...(s+j))``, whose sum ``S`` is an
    incomplete gamma function, and
    ``sum_{k<=c} pi_k / pi_c = 1 / B(c, a)``. Then

    - `wait_probability` ``= pi_c S`` (PASTA),
    - `abandonment_probability` ``= theta L_q / lambda`` (abandonment flow),
    - ``P(W > t) = e^(-theta t) P(V > t)`` with the offered wait
      ``P(V > t) = pi_c exp(y (1 - e^(-theta t)) - c mu t) S(s, y e^(-theta t))``
      [MandelbaumZeltyn2009], [ZeltynMandelbaum2005].

    Waiting times are over *all arrivals*, including those who abandon (an
    abandoning request's wait is its patience): `mean_wait` ``= L_q /
    lambda``, `wait_tail` is ``P(min(V, patience) > t)``, and
    `mean_response_time` ``= mean_wait + (1 - P(abandon)) / mu`` is the mean
    time in system of an arrival, so Little's law holds with ``lambda``.

    No state space is truncated: the infinite sums are incomplete gamma
    functions or series summed to double precision with an explicit tail
    bound, exact to about 1e-13 for any number of servers.

    References
    ----------
    [GarnettMandelbaumReiman2002] Designing a call center with impatient
    customers.
    [MandelbaumZeltyn2009] Staffing many-server queues with impatient
    customers.
    [ZeltynMandelbaum2005] Many-server asymptotics of the M/M/n+G queue
    (the density of the offered wait).

    Examples
    --------
    >>> q = ErlangA(arrival_rate=10 / 3, service_rate=1 / 3, servers=14,
    ...             abandonment_rate=0.2)
    >>> round(q.wait_probability, 5)
    0.14526
    >>> round(q.occupancy, 6)
    0.704297
    """

    arrival_rate: float
    service_rate: float
    servers: int
    abandonment_rate: float

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "arrival_rate", check_positive("arrival_rate", self.arrival_rate)
        )
        object.__setattr__(
            self, "service_rate", check_positive("service_rate", self.service_rate)
        )
        object.__setattr__(self, "servers", check_integer("servers", self.servers))
        object.__setattr__(
            self,
            "abandonment_rate",
            check_positive("abandonment_rate", self.abandonment_rate),
        )

    @property
    def offered_load(self) -> float:
        """Offered load ``lambda / mu`` in erlangs."""
        return self.arrival_rate / self.service_rate

    @property
    def utilization(self) -> float:
        """Offered utilisation ``lambda / (c mu)``, dimensionless (may exceed 1)."""
        return self.arrival_rate / (self.servers * self.service_rate)

    @cached_property
    def _gap(self) -> float:
        """``c mu - lambda``, requests per second (exact rounding)."""
        return capacity_gap(self.servers, self.service_rate, self.arrival_rate)

    @cached_property
    def _state(self) -> tuple[float, float, float]:
        """``(log pi_c, log S, log D)``."""
        theta = self.abandonment_rate
        s = self.servers * self.service_rate / theta
        y = self.arrival_rate / theta
        log_s, log_t, log_d = _queue_sums(s, y, -self._gap / theta)
        log_e = _log_inverse_b(
            self.servers, self.offered_load, self._gap / self.service_rate
        )
        log_pi_c = -float(np.logaddexp(log_e, log_t))
        return log_pi_c, log_s, log_d

    @property
    def wait_probability(self) -> float:
        """Probability that an arrival finds every server busy and waits."""
        log_pi_c, log_s, _ = self._state
        return min(1.0, math.exp(log_pi_c + log_s))

    @property
    def mean_queue_length(self) -> float:
        """Mean number of waiting requests ``L_q``."""
        log_pi_c, _, log_d = self._state
        return math.exp(log_pi_c + log_d)

    @property
    def abandonment_probability(self) -> float:
        """Probability that an arrival gives up before service, ``theta L_q/lambda``."""
        log_pi_c, _, log_d = self._state
        log_y = math.log(self.arrival_rate) - math.log(self.abandonment_rate)
        return math.exp(log_pi_c + log_d - log_y)

    @cached_property
    def mean_busy_servers(self) -> float:
        """Mean number of busy servers.

        ``c P(W > 0) + sum_{k<c} k pi_k``, with ``sum_{k<c} k pi_k / pi_c =
        c (c - 1) / (a B(c - 2, a))``: a sum of positive terms, so it stays
        exact where ``a (1 - P(abandon))`` would cancel.
        """
        c = self.servers
        log_pi_c = self._state[0]
        busy_when_waiting = c * self.wait_probability
        if c == 1:
            return busy_when_waiting
        load = self.offered_load
        load_gap = (
            capacity_gap(c - 2, self.service_rate, self.arrival_rate)
            / self.service_rate
        )
        log_below = math.log(c * (c - 1) / load) + _log_inverse_b(c - 2, load, load_gap)
        return busy_when_waiting + math.exp(log_pi_c + log_below)

    @property
    def throughput(self) -> float:
        """Rate of served requests, requests per second (``mu`` times busy servers)."""
        return self.service_rate * self.mean_busy_servers

    @property
    def occupancy(self) -> float:
        """Mean fraction of servers busy."""
        return min(1.0, self.mean_busy_servers / self.servers)

    @property
    def mean_wait(self) -> float:
        """Mean time in queue over all arrivals (served or abandoning), seconds."""
        return self.mean_queue_length / self.arrival_rate

    @property
    def mean_response_time(self) -> float:
        """Mean time in system over all arrivals, seconds.

        ``mean_wait + (1 - P(abandon)) / mu``: an abandoning request spends only
        its wait in the system.
        """
        return self.mean_wait + self.mean_busy_servers / self.arrival_rate

    @property
    def mean_in_system(self) -> float:
        """Mean number of requests in the system (waiting or in service)."""
        return self.mean_queue_length + self.mean_busy_servers

    def offered_wait_tail(self, t: float) -> float:
        """Return ``P(V > t)``: the wait an infinitely patient arrival would have.

        Raises
        ------
        InvalidParameterError
            If ``t`` is negative, infinite or NaN.
        """
        time = check_nonnegative("t", t)
        return math.exp(self._log_offered_wait_tail(time))

    def _log_offered_wait_tail(self, time: float) -> float:
        theta = self.abandonment_rate
        c_mu = self.servers * self.service_rate
        s = c_mu / theta
        y = self.arrival_rate / theta
        decay = math.exp(-theta * time)
        z = y * decay
        log_s_z = _queue_sums(s, z, z - s)[0] if time > 0.0 else self._state[1]
        exponent = -y * math.expm1(-theta * time) - c_mu * time
        return self._state[0] + exponent + log_s_z

    def wait_tail(self, t: float) -> float:
        """Return ``P(W > t)`` over all arrivals, ``t`` in seconds.

        ``W`` is the time an arrival spends waiting, until service or until it
        abandons, so ``P(W > t) = e^(-theta t) P(V > t)``.

        Raises
        ------
        InvalidParameterError
            If ``t`` is negative, infinite or NaN.
        """
        time = check_nonnegative("t", t)
        log_tail = self._log_offered_wait_tail(time) - self.abandonment_rate * time
        return min(1.0, math.exp(log_tail))

    def served_within(self, t: float) -> float:
        """Return ``P(served and W <= t)``, the call-centre "service level".

        Parameters
        ----------
        t
            Waiting-time threshold, seconds.

        Returns
        -------
        float
            The probability that an arrival is served after waiting at most
            ``t``; abandoning requests never count, however short their wait.

        Raises
        ------
        InvalidParameterError
            If ``t`` is negative, infinite or NaN.

        Notes
        -----
        An arrival with offered wait ``V = x`` is served iff its patience
        exceeds ``x`` (probability ``e^(-theta x)``). Integrating the density of
        ``V``, ``lambda pi_(c-1) exp(y (1 - e^(-theta x)) - c mu x)``, against it
        from ``t`` to infinity (substituting ``u = e^(-theta x)``) gives
        ``P(served, W > t) = pi_c s / (s + 1) exp(y (1 - e^(-theta t)) - (s + 1)
        theta t) S(s + 1, y e^(-theta t))``, and the result is
        ``1 - P(abandon) - P(served, W > t)``.
        """
        time = check_nonnegative("t", t)
        theta = self.abandonment_rate
        s = self.servers * self.service_rate / theta
        y = self.arrival_rate / theta
        z = y * math.exp(-theta * time)
        log_s_next = _queue_sums(s + 1.0, z, z - (s + 1.0))[0]
        exponent = -y * math.expm1(-theta * time) - (s + 1.0) * theta * time
        log_late = self._state[0] + math.log(s / (s + 1.0)) + exponent + log_s_next
        abandonment = self.abandonment_probability
        # 1 - P(ab) where P(ab) is small; the busy-server flow where it is not.
        served = (
            1.0 - abandonment
            if abandonment < 0.5
            else self.throughput / self.arrival_rate
        )
        return min(1.0, max(0.0, served - math.exp(log_late)))

    def wait_quantile(self, q: float) -> float:
        """Return the ``q``-quantile of the wait over all arrivals, seconds.

        Raises
        ------
        InvalidParameterError
            If ``q`` is not strictly between 0 and 1.
        """
        level = check_fraction("q", q)
        scale = 1.0 / (self.servers * self.service_rate + self.abandonment_rate)
        return quantile_from_tail(self.wait_tail, level, scale)

    def summary(self) -> dict[str, float]:
        """Return every scalar quantity by property name."""
        return {name: float(getattr(self, name)) for name in _SUMMARY_FIELDS}


def servers_for_abandonment(
    *,
    arrival_rate: float,
    service_rate: float,
    abandonment_rate: float,
    max_abandonment: float,
) -> int:
    """Return the fewest servers keeping Erlang-A abandonment at or below a target.

    Parameters
    ----------
    arrival_rate, service_rate, abandonment_rate
        As for `ErlangA`, per second.
    max_abandonment
        Largest acceptable probability of abandonment, in (0, 1).

    Returns
    -------
    int
        The smallest ``c`` with ``ErlangA(..., servers=c).abandonment_probability
        <= max_abandonment``.

    Raises
    ------
    InvalidParameterError
        If a rate is not finite and positive or ``max_abandonment`` is not in
        (0, 1).

    Notes
    -----
    Abandonment falls as servers are added, so a doubling search and a
    bisection over the integers need ``O(log c)`` model evaluations.

    Examples
    --------
    >>> servers_for_abandonment(arrival_rate=100 / 3, service_rate=1 / 3,
    ...                         abandonment_rate=0.2, max_abandonment=0.01)
    108
    """
    target = check_fraction("max_abandonment", max_abandonment)

    def meets(c: int) -> bool:
        model = ErlangA(
            arrival_rate=arrival_rate,
            service_rate=service_rate,
            servers=c,
            abandonment_rate=abandonment_rate,
        )
        return model.abandonment_probability <= target

    high = 1
    while not meets(high):
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return high
