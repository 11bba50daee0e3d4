"""Searches over monotone targets shared by the closed forms and the limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import overload

__all__ = ["smallest_whole"]


@overload
def smallest_whole(meets: Callable[[int], bool], cap: None = None) -> int: ...


@overload
def smallest_whole(meets: Callable[[int], bool], cap: int) -> int | None: ...


def smallest_whole(meets: Callable[[int], bool], cap: int | None = None) -> int | None:
    """Return the smallest whole number ``n >= 1`` with ``meets(n)``.

    Parameters
    ----------
    meets
        A target that fails below some ``n`` and holds from it on (servers
        against a blocking target, waiting places against a loss target).
    cap
        Give up once the doubling passes this number; None searches without
        end.

    Returns
    -------
    int or None
        The smallest ``n`` that meets the target, or None when none up to
        about ``cap`` does.

    Notes
    -----
    The candidate doubles from 1 until it meets the target, then a bisection
    over the integers between the last two candidates finds the smallest one:
    ``O(log n)`` evaluations of ``meets``.

    Examples
    --------
    >>> smallest_whole(lambda n: n * n >= 50)
    8
    >>> smallest_whole(lambda n: False, cap=1000) is None
    True
    """
    high = 1
    while not meets(high):
        high *= 2
        if cap is not None and high > cap:
            return None
    low = high // 2  # fails the target (or is 0)
    while high - low > 1:
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    return high
