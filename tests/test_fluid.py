"""The fluid model: closed forms, conservation, monotonicity, the incident."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from retrystorm.errors import InvalidParameterError
from retrystorm.fluid import (
    FluidTrajectory,
    budgeted_attempts_per_request,
    good_state_goodput_share,
    is_good_state,
    late_share,
    retry_probability_cap,
    saturated_wait,
    simulate_fluid,
)
from retrystorm.review import review_scenario
from retrystorm.scenario import Scenario, default_scenario, parse_scenario
from strategies import fluid_scenarios

_REPLAYS: dict[str, FluidTrajectory] = {}


def replay(scenario: Scenario, **options: float) -> FluidTrajectory:
    """simulate_fluid, computed once per scenario and options (it is deterministic)."""
    key = scenario.model_dump_json() + repr(sorted(options.items()))
    if key not in _REPLAYS:
        _REPLAYS[key] = simulate_fluid(scenario, **options)
    return _REPLAYS[key]


def system(**changes: Any) -> Scenario:
    """A small system (100 connections of 0.4 s) with ``changes`` by dotted path."""
    data: dict[str, Any] = {
        "scenario": {"name": "system", "horizon": 600.0, "time_step": 0.25},
        "clients": {"request_rate": 120.0, "timeout": 60.0, "max_retries": 0},
        "web": {"pods": 4},
        "proxy": {"pool_size": 100, "queue_timeout": 30.0},
        "database": {"service_time": 0.4},
    }
    return parse_scenario(data).with_changes(changes)


def incident(**changes: Any) -> Scenario:
    """The embedded incident with ``changes`` (cached: scenarios are immutable)."""
    return default_scenario().with_changes(changes)


def assert_balances(run: FluidTrajectory) -> None:
    """Conservation, no negative quantity, goodput <= throughput <= capacity."""
    scale = 1.0 + float(run.cum_offered[-1])
    tolerance = 1e-9 * scale
    assert np.abs(run.conservation_residual).max() <= tolerance
    assert np.abs(run.request_residual).max() <= 1e-9 * (1.0 + float(run.cum_fresh[-1]))
    for name in (
        "queue",
        "in_service",
        "locked",
        "orbit",
        "pods_up",
        "head_wait",
        "throughput",
        "goodput",
        "wasted_rate",
        "init_rate",
        "queue_timeout_rate",
        "rejected_rate",
        "dropped_rate",
        "failed_request_rate",
        "live",
    ):
        assert getattr(run, name).min() >= -tolerance, name
    assert (run.goodput <= run.throughput + tolerance).all()
    assert (run.throughput <= run.capacity + tolerance).all()
    assert (run.in_service <= run.scenario.proxy.pool_size + tolerance).all()


# -- closed forms --------------------------------------------------------------------


def test_below_capacity_without_a_trigger_no_backlog_and_goodput_equals_demand() -> (
    None
):
    """Fluid M/M/c at utilisation 0.48: no queue, goodput = demand, Little's law.

    The replay starts in the normal steady state, so this holds from t = 0.
    """
    run = replay(system(**{"clients.max_retries": 3}), horizon=120.0)
    assert run.queue.max() == 0.0
    # Exact for the fluid: late completions exp(-mu T_c) = exp(-150) vanish.
    assert run.goodput == pytest.approx(120.0, rel=1e-9)
    # Little's law: 120/s x 0.4 s = 48 connections held.
    assert run.in_service == pytest.approx(48.0, rel=1e-9)
    assert run.wasted_rate.max() < 1e-9
    assert run.recovery_time() == 0.0


def test_sustained_overload_with_hard_timeout_holds_lambda_t() -> None:
    """Whitt (2006): overload with a deterministic patience T queues lambda T."""
    run = replay(system(**{"clients.request_rate": 300.0}))
    # 300/s arrive, the pool serves 250/s; every arrival of the last T = 30 s
    # is queued and the excess 50/s times out at the head [Whitt2006].
    # Tolerance: the head step is served in part, up to 250/s x 0.25 s.
    assert run.queue[-1] == pytest.approx(300.0 * 30.0, abs=250.0 * 0.25)
    assert run.head_wait[-1] == pytest.approx(30.0, abs=0.25)
    assert run.throughput[-1] == pytest.approx(250.0, rel=1e-12)
    assert run.queue_timeout_rate[-1] == pytest.approx(50.0, rel=1e-9)


def test_saturated_pool_completes_exactly_c_mu() -> None:
    """The exponential update is exact: a full pool completes c / service_time."""
    run = replay(system(**{"clients.request_rate": 300.0}))
    full = run.queue > 0.0
    assert run.throughput[full][10:] == pytest.approx(250.0, rel=1e-12)


def test_a_lock_on_every_table_fills_the_pool_with_held_queries() -> None:
    """Queries on a locked table hold their connection: completions stop."""
    lock = {"kind": "lock", "at": 20.0, "duration": 30.0, "table": "all"}
    run = replay(system(events=[lock]), horizon=100.0)
    # Each free connection soon takes a query on the locked table: the
    # executing mass decays as exp(-mu t), below 1e-9 after 10 s.
    during = (run.time > 30.0) & (run.time <= 50.0)
    assert run.locked[during] == pytest.approx(100.0, rel=1e-9)
    assert run.throughput[during].max() < 1e-6
    after = run.index_at(55.0)
    assert run.locked[after] == 0.0


def test_late_share_and_budget_closed_forms() -> None:
    """exp(-mu (T_c - w)), and N_beta = min(N, 1 + beta) with q**1+...+q**R = beta."""
    assert late_share(10.0, 40.0, 2.5) == pytest.approx(math.exp(-75.0), rel=1e-15)
    q = retry_probability_cap(3, 0.5)
    assert q + q**2 + q**3 == pytest.approx(0.5, rel=1e-12)
    assert budgeted_attempts_per_request(0.9, 3, 0.5) == pytest.approx(1.5, rel=1e-15)
    # (1 - 0.5**4) / (1 - 0.5) = 1.875: below the budget's 2.0.
    assert budgeted_attempts_per_request(0.5, 3, 1.0) == pytest.approx(1.875, rel=1e-15)


def test_saturated_wait_is_the_tightest_limit() -> None:
    """w_sat = min(T_q, K / kappa, T_c with cancellation, bounded room / kappa)."""
    assert saturated_wait(system()) == 30.0
    assert saturated_wait(system(**{"proxy.queue_limit": 500.0})) == pytest.approx(2.0)
    assert saturated_wait(
        system(**{"proxy.queue_timeout": 90.0, "proxy.cancel_abandoned": True})
    ) == pytest.approx(60.0)
    bounded = {"web.mode": "bounded", "web.concurrency_per_pod": 50}
    assert saturated_wait(system(**bounded)) == pytest.approx(100.0 / 250.0)


# -- balances ------------------------------------------------------------------------


@settings(max_examples=40)
@given(fluid_scenarios())
def test_every_request_is_accounted_for_at_every_step(data: dict[str, Any]) -> None:
    """Conservation at each step, no negatives, goodput <= throughput <= capacity."""
    run = simulate_fluid(parse_scenario(data))
    assert_balances(run)
    scenario = run.scenario
    assert (run.pods_up <= scenario.web.pods * (1 + 1e-12)).all()
    assert (
        run.head_wait <= scenario.proxy.queue_timeout + 2 * scenario.time_step
    ).all()
    assert (run.queue <= scenario.proxy.queue_limit * (1 + 1e-12) + 1e-9).all()


def test_incident_replays_balance() -> None:
    """The incident and each remedy keep every balance."""
    scenario = default_scenario()
    for name in (None, *scenario.variant_names):
        assert_balances(replay(scenario if name is None else scenario.variant(name)))


# -- mechanisms ----------------------------------------------------------------------


def test_bounded_tier_caps_the_requests_in_flight() -> None:
    """Bounded mode: waiting plus held client requests stay near pods x cap."""
    changes = {"web.mode": "bounded", "web.concurrency_per_pod": 40}
    run = replay(system(**changes, **{"clients.request_rate": 400.0}))
    # The cap is applied with the previous step's completions as the room
    # they free, so it may be exceeded by one step's completions at most.
    assert (run.queue + run.in_service).max() <= 160.0 + 250.0 * 0.25
    assert run.queue[-1] + run.in_service[-1] == pytest.approx(160.0, rel=1e-6)
    assert run.rejected_rate[-1] == pytest.approx(150.0, rel=1e-6)


def test_queue_limit_rejects_the_excess_fast() -> None:
    """A queue limit K keeps at most K waiting; the excess is rejected."""
    run = replay(system(**{"clients.request_rate": 400.0, "proxy.queue_limit": 500.0}))
    assert run.queue.max() <= 500.0 * (1 + 1e-12)
    assert run.rejected_rate[-1] == pytest.approx(150.0, rel=1e-6)
    assert run.queue_timeout_rate[-1] == pytest.approx(0.0, abs=1e-9)


def test_retry_budget_caps_retries_per_fresh_request() -> None:
    """Token bucket: retries <= budget x fresh requests + the bucket's size."""
    changes = {
        "clients.request_rate": 300.0,
        "clients.max_retries": 3,
        "clients.retry_budget": 0.1,
    }
    run = replay(system(**changes))
    retries = float(np.sum(run.retry_rate) * run.time_step)
    fresh = float(run.cum_fresh[-1])
    assert retries <= 0.1 * fresh + 0.1 * 300.0 * 10.0 + 1e-6


