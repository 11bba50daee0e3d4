"""``retrystorm limits``: the settings that keep a scenario's queues bounded."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from retrystorm.cli._common import app, console, emit_json
from retrystorm.cli.review import resolve_scenario
from retrystorm.limits import Limits, compute_limits

__all__ = ["limits", "limits_table", "print_recommendations"]

_HELP = """Compute the design limits of a scenario and whether it lies inside them.

Safe proxy queueing timeouts, queue limits and concurrency caps, the most
retries and the largest retry budget, pool sizes, the longest survivable
lock, and a client timeout from a latency percentile, each with its reason.
Without SCENARIO, uses the embedded incident of 2025-09-16.

Examples:

  retrystorm limits

  retrystorm limits my-system.toml --json

  retrystorm limits --variant proxy-timeout-30s --epsilon 1e-3
"""

_INSIDE = {True: "[green]yes[/]", False: "[bold red]no[/]", None: "-"}


def limits_table(result: Limits) -> Table:
    """Return the limits as a table: limit, value, current value, inside, reason."""
    table = Table(title=f"design limits (epsilon = {result.epsilon:g})")
    table.add_column("limit", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("current", justify="right", no_wrap=True)
    table.add_column("inside", no_wrap=True)
    table.add_column("reason")
    for limit in result:
        table.add_row(
            limit.name,
            limit.value_text,
            limit.current_text,
            _INSIDE[limit.inside],
            limit.reason,
        )
    return table


def print_recommendations(result: Limits) -> None:
    """Print the recommendations, a line each (or say there are none)."""
    advice = result.recommendations
    if not advice:
        console.print("[green]the current settings lie inside every limit[/]")
        return
    console.print("[bold]recommendations:[/]")
    for line in advice:
        console.print(f"  - {line}")


@app.command(help=_HELP)
def limits(
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="Scenario TOML file or embedded name (default: the incident)."
        ),
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="Use this variant of the scenario.")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    epsilon: Annotated[
        float,
        typer.Option(help="Tolerance of every target (a probability in (0, 1))."),
    ] = 1e-4,
    replays: Annotated[
        bool,
        typer.Option(help="Replay the fluid model for the lock, drop and demand."),
    ] = True,
) -> None:
    """Compute the design limits (see the help text above)."""
    chosen = resolve_scenario(scenario, variant)
    columns = (SpinnerColumn(), TextColumn("{task.description}"))
    with Progress(
        *columns, console=console, transient=True, disable=json_output
    ) as bar:
        task = bar.add_task("computing limits")
        result = compute_limits(
            chosen,
            epsilon=epsilon,
            replays=replays,
            progress=lambda label: bar.update(task, description=f"replay: {label}"),
        )
    if json_output:
        emit_json(result.to_dict())
        return
    console.print(f"[bold]scenario:[/] {chosen.name}")
    console.print(limits_table(result))
    print_recommendations(result)
