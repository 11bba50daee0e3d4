"""Tests of the exact Markov chain of a queue with timeouts and retries."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from retrystorm import (
    ChainState,
    ErlangA,
    InvalidParameterError,
    MMc,
    MMcD,
    MMcK,
    Region,
    RetryChain,
    StateSpaceTooLargeError,
    chain_from_scenario,
    erlang_c,
)
from retrystorm import chain as chain_module
from retrystorm.cli import main
from retrystorm.scenario import Scenario, default_scenario
from strategies import retry_chains

# Solver precision: the sparse LU solution of a well-conditioned birth-death
# chain agrees with the closed forms to about 1e-13; 1e-10 leaves room for the
# automatic truncation (tail below 1e-13) and for heavy load.
SOLVER = 1e-10


def birth_death_hitting_time(
    arrival: float, service: float, capacity: int, start: int
) -> float:
    """Expected time for M/M/1/K to go from ``start`` to 1 in system.

    First-step analysis of one level: ``T_K = 1/mu`` and ``T_k = (1 + lambda
    T_(k+1)) / mu`` is the mean time from ``k`` down to ``k - 1``; the time
    from ``start`` to 1 is ``T_2 + ... + T_start``.
    """
    level_times = {capacity: 1.0 / service}
    for level in range(capacity - 1, 1, -1):
        level_times[level] = (1.0 + arrival * level_times[level + 1]) / service
    return math.fsum(level_times[level] for level in range(2, start + 1))


# -- closed forms ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "arrival_rate"), [(1, 0.5), (4, 3.0), (10, 8.0), (10, 9.5)]
)
def test_stationary_law_without_limit_or_patience_is_erlang_c(
    servers: int, arrival_rate: float
) -> None:
    """M/M/c: P(all busy) is Erlang C and the mean queue is that of MMc."""
    chain = RetryChain(arrival_rate=arrival_rate, service_rate=1.0, servers=servers)
    result = chain.stationary()
    exact = MMc(arrival_rate=arrival_rate, service_rate=1.0, servers=servers)

    assert result.truncation_mass < 1e-12
    assert result.all_busy_probability == pytest.approx(
        erlang_c(servers, arrival_rate), rel=SOLVER
    )
    assert result.mean_queue == pytest.approx(exact.mean_queue_length, rel=SOLVER)
    assert result.throughput == pytest.approx(arrival_rate, rel=SOLVER)


@pytest.mark.parametrize(
    ("servers", "room", "arrival_rate"), [(1, 0, 2.0), (2, 3, 1.0), (5, 20, 7.5)]
)
def test_stationary_law_with_queue_limit_is_mmck_state_by_state(
    servers: int, room: int, arrival_rate: float
) -> None:
    """M/M/c/K: P(n in system) for every n, blocking and throughput of MMcK."""
    chain = RetryChain(
        arrival_rate=arrival_rate, service_rate=1.0, servers=servers, queue_limit=room
    )
    result = chain.stationary()
    exact = MMcK(
        arrival_rate=arrival_rate,
        service_rate=1.0,
        servers=servers,
        capacity=servers + room,
    )
    expected = [exact.state_probability(n) for n in range(servers + room + 1)]

    np.testing.assert_allclose(result.in_system_distribution, expected, atol=1e-14)
    assert result.blocking_probability == pytest.approx(
        exact.blocking_probability, rel=SOLVER
    )
    assert result.throughput == pytest.approx(exact.throughput, rel=SOLVER)


@pytest.mark.parametrize(
    ("servers", "arrival_rate", "abandonment_rate"),
    [(1, 0.8, 0.1), (10, 9.5, 0.2), (10, 13.0, 0.2), (50, 50.0, 1.0)],
)
def test_stationary_law_with_exponential_patience_is_erlang_a(
    servers: int, arrival_rate: float, abandonment_rate: float
) -> None:
    """Erlang-A: mean queue, P(abandon) and throughput, under and over load."""
    chain = RetryChain(
        arrival_rate=arrival_rate,
        service_rate=1.0,
        servers=servers,
        abandonment_rate=abandonment_rate,
    )
    result = chain.stationary()
    exact = ErlangA(
        arrival_rate=arrival_rate,
        service_rate=1.0,
        servers=servers,
        abandonment_rate=abandonment_rate,
    )

    assert result.mean_queue == pytest.approx(exact.mean_queue_length, rel=SOLVER)
    assert result.abandonment_probability == pytest.approx(
        exact.abandonment_probability, rel=SOLVER
    )
    assert result.goodput == pytest.approx(exact.throughput, rel=SOLVER)


def test_one_phase_timeout_is_erlang_a_with_rate_one_over_timeout() -> None:
    """One Erlang phase of mean T is exponential patience of rate 1/T."""
    timeout = RetryChain(arrival_rate=3.0, service_rate=1.0, servers=2, timeout=0.5)
    rate = RetryChain(
        arrival_rate=3.0, service_rate=1.0, servers=2, abandonment_rate=2.0
    )

    np.testing.assert_allclose(
        timeout.stationary().probabilities, rate.stationary().probabilities, atol=1e-15
    )


def test_erlang_phases_tend_to_the_exact_fixed_timeout_queue() -> None:
    """M/M/c+D: the abandonment error of k phases halves when k doubles."""
    exact = MMcD(arrival_rate=3.0, service_rate=1.0, servers=2, timeout=0.5)
    errors = []
    for phases in (1, 2, 4):
        chain = RetryChain(
            arrival_rate=3.0,
            service_rate=1.0,
            servers=2,
            timeout=0.5,
            timeout_phases=phases,
        )
        value = chain.stationary().abandonment_probability
        errors.append(abs(value - exact.abandonment_probability))

    # Erlang-k patience has variance T^2 / k: first-order convergence in 1/k.
    ratios = [later / earlier for earlier, later in itertools.pairwise(errors)]
    assert all(0.4 < ratio < 0.6 for ratio in ratios)
    assert errors[-1] < 0.006


def test_phase_approximation_reports_the_doubled_and_exact_values() -> None:
    """The report holds k, 2k and M/M/c+D values, and its error matches them."""
    chain = RetryChain(
        arrival_rate=3.0, service_rate=1.0, servers=2, timeout=0.5, timeout_phases=2
    )
    report = chain.phase_approximation()
    exact = MMcD(arrival_rate=3.0, service_rate=1.0, servers=2, timeout=0.5)

    assert (report.phases, report.doubled_phases) == (2, 4)
    assert report.exact_abandonment_probability == exact.abandonment_probability
    assert report.exact_mean_queue == exact.mean_queue_length
    assert report.abandonment_error == pytest.approx(
        abs(report.abandonment_probability - exact.abandonment_probability)
    )
    # First-order convergence: the error of k phases is twice the change to 2k.
    assert 2.0 * report.abandonment_change == pytest.approx(
        report.abandonment_error, rel=0.05
    )


def test_phase_approximation_has_no_exact_value_with_an_orbit() -> None:
    """With retries the chain is not M/M/c+D: no exact value is claimed."""
    chain = RetryChain(
        arrival_rate=3.0,
        service_rate=1.0,
        servers=2,
        timeout=0.5,
        retry_rate=1.0,
        retry_probability=0.5,
        orbit_limit=15,
    )
    report = chain.phase_approximation()
    assert report.exact_abandonment_probability is None
    assert report.abandonment_error is None


# -- conservation laws (any parameters) ------------------------------------------


# The balances hold exactly on the truncated chain too: its truncation warning
# (small orbit limits in the draws) is beside the point here.
@pytest.mark.filterwarnings("ignore:the truncation levels hold:RuntimeWarning")
@settings(max_examples=25)
@given(retry_chains())
def test_every_fresh_request_succeeds_once_or_is_lost(
    parameters: dict[str, object],
) -> None:
    """Request balance: lambda = goodput + loss rate in steady state."""
    chain = RetryChain(**parameters)  # type: ignore[arg-type]
    result = chain.stationary()
    assert result.goodput + result.loss_rate == pytest.approx(
        chain.arrival_rate, rel=1e-9
    )


@pytest.mark.filterwarnings("ignore:the truncation levels hold:RuntimeWarning")
@settings(max_examples=25)
@given(retry_chains())
def test_service_starts_match_completions(parameters: dict[str, object]) -> None:
    """Server balance: mu E[busy] = goodput + wasted work in steady state."""
    result = RetryChain(**parameters).stationary()  # type: ignore[arg-type]
    assert result.throughput == pytest.approx(
        result.goodput + result.wasted_rate, rel=1e-9
    )
    assert 0.0 <= result.wasted_share <= 1.0
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-12)


def test_without_cancellation_every_abandoned_request_is_served_as_waste() -> None:
    """No cancellation, no orbit: wasted work equals the abandonment flow."""
    chain = RetryChain(
        arrival_rate=3.0,
        service_rate=1.0,
        servers=4,
        abandonment_rate=0.5,
        cancel_abandoned=False,
        queue_limit=40,
    )
    result = chain.stationary()
    abandoned = result.abandonment_probability * result.attempt_rate
    assert result.wasted_rate == pytest.approx(abandoned, rel=1e-9)
    assert result.wasted_share > 0.01


def test_cancelling_abandoned_requests_removes_the_stuck_state() -> None:
    """Retries onto a queue that keeps orphans get stuck; cancelling frees it."""
    common = {
        "arrival_rate": 1.2,
        "service_rate": 2.5,
        "servers": 1,
        "timeout": 4.0,
        "retry_rate": 1.0,
        "retry_probability": 0.75,
        "orbit_limit": 20,
        "queue_limit": 40,
    }
    keeps = RetryChain(**common, cancel_abandoned=False, orphan_timeout=8.0)
    cancels = RetryChain(**common, cancel_abandoned=True)

    # (R + 1) lambda = 4.8 > c mu = 2.5 and a full queue outwaits the client:
    # wasted work sustains the bad state [Bronson2021]; without waste it drains.
    assert keeps.bad_region_mass() > 0.5
    assert keeps.stationary().success_probability < 0.5
    assert cancels.bad_region_mass() < 1e-3
    # Some clients still give up for good (exponential patience, p = 0.75).
    assert cancels.stationary().success_probability > 0.95


# -- retrial queue -----------------------------------------------------------------


def test_orbit_truncation_mass_is_reported_and_warned() -> None:
    """A too-small orbit limit shows its mass and raises a RuntimeWarning."""
    chain = RetryChain(
        arrival_rate=0.9,
        service_rate=1.0,
        servers=1,
        queue_limit=0,
        retry_rate=0.2,
        orbit_limit=5,
    )
    with pytest.warns(RuntimeWarning, match="truncation levels hold"):
        result = chain.stationary()
    assert result.truncation_mass > 1e-6
    assert result.truncation_loss_rate > 0.0


# -- transient law, hitting times, spectrum ---------------------------------------


def test_transient_law_of_one_server_loss_queue_is_exponential() -> None:
    """M/M/1/1 from empty: P(busy at t) = lambda/(lambda+mu) (1 - e^-(lambda+mu) t)."""
    lam, mu = 2.0, 3.0
    chain = RetryChain(arrival_rate=lam, service_rate=mu, servers=1, queue_limit=0)
    times = np.array([0.0, 0.1, 0.5, 2.0])
    result = chain.transient(ChainState(busy=0), times)

    exact = lam / (lam + mu) * (1.0 - np.exp(-(lam + mu) * times))
    np.testing.assert_allclose(result.mean_busy, exact, rtol=1e-12, atol=1e-15)


def test_transient_law_matches_the_dense_matrix_exponential() -> None:
    """exp(Q t) by expm_multiply equals scipy's dense expm on a chain with orphans."""
    chain = RetryChain(
        arrival_rate=2.0,
        service_rate=1.0,
        servers=2,
        queue_limit=5,
        timeout=1.0,
        timeout_phases=2,
        cancel_abandoned=False,
        orphan_timeout=2.0,
        retry_rate=0.5,
        retry_probability=0.6,
        orbit_limit=4,
    )
    start = ChainState(busy=2, waiting=3, orphans=1, orbit=2)
    result = chain.transient(start, [1.5], keep_distributions=True)

    initial = np.zeros(chain.state_count)
    initial[chain.state_index(start)] = 1.0
    dense = initial @ scipy.linalg.expm(chain.generator.toarray() * 1.5)
    assert result.distributions is not None
    np.testing.assert_allclose(result.distributions[0], dense, atol=1e-12)


