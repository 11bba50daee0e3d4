"""Scenario files: loading, validation rules, variants, dotted paths."""

from __future__ import annotations

import copy
import importlib.resources
import math
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel
from retrystorm.errors import ScenarioError
from retrystorm.scenario import (
    Scenario,
    default_scenario,
    embedded_scenario,
    embedded_scenario_names,
    load_scenario,
    parse_scenario,
)

MINIMAL_TOML = """
[scenario]
name = "small"
horizon = 300.0

[clients]
request_rate = 50.0
timeout = 10.0
max_retries = 2

[web]
pods = 2

[proxy]
pool_size = 20
queue_timeout = 5.0

[database]
service_time = 0.1
"""


def minimal() -> dict[str, Any]:
    """A valid scenario mapping with the required fields only."""
    return {
        "scenario": {"name": "small", "horizon": 300.0},
        "clients": {"request_rate": 50.0, "timeout": 10.0, "max_retries": 2},
        "web": {"pods": 2},
        "proxy": {"pool_size": 20, "queue_timeout": 5.0},
        "database": {"service_time": 0.1},
    }


def with_items(**sections: Any) -> dict[str, Any]:
    """``minimal()`` with whole sections replaced or added."""
    data = minimal()
    data.update(sections)
    return data


def problems_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The (path, message) pairs of the ScenarioError that ``data`` raises."""
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    return info.value.problems


# -- loading -------------------------------------------------------------------------


def test_minimal_file_loads_with_documented_defaults(tmp_path: Path) -> None:
    """A file with only the required fields gets the documented defaults."""
    path = tmp_path / "small.toml"
    path.write_text(MINIMAL_TOML, encoding="utf-8")
    scenario = load_scenario(path)
    assert scenario.time_step == 0.25
    assert scenario.clients.retry_budget == math.inf
    assert scenario.clients.backoff.jitter == "full"
    assert scenario.web.mode == "async"
    assert scenario.proxy.queue_limit == math.inf
    assert [t.name for t in scenario.database.tables] == ["all"]
    assert scenario.events == ()


def test_the_incident_is_embedded_and_is_the_default() -> None:
    """The package ships the incident of 2025-09-16 as its default scenario."""
    assert "incident-2025-09-16" in embedded_scenario_names()
    scenario = default_scenario()
    assert scenario == embedded_scenario("incident-2025-09-16")
    assert scenario.name == "incident-2025-09-16"


def test_incident_scenario_restates_the_postmortem_facts() -> None:
    """The facts of the postmortem are the scenario's values [Sendcloud2025]."""
    scenario = default_scenario()
    lock = scenario.events[0]
    assert lock.kind == "lock"
    assert (lock.at, lock.duration, lock.table) == (60.0, 45.0, "invoice")
    assert scenario.proxy.queue_timeout == 120.0
    assert scenario.web.mode == "async"
    assert scenario.clients.max_retries > 0
    assert scenario.web.crash_after is not None
    assert scenario.web.init_queries > 0
    kinds = {event.kind: event for event in scenario.events}
    assert kinds["rollback"].at == 300.0  # 11:23, four minutes after the lock
    assert (kinds["cold_restart"].at, kinds["cold_restart"].duration) == (2280.0, 180.0)


def test_every_unknown_value_of_the_incident_is_an_assumption_with_a_source() -> None:
    """Each value the postmortem does not give is listed with where it comes from."""
    scenario = default_scenario()
    assumed = {a.field for a in scenario.assumptions}
    unknown = {
        "clients.request_rate",
        "clients.timeout",
        "clients.max_retries",
        "clients.backoff.initial",
        "web.pods",
        "web.crash_after",
        "web.restart_delay",
        "web.init_queries",
        "proxy.pool_size",
        "database.service_time",
        "database.tables.0.share",
    }
    assert unknown <= assumed
    assert all(len(a.source) > 40 for a in scenario.assumptions)
    # The health checks are assumed not to query the database: the field is unset,
    # so no assumption may claim a value for it.
    assert scenario.web.probe_timeout is None
    assert "web.probe_timeout" not in assumed


