"""Design limits: each one put back into the model that defines it.

Every limit is checked by setting the scenario (or the steady-state model) to
the limit and just beyond it: inside, the target holds or the system comes back
by itself; outside, it does not. Integer limits are checked at the value and
the value plus one.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from retrystorm.cli import main
from retrystorm.equilibria import bad_equilibrium_exists, find_equilibria
from retrystorm.erlang import erlang_b
from retrystorm.errors import InvalidParameterError, UnstableSystemError
from retrystorm.fluid import late_share, saturated_service_rate, saturated_wait
from retrystorm.limits import (
    LIMIT_NAMES,
    Limits,
    compute_limits,
    largest_queue_limit,
    largest_queue_timeout,
    largest_retry_budget,
    largest_retry_count,
    response_time_quantile,
    response_time_tail,
    restart_query_rate,
    service_quantile,
    survives_trigger,
    useful_pool_size,
)
from retrystorm.mmc import MMc
from retrystorm.mmcd import MMcD
from retrystorm.mmck import MMcK
from retrystorm.review import review_scenario
from retrystorm.scenario import Scenario, default_scenario, parse_scenario
from scipy.integrate import quad
from strategies import fluid_scenarios, vulnerable_scenarios

INCIDENT = default_scenario()
EPSILON = 1e-4
SURVIVED = ("stable", "recovers")
# The replayed limits cost a few dozen fluid replays per example.
REPLAYED = settings(max_examples=6)


@pytest.fixture(scope="module")
def incident_limits() -> Limits:
    """The limits of the embedded incident, with the replays, once per module."""
    return compute_limits(INCIDENT)


def _verdict(scenario: Scenario) -> str:
    """The review's verdict (no remedies, sensitivity or limits)."""
    review = review_scenario(scenario, remedies=False, sensitivity=False, limits=False)
    return review.verdict


def _late(scenario: Scenario) -> float:
    """Share of attempts served after the longest wait that are late."""
    mu = saturated_service_rate(scenario)
    return late_share(saturated_wait(scenario), scenario.clients.timeout, mu)


def _normal(scenario: Scenario) -> tuple[float, float, int]:
    """(demand per s, service rate per s with the pool full, connections)."""
    return (
        scenario.clients.peak_request_rate,
        saturated_service_rate(scenario),
        scenario.proxy.pool_size,
    )


def _init_rate(scenario: Scenario) -> float:
    web = scenario.web
    return restart_query_rate(
        web.pods, web.init_queries, web.crash_after, web.restart_delay
    )


def _capacity(scenario: Scenario) -> float:
    return scenario.proxy.pool_size * saturated_service_rate(scenario)


def _only_timeout(scenario: Scenario, timeout: float) -> Scenario:
    """The scenario with only the queueing timeout bounding the wait."""
    return scenario.with_changes(
        {
            "proxy.queue_timeout": timeout,
            "proxy.queue_limit": math.inf,
            "proxy.cancel_abandoned": False,
            "web.mode": "async",
            "web.concurrency_per_pod": None,
            "scenario.time_step": min(scenario.time_step, timeout / 12.0),
        }
    )


def _only_limit(scenario: Scenario, limit: float) -> Scenario:
    """The scenario with only the queue limit bounding the wait."""
    return scenario.with_changes(
        {
            "proxy.queue_timeout": 1e9,
            "proxy.queue_limit": limit,
            "proxy.cancel_abandoned": False,
            "web.mode": "async",
            "web.concurrency_per_pod": None,
        }
    )


def _only_cap(scenario: Scenario, cap: int) -> Scenario:
    """The scenario with only a bounded tier's cap bounding the wait."""
    return scenario.with_changes(
        {
            "proxy.queue_timeout": 1e9,
            "proxy.queue_limit": math.inf,
            "proxy.cancel_abandoned": False,
            "web.mode": "bounded",
            "web.concurrency_per_pod": cap,
        }
    )


def _tier_blocking(scenario: Scenario, in_flight: int) -> float:
    """Blocking of a tier that holds at most ``in_flight`` attempts (M/M/min(c,N)/N)."""
    return MMcK(
        arrival_rate=scenario.clients.peak_request_rate,
        service_rate=saturated_service_rate(scenario),
        servers=min(scenario.proxy.pool_size, in_flight),
        capacity=in_flight,
    ).blocking_probability


# -- the incident: what the postmortem's remedies need ---------------------------------


def test_incident_120s_proxy_timeout_is_outside_the_window_and_30s_inside(
    incident_limits: Limits,
) -> None:
    """Postmortem: the 120 s queueing timeout wastes work, 30 s does not."""
    window = incident_limits.queue_timeout_window
    assert window is not None
    low, high = window
    assert not low <= 120.0 <= high
    assert low <= 30.0 <= high
    assert incident_limits.queue_timeout_max.inside is False
    remedied = compute_limits(INCIDENT.variant("proxy-timeout-30s"), replays=False)
    assert remedied.queue_timeout_max.inside is True
    assert remedied.queue_timeout_min.inside is True