def test_transient_law_from_a_full_queue_settles_to_the_stationary_law() -> None:
    """After many relaxation times the transient means are the stationary ones."""
    chain = RetryChain(
        arrival_rate=2.0, service_rate=1.0, servers=3, queue_limit=10, timeout=2.0
    )
    late = 60.0 * chain.relaxation_time()
    result = chain.transient(ChainState(busy=3, waiting=10), [0.0, late])

    assert result.mean_queue[0] == 10.0
    assert result.mean_queue[-1] == pytest.approx(
        chain.stationary().mean_queue, rel=1e-9
    )


def test_hitting_time_of_an_empty_queue_is_the_birth_death_sum() -> None:
    """M/M/1/K from K to 1 in system: the sum of one-level passage times."""
    lam, mu, capacity = 0.8, 1.0, 12
    chain = RetryChain(
        arrival_rate=lam, service_rate=mu, servers=1, queue_limit=capacity - 1
    )
    result = chain.expected_hitting_time(
        ChainState(busy=1, waiting=capacity - 1), Region.good(max_queue=0)
    )
    expected = birth_death_hitting_time(lam, mu, capacity, capacity)
    assert result.mean == pytest.approx(expected, rel=1e-11)
    assert result.worst == result.mean


def test_hitting_time_from_a_region_weighs_its_states_by_the_stationary_law() -> None:
    """Mean over the start region = pi-weighted mean of the per-state times."""
    lam, mu, capacity = 0.8, 1.0, 12
    chain = RetryChain(
        arrival_rate=lam, service_rate=mu, servers=1, queue_limit=capacity - 1
    )
    result = chain.expected_hitting_time(
        Region.bad(min_queue=8), Region.good(max_queue=0)
    )
    exact = MMcK(arrival_rate=lam, service_rate=mu, servers=1, capacity=capacity)
    weights = [exact.state_probability(n) for n in range(9, capacity + 1)]
    times = [
        birth_death_hitting_time(lam, mu, capacity, n) for n in range(9, capacity + 1)
    ]

    assert result.mean == pytest.approx(np.dot(weights, times) / sum(weights), rel=1e-9)
    assert result.worst == pytest.approx(times[-1], rel=1e-11)
    assert result.worst_state == ChainState(busy=1, waiting=capacity - 1)
    assert result.start_mass == pytest.approx(sum(weights), rel=1e-10)


