"""Design review of a scenario: the verdict, the timeline, and what would help.

`review_scenario` replays a scenario with the fluid model, judges whether the
system comes back by itself once the trigger (a lock or a capacity drop) has
ended, lists the equilibria of the same system without the trigger, compares
the scenario's remedies (its variants), and varies every assumed value from
half to double to show which assumptions the verdict rests on.

The verdict judges the window between the end of the trigger and the first
intervention that empties the system (a cold restart), or the horizon:

* ``overloaded``: the system has no good equilibrium at all (demand exceeds
  what the pool can serve), whatever the trigger;
* ``stable``: it is in the good state when the trigger ends;
* ``recovers``: it returns to the good state inside the window, and
  `Review.recovery_time` says how many seconds after the trigger ended;
* ``metastable``: the trigger has ended but it is still out of the good state
  at the end of the window: the backlog sustains itself [Bronson2021],
  [Huang2022].

The good state is the one of `retrystorm.fluid.is_good_state`: a queue below
a small threshold and goodput within 0.1 % of what the same system serves in
time without the trigger (`retrystorm.fluid.good_state_goodput_share`: all of
the demand unless requests outlive their clients even then), held for twice
the client timeout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from retrystorm.equilibria import EquilibriumReport, find_equilibria
from retrystorm.errors import InvalidParameterError, ScenarioError
from retrystorm.escape import EscapeEstimate, escape_time
from retrystorm.fluid import FluidTrajectory, simulate_fluid
from retrystorm.graph import GraphAnalysis, analyze_graph
from retrystorm.limits import Limits, compute_limits
from retrystorm.scenario import Assumption, LockEvent, Scenario

__all__ = [
    "VERDICTS",
    "Review",
    "SensitivityRow",
    "TimelineEntry",
    "VariantOutcome",
    "Verdict",
    "judge",
    "review_scenario",
]

Verdict = Literal["stable", "recovers", "metastable", "overloaded"]
VERDICTS: tuple[Verdict, ...] = ("stable", "recovers", "metastable", "overloaded")

Progress = Callable[[str], None]
"""Called with a short label after each replay; the CLI draws a progress bar."""

_DEFAULT_FACTORS = (0.5, 2.0)


# -- results -------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the timeline.

    Attributes
    ----------
    time
        When it happened (s from the start of the scenario).
    text
        What happened, in a sentence.
    """

    time: float
    text: str


@dataclass(frozen=True)
class VariantOutcome:
    """The verdict of one variant (a remedy) of the scenario.

    Attributes
    ----------
    name, description
        The variant's name and what it changes.
    verdict
        Its verdict (see `judge`).
    recovery_time
        Seconds from the end of the trigger to recovery, or None.
    peak_queue
        The largest backlog of its replay (requests).
    classification
        The classification of its equilibria.
    """

    name: str
    description: str
    verdict: Verdict
    recovery_time: float | None
    peak_queue: float
    classification: str


@dataclass(frozen=True)
class SensitivityRow:
    """How the verdict moves when one assumed value is scaled.

    Attributes
    ----------
    field
        Dotted path of the assumed field.
    source
        Where the assumed value comes from.
    base_value
        The scenario's value.
    values
        The values tried (the base value times each factor; whole numbers
        are rounded and kept at least 1).
    verdicts
        The verdict at each value, or ``"invalid: ..."`` when the changed
        scenario breaks a rule.
    recovery_times
        Recovery time at each value (s), or None.
    """

    field: str
    source: str
    base_value: float
    values: tuple[float, ...]
    verdicts: tuple[str, ...]
    recovery_times: tuple[float | None, ...]

    def changes_verdict(self, base_verdict: str) -> bool:
        """Whether any value tried gives a verdict other than ``base_verdict``."""
        return any(v != base_verdict and v in VERDICTS for v in self.verdicts)