def test_incident_async_tier_has_no_cap_and_the_recommended_caps_survive_the_lock(
    incident_limits: Limits,
) -> None:
    """Postmortem: a cap on the async tier makes the 45 s lock survivable."""
    high = incident_limits.concurrency_per_pod_max
    low = incident_limits.concurrency_per_pod_min
    assert high.current == math.inf
    assert high.inside is False
    assert high.value is not None
    assert low.value is not None
    assert 1 <= low.value <= high.value < math.inf
    for cap in (low.value, high.value):
        bounded = INCIDENT.with_changes(
            {"web.mode": "bounded", "web.concurrency_per_pod": int(cap)}
        )
        assert _verdict(bounded) in SURVIVED, cap


def test_incident_longest_survivable_lock_is_shorter_than_45s(
    incident_limits: Limits,
) -> None:
    """Postmortem: the original design does not survive the 45 s lock."""
    lock = incident_limits.max_lock_duration
    assert lock.value is not None
    assert lock.value < 45.0
    assert lock.inside is False


def test_incident_lock_limit_agrees_with_the_review_verdict(
    incident_limits: Limits,
) -> None:
    """The current lock lies inside the limit iff the review says it is survived."""
    inside = incident_limits.max_lock_duration.inside
    assert inside == (_verdict(INCIDENT) in SURVIVED)


def test_incident_recommendations_name_the_postmortem_remedies(
    incident_limits: Limits,
) -> None:
    """The recommendations cut the queueing timeout, cap the tier, bound retries."""
    text = " | ".join(incident_limits.recommendations)
    high = incident_limits.queue_timeout_max.value
    assert high is not None
    assert f"set the proxy queueing timeout to at most {high:.3g} s" in text
    assert "cap the web tier" in text
    assert "retry at most" in text or "do not retry" in text


# -- the incident: each limit put back in ------------------------------------------


def test_incident_queue_timeout_max_leaves_no_bad_equilibrium(
    incident_limits: Limits,
) -> None:
    """At T_q* the late share is epsilon; without crashes no bad state is left."""
    high = incident_limits.queue_timeout_max.value
    assert high is not None
    at_limit = INCIDENT.with_changes({"proxy.queue_timeout": high})
    assert _late(at_limit) <= EPSILON * (1 + 1e-9)
    calm = at_limit.with_changes({"web.crash_after": None})
    assert find_equilibria(calm).classification == "stable"
    assert (
        find_equilibria(INCIDENT.with_changes({"web.crash_after": None})).classification
        == "vulnerable"
    )
    beyond = INCIDENT.with_changes({"proxy.queue_timeout": high * (1 + 1e-6)})
    assert _late(beyond) > EPSILON


def test_incident_queue_timeout_min_is_zero_because_erlang_b_is_small(
    incident_limits: Limits,
) -> None:
    """At normal load even a vanishing timeout fails fewer than epsilon."""
    rate, mu, pool = _normal(INCIDENT)
    assert incident_limits.queue_timeout_min.value == 0.0
    assert erlang_b(pool, rate / mu) <= EPSILON
    tiny = MMcD(arrival_rate=rate, service_rate=mu, servers=pool, timeout=1e-3)
    assert tiny.abandonment_probability <= EPSILON


def test_incident_queue_limit_max_drains_in_time(incident_limits: Limits) -> None:
    """A full queue of K* drains within the client timeout; of K* + 1 it does not."""
    high = incident_limits.queue_limit_max.value
    assert high is not None
    at_limit = _only_limit(INCIDENT, high)
    assert _late(at_limit) <= EPSILON
    calm = at_limit.with_changes({"web.crash_after": None})
    assert find_equilibria(calm).classification == "stable"
    assert _late(_only_limit(INCIDENT, high + 1)) > EPSILON


def test_incident_concurrency_caps_bound_the_wait_and_the_rejections(
    incident_limits: Limits,
) -> None:
    """The largest cap keeps the full tier in time; the smallest rejects <= eps."""
    high = incident_limits.concurrency_per_pod_max.value
    low = incident_limits.concurrency_per_pod_min.value
    assert high is not None
    assert low is not None
    assert _late(_only_cap(INCIDENT, int(high))) <= EPSILON
    assert _late(_only_cap(INCIDENT, int(high) + 1)) > EPSILON
    pods = INCIDENT.web.pods
    assert _tier_blocking(INCIDENT, pods * int(low)) <= EPSILON
    assert _tier_blocking(INCIDENT, pods * (int(low) - 1)) > EPSILON


def test_incident_max_retries_leaves_no_bad_equilibrium(
    incident_limits: Limits,
) -> None:
    """R* retries fit in the pool when all fail (R* + 1 do not), and the
    equilibria agree: no bad state with R*, one with R* + 1."""
    retries = incident_limits.max_retries.value
    assert retries is not None
    assert retries < INCIDENT.clients.max_retries
    rate = INCIDENT.clients.peak_request_rate
    room = _capacity(INCIDENT) - _init_rate(INCIDENT)
    assert not bad_equilibrium_exists(rate, room, 0.0, int(retries))
    assert bad_equilibrium_exists(rate, room, 0.0, int(retries) + 1)
    at_limit = INCIDENT.with_changes({"clients.max_retries": int(retries)})
    assert find_equilibria(at_limit).classification == "stable"
    beyond = INCIDENT.with_changes({"clients.max_retries": int(retries) + 1})
    assert find_equilibria(beyond).classification == "vulnerable"


