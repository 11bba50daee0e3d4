"""Build the paper from the library: every number, table and figure.

Run from the repository's root::

    python -m papers.build                          # papers/paper.md and figures
    python -m papers.build --fast --out SOME_DIR    # a quick, reduced build

The text is ``papers/paper.template.md``; each ``{{name}}`` in it is a value
this module computes with ``retrystorm`` (a number, a table, or a sentence
whose wording follows the numbers). The build writes ``paper.md``,
``values.json`` (every value, and whether the fast build computes it exactly
as the full build does) and ``figures/*.png`` to the output directory, and a
PDF when pandoc and a PDF engine are installed. A placeholder without a value,
or a value without a placeholder, stops the build.

The fast build uses coarser grids for the phase diagrams, fewer and smaller
simulation replications, fewer Erlang phases in the chain check, and skips
the sensitivity analysis and the re-checking of the theorems; everything else
(the incident, its remedies, the equilibria, the published tables, the
benchmarks) it computes exactly as the full build does. The tests compare
those values with the committed paper, so the paper cannot drift from the
code unnoticed.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import retrystorm
from matplotlib.figure import Figure
from numpy.typing import NDArray
from retrystorm import ErlangA, MMc, MMcD, MMcK, RetryChain
from retrystorm import simulation as simulation_module
from retrystorm.equilibria import (
    EquilibriumReport,
    bad_equilibrium_exists,
    boundary_wait,
    find_equilibria,
    good_equilibrium_exists,
    on_time_share,
)
from retrystorm.fluid import (
    GOODPUT_TOLERANCE,
    FluidTrajectory,
    budgeted_attempts_per_request,
    late_share,
    saturated_service_rate,
    saturated_wait,
)
from retrystorm.graph import analyze_graph, graph_from_scenario
from retrystorm.limits import compute_limits
from retrystorm.review import Review, VariantOutcome, review_scenario
from retrystorm.scenario import Scenario, default_scenario
from retrystorm.simulation import ReplicationSummary, replicate, simulate_events
from retrystorm.sweep import (
    Quantity,
    fields_provider,
    register_provider,
    scenario_quantities,
    sweep_scenario,
)

ROOT = Path(__file__).resolve().parent.parent
PAPERS = ROOT / "papers"
TEMPLATE = PAPERS / "paper.template.md"
REFERENCES = ROOT / "REFERENCES.md"
PUBLISHED = ROOT / "tests" / "data" / "published_steady_state.csv"
BENCHMARKS = ROOT / "benchmarks" / "results"

PLACEHOLDER = re.compile(r"\{\{\s*([a-z0-9_.]+)\s*\}\}")
CITATION = re.compile(r"\[([A-Z][A-Za-z]+[0-9]{4}[a-z]*|DLMF)\]")

# Facts of the postmortem that no scenario field holds [Sendcloud2025].
POSTMORTEM_QUEUED = 50_000  # "more than 50,000 connection requests queued"
POSTMORTEM_DATE = "2025-09-16"

# Simulation: one seed for everything; recovering cases at scale 0.1 (at 0.05
# a 5-connection pool crosses the good-state threshold by chance and delays
# the recovery the simulation detects), stuck ones at 0.05 (their attempt rate
# makes each simulated second four times as costly, and the verdict is clear).
# The same choices as tests/test_fluid_vs_simulation.py.
SEED = 2025
RECOVERING_SCALE = 0.1
STUCK_SCALE = 0.05

# Phase diagrams: without a circuit breaker the classification comes from the
# closed forms and fixed points of `find_equilibria`; its replays only bisect
# for the critical backlog, which the diagrams do not use, so they are cut to
# one second (with a breaker, a replay decides, over the scenario's horizon).
PHASE_TOLERANCE = 0.9
PHASE_HORIZON = 1.0

CLASS_COLOURS = {
    "stable": "tab:green",
    "vulnerable": "tab:orange",
    "overloaded": "tab:purple",
}
CLASSES = tuple(CLASS_COLOURS)


_STARTED = time.perf_counter()


def note(message: str) -> None:
    """Print what the build has done, with the seconds since it started."""
    print(f"[{time.perf_counter() - _STARTED:6.1f} s] {message}", flush=True)


class BuildError(RuntimeError):
    """The paper cannot be built as asked (a missing value, a failed point)."""


# -- settings ---------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How much work a build does.

    Attributes
    ----------
    label
        ``"full"`` or ``"fast"``.
    queue_timeouts, caps
        The grid of the first phase diagram (s; requests in flight per pod).
    request_rates, retries
        The grid of the second phase diagram (per s; retries per request).
    replications
        Simulation replications per case.
    figure_runs
        Simulated runs drawn per case in the validation figure.
    every_variant_simulated
        Simulate every variant, or only the first one.
    sensitivity
        Run the review's sensitivity analysis.
    check_theorems
        Re-run the sympy checks of the theorems the paper states.
    mmcd_phases
        Erlang phases of the chain's approximation of a fixed timeout.
    """

    label: str
    queue_timeouts: tuple[float, ...]
    caps: tuple[int, ...]
    request_rates: tuple[float, ...]
    retries: tuple[int, ...]
    replications: int
    figure_runs: int
    every_variant_simulated: bool
    sensitivity: bool
    check_theorems: bool
    mmcd_phases: tuple[int, ...]


def _geometric_integers(low: int, high: int, count: int) -> tuple[int, ...]:
    """Whole numbers spread evenly on a log scale from ``low`` to ``high``."""
    points = np.geomspace(low, high, count)
    return tuple(sorted({round(float(p)) for p in points}))


FULL = Settings(
    label="full",
    queue_timeouts=tuple(float(t) for t in np.arange(5.0, 201.0, 5.0)),
    caps=_geometric_integers(1, 2000, 24),
    request_rates=tuple(float(r) for r in np.arange(10.0, 301.0, 10.0)),
    retries=tuple(range(9)),
    replications=5,
    figure_runs=3,
    every_variant_simulated=True,
    sensitivity=True,
    check_theorems=True,
    mmcd_phases=(1, 2, 3),
)
FAST = Settings(
    label="fast",
    queue_timeouts=(15.0, 60.0, 150.0),
    caps=(2, 20, 1000),
    request_rates=(80.0, 160.0, 280.0),
    retries=(0, 2, 5),
    replications=2,
    figure_runs=1,
    every_variant_simulated=False,
    sensitivity=False,
    check_theorems=False,
    mmcd_phases=(1, 2),
)


# -- values and the template ---------------------------------------------------------


@dataclass
class Values:
    """The text of every placeholder, and whether the fast build computes it too.

    Attributes
    ----------
    texts
        Placeholder name -> its text.
    invariant
        Placeholder name -> True when the fast build gives the same text.
    """

    texts: dict[str, str] = field(default_factory=dict)
    invariant: dict[str, bool] = field(default_factory=dict)

    def put(self, key: str, text: object, *, invariant: bool = True) -> None:
        """Set the text of placeholder ``key`` (once)."""
        if key in self.texts:
            raise BuildError(f"the value {key!r} is computed twice")
        self.texts[key] = str(text)
        self.invariant[key] = invariant

    def to_json(self) -> dict[str, Any]:
        """Return the values as plain data, sorted by name."""
        return {
            key: {"text": self.texts[key], "invariant": self.invariant[key]}
            for key in sorted(self.texts)
        }


def render(template: str, texts: Mapping[str, str]) -> str:
    """Fill every ``{{name}}`` of ``template``; every value must be used."""
    used = set(PLACEHOLDER.findall(template))
    missing = sorted(used - set(texts))
    unused = sorted(set(texts) - used)
    if missing or unused:
        raise BuildError(f"placeholders without a value: {missing}; unused: {unused}")
    return PLACEHOLDER.sub(lambda match: texts[match.group(1)], template)


def num(value: float, digits: int = 3) -> str:
    """A number to ``digits`` significant digits, with thousands separators."""
    if not math.isfinite(value):
        return "infinite" if value > 0 else "minus infinity"
    if value == 0.0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    rounded = round(value, decimals)
    if rounded == 0.0:
        return "0"
    text = f"{rounded:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def count(value: float) -> str:
    """A count of requests, rounded to a whole number."""
    return f"{value:,.0f}"


def share(value: float) -> str:
    """A share as a percentage with one decimal."""
    return f"{100.0 * value:.1f} %"


def sci(value: float) -> str:
    """A small number in scientific notation, two significant digits."""
    return "0" if value == 0.0 else f"{value:.1e}"


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def listing(items: Iterable[str]) -> str:
    """A Markdown bullet list."""
    return "\n".join(f"- {item}" for item in items)