def test_cancelling_abandoned_requests_keeps_the_queue_younger_than_the_client() -> (
    None
):
    """cancel_abandoned: a waiting request whose client left is removed at once."""
    changes = {
        "clients.request_rate": 300.0,
        "clients.timeout": 20.0,
        "proxy.cancel_abandoned": True,
    }
    run = replay(system(**changes))
    assert run.head_wait.max() <= 20.0 + 0.25
    assert run.dropped_rate[-1] > 0.0


def test_breaker_opens_when_connection_requests_fail() -> None:
    """The breaker opens above its failure threshold and attempts then fail fast."""
    breaker = {"failure_threshold": 0.1, "open_duration": 5.0, "probe_share": 0.2}
    run = replay(
        system(**{"clients.request_rate": 300.0, "web.circuit_breaker": breaker})
    )
    assert run.breaker_open.any()
    # The state is sampled at the end of a step: an open breaker rejects every
    # attempt of the next step.
    assert run.rejected_rate[1:][run.breaker_open[:-1]] == pytest.approx(300.0)


def test_shedding_rejects_its_fraction() -> None:
    """A shed event rejects its fraction of the arriving attempts fast."""
    shed = {"kind": "shed", "at": 100.0, "duration": 50.0, "fraction": 0.25}
    run = replay(system(events=[shed]), horizon=200.0)
    during = (run.time > 101.0) & (run.time <= 150.0)
    assert run.rejected_rate[during] == pytest.approx(30.0, rel=1e-9)


