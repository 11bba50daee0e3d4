"""The benchmark figures quoted in the READMEs are those of the results files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _report() -> ModuleType:
    """Import ``benchmarks/report.py`` (a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location(
        "benchmark_report", ROOT / "benchmarks" / "report.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readmes_quote_the_latest_results() -> None:
    """Both READMEs hold exactly the tables built from benchmarks/results/."""
    report = _report()
    for path, text in report.outputs().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(ROOT)} is out of date: run python benchmarks/report.py"
        )


def test_every_comparison_row_has_the_fields_the_table_needs() -> None:
    """Each comparison names both sides, both times, the ratio and the accuracy."""
    report = _report()
    keys = {"task", "retrystorm", "retrystorm_seconds", "alternative"}
    keys |= {"alternative_seconds", "ratio", "accuracy"}
    rows = [row for path in report.results_files() for row in report.rows_of(path)]
    assert rows
    for row in rows:
        assert keys <= row.keys(), row
        assert row["retrystorm_seconds"] > 0
        assert row["alternative_seconds"] > 0
        ratio = row["alternative_seconds"] / row["retrystorm_seconds"]
        assert abs(row["ratio"] - ratio) <= 0.01 * ratio, row["task"]


def test_every_results_file_records_its_machine() -> None:
    """A results file says which machine and versions produced it."""
    report = _report()
    for path in report.results_files():
        info = json.loads(path.read_text(encoding="utf-8")).get("machine")
        assert info, path.name
