"""The review: verdicts, timeline, remedies, sensitivity and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from retrystorm.cli import main
from retrystorm.errors import InvalidParameterError
from retrystorm.review import VERDICTS, count_replays, judge, review_scenario
from retrystorm.scenario import default_scenario

INCIDENT = default_scenario()


@pytest.fixture(scope="module")
def incident_review():
    """The review of the embedded incident, with its remedies, once per module."""
    return review_scenario(INCIDENT, sensitivity=False)


def _quiet(scenario):
    """A short scenario without events, for fast verdicts."""
    return scenario.with_changes({"events": [], "scenario.horizon": 600.0})


def test_incident_is_metastable_and_the_backlog_reaches_tens_of_thousands(
    incident_review,
) -> None:
    """The postmortem: stuck after the 45 s lock, over 50,000 queued."""
    assert incident_review.verdict == "metastable"
    assert incident_review.recovery_time is None
    assert incident_review.peak_queue > 10_000
    assert incident_review.classification == "vulnerable"


def test_incident_remedies_recover(incident_review) -> None:
    """The 30 s proxy timeout and a concurrency cap each recover by themselves."""
    outcomes = {v.name: v for v in incident_review.remedies}
    for name in ("proxy-timeout-30s", "concurrency-cap", "all-remedies"):
        assert outcomes[name].verdict in ("recovers", "stable"), name
        assert outcomes[name].recovery_time is not None


def test_cold_restart_recovers_the_incident(incident_review) -> None:
    """Emptying everything at once brings the system back within minutes."""
    trajectory = incident_review.trajectory
    restart = INCIDENT.first_intervention
    assert restart is not None
    again = trajectory.recovery_time(after=restart, before=float(trajectory.time[-1]))
    assert again is not None
    assert again < 600.0


def test_timeline_is_ordered_and_names_every_event(incident_review) -> None:
    """Timeline entries come in time order and mention each event kind."""
    times = [entry.time for entry in incident_review.timeline]
    assert times == sorted(times)
    text = " ".join(entry.text for entry in incident_review.timeline)
    for kind in ("lock", "rollback", "cold restart"):
        assert kind in text


def test_no_trigger_below_capacity_is_stable() -> None:
    """Without a trigger and with utilisation below one the verdict is stable."""
    result = review_scenario(
        _quiet(INCIDENT), remedies=False, sensitivity=False, limits=False
    )
    assert result.verdict == "stable"
    assert result.recovery_time == 0.0


def test_demand_above_capacity_is_overloaded() -> None:
    """Demand above what the pool can serve has no good equilibrium."""
    scenario = _quiet(INCIDENT).with_changes({"clients.request_rate": 400.0})
    result = review_scenario(scenario, remedies=False, sensitivity=False, limits=False)
    assert result.classification == "overloaded"
    assert result.verdict == "overloaded"


def test_judge_agrees_with_the_review(incident_review) -> None:
    """`judge` on the review's own replay gives the review's verdict."""
    verdict, recovery = judge(incident_review.trajectory, incident_review.equilibria)
    assert verdict == incident_review.verdict
    assert recovery == incident_review.recovery_time


def test_sensitivity_varies_every_marked_assumption() -> None:
    """One row per varied numeric assumption, at half and double its value."""
    scenario = INCIDENT.with_changes({"scenario.horizon": 900.0})
    result = review_scenario(scenario, remedies=False, limits=False)
    fields = {row.field for row in result.sensitivity}
    marked = {
        a.field
        for a in scenario.vary_assumptions
        if isinstance(a.value, int | float) and not isinstance(a.value, bool)
    }
    assert fields == marked
    whole = {
        a.field
        for a in scenario.vary_assumptions
        if isinstance(a.value, int) and not isinstance(a.value, bool)
    }
    for row in result.sensitivity:
        assert len(row.values) == 2
        assert all(v in VERDICTS or v.startswith("invalid") for v in row.verdicts)
        if row.field in whole:
            assert all(float(v).is_integer() and v >= 1 for v in row.values)
        else:
            assert row.values == (row.base_value * 0.5, row.base_value * 2.0)


def test_count_replays_matches_the_progress_calls() -> None:
    """The progress callback is called once per replay that count_replays counts."""
    scenario = INCIDENT.with_changes({"scenario.horizon": 600.0})
    calls: list[str] = []
    review_scenario(scenario, progress=calls.append)
    assert len(calls) == count_replays(scenario)


@pytest.mark.parametrize("factor", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_factor_is_rejected(factor: float) -> None:
    """Sensitivity factors must be finite and positive."""
    with pytest.raises(InvalidParameterError, match="`factors`"):
        review_scenario(INCIDENT, factors=(factor,))


def test_review_json_has_the_documented_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`review --json` prints one object with verdict, recovery, peak, equilibria."""
    with pytest.raises(SystemExit) as exit_info:
        main(["review", "--json", "--no-sensitivity", "--no-remedies"])
    assert exit_info.value.code == 0
    payload = json.loads(capsys.readouterr().out)
    for key in (
        "verdict",
        "recovery_time",
        "peak_queue",
        "classification",
        "equilibria",
        "limits",
        "recommendations",
    ):
        assert key in payload
    assert payload["verdict"] == "metastable"
    assert payload["limits"]["queue_timeout_max"] < 120.0
    assert any("proxy queueing timeout" in r for r in payload["recommendations"])


