"""Time the static analysis of a large service graph.

A random layered graph of 10,000 services and 50,000 calls (plus 20 pools in
front of 20 databases with 5 tables each) is validated, built and analysed:
loads nominal and worst case, classification, timeout violations, stacked
retries, cycles, the most amplified paths and the blast radius of every
resource. Optionally a few calls back up the graph make it cyclic, so the
strongly connected components are solved as linear systems.

Run: ``python benchmarks/bench_graph.py [--services N] [--calls M] [--cycles K]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from retrystorm.graph import GraphSpec, ServiceGraph, analyze_graph, node_loads


def random_graph(
    services: int, calls: int, back_calls: int, *, giant: bool = False, seed: int = 2025
) -> dict[str, Any]:
    """Return a random service graph as a mapping, seeded."""
    rng = np.random.default_rng(seed)
    pools = 20
    nodes = [
        {
            "name": f"s{i}",
            "entry_rate": float(rng.uniform(1.0, 20.0)) if i < services // 100 else 0.0,
            "pods": int(rng.integers(1, 10)),
            "concurrency": int(rng.integers(10, 200)) if rng.random() < 0.5 else None,
            "service_time": float(rng.uniform(0.001, 0.05)),
        }
        for i in range(services)
    ]
    resources = []
    for p in range(pools):
        resources.append(
            {
                "name": f"pool{p}",
                "kind": "pool",
                "pool_size": 100,
                "queue_timeout": 30.0,
            }
        )
        tables = [{"name": f"t{t}", "share": 0.2} for t in range(5)]
        resources.append(
            {
                "name": f"db{p}",
                "kind": "database",
                "service_time": 0.01,
                "tables": tables,
            }
        )

    # Calls go from a lower to a higher index (a DAG), a few short hops each
    # so that paths are long; the last services call the pools.
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < calls - 2 * pools:
        caller = int(rng.integers(0, services - 1))
        callee = min(services - 1, caller + 1 + int(rng.geometric(0.01)))
        pairs.add((caller, callee))
    edges = [
        {
            "caller": f"s{u}",
            "callee": f"s{v}",
            "calls_per_request": float(rng.uniform(0.05, 0.4)),
            "timeout": float(rng.choice([0.5, 2.0, 10.0, math.inf])),
            "max_retries": int(rng.choice([0, 0, 0, 1, 2, 3])),
        }
        for u, v in sorted(pairs)
    ]
    for p in range(pools):
        edges.append(
            {"caller": f"s{services - 1 - p}", "callee": f"pool{p}", "timeout": 5.0}
        )
        edges.append({"caller": f"pool{p}", "callee": f"db{p}"})
    # Calls back: a callee that calls its caller again for 1 % of requests,
    # each making a small cycle (mutual calls), or, with ``giant``, calls
    # from anywhere to anywhere earlier, which tie most services into one
    # strongly connected component.
    ordered = sorted(pairs)
    backs: set[tuple[int, int]] = set()
    for pick in rng.choice(len(ordered), size=back_calls, replace=False):
        caller, callee = ordered[int(pick)][::-1]
        if giant:
            callee = int(rng.integers(0, caller))
        if (caller, callee) in backs:
            # One call per pair: a repeated draw is merged away.
            continue
        backs.add((caller, callee))
        edges.append(
            {"caller": f"s{caller}", "callee": f"s{callee}", "calls_per_request": 0.01}
        )
    return {"services": nodes, "resources": resources, "calls": edges}


def timed(label: str, action: Callable[[], Any]) -> Any:
    """Run ``action`` once, print how long it took and return its result."""
    start = time.perf_counter()
    result = action()
    print(f"{label:<36} {time.perf_counter() - start:8.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--cycles", type=int, default=0, help="calls back up the graph")
    parser.add_argument(
        "--giant", action="store_true", help="back calls tie one giant cycle"
    )
    args = parser.parse_args()

    data = random_graph(args.services, args.calls, args.cycles, giant=args.giant)
    print(
        f"{len(data['services'])} services, {len(data['resources'])} resources, "
        f"{len(data['calls'])} calls, {args.cycles} back calls"
    )
    spec = timed("validate (pydantic)", lambda: GraphSpec.model_validate(data))
    graph = timed("build (networkx, components)", lambda: ServiceGraph(spec))
    timed("structure (flat lists, order)", lambda: graph._structure)
    timed("node loads, nominal", lambda: node_loads(graph))
    timed("node loads, worst case", lambda: node_loads(graph, worst_case=True))
    analysis = timed("full analysis", lambda: analyze_graph(graph))
    print(
        f"classification {analysis.classification}; "
        f"{len(analysis.violations)} violations, {len(analysis.stacked)} stacked, "
        f"{len(analysis.cycles)} cyclic components, "
        f"{len(analysis.blast_radii)} blast radii"
    )


if __name__ == "__main__":
    main()
