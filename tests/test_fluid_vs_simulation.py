"""The fluid model against the discrete-event simulation of the same scenarios.

The fluid model is the mean-field limit of the simulated system: replay a
scenario in the simulation at a scale ``s`` (a replica with ``s`` times the
rates, connections and queue room, see `retrystorm.simulation`) and the
replica's levels and rates divided by ``s`` converge to the fluid path as
``s`` grows. At a finite scale they differ by random fluctuations, which the
replications' 95 % confidence half-widths measure, and by the limit's own
error, for which each check adds a stated allowance:

* backlog: for a system that recovers, the peak backlog before the first
  intervention; for one that stays stuck, the stuck level (`final_backlog`,
  the mean queue over the last ``2 T_c`` seconds before the intervention).
  The peak of a stuck replica is the largest random excursion of its level
  over half an hour, which a fluid path, flat in its bad state, does not
  have; with pods that crash-loop these excursions are large (below). The
  allowance is ``3 sqrt(n) + 1`` requests in the replica, ``n = s x`` the
  fluid's value: around the fluid path the queue fluctuates by about
  ``sqrt(n)`` (a Poisson-like count of the arrivals that built it), and three
  standard deviations bound the largest of those fluctuations. Relative to
  the backlog this is ``3 / sqrt(n)``: 13 % for a lock backlog of 570 in the
  replica, 5 % for a stuck state of 3,000, shrinking like ``1 / sqrt(s)``;
* goodput per phase: 1.5 % of the demand. The fluid model rounds timeouts,
  backoff delays and event times to its 0.25 s grid, which shifts each phase
  boundary by up to half a step (0.3 % of demand per boundary over the
  shortest phase, 45 s) and takes completions evenly within a step;
* recovery time: ``max(5 s, 10 %)``: the simulation's 1 s samples and the
  fluid's 0.25 s grid, plus the two readings of the good state during the
  first seconds after a trigger (the fluid's goodput is back to demand while
  a few requests whose last retry was refused just before the end still give
  up in the simulation, up to one backoff delay later).

The pods are not scaled (a replica keeps the scenario's 20 pods), so the
randomness of crashes and restarts, a binomial count over 20 pods, does not
shrink with the scale: it widens the replications' half-widths, and the
fluid's treatment of pods as a continuum is checked only on average. Where
pods crash-loop (health checks on the database, in the stuck state of the
incident's variant health-checks-query-db about 12 of 20 pods up, one crashing
every 2.5 s), each crash fails a twelfth of the live attempts at once, and
their retries arrive together: the stuck backlog of a replica swings by about
15 % around the fluid's level, at any scale. Near a boundary this discreteness
decides the outcome, which the mean field cannot follow:
`test_discrete_pod_crashes_end_what_the_fluid_keeps` shows the cases of the
incident where it does.

Verdicts must agree: the majority of the replications reaches the fluid's
verdict. Scenarios near the boundary between recovering and staying stuck are
left out on purpose: there a small replica escapes the stuck state by chance
(`test_the_gap_to_the_fluid_limit_shrinks_as_the_scale_grows` shows the
finite-size effect receding).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from retrystorm.fluid import FluidTrajectory, simulate_fluid
from retrystorm.scenario import Scenario, default_scenario, parse_scenario
from retrystorm.simulation import (
    ReplicationSummary,
    final_backlog,
    goodput_by_phase,
    replicate,
)

REPLICATIONS = 5
# Recovering scenarios run at scale 0.1 (10 connections for the incident's
# 100): at 0.05 a 5-connection pool's queue crosses the good-state threshold
# by chance often enough to delay the recovery the simulation detects. Stuck
# scenarios run at 0.05: their attempt rate makes each simulated second four
# times as costly, and their verdict and backlog are clear at that size.
RECOVERING_SCALE = 0.1
STUCK_SCALE = 0.05
GOODPUT_ALLOWANCE = 0.015  # share of the demand
RECOVERY_ALLOWANCE = (5.0, 0.10)  # seconds, share of the fluid's recovery time


def simple_system(
    name: str, events: list[dict[str, Any]], profile: list[list[float]] | None = None
) -> Scenario:
    """A 100-connection system at 150/s (utilisation 0.6), 3 retries, no crashes."""
    clients: dict[str, Any] = {
        "timeout": 20.0,
        "max_retries": 3,
        "backoff": {"initial": 1.0, "multiplier": 2.0, "cap": 8.0, "jitter": "full"},
    }
    if profile is None:
        clients["request_rate"] = 150.0
    else:
        clients["rate_profile"] = profile
    return parse_scenario(
        {
            "scenario": {"name": name, "horizon": 600.0},
            "clients": clients,
            "web": {"pods": 10},
            "proxy": {"pool_size": 100, "queue_timeout": 60.0},
            "database": {"service_time": 0.4},
            "events": events,
        }
    )


def health_check_system(name: str) -> Scenario:
    """The simple system with health checks on the database and a 7 s lock.

    Pods crash while requests wait over 1 s (down to about 6 of 10 pods); the
    7 s lock is half this system's critical lock length (about 14 s), so it
    recovers.
    """
    lock = {"kind": "lock", "at": 30.0, "duration": 7.0, "table": "all"}
    crashes = {
        "web.crash_after": 20.0,
        "web.probe_timeout": 1.0,
        "web.restart_delay": 10.0,
        "web.init_queries": 2,
    }
    return simple_system(name, [lock]).with_changes(crashes)


def case(name: str) -> Scenario:
    """The scenario of one comparison case."""
    incident = default_scenario()
    if name in incident.variant_names:
        return incident.variant(name)
    outage = {"kind": "capacity", "at": 30.0, "duration": 40.0, "fraction": 0.2}
    long_outage = {**outage, "duration": 60.0}
    surge = [[0.0, 150.0], [30.0, 400.0], [60.0, 150.0]]
    builders = {
        "incident": lambda: incident,
        "incident-lock-90s": lambda: incident.with_changes({"events.0.duration": 90.0}),
        "pool-outage-short-timeout": lambda: simple_system(name, [outage]).with_changes(
            {"proxy.queue_timeout": 15.0}
        ),
        "pool-outage-stuck": lambda: simple_system(name, [long_outage]),
        "lock-health-checks": lambda: health_check_system(name),
        "surge": lambda: simple_system(name, [], profile=surge),
        # The incident's remedies with health checks that query the database.
        "proxy-timeout-30s-health-checks": lambda: incident.variant(
            "health-checks-query-db"
        ).with_changes({"proxy.queue_timeout": 30.0}),
        "circuit-breaker-health-checks": lambda: incident.variant(
            "circuit-breaker"
        ).with_changes({"web.probe_timeout": 1.0}),
    }
    return builders[name]()


# The cases where the discrete simulation ends a stuck state that the fluid
# model keeps (see the module docstring).
ESCAPING = ("circuit-breaker", "circuit-breaker-health-checks")

CASES = [
    "incident",
    *(name for name in default_scenario().variant_names if name not in ESCAPING),
    "proxy-timeout-30s-health-checks",
    "incident-lock-90s",
    "pool-outage-short-timeout",
    "pool-outage-stuck",
    "lock-health-checks",
    "surge",
]


def fluid_verdict(fluid: FluidTrajectory) -> str:
    """The fluid's verdict from its recovery time (the review's rule)."""
    recovery = fluid.recovery_time()
    if recovery is None:
        return "metastable"
    return "stable" if recovery == 0.0 else "recovers"


def fluid_backlog(fluid: FluidTrajectory, *, stuck: bool) -> float:
    """The fluid's backlog to compare: its stuck level, or its peak."""
    return final_backlog(fluid) if stuck else fluid_peak(fluid)


