"""Equilibria of the fluid model: closed forms, stability, the critical backlog."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from retrystorm.equilibria import (
    EquilibriumReport,
    bad_equilibrium_exists,
    boundary_wait,
    find_equilibria,
    good_equilibrium_exists,
    on_time_share,
    saturated_attempt_rate,
)
from retrystorm.errors import InvalidParameterError
from retrystorm.fluid import (
    budgeted_attempts_per_request,
    late_share,
    simulate_fluid,
)
from retrystorm.scenario import Scenario, default_scenario, parse_scenario

_REPORTS: dict[str, EquilibriumReport] = {}

rates = st.floats(min_value=0.1, max_value=1e4)
shares = st.floats(min_value=0.0, max_value=1.0)
retries = st.integers(min_value=0, max_value=6)
budgets = st.one_of(st.just(math.inf), st.floats(min_value=0.0, max_value=5.0))


def report(scenario: Scenario) -> EquilibriumReport:
    """find_equilibria, once per scenario (it is deterministic)."""
    key = scenario.model_dump_json()
    if key not in _REPORTS:
        _REPORTS[key] = find_equilibria(scenario)
    return _REPORTS[key]


def system(**changes: Any) -> Scenario:
    """A small system (100 connections of 0.4 s, kappa = 250/s) with ``changes``."""
    data: dict[str, Any] = {
        "scenario": {"name": "system", "horizon": 3000.0, "time_step": 0.25},
        "clients": {"request_rate": 120.0, "timeout": 40.0, "max_retries": 3},
        "web": {"pods": 4},
        "proxy": {"pool_size": 100, "queue_timeout": 120.0},
        "database": {"service_time": 0.4},
    }
    return parse_scenario(data).with_changes(changes)


# -- closed forms --------------------------------------------------------------------


@given(rates, rates, shares, retries, budgets)
def test_saturated_attempt_rate_is_the_fixed_point_of_the_attempt_map(
    request_rate: float,
    throughput: float,
    on_time: float,
    max_retries: int,
    budget: float,
) -> None:
    """x_sat solves x = lambda N_beta(1 - kappa g / x) whenever it exceeds kappa."""
    attempts = saturated_attempt_rate(
        request_rate, throughput, on_time, max_retries, budget
    )
    if attempts > throughput:
        late = 1.0 - throughput * on_time / attempts
        induced = request_rate * budgeted_attempts_per_request(
            late, max_retries, budget
        )
        assert induced == pytest.approx(attempts, rel=1e-9)


@given(rates, rates, shares, retries, budgets)
def test_bad_equilibrium_exists_iff_the_saturated_rate_exceeds_the_pool(
    request_rate: float,
    throughput: float,
    on_time: float,
    max_retries: int,
    budget: float,
) -> None:
    """Theorem 2: lambda N_beta(1 - g) > kappa  <=>  x_sat > kappa."""
    exists = bad_equilibrium_exists(
        request_rate, throughput, on_time, max_retries, budget
    )
    attempts = saturated_attempt_rate(
        request_rate, throughput, on_time, max_retries, budget
    )
    margin = abs(attempts - throughput) / throughput
    if margin > 1e-9:  # away from the knife edge x_sat = kappa
        assert exists == (attempts > throughput)


@given(rates, retries, budgets)
def test_with_every_served_request_wasted_the_amplification_decides(
    request_rate: float, max_retries: int, budget: float
) -> None:
    """Corollary: with g = 0, x_sat = lambda min(R + 1, 1 + beta)."""
    attempts = saturated_attempt_rate(request_rate, 1.0, 0.0, max_retries, budget)
    assert attempts == pytest.approx(request_rate * min(max_retries + 1, 1.0 + budget))


@given(
    st.floats(min_value=1.0, max_value=500.0),
    st.floats(min_value=1.0, max_value=100.0),
    st.floats(min_value=0.05, max_value=5.0),
    retries,
)
def test_boundary_wait_solves_its_equation(
    request_rate: float, client_timeout: float, service_rate: float, max_retries: int
) -> None:
    """Theorem 3: lambda N(exp(-mu (T_c - w*))) = kappa at the boundary."""
    throughput = 2.0 * request_rate  # below the all-failing (R + 1) lambda iff R >= 2
    wait = boundary_wait(
        request_rate, throughput, client_timeout, service_rate, max_retries
    )
    if wait is None:
        assert (
            request_rate * (max_retries + 1) <= throughput
            or late_share(0.0, client_timeout, service_rate) > 0.4
        )
        return
    late = late_share(wait, client_timeout, service_rate)
    attempts = request_rate * budgeted_attempts_per_request(late, max_retries)
    assert attempts == pytest.approx(throughput, rel=1e-9)


def test_on_time_share_without_crashes_is_one_minus_the_late_share() -> None:
    """g(w) = 1 - exp(-mu (T_c - w)) at h = 0; crashes only lower it."""
    assert on_time_share(30.0, 40.0, 0.1) == pytest.approx(
        1.0 - math.exp(-1.0), rel=1e-14
    )
    assert on_time_share(30.0, 40.0, 0.1, crash_rate=0.05) < on_time_share(
        30.0, 40.0, 0.1
    )
    assert on_time_share(50.0, 40.0, 0.1) == 0.0


def test_good_equilibrium_needs_attempts_below_capacity() -> None:
    """Theorem 1: x_0 < kappa_0."""
    assert good_equilibrium_exists(120.0, 250.0)
    assert not good_equilibrium_exists(250.0, 250.0)


# -- the incident --------------------------------------------------------------------


def test_incident_is_vulnerable_with_a_bad_state_of_57600() -> None:
    """The incident's system: a good state and a self-sustaining bad one.

    Bad state: T_q = 120 s > T_c = 35 s, so every served request is wasted and
    (R + 1) lambda = 3 x 160 = 480/s attempts arrive. The health checks do not
    query the database and the failure share 230/480 stays below 0.5, so no pod
    crashes; the queue is 480 x 120 = 57,600.
    """
    result = report(default_scenario())
    assert result.classification == "vulnerable"
    assert [e.kind for e in result.equilibria] == ["good", "boundary", "bad"]
    bad = result.of_kind("bad")
    assert bad is not None
    assert bad.queue == pytest.approx(57_600.0, rel=1e-12)
    assert bad.attempt_rate == pytest.approx(480.0, rel=1e-12)
    assert bad.pods_up == 20.0
    assert bad.throughput == pytest.approx(250.0, rel=1e-12)
    assert bad.goodput == 0.0
    assert bad.wasted_share == pytest.approx(1.0, rel=1e-12)
    assert bad.connection_failure_share == pytest.approx(230.0 / 480.0, rel=1e-12)
    assert bad.stable
    assert bad.slope < 0.0


def test_with_health_checks_on_the_database_the_bad_state_is_57840() -> None:
    """Checks that query the database: requests wait 120 s > the 1 s probe timeout,
    so the health checks fail (Theorem 5): u = 20 / (1 + 20/30) = 12 pods are up
    and restarts send u h n_init = 12/30 x 5 = 2 init queries per second; the
    queue is (480 + 2) x 120 = 57,840."""
    result = report(default_scenario().variant("health-checks-query-db"))
    assert result.classification == "vulnerable"
    assert [e.kind for e in result.equilibria] == ["good", "boundary", "bad"]
    bad = result.of_kind("bad")
    assert bad is not None
    assert bad.queue == pytest.approx(57_840.0, rel=1e-12)
    assert bad.attempt_rate == pytest.approx(480.0, rel=1e-12)
    assert bad.pods_up == pytest.approx(12.0, rel=1e-12)
    assert bad.throughput == pytest.approx(250.0, rel=1e-12)
    assert bad.goodput == 0.0
    assert bad.wasted_share == pytest.approx(480.0 / 482.0, rel=1e-12)
    assert bad.connection_failure_share == pytest.approx(232.0 / 482.0, rel=1e-12)
    assert bad.stable
    assert bad.slope < 0.0


def test_incident_good_equilibrium_serves_the_demand() -> None:
    """Good state: 160 attempts/s, goodput 160/s, no queue, stable."""
    good = report(default_scenario()).of_kind("good")
    assert good is not None
    assert good.attempt_rate == pytest.approx(160.0, rel=1e-12)
    assert good.goodput == pytest.approx(160.0, rel=1e-12)
    assert good.queue == 0.0
    assert good.stable
    assert good.slope < 0.0


def test_boundary_is_unstable_and_predicts_the_critical_backlog() -> None:
    """The boundary (slope > 0) and the bisection over replays agree on the backlog."""
    result = report(default_scenario())
    boundary = result.of_kind("boundary")
    assert boundary is not None
    assert not boundary.stable
    assert boundary.slope > 0.0
    assert result.critical_backlog is not None
    assert result.boundary_backlog is not None
    # Bisection tolerance: 1 % of the bad queue (576 requests); the boundary
    # is the one-dimensional prediction, exact up to the grid.
    assert result.critical_backlog == pytest.approx(
        result.boundary_backlog, abs=2 * 576.0
    )


def test_critical_backlog_separates_recovery_from_metastability() -> None:
    """Put back in: below the critical backlog it drains, above it it stays."""
    result = report(default_scenario())
    assert result.critical_backlog is not None
    quiet = default_scenario().with_changes({"events": []})
    below = simulate_fluid(
        quiet, horizon=1500.0, initial_backlog=0.9 * result.critical_backlog
    )
    above = simulate_fluid(
        quiet, horizon=1500.0, initial_backlog=1.1 * result.critical_backlog
    )
    assert below.recovery_time(after=0.0) is not None
    assert above.recovery_time(after=0.0) is None


@pytest.mark.parametrize(
    ("variant", "probe_timeout"),
    [
        ("concurrency-cap", 1.0),
        ("all-remedies", 1.0),
        ("proxy-timeout-30s", math.inf),
    ],
)
def test_remedies_remove_the_bad_equilibrium(
    variant: str, probe_timeout: float
) -> None:
    """A cap leaves only the good state; so does a 30 s timeout (below the client's
    35 s) when the health checks do not need the database."""
    scenario = default_scenario().with_changes({"web.probe_timeout": probe_timeout})
    result = report(scenario.variant(variant))
    assert result.classification == "stable"
    assert result.of_kind("bad") is None
    assert result.critical_backlog is None


def test_breaker_below_the_bad_states_failure_share_does_not_help() -> None:
    """The breaker opens above 50 % failures; the bad state fails 230/480 < 50 %."""
    result = report(default_scenario().variant("circuit-breaker"))
    bad = result.of_kind("bad")
    assert bad is not None
    assert bad.stability == "replay"
    assert bad.stable
    assert result.classification == "vulnerable"


def test_retry_budget_below_the_pool_removes_the_bad_equilibrium() -> None:
    """(1 + beta) lambda < kappa: 1.1 x 120 = 132 < 250 leaves only the good state."""
    result = report(system(**{"clients.retry_budget": 0.1}))
    assert result.classification == "stable"


def test_demand_above_the_pool_is_overloaded() -> None:
    """No good equilibrium when lambda exceeds kappa = 250/s."""
    result = report(system(**{"clients.request_rate": 300.0}))
    assert result.classification == "overloaded"
    assert result.of_kind("good") is None


# -- against the fluid model ---------------------------------------------------------


def test_bad_equilibrium_with_on_time_service_matches_the_fluid_model() -> None:
    """g > 0 (T_q = 30 s < T_c = 40 s, service 10 s): closed form vs a long replay."""
    scenario = system(
        **{
            "clients.request_rate": 8.0,
            "database.service_time": 10.0,
            "proxy.queue_timeout": 30.0,
        }
    )
    result = report(scenario)
    assert result.classification == "vulnerable"
    bad = result.of_kind("bad")
    assert bad is not None
    run = simulate_fluid(scenario, initial_backlog=bad.queue)
    # Tolerance 2 %: the grid of 0.25 s against T_c - T_q = 10 s and the even
    # split of completions within a step.
    assert run.queue[-1] == pytest.approx(bad.queue, rel=0.02)
    assert run.attempt_rate[-1] == pytest.approx(bad.attempt_rate, rel=0.02)
    assert run.goodput[-1] == pytest.approx(bad.goodput, rel=0.02)
    assert 0.0 < bad.attempt_map_slope < 1.0


def test_crashing_bad_equilibrium_matches_the_fluid_model() -> None:
    """With crashes: pods up P / (1 + h D) and the init queries, vs a long replay."""
    scenario = default_scenario().with_changes(
        {"events": [], "clients.request_rate": 200.0}
    )
    result = report(scenario)
    bad = result.of_kind("bad")
    assert bad is not None
    # Failure share 1 - 250/602 > 0.5: 20 / (1 + 20/30) = 12 pods up.
    assert bad.pods_up == pytest.approx(12.0, rel=1e-12)
    run = simulate_fluid(scenario, initial_backlog=bad.queue)
    assert run.pods_up[-1] == pytest.approx(bad.pods_up, rel=0.01)
    assert run.queue[-1] == pytest.approx(bad.queue, rel=0.01)
    assert run.attempt_rate[-1] == pytest.approx(bad.attempt_rate, rel=1e-6)


def test_crash_looping_bad_state_of_a_30s_proxy_timeout_matches_the_fluid_model() -> (
    None
):
    """Theorem 5: with w_sat = T_q = 30 s above the 1 s probe timeout, pods crash
    at 1/30 per s, an attempt is on time only if its pod survives (g_h), and the
    attempts the crashes kill sustain a bad state; closed form vs a long replay."""
    scenario = default_scenario().variant("health-checks-query-db")
    scenario = scenario.with_changes({"proxy.queue_timeout": 30.0, "events": []})
    result = report(scenario)
    assert result.classification == "vulnerable"
    bad = result.of_kind("bad")
    assert bad is not None
    assert bad.head_wait == 30.0
    assert bad.pods_up == pytest.approx(12.0, rel=1e-12)
    assert 0.0 < bad.goodput < 160.0
    run = simulate_fluid(scenario, initial_backlog=bad.queue)
    # Tolerance 2 %: the grid of 0.25 s against the 30 s wait and the even
    # split of completions within a step.
    assert run.queue[-1] == pytest.approx(bad.queue, rel=0.02)
    assert run.attempt_rate[-1] == pytest.approx(bad.attempt_rate, rel=0.02)
    assert run.goodput[-1] == pytest.approx(bad.goodput, rel=0.02)
    assert run.pods_up[-1] == pytest.approx(bad.pods_up, rel=0.02)


def test_incident_boundary_includes_the_crash_restart_cycle() -> None:
    """Theorem 5: beyond the 1 s probe timeout the boundary solves
    pi lambda N(1 - pi g_h(w)) + I = kappa, below the crash-free 34.63 s."""
    probed = default_scenario().variant("health-checks-query-db")
    crashing = report(probed).of_kind("boundary")
    calm = report(default_scenario())
    calm_boundary = calm.of_kind("boundary")
    assert crashing is not None
    assert calm_boundary is not None
    # Crash-free boundary: the root of 160 N(late(w)) = 250 with T_c = 35 s, R = 2
    # (scipy.optimize.brentq to 1e-14 gives 34.63486912411912).
    assert calm_boundary.head_wait == pytest.approx(34.63486912411912, rel=1e-9)
    late = late_share(calm_boundary.head_wait, 35.0, 2.5)
    assert 160.0 * budgeted_attempts_per_request(late, 2) == pytest.approx(
        250.0, rel=1e-9
    )
    assert 1.0 < crashing.head_wait < calm_boundary.head_wait
    assert crashing.pods_up == pytest.approx(12.0, rel=1e-12)
    on_time = on_time_share(crashing.head_wait, 35.0, 2.5, crash_rate=1.0 / 30.0)
    arrivals = 160.0 * budgeted_attempts_per_request(1.0 - on_time, 2) + 2.0
    assert arrivals == pytest.approx(250.0, rel=1e-9)
    assert crashing.queue == pytest.approx(250.0 * crashing.head_wait, rel=1e-9)


@given(
    st.floats(min_value=1.0, max_value=100.0),
    st.floats(min_value=0.05, max_value=5.0),
    st.floats(min_value=0.01, max_value=0.9),
    st.tuples(
        st.floats(min_value=1e-3, max_value=1.0),
        st.floats(min_value=0.0, max_value=5.0),
        st.floats(min_value=0.1, max_value=1.0),
    ),
)
def test_boundary_wait_with_failing_health_checks_is_the_first_crossing(
    client_timeout: float,
    service_rate: float,
    probe_share: float,
    crashing: tuple[float, float, float],
) -> None:
    """Theorem 5: the arrivals reach kappa at w* (or jump across it at T_p)."""
    request_rate, throughput, retries = 100.0, 200.0, 3
    crash_rate, init_rate, passing = crashing
    probe = probe_share * client_timeout
    wait = boundary_wait(
        request_rate,
        throughput,
        client_timeout,
        service_rate,
        retries,
        probe_timeout=probe,
        crash_rate=crash_rate,
        init_rate=init_rate,
        passing=passing,
    )

    def arrivals(at: float, *, failing: bool) -> float:
        if not failing:
            late = late_share(at, client_timeout, service_rate)
            return request_rate * budgeted_attempts_per_request(late, retries)
        on_time = on_time_share(at, client_timeout, service_rate, crash_rate)
        late = 1.0 - passing * on_time
        attempts = request_rate * budgeted_attempts_per_request(late, retries)
        return passing * attempts + init_rate

    if wait is None:
        # No good state, or no crossing below T_p nor between T_p and T_c.
        no_good = arrivals(0.0, failing=False) >= throughput
        never = arrivals(probe, failing=False) <= throughput
        never = never and arrivals(client_timeout, failing=True) <= throughput
        assert no_good or never
    elif wait < probe:
        assert arrivals(wait, failing=False) == pytest.approx(throughput, rel=1e-9)
    elif wait == probe:
        below = arrivals(probe, failing=False)
        assert below <= throughput <= arrivals(probe, failing=True)
    else:
        assert arrivals(wait, failing=True) == pytest.approx(throughput, rel=1e-9)
        assert arrivals(probe, failing=True) < throughput


def test_good_equilibrium_matches_the_fluid_model() -> None:
    """From empty the replay settles at the good equilibrium."""
    scenario = system(**{"clients.request_rate": 8.0, "database.service_time": 10.0})
    good = report(scenario).of_kind("good")
    assert good is not None
    run = simulate_fluid(scenario, horizon=1000.0)
    assert run.attempt_rate[-1] == pytest.approx(good.attempt_rate, rel=1e-3)
    assert run.goodput[-1] == pytest.approx(good.goodput, rel=1e-3)


# -- validation ----------------------------------------------------------------------


def test_invalid_arguments_are_rejected() -> None:
    """Tolerance in (0, 1), demand >= 0, probabilities in [0, 1]."""
    scenario = system()
    with pytest.raises(
        InvalidParameterError,
        match=r"`tolerance` must lie strictly between 0 and 1 \(got 0\.0\)",
    ):
        find_equilibria(scenario, tolerance=0.0)
    with pytest.raises(
        InvalidParameterError,
        match=r"`request_rate` must be non-negative \(got -1\.0\)",
    ):
        find_equilibria(scenario, request_rate=-1.0)
    with pytest.raises(
        InvalidParameterError, match=r"`on_time` must lie in \[0, 1\] \(got 1\.5\)"
    ):
        saturated_attempt_rate(1.0, 1.0, 1.5, 3)
    with pytest.raises(InvalidParameterError, match=r"`throughput` must be positive"):
        bad_equilibrium_exists(1.0, 0.0, 0.5, 3)
