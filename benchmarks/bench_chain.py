"""Time the stationary solve of retry chains: a million states, and sparse vs dense.

Run: ``python benchmarks/bench_chain.py [--states 1000000] [--dense-states 4000]``.

Three measurements:

- a chain of about ``--states`` states with one waiting class (queue x orbit,
  a two-dimensional grid): Erlang-A patience, a queue limit and a retry orbit,
  solved by sparse LU (minimum degree on ``A + A^T``); build and solve timed;
- a chain with orphans (live x orphan x orbit, three-dimensional) of about
  150,000 states, solved by sparse LU in nested-dissection order;
- the same kind of two-dimensional chain at ``--dense-states`` states, solved
  both by retrystorm and by a dense LU solve (``numpy.linalg.solve`` of the
  same reduced balance equations), with the ratio and the largest difference;
  the dense solver's time and memory at a million states are extrapolated
  (``n^3`` and ``8 n^2`` bytes): it cannot run there.

Wall-clock and process CPU times are both recorded: on a shared machine the
wall time moves with the load (recorded too), the CPU time much less. Machine,
versions and ratios are printed and written to ``benchmarks/results/chain.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_erlang import machine
from retrystorm import RetryChain

RESULTS = Path(__file__).resolve().parent / "results" / "chain.json"


def timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """Return ``(result, wall seconds, CPU seconds)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def grid_chain(states: int) -> RetryChain:
    """A queue x orbit chain of about ``states`` states (a square grid).

    ``c = side / 20`` servers at 96 % load (50 at a million states),
    exponential patience (mean 5 s) whose give-ups retry with probability
    0.9 after 2 s on average, and a queue limit filling the side.
    """
    side = max(4, round(math.sqrt(states)))
    servers = max(1, round(side / 20))
    return RetryChain(
        arrival_rate=0.96 * servers,
        service_rate=1.0,
        servers=servers,
        queue_limit=side - servers - 1,
        abandonment_rate=0.2,
        retry_rate=0.5,
        retry_probability=0.9,
        orbit_limit=side - 1,
        max_states=10 * states,
    )


def orphan_chain() -> RetryChain:
    """A live x orphan x orbit chain of about 150,000 states (wasted work)."""
    return RetryChain(
        arrival_rate=1.2,
        service_rate=2.5,
        servers=1,
        timeout=8.0,
        cancel_abandoned=False,
        orphan_timeout=16.0,
        retry_rate=0.857,
        retry_probability=0.75,
        orbit_limit=20,
        queue_truncation=120,
    )


def solve_chain(chain: RetryChain) -> dict[str, Any]:
    """Build and solve ``chain``; return its timings and a few summaries."""
    _, build_wall, build_cpu = timed(lambda: chain.generator)
    result, solve_wall, solve_cpu = timed(chain.stationary)
    return {
        "states": chain.state_count,
        "transitions": int(chain.generator.nnz - chain.state_count),
        "solver": chain.solver_method,
        "build_seconds": build_wall,
        "build_cpu_seconds": build_cpu,
        "solve_seconds": solve_wall,
        "solve_cpu_seconds": solve_cpu,
        "residual": result.residual,
        "mean_queue": result.mean_queue,
        "mean_orbit": result.mean_orbit,
    }


def dense_stationary(chain: RetryChain) -> np.ndarray:
    """The stationary law by a dense LU solve of the same reduced system."""
    transposed = chain.generator.T.toarray()
    reference = int(np.argmax(chain.stationary().probabilities))
    keep = np.arange(transposed.shape[0]) != reference
    solution = np.linalg.solve(
        transposed[np.ix_(keep, keep)], -transposed[keep, reference]
    )
    law = np.empty(transposed.shape[0])
    law[keep], law[reference] = solution, 1.0
    return law / law.sum()


def compare_dense(states: int) -> dict[str, Any]:
    """Time retrystorm and the dense solver on one chain the dense one can do."""
    chain = grid_chain(states)
    ours = solve_chain(chain)
    law = chain.stationary().probabilities
    dense, dense_wall, dense_cpu = timed(lambda: dense_stationary(chain))
    sparse_total = ours["build_seconds"] + ours["solve_seconds"]
    return {
        "states": chain.state_count,
        "retrystorm": ours,
        "dense_seconds": dense_wall,
        "dense_cpu_seconds": dense_cpu,
        "ratio": dense_wall / sparse_total,
        "cpu_ratio": dense_cpu
        / (ours["build_cpu_seconds"] + ours["solve_cpu_seconds"]),
        "largest_difference": float(np.abs(dense - law).max()),
    }