def test_incident_max_retry_budget_leaves_no_bad_equilibrium(
    incident_limits: Limits,
) -> None:
    """Just below b* no bad state exists for any retry count; just above one does."""
    budget = incident_limits.max_retry_budget.value
    assert budget is not None
    room = _capacity(INCIDENT) - _init_rate(INCIDENT)
    rate = INCIDENT.clients.peak_request_rate
    assert not bad_equilibrium_exists(rate, room, 0.0, 100, budget * (1 - 1e-9))
    assert bad_equilibrium_exists(rate, room, 0.0, 100, budget * (1 + 1e-9))
    below = INCIDENT.with_changes({"clients.retry_budget": budget * (1 - 1e-6)})
    assert find_equilibria(below).classification == "stable"


def test_incident_min_connections_meet_the_wait_target(
    incident_limits: Limits,
) -> None:
    """With c* connections P(wait > T_c/10) <= epsilon; with c* - 1 it is not."""
    fewest = incident_limits.min_connections.value
    assert fewest is not None
    rate, mu, _ = _normal(INCIDENT)
    target = INCIDENT.clients.timeout / 10.0
    enough = MMc(arrival_rate=rate, service_rate=mu, servers=int(fewest))
    assert enough.wait_tail(target) <= EPSILON
    fewer = MMc(arrival_rate=rate, service_rate=mu, servers=int(fewest) - 1)
    assert not fewer.stable or fewer.wait_tail(target) > EPSILON


def test_max_connections_is_not_stated_unless_the_database_says(
    incident_limits: Limits,
) -> None:
    """Without database.max_connections the limit is missing; with it, compared."""
    missing = incident_limits.max_connections
    assert missing.value is None
    assert missing.inside is None
    assert "not stated" in missing.reason
    for stated, inside in ((80, False), (100, True), (500, True)):
        scenario = INCIDENT.with_changes({"database.max_connections": stated})
        limit = compute_limits(scenario, replays=False).max_connections
        assert limit.value == stated
        assert limit.inside is inside


def test_incident_lock_limit_is_survived_and_a_longer_lock_is_not(
    incident_limits: Limits,
) -> None:
    """The review survives a lock of the limit and not one a tolerance longer."""
    lock = incident_limits.max_lock_duration
    assert lock.value is not None
    assert math.isfinite(lock.value)
    assert lock.tolerance == 0.5
    at_limit = INCIDENT.with_changes({"events.0.duration": lock.value})
    assert _verdict(at_limit) in SURVIVED
    longer = INCIDENT.with_changes({"events.0.duration": lock.value + lock.tolerance})
    assert _verdict(longer) not in SURVIVED


def test_incident_capacity_drop_limit_is_survived(incident_limits: Limits) -> None:
    """The deepest drop of the lock's length is survived by the review."""
    drop = incident_limits.max_capacity_drop
    assert drop.value is not None
    events = [e.model_dump() for e in INCIDENT.events if e.kind != "lock"]
    trigger = {"kind": "capacity", "at": 60.0, "duration": 45.0}
    survived = INCIDENT.with_changes(
        {"events": [*events, {**trigger, "fraction": 1.0 - drop.value}]}
    )
    assert _verdict(survived) in SURVIVED
    if drop.value < 1.0:
        deeper = 1.0 - min(1.0, drop.value + drop.tolerance)
        failed = INCIDENT.with_changes(
            {"events": [*events, {**trigger, "fraction": deeper}]}
        )
        assert _verdict(failed) not in SURVIVED


def test_incident_request_rate_limit_is_survived_and_more_is_not(
    incident_limits: Limits,
) -> None:
    """The lock is survived at the limit's demand, not a tolerance above it."""
    rate = incident_limits.max_request_rate_for_trigger
    assert rate.value is not None
    at_limit = INCIDENT.with_changes({"clients.request_rate": rate.value})
    assert _verdict(at_limit) in SURVIVED
    more = INCIDENT.with_changes({"clients.request_rate": rate.value + rate.tolerance})
    assert _verdict(more) not in SURVIVED


def test_incident_client_timeout_is_the_latency_percentile(
    incident_limits: Limits,
) -> None:
    """P(wait + service > T) = 0.001 at T, by direct numerical convolution."""
    value = incident_limits.client_timeout_min.value
    assert value is not None
    rate, mu, pool = _normal(INCIDENT)
    queue = MMc(arrival_rate=rate, service_rate=mu, servers=pool)
    waiting, gap = queue.wait_probability, pool * mu - rate

    # P(W + S > t) = (1 - C) e^{-mu t} + C (int_0^t gap e^{-gap w} e^{-mu (t - w)} dw
    # + e^{-gap t}); quad's absolute error bounds the tolerance.
    def integrand(w: float) -> float:
        return gap * math.exp(-gap * w) * math.exp(-mu * (value - w))

    inner, error = quad(integrand, 0.0, value, epsabs=1e-14, epsrel=1e-12)
    convolved = (1 - waiting) * math.exp(-mu * value) + waiting * (
        inner + math.exp(-gap * value)
    )
    assert error < 1e-12
    assert convolved == pytest.approx(1e-3, rel=1e-9)


