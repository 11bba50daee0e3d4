"""Erlang-A, the M/M/c+M queue: waiting requests give up at an exponential rate.

The formulas live in one vectorised kernel, `_erlang_a_arrays`, shared by the
`ErlangA` class (on scalars) and by parameter sweeps (on whole grids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammainc

from retrystorm._birth_death import (
    FloatArray,
    capacity_gap,
    deviance,
    log_gamma_residual,
    log_poisson_term,
    quantile_from_tail,
)
from retrystorm._queue_model import QueueModel, float_arrays
from retrystorm._search import smallest_whole
from retrystorm._validation import check_fraction, check_nonnegative, check_positive
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


# Elements per block of the vectorised series, and the most terms evaluated
# at once (elements times terms) so that the work arrays stay small.
_BLOCK = 1 << 12
_MAX_CELLS = 1 << 18
# Each run of terms starts from an exactly evaluated term and continues by the
# ratio z / (s + j): at most this many roundings, about 7e-15 relative.
_RUN = 32
# A series stops once its remaining tail is below this share of its sum.
_NEGLIGIBLE = 2.0**-60


def _queue_sums(
    s: ArrayLike, z: ArrayLike, difference: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return ``(log S, log (S - 1), log D)`` for the queue part of Erlang-A.

    Elementwise over broadcast arrays: ``S = sum_{j>=0} z^j / ((s+1)(s+2)...
    (s+j))`` and ``D = sum_j j z^j / ((s+1)...(s+j))``, for ``s, z > 0``;
    ``difference`` is ``z - s`` as accurately as the caller knows it.

    Notes
    -----
    ``S = P(s, z) / f(s; z)`` with ``P`` the regularised lower incomplete gamma
    function and ``f(s; z) = e^-z z^s / Gamma(s + 1)``, and ``D = s + (z - s) S``
    [GarnettMandelbaumReiman2002] (the function ``A(x, y)`` there is ``S``).
    For ``z >= max(s, 1)``, ``P >= 1/2`` and both forms are free of
    cancellation. Below, ``D`` would be a difference of nearly equal numbers,
    so both sums are taken term by term (`_series_sums`). No state space is
    truncated.
    """
    s_b, z_b, d_b = np.broadcast_arrays(
        np.asarray(s, dtype=float),
        np.asarray(z, dtype=float),
        np.asarray(difference, dtype=float),
    )
    log_s, log_t, log_d = (np.empty(s_b.shape) for _ in range(3))
    closed = z_b >= np.maximum(s_b, 1.0)
    parts = _closed_form_sums(s_b[closed], z_b[closed], d_b[closed])
    for target, part in zip((log_s, log_t, log_d), parts, strict=True):
        target[closed] = part
    series = ~closed
    parts = _series_sums(s_b[series], z_b[series], d_b[series])
    for target, part in zip((log_s, log_t, log_d), parts, strict=True):
        target[series] = part
    return log_s, log_t, log_d