@pytest.mark.parametrize("capacity", [30, 1600])
def test_spectral_gap_of_a_birth_death_queue_is_known(capacity: int) -> None:
    """M/M/1/K: gap = lambda + mu - 2 sqrt(lambda mu) cos(pi / (K + 1)).

    The nonzero eigenvalues of the tridiagonal generator with constant rates
    are ``-(lambda + mu) + 2 sqrt(lambda mu) cos(j pi / (K + 1))``, j = 1..K
    (Ledermann and Reuter's birth-death spectrum; [Kleinrock1975] sec. 2.2).
    1,600 states take the sparse shift-invert path.
    """
    lam, mu = 0.7, 1.0
    chain = RetryChain(
        arrival_rate=lam, service_rate=mu, servers=1, queue_limit=capacity - 1
    )
    expected = lam + mu - 2.0 * math.sqrt(lam * mu) * math.cos(math.pi / (capacity + 1))
    assert chain.spectral_gap() == pytest.approx(expected, rel=1e-9)
    assert chain.relaxation_time() == pytest.approx(1.0 / expected, rel=1e-9)


def test_sparse_and_dense_spectral_gaps_agree_on_a_chain_with_orphans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ARPACK shift-invert finds the dense eigensolver's gap (non-reversible chain)."""
    parameters = {
        "arrival_rate": 1.2,
        "service_rate": 2.5,
        "servers": 1,
        "timeout": 4.0,
        "cancel_abandoned": False,
        "orphan_timeout": 8.0,
        "retry_rate": 1.0,
        "retry_probability": 0.75,
        "orbit_limit": 6,
        "queue_limit": 8,
    }
    dense = RetryChain(**parameters)
    assert dense.state_count <= chain_module._sparse.DENSE_LIMIT
    dense_gap = dense.spectral_gap()

    monkeypatch.setattr(chain_module._sparse, "DENSE_LIMIT", 10)
    sparse_gap = RetryChain(**parameters).spectral_gap()
    assert sparse_gap == pytest.approx(dense_gap, rel=1e-8)


