"""Erlang-A (M/M/c+M): mpmath, brute force, identities, limits, large pools, errors."""

from __future__ import annotations

import math

import pytest
from _reference import (
    chain,
    mp_erlang_a,
    mp_erlang_a_tails,
    relative_error,
    tagged_wait_tail,
)
from hypothesis import given
from hypothesis import strategies as st
from retrystorm import ErlangA, InvalidParameterError, MMc, servers_for_abandonment
from strategies import abandonment_rates, few_servers, loads_per_server

# Against 50-digit mpmath: the accuracy the library promises (1e-12 relative).
RTOL = 1e-12
# Against the dense generator reduced by GTH (see test_mmc).
CHAIN_RTOL = 1e-11
CHAIN_ATOL = 1e-300
QUANTITIES = [
    "utilization",
    "occupancy",
    "abandonment_probability",
    "throughput",
    "wait_probability",
    "mean_wait",
    "mean_queue_length",
    "mean_response_time",
    "mean_in_system",
]


def model(
    rho: float, c: int, patience_ratio: float, service_rate: float = 0.7
) -> ErlangA:
    """Erlang-A with utilisation ``rho`` and ``theta = patience_ratio * mu``."""
    return ErlangA(
        arrival_rate=rho * c * service_rate,
        service_rate=service_rate,
        servers=c,
        abandonment_rate=patience_ratio * service_rate,
    )


def assert_all_match_mpmath(q: ErlangA) -> None:
    """Every quantity of ``q`` equals the 50-digit chain sums to RTOL."""
    reference = mp_erlang_a(
        q.arrival_rate, q.service_rate, q.servers, q.abandonment_rate
    )
    for name in QUANTITIES:
        if reference[name] > 1e-300:
            assert relative_error(getattr(q, name), reference[name]) <= RTOL, name


@pytest.mark.parametrize("c", [1, 2, 10, 100, 1000])
@pytest.mark.parametrize("rho", [1e-3, 0.5, 0.95, 1.0, 1.3])
@pytest.mark.parametrize("patience_ratio", [0.05, 1.0, 20.0])
def test_every_quantity_matches_mpmath(
    c: int, rho: float, patience_ratio: float
) -> None:
    """All Erlang-A quantities equal the 50-digit birth-death sums to 1e-12."""
    assert_all_match_mpmath(model(rho, c, patience_ratio))


@pytest.mark.parametrize(
    ("rho", "patience_ratio"), [(0.9, 1.0), (1.0, 1.0), (1.1, 1.0), (0.99, 0.2)]
)
def test_a_hundred_thousand_servers_match_mpmath(
    rho: float, patience_ratio: float
) -> None:
    """c = 1e5 (the size where truncating calculators fail) is exact to 1e-12."""
    assert_all_match_mpmath(model(rho, 100_000, patience_ratio))


def test_truncating_the_chain_at_a_few_hundred_states_would_be_wrong() -> None:
    """A calculator class cuts the chain at a few hundred states: wrong for 500 servers.

    The cut chain's waiting probability is off by far more than 1 %, while the
    exact result agrees with mpmath to 1e-12.
    """
    q = model(1.02, 500, 0.01)
    cut = chain(q.arrival_rate, q.service_rate, 500, 600, q.abandonment_rate)
    truncated_waiting = cut[500:].sum()
    assert abs(truncated_waiting - q.wait_probability) > 0.01
    assert_all_match_mpmath(q)


@pytest.mark.parametrize(
    ("c", "rho", "patience_ratio"), [(1, 0.8, 0.5), (5, 1.2, 2.0), (30, 0.97, 0.1)]
)
@pytest.mark.parametrize("scaled_t", [0.0, 0.2, 1.5])
def test_tails_match_quadrature_of_the_offered_wait_density(
    c: int, rho: float, patience_ratio: float, scaled_t: float
) -> None:
    """P(W > t) and P(served, W <= t) equal 50-digit quadratures of the density."""
    q = model(rho, c, patience_ratio)
    t = scaled_t / (c * q.service_rate)
    tail, served_late = mp_erlang_a_tails(
        q.arrival_rate, q.service_rate, c, q.abandonment_rate, t
    )
    assert relative_error(q.wait_tail(t), tail) <= RTOL
    reference = mp_erlang_a(q.arrival_rate, q.service_rate, c, q.abandonment_rate)
    served_within = 1 - reference["abandonment_probability"] - served_late
    assert relative_error(q.served_within(t), served_within) <= RTOL


