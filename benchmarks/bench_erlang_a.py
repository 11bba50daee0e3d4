"""Time Erlang-A (M/M/c+M) in closed form against simulating it with Ciw.

Run: ``python benchmarks/bench_erlang_a.py [--accuracy 0.02] [--seed 1]``.

The queue: ``c = 20`` servers, arrivals 20 per second, service rate 1 per
second, patience rate 0.5 per second (mean patience 2 s), so the offered
utilisation is 1, the regime where abandonment matters.

Accuracy target. `retrystorm.ErlangA` is exact to about 1e-12 relative. The
simulation is run until the 95 % confidence half-width of each of three
quantities (probability of abandoning, probability of waiting, mean wait over
all arrivals) is at most ``--accuracy`` (default 2 %) of its estimate: a
modest target, which favours the simulation.

How the Ciw run length is chosen. After a warm-up of 200 s (discarded; the
queue starts empty), a pilot run of 2,000 simulated seconds gives the half-width
``h0`` of each quantity by batch means (20 batches of consecutive arrivals,
t interval, [LawKelton2000] 9.5.3). The half-width shrinks as one over the
square root of the run length, so the final run lasts ``2000 (h0 / h)^2`` s
for the largest ratio over the three quantities, plus 10 %. The final run
(with another seed) is what is timed; should its own half-widths still miss
the target, it is continued (at most twice) by the factor they call for.
Its achieved half-widths are reported, and so is whether the exact values lie
inside its intervals. Customers who arrive in the last 60 s are left out (a
few may still be waiting at the end).

Machine, versions and the ratio of the times are printed and written to
``benchmarks/results/erlang_a.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_erlang import best_time, machine
from bench_sweep import versions
from retrystorm import ErlangA
from scipy.stats import t as student_t

RESULTS = Path(__file__).resolve().parent / "results" / "erlang_a.json"
PARAMETERS = {
    "arrival_rate": 20.0,
    "service_rate": 1.0,
    "servers": 20,
    "abandonment_rate": 0.5,
}
QUANTITIES = ("abandonment_probability", "wait_probability", "mean_wait")
WARM_UP = 200.0
PILOT = 2000.0
BATCHES = 20
TAIL = 60.0
MARGIN = 1.1


class CiwRun:
    """One Ciw simulation of the queue that can be extended; times its running."""

    def __init__(self, seed: int) -> None:
        import ciw  # noqa: PLC0415 - the contender, imported only to run it

        network = ciw.create_network(
            arrival_distributions=[ciw.dists.Exponential(PARAMETERS["arrival_rate"])],
            service_distributions=[ciw.dists.Exponential(PARAMETERS["service_rate"])],
            number_of_servers=[PARAMETERS["servers"]],
            reneging_time_distributions=[
                ciw.dists.Exponential(PARAMETERS["abandonment_rate"])
            ],
        )
        ciw.seed(seed)  # Ciw draws from the global random state
        self.simulation = ciw.Simulation(network)
        self.horizon = 0.0
        self.wall_seconds = 0.0

    def run_until(self, horizon: float) -> None:
        """Simulate on to ``horizon`` simulated seconds."""
        start = time.perf_counter()
        self.simulation.simulate_until_max_time(horizon)
        self.wall_seconds += time.perf_counter() - start
        self.horizon = horizon

    def records(self) -> dict[str, np.ndarray]:
        """Arrival time, wait and whether it reneged, per finished customer."""
        records = self.simulation.get_all_records()
        arrival = np.array([r.arrival_date for r in records])
        order = np.argsort(arrival)
        return {
            "arrival": arrival[order],
            "waited": np.array([r.waiting_time for r in records])[order],
            "reneged": np.array([r.record_type == "renege" for r in records])[order],
        }


def needed(estimates: dict[str, Any], accuracy: float) -> float:
    """Factor by which the kept run must grow to meet the accuracy target."""
    ratio = max(
        estimates[q]["half_width"] / (accuracy * estimates[q]["estimate"])
        for q in QUANTITIES
    )
    return ratio**2


def batch_means(records: dict[str, np.ndarray], horizon: float) -> dict[str, Any]:
    """Estimates and 95 % half-widths by batch means over the kept arrivals."""
    keep = (records["arrival"] >= WARM_UP) & (records["arrival"] < horizon - TAIL)
    per_arrival = {
        "abandonment_probability": records["reneged"][keep].astype(float),
        "wait_probability": (records["waited"][keep] > 0.0).astype(float),
        "mean_wait": records["waited"][keep],
    }
    factor = float(student_t.ppf(0.975, BATCHES - 1)) / math.sqrt(BATCHES)
    estimates = {}
    for name, values in per_arrival.items():
        batches = np.array([b.mean() for b in np.array_split(values, BATCHES)])
        mean = float(values.mean())
        estimates[name] = {
            "estimate": mean,
            "half_width": factor * float(batches.std(ddof=1)),
        }
    estimates["arrivals"] = int(keep.sum())
    return estimates


def main() -> None:
    """Run both and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accuracy", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()

    info = machine()
    info["versions"].update(versions("ciw"))
    exact = ErlangA(**PARAMETERS).summary()  # type: ignore[arg-type]
    ours = best_time(lambda: ErlangA(**PARAMETERS).summary(), repeats=20)  # type: ignore[arg-type]

    # Pilot: the half-widths at PILOT seconds give the run length needed.
    pilot_run = CiwRun(options.seed)
    pilot_run.run_until(WARM_UP + PILOT + TAIL)
    pilot = batch_means(pilot_run.records(), pilot_run.horizon)
    length = PILOT * max(needed(pilot, options.accuracy), 1.0) * MARGIN
    print(
        f"pilot: {PILOT:,.0f} s simulated in {pilot_run.wall_seconds:.1f} s; "
        f"final run of {length:,.0f} s simulated",
        flush=True,
    )

    # The timed run; extended (at most twice) if the pilot's guess fell short.
    run = CiwRun(options.seed + 1)
    run.run_until(WARM_UP + length + TAIL)
    final = batch_means(run.records(), run.horizon)
    for _ in range(2):
        growth = needed(final, options.accuracy)
        if growth <= 1.0:
            break
        length *= growth * MARGIN
        run.run_until(WARM_UP + length + TAIL)
        final = batch_means(run.records(), run.horizon)
    final_seconds, pilot_seconds = run.wall_seconds, pilot_run.wall_seconds
    checks = {
        q: {
            **final[q],
            "exact": exact[q],
            "relative_half_width": final[q]["half_width"] / final[q]["estimate"],
            "exact_inside_interval": abs(final[q]["estimate"] - exact[q])
            <= final[q]["half_width"],
        }
        for q in QUANTITIES
    }
    met = all(c["relative_half_width"] <= options.accuracy for c in checks.values())
    worst = max(c["relative_half_width"] for c in checks.values())
    comparison = {
        "task": "Erlang-A, c = 20, utilisation 1: P(abandon), P(wait), mean wait",
        "retrystorm": "ErlangA(...).summary() (exact to about 1e-12)",
        "retrystorm_seconds": ours,
        "alternative": f"Ciw {info['versions']['ciw']} simulation to "
        f"+-{options.accuracy:.0%} (95 %)",
        "alternative_seconds": final_seconds,
        "ratio": final_seconds / ours,
        "accuracy": f"Ciw half-width up to {worst:.1%} of the estimate "
        f"({'target met' if met else 'target missed'}); exact inside "
        f"{sum(c['exact_inside_interval'] for c in checks.values())} of 3 intervals",
        "note": f"{length:,.0f} s simulated ({final['arrivals']:,} arrivals), "
        f"length from a {PILOT:,.0f} s pilot ({pilot_seconds:.1f} s, not counted)",
    }
    report = {
        "machine": info,
        "parameters": PARAMETERS,
        "accuracy_target": options.accuracy,
        "pilot": {"simulated_seconds": PILOT, "wall_seconds": pilot_seconds, **pilot},
        "final": {"simulated_seconds": length, "wall_seconds": final_seconds},
        "checks": checks,
        "comparisons": [comparison],
    }
    for name, check in checks.items():
        print(
            f"{name}: exact {check['exact']:.6g}; Ciw {check['estimate']:.6g} "
            f"+- {check['half_width']:.2g} ({check['relative_half_width']:.2%})"
        )
    print(
        f"retrystorm {ours * 1e3:.2f} ms; Ciw {final_seconds:.1f} s: "
        f"{comparison['ratio']:,.0f}x slower for {options.accuracy:.0%}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