def test_mixing_time_of_a_two_state_chain_is_exact() -> None:
    """M/M/1/1 from empty: TV distance lambda/(lambda+mu) e^-(lambda+mu) t."""
    lam, mu, epsilon = 2.0, 3.0, 0.05
    chain = RetryChain(arrival_rate=lam, service_rate=mu, servers=1, queue_limit=0)
    exact = math.log(lam / ((lam + mu) * epsilon)) / (lam + mu)

    # Bisection stops within 1 % of the crossing time.
    assert chain.mixing_time(epsilon, ChainState(busy=0)) == pytest.approx(
        exact, rel=0.011
    )
    assert chain.mixing_time(epsilon) == pytest.approx(
        math.log(1.0 / epsilon) / (lam + mu), rel=1e-12
    )


def test_bad_region_mass_is_the_tail_of_the_stationary_law() -> None:
    """M/M/c/K: P(queue >= m) from MMcK's state probabilities."""
    chain = RetryChain(arrival_rate=3.5, service_rate=1.0, servers=3, queue_limit=9)
    exact = MMcK(arrival_rate=3.5, service_rate=1.0, servers=3, capacity=12)
    tail = math.fsum(exact.state_probability(n) for n in range(3 + 5, 13))

    assert chain.bad_region_mass(Region.bad(min_queue=5)) == pytest.approx(
        tail, rel=1e-10
    )
    law = np.zeros(chain.state_count)
    law[chain.state_index(ChainState(busy=3, waiting=9))] = 1.0
    assert chain.bad_region_mass(Region.bad(min_queue=5), law) == 1.0