def test_incident_client_timeout_ordering_matches_the_queue_timeout(
    incident_limits: Limits,
) -> None:
    """T_c* = T_q + s_eps: a request that waited T_q is late with probability eps."""
    ordering = incident_limits.client_timeout_min_ordering
    assert ordering.value is not None
    _, mu, _ = _normal(INCIDENT)
    waited = INCIDENT.proxy.queue_timeout
    late = late_share(waited, ordering.value, mu)
    assert late == pytest.approx(EPSILON, rel=1e-9)
    assert ordering.inside is False


# -- generated scenarios: the closed forms and steady-state searches -----------------


@given(fluid_scenarios())
def test_queue_timeout_max_puts_back_to_late_share_epsilon(data: dict) -> None:
    """Late share <= epsilon at T_q*, above it just beyond (exponential service)."""
    scenario = parse_scenario(data)
    high = compute_limits(scenario, replays=False).queue_timeout_max.value
    if high is None:
        assert service_quantile(saturated_service_rate(scenario), EPSILON) >= (
            scenario.clients.timeout
        )
        return
    assert _late(_only_timeout(scenario, high)) <= EPSILON * (1 + 1e-9)
    assert _late(_only_timeout(scenario, high * (1 + 1e-6))) > EPSILON


@given(fluid_scenarios())
def test_queue_timeout_min_puts_back_to_abandonment_epsilon(data: dict) -> None:
    """M/M/c+D abandonment <= epsilon at T_q_min, above it just below."""
    scenario = parse_scenario(data)
    low = compute_limits(scenario, replays=False).queue_timeout_min.value
    rate, mu = scenario.clients.peak_request_rate, saturated_service_rate(scenario)
    pool = scenario.proxy.pool_size

    def abandonment(timeout: float) -> float:
        return MMcD(
            arrival_rate=rate, service_rate=mu, servers=pool, timeout=timeout
        ).abandonment_probability

    if low is None:
        assert abandonment(1e6 / mu) > EPSILON
    elif low == 0.0:
        assert erlang_b(pool, rate / mu) <= EPSILON
    else:
        assert abandonment(low) <= EPSILON
        assert abandonment(low * (1 - 1e-6)) > EPSILON


@given(fluid_scenarios())
def test_queue_limit_window_puts_back(data: dict) -> None:
    """K*: drains in time, K* + 1 not; K_min: blocks <= epsilon, K_min - 1 not."""
    scenario = parse_scenario(data)
    limits = compute_limits(scenario, replays=False)
    high, low = limits.queue_limit_max.value, limits.queue_limit_min.value
    if high is not None:
        assert _late(_only_limit(scenario, high)) <= EPSILON * (1 + 1e-9)
        assert _late(_only_limit(scenario, high + 1)) > EPSILON
    rate, mu = scenario.clients.peak_request_rate, saturated_service_rate(scenario)
    pool = scenario.proxy.pool_size

    def blocking(room: float) -> float:
        return MMcK(
            arrival_rate=rate, service_rate=mu, servers=pool, capacity=pool + int(room)
        ).blocking_probability

    if low is not None:
        assert blocking(low) <= EPSILON
        assert low == 0 or blocking(low - 1) > EPSILON
    else:
        assert rate >= pool * mu * (1 - EPSILON)


@given(fluid_scenarios())
def test_concurrency_window_puts_back(data: dict) -> None:
    """The cap window: the full tier drains in time, and rejects <= epsilon."""
    scenario = parse_scenario(data)
    limits = compute_limits(scenario, replays=False)
    high = limits.concurrency_per_pod_max.value
    low = limits.concurrency_per_pod_min.value
    pods = scenario.web.pods
    if high is not None:
        assert _late(_only_cap(scenario, int(high))) <= EPSILON * (1 + 1e-9)
        assert _late(_only_cap(scenario, int(high) + 1)) > EPSILON
    if low is not None:
        assert _tier_blocking(scenario, pods * int(low)) <= EPSILON
        assert low == 1 or _tier_blocking(scenario, pods * (int(low) - 1)) > EPSILON


