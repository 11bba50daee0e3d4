"""M/M/c/K: mpmath, brute force, Little's law, limits and the error contract."""

from __future__ import annotations

import math

import pytest
from _reference import (
    chain,
    mp_mmck,
    mp_mmck_wait_tail,
    relative_error,
    tagged_wait_tail,
)
from hypothesis import given
from hypothesis import strategies as st
from retrystorm import InvalidParameterError, MMc, MMcK, erlang_b
from strategies import few_servers, loads_per_server, queue_rooms, service_rates

# Against 50-digit mpmath: the accuracy the library promises (1e-12 relative).
RTOL = 1e-12
# Against the dense generator reduced by GTH (see test_mmc).
CHAIN_RTOL = 1e-11
CHAIN_ATOL = 1e-300
QUANTITIES = [
    "utilization",
    "occupancy",
    "blocking_probability",
    "throughput",
    "wait_probability",
    "mean_wait",
    "mean_queue_length",
    "mean_response_time",
    "mean_in_system",
]


def model(rho: float, c: int, room: int, service_rate: float = 1.7) -> MMcK:
    """An M/M/c/K with utilisation ``rho`` and ``room`` waiting places."""
    return MMcK(
        arrival_rate=rho * c * service_rate,
        service_rate=service_rate,
        servers=c,
        capacity=c + room,
    )


@pytest.mark.parametrize("c", [1, 2, 10, 200])
@pytest.mark.parametrize("room", [0, 1, 5, 100, 1000])
@pytest.mark.parametrize("rho", [1e-3, 0.5, 1.0, 1 - 1e-9, 1.5, 20.0])
def test_every_quantity_matches_mpmath(c: int, room: int, rho: float) -> None:
    """All M/M/c/K quantities equal the explicit 50-digit state sums to 1e-12."""
    q = model(rho, c, room)
    reference = mp_mmck(q.arrival_rate, q.service_rate, c, c + room)
    for name in QUANTITIES:
        if reference[name] > 1e-300:
            assert relative_error(getattr(q, name), reference[name]) <= RTOL, name
        else:
            assert getattr(q, name) < 1e-290, name


@pytest.mark.parametrize(
    ("c", "room", "rho"), [(1, 3, 0.5), (3, 4, 1.3), (8, 30, 0.97)]
)
@pytest.mark.parametrize("scaled_t", [0.01, 0.3, 2.0, 10.0])
def test_wait_tail_matches_mpmath(
    c: int, room: int, rho: float, scaled_t: float
) -> None:
    """P(W > t | admitted) equals the 50-digit sum over arrival states."""
    q = model(rho, c, room)
    t = scaled_t / (c * q.service_rate)
    expected = mp_mmck_wait_tail(q.arrival_rate, q.service_rate, c, c + room, t)
    assert relative_error(q.wait_tail(t), expected) <= RTOL


@given(c=few_servers, room=queue_rooms, rho=loads_per_server)
def test_closed_forms_agree_with_the_finite_chain(
    c: int, room: int, rho: float
) -> None:
    """Brute force: the dense solve of the chain on 0..K gives the same law."""
    q = model(rho, c, room)
    pi = chain(q.arrival_rate, q.service_rate, c, c + room)
    waiting = sum((k - c) * p for k, p in enumerate(pi) if k > c)
    assert q.blocking_probability == pytest.approx(
        pi[-1], rel=CHAIN_RTOL, abs=CHAIN_ATOL
    )
    assert q.mean_queue_length == pytest.approx(waiting, rel=CHAIN_RTOL, abs=CHAIN_ATOL)
    assert q.state_probability(0) == pytest.approx(
        pi[0], rel=CHAIN_RTOL, abs=CHAIN_ATOL
    )


@pytest.mark.parametrize(("c", "room", "rho"), [(1, 5, 0.5), (4, 10, 1.2), (6, 3, 3.0)])
@pytest.mark.parametrize("t", [0.05, 0.5, 2.0])
def test_wait_tail_agrees_with_a_tagged_request(
    c: int, room: int, rho: float, t: float
) -> None:
    """Brute force: the transient law of one admitted request gives the same tail."""
    q = model(rho, c, room)
    pi = chain(q.arrival_rate, q.service_rate, c, c + room)
    expected = tagged_wait_tail(pi, q.service_rate, c, t, refused_state=c + room)
    assert q.wait_tail(t) == pytest.approx(expected, rel=CHAIN_RTOL, abs=CHAIN_ATOL)


@given(c=few_servers, room=queue_rooms, rho=loads_per_server, mu=service_rates)
def test_littles_law_holds_with_the_throughput(
    c: int, room: int, rho: float, mu: float
) -> None:
    """L = throughput E[T] and L_q = throughput E[W] for admitted requests."""
    q = model(rho, c, room, mu)
    assert q.mean_in_system == pytest.approx(
        q.throughput * q.mean_response_time, rel=1e-12
    )
    assert q.mean_queue_length == pytest.approx(
        q.throughput * q.mean_wait, rel=1e-12, abs=1e-300
    )


@given(c=few_servers, room=queue_rooms, rho=loads_per_server)
def test_probabilities_lie_in_the_unit_interval(c: int, room: int, rho: float) -> None:
    """Blocking, waiting, occupancy in [0, 1]; throughput <= min(lambda, c mu)."""
    q = model(rho, c, room)
    for value in (
        q.blocking_probability,
        q.wait_probability,
        q.occupancy,
        q.wait_tail(0.1),
    ):
        assert 0.0 <= value <= 1.0
    assert q.throughput <= min(q.arrival_rate, c * q.service_rate) * (1 + 1e-14)


