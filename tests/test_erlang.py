"""Erlang B and C: mpmath, brute force, identities, inverses and the error contract."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import mpmath as mp
import numpy as np
import pytest
from _reference import (
    chain,
    mp_erlang_b,
    mp_erlang_b_by_sum,
    mp_erlang_c,
    relative_error,
)
from hypothesis import given
from hypothesis import strategies as st
from retrystorm import InvalidParameterError, MMc
from retrystorm.erlang import (
    erlang_b,
    erlang_c,
    offered_load_for_blocking,
    servers_for_blocking,
)
from strategies import few_servers, loads_per_server, servers

ErlangFunction = Callable[[Any, Any], Any]

# The accuracy promised for every result against a 50-digit mpmath value.
RTOL = 1e-12
SMALLEST_NORMAL = 2.2250738585072014e-308

GRID_SERVERS = [1, 2, 3, 7, 16, 50, 100, 1000, 10_000, 100_000, 1_000_000]
GRID_UTILIZATIONS = [1e-6, 1e-3, 0.1, 0.5, 0.9, 0.999, 1 - 1e-6, 1 - 1e-9]
OVERLOADS = [1.0, 1 + 1e-9, 1.001, 1.5, 2.0, 10.0, 1e3]
# Loads (erlangs) at which B is close to 1e-300 for each server count; the
# test checks that the reference is indeed in that range.
TINY_BLOCKING_POINTS = [
    (200, 2.39712),
    (1000, 234.01),
    (10_000, 6740.0),
    (1_000_000, 963496.0),
]


def assert_matches_reference(value: float, reference: mp.mpf) -> None:
    """Relative error below RTOL, or the right underflow below the normal range."""
    if reference < SMALLEST_NORMAL:
        assert abs(value - float(reference)) <= RTOL * SMALLEST_NORMAL
    else:
        assert relative_error(value, reference) <= RTOL


@pytest.mark.parametrize("c", GRID_SERVERS)
@pytest.mark.parametrize("rho", GRID_UTILIZATIONS)
def test_erlang_b_matches_mpmath_across_the_stable_range(c: int, rho: float) -> None:
    """Erlang B equals its 50-digit incomplete-gamma form to 1e-12 relative."""
    load = rho * c
    assert_matches_reference(erlang_b(c, load), mp_erlang_b(c, load))


@pytest.mark.parametrize("c", GRID_SERVERS)
@pytest.mark.parametrize("rho", GRID_UTILIZATIONS)
def test_erlang_c_matches_mpmath_across_the_stable_range(c: int, rho: float) -> None:
    """Erlang C equals c B / (c - a + a B) in 50 digits to 1e-12 relative."""
    load = rho * c
    assert_matches_reference(erlang_c(c, load), mp_erlang_c(c, load))


@pytest.mark.parametrize("c", GRID_SERVERS)
@pytest.mark.parametrize("overload", OVERLOADS)
def test_erlang_b_matches_mpmath_when_overloaded(c: int, overload: float) -> None:
    """Erlang B stays exact for loads at and far above the server count."""
    load = overload * c
    assert_matches_reference(erlang_b(c, load), mp_erlang_b(c, load))


@pytest.mark.parametrize("c", [1, 2, 5, 12, 30])
@pytest.mark.parametrize("rho", [0.01, 0.5, 0.95, 2.0])
def test_incomplete_gamma_reference_agrees_with_the_plain_sum(
    c: int, rho: float
) -> None:
    """The reference itself: 1/B = e^a a^-c Gamma(c+1, a) equals the finite sum."""
    load = rho * c
    assert (
        relative_error(float(mp_erlang_b(c, load)), mp_erlang_b_by_sum(c, load))
        <= 1e-15
    )


@pytest.mark.parametrize("c", [1, 2, 5, 12, 30])
@pytest.mark.parametrize("rho", [0.01, 0.5, 0.95, 2.0])
def test_erlang_b_is_the_full_state_probability_of_the_loss_chain(
    c: int, rho: float
) -> None:
    """B(c, a) is pi_c of the M/M/c/c chain solved densely (double precision)."""
    pi = chain(arrival_rate=rho * c, service_rate=1.0, servers=c, top=c)
    assert erlang_b(c, rho * c) == pytest.approx(pi[c], rel=1e-10)


@pytest.mark.parametrize(("c", "load"), TINY_BLOCKING_POINTS)
def test_tiny_blocking_near_1e_minus_300_is_exact_not_zero(c: int, load: float) -> None:
    """Probabilities near 1e-300 come back to 1e-12 relative, not as 0."""
    reference = mp_erlang_b(c, load)
    assert 1e-302 < reference < 1e-298
    assert relative_error(erlang_b(c, load), reference) <= RTOL
    assert relative_error(erlang_c(c, load), mp_erlang_c(c, load)) <= RTOL


@pytest.mark.parametrize("exponent", [5, 6, 10, 30, 100, 200, 300])
def test_blocking_below_1e_minus_4_is_not_rounded_to_zero(exponent: int) -> None:
    """A calculator class returns 0 for any blocking below 1e-4; ours is exact."""
    target = 10.0**-exponent
    load = offered_load_for_blocking(40, target)
    value = erlang_b(40, load)
    assert value > 0.0
    assert relative_error(value, mp_erlang_b(40, load)) <= RTOL
    assert value == pytest.approx(target, rel=1e-12)


def test_underflow_below_the_double_range_is_exactly_zero() -> None:
    """B far below the smallest double (1e-5565710 at c = 1e6) is 0, never NaN."""
    assert erlang_b(1_000_000, 1.0) == 0.0
    assert erlang_c(1_000_000, 1.0) == 0.0


def test_no_nan_overflow_or_warning_at_a_thousand_servers() -> None:
    """A calculator class overflows factorials at c = 1000; ours is finite and exact."""
    loads = np.concatenate(
        [np.linspace(1.0, 999.999, 40), np.linspace(1000.0, 5000.0, 10)]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        blocking = erlang_b(1000, loads)
        waiting = erlang_c(1000, loads)
    assert np.all(np.isfinite(blocking))
    assert np.all(np.isfinite(waiting))
    for load, value in zip(loads[::7], blocking[::7], strict=True):
        assert_matches_reference(float(value), mp_erlang_b(1000, float(load)))


@pytest.mark.parametrize("overload", OVERLOADS)
def test_waiting_probability_is_one_not_above_one_when_overloaded(
    overload: float,
) -> None:
    """A calculator class returns a 'probability' above 1 at rho >= 1; ours is 1."""
    for c in (1, 10, 1000):
        assert erlang_c(c, overload * c) == 1.0
        assert 0.0 < erlang_b(c, overload * c) <= 1.0
        model = MMc(arrival_rate=overload * c, service_rate=1.0, servers=c)
        assert model.wait_probability == 1.0


@given(c=servers, rho=loads_per_server)
def test_probabilities_lie_in_the_unit_interval(c: int, rho: float) -> None:
    """0 <= B <= C <= 1 wherever both are defined."""
    blocking, waiting = erlang_b(c, rho * c), erlang_c(c, rho * c)
    assert 0.0 <= blocking <= waiting <= 1.0


@given(c=servers, rho=st.floats(min_value=1e-3, max_value=0.999))
def test_erlang_c_is_b_over_one_minus_rho_times_one_minus_b(c: int, rho: float) -> None:
    """C = B / (1 - rho (1 - B)) for rho < 1."""
    load = rho * c
    blocking = erlang_b(c, load)
    identity = blocking / (1.0 - (load / c) * (1.0 - blocking))
    assert erlang_c(c, load) == pytest.approx(identity, rel=1e-11)


@given(c=st.integers(min_value=2, max_value=1_000_000), rho=loads_per_server)
def test_erlang_b_satisfies_its_recurrence_in_servers(c: int, rho: float) -> None:
    """B(c, a) = a B(c-1, a) / (c + a B(c-1, a)) [Jagerman1974], for any c."""
    load = rho * c
    previous = erlang_b(c - 1, load)
    expected = load * previous / (c + load * previous)
    if expected > 1e-290:
        assert erlang_b(c, load) == pytest.approx(expected, rel=1e-12)


@given(
    c=servers, rho=loads_per_server, factor=st.floats(min_value=1.0001, max_value=2.0)
)
def test_blocking_and_waiting_rise_with_load(c: int, rho: float, factor: float) -> None:
    """B and C are non-decreasing in the offered load."""
    load = rho * c
    slack = 1.0 + 1e-13
    assert erlang_b(c, load) <= erlang_b(c, load * factor) * slack
    assert erlang_c(c, load) <= erlang_c(c, load * factor) * slack


@given(c=servers, rho=loads_per_server)
def test_blocking_and_waiting_fall_with_servers(c: int, rho: float) -> None:
    """B and C are non-increasing in the number of servers."""
    load = rho * c
    slack = 1.0 + 1e-13
    assert erlang_b(c + 1, load) <= erlang_b(c, load) * slack
    assert erlang_c(c + 1, load) <= erlang_c(c, load) * slack


@given(load=st.floats(min_value=1e-6, max_value=1e6))
def test_one_server_agrees_with_the_single_server_formulas(load: float) -> None:
    """B(1, a) = a / (1 + a), and C(1, a) = a for a < 1 (M/M/1)."""
    assert erlang_b(1, load) == pytest.approx(load / (1.0 + load), rel=1e-13)
    expected_c = load if load < 1.0 else 1.0
    assert erlang_c(1, load) == pytest.approx(expected_c, rel=1e-13)


def test_arrays_broadcast_and_match_scalar_calls() -> None:
    """Vectorised calls broadcast like numpy and agree with scalar calls exactly."""
    c = np.array([[1], [10], [1000]])
    loads = np.array([0.5, 5.0, 900.0, 2000.0])
    blocking, waiting = erlang_b(c, loads), erlang_c(c, loads)
    assert isinstance(blocking, np.ndarray)
    assert blocking.shape == waiting.shape == (3, 4)
    for i, j in np.ndindex(blocking.shape):
        assert blocking[i, j] == erlang_b(int(c[i, 0]), float(loads[j]))
        assert waiting[i, j] == erlang_c(int(c[i, 0]), float(loads[j]))


def test_scalar_inputs_give_a_python_float() -> None:
    """Scalars in, float out."""
    assert isinstance(erlang_b(3, 2.0), float)
    assert isinstance(erlang_c(3, 2.0), float)


@pytest.mark.parametrize("c", [1, 4, 100, 1_000_000])
@pytest.mark.parametrize("target", [1e-300, 1e-20, 1e-5, 0.01, 0.5, 0.99])
def test_offered_load_for_blocking_inverts_erlang_b(c: int, target: float) -> None:
    """B(c, offered_load_for_blocking(c, p)) = p."""
    load = offered_load_for_blocking(c, target)
    assert erlang_b(c, load) == pytest.approx(target, rel=1e-11)


@pytest.mark.parametrize("load", [0.01, 1.0, 10.0, 333.3, 20_000.0])
@pytest.mark.parametrize("target", [1e-12, 1e-3, 0.02, 0.5])
def test_servers_for_blocking_is_the_fewest_that_suffice(
    load: float, target: float
) -> None:
    """B(c, a) <= p < B(c - 1, a) for c = servers_for_blocking(a, p)."""
    c = servers_for_blocking(load, target)
    assert erlang_b(c, load) <= target
    if c > 1:
        assert erlang_b(c - 1, load) > target


@pytest.mark.parametrize("function", [erlang_b, erlang_c])
@pytest.mark.parametrize(
    ("servers_value", "message"),
    [
        (0, r"`servers` must be a positive integer \(got 0\)"),
        (-3, r"`servers` must be a positive integer \(got -3\)"),
        (2.5, r"`servers` must be a positive integer \(got 2\.5\)"),
        (math.nan, r"`servers` must be a positive integer \(got nan\)"),
        (math.inf, r"`servers` must be a positive integer \(got inf\)"),
        ([1, 0], r"`servers` must contain only positive integers \(got 0\.0\)"),
        ("four", r"`servers` must be an array of integers \(got 'four'\)"),
    ],
)
def test_servers_must_be_positive_integers(
    function: ErlangFunction, servers_value: object, message: str
) -> None:
    """A server count that is not a positive integer is refused by name."""
    with pytest.raises(InvalidParameterError, match=message):
        function(servers_value, 1.0)


@pytest.mark.parametrize("function", [erlang_b, erlang_c])
@pytest.mark.parametrize(
    ("load", "message"),
    [
        (0.0, r"`offered_load` must be finite and positive \(got 0\.0\)"),
        (-1.0, r"`offered_load` must be finite and positive \(got -1\.0\)"),
        (math.nan, r"`offered_load` must be finite and positive \(got nan\)"),
        (math.inf, r"`offered_load` must be finite and positive \(got inf\)"),
        (
            [2.0, -1.0],
            r"`offered_load` must contain only finite positive numbers \(got -1\.0\)",
        ),
        ("x", r"`offered_load` must be an array of numbers \(got 'x'\)"),
    ],
)
def test_offered_load_must_be_finite_and_positive(
    function: ErlangFunction, load: object, message: str
) -> None:
    """A load that is not finite and positive is refused by name."""
    with pytest.raises(InvalidParameterError, match=message):
        function(3, load)


def test_shapes_must_broadcast() -> None:
    """Arrays of incompatible shapes are refused with both shapes named."""
    with pytest.raises(InvalidParameterError, match=r"`offered_load` must broadcast"):
        erlang_b([1, 2, 3], [1.0, 2.0])


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5, math.nan])
def test_blocking_target_must_lie_strictly_between_0_and_1(target: float) -> None:
    """Both inverses refuse a target outside (0, 1)."""
    with pytest.raises(InvalidParameterError, match=r"`blocking`"):
        offered_load_for_blocking(10, target)
    with pytest.raises(InvalidParameterError, match=r"`blocking`"):
        servers_for_blocking(5.0, target)


def test_inverse_refuses_a_bad_server_count() -> None:
    """offered_load_for_blocking needs a positive integer server count."""
    with pytest.raises(
        InvalidParameterError, match=r"`servers` must be a positive integer"
    ):
        offered_load_for_blocking(0, 0.01)


def test_inverse_refuses_a_bad_load() -> None:
    """servers_for_blocking needs a finite positive load."""
    with pytest.raises(InvalidParameterError, match=r"`offered_load` must be positive"):
        servers_for_blocking(-2.0, 0.01)


@given(c=few_servers, rho=st.floats(min_value=0.05, max_value=0.95))
def test_erlang_c_equals_the_waiting_mass_of_the_mmc_chain(c: int, rho: float) -> None:
    """C(c, a) = P(N >= c) of the M/M/c chain, truncated where rho^n < 1e-18."""
    top = c + math.ceil(math.log(1e-18) / math.log(rho)) + 1
    pi = chain(arrival_rate=rho * c, service_rate=1.0, servers=c, top=top)
    assert erlang_c(c, rho * c) == pytest.approx(pi[c:].sum(), rel=1e-9)