def test_incident_ships_each_remedy_alone_and_all_together() -> None:
    """The variants: each remedy of the postmortem, all of them, and database checks."""
    scenario = default_scenario()
    assert set(scenario.variant_names) == {
        "proxy-timeout-30s",
        "concurrency-cap",
        "circuit-breaker",
        "load-shedding",
        "health-checks-query-db",
        "all-remedies",
    }
    assert scenario.variant("proxy-timeout-30s").proxy.queue_timeout == 30.0
    # Kubernetes' default probe timeout of 1 s for checks that query the database.
    assert scenario.variant("health-checks-query-db").web.probe_timeout == 1.0
    capped = scenario.variant("concurrency-cap").web
    assert (capped.mode, capped.concurrency_per_pod) == ("bounded", 10)
    assert scenario.variant("circuit-breaker").web.circuit_breaker is not None
    shed = scenario.variant("load-shedding").events[-1]
    assert shed.kind == "shed"
    everything = scenario.variant("all-remedies")
    assert everything.proxy.queue_timeout == 30.0
    assert everything.web.mode == "bounded"
    assert everything.web.circuit_breaker is not None
    assert everything.events[-1].kind == "shed"


def test_variant_is_named_after_its_base_and_has_no_variants() -> None:
    """A variant scenario is ``BASE/VARIANT`` and carries no variants itself."""
    variant = default_scenario().variant("proxy-timeout-30s")
    assert variant.name == "incident-2025-09-16/proxy-timeout-30s"
    assert variant.variants == ()


def test_every_field_documents_its_meaning() -> None:
    """Every field of every scenario model carries a description (with its unit)."""
    seen: set[type[BaseModel]] = set()
    pending: list[type[BaseModel]] = [Scenario]
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"
            pending.extend(_models_in(field.annotation))
    assert len(seen) >= 10


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for argument in typing.get_args(annotation):
        found.extend(_models_in(argument))
    return found


# -- one test per rule ---------------------------------------------------------------


def test_rule_missing_field_is_reported_by_path() -> None:
    """A required field that is absent is named by its dotted path."""
    data = minimal()
    del data["clients"]["timeout"]
    assert ("clients.timeout", "is required (got nothing)") in problems_of(data)


def test_rule_wrong_type_is_reported_with_the_value() -> None:
    """A string where a number belongs is rejected with the value."""
    data = minimal()
    data["clients"]["request_rate"] = "fast"
    with pytest.raises(
        ScenarioError, match=r"clients\.request_rate: must be a number \(got 'fast'\)"
    ):
        parse_scenario(data)


def test_rule_negative_rate() -> None:
    """A negative request rate is rejected with the rule and the value."""
    data = minimal()
    data["clients"]["request_rate"] = -5.0
    with pytest.raises(
        ScenarioError,
        match=r"clients\.request_rate: .*greater than or equal to 0 \(got -5\.0\)",
    ):
        parse_scenario(data)


def test_rule_whole_numbers_for_counts() -> None:
    """A pool of 10.5 connections is rejected."""
    data = minimal()
    data["proxy"]["pool_size"] = 10.5
    with pytest.raises(
        ScenarioError, match=r"proxy\.pool_size: .*integer.*\(got 10\.5\)"
    ):
        parse_scenario(data)


def test_database_connection_limit_is_optional() -> None:
    """A database's max_connections defaults to not stated and keeps its value."""
    assert parse_scenario(minimal()).database.max_connections is None
    data = minimal()
    data["database"]["max_connections"] = 500
    assert parse_scenario(data).database.max_connections == 500


def test_rule_database_connection_limit_positive() -> None:
    """A database that accepts no connection is rejected."""
    data = minimal()
    data["database"]["max_connections"] = 0
    with pytest.raises(
        ScenarioError,
        match=r"database\.max_connections: .*greater than or equal to 1 \(got 0\)",
    ):
        parse_scenario(data)


def test_rule_nan_is_not_a_number() -> None:
    """NaN is rejected where a number belongs."""
    data = minimal()
    data["database"]["service_time"] = math.nan
    with pytest.raises(
        ScenarioError, match=r"database\.service_time: must be a number, not NaN"
    ):
        parse_scenario(data)