@dataclass(frozen=True)
class Review:
    """The review of a scenario.

    Attributes
    ----------
    scenario
        The scenario reviewed.
    trajectory
        Its fluid replay.
    equilibria
        The equilibria of the same system without the trigger.
    verdict
        ``stable``, ``recovers``, ``metastable`` or ``overloaded``.
    recovery_time
        Seconds after the trigger ended until the good state, or None.
    trigger_end
        End of the trigger (s), or None when the scenario has none.
    window_end
        End of the judged window: the first cold restart, or the horizon (s).
    goodput_during_trigger, goodput_after_trigger
        Goodput as a share of demand, averaged over the trigger and over the
        judged window after it (None when the span is empty).
    timeline
        What happened, in order.
    remedies
        The verdict of each variant of the scenario.
    sensitivity
        How the verdict moves with each assumed value.
    limits
        The design limits of the scenario and what they recommend (see
        `retrystorm.limits`), or None when not computed.
    escape
        For a ``metastable`` verdict, the expected time to escape the bad
        state by chance (`retrystorm.escape.escape_time`); None otherwise: a
        system that recovers or is overloaded has nothing to escape by luck.
    escape_note
        Why a ``metastable`` verdict has no escape time (a scenario without
        a proxy queue gives its reduction no backlog to follow), else None.
    graph
        The static analysis of the scenario's service graph (see
        `retrystorm.graph.analyze_graph`; the blast radius is that of the
        tables its locks hold, for as long as they hold them), or None when
        the scenario has no graph.
    """

    scenario: Scenario
    trajectory: FluidTrajectory
    equilibria: EquilibriumReport
    verdict: Verdict
    recovery_time: float | None
    trigger_end: float | None
    window_end: float
    goodput_during_trigger: float | None
    goodput_after_trigger: float | None
    timeline: tuple[TimelineEntry, ...]
    remedies: tuple[VariantOutcome, ...] = field(default=())
    sensitivity: tuple[SensitivityRow, ...] = field(default=())
    limits: Limits | None = None
    escape: EscapeEstimate | None = None
    graph: GraphAnalysis | None = None
    escape_note: str | None = None

    @property
    def classification(self) -> str:
        """The classification of the equilibria."""
        return self.equilibria.classification

    @property
    def peak_queue(self) -> float:
        """The largest backlog of the replay (requests)."""
        return self.trajectory.peak_queue

    @property
    def peak_time(self) -> float:
        """When the backlog peaked (s)."""
        return self.trajectory.peak_time

    @property
    def decisive_assumptions(self) -> tuple[str, ...]:
        """Assumed fields whose variation changes the verdict."""
        rows = self.sensitivity
        return tuple(r.field for r in rows if r.changes_verdict(self.verdict))

    def to_dict(self) -> dict[str, Any]:
        """Return the review as plain data (for JSON)."""
        return {
            "scenario": self.scenario.name,
            "verdict": self.verdict,
            "recovery_time": self.recovery_time,
            "trigger_end": self.trigger_end,
            "window_end": self.window_end,
            "peak_queue": self.peak_queue,
            "peak_time": self.peak_time,
            "goodput_during_trigger": self.goodput_during_trigger,
            "goodput_after_trigger": self.goodput_after_trigger,
            "classification": self.classification,
            "equilibria": _equilibria_dict(self.equilibria),
            "timeline": [{"time": e.time, "text": e.text} for e in self.timeline],
            "remedies": [_variant_dict(v) for v in self.remedies],
            "sensitivity": [_sensitivity_dict(r) for r in self.sensitivity],
            "decisive_assumptions": list(self.decisive_assumptions),
            "limits": self.limits.to_dict() if self.limits is not None else None,
            "recommendations": (
                list(self.limits.recommendations) if self.limits is not None else []
            ),
            "escape": self.escape.to_dict() if self.escape is not None else None,
            "escape_note": self.escape_note,
            "graph": self.graph.to_dict() if self.graph is not None else None,
        }


# -- the verdict -----------------------------------------------------------------


def judge(
    trajectory: FluidTrajectory, equilibria: EquilibriumReport
) -> tuple[Verdict, float | None]:
    """Return the verdict of a replay and its recovery time.

    Parameters
    ----------
    trajectory
        A replay of the scenario.
    equilibria
        The equilibria of the same scenario without the trigger.

    Returns
    -------
    verdict : str
        See the module docstring.
    recovery_time : float or None
        Seconds after the end of the trigger (or after t = 0 when the
        scenario has no trigger) until the good state; 0 for ``stable``;
        None unless the system is in the good state inside the window.
    """
    recovery = trajectory.recovery_time()
    if equilibria.classification == "overloaded" and recovery is None:
        return "overloaded", None
    if recovery is None:
        return "metastable", None
    if recovery == 0.0:
        return "stable", 0.0
    return "recovers", recovery


