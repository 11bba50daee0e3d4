"""Log-space building blocks for the stationary laws of birth-death queues.

The steady-state models (Erlang B and C, M/M/c/K, Erlang-A, M/M/c+D) all need
ratios such as ``c! / (k! a^(c-k))`` or ``y^j / ((s+1)(s+2)...(s+j))`` whose
sizes range far beyond what a double can hold at a million servers. This
module computes them as logarithms, with each term evaluated independently
(never by a long running product) so that the relative error stays a few
units in the last place however long the chain is.

The pieces:

- `deviance` is ``x log(x/m) + m - x``, computed without cancellation (the
  "bd0" function of [Loader2000]); it is the exponent of every Poisson-type
  term.
- `log_gamma_residual` is ``log Gamma(x+1) - x log x + x``, the part of
  Stirling's formula that is small and smooth.
- `log_poisson_term` combines the two into ``log(e^(-z) z^x / Gamma(x+1))``.
- `log_sum_logconcave` sums a log-concave sequence of terms from its mode
  outward and stops with an explicit bound on the neglected tail.
- `log_geometric_sum` and `truncated_geometric_mean` handle the geometric
  queue of M/M/c/K at any ratio, including exactly 1.
- `log_h1` and `log_h2` are the two exponential integrals of M/M/c+D.
- `capacity_gap` forms ``c mu - lambda`` without loss, the quantity every
  result near saturation hinges on.
- `quantile_from_tail` inverts a waiting-time tail function.

References are keys of the project bibliography, REFERENCES.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import brentq
from scipy.special import gammaln, xlogy

__all__ = [
    "capacity_gap",
    "deviance",
    "log_gamma_residual",
    "log_geometric_sum",
    "log_h1",
    "log_h2",
    "log_poisson_term",
    "log_sum_logconcave",
    "quantile_from_tail",
    "truncated_geometric_mean",
]

FloatArray = NDArray[np.float64]

# Below this |v| = |x - m| / (x + m) the deviance is summed as a series; above
# it the closed form loses at most a factor of about 5 to cancellation.
_SERIES_LIMIT = 0.25
# Odd powers needed for the series to reach double precision at |v| = 0.25.
_SERIES_TERMS = 15
# From this argument on, Stirling's series with six terms is exact to 1e-18.
_STIRLING_FROM = 16.0
# Stirling-series coefficients B_{2k} / (2k (2k - 1)) for k = 1..6.
_STIRLING = (
    1.0 / 12.0,
    -1.0 / 360.0,
    1.0 / 1260.0,
    -1.0 / 1680.0,
    1.0 / 1188.0,
    -691.0 / 360360.0,
)
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
# A term this far (in nats) below the running sum is below double precision.
_NEGLIGIBLE = 2.0**-60
# Veltkamp's splitter 2^27 + 1 cuts a double into two 26-bit halves.
_SPLITTER = 134217729.0
# Coefficients of u^(2k-1) in 1/expm1(u) - 1/u + 1/2, k = 1..5 (B_2k / (2k)!).
_BERNOULLI = (1 / 12, -1 / 720, 1 / 30240, -1 / 1209600, 1 / 47900160)


def deviance(
    x: ArrayLike, m: ArrayLike, difference: ArrayLike | None = None
) -> FloatArray:
    """Return ``x log(x / m) + m - x`` for ``x >= 0`` and ``m > 0``, elementwise.

    Parameters
    ----------
    x, m
        Non-negative and positive arrays (broadcast together).
    difference
        ``x - m`` when the caller knows it more accurately than the rounded
        subtraction (for example from exact rational arithmetic).

    Returns
    -------
    numpy.ndarray
        The deviance, non-negative, with a relative error of a few ulp.

    Notes
    -----
    Writing ``v = (x - m) / (x + m)``, the identity ``log(x/m) = 2 atanh(v)``
    gives ``x log(x/m) + m - x = (x - m) v + 2 x (v^3/3 + v^5/5 + ...)``, a sum
    of non-negative terms, used for ``|v| < 1/4`` where the closed form would
    cancel [Loader2000].
    """
    x_arr, m_arr = np.broadcast_arrays(np.asarray(x, float), np.asarray(m, float))
    diff = (
        x_arr - m_arr
        if difference is None
        else np.broadcast_to(difference, x_arr.shape)
    )
    v = diff / (x_arr + m_arr)
    near = np.abs(v) < _SERIES_LIMIT
    result = np.empty(x_arr.shape)

    # Series branch: Horner's rule in v^2 on the odd terms v^(2j+1)/(2j+1).
    vn, xn, dn = v[near], x_arr[near], diff[near]
    v2 = vn * vn
    series = np.zeros_like(vn)
    for j in range(_SERIES_TERMS, 0, -1):
        series = series * v2 + 1.0 / (2 * j + 1)
    result[near] = dn * vn + 2.0 * xn * vn * v2 * series

    # Closed form elsewhere; x log(x/m) is taken as 0 at x = 0.
    far = ~near
    xf, mf = x_arr[far], m_arr[far]
    result[far] = xlogy(xf, xf / mf) + mf - xf
    return result


def _stirling_error(x: FloatArray) -> FloatArray:
    """Return ``log Gamma(x+1) - (x + 1/2) log x + x - log sqrt(2 pi)`` for x >= 16."""
    inv2 = 1.0 / (x * x)
    total = np.zeros_like(x)
    for coefficient in reversed(_STIRLING):
        total = total * inv2 + coefficient
    return total / x


def log_gamma_residual(x: ArrayLike) -> FloatArray:
    """Return ``log Gamma(x + 1) - x log x + x`` for ``x >= 0``, elementwise.

    Notes
    -----
    This equals ``log sqrt(2 pi x)`` plus Stirling's error term, a small and
    smooth quantity, so it carries no cancellation when it is combined with
    `deviance`. Below 16 it is evaluated from ``gammaln`` directly (absolute
    error about 1e-14); from 16 on from Stirling's series, exact to 1e-18.
    """
    x_arr = np.asarray(x, dtype=float)
    result = np.empty(x_arr.shape)
    small = x_arr < _STIRLING_FROM
    xs = x_arr[small]
    result[small] = gammaln(xs + 1.0) - xlogy(xs, xs) + xs
    xl = x_arr[~small]
    result[~small] = _HALF_LOG_TWO_PI + 0.5 * np.log(xl) + _stirling_error(xl)
    return result


def log_poisson_term(
    x: ArrayLike, z: ArrayLike, difference: ArrayLike | None = None
) -> FloatArray:
    """Return ``log(exp(-z) z^x / Gamma(x + 1))`` for real ``x >= 0``, ``z > 0``.

    Notes
    -----
    ``log(exp(-z) z^x / Gamma(x+1)) = -deviance(x, z) - log_gamma_residual(x)``,
    accurate to a few ulp of the result even where the naive
    ``x log z - z - gammaln(x + 1)`` loses every digit to cancellation.
    """
    return -deviance(x, z, difference) - log_gamma_residual(x)


def log_sum_logconcave(
    log_term: Callable[[FloatArray], FloatArray], start: int, stop: int | None
) -> float:
    """Return ``log sum_{k=start}^{stop-1} exp(log_term(k))`` for log-concave terms.

    Parameters
    ----------
    log_term
        Vectorised map from an array of whole numbers (as floats) to the log of
        each term; the sequence must be log-concave, so that it rises to one
        mode and falls from it.
    start
        First index.
    stop
        One past the last index, or None for an infinite sum whose terms
        eventually fall.

    Returns
    -------
    float
        The log of the sum.

    Notes
    -----
    The mode is found by bisection on the sign of ``log_term(k+1) -
    log_term(k)``, which cannot increase for a log-concave sequence. The sum
    then grows outward from the mode in chunks of doubling length. Past the
    mode each ratio of successive terms is at most the last one seen, ``r``,
    so the neglected tail is at most ``t r / (1 - r)`` for the last term ``t``;
    a side stops once that bound is below 2^-60 of the running sum.
    """
    mode = _mode_of_logconcave(log_term, start, stop)
    peak = float(log_term(np.array([float(mode)]))[0])
    total = 1.0 + _sum_side(log_term, mode, peak, +1, stop)
    total += _sum_side(log_term, mode, peak, -1, start - 1)
    return peak + math.log(total)


def _mode_of_logconcave(
    log_term: Callable[[FloatArray], FloatArray], start: int, stop: int | None
) -> int:
    """Return an index where a log-concave sequence is largest."""

    def rises(k: int) -> bool:
        pair = log_term(np.array([float(k), float(k + 1)]))
        return bool(pair[1] > pair[0])

    # Bracket the mode: find an upper index at which the sequence falls.
    low = start
    if stop is None:
        step = 1
        high = start + step
        while rises(high):
            low, step = high, step * 2
            high = start + step
        high += 1
    else:
        high = stop - 1
    # Bisect on the sign of the forward difference: rises(low) or low == start.
    while high - low > 1:
        middle = (low + high) // 2
        if rises(middle):
            low = middle
        else:
            high = middle
    candidates = np.array([float(low), float(min(high, low + 1))])
    values = log_term(candidates)
    return int(candidates[int(np.argmax(values))])


def _sum_side(
    log_term: Callable[[FloatArray], FloatArray],
    mode: int,
    peak: float,
    direction: int,
    end: int | None,
) -> float:
    """Sum the terms on one side of ``mode`` (exclusive) up to ``end`` (exclusive)."""
    total = 0.0
    position = mode + direction
    chunk = 64
    while end is None or (position - end) * direction < 0:
        last = position + direction * chunk
        if end is not None and (last - end) * direction > 0:
            last = end
        indices = np.arange(position, last, direction, dtype=float)
        logs = log_term(indices) - peak
        total += float(np.sum(np.exp(logs)))
        position = last
        if len(logs) >= 2 and logs[-1] < logs[-2]:
            ratio = math.exp(logs[-1] - logs[-2])
            tail = (
                math.exp(logs[-1]) * ratio / (1.0 - ratio) if ratio < 1.0 else math.inf
            )
            if tail <= _NEGLIGIBLE * (1.0 + total):
                break
        chunk *= 2
    return total


def capacity_gap(
    servers: ArrayLike, service_rate: ArrayLike, arrival_rate: ArrayLike
) -> FloatArray:
    """Return ``servers * service_rate - arrival_rate`` elementwise, without loss.

    Near saturation (utilisation 1 - 1e-9) the rounded product would leave
    only seven correct digits in the difference; here the product's rounding
    error is carried along, so every digit of the difference is kept.

    Notes
    -----
    Dekker's product splits each factor into two halves of 26 bits, so that
    ``c mu = p + e`` exactly with ``p`` the rounded product [Dekker1971];
    Knuth's two-sum gives ``p - lambda = d + f`` exactly. The result is
    ``d + (f + e)``: rounded once from the exact difference whenever
    ``lambda`` lies within a factor of two of ``c mu`` (then ``f = 0``), and
    within one unit in the last place elsewhere. Valid for products below
    about 1e300.
    """
    c = np.asarray(servers, dtype=float)
    mu = np.asarray(service_rate, dtype=float)
    lam = np.asarray(arrival_rate, dtype=float)
    product = c * mu
    c_high, c_low = _split(c)
    mu_high, mu_low = _split(mu)
    product_error = (
        (c_high * mu_high - product) + c_high * mu_low + c_low * mu_high
    ) + c_low * mu_low
    difference = product - lam
    virtual = difference - product
    difference_error = (product - (difference - virtual)) + (-lam - virtual)
    return np.asarray(difference + (difference_error + product_error))


def _split(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Veltkamp's split of ``x`` into a high and a low half of 26 bits each."""
    scaled = _SPLITTER * x
    high = scaled - (scaled - x)
    return high, x - high