@given(fluid_scenarios())
@example(
    {
        "scenario": {"name": "boundary", "horizon": 60.0, "time_step": 1 / 6},
        "clients": {
            "request_rate": 2.4405866482640173,
            "timeout": 2.0,
            "max_retries": 0,
        },
        "web": {"pods": 1},
        "proxy": {"pool_size": 19, "queue_timeout": 2.0},
        "database": {
            "service_time": 0.778501349809262,
            "tables": [{"name": "hot", "share": 1.0}],
        },
        "events": [{"kind": "lock", "at": 8.0, "duration": 1.0, "table": "hot"}],
    }
)
def test_max_retries_and_budget_put_back_into_the_bad_equilibrium_condition(
    data: dict,
) -> None:
    """R* and b*: no bad state when every attempt fails; one more makes one."""
    scenario = parse_scenario(data)
    limits = compute_limits(scenario, replays=False)
    rate = scenario.clients.peak_request_rate
    room = _capacity(scenario) - _init_rate(scenario)
    budget = scenario.clients.retry_budget
    retries = limits.max_retries.value
    if retries is None:
        assert rate >= room
    elif math.isinf(retries):
        assert not bad_equilibrium_exists(rate, room, 0.0, 10**6, budget)
    else:
        # Inside: no bad state; one more retry breaks (R + 1) lambda + I < kappa.
        assert not bad_equilibrium_exists(rate, room, 0.0, int(retries), budget)
        assert (retries + 2) * rate >= room
    most = limits.max_retry_budget.value
    if most is not None and math.isfinite(most):
        assert not bad_equilibrium_exists(rate, room, 0.0, 10**6, most * (1 - 1e-9))
        assert bad_equilibrium_exists(rate, room, 0.0, 10**6, most * (1 + 1e-9))


@given(fluid_scenarios())
def test_min_connections_puts_back_into_mmc(data: dict) -> None:
    """c*: P(wait > T_c/10) <= epsilon in M/M/c; with c* - 1 it is not."""
    scenario = parse_scenario(data)
    fewest = compute_limits(scenario, replays=False).min_connections.value
    rate, target = scenario.clients.peak_request_rate, scenario.clients.timeout / 10
    database = scenario.database
    if fewest is None:
        # Contention caps the pool's throughput below 1 / (s alpha) <= lambda.
        assert rate * database.service_time * database.contention >= 1.0
        return

    def meets(pool: int) -> bool:
        mu = saturated_service_rate(scenario.with_changes({"proxy.pool_size": pool}))
        queue = MMc(arrival_rate=rate, service_rate=mu, servers=pool)
        return queue.stable and queue.wait_tail(target) <= EPSILON

    assert meets(int(fewest))
    assert fewest == 1 or not meets(int(fewest) - 1)


@given(fluid_scenarios())
def test_useful_connections_is_where_the_gain_falls_below_epsilon(data: dict) -> None:
    """With contention the gain of connection c* + 1 is <= eps/s; of c* more."""
    scenario = parse_scenario(data)
    limit = compute_limits(scenario, replays=False).max_useful_connections
    database = scenario.database
    alpha, size = database.contention, limit.value
    assert size is not None
    if alpha == 0.0:
        assert math.isinf(size)
        return

    # kappa(c) s = c / (1 + alpha (c - 1)) in exact rational arithmetic: the
    # difference of two nearly equal throughputs cancels in floating point.
    exact = Fraction(alpha)

    def gain(pool: int) -> Fraction:
        def kappa(count: int) -> Fraction:
            return count / (1 + exact * (count - 1))

        return kappa(pool + 1) - kappa(pool)

    if size < 2**52:
        assert gain(int(size)) <= Fraction(EPSILON)
        assert size == 1 or gain(int(size) - 1) > Fraction(EPSILON)


@given(fluid_scenarios())
def test_client_timeout_min_is_the_response_time_percentile(data: dict) -> None:
    """The tail of the M/M/c response time at the limit is 1 - percentile."""
    scenario = parse_scenario(data)
    limit = compute_limits(scenario, replays=False).client_timeout_min
    rate, mu = scenario.clients.peak_request_rate, saturated_service_rate(scenario)
    pool = scenario.proxy.pool_size
    if rate >= pool * mu:
        assert limit.value is None
        return
    assert limit.value is not None
    queue = MMc(arrival_rate=rate, service_rate=mu, servers=pool)
    assert response_time_tail(queue, limit.value) == pytest.approx(1e-3, rel=1e-9)


@given(fluid_scenarios())
def test_limits_report_every_name_and_inside_compares_the_current_value(
    data: dict,
) -> None:
    """Every limit is reported, and inside says current <= (or >=) the value."""
    limits = compute_limits(parse_scenario(data), replays=False)
    assert [limit.name for limit in limits] == list(LIMIT_NAMES)
    for limit in limits:
        if (
            limit.value is None
            or limit.current is None
            or limit.name
            in (
                "max_retry_budget",
                "max_lock_duration",
                "max_capacity_drop",
                "max_request_rate_for_trigger",
            )
        ):
            continue
        upper = limit.name.endswith("_max") or limit.name.startswith("max_")
        expected = (
            limit.current <= limit.value if upper else limit.current >= limit.value
        )
        assert limit.inside is expected, limit.name


# -- generated scenarios: the replayed limits -----------------------------------------


@REPLAYED
@given(vulnerable_scenarios())
def test_lock_limit_is_survived_and_a_longer_lock_is_not(data: dict) -> None:
    """The review survives a lock of the limit, not one a tolerance longer."""
    scenario = parse_scenario(data)
    lock = compute_limits(scenario).max_lock_duration
    assert lock.value is not None
    assert _verdict(scenario.with_changes({"events.0.duration": lock.value})) in (
        SURVIVED
    )
    if "survived (up to" not in lock.reason:
        longer = scenario.with_changes(
            {"events.0.duration": lock.value + lock.tolerance}
        )
        assert _verdict(longer) not in SURVIVED


