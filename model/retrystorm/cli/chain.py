"""``retrystorm chain``: the exact Markov chain of a small retry/timeout system.

A thin shell over `retrystorm.RetryChain` and `retrystorm.chain_from_scenario`:
the stationary summaries, the probability of the bad region, the expected time
to escape it by chance, and the spectral gap.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, fields
from typing import Annotated, Any

import typer
from rich.table import Table

from retrystorm.chain import (
    HittingTime,
    Region,
    RetryChain,
    StationaryResult,
    chain_from_scenario,
)
from retrystorm.cli._common import app, console, emit_json, error_console, fail
from retrystorm.cli.review import resolve_scenario
from retrystorm.errors import StateSpaceTooLargeError

__all__ = ["chain"]

_HELP = """Solve the exact Markov chain of a queue with timeouts and retries.

Give either a SCENARIO (a TOML file or an embedded name; it is scaled down
until the chain fits --max-states, and refused, with the state count it would
need, where even one server does not fit) or the parameters. Rates are per
second, times in seconds. The good region is a short queue and orbit; the bad region
a queue whose head waits about a client timeout (override with --good-queue,
--bad-queue, ...).

Examples:

  retrystorm chain --arrival-rate 8 --service-rate 1 --servers 10 --queue-limit 40

  retrystorm chain --arrival-rate 1.2 --service-rate 2.5 --servers 1
  --queue-limit 60 --timeout 8 --no-cancel-abandoned --orphan-timeout 16
  --retry-rate 1 --retry-probability 0.75 --orbit-limit 15

  retrystorm chain my-system.toml --max-states 100000 --json