def test_rule_infinite_timeout() -> None:
    """A timeout must be finite (only limits and budgets may be inf)."""
    data = minimal()
    data["clients"]["timeout"] = math.inf
    with pytest.raises(
        ScenarioError, match=r"clients\.timeout: must be finite \(got inf\)"
    ):
        parse_scenario(data)


def test_rule_shares_must_sum_to_one() -> None:
    """Table shares that do not sum to 1 are rejected with their sum."""
    data = with_items(
        database={
            "service_time": 0.1,
            "tables": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.3}],
        }
    )
    with pytest.raises(
        ScenarioError, match=r"database\.tables: shares must sum to 1 \(got 0\.8\)"
    ):
        parse_scenario(data)


def test_rule_duplicate_table_names() -> None:
    """Two tables with one name are rejected."""
    tables = [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]
    data = with_items(database={"service_time": 0.1, "tables": tables})
    with pytest.raises(
        ScenarioError, match=r"database\.tables\.1\.name: is a duplicate \(got 'a'\)"
    ):
        parse_scenario(data)


def test_rule_lock_on_an_unknown_table() -> None:
    """A lock must name a table of the database."""
    data = with_items(
        events=[{"kind": "lock", "at": 1.0, "duration": 2.0, "table": "x"}]
    )
    with pytest.raises(
        ScenarioError, match=r"events\.0\.table: must name a table .*\(got 'x'\)"
    ):
        parse_scenario(data)


def test_rule_unknown_event_kind() -> None:
    """An event kind outside lock/capacity/rollback/cold_restart/shed is rejected."""
    data = with_items(events=[{"kind": "flood", "at": 1.0, "duration": 2.0}])
    with pytest.raises(ScenarioError, match=r"events\.0: .*'flood'"):
        parse_scenario(data)


def test_events_after_the_horizon_are_allowed() -> None:
    """A shortened replay keeps the later events (they have no effect)."""
    shortened = default_scenario().with_changes({"scenario.horizon": 600.0})
    assert shortened.first_intervention == 2280.0


def test_rule_variant_event_problems_name_the_variant() -> None:
    """A variant's added event that breaks a rule is reported under the variant."""
    event = {"kind": "lock", "at": 1.0, "duration": 2.0, "table": "x"}
    variant = {"name": "v", "add_events": [event]}
    with pytest.raises(
        ScenarioError, match=r"variants\.0: events\.0\.table: must name"
    ):
        parse_scenario(with_items(variants=[variant]))


def test_rule_event_duration_positive() -> None:
    """An event lasts a positive time."""
    data = with_items(events=[{"kind": "rollback", "at": 3.0, "duration": 0.0}])
    with pytest.raises(
        ScenarioError, match=r"events\.0\.duration: .*greater than 0 \(got 0\.0\)"
    ):
        parse_scenario(data)


def test_rule_capacity_fraction_below_one() -> None:
    """A capacity drop leaves less than the whole pool."""
    event = {"kind": "capacity", "at": 3.0, "duration": 2.0, "fraction": 1.0}
    with pytest.raises(ScenarioError, match=r"events\.0\.fraction: .*less than 1"):
        parse_scenario(with_items(events=[event]))


def test_rule_shed_fraction_positive() -> None:
    """Shedding rejects a positive share."""
    event = {"kind": "shed", "at": 3.0, "duration": 2.0, "fraction": 0.0}
    with pytest.raises(ScenarioError, match=r"events\.0\.fraction: .*greater than 0"):
        parse_scenario(with_items(events=[event]))


def test_rule_bounded_mode_needs_a_cap() -> None:
    """The bounded tier needs ``concurrency_per_pod``."""
    data = minimal()
    data["web"]["mode"] = "bounded"
    with pytest.raises(
        ScenarioError,
        match=r"web\.concurrency_per_pod: is required when web\.mode = 'bounded'",
    ):
        parse_scenario(data)


def test_rule_async_mode_has_no_cap() -> None:
    """A cap in the async tier would be ignored, so it is an error."""
    data = minimal()
    data["web"]["concurrency_per_pod"] = 8
    with pytest.raises(
        ScenarioError,
        match=(
            r"web\.concurrency_per_pod: is only allowed when web\.mode = 'bounded' "
            r"\(got 8"
        ),
    ):
        parse_scenario(data)


