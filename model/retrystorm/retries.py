"""Retry amplification: how many attempts a request turns into.

A client that retries a failed attempt up to ``max_retries`` times sends
between 1 and ``max_retries + 1`` attempts per request. When every layer of a
call stack retries, the attempts multiply layer by layer. A retry budget caps
the multiplication, and client-side adaptive throttling rejects requests
locally once the backend accepts too few of them. The derivations are checked
in ``proofs/amplification.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from retrystorm._validation import check_integer, check_nonnegative, check_positive
from retrystorm.errors import InvalidParameterError

__all__ = [
    "adaptive_throttle_probability",
    "attempts_per_request",
    "expected_layered_attempts",
    "layered_amplification",
    "retry_budget_amplification",
]


# --- validation ----------------------------------------------------------------


def _probabilities(name: str, value: ArrayLike) -> NDArray[np.float64]:
    """Return ``value`` as a float array with every element in [0, 1]."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            name, "must be a number or an array of numbers", value
        ) from None
    bad = ~((array >= 0.0) & (array <= 1.0))  # also catches NaN
    if np.any(bad):
        raise InvalidParameterError(
            name, "must lie in [0, 1]", array[bad].flat[0].item()
        )
    return array


def _retry_counts(name: str, value: ArrayLike) -> NDArray[np.int64]:
    """Return ``value`` as an integer array with every element a whole number >= 0."""
    if isinstance(value, bool) or (
        isinstance(value, np.ndarray) and value.dtype == bool
    ):
        raise InvalidParameterError(name, "must be an integer", value)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            name, "must be an integer or an array of integers", value
        ) from None
    whole = np.isfinite(array) & (array == np.floor(array))
    if not np.all(whole):
        raise InvalidParameterError(
            name, "must contain only integers", array[~whole].flat[0].item()
        )
    if np.any(array < 0):
        raise InvalidParameterError(
            name, "must be non-negative", array[array < 0].flat[0].item()
        )
    return array.astype(np.int64)


# --- attempts per request ---------------------------------------------------------


def _geometric_attempts(
    p: NDArray[np.float64], retries: NDArray[np.int64]
) -> NDArray[np.float64]:
    """``(1 - p^(R+1)) / (1 - p)``, with the limit ``R + 1`` at ``p = 1``."""
    q = 1.0 - p  # exact for p >= 1/2 (Sterbenz), so no cancellation near p = 1
    attempts = (retries + 1).astype(np.float64)
    # p^(R+1) = exp((R+1) log1p(-q)); expm1 keeps 1 - p^(R+1) accurate when it is
    # small. log1p(-1) = -inf at p = 0 is expected and gives the right value 1.
    with np.errstate(divide="ignore", invalid="ignore"):
        numerator = -np.expm1(attempts * np.log1p(-q))
        ratio = numerator / q
    # The sum lies in [1, R + 1]; rounding may step an ulp outside, so clip.
    return np.where(q == 0.0, attempts, np.clip(ratio, 1.0, attempts))


@overload
def attempts_per_request(failure_probability: float, max_retries: int) -> float: ...


@overload
def attempts_per_request(
    failure_probability: ArrayLike, max_retries: ArrayLike
) -> float | NDArray[np.float64]: ...