def test_pods_crash_while_most_connection_requests_fail() -> None:
    """Crash rule: up pods crash at rate 1/crash_after above the failure share."""
    changes = {
        "clients.request_rate": 600.0,
        "web.crash_after": 30.0,
        "web.restart_delay": 20.0,
        "web.init_queries": 5,
    }
    run = replay(system(**changes), horizon=1200.0)
    # Failure share 1 - 250/600 > 0.5: up pods crash and come back after 20 s;
    # in balance 4 / (1 + 20/30) = 2.4 pods are up.
    assert run.pods_up[-1] == pytest.approx(2.4, rel=0.02)
    assert run.init_rate[-1] > 0.0


def test_failing_health_checks_crash_pods_at_rate_one_over_crash_after() -> None:
    """Probe rule: while the head-of-line wait exceeds probe_timeout, pods decay as
    exp(-t / crash_after); their attempts fail."""
    lock = {"kind": "lock", "at": 100.0, "duration": 20.0, "table": "all"}
    changes = {"events": [lock], "web.crash_after": 10.0, "web.restart_delay": 100.0}
    plain = replay(system(**changes), horizon=200.0)
    probed = replay(system(**changes, **{"web.probe_timeout": 1.0}), horizon=200.0)
    # Queue timeout 30 s, client timeout 60 s: nothing fails during the 20 s
    # lock, so without health checks on the database no pod crashes.
    assert plain.pods_up.min() == 4.0
    assert plain.cum_failed_requests[-1] < 1e-9  # served late: exp(-2.5 x 60)
    # With them, each up pod crashes at rate 1/10 per second while the wait
    # exceeds 1 s: over 10 s the pods up fall by exactly exp(-1) (the step's
    # crash share is 1 - exp(-dt / crash_after)).
    early, late = probed.index_at(105.0), probed.index_at(115.0)
    assert probed.head_wait[early - 1] > 1.0
    ratio = probed.pods_up[late] / probed.pods_up[early]
    assert ratio == pytest.approx(math.exp(-1.0), rel=1e-9)
    # Crashes stop once the queue has drained; restarts come after 100 s.
    assert probed.head_wait[probed.index_at(160.0)] == 0.0
    assert probed.pods_up[-1] == probed.pods_up[probed.index_at(170.0)]
    # The crashed pods' attempts failed; with no retries, their requests too.
    assert probed.cum_failed_requests[-1] > 100.0
    assert_balances(probed)


