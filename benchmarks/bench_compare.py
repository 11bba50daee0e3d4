"""Run every comparison with the alternatives in one go and report the ratios.

Run: ``python benchmarks/bench_compare.py [--only NAME ...]``.

One after the other (so they do not compete for the cores), each in its own
process:

- ``bench_erlang.py``: Erlang C over a million pairs against pyworkforce, a
  pure-Python loop and LINE;
- ``bench_sweep.py``: vectorised model sweeps against the model classes point
  by point, and a parallel scenario sweep;
- ``bench_erlang_a.py``: Erlang-A in closed form against a Ciw simulation to
  a stated accuracy;
- ``bench_review.py``: the fluid review of the incident against its
  discrete-event simulation to a stated accuracy;
- ``bench_chain.py``: a CTMC steady state against a dense solver;
- ``bench_graph.py``: the analysis of a graph of 10,000 services, and its
  loads on one large cycle against dense and sparse LU solves.

Each script prints its machine, versions and ratios and writes
``benchmarks/results/<name>.json``; then ``report.py`` rebuilds the table in
``benchmarks/README.md`` from those files. ``--only`` runs some of them (the
table keeps the last figures of the others).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The benchmarks, in the order they run.
BENCHMARKS = ("erlang", "sweep", "erlang_a", "review", "chain", "graph")


def run(name: str) -> bool:
    """Run one benchmark script; return whether it succeeded."""
    script = HERE / f"bench_{name}.py"
    if not script.exists():
        print(f"== {script.name}: not present, skipped", flush=True)
        return True
    print(f"== {script.name}", flush=True)
    start = time.perf_counter()
    status = subprocess.call([sys.executable, str(script)], cwd=HERE)
    print(f"== {script.name}: {time.perf_counter() - start:.0f} s, exit {status}")
    return status == 0


def main() -> None:
    """Run the benchmarks, then the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, default=None)
    options = parser.parse_args()
    failed = [name for name in options.only or BENCHMARKS if not run(name)]
    subprocess.call([sys.executable, str(HERE / "report.py")], cwd=HERE)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