def review_scenario(
    scenario: Scenario,
    *,
    remedies: bool = True,
    sensitivity: bool = True,
    factors: Sequence[float] = _DEFAULT_FACTORS,
    progress: Progress | None = None,
    limits: bool = True,
) -> Review:
    """Review a scenario: verdict, timeline, equilibria, remedies, sensitivity.

    Parameters
    ----------
    scenario
        The scenario to review.
    remedies
        Replay each variant of the scenario too.
    sensitivity
        Replay the scenario with each varied assumption scaled by each of
        ``factors``.
    factors
        Multipliers of the assumed values (default half and double).
    progress
        Called with a label after each replay (for a progress bar).
    limits
        Compute the design limits and their recommendations
        (`retrystorm.limits.compute_limits`, a few dozen short replays).

    Returns
    -------
    Review
        The review.

    Raises
    ------
    InvalidParameterError
        A factor is not a finite positive number.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> review = review_scenario(default_scenario(), sensitivity=False)
    >>> review.verdict
    'metastable'
    >>> {r.name: r.verdict for r in review.remedies}["proxy-timeout-30s"]
    'recovers'
    """
    factors = _check_factors(factors)
    tick = progress or (lambda _label: None)

    trajectory = simulate_fluid(scenario)
    equilibria = find_equilibria(scenario)
    tick(scenario.name)
    verdict, recovery = judge(trajectory, equilibria)

    outcomes = _remedies(scenario, tick) if remedies else ()
    rows = _sensitivity(scenario, factors, tick) if sensitivity else ()
    bounds = compute_limits(scenario, equilibria=equilibria) if limits else None
    if limits:
        tick("limits")
    escape, escape_note = _escape(scenario) if verdict == "metastable" else (None, None)
    window_end = _window_end(scenario, trajectory)
    during, after = _goodput_shares(trajectory, scenario, window_end)
    return Review(
        scenario=scenario,
        trajectory=trajectory,
        equilibria=equilibria,
        verdict=verdict,
        recovery_time=recovery,
        trigger_end=scenario.trigger_end,
        window_end=window_end,
        goodput_during_trigger=during,
        goodput_after_trigger=after,
        timeline=_timeline(trajectory, verdict, recovery),
        remedies=outcomes,
        sensitivity=rows,
        limits=bounds,
        escape=escape,
        escape_note=escape_note,
        graph=_graph_analysis(scenario),
    )


def _escape(scenario: Scenario) -> tuple[EscapeEstimate | None, str | None]:
    """Return the expected time to escape by chance, or why there is none."""
    try:
        return escape_time(scenario), None
    except InvalidParameterError as error:
        if error.name != "queue_limit":
            raise
        return None, f"not estimated: the proxy's {error}"


def _graph_analysis(scenario: Scenario) -> GraphAnalysis | None:
    """Analyse the scenario's graph, the faults being the tables its locks hold.

    A lock on table ``t`` stalls every table node ``db.t`` of the graph for
    the longest lock on it; without a lock on a table of the graph, every
    resource is assessed for a stall that lasts until repaired.
    """
    if scenario.graph is None:
        return None
    locks: dict[str, float] = {}
    for event in scenario.events:
        if isinstance(event, LockEvent):
            locks[event.table] = max(locks.get(event.table, 0.0), event.duration)
    locked = [
        (f"{resource.name}.{table.name}", locks[table.name])
        for resource in scenario.graph.resources
        for table in resource.tables
        if table.name in locks
    ]
    if not locked:
        return analyze_graph(scenario.graph)
    return analyze_graph(
        scenario.graph,
        faults=[name for name, _ in locked],
        fault_duration=max(duration for _, duration in locked),
    )


def count_replays(
    scenario: Scenario,
    *,
    remedies: bool = True,
    sensitivity: bool = True,
    factors: Sequence[float] = _DEFAULT_FACTORS,
    limits: bool = True,
) -> int:
    """Return how many replays `review_scenario` runs (for a progress bar).

    The design limits count as one step.
    """
    total = 2 if limits else 1
    if remedies:
        total += len(scenario.variant_names)
    if sensitivity:
        total += len(factors) * len(scenario.vary_assumptions)
    return total


# -- steps ---------------------------------------------------------------------------


def _check_factors(factors: Sequence[float]) -> tuple[float, ...]:
    """Validate the sensitivity factors."""
    checked = []
    for factor in factors:
        if not isinstance(factor, int | float) or not math.isfinite(factor):
            raise InvalidParameterError("factors", "must be finite numbers", factor)
        if factor <= 0.0:
            raise InvalidParameterError("factors", "must be positive", factor)
        checked.append(float(factor))
    return tuple(checked)


