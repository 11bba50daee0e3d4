"""M/M/c: mpmath, brute force, Little's law, limits and the error contract."""

from __future__ import annotations

import dataclasses
import math

import mpmath as mp
import pytest
from _reference import DIGITS, chain, mp_mmc, relative_error, tagged_wait_tail
from hypothesis import given
from hypothesis import strategies as st
from retrystorm import InvalidParameterError, MMc, UnstableSystemError
from strategies import few_servers, servers, service_rates, utilizations

# Against 50-digit mpmath: the accuracy the library promises (1e-12 relative).
RTOL = 1e-12
# Against the dense generator reduced by GTH (no subtractions, so every
# component keeps a relative error of about n eps, here n <= 600).
CHAIN_RTOL = 1e-11
CHAIN_ATOL = 1e-300
QUANTITIES = [
    "utilization",
    "wait_probability",
    "mean_wait",
    "mean_queue_length",
    "mean_response_time",
    "mean_in_system",
]


def model(rho: float, c: int, service_rate: float = 1.7) -> MMc:
    """An M/M/c with utilisation ``rho`` (the arrival rate rounded to a double)."""
    return MMc(
        arrival_rate=rho * c * service_rate, service_rate=service_rate, servers=c
    )


@pytest.mark.parametrize("c", [1, 3, 50, 1000, 100_000, 1_000_000])
@pytest.mark.parametrize("rho", [1e-6, 0.3, 0.9, 1 - 1e-6, 1 - 1e-9])
def test_every_quantity_matches_mpmath(c: int, rho: float) -> None:
    """All M/M/c quantities equal their 50-digit values to 1e-12 relative."""
    q = model(rho, c)
    reference = mp_mmc(q.arrival_rate, q.service_rate, c)
    for name in QUANTITIES:
        value = getattr(q, name)
        if reference[name] > 1e-300:
            assert relative_error(value, reference[name]) <= RTOL, name


@pytest.mark.parametrize(("c", "rho"), [(1, 0.5), (20, 0.95), (1000, 1 - 1e-9)])
@pytest.mark.parametrize("scaled_t", [0.0, 0.1, 1.0, 20.0])
def test_wait_tail_matches_mpmath(c: int, rho: float, scaled_t: float) -> None:
    """P(W > t) = C exp(-(c mu - lambda) t) to 1e-12 relative."""
    q = model(rho, c)
    reference = mp_mmc(q.arrival_rate, q.service_rate, c)
    t = scaled_t / float(reference["gap"])
    with mp.workdps(DIGITS):
        expected = reference["wait_probability"] * mp.exp(-reference["gap"] * t)
    assert relative_error(q.wait_tail(t), expected) <= RTOL


@given(c=servers, rho=utilizations, mu=service_rates)
def test_littles_law_holds(c: int, rho: float, mu: float) -> None:
    """L = lambda E[T] and L_q = lambda E[W]."""
    q = model(rho, c, mu)
    assert q.mean_in_system == pytest.approx(
        q.arrival_rate * q.mean_response_time, rel=1e-12
    )
    assert q.mean_queue_length == pytest.approx(q.arrival_rate * q.mean_wait, rel=1e-12)


@given(c=servers, rho=utilizations)
def test_probabilities_lie_in_the_unit_interval(c: int, rho: float) -> None:
    """P(wait) and every P(W > t) lie in [0, 1]."""
    q = model(rho, c)
    assert 0.0 <= q.wait_probability <= 1.0
    assert 0.0 <= q.wait_tail(q.mean_wait) <= q.wait_probability


@given(rho=utilizations, mu=service_rates)
def test_one_server_agrees_with_mm1(rho: float, mu: float) -> None:
    """M/M/1: P(wait) = rho, E[W] = rho / (mu - lambda), L = rho / (1 - rho)."""
    q = MMc(arrival_rate=rho * mu, service_rate=mu, servers=1)
    assert q.wait_probability == pytest.approx(rho, rel=1e-12)
    assert q.mean_wait == pytest.approx(rho / (mu - rho * mu), rel=1e-9)
    assert q.mean_in_system == pytest.approx(rho / (1.0 - rho), rel=1e-9)


@given(c=few_servers, rho=st.floats(min_value=0.05, max_value=0.9))
def test_closed_forms_agree_with_the_truncated_chain(c: int, rho: float) -> None:
    """Brute force: the chain cut where rho^n < 1e-18 gives the same L, L_q, pi_n."""
    q = model(rho, c)
    top = c + int(math.log(1e-18) / math.log(rho)) + 1
    pi = chain(q.arrival_rate, q.service_rate, c, top)
    in_system = sum(k * p for k, p in enumerate(pi))
    waiting = sum((k - c) * p for k, p in enumerate(pi) if k > c)
    assert q.mean_in_system == pytest.approx(in_system, rel=CHAIN_RTOL)
    assert q.mean_queue_length == pytest.approx(waiting, rel=CHAIN_RTOL, abs=CHAIN_ATOL)
    for n in (0, c - 1, c, c + 3):
        assert q.state_probability(n) == pytest.approx(
            pi[n], rel=CHAIN_RTOL, abs=CHAIN_ATOL
        )


@pytest.mark.parametrize(("c", "rho"), [(1, 0.5), (4, 0.8), (10, 0.6)])
@pytest.mark.parametrize("t", [0.05, 0.5, 2.0])
def test_wait_tail_agrees_with_a_tagged_request(c: int, rho: float, t: float) -> None:
    """Brute force: the transient law of one tagged request gives the same tail."""
    q = model(rho, c)
    top = c + int(math.log(1e-18) / math.log(rho)) + 1
    pi = chain(q.arrival_rate, q.service_rate, c, top)
    expected = tagged_wait_tail(pi, q.service_rate, c, t)
    assert q.wait_tail(t) == pytest.approx(expected, rel=CHAIN_RTOL, abs=CHAIN_ATOL)


