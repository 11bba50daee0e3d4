"""``retrystorm graph``: loads, retry amplification, timeouts and blast radius."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from retrystorm.cli._common import app, check_plot_path, console, emit_json, fail
from retrystorm.graph import (
    GraphAnalysis,
    GraphSpec,
    analyze_graph,
    default_graph,
    graph_from_file,
    graph_from_scenario,
    graph_to_dot,
    plot_graph,
)
from retrystorm.graph_replay import GraphReplay, load_replay_inputs, replay_graph
from retrystorm.scenario import (
    DEFAULT_SCENARIO,
    Scenario,
    default_scenario,
    embedded_scenario,
    embedded_scenario_names,
)

__all__ = ["graph"]

_STYLE = {"stable": "green", "vulnerable": "yellow", "overloaded": "bold red"}
_ORDER = {"overloaded": 0, "vulnerable": 1, "stable": 2}


_HELP = """Analyse a service dependency graph.

Prints the load on every node (nominal and with every attempt failing), its
utilisation and classification, timeout-ordering violations, the blast radius
of a stall at each resource, stacked retries, cycles and the most amplified
paths. Without SCENARIO, analyses the embedded incident's graph.

Examples:

  retrystorm graph

  retrystorm graph my-system.toml --fault database.invoice --fault-duration 45

  retrystorm graph --json --plot graph.png --dot graph.dot

  retrystorm graph --replay