def test_health_checks_that_never_time_out_change_nothing() -> None:
    """probe_timeout = inf is the same system as no probe timeout."""
    lock = {"kind": "lock", "at": 50.0, "duration": 40.0, "table": "all"}
    changes = {"events": [lock], "web.crash_after": 10.0}
    plain = replay(system(**changes), horizon=200.0)
    never = replay(system(**changes, **{"web.probe_timeout": math.inf}), horizon=200.0)
    np.testing.assert_array_equal(plain.queue, never.queue)
    np.testing.assert_array_equal(plain.pods_up, never.pods_up)


def test_cold_restart_drops_everything_and_restarts_every_pod() -> None:
    """Cold restart: queue and connections emptied, pods down, then all start."""
    restart = {"kind": "cold_restart", "at": 300.0, "duration": 60.0}
    changes = {"clients.request_rate": 300.0, "web.init_queries": 3}
    run = replay(system(events=[restart], **changes))
    before, during = run.index_at(299.0), run.index_at(330.0)
    # Samples are taken at the end of each step; the stop happens in the step
    # that starts at 300 s.
    dropped = float(run.dropped_rate[run.index_at(300.25)] * run.time_step)
    assert dropped == pytest.approx(
        run.queue[before] + run.in_service[before], rel=1e-6
    )
    assert run.pods_up[during] == 0.0
    assert run.rejected_rate[during] == pytest.approx(300.0, rel=1e-9)
    assert run.pods_up[run.index_at(361.0)] == 4.0


def test_rate_profile_drives_the_fresh_rate() -> None:
    """Fresh requests follow a piecewise-constant profile exactly."""
    scenario = system(
        **{
            "clients.request_rate": None,
            "clients.rate_profile": [[0.0, 50.0], [100.0, 80.0]],
        }
    )
    run = replay(scenario, horizon=200.0)
    assert run.fresh_rate[run.index_at(50.0)] == 50.0
    assert run.fresh_rate[run.index_at(150.0)] == 80.0


def test_initial_backlog_is_conserved() -> None:
    """A replay started from a backlog counts it as offered and as live requests."""
    run = replay(incident(events=[]), horizon=300.0, initial_backlog=20_000.0)
    assert run.queue[0] == pytest.approx(20_000.0, rel=0.02)
    assert_balances(run)


def test_recovery_time_conventions() -> None:
    """0 when good at the start of the search; None when not good before the end."""
    run = replay(system(), horizon=200.0)
    assert run.recovery_time(after=50.0) == 0.0
    stuck = replay(system(**{"clients.request_rate": 300.0}))
    assert stuck.recovery_time(after=50.0) is None
    assert is_good_state(0.0, 120.0, 120.0, 100.0)