def log_geometric_sum(log_ratio: ArrayLike, count: ArrayLike) -> FloatArray:
    """Return ``log sum_{j<n} r^j`` elementwise, ``r = e^log_ratio``, ``n = count``.

    Notes
    -----
    The sum is ``expm1(n L) / expm1(L)`` with ``L = log r`` (or ``n`` when
    ``L = 0``); both factors are taken as logarithms so that neither overflows
    for a ratio above 1 and a long queue. A count of 0 gives ``-inf``.
    """
    n = np.asarray(count, dtype=float)
    ratio = np.asarray(log_ratio, dtype=float)
    level = ratio == 0.0
    safe = np.where(level, 1.0, ratio)
    with np.errstate(divide="ignore"):  # log(0) = -inf is the empty sum
        result = np.where(
            level,
            np.log(n),
            _log_abs_expm1(n * safe) - _log_abs_expm1(safe),
        )
    return np.asarray(np.where(n > 0, result, -np.inf))


def _log_abs_expm1(u: FloatArray) -> FloatArray:
    """Return ``log |expm1(u)|`` elementwise without overflow (``-inf`` at 0)."""
    u = np.asarray(u, dtype=float)
    large = u > 1.0
    safe = np.where(large, 1.0, u)
    with np.errstate(divide="ignore"):  # u = 0 is an empty sum, log 0 = -inf
        small_part = np.log(np.abs(np.expm1(safe)))
    large_part = u + np.log(-np.expm1(-np.where(large, u, 1.0)))
    return np.where(large, large_part, small_part)


