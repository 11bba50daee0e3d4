"""``retrystorm sweep``: a model or a scenario over a grid of parameter values.

A thin shell over `retrystorm.sweep`: `sweep_model` for the steady-state
models and `sweep_scenario` for scenarios, a table on the terminal (the first
and last rows of a big grid), every row in ``--out`` (CSV, JSON lines or
Parquet, streamed as rows finish) and a figure with ``--plot``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from retrystorm.cli._common import app, check_plot_path, console, fail
from retrystorm.cli.review import resolve_scenario
from retrystorm.errors import InvalidParameterError
from retrystorm.sweep import (
    Grid,
    SweepInterrupted,
    iter_sweep_model,
    make_grid,
    model_names,
    model_spec,
    open_sweep_file,
    plot_sweep,
    scenario_quantities,
    sweep_scenario,
)

__all__ = [
    "fields",
    "models",
    "sweep_app",
    "sweep_model_command",
    "sweep_scenario_command",
]

sweep_app = typer.Typer(
    name="sweep",
    help=(
        "Sweep a queue model or a scenario over a grid of parameter values: a "
        "table, a file (--out) and a figure (--plot). Values: 2.5, a list "
        "10,30,60, a range 100:2000:100 (start:stop:step) or log:1:1000:7. "
        "Example: retrystorm sweep model mmc --param arrival_rate=100:2000:100 "
        "--param servers=50:500:50 --param service_rate=2.5 --quantity mean_wait"
    ),
    no_args_is_help=True,
)
app.add_typer(sweep_app, name="sweep")

_MODEL_HELP = """Evaluate a steady-state queue model over a grid, vectorised.

Give every parameter of the model with --param NAME=VALUES; those with
several values span the grid. Means that do not exist (M/M/c at utilisation
1 or more) are shown as inf. See the models, parameters and quantities with
'retrystorm sweep models'.

Examples:

  retrystorm sweep model mmc -p arrival_rate=100:2000:100 \\
    -p servers=50:500:50 -p service_rate=2.5 \\
    -q mean_wait -q wait_probability --plot mmc.png

  retrystorm sweep model mmcd -p arrival_rate=log:10:1000:50 \\
    -p service_rate=2.5 -p servers=100 -p timeout=1,5,30 \\
    -q abandonment_probability

  retrystorm sweep model erlang_c -p servers=1:1000:1 \\
    -p offered_load=1:900:1 --out erlang_c.parquet
"""

_SCENARIO_HELP = """Replay a scenario with numeric fields changed over a grid.

Without SCENARIO, sweeps the embedded incident of 2025-09-16. Fields are
dotted paths (proxy.queue_timeout, clients.request_rate, events.0.duration;
list them with 'retrystorm sweep fields'). The replays run in parallel over
the machine's cores, or on a Dask cluster with --scheduler; Ctrl-C stops the
sweep and keeps every finished row in --out. Default quantities: verdict,
recovery_time, peak_queue.

Examples:

  retrystorm sweep scenario -p proxy.queue_timeout=10,30,60,120 \\
    -p clients.request_rate=60:240:30 \\
    -q verdict -q recovery_time --plot map.png

  retrystorm sweep scenario my-system.toml \\
    -p events.0.duration=15:120:15 --out lock.csv

  retrystorm sweep scenario -p proxy.pool_size=50:300:25 \\
    --scheduler tcp://10.0.0.5:8786 --out pool.parquet
"""

Params = Annotated[
    list[str],
    typer.Option(
        "--param",
        "-p",
        metavar="NAME=VALUES",
        help=(
            "A parameter and its values: 2.5, a list 10,30,60, a range "
            "start:stop:step (100:2000:100) or log:start:stop:count "
            "(log:1:1000:7). Repeat for each parameter."
        ),
        show_default=False,
    ),
]
Quantities = Annotated[
    list[str] | None,
    typer.Option(
        "--quantity",
        "-q",
        metavar="NAME",
        help=(
            "A quantity to report; repeat for several (default: all of the "
            "model's; for scenarios verdict, recovery_time, peak_queue)."
        ),
        show_default=False,
    ),
]
Out = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="Write every row to FILE.csv, .jsonl or .parquet as it finishes.",
        show_default=False,
    ),
]
Plot = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE.png",
        help=(
            "Draw a line plot (one swept parameter) or heat maps with the "
            "stability boundary (two)."
        ),
        show_default=False,
    ),
]
Rows = Annotated[
    int,
    typer.Option(metavar="COUNT", help="Rows shown in the terminal (first and last)."),
]


# -- the terminal table -------------------------------------------------------------


class _Preview:
    """Keeps the first and last rows of a stream of chunks, and counts them all."""

    def __init__(self, limit: int) -> None:
        self.head_size = max(1, limit) - max(1, limit) // 2
        self.tail_size = max(1, limit) // 2
        self.head: list[pd.DataFrame] = []
        self.tail: pd.DataFrame | None = None
        self.count = 0

    def add(self, frame: pd.DataFrame) -> None:
        """Take a chunk of rows."""
        missing = self.head_size - sum(len(part) for part in self.head)
        if missing > 0:
            self.head.append(frame.iloc[:missing])
        joined = frame if self.tail is None else pd.concat([self.tail, frame])
        self.tail = joined.iloc[len(joined) - self.tail_size :]
        self.count += len(frame)

    def rows(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """Return the rows to show: all of them, or the head and the tail."""
        head = pd.concat(self.head) if self.head else pd.DataFrame()
        if self.count <= self.head_size + self.tail_size:
            shown = pd.concat([head, self.tail]) if self.tail is not None else head
            return shown[~shown.index.duplicated()], None
        return head, self.tail


def _cell(value: Any) -> str:
    """Format one value for the table: whole numbers as such, 6 digits else."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value or "-"
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if math.isnan(number):
        return "-"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.6g}"