def words(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if not items:
        return "none"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def code(name: str) -> str:
    """A name in Markdown code style."""
    return f"`{name}`"


# -- the scenarios -------------------------------------------------------------------


@functools.cache
def incident() -> Scenario:
    """The incident scenario shipped with the library."""
    return default_scenario()


def case_scenario(variant: str | None) -> Scenario:
    """The incident, or one of its variants (remedies)."""
    base = incident()
    return base if variant is None else base.variant(variant)


def case_label(variant: str | None) -> str:
    """A short label of a case."""
    return "original settings" if variant is None else variant


def lock_event(scenario: Scenario) -> Any:
    """The scenario's first lock event, or None."""
    return next((e for e in scenario.events if e.kind == "lock"), None)


def event_of(scenario: Scenario, kind: str) -> Any:
    """The scenario's first event of ``kind``, or None."""
    return next((e for e in scenario.events if e.kind == kind), None)


def is_stuck(trajectory: FluidTrajectory) -> bool:
    """Whether a replay does not return to the good state in its verdict window."""
    return trajectory.recovery_time() is None


# -- work done in other processes ----------------------------------------------------


def task_review(variant: str | None, sensitivity: bool) -> Review:
    """The review of the incident or of one remedy (without its own variants)."""
    scenario = case_scenario(variant)
    return review_scenario(scenario, remedies=False, sensitivity=sensitivity)


def task_replicate(variant: str | None, replications: int, scale: float) -> Any:
    """Independent simulation replications of a case."""
    return replicate(
        case_scenario(variant), replications=replications, seed=SEED, scale=scale
    )


def task_sample_runs(
    variant: str | None, runs: int, scale: float
) -> list[tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """Simulated queues of a case, in full-system units, for the figure."""
    scenario = case_scenario(variant)
    sampled = []
    for seed in range(runs):
        run = simulate_events(scenario, seed=SEED + 1 + seed, scale=scale)
        sampled.append((run.time, run.queue / scale))
    return sampled


def task_verify(keys: tuple[str, ...]) -> dict[str, bool]:
    """Re-run the sympy checks of the theorems named ``keys``."""
    from proofs import ALL_THEOREMS  # noqa: PLC0415 - sympy is slow to import
    from proofs._framework import verify  # noqa: PLC0415

    chosen = [t for t in ALL_THEOREMS if t.key in keys]
    return {t.key: verify(t).ok for t in chosen}


@dataclass(frozen=True)
class PhasePoint:
    """One point of a phase diagram.

    Attributes
    ----------
    classification
        `find_equilibria`'s classification.
    closed_form_bad
        1.0 when Theorem 2's closed form (no crashes) says a bad equilibrium
        exists at the point's saturated wait, else 0.0.
    """

    classification: str
    closed_form_bad: float


def phase_point(scenario: Scenario) -> PhasePoint:
    """Classify a scenario's equilibria (run in the sweep's workers)."""
    breaker = scenario.web.circuit_breaker is not None
    horizon = scenario.horizon if breaker else PHASE_HORIZON
    report = find_equilibria(scenario, tolerance=PHASE_TOLERANCE, horizon=horizon)
    clients = scenario.clients
    mu = saturated_service_rate(scenario)
    kappa = scenario.proxy.pool_size * mu
    on_time = on_time_share(saturated_wait(scenario), clients.timeout, mu)
    bad = bad_equilibrium_exists(
        clients.peak_request_rate,
        kappa,
        on_time,
        clients.max_retries,
        clients.retry_budget,
    )
    return PhasePoint(report.classification, 1.0 if bad else 0.0)


def register_phase_provider() -> None:
    """Make ``phase.classification`` and ``phase.closed_form_bad`` sweepable."""
    if "phase.classification" in scenario_quantities():
        return
    quantities = [
        Quantity("classification", "stable, vulnerable or overloaded", "text"),
        Quantity("closed_form_bad", "1 if Theorem 2 gives a bad equilibrium"),
    ]
    register_provider(fields_provider("phase", phase_point, quantities))


# -- the model and the feedback loop -------------------------------------------------


def model_values(base: Scenario, values: Values) -> None:
    """The scenario's parameters, as the text quotes them."""
    clients, web, proxy, database = base.clients, base.web, base.proxy, base.database
    mu = saturated_service_rate(base)
    kappa = proxy.pool_size * mu
    lock = lock_event(base)
    cold = event_of(base, "cold_restart")
    rollback = event_of(base, "rollback")
    put = values.put
    put("model.request_rate", num(clients.peak_request_rate))
    put("model.pool_size", count(proxy.pool_size))
    put("model.service_time", num(database.service_time))
    put("model.capacity", num(kappa))
    put("model.utilization", share(clients.peak_request_rate / kappa))
    pool = MMc(
        arrival_rate=clients.peak_request_rate,
        service_rate=mu,
        servers=proxy.pool_size,
    )
    put("model.wait_probability", sci(pool.wait_probability))
    put("model.client_timeout", num(clients.timeout))
    put("model.queue_timeout", num(proxy.queue_timeout))
    put("model.max_retries", count(clients.max_retries))
    put("model.attempts", count(clients.max_retries + 1))
    put("model.pods", count(web.pods))
    put("model.mode", code(web.mode))
    put("model.goodput_tolerance", share(GOODPUT_TOLERANCE))
    put("model.assumption_count", count(len(base.assumptions)))
    put("model.varied_count", count(len(base.vary_assumptions)))
    put("incident.date", POSTMORTEM_DATE)
    put("incident.reported_queued", count(POSTMORTEM_QUEUED))
    put("incident.lock_duration", num(lock.duration))
    put("incident.lock_start", num(lock.at))
    put("incident.lock_table", code(lock.table))
    put("incident.rollback_start", num(rollback.at))
    put("incident.rollback_end", num(rollback.end))
    put("incident.cold_restart_start", num(cold.at))
    put("incident.cold_restart_end", num(cold.end))
    put("incident.outage_minutes", num((cold.end - lock.at) / 60.0))
    put("incident.horizon", num(base.horizon))


def attempt_curve(
    scenario: Scenario, waits: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``x(w)``: the attempt rate when every attempt waits ``w`` (per s)."""
    clients = scenario.clients
    mu = saturated_service_rate(scenario)
    rates = [
        clients.peak_request_rate
        * budgeted_attempts_per_request(
            late_share(float(w), clients.timeout, mu),
            clients.max_retries,
            clients.retry_budget,
        )
        for w in waits
    ]
    return np.asarray(rates)


def loop_values(base: Scenario, report: EquilibriumReport, values: Values) -> None:
    """The feedback loop in numbers: the equilibria of the incident's system."""
    clients = base.clients
    rate = clients.peak_request_rate
    bad, good = report.of_kind("bad"), report.of_kind("good")
    values.put("eq.classification", report.classification)
    values.put("eq.reason", report.reason)
    values.put("eq.table", equilibria_table(report))
    if bad is None or good is None:
        text = (
            "With these values the fluid model finds no self-sustaining bad state "
            f"(classification `{report.classification}`), so the loop cannot hold "
            "the system down once the trigger is gone."
        )
    else:
        longer = "longer" if bad.head_wait > clients.timeout else "not longer"
        text = (
            f"In the bad state the head-of-line wait is {num(bad.head_wait)} s, "
            f"{longer} than the client's {num(clients.timeout)} s, and "
            f"{share(bad.wasted_share)} of the work the database does is for "
            f"clients that have already given up; each request is tried "
            f"{num(bad.attempt_rate / rate)} times on average, and "
            f"{num(bad.attempt_rate)} attempts per second arrive at a pool that "
            f"serves {num(report.capacity)}. The queue holds "
            f"{count(bad.queue)} requests (the postmortem reports more than "
            f"{count(POSTMORTEM_QUEUED)}), goodput is {num(bad.goodput)} per "
            f"second against a demand of {num(rate)}, and the state sustains "
            f"itself: {sustaining(base, bad.head_wait)}"
        )
    values.put("loop.bad_state", text)


def sustaining(scenario: Scenario, wait: float) -> str:
    """How the bad state refills its queue, from its wait and the proxy's rules."""
    if wait > scenario.clients.timeout and not scenario.proxy.cancel_abandoned:
        return (
            "every client gives up after its timeout and retries, while its "
            "abandoned attempt keeps its place in the queue, to be served late or "
            "to time out there, so the retries keep the queue full."
        )
    return (
        "attempts that fail (time out in the proxy queue, or are rejected) come "
        "back as retries and keep the queue full."
    )


def equilibria_table(report: EquilibriumReport) -> str:
    """The equilibria of a report as a Markdown table."""
    rows = [
        (
            e.kind,
            count(e.queue),
            num(e.head_wait),
            num(e.attempt_rate),
            num(e.throughput),
            num(e.goodput),
            share(e.wasted_share),
            num(e.pods_up),
            "stable" if e.stable else "unstable",
        )
        for e in report.equilibria
    ]
    header = (
        "equilibrium",
        "queue",
        "head-of-line wait (s)",
        "attempts (/s)",
        "throughput (/s)",
        "goodput (/s)",
        "wasted work",
        "pods up",
        "locally",
    )
    return table(header, rows)


def mechanism_figure(base: Scenario, report: EquilibriumReport, path: Path) -> None:
    """Figure 1: the attempt rate as a function of the waiting time."""
    clients = base.clients
    mu = saturated_service_rate(base)
    kappa = report.capacity
    w_sat = saturated_wait(base)
    waits = np.linspace(0.0, w_sat, 600)
    figure = Figure(figsize=(8.0, 4.2))
    axis = figure.subplots()
    axis.plot(waits, attempt_curve(base, waits), color="tab:red", label="attempts x(w)")
    axis.axhline(
        kappa, color="grey", ls=":", label=f"pool capacity cμ = {num(kappa)}/s"
    )
    axis.axhline(
        clients.peak_request_rate, color="tab:blue", ls="--", label="fresh requests λ"
    )
    wstar = boundary_wait(
        clients.peak_request_rate,
        kappa,
        clients.timeout,
        mu,
        clients.max_retries,
        retry_budget=clients.retry_budget,
    )
    if wstar is not None and wstar < w_sat:
        axis.axvline(wstar, color="k", lw=0.8, ls="--")
        axis.annotate(
            f"boundary w* = {num(wstar)} s",
            (wstar, kappa),
            xytext=(8, 30),
            textcoords="offset points",
            fontsize=8,
        )
    axis.axvline(clients.timeout, color="tab:orange", lw=0.8)
    axis.annotate(
        f"client timeout {num(clients.timeout)} s",
        (clients.timeout, clients.peak_request_rate),
        xytext=(6, -18),
        textcoords="offset points",
        fontsize=8,
    )
    for equilibrium in report.equilibria:
        axis.plot(
            equilibrium.head_wait,
            equilibrium.attempt_rate,
            marker="o" if equilibrium.stable else "s",
            mfc="k" if equilibrium.stable else "w",
            mec="k",
            ms=7,
            ls="none",
        )
        right_half = equilibrium.head_wait > 0.5 * w_sat
        axis.annotate(
            f"{equilibrium.kind} equilibrium",
            (equilibrium.head_wait, equilibrium.attempt_rate),
            xytext=(-8 if right_half else 8, 8),
            textcoords="offset points",
            fontsize=8,
            ha="right" if right_half else "left",
        )
    for name in base.variant_names:
        remedy = base.variant(name)
        if remedy.proxy.queue_timeout != base.proxy.queue_timeout:
            remedy_wait = saturated_wait(remedy)
            axis.axvline(remedy_wait, color="tab:green", lw=0.8, ls="-.")
            axis.annotate(
                f"saturated wait\nwith {name}",
                (remedy_wait, 0.3 * kappa),
                xytext=(-12, 0),
                textcoords="offset points",
                fontsize=8,
                ha="right",
                va="center",
                arrowprops={"arrowstyle": "->", "lw": 0.6},
            )
            break
    axis.set_xlabel("head-of-line wait w (s)")
    axis.set_ylabel("per second")
    axis.set_xlim(0.0, 1.03 * w_sat)
    axis.set_ylim(0.0, 1.15 * max(kappa, float(attempt_curve(base, waits).max())))
    axis.legend(loc="upper left", fontsize=8)
    axis.set_title("The attempt rate the clients send when every attempt waits w")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def mechanism_note(base: Scenario, report: EquilibriumReport) -> str:
    """Whether the equilibria lie on the crash-free curve of Figure 1, and why."""
    off = [
        e
        for e in report.equilibria
        if abs(float(attempt_curve(base, np.array([e.head_wait]))[0]) - e.attempt_rate)
        > 0.01 * e.attempt_rate
    ]
    if not off:
        return (
            "The points are the equilibria `find_equilibria` finds; they lie on "
            "the curve."
        )
    crashing = any(e.pods_up < base.web.pods for e in report.equilibria)
    kinds = words([e.kind for e in off])
    if not crashing:
        return (
            f"The points are the equilibria `find_equilibria` finds; the {kinds} "
            "equilibrium lies off the curve, which leaves out what the full model "
            "adds (init queries, the bounded tier, the retry budget's bucket)."
        )
    known = [t.key for _, t in stated_theorems()]
    why = (
        f" ({theorem_label('equilibria.health_checks')})"
        if "equilibria.health_checks" in known
        else ""
    )
    return (
        f"The points are the equilibria `find_equilibria` finds. The curve leaves "
        f"out crashing pods; in the {kinds} equilibrium pods crash and restart, "
        "which fails the attempts in flight on a crashed pod and adds restarting "
        f"pods' init queries, so the point lies off the crash-free curve{why}."
    )


def graph_values(base: Scenario, values: Values) -> None:
    """The incident's products as a dependency graph: the static findings."""
    spec = graph_from_scenario(base)
    analysis = analyze_graph(spec)
    services = sum(1 for node in analysis.nodes if node.kind == "service")
    values.put(
        "graph.size",
        f"{count(services)} services and {count(len(analysis.nodes) - services)} "
        f"pools, databases and tables, joined by {count(len(spec.calls))} calls",
    )
    values.put("graph.findings", listing(f"{line}." for line in analysis.findings()))


# -- theorems ------------------------------------------------------------------------


def heading_anchor(markdown_file: Path, key: str) -> str:
    """The code host's anchor of the heading that names ``key`` in a proof file."""
    for line in markdown_file.read_text(encoding="utf-8").splitlines():
        if line.startswith("## ") and f"`{key}`" in line:
            text = line[3:].strip().lower()
            text = re.sub(r"[^\w\- ]", "", text)
            return "#" + text.replace(" ", "-")
    raise BuildError(f"{markdown_file.name} has no heading for {key}")


def stated_theorems() -> list[tuple[str, Any]]:
    """The theorems the paper states, each with the proof module that checks it."""
    chosen = []
    for module_name in ("fluid_equilibria", "amplification"):
        module = importlib.import_module(f"proofs.{module_name}")
        chosen += [(module_name, theorem) for theorem in module.THEOREMS]
    if not chosen:
        raise BuildError("no theorems found in proofs/")
    return chosen


@functools.cache
def theorem_label(key: str) -> str:
    """``Theorem n``: the number the paper gives the theorem ``key``."""
    keys = [theorem.key for _, theorem in stated_theorems()]
    return f"Theorem {keys.index(key) + 1}"


def theorem_values(
    settings: Settings, values: Values, pool: ProcessPoolExecutor
) -> Future[dict[str, bool]] | None:
    """State the theorems; start their checks in the full build."""
    found = stated_theorems()
    lines = []
    for number, (module_name, theorem) in enumerate(found, start=1):
        proof = ROOT / "proofs" / f"{module_name}.md"
        anchor = heading_anchor(proof, theorem.key)
        link = f"[proofs/{module_name}.md]({_relative('proofs', module_name)}{anchor})"
        sources = " ".join(f"[{s}]" for s in theorem.sources)
        statement = theorem.statement[0].upper() + theorem.statement[1:]
        lines.append(
            f"**Theorem {number}** (`{theorem.key}`, {link}). {statement}."
            + (f" Sources: {sources}." if sources else "")
        )
    values.put("theorems.list", "\n\n".join(lines))
    values.put("theorems.stated", count(len(found)))
    for name in ("bad", "boundary", "stability", "timeout_ordering"):
        values.put(f"theorems.{name}", theorem_label(f"equilibria.{name}"))
    values.put("theorems.saturated_wait", theorem_label("fluid.saturated_wait"))
    values.put("theorems.budget", theorem_label("retries.budget"))
    values.put("theorems.layers", theorem_label("retries.layers"))
    values.put(
        "theorems.total", count(len(importlib.import_module("proofs").ALL_THEOREMS))
    )
    if not settings.check_theorems:
        return None
    keys = tuple(theorem.key for _, theorem in found)
    return pool.submit(task_verify, keys)


def _relative(folder: str, module_name: str) -> str:
    """Link from papers/paper.md to a Markdown file of another folder."""
    return f"../{folder}/{module_name}.md"


def theorem_status(job: Future[dict[str, bool]] | None, values: Values) -> None:
    """Say whether the stated theorems were re-checked in this build."""
    if job is None:
        text = "This fast build did not re-run the checks; `python -m proofs` does."
    else:
        outcome = job.result()
        failed = [key for key, ok in outcome.items() if not ok]
        if failed:
            raise BuildError(f"theorems failed their checks: {failed}")
        text = (
            f"All {count(len(outcome))} were re-checked with sympy while this paper "
            "was built (`python -m proofs` runs every check)."
        )
    values.put("theorems.status", text, invariant=False)


# -- the incident --------------------------------------------------------------------


def assumption_values(base: Scenario, values: Values) -> None:
    """The table of assumed values with their sources."""
    rows = [
        (
            code(a.field),
            _plain_value(a.value),
            "yes" if a.vary else "no",
            a.source.replace("|", "/"),
        )
        for a in base.assumptions
    ]
    header = ("field", "assumed value", "varied", "where it comes from")
    values.put("assumptions.table", table(header, rows))


def _plain_value(value: object) -> str:
    """A scenario value as text (numbers with significant digits)."""
    if isinstance(value, bool | str):
        return code(str(value).lower() if isinstance(value, bool) else value)
    if isinstance(value, int):
        return count(value)
    if isinstance(value, float):
        return num(value, 4)
    return str(value)


def verdict_values(review: Review, values: Values) -> None:
    """The verdict of the replay, the timeline and the postmortem comparison."""
    scenario, trajectory = review.scenario, review.trajectory
    values.put("incident.verdict", f"`{review.verdict}`")
    values.put("incident.peak_queue", count(review.peak_queue))
    values.put("incident.peak_time", num(review.peak_time))
    values.put("incident.verdict_paragraph", verdict_paragraph(review))
    values.put("incident.escape", escape_sentence(review))
    values.put("incident.postmortem", postmortem_paragraph(review))
    values.put("incident.margin", margin_paragraph(review))
    timeline = [
        f"t = {num(entry.time, 4)} s: {entry.text.rstrip('.')}."
        for entry in review.timeline
    ]
    values.put("incident.timeline", listing(timeline))
    del scenario, trajectory


def escape_sentence(review: Review) -> str:
    """How long the stuck system would take to escape by chance, if it is stuck."""
    escape = review.escape
    if escape is None:
        return ""
    if escape.method == "exact chain":
        how = "solving the hitting-time equations of its Markov chain"
        size = f"about {sci(escape.expected_seconds)} s"
    else:
        how = (
            "a one-dimensional birth-death reduction of its Markov chain, "
            "good for the order of the exponent only"
        )
        size = f"of the order of 10^{count(escape.log10_seconds)} s"
    years = ""
    if escape.never_in_practice:
        years = f" (10^{count(escape.log10_years)} years: never, in practice)"
    return (
        "Chance does not rescue it either: the expected time to leave the bad "
        f"state by a lucky run of fluctuations, from {escape.from_region} to "
        f"{escape.to_region}, is {size}{years}, by {how} (`retrystorm.escape`)."
    )


def _window_phrase(review: Review) -> str:
    """How the judged window ends, in words."""
    if review.scenario.first_intervention is not None:
        return f"the cold restart at t = {num(review.window_end, 4)} s"
    return f"the end of the replay at t = {num(review.window_end, 4)} s"


def verdict_paragraph(review: Review) -> str:
    """What the replay shows, worded from its verdict."""
    trajectory = review.trajectory
    end = review.trigger_end or 0.0
    verdict = review.verdict
    if verdict == "metastable":
        before = trajectory.index_at(review.window_end) - 1
        goodput = trajectory.goodput[before] / trajectory.fresh_rate[before]
        first = (
            "The replay does not recover by itself. The lock ends at "
            f"t = {num(end, 4)} s, but up to {_window_phrase(review)} the system "
            f"stays out of the good state: just before it the queue still holds "
            f"{count(float(trajectory.queue[before]))} requests and goodput is "
            f"{share(float(goodput))} of demand."
        )
    elif verdict == "recovers":
        first = (
            "The replay recovers by itself: "
            f"{num(review.recovery_time or 0.0)} s after the lock ends "
            f"(t = {num(end, 4)} s) it is back in the good state and stays there."
        )
    elif verdict == "stable":
        first = (
            "The system absorbs the lock: it is in the good state when the lock ends."
        )
    else:
        first = "The system is overloaded: it has no good state even without the lock."
    during, after = review.goodput_during_trigger, review.goodput_after_trigger
    second = (
        f" The backlog peaks at {count(review.peak_queue)} requests at "
        f"t = {num(review.peak_time, 4)} s."
    )
    if during is not None and after is not None:
        second += (
            f" Goodput averages {share(during)} of demand during the lock and "
            f"{share(after)} from the end of the lock to {_window_phrase(review)}."
        )
    return first + second


def postmortem_paragraph(review: Review) -> str:
    """Whether the replay tells the postmortem's story, from the numbers."""
    scenario, trajectory = review.scenario, review.trajectory
    lock = lock_event(scenario)
    cold = event_of(scenario, "cold_restart")
    rollback = event_of(scenario, "rollback")
    if review.verdict != "metastable":
        return (
            "This is **not** what happened in the incident, where the system "
            "stayed down until the cold restart [Sendcloud2025]: with the assumed "
            f"values the model absorbs a {num(lock.duration)} s lock. Section 3.4 "
            "shows how far the system was from the edge, and Section 3.5 which "
            "assumed values move the verdict."
        )
    parts = [
        (
            "This is the postmortem's story [Sendcloud2025]: the trigger ended, the "
            "backlog sustained itself, and only emptying the system restored service."
        )
    ]
    if rollback is not None and rollback.end <= review.window_end:
        parts.append(
            f"The rolling restart from t = {num(rollback.at, 4)} s to "
            f"t = {num(rollback.end, 4)} s does not move it out of the bad state."
        )
    if cold is not None:
        back = trajectory.recovery_time(after=cold.at, before=scenario.horizon)
        if back is not None:
            parts.append(
                f"After the cold restart begins (t = {num(cold.at, 4)} s) it is back "
                f"in the good state {num(back)} s later."
            )
    before = trajectory.index_at(review.window_end) - 1
    stuck = float(trajectory.queue[before])
    relation = "above" if stuck > POSTMORTEM_QUEUED else "below"
    parts.append(
        f"The stuck backlog, {count(stuck)} requests, is {relation} the reported "
        f"figure of more than {count(POSTMORTEM_QUEUED)}."
    )
    return " ".join(parts)


def margin_paragraph(review: Review) -> str:
    """The peak backlog against the critical backlog of the equilibria."""
    report = review.equilibria
    critical, boundary = report.critical_backlog, report.boundary_backlog
    if critical is None:
        return (
            "With no self-sustaining bad state there is no critical backlog: the "
            "fluid model drains any backlog once the trigger is gone."
        )
    text = (
        "Started with no trigger but with a backlog (and the retries such a "
        "backlog keeps in flight), the fluid model fails to return to the good "
        f"state from any backlog above {count(critical)} requests, the critical "
        "backlog found by bisection; the boundary equilibrium, its "
        f"one-dimensional estimate, holds {count(boundary or 0.0)}. The lock left "
        f"a peak of {count(review.peak_queue)}, "
    )
    above = review.peak_queue > critical
    text += "above" if above else "below"
    text += " the critical backlog"
    if above == (review.verdict == "metastable"):
        return text + ", as the verdict says."
    return (
        text + ", and yet the verdict is "
        f"`{review.verdict}`: the critical backlog assumes the retry orbit of a "
        "system that has been stuck for a while, and the orbit a lock leaves "
        "behind is a different one, so the two need not agree near the edge."
    )


def remedy_values(review: Review, values: Values) -> None:
    """The remedies table and what it says."""
    header = (
        "variant",
        "what it changes",
        "verdict",
        "recovery after the lock (s)",
        "peak backlog",
        "equilibria",
    )
    rows = [
        (
            "original settings",
            "the pre-incident system",
            f"`{review.verdict}`",
            _recovery_text(review.recovery_time),
            count(review.peak_queue),
            f"`{review.classification}`",
        )
    ]
    rows += [
        (
            f"`{o.name}`",
            o.description.replace("|", "/"),
            f"`{o.verdict}`",
            _recovery_text(o.recovery_time),
            count(o.peak_queue),
            f"`{o.classification}`",
        )
        for o in review.remedies
    ]
    values.put("remedies.table", table(header, rows))
    values.put("remedies.summary", remedy_summary(review))


def _recovery_text(recovery: float | None) -> str:
    """A recovery time, or a dash when there is none."""
    return "none" if recovery is None else num(recovery)


def remedy_summary(review: Review) -> str:
    """Which remedies recover, and which remove the bad state altogether."""
    outcomes = review.remedies
    if not outcomes:
        return "The scenario lists no remedies."
    by_verdict: dict[str, list[str]] = {}
    for outcome in outcomes:
        by_verdict.setdefault(outcome.verdict, []).append(f"`{outcome.name}`")
    parts = [
        f"Verdict `{verdict}`: {words(names)}."
        for verdict, names in sorted(by_verdict.items())
    ]
    helped = ("stable", "recovers")
    removing = [f"`{o.name}`" for o in outcomes if o.classification == "stable"]
    lucky = [
        f"`{o.name}`"
        for o in outcomes
        if o.classification == "vulnerable" and o.verdict in helped
    ]
    failing = [
        f"`{o.name}`"
        for o in outcomes
        if o.classification == "vulnerable" and o.verdict not in helped
    ]
    if removing:
        parts.append(
            f"{words(removing)} "
            + ("removes" if len(removing) == 1 else "remove")
            + " the self-sustaining bad state altogether (the equilibria become "
            "`stable`): no trigger can leave the system in a self-sustaining bad "
            "state."
        )
    if lucky:
        parts.append(
            f"{words(lucky)} "
            + ("brings" if len(lucky) == 1 else "bring")
            + " the system back after this lock, but the bad state still exists "
            "(`vulnerable`): a longer or deeper trigger can still leave it stuck."
        )
    if failing:
        parts.append(
            f"{words(failing)} neither "
            + ("brings" if len(failing) == 1 else "bring")
            + " the system back after this lock nor "
            + ("removes" if len(failing) == 1 else "remove")
            + " the bad state."
        )
    return " ".join(parts)


EVENT_COLOURS = {
    "lock": "tab:red",
    "capacity": "tab:orange",
    "rollback": "tab:purple",
    "cold_restart": "tab:green",
    "shed": "tab:brown",
}


def incident_figure(trajectory: FluidTrajectory, path: Path, title: str) -> None:
    """Figure 2: backlog, attempts, completions and pods of one replay."""
    scenario = trajectory.scenario
    time_ = trajectory.time
    figure = Figure(figsize=(9.0, 10.0))
    backlog, attempts, completions, pods = figure.subplots(4, 1, sharex=True)
    backlog.plot(time_, trajectory.queue, color="k", label="waiting for a connection")
    backlog.plot(time_, trajectory.orbit, color="tab:blue", label="waiting to retry")
    backlog.set_ylabel("requests")
    attempts.plot(time_, trajectory.attempt_rate, color="tab:red", label="attempts")
    attempts.plot(
        time_, trajectory.fresh_rate, color="tab:blue", ls="--", label="demand"
    )
    attempts.plot(
        time_, trajectory.capacity, color="grey", ls=":", label="pool capacity"
    )
    window = time_ < (scenario.first_intervention or math.inf)
    attempts.set_ylim(0.0, 1.15 * float(trajectory.attempt_rate[window].max()))
    attempts.set_ylabel("per second")
    completions.plot(time_, trajectory.throughput, color="k", label="throughput")
    completions.plot(time_, trajectory.goodput, color="tab:green", label="goodput")
    completions.plot(
        time_, trajectory.wasted_rate, color="tab:orange", label="wasted work"
    )
    completions.set_ylabel("completions per second")
    pods.plot(time_, trajectory.pods_up, color="tab:purple", label="pods up")
    pods.set_ylim(0.0, 1.1 * scenario.web.pods)
    pods.set_ylabel("pods")
    pods.set_xlabel("time (s); shaded: lock, rolling restart, cold restart")
    for axis in (backlog, attempts, completions, pods):
        for event in scenario.events:
            colour = EVENT_COLOURS.get(event.kind, "grey")
            axis.axvspan(event.at, event.end, color=colour, alpha=0.15, lw=0)
        axis.legend(loc="upper right", fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def remedies_figure(
    trajectories: Mapping[str, FluidTrajectory], path: Path, lock: Any
) -> None:
    """Figure 3: backlog, attempts, throughput and goodput for every case."""
    figure = Figure(figsize=(9.0, 10.0))
    axes = figure.subplots(4, 1, sharex=True)
    panels = (
        ("queue", "backlog (requests)"),
        ("attempt_rate", "attempts (/s)"),
        ("throughput", "throughput (/s)"),
        ("goodput", "goodput (/s)"),
    )
    for number, (label, trajectory) in enumerate(trajectories.items()):
        colour = f"C{number}"
        width = 2.0 if number == 0 else 1.1
        for axis, (name, _) in zip(axes, panels, strict=True):
            data = getattr(trajectory, name)
            if name == "queue":
                data = np.maximum(data, 0.5)
            axis.plot(trajectory.time, data, color=colour, lw=width, label=label)
    window = [
        t.attempt_rate[t.time < (t.scenario.first_intervention or math.inf)]
        for t in trajectories.values()
    ]
    axes[1].set_ylim(0.0, 1.15 * max(float(w.max()) for w in window if len(w)))
    for axis, (name, ylabel) in zip(axes, panels, strict=True):
        axis.axvspan(lock.at, lock.end, color="tab:red", alpha=0.15, lw=0)
        axis.set_ylabel(ylabel)
        if name == "queue":
            axis.set_yscale("log")
            axis.set_ylim(bottom=1.0)
    axes[0].legend(fontsize=7, ncol=2, loc="upper right")
    axes[-1].set_xlabel("time (s); the lock is shaded")
    figure.suptitle("The incident replayed with the original settings and each remedy")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def sensitivity_values(review: Review, settings: Settings, values: Values) -> None:
    """How the verdict moves with each assumed value (full build only)."""
    if not settings.sensitivity:
        text = "The fast build skips the sensitivity analysis; the full build has it."
        values.put("sensitivity.table", text, invariant=False)
        values.put("sensitivity.summary", "", invariant=False)
        return
    rows = []
    for row in review.sensitivity:
        cells = [
            _sensitivity_cell(value, verdict, recovery)
            for value, verdict, recovery in zip(
                row.values, row.verdicts, row.recovery_times, strict=True
            )
        ]
        rows.append((code(row.field), num(row.base_value, 4), *cells))
    factors = _factors(review)
    header = ("assumed field", "value", *(f"x {num(f)}" for f in factors))
    values.put("sensitivity.table", table(header, rows), invariant=False)
    values.put("sensitivity.summary", sensitivity_summary(review), invariant=False)


def _factors(review: Review) -> list[float]:
    """The factors the sensitivity analysis used, read back from its rows."""
    row = review.sensitivity[0]
    return [value / row.base_value for value in row.values]


def _sensitivity_cell(value: float, verdict: str, recovery: float | None) -> str:
    """``60 -> recovers (48 s)``."""
    if verdict.startswith("invalid"):
        return f"{num(value, 4)}: not a valid scenario"
    after = f" ({num(recovery)} s)" if verdict == "recovers" and recovery else ""
    return f"{num(value, 4)}: `{verdict}`{after}"


def sensitivity_summary(review: Review) -> str:
    """Which assumptions the verdict rests on."""
    decisive = review.decisive_assumptions
    changes, invalid, holding = [], [], []
    for row in review.sensitivity:
        bad_values = [
            num(value, 4)
            for value, verdict in zip(row.values, row.verdicts, strict=True)
            if verdict.startswith("invalid")
        ]
        invalid += [f"{code(row.field)} = {value}" for value in bad_values]
        if row.field in decisive:
            moved = [
                f"{num(value, 4)} gives `{verdict}`"
                for value, verdict in zip(row.values, row.verdicts, strict=True)
                if verdict != review.verdict and not verdict.startswith("invalid")
            ]
            changes.append(f"{code(row.field)} ({words(moved)})")
        elif not bad_values:
            holding.append(code(row.field))
    if changes:
        text = f"The verdict `{review.verdict}` rests on {words(changes)}."
    else:
        text = (
            f"No single assumed value, halved or doubled, changes the verdict "
            f"`{review.verdict}`."
        )
    if holding:
        text += f" It holds when any one of {words(holding)} is halved or doubled."
    if invalid:
        text += f" Not a valid scenario: {words(invalid)}."
    return text


# -- the limits ----------------------------------------------------------------------


def task_incident(sensitivity: bool) -> tuple[Review, Any]:
    """The review of the original settings, and their design limits."""
    review = task_review(None, sensitivity)
    return review, compute_limits(incident(), equilibria=review.equilibria)


def limits_values(limits: Any, lock: Any, values: Values) -> dict[str, float | None]:
    """The limits table and recommendations; the limits by name for the figures."""
    rows = [
        (
            code(limit.name),
            limit.value_text,
            limit.current_text,
            _inside_text(limit.inside),
            limit.reason.replace("|", "/"),
        )
        for limit in limits
    ]
    header = ("limit", "value", "current setting", "inside", "why")
    by_name = {limit.name: limit for limit in limits}
    text = (
        "`retrystorm.limits` turns the same models into design limits, each with "
        "the reason it holds and whether the incident's setting lies inside it "
        f"(every probability target at {sci(limits.epsilon)})."
    )
    longest = by_name.get("max_lock_duration")
    if longest is not None and longest.value is not None:
        relation = "shorter" if longest.value < lock.duration else "longer"
        text += (
            f" The longest lock the original settings survive is "
            f"{longest.value_text}, {relation} than the incident's "
            f"{num(lock.duration)} s."
        )
    values.put("limits.paragraph", text)
    values.put("limits.table", table(header, rows))
    advice = limits.recommendations
    values.put(
        "limits.recommendations",
        "The library's recommendations for the original settings:\n\n"
        + listing(f"{line[0].upper()}{line[1:]}." for line in advice)
        if advice
        else "The original settings lie inside every limit.",
    )
    return {limit.name: limit.value for limit in limits}


def _inside_text(inside: object) -> str:
    """Whether the current value lies inside the limit, as a word."""
    if inside is None:
        return ""
    return "yes" if inside else "**no**"


# -- phase diagrams ------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseGrid:
    """A classified grid of two design parameters.

    Attributes
    ----------
    x, y
        The axis values (columns, rows).
    classes
        ``classes[i, j]`` for ``y[i]``, ``x[j]``.
    closed_form_bad
        Theorem 2's closed-form answer at each point.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    classes: NDArray[Any]
    closed_form_bad: NDArray[np.float64]


def run_sweep(scenario: Scenario, grid: Mapping[str, Sequence[float]]) -> Any:
    """Sweep ``scenario`` over ``grid`` for the phase quantities; no failed point."""
    register_phase_provider()
    frame = sweep_scenario(
        scenario,
        {name: list(axis) for name, axis in grid.items()},
        ["phase.classification", "phase.closed_form_bad"],
    )
    failed = frame[frame["error"] != ""]
    if len(failed):
        raise BuildError(f"phase points failed: {failed['error'].iloc[0]}")
    return frame


def _reshape(frame: Any, rows: int, columns: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Class and closed-form grids of a row-major sweep (last axis fastest)."""
    classes = np.asarray(frame["phase.classification"], dtype=object)
    closed = np.asarray(frame["phase.closed_form_bad"], dtype=float)
    return classes.reshape(rows, columns), closed.reshape(rows, columns)


def timeout_cap_grid(base: Scenario, settings: Settings) -> PhaseGrid:
    """Queueing timeout x concurrency cap per pod, plus a row without a cap."""
    bounded = base.with_changes(
        {"web.mode": "bounded", "web.concurrency_per_pod": settings.caps[0]}
    )
    capped = run_sweep(
        bounded,
        {
            "web.concurrency_per_pod": [float(c) for c in settings.caps],
            "proxy.queue_timeout": settings.queue_timeouts,
        },
    )
    uncapped = run_sweep(base, {"proxy.queue_timeout": settings.queue_timeouts})
    width = len(settings.queue_timeouts)
    classes, closed = _reshape(capped, len(settings.caps), width)
    top_classes, top_closed = _reshape(uncapped, 1, width)
    return PhaseGrid(
        x=settings.queue_timeouts,
        y=(*(float(c) for c in settings.caps), math.inf),
        classes=np.vstack([classes, top_classes]),
        closed_form_bad=np.vstack([closed, top_closed]),
    )


def load_retries_grid(base: Scenario, settings: Settings) -> PhaseGrid:
    """Fresh request rate x retries per request."""
    frame = run_sweep(
        base,
        {
            "clients.max_retries": [float(r) for r in settings.retries],
            "clients.request_rate": settings.request_rates,
        },
    )
    classes, closed = _reshape(
        frame, len(settings.retries), len(settings.request_rates)
    )
    return PhaseGrid(
        x=settings.request_rates,
        y=tuple(float(r) for r in settings.retries),
        classes=classes,
        closed_form_bad=closed,
    )


def _edges(centres: Sequence[float]) -> NDArray[np.float64]:
    """Cell edges around increasing centres."""
    c = np.asarray(centres, dtype=float)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    middle = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[2 * c[0] - middle[0]], middle, [2 * c[-1] - middle[-1]]])


def draw_classes(
    axis: Any, x_edges: NDArray[Any], y_edges: NDArray[Any], classes: NDArray[Any]
) -> None:
    """Colour the cells of a phase grid by class."""
    from matplotlib.colors import ListedColormap  # noqa: PLC0415 - drawing only

    codes = np.vectorize(CLASSES.index)(classes).astype(float)
    colours = ListedColormap([CLASS_COLOURS[c] for c in CLASSES])
    axis.pcolormesh(
        x_edges, y_edges, codes, cmap=colours, vmin=-0.5, vmax=len(CLASSES) - 0.5,
        alpha=0.55, shading="flat",
    )  # fmt: skip


def class_legend(axis: Any, extra: Sequence[Any] = ()) -> None:
    """A legend with the three classes and any extra handles."""
    from matplotlib.patches import Patch  # noqa: PLC0415 - drawing only

    handles = [Patch(color=CLASS_COLOURS[c], alpha=0.55, label=c) for c in CLASSES]
    axis.legend(
        handles=[*handles, *extra],
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=3,
        frameon=False,
    )


@dataclass(frozen=True)
class Mark:
    """A design marked on a phase diagram.

    Attributes
    ----------
    names
        The cases at this point.
    x, y
        Its coordinates in the diagram's units (``inf``: no cap).
    """

    names: tuple[str, ...]
    x: float
    y: float


def timeout_cap_marks(base: Scenario) -> list[Mark]:
    """The original settings and each remedy on the timeout x cap diagram."""
    points: dict[tuple[float, float], list[str]] = {}
    for variant in (None, *base.variant_names):
        scenario = case_scenario(variant)
        web = scenario.web
        bounded = web.mode == "bounded" and web.concurrency_per_pod is not None
        cap = float(web.concurrency_per_pod or 0) if bounded else math.inf
        key = (scenario.proxy.queue_timeout, cap)
        points.setdefault(key, []).append(case_label(variant))
    return [Mark(tuple(names), x, y) for (x, y), names in points.items()]


def _cap_row(grid: PhaseGrid, cap: float) -> float:
    """The row coordinate of a cap on the diagram's row scale."""
    finite = np.log(np.asarray(grid.y[:-1]))
    if math.isinf(cap):
        return float(len(grid.y) - 1)
    return float(np.interp(math.log(cap), finite, np.arange(len(finite))))


def critical_cap(base: Scenario, wait: float, largest: int) -> int | None:
    """Smallest cap per pod whose saturated wait exceeds ``wait`` (bisection)."""

    def waits(cap: int) -> float:
        changed = base.with_changes(
            {
                "web.mode": "bounded",
                "web.concurrency_per_pod": cap,
                "proxy.queue_timeout": 1e9,  # s: the cap, not the timeout, binds
            }
        )
        return saturated_wait(changed)

    if waits(largest) <= wait:
        return None
    low, high = 1, largest
    while high - low > 1:
        middle = (low + high) // 2
        if waits(middle) > wait:
            high = middle
        else:
            low = middle
    return high


def timeout_cap_figure(
    base: Scenario, grid: PhaseGrid, limits: Mapping[str, float | None], path: Path
) -> dict[str, float | None]:
    """Figure 4: the classes over queueing timeout x cap; returns the boundaries."""
    from matplotlib.lines import Line2D  # noqa: PLC0415 - drawing only

    clients = base.clients
    mu = saturated_service_rate(base)
    kappa = base.proxy.pool_size * mu
    wstar = boundary_wait(
        clients.peak_request_rate, kappa, clients.timeout, mu, clients.max_retries,
        retry_budget=clients.retry_budget,
    )  # fmt: skip
    cap_star = (
        critical_cap(base, wstar, int(max(grid.y[:-1]))) if wstar is not None else None
    )
    figure = Figure(figsize=(8.5, 5.6))
    axis = figure.subplots()
    rows = [float(row) for row in range(len(grid.y))]
    draw_classes(axis, _edges(grid.x), _edges(rows), grid.classes)
    extra = []
    if wstar is not None:
        axis.axvline(wstar, color="k", ls="--", lw=1.0)
        label = f"{theorem_label('equilibria.boundary')}: w_sat = w*"
        extra.append(Line2D([], [], color="k", ls="--", label=label))
    if cap_star is not None:
        axis.axhline(_cap_row(grid, cap_star), color="k", ls="--", lw=1.0)
    extra += draw_limit_lines(axis, limits, grid)
    middle = 0.5 * (min(grid.x) + max(grid.x))
    for mark in timeout_cap_marks(base):
        row = _cap_row(grid, mark.y)
        axis.plot(mark.x, row, marker="o", color="k", ms=6)
        right = mark.x < middle
        axis.annotate(
            "\n".join(mark.names),
            (mark.x, row),
            xytext=(6 if right else -6, -4),
            textcoords="offset points",
            fontsize=7,
            ha="left" if right else "right",
            va="top",
        )
    labels = [count(c) for c in grid.y[:-1]] + ["no cap (async)"]
    step = max(1, len(labels) // 12)
    ticks = [*range(0, len(labels) - 1, step), len(labels) - 1]
    axis.set_yticks(ticks, [labels[i] for i in ticks])
    axis.set_xlabel("proxy queueing timeout (s)")
    axis.set_ylabel("concurrency cap per pod (requests in flight)")
    axis.set_title("Equilibria over the queueing timeout and the concurrency cap")
    class_legend(axis, extra)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return {"wstar": wstar, "cap_star": None if cap_star is None else float(cap_star)}


def draw_limit_lines(
    axis: Any, limits: Mapping[str, float | None], grid: PhaseGrid
) -> list[Any]:
    """Draw the timeout and cap limits on Figure 4; return legend handles."""
    from matplotlib.lines import Line2D  # noqa: PLC0415 - drawing only

    handles = []
    lines = {
        "queue_timeout_max": ("tab:blue", "-"),
        "queue_timeout_min": ("tab:blue", ":"),
        "concurrency_per_pod_max": ("navy", "-"),
        "concurrency_per_pod_min": ("navy", ":"),
    }
    caps = grid.y[:-1]
    for name, (colour, style) in lines.items():
        value = limits.get(name)
        if value is None or not math.isfinite(value):
            continue
        if name.startswith("queue_timeout") and min(grid.x) <= value <= max(grid.x):
            axis.axvline(value, color=colour, ls=style, lw=1.6)
        elif name.startswith("concurrency") and min(caps) <= value <= max(caps):
            axis.axhline(_cap_row(grid, value), color=colour, ls=style, lw=1.6)
        else:
            continue
        label = f"limits: {name} = {num(value)}"
        handles.append(Line2D([], [], color=colour, ls=style, lw=1.6, label=label))
    return handles


def lambda_threshold(
    predicate: Callable[[float], bool], low: float, high: float
) -> float | None:
    """Smallest rate in (low, high] where ``predicate`` turns true (bisection)."""
    if not predicate(high) or predicate(low):
        return None
    for _ in range(60):
        middle = 0.5 * (low + high)
        if predicate(middle):
            high = middle
        else:
            low = middle
    return high


def load_retries_figure(
    base: Scenario, grid: PhaseGrid, limits: Mapping[str, float | None], path: Path
) -> dict[int, float | None]:
    """Figure 5: the classes over load x retries; returns Theorem 2's thresholds."""
    from matplotlib.lines import Line2D  # noqa: PLC0415 - drawing only

    clients = base.clients
    mu = saturated_service_rate(base)
    kappa = base.proxy.pool_size * mu
    on_time = on_time_share(saturated_wait(base), clients.timeout, mu)
    top = 2.0 * max(grid.x)

    def bad_at(retries: int) -> Callable[[float], bool]:
        def exists(rate: float) -> bool:
            budget = clients.retry_budget
            return bad_equilibrium_exists(rate, kappa, on_time, retries, budget)

        return exists

    thresholds = {int(r): lambda_threshold(bad_at(int(r)), 0.0, top) for r in grid.y}
    no_good = lambda_threshold(
        lambda rate: (
            not good_equilibrium_exists(
                rate
                * budgeted_attempts_per_request(
                    late_share(0.0, clients.timeout, mu), 0, math.inf
                ),
                kappa,
            )
        ),
        0.0,
        top,
    )
    figure = Figure(figsize=(8.5, 5.2))
    axis = figure.subplots()
    draw_classes(axis, _edges(grid.x), _edges(grid.y), grid.classes)
    stairs = [
        (thresholds[r], r + side)
        for r in sorted(thresholds)
        for side in (-0.5, 0.5)
        if thresholds[r] is not None
    ]
    if stairs:
        axis.plot(*zip(*stairs, strict=True), color="k", ls="--", lw=1.0)
    bad_label = f"{theorem_label('equilibria.bad')}: λ N(1 - g) = cμ"
    extra = [Line2D([], [], color="k", ls="--", label=bad_label)]
    if no_good is not None:
        axis.axvline(no_good, color="k", ls=":", lw=1.0)
        good_label = f"{theorem_label('equilibria.timeout_ordering')}: λ = cμ"
        extra.append(Line2D([], [], color="k", ls=":", label=good_label))
    retries_max = limits.get("max_retries")
    if retries_max is not None and math.isfinite(retries_max):
        # A whole number of retries: the boundary lies between it and the next.
        axis.axhline(retries_max + 0.5, color="tab:blue", lw=1.6)
        label = f"limits: max_retries = {num(retries_max)}"
        extra.append(Line2D([], [], color="tab:blue", lw=1.6, label=label))
    rate_max = limits.get("max_request_rate_for_trigger")
    if rate_max is not None and min(grid.x) <= rate_max <= max(grid.x):
        axis.axvline(rate_max, color="navy", lw=1.6, ls="-.")
        label = f"limits: max_request_rate_for_trigger = {num(rate_max)}/s"
        extra.append(Line2D([], [], color="navy", lw=1.6, ls="-.", label=label))
    axis.plot(clients.peak_request_rate, clients.max_retries, "ko", ms=6)
    axis.annotate(
        "original settings", (clients.peak_request_rate, clients.max_retries),
        xytext=(6, 6), textcoords="offset points", fontsize=7,
    )  # fmt: skip
    axis.set_xlabel("fresh requests per second λ")
    axis.set_ylabel("retries per request R")
    timeout = num(base.proxy.queue_timeout)
    axis.set_title(f"Equilibria over load and retries (queueing timeout {timeout} s)")
    class_legend(axis, extra)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return thresholds


def class_counts(grid: PhaseGrid) -> str:
    """``n stable, m vulnerable and k overloaded points``."""
    counts = Counter(grid.classes.ravel().tolist())
    parts = [f"{count(counts.get(c, 0))} {c}" for c in CLASSES]
    return f"{words(parts)} (of {count(grid.classes.size)} points)"


def agreement(grid: PhaseGrid) -> str:
    """How often Theorem 2's closed form agrees with the full equilibrium search."""
    possible = grid.classes != "overloaded"
    vulnerable = grid.classes == "vulnerable"
    predicted = grid.closed_form_bad > 0.5
    agree = int(((vulnerable == predicted) & possible).sum())
    total = int(possible.sum())
    text = (
        f"{theorem_label('equilibria.bad')}'s closed form, which leaves out crashes "
        "and restarts, gives the "
        f"same answer as the full equilibrium search at {count(agree)} of the "
        f"{count(total)} points that have a good equilibrium"
    )
    if agree == total:
        return text + "."
    return text + "; where they differ, crashes and init queries decide."


def phase_values(
    base: Scenario,
    review: Review,
    *,
    grids: tuple[PhaseGrid, PhaseGrid],
    limits: Mapping[str, float | None],
    figures: Path,
    values: Values,
) -> None:
    """Figures 4 and 5 and what they show."""
    first, second = grids
    bounds = timeout_cap_figure(base, first, limits, figures / "phase_timeout_cap.png")
    thresholds = load_retries_figure(
        base, second, limits, figures / "phase_load_retries.png"
    )
    classes = {None: review.classification} | {
        o.name: o.classification for o in review.remedies
    }
    marks = [f"{case_label(v)} `{classes[v]}`" for v in (None, *base.variant_names)]
    wstar, cap_star = bounds["wstar"], bounds["cap_star"]
    boundary = (
        f"The dashed lines are {theorem_label('equilibria.boundary')}'s "
        "boundary without crashes: there the bad state exists when the "
        f"saturated wait exceeds w* = {num(wstar)} s, that is for a queueing "
        f"timeout above {num(wstar)} s"
        + (
            f" and, in a capped tier, for a cap above {count(cap_star)} per pod"
            if cap_star is not None
            else ""
        )
        + "."
        if wstar is not None
        else f"{theorem_label('equilibria.boundary')} has no boundary here: the "
        "attempt rate never reaches the pool's capacity."
    )
    values.put(
        "phase.timeout_cap",
        f"Over {count(len(first.x))} queueing timeouts and "
        f"{count(len(first.y) - 1)} caps plus the uncapped tier, the grid has "
        f"{class_counts(first)}. {boundary} {agreement(first)} The marked designs "
        f"are classified as follows: {words(marks)}.",
        invariant=False,
    )
    rate_text = [
        f"R = {r}: above {num(t)} per second"
        for r, t in thresholds.items()
        if t is not None
    ]
    values.put(
        "phase.load_retries",
        f"Over {count(len(second.x))} request rates and {count(len(second.y))} "
        f"retry counts the grid has {class_counts(second)}. With the incident's "
        f"{num(base.proxy.queue_timeout)} s queueing timeout every served request "
        f"would be late in the saturated state, so {theorem_label('equilibria.bad')} "
        "puts the bad state "
        f"where λ (R + 1) exceeds cμ = {num(review.equilibria.capacity)} per second "
        f"({'; '.join(rate_text) or 'nowhere on this grid'}). {agreement(second)}",
        invariant=False,
    )


# -- validation: fluid against simulation --------------------------------------------


@dataclass(frozen=True)
class SimulationJob:
    """The simulations of one case, running in the pool.

    Attributes
    ----------
    variant
        The case (None: the original settings).
    scale
        The replicas' scale.
    summary
        `replicate`'s summary, when done.
    runs
        Simulated queues for the figure, when done.
    """

    variant: str | None
    scale: float
    summary: Future[ReplicationSummary]
    runs: Future[list[tuple[NDArray[np.float64], NDArray[np.float64]]]]


def submit_simulations(
    pool: ProcessPoolExecutor,
    trajectories: Mapping[str | None, FluidTrajectory],
    settings: Settings,
) -> list[SimulationJob]:
    """Start the replications of each simulated case."""
    variants = [v for v in trajectories if v is not None]
    cases = [None, *(variants if settings.every_variant_simulated else variants[:1])]
    jobs = []
    for variant in cases:
        scale = STUCK_SCALE if is_stuck(trajectories[variant]) else RECOVERING_SCALE
        summary = pool.submit(task_replicate, variant, settings.replications, scale)
        runs = pool.submit(task_sample_runs, variant, settings.figure_runs, scale)
        jobs.append(SimulationJob(variant, scale, summary, runs))
    return jobs


def fluid_verdict(trajectory: FluidTrajectory) -> str:
    """The fluid's verdict from its recovery time (the review's rule)."""
    recovery = trajectory.recovery_time()
    if recovery is None:
        return "metastable"
    return "stable" if recovery == 0.0 else "recovers"


def fluid_peak(trajectory: FluidTrajectory) -> float:
    """The fluid's largest queue before the first intervention."""
    intervention = trajectory.scenario.first_intervention
    if intervention is None:
        return trajectory.peak_queue
    return float(trajectory.queue[trajectory.time <= intervention + 1e-9].max())


def _estimate(estimate: Any, scale: float) -> str:
    """``mean ± half-width`` of an estimate, divided by ``scale``."""
    if estimate is None:
        return "none"
    return f"{num(estimate.mean / scale)} ± {num(estimate.half_width / scale, 2)}"


def simulation_values(
    jobs: Sequence[SimulationJob],
    trajectories: Mapping[str | None, FluidTrajectory],
    path: Path,
    values: Values,
) -> None:
    """The comparison table, Figure 6 and what they show."""
    rows, agree, gaps, differ, split = [], 0, [], [], []
    for job in jobs:
        fluid = trajectories[job.variant]
        summary = job.summary.result()
        verdict = fluid_verdict(fluid)
        agree += summary.verdict == verdict
        if summary.verdict != verdict:
            differ.append(
                f"{case_label(job.variant)} (fluid `{verdict}`, replications "
                f"mostly `{summary.verdict}`)"
            )
        elif sum(1 for n in summary.verdicts.values() if n) > 1:
            split.append(case_label(job.variant))
        peak = fluid_peak(fluid)
        gaps.append(abs(summary.peak_queue.mean / job.scale - peak) / peak)
        tally = ", ".join(f"{n} {v}" for v, n in summary.verdicts.items() if n)
        recovery = fluid.recovery_time()
        rows.append(
            (
                case_label(job.variant),
                num(job.scale),
                f"`{verdict}`",
                tally,
                count(peak),
                _estimate(summary.peak_queue, job.scale),
                "none" if recovery is None else num(recovery),
                _estimate(summary.recovery_time, 1.0),
            )
        )
    header = (
        "case",
        "scale",
        "fluid verdict",
        "simulated verdicts",
        "fluid peak",
        "simulated peak",
        "fluid recovery (s)",
        "simulated recovery (s)",
    )
    replications = jobs[0].summary.result().replications
    pods = jobs[0].summary.result().scenario.web.pods
    level = getattr(simulation_module, "_CONFIDENCE", None)
    values.put(
        "validation.confidence",
        "the library's" if level is None else f"{100.0 * level:.0f} %",
        invariant=False,
    )
    values.put("validation.sim_table", table(header, rows), invariant=False)
    values.put("validation.replications", count(replications), invariant=False)
    values.put(
        "validation.sim_summary",
        simulation_summary(
            agree=agree, total=len(jobs), gap=max(gaps), differ=differ, split=split
        )
        + (finite_size_note(pods) if differ or split else ""),
        invariant=False,
    )
    simulation_figure(jobs, trajectories, path)


def simulation_summary(
    *, agree: int, total: int, gap: float, differ: list[str], split: list[str]
) -> str:
    """How far the simulation agrees with the fluid, in words."""
    text = (
        f"The majority of the replications reaches the fluid's verdict in "
        f"{count(agree)} of {count(total)} cases; the mean simulated peak differs "
        f"from the fluid's by at most {share(gap)}."
    )
    if differ:
        text += f" The verdicts differ for {words(differ)}."
    if split:
        text += (
            f" The replications split between verdicts for {words(split)}, whose "
            "mean peaks therefore mix stuck and recovered runs."
        )
    return text


def finite_size_note(pods: int) -> str:
    """Why a small replica can leave a bad state the fluid stays in."""
    return (
        " The fluid is the limit of a large system with a continuum of pods; a "
        "replica of a few connections fluctuates (relatively, like one over the "
        f"square root of its size) and keeps all {count(pods)} pods, each crash "
        "failing its share of the live attempts at once, and near a threshold of "
        "the model (the edge of the bad state's basin, or the failure share at "
        "which a breaker opens or pods crash) such a burst can decide between "
        "staying stuck and recovering (Section 7)."
    )


def simulation_figure(
    jobs: Sequence[SimulationJob],
    trajectories: Mapping[str | None, FluidTrajectory],
    path: Path,
) -> None:
    """Figure 6: fluid queue and simulated queues, one panel per case."""
    columns = min(3, len(jobs))
    rows = math.ceil(len(jobs) / columns)
    figure = Figure(figsize=(4.0 * columns, 3.0 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    for axis, job in zip(axes, jobs, strict=False):
        fluid = trajectories[job.variant]
        for number, (times, queue) in enumerate(job.runs.result()):
            label = "simulated ÷ scale" if number == 0 else None
            axis.plot(times, queue, color="tab:blue", lw=0.7, alpha=0.7, label=label)
        axis.plot(fluid.time, fluid.queue, color="k", lw=1.2, label="fluid")
        axis.set_title(
            f"{case_label(job.variant)} (scale {num(job.scale)})", fontsize=9
        )
        axis.set_xlabel("time (s)", fontsize=8)
        axis.set_ylabel("queue (requests)", fontsize=8)
        axis.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    for axis in axes[len(jobs) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


# -- validation: chain against closed forms ------------------------------------------


@dataclass(frozen=True)
class ChainCheck:
    """One quantity of the chain against its closed form.

    Attributes
    ----------
    model
        The special case.
    quantity
        What is compared.
    chain, exact
        The chain's value and the closed form's.
    """

    model: str
    quantity: str
    chain: float
    exact: float

    @property
    def relative(self) -> float:
        """Relative difference."""
        return abs(self.chain - self.exact) / abs(self.exact)


def retrial_mean_orbit(arrival: float, service: float, retry: float) -> float:
    """Mean orbit of the classic M/M/1 retrial queue [FalinTempleton1997]."""
    return arrival**2 * (service + retry) / (service * retry * (service - arrival))


def chain_checks(phases: Sequence[int]) -> list[ChainCheck]:
    """The chain's special cases, each against the library's closed form."""
    chain = RetryChain
    rate, mu, servers = 8.0, 1.0, 10
    mmc = chain(arrival_rate=rate, service_rate=mu, servers=servers).stationary()
    exact_mmc = MMc(arrival_rate=rate, service_rate=mu, servers=servers)
    mmck = chain(
        arrival_rate=rate, service_rate=mu, servers=servers, queue_limit=5
    ).stationary()
    exact_mmck = MMcK(arrival_rate=rate, service_rate=mu, servers=servers, capacity=15)
    erlang_a = chain(
        arrival_rate=rate, service_rate=mu, servers=servers, abandonment_rate=0.5
    ).stationary()
    exact_a = ErlangA(
        arrival_rate=rate, service_rate=mu, servers=servers, abandonment_rate=0.5
    )
    retrial = chain(
        arrival_rate=0.6, service_rate=1.0, servers=1, queue_limit=0,
        retry_rate=0.5, retry_probability=1.0, orbit_limit=200,
    ).stationary()  # fmt: skip
    checks = [
        ChainCheck("M/M/10 (λ = 8, μ = 1)", "P(wait) (Erlang C)",
                   mmc.all_busy_probability, exact_mmc.wait_probability),
        ChainCheck("M/M/10 (λ = 8, μ = 1)", "mean queue",
                   mmc.mean_queue, exact_mmc.mean_queue_length),
        ChainCheck("M/M/10/15", "blocking probability",
                   mmck.blocking_probability, exact_mmck.blocking_probability),
        ChainCheck("M/M/10/15", "mean queue",
                   mmck.mean_queue, exact_mmck.mean_queue_length),
        ChainCheck("Erlang-A (θ = 0.5)", "P(abandon)",
                   erlang_a.abandonment_probability, exact_a.abandonment_probability),
        ChainCheck("Erlang-A (θ = 0.5)", "mean queue",
                   erlang_a.mean_queue, exact_a.mean_queue_length),
        ChainCheck("M/M/1 retrial (λ = 0.6, μ = 1, θ = 0.5)", "mean orbit",
                   retrial.mean_orbit, retrial_mean_orbit(0.6, 1.0, 0.5)),
    ]  # fmt: skip
    exact_d = MMcD(arrival_rate=4.0, service_rate=1.0, servers=5, timeout=2.0)
    for k in phases:
        fixed = chain(
            arrival_rate=4.0, service_rate=1.0, servers=5, timeout=2.0,
            timeout_phases=k, queue_truncation=30,
        ).stationary()  # fmt: skip
        checks.append(
            ChainCheck(f"M/M/5+D (T = 2 s), {k} Erlang phase{'s' if k > 1 else ''}",
                       "P(abandon)", fixed.abandonment_probability,
                       exact_d.abandonment_probability)
        )  # fmt: skip
    return checks


def chain_values(settings: Settings, values: Values, path: Path) -> None:
    """The chain's special cases against closed forms, Figure 7."""
    checks = chain_checks(settings.mmcd_phases)
    exact = [c for c in checks if "phase" not in c.model]
    phased = [c for c in checks if "phase" in c.model]
    rows = [
        (c.model, c.quantity, num(c.chain, 8), num(c.exact, 8), sci(c.relative))
        for c in checks
    ]
    header = ("model", "quantity", "chain", "closed form", "relative difference")
    values.put("validation.chain_table", table(header, rows), invariant=False)
    values.put(
        "validation.chain_summary",
        f"Where the chain is the closed form's model exactly, the largest relative "
        f"difference is {sci(max(c.relative for c in exact))}: solver precision. "
        "A fixed timeout is not a Markov event, and the chain approximates it "
        f"with Erlang phases: the error of P(abandon) falls from "
        f"{share(phased[0].relative)} with {phased[0].model.split(', ')[1]} to "
        f"{share(phased[-1].relative)} with {phased[-1].model.split(', ')[1]}, "
        "while the state space grows combinatorially with the phases.",
        invariant=False,
    )
    chain_figure(exact, phased, path)


def chain_figure(
    exact: Sequence[ChainCheck], phased: Sequence[ChainCheck], path: Path
) -> None:
    """Figure 7: relative differences of the exact cases; the phase approximation."""
    figure = Figure(figsize=(10.0, 4.0))
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1.0]})
    labels = [f"{c.model}: {c.quantity}" for c in exact]
    floor = 1e-17  # a difference of exactly 0 is drawn at this floor
    left.barh(range(len(exact)), [max(c.relative, floor) for c in exact])
    left.set_yticks(range(len(exact)), labels, fontsize=7)
    left.set_xscale("log")
    left.set_xlabel("relative difference chain vs closed form")
    left.invert_yaxis()
    phases = [int(c.model.split(", ")[1].split()[0]) for c in phased]
    right.plot(phases, [c.chain for c in phased], "o-", label="chain, k phases")
    right.axhline(phased[0].exact, color="k", ls="--", label="M/M/c+D exact")
    right.set_xlabel("Erlang phases k for the fixed timeout")
    right.set_ylabel("P(abandon)")
    right.set_xticks(phases)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


# -- validation: published tables ----------------------------------------------------


def _tolerance(row: Mapping[str, str]) -> float:
    """The row's absolute tolerance (``x (relative)``: relative to the exact value)."""
    text = row["tolerance"].strip()
    if text.endswith("(relative)"):
        return float(text.split()[0]) * abs(float(row["recomputed_value"]))
    return float(text)


def _number(text: str) -> float:
    """A published number, written as a decimal or a fraction such as ``8/15``."""
    return float(Fraction(text.strip()))


def _miss(row: Mapping[str, str]) -> float:
    """|published - exact| in tolerances (inf: a tolerance of 0 and a difference)."""
    difference = abs(_number(row["published_value"]) - float(row["recomputed_value"]))
    tolerance = _tolerance(row)
    if tolerance == 0.0:
        return 0.0 if difference == 0.0 else math.inf
    return difference / tolerance


def published_values(values: Values, path: Path) -> None:
    """The published tables: how many values, from where, which are wrong."""
    with PUBLISHED.open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    wrong = [r for r in rows if r["agrees"].strip() != "yes"]
    models = Counter(r["model"] for r in rows)
    sources = Counter(r["source"] for r in rows)
    agreeing = Counter(r["source"] for r in rows if r["agrees"].strip() == "yes")
    put = values.put
    put("published.rows", count(len(rows)))
    put("published.agree", count(len(rows) - len(wrong)))
    put("published.wrong", count(len(wrong)))
    put("published.sources", count(len(sources)))
    put(
        "published.models",
        words([f"{model} ({count(n)})" for model, n in models.most_common()]),
    )
    put(
        "published.source_table",
        table(
            ("source", "values", "agree"),
            (
                (s.replace("|", "/"), count(n), count(agreeing.get(s, 0)))
                for s, n in sources.most_common()
            ),
        ),
    )
    put(
        "published.wrong_table",
        table(
            ("id", "model", "quantity", "published", "exact", "source"),
            (
                (
                    r["id"],
                    r["model"],
                    r["quantity"],
                    r["published_value"],
                    num(float(r["recomputed_value"]), 6),
                    r["source"].replace("|", "/"),
                )
                for r in wrong
            ),
        ),
    )
    wrong_sources = Counter(r["source"] for r in wrong)
    put(
        "published.wrong_sources",
        listing(
            f"{s} ({count(n)} of {count(sources[s])} values)"
            for s, n in wrong_sources.most_common()
        ),
    )
    published_figure(rows, path)


def published_figure(rows: Sequence[Mapping[str, str]], path: Path) -> None:
    """Figure 8: each published value's distance from the exact one, in tolerances."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["model"], rows[i]["id"]))
    misses = np.array([_miss(rows[i]) for i in order])
    good = np.array([rows[i]["agrees"].strip() == "yes" for i in order])
    floor, ceiling = 1e-4, 1e4  # 0 is drawn at the floor, infinity at the ceiling
    shown = np.clip(np.where(misses == 0.0, floor, misses), floor, ceiling)
    figure = Figure(figsize=(10.0, 4.0))
    axis = figure.subplots()
    x = np.arange(len(order))
    axis.scatter(x[good], shown[good], s=14, color="tab:green", label="agrees")
    axis.scatter(x[~good], shown[~good], s=22, color="tab:red", marker="x",
                 label="published value wrong")  # fmt: skip
    axis.axhline(1.0, color="k", lw=0.8, ls="--")
    axis.set_yscale("log")
    axis.set_ylim(floor / 2, ceiling * 2)
    axis.set_ylabel("|published - exact| / tolerance")
    models = [rows[i]["model"] for i in order]
    starts = [i for i in range(len(models)) if i == 0 or models[i] != models[i - 1]]
    for start in starts:
        axis.axvline(start - 0.5, color="grey", lw=0.5)
        axis.text(
            start, ceiling, models[start], fontsize=7, rotation=90, va="top", ha="left"
        )
    axis.set_xticks([])
    axis.set_xlabel("published values, grouped by model")
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


# -- comparison with other tools -------------------------------------------------------


def benchmark_values(values: Values) -> None:
    """The timings of every results file in benchmarks/results, side by side."""
    files = sorted(BENCHMARKS.glob("*.json"))
    comparisons: list[Mapping[str, Any]] = []
    measurements: list[Mapping[str, Any]] = []
    machines = []
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        comparisons += data.get("comparisons") or contender_rows(data)
        measurements += data.get("measurements", [])
        measurements += [
            {"task": task, "seconds": seconds, "note": ""}
            for task, seconds in (data.get("seconds") or {}).items()
        ]
        machines.append(f"`{path.name}`: {_machine(data)}")
    values.put("bench.files", count(len(files)))
    values.put("bench.comparisons", comparison_table(comparisons))
    values.put("bench.measurements", measurement_table(measurements))
    values.put("bench.machines", listing(machines) if machines else "")


def duration(seconds: float) -> str:
    """A duration in µs, ms or s."""
    if seconds < 1e-3:
        return f"{num(seconds * 1e6)} µs"
    if seconds < 1.0:
        return f"{num(seconds * 1e3)} ms"
    return f"{num(seconds)} s"


def contender_rows(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Comparison rows of the Erlang C benchmark's own format (``contenders``)."""
    rows: list[Mapping[str, Any]] = []
    pairs = data.get("workload", {}).get("pairs", 0)
    for contender in data.get("contenders", []):
        if not contender.get("available"):
            continue
        accuracy = contender.get("accuracy_against_retrystorm", {})
        difference = float(accuracy.get("largest_relative_difference", math.nan))
        rows.append(
            {
                "task": f"Erlang C, {count(pairs)} (servers, load) pairs",
                "retrystorm": "erlang_c (vectorised)",
                "retrystorm_seconds": data["retrystorm_seconds"],
                "alternative": contender["name"],
                "alternative_seconds": contender["scaled_seconds"],
                "ratio": contender["ratio_to_retrystorm"],
                "accuracy": f"largest relative difference {sci(difference)}",
                "note": "the alternative timed on "
                f"{count(contender['subsample_pairs'])} pairs and scaled",
            }
        )
    return rows


def _cell(text: object) -> str:
    """Table cell text without a column separator."""
    return str(text).replace("|", "/")


def comparison_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """retrystorm and an alternative on the same task, side by side."""
    if not rows:
        return "No side-by-side timings are stored in this version."
    header = (
        "task",
        "retrystorm",
        "time",
        "alternative",
        "time",
        "ratio",
        "accuracy",
        "note",
    )
    return table(
        header,
        (
            (
                _cell(r["task"]),
                _cell(r["retrystorm"]),
                duration(float(r["retrystorm_seconds"])),
                _cell(r["alternative"]),
                duration(float(r["alternative_seconds"])),
                f"{num(float(r['ratio']))} x",
                _cell(r.get("accuracy", "")),
                _cell(r.get("note", "")),
            )
            for r in rows
        ),
    )


def measurement_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Timings without a contender."""
    if not rows:
        return ""
    return table(
        ("measurement", "time", "note"),
        (
            (_cell(r["task"]), duration(float(r["seconds"])), _cell(r.get("note", "")))
            for r in rows
        ),
    )


def _machine(data: Mapping[str, Any]) -> str:
    """One line on the machine a benchmark ran on."""
    machine = data.get("machine")
    if isinstance(machine, Mapping):
        versions = machine.get("versions", {})
        load = machine.get("load_average_1_5_15_min")
        parts = [
            str(machine.get("cpu", "")),
            f"{machine.get('logical_cpus', '?')} logical CPUs",
            f"Python {machine.get('python', '?')}",
            ", ".join(f"{k} {v}" for k, v in versions.items()),
        ]
        if load:
            parts.append(f"load average {num(float(load[0]), 2)} at the start")
        return "; ".join(p for p in parts if p) + "."
    return (
        f"{machine}; Python {data.get('python', '?')}; numpy {data.get('numpy', '?')}."
    )


# -- references ----------------------------------------------------------------------


def bibliography() -> dict[str, str]:
    """Key -> reference, from REFERENCES.md."""
    entries = {}
    for line in REFERENCES.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*\[([^\]]+)\]\s*\|\s*(.+?)\s*\|\s*$", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def reference_values(template: str, values: Values) -> None:
    """The references the paper cites, in order of first citation."""
    text = template + "\n".join(values.texts.values())
    cited = list(dict.fromkeys(CITATION.findall(text)))
    known = bibliography()
    unknown = [key for key in cited if key not in known]
    if unknown:
        raise BuildError(f"cited keys missing from REFERENCES.md: {unknown}")
    # The fast build leaves out some generated text, so its citations may differ.
    values.put(
        "references.list",
        listing(f"[{key}] {known[key]}" for key in cited),
        invariant=False,
    )


# -- the abstract, the build and the command -----------------------------------------


def abstract_values(base: Scenario, review: Review, values: Values) -> None:
    """The abstract's findings, worded from the numbers."""
    lock = lock_event(base)
    bad = review.equilibria.of_kind("bad")
    classification = review.classification
    if bad is not None and classification == "vulnerable":
        first = (
            "With the assumed values, the pre-incident system is `vulnerable`: "
            "besides its normal state it has a self-sustaining bad state in which "
            f"{count(bad.queue)} requests wait, {share(bad.wasted_share)} of the "
            "database's work is for clients that have given up, and retries keep "
            "the pool saturated."
        )
    else:
        first = (
            f"With the assumed values, the pre-incident system is `{classification}`."
        )
    if review.verdict == "metastable":
        second = (
            f" Replayed, the {num(lock.duration)} s lock pushes it into that state "
            "and it stays there until the cold restart, as in the incident."
        )
    else:
        second = (
            f" Replayed, the {num(lock.duration)} s lock does not push it there "
            f"(verdict `{review.verdict}`): the model needs a longer lock or other "
            "assumed values to reproduce the outage, and we say which."
        )
    removing = [f"`{o.name}`" for o in review.remedies if o.classification == "stable"]
    third = (
        f" Of the variants the scenario compares (the postmortem's remedies among "
        f"them), {words(removing)} "
        + ("removes" if len(removing) == 1 else "remove")
        + " the bad state altogether."
        if removing
        else " None of the variants the scenario compares removes the bad state "
        "altogether."
    )
    values.put("abstract.findings", first + second + third)


def limit_check(
    base: Scenario, variants: Mapping[str, Review], limits: Mapping[str, float | None]
) -> str:
    """Do the remedies inside a waste limit remove the bad state, as the limit says?"""
    if not limits:
        return ""
    inside = []
    for name, review in variants.items():
        scenario = review.scenario
        settings = [("queue_timeout_max", scenario.proxy.queue_timeout)]
        if scenario.web.mode == "bounded" and scenario.web.concurrency_per_pod:
            settings.append(
                ("concurrency_per_pod_max", scenario.web.concurrency_per_pod)
            )
        met = [
            (limit, value)
            for limit, value in settings
            if limits.get(limit) is not None and value <= float(limits[limit] or 0.0)
        ]
        if met:
            inside.append((name, review, met))
    if not inside:
        return (
            "No remedy lies inside the waste limits `queue_timeout_max` or "
            "`concurrency_per_pod_max`."
        )
    parts = []
    for name, review, met in inside:
        settings_text = words(
            [
                f"{code(limit)} ({num(value)}, limit {num(limits[limit] or 0.0)})"
                for limit, value in met
            ]
        )
        bad = review.equilibria.of_kind("bad")
        if review.classification != "vulnerable" or bad is None:
            parts.append(
                f"`{name}` lies inside {settings_text} and its equilibria are "
                f"`{review.classification}`, as the limit promises."
            )
            continue
        pods = base.web.pods
        cause = (
            f"; {num(bad.pods_up)} of {count(pods)} pods are up. Pods that crash "
            "turn the requests they had queued into orphans, whose service is "
            "wasted, and their restarts add init queries; the waste limit counts "
            "only requests whose client timed out, and leaves that out"
            if bad.pods_up < pods
            else "; the waste limit's argument does not cover this bad state"
        )
        parts.append(
            f"`{name}` lies inside {settings_text}, yet its equilibria are "
            f"`vulnerable`: in its bad state {share(bad.wasted_share)} of the work "
            f"is wasted{cause}."
        )
    return " ".join(parts)


def with_remedies(base: Review, variants: Mapping[str, Review]) -> Review:
    """The base review with each variant's outcome, as `review_scenario` gives it."""
    described = {v.name: v.description for v in base.scenario.variants}
    outcomes = tuple(
        VariantOutcome(
            name,
            described[name],
            review.verdict,
            review.recovery_time,
            review.peak_queue,
            review.classification,
        )
        for name, review in variants.items()
    )
    return dataclasses.replace(base, remedies=outcomes)


def build(settings: Settings, out: Path) -> Values:
    """Compute every value and draw every figure into ``out``."""
    values = Values()
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    base = incident()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        # The reviews run in the workers: the original settings (with the
        # sensitivity analysis in the full build, then the design limits) and
        # each remedy on its own, the replays `review_scenario(remedies=True)`
        # would run one after the other.
        base_job = pool.submit(task_incident, settings.sensitivity)
        variant_jobs = {
            name: pool.submit(task_review, name, False) for name in base.variant_names
        }
        theorem_job = theorem_values(settings, values, pool)
        model_values(base, values)
        assumption_values(base, values)
        graph_values(base, values)
        published_values(values, figures / "published.png")
        benchmark_values(values)
        chain_values(settings, values, figures / "chain_vs_closed_forms.png")
        note("theorems, tables, published values, benchmarks and chain done")
        grids = (timeout_cap_grid(base, settings), load_retries_grid(base, settings))
        note("phase diagrams swept")

        variants = {name: job.result() for name, job in variant_jobs.items()}
        base_review, limits_result = base_job.result()
        review = with_remedies(base_review, variants)
        trajectories = {None: review.trajectory} | {
            name: variant.trajectory for name, variant in variants.items()
        }
        simulations = submit_simulations(pool, trajectories, settings)
        note("reviews done; simulations started")
        limits = limits_values(limits_result, lock_event(base), values)
        loop_values(base, review.equilibria, values)
        mechanism_figure(base, review.equilibria, figures / "mechanism.png")
        values.put("figure.mechanism_note", mechanism_note(base, review.equilibria))
        verdict_values(review, values)
        remedy_values(review, values)
        sensitivity_values(review, settings, values)
        abstract_values(base, review, values)
        incident_figure(
            review.trajectory,
            figures / "incident.png",
            f"The incident replayed, original settings ({review.verdict})",
        )
        remedies_figure(
            {case_label(v): t for v, t in trajectories.items()},
            figures / "remedies.png",
            lock_event(base),
        )
        phase_values(
            base, review, grids=grids, limits=limits, figures=figures, values=values
        )
        values.put("phase.limit_check", limit_check(base, variants, limits))
        simulation_values(
            simulations, trajectories, figures / "fluid_vs_simulation.png", values
        )
        note("simulations done")
        theorem_status(theorem_job, values)
    return values


def build_values(settings: Settings, seconds: float, values: Values) -> None:
    """How this paper was built."""
    packages = ("numpy", "scipy", "matplotlib", "simpy", "pandas")
    versions = [f"retrystorm {retrystorm.__version__}"] + [
        f"{name} {importlib.metadata.version(name)}" for name in packages
    ]
    values.put("build.kind", settings.label, invariant=False)
    values.put("build.seconds", num(seconds, 2), invariant=False)
    values.put("build.cpus", count(os.cpu_count() or 1), invariant=False)
    values.put(
        "build.software",
        f"Python {platform.python_version()}, " + ", ".join(versions),
        invariant=False,
    )


def check_figures(paper: str, out: Path) -> list[Path]:
    """Every figure the paper shows exists; every figure drawn is shown."""
    shown = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", paper)
    missing = [name for name in shown if not (out / name).is_file()]
    drawn = {f"figures/{p.name}" for p in (out / "figures").glob("*.png")}
    unshown = sorted(drawn - set(shown))
    if missing or unshown:
        raise BuildError(f"figures missing: {missing}; drawn but not shown: {unshown}")
    return [out / name for name in shown]


PDF_ENGINES = ("weasyprint", "wkhtmltopdf", "xelatex", "lualatex", "pdflatex")
HTML_ENGINES = ("weasyprint", "wkhtmltopdf")
# Page style for the engines that print HTML: wide tables in small type.
PDF_STYLE = """
@page { size: A4; margin: 16mm; }
body { font-size: 9.5pt; max-width: none; }
table { border-collapse: collapse; font-size: 6.5pt; width: 100%; }
th, td { border: 0.4pt solid #999; padding: 1.5pt; vertical-align: top; }
td { overflow-wrap: anywhere; }
img { max-width: 100%; }
pre { font-size: 8pt; white-space: pre-wrap; }
"""


def find_pandoc() -> str | None:
    """pandoc on the PATH, or the copy that ``pypandoc_binary`` bundles."""
    found = shutil.which("pandoc")
    if found is not None:
        return found
    try:
        pypandoc = importlib.import_module("pypandoc")
        return str(pypandoc.get_pandoc_path())
    except (ImportError, OSError):
        return None


def find_engine() -> str | None:
    """The first PDF engine on the PATH or beside this Python (a virtualenv)."""
    beside = Path(sys.executable).parent
    for engine in PDF_ENGINES:
        found = shutil.which(engine) or shutil.which(engine, path=str(beside))
        if found is not None:
            return found
    return None


def make_pdf(out: Path) -> str:
    """Convert paper.md to paper.pdf with pandoc, if pandoc and an engine exist.

    ``pip install -e '.[paper]'`` installs both: pandoc (``pypandoc_binary``)
    and WeasyPrint, which needs the system's Pango library.
    """
    pandoc = find_pandoc()
    engine_path = find_engine()
    engine = None if engine_path is None else Path(engine_path).name
    if pandoc is None or engine is None:
        missing = (
            "pandoc" if pandoc is None else f"a PDF engine ({', '.join(PDF_ENGINES)})"
        )
        stale = (
            " (the existing paper.pdf was NOT rebuilt)"
            if (out / "paper.pdf").exists()
            else ""
        )
        return f"no PDF: {missing} is not installed{stale}"
    with tempfile.TemporaryDirectory() as scratch:
        style = Path(scratch) / "paper.css"
        style.write_text(PDF_STYLE, encoding="utf-8")
        command = [
            pandoc, "paper.md", "--output", "paper.pdf", "--standalone",
            "--from", "markdown-implicit_figures",  # the text has its own captions
            "--columns", "100000",  # no fixed column widths: tables lay out freely
            f"--pdf-engine={engine_path}", "--resource-path", str(out),
            "--shift-heading-level-by=-1",  # the first heading becomes the title
        ]  # fmt: skip
        if engine in HTML_ENGINES:
            command += ["--css", str(style)]
        result = subprocess.run(
            command, cwd=out, capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        return f"no PDF: pandoc with {engine} failed: {result.stderr.strip()[:300]}"
    return f"wrote {out / 'paper.pdf'} (pandoc, {engine})"


def write_paper(settings: Settings, out: Path, *, pdf: bool) -> Values:
    """Build into ``out``: paper.md, values.json, figures, and a PDF if possible."""
    start = time.perf_counter()
    template = TEMPLATE.read_text(encoding="utf-8")
    values = build(settings, out)
    build_values(settings, time.perf_counter() - start, values)
    reference_values(template, values)
    paper = render(template, values.texts)
    (out / "paper.md").write_text(paper, encoding="utf-8")
    (out / "values.json").write_text(
        json.dumps(values.to_json(), indent=1, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    figures = check_figures(paper, out)
    print(f"wrote {out / 'paper.md'} and {len(figures)} figures", flush=True)
    if pdf:
        print(make_pdf(out), flush=True)
    print(f"{settings.label} build: {time.perf_counter() - start:.1f} s", flush=True)
    return values


def main(argv: Sequence[str] | None = None) -> int:
    """Build the paper; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m papers.build", description="Build the paper from the library."
    )
    parser.add_argument(
        "--fast", action="store_true", help="coarse grids and short runs (for tests)"
    )
    parser.add_argument("--out", type=Path, help="output directory (default: papers/)")
    parser.add_argument("--no-pdf", action="store_true", help="do not try a PDF")
    args = parser.parse_args(argv)
    if args.fast and args.out is None:
        parser.error("--fast needs --out: a fast build must not replace the paper")
    out = (args.out or PAPERS).resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_paper(FAST if args.fast else FULL, out, pdf=not args.no_pdf)
    except BuildError as error:
        print(f"papers.build: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