def log_h1(u: ArrayLike) -> FloatArray:
    """Return ``log((1 - e^-u) / u) = log int_0^1 e^(-u v) dv``, elementwise (0 at 0).

    Notes
    -----
    ``log |expm1(-u)| - log |u|``, with the first term free of overflow for a
    large negative ``u`` (see `_log_abs_expm1`).
    """
    x = np.asarray(u, dtype=float)
    zero = x == 0.0
    safe = np.where(zero, 1.0, x)
    result = _log_abs_expm1(-safe) - np.log(np.abs(safe))
    return np.asarray(np.where(zero, 0.0, result))


def log_h2(u: ArrayLike) -> FloatArray:
    """Return ``log int_0^1 v e^(-u v) dv = log((1 - (1 + u) e^-u) / u^2)``.

    Notes
    -----
    For ``|u| < 2`` the series ``sum_k (-u)^k / (k! (k + 2))`` (28 terms reach
    double precision); above, the closed form has no cancellation; below,
    ``w = -u`` gives ``log(((w - 1) e^w + 1) / w^2)`` evaluated without overflow.
    """
    x = np.asarray(u, dtype=float)
    result = np.empty(x.shape)
    near = np.abs(x) < 2.0
    above = x >= 2.0
    below = x <= -2.0

    # Series near 0: terms alternate and fall fast, 28 reach double precision.
    v = x[near]
    total = np.zeros(v.shape)
    term = np.ones(v.shape)
    for k in range(28):
        total += term / (k + 2)
        term *= -v / (k + 1)
    result[near] = np.log(total)

    v = x[above]
    result[above] = np.log(-np.expm1(-v) - v * np.exp(-v)) - 2.0 * np.log(v)

    w = -x[below]
    result[below] = w + np.log((w - 1.0) + np.exp(-w)) - 2.0 * np.log(w)
    return result


