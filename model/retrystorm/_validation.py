"""Checks at the public boundary: each names the parameter, the rule, the value.

Every public constructor and function validates its inputs with these helpers
before computing anything, so a bad value is reported in the caller's terms and
never surfaces as a numpy warning or a NaN deep inside a formula.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike, NDArray

from retrystorm.errors import InvalidParameterError

__all__ = [
    "check_fraction",
    "check_integer",
    "check_nonnegative",
    "check_positive",
    "check_positive_array",
    "check_probability",
]


def _real(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise if it is not a real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(name, "must be a real number", value)
    result = float(value)
    if math.isnan(result):
        raise InvalidParameterError(name, "must be a number, not NaN", value)
    return result


def check_positive(name: str, value: object, *, allow_inf: bool = False) -> float:
    """Return ``value`` as a float if it is finite (or inf when allowed) and > 0."""
    result = _real(name, value)
    if math.isinf(result) and not allow_inf:
        raise InvalidParameterError(name, "must be finite", value)
    if result <= 0.0:
        raise InvalidParameterError(name, "must be positive", value)
    return result


def check_nonnegative(name: str, value: object, *, allow_inf: bool = False) -> float:
    """Return ``value`` as a float if it is finite (or inf when allowed) and >= 0."""
    result = _real(name, value)
    if math.isinf(result) and not allow_inf:
        raise InvalidParameterError(name, "must be finite", value)
    if result < 0.0:
        raise InvalidParameterError(name, "must be non-negative", value)
    return result


def check_probability(name: str, value: object) -> float:
    """Return ``value`` as a float if it lies in the closed interval [0, 1]."""
    result = _real(name, value)
    if not 0.0 <= result <= 1.0:
        raise InvalidParameterError(name, "must lie in [0, 1]", value)
    return result


def check_fraction(name: str, value: object) -> float:
    """Return ``value`` as a float if it lies in the open interval (0, 1)."""
    result = _real(name, value)
    if not 0.0 < result < 1.0:
        raise InvalidParameterError(name, "must lie strictly between 0 and 1", value)
    return result


def check_integer(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is a whole number >= ``minimum``.

    Floats with an integral value (``4.0``) are accepted; ``4.5``, ``True``
    and strings are not.
    """
    if isinstance(value, bool):
        raise InvalidParameterError(name, "must be an integer", value)
    if isinstance(value, numbers.Integral):
        result = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        result = int(float(value))
    else:
        raise InvalidParameterError(name, "must be an integer", value)
    if result < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InvalidParameterError(name, f"must be {rule}", value)
    return result


def check_positive_array(name: str, value: ArrayLike) -> NDArray[np.float64]:
    """Return ``value`` as a float array if every element is finite and > 0."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            name, "must be an array of numbers", value
        ) from None
    bad = ~np.isfinite(array) | (array <= 0.0)
    if np.any(bad):
        first = array[bad].flat[0]
        raise InvalidParameterError(
            name, "must contain only finite positive numbers", first
        )
    return array