def test_rule_unknown_mode() -> None:
    """The tier is async or bounded."""
    data = minimal()
    data["web"]["mode"] = "sync"
    with pytest.raises(
        ScenarioError, match=r"web\.mode: .*'async' or 'bounded' \(got 'sync'\)"
    ):
        parse_scenario(data)


def test_rule_crash_share_below_one() -> None:
    """The crash rule's failure share lies in [0, 1)."""
    data = minimal()
    data["web"]["crash_failure_share"] = 1.0
    with pytest.raises(ScenarioError, match=r"web\.crash_failure_share: .*less than 1"):
        parse_scenario(data)


def test_probe_timeout_is_optional_and_may_be_infinite() -> None:
    """Absent (None) or inf: health checks that do not depend on the database."""
    assert parse_scenario(minimal()).web.probe_timeout is None
    data = minimal()
    data["web"]["probe_timeout"] = math.inf
    assert parse_scenario(data).web.probe_timeout == math.inf


def test_rule_probe_timeout_positive() -> None:
    """A health check's wait for a connection is positive."""
    data = minimal()
    data["web"]["probe_timeout"] = 0.0
    with pytest.raises(
        ScenarioError, match=r"web\.probe_timeout: .*greater than 0 \(got 0\.0\)"
    ):
        parse_scenario(data)


def test_rule_time_step_resolves_the_probe_timeout() -> None:
    """The fluid step is at most the probe timeout (the wait is read in steps)."""
    data = minimal()
    data["scenario"]["time_step"] = 0.25
    data["web"]["probe_timeout"] = 0.2
    with pytest.raises(
        ScenarioError,
        match=(
            r"scenario\.time_step: must be at most web\.probe_timeout \(0\.2 s\) "
            r"\(got 0\.25\)"
        ),
    ):
        parse_scenario(data)


def test_rule_breaker_threshold_inside_zero_one() -> None:
    """The breaker's failure threshold lies strictly between 0 and 1."""
    data = minimal()
    data["web"]["circuit_breaker"] = {"failure_threshold": 0.0}
    with pytest.raises(ScenarioError, match=r"web\.circuit_breaker\.failure_threshold"):
        parse_scenario(data)


def test_rule_request_rate_or_profile_not_both() -> None:
    """A constant rate and a profile together are ambiguous."""
    data = minimal()
    data["clients"]["rate_profile"] = [[0.0, 10.0]]
    with pytest.raises(
        ScenarioError,
        match=r"clients\.request_rate: exactly one of request_rate and rate_profile",
    ):
        parse_scenario(data)


def test_rule_request_rate_or_profile_not_neither() -> None:
    """Some demand must be given."""
    data = minimal()
    del data["clients"]["request_rate"]
    with pytest.raises(
        ScenarioError, match=r"exactly one of request_rate and rate_profile"
    ):
        parse_scenario(data)


def test_rule_profile_starts_at_zero() -> None:
    """A rate profile starts at t = 0."""
    data = minimal()
    del data["clients"]["request_rate"]
    data["clients"]["rate_profile"] = [[5.0, 10.0]]
    with pytest.raises(
        ScenarioError, match=r"clients\.rate_profile\.0\.0: must be 0 \(got 5\.0\)"
    ):
        parse_scenario(data)


def test_rule_profile_times_increase() -> None:
    """A rate profile's start times increase."""
    data = minimal()
    del data["clients"]["request_rate"]
    data["clients"]["rate_profile"] = [[0.0, 10.0], [0.0, 20.0]]
    with pytest.raises(
        ScenarioError, match=r"clients\.rate_profile\.1\.0: start times must increase"
    ):
        parse_scenario(data)


def test_rule_profile_rates_nonnegative() -> None:
    """A rate profile's rates are not negative."""
    data = minimal()
    del data["clients"]["request_rate"]
    data["clients"]["rate_profile"] = [[0.0, -1.0]]
    with pytest.raises(
        ScenarioError, match=r"clients\.rate_profile\.0\.1: must be >= 0 \(got -1\.0\)"
    ):
        parse_scenario(data)


