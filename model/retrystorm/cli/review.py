"""``retrystorm review``: the verdict on a scenario and what would make it safe."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from retrystorm.cli._common import app, check_plot_path, console, emit_json, fail
from retrystorm.review import Review, count_replays, review_scenario
from retrystorm.scenario import (
    Scenario,
    default_scenario,
    embedded_scenario,
    embedded_scenario_names,
    load_scenario,
)

__all__ = ["resolve_scenario", "review"]

_HELP = """Replay a scenario and say whether it comes back by itself.

Without SCENARIO, reviews the embedded incident of 2025-09-16.

Examples:

  retrystorm review

  retrystorm review my-system.toml --json

  retrystorm review --variant proxy-timeout-30s --plot replay.png
"""


def _fmt_seconds(value: float | None) -> str:
    """Format a duration for a table, or a dash when there is none."""
    return "-" if value is None else f"{value:,.0f} s"


def resolve_scenario(argument: str | None, variant: str | None = None) -> Scenario:
    """Return the scenario named by a CLI argument: a file, an embedded name, or none.

    Raises
    ------
    ScenarioError
        The file is invalid or the variant unknown.
    """
    if argument is None:
        scenario = default_scenario()
    elif argument in embedded_scenario_names() and not Path(argument).exists():
        scenario = embedded_scenario(argument)
    else:
        scenario = load_scenario(argument)
    return scenario.variant(variant) if variant else scenario


def _print_summary(result: Review) -> None:
    """Print the verdict and its key numbers."""
    console.print(f"[bold]scenario:[/] {result.scenario.name}")
    colour = {"stable": "green", "recovers": "yellow"}.get(result.verdict, "red")
    line = f"[bold]verdict:[/] [{colour}]{result.verdict}[/]"
    if result.verdict == "recovers":
        line += f" ({result.recovery_time:,.0f} s after the trigger ended)"
    console.print(line)
    console.print(
        f"peak backlog {result.peak_queue:,.0f} requests at t = "
        f"{result.peak_time:,.0f} s; classification: {result.classification}"
    )
    critical = result.equilibria.critical_backlog
    if critical is not None:
        console.print(
            f"critical backlog: above about {critical:,.0f} waiting requests the "
            "system does not return to the good state by itself"
        )
    console.print(f"[dim]{result.equilibria.reason}[/]")


def _print_escape(result: Review) -> None:
    """Print the expected time to escape the bad state by chance, if computed."""
    escape = result.escape
    if escape is None:
        if result.escape_note is not None:
            console.print(f"[bold]escape by chance:[/] {result.escape_note}")
        return
    exponent = escape.log10_seconds
    if exponent < 6.0:
        when = f"about {escape.expected_seconds:,.3g} s"
    else:
        when = f"about 10^{exponent:,.0f} s"
    if escape.never_in_practice:
        when += f" (never in practice: 10^{escape.log10_years:,.0f} years)"
    if escape.method == "birth-death reduction":
        when += ", in order of magnitude (the exponent is a lower estimate)"
    console.print(
        f"[bold]escape by chance:[/] expected {when}, from {escape.from_region} "
        f"to {escape.to_region}"
    )
    console.print(f"[dim]{escape.method}: {escape.accuracy}[/]")


def _print_timeline(result: Review) -> None:
    """Print the timeline, a line an entry."""
    table = Table(title="timeline", show_lines=False)
    table.add_column("t (s)", justify="right")
    table.add_column("what happened")
    for entry in result.timeline:
        table.add_row(f"{entry.time:,.0f}", entry.text)
    console.print(table)


def _print_equilibria(result: Review) -> None:
    """Print the equilibria of the system without the trigger."""
    table = Table(title=f"equilibria without the trigger ({result.classification})")
    for name in ("kind", "queue", "head wait (s)", "attempts/s", "goodput/s", "stable"):
        table.add_column(name, justify="right")
    for point in result.equilibria.equilibria:
        table.add_row(
            point.kind,
            f"{point.queue:,.0f}",
            f"{point.head_wait:,.1f}",
            f"{point.attempt_rate:,.1f}",
            f"{point.goodput:,.1f}",
            "yes" if point.stable else "no",
        )
    console.print(table)


def _print_remedies(result: Review) -> None:
    """Print the variants of the scenario and their verdicts."""
    if not result.remedies:
        return
    table = Table(title="remedies compared")
    for name in ("variant", "verdict", "recovery", "peak backlog", "what it changes"):
        table.add_column(name)
    for outcome in result.remedies:
        table.add_row(
            outcome.name,
            outcome.verdict,
            _fmt_seconds(outcome.recovery_time),
            f"{outcome.peak_queue:,.0f}",
            outcome.description,
        )
    console.print(table)


def _print_sensitivity(result: Review) -> None:
    """Print how the verdict moves with each assumed value."""
    if not result.sensitivity:
        return
    table = Table(title="sensitivity of the verdict to each assumed value")
    table.add_column("assumed field")
    table.add_column("value", justify="right")
    table.add_column("verdict at each value tried")
    table.add_column("decisive")
    for row in result.sensitivity:
        tried = ", ".join(
            f"{value:g}: {verdict}"
            for value, verdict in zip(row.values, row.verdicts, strict=True)
        )
        decisive = "[bold]yes[/]" if row.changes_verdict(result.verdict) else "no"
        table.add_row(row.field, f"{row.base_value:g}", tried, decisive)
    console.print(table)


def _print_limits(result: Review) -> None:
    """Print the design limits and the changes they recommend."""
    if result.limits is None:
        return
    # The limits command imports `resolve_scenario` from here: import it late.
    from retrystorm.cli.limits import (  # noqa: PLC0415 - circular import
        limits_table,
        print_recommendations,
    )

    console.print(limits_table(result.limits))
    print_recommendations(result.limits)


def _print_graph(result: Review, rows: int = 10) -> None:
    """Print the findings of the scenario's service graph, if it has one."""
    analysis = result.graph
    if analysis is None:
        return
    counts = Counter(node.classification for node in analysis.nodes)
    summary = ", ".join(
        f"{counts[name]} {name}" for name in ("overloaded", "vulnerable", "stable")
    )
    console.print(
        f"[bold]service graph:[/] {analysis.classification} "
        f"({len(analysis.nodes)} nodes: {summary})"
    )
    for line in analysis.findings():
        console.print(f"- {line}")
    if not analysis.blast_radii:
        return
    radius = analysis.blast_radii[0]
    console.print(
        f"blast radius of a {radius.duration:,.4g} s stall of {radius.fault}:"
    )
    table = Table()
    for column in ("service", "requests/s", "touch it", "fail"):
        table.add_column(column, justify="left" if column == "service" else "right")
    for loss in radius.losses[:rows]:
        table.add_row(
            loss.service,
            f"{loss.entry_rate:,.4g}",
            f"{loss.direct_share:.0%}",
            f"{loss.share:.0%}",
        )
    console.print(table)