def _outcome(scenario: Scenario) -> tuple[Verdict, float | None, float, str]:
    """Replay a scenario and return its verdict, recovery, peak and class."""
    trajectory = simulate_fluid(scenario)
    equilibria = find_equilibria(scenario)
    verdict, recovery = judge(trajectory, equilibria)
    return verdict, recovery, trajectory.peak_queue, equilibria.classification


def _remedies(scenario: Scenario, tick: Progress) -> tuple[VariantOutcome, ...]:
    """Replay every variant of the scenario."""
    outcomes = []
    for variant in scenario.variants:
        verdict, recovery, peak, classification = _outcome(
            scenario.variant(variant.name)
        )
        outcomes.append(
            VariantOutcome(
                variant.name,
                variant.description,
                verdict,
                recovery,
                peak,
                classification,
            )
        )
        tick(variant.name)
    return tuple(outcomes)


def _scaled(assumption: Assumption, factor: float) -> float:
    """Scale an assumed value by ``factor``; whole numbers stay whole and >= 1."""
    value = float(assumption.value)
    if isinstance(assumption.value, int) and not isinstance(assumption.value, bool):
        return float(max(1, round(value * factor)))
    return value * factor


def _sensitivity_row(
    scenario: Scenario, assumption: Assumption, factors: Iterable[float], tick: Progress
) -> SensitivityRow:
    """Replay the scenario with one assumption scaled by each factor."""
    values: list[float] = []
    verdicts: list[str] = []
    recoveries: list[float | None] = []
    for factor in factors:
        value = _scaled(assumption, factor)
        as_int = isinstance(assumption.value, int)
        try:
            changed = scenario.with_changes(
                {assumption.field: int(value) if as_int else value}
            )
            outcome, recovery, _, _ = _outcome(changed)
            verdict = str(outcome)
        except ScenarioError as exc:
            verdict, recovery = f"invalid: {exc.problems[0][1]}", None
        values.append(value)
        verdicts.append(verdict)
        recoveries.append(recovery)
        tick(f"{assumption.field} x{factor:g}")
    return SensitivityRow(
        field=assumption.field,
        source=assumption.source,
        base_value=float(assumption.value),
        values=tuple(values),
        verdicts=tuple(verdicts),
        recovery_times=tuple(recoveries),
    )


def _sensitivity(
    scenario: Scenario, factors: tuple[float, ...], tick: Progress
) -> tuple[SensitivityRow, ...]:
    """Vary every numeric assumption marked ``vary``."""
    numeric = [
        a
        for a in scenario.vary_assumptions
        if isinstance(a.value, int | float)
        and not isinstance(a.value, bool)
        and math.isfinite(float(a.value))
    ]
    return tuple(_sensitivity_row(scenario, a, factors, tick) for a in numeric)


def _window_end(scenario: Scenario, trajectory: FluidTrajectory) -> float:
    """End of the judged window: the first cold restart, or the horizon.

    A cold restart at or after the horizon is not replayed: the window ends
    with the replay.
    """
    last = float(trajectory.time[-1])
    end = scenario.first_intervention
    return last if end is None else min(float(end), last)


def _mean_share(trajectory: FluidTrajectory, start: float, end: float) -> float | None:
    """Goodput over demand, averaged over (start, end]."""
    mask = (trajectory.time > start) & (trajectory.time <= end)
    demand = float(np.sum(trajectory.fresh_rate[mask]))
    if not np.any(mask) or demand <= 0.0:
        return None
    return float(np.sum(trajectory.goodput[mask])) / demand


def _goodput_shares(
    trajectory: FluidTrajectory, scenario: Scenario, window_end: float
) -> tuple[float | None, float | None]:
    """Goodput share of demand during the trigger and after it."""
    start, end = scenario.trigger_start, scenario.trigger_end
    if start is None or end is None:
        return None, _mean_share(trajectory, 0.0, window_end)
    return _mean_share(trajectory, start, end), _mean_share(trajectory, end, window_end)


# -- the timeline --------------------------------------------------------------------