def test_default_regions_are_disjoint_and_follow_the_patience() -> None:
    """Good: queue <= c; bad: queue >= c mu T (the head waits a timeout)."""
    chain = RetryChain(
        arrival_rate=3.0,
        service_rate=2.0,
        servers=2,
        timeout=5.0,
        queue_limit=30,
        retry_rate=1.0,
        orbit_limit=20,
    )
    good, bad = chain.default_regions()
    assert good == Region.good(max_queue=2, max_orbit=2)
    assert bad == Region.bad(min_queue=20, min_orbit=10)
    assert not np.any(chain.region_mask(good) & chain.region_mask(bad))


def test_escape_time_is_none_without_bad_states() -> None:
    """A queue too short to reach the bad threshold has no bad region."""
    chain = RetryChain(
        arrival_rate=1.0, service_rate=1.0, servers=2, queue_limit=1, timeout=10.0
    )
    assert chain.default_regions()[1] is None
    assert chain.escape_time() is None


def test_hitting_time_of_an_empty_target_is_infinite() -> None:
    """States that can never reach the target have an infinite hitting time."""
    chain = RetryChain(arrival_rate=1.0, service_rate=1.0, servers=1, queue_limit=3)
    times = chain_module._sparse.expected_hitting_times(
        chain.generator, np.array([False, False, False, False, False])
    )
    assert np.all(np.isinf(times))


def test_iterative_and_direct_solvers_agree() -> None:
    """GMRES with Gauss-Seidel reproduces the sparse LU stationary law."""
    chain = RetryChain(
        arrival_rate=2.0,
        service_rate=1.0,
        servers=2,
        queue_limit=12,
        timeout=2.0,
        timeout_phases=2,
        cancel_abandoned=False,
        orphan_timeout=3.0,
        retry_rate=0.5,
        retry_probability=0.5,
        orbit_limit=20,
    )
    direct = chain.stationary(method="direct").probabilities
    iterative = chain.stationary(method="iterative").probabilities
    np.testing.assert_allclose(iterative, direct, atol=1e-10)


# -- scenarios -----------------------------------------------------------------------


def _incident_like(**changes: object) -> Scenario:
    """The embedded incident with the values these tests pin written out."""
    values: dict[str, object] = {
        "clients.request_rate": 120.0,
        "clients.timeout": 40.0,
        "clients.max_retries": 3,
        "clients.retry_budget": math.inf,
        "clients.backoff": {"initial": 1.0, "multiplier": 2.0, "cap": 30.0,
                            "jitter": "full"},
        "proxy.pool_size": 100,
        "proxy.queue_timeout": 120.0,
        "proxy.queue_limit": math.inf,
        "proxy.cancel_abandoned": False,
        "database.service_time": 0.4,
        "database.contention": 0.0,
    }  # fmt: skip
    values.update(changes)
    return default_scenario().with_changes(values)


def test_scenario_with_a_short_proxy_timeout_maps_to_cancelled_patience() -> None:
    """Proxy timeout below the client's: the proxy fails waits first, no orphans."""
    chain = chain_from_scenario(
        _incident_like(**{"proxy.queue_timeout": 30.0}), scale=0.02
    )

    # 100 connections x 0.02, 120/s x 0.02, 1 / 0.4 s; 3 retries: p = 3/4;
    # backoff 1, 2, 4 s with full jitter: mean delays 0.5, 1, 2 s.
    assert chain.servers == 2
    assert chain.arrival_rate == pytest.approx(2.4)
    assert chain.service_rate == pytest.approx(2.5)
    assert (chain.timeout, chain.cancel_abandoned) == (30.0, True)
    assert chain.retry_probability == pytest.approx(0.75)
    assert chain.retry_rate == pytest.approx(1.0 / (3.5 / 3.0))


