"""Every proof passes, and the package computes what the proofs proved.

The first group runs each theorem's checks. The second shows the framework can
fail: a false identity, a wrong closed form or an unstated convergence
condition is reported, never passed. The third compares each package function
with the proved expression at Hypothesis-drawn points, the proved expression
evaluated with 50-digit arithmetic (``proofs._symbols.evaluate``).

The parameter draws are local: ``proofs`` is importable on its own
(``python -m proofs``) and does not depend on the ``tests/`` tree; the ranges
follow ``tests/strategies.py``.
"""

from __future__ import annotations

import importlib
import io
import math
import re
from pathlib import Path

import mpmath as mp
import pytest
import retrystorm
import sympy as sp
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from retrystorm import equilibria, fluid
from retrystorm import limits as design_limits
from retrystorm.scenario import default_scenario

from proofs import (
    ALL_THEOREMS,
    amplification,
    erlang_a,
    fluid_equilibria,
    limits,
    mmc,
    mmcd,
    mmck,
)
from proofs._framework import (
    Method,
    ProofError,
    Theorem,
    branch,
    induction,
    report,
    show_equal,
    show_positive,
    verify,
)
from proofs._symbols import S, a, c, evaluate, lam, mu, partial_sum_value, t, theta

HERE = Path(__file__).resolve().parent
REFERENCES = HERE.parent / "REFERENCES.md"

# Against a 50-digit evaluation of the proved expression the package promises
# 1e-12 relative; a few ulps more are allowed for the compound quantities
# (a mean wait is a ratio of two such results).
RTOL = 1e-11

# Each test here evaluates sympy expressions per example: a modest count keeps
# the module well under a minute, and the suite-wide profile adds no database.
SETTINGS = settings(max_examples=25, deadline=None, database=None)

servers = st.integers(min_value=1, max_value=40)
service_rates = st.floats(min_value=1e-2, max_value=1e2)
stable_utilizations = st.floats(min_value=1e-3, max_value=0.98)
any_utilizations = st.floats(min_value=1e-3, max_value=3.0)
queue_rooms = st.integers(min_value=0, max_value=40)
probabilities = st.floats(min_value=0.0, max_value=1.0)
retry_counts = st.integers(min_value=0, max_value=12)


def close(value: float, reference: float, rtol: float = RTOL) -> bool:
    """Relative closeness, with a negligible absolute floor for values near 0."""
    return abs(value - reference) <= rtol * abs(reference) + 1e-300


# --- the proofs pass ------------------------------------------------------------------


@pytest.mark.parametrize("theorem", ALL_THEOREMS, ids=lambda th: th.key)
def test_theorem_is_checked(theorem: Theorem) -> None:
    """Each theorem's symbolic, inductive and exhaustive checks all pass."""
    outcome = verify(theorem)
    assert outcome.ok, "; ".join(message for _, message in outcome.failures)


