"""Read-outs shared by the fluid and the simulated replays of a scenario.

`retrystorm.fluid.FluidTrajectory` and `retrystorm.simulation.SimulationTrajectory`
sample the same balances on a grid of times; what is read from those samples
alone (the peak queue, the two conservation residuals, the recovery time) is
written once here. Each replay keeps its own good-state test `is_good`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from retrystorm.scenario import Scenario

__all__ = ["SampledReplay"]

_ROUNDING = 1e-9  # s: sample times closer than this are the same time


class SampledReplay:
    """Queries on a replay sampled at the end of each interval.

    A base for frozen dataclasses that hold the sampled fields named below
    (levels at ``time``, running totals ``cum_*`` from t = 0) and define their
    own good-state test `is_good`.
    """

    # Seconds by which a good run may fall short of the ``hold`` of
    # `recovery_time` and still count: the fluid forgives rounding in its sums
    # of steps, the simulation compares exactly.
    _hold_slack: ClassVar[float] = 0.0

    if TYPE_CHECKING:
        scenario: Scenario
        time: NDArray[np.float64]
        queue: NDArray[np.float64]
        in_service: NDArray[np.float64]
        orbit: NDArray[np.float64]
        live: NDArray[np.float64]
        cum_offered: NDArray[np.float64]
        cum_completed: NDArray[np.float64]
        cum_timed_out: NDArray[np.float64]
        cum_rejected: NDArray[np.float64]
        cum_dropped: NDArray[np.float64]
        cum_fresh: NDArray[np.float64]
        cum_succeeded: NDArray[np.float64]
        cum_failed_requests: NDArray[np.float64]

    @property
    def is_good(self) -> NDArray[np.bool_]:
        """The good-state test at each sample (each replay defines its own)."""
        raise NotImplementedError

    @property
    def peak_queue(self) -> float:
        """The largest queue (requests)."""
        return float(self.queue.max()) if len(self.queue) else 0.0

    @property
    def peak_time(self) -> float:
        """The time of the largest queue (s)."""
        return float(self.time[int(np.argmax(self.queue))]) if len(self.queue) else 0.0

    @property
    def conservation_residual(self) -> NDArray[np.float64]:
        """Arrived minus (queued + held + completed + timed out + rejected + dropped).

        Zero up to rounding: the connection-request balance.
        """
        accounted = (
            self.queue
            + self.in_service
            + self.cum_completed
            + self.cum_timed_out
            + self.cum_rejected
            + self.cum_dropped
        )
        return np.asarray(self.cum_offered - accounted)

    @property
    def request_residual(self) -> NDArray[np.float64]:
        """Fresh requests minus (succeeded + failed + live + in the orbit)."""
        accounted = (
            self.cum_succeeded + self.cum_failed_requests + self.live + self.orbit
        )
        return np.asarray(self.cum_fresh - accounted)

    def index_at(self, time: float) -> int:
        """Return the index of the first sample at or after ``time`` (clipped)."""
        index = int(np.searchsorted(self.time, time - _ROUNDING, side="left"))
        return min(index, len(self.time) - 1)

    def good_at(self, time: float) -> bool:
        """Whether the system is in the good state at ``time``."""
        return bool(self.is_good[self.index_at(time)])

    def recovery_time(
        self,
        after: float | None = None,
        before: float | None = None,
        hold: float | None = None,
    ) -> float | None:
        """Return how long after ``after`` the system re-entered the good state.

        The system recovers at the first sample at or after ``after`` (and
        before ``before``) from which it stays good for ``hold`` seconds, or
        until ``before``; when that is the first sample, it never left (0).

        Parameters
        ----------
        after
            Start of the search (s); default the end of the trigger, or 0.
        before
            The good state must be entered before this (s); default the first
            intervention (cold restart), or the end of the replay.
        hold
            Seconds the good state must last; default ``2 * clients.timeout``.

        Returns
        -------
        float or None
            Seconds from ``after`` to the recovery (0 when the system is good
            at ``after``), or None if it does not recover before ``before``.
        """
        start, end, hold = self._recovery_window(after, before, hold)
        index = self._recovery_index(start, end, hold)
        if index is None:
            return None
        if index == self.index_at(start):
            return 0.0
        return max(0.0, float(self.time[index]) - start)

    def _recovery_window(
        self, after: float | None, before: float | None, hold: float | None
    ) -> tuple[float, float, float]:
        """Return ``(start, end, hold)`` of `recovery_time` with its defaults."""
        scenario = self.scenario
        start = after if after is not None else (scenario.trigger_end or 0.0)
        end = before if before is not None else scenario.first_intervention
        end = min(end if end is not None else math.inf, float(self.time[-1]))
        hold = hold if hold is not None else 2.0 * scenario.clients.timeout
        return start, end, hold

    def _recovery_index(self, start: float, end: float, hold: float) -> int | None:
        """Return the first good sample from ``start`` whose run lasts ``hold``.

        The run must last until ``min(t + hold, end)``; the sample must come
        before ``end`` unless it is the first one searched.
        """
        good = self.is_good
        first = self.index_at(start)
        run_end = _good_run_ends(self.time, good)
        candidates = (
            good
            & (run_end >= np.minimum(self.time + hold, end) - self._hold_slack)
            & ((self.time < end) | (np.arange(len(self.time)) == first))
        )
        candidates[:first] = False
        found = np.flatnonzero(candidates)
        return int(found[0]) if len(found) else None


def _good_run_ends(time: NDArray[np.float64], good: NDArray[np.bool_]) -> NDArray[Any]:
    """For each good sample, the time of the last sample of its run (else -inf)."""
    index = np.arange(len(time))
    # The last index of each run: the next bad index minus one, found by a
    # reversed running minimum over the positions of bad samples.
    bad_at = np.where(good, len(time), index)
    next_bad = np.minimum.accumulate(bad_at[::-1])[::-1]
    ends = time[np.clip(next_bad - 1, 0, len(time) - 1)]
    return np.where(good, ends, -math.inf)