def test_invalid_replay_parameters_are_rejected() -> None:
    """Horizon, time step and backlog are checked before any computation."""
    scenario = system()
    with pytest.raises(
        InvalidParameterError, match=r"`horizon` must be positive \(got -1\.0\)"
    ):
        simulate_fluid(scenario, horizon=-1.0)
    with pytest.raises(
        InvalidParameterError, match=r"`time_step` must be at most a tenth"
    ):
        simulate_fluid(scenario, time_step=5.0)
    with pytest.raises(
        InvalidParameterError, match=r"`initial_backlog` must be non-negative"
    ):
        simulate_fluid(scenario, initial_backlog=-3.0)


# -- monotonicity --------------------------------------------------------------------


def _without_cold_restart(data: dict[str, Any]) -> dict[str, Any]:
    data["events"] = [e for e in data["events"] if e["kind"] != "cold_restart"]
    return data


@settings(max_examples=25)
@given(
    fluid_scenarios(breaker=False, fast_service=True),
    st.floats(min_value=0.5, max_value=30.0),
)
def test_a_longer_lock_never_turns_recovery_into_metastability(
    data: dict[str, Any], extra: float
) -> None:
    """If the system stays stuck after a lock, it stays stuck after a longer one.

    Without a circuit breaker or a retry budget: each is a switch, and a
    longer lock can open the breaker, or drain the budget's tokens, and so end
    the overload sooner (genuine exceptions). Service at
    most a tenth of the client timeout, so that the system has a good state
    to return to (with service near the timeout a share of requests is late
    even unloaded, goodput stays below demand, and "recovery" is only a
    transient). Both triggers get the same time after them, at least 4 T_c:
    a recovery is judged on a good state held for 2 T_c or until the
    horizon, so a trigger ending nearer the horizon would get a shorter hold.
    """
    data = _without_cold_restart(data)
    data["clients"]["retry_budget"] = math.inf
    # At least four client timeouts after the trigger, the same for both.
    after = 4.0 * data["clients"]["timeout"]
    shorter = parse_scenario(data)
    end = shorter.trigger_end or 0.0
    data["scenario"]["horizon"] = max(data["scenario"]["horizon"], end + after)
    short = simulate_fluid(parse_scenario(data))
    data["events"][0]["duration"] += extra
    later = parse_scenario(data).trigger_end or 0.0
    data["scenario"]["horizon"] += later - end
    long = simulate_fluid(parse_scenario(data))
    if short.recovery_time() is None:
        assert long.recovery_time() is None


def test_a_longer_lock_never_recovers_sooner_in_the_incident() -> None:
    """Incident: the moment of recovery moves later as the lock grows."""
    moments = []
    for duration in (15.0, 30.0, 45.0, 55.0, 60.0, 62.0, 70.0, 90.0):
        run = replay(incident(**{"events.0.duration": duration}))
        moment = run.recovered_at()
        moments.append(math.inf if moment is None else moment)
    assert moments == sorted(moments)
    assert moments[-1] == math.inf


@settings(max_examples=25)
@given(
    fluid_scenarios(breaker=False, crashes=False),
    st.floats(min_value=0.1, max_value=0.95),
)
def test_a_shorter_queue_timeout_never_raises_the_peak_backlog(
    data: dict[str, Any], factor: float
) -> None:
    """Queueing-timeout monotonicity: the peak queue does not grow as T_q shrinks.

    Without circuit breakers and crashes, two genuine exceptions: a shorter
    timeout makes failures appear sooner, which can trip a breaker at another
    moment (a larger wave of retries when it closes) or crash pods whose init
    queries then join the queue.
    """
    longer = parse_scenario(data)
    data["proxy"]["queue_timeout"] *= factor
    data["scenario"]["time_step"] = min(
        data["scenario"]["time_step"], data["proxy"]["queue_timeout"] / 12.0
    )
    shorter = parse_scenario(data)
    step = shorter.time_step
    peak_long = simulate_fluid(longer, time_step=step).peak_queue
    peak_short = simulate_fluid(shorter).peak_queue
    assert peak_short <= peak_long * (1 + 1e-9) + 1e-9