def fluid_peak(fluid: FluidTrajectory) -> float:
    """The fluid's largest queue before the first intervention."""
    intervention = fluid.scenario.first_intervention
    if intervention is None:
        return fluid.peak_queue
    return float(fluid.queue[fluid.time <= intervention + 1e-9].max())


def compare(
    name: str, scale: float | None = None
) -> tuple[FluidTrajectory, ReplicationSummary]:
    """Replay ``name`` in both models (the scale follows the fluid's verdict)."""
    scenario = case(name)
    fluid = simulate_fluid(scenario)
    if scale is None:
        stuck = fluid_verdict(fluid) == "metastable"
        scale = STUCK_SCALE if stuck else RECOVERING_SCALE
    summary = replicate(scenario, replications=REPLICATIONS, seed=2025, scale=scale)
    return fluid, summary


@pytest.mark.parametrize("name", CASES)
def test_fluid_and_simulation_agree(name: str) -> None:
    """Same verdict; peak, goodput and recovery within CI plus model allowance."""
    fluid, summary = compare(name)
    scale = summary.scale

    # Verdict: the replications' majority reaches the fluid's.
    assert summary.verdict == fluid_verdict(fluid), summary.verdicts

    # Backlog: the stuck level, or the peak before the first intervention,
    # in the replica's units.
    stuck = fluid_verdict(fluid) == "metastable"
    expected = scale * fluid_backlog(fluid, stuck=stuck)
    estimate = summary.final_backlog if stuck else summary.peak_queue
    allowance = 3.0 * math.sqrt(expected) + 1.0
    assert abs(estimate.mean - expected) <= estimate.half_width + allowance

    # Goodput in each phase.
    demand = scale * fluid.scenario.clients.peak_request_rate
    for phase, value in goodput_by_phase(fluid).items():
        estimate = summary.goodput[phase]
        tolerance = estimate.half_width + GOODPUT_ALLOWANCE * demand
        assert abs(estimate.mean - scale * value) <= tolerance, phase

    # Recovery time, when both recover.
    recovery = fluid.recovery_time()
    if recovery is not None and summary.recovery_time is not None:
        seconds, share = RECOVERY_ALLOWANCE
        tolerance = summary.recovery_time.half_width + max(seconds, share * recovery)
        assert abs(summary.recovery_time.mean - recovery) <= tolerance


