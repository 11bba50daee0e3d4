"""Time the discrete-event simulation against the fluid model of the same scenario.

Usage::

    python benchmarks/bench_simulation.py [--scales 0.05,0.1,0.2] [--repeat 3]
        [--convergence REPLICATIONS]

For the embedded incident and each of its variants, prints the fluid model's
time for the full horizon, the simulation's time for one replication of a
scaled-down replica at each scale, and their ratio. With ``--convergence N``
it also prints, per scale, how far N replications' means lie from the fluid
limit (peak backlog before the first intervention, recovery time) together
with their 95 % half-widths: the gap shrinks as the scale grows.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from retrystorm.fluid import FluidTrajectory, simulate_fluid
from retrystorm.scenario import Scenario, default_scenario
from retrystorm.simulation import replicate, simulate_events


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """Return the shortest wall time of ``repeat`` runs of ``work`` (s)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def cases() -> dict[str, Scenario]:
    """The incident, each of its variants, and a longer lock that stays stuck."""
    incident = default_scenario()
    found = {"incident": incident}
    found.update({name: incident.variant(name) for name in incident.variant_names})
    found["incident-lock-90s"] = incident.with_changes({"events.0.duration": 90.0})
    return found


def fluid_peak(fluid: FluidTrajectory) -> float:
    """The fluid's largest queue before the first intervention."""
    intervention = fluid.scenario.first_intervention
    if intervention is None:
        return fluid.peak_queue
    return float(fluid.queue[fluid.time <= intervention + 1e-9].max())


def timings(scales: list[float], repeat: int) -> None:
    """Print the time table: fluid, simulation per scale, ratio."""
    header = f"{'scenario':22} {'fluid s':>8}"
    for scale in scales:
        header += f" {f'sim@{scale} s':>11} {'ratio':>7}"
    print(header)
    for name, scenario in cases().items():
        fluid_time = best_of(repeat, lambda s=scenario: simulate_fluid(s))
        row = f"{name:22} {fluid_time:8.3f}"
        for scale in scales:
            sim_time = best_of(
                repeat, lambda s=scenario, k=scale: simulate_events(s, seed=1, scale=k)
            )
            row += f" {sim_time:11.3f} {sim_time / fluid_time:7.2f}"
        print(row, flush=True)


def convergence(scales: list[float], replications: int) -> None:
    """Print the gap between replication means and the fluid limit, per scale."""
    print()
    print(f"gap to the fluid limit, {replications} replications per scale")
    columns = ("scale", "peak gap %", "+-", "recovery gap s")
    widths = (6, 11, 6, 15)
    cells = " ".join(
        f"{text:>{width}}" for text, width in zip(columns, widths, strict=True)
    )
    print(f"{'scenario':22} {cells}")
    for name, scenario in cases().items():
        fluid = simulate_fluid(scenario)
        peak, recovery = fluid_peak(fluid), fluid.recovery_time()
        for scale in scales:
            summary = replicate(
                scenario, replications=replications, seed=7, scale=scale
            )
            gap = 100.0 * (summary.peak_queue.mean / scale / peak - 1.0)
            spread = 100.0 * summary.peak_queue.half_width / scale / peak
            estimate = summary.recovery_time
            if recovery is None or estimate is None:
                late = f"{summary.verdicts['metastable']}/{replications} stuck"
            else:
                late = f"{estimate.mean - recovery:+.1f} +- {estimate.half_width:.1f}"
            print(
                f"{name:22} {scale:6} {gap:+11.1f} {spread:6.1f} {late:>15}", flush=True
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="0.05,0.1,0.2")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--convergence", type=int, default=0, metavar="REPLICATIONS")
    arguments = parser.parse_args()
    scales = [float(value) for value in arguments.scales.split(",")]
    timings(scales, arguments.repeat)
    if arguments.convergence:
        convergence(scales, arguments.convergence)


if __name__ == "__main__":
    main()