# Service of mean 0.4375 s against a 2 s client timeout: about 1 % of requests
# outlive their clients even without a trigger (found by Hypothesis).
SLOW_SERVICE: dict[str, Any] = {
    "scenario": {"name": "slow-service", "horizon": 60.0, "time_step": 1 / 6},
    "clients": {"request_rate": 10.0, "timeout": 2.0, "max_retries": 0},
    "web": {"pods": 1},
    "proxy": {"pool_size": 5, "queue_timeout": 2.0},
    "database": {"service_time": 0.4375, "tables": [{"name": "hot", "share": 1.0}]},
    "events": [{"kind": "lock", "at": 5.0, "duration": 1.0, "table": "hot"}],
}


@settings(max_examples=25)
@given(fluid_scenarios(contention=False), st.integers(min_value=1, max_value=40))
@example(data=SLOW_SERVICE, more=1)
@example(
    data=SLOW_SERVICE
    | {
        "clients": {"request_rate": 6.25, "timeout": 2.0, "max_retries": 0},
        "database": {"service_time": 0.5, "tables": [{"name": "hot", "share": 1.0}]},
        "events": [{"kind": "lock", "at": 16.0, "duration": 40.0, "table": "hot"}],
    },
    more=1,
)
def test_without_contention_more_connections_never_make_recovery_fail(
    data: dict[str, Any], more: int
) -> None:
    """A recovering system without contention still recovers with a larger pool.

    A good run that the end of the replay cuts short counts as a recovery,
    so both replays get room after the trigger for many full runs (a lock
    that ended 4 s before the end once "recovered" with 5 connections and
    not yet with 6, which recovers first given time).
    """
    data = _without_cold_restart(data)
    scenario = parse_scenario(data)
    room = (scenario.trigger_end or 0.0) + 20.0 * scenario.clients.timeout
    data["scenario"]["horizon"] = max(scenario.scenario.horizon, room)
    fewer = simulate_fluid(parse_scenario(data))
    data["proxy"]["pool_size"] += more
    larger = simulate_fluid(parse_scenario(data))
    if fewer.recovery_time() is not None:
        assert larger.recovery_time() is not None


# -- the incident --------------------------------------------------------------------


def test_incident_lock_of_90s_leaves_the_backlog_stuck_in_the_tens_of_thousands() -> (
    None
):
    """Past its critical length, a lock leaves the incident's system metastable.

    The bad state queues (R + 1) lambda T_q = 3 x 160 x 120 = 57,600 requests,
    the order of the postmortem's "more than 50,000" [Sendcloud2025].
    """
    run = replay(incident(**{"events.0.duration": 90.0}))
    assert run.recovery_time() is None
    assert 50_000.0 < run.queue[run.index_at(2279.0)] < 70_000.0
    assert run.goodput[run.index_at(2279.0)] < 1e-6


def test_incident_rollback_does_not_recover_the_stuck_state() -> None:
    """The rolling restart (11:23 to 11:28) leaves the backlog in place."""
    run = replay(incident(**{"events.0.duration": 90.0}))
    assert run.recovery_time(after=300.0, before=2280.0) is None
    after_rollback = run.index_at(700.0)
    assert run.queue[after_rollback] > 50_000.0


def test_incident_cold_restart_recovers_within_minutes() -> None:
    """Emptying everything brings the good state back within a few minutes."""
    run = replay(incident(**{"events.0.duration": 90.0}))
    recovery = run.recovery_time(after=2280.0, before=3000.0)
    assert recovery is not None
    # Down for 180 s (11:56 to 11:59), then the backlog of init queries and
    # retries clears in seconds.
    assert 180.0 <= recovery <= 300.0


@pytest.mark.parametrize(
    ("variant", "probe_timeout"),
    [("concurrency-cap", 1.0), ("proxy-timeout-30s", math.inf)],
)
def test_remedies_recover_from_the_lock_that_leaves_the_incident_stuck(
    variant: str, probe_timeout: float
) -> None:
    """A concurrency cap recovers after a 90 s lock; so does a 30 s proxy timeout
    when the health checks do not need the database."""
    changes = {"events.0.duration": 90.0, "web.probe_timeout": probe_timeout}
    run = replay(incident(**changes).variant(variant))
    recovery = run.recovery_time()
    assert recovery is not None
    assert recovery < 300.0