def test_rule_backoff_cap_not_below_initial() -> None:
    """The backoff cap is at least the first delay."""
    data = minimal()
    data["clients"]["backoff"] = {"initial": 5.0, "cap": 1.0}
    with pytest.raises(
        ScenarioError, match=r"clients\.backoff\.cap: must be at least backoff\.initial"
    ):
        parse_scenario(data)


def test_rule_backoff_multiplier_at_least_one() -> None:
    """Backoff never shrinks."""
    data = minimal()
    data["clients"]["backoff"] = {"multiplier": 0.5}
    with pytest.raises(
        ScenarioError,
        match=r"clients\.backoff\.multiplier: .*greater than or equal to 1",
    ):
        parse_scenario(data)


def test_rule_time_step_resolves_the_timeouts() -> None:
    """The fluid step is at most a tenth of the shortest timeout."""
    data = minimal()
    data["scenario"]["time_step"] = 1.0
    with pytest.raises(
        ScenarioError,
        match=(
            r"scenario\.time_step: must be at most a tenth of the shortest timeout "
            r"\(5\.0 s\) \(got 1\.0\)"
        ),
    ):
        parse_scenario(data)


def test_rule_time_step_bounds_the_number_of_steps() -> None:
    """A replay has at most two million steps."""
    data = minimal()
    data["scenario"]["horizon"] = 1e9
    with pytest.raises(
        ScenarioError, match=r"scenario\.time_step: must give at most 2,000,000 steps"
    ):
        parse_scenario(data)


def test_rule_unknown_field_suggests_the_close_name() -> None:
    """A misspelt field is rejected (extra=forbid) and the right name suggested."""
    data = minimal()
    data["proxy"]["queue_timout"] = 30.0
    with pytest.raises(
        ScenarioError,
        match=(
            r"proxy\.queue_timout: is not a known field \(got 30\.0\); "
            r"did you mean queue_timeout"
        ),
    ):
        parse_scenario(data)


def test_rule_unknown_section() -> None:
    """An unknown top-level table is rejected."""
    data = with_items(cache={"size": 3})
    with pytest.raises(ScenarioError, match=r"cache: is not a known field"):
        parse_scenario(data)


def test_rule_assumption_value_must_match_the_field() -> None:
    """An assumption repeats its field's value; a mismatch is an error."""
    assumption = {"field": "clients.request_rate", "value": 60.0, "source": "guess"}
    with pytest.raises(
        ScenarioError,
        match=(
            r"assumptions\.0\.value: must equal the value of clients\.request_rate "
            r"\(50\.0\) \(got 60\.0\)"
        ),
    ):
        parse_scenario(with_items(assumptions=[assumption]))


def test_rule_assumption_names_a_field() -> None:
    """An assumption on a field that does not exist is an error with a suggestion."""
    assumption = {"field": "clients.request_rat", "value": 50.0, "source": "guess"}
    with pytest.raises(
        ScenarioError,
        match=(
            r"assumptions\.0\.field: does not name a field "
            r".*did you mean clients\.request_rate"
        ),
    ):
        parse_scenario(with_items(assumptions=[assumption]))


def test_rule_assumption_varied_only_when_numeric() -> None:
    """Only numeric assumptions can be varied from half to double."""
    assumption = {
        "field": "web.mode",
        "value": "async",
        "source": "guess",
        "vary": True,
    }
    with pytest.raises(
        ScenarioError,
        match=r"assumptions\.0\.vary: must be false for a non-numeric field",
    ):
        parse_scenario(with_items(assumptions=[assumption]))


def test_rule_assumption_listed_once() -> None:
    """A field is assumed at most once."""
    assumption = {"field": "web.pods", "value": 2, "source": "guess"}
    with pytest.raises(ScenarioError, match=r"assumptions\.1\.field: is a duplicate"):
        parse_scenario(with_items(assumptions=[assumption, assumption]))


