"""Figures of replays: backlog, attempt rate, throughput and goodput over time.

Plots use matplotlib's non-interactive Agg backend, so they work on machines
without a screen; every function writes a PNG and returns nothing.
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt

from retrystorm.fluid import FluidTrajectory

__all__ = ["plot_trajectory"]

_EVENT_COLOURS = {
    "lock": "tab:red",
    "capacity": "tab:orange",
    "rollback": "tab:purple",
    "cold_restart": "tab:green",
    "shed": "tab:brown",
}


def _mark_events(axis: Any, trajectory: FluidTrajectory) -> None:
    """Shade each event's span on ``axis``."""
    for event in trajectory.events:
        colour = _EVENT_COLOURS.get(event.kind, "grey")
        axis.axvspan(event.at, event.end, color=colour, alpha=0.15, lw=0)


def plot_trajectory(
    trajectory: FluidTrajectory, path: str | os.PathLike[str], *, title: str = ""
) -> None:
    """Draw the backlog, attempt rate, throughput and goodput of a replay.

    Parameters
    ----------
    trajectory
        A fluid replay.
    path
        The PNG file to write.
    title
        A title above the figure (default: the scenario's name).
    """
    time = trajectory.time
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)

    top.plot(time, trajectory.queue, label="waiting for a connection", color="k")
    top.plot(time, trajectory.orbit, label="waiting to retry", color="tab:blue")
    top.set_ylabel("requests")
    top.legend(loc="upper right", fontsize=8)

    middle.plot(time, trajectory.attempt_rate, label="attempts", color="tab:red")
    middle.plot(time, trajectory.fresh_rate, label="fresh requests (demand)", ls="--")
    middle.plot(time, trajectory.capacity, label="pool capacity", color="grey", ls=":")
    middle.set_ylabel("per second")
    middle.legend(loc="upper right", fontsize=8)

    bottom.plot(time, trajectory.throughput, label="throughput", color="k")
    bottom.plot(time, trajectory.goodput, label="goodput", color="tab:green")
    bottom.plot(time, trajectory.wasted_rate, label="wasted work", color="tab:orange")
    bottom.set_ylabel("completions per second")
    bottom.set_xlabel("time (s)")
    bottom.legend(loc="upper right", fontsize=8)

    for axis in (top, middle, bottom):
        _mark_events(axis, trajectory)
    figure.suptitle(title or trajectory.scenario.name)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
