"""The paper is built from the library and cannot drift from it.

A fast build (``python -m papers.build --fast``: coarser grids, shorter
simulations, no sensitivity analysis) runs once for the module. The checks:
every placeholder of the template is filled, every figure the text shows is
written, the numbers in the text are those the library computes now (spot
checks made here, independently of the build), and the committed paper agrees
with the fast build on every value the two builds compute alike (the build
marks those ``invariant`` in ``values.json``), so a change of the library, the
incident scenario or the benchmark results that is not followed by
``python -m papers.build`` fails here.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from retrystorm.equilibria import find_equilibria
from retrystorm.fluid import simulate_fluid
from retrystorm.review import judge
from retrystorm.scenario import default_scenario

ROOT = Path(__file__).resolve().parent.parent
PAPERS = ROOT / "papers"
TEMPLATE = (PAPERS / "paper.template.md").read_text(encoding="utf-8")
PUBLISHED = Path(__file__).resolve().parent / "data" / "published_steady_state.csv"
PLACEHOLDER = re.compile(r"\{\{\s*([a-z0-9_.]+)\s*\}\}")
FIGURE = re.compile(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BUILD_TIMEOUT = 900  # s: generous for a loaded machine; the build itself is fast


def values_in(folder: Path) -> dict[str, dict[str, Any]]:
    """The values a build wrote next to its paper."""
    values: dict[str, dict[str, Any]] = json.loads(
        (folder / "values.json").read_text(encoding="utf-8")
    )
    return values


def fill(values: dict[str, dict[str, Any]]) -> str:
    """The template with every placeholder replaced by its value."""
    return PLACEHOLDER.sub(lambda match: values[match.group(1)]["text"], TEMPLATE)


@pytest.fixture(scope="module")
def fast_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output directory of one fast build."""
    out = tmp_path_factory.mktemp("paper")
    command = [sys.executable, "-m", "papers.build", "--fast", "--no-pdf"]
    result = subprocess.run(  # noqa: S603 - this repository's build, this Python
        [*command, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def text(fast_build: Path) -> dict[str, str]:
    """The fast build's values by placeholder name."""
    return {key: entry["text"] for key, entry in values_in(fast_build).items()}


def test_every_placeholder_of_the_template_is_filled(fast_build: Path) -> None:
    """The rendered paper is the template with every placeholder's value, no more."""
    paper = (fast_build / "paper.md").read_text(encoding="utf-8")
    values = values_in(fast_build)
    assert set(PLACEHOLDER.findall(TEMPLATE)) == set(values)
    assert "{{" not in paper
    assert "}}" not in paper
    assert paper == fill(values)


def test_every_figure_the_paper_shows_is_written(fast_build: Path) -> None:
    """Each figure the text shows is a PNG the build drew, and no other is drawn."""
    paper = (fast_build / "paper.md").read_text(encoding="utf-8")
    shown = FIGURE.findall(paper)
    drawn = sorted(f"figures/{p.name}" for p in (fast_build / "figures").glob("*.png"))
    assert shown
    assert sorted(shown) == drawn
    # A section whose module is not shipped shows a labelled placeholder, which is
    # a small image; every other figure is a drawn plot.
    placeholders = set()
    if "(`retrystorm.chain`) is not part of the library" in paper:
        placeholders.add("figures/chain_vs_closed_forms.png")
    for name in shown:
        data = (fast_build / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        if name not in placeholders:
            assert len(data) > 10_000, name  # a drawn figure, not an empty canvas


def test_the_incident_numbers_are_those_the_library_computes(
    text: dict[str, str],
) -> None:
    """Verdict, peak backlog and equilibria of the text equal a fresh replay's."""
    scenario = default_scenario()
    trajectory = simulate_fluid(scenario)
    report = find_equilibria(scenario)
    verdict, _ = judge(trajectory, report)
    assert text["incident.verdict"] == f"`{verdict}`"
    assert text["incident.peak_queue"] == f"{trajectory.peak_queue:,.0f}"
    assert text["eq.classification"] == report.classification
    for equilibrium in report.equilibria:
        row = next(
            line
            for line in text["eq.table"].splitlines()
            if line.startswith(f"| {equilibrium.kind} |")
        )
        assert f"| {equilibrium.queue:,.0f} |" in row
    lock = next(e for e in scenario.events if e.kind == "lock")
    assert text["incident.lock_start"] == f"{lock.at:g}"


def test_the_published_table_counts_are_those_of_the_data() -> None:
    """How many published values there are, and how many disagree, from the CSV."""
    with PUBLISHED.open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    wrong = [row for row in rows if row["agrees"].strip() != "yes"]
    committed = values_in(PAPERS)
    assert committed["published.rows"]["text"] == f"{len(rows):,}"
    assert committed["published.wrong"]["text"] == f"{len(wrong):,}"
    for row in wrong:
        assert f"| {row['id']} |" in committed["published.wrong_table"]["text"]


def test_the_committed_paper_agrees_with_the_library_now(fast_build: Path) -> None:
    """Every value both builds compute alike is the same in the committed paper."""
    fresh = values_in(fast_build)
    committed = values_in(PAPERS)
    assert set(committed) == set(fresh)
    stale = sorted(
        key
        for key, entry in fresh.items()
        if entry["invariant"] and committed[key]["text"] != entry["text"]
    )
    assert not stale, f"rerun `python -m papers.build`: stale values {stale}"
    paper = (PAPERS / "paper.md").read_text(encoding="utf-8")
    assert paper == fill(committed)
    for name in FIGURE.findall(paper):
        assert (PAPERS / name).read_bytes().startswith(PNG_SIGNATURE), name


def test_a_fast_build_refuses_to_replace_the_committed_paper() -> None:
    """``--fast`` without ``--out`` is a usage error (exit status 2), not a build."""
    result = subprocess.run(
        [sys.executable, "-m", "papers.build", "--fast"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert "--fast needs --out" in result.stderr