def attempts_per_request(
    failure_probability: ArrayLike, max_retries: ArrayLike
) -> float | NDArray[np.float64]:
    """Mean number of attempts a request makes when each attempt fails independently.

    Parameters
    ----------
    failure_probability : float or array_like
        Probability ``p`` that one attempt fails (time-out or error), in [0, 1].
    max_retries : int or array_like of int
        Retries after the first attempt, ``R >= 0`` (``R + 1`` attempts at most).
        Broadcast against ``failure_probability``.

    Returns
    -------
    float or numpy.ndarray
        ``(1 - p^(R+1)) / (1 - p)``, and ``R + 1`` at ``p = 1``: a float for
        scalar input, an array of the broadcast shape otherwise.

    Raises
    ------
    InvalidParameterError
        If a probability lies outside [0, 1] or is NaN, or a retry count is not
        a non-negative integer, or the shapes do not broadcast.

    Notes
    -----
    Attempt ``k`` (``k = 0, ..., R``) is made iff the ``k`` attempts before it
    all failed, which has probability ``p^k``; the mean is the finite geometric
    sum ``sum_{k=0}^{R} p^k``. It increases in ``p`` and in ``R`` and ranges
    from 1 (``p = 0``) to ``R + 1`` (``p = 1``, every attempt fails: the worst
    case of a retry storm). The ratio is evaluated as
    ``-expm1((R+1) log1p(-q)) / q`` with ``q = 1 - p``, which is accurate to a
    few ulps also for ``p`` near 1.

    The attempts are counted per fresh request; the attempt rate offered to a
    server is ``arrival_rate * attempts_per_request(p, R)``.

    References
    ----------
    [SREBook2016]_ (chapter 21, "Handling overload": per-request retry limits).

    Examples
    --------
    >>> from retrystorm import attempts_per_request
    >>> attempts_per_request(0.5, 3)
    1.875
    >>> attempts_per_request(1.0, 3)
    4.0
    >>> attempts_per_request([0.0, 0.1, 1.0], 2)
    array([1.  , 1.11, 3.  ])
    """
    p = _probabilities("failure_probability", failure_probability)
    retries = _retry_counts("max_retries", max_retries)
    try:
        p, retries = np.broadcast_arrays(p, retries)
    except ValueError:
        raise InvalidParameterError(
            "max_retries",
            f"must broadcast against failure_probability {p.shape}",
            retries.shape,
        ) from None

    attempts = _geometric_attempts(p, retries)

    if attempts.ndim == 0:
        return float(attempts)
    return attempts


# --- layers -------------------------------------------------------------------------


def _layer_retries(max_retries_per_layer: Sequence[int]) -> list[int]:
    """Validate a sequence of per-layer retry counts."""
    if isinstance(max_retries_per_layer, (str, bytes)) or not isinstance(
        max_retries_per_layer, Sequence
    ):
        raise InvalidParameterError(
            "max_retries_per_layer",
            "must be a sequence of integers",
            max_retries_per_layer,
        )
    return [
        check_integer(f"max_retries_per_layer[{i}]", retries, minimum=0)
        for i, retries in enumerate(max_retries_per_layer)
    ]


def layered_amplification(max_retries_per_layer: Sequence[int]) -> int:
    """Worst-case attempts at the bottom of a stack of retrying layers, per request.

    Parameters
    ----------
    max_retries_per_layer : sequence of int
        Retries ``R_i >= 0`` of each layer, from the top of the call stack to
        the bottom. An empty sequence means no layer retries.

    Returns
    -------
    int
        ``prod_i (R_i + 1)``: ``(R + 1)^L`` for ``L`` layers that each retry
        ``R`` times. Exact (a Python ``int``, however large).

    Raises
    ------
    InvalidParameterError
        If the argument is not a sequence or an element is not a non-negative
        integer.

    Notes
    -----
    In the worst case every attempt fails, so each attempt of layer ``i``
    turns into ``R_{i+1} + 1`` attempts of layer ``i + 1``; by induction on the
    number of layers the bottom sees the product. This is the reason to retry
    at one layer only.

    References
    ----------
    [SREBook2016cascading]_ (retries at several layers multiply).

    Examples
    --------
    >>> from retrystorm import layered_amplification
    >>> layered_amplification([3, 3, 3])
    64
    >>> layered_amplification([2, 0])
    3
    """
    layers = _layer_retries(max_retries_per_layer)
    return math.prod(retries + 1 for retries in layers)


def expected_layered_attempts(
    failure_probabilities: Sequence[float], max_retries_per_layer: Sequence[int]
) -> float:
    """Mean attempts at the bottom of a stack of retrying layers, per request.

    Parameters
    ----------
    failure_probabilities : sequence of float
        For each layer, top to bottom, the probability ``p_i`` in [0, 1] that
        one attempt made by that layer fails.
    max_retries_per_layer : sequence of int
        Retries ``R_i >= 0`` of each layer, same length.

    Returns
    -------
    float
        ``prod_i (1 - p_i^(R_i + 1)) / (1 - p_i)`` (``R_i + 1`` where
        ``p_i = 1``). With every ``p_i = 1`` it equals `layered_amplification`.

    Raises
    ------
    InvalidParameterError
        If the sequences differ in length, a probability is outside [0, 1],
        or a retry count is not a non-negative integer.

    Notes
    -----
    The tries of one call are independent and alike, each failing with
    probability ``p_i``. Whether try ``k`` of a call is made depends only on
    tries ``1, ..., k - 1``, so by Wald's identity the mean number of
    bottom-layer attempts is the mean number of tries at the top times the
    mean per try below, and by induction on the number of layers the product
    of the per-layer means `attempts_per_request`.

    References
    ----------
    [SREBook2016cascading]_.

    Examples
    --------
    >>> from retrystorm import expected_layered_attempts
    >>> expected_layered_attempts([0.5, 0.5], [1, 1])
    2.25
    >>> expected_layered_attempts([1.0, 1.0], [2, 3])
    12.0
    """
    layers = _layer_retries(max_retries_per_layer)
    if isinstance(failure_probabilities, (str, bytes)) or not isinstance(
        failure_probabilities, Sequence
    ):
        raise InvalidParameterError(
            "failure_probabilities",
            "must be a sequence of numbers",
            failure_probabilities,
        )
    if len(failure_probabilities) != len(layers):
        raise InvalidParameterError(
            "failure_probabilities",
            f"must have one entry per layer ({len(layers)})",
            len(failure_probabilities),
        )

    probabilities = _probabilities("failure_probabilities", list(failure_probabilities))
    per_layer = _geometric_attempts(probabilities, np.asarray(layers, dtype=np.int64))
    return float(np.prod(per_layer))


