"""The M/M/c queue: Poisson arrivals, c exponential servers, unlimited waiting room."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from retrystorm._birth_death import capacity_gap, log_poisson_term
from retrystorm._validation import (
    check_fraction,
    check_integer,
    check_nonnegative,
    check_positive,
)
from retrystorm.erlang import log_inverse_erlang_b
from retrystorm.errors import UnstableSystemError

__all__ = ["MMc"]

# The scalar quantities of `MMc.summary`, in the order they are reported.
_SUMMARY_FIELDS = (
    "utilization",
    "wait_probability",
    "mean_wait",
    "mean_queue_length",
    "mean_response_time",
    "mean_in_system",
)


@dataclass(frozen=True, kw_only=True)
class MMc:
    """The M/M/c queue in steady state.

    Requests arrive as a Poisson process, wait in one first-come-first-served
    queue without limit, and are served by ``servers`` identical servers with
    exponential service times.

    Parameters
    ----------
    arrival_rate
        Poisson arrival rate ``lambda``, requests per second (finite, > 0).
    service_rate
        Service rate of one server ``mu``, requests per second (finite, > 0).
    servers
        Number of servers ``c``, a positive integer.

    Raises
    ------
    InvalidParameterError
        If a rate is not finite and positive or ``servers`` is not a positive
        integer.

    Notes
    -----
    A steady state exists iff ``rho = lambda / (c mu) < 1``. Then, with ``C``
    the Erlang C probability of waiting [Kleinrock1975] (Sec. 3.5),

    - ``P(W > t) = C exp(-(c mu - lambda) t)``,
    - ``E[W] = C / (c mu - lambda)``, ``L_q = lambda E[W]``,
    - ``E[T] = E[W] + 1/mu``, ``L = lambda E[T]`` (Little's law).

    At ``rho >= 1`` `wait_probability` is 1 (every arrival waits) and every
    other quantity raises `UnstableSystemError`; `summary` reports those as
    ``inf``. The difference ``c mu - lambda`` is formed exactly, so results
    keep about 13 correct digits up to ``rho = 1 - 1e-9``.

    References
    ----------
    [Kleinrock1975] Queueing Systems vol. 1, Sec. 3.5 (M/M/m).
    [GrossHarris2008] Fundamentals of Queueing Theory, Ch. 2 (M/M/c).

    Examples
    --------
    >>> q = MMc(arrival_rate=9.0, service_rate=5.0, servers=2)
    >>> round(q.utilization, 3)
    0.9
    >>> round(q.mean_response_time, 4)
    1.0526
    >>> MMc(arrival_rate=3.0, service_rate=1.0, servers=2).wait_probability
    1.0
    """

    arrival_rate: float
    service_rate: float
    servers: int

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "arrival_rate", check_positive("arrival_rate", self.arrival_rate)
        )
        object.__setattr__(
            self, "service_rate", check_positive("service_rate", self.service_rate)
        )
        object.__setattr__(self, "servers", check_integer("servers", self.servers))

    @property
    def offered_load(self) -> float:
        """Offered load ``lambda / mu`` in erlangs (mean number of busy servers)."""
        return self.arrival_rate / self.service_rate

    @property
    def utilization(self) -> float:
        """Offered utilisation ``lambda / (c mu)``, dimensionless."""
        return self.arrival_rate / (self.servers * self.service_rate)

    @cached_property
    def _gap(self) -> float:
        """Spare capacity ``c mu - lambda`` in requests per second (exact rounding)."""
        return capacity_gap(self.servers, self.service_rate, self.arrival_rate)

    @property
    def stable(self) -> bool:
        """Whether a steady state exists (``lambda < c mu``)."""
        return self._gap > 0.0

    @cached_property
    def _log_wait_probability(self) -> float:
        """``log C``, with ``C = c / ((c - a) / B + a)`` taken in log space."""
        if not self.stable:
            return 0.0
        c = float(self.servers)
        load = self.offered_load
        load_gap = self._gap / self.service_rate
        log_inverse_b = float(
            log_inverse_erlang_b(np.array(c), np.array(load), np.array(load_gap))
        )
        log_denominator = float(
            np.logaddexp(math.log(load_gap) + log_inverse_b, math.log(load))
        )
        return math.log(c) - log_denominator

    def _require_stable(self, quantity: str) -> None:
        if not self.stable:
            raise UnstableSystemError(self.utilization, quantity)

    @property
    def wait_probability(self) -> float:
        """Probability that an arrival waits (Erlang C); 1 when unstable."""
        return math.exp(self._log_wait_probability)

    @property
    def mean_wait(self) -> float:
        """Mean time in queue ``E[W]``, seconds."""
        self._require_stable("mean_wait")
        return self.wait_probability / self._gap

    @property
    def mean_queue_length(self) -> float:
        """Mean number of waiting requests ``L_q``."""
        self._require_stable("mean_queue_length")
        return self.arrival_rate * self.mean_wait

    @property
    def mean_response_time(self) -> float:
        """Mean time in system (wait plus service) ``E[T]``, seconds."""
        self._require_stable("mean_response_time")
        return self.mean_wait + 1.0 / self.service_rate

    @property
    def mean_in_system(self) -> float:
        """Mean number of requests in the system (waiting or in service) ``L``."""
        self._require_stable("mean_in_system")
        return self.mean_queue_length + self.offered_load

    def state_probability(self, n: int) -> float:
        """Return ``P(N = n)``, the steady-state probability of ``n`` requests inside.

        Raises
        ------
        InvalidParameterError
            If ``n`` is not a non-negative integer.
        UnstableSystemError
            If the system has no steady state.

        Notes
        -----
        ``pi_c = C (1 - rho)``; below ``c``, ``pi_n = pi_c c! / (n! a^(c-n))``,
        and above, ``pi_n = pi_c rho^(n-c)`` [Kleinrock1975] (Sec. 3.5).
        """
        count = check_integer("n", n, minimum=0)
        self._require_stable("state_probability")
        c = self.servers
        log_pi_c = (
            self._log_wait_probability
            + math.log(self._gap)
            - math.log(c * self.service_rate)
        )
        if count >= c:
            log_rho = math.log(self.arrival_rate) - math.log(c * self.service_rate)
            return math.exp(log_pi_c + (count - c) * log_rho)
        load = self.offered_load
        log_ratio = log_poisson_term(float(count), load) - log_poisson_term(
            float(c), load
        )
        return math.exp(log_pi_c + float(log_ratio))

    def wait_tail(self, t: float) -> float:
        """Return ``P(W > t)``, the probability of waiting longer than ``t`` seconds.

        Raises
        ------
        InvalidParameterError
            If ``t`` is negative, infinite or NaN.
        UnstableSystemError
            If the system has no steady state.
        """
        time = check_nonnegative("t", t)
        self._require_stable("wait_tail")
        return math.exp(self._log_wait_probability - self._gap * time)

    def wait_quantile(self, q: float) -> float:
        """Return the ``q``-quantile of the waiting time, seconds.

        The smallest ``t`` with ``P(W <= t) >= q``: 0 when ``q <= 1 - C``, else
        ``log(C / (1 - q)) / (c mu - lambda)``.

        Raises
        ------
        InvalidParameterError
            If ``q`` is not strictly between 0 and 1.
        UnstableSystemError
            If the system has no steady state.
        """
        level = check_fraction("q", q)
        self._require_stable("wait_quantile")
        excess = self._log_wait_probability - math.log1p(-level)
        return max(excess, 0.0) / self._gap

    def summary(self) -> dict[str, float]:
        """Return every scalar quantity by property name.

        Quantities that do not exist (``rho >= 1``) are reported as ``inf``.
        """
        return {name: _value_or_inf(self, name) for name in _SUMMARY_FIELDS}


def _value_or_inf(model: MMc, name: str) -> float:
    """Return ``model.name``, or ``inf`` where the quantity does not exist."""
    try:
        return float(getattr(model, name))
    except UnstableSystemError:
        return math.inf
