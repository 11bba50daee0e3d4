"""M/M/c+D: quadrature, simulation, limits, single-server form, identities, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _reference import (
    batch_mean_interval,
    mp_mmcd,
    mp_mmcd_wait_tail,
    relative_error,
    simulate_mmcd,
)
from hypothesis import given
from hypothesis import strategies as st
from retrystorm import InvalidParameterError, MMc, MMcD, erlang_b
from strategies import few_servers, loads_per_server, timeouts

# Against 50-digit quadrature of the offered-wait density.
RTOL = 1e-12
QUANTITIES = [
    "utilization",
    "occupancy",
    "abandonment_probability",
    "throughput",
    "wait_probability",
    "mean_wait",
    "mean_wait_served",
    "mean_queue_length",
    "mean_response_time",
    "mean_in_system",
]


def model(rho: float, c: int, scaled_timeout: float, service_rate: float = 0.3) -> MMcD:
    """M/M/c+D with utilisation ``rho`` and ``timeout = scaled_timeout / (c mu)``."""
    return MMcD(
        arrival_rate=rho * c * service_rate,
        service_rate=service_rate,
        servers=c,
        timeout=scaled_timeout / (c * service_rate),
    )


@pytest.mark.parametrize("c", [1, 2, 10, 100])
@pytest.mark.parametrize("rho", [0.3, 0.95, 1.0, 1.3, 5.0])
@pytest.mark.parametrize("scaled_timeout", [0.01, 1.0, 30.0])
def test_every_quantity_matches_quadrature(
    c: int, rho: float, scaled_timeout: float
) -> None:
    """All M/M/c+D quantities equal 50-digit integrals of the offered-wait density."""
    q = model(rho, c, scaled_timeout)
    reference = mp_mmcd(q.arrival_rate, q.service_rate, c, q.timeout)
    for name in QUANTITIES:
        if reference[name] > 1e-300:
            assert relative_error(getattr(q, name), reference[name]) <= RTOL, name


@pytest.mark.parametrize(("c", "rho"), [(1000, 0.99), (1000, 1.0), (100_000, 1.001)])
def test_large_pools_match_quadrature(c: int, rho: float) -> None:
    """Exact at a thousand and a hundred thousand servers."""
    q = model(rho, c, 5.0)
    reference = mp_mmcd(q.arrival_rate, q.service_rate, c, q.timeout)
    for name in QUANTITIES:
        assert relative_error(getattr(q, name), reference[name]) <= RTOL, name


@pytest.mark.parametrize(
    ("c", "rho", "scaled_timeout"), [(1, 0.5, 2.0), (8, 1.2, 10.0)]
)
@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.999])
def test_wait_tail_matches_quadrature(
    c: int, rho: float, scaled_timeout: float, fraction: float
) -> None:
    """P(W > t) below the timeout equals the integral of the density from t."""
    q = model(rho, c, scaled_timeout)
    t = fraction * q.timeout
    expected = mp_mmcd_wait_tail(q.arrival_rate, q.service_rate, c, q.timeout, t)
    assert relative_error(q.wait_tail(t), expected) <= RTOL


def test_density_formula_agrees_with_a_simulation() -> None:
    """A seeded FCFS simulation lands inside 99.9 % batch-means intervals.

    c = 5, rho = 1.1, timeout = 2 mean services: 400,000 arrivals after a
    warm-up of 20,000 (seed 20250916).
    """
    q = MMcD(arrival_rate=5.5, service_rate=1.0, servers=5, timeout=2.0)
    rng = np.random.default_rng(20250916)
    wait, served = simulate_mmcd(5.5, 1.0, 5, 2.0, arrivals=420_000, rng=rng)
    wait, served = wait[20_000:], served[20_000:]
    checks = [
        (~served, q.abandonment_probability),
        (wait, q.mean_wait),
        (wait > 0.5, q.wait_tail(0.5)),
        (wait > 0.0, q.wait_probability),
    ]
    for samples, exact in checks:
        mean, half_width = batch_mean_interval(samples.astype(float))
        assert abs(mean - exact) <= half_width, (mean, exact, half_width)


@given(c=few_servers, rho=loads_per_server, scaled_timeout=timeouts)
def test_littles_law_holds_over_all_arrivals(
    c: int, rho: float, scaled_timeout: float
) -> None:
    """L = lambda E[T] and L_q = lambda E[W], timed-out requests included."""
    q = model(rho, c, scaled_timeout)
    assert q.mean_in_system == pytest.approx(
        q.arrival_rate * q.mean_response_time, rel=1e-12
    )
    assert q.mean_queue_length == pytest.approx(q.arrival_rate * q.mean_wait, rel=1e-12)


@given(c=few_servers, rho=loads_per_server, scaled_timeout=timeouts)
def test_served_flow_balances_the_busy_servers(
    c: int, rho: float, scaled_timeout: float
) -> None:
    """lambda (1 - P(ab)) = mu E[busy], two independent routes to the same flow."""
    q = model(rho, c, scaled_timeout)
    assert q.throughput == pytest.approx(
        q.arrival_rate * (1.0 - q.abandonment_probability), rel=1e-11
    )


@given(c=few_servers, rho=loads_per_server, scaled_timeout=timeouts)
def test_probabilities_lie_in_the_unit_interval(
    c: int, rho: float, scaled_timeout: float
) -> None:
    """Every probability is in [0, 1] and P(ab) <= P(wait)."""
    q = model(rho, c, scaled_timeout)
    assert 0.0 <= q.abandonment_probability <= q.wait_probability <= 1.0
    assert 0.0 <= q.occupancy <= 1.0
    assert 0.0 <= q.wait_tail(q.timeout / 2) <= 1.0


@given(rho=loads_per_server, scaled_timeout=timeouts)
def test_one_server_agrees_with_the_mm1_plus_d_formula(
    rho: float, scaled_timeout: float
) -> None:
    """c = 1: P(ab) = (1 - rho) rho E / (1 - rho^2 E), E = e^-((mu - lambda) T)."""
    q = model(rho, 1, scaled_timeout, service_rate=1.0)
    decay = math.exp(-(1.0 - q.arrival_rate) * q.timeout)
    if abs(rho - 1.0) < 1e-6:
        return
    expected = (1.0 - rho) * rho * decay / (1.0 - rho * rho * decay)
    assert q.abandonment_probability == pytest.approx(expected, rel=1e-9)


@given(c=few_servers, rho=st.floats(min_value=0.01, max_value=0.95))
def test_long_timeout_tends_to_mmc(c: int, rho: float) -> None:
    """T -> inf with rho < 1 gives M/M/c (here e^-((c mu - lambda) T) < 1e-30)."""
    gap = c * 0.3 * (1.0 - rho)
    q = MMcD(
        arrival_rate=rho * c * 0.3, service_rate=0.3, servers=c, timeout=70.0 / gap
    )
    limit = MMc(arrival_rate=q.arrival_rate, service_rate=0.3, servers=c)
    assert q.wait_probability == pytest.approx(limit.wait_probability, rel=1e-12)
    assert q.mean_wait == pytest.approx(limit.mean_wait, rel=1e-12)
    assert q.abandonment_probability < 1e-30


@given(c=few_servers, rho=loads_per_server)
def test_vanishing_timeout_is_the_erlang_loss_system(c: int, rho: float) -> None:
    """T -> 0: whoever finds all servers busy leaves at once, so P(ab) -> B(c, a)."""
    q = model(rho, c, 1e-10)
    assert q.abandonment_probability == pytest.approx(
        erlang_b(c, q.offered_load), rel=1e-8
    )


@given(c=few_servers, rho=loads_per_server, scaled_timeout=timeouts)
def test_abandonment_falls_with_timeout_and_rises_with_arrivals(
    c: int, rho: float, scaled_timeout: float
) -> None:
    """A longer timeout means fewer give-ups; more arrivals mean more."""
    q = model(rho, c, scaled_timeout)
    patient = model(rho, c, scaled_timeout * 1.1)
    busier = model(rho * 1.05, c, scaled_timeout)
    slack = 1 + 1e-12
    assert patient.abandonment_probability <= q.abandonment_probability * slack
    assert q.abandonment_probability <= busier.abandonment_probability * slack


def test_exact_saturation_needs_no_special_case() -> None:
    """lambda = c mu exactly and within 1e-12 of it give continuous results."""
    at = model(1.0, 10, 3.0, service_rate=1.0)
    near = MMcD(
        arrival_rate=10.0 * (1 + 1e-12), service_rate=1.0, servers=10, timeout=0.3
    )
    assert at.abandonment_probability == pytest.approx(
        near.abandonment_probability, rel=1e-10
    )
    assert at.mean_wait == pytest.approx(near.mean_wait, rel=1e-10)


@given(c=few_servers, rho=loads_per_server, level=st.floats(0.01, 0.999))
def test_wait_quantile_has_an_atom_at_the_timeout(
    c: int, rho: float, level: float
) -> None:
    """Quantiles above 1 - P(ab) are the timeout; below it they invert the tail."""
    q = model(rho, c, 3.0)
    t = q.wait_quantile(level)
    if level > 1.0 - q.abandonment_probability:
        assert t == q.timeout
    elif level <= 1.0 - q.wait_probability:
        assert t == 0.0
    else:
        assert q.wait_tail(t) == pytest.approx(1.0 - level, rel=1e-9)


def test_wait_tail_is_zero_from_the_timeout_on() -> None:
    """Nobody waits longer than the timeout."""
    q = model(2.0, 3, 1.0)
    assert q.wait_tail(q.timeout) == 0.0
    assert q.wait_tail(q.timeout * 0.999) > 0.0


def test_summary_keys_are_the_property_names() -> None:
    """summary() maps each property name to its value."""
    q = model(0.9, 5, 2.0)
    assert q.summary() == {name: getattr(q, name) for name in QUANTITIES}


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (0.0, "must be positive"),
        (-1.0, "must be positive"),
        (math.inf, "must be finite"),
        (math.nan, "must be a number, not NaN"),
    ],
)
def test_timeout_must_be_finite_and_positive(value: float, rule: str) -> None:
    """timeout = 0, negative, inf or NaN is refused by name."""
    with pytest.raises(InvalidParameterError, match=rf"`timeout` {rule}"):
        MMcD(arrival_rate=1.0, service_rate=1.0, servers=2, timeout=value)


@pytest.mark.parametrize("name", ["arrival_rate", "service_rate"])
def test_rates_must_be_positive(name: str) -> None:
    """A zero rate is refused by name."""
    arguments: dict[str, object] = {
        "arrival_rate": 1.0,
        "service_rate": 1.0,
        "servers": 1,
        "timeout": 1.0,
    }
    arguments[name] = 0.0
    with pytest.raises(InvalidParameterError, match=rf"`{name}` must be positive"):
        MMcD(**arguments)  # type: ignore[arg-type]


def test_servers_must_be_a_positive_integer() -> None:
    """servers = 0 is refused."""
    with pytest.raises(
        InvalidParameterError, match=r"`servers` must be a positive integer"
    ):
        MMcD(arrival_rate=1.0, service_rate=1.0, servers=0, timeout=1.0)