@REPLAYED
@given(vulnerable_scenarios())
def test_capacity_drop_and_rate_limits_put_back(data: dict) -> None:
    """The deepest drop and the highest demand are survived; a bit more is not."""
    scenario = parse_scenario(data)
    limits = compute_limits(scenario)
    drop, rate = limits.max_capacity_drop, limits.max_request_rate_for_trigger
    lock = scenario.events[0]
    trigger: dict[str, Any] = {"kind": "capacity", "at": lock.at}
    trigger["duration"] = lock.duration
    assert drop.value is not None
    assert rate.value is not None

    def dropped(depth: float) -> Scenario:
        event = {**trigger, "fraction": 1.0 - depth}
        return scenario.with_changes({"events": [event]})

    assert _verdict(dropped(drop.value)) in SURVIVED
    if drop.value + drop.tolerance <= 1.0:
        assert _verdict(dropped(drop.value + drop.tolerance)) not in SURVIVED
    if rate.value > 0.0:
        at_rate = scenario.with_changes({"clients.request_rate": rate.value})
        assert _verdict(at_rate) in SURVIVED
    beyond = scenario.with_changes(
        {"clients.request_rate": rate.value + rate.tolerance}
    )
    assert _verdict(beyond) not in SURVIVED


# Retries just short of the pool (3 x 13.2 = 39.6 < 40/s): no bad equilibrium, and
# a backlog above the boundary wait that drains for minutes (found by Hypothesis).
SLOW_DRAIN: dict[str, Any] = {
    "scenario": {"name": "slow", "horizon": 600.0, "time_step": 1 / 6},
    "clients": {
        "request_rate": 13.2,
        "timeout": 2.0,
        "max_retries": 2,
        "backoff": {"initial": 0.5, "multiplier": 2.0, "cap": 2.0},
    },
    "web": {"pods": 1},
    "proxy": {"pool_size": 5, "queue_timeout": 3.0},
    "database": {"service_time": 0.125},
    "events": [{"kind": "lock", "at": 10.0, "duration": 8.0, "table": "all"}],
}


@settings(max_examples=30)
@given(
    st.one_of(fluid_scenarios(), vulnerable_scenarios()),
    st.floats(min_value=200.0, max_value=900.0),
    st.floats(min_value=1.0, max_value=5.0),
)
@example(data=SLOW_DRAIN, horizon=600.0, stretch=1.0)
def test_survives_trigger_agrees_with_the_review_verdict(
    data: dict, horizon: float, stretch: float
) -> None:
    """The replays cut short decide as the review's full replay does."""
    data["scenario"]["horizon"] = horizon  # long enough to cut the replays short
    data["events"][0]["duration"] *= stretch
    scenario = parse_scenario(data)
    assert survives_trigger(scenario) == (_verdict(scenario) in SURVIVED)


def test_without_a_bad_equilibrium_any_lock_is_survived() -> None:
    """A 30 s proxy timeout and no crashes leave no bad state: any lock is survived."""
    remedied = INCIDENT.variant("proxy-timeout-30s").with_changes(
        {"web.crash_after": None}
    )
    assert find_equilibria(remedied).classification == "stable"
    limits = compute_limits(remedied)
    assert limits.max_lock_duration.unbounded
    assert limits.max_lock_duration.to_dict()["value"] is None
    assert limits.max_capacity_drop.value == 1.0
    long_lock = remedied.with_changes({"events.0.duration": 600.0})
    assert survives_trigger(long_lock)


SMALL: dict[str, Any] = {
    "scenario": {"name": "small", "horizon": 400.0, "time_step": 0.25},
    "clients": {"request_rate": 60.0, "timeout": 5.0, "max_retries": 3},
    "web": {"pods": 2},
    "proxy": {"pool_size": 10, "queue_timeout": 10.0},
    "database": {
        "service_time": 0.1,
        "tables": [{"name": "cold", "share": 0.3}, {"name": "hot", "share": 0.7}],
    },
}


def test_a_scenario_without_a_lock_gets_one_on_its_busiest_table() -> None:
    """Without a trigger the lock limit replays a lock on the busiest table."""
    quiet = parse_scenario(SMALL)
    assert find_equilibria(quiet).classification == "vulnerable"
    lock = compute_limits(quiet).max_lock_duration
    assert lock.current is None
    assert lock.inside is None
    assert "'hot'" in lock.reason
    assert lock.value is not None
    trigger = {"kind": "lock", "at": 60.0, "table": "hot"}
    survived = quiet.with_changes({"events": [{**trigger, "duration": lock.value}]})
    assert survives_trigger(survived)
    longer = lock.value + lock.tolerance
    failed = quiet.with_changes({"events": [{**trigger, "duration": longer}]})
    assert not survives_trigger(failed)


