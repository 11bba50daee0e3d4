"""Build the table of benchmark figures from ``benchmarks/results/*.json``.

Run: ``python benchmarks/report.py [--check]``.

Every results file that holds a ``comparisons`` list (the shape is in
``benchmarks/README.md``) gives rows, and a ``measurements`` list (timings
without a contender: ``task``, ``seconds``, ``note``) rows of a second table;
``erlang.json`` of ``bench_erlang.py`` is read in its own shape. The tables,
with the machine and versions of each run, replace the part of
``benchmarks/README.md`` between the two markers ``<!-- results:begin -->``
and ``<!-- results:end -->``, and are printed; a short table of the ratios
replaces the same markers' part of the project README.
With ``--check`` the READMEs are left alone and the exit status says whether
they are up to date (a test runs this check).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
PROJECT_README = HERE.parent / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
# Files in the order their rows appear; any other results file follows.
ORDER = ("erlang", "sweep", "erlang_a", "review", "chain", "graph")


def erlang_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of bench_erlang.py's report (its own shape)."""
    pairs = report["workload"]["pairs"]
    rows = []
    for contender in report["contenders"]:
        if not contender.get("available"):
            continue
        check = contender["accuracy_against_retrystorm"]
        rows.append(
            {
                "task": f"Erlang C, {pairs:,} (servers, load) pairs",
                "retrystorm": "erlang_c (vectorised)",
                "retrystorm_seconds": report["retrystorm_seconds"],
                "alternative": contender["name"],
                "alternative_seconds": contender["scaled_seconds"],
                "ratio": contender["ratio_to_retrystorm"],
                "accuracy": "largest relative difference "
                f"{check['largest_relative_difference']:.1e}",
                "note": f"the alternative timed on {contender['subsample_pairs']:,} "
                "pairs and scaled",
            }
        )
    return rows


def rows_of(path: Path) -> list[dict[str, Any]]:
    """The comparison rows a results file holds (none if it holds none)."""
    report = json.loads(path.read_text(encoding="utf-8"))
    if "comparisons" in report:
        return list(report["comparisons"])
    if path.stem == "erlang" and "contenders" in report:
        return erlang_rows(report)
    return []


def seconds(value: float) -> str:
    """A duration for the table."""
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1e3:.0f} ms"
    return f"{value:,.1f} s"


def machine_line(path: Path) -> str:
    """When and where a results file was measured, with the versions."""
    info = json.loads(path.read_text(encoding="utf-8")).get("machine", {})
    when = info.get("date", "date not recorded")
    versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    load = info.get("load_average_1_5_15_min") or [float("nan")]
    return (
        f"- `{path.name}` ({when}): {info.get('cpu', '?')}, "
        f"{info.get('logical_cpus', '?')} logical CPUs, Python "
        f"{info.get('python', '?')}, load average {load[0]:.1f} at the start; "
        f"{versions}"
    )


def results_files() -> list[Path]:
    """The results files, in table order."""
    found = {p.stem: p for p in sorted(RESULTS.glob("*.json"))}
    ordered = [found.pop(name) for name in ORDER if name in found]
    return ordered + list(found.values())


def table() -> str:
    """The Markdown block: the comparison table and the machines."""
    lines = [
        "| task | retrystorm | time | alternative | time | ratio | accuracy | note |",
        "| --- | --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    used = []
    for path in results_files():
        rows = rows_of(path)
        if rows:
            used.append(path)
        lines.extend(
            f"| {row['task']} | {row['retrystorm']} | "
            f"{seconds(row['retrystorm_seconds'])} | {row['alternative']} | "
            f"{seconds(row['alternative_seconds'])} | {row['ratio']:,.0f}x | "
            f"{row['accuracy']} | {row.get('note', '')} |"
            for row in rows
        )
    lines += measurement_lines(used)
    lines += ["", "Measured on:", ""]
    lines += [machine_line(path) for path in used]
    return "\n".join(lines)


def measurement_lines(paths: list[Path]) -> list[str]:
    """A second table: the ``measurements`` lists (timings without a contender)."""
    rows = [
        row
        for path in paths
        for row in json.loads(path.read_text(encoding="utf-8")).get("measurements", [])
    ]
    if not rows:
        return []
    lines = ["", "| measurement | time | note |", "| --- | ---: | --- |"]
    lines.extend(
        f"| {row['task']} | {seconds(row['seconds'])} | {row.get('note', '')} |"
        for row in rows
    )
    return lines


def summary() -> str:
    """The short table for the project README: each comparison and its ratio."""
    lines = [
        "| task | retrystorm | alternative | ratio |",
        "| --- | ---: | --- | ---: |",
    ]
    for path in results_files():
        lines.extend(
            f"| {row['task']} | {seconds(row['retrystorm_seconds'])} | "
            f"{row['alternative']}: {seconds(row['alternative_seconds'])} | "
            f"{row['ratio']:,.0f}x |"
            for row in rows_of(path)
        )
    return "\n".join(lines)


def updated(path: Path, block: str) -> str:
    """The text of ``path`` with ``block`` between the two markers."""
    text = path.read_text(encoding="utf-8")
    head, found, rest = text.partition(BEGIN)
    if not found or END not in rest:
        raise SystemExit(f"{path}: the markers {BEGIN} and {END} are missing")
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{block}\n{END}{tail}"


def outputs() -> dict[Path, str]:
    """Each README this script writes, with its text brought up to date."""
    return {
        README: updated(README, table()),
        PROJECT_README: updated(PROJECT_README, summary()),
    }


def main() -> None:
    """Print the tables and write them into the READMEs (or check them)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the READMEs")
    options = parser.parse_args()
    texts = outputs()
    print(table())
    stale = [p for p, text in texts.items() if text != p.read_text(encoding="utf-8")]
    if options.check:
        for path in stale:
            print(f"out of date: {path}")
        sys.exit(1 if stale else 0)
    for path in stale:
        path.write_text(texts[path], encoding="utf-8")
        print(f"written: {path}")


if __name__ == "__main__":
    main()