def test_a_30s_proxy_timeout_leaves_pods_crash_looping_on_their_health_checks() -> None:
    """T_q = 30 s < T_c: nothing is served late, yet requests wait 30 s > the 1 s
    probe timeout of health checks that query the database (the variant
    health-checks-query-db), so pods keep crashing and the retries of the attempts
    they kill sustain the backlog (health checks that remove capacity under load,
    [SREBook2016cascading]). The discrete simulation stays stuck too
    (test_fluid_vs_simulation, case proxy-timeout-30s-health-checks)."""
    probed = default_scenario().variant("health-checks-query-db")
    run = replay(probed.with_changes({"proxy.queue_timeout": 30.0}))
    assert run.recovery_time() is None
    stuck = run.index_at(2279.0)
    assert run.head_wait[stuck] == pytest.approx(30.0, abs=0.5)
    # In the crash-restart balance 20 / (1 + 20/30) = 12 pods are up.
    assert run.pods_up[stuck] == pytest.approx(12.0, rel=0.02)
    assert 0.0 < run.goodput[stuck] < run.fresh_rate[stuck]


def test_incident_45s_lock_outcome_matches_its_critical_lock_length() -> None:
    """The default lock recovers exactly when it is shorter than the critical lock.

    The critical lock length is found by bisection over replays (to 1 s); the
    default 45 s lock's verdict must agree with it.
    """
    low, high = 0.0, 120.0
    while high - low > 1.0:
        middle = 0.5 * (low + high)
        run = replay(incident(**{"events.0.duration": middle}))
        low, high = (middle, high) if run.recovery_time() is not None else (low, middle)
    default = replay(default_scenario())
    assert (default.recovery_time() is not None) == (low > 45.0)


# -- the good state when requests outlive their clients anyway -----------------------


def test_good_state_share_is_one_when_service_is_short_against_the_timeout() -> None:
    """The incident: 0.4 s of service against a 35 s timeout loses nothing."""
    assert good_state_goodput_share(default_scenario()) == 1.0


@pytest.mark.parametrize("step", [0.05, 0.01, 0.002])
def test_good_state_share_converges_to_the_exponential_tail(step: float) -> None:
    """One attempt: exp(-T_c / s) of requests outlive their clients.

    The fluid moves work between whole steps, so its share overstates the
    tail by about ``2.4 mu step`` of it (measured: 27 %, 5.3 % and 1.05 % at
    these steps), shrinking linearly with the step; the bound allows
    ``2.5 mu step`` and 1 % more.
    """
    scenario = parse_scenario(SLOW_SERVICE)
    tail = math.exp(-2.0 / 0.4375)
    lost = 1.0 - good_state_goodput_share(scenario, step)
    assert lost == pytest.approx(tail, rel=2.5 * step / 0.4375 + 0.01)
    assert lost >= tail * (1.0 - 1e-9)


@pytest.mark.parametrize("pool", [5, 6, 7, 30])
def test_requests_lost_without_a_trigger_do_not_make_a_system_metastable(
    pool: int,
) -> None:
    """A stable pool recovers from a 1 s lock, whatever it loses at baseline.

    Held to all of the demand, the good state is never reached (1 % of
    requests outlive their 2 s clients by service time alone) and the
    review called a stable system metastable.
    """
    scenario = parse_scenario(SLOW_SERVICE).with_changes({"proxy.pool_size": pool})
    review = review_scenario(scenario, remedies=False, sensitivity=False, limits=False)
    assert review.equilibria.classification == "stable"
    assert review.verdict == "recovers"
    trajectory = review.trajectory
    assert trajectory.good_share < 1.0
    # Before the lock and at the end the replay is in the good state.
    assert trajectory.is_good[trajectory.index_at(4.0)]
    assert trajectory.is_good[-1]
