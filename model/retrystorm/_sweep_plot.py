"""Figures of sweeps: lines over one swept parameter, heat maps over two.

matplotlib is imported only when a figure is drawn, and figures are drawn on
a bare `matplotlib.figure.Figure`, so no backend is chosen and no pyplot
state is touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from retrystorm.errors import InvalidParameterError
from retrystorm.review import VERDICTS

__all__ = ["plot_sweep"]

# Verdicts in which the system does not come back by itself.
_STUCK_VERDICTS = ("metastable", "overloaded")
# Colours of the verdicts, and of other text categories in turn.
_VERDICT_COLOURS = {
    "stable": "tab:green",
    "recovers": "gold",
    "metastable": "tab:red",
    "overloaded": "tab:purple",
}
_PALETTE = ("tab:blue", "tab:orange", "tab:cyan", "tab:brown", "tab:pink", "tab:grey")
# Numbers spanning more than this ratio are coloured on a log scale, down to
# the largest value over _LOG_RANGE.
_LOG_SPAN = 1e3
_LOG_RANGE = 1e8
_PANELS_PER_ROW = 3


def plot_sweep(
    frame: pd.DataFrame,
    path: str | os.PathLike[str],
    parameters: Sequence[str],
    quantities: Sequence[str],
    *,
    boundary: str | None = None,
    log_axes: Iterable[str] = (),
    title: str = "",
) -> None:
    """Draw a sweep: lines over one swept parameter, heat maps over two.

    Parameters
    ----------
    frame
        Rows of `retrystorm.sweep.sweep_model` or
        `retrystorm.sweep.sweep_scenario`.
    path
        The PNG file to write.
    parameters
        The parameter columns; those with more than one value are swept
        (there must be one or two).
    quantities
        The quantity columns to draw, one panel each (text quantities such
        as the verdict as categories). Infinite values (means that do not
        exist) are left blank.
    boundary
        A column marking where the system is not stable: a number column
        (``utilization``: unstable at 1 and above) or the ``verdict`` column
        (``metastable`` and ``overloaded`` are not stable). Drawn as a line
        on heat maps and as red shading on line plots.
    log_axes
        Parameters to draw on a log scale.
    title
        A title above the figure.

    Raises
    ------
    InvalidParameterError
        If not one or two parameters are swept, or a column is missing.
    """
    swept = [name for name in parameters if frame[name].nunique() > 1]
    if len(swept) not in (1, 2):
        rule = "needs one or two swept parameters to plot"
        raise InvalidParameterError("plot", rule, swept)
    for name in [*quantities, *([boundary] if boundary else [])]:
        if name not in frame.columns:
            raise InvalidParameterError("plot", "needs a column of the sweep", name)

    # A bare Figure draws without pyplot: no backend, no global state.
    from matplotlib.figure import Figure  # noqa: PLC0415 - matplotlib only to plot

    columns = min(_PANELS_PER_ROW, len(quantities))
    rows = math.ceil(len(quantities) / columns)
    figure = Figure(figsize=(5.2 * columns, 4.0 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    unstable = _unstable(frame[boundary]) if boundary else None
    logs = set(log_axes)
    for axis, quantity in zip(axes.flat, quantities, strict=False):
        values = frame[quantity]
        if len(swept) == 1:
            _line_panel(axis, frame[swept[0]], values, unstable, log_x=swept[0] in logs)
        else:
            _heat_panel(
                axis,
                frame[swept[1]],
                frame[swept[0]],
                values,
                unstable=unstable,
                logs=logs,
            )
    for axis in list(axes.flat)[len(quantities) :]:
        axis.set_visible(False)
    figure.suptitle(_caption(frame, parameters, swept, title), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _unstable(column: pd.Series) -> pd.Series:
    """Return 1.0 where the boundary column says "not stable", else 0.0 (or NaN)."""
    if not pd.api.types.is_numeric_dtype(column):  # text: object or string dtype
        return column.map(
            lambda v: float(v in _STUCK_VERDICTS) if v else math.nan
        ).astype(float)
    return (column >= 1.0).astype(float).where(column.notna())


def _codes(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """Return text values as category numbers, and the categories in order."""
    present = [v for v in values.dropna().unique() if v]
    order = {verdict: i for i, verdict in enumerate(VERDICTS)}
    categories = sorted(present, key=lambda v: (order.get(v, len(order)), v))
    codes = values.map(lambda v: categories.index(v) if v in categories else math.nan)
    return codes.astype(float), categories


def _line_panel(
    axis: Any,
    x_values: pd.Series,
    values: pd.Series,
    unstable: pd.Series | None,
    *,
    log_x: bool,
) -> None:
    """Draw one quantity against one swept parameter."""
    order = np.argsort(x_values.to_numpy(dtype=float), kind="stable")
    x = x_values.to_numpy(dtype=float)[order]
    if not pd.api.types.is_numeric_dtype(values):
        codes, categories = _codes(values)
        axis.plot(x, codes.to_numpy()[order], "o-", drawstyle="steps-mid")
        axis.set_yticks(range(len(categories)), categories)
    else:
        y = values.to_numpy(dtype=float)[order]
        axis.plot(x, np.where(np.isfinite(y), y, np.nan), "o-", ms=3)
        _, norm = _colour_scale(y)
        if norm is not None:  # many decades: a log scale, smaller values below
            axis.set_yscale("log")
            axis.set_ylim(norm.vmin, norm.vmax * 2.0)
        if np.isinf(y).any():
            axis.plot([], [], " ", label="gaps: the quantity does not exist")
    if unstable is not None:
        for low, high in _spans(x, unstable.to_numpy()[order] == 1.0, log=log_x):
            axis.axvspan(low, high, color="tab:red", alpha=0.12, lw=0)
        axis.fill_between([], [], color="tab:red", alpha=0.12, label="not stable")
    if axis.get_legend_handles_labels()[1]:
        axis.legend(fontsize=8)
    axis.set_xlabel(str(x_values.name))
    axis.set_ylabel(str(values.name))
    if log_x:
        axis.set_xscale("log")
    axis.grid(alpha=0.3)


def _spans(
    x: NDArray[np.float64], flags: NDArray[np.bool_], *, log: bool
) -> list[tuple[float, float]]:
    """Return the spans of ``x`` (between cell edges) where ``flags`` holds."""
    edges = _edges(x, log=log)
    return [(float(edges[i]), float(edges[i + 1])) for i in np.flatnonzero(flags)]


def _heat_panel(
    axis: Any,
    x_values: pd.Series,
    y_values: pd.Series,
    values: pd.Series,
    *,
    unstable: pd.Series | None,
    logs: set[str],
) -> None:
    """Draw one quantity over two swept parameters, with the stability boundary."""
    x = np.sort(x_values.unique().astype(float))
    y = np.sort(y_values.unique().astype(float))
    x_log, y_log = x_values.name in logs, y_values.name in logs
    x_edges, y_edges = _edges(x, log=x_log), _edges(y, log=y_log)

    def as_grid(column: pd.Series) -> NDArray[np.float64]:
        table = pd.DataFrame({"x": x_values, "y": y_values, "v": column.to_numpy()})
        pivot = table.pivot_table(
            index="y", columns="x", values="v", aggfunc="first", dropna=False
        )
        grid: NDArray[np.float64] = pivot.reindex(index=y, columns=x).to_numpy(
            dtype=float
        )
        return grid

    if not pd.api.types.is_numeric_dtype(values):
        codes, categories = _codes(values)
        mesh = axis.pcolormesh(
            x_edges,
            y_edges,
            np.ma.masked_invalid(as_grid(codes)),
            cmap=_colour_map(categories),
            vmin=-0.5,
            vmax=len(categories) - 0.5,
        )
        colour_bar = axis.figure.colorbar(mesh, ax=axis)
        colour_bar.set_ticks(range(len(categories)), labels=categories)
    else:
        numbers = values.astype(float)
        grid, norm = _colour_scale(as_grid(numbers.where(np.isfinite(numbers))))
        mesh = axis.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(grid), norm=norm)
        axis.set_facecolor("0.85")  # grey: the quantity does not exist there
        axis.figure.colorbar(mesh, ax=axis).set_label(str(values.name))
    if unstable is not None:
        segments = _boundary_segments(x_edges, y_edges, as_grid(unstable))
        if segments:
            from matplotlib.collections import LineCollection  # noqa: PLC0415

            axis.add_collection(LineCollection(segments, colors="k", linewidths=1.8))
            axis.plot([], [], "k-", label="stability boundary")
            axis.legend(fontsize=8, loc="upper left")
    axis.set_xlabel(str(x_values.name))
    axis.set_ylabel(str(y_values.name))
    axis.set_title(str(values.name))
    if x_log:
        axis.set_xscale("log")
    if y_log:
        axis.set_yscale("log")


def _colour_map(categories: list[str]) -> Any:
    """Return a colour map with one colour per category (verdicts by name)."""
    from matplotlib.colors import ListedColormap  # noqa: PLC0415 - plotting only

    others = iter(_PALETTE * (1 + len(categories) // len(_PALETTE)))
    colours = [_VERDICT_COLOURS.get(c) or next(others) for c in categories]
    return ListedColormap(colours or ["0.85"])


def _colour_scale(grid: NDArray[np.float64]) -> tuple[NDArray[np.float64], Any]:
    """Return the values to draw and their colour scale (log over many decades).

    Non-negative values whose positive part spans more than `_LOG_SPAN` are
    drawn on a log scale covering `_LOG_RANGE` below the largest; smaller
    values (zeros included) take the lowest colour, and only cells where the
    quantity does not exist stay blank.
    """
    from matplotlib.colors import LogNorm  # noqa: PLC0415 - plotting only

    finite = grid[np.isfinite(grid)]
    positive = finite[finite > 0.0]
    if positive.size == 0 or finite.min() < 0.0:
        return grid, None
    top, bottom = float(positive.max()), float(positive.min())
    if top / bottom <= _LOG_SPAN:
        return grid, None
    floor = max(bottom, top / _LOG_RANGE)
    return np.where(np.isfinite(grid), np.maximum(grid, floor), grid), LogNorm(
        vmin=floor, vmax=top
    )


def _edges(centres: NDArray[np.float64], *, log: bool) -> NDArray[np.float64]:
    """Return the cell edges around sorted centres: midpoints, half a cell out.

    On a log axis the midpoints are geometric, so every cell is as wide as
    its neighbours on the drawn scale.
    """
    points = np.log(centres) if log else centres
    middle = (points[1:] + points[:-1]) / 2.0
    first = points[0] - (middle[0] - points[0])
    last = points[-1] + (points[-1] - middle[-1])
    edges = np.concatenate(([first], middle, [last]))
    return np.exp(edges) if log else edges


def _boundary_segments(
    x_edges: NDArray[np.float64],
    y_edges: NDArray[np.float64],
    marks: NDArray[np.float64],
) -> list[list[tuple[float, float]]]:
    """Return the cell edges between stable and unstable cells, as segments.

    Drawn on the cell edges rather than interpolated between centres, the
    boundary says exactly which grid points were found unstable.
    """
    segments = []
    # Vertical edges: between columns j and j + 1 of row i.
    rows, columns = np.nonzero(np.abs(np.diff(marks, axis=1)) == 1.0)
    for i, j in zip(rows, columns, strict=True):
        edge = float(x_edges[j + 1])
        segments.append([(edge, float(y_edges[i])), (edge, float(y_edges[i + 1]))])
    # Horizontal edges: between rows i and i + 1 of column j.
    rows, columns = np.nonzero(np.abs(np.diff(marks, axis=0)) == 1.0)
    for i, j in zip(rows, columns, strict=True):
        edge = float(y_edges[i + 1])
        segments.append([(float(x_edges[j]), edge), (float(x_edges[j + 1]), edge)])
    return segments


def _caption(
    frame: pd.DataFrame, parameters: Sequence[str], swept: list[str], title: str
) -> str:
    """Return the title, with the values of the parameters that were not swept."""
    fixed = [
        f"{name} = {frame[name].iloc[0]:g}" for name in parameters if name not in swept
    ]
    return "\n".join(part for part in (title, ", ".join(fixed)) if part)