def test_an_empty_queue_timeout_window_is_reported() -> None:
    """At utilisation 0.98 no queueing timeout is short and long enough at once."""
    data = {
        **SMALL,
        "clients": {"request_rate": 4.9, "timeout": 20.0, "max_retries": 1},
        "proxy": {"pool_size": 5, "queue_timeout": 30.0},
        "database": {"service_time": 1.0},
    }
    limits = compute_limits(parse_scenario(data), replays=False)
    high, low = limits.queue_timeout_max.value, limits.queue_timeout_min.value
    assert high is not None
    assert low is not None
    assert low > high
    assert limits.queue_timeout_window is None
    assert limits.to_dict()["queue_timeout_window_exists"] is False
    assert any("no proxy queueing timeout" in r for r in limits.recommendations)


# -- closed forms --------------------------------------------------------------------


def test_closed_forms_on_the_incident_numbers() -> None:
    """A 40 s client timeout, 2.5/s per connection, 100 connections, 120/s."""
    # ln(1e4)/2.5 = 3.6841361... (exact logarithm)
    assert service_quantile(2.5, 1e-4) == pytest.approx(math.log(1e4) / 2.5, 1e-15)
    assert largest_queue_timeout(40.0, 2.5, 1e-4) == pytest.approx(
        40.0 - math.log(1e4) / 2.5, rel=1e-15
    )
    assert largest_queue_limit(40.0, 2.5, 100, 1e-4) == math.floor(
        250.0 * (40.0 - math.log(1e4) / 2.5)
    )
    assert restart_query_rate(20, 5, 30.0, 20.0) == pytest.approx(2.0, rel=1e-15)
    assert restart_query_rate(20, 5, None, 20.0) == 0.0
    assert largest_retry_count(120.0, 250.0, 2.0) == 1
    assert largest_retry_count(125.0, 250.0) == 0  # (R + 1) 125 < 250 needs R = 0
    assert largest_retry_count(250.0, 250.0) is None
    assert largest_retry_budget(120.0, 250.0) == pytest.approx(130.0 / 120.0, 1e-15)
    assert largest_retry_budget(250.0, 250.0) is None
    assert useful_pool_size(0.4, 0.0, 1e-4) == math.inf
    assert useful_pool_size(0.4, 1.0, 1e-4) == 1.0


@given(
    st.floats(min_value=1e-3, max_value=1e4),
    st.integers(min_value=1, max_value=1_000),
    st.integers(min_value=-3, max_value=3),
)
def test_largest_retry_count_holds_at_a_boundary_within_an_ulp(
    rate: float, multiple: int, ulps: int
) -> None:
    """R* meets (R + 1) lambda < room in floating point, and R* + 1 does not.

    The room is a whole multiple of the rate moved by a few ulps, where the
    quotient ``room / rate`` rounds to the whole number either way (one such
    case was found in the limits of a random scenario).
    """
    room = multiple * rate
    for _ in range(abs(ulps)):
        room = math.nextafter(room, math.inf if ulps > 0 else 0.0)
    retries = largest_retry_count(rate, room)
    if retries is None:
        assert rate >= room
    else:
        assert (retries + 1) * rate < room
        assert (retries + 2) * rate >= room


def test_response_time_tail_is_continuous_where_the_two_rates_meet() -> None:
    """At c mu - lambda = mu the tail is (1 - C + C (1 + mu t)) e^{-mu t}."""
    queue = MMc(arrival_rate=3.0, service_rate=1.0, servers=4)  # gap 1 = mu
    waiting = queue.wait_probability
    for t in (0.1, 1.0, 7.0):
        exact = (1 - waiting + waiting * (1 + t)) * math.exp(-t)
        assert response_time_tail(queue, t) == pytest.approx(exact, rel=1e-13)
    near = MMc(arrival_rate=3.0 - 1e-9, service_rate=1.0, servers=4)
    assert response_time_tail(near, 1.0) == pytest.approx(
        response_time_tail(queue, 1.0), rel=1e-8
    )


def test_response_time_quantile_inverts_the_tail() -> None:
    """The 99.9th percentile of the response time has tail 0.001."""
    queue = MMc(arrival_rate=9.0, service_rate=5.0, servers=2)
    assert response_time_tail(
        queue, response_time_quantile(queue, 0.999)
    ) == pytest.approx(1e-3, rel=1e-10)


# -- JSON and the command --------------------------------------------------------------


def test_to_dict_has_the_documented_keys_with_null_for_unbounded(
    incident_limits: Limits,
) -> None:
    """The object has every limit's value, its details, and recommendations."""
    payload = json.loads(json.dumps(incident_limits.to_dict()))
    for name in (
        "queue_timeout_max",
        "queue_timeout_min",
        "queue_limit_max",
        "queue_limit_min",
        "max_retries",
        "max_retry_budget",
        "min_connections",
        "max_connections",
        "max_lock_duration",
    ):
        assert name in payload
        assert set(payload["details"][name]) >= {
            "value",
            "current",
            "inside",
            "unit",
            "reason",
            "assumption",
            "model",
            "tolerance",
        }
    assert payload["max_retries"] == incident_limits.max_retries.value
    assert isinstance(payload["max_retries"], int)
    assert payload["max_connections"] is None
    assert payload["details"]["queue_limit_max"]["current"] is None  # no limit: inf
    assert payload["recommendations"]