def test_rule_variant_sets_a_known_path() -> None:
    """A variant's ``set`` names existing fields."""
    variant = {"name": "v", "set": {"proxy.queue_timout": 1.0}}
    with pytest.raises(
        ScenarioError,
        match=r"variants\.0\.set\.proxy\.queue_timout: does not name a field",
    ):
        parse_scenario(with_items(variants=[variant]))


def test_rule_variant_gives_a_valid_scenario() -> None:
    """A variant is validated when the file is loaded."""
    variant = {"name": "v", "set": {"proxy.queue_timeout": -1.0}}
    with pytest.raises(
        ScenarioError,
        match=r"variants\.0\.set\.proxy\.queue_timeout: .*greater than 0 \(got -1\.0\)",
    ):
        parse_scenario(with_items(variants=[variant]))


def test_rule_variant_names_unique() -> None:
    """Two variants with one name are rejected."""
    variant = {"name": "v", "set": {"proxy.queue_timeout": 1.0}}
    with pytest.raises(ScenarioError, match=r"variants\.1\.name: is a duplicate"):
        parse_scenario(with_items(variants=[variant, variant]))


def test_rule_unknown_variant_lists_the_known_ones() -> None:
    """Asking for an unknown variant names the ones that exist."""
    with pytest.raises(
        ScenarioError, match=r"unknown variant 'faster' \(known: proxy-timeout-30s, "
    ):
        default_scenario().variant("faster")


def test_rule_not_toml(tmp_path: Path) -> None:
    """A file that is not TOML is reported, not parsed."""
    path = tmp_path / "broken.toml"
    path.write_text("[scenario\nname = 1", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"is not valid TOML"):
        load_scenario(path)


def test_rule_missing_file(tmp_path: Path) -> None:
    """A path that does not exist is a ScenarioError, not an OSError."""
    with pytest.raises(ScenarioError, match=r"cannot be read"):
        load_scenario(tmp_path / "absent.toml")


def test_rule_not_utf8(tmp_path: Path) -> None:
    """A file in another encoding is named as such, not a UnicodeDecodeError."""
    path = tmp_path / "utf16.toml"
    path.write_text('[scenario]\nname = "x"\n', encoding="utf-16")
    with pytest.raises(
        ScenarioError, match=r"is not UTF-8 text \(byte 0xff at position 0\)"
    ):
        load_scenario(path)


def test_a_byte_order_mark_is_allowed(tmp_path: Path) -> None:
    """Editors that write a UTF-8 byte-order mark produce a readable file."""
    text = (
        importlib.resources.files("retrystorm")
        .joinpath("scenarios", "incident-2025-09-16.toml")
        .read_text(encoding="utf-8")
    )
    path = tmp_path / "bom.toml"
    path.write_text(text, encoding="utf-8-sig")
    assert load_scenario(path) == default_scenario()


def test_all_problems_are_reported_at_once() -> None:
    """Every broken rule of a file is listed, not only the first."""
    data = minimal()
    data["clients"]["request_rate"] = -1.0
    data["proxy"]["pool_size"] = 0
    paths = {path for path, _ in problems_of(data)}
    assert {"clients.request_rate", "proxy.pool_size"} <= paths


# -- derived scenarios and paths -----------------------------------------------------


def test_with_changes_revalidates() -> None:
    """A change that breaks a rule is rejected like a file would be."""
    with pytest.raises(
        ScenarioError, match=r"proxy\.pool_size: .*greater than or equal to 1"
    ):
        default_scenario().with_changes({"proxy.pool_size": 0})


def test_with_changes_suggests_close_paths() -> None:
    """An unknown dotted path is named, with the closest real ones."""
    with pytest.raises(
        ScenarioError,
        match=(
            r"proxy\.pool: does not name a field .*\(got 'proxy\.pool'\); "
            r"did you mean proxy\.pool_size"
        ),
    ):
        default_scenario().with_changes({"proxy.pool": 10})


def test_with_changes_leaves_the_original_alone() -> None:
    """Scenarios are immutable: a change returns a new one."""
    scenario = default_scenario()
    changed = scenario.with_changes({"proxy.pool_size": 150})
    assert (scenario.proxy.pool_size, changed.proxy.pool_size) == (100, 150)


