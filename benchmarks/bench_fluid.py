"""Time the fluid model: replays of the incident and its equilibria.

Run: ``python benchmarks/bench_fluid.py [--repeat 5]``.

Measured, each as the best of ``--repeat`` runs on one core:

- one hour of the incident's system replayed (14,400 steps of 0.25 s), with
  the incident's events (a lock, a rollback, a cold restart);
- one hour stuck in the bad state (a 90 s lock; every step moves tens of
  thousands of queued requests through timeouts and retries);
- the incident's own horizon (3,000 s) and each of its variants;
- ``find_equilibria`` on the incident (closed forms and the bisection for the
  critical backlog over replays).

Machine and versions are printed; results go to ``benchmarks/results/fluid.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import retrystorm
from retrystorm.equilibria import find_equilibria
from retrystorm.fluid import simulate_fluid
from retrystorm.scenario import default_scenario

RESULTS = Path(__file__).resolve().parent / "results" / "fluid.json"


def best_of(repeat: int, work: Callable[[], object]) -> float:
    """Return the shortest wall time of ``repeat`` runs of ``work``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()

    incident = default_scenario()
    stuck = incident.with_changes({"events.0.duration": 90.0})
    simulate_fluid(incident, horizon=60.0)  # warm-up: imports, caches

    timings: dict[str, float] = {}
    timings["incident, 1 h"] = best_of(
        options.repeat, lambda: simulate_fluid(incident, horizon=3600.0)
    )
    timings["stuck in the bad state, 1 h"] = best_of(
        options.repeat, lambda: simulate_fluid(stuck, horizon=3600.0)
    )
    timings["incident, its horizon (3000 s)"] = best_of(
        options.repeat, lambda: simulate_fluid(incident)
    )
    for name in incident.variant_names:
        variant = incident.variant(name)
        timings[f"variant {name}"] = best_of(
            options.repeat, lambda v=variant: simulate_fluid(v)
        )
    timings["find_equilibria(incident)"] = best_of(
        max(1, options.repeat // 2), lambda: find_equilibria(incident)
    )

    steps = 3600.0 / incident.time_step
    print(
        f"machine: {platform.platform()}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, retrystorm {retrystorm.__version__}"
    )
    for label, seconds in timings.items():
        print(f"{label:40s} {seconds * 1e3:9.1f} ms")
    per_step = timings["incident, 1 h"] / steps * 1e6
    print(f"{'per step (incident, 1 h)':40s} {per_step:9.1f} us")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "seconds": timings,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