def main() -> None:
    """Run the measurements and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=1_000_000)
    parser.add_argument("--dense-states", type=int, default=4_000)
    arguments = parser.parse_args()
    # The chains are cut where their tails hold ~1e-3 of the mass: a timing
    # workload, not a model answer; the truncation warnings are beside the point.
    warnings.filterwarnings("ignore", "the truncation levels hold", RuntimeWarning)

    info = machine()
    print(f"machine: {info['cpu']} ({info['logical_cpus']} logical CPUs), "
          f"Python {info['python']}, versions {info['versions']}")  # fmt: skip
    print(f"load average (1, 5, 15 min): {info['load_average_1_5_15_min']}")

    comparison = compare_dense(arguments.dense_states)
    n = comparison["states"]
    print(
        f"{n:,} states: retrystorm {comparison['retrystorm']['solve_seconds']:.3f} s "
        f"solve + {comparison['retrystorm']['build_seconds']:.3f} s build; dense LU "
        f"{comparison['dense_seconds']:.2f} s; ratio {comparison['ratio']:.0f}x "
        f"(CPU {comparison['cpu_ratio']:.0f}x); largest difference "
        f"{comparison['largest_difference']:.1e}"
    )
    large = solve_chain(grid_chain(arguments.states))
    print(
        f"{large['states']:,} states (queue x orbit): build "
        f"{large['build_seconds']:.1f} s, solve {large['solve_seconds']:.1f} s wall "
        f"/ {large['solve_cpu_seconds']:.1f} s CPU ({large['solver']}), residual "
        f"{large['residual']:.1e}"
    )
    orphans = solve_chain(orphan_chain())
    print(
        f"{orphans['states']:,} states (live x orphan x orbit): build "
        f"{orphans['build_seconds']:.1f} s, solve {orphans['solve_seconds']:.1f} s "
        f"wall / {orphans['solve_cpu_seconds']:.1f} s CPU ({orphans['solver']}), "
        f"residual {orphans['residual']:.1e}"
    )
    # Dense LU costs ~ (2/3) n^3 flops and 8 n^2 bytes: scale the measured time.
    growth = (large["states"] / n) ** 3
    dense_extrapolated = comparison["dense_seconds"] * growth
    dense_bytes = 8.0 * large["states"] ** 2
    print(
        f"dense LU at {large['states']:,} states: about {dense_extrapolated:.1e} s "
        f"and {dense_bytes / 2**40:.1f} TiB of memory (extrapolated)"
    )
    sparse_large = large["build_seconds"] + large["solve_seconds"]
    report = {
        "machine": info,
        "dense_comparison": comparison,
        "large_grid": large,
        "orphan_chain": orphans,
        "dense_extrapolated_seconds": dense_extrapolated,
        "dense_extrapolated_bytes": dense_bytes,
        "comparisons": [
            {
                "task": f"CTMC stationary law, {n:,} states (queue x orbit)",
                "retrystorm": "RetryChain.stationary (sparse LU)",
                "retrystorm_seconds": comparison["retrystorm"]["build_seconds"]
                + comparison["retrystorm"]["solve_seconds"],
                "alternative": "dense LU (numpy.linalg.solve)",
                "alternative_seconds": comparison["dense_seconds"],
                "ratio": comparison["ratio"],
                "accuracy": "largest difference "
                f"{comparison['largest_difference']:.1e}",
                "note": "retrystorm time includes building the generator",
            },
            {
                "task": f"CTMC stationary law, {large['states']:,} states "
                "(queue x orbit)",
                "retrystorm": "RetryChain.stationary (sparse LU)",
                "retrystorm_seconds": sparse_large,
                "alternative": "dense LU (numpy.linalg.solve)",
                "alternative_seconds": dense_extrapolated,
                "ratio": dense_extrapolated / sparse_large,
                "accuracy": f"residual {large['residual']:.1e}",
                "note": "dense time extrapolated as n^3 from the row above; it "
                f"would need {dense_bytes / 2**40:.0f} TiB",
            },
        ],
        "measurements": [
            {
                "task": f"CTMC stationary law, {orphans['states']:,} states "
                "(live x orphan x orbit)",
                "seconds": orphans["build_seconds"] + orphans["solve_seconds"],
                "note": f"{orphans['solver']} solver, nested-dissection order",
            }
        ],
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