@given(
    c=servers, rho=utilizations, q_level=st.floats(min_value=1e-6, max_value=1 - 1e-9)
)
def test_wait_quantile_inverts_the_wait_distribution(
    c: int, rho: float, q_level: float
) -> None:
    """P(W <= wait_quantile(q)) = q above the atom at 0, and 0 below it."""
    q = model(rho, c)
    t = q.wait_quantile(q_level)
    if q_level <= 1.0 - q.wait_probability:
        assert t == 0.0
    else:
        assert q.wait_tail(t) == pytest.approx(1.0 - q_level, rel=1e-9)


@given(
    c=servers,
    rho=st.floats(min_value=1e-3, max_value=0.99),
    factor=st.floats(1.001, 1.01),
)
def test_waiting_grows_with_arrival_rate_and_falls_with_servers(
    c: int, rho: float, factor: float
) -> None:
    """E[W] rises with lambda and falls as servers are added."""
    q = model(rho, c)
    busier = MMc(
        arrival_rate=q.arrival_rate * factor, service_rate=q.service_rate, servers=c
    )
    bigger = MMc(
        arrival_rate=q.arrival_rate, service_rate=q.service_rate, servers=c + 1
    )
    assert busier.mean_wait >= q.mean_wait
    assert bigger.mean_wait <= q.mean_wait


@pytest.mark.parametrize(
    "quantity",
    ["mean_wait", "mean_queue_length", "mean_response_time", "mean_in_system"],
)
def test_means_do_not_exist_at_or_above_saturation(quantity: str) -> None:
    """At rho >= 1 the means raise UnstableSystemError carrying the utilisation."""
    q = MMc(arrival_rate=10.0, service_rate=2.0, servers=5)
    with pytest.raises(
        UnstableSystemError, match=rf"`{quantity}` does not exist"
    ) as info:
        getattr(q, quantity)
    assert info.value.utilization == 1.0


def test_tail_quantile_and_state_law_do_not_exist_when_overloaded() -> None:
    """wait_tail, wait_quantile and state_probability raise at rho > 1."""
    q = MMc(arrival_rate=12.0, service_rate=2.0, servers=5)
    with pytest.raises(UnstableSystemError, match="`wait_tail`"):
        q.wait_tail(1.0)
    with pytest.raises(UnstableSystemError, match="`wait_quantile`"):
        q.wait_quantile(0.5)
    with pytest.raises(UnstableSystemError, match="`state_probability`"):
        q.state_probability(0)


def test_summary_reports_what_exists_when_unstable() -> None:
    """An unstable summary has utilisation, P(wait) = 1 and inf for the means."""
    summary = MMc(arrival_rate=12.0, service_rate=2.0, servers=5).summary()
    assert list(summary) == QUANTITIES
    assert summary["utilization"] == pytest.approx(1.2)
    assert summary["wait_probability"] == 1.0
    assert all(math.isinf(summary[name]) for name in QUANTITIES[2:])


def test_summary_keys_are_the_property_names() -> None:
    """summary() maps each property name to its value."""
    q = model(0.7, 4)
    assert q.summary() == {name: getattr(q, name) for name in QUANTITIES}


def test_model_is_frozen_and_keyword_only() -> None:
    """Frozen dataclass built from keyword arguments."""
    q = model(0.5, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.servers = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        MMc(1.0, 2.0, 3)  # type: ignore[misc]


@pytest.mark.parametrize("name", ["arrival_rate", "service_rate"])
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (0.0, "must be positive"),
        (-1.0, "must be positive"),
        (math.nan, "must be a number, not NaN"),
        (math.inf, "must be finite"),
        ("fast", "must be a real number"),
    ],
)
def test_rates_must_be_finite_and_positive(name: str, value: object, rule: str) -> None:
    """Each rate is checked at construction and named in the message."""
    arguments: dict[str, object] = {
        "arrival_rate": 1.0,
        "service_rate": 2.0,
        "servers": 1,
    }
    arguments[name] = value
    with pytest.raises(InvalidParameterError, match=rf"`{name}` {rule}"):
        MMc(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (0, "must be a positive integer"),
        (2.5, "must be an integer"),
        (True, "must be an integer"),
    ],
)
def test_servers_must_be_a_positive_integer(value: object, rule: str) -> None:
    """servers = 0, 2.5 or True is refused."""
    with pytest.raises(InvalidParameterError, match=rf"`servers` {rule}"):
        MMc(arrival_rate=1.0, service_rate=2.0, servers=value)  # type: ignore[arg-type]


def test_time_must_be_non_negative() -> None:
    """wait_tail refuses a negative time."""
    with pytest.raises(
        InvalidParameterError, match=r"`t` must be non-negative \(got -1\.0\)"
    ):
        model(0.5, 2).wait_tail(-1.0)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5])
def test_quantile_level_must_lie_strictly_between_0_and_1(level: float) -> None:
    """wait_quantile refuses q outside (0, 1)."""
    with pytest.raises(
        InvalidParameterError, match=r"`q` must lie strictly between 0 and 1"
    ):
        model(0.5, 2).wait_quantile(level)


def test_state_index_must_be_a_non_negative_integer() -> None:
    """state_probability refuses n = -1."""
    with pytest.raises(InvalidParameterError, match=r"`n` must be an integer >= 0"):
        model(0.5, 2).state_probability(-1)