def _write_up(theorem: Theorem) -> str:
    module = theorem.key.split(".")[0]
    names = {
        "mmc": "mmc",
        "erlang_b": "mmc",
        "erlang": "mmc",
        "mmck": "mmck",
        "erlang_a": "erlang_a",
        "mmcd": "mmcd",
        "retries": "amplification",
        "fluid": "fluid_equilibria",
        "equilibria": "fluid_equilibria",
        "limits": "limits",
        "birth_death": "birth_death",
    }
    return (HERE / f"{names[module]}.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("theorem", ALL_THEOREMS, ids=lambda th: th.key)
def test_theorem_has_a_write_up_with_known_sources(theorem: Theorem) -> None:
    """The write-up names the theorem and its sources, which are bibliography keys."""
    text = _write_up(theorem)
    assert f"`{theorem.key}`" in text
    bibliography = REFERENCES.read_text(encoding="utf-8")
    for key in theorem.sources:
        assert f"[{key}]" in bibliography
        assert f"[{key}]" in text


@pytest.mark.parametrize("theorem", ALL_THEOREMS, ids=lambda th: th.key)
def test_functions_relying_on_a_theorem_exist(theorem: Theorem) -> None:
    """Every package function a theorem names as relying on it exists."""
    for dotted in theorem.used_by:
        parts = dotted.split(".")
        target: object = importlib.import_module(parts[0])
        for index, part in enumerate(parts[1:], start=1):
            if not hasattr(target, part):  # a submodule not imported by the package
                target = importlib.import_module(".".join(parts[: index + 1]))
            else:
                target = getattr(target, part)
        assert target is not None


def test_nothing_is_called_proved_that_was_only_computed() -> None:
    """Numerical checks carry a 'checked numerically' label with how, never 'proved'."""
    for theorem in ALL_THEOREMS:
        for check in theorem.checks:
            if check.method in (Method.NUMERIC, Method.EXHAUSTIVE):
                assert check.how
                assert "proved" not in check.label


# --- the framework can fail -----------------------------------------------------------


def test_a_false_identity_is_not_checked() -> None:
    """show_equal rejects (1 - p^R)/(1 - p) as the sum of R + 1 powers."""
    p, r = sp.symbols("p R", positive=True)
    with pytest.raises(ProofError, match="does not simplify to 0"):
        show_equal((1 - p**r) / (1 - p), (1 - p ** (r + 1)) / (1 - p), "off by one")


def test_a_wrong_closed_form_fails_the_inductive_step() -> None:
    """The Erlang B recurrence does not produce a^n/n! / S(n - 1)."""
    n = sp.Symbol("n", integer=True, nonnegative=True)
    check = induction(
        "wrong",
        n,
        start=0,
        initial=sp.Integer(1),
        recurrence=lambda b, k: a * b / (k + 1 + a * b),
        closed=lambda k: a**k / sp.factorial(k) / (S(k) + 1),
    )
    with pytest.raises(ProofError, match="base case"):
        check.run()


def test_an_unstated_convergence_condition_is_refused() -> None:
    """A geometric series is not summed under a condition the proof did not state."""
    r = sp.Symbol("r", positive=True)
    j = sp.Symbol("j", integer=True, nonnegative=True)
    with pytest.raises(ProofError, match="no piece"):
        branch(sp.summation(r**j, (j, 0, sp.oo)), r > 2, "series")


def test_a_sign_that_does_not_follow_is_not_proved() -> None:
    """show_positive refuses 1 - p for a p only known to be positive."""
    p = sp.Symbol("p", positive=True)
    with pytest.raises(ProofError, match="not known to be positive"):
        show_positive(1 - p, "sign")


def test_a_failed_theorem_is_reported_with_its_step() -> None:
    """The runner prints FAILED and the step that failed."""
    p = sp.Symbol("p", positive=True)
    bad = Theorem(
        key="demo.false",
        title="a false statement",
        statement="p = p + 1",
        assumptions=(),
        sources=(),
        used_by=(),
        checks=(
            induction(
                "p + 1 = p",
                p,
                start=0,
                initial=p + 1,
                recurrence=lambda v, _: v,
                closed=lambda _: p,
            ),
        ),
    )
    stream = io.StringIO()
    assert report([bad], stream) is False
    assert re.search(r"demo\.false: .* FAILED", stream.getvalue())
    assert "base case" in stream.getvalue()


# --- M/M/c and Erlang B, C ------------------------------------------------------------


def _mmc_values(count: int, rate: float, utilization: float) -> dict[sp.Symbol, float]:
    return {c: count, mu: rate, lam: utilization * count * rate}


@SETTINGS
@given(count=servers, utilization=any_utilizations)
def test_erlang_b_is_the_proved_expression(count: int, utilization: float) -> None:
    """erlang_b(c, a) equals (a^c/c!)/S(c) (theorem erlang_b.recurrence)."""
    values = _mmc_values(count, 1.0, utilization)
    reference = evaluate(mmc.ERLANG_B, values)
    assert close(retrystorm.erlang_b(count, utilization * count), reference)


@SETTINGS
@given(count=servers, rate=service_rates, utilization=stable_utilizations)
def test_erlang_c_and_mmc_are_the_proved_expressions(
    count: int, rate: float, utilization: float
) -> None:
    """Erlang C, E[Q], E[W], E[N] of MMc equal the proved M/M/c expressions."""
    values = _mmc_values(count, rate, utilization)
    model = retrystorm.MMc(arrival_rate=values[lam], service_rate=rate, servers=count)
    assert close(
        retrystorm.erlang_c(count, values[lam] / rate), evaluate(mmc.ERLANG_C, values)
    )
    assert close(model.wait_probability, evaluate(mmc.ERLANG_C, values))
    assert close(model.mean_queue_length, evaluate(mmc.MEAN_QUEUE, values))
    assert close(model.mean_wait, evaluate(mmc.MEAN_WAIT, values))
    in_system = evaluate(mmc.MEAN_QUEUE + a, values)
    assert close(model.mean_in_system, in_system)


@SETTINGS
@given(
    count=servers,
    rate=service_rates,
    utilization=stable_utilizations,
    scaled_time=st.floats(min_value=0.0, max_value=20.0),
    level=st.floats(min_value=0.01, max_value=0.99),
)
def test_mmc_wait_tail_and_quantile_are_the_proved_expressions(
    count: int, rate: float, utilization: float, scaled_time: float, level: float
) -> None:
    """P(W > t) = C exp(-(c mu - lambda) t) and its quantile (theorem mmc.wait_tail)."""
    values = _mmc_values(count, rate, utilization)
    model = retrystorm.MMc(arrival_rate=values[lam], service_rate=rate, servers=count)
    time = scaled_time / (count * rate - values[lam])  # a few mean excess times
    reference = evaluate(mmc.WAIT_TAIL, {**values, t: time}) if time > 0 else None
    if reference is not None:
        assert close(model.wait_tail(time), reference, 1e-10)
    quantile = evaluate(mmc.WAIT_QUANTILE, {**values, mmc.q: level})
    assert model.wait_quantile(level) == pytest.approx(
        max(quantile, 0.0), rel=1e-9, abs=1e-12
    )


# --- M/M/c/K --------------------------------------------------------------------------


@SETTINGS
@given(
    count=servers, rate=service_rates, utilization=any_utilizations, room=queue_rooms
)
def test_mmck_is_the_proved_expression(
    count: int, rate: float, utilization: float, room: int
) -> None:
    """Blocking, throughput, P(wait), E[Q], E[W] of MMcK equal theorem"
    " mmck.closed_form."""
    assume(abs(utilization - 1.0) > 1e-3)  # the closed form is written for rho != 1
    values = {**_mmc_values(count, rate, utilization), mmck.m: room}
    model = retrystorm.MMcK(
        arrival_rate=values[lam],
        service_rate=rate,
        servers=count,
        capacity=count + room,
    )
    assert close(model.blocking_probability, evaluate(mmck.BLOCKING, values), 1e-10)
    assert close(model.throughput, evaluate(mmck.THROUGHPUT_K, values), 1e-10)
    assert close(model.mean_queue_length, evaluate(mmck.MEAN_QUEUE_K, values), 1e-10)
    if room > 0:
        assert close(
            model.wait_probability, evaluate(mmck.WAIT_PROBABILITY_K, values), 1e-10
        )
        assert close(model.mean_wait, evaluate(mmck.MEAN_WAIT_K, values), 1e-10)


@SETTINGS
@given(
    count=servers,
    rate=service_rates,
    utilization=st.floats(min_value=1e-3, max_value=0.9),
)
def test_mmck_tends_to_mmc(count: int, rate: float, utilization: float) -> None:
    """With K - c places and rho^(K-c) below 1e-16, MMcK agrees with MMc (theorem"
    " mmck.limit)."""
    room = math.ceil(math.log(1e-16) / math.log(utilization)) + 10
    arrival = utilization * count * rate
    bounded = retrystorm.MMcK(
        arrival_rate=arrival, service_rate=rate, servers=count, capacity=count + room
    )
    free = retrystorm.MMc(arrival_rate=arrival, service_rate=rate, servers=count)
    # the neglected mass is at most m rho^m / (1 - rho)^2, below 1e-12 here
    assert bounded.blocking_probability < 1e-12
    assert bounded.mean_wait == pytest.approx(free.mean_wait, rel=1e-9, abs=1e-15)
    assert bounded.wait_probability == pytest.approx(
        free.wait_probability, rel=1e-9, abs=1e-15
    )


# --- Erlang-A -------------------------------------------------------------------------


def _erlang_a_reference(
    count: int, rate: float, arrival: float, abandon: float
) -> tuple[mp.mpf, mp.mpf, mp.mpf]:
    """(pi_c, S, D) from the proved product form, summed in 50 digits."""
    with mp.workdps(50):
        s_ratio = mp.mpf(count) * rate / abandon
        z_ratio = mp.mpf(arrival) / abandon
        total = mp.hyp1f1(1, s_ratio + 1, z_ratio)  # sum_j z^j / ((s+1)...(s+j))
        weighted = s_ratio + (z_ratio - s_ratio) * total  # theorem erlang_a.stationary
        load = mp.mpf(arrival) / rate
        inverse_b = partial_sum_value(load, count) * mp.factorial(count) / load**count
        pi_c = 1 / (inverse_b + total - 1)
        return pi_c, total, weighted


@SETTINGS
@given(
    count=servers,
    rate=service_rates,
    utilization=any_utilizations,
    relative_abandonment=st.floats(min_value=1e-2, max_value=10.0),
)
def test_erlang_a_is_the_proved_expression(
    count: int, rate: float, utilization: float, relative_abandonment: float
) -> None:
    """P(wait) = pi_c S, L_q = pi_c D and P(abandon) = theta L_q / lambda in ErlangA."""
    arrival, abandon = utilization * count * rate, relative_abandonment * rate
    model = retrystorm.ErlangA(
        arrival_rate=arrival, service_rate=rate, servers=count, abandonment_rate=abandon
    )
    pi_c, total, weighted = _erlang_a_reference(count, rate, arrival, abandon)
    assert close(model.wait_probability, float(pi_c * total), 1e-10)
    assert close(model.mean_queue_length, float(pi_c * weighted), 1e-10)
    proved = evaluate(
        erlang_a.abandonment_from_queue(sp.Symbol("Q")),
        {theta: abandon, lam: arrival, sp.Symbol("Q"): model.mean_queue_length},
    )
    assert close(model.abandonment_probability, proved, 1e-12)


@SETTINGS
@given(
    count=st.integers(min_value=1, max_value=20),
    rate=service_rates,
    utilization=any_utilizations,
    relative_abandonment=st.floats(min_value=0.05, max_value=10.0),
    scaled_time=st.floats(min_value=0.0, max_value=5.0),
)
def test_erlang_a_wait_tail_is_the_proved_expression(
    count: int,
    rate: float,
    utilization: float,
    relative_abandonment: float,
    scaled_time: float,
) -> None:
    """P(W > t) = e^{-theta t} pi_c exp(y(1 - e^{-theta t}) - c mu t) A(y e^{-theta"
    " t})."""
    arrival, abandon = utilization * count * rate, relative_abandonment * rate
    model = retrystorm.ErlangA(
        arrival_rate=arrival, service_rate=rate, servers=count, abandonment_rate=abandon
    )
    time = scaled_time / (count * rate)
    pi_c, _, _ = _erlang_a_reference(count, rate, arrival, abandon)
    with mp.workdps(50):
        y_load = mp.mpf(arrival) / abandon
        z_now = y_load * mp.exp(-abandon * mp.mpf(time))
        series = mp.hyp1f1(1, mp.mpf(count) * rate / abandon + 1, z_now)
        offered = pi_c * mp.exp(y_load - z_now - count * rate * mp.mpf(time)) * series
        reference = float(mp.exp(-abandon * mp.mpf(time)) * offered)
    assert close(model.wait_tail(time), reference, 1e-9)


@SETTINGS
@given(
    count=servers,
    rate=service_rates,
    utilization=st.floats(min_value=1e-3, max_value=0.95),
)
def test_erlang_a_tends_to_mmc(count: int, rate: float, utilization: float) -> None:
    """At theta = 1e-10 mu, ErlangA's L_q and P(wait) are MMc's (theorem"
    " erlang_a.limit)."""
    arrival = utilization * count * rate
    nearly_patient = retrystorm.ErlangA(
        arrival_rate=arrival,
        service_rate=rate,
        servers=count,
        abandonment_rate=1e-10 * rate,
    )
    free = retrystorm.MMc(arrival_rate=arrival, service_rate=rate, servers=count)
    # the relative gap is O(theta E[j^2] / (c mu)) <= 1e-10 / (1 - rho)^2 / c <= 4e-8
    assert nearly_patient.mean_queue_length == pytest.approx(
        free.mean_queue_length, rel=1e-6
    )
    assert nearly_patient.wait_probability == pytest.approx(
        free.wait_probability, rel=1e-6
    )
    assert nearly_patient.abandonment_probability < 1e-8


# --- M/M/c+D --------------------------------------------------------------------------


def _mmcd_values(count: int, rate: float, arrival: float, patience: float) -> dict:
    return {c: count, mu: rate, lam: arrival, mmcd.timeout: patience}


@SETTINGS
@given(
    count=servers,
    rate=service_rates,
    utilization=any_utilizations,
    scaled_timeout=st.floats(min_value=1e-2, max_value=50.0),
    share=st.floats(min_value=0.0, max_value=0.99),
)
def test_mmcd_is_the_proved_expression(
    count: int, rate: float, utilization: float, scaled_timeout: float, share: float
) -> None:
    """P(abandon), P(wait), E[min(V,T)], E[W | served], P(W > t) equal theorem"
    " mmcd.quantities."""
    arrival = utilization * count * rate
    assume(abs(count * rate - arrival) > 1e-6 * count * rate)  # the non-critical form
    patience = scaled_timeout / (count * rate)
    model = retrystorm.MMcD(
        arrival_rate=arrival, service_rate=rate, servers=count, timeout=patience
    )
    values = _mmcd_values(count, rate, arrival, patience)

    def proved(expr: sp.Expr, **extra: float) -> float:
        return evaluate(mmcd.normalised(expr), {**values, **extra})

    assert close(model.abandonment_probability, proved(mmcd.ABANDONMENT), 1e-10)
    assert close(model.wait_probability, proved(mmcd.WAIT_PROBABILITY_D), 1e-10)
    assert close(model.mean_wait, proved(mmcd.MEAN_WAIT_ALL), 1e-9)
    assert close(model.mean_wait_served, proved(mmcd.MEAN_WAIT_SERVED), 1e-9)
    level = max(share * patience, 1e-300)
    tail = proved(mmcd.WAIT_TAIL_D.subs(mmcd.level, level))
    assert close(model.wait_tail(level), tail, 1e-9)
    served = arrival * (1 - proved(mmcd.ABANDONMENT))
    assert close(model.throughput, served, 1e-9)  # flow conservation


@SETTINGS
@given(count=servers, rate=service_rates, utilization=any_utilizations)
def test_mmcd_tends_to_erlang_b_as_the_timeout_vanishes(
    count: int, rate: float, utilization: float
) -> None:
    """At T = 1e-12 / (c mu), P(abandon) is Erlang B (theorem mmcd.limits)."""
    arrival = utilization * count * rate
    model = retrystorm.MMcD(
        arrival_rate=arrival,
        service_rate=rate,
        servers=count,
        timeout=1e-12 / (count * rate),
    )
    # dP/dT is bounded by lambda; the gap is below 1e-12 * utilization relative
    assert model.abandonment_probability == pytest.approx(
        retrystorm.erlang_b(count, arrival / rate), rel=1e-9
    )


# --- retries --------------------------------------------------------------------------


@SETTINGS
@given(failure=probabilities, count=retry_counts)
def test_attempts_per_request_is_the_proved_expression(
    failure: float, count: int
) -> None:
    """attempts_per_request equals (1 - p^(R+1))/(1 - p), R + 1 at p = 1."""
    if failure == 1.0:
        reference = count + 1.0
    else:
        with mp.workdps(50):
            q = mp.mpf(failure)
            reference = float((1 - q ** (count + 1)) / (1 - q))
    assert close(retrystorm.attempts_per_request(failure, count), reference, 1e-13)
    assert close(fluid.budgeted_attempts_per_request(failure, count), reference, 1e-12)


@SETTINGS
@given(low=probabilities, high=probabilities, count=retry_counts)
def test_attempts_per_request_is_monotone(low: float, high: float, count: int) -> None:
    """Nondecreasing in p and in R (theorem retries.attempts)."""
    low, high = sorted((low, high))
    assert retrystorm.attempts_per_request(
        low, count
    ) <= retrystorm.attempts_per_request(high, count)
    assert retrystorm.attempts_per_request(
        high, count
    ) <= retrystorm.attempts_per_request(high, count + 1)


@SETTINGS
@given(layers=st.lists(retry_counts, max_size=6), failures=st.data())
def test_layered_amplification_is_the_proved_product(
    layers: list[int], failures
) -> None:
    """Worst case prod (R_i + 1) (= (R+1)^L for equal layers); mean prod A(p_i, R_i)."""
    assert retrystorm.layered_amplification(layers) == math.prod(r + 1 for r in layers)
    if layers:
        assert retrystorm.layered_amplification([layers[0]] * len(layers)) == (
            layers[0] + 1
        ) ** len(layers)
    probs = [failures.draw(probabilities) for _ in layers]
    expected = math.prod(
        float(amplification.attempts_closed(sp.Float(p, 30), r)) if p < 1 else r + 1.0
        for p, r in zip(probs, layers, strict=True)
    )
    assert close(retrystorm.expected_layered_attempts(probs, layers), expected, 1e-11)


@SETTINGS
@given(
    budget=st.floats(min_value=0.0, max_value=5.0),
    count=retry_counts,
    failure=probabilities,
)
def test_retry_budget_bounds_the_attempts(
    budget: float, count: int, failure: float
) -> None:
    """1 + b bounds attempts per request; the fluid's budgeted N(p) stays below it."""
    bound = retrystorm.retry_budget_amplification(budget, max_retries=count)
    assert bound == min(1.0 + budget, count + 1.0)
    assert fluid.budgeted_attempts_per_request(failure, count, budget) <= bound * (
        1 + 1e-12
    )


@SETTINGS
@given(
    requests=st.floats(min_value=0.0, max_value=1e6),
    share=st.floats(min_value=0.0, max_value=1.0),
    multiplier=st.floats(min_value=1.0, max_value=4.0),
)
def test_adaptive_throttle_is_the_proved_expression(
    requests: float, share: float, multiplier: float
) -> None:
    """P in [0, 1) and, while positive, forwards fewer than 1 + K accepts"
    " (retries.throttle)."""
    accepts = share * requests
    probability = retrystorm.adaptive_throttle_probability(
        requests, accepts, multiplier
    )
    values = {
        amplification.requests: requests,
        amplification.accepts: accepts,
        amplification.multiplier: multiplier,
    }
    assert probability == pytest.approx(
        max(0.0, evaluate(amplification.THROTTLE, values)), rel=1e-12, abs=1e-15
    )
    assert 0.0 <= probability < 1.0
    if probability > 0.0:
        assert requests * (1 - probability) < 1 + multiplier * accepts + 1e-9


# --- the fluid's closed forms and the equilibrium conditions --------------------------


@SETTINGS
@given(
    wait=st.floats(min_value=0.0, max_value=200.0),
    client=st.floats(min_value=0.1, max_value=200.0),
    rate=service_rates,
)
def test_late_share_is_the_proved_expression(
    wait: float, client: float, rate: float
) -> None:
    """fluid.late_share = exp(-mu (T_c - w)) below the client timeout, 1 from it on."""
    share = fluid.late_share(wait, client, rate)
    if wait >= client:
        assert share == 1.0
    else:
        proved = fluid_equilibria.late_share_exponential(fluid_equilibria.queue_timeout)
        values = {
            fluid_equilibria.mu: rate,
            fluid_equilibria.client_timeout: client,
            fluid_equilibria.queue_timeout: wait if wait > 0 else 1e-300,
        }
        assert close(share, evaluate(proved, values), 1e-12)


@SETTINGS
@given(
    demand=st.floats(min_value=1.0, max_value=1e3),
    relative_capacity=st.floats(min_value=0.2, max_value=3.0),
    late=st.floats(min_value=0.0, max_value=0.95),
    count=st.integers(min_value=1, max_value=6),
)
def test_bad_equilibrium_condition_matches_the_fixed_point(
    demand: float, relative_capacity: float, late: float, count: int
) -> None:
    """x = lambda A(p(x), R) has a root above kappa iff lambda A(omega, R) > kappa"
    " (equilibria.bad)."""
    capacity = relative_capacity * demand
    saturated = demand * retrystorm.attempts_per_request(late, count)
    assume(abs(saturated - capacity) > 1e-6 * capacity)

    def excess(rate: float) -> float:  # G(x) - x in saturation
        failure = 1 - capacity * (1 - late) / rate
        return demand * fluid.budgeted_attempts_per_request(failure, count) - rate

    # G(x) - x changes sign once on (kappa, (R+1) lambda + kappa]: bracket it
    top = (count + 1) * demand + capacity
    exists = excess(capacity * (1 + 1e-12)) > 0 and excess(top) < 0
    assert exists == (saturated > capacity)
    if exists:
        values = {
            fluid_equilibria.lam: demand,
            fluid_equilibria.kappa: capacity,
            fluid_equilibria.omega: late if late > 0 else 1e-300,
            fluid_equilibria.retries: count,
        }
        root = evaluate(fluid_equilibria.BAD_ATTEMPT_RATE, values)
        assert abs(excess(root)) <= 1e-9 * root
        assert root > capacity


budgets = st.one_of(st.just(math.inf), st.floats(min_value=0.0, max_value=3.0))


_BAD_RATE = sp.lambdify(
    (
        fluid_equilibria.lam,
        fluid_equilibria.kappa,
        fluid_equilibria.omega,
        fluid_equilibria.retries,
    ),
    fluid_equilibria.BAD_ATTEMPT_RATE,
    "mpmath",
)


def _proved_bad_rate(
    demand: float, capacity: float, on_time: float, count: int
) -> float:
    """x* = g/(1 - (1 - g/lambda)^(1/(R+1))) with enough digits for 1 - omega."""
    # 1 - p* is about g/(lambda (R+1)): carry 50 digits beyond the size of g
    digits = 50 + max(0, -math.floor(math.log10(on_time)))
    with mp.workdps(digits):
        late = 1 - mp.mpf(on_time)  # exact at this precision
        return float(_BAD_RATE(mp.mpf(demand), mp.mpf(capacity), late, count))


@SETTINGS
@given(
    demand=st.floats(min_value=1.0, max_value=1e3),
    relative_capacity=st.floats(min_value=0.2, max_value=3.0),
    on_time=st.floats(min_value=0.0, max_value=1.0),
    count=st.integers(min_value=0, max_value=6),
    budget=budgets,
)
# an on-time share so small that 1 - kappa g / lambda rounds to 1: x_u -> lambda (R + 1)
@example(demand=1.0, relative_capacity=1.0, on_time=1e-300, count=0, budget=math.inf)
def test_saturated_attempt_rate_is_the_proved_root(
    demand: float, relative_capacity: float, on_time: float, count: int, budget: float
) -> None:
    """equilibria.saturated_attempt_rate is min(x_u, lambda (1 + b)), x_u the proved"
    " root."""
    capacity = relative_capacity * demand
    rate = equilibria.saturated_attempt_rate(demand, capacity, on_time, count, budget)
    served_in_time = capacity * on_time
    if on_time == 0.0:
        unbudgeted = demand * (count + 1)
    elif served_in_time >= demand:
        unbudgeted = demand  # no root: every request is served in time
    else:
        unbudgeted = _proved_bad_rate(demand, capacity, on_time, count)
    assert close(rate, min(unbudgeted, demand * (1 + budget)), 1e-9)


@SETTINGS
@given(
    demand=st.floats(min_value=1.0, max_value=1e3),
    relative_capacity=st.floats(min_value=0.2, max_value=3.0),
    on_time=st.floats(min_value=0.0, max_value=1.0),
    count=st.integers(min_value=0, max_value=6),
    budget=budgets,
)
@example(demand=1.0, relative_capacity=2.0, on_time=1e-300, count=0, budget=math.inf)
def test_bad_equilibrium_exists_iff_the_saturated_rate_exceeds_capacity(
    demand: float, relative_capacity: float, on_time: float, count: int, budget: float
) -> None:
    """lambda N_b(omega) > kappa iff the saturated root x* > kappa (theorem"
    " equilibria.bad)."""
    capacity = relative_capacity * demand
    amplified = demand * fluid.budgeted_attempts_per_request(
        1.0 - on_time, count, budget
    )
    assume(abs(amplified - capacity) > 1e-9 * capacity)  # not on the boundary itself
    exists = equilibria.bad_equilibrium_exists(demand, capacity, on_time, count, budget)
    rate = equilibria.saturated_attempt_rate(demand, capacity, on_time, count, budget)
    assert exists == (amplified > capacity)
    assert exists == (rate > capacity * (1 + 1e-12))


@SETTINGS
@given(
    wait=st.floats(min_value=0.0, max_value=200.0),
    client=st.floats(min_value=0.1, max_value=200.0),
    rate=service_rates,
)
def test_on_time_share_is_one_minus_the_late_share(
    wait: float, client: float, rate: float
) -> None:
    """equilibria.on_time_share without crashes is 1 - exp(-mu (T_c - w))"
    " (fluid.saturated_wait)."""
    late = 1.0 if wait >= client else math.exp(-rate * (client - wait))
    assert equilibria.on_time_share(wait, client, rate) == pytest.approx(
        1.0 - late, abs=1e-15
    )


@SETTINGS
@given(
    demand=st.floats(min_value=1.0, max_value=1e3),
    relative_capacity=st.floats(min_value=1.01, max_value=3.0),
    client=st.floats(min_value=1.0, max_value=100.0),
    scaled_rate=st.floats(min_value=0.05, max_value=5.0),
    count=st.integers(min_value=1, max_value=6),
)
def test_boundary_wait_is_the_zero_of_the_drift(
    demand: float,
    relative_capacity: float,
    client: float,
    scaled_rate: float,
    count: int,
) -> None:
    """x(w*) = kappa at the boundary, below it the drift is negative, above positive."""
    capacity = relative_capacity * demand
    rate = scaled_rate / client * 10
    found = equilibria.boundary_wait(demand, capacity, client, rate, count)

    def attempt_rate(at: float) -> float:
        return demand * retrystorm.attempts_per_request(
            fluid.late_share(at, client, rate), count
        )

    if found is None:
        assume(False)
    assert 0.0 < found < client
    assert attempt_rate(found) == pytest.approx(capacity, rel=1e-9)
    assert attempt_rate(0.5 * found) <= capacity <= attempt_rate(0.5 * (found + client))


def test_incident_equilibria_follow_the_theorems() -> None:
    """The incident with health checks on the database: lambda (R+1) > c mu with"
    " T_q > T_c gives a bad state x = (R+1) lambda = 3 lambda, Q = (x + I) T_q,"
    " its pods crash-looping on their health checks."""
    scenario = default_scenario().variant("health-checks-query-db")
    report = equilibria.find_equilibria(scenario)
    bad = report.of_kind("bad")
    clients, proxy, web = scenario.clients, scenario.proxy, scenario.web
    capacity = proxy.pool_size * fluid.saturated_service_rate(scenario)
    # equilibria.bad with omega = 1 (T_q = 120 s > T_c): x* = lambda (R + 1)
    assert clients.request_rate * (clients.max_retries + 1) > capacity
    assert report.classification == "vulnerable"
    assert bad is not None
    assert bad.attempt_rate == pytest.approx(
        clients.request_rate * (clients.max_retries + 1)
    )
    # equilibria.health_checks: w = T_q exceeds the probe timeout, so pods crash at
    # h = 1/crash_after: u = P/(1 + h D) up, I = u h n_init init queries per second
    assert web.crash_after is not None
    crash = 1.0 / web.crash_after
    values = {
        fluid_equilibria.pods: web.pods,
        fluid_equilibria.crash: crash,
        fluid_equilibria.restart: web.restart_delay,
    }
    pods_up = evaluate(fluid_equilibria.PODS_UP, values)
    assert bad.pods_up == pytest.approx(pods_up, rel=RTOL)
    init = pods_up * crash * web.init_queries
    # fluid.saturated_wait (Whitt 2006): a hard timeout holds (x + I) T_q in the queue
    arriving = bad.attempt_rate + init
    assert bad.queue == pytest.approx(arriving * proxy.queue_timeout, rel=RTOL)
    # equilibria.stability: the attempt map is flat at omega = 1; the failure share
    # of connection requests, 1 - c mu / (x + I), stays below the crash threshold
    assert abs(bad.attempt_map_slope) < 1e-9
    assert bad.connection_failure_share == pytest.approx(1 - capacity / arriving)
    assert bad.connection_failure_share < web.crash_failure_share
    assert bad.stable


@SETTINGS
@given(
    wait=st.floats(min_value=0.0, max_value=200.0),
    client=st.floats(min_value=0.1, max_value=200.0),
    rate=service_rates,
    crash=st.floats(min_value=1e-4, max_value=10.0),
)
def test_on_time_share_with_crashes_is_the_proved_expression(
    wait: float, client: float, rate: float, crash: float
) -> None:
    """equilibria.on_time_share = e^{-h w} mu/(mu + h)(1 - e^{-(mu + h)(T_c - w)})"
    " (equilibria.health_checks)."""
    share = equilibria.on_time_share(wait, client, rate, crash_rate=crash)
    if wait >= client:
        assert share == 0.0
        return
    proved = fluid_equilibria.on_time_with_crashes(fluid_equilibria.queue_timeout)
    values = {
        fluid_equilibria.mu: rate,
        fluid_equilibria.crash: crash,
        fluid_equilibria.client_timeout: client,
        fluid_equilibria.queue_timeout: wait if wait > 0 else 1e-300,
    }
    assert close(share, evaluate(proved, values), 1e-12)


@SETTINGS
@given(
    client=st.floats(min_value=5.0, max_value=100.0),
    scaled_rate=st.floats(min_value=0.05, max_value=5.0),
    crash=st.floats(min_value=1e-3, max_value=0.5),
    init=st.floats(min_value=0.0, max_value=20.0),
)
def test_boundary_wait_with_crashes_is_the_zero_of_the_proved_arrivals(
    client: float, scaled_rate: float, crash: float, init: float
) -> None:
    """Beyond T_p the boundary solves lambda A(1 - g_h(w), R) + I = kappa with the"
    " proved g_h (equilibria.health_checks); at a jump it is T_p itself."""
    demand, capacity, count = 100.0, 200.0, 3
    rate = scaled_rate / client * 10
    probe = 0.1 * client
    found = equilibria.boundary_wait(
        demand,
        capacity,
        client,
        rate,
        count,
        probe_timeout=probe,
        crash_rate=crash,
        init_rate=init,
    )
    assume(found is not None and found >= probe)
    assert found is not None

    def arrivals(at: float) -> float:
        values = {
            fluid_equilibria.mu: rate,
            fluid_equilibria.crash: crash,
            fluid_equilibria.client_timeout: client,
            fluid_equilibria.queue_timeout: at,
        }
        on_time = evaluate(
            fluid_equilibria.on_time_with_crashes(fluid_equilibria.queue_timeout),
            values,
        )
        return demand * retrystorm.attempts_per_request(1.0 - on_time, count) + init

    if found == probe:
        assert arrivals(probe) >= capacity
    else:
        assert arrivals(found) == pytest.approx(capacity, rel=1e-9)
        assert arrivals(probe) < capacity


def test_short_proxy_timeout_leaves_only_the_good_equilibrium() -> None:
    """Timeout ordering: T_q = 30 s < T_c and lambda < c mu: lambda A(omega, R) < c"
    " mu, one equilibrium (with health checks that do not crash pods)."""
    # The theorem assumes no failure besides lateness; health checks on the
    # database would crash pods at w = 30 s (equilibria.health_checks).
    incident = default_scenario().with_changes({"web.probe_timeout": math.inf})
    scenario = incident.variant("proxy-timeout-30s")
    clients = scenario.clients
    service = fluid.saturated_service_rate(scenario)
    capacity = scenario.proxy.pool_size * service
    late = fluid.late_share(fluid.saturated_wait(scenario), clients.timeout, service)
    saturated = clients.request_rate * retrystorm.attempts_per_request(
        late, clients.max_retries
    )
    assert clients.request_rate < capacity
    assert saturated < capacity  # theorem equilibria.timeout_ordering
    report = equilibria.find_equilibria(scenario)
    assert report.classification == "stable"
    assert [e.kind for e in report.equilibria] == ["good"]


@SETTINGS
@given(
    excess=st.floats(min_value=1.01, max_value=4.0),
    on_time=st.floats(min_value=0.05, max_value=0.95),
    count=st.integers(min_value=1, max_value=5),
)
def test_attempt_map_slope_is_the_proved_derivative(
    excess: float, on_time: float, count: int
) -> None:
    """G'(x*) = 1 - (lambda/g)(R+1) p^R (1 - p) < 1 at the bad root"
    " (equilibria.stability)."""
    capacity = 250.0
    # A bad root needs lambda N(1 - g) above the capacity (the attempts when
    # only the on-time share g succeeds): drawn beyond it, so that no draw is
    # filtered out.
    demand = excess * capacity / retrystorm.attempts_per_request(1.0 - on_time, count)
    assume(equilibria.bad_equilibrium_exists(demand, capacity, on_time, count))
    root = equilibria.saturated_attempt_rate(demand, capacity, on_time, count)
    served = capacity * on_time
    failure = 1.0 - served / root

    def attempt_map(rate: float) -> float:
        return demand * retrystorm.attempts_per_request(1.0 - served / rate, count)

    step = 1e-6 * root
    numeric = (attempt_map(root + step) - attempt_map(root - step)) / (2 * step)
    proved = 1.0 - demand / served * (count + 1) * failure**count * (1.0 - failure)
    assert numeric == pytest.approx(proved, abs=1e-6)
    assert 0.0 <= proved < 1.0


# --- the closed-form design limits (proofs/limits.py) ---------------------------------

tolerances = st.floats(min_value=1e-9, max_value=0.5)


def _away_from_whole(value: float) -> bool:
    """Whether rounding cannot flip a floor or ceiling of ``value``."""
    return abs(value - round(value)) > 1e-9 * max(1.0, abs(value))


@SETTINGS
@given(
    client=st.floats(min_value=0.1, max_value=200.0),
    rate=service_rates,
    count=servers,
    epsilon=tolerances,
)
def test_queue_timeout_and_limit_are_the_proved_expressions(
    client: float, rate: float, count: int, epsilon: float
) -> None:
    """T_q* = T_c - log(1/eps)/mu and K* = floor(c mu T_q*) (limits.queue_timeout)."""
    values = {limits.client_timeout: client, limits.mu: rate, limits.epsilon: epsilon}
    quantile = evaluate(limits.SERVICE_QUANTILE, values)
    assert close(design_limits.service_quantile(rate, epsilon), quantile, 1e-12)
    proved = evaluate(limits.QUEUE_TIMEOUT_LIMIT, values)
    timeout = design_limits.largest_queue_timeout(client, rate, epsilon)
    if proved <= 1e-9 * client:
        assert timeout is None or timeout <= 1e-9 * client
        return
    assert timeout is not None
    assert close(timeout, proved, 1e-9)
    real = evaluate(limits.QUEUE_LIMIT_REAL, {**values, limits.capacity: count * rate})
    if _away_from_whole(real):
        assert design_limits.largest_queue_limit(client, rate, count, epsilon) == (
            math.floor(real)
        )


@SETTINGS
@given(
    demand=st.floats(min_value=0.1, max_value=1e3),
    relative_capacity=st.floats(min_value=0.5, max_value=20.0),
    init=st.floats(min_value=0.0, max_value=50.0),
)
def test_retry_limits_are_the_proved_expressions(
    demand: float, relative_capacity: float, init: float
) -> None:
    """R* = ceil((kappa - I)/lambda) - 2 and b* = (kappa - I)/lambda - 1."""
    capacity = demand * relative_capacity
    values = {limits.lam: demand, limits.capacity: capacity, limits.init_rate: init}
    real = evaluate(limits.RETRY_REAL, values)
    retries = design_limits.largest_retry_count(demand, capacity, init)
    if _away_from_whole(real):
        expected = math.ceil(real) - 2
        assert retries == (expected if expected >= 0 else None)
    budget = design_limits.largest_retry_budget(demand, capacity, init)
    proved = evaluate(limits.BUDGET_LIMIT, values)
    if proved > 1e-9:
        assert budget is not None
        assert close(budget, proved, 1e-9)
    elif proved < -1e-9:
        assert budget is None


@SETTINGS
@given(
    pods=st.integers(min_value=1, max_value=200),
    queries=st.integers(min_value=1, max_value=20),
    crash_after=st.floats(min_value=0.1, max_value=600.0),
    delay=st.floats(min_value=0.01, max_value=600.0),
)
def test_restart_query_rate_is_the_proved_expression(
    pods: int, queries: int, crash_after: float, delay: float
) -> None:
    """I = P n h/(1 + h D) at h = 1/crash_after (limits.retry_budget)."""
    values = {
        limits.pods: pods,
        limits.queries: queries,
        limits.crash_rate: 1.0 / crash_after,
        limits.delay: delay,
    }
    proved = evaluate(limits.RESTART_RATE, values)
    rate = design_limits.restart_query_rate(pods, queries, crash_after, delay)
    assert close(rate, proved, 1e-12)


@SETTINGS
@given(
    service=st.floats(min_value=1e-3, max_value=10.0),
    alpha=st.floats(min_value=1e-6, max_value=0.99),
    epsilon=tolerances,
)
def test_useful_pool_size_is_the_proved_root(
    service: float, alpha: float, epsilon: float
) -> None:
    """c* = max(1, ceil(u*/alpha)), u* the positive root (limits.useful_connections)."""
    values = {limits.alpha: alpha, limits.epsilon: epsilon}
    threshold = evaluate(limits.USEFUL_ROOT, values) / alpha
    size = design_limits.useful_pool_size(service, alpha, epsilon)
    if _away_from_whole(threshold) and threshold < 2**52:
        assert size == max(1, math.ceil(threshold))


@SETTINGS
@given(
    count=servers,
    rate=service_rates,
    utilization=stable_utilizations,
    time=st.floats(min_value=1e-3, max_value=50.0),
)
def test_response_time_tail_is_the_proved_expression(
    count: int, rate: float, utilization: float, time: float
) -> None:
    """P(W + S > t) is the proved mixture of two exponentials (limits.response_time)."""
    arrival = utilization * count * rate
    queue = retrystorm.MMc(arrival_rate=arrival, service_rate=rate, servers=count)
    gap = count * rate - arrival
    assume(abs(gap - rate) > 1e-6 * rate)  # the gamma = mu case is tested below
    values = {
        limits.mu: rate,
        limits.gamma: gap,
        limits.waiting: queue.wait_probability,
        limits.t: time / rate,
    }
    proved = evaluate(limits.RESPONSE_TAIL, values)
    tail = design_limits.response_time_tail(queue, time / rate)
    assert close(tail, proved, 1e-10)


@SETTINGS
@given(count=st.integers(min_value=2, max_value=40), time=st.floats(0.01, 30.0))
def test_response_time_tail_at_equal_rates_is_the_proved_limit(
    count: int, time: float
) -> None:
    """At c mu - lambda = mu the tail is (1 - C + C (1 + mu t)) e^{-mu t}."""
    queue = retrystorm.MMc(arrival_rate=count - 1.0, service_rate=1.0, servers=count)
    waiting = queue.wait_probability
    proved = (1 - waiting + waiting * (1 + time)) * math.exp(-time)
    assert close(design_limits.response_time_tail(queue, time), proved, 1e-12)