def test_retry_budget_caps_the_retry_probability() -> None:
    """A budget b allows b retries per request: p <= b / (1 + b)."""
    scenario = _incident_like(**{"clients.retry_budget": 0.1})
    chain = chain_from_scenario(scenario, scale=0.01, max_states=10**7)
    assert chain.retry_probability == pytest.approx(0.1 / 1.1)


def test_incident_scenario_maps_to_orphans_dropped_by_the_proxy() -> None:
    """Client timeout 40 s below the proxy's 120 s: orphans live ~80 s more."""
    chain = chain_from_scenario(_incident_like(), scale=0.01, max_states=10**7)
    assert (chain.timeout, chain.cancel_abandoned) == (40.0, False)
    assert chain.orphan_timeout == pytest.approx(80.0)
    assert chain.queue_limit is None
    assert chain.queue_truncation == 600  # twice c mu T_q = 2 x 2.5 x 120


def test_automatic_scale_keeps_the_chain_within_the_state_limit() -> None:
    """Without a scale the largest scale whose chain fits is chosen."""
    scenario = _incident_like(**{"proxy.queue_timeout": 30.0})
    chain = chain_from_scenario(scenario, max_states=20_000)
    larger = chain_from_scenario(scenario, max_states=10**9, scale=0.05)
    assert chain.state_count <= 20_000
    assert larger.state_count > 20_000


def test_scenario_too_large_at_one_server_raises() -> None:
    """One connection is the smallest replica; beyond it the error stands."""
    with pytest.raises(StateSpaceTooLargeError, match="more than the limit of 10"):
        chain_from_scenario(_incident_like(), max_states=10)


# -- state-space limits ----------------------------------------------------------------


def test_too_many_states_raise_before_anything_is_built() -> None:
    """C(10^6 + 4, 4) states are refused at construction, with the numbers."""
    with pytest.raises(StateSpaceTooLargeError) as info:
        RetryChain(
            arrival_rate=1.0,
            service_rate=1.0,
            servers=10,
            queue_limit=10**6,
            timeout=1.0,
            timeout_phases=4,
        )
    error = info.value
    assert error.states == 10 + math.comb(10**6 + 4, 4)
    assert error.limit == chain_module.DEFAULT_MAX_STATES
    assert error.bytes_needed > 10**20