@pytest.mark.parametrize(
    ("c", "rho", "patience_ratio"), [(1, 0.8, 0.5), (5, 1.2, 2.0), (30, 0.97, 0.1)]
)
def test_offered_wait_density_integrates_to_the_chain_waiting_mass(
    c: int, rho: float, patience_ratio: float
) -> None:
    """int_0^inf v(x) dx = P(N >= c) of the chain: the density is normalised right."""
    q = model(rho, c, patience_ratio)
    tail, _ = mp_erlang_a_tails(
        q.arrival_rate, q.service_rate, c, q.abandonment_rate, 0.0
    )
    reference = mp_erlang_a(q.arrival_rate, q.service_rate, c, q.abandonment_rate)
    assert relative_error(float(tail), reference["wait_probability"]) <= 1e-15


@pytest.mark.parametrize(
    ("c", "rho", "patience_ratio"), [(1, 0.8, 0.5), (4, 1.5, 1.0), (8, 0.9, 0.2)]
)
@pytest.mark.parametrize("t", [0.1, 1.0, 4.0])
def test_wait_tail_agrees_with_a_tagged_request(
    c: int, rho: float, patience_ratio: float, t: float
) -> None:
    """Brute force: a tagged request's transient law (own abandonment included)."""
    q = model(rho, c, patience_ratio)
    pi = chain(q.arrival_rate, q.service_rate, c, c + 150, q.abandonment_rate)
    expected = tagged_wait_tail(
        pi, q.service_rate, c, t, abandonment_rate=q.abandonment_rate
    )
    assert q.wait_tail(t) == pytest.approx(expected, rel=CHAIN_RTOL, abs=CHAIN_ATOL)


@given(c=few_servers, rho=loads_per_server, theta=abandonment_rates)
def test_closed_forms_agree_with_the_truncated_chain(
    c: int, rho: float, theta: float
) -> None:
    """Brute force: a chain cut far beyond its mass (tail < 1e-20) agrees."""
    q = ErlangA(
        arrival_rate=rho * c, service_rate=1.0, servers=c, abandonment_rate=theta
    )
    # The ratio lambda / (c + j theta) is below 1/2 once j > 2 lambda / theta.
    top = c + int(2 * q.arrival_rate / theta) + 80
    if top > 600:
        return
    pi = chain(q.arrival_rate, 1.0, c, top, theta)
    waiting = sum((k - c) * p for k, p in enumerate(pi) if k > c)
    assert q.wait_probability == pytest.approx(
        pi[c:].sum(), rel=CHAIN_RTOL, abs=CHAIN_ATOL
    )
    assert q.mean_queue_length == pytest.approx(waiting, rel=CHAIN_RTOL, abs=CHAIN_ATOL)


@given(c=few_servers, rho=loads_per_server, theta=abandonment_rates)
def test_abandonment_is_theta_times_queue_over_lambda(
    c: int, rho: float, theta: float
) -> None:
    """P(ab) = theta E[Q] / lambda; the served flow lambda (1 - P(ab)) = mu E[busy]."""
    q = ErlangA(
        arrival_rate=rho * c, service_rate=1.0, servers=c, abandonment_rate=theta
    )
    assert q.abandonment_probability == pytest.approx(
        theta * q.mean_queue_length / q.arrival_rate, rel=1e-12
    )
    assert q.throughput == pytest.approx(
        q.arrival_rate * (1.0 - q.abandonment_probability), rel=1e-11
    )


@given(c=few_servers, rho=loads_per_server, theta=abandonment_rates)
def test_littles_law_holds_over_all_arrivals(c: int, rho: float, theta: float) -> None:
    """L = lambda E[T] and L_q = lambda E[W], abandoning requests included."""
    q = ErlangA(
        arrival_rate=rho * c, service_rate=1.0, servers=c, abandonment_rate=theta
    )
    assert q.mean_in_system == pytest.approx(
        q.arrival_rate * q.mean_response_time, rel=1e-12
    )
    assert q.mean_queue_length == pytest.approx(q.arrival_rate * q.mean_wait, rel=1e-12)


@given(c=few_servers, rho=loads_per_server, theta=abandonment_rates)
def test_probabilities_lie_in_the_unit_interval(
    c: int, rho: float, theta: float
) -> None:
    """Every probability is in [0, 1]."""
    q = ErlangA(
        arrival_rate=rho * c, service_rate=1.0, servers=c, abandonment_rate=theta
    )
    for value in (
        q.wait_probability,
        q.abandonment_probability,
        q.occupancy,
        q.wait_tail(0.3),
        q.served_within(0.3),
    ):
        assert 0.0 <= value <= 1.0


@given(c=few_servers, rho=st.floats(min_value=0.01, max_value=0.95))
def test_vanishing_abandonment_tends_to_mmc(c: int, rho: float) -> None:
    """theta -> 0 with rho < 1 gives M/M/c (here theta = 1e-9 mu, error O(theta))."""
    q = model(rho, c, 1e-9)
    limit = MMc(arrival_rate=q.arrival_rate, service_rate=q.service_rate, servers=c)
    assert q.wait_probability == pytest.approx(limit.wait_probability, rel=1e-6)
    assert q.mean_wait == pytest.approx(limit.mean_wait, rel=1e-6, abs=1e-300)
    assert q.wait_tail(limit.mean_wait) == pytest.approx(
        limit.wait_tail(limit.mean_wait), rel=1e-6
    )