"""

# Rows of the stationary table: (summary key, label with units).
_ROWS = (
    ("mean_busy", "mean busy servers"),
    ("mean_queue", "mean waiting requests"),
    ("mean_orphans", "mean waiting orphans (client gone)"),
    ("mean_orbit", "mean requests waiting to retry"),
    ("all_busy_probability", "probability all servers busy"),
    ("throughput", "throughput (completions/s)"),
    ("goodput", "goodput (successes/s)"),
    ("wasted_share", "wasted share of service"),
    ("attempt_rate", "attempts/s (fresh + retries)"),
    ("blocking_probability", "blocking probability per attempt"),
    ("abandonment_probability", "abandonment probability per attempt"),
    ("success_probability", "success probability per request"),
    ("truncation_mass", "probability at truncation levels"),
)


def _explicit_chain(options: dict[str, Any]) -> RetryChain:
    """Return the chain of explicit parameters; fail if a required one is missing."""
    missing = [
        f"--{name.replace('_', '-')}"
        for name in ("arrival_rate", "service_rate", "servers")
        if options[name] is None
    ]
    if missing:
        fail(f"give a SCENARIO or the parameters {', '.join(missing)}")
    return RetryChain(**options)


def _regions(
    chain: RetryChain,
    good: tuple[int | None, int | None],
    bad: tuple[int | None, int | None],
) -> tuple[Region, Region | None]:
    """Return the default regions with any threshold given on the command line."""
    default_good, default_bad = chain.default_regions()
    good_region = Region.good(
        max_queue=good[0] if good[0] is not None else default_good.queue,
        max_orbit=good[1] if good[1] is not None else default_good.orbit,
    )
    if bad == (None, None):
        return good_region, default_bad
    queue = (
        bad[0] if bad[0] is not None else (default_bad.queue if default_bad else None)
    )
    orbit = (
        bad[1] if bad[1] is not None else (default_bad.orbit if default_bad else None)
    )
    return good_region, Region.bad(min_queue=queue, min_orbit=orbit)


def _describe(region: dict[str, Any]) -> str:
    """Return a region in words: its thresholds on the queue and the orbit."""
    sign, joint = ("<=", " and ") if region["kind"] == "good" else (">=", " or ")
    parts = [
        f"{name} {sign} {region[name]}"
        for name in ("queue", "orbit")
        if region[name] is not None
    ]
    return joint.join(parts) if parts else "every state"


def _seconds(value: float) -> str:
    """Return a duration for the table."""
    return "never (infinite)" if math.isinf(value) else f"{value:,.4g} s"


def _hitting(value: HittingTime | None) -> dict[str, Any] | None:
    """Return a hitting time as JSON."""
    if value is None:
        return None
    return {
        "mean": value.mean,
        "worst": value.worst,
        "worst_state": asdict(value.worst_state),
        "start_mass": value.start_mass,
    }


def _print(report: dict[str, Any], result: StationaryResult) -> None:
    """Print the report as tables."""
    console.print(
        f"[bold]chain:[/] {report['states']:,} states ({report['solver']} solver)"
    )
    if report["scale"] is not None:
        console.print(f"scenario {report['scenario']} scaled by {report['scale']:g}")
    table = Table(title="stationary law")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    summary = result.summary()
    for key, label in _ROWS:
        table.add_row(label, f"{summary[key]:.6g}")
    console.print(table)
    console.print(f"good region: {_describe(report['good_region'])}")
    bad = report["bad_region"]
    console.print(
        f"bad region: {_describe(bad) if bad else 'none (no state qualifies)'}"
    )
    console.print(f"probability of the bad region: {report['bad_region_mass']:.6g}")
    escape, entry = report["escape_time"], report["entry_time"]
    if escape is not None:
        console.print(
            "expected escape time from the bad region (by chance): "
            f"{_seconds(escape['mean'])} (worst start {_seconds(escape['worst'])})"
        )
        into = _seconds(entry["mean"])
        console.print(f"expected time from the good region into the bad: {into}")
    gap = report["spectral_gap"]
    if gap is not None:
        relaxation = _seconds(report["relaxation_time"])
        console.print(f"spectral gap {gap:.6g}/s: relaxation time {relaxation}")


@app.command(help=_HELP)
def chain(  # noqa: PLR0917  (typer maps each option to a parameter)
    scenario: Annotated[
        str | None, typer.Argument(help="Scenario TOML file or embedded name.")
    ] = None,
    arrival_rate: Annotated[
        float | None, typer.Option(help="Fresh requests/s.")
    ] = None,
    service_rate: Annotated[
        float | None, typer.Option(help="Completions/s per server.")
    ] = None,
    servers: Annotated[int | None, typer.Option(help="Servers (connections).")] = None,
    queue_limit: Annotated[
        int | None, typer.Option(help="Most waiting requests.")
    ] = None,
    abandonment_rate: Annotated[
        float | None, typer.Option(help="Exponential patience rate (/s).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Fixed client timeout (s).")
    ] = None,
    timeout_phases: Annotated[
        int, typer.Option(help="Erlang phases for --timeout.")
    ] = 1,
    cancel_abandoned: Annotated[
        bool,
        typer.Option(help="Remove a request from the queue when its client gives up."),
    ] = True,
    orphan_timeout: Annotated[
        float | None, typer.Option(help="Mean time (s) an orphan stays queued.")
    ] = None,
    retry_rate: Annotated[
        float | None, typer.Option(help="Retries/s per orbiting request.")
    ] = None,
    retry_probability: Annotated[
        float, typer.Option(help="Probability a failed request retries.")
    ] = 1.0,
    orbit_limit: Annotated[int | None, typer.Option(help="Orbit truncation.")] = None,
    queue_truncation: Annotated[
        int | None, typer.Option(help="Truncation of an unbounded queue.")
    ] = None,
    scale: Annotated[
        float | None, typer.Option(help="Scenario scale (default: largest that fits).")
    ] = None,
    max_states: Annotated[int, typer.Option(help="Largest chain allowed.")] = 300_000,
    good_queue: Annotated[
        int | None, typer.Option(help="Good: queue at most this.")
    ] = None,
    good_orbit: Annotated[
        int | None, typer.Option(help="Good: orbit at most this.")
    ] = None,
    bad_queue: Annotated[
        int | None, typer.Option(help="Bad: queue at least this.")
    ] = None,
    bad_orbit: Annotated[
        int | None, typer.Option(help="Bad: orbit at least this.")
    ] = None,
    gap: Annotated[bool, typer.Option(help="Compute the spectral gap.")] = True,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object.")
    ] = False,
) -> None:
    """Solve the chain and print its summaries."""
    explicit = {
        "arrival_rate": arrival_rate,
        "service_rate": service_rate,
        "servers": servers,
        "queue_limit": queue_limit,
        "abandonment_rate": abandonment_rate,
        "timeout": timeout,
        "timeout_phases": timeout_phases,
        "cancel_abandoned": cancel_abandoned,
        "orphan_timeout": orphan_timeout,
        "retry_rate": retry_rate,
        "retry_probability": retry_probability,
        "orbit_limit": orbit_limit,
        "queue_truncation": queue_truncation,
        "max_states": max_states,
    }
    report: dict[str, Any] = {"scenario": None, "scale": None}
    if scenario is not None:
        model = _scenario_chain(scenario, explicit, scale, report)
    else:
        if scale is not None:
            fail("`--scale` applies to a SCENARIO only")
        model = _explicit_chain(explicit)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        result = model.stationary()
    for warning in {str(w.message) for w in caught}:
        error_console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    good, bad = _regions(model, (good_queue, good_orbit), (bad_queue, bad_orbit))
    escape = model.expected_hitting_time(bad, good) if bad is not None else None
    entry = model.expected_hitting_time(good, bad) if bad is not None else None
    spectral = model.spectral_gap() if gap else None
    report.update(
        {
            "parameters": {f.name: getattr(model, f.name) for f in fields(model)},
            "states": model.state_count,
            "solver": model.solver_method,
            "stationary": result.summary(),
            "good_region": asdict(good),
            "bad_region": asdict(bad) if bad is not None else None,
            "bad_region_mass": model.bad_region_mass(bad) if bad is not None else 0.0,
            "escape_time": _hitting(escape),
            "entry_time": _hitting(entry),
            "spectral_gap": spectral,
            "relaxation_time": None
            if spectral is None
            else (math.inf if spectral == 0.0 else 1.0 / spectral),
        }
    )
    if json_output:
        emit_json(report)
        return
    _print(report, result)


def _scenario_chain(
    argument: str, explicit: dict[str, Any], scale: float | None, report: dict[str, Any]
) -> RetryChain:
    """Return the chain of a scenario; only phases, orbit and size options apply."""
    allowed = {"timeout_phases", "orbit_limit", "max_states", "cancel_abandoned",
               "retry_probability"}  # fmt: skip
    defaults = {"timeout_phases": 1, "cancel_abandoned": True, "retry_probability": 1.0}
    given = [
        name
        for name, value in explicit.items()
        if name not in allowed and value is not None
    ] + [
        name
        for name, value in defaults.items()
        if name != "timeout_phases" and explicit[name] != value
    ]
    if given:
        options = ", ".join(f"--{name.replace('_', '-')}" for name in given)
        fail(f"{options} cannot be combined with a SCENARIO (it sets them)")
    loaded = resolve_scenario(argument)
    try:
        model = chain_from_scenario(
            loaded,
            scale=scale,
            timeout_phases=explicit["timeout_phases"],
            orbit_limit=explicit["orbit_limit"],
            max_states=explicit["max_states"],
        )
    except StateSpaceTooLargeError as error:
        fail(
            f"{error} at the smallest scale tried; raise --max-states if the "
            "memory is there, or run `retrystorm review` on it, which estimates "
            "the escape time by a birth-death reduction"
        )
    report["scenario"] = loaded.name
    # The fresh rate carries the scale exactly (servers are rounded).
    report["scale"] = model.arrival_rate / loaded.clients.peak_request_rate
    return model