def _closed_form_sums(
    s: FloatArray, z: FloatArray, difference: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """`_queue_sums` through the incomplete gamma function, for ``z >= max(s, 1)``."""
    log_s = np.log(gammainc(s, z)) - log_poisson_term(s, z, -difference)
    log_t = log_s + np.log1p(-np.exp(-log_s))
    # D = s + (z - s) S: both terms positive here (z >= s).
    positive = difference > 0.0
    log_excess = np.log(np.where(positive, difference, 1.0)) + log_s
    log_d = np.where(positive, np.logaddexp(np.log(s), log_excess), np.log(s))
    return log_s, log_t, log_d


def _series_sums(
    s: FloatArray, z: FloatArray, difference: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """`_queue_sums` term by term, for ``z < max(s, 1)``, in blocks of elements."""
    log_s, log_t, log_d = (np.empty(s.shape) for _ in range(3))
    for start in range(0, s.size, _BLOCK):
        block = slice(start, start + _BLOCK)
        parts = _series_block(s[block], z[block], difference[block])
        for target, part in zip((log_s, log_t, log_d), parts, strict=True):
            target[block] = part
    return log_s, log_t, log_d


def _series_block(
    s: FloatArray, z: FloatArray, difference: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """`_series_sums` on one block.

    Notes
    -----
    The ``j``-th term is ``t_j = exp(-j log(s/z) - deviance(s + j, s) -
    G(s + j) + G(s))`` with ``G = log_gamma_residual`` [Loader2000], exact to
    a few ulp. Terms are taken relative to ``t_1`` (so nothing under- or
    overflows), in runs of `_RUN` that start from an exact term and go on by
    the ratio ``t_j / t_(j-1) = z / (s + j)``. Here the ratio is below 1 and
    falls with ``j``, so after term ``J`` with ratio ``r`` to come the tails
    are at most ``t_J r / (1 - r)`` (of ``S``) and ``t_J (J r / (1 - r) + r /
    (1 - r)^2)`` (of ``D``); an element stops once both are below 2^-60 of
    its sums.
    """
    # log(s / z) through log1p when z is near s.
    ratio = difference / s
    near = np.abs(ratio) < 0.5
    log_s_over_z = np.where(
        near, -np.log1p(np.where(near, ratio, 0.0)), np.log(s) - np.log(z)
    )
    residual_s = log_gamma_residual(s)

    def log_term(j: FloatArray, rows: NDArray[np.intp]) -> FloatArray:
        """``log t_j`` for the elements ``rows`` (one row each) at columns ``j``."""
        s_rows = s[rows][:, None]
        shifted = s_rows + j
        return (
            -j * log_s_over_z[rows][:, None]
            - deviance(shifted, s_rows, np.broadcast_to(j, shifted.shape))
            - log_gamma_residual(shifted)
            + residual_s[rows][:, None]
        )

    every = np.arange(s.size)
    log_first = log_term(np.ones((1, 1)), every)[:, 0]
    tail_sum = np.zeros(s.size)  # sum_{j>=1} t_j / t_1
    weighted_sum = np.zeros(s.size)  # sum_{j>=1} j t_j / t_1
    active = every
    first_index, runs = 1.0, 1
    while active.size:
        # Exact anchors, then runs of ratios multiplied out.
        anchors = first_index + _RUN * np.arange(runs, dtype=float)
        log_anchors = log_term(anchors[None, :], active) - log_first[active][:, None]
        columns = anchors[:, None] + np.arange(_RUN, dtype=float)[None, :]
        steps = z[active][:, None, None] / (s[active][:, None, None] + columns)
        steps[:, :, 0] = np.exp(log_anchors)
        terms = np.cumprod(steps, axis=2).reshape(active.size, -1)
        indices = columns.reshape(-1)
        tail_sum[active] += terms.sum(axis=1)
        weighted_sum[active] += (terms * indices).sum(axis=1)

        # Bound what is left; keep only the elements whose tail still counts.
        last, last_index = terms[:, -1], indices[-1]
        r = z[active] / (s[active] + last_index + 1.0)
        tail = last * r / (1.0 - r)
        weighted_tail = last * (last_index * r / (1.0 - r) + r / (1.0 - r) ** 2)
        done = (tail <= _NEGLIGIBLE * tail_sum[active]) & (
            weighted_tail <= _NEGLIGIBLE * weighted_sum[active]
        )
        active = active[~done]
        first_index = last_index + 1.0
        runs = max(1, min(2 * runs, _MAX_CELLS // (_RUN * max(active.size, 1))))

    log_t = log_first + np.log(tail_sum)
    return np.logaddexp(0.0, log_t), log_t, log_first + np.log(weighted_sum)


def _log_inverse_b(
    servers: ArrayLike, load: ArrayLike, load_gap: ArrayLike
) -> FloatArray:
    """Return ``log(1 / B(servers, load))`` elementwise (``servers`` may be 0)."""
    return log_inverse_erlang_b(
        np.asarray(servers, dtype=float),
        np.asarray(load, dtype=float),
        np.asarray(load_gap, dtype=float),
    )


class _ErlangAState(NamedTuple):
    """``(log pi_c, log S, log D)`` elementwise (see `_queue_sums`)."""

    log_pi_c: FloatArray
    log_s: FloatArray
    log_d: FloatArray


def _erlang_a_state(
    arrival_rate: ArrayLike,
    service_rate: ArrayLike,
    servers: ArrayLike,
    abandonment_rate: ArrayLike,
) -> _ErlangAState:
    """Return ``log pi_c`` and the queue sums, from ``1 / B(c, a)`` and ``S``."""
    lam, mu, c, theta = float_arrays(
        arrival_rate, service_rate, servers, abandonment_rate
    )
    gap = capacity_gap(c, mu, lam)
    log_s, log_t, log_d = _queue_sums(c * mu / theta, lam / theta, -gap / theta)
    log_e = _log_inverse_b(c, lam / mu, gap / mu)
    return _ErlangAState(-np.logaddexp(log_e, log_t), log_s, log_d)


def _erlang_a_quantities(
    arrival_rate: ArrayLike,
    service_rate: ArrayLike,
    servers: ArrayLike,
    abandonment_rate: ArrayLike,
    state: _ErlangAState,
) -> dict[str, FloatArray]:
    """Every scalar quantity of Erlang-A from ``log pi_c``, ``log S``, ``log D``."""
    lam = np.asarray(arrival_rate, dtype=float)
    mu = np.asarray(service_rate, dtype=float)
    c = np.asarray(servers, dtype=float)
    theta = np.asarray(abandonment_rate, dtype=float)
    load = lam / mu

    wait_probability = np.minimum(1.0, np.exp(state.log_pi_c + state.log_s))
    mean_queue_length = np.exp(state.log_pi_c + state.log_d)
    log_y = np.log(lam) - np.log(theta)

    # Busy servers: c P(W > 0) + sum_{k<c} k pi_k, with the sum over pi_c equal
    # to c (c - 1) / (a B(c - 2, a)) for c >= 2: positive terms, no cancellation.
    several = c > 1.0
    below_servers = np.where(several, c - 2.0, 0.0)
    load_gap = capacity_gap(below_servers, mu, lam) / mu
    log_below = np.log(np.where(several, c * (c - 1.0), 1.0) / load) + _log_inverse_b(
        below_servers, load, load_gap
    )
    busy = c * wait_probability + np.where(
        several, np.exp(state.log_pi_c + log_below), 0.0
    )
    mean_wait = mean_queue_length / lam
    return {
        "offered_load": load,
        "utilization": lam / (c * mu),
        "occupancy": np.minimum(1.0, busy / c),
        "abandonment_probability": np.exp(state.log_pi_c + state.log_d - log_y),
        "throughput": mu * busy,
        "mean_busy_servers": busy,
        "wait_probability": wait_probability,
        "mean_wait": mean_wait,
        "mean_queue_length": mean_queue_length,
        "mean_response_time": mean_wait + busy / lam,
        "mean_in_system": mean_queue_length + busy,
    }


def _erlang_a_arrays(
    arrival_rate: ArrayLike,
    service_rate: ArrayLike,
    servers: ArrayLike,
    abandonment_rate: ArrayLike,
) -> dict[str, FloatArray]:
    """Return every Erlang-A quantity elementwise over broadcast parameter arrays.

    The inputs are not checked (the callers do): rates finite and positive,
    ``servers`` whole numbers >= 1.
    """
    state = _erlang_a_state(arrival_rate, service_rate, servers, abandonment_rate)
    return _erlang_a_quantities(
        arrival_rate, service_rate, servers, abandonment_rate, state
    )


@dataclass(frozen=True, kw_only=True)
class ErlangA(QueueModel):
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

    abandonment_rate: float

    _summary_fields = _SUMMARY_FIELDS

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(
            self,
            "abandonment_rate",
            check_positive("abandonment_rate", self.abandonment_rate),
        )

    @cached_property
    def _kernel_state(self) -> _ErlangAState:
        """``log pi_c`` and the queue sums, from the shared kernel."""
        return _erlang_a_state(
            self.arrival_rate, self.service_rate, self.servers, self.abandonment_rate
        )

    @property
    def _state(self) -> tuple[float, float, float]:
        """``(log pi_c, log S, log D)``."""
        state = self._kernel_state
        return float(state.log_pi_c), float(state.log_s), float(state.log_d)

    @cached_property
    def _quantities(self) -> dict[str, FloatArray]:
        """Every scalar quantity, from the shared kernel."""
        return _erlang_a_quantities(
            self.arrival_rate,
            self.service_rate,
            self.servers,
            self.abandonment_rate,
            self._kernel_state,
        )

    @property
    def wait_probability(self) -> float:
        """Probability that an arrival finds every server busy and waits."""
        return float(self._quantities["wait_probability"])

    @property
    def mean_queue_length(self) -> float:
        """Mean number of waiting requests ``L_q``."""
        return float(self._quantities["mean_queue_length"])

    @property
    def abandonment_probability(self) -> float:
        """Probability that an arrival gives up before service, ``theta L_q/lambda``."""
        return float(self._quantities["abandonment_probability"])

    @property
    def mean_busy_servers(self) -> float:
        """Mean number of busy servers.

        ``c P(W > 0) + sum_{k<c} k pi_k``, with ``sum_{k<c} k pi_k / pi_c =
        c (c - 1) / (a B(c - 2, a))``: a sum of positive terms, so it stays
        exact where ``a (1 - P(abandon))`` would cancel.
        """
        return float(self._quantities["mean_busy_servers"])

    @property
    def throughput(self) -> float:
        """Rate of served requests, requests per second (``mu`` times busy servers)."""
        return float(self._quantities["throughput"])

    @property
    def occupancy(self) -> float:
        """Mean fraction of servers busy."""
        return float(self._quantities["occupancy"])

    @property
    def mean_wait(self) -> float:
        """Mean time in queue over all arrivals (served or abandoning), seconds."""
        return float(self._quantities["mean_wait"])

    @property
    def mean_response_time(self) -> float:
        """Mean time in system over all arrivals, seconds.

        ``mean_wait + (1 - P(abandon)) / mu``: an abandoning request spends only
        its wait in the system.
        """
        return float(self._quantities["mean_response_time"])

    @property
    def mean_in_system(self) -> float:
        """Mean number of requests in the system (waiting or in service)."""
        return float(self._quantities["mean_in_system"])

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
        log_s_z = float(_queue_sums(s, z, z - s)[0]) if time > 0.0 else self._state[1]
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
        log_s_next = float(_queue_sums(s + 1.0, z, z - (s + 1.0))[0])
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

    return smallest_whole(meets)