@given(rho=loads_per_server, theta=abandonment_rates)
def test_one_server_agrees_with_the_mm1_plus_m_series(rho: float, theta: float) -> None:
    """c = 1: 1/pi_0 = 1 + (lambda/mu) sum_j prod_{i<=j} lambda / (mu + i theta)."""
    lam = rho
    q = ErlangA(arrival_rate=lam, service_rate=1.0, servers=1, abandonment_rate=theta)
    series, term, j = 1.0, 1.0, 0
    while term > 1e-18 * series or j < lam / theta:
        j += 1
        term *= lam / (1.0 + j * theta)
        series += term
    empty = 1.0 / (1.0 + lam * series)
    assert q.wait_probability == pytest.approx(1.0 - empty, rel=1e-10)


@given(c=few_servers, rho=loads_per_server, factor=st.floats(1.001, 1.1))
def test_abandonment_rises_with_arrivals_and_falls_with_servers(
    c: int, rho: float, factor: float
) -> None:
    """P(abandon) rises with lambda and falls as servers are added."""
    q = model(rho, c, 0.5)
    busier = model(rho * factor, c, 0.5)
    bigger = ErlangA(
        arrival_rate=q.arrival_rate,
        service_rate=q.service_rate,
        servers=c + 1,
        abandonment_rate=q.abandonment_rate,
    )
    slack = 1 + 1e-12
    assert q.abandonment_probability <= busier.abandonment_probability * slack
    assert bigger.abandonment_probability <= q.abandonment_probability * slack


@given(c=few_servers, rho=loads_per_server, level=st.floats(0.01, 0.999))
def test_wait_quantile_inverts_the_wait_distribution(
    c: int, rho: float, level: float
) -> None:
    """P(W <= wait_quantile(q)) = q above the atom at 0."""
    q = model(rho, c, 0.5)
    t = q.wait_quantile(level)
    if level <= 1.0 - q.wait_probability:
        assert t == 0.0
    else:
        assert q.wait_tail(t) == pytest.approx(1.0 - level, rel=1e-9)


@pytest.mark.parametrize("target", [0.001, 0.01, 0.1])
def test_servers_for_abandonment_is_the_fewest_that_suffice(target: float) -> None:
    """P(ab) at c meets the target and at c - 1 does not."""
    arguments = {"arrival_rate": 30.0, "service_rate": 0.5, "abandonment_rate": 0.2}
    c = servers_for_abandonment(**arguments, max_abandonment=target)
    assert ErlangA(**arguments, servers=c).abandonment_probability <= target
    assert ErlangA(**arguments, servers=c - 1).abandonment_probability > target


def test_summary_keys_are_the_property_names() -> None:
    """summary() maps each property name to its value."""
    q = model(0.9, 5, 0.5)
    assert q.summary() == {name: getattr(q, name) for name in QUANTITIES}


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (0.0, "must be positive"),
        (-0.1, "must be positive"),
        (math.nan, "must be a number, not NaN"),
        (math.inf, "must be finite"),
    ],
)
def test_abandonment_rate_must_be_finite_and_positive(value: float, rule: str) -> None:
    """theta = 0 (that is M/M/c), negative, NaN or inf is refused by name."""
    with pytest.raises(InvalidParameterError, match=rf"`abandonment_rate` {rule}"):
        ErlangA(arrival_rate=1.0, service_rate=1.0, servers=2, abandonment_rate=value)


@pytest.mark.parametrize("name", ["arrival_rate", "service_rate"])
def test_rates_must_be_positive(name: str) -> None:
    """A negative rate is refused by name."""
    arguments: dict[str, object] = {
        "arrival_rate": 1.0,
        "service_rate": 1.0,
        "servers": 1,
        "abandonment_rate": 1.0,
    }
    arguments[name] = -1.0
    with pytest.raises(InvalidParameterError, match=rf"`{name}` must be positive"):
        ErlangA(**arguments)  # type: ignore[arg-type]


def test_servers_must_be_a_positive_integer() -> None:
    """servers = 1.5 is refused."""
    with pytest.raises(InvalidParameterError, match=r"`servers` must be an integer"):
        ErlangA(arrival_rate=1.0, service_rate=1.0, servers=1.5, abandonment_rate=1.0)  # type: ignore[arg-type]


def test_abandonment_target_must_lie_strictly_between_0_and_1() -> None:
    """servers_for_abandonment refuses a target of 0."""
    with pytest.raises(
        InvalidParameterError, match=r"`max_abandonment` must lie strictly"
    ):
        servers_for_abandonment(
            arrival_rate=1.0,
            service_rate=1.0,
            abandonment_rate=1.0,
            max_abandonment=0.0,
        )
