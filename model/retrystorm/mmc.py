"""The M/M/c queue: Poisson arrivals, c exponential servers, unlimited waiting room.

The formulas live in one vectorised kernel, `_mmc_arrays`, shared by the
`MMc` class (on scalars) and by parameter sweeps (on whole grids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike

from retrystorm._birth_death import FloatArray, capacity_gap, log_poisson_term
from retrystorm._queue_model import QueueModel, float_arrays
from retrystorm._validation import (
    check_fraction,
    check_integer,
    check_nonnegative,
)
from retrystorm.erlang import log_erlang_c
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


def _mmc_core(
    arrival_rate: ArrayLike, service_rate: ArrayLike, servers: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Return ``(c mu - lambda, log C)`` elementwise; ``log C = 0`` when unstable.

    The spare capacity ``c mu - lambda`` is formed without rounding loss and
    divided by ``mu`` for the load gap ``c - a`` of Erlang C, so results keep
    about 13 correct digits up to ``rho = 1 - 1e-9``.
    """
    lam, mu, c = float_arrays(arrival_rate, service_rate, servers)
    gap = capacity_gap(c, mu, lam)
    return gap, log_erlang_c(c, lam / mu, gap / mu)


def _mmc_quantities(
    arrival_rate: ArrayLike,
    service_rate: ArrayLike,
    servers: ArrayLike,
    gap: FloatArray,
    log_wait_probability: FloatArray,
) -> dict[str, FloatArray]:
    """Every scalar quantity from `_mmc_core`'s results; ``inf`` where unstable."""
    lam = np.asarray(arrival_rate, dtype=float)
    mu = np.asarray(service_rate, dtype=float)
    c = np.asarray(servers, dtype=float)
    stable = gap > 0.0
    wait_probability = np.exp(log_wait_probability)
    # E[W] = C / (c mu - lambda); no steady state (inf) where the gap is <= 0.
    mean_wait = np.where(stable, wait_probability / np.where(stable, gap, 1.0), np.inf)
    offered_load = lam / mu
    mean_queue_length = lam * mean_wait
    return {
        "offered_load": offered_load,
        "utilization": lam / (c * mu),
        "wait_probability": wait_probability,
        "mean_wait": mean_wait,
        "mean_queue_length": mean_queue_length,
        "mean_response_time": mean_wait + 1.0 / mu,
        "mean_in_system": mean_queue_length + offered_load,
    }


def _mmc_arrays(
    arrival_rate: ArrayLike, service_rate: ArrayLike, servers: ArrayLike
) -> dict[str, FloatArray]:
    """Return every M/M/c quantity elementwise over broadcast parameter arrays.

    The inputs are not checked (the callers do): rates finite and positive,
    ``servers`` whole numbers >= 1. Where ``rho >= 1`` the wait probability
    is 1 and every mean is ``inf``, as in `MMc.summary`.
    """
    gap, log_wait_probability = _mmc_core(arrival_rate, service_rate, servers)
    return _mmc_quantities(
        arrival_rate, service_rate, servers, gap, log_wait_probability
    )


@dataclass(frozen=True, kw_only=True)
class MMc(QueueModel):
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

    _summary_fields = _SUMMARY_FIELDS

    @cached_property
    def _core(self) -> tuple[float, float]:
        """``(c mu - lambda, log C)`` from the shared kernel."""
        gap, log_wait_probability = _mmc_core(
            self.arrival_rate, self.service_rate, self.servers
        )
        return float(gap), float(log_wait_probability)

    @cached_property
    def _quantities(self) -> dict[str, FloatArray]:
        """Every scalar quantity from the shared kernel (``inf`` when unstable)."""
        gap, log_wait_probability = self._core
        return _mmc_quantities(
            self.arrival_rate,
            self.service_rate,
            self.servers,
            np.asarray(gap),
            np.asarray(log_wait_probability),
        )

    @property
    def _gap(self) -> float:
        """Spare capacity ``c mu - lambda`` in requests per second (exact rounding)."""
        return self._core[0]

    @property
    def stable(self) -> bool:
        """Whether a steady state exists (``lambda < c mu``)."""
        return self._gap > 0.0

    @property
    def _log_wait_probability(self) -> float:
        """``log C``, with ``C = c / ((c - a) / B + a)`` taken in log space."""
        return self._core[1]

    def _require_stable(self, quantity: str) -> None:
        """Raise `UnstableSystemError` for ``quantity`` if there is no steady state."""
        if not self.stable:
            raise UnstableSystemError(self.utilization, quantity)

    def _existing(self, quantity: str) -> float:
        """Return a mean from the kernel, or raise if it does not exist."""
        self._require_stable(quantity)
        return float(self._quantities[quantity])

    @property
    def wait_probability(self) -> float:
        """Probability that an arrival waits (Erlang C); 1 when unstable."""
        return float(self._quantities["wait_probability"])

    @property
    def mean_wait(self) -> float:
        """Mean time in queue ``E[W]``, seconds."""
        return self._existing("mean_wait")

    @property
    def mean_queue_length(self) -> float:
        """Mean number of waiting requests ``L_q``."""
        return self._existing("mean_queue_length")

    @property
    def mean_response_time(self) -> float:
        """Mean time in system (wait plus service) ``E[T]``, seconds."""
        return self._existing("mean_response_time")

    @property
    def mean_in_system(self) -> float:
        """Mean number of requests in the system (waiting or in service) ``L``."""
        return self._existing("mean_in_system")

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
        # numpy's exp, as in the kernel's wait probability, so P(W > t) <= C.
        return float(np.exp(self._log_wait_probability - self._gap * time))

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
        return super().summary()