def test_with_changes_moves_assumptions_along() -> None:
    """An assumption on a changed field takes the new value."""
    changed = default_scenario().with_changes({"clients.timeout": 20.0})
    (assumption,) = [a for a in changed.assumptions if a.field == "clients.timeout"]
    assert assumption.value == 20.0


def test_with_changes_drops_assumptions_on_removed_fields() -> None:
    """Removing the events removes the assumptions about them."""
    quiet = default_scenario().with_changes({"events": []})
    assert quiet.events == ()
    assert not any(a.field.startswith("events.") for a in quiet.assumptions)


def test_with_changes_drops_assumptions_on_fields_set_to_none() -> None:
    """Switching an optional field off (None) drops the assumption on it."""
    quiet = default_scenario().with_changes({"web.crash_after": None})
    assert quiet.web.crash_after is None
    assert not any(a.field == "web.crash_after" for a in quiet.assumptions)


def test_with_changes_sets_a_whole_table() -> None:
    """A value may be a whole table (an optional section switched on)."""
    changed = default_scenario().with_changes(
        {"web.circuit_breaker": {"open_duration": 5.0}}
    )
    assert changed.web.circuit_breaker is not None
    assert changed.web.circuit_breaker.open_duration == 5.0


def test_numeric_fields_cover_every_number_by_path() -> None:
    """numeric_fields lists each number once, by a path field_value resolves."""
    scenario = default_scenario()
    fields = scenario.numeric_fields()
    assert fields["proxy.queue_timeout"] == 120.0
    assert fields["events.0.duration"] == 45.0
    assert fields["database.tables.0.share"] == 0.6
    assert fields["proxy.queue_limit"] == math.inf
    assert not any(path.startswith(("assumptions", "variants")) for path in fields)
    for path, value in fields.items():
        assert float(scenario.field_value(path)) == value


def test_every_varied_assumption_is_a_numeric_field() -> None:
    """The sensitivity analysis can vary every assumption marked vary."""
    scenario = default_scenario()
    fields = scenario.numeric_fields()
    for assumption in scenario.vary_assumptions:
        assert fields[assumption.field] == assumption.value


def test_trigger_end_and_first_intervention() -> None:
    """The trigger ends with the lock; the cold restart is the first intervention."""
    scenario = default_scenario()
    assert scenario.trigger_start == 60.0
    assert scenario.trigger_end == 105.0
    assert scenario.first_intervention == 2280.0
    quiet = scenario.with_changes({"events": []})
    assert quiet.trigger_end is None
    assert quiet.first_intervention is None


def test_rate_profile_is_piecewise_constant() -> None:
    """A profile gives the rate of its last start and integrates exactly."""
    data = minimal()
    del data["clients"]["request_rate"]
    data["clients"]["rate_profile"] = [[0.0, 10.0], [100.0, 30.0]]
    clients = parse_scenario(data).clients
    assert list(clients.rate_at(np.array([0.0, 99.9, 100.0, 250.0]))) == [
        10.0,
        10.0,
        30.0,
        30.0,
    ]
    # 10/s for 50 s and 30/s for 50 s.
    assert clients.requests_between(50.0, 150.0) == pytest.approx(2000.0, rel=1e-12)
    assert clients.peak_request_rate == 30.0


def test_backoff_delays_grow_to_the_cap() -> None:
    """Delay before retry k is min(cap, initial * multiplier**(k-1))."""
    backoff = default_scenario().clients.backoff
    assert [backoff.delay(k) for k in (1, 2, 3, 6)] == [1.0, 2.0, 4.0, 30.0]


# -- the service graph ---------------------------------------------------------------

SMALL_GRAPH = {
    "services": [{"name": "shop", "entry_rate": 50.0}, {"name": "web", "pods": 2}],
    "resources": [{"name": "proxy", "kind": "pool", "pool_size": 20}],
    "calls": [
        {"caller": "shop", "callee": "web", "timeout": 10.0, "max_retries": 2},
        {"caller": "web", "callee": "proxy"},
    ],
}