def test_limits_command_prints_a_table_and_recommendations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`retrystorm limits` lists every limit and the recommendations."""
    with pytest.raises(SystemExit) as exit_info:
        main(["limits", "--no-replays"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("queue_timeout_max", "max_retries", "client_timeout_min"):
        assert name in out
    assert "recommendations" in out


def test_limits_command_json_is_one_object(capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` prints the limits object; an embedded name and a variant resolve."""
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "limits",
                "incident-2025-09-16",
                "--variant",
                "proxy-timeout-30s",
                "--json",
                "--no-replays",
                "--epsilon",
                "1e-3",
            ]
        )
    assert exit_info.value.code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["epsilon"] == 1e-3
    assert payload["details"]["queue_timeout_max"]["inside"] is True


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--epsilon", "2"], "`epsilon` must lie strictly between 0 and 1"),
        (["missing.toml"], "missing.toml"),
        (["--variant", "nope"], "unknown variant"),
    ],
)
def test_limits_command_user_mistakes_are_one_line(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user mistake exits non-zero with one line on stderr, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(["limits", "--no-replays", *arguments])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keyword", "value", "name"),
    [
        ("epsilon", 0.0, "epsilon"),
        ("epsilon", 1.0, "epsilon"),
        ("percentile", 1.5, "percentile"),
        ("wait_target", -1.0, "wait_target"),
        ("drop_duration", 0.0, "drop_duration"),
        ("duration_tolerance", 0.0, "duration_tolerance"),
        ("drop_tolerance", 1.0, "drop_tolerance"),
        ("rate_tolerance", 0.0, "rate_tolerance"),
    ],
)
def test_rule_compute_limits_options(keyword: str, value: float, name: str) -> None:
    """Each option out of range is named with its value."""
    with pytest.raises(InvalidParameterError, match=f"`{name}`"):
        compute_limits(INCIDENT, replays=False, **{keyword: value})


def test_rule_survives_trigger_needs_a_trigger() -> None:
    """A scenario without a lock or capacity event has nothing to survive."""
    with pytest.raises(InvalidParameterError, match="must have a trigger"):
        survives_trigger(INCIDENT.with_changes({"events": []}))


def test_rule_service_quantile_tail() -> None:
    """The tail probability lies strictly between 0 and 1."""
    with pytest.raises(InvalidParameterError, match="`tail`"):
        service_quantile(2.5, 0.0)


def test_rule_queue_limit_servers() -> None:
    """The number of connections is a positive integer."""
    with pytest.raises(InvalidParameterError, match="`servers`"):
        largest_queue_limit(40.0, 2.5, 0, 1e-4)


def test_rule_restart_query_rate_pods() -> None:
    """The number of pods is a positive integer."""
    with pytest.raises(InvalidParameterError, match="`pods`"):
        restart_query_rate(0, 5, 30.0, 20.0)


def test_rule_retry_count_request_rate() -> None:
    """The demand must be positive."""
    with pytest.raises(InvalidParameterError, match="`request_rate`"):
        largest_retry_count(0.0, 250.0)


def test_rule_retry_budget_init_rate() -> None:
    """The init-query rate must be non-negative."""
    with pytest.raises(InvalidParameterError, match="`init_rate`"):
        largest_retry_budget(120.0, 250.0, -1.0)


def test_rule_useful_pool_size_contention() -> None:
    """Contention must be non-negative."""
    with pytest.raises(InvalidParameterError, match="`contention`"):
        useful_pool_size(0.4, -0.1, 1e-4)


def test_rule_response_time_quantile_level() -> None:
    """The percentile lies strictly between 0 and 1."""
    queue = MMc(arrival_rate=1.0, service_rate=1.0, servers=2)
    with pytest.raises(InvalidParameterError, match="`level`"):
        response_time_quantile(queue, 1.0)


def test_rule_response_time_tail_needs_a_steady_state() -> None:
    """An unstable M/M/c has no response-time distribution."""
    queue = MMc(arrival_rate=3.0, service_rate=1.0, servers=2)
    with pytest.raises(UnstableSystemError):
        response_time_tail(queue, 1.0)


@pytest.mark.parametrize("epsilon", [1e-100, 1e-300, 5e-324])
def test_tiny_targets_bracket_their_roots_past_underflow(epsilon: float) -> None:
    """P(abandon) underflows to 0 long before 1e-300: the limit is still found.

    The smallest queueing timeout grows as the target shrinks (a longer wait
    is needed for so few clients to give up), and meets its target.
    """
    scenario = INCIDENT.variant("proxy-timeout-30s")
    limits = compute_limits(scenario, epsilon=epsilon, replays=False)
    lowest = limits.queue_timeout_min.value
    assert lowest is not None
    assert lowest > compute_limits(scenario, replays=False).queue_timeout_min.value