def test_too_little_memory_raises_with_the_states_that_would_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With 1 MiB available the limit is the states that fit in it."""
    monkeypatch.setattr(chain_module, "_available_memory", lambda: 2**20)
    with pytest.raises(StateSpaceTooLargeError, match="states") as info:
        RetryChain(arrival_rate=1.0, service_rate=1.0, servers=1, queue_limit=5000)
    assert info.value.states == 5002
    assert 0 < info.value.limit < 5002


# -- validation: one test per rule ----------------------------------------------------


def _chain(**changes: object) -> RetryChain:
    parameters: dict[str, object] = {
        "arrival_rate": 1.0,
        "service_rate": 1.0,
        "servers": 2,
        "queue_limit": 5,
    }
    parameters.update(changes)
    return RetryChain(**parameters)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arrival_rate": 0.0}, "`arrival_rate` must be positive"),
        ({"service_rate": math.nan}, "`service_rate` must be a number"),
        ({"servers": 0}, "`servers` must be a positive integer"),
        ({"queue_limit": -1}, "`queue_limit` must be an integer >= 0"),
        ({"abandonment_rate": 1.0, "timeout": 1.0}, "cannot be given together"),
        ({"timeout_phases": 3}, "needs a `timeout`"),
        ({"timeout": 1.0, "orphan_timeout": 2.0}, "`orphan_timeout` needs a patience"),
        ({"cancel_abandoned": 1}, "`cancel_abandoned` must be True or False"),
        ({"retry_rate": 1.0}, "`orbit_limit` must be given with `retry_rate`"),
        ({"orbit_limit": 5}, "`orbit_limit` needs a `retry_rate`"),
        ({"retry_probability": 1.5}, r"`retry_probability` must lie in \[0, 1\]"),
        ({"queue_truncation": 10}, "applies only to an unbounded queue"),
        ({"max_states": 0}, "`max_states` must be a positive integer"),
        (
            {"queue_limit": None, "arrival_rate": 3.0},
            "`queue_truncation` must be given: the queue is unbounded",
        ),
    ],
)
def test_invalid_parameters_are_refused(
    changes: dict[str, object], message: str
) -> None:
    """Each rule names the parameter and the value."""
    with pytest.raises(InvalidParameterError, match=message):
        _chain(**changes)


def test_empty_bad_region_is_refused() -> None:
    """A bad region needs a threshold."""
    with pytest.raises(InvalidParameterError, match="`region` needs a queue or an"):
        Region.bad()


def test_unknown_region_kind_is_refused() -> None:
    """Regions are 'good' or 'bad'."""
    with pytest.raises(InvalidParameterError, match="`kind` must be 'good' or 'bad'"):
        Region(kind="ugly")  # type: ignore[arg-type]


def test_negative_state_counts_are_refused() -> None:
    """A state counts requests."""
    with pytest.raises(
        InvalidParameterError, match="`waiting` must be an integer >= 0"
    ):
        ChainState(busy=1, waiting=-1)


def test_states_outside_the_chain_are_refused() -> None:
    """A queue with an idle server is not a state."""
    with pytest.raises(InvalidParameterError, match="only if all busy"):
        _chain().state_index(ChainState(busy=1, waiting=2))


def test_orphans_in_a_chain_without_orphans_are_refused() -> None:
    """Orphans exist only without cancellation."""
    with pytest.raises(InvalidParameterError, match="this chain has no orphans"):
        _chain().state_index(ChainState(busy=2, orphans=1))


def test_decreasing_times_are_refused() -> None:
    """Transient times go forward."""
    with pytest.raises(InvalidParameterError, match="`times` must be increasing"):
        _chain().transient(ChainState(busy=0), [1.0, 0.5])


def test_initial_law_of_the_wrong_size_is_refused() -> None:
    """A distribution must cover every state."""
    with pytest.raises(InvalidParameterError, match="distribution over 8 states"):
        _chain().transient(np.ones(3) / 3, [1.0])


def test_mixing_distance_outside_the_unit_interval_is_refused() -> None:
    """Total-variation distances lie strictly between 0 and 1."""
    with pytest.raises(InvalidParameterError, match="`epsilon` must lie strictly"):
        _chain().mixing_time(1.0)


def test_unknown_solver_is_refused() -> None:
    """Solvers are auto, direct or iterative."""
    with pytest.raises(InvalidParameterError, match="`method` must be 'auto'"):
        _chain().stationary(method="lu")  # type: ignore[arg-type]


def test_phase_approximation_needs_a_timeout() -> None:
    """Phases approximate a fixed timeout only."""
    with pytest.raises(InvalidParameterError, match="`timeout` must be set"):
        _chain().phase_approximation()


def test_empty_start_region_is_refused() -> None:
    """A hitting time needs at least one start state."""
    with pytest.raises(InvalidParameterError, match="`from_region` holds no state"):
        _chain().expected_hitting_time(Region.bad(min_queue=99), Region.good())


@given(st.integers(min_value=1, max_value=4), st.integers(min_value=0, max_value=12))
def test_ranks_number_the_count_vectors_in_order(classes: int, levels: int) -> None:
    """The lexicographic rank of the enumerated vectors is 0, 1, 2, ..."""
    vectors = chain_module._vectors(classes, levels)
    table = chain_module._binomial_table(levels + classes + 1, classes + 1)
    assert vectors.shape[0] == math.comb(levels + classes, classes)
    np.testing.assert_array_equal(
        chain_module._rank(vectors, levels, table), np.arange(vectors.shape[0])
    )


# -- the command line ---------------------------------------------------------------

_EXPLICIT = [
    "chain",
    "--arrival-rate", "1.2", "--service-rate", "2.5", "--servers", "1",
    "--queue-limit", "30", "--timeout", "4", "--no-cancel-abandoned",
    "--orphan-timeout", "8", "--retry-rate", "1", "--retry-probability", "0.75",
    "--orbit-limit", "20",
]  # fmt: skip


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def test_cli_json_reports_the_library_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`retrystorm chain --json` prints the stationary summary of RetryChain."""
    status, out, _ = _run([*_EXPLICIT, "--json"], capsys)
    report = json.loads(out)
    chain = RetryChain(
        arrival_rate=1.2,
        service_rate=2.5,
        servers=1,
        queue_limit=30,
        timeout=4.0,
        cancel_abandoned=False,
        orphan_timeout=8.0,
        retry_rate=1.0,
        retry_probability=0.75,
        orbit_limit=20,
    )
    good, bad = chain.default_regions()
    assert bad is not None

    assert status == 0
    assert report["states"] == chain.state_count
    assert report["stationary"] == pytest.approx(chain.stationary().summary())
    assert report["bad_region_mass"] == pytest.approx(chain.bad_region_mass())
    escape = chain.expected_hitting_time(bad, good)
    assert report["escape_time"]["mean"] == pytest.approx(escape.mean)
    assert report["spectral_gap"] == pytest.approx(chain.spectral_gap())