"""


@app.command(help=_HELP)
def graph(
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="Scenario or graph file (TOML), or the name of an embedded "
            "scenario; default: the embedded incident's graph.",
            show_default=False,
        ),
    ] = None,
    *,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(help="Draw the graph, marked with the findings, to this PNG."),
    ] = None,
    dot: Annotated[
        Path | None, typer.Option(help="Write the graph as Graphviz DOT to this file.")
    ] = None,
    failure_probability: Annotated[
        float, typer.Option(help="Per-attempt failure probability of the loads.")
    ] = 0.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="Node whose stall to assess (repeat for several); default: "
            "every pool, database and table."
        ),
    ] = None,
    fault_duration: Annotated[
        float, typer.Option(help="How long each fault lasts, s (default: inf).")
    ] = math.inf,
    rows: Annotated[
        int, typer.Option(min=1, help="Most rows per table (the JSON has all).")
    ] = 25,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Replay the scenario's trigger through the graph with the fluid "
            "model: which products fail, when, and whether they recover.",
        ),
    ] = False,
) -> None:
    """Analyse a service dependency graph (see the help text above)."""
    check_plot_path(plot)
    spec = _load(scenario)
    replayed = replay_graph(spec, _template(scenario)) if replay else None
    analysis = analyze_graph(
        spec,
        failure_probability=failure_probability,
        faults=fault,
        fault_duration=fault_duration,
        top=rows,
    )
    _write_files(spec, analysis, plot, dot)
    if json_output:
        payload = analysis.to_dict()
        if replayed is not None:
            payload["replay"] = replayed.to_dict()
        emit_json(payload)
        return
    _print_tables(analysis, rows)
    if replayed is not None:
        _print_replay(replayed)


def _load(source: str | None) -> GraphSpec:
    """Return the graph of a file, of an embedded scenario, or of the incident."""
    if source is None or source == DEFAULT_SCENARIO:
        return default_graph()
    if Path(source).is_file():
        return graph_from_file(source)
    if source not in embedded_scenario_names():
        fail(f"no file and no embedded scenario is called {source!r}")
    return graph_from_scenario(embedded_scenario(source))


def _template(source: str | None) -> Scenario:
    """Return the scenario whose trigger a replay plays through the graph."""
    if source is None or source == DEFAULT_SCENARIO:
        return default_scenario()
    if Path(source).is_file():
        return load_replay_inputs(source)[1]
    return embedded_scenario(source)


def _write_files(
    spec: GraphSpec, analysis: GraphAnalysis, plot: Path | None, dot: Path | None
) -> None:
    """Write the requested plot and DOT files; a bad path is a user mistake."""
    try:
        if plot is not None:
            plot_graph(spec, analysis, plot)
        if dot is not None:
            dot.write_text(graph_to_dot(spec, analysis), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {exc.filename}: {exc.strerror}")


def _number(value: float, unit: str = "") -> str:
    """Format a rate or time for a table (``inf`` spelled out)."""
    return "inf" if math.isinf(value) else f"{value:.4g}{unit}"


def _print_tables(analysis: GraphAnalysis, rows: int) -> None:
    """Print every table of the analysis."""
    style = _STYLE[analysis.classification]
    console.print(f"classification: [{style}]{analysis.classification}[/]")
    _print_nodes(analysis, rows)
    _print_violations(analysis, rows)
    _print_blast_radii(analysis, rows)
    _print_stacked(analysis, rows)
    _print_cycles(analysis, rows)
    _print_paths(analysis, rows)


def _print_table(table: Table, total: int, rows: int) -> None:
    """Print a table and say how many rows were left out."""
    console.print(table)
    if total > rows:
        console.print(f"... and {total - rows} more (see --json)")


def _print_nodes(analysis: GraphAnalysis, rows: int) -> None:
    """Print node loads, capacity, utilisation and classification, worst first."""
    table = Table(title="nodes (loads per s; worst: every attempt fails)")
    for column in ("node", "kind", "load", "worst", "capacity", "util", "worst util"):
        table.add_column(
            column, justify="left" if column in {"node", "kind"} else "right"
        )
    table.add_column("class")
    nodes = sorted(
        analysis.nodes,
        key=lambda n: (_ORDER[n.classification], -n.worst_utilization, n.name),
    )
    for n in nodes[:rows]:
        table.add_row(
            n.name,
            n.kind,
            _number(n.nominal_load),
            _number(n.worst_load),
            _number(n.capacity),
            "-" if math.isinf(n.capacity) else f"{n.nominal_utilization:.0%}",
            "-" if math.isinf(n.capacity) else f"{n.worst_utilization:.0%}",
            f"[{_STYLE[n.classification]}]{n.classification}[/]",
        )
    _print_table(table, len(nodes), rows)
    for n in nodes[:rows]:
        if n.classification != "stable":
            console.print(f"  {n.name}: {n.reason}")


def _print_violations(analysis: GraphAnalysis, rows: int) -> None:
    """Print the timeout-ordering violations."""
    if not analysis.violations:
        console.print("timeout ordering: no violation")
        return
    table = Table(title="timeout-ordering violations")
    for column in ("kind", "call", "caller timeout", "callee time", "wasted"):
        table.add_column(column)
    for v in analysis.violations[:rows]:
        what = "worst-case time" if v.kind == "call" else f"queue timeout of {v.node}"
        table.add_row(
            v.kind,
            f"{v.caller} -> {v.callee}",
            _number(v.timeout, " s"),
            f"{_number(v.time, ' s')} ({what})",
            "yes" if v.wasted else "no (cancelled)",
        )
    _print_table(table, len(analysis.violations), rows)


def _print_blast_radii(analysis: GraphAnalysis, rows: int) -> None:
    """Print who loses goodput for each fault, largest loss first."""
    if not analysis.blast_radii:
        return
    table = Table(title="blast radius of a stall (requests per s that fail)")
    for column in ("fault", "saturates (s after start)", "lost /s", "services"):
        table.add_column(column)
    for b in analysis.blast_radii[:rows]:
        saturated = ", ".join(f"{s.node} ({s.time:.3g})" for s in b.saturated) or "-"
        services = ", ".join(
            f"{s.service} {s.share:.0%}"
            + (f" (direct {s.direct_share:.0%})" if s.share > s.direct_share else "")
            for s in b.losses[:6]
        )
        if len(b.losses) > 6:
            services += f", +{len(b.losses) - 6} more"
        table.add_row(b.fault, saturated, f"{b.lost_rate:.4g}", services or "-")
    _print_table(table, len(analysis.blast_radii), rows)


def _print_stacked(analysis: GraphAnalysis, rows: int) -> None:
    """Print shared nodes behind several retrying layers."""
    if not analysis.stacked:
        console.print("stacked retries: none (at most one retrying call on any path)")
        return
    table = Table(title="stacked retries on shared nodes")
    for column in ("node", "retrying layers", "amplification", "path"):
        table.add_column(column)
    for s in analysis.stacked[:rows]:
        path = " -> ".join(s.path) if s.path else "(through a retrying cycle)"
        table.add_row(s.node, _number(s.layers), _number(s.amplification), path)
    _print_table(table, len(analysis.stacked), rows)


def _print_cycles(analysis: GraphAnalysis, rows: int) -> None:
    """Print the cycles and whether the loads on them stay finite."""
    if not analysis.cycles:
        console.print("cycles: none")
        return
    table = Table(title="cycles")
    for column in ("cycle", "nodes", "retrying", "loads", "worst loads"):
        table.add_column(column)
    for c in analysis.cycles[:rows]:
        table.add_row(
            " -> ".join((*c.cycle, c.cycle[0])),
            str(len(c.nodes)),
            "yes" if c.retrying else "no",
            "finite" if c.bounded else "[bold red]unbounded[/]",
            "finite" if c.worst_bounded else "[bold red]unbounded[/]",
        )
    _print_table(table, len(analysis.cycles), rows)


def _print_paths(analysis: GraphAnalysis, rows: int) -> None:
    """Print the most amplified paths."""
    if not analysis.top_paths:
        return
    table = Table(title="most amplified paths (every attempt failing)")
    for column in ("path", "retries", "amplification", "load", "worst"):
        table.add_column(column)
    for p in analysis.top_paths[:rows]:
        table.add_row(
            " -> ".join(p.path),
            ",".join(str(r) for r in p.retries),
            f"x{p.amplification:.4g}",
            f"{p.nominal_rate:.4g}",
            f"{p.worst_rate:.4g}",
        )
    console.print(table)


def _print_replay(replayed: GraphReplay) -> None:
    """Print each shared tier's verdict and each product's outcome."""
    for tier in replayed.tiers:
        recovery = (
            f", back {tier.recovery_time:.4g} s after the trigger"
            if tier.recovery_time
            else ""
        )
        console.print(
            f"replay: tier {tier.pool} -> {tier.database}: {tier.verdict}{recovery}; "
            f"peak queue {tier.trajectory.peak_queue:,.0f} at "
            f"{tier.trajectory.peak_time:.4g} s"
        )
    table = Table(title="products through the trigger (times in s)")
    for column in (
        "product",
        "rate /s",
        "outcome",
        "fails at",
        "lowest",
        "recovered at",
    ):
        table.add_column(column)
    for p in replayed.products:
        table.add_row(
            p.service,
            f"{p.entry_rate:.4g}",
            p.outcome,
            "-" if p.failed_at is None else f"{p.failed_at:.4g}",
            f"{p.lowest_share:.0%}",
            "-" if p.recovered_at is None else f"{p.recovered_at:.4g}",
        )
    console.print(table)