def test_the_gap_to_the_fluid_limit_shrinks_as_the_scale_grows() -> None:
    """Mean-field convergence: larger replicas recover closer to the fluid's time."""
    fluid, small = compare("surge", scale=0.05)
    _, large = compare("surge", scale=0.4)
    recovery = fluid.recovery_time()
    assert recovery is not None
    assert small.recovery_time is not None
    assert large.recovery_time is not None
    small_gap = abs(small.recovery_time.mean - recovery)
    large_gap = abs(large.recovery_time.mean - recovery)
    assert large_gap < small_gap
    # The random spread shrinks too: the peak's relative half-width.
    small_spread = small.peak_queue.half_width / small.peak_queue.mean
    large_spread = large.peak_queue.half_width / large.peak_queue.mean
    assert large_spread < small_spread


@pytest.mark.parametrize("name", ESCAPING)
def test_discrete_pod_crashes_end_what_the_fluid_keeps(name: str) -> None:
    """A known limit of the mean field: near the circuit breaker's threshold the
    simulation leaves the bad state the fluid keeps.

    The fluid's failure share of connection requests stays at a steady level
    just under the breaker's 0.5 threshold: 230/480 = 0.479, and 232/482 = 0.481
    with 20 pods crash-looping on health checks that query the database. In the
    simulation the 5 s failure share swings at any scale (the pods are not
    scaled: a crash of one of about 12 up pods fails a twelfth of the live
    attempts at once, and their retries come together), crosses the threshold,
    and the breaker opens. Decided: the review reports the fluid's verdict; this
    test records where the simulation disagrees, so the disagreement is seen if
    either model changes. (With a 30 s proxy timeout and such health checks the
    fluid's bad state, about 11,200 queued, lies three times above its critical
    backlog of about 3,700, and the two models agree: the case
    proxy-timeout-30s-health-checks.)
    """
    fluid = simulate_fluid(case(name))
    assert fluid_verdict(fluid) == "metastable"
    summary = replicate(
        case(name), replications=REPLICATIONS, seed=2025, scale=RECOVERING_SCALE
    )
    assert summary.verdicts["recovers"] > REPLICATIONS // 2, summary.verdicts