def test_cli_table_names_the_escape_time(capsys: pytest.CaptureFixture[str]) -> None:
    """The readable output states the escape time and the bad region."""
    status, out, _ = _run([*_EXPLICIT, "--no-gap", "--bad-queue", "10"], capsys)
    assert status == 0
    assert "expected escape time from the bad region" in out
    assert "queue >= 10 or orbit >= 10" in out


def test_cli_scenario_file_is_scaled_to_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scenario argument is mapped and scaled down below --max-states."""
    path = tmp_path / "small.toml"
    path.write_text(
        '[scenario]\nname = "small"\nhorizon = 60.0\n'
        "[clients]\nrequest_rate = 20.0\ntimeout = 10.0\nmax_retries = 1\n"
        "[web]\npods = 2\n"
        "[proxy]\npool_size = 10\nqueue_timeout = 5.0\nqueue_limit = 40\n"
        "[database]\nservice_time = 0.4\n"
    )
    status, out, _ = _run(
        ["chain", str(path), "--max-states", "5000", "--json"], capsys
    )
    report = json.loads(out)
    assert status == 0
    assert report["scenario"] == "small"
    assert report["states"] <= 5000
    assert report["parameters"]["timeout"] == 5.0  # the proxy fails waits first


def test_cli_without_parameters_fails_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No scenario and no rates: a one-line error, exit status 2."""
    status, _, err = _run(["chain"], capsys)
    assert status == 2
    assert "give a SCENARIO or the parameters --arrival-rate" in err


def test_cli_refuses_parameters_a_scenario_sets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Rates come from the scenario: giving them too is a mistake."""
    status, _, err = _run(["chain", "incident-2025-09-16", "--servers", "3"], capsys)
    assert status == 2
    assert "--servers cannot be combined with a SCENARIO" in err


def test_cli_reports_a_chain_too_large_for_its_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The state-space error reaches the user as one line with the count."""
    status, _, err = _run(
        ["chain", "--arrival-rate", "1", "--service-rate", "1", "--servers", "1",
         "--queue-limit", "100000", "--max-states", "1000"],
        capsys,
    )  # fmt: skip
    assert status == 2
    assert "100,002 states" in err


def test_cli_says_what_to_do_with_a_scenario_too_large_at_any_scale(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The incident needs millions of states even on one server: say so, and why."""
    status, _, err = _run(["chain", "incident-2025-09-16"], capsys)
    assert status == 2
    assert err.count("\n") == 1
    assert re.search(r"would have \d{1,3}(,\d{3}){2,} states", err)  # millions
    assert "raise --max-states" in err
    assert "retrystorm review" in err


@pytest.mark.parametrize(("rate", "levels"), [(10.0, 400), (3.0, 900), (1e4, 100)])
def test_stationary_solve_recovers_from_a_reference_of_negligible_probability(
    rate: float, levels: int
) -> None:
    """A drift up to the top of a line, and a fast side loop at its bottom.

    The most likely path from state 0 ends in the loop {0, side}, so state 0,
    of probability about rate^-levels (beyond a double), is the first
    reference; the solve relative to it fails, and the next reference must
    come from that failure. The top holds 1 - 1/rate of the mass, as the
    birth-death balance says (the side state's share is negligible).
    """
    side = levels + 1
    rows, cols, values = [], [], []
    for k in range(levels):
        rows += [k, k + 1]
        cols += [k + 1, k]
        values += [rate, 1.0]
    rows += [0, side]
    cols += [side, 0]
    values += [5.0 * rate, 100.0 * rate]
    size = levels + 2
    rates = scipy.sparse.csr_matrix((values, (rows, cols)), shape=(size, size))
    generator = (
        rates - scipy.sparse.diags(np.asarray(rates.sum(axis=1)).ravel())
    ).tocsr()
    pi = chain_module._sparse.stationary_distribution(generator)
    assert pi.sum() == pytest.approx(1.0, rel=1e-12)
    assert pi[levels] == pytest.approx(1.0 - 1.0 / rate, rel=1e-9)
    assert pi[levels - 1] == pytest.approx((1.0 - 1.0 / rate) / rate, rel=1e-9)
