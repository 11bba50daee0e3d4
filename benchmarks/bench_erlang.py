"""Time Erlang C on a million (servers, load) pairs against the alternatives.

Run: ``python benchmarks/bench_erlang.py [--pairs 1000000]``.

Contenders, all on one core:

- ``retrystorm.erlang_c`` on the whole array (vectorised, log space);
- the obvious pure-Python loop (the Erlang B recurrence per pair, then C);
- pyworkforce's ``ErlangC.waiting_probability`` (one object per pair);
- LINE's Python ``erlang_c`` (PyPI ``line-solver``, ``line_solver.api.lossn``).

The slow contenders run on a random subsample and their time is scaled to
the full number of pairs; the report says so. Each contender's results on
its subsample are compared with ours (largest relative difference), so a
fast wrong answer is visible. Machine, versions and ratios are printed and
written to ``benchmarks/results/erlang.json``. A contender that cannot be
imported or run is reported as unavailable with the reason, never timed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from retrystorm import erlang_c

RESULTS = Path(__file__).resolve().parent / "results" / "erlang.json"
SEED = 20250916


def machine() -> dict[str, object]:
    """Describe the machine and the library versions."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("retrystorm", "numpy", "scipy", "pyworkforce", "line-solver"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "load_average_1_5_15_min": list(os.getloadavg()),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def workload(pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Servers log-uniform on 1..1000, utilisation uniform on (0.05, 0.99)."""
    rng = np.random.default_rng(SEED)
    servers = np.floor(np.exp(rng.uniform(0.0, np.log(1000.0), pairs))).astype(np.int64)
    loads = servers * rng.uniform(0.05, 0.99, pairs)
    return servers, loads


def best_time(run: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` runs, seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def python_loop(servers: np.ndarray, loads: np.ndarray) -> list[float]:
    """The obvious pure-Python Erlang C: B by its recurrence, then C, per pair."""
    results = []
    for c, a in zip(servers.tolist(), loads.tolist(), strict=True):
        b = 1.0
        for k in range(1, c + 1):
            b = a * b / (k + a * b)
        results.append(b / (1.0 - (a / c) * (1.0 - b)))
    return results


def pyworkforce_contender() -> Callable[[np.ndarray, np.ndarray], list[float]]:
    """pyworkforce: one ErlangC per pair; its load is transactions * aht / interval."""
    from pyworkforce.queuing import ErlangC  # noqa: PLC0415 - optional contender

    def run(servers: np.ndarray, loads: np.ndarray) -> list[float]:
        results = []
        for c, a in zip(servers.tolist(), loads.tolist(), strict=True):
            model = ErlangC(transactions=a, aht=1.0, asa=1.0, interval=1)
            results.append(model.waiting_probability(positions=c))
        return results

    return run


def line_contender() -> Callable[[np.ndarray, np.ndarray], list[float]]:
    """LINE's Python port: erlang_c(offered_load, servers) per pair."""
    from line_solver.api.lossn import erlang_c as line_erlang_c  # noqa: PLC0415 - optional

    def run(servers: np.ndarray, loads: np.ndarray) -> list[float]:
        return [
            float(line_erlang_c(a, c))
            for c, a in zip(servers.tolist(), loads.tolist(), strict=True)
        ]

    return run


def accuracy(values: list[float], reference: np.ndarray) -> dict[str, float]:
    """Compare a contender's values with ours on the subsample.

    Where our value is a normal double (>= 1e-300) the largest relative
    difference; elsewhere (true values below 1e-300) the largest absolute
    value returned; and the count of NaN or infinite results.
    """
    array = np.asarray(values, dtype=float)
    normal = reference >= 1e-300
    finite = np.isfinite(array)
    relative = np.abs(array[normal & finite] / reference[normal & finite] - 1.0)
    tiny = array[~normal & finite]
    return {
        "largest_relative_difference": float(relative.max()) if relative.size else 0.0,
        "largest_value_where_exact_is_below_1e-300": float(np.abs(tiny).max())
        if tiny.size
        else 0.0,
        "non_finite_results": int((~finite).sum()),
    }


def measure_subsampled(
    name: str,
    make: Callable[[], Callable[[np.ndarray, np.ndarray], list[float]]],
    servers: np.ndarray,
    loads: np.ndarray,
    *,
    sample: int,
    ours_time: float,
) -> dict[str, object]:
    """Time a slow contender on ``sample`` pairs and scale to all of them."""
    try:
        run = make()
    except Exception as error:
        return {
            "name": name,
            "available": False,
            "reason": f"{type(error).__name__}: {error}",
        }
    rng = np.random.default_rng(SEED + 1)
    chosen = rng.choice(len(servers), size=min(sample, len(servers)), replace=False)
    sub_servers, sub_loads = servers[chosen], loads[chosen]
    try:
        start = time.perf_counter()
        values = run(sub_servers, sub_loads)
        elapsed = time.perf_counter() - start
    except Exception as error:
        return {
            "name": name,
            "available": False,
            "reason": f"{type(error).__name__}: {error}",
        }
    scaled = elapsed * len(servers) / len(chosen)
    reference = np.asarray(erlang_c(sub_servers, sub_loads))
    return {
        "name": name,
        "available": True,
        "subsample_pairs": len(chosen),
        "subsample_seconds": elapsed,
        "scaled_seconds": scaled,
        "ratio_to_retrystorm": scaled / ours_time,
        "accuracy_against_retrystorm": accuracy(values, reference),
    }


def main() -> None:
    """Run every contender and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument(
        "--sample", type=int, default=5_000, help="pairs for slow contenders"
    )
    arguments = parser.parse_args()

    info = machine()
    servers, loads = workload(arguments.pairs)
    erlang_c(servers[:10], loads[:10])  # warm up imports and caches
    ours = best_time(lambda: erlang_c(servers, loads), repeats=3)
    contenders = [
        measure_subsampled(
            "pure-Python loop",
            lambda: python_loop,
            servers,
            loads,
            sample=arguments.sample,
            ours_time=ours,
        ),
        measure_subsampled(
            "pyworkforce ErlangC",
            pyworkforce_contender,
            servers,
            loads,
            sample=arguments.sample,
            ours_time=ours,
        ),
        measure_subsampled(
            "LINE erlang_c (line-solver)",
            line_contender,
            servers,
            loads,
            sample=arguments.sample,
            ours_time=ours,
        ),
    ]
    report = {
        "machine": info,
        "workload": {
            "pairs": arguments.pairs,
            "servers": "log-uniform integers on 1..1000",
            "utilization": "uniform on (0.05, 0.99)",
            "seed": SEED,
        },
        "retrystorm_seconds": ours,
        "retrystorm_pairs_per_second": arguments.pairs / ours,
        "contenders": contenders,
    }

    print(
        f"machine: {info['cpu']} ({info['logical_cpus']} logical CPUs), "
        f"Python {info['python']}"
    )
    print(f"load average (1, 5, 15 min): {info['load_average_1_5_15_min']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"retrystorm.erlang_c on {arguments.pairs:,} pairs: {ours:.3f} s (best of 3)")
    for entry in contenders:
        if not entry["available"]:
            print(f"{entry['name']}: not measured ({entry['reason']})")
            continue
        check = entry["accuracy_against_retrystorm"]
        print(
            f"{entry['name']}: {entry['scaled_seconds']:.1f} s scaled from "
            f"{entry['subsample_pairs']:,} pairs, "
            f"{entry['ratio_to_retrystorm']:.0f}x slower; "
            f"largest relative difference {check['largest_relative_difference']:.2g}, "
            f"{check['non_finite_results']} NaN/inf"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
