"""Time the review of the incident (fluid model) against simulating it event by event.

Run: ``python benchmarks/bench_review.py [--replications 8] [--accuracy 0.02]``.

retrystorm's review answers from the deterministic fluid model: one replay,
the equilibria and a verdict (`retrystorm.review.review_scenario`, without
remedies or sensitivity). The alternative is the discrete-event simulation of
the same scenario at full size (`retrystorm.simulation.replicate`, scale 1,
with the scenario's own pool and request rate), which needs independent
replications for an answer with a confidence interval.

Accuracy target. The simulation's replications are run until the 95 %
half-width of the mean peak backlog is at most ``--accuracy`` (default 2 %) of
the mean: ``--replications`` are run and timed, the number needed follows
from their spread (the half-width shrinks as one over the square root of the
count), and the time for that many is the measured time per replication
times the count. The peak backlog is taken before the first intervention
(the cold restart), as `bench_simulation.fluid_peak` does for the fluid
model; the gap between the two, and the verdicts, are reported (the fluid
model is the large-system limit of the simulation, so they need not agree to
the last percent).

Results go to ``benchmarks/results/review.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from bench_erlang import best_time, machine
from bench_simulation import fluid_peak
from bench_sweep import versions
from retrystorm.review import review_scenario
from retrystorm.scenario import default_scenario
from retrystorm.simulation import replicate
from scipy.stats import t as student_t

RESULTS = Path(__file__).resolve().parent / "results" / "review.json"
SEED = 20250916


def needed_replications(values: tuple[float, ...], accuracy: float) -> int:
    """Replications for a 95 % half-width of ``accuracy`` times the mean."""
    count = len(values)
    mean = sum(values) / count
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (count - 1))
    # Solve t(n-1) s / sqrt(n) <= accuracy mean for n, starting from the normal.
    n = max(2, math.ceil((1.96 * spread / (accuracy * mean)) ** 2))
    while student_t.ppf(0.975, n - 1) * spread / math.sqrt(n) > accuracy * mean:
        n += 1
    return n


def main() -> None:
    """Run both and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=8)
    parser.add_argument("--accuracy", type=float, default=0.02)
    options = parser.parse_args()

    info = machine()
    info["versions"].update(versions("simpy"))
    incident = default_scenario()
    review = review_scenario(incident, remedies=False, sensitivity=False)
    ours = best_time(
        lambda: review_scenario(incident, remedies=False, sensitivity=False), 3
    )

    start = time.perf_counter()
    summary = replicate(
        incident, replications=options.replications, seed=SEED, scale=1.0
    )
    simulated = time.perf_counter() - start
    per_replication = simulated / options.replications
    count = max(
        options.replications,
        needed_replications(summary.peak_queues, options.accuracy),
    )
    alternative = per_replication * count

    peak = fluid_peak(review.trajectory)
    gap = summary.peak_queue.mean / peak - 1.0
    verdicts = ", ".join(f"{n} {v}" for v, n in summary.verdicts.items() if n)
    comparison = {
        "task": f"review of the incident ({incident.scenario.horizon:,.0f} s, "
        f"{incident.proxy.pool_size} connections, "
        f"{incident.clients.request_rate:g} requests/s)",
        "retrystorm": "review_scenario: fluid replay, equilibria, verdict",
        "retrystorm_seconds": ours,
        "alternative": "discrete-event simulation (SimPy), full size, "
        f"peak backlog to +-{options.accuracy:.0%} (95 %)",
        "alternative_seconds": alternative,
        "ratio": alternative / ours,
        "accuracy": f"fluid peak {peak:,.0f} vs simulated "
        f"{summary.peak_queue.mean:,.0f} +- {summary.peak_queue.half_width:,.0f} "
        f"({gap:+.1%}); verdict {review.verdict} vs {verdicts}",
        "note": f"{count} replications needed, {per_replication:.1f} s each "
        f"({options.replications} run and timed)",
    }
    report: dict[str, Any] = {
        "machine": info,
        "fluid": {
            "seconds": ours,
            "verdict": review.verdict,
            "recovery_time": review.recovery_time,
            "peak_queue_before_intervention": peak,
        },
        "simulation": {
            "replications_run": options.replications,
            "seconds": simulated,
            "seconds_per_replication": per_replication,
            "replications_needed": count,
            "peak_queue_mean": summary.peak_queue.mean,
            "peak_queue_half_width": summary.peak_queue.half_width,
            "recovery_time_mean": None
            if summary.recovery_time is None
            else summary.recovery_time.mean,
            "verdicts": dict(summary.verdicts),
        },
        "comparisons": [comparison],
    }
    print(f"fluid review: {ours:.2f} s, verdict {review.verdict}, peak {peak:,.0f}")
    print(
        f"simulation: {options.replications} replications in {simulated:.1f} s "
        f"({per_replication:.1f} s each); peak {summary.peak_queue.mean:,.0f} "
        f"+- {summary.peak_queue.half_width:,.0f}; {verdicts}"
    )
    print(
        f"for +-{options.accuracy:.0%} on the peak: {count} replications, "
        f"{alternative:.0f} s, {comparison['ratio']:.0f}x the fluid review"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