# --- budgets and throttling -------------------------------------------------------


def retry_budget_amplification(budget: float, max_retries: int | None = None) -> float:
    """Upper bound on attempts per request under a retry budget.

    Parameters
    ----------
    budget : float
        Retries allowed as a share of fresh requests (0.1 for "at most 10 %
        retries"); ``inf`` means no budget.
    max_retries : int, optional
        The per-request retry limit ``R``, if there is one.

    Returns
    -------
    float
        ``1 + budget``, or ``min(1 + budget, R + 1)`` when ``max_retries`` is
        given; ``inf`` for an unlimited budget and no retry limit.

    Raises
    ------
    InvalidParameterError
        If ``budget`` is negative or NaN, or ``max_retries`` is not a
        non-negative integer.

    Notes
    -----
    Under the budget, retries per second never exceed ``budget`` times fresh
    requests per second, so attempts per second never exceed
    ``(1 + budget)`` times fresh requests per second, whatever fails. A server
    of capacity ``c mu`` therefore cannot be pushed into overload by retries
    alone when ``(1 + budget) * arrival_rate < c mu``.

    References
    ----------
    [SREBook2016]_ (chapter 21: the per-client retry budget of 10 %).

    Examples
    --------
    >>> from retrystorm import retry_budget_amplification
    >>> retry_budget_amplification(0.1)
    1.1
    >>> retry_budget_amplification(float("inf"), max_retries=3)
    4.0
    """
    share = check_nonnegative("budget", budget, allow_inf=True)
    bound = 1.0 + share
    if max_retries is not None:
        retries = check_integer("max_retries", max_retries, minimum=0)
        bound = min(bound, float(retries + 1))
    return bound


def adaptive_throttle_probability(
    requests: float, accepts: float, k: float = 2.0
) -> float:
    """Probability that a client rejects a new request locally (adaptive throttling).

    Parameters
    ----------
    requests : float
        Requests the client attempted over the trailing window (a count >= 0).
    accepts : float
        Of those, the requests the backend accepted (``0 <= accepts <= requests``).
    k : float, default 2.0
        The multiplier: the client lets through about ``k`` requests per
        accepted one before it starts rejecting locally; ``k > 0``.

    Returns
    -------
    float
        ``max(0, (requests - k * accepts) / (requests + 1))``, in [0, 1).

    Raises
    ------
    InvalidParameterError
        If a count is negative, infinite or NaN, ``accepts > requests``, or
        ``k`` is not a positive finite number.

    Notes
    -----
    While the throttle rejects, the requests that reach the backend number
    ``requests * (1 - P) = requests * (1 + k accepts) / (requests + 1)``, below
    ``1 + k * accepts``: the load sent to an overloaded backend stays within
    ``k`` times what it accepts, plus one request per window.

    References
    ----------
    [SREBook2016]_ (chapter 21, "Client-side throttling").

    Examples
    --------
    >>> from retrystorm import adaptive_throttle_probability
    >>> adaptive_throttle_probability(1000, 400)
    0.1998...
    >>> adaptive_throttle_probability(100, 90)
    0.0
    """
    sent = check_nonnegative("requests", requests)
    accepted = check_nonnegative("accepts", accepts)
    multiplier = check_positive("k", k)
    if accepted > sent:
        raise InvalidParameterError(
            "accepts", f"must not exceed requests ({sent:g})", accepts
        )

    return max(0.0, (sent - multiplier * accepted) / (sent + 1.0))