@given(c=few_servers, rho=loads_per_server)
def test_no_waiting_room_is_the_erlang_loss_system(c: int, rho: float) -> None:
    """K = c: blocking is Erlang B and nobody waits."""
    q = model(rho, c, 0)
    assert q.blocking_probability == pytest.approx(
        erlang_b(c, q.offered_load), rel=1e-13
    )
    assert q.mean_wait == 0.0
    assert q.wait_probability == 0.0


@given(rho=st.floats(min_value=1e-3, max_value=50.0), room=queue_rooms)
def test_one_server_agrees_with_mm1k(rho: float, room: int) -> None:
    """M/M/1/K: pi_n = rho^n (1 - rho) / (1 - rho^(K+1)) [Kleinrock1975] Sec. 3.6."""
    q = MMcK(arrival_rate=rho, service_rate=1.0, servers=1, capacity=1 + room)
    top = room + 1
    if abs(rho - 1.0) < 1e-6:
        return
    empty = (1.0 - rho) / (1.0 - rho ** (top + 1))
    assert q.state_probability(0) == pytest.approx(empty, rel=1e-9)
    assert q.blocking_probability == pytest.approx(empty * rho**top, rel=1e-9)


@given(c=few_servers, rho=st.floats(min_value=1e-2, max_value=0.9))
def test_large_capacity_tends_to_mmc(c: int, rho: float) -> None:
    """As K grows M/M/c/K becomes M/M/c (rho < 1); here rho^(K-c) < 1e-20."""
    room = int(math.log(1e-20) / math.log(rho)) + 1
    bounded = model(rho, c, room)
    unbounded = MMc(arrival_rate=bounded.arrival_rate, service_rate=1.7, servers=c)
    assert bounded.blocking_probability < 1e-18
    assert bounded.mean_wait == pytest.approx(unbounded.mean_wait, rel=1e-9, abs=1e-300)
    assert bounded.wait_probability == pytest.approx(
        unbounded.wait_probability, rel=1e-9
    )


@given(
    c=few_servers, room=queue_rooms, rho=loads_per_server, factor=st.floats(1.001, 1.1)
)
def test_blocking_rises_with_arrivals_and_falls_with_room(
    c: int, room: int, rho: float, factor: float
) -> None:
    """pi_K rises with lambda and falls as waiting places are added."""
    q = model(rho, c, room)
    busier = model(rho * factor, c, room)
    roomier = model(rho, c, room + 1)
    slack = 1 + 1e-12
    assert q.blocking_probability <= busier.blocking_probability * slack
    assert roomier.blocking_probability <= q.blocking_probability * slack


def test_huge_pools_and_queues_stay_finite_and_exact() -> None:
    """c = 1e5 with a million waiting places, overloaded: pi_K = 1 - 1/rho to 1e-12."""
    q = model(1.5, 100_000, 1_000_000)
    assert q.blocking_probability == pytest.approx(1.0 - 1.0 / 1.5, rel=1e-12)
    assert math.isfinite(q.mean_wait)
    assert q.mean_queue_length == pytest.approx(1_000_000 - 2.0, rel=1e-9)


@given(
    c=few_servers,
    room=st.integers(1, 30),
    rho=loads_per_server,
    level=st.floats(0.01, 0.999),
)
def test_wait_quantile_inverts_the_wait_distribution(
    c: int, room: int, rho: float, level: float
) -> None:
    """P(W <= wait_quantile(q)) = q above the atom at 0."""
    q = model(rho, c, room)
    t = q.wait_quantile(level)
    if level <= 1.0 - q.wait_probability:
        assert t == 0.0
    else:
        assert q.wait_tail(t) == pytest.approx(1.0 - level, rel=1e-9)


def test_summary_keys_are_the_property_names() -> None:
    """summary() maps each property name to its value."""
    q = model(0.8, 3, 4)
    assert q.summary() == {name: getattr(q, name) for name in QUANTITIES}


def test_capacity_below_servers_is_refused() -> None:
    """capacity < servers breaks the model's definition."""
    with pytest.raises(
        InvalidParameterError,
        match=r"`capacity` must be at least `servers` \(4\) \(got 3\)",
    ):
        MMcK(arrival_rate=1.0, service_rate=1.0, servers=4, capacity=3)


def test_capacity_must_be_an_integer() -> None:
    """capacity = 5.5 is refused."""
    with pytest.raises(
        InvalidParameterError, match=r"`capacity` must be an integer \(got 5\.5\)"
    ):
        MMcK(arrival_rate=1.0, service_rate=1.0, servers=4, capacity=5.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["arrival_rate", "service_rate"])
def test_rates_must_be_positive(name: str) -> None:
    """A zero rate is refused by name."""
    arguments: dict[str, object] = {
        "arrival_rate": 1.0,
        "service_rate": 1.0,
        "servers": 1,
        "capacity": 2,
    }
    arguments[name] = 0.0
    with pytest.raises(InvalidParameterError, match=rf"`{name}` must be positive"):
        MMcK(**arguments)  # type: ignore[arg-type]


def test_servers_must_be_a_positive_integer() -> None:
    """servers = 0 is refused."""
    with pytest.raises(
        InvalidParameterError, match=r"`servers` must be a positive integer"
    ):
        MMcK(arrival_rate=1.0, service_rate=1.0, servers=0, capacity=2)


def test_state_index_must_lie_within_capacity() -> None:
    """state_probability refuses n above the capacity."""
    with pytest.raises(
        InvalidParameterError, match=r"`n` must be at most `capacity` \(5\)"
    ):
        model(0.5, 2, 3).state_probability(6)