def _cells(frame: pd.DataFrame, columns: Sequence[str]) -> list[list[str]]:
    """Format the rows of ``frame`` (column by column, so integers stay whole)."""
    formatted = [[_cell(v) for v in frame[name].tolist()] for name in columns]
    return [list(row) for row in zip(*formatted, strict=True)]


def _has_errors(frames: Iterable[pd.DataFrame | None]) -> bool:
    """Whether any shown row has an error message."""
    return any(
        frame is not None and "error" in frame and frame["error"].astype(bool).any()
        for frame in frames
    )


def _print_table(
    preview: _Preview,
    swept: Sequence[str],
    fixed: dict[str, Any],
    quantities: Sequence[str],
    out: Path | None,
) -> None:
    """Print the rows (or the first and last of them) with a caption."""
    head, tail = preview.rows()
    columns = [*swept, *quantities]
    if _has_errors((head, tail)):
        columns.append("error")
    table = Table()
    for name in columns:
        table.add_column(
            name, justify="left" if name == "error" else "right", overflow="fold"
        )
    for row in _cells(head, columns):
        table.add_row(*row)
    if tail is not None:
        table.add_row(*("…" for _ in columns))
        for row in _cells(tail, columns):
            table.add_row(*row)
    console.print(table)
    console.print(_caption(preview, fixed, out), style="dim", highlight=False)


def _caption(preview: _Preview, fixed: dict[str, Any], out: Path | None) -> str:
    """Say how many rows there are, which are shown and where the rest are."""
    head, tail = preview.rows()
    shown = len(head) + (0 if tail is None else len(tail))
    parts = [f"{preview.count:,} rows"]
    if tail is not None:
        parts[0] += f" (the first {len(head)} and the last {len(tail)} shown)"
    if fixed:
        values = ", ".join(f"{name} = {_cell(v)}" for name, v in fixed.items())
        parts.append(f"in every row: {values}")
    if out is not None:
        parts.append(f"all rows in {out}")
    elif shown < preview.count:
        parts.append("write them all with --out FILE.csv")
    return "; ".join(parts)


# -- shared steps -------------------------------------------------------------------


def _check_plot(grid: Grid, plot: Path | None) -> None:
    """Refuse a plot that cannot be drawn before any work is done."""
    check_plot_path(plot)
    if plot is not None and len(grid.swept) not in (1, 2):
        rule = (
            "needs one or two swept parameters "
            f"(got {len(grid.swept)}: {', '.join(grid.swept) or 'none'})"
        )
        raise InvalidParameterError("plot", rule, str(plot))


def _fixed(grid: Grid) -> dict[str, Any]:
    """Return the parameters that take one value, with it."""
    return {axis.name: axis.values[0].item() for axis in grid.axes if not axis.swept}


def _log_axes(grid: Grid) -> list[str]:
    """Return the swept parameters given as log ranges (drawn on log axes)."""
    return [axis.name for axis in grid.axes if axis.spacing == "log" and axis.swept]


def _kinds(frame: pd.DataFrame, names: Iterable[str]) -> dict[str, Any]:
    """Return the columns of a model sweep's file: point, then ``names``."""
    kinds: dict[str, Any] = {"point": "int"}
    for name in names:
        dtype = frame[name].dtype
        if dtype.kind in "iu":
            kinds[name] = "int"
        else:
            kinds[name] = "float" if dtype.kind == "f" else "text"
    return kinds


# -- commands -----------------------------------------------------------------------