def _bernoulli_q(u: FloatArray) -> FloatArray:
    """Return ``1/expm1(u) - 1/u`` (limit -1/2 at 0), stable for every u."""
    result = np.empty(u.shape)
    small = np.abs(u) < 0.5
    # Bernoulli series: -1/2 + u/12 - u^3/720 + u^5/30240 - u^7/1209600 + ...
    v = u[small]
    v2 = v * v
    total = np.zeros(v.shape)
    for coefficient in reversed(_BERNOULLI):
        total = total * v2 + coefficient
    result[small] = -0.5 + v * total
    huge = u > 700.0
    result[huge] = -1.0 / u[huge]
    rest = ~small & ~huge
    v = u[rest]
    result[rest] = 1.0 / np.expm1(v) - 1.0 / v
    return result


def truncated_geometric_mean(log_ratio: ArrayLike, top: ArrayLike) -> FloatArray:
    """Return the mean of J on {0, ..., top} with ``P(J = j)`` proportional to ``r^j``.

    Elementwise over ``log_ratio`` (``log r``) and ``top``.

    Notes
    -----
    With ``x = -log r``, the mean is ``1/expm1(x) - (top+1)/expm1((top+1) x)``.
    It is evaluated as ``q(x) - (top+1) q((top+1) x)`` with ``q(u) = 1/expm1(u)
    - 1/u`` when ``|x| <= 1/2`` (the ``1/x`` parts cancel exactly), directly for
    ``x > 1/2``, and by the symmetry ``mean(x) = top - mean(-x)`` for
    ``x < -1/2``.
    """
    x_in, top_arr = np.broadcast_arrays(
        -np.asarray(log_ratio, dtype=float), np.asarray(top, dtype=float)
    )
    # Reflect x < -1/2 onto x > 1/2, where the direct form has no cancellation.
    reflected = x_in < -0.5
    x = np.where(reflected, -x_in, x_in)
    n = top_arr + 1.0
    result = np.empty(x.shape)

    near = x <= 0.5
    xn, nn = x[near], n[near]
    result[near] = _bernoulli_q(xn) - nn * _bernoulli_q(nn * xn)

    far = ~near
    xf, nf = x[far], n[far]
    nx = nf * xf
    with np.errstate(over="ignore"):  # expm1 beyond 700 is masked out below
        tail = np.where(nx > 700.0, 0.0, nf / np.expm1(np.minimum(nx, 700.0)))
    result[far] = 1.0 / np.expm1(xf) - tail
    return np.asarray(np.where(reflected, top_arr - result, result))


def quantile_from_tail(
    tail: Callable[[float], float], q: float, scale: float, upper: float = math.inf
) -> float:
    """Return the smallest ``t >= 0`` with ``1 - tail(t) >= q``.

    Parameters
    ----------
    tail
        ``t -> P(W > t)``, non-increasing and continuous on ``(0, upper)``.
    q
        The probability level, in (0, 1).
    scale
        A typical time (seconds) used to start the bracket search.
    upper
        A time at which the tail is known to be 0 (a timeout), or inf.

    Returns
    -------
    float
        The quantile in seconds, found by Brent's method to a relative
        precision of about 1e-14.
    """
    target = 1.0 - q
    if tail(0.0) <= target:
        return 0.0
    if math.isfinite(upper) and tail(upper * (1.0 - 1e-15)) > target:
        return upper
    high = min(scale, upper) if math.isfinite(upper) else scale
    while tail(high) > target:
        high *= 2.0
    low = 0.0

    def gap(t: float) -> float:
        return tail(t) - target

    return float(
        brentq(gap, low, high, xtol=1e-300, rtol=4.0 * np.finfo(float).eps, maxiter=500)
    )