def _state_at(trajectory: FluidTrajectory, time: float) -> str:
    """Describe the backlog and goodput share at ``time`` in words."""
    index = trajectory.index_at(time)
    demand = float(trajectory.fresh_rate[index])
    share = float(trajectory.goodput[index]) / demand if demand > 0 else math.nan
    return (
        f"backlog {trajectory.queue[index]:,.0f}, head-of-line wait "
        f"{trajectory.head_wait[index]:.0f} s, goodput {share:.0%} of demand"
    )


def _event_entries(trajectory: FluidTrajectory) -> list[TimelineEntry]:
    """One entry at the start and one at the end of each event."""
    entries = []
    last = float(trajectory.time[-1])
    for event in trajectory.events:
        label = event.kind.replace("_", " ")
        if event.kind == "lock":
            label = f"lock on table {event.table!r}"
        elif event.kind in ("capacity", "shed"):
            label = f"{label} ({event.fraction:g})"
        if event.at >= last:
            entries.append(
                TimelineEntry(
                    event.at,
                    f"{label} would start here, after the replay ends at "
                    f"{last:g} s: not replayed",
                )
            )
            continue
        entries.append(
            TimelineEntry(
                event.at,
                f"{label} starts for {event.duration:g} s; before it: "
                f"{_state_at(trajectory, max(event.at - trajectory.time_step, 0.0))}",
            )
        )
        if event.end < float(trajectory.time[-1]):
            entries.append(
                TimelineEntry(
                    event.end,
                    f"{label} ends; {_state_at(trajectory, event.end)}",
                )
            )
    return entries


def _timeline(
    trajectory: FluidTrajectory, verdict: Verdict, recovery: float | None
) -> tuple[TimelineEntry, ...]:
    """List what happened, in order: events, the peak, recovery or not."""
    scenario = trajectory.scenario
    entries = _event_entries(trajectory)
    entries.append(
        TimelineEntry(
            trajectory.peak_time,
            f"backlog peaks at {trajectory.peak_queue:,.0f} requests",
        )
    )
    trigger_end = scenario.trigger_end or 0.0
    if recovery is not None:
        entries.append(
            TimelineEntry(
                trigger_end + recovery,
                f"back in the good state, {recovery:.0f} s after the trigger ended",
            )
        )
    else:
        end = _window_end(scenario, trajectory)
        entries.append(
            TimelineEntry(
                end,
                f"still out of the good state ({verdict}): "
                f"{_state_at(trajectory, end - trajectory.time_step)}",
            )
        )
    entries.extend(_after_intervention(trajectory))
    return tuple(sorted(entries, key=lambda e: e.time))


def _after_intervention(trajectory: FluidTrajectory) -> list[TimelineEntry]:
    """When the system is good again after the first cold restart, if it is."""
    start = trajectory.scenario.first_intervention
    if start is None or start >= float(trajectory.time[-1]):
        return []
    again = trajectory.recovery_time(after=start, before=float(trajectory.time[-1]))
    if again is None:
        return [
            TimelineEntry(
                float(trajectory.time[-1]),
                "not back in the good state by the horizon after the cold restart",
            )
        ]
    return [
        TimelineEntry(
            start + again,
            f"good again {again:.0f} s after the cold restart began",
        )
    ]


# -- plain data ----------------------------------------------------------------------


def _equilibria_dict(report: EquilibriumReport) -> dict[str, Any]:
    """Return the equilibrium report as plain data."""
    return {
        "classification": report.classification,
        "critical_backlog": report.critical_backlog,
        "reason": report.reason,
        "points": [
            {
                "kind": e.kind,
                "queue": e.queue,
                "head_wait": e.head_wait,
                "attempt_rate": e.attempt_rate,
                "throughput": e.throughput,
                "goodput": e.goodput,
                "wasted_share": e.wasted_share,
                "failure_share": e.failure_share,
                "stable": e.stable,
            }
            for e in report.equilibria
        ],
    }


def _variant_dict(outcome: VariantOutcome) -> dict[str, Any]:
    """Return a variant outcome as plain data."""
    return {
        "name": outcome.name,
        "description": outcome.description,
        "verdict": outcome.verdict,
        "recovery_time": outcome.recovery_time,
        "peak_queue": outcome.peak_queue,
        "classification": outcome.classification,
    }


def _sensitivity_dict(row: SensitivityRow) -> dict[str, Any]:
    """Return a sensitivity row as plain data."""
    return {
        "field": row.field,
        "base_value": row.base_value,
        "values": list(row.values),
        "verdicts": list(row.verdicts),
        "recovery_times": list(row.recovery_times),
        "source": row.source,
    }