@sweep_app.command("model", help=_MODEL_HELP)
def sweep_model_command(
    model: Annotated[
        str,
        typer.Argument(metavar="MODEL", help=f"One of {', '.join(model_names())}."),
    ],
    *,
    param: Params,
    quantity: Quantities = None,
    out: Out = None,
    plot: Plot = None,
    rows: Rows = 20,
) -> None:
    """Sweep a steady-state model (see the help text above)."""
    spec = model_spec(model)
    grid = make_grid(param)
    _check_plot(grid, plot)
    names = list(dict.fromkeys(quantity)) if quantity else list(spec.quantities)
    boundary = spec.boundary if plot is not None else None
    extra = [boundary] if boundary and boundary not in names else []

    preview = _Preview(rows)
    kept: list[pd.DataFrame] = []
    sink = None
    try:
        for chunk in iter_sweep_model(spec, grid, names + extra):
            if sink is None and out is not None:
                columns = _kinds(chunk, [*spec.parameter_names, *names])
                sink = open_sweep_file(out, columns)
            if sink is not None:
                sink.write(chunk)
            preview.add(chunk)
            if plot is not None:
                kept.append(chunk)
    finally:
        if sink is not None:
            sink.close()

    _print_table(preview, grid.swept, _fixed(grid), names, out)
    if plot is not None:
        plot_sweep(
            pd.concat(kept),
            plot,
            spec.parameter_names,
            names,
            boundary=boundary,
            log_axes=_log_axes(grid),
            title=spec.title,
        )
        console.print(f"plot written to {plot}")


@sweep_app.command("scenario", help=_SCENARIO_HELP)
def sweep_scenario_command(
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="Scenario TOML file or embedded name (default: the incident)."
        ),
    ] = None,
    *,
    param: Params,
    quantity: Quantities = None,
    variant: Annotated[
        str | None, typer.Option(help="Sweep this variant of the scenario.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(metavar="COUNT", help="Worker processes (default: one per CPU)."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="Run the replays on this Dask scheduler (tcp://host:8786).",
        ),
    ] = None,
    out: Out = None,
    plot: Plot = None,
    rows: Rows = 20,
) -> None:
    """Sweep a scenario (see the help text above)."""
    chosen = resolve_scenario(scenario, variant)
    grid = make_grid(param)
    _check_plot(grid, plot)
    names = list(dict.fromkeys(quantity)) if quantity else None
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("replaying", total=len(grid))
        try:
            frame = sweep_scenario(
                chosen,
                grid,
                names,
                workers=workers,
                progress=lambda done, _total: bar.update(task, completed=done),
                out=out,
                scheduler=scheduler,
            )
        except SweepInterrupted as stop:
            bar.stop()
            kept = f"; they are in {out}" if out is not None else ""
            fail(
                f"interrupted after {len(stop.frame)} of {stop.total} points"
                f" finished{kept}",
                130,
            )

    shown = [c for c in frame.columns if c not in grid.names and c != "error"]
    preview = _Preview(rows)
    preview.add(frame)
    _print_table(preview, grid.swept, _fixed(grid), shown, out)
    if plot is not None:
        plot_sweep(
            frame,
            plot,
            grid.names,
            shown,
            boundary="verdict" if "verdict" in frame.columns else None,
            log_axes=_log_axes(grid),
            title=chosen.name,
        )
        console.print(f"plot written to {plot}")


@sweep_app.command("models")
def models() -> None:
    """List the models, their parameters and quantities."""
    table = Table(title="models for 'retrystorm sweep model'", show_lines=True)
    table.add_column("model")
    table.add_column("parameters (--param)")
    table.add_column("quantities (--quantity)", no_wrap=True)
    for name in model_names():
        spec = model_spec(name)
        parameters = "\n".join(f"{p.name}: {p.description}" for p in spec.parameters)
        if spec.notes:
            parameters += f"\n[dim]{spec.notes}[/]"
        table.add_row(
            f"{spec.name}\n[dim]{spec.title}[/]", parameters, "\n".join(spec.quantities)
        )
    console.print(table)


@sweep_app.command("fields")
def fields(
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="Scenario TOML file or embedded name (default: the incident)."
        ),
    ] = None,
) -> None:
    """List a scenario's numeric fields (to sweep) and the quantities to report."""
    chosen = resolve_scenario(scenario)
    table = Table(title=f"numeric fields of {chosen.name}")
    table.add_column("field (--param)")
    table.add_column("value", justify="right")
    for path, value in chosen.numeric_fields().items():
        table.add_row(path, f"{value:g}")
    console.print(table)
    quantities = Table(title="quantities (--quantity)")
    quantities.add_column("quantity")
    quantities.add_column("what it is")
    for quantity in scenario_quantities().values():
        quantities.add_row(quantity.name, quantity.description)
    console.print(quantities)