def test_review_prints_the_limits_and_recommendations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`review` shows the design limits table and what to change."""
    with pytest.raises(SystemExit) as exit_info:
        main(["review", "--no-sensitivity", "--no-remedies"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "design limits" in out
    assert "recommendations:" in out


def test_review_without_limits_leaves_them_out() -> None:
    """`limits=False` skips the limits: none in the result, none in its JSON."""
    result = review_scenario(
        _quiet(INCIDENT), remedies=False, sensitivity=False, limits=False
    )
    assert result.limits is None
    assert result.to_dict()["limits"] is None
    assert result.to_dict()["recommendations"] == []


def test_review_plot_writes_a_png(tmp_path: Path, capsys) -> None:
    """`--plot` writes a PNG file."""
    target = tmp_path / "replay.png"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "review",
                "--no-sensitivity",
                "--no-remedies",
                "--no-limits",
                "--plot",
                str(target),
            ]
        )
    assert exit_info.value.code == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "verdict" in capsys.readouterr().out


def test_review_of_a_bad_file_is_one_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scenario mistake exits 2 with the field path, before any computation."""
    bad = tmp_path / "bad.toml"
    text = (Path(__file__).parents[1] / "model/retrystorm/scenarios").glob("*.toml")
    source = next(p for p in text if p.name == "incident-2025-09-16.toml")
    bad.write_text(
        source.read_text().replace("pool_size = 100", "pool_size = -5"), "utf-8"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["review", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "proxy.pool_size" in err
    assert "Traceback" not in err


def test_review_of_an_unknown_variant_is_an_error(capsys) -> None:
    """An unknown variant name is reported with the known names."""
    with pytest.raises(SystemExit) as exit_info:
        main(["review", "--variant", "no-such-remedy"])
    assert exit_info.value.code == 2
    assert "proxy-timeout-30s" in capsys.readouterr().err


def test_a_cold_restart_after_the_horizon_is_not_replayed_nor_judged() -> None:
    """The window ends with the replay; the timeline says the restart never ran."""
    scenario = default_scenario()
    index = next(i for i, e in enumerate(scenario.events) if e.kind == "cold_restart")
    late = scenario.with_changes({f"events.{index}.at": 5000.0})
    review = review_scenario(late, remedies=False, sensitivity=False, limits=False)
    assert review.window_end == late.horizon
    texts = [entry.text for entry in review.timeline]
    assert not any("after the cold restart" in text for text in texts)
    assert review.timeline[-1].time == 5000.0
    assert review.timeline[-1].text.endswith(
        "after the replay ends at 3000 s: not replayed"
    )
    assert all(entry.time <= late.horizon for entry in review.timeline[:-1])


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("missing/replay.png", "`plot` must be in an existing folder"),
        ("replay.txt", "`plot` must end in .png, .pdf, .svg"),
    ],
)
def test_review_refuses_an_unwritable_plot_before_replaying(
    tmp_path: Path, capsys, name: str, rule: str
) -> None:
    """A bad --plot path is a one-line error at once, not after the replay."""
    with pytest.raises(SystemExit) as exit_info:
        main(["review", "--plot", str(tmp_path / name)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert rule in err
    assert err.count("\n") == 1


def test_errors_repeat_what_was_typed_without_emoji(capsys) -> None:
    """Rich would turn ":100:" into an emoji; a file name must stay as typed."""
    with pytest.raises(SystemExit):
        main(["review", ":100:.toml"])
    assert ":100:.toml" in capsys.readouterr().err


# -- the service graph -------------------------------------------------------------


def _graph_review(scenario):
    """A review with only the replay and the graph analysis."""
    return review_scenario(scenario, remedies=False, sensitivity=False, limits=False)


def test_incident_review_carries_the_graph_and_the_lock_blast_radius() -> None:
    """The lock on invoice fills the shared proxy: all seven products fail."""
    result = _graph_review(INCIDENT)
    assert result.graph is not None
    assert result.graph.node("proxy").classification == "vulnerable"
    # The faults are the locked table for the lock's 45 s (the scenario's event).
    (radius,) = result.graph.blast_radii
    assert (radius.fault, radius.duration) == ("database.invoice", 45.0)
    assert [s.node for s in radius.saturated] == ["proxy"]
    assert len(radius.losses) == 7
    # By hand: every product's requests fail, 160/s in all (the entry rates).
    assert radius.lost_rate == pytest.approx(160.0, rel=1e-12)
    payload = result.to_dict()["graph"]
    assert payload["classification"] == "vulnerable"
    assert payload["blast_radii"][0]["fault"] == "database.invoice"


def test_review_of_a_scenario_without_a_graph_has_no_graph_section(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A single-tier scenario: no graph in the result, its JSON or its printout."""
    # The variants that name graph fields go with the graph.
    plain = _quiet(INCIDENT).model_copy(update={"graph": None, "variants": ()})
    result = _graph_review(plain)
    assert result.graph is None
    assert result.to_dict()["graph"] is None
    source = tmp_path / "plain.toml"
    source.write_text(_toml_without_graph(), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["review", str(source), "--no-sensitivity", "--no-remedies"])
    assert exit_info.value.code == 0
    assert "service graph" not in capsys.readouterr().out


def _toml_without_graph() -> str:
    """The embedded incident's file up to its graph table."""
    import importlib.resources  # noqa: PLC0415

    text = (
        importlib.resources.files("retrystorm")
        / "scenarios"
        / "incident-2025-09-16.toml"
    ).read_text(encoding="utf-8")
    body = text[: text.index("\n[graph]")]
    # The variants that name graph fields go with the graph.
    return "\n".join(
        line.replace(', "graph.resources.0.queue_timeout" = 30.0', "").replace(
            ', "graph.services.7.concurrency" = 10', ""
        )
        for line in body.splitlines()
    )


def test_review_prints_the_graph_findings_and_the_blast_radius(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`review` shows the graph's classification counts, findings and losses."""
    with pytest.raises(SystemExit) as exit_info:
        main(["review", "--no-sensitivity", "--no-remedies", "--no-limits"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    # 12 nodes: 7 products, web, proxy, database and 2 tables; only the proxy
    # has a bad state (`retrystorm graph` agrees).
    assert "service graph: vulnerable (12 nodes: 0 overloaded, 1 vulnerable" in out
    assert "proxy (pool) is vulnerable" in out
    assert "blast radius of a 45 s stall of database.invoice" in out
    for product in ("api", "panel", "checkout", "tracking", "returns", "payments"):
        assert product in out


def test_review_json_of_a_variant_uses_the_variant_graph(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The 30 s proxy timeout changes the graph's proxy too: it becomes stable."""
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "review",
                "--json",
                "--variant",
                "proxy-timeout-30s",
                "--no-sensitivity",
                "--no-remedies",
                "--no-limits",
            ]
        )
    assert exit_info.value.code == 0
    graph = json.loads(capsys.readouterr().out)["graph"]
    proxy = next(n for n in graph["nodes"] if n["name"] == "proxy")
    assert proxy["classification"] == "stable"
