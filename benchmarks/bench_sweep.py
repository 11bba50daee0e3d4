"""Time vectorised model sweeps and parallel scenario sweeps.

Run: ``python benchmarks/bench_sweep.py [--side 1000] [--sample 2000]``.

Measured, all in one run:

- `retrystorm.sweep.sweep_model` over a ``side x side`` grid (a million points
  by default: arrival rates x server counts) for each steady-state model,
  every quantity of the model, DataFrame included; against the obvious
  alternative, the model's class evaluated point by point (``summary()`` of
  one object per point) on a random subsample, scaled to the whole grid. Each
  row of the subsample is compared with the class (largest relative
  difference), so a fast wrong answer would show.
- `retrystorm.sweep.sweep_scenario` over a small grid of the incident
  (review per point) with one worker process and with one per CPU.

Machine, versions and ratios are printed and written to
``benchmarks/results/sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_erlang import best_time, machine
from retrystorm.scenario import default_scenario
from retrystorm.sweep import model_spec, sweep_model, sweep_scenario

RESULTS = Path(__file__).resolve().parent / "results" / "sweep.json"
SEED = 20250916
SERVICE_RATE = 2.5

# Each model's grid: arrival rate x servers, the other parameters fixed.
FIXED: dict[str, dict[str, float]] = {
    "mmc": {},
    "mmck": {"capacity": 1100},
    "erlang_a": {"abandonment_rate": 1.0},
    "mmcd": {"timeout": 0.5},
}
SCENARIO_GRID = {"proxy.queue_timeout": "30,120", "clients.request_rate": "100,150"}


def versions(*packages: str) -> dict[str, str]:
    """Return the installed version of each package (or "not installed")."""
    import importlib.metadata  # noqa: PLC0415 - only for the report

    found = {}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def grid(model: str, side: int) -> dict[str, Any]:
    """A side x side grid: arrival rates from 100 to 2000 /s, servers from 50 up."""
    return {
        "arrival_rate": np.linspace(100.0, 2000.0, side),
        "service_rate": SERVICE_RATE,
        "servers": np.arange(50, 50 + side),
        **FIXED[model],
    }


def largest_difference(frame: pd.DataFrame, model: str, rows: np.ndarray) -> float:
    """Largest relative difference between sweep rows and the class, per point."""
    spec = model_spec(model)
    worst = 0.0
    for index in rows:
        row = frame.iloc[int(index)]
        parameters = {name: row[name].item() for name in spec.parameter_names}
        expected = spec.model_class(**parameters).summary()  # type: ignore[misc]
        for name, value in expected.items():
            found = float(row[name])
            if math.isfinite(value) and value != 0.0:
                worst = max(worst, abs(found / value - 1.0))
            elif found != value:
                worst = math.inf
    return worst


def compare_model(model: str, side: int, sample: int) -> dict[str, Any]:
    """Time one model's vectorised sweep against point-by-point objects."""
    spec = model_spec(model)
    parameters = grid(model, side)
    sweep_model(model, grid(model, 10))  # warm up: imports, tables, caches
    frame = sweep_model(model, parameters)
    points = len(frame)
    ours = best_time(lambda: sweep_model(model, parameters), repeats=3)

    rng = np.random.default_rng(SEED)
    rows = rng.choice(points, size=min(sample, points), replace=False)
    chosen = frame.iloc[rows]
    objects: list[Callable[[], object]] = [
        lambda r=r: spec.model_class(  # type: ignore[misc]
            **{name: r[name].item() for name in spec.parameter_names}
        ).summary()
        for _, r in chosen.iterrows()
    ]
    start = time.perf_counter()
    for make in objects:
        make()
    scalar = (time.perf_counter() - start) * points / len(rows)
    return {
        "task": f"{spec.title}: all {len(spec.quantities)} quantities, "
        f"{points:,} grid points",
        "retrystorm": "sweep_model (vectorised kernel, DataFrame)",
        "retrystorm_seconds": ours,
        "alternative": f"{spec.model_class.__name__}(...).summary() per point",
        "alternative_seconds": scalar,
        "ratio": scalar / ours,
        "accuracy": "largest relative difference "
        f"{largest_difference(frame, model, rows[:200]):.1e} on 200 points",
        "note": f"the alternative timed on {len(rows):,} points and scaled",
        "points_per_second": points / ours,
    }


def scenario_sweep() -> list[dict[str, Any]]:
    """Time a scenario sweep of the incident with one worker and with every CPU."""
    incident = default_scenario()
    cpus = os.cpu_count() or 1
    points = math.prod(len(v.split(",")) for v in SCENARIO_GRID.values())
    measurements = []
    for workers in sorted({1, cpus}):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        sweep_scenario(incident, SCENARIO_GRID, ["verdict"], workers=workers)
        elapsed = time.perf_counter() - start
        measurements.append(
            {
                "task": f"sweep_scenario: review of the incident at {points} grid "
                f"points, {workers} worker process{'es' if workers > 1 else ''}",
                "seconds": elapsed,
                "note": f"{elapsed / points:.1f} s per point; load average "
                f"{load:.1f} on {cpus} CPUs at the start",
            }
        )
    return measurements


def main() -> None:
    """Run every measurement and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1000, help="grid is side x side")
    parser.add_argument(
        "--sample", type=int, default=2000, help="points per object loop"
    )
    parser.add_argument("--skip-scenario", action="store_true")
    options = parser.parse_args()

    info = machine()
    info["versions"].update(versions("pandas", "pyarrow", "dask", "distributed"))
    print(
        f"machine: {info['cpu']} ({info['logical_cpus']} logical CPUs), "
        f"Python {info['python']}"
    )
    print(f"load average (1, 5, 15 min): {info['load_average_1_5_15_min']}")

    comparisons = []
    for model in FIXED:
        entry = compare_model(model, options.side, options.sample)
        comparisons.append(entry)
        print(
            f"{entry['task']}: {entry['retrystorm_seconds']:.2f} s "
            f"({entry['points_per_second']:,.0f} points/s); objects one by one "
            f"{entry['alternative_seconds']:.0f} s, {entry['ratio']:.0f}x slower; "
            f"{entry['accuracy']}",
            flush=True,
        )
    report: dict[str, Any] = {"machine": info, "comparisons": comparisons}
    if not options.skip_scenario:
        report["measurements"] = scenario_sweep()
        for entry in report["measurements"]:
            print(f"{entry['task']}: {entry['seconds']:.1f} s ({entry['note']})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