@app.command(help=_HELP)
def review(  # noqa: PLR0917  (typer maps each option to a parameter)
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="Scenario TOML file or embedded name (default: the incident)."
        ),
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="Review this variant of the scenario.")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write backlog, rates and goodput to this PNG.")
    ] = None,
    remedies: Annotated[
        bool, typer.Option(help="Replay the scenario's variants (remedies).")
    ] = True,
    sensitivity: Annotated[
        bool, typer.Option(help="Vary each assumed value from half to double.")
    ] = True,
    limits: Annotated[
        bool, typer.Option(help="Compute the design limits and recommendations.")
    ] = True,
) -> None:
    """Review a scenario (see the help text above)."""
    check_plot_path(plot)
    chosen = resolve_scenario(scenario, variant)
    total = count_replays(
        chosen, remedies=remedies, sensitivity=sensitivity, limits=limits
    )
    with Progress(console=console, transient=True, disable=json_output) as bar:
        task = bar.add_task("replaying", total=total)
        result = review_scenario(
            chosen,
            remedies=remedies,
            sensitivity=sensitivity,
            progress=lambda label: bar.update(task, advance=1, description=label),
            limits=limits,
        )
    if plot is not None:
        # matplotlib is imported only when a plot is asked for: it is slow to load.
        from retrystorm.plots import plot_trajectory  # noqa: PLC0415

        try:
            plot_trajectory(result.trajectory, plot)
        except OSError as exc:
            fail(f"cannot write {exc.filename}: {exc.strerror}")
    if json_output:
        emit_json(result.to_dict())
        return
    _print_summary(result)
    _print_escape(result)
    _print_timeline(result)
    _print_equilibria(result)
    _print_remedies(result)
    _print_sensitivity(result)
    _print_limits(result)
    _print_graph(result)
    if plot is not None:
        console.print(f"plot written to {plot}")