def test_graph_table_is_optional_and_read_when_given(tmp_path: Path) -> None:
    """A [graph] table becomes `Scenario.graph`; without one it is None."""
    assert load_scenario(_write(tmp_path, MINIMAL_TOML)).graph is None
    text = MINIMAL_TOML + (
        '\n[[graph.services]]\nname = "shop"\nentry_rate = 50.0\n'
        '\n[[graph.services]]\nname = "web"\n'
        '\n[[graph.calls]]\ncaller = "shop"\ncallee = "web"\ntimeout = 10.0\n'
    )
    graph = load_scenario(_write(tmp_path, text)).graph
    assert graph is not None
    assert [s.name for s in graph.services] == ["shop", "web"]
    assert graph.calls[0].timeout == 10.0


def _write(folder: Path, text: str) -> Path:
    """Write ``text`` to a scenario file in ``folder`` and return its path."""
    path = folder / "scenario.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_incident_scenario_carries_its_products_graph() -> None:
    """The embedded incident's graph: seven products sharing its 160/s."""
    scenario = default_scenario()
    assert scenario.graph is not None
    entry = {s.name: s.entry_rate for s in scenario.graph.services if s.entry_rate}
    assert len(entry) == 7
    # The products split the single tier's fresh rate (the file's comment).
    assert sum(entry.values()) == scenario.clients.request_rate
    proxy = scenario.graph.resources[0]
    assert (proxy.name, proxy.queue_timeout) == ("proxy", scenario.proxy.queue_timeout)


def test_rule_graph_field_is_reported_by_dotted_path() -> None:
    """A bad value inside the graph is named like every scenario field."""
    graph = copy.deepcopy(SMALL_GRAPH)
    graph["calls"][1]["timeout"] = -1.0
    assert problems_of(with_items(graph=graph)) == [
        ("graph.calls.1.timeout", "input should be greater than 0 (got -1.0)")
    ]


def test_rule_graph_reference_is_reported_by_dotted_path() -> None:
    """A call to a node the graph lacks is named by the call's field."""
    graph = copy.deepcopy(SMALL_GRAPH)
    graph["calls"][1]["callee"] = "nowhere"
    assert problems_of(with_items(graph=graph)) == [
        ("graph.calls.1.callee", "names no node (got 'nowhere')")
    ]


def test_rule_graph_pool_needs_a_size() -> None:
    """A rule between the fields of a graph resource is named by its path."""
    graph = copy.deepcopy(SMALL_GRAPH)
    graph["resources"][0].pop("pool_size")
    assert problems_of(with_items(graph=graph)) == [
        ("graph.resources.0.pool_size", "a pool needs a pool_size")
    ]


def test_rule_graph_unknown_field_suggests_the_closest() -> None:
    """An unknown key in a graph call is rejected with the closest known name."""
    graph = copy.deepcopy(SMALL_GRAPH)
    graph["calls"][0]["retries"] = 2
    ((path, message),) = problems_of(with_items(graph=graph))
    assert path == "graph.calls.0.retries"
    assert "did you mean max_retries" in message


def test_with_changes_reaches_graph_fields() -> None:
    """Dotted paths name graph fields in changes as anywhere else."""
    scenario = parse_scenario(with_items(graph=SMALL_GRAPH))
    changed = scenario.with_changes({"graph.services.0.entry_rate": 70.0})
    assert changed.graph is not None
    assert changed.graph.services[0].entry_rate == 70.0
    assert scenario.graph is not None
    assert scenario.graph.services[0].entry_rate == 50.0
    with pytest.raises(ScenarioError, match=r"graph\.calls\.0\.timeout: input"):
        scenario.with_changes({"graph.calls.0.timeout": 0.0})


def test_incident_variants_change_the_graph_as_the_tier() -> None:
    """The remedies that change the proxy or the web tier change the graph alike."""
    scenario = default_scenario()
    for name in scenario.variant_names:
        variant = scenario.variant(name)
        assert variant.graph is not None
        web = variant.graph.services[7]
        assert web.name == "web"
        bounded = variant.web.mode == "bounded"
        assert web.concurrency == (variant.web.concurrency_per_pod if bounded else None)
        assert variant.graph.resources[0].queue_timeout == variant.proxy.queue_timeout
