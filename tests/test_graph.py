"""Service graphs: loads, amplification, classification, timeouts, blast radius."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
from hypothesis import given, settings
from hypothesis import strategies as st
from retrystorm.cli import main
from retrystorm.equilibria import find_equilibria
from retrystorm.erlang import erlang_b
from retrystorm.errors import InvalidParameterError, ScenarioError
from retrystorm.graph import (
    GraphSpec,
    ServiceGraph,
    _acyclic_split,
    _core,
    _iterative_solve,
    _solve_component,
    analyze_graph,
    blast_radius,
    default_graph,
    find_cycles,
    graph_from_file,
    graph_from_scenario,
    graph_to_dot,
    load_graph,
    node_loads,
    parse_graph,
    plot_graph,
    single_tier_graph,
    stacked_retries,
    timeout_violations,
)
from retrystorm.mmcd import MMcD
from retrystorm.retries import layered_amplification
from retrystorm.scenario import default_scenario, parse_scenario
from strategies import cyclic_service_graphs, service_dags

# Exact arithmetic on a few products and sums: a few ulps.
RTOL = 1e-12


def spec(**sections: Any) -> GraphSpec:
    """Return a validated graph from keyword sections."""
    return GraphSpec.model_validate(sections)


def chain() -> GraphSpec:
    """a -> b -> c: two retrying calls."""
    return spec(
        services=[{"name": "a", "entry_rate": 10.0}, {"name": "b"}, {"name": "c"}],
        calls=[
            {"caller": "a", "callee": "b", "calls_per_request": 2.0, "max_retries": 1},
            {"caller": "b", "callee": "c", "calls_per_request": 0.5, "max_retries": 2},
        ],
    )


def diamond() -> GraphSpec:
    """a calls b or c (half the requests each); both call d."""
    return spec(
        services=[{"name": n, "entry_rate": 8.0 if n == "a" else 0.0} for n in "abcd"],
        calls=[
            {"caller": "a", "callee": "b", "calls_per_request": 0.5},
            {"caller": "a", "callee": "c", "calls_per_request": 0.5},
            {"caller": "b", "callee": "d", "max_retries": 1},
            {"caller": "c", "callee": "d", "max_retries": 3},
        ],
    )


def fan_in(**pool: Any) -> GraphSpec:
    """Three services share one pool in front of one database with two tables."""
    rates = {"x": 30.0, "y": 50.0, "z": 40.0}
    return spec(
        services=[{"name": n, "entry_rate": r} for n, r in rates.items()],
        resources=[
            {"name": "pool", "kind": "pool", "pool_size": 100, "queue_timeout": 30.0}
            | pool,
            {
                "name": "db",
                "kind": "database",
                "service_time": 0.4,
                "tables": [
                    {"name": "t1", "share": 0.25},
                    {"name": "t2", "share": 0.75},
                ],
            },
        ],
        calls=[
            *(
                {"caller": n, "callee": "pool", "timeout": 10.0, "max_retries": 2}
                for n in rates
            ),
            {"caller": "pool", "callee": "db"},
        ],
    )


def single_tier(**web: Any) -> GraphSpec:
    """clients -> web -> proxy -> db, the incident's shape."""
    return spec(
        services=[
            {"name": "clients", "entry_rate": 120.0},
            {"name": "web", "pods": 20} | web,
        ],
        resources=[
            {"name": "proxy", "kind": "pool", "pool_size": 100, "queue_timeout": 120.0},
            {"name": "db", "kind": "database", "service_time": 0.4},
        ],
        calls=[
            {"caller": "clients", "callee": "web", "timeout": 60.0, "max_retries": 3},
            {"caller": "web", "callee": "proxy"},
            {"caller": "proxy", "callee": "db"},
        ],
    )


# -- known answers on small graphs -------------------------------------------------


def test_chain_loads_multiply_calls_and_attempts_along_the_path() -> None:
    """Loads multiply calls per request and attempts per call layer by layer."""
    # By hand: b = 10 * 2, c = 20 * 0.5; worst b = 10 * 2 * 2, c = 40 * 0.5 * 3;
    # at p = 0.5 attempts are 1 + p = 1.5 and 1 + p + p^2 = 1.75.
    assert node_loads(chain()) == {"a": 10.0, "b": 20.0, "c": 10.0}
    assert node_loads(chain(), worst_case=True) == {"a": 10.0, "b": 40.0, "c": 60.0}
    half = node_loads(chain(), failure_probability=0.5)
    assert half["b"] == pytest.approx(30.0, rel=RTOL)
    assert half["c"] == pytest.approx(26.25, rel=RTOL)


def test_chain_amplification_is_the_product_of_attempts_per_layer() -> None:
    """Through L retrying layers the worst case multiplies by prod (R_i + 1)."""
    analysis = analyze_graph(chain())
    assert analysis.node("c").amplification == layered_amplification([1, 2]) == 6
    (path, *_) = analysis.top_paths
    assert path.path == ("a", "b", "c")
    assert path.retries == (1, 2)
    assert path.amplification == 6.0
    assert path.nominal_rate == pytest.approx(10.0, rel=RTOL)
    assert path.worst_rate == pytest.approx(60.0, rel=RTOL)


def test_chain_stacks_two_retrying_layers_only_on_shared_nodes() -> None:
    """c has one caller, so two retrying layers into it are not a shared stack."""
    assert stacked_retries(chain()) == ()


def test_diamond_loads_add_over_both_paths() -> None:
    """A node's load is the sum of what every path brings."""
    # By hand: b = c = 8 * 0.5; d = 4 + 4; worst d = 4 * 2 + 4 * 4.
    assert node_loads(diamond()) == {"a": 8.0, "b": 4.0, "c": 4.0, "d": 8.0}
    assert node_loads(diamond(), worst_case=True)["d"] == 24.0
    assert analyze_graph(diamond()).node("d").amplification == 4.0


def test_diamond_blast_radius_counts_each_request_once() -> None:
    """The share of requests touching d is 1 - (1 - 1/2)(1 - 1/2), not 1/2 + 1/2."""
    radius = blast_radius(diamond(), "d")
    (loss,) = radius.losses
    assert (loss.service, loss.direct_share, loss.share) == ("a", 0.75, 0.75)
    assert loss.lost_rate == 6.0
    assert radius.saturated == ()


def test_diamond_with_two_retrying_layers_into_d_reports_the_stack() -> None:
    """d, called by two services, sits behind a retrying a -> c and c -> d."""
    data = diamond().model_dump()
    data["calls"][1]["max_retries"] = 2
    (stack,) = stacked_retries(GraphSpec.model_validate(data))
    assert (stack.node, stack.layers, stack.amplification) == ("d", 2.0, 12.0)
    assert stack.path == ("a", "c", "d")


def test_fan_in_pool_load_is_the_sum_of_its_callers() -> None:
    """The shared pool sees every service's attempts; capacity is c / holding time."""
    pool = analyze_graph(fan_in()).node("pool")
    # By hand: 30 + 50 + 40 = 120/s; capacity 100 / 0.4 = 250/s; worst 120 * 3.
    assert pool.nominal_load == 120.0
    assert pool.capacity == pytest.approx(250.0, rel=RTOL)
    assert pool.nominal_utilization == pytest.approx(0.48, rel=RTOL)
    assert pool.worst_load == 360.0
    assert pool.holding_time == pytest.approx(0.4, rel=RTOL)


def test_fan_in_pool_that_outwaits_its_callers_is_vulnerable() -> None:
    """Retries can exceed capacity and a 30 s wait outlasts the 10 s callers."""
    pool = analyze_graph(fan_in()).node("pool")
    assert pool.classification == "vulnerable"
    assert pool.longest_wait == 30.0
    assert pool.caller_deadline == 10.0


def test_fan_in_shorter_queue_timeout_makes_the_pool_stable() -> None:
    """A queue timeout plus holding time below the callers' timeout wastes no work."""
    assert analyze_graph(fan_in(queue_timeout=5.0)).node("pool").classification == (
        "stable"
    )


def test_fan_in_cancelling_abandoned_waits_still_leaves_a_bad_state() -> None:
    """Dropping abandoned waits caps the wait at the callers' 10 s, not below it.

    Requests served in the saturated state have still waited the full caller
    timeout, so they are late and retried: the bad equilibrium remains
    (equilibria, corollary 4), only the queue violation goes.
    """
    analysis = analyze_graph(fan_in(cancel_abandoned=True))
    assert analysis.node("pool").longest_wait == 10.0
    assert analysis.node("pool").classification == "vulnerable"
    assert not [v for v in analysis.violations if v.kind == "queue"]


def test_fan_in_queue_limit_bounds_the_wait() -> None:
    """A queue of K drains in K / capacity: 500 / 250 = 2 s, below the 10 s callers."""
    pool = analyze_graph(fan_in(queue_limit=500)).node("pool")
    assert pool.longest_wait == pytest.approx(2.0, rel=RTOL)
    assert pool.classification == "stable"


def test_fan_in_reports_call_and_queue_violations() -> None:
    """Each 10 s caller gives up before the pool's 30 s queue (plus 0.4 s) ends."""
    violations = analyze_graph(fan_in()).violations
    calls = sorted((v.caller, v.time) for v in violations if v.kind == "call")
    assert calls == [("x", 30.4), ("y", 30.4), ("z", 30.4)]
    (queue,) = [v for v in violations if v.kind == "queue"]
    assert (queue.node, queue.timeout, queue.time, queue.excess) == (
        "pool",
        10.0,
        30.0,
        20.0,
    )


def test_fan_in_table_lock_saturates_the_pool_and_fails_every_service() -> None:
    """Locked queries hold connections: 100 fill at 120 * 0.25 = 30/s in 10/3 s."""
    radius = blast_radius(fan_in(), "db.t1")
    (saturation,) = radius.saturated
    assert saturation.node == "pool"
    assert saturation.time == pytest.approx(100.0 / 30.0, rel=RTOL)
    ranked = [(s.service, s.direct_share, s.share, s.lost_rate) for s in radius.losses]
    assert ranked == [
        ("y", 0.25, 1.0, 50.0),
        ("z", 0.25, 1.0, 40.0),
        ("x", 0.25, 1.0, 30.0),
    ]


def test_fan_in_short_lock_does_not_saturate_the_pool() -> None:
    """A 2 s lock ends before the 10/3 s the pool needs to fill."""
    radius = blast_radius(fan_in(), "db.t1", duration=2.0)
    assert radius.saturated == ()
    assert {s.share for s in radius.losses} == {0.25}


def test_overloaded_when_nominal_load_reaches_capacity() -> None:
    """No good state exists when demand alone reaches the pool's capacity."""
    data = fan_in().model_dump()
    data["services"][1]["entry_rate"] = 180.0
    pool = analyze_graph(GraphSpec.model_validate(data)).node("pool")
    assert pool.nominal_load == 250.0
    assert pool.classification == "overloaded"


def test_retry_budget_bounds_the_worst_case_load() -> None:
    """With a 50 % retry budget attempts are at most 1.5 per call: 180/s < 250/s."""
    data = fan_in().model_dump()
    for call in data["calls"][:3]:
        call["retry_budget"] = 0.5
    pool = analyze_graph(GraphSpec.model_validate(data)).node("pool")
    assert pool.worst_load == pytest.approx(180.0, rel=RTOL)
    assert pool.classification == "stable"


def test_incident_shape_proxy_is_vulnerable_and_a_cap_makes_it_stable() -> None:
    """A bounded web tier that waits for the proxy bounds the proxy's queue."""
    assert analyze_graph(single_tier()).node("proxy").classification == "vulnerable"
    capped = analyze_graph(single_tier(concurrency=16)).node("proxy")
    # By hand: 20 * 16 = 320 in flight, 100 connections: 220 waiting drain in
    # 220 / 250 = 0.88 s, well below the clients' 60 s.
    assert capped.longest_wait == pytest.approx(0.88, rel=RTOL)
    assert capped.classification == "stable"


def test_cancelling_calls_remove_the_callers_deadline() -> None:
    """When every call down to the pool cancels, no orphan can wait there."""
    data = single_tier().model_dump()
    data["calls"][0]["cancels_on_timeout"] = True
    half = analyze_graph(GraphSpec.model_validate(data))
    assert half.node("proxy").caller_deadline == 60.0
    data["calls"][1]["cancels_on_timeout"] = True
    full = analyze_graph(GraphSpec.model_validate(data))
    assert math.isinf(full.node("proxy").caller_deadline)
    assert full.node("proxy").classification == "stable"


def test_call_violation_counts_every_attempt_and_the_longest_backoff() -> None:
    """b may take 3 attempts of 1 s plus 0.5 s and 1 s of backoff: 4.5 s > 2 s."""
    graph = spec(
        services=[{"name": "a", "entry_rate": 1.0}, {"name": "b"}, {"name": "c"}],
        calls=[
            {"caller": "a", "callee": "b", "timeout": 2.0, "cancels_on_timeout": True},
            {
                "caller": "b",
                "callee": "c",
                "timeout": 1.0,
                "max_retries": 2,
                "backoff": {"initial": 0.5, "multiplier": 2.0, "cap": 30.0},
            },
        ],
    )
    (violation,) = timeout_violations(graph)
    assert (violation.caller, violation.callee, violation.kind) == ("a", "b", "call")
    assert violation.time == pytest.approx(4.5, rel=RTOL)
    assert violation.excess == pytest.approx(2.5, rel=RTOL)
    assert violation.wasted is False


def test_steady_state_of_a_pool_is_the_mmcd_queue() -> None:
    """The pool's nominal wait and timeouts come from M/M/c+D at its load."""
    pool = analyze_graph(fan_in()).node("pool")
    queue = MMcD(arrival_rate=120.0, service_rate=2.5, servers=100, timeout=30.0)
    assert pool.nominal_wait == queue.mean_wait
    assert pool.nominal_failure == queue.abandonment_probability


# -- cycles ------------------------------------------------------------------------


def test_self_call_damped_by_half_doubles_the_load() -> None:
    """x = 10 + x/2 gives x = 20; a self-call is reported as a cycle."""
    graph = spec(
        services=[{"name": "a", "entry_rate": 10.0}],
        calls=[{"caller": "a", "callee": "a", "calls_per_request": 0.5}],
    )
    assert node_loads(graph)["a"] == pytest.approx(20.0, rel=RTOL)
    (cycle,) = find_cycles(graph)
    assert (cycle.nodes, cycle.cycle, cycle.bounded) == (("a",), ("a",), True)


def test_cycle_with_spectral_radius_one_has_unbounded_loads() -> None:
    """A retried self-call with 0.5 * 2 = 1 never damps: every load beyond is inf."""
    graph = spec(
        services=[{"name": "a", "entry_rate": 10.0}, {"name": "b"}],
        calls=[
            {"caller": "a", "callee": "a", "calls_per_request": 0.5, "max_retries": 1},
            {"caller": "a", "callee": "b"},
        ],
    )
    (cycle,) = find_cycles(graph)
    assert cycle.bounded
    assert not cycle.worst_bounded
    assert cycle.retrying
    worst = node_loads(graph, worst_case=True)
    assert math.isinf(worst["a"])
    assert math.isinf(worst["b"])
    assert math.isinf(analyze_graph(graph).node("b").amplification)


def test_two_node_cycle_solves_the_linear_system() -> None:
    """a = 6 + b/2, b = a/2: a = 8, b = 4."""
    graph = spec(
        services=[{"name": "a", "entry_rate": 6.0}, {"name": "b"}],
        calls=[
            {"caller": "a", "callee": "b", "calls_per_request": 0.5},
            {"caller": "b", "callee": "a", "calls_per_request": 0.5},
        ],
    )
    loads = node_loads(graph)
    assert loads["a"] == pytest.approx(8.0, rel=RTOL)
    assert loads["b"] == pytest.approx(4.0, rel=RTOL)


@settings(max_examples=30)
@given(
    st.integers(min_value=2, max_value=5),
    st.lists(st.floats(min_value=0.05, max_value=0.6), min_size=25, max_size=25),
)
def test_cyclic_loads_equal_a_dense_solve(size: int, shares: list[float]) -> None:
    """On a strongly connected graph the loads solve (I - M^T) x = entry."""
    calls = [
        {"caller": f"n{i}", "callee": f"n{j}", "calls_per_request": shares[i * 5 + j]}
        for i in range(size)
        for j in range(size)
        if i != j
    ]
    services = [{"name": f"n{i}", "entry_rate": float(i + 1)} for i in range(size)]
    matrix = np.zeros((size, size))
    for call in calls:
        matrix[int(call["caller"][1:]), int(call["callee"][1:])] = call[
            "calls_per_request"
        ]
    graph = spec(services=services, calls=calls)
    entry = np.arange(1.0, size + 1.0)
    radius = max(abs(np.linalg.eigvals(matrix)))
    (cycle,) = find_cycles(graph)
    assert cycle.bounded == (radius < 1.0)
    if radius < 1.0:
        reference = np.linalg.solve(np.eye(size) - matrix.T, entry)
        loads = node_loads(graph)
        np.testing.assert_allclose(
            [loads[f"n{i}"] for i in range(size)], reference, rtol=1e-9
        )


# -- properties on random DAGs ---------------------------------------------------


def attempts(p: float, retries: int, budget: float) -> float:
    """Expected attempts per call, the geometric sum written out term by term."""
    return min(sum(p**k for k in range(retries + 1)), 1.0 + budget)


def path_sum_loads(data: dict[str, Any], p: float) -> dict[str, float]:
    """Sum over every path from an entry of entry rate times edge weights."""
    graph = nx.DiGraph()
    graph.add_nodes_from(s["name"] for s in data["services"])
    for c in data["calls"]:
        weight = c["calls_per_request"] * attempts(
            p, c["max_retries"], c["retry_budget"]
        )
        graph.add_edge(c["caller"], c["callee"], weight=weight)
    loads = {}
    for target in graph.nodes:
        total = 0.0
        for service in data["services"]:
            source, rate = service["name"], service["entry_rate"]
            if source == target:
                total += rate
                continue
            for path in nx.all_simple_paths(graph, source, target):
                total += rate * math.prod(
                    graph.edges[u, v]["weight"] for u, v in itertools.pairwise(path)
                )
        loads[target] = total
    return loads


@given(service_dags(), st.floats(min_value=0.0, max_value=1.0))
def test_loads_on_dags_equal_the_sum_over_paths(data: dict[str, Any], p: float) -> None:
    """Topological propagation equals brute-force path enumeration."""
    graph = GraphSpec.model_validate(data)
    expected = path_sum_loads(data, p)
    for name, load in node_loads(graph, failure_probability=p).items():
        assert load == pytest.approx(expected[name], rel=1e-9, abs=1e-12)


@given(service_dags())
def test_worst_case_loads_equal_the_sum_over_paths_with_every_attempt(
    data: dict[str, Any],
) -> None:
    """With every attempt failing each call makes min(R + 1, 1 + budget) attempts."""
    graph = GraphSpec.model_validate(data)
    expected = path_sum_loads(data, 1.0)
    for name, load in node_loads(graph, worst_case=True).items():
        assert load == pytest.approx(expected[name], rel=1e-9, abs=1e-12)


@given(service_dags(), st.data())
def test_amplification_is_monotone_in_retries(data: dict[str, Any], draw: Any) -> None:
    """One more retry on any call never lowers a worst-case load or amplification."""
    if not data["calls"]:
        return
    before = analyze_graph(GraphSpec.model_validate(data))
    index = draw.draw(st.integers(min_value=0, max_value=len(data["calls"]) - 1))
    data["calls"][index]["max_retries"] += 1
    after = analyze_graph(GraphSpec.model_validate(data))
    for old, new in zip(before.nodes, after.nodes, strict=True):
        assert new.worst_load >= old.worst_load * (1 - 1e-12)
        assert new.amplification >= old.amplification


@given(service_dags(), st.floats(min_value=0.0, max_value=1.0))
def test_without_retries_loads_are_plain_propagation(
    data: dict[str, Any], p: float
) -> None:
    """With R = 0 everywhere the loads solve x = entry + K^T x whatever fails."""
    for call in data["calls"]:
        call["max_retries"] = 0
    graph = GraphSpec.model_validate(data)
    names = [s["name"] for s in data["services"]]
    matrix = np.zeros((len(names), len(names)))
    for call in data["calls"]:
        matrix[names.index(call["caller"]), names.index(call["callee"])] = call[
            "calls_per_request"
        ]
    entry = np.array([s["entry_rate"] for s in data["services"]])
    reference = np.linalg.solve(np.eye(len(names)) - matrix.T, entry)
    nominal = node_loads(graph, failure_probability=p)
    worst = node_loads(graph, worst_case=True)
    # The dense solve leaves rounding noise of order 1e-16 where the load is 0.
    np.testing.assert_allclose(
        [nominal[n] for n in names], reference, rtol=1e-9, atol=1e-12
    )
    # attempts_per_request(p, 0) is 1 to within an ulp of its log-space form.
    assert nominal == pytest.approx(worst, rel=1e-14)


@given(
    st.floats(min_value=0.1, max_value=500.0),
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=50),
    st.floats(min_value=1e-3, max_value=2.0),
)
def test_one_node_graph_is_the_single_tier_loss_system(
    rate: float, pods: int, concurrency: int, service_time: float
) -> None:
    """A bounded service alone is M/M/c/c: utilisation lambda s / c, Erlang B losses."""
    graph = spec(
        services=[
            {
                "name": "web",
                "entry_rate": rate,
                "pods": pods,
                "concurrency": concurrency,
                "service_time": service_time,
            }
        ]
    )
    (node,) = analyze_graph(graph).nodes
    slots = pods * concurrency
    assert node.capacity == slots / service_time
    assert node.nominal_utilization == pytest.approx(
        rate * service_time / slots, rel=RTOL
    )
    assert node.nominal_failure == erlang_b(slots, rate * service_time)
    expected = "overloaded" if rate >= slots / service_time else "stable"
    assert node.classification == expected


# -- scenarios and the incident --------------------------------------------------


@st.composite
def single_tier_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """Single tiers without crashes, breakers or contention (the graph's scope)."""
    service_time = draw(st.floats(min_value=0.05, max_value=1.0))
    pool = draw(st.integers(min_value=1, max_value=200))
    capacity = pool / service_time
    web: dict[str, Any] = {"mode": "async", "pods": draw(st.integers(1, 30))}
    if draw(st.booleans()):
        web |= {"mode": "bounded", "concurrency_per_pod": draw(st.integers(1, 40))}
    queue_limit = draw(st.one_of(st.just(math.inf), st.integers(0, 5000)))
    timeout = draw(st.floats(min_value=0.5, max_value=120.0))
    queue_timeout = draw(st.floats(min_value=0.1, max_value=200.0))
    return {
        # The fluid step must be at most a tenth of the shortest timeout.
        "scenario": {
            "name": "tier",
            "horizon": 200.0,
            "time_step": min(0.25, timeout / 20.0, queue_timeout / 20.0),
        },
        "clients": {
            "request_rate": draw(st.floats(min_value=0.05, max_value=1.5)) * capacity,
            "timeout": timeout,
            "max_retries": draw(st.integers(min_value=0, max_value=5)),
            "retry_budget": draw(st.one_of(st.just(math.inf), st.floats(0.0, 3.0))),
        },
        "web": web,
        "proxy": {
            "pool_size": pool,
            "queue_timeout": queue_timeout,
            "queue_limit": queue_limit,
            "cancel_abandoned": draw(st.booleans()),
        },
        "database": {"service_time": service_time},
    }


@settings(max_examples=40)
@given(single_tier_scenarios())
def test_one_tier_graph_classification_agrees_with_the_equilibria(
    data: dict[str, Any],
) -> None:
    """Graph classification of a single tier equals the equilibrium analysis."""
    scenario = parse_scenario(data)
    # A short horizon and loose tolerance: only the classification is compared,
    # and it does not depend on the critical backlog's bisection.
    expected = find_equilibria(scenario, horizon=50.0, tolerance=0.5).classification
    assert analyze_graph(graph_from_scenario(scenario)).classification == expected


def test_single_tier_scenario_becomes_the_smallest_graph() -> None:
    """The incident's single tier: clients, web, proxy, database and its tables."""
    graph = single_tier_graph(default_scenario())
    assert list(graph.node_kinds) == [
        "clients",
        "web",
        "proxy",
        "database",
        "database.invoice",
        "database.other",
    ]
    analysis = analyze_graph(graph)
    scenario = default_scenario()
    proxy = analysis.node("proxy")
    assert proxy.nominal_load == scenario.clients.request_rate
    assert proxy.capacity == pytest.approx(
        scenario.proxy.pool_size / scenario.database.service_time, rel=RTOL
    )
    assert proxy.worst_load == scenario.clients.request_rate * (
        scenario.clients.max_retries + 1
    )
    assert proxy.classification == "vulnerable"


def test_remedy_variants_of_the_incident_are_stable_as_graphs() -> None:
    """The 30 s proxy timeout and the concurrency cap each remove the waste."""
    scenario = default_scenario()
    for name in ("proxy-timeout-30s", "concurrency-cap"):
        graph = graph_from_scenario(scenario.variant(name))
        assert analyze_graph(graph).node("proxy").classification == "stable"


def test_incident_graph_carries_the_single_tier_load() -> None:
    """The products' entry rates sum to the incident's request rate at the proxy."""
    products = analyze_graph(default_graph())
    tier = analyze_graph(single_tier_graph(default_scenario()))
    for name in ("proxy", "database"):
        assert products.node(name).nominal_load == pytest.approx(
            tier.node(name).nominal_load, rel=RTOL
        )
        assert products.node(name).worst_load == pytest.approx(
            tier.node(name).worst_load, rel=RTOL
        )
        assert products.node(name).classification == tier.node(name).classification


def test_incident_lock_takes_down_every_product() -> None:
    """A lock on invoice fills the proxy in about a second: every product fails."""
    radius = blast_radius(default_graph(), "database.invoice", duration=45.0)
    assert [s.node for s in radius.saturated] == ["proxy"]
    # By hand: 100 connections / (160/s * 0.6) = 1.04 s.
    assert radius.saturated[0].time == pytest.approx(100.0 / 96.0, rel=RTOL)
    assert len(radius.losses) == 7
    assert all(loss.share == 1.0 and loss.direct_share == 0.6 for loss in radius.losses)
    assert radius.lost_rate == pytest.approx(160.0, rel=RTOL)


def test_findings_name_the_vulnerable_pool_and_the_violations() -> None:
    """The summary sentences lead with the classification, then the timeouts."""
    findings = analyze_graph(fan_in(), faults=["db.t1"]).findings(limit=1)
    assert findings[0].startswith("pool (pool) is vulnerable")
    assert findings[1].endswith("pool may take 30.4 s")
    assert findings[2].startswith("a stall of db.t1 fails 120 requests/s")
    assert "across 3 entry services" in findings[2]


def test_findings_count_one_entry_service_in_the_singular() -> None:
    """One losing entry service is "1 entry service"."""
    (line,) = (
        f
        for f in analyze_graph(single_tier(), faults=["db"]).findings()
        if f.startswith("a stall of")
    )
    assert "across 1 entry service (" in line


# -- export ------------------------------------------------------------------------


def test_dot_lists_every_node_and_call_once_and_marks_violations() -> None:
    """The DOT text has one statement per node and per call; violations are red."""
    graph = fan_in()
    analysis = analyze_graph(graph)
    text = graph_to_dot(graph, analysis)
    nodes = re.findall(r'^  "([^"]+)" \[', text, flags=re.M)
    edges = re.findall(r'^  "([^"]+)" -> "([^"]+)" \[(.*)\];$', text, flags=re.M)
    digraph = ServiceGraph(graph).digraph
    assert sorted(nodes) == sorted(digraph.nodes)
    assert sorted((u, v) for u, v, _ in edges) == sorted(digraph.edges)
    red = {(u, v) for u, v, attributes in edges if "dashed" in attributes}
    assert red == {("x", "pool"), ("y", "pool"), ("z", "pool")}
    outlined = re.findall(r'^  "([^"]+)" \[.*penwidth=2', text, flags=re.M)
    assert outlined == ["pool"]
    assert text.startswith("digraph services {")
    assert text.endswith("}\n")


def test_dot_escapes_quotes_in_names() -> None:
    """A name with a quote stays one DOT identifier."""
    graph = spec(services=[{"name": 'say "hi"', "entry_rate": 1.0}])
    assert '"say \\"hi\\""' in graph_to_dot(graph)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    """The figure is written as a PNG file."""
    target = tmp_path / "graph.png"
    plot_graph(fan_in(), analyze_graph(fan_in()), target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- schema and validation ---------------------------------------------------------


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the (path, message) pairs a graph mapping is rejected with."""
    with pytest.raises(ScenarioError) as info:
        parse_graph(data)
    return info.value.problems


def test_unknown_callee_is_named_by_its_path() -> None:
    """A call to an unknown node is reported at graph.calls[i].callee."""
    found = problems(
        {"services": [{"name": "a"}], "calls": [{"caller": "a", "callee": "b"}]}
    )
    assert found == [("graph.calls.0.callee", "names no node (got 'b')")]


def test_negative_entry_rate_is_rejected() -> None:
    """Rates are non-negative."""
    ((path, message),) = problems({"services": [{"name": "a", "entry_rate": -1.0}]})
    assert path == "graph.services.0.entry_rate"
    assert "greater than or equal to 0" in message


def test_infinite_entry_rate_is_rejected() -> None:
    """Rates are finite."""
    ((path, _),) = problems({"services": [{"name": "a", "entry_rate": math.inf}]})
    assert path == "graph.services.0.entry_rate"


def test_repeated_service_name_is_rejected() -> None:
    """Node names are unique."""
    ((path, message),) = problems({"services": [{"name": "a"}, {"name": "a"}]})
    assert (path, message) == (
        "graph.services.1.name",
        "repeats an earlier name (got 'a')",
    )


def test_resource_named_like_a_service_is_rejected() -> None:
    """Services and resources share one namespace."""
    found = problems(
        {"services": [{"name": "a"}], "resources": [{"name": "a", "kind": "database"}]}
    )
    assert found == [("graph.resources.0.name", "is already a service name (got 'a')")]


def test_table_name_clash_is_rejected() -> None:
    """A table's node name database.table must be free."""
    found = problems(
        {
            "services": [{"name": "db.t"}],
            "resources": [
                {
                    "name": "db",
                    "kind": "database",
                    "tables": [{"name": "t", "share": 1.0}],
                }
            ],
        }
    )
    assert found == [
        (
            "graph.resources.0.tables.0.name",
            "makes a node name already in use (got 'db.t')",
        )
    ]


def test_repeated_call_is_rejected() -> None:
    """At most one call joins a caller to a callee."""
    call = {"caller": "a", "callee": "b"}
    found = problems(
        {"services": [{"name": "a"}, {"name": "b"}], "calls": [call, call]}
    )
    assert found[0][0] == "graph.calls.1"
    assert "merge them" in found[0][1]


def test_table_making_a_call_is_rejected() -> None:
    """Tables are leaves."""
    found = problems(
        {
            "services": [{"name": "a"}],
            "resources": [
                {
                    "name": "db",
                    "kind": "database",
                    "tables": [{"name": "t", "share": 1.0}],
                }
            ],
            "calls": [{"caller": "db.t", "callee": "a"}],
        }
    )
    assert found == [
        ("graph.calls.0.caller", "is a table (tables make no calls) (got 'db.t')")
    ]


def test_pool_without_size_is_rejected() -> None:
    """A pool needs its number of connections."""
    found = problems({"resources": [{"name": "p", "kind": "pool"}]})
    assert found == [("graph.resources.0.pool_size", "a pool needs a pool_size")]


def test_database_field_on_a_pool_is_rejected() -> None:
    """Fields of one resource kind do not apply to the other."""
    found = problems(
        {"resources": [{"name": "p", "kind": "pool", "pool_size": 2, "servers": 4}]}
    )
    assert found == [("graph.resources.0.servers", "does not apply to a pool (got 4)")]


def test_pool_field_on_a_database_is_rejected() -> None:
    """A database has no queueing timeout of its own."""
    found = problems(
        {"resources": [{"name": "d", "kind": "database", "queue_timeout": 5.0}]}
    )
    assert found == [
        ("graph.resources.0.queue_timeout", "does not apply to a database (got 5.0)")
    ]


def test_fractional_queue_limit_is_rejected() -> None:
    """A queue limit counts requests."""
    found = problems(
        {
            "resources": [
                {"name": "p", "kind": "pool", "pool_size": 2, "queue_limit": 2.5}
            ]
        }
    )
    assert found == [("graph.resources.0.queue_limit", "must be a whole number or inf")]


def test_unknown_field_is_rejected() -> None:
    """Misspelt keys are errors, not silently ignored."""
    ((path, message),) = problems({"services": [{"name": "a", "entry": 1.0}]})
    assert path == "graph.services.0.entry"
    assert "Extra inputs are not permitted" in message


def test_empty_graph_is_rejected() -> None:
    """A graph has at least one node."""
    assert problems({}) == [("graph", "a graph needs at least one service or resource")]


def test_load_graph_reports_a_missing_file(tmp_path: Path) -> None:
    """An unreadable file is a ScenarioError naming the file."""
    with pytest.raises(ScenarioError, match="cannot be read"):
        load_graph(tmp_path / "absent.toml")


def test_load_graph_reports_invalid_toml(tmp_path: Path) -> None:
    """A file that is not TOML is a ScenarioError."""
    path = tmp_path / "bad.toml"
    path.write_text("[graph\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_graph(path)


def test_load_graph_needs_a_graph_table(tmp_path: Path) -> None:
    """A file without [graph] has no graph to load."""
    path = tmp_path / "none.toml"
    path.write_text("[other]\nx = 1\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="the file has no graph table"):
        load_graph(path)


def test_graph_from_file_reads_a_graph_section(tmp_path: Path) -> None:
    """A TOML [graph] section with inf values loads as the same spec."""
    path = tmp_path / "g.toml"
    path.write_text(
        '[[graph.services]]\nname = "a"\nentry_rate = 2.0\n'
        '[[graph.resources]]\nname = "p"\nkind = "pool"\npool_size = 3\n'
        "queue_limit = inf\n"
        '[[graph.calls]]\ncaller = "a"\ncallee = "p"\ntimeout = 1.5\n',
        encoding="utf-8",
    )
    assert graph_from_file(path) == spec(
        services=[{"name": "a", "entry_rate": 2.0}],
        resources=[{"name": "p", "kind": "pool", "pool_size": 3}],
        calls=[{"caller": "a", "callee": "p", "timeout": 1.5}],
    )


def test_service_graph_rejects_a_mapping() -> None:
    """ServiceGraph takes a validated GraphSpec."""
    with pytest.raises(InvalidParameterError, match="`spec` must be a GraphSpec"):
        ServiceGraph({"services": []})  # type: ignore[arg-type]


def test_analysis_rejects_a_failure_probability_above_one() -> None:
    """Failure probabilities lie in [0, 1]."""
    with pytest.raises(
        InvalidParameterError, match="`failure_probability` must lie in"
    ):
        analyze_graph(chain(), failure_probability=1.5)


def test_analysis_rejects_an_unknown_fault() -> None:
    """Faults name nodes of the graph."""
    with pytest.raises(InvalidParameterError, match="`faults` must name nodes"):
        analyze_graph(chain(), faults=["nowhere"])


def test_analysis_rejects_a_single_string_as_faults() -> None:
    """A bare string is not a list of node names."""
    with pytest.raises(InvalidParameterError, match="must be a list of node names"):
        analyze_graph(chain(), faults="a")


def test_analysis_rejects_a_negative_fault_duration() -> None:
    """Durations are non-negative."""
    with pytest.raises(InvalidParameterError, match="`fault_duration` must be non-neg"):
        analyze_graph(chain(), fault_duration=-1.0)


def test_analysis_rejects_a_negative_top() -> None:
    """The number of paths listed is a count."""
    with pytest.raises(InvalidParameterError, match="`top` must be a non-negative"):
        analyze_graph(chain(), top=-1)


def test_node_lookup_rejects_an_unknown_name() -> None:
    """GraphAnalysis.node names a node of the graph."""
    with pytest.raises(InvalidParameterError, match="`name` must name a node"):
        analyze_graph(chain()).node("nowhere")


def test_blast_radius_rejects_an_unknown_fault() -> None:
    """The fault names a node of the graph."""
    with pytest.raises(InvalidParameterError, match="`fault` must name nodes"):
        blast_radius(chain(), "nowhere")


# -- command line ------------------------------------------------------------------


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI and return its exit status, stdout and stderr."""
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_cli_graph_prints_the_incident_tables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without an argument the command analyses the embedded incident graph."""
    status, out, _ = run(["graph"], capsys)
    assert status == 0
    assert "classification: vulnerable" in out
    assert "timeout-ordering violations" in out
    assert "database.invoice" in out


def test_cli_graph_json_has_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one object with nodes, violations, blast radii and the rest."""
    status, out, _ = run(["graph", "--json", "--fault-duration", "45"], capsys)
    payload = json.loads(out)
    assert status == 0
    assert payload["classification"] == "vulnerable"
    proxy = next(n for n in payload["nodes"] if n["name"] == "proxy")
    # By hand: 160/s x 0.4 s / 100 connections = 0.64.
    assert proxy["nominal_utilization"] == pytest.approx(0.64, rel=RTOL)
    assert {
        "violations",
        "blast_radii",
        "stacked_retries",
        "cycles",
        "top_paths",
    } <= set(payload)


def test_cli_graph_writes_plot_and_dot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--plot and --dot write their files."""
    png, dot = tmp_path / "g.png", tmp_path / "g.dot"
    status, _, _ = run(["graph", "--plot", str(png), "--dot", str(dot)], capsys)
    assert status == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert dot.read_text(encoding="utf-8").startswith("digraph services {")


def test_cli_graph_reads_a_scenario_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A graph file given on the command line is analysed."""
    path = tmp_path / "g.toml"
    path.write_text(
        '[[graph.services]]\nname = "solo"\nentry_rate = 1.0\n', encoding="utf-8"
    )
    status, out, _ = run(["graph", str(path), "--json"], capsys)
    assert status == 0
    assert [n["name"] for n in json.loads(out)["nodes"]] == ["solo"]


def test_cli_graph_unknown_source_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A missing file exits non-zero with one line on stderr."""
    status, _, err = run(["graph", "no-such-file.toml"], capsys)
    assert status == 2
    assert err.strip().count("\n") == 0
    assert "no-such-file.toml" in err


def test_cli_graph_invalid_graph_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A schema mistake names the field and exits non-zero."""
    path = tmp_path / "g.toml"
    path.write_text(
        '[[graph.services]]\nname = "a"\nentry_rate = -2.0\n', encoding="utf-8"
    )
    status, _, err = run(["graph", str(path)], capsys)
    assert status == 2
    assert "graph.services.0.entry_rate" in err


def test_cli_graph_unwritable_plot_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plot path in a missing folder is a user mistake, not a traceback."""
    status, _, err = run(["graph", "--dot", str(tmp_path / "no" / "g.dot")], capsys)
    assert status == 2
    assert "cannot write" in err


def test_cli_graph_replay_reports_every_product(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--replay adds each product's outcome of the incident's lock."""
    status, out, _ = run(["graph", "--replay", "--json"], capsys)
    assert status == 0
    replay = json.loads(out)["replay"]
    assert [t["pool"] for t in replay["tiers"]] == ["proxy"]
    assert len(replay["products"]) == 7
    assert all(p["failed_at"] is not None for p in replay["products"])


def test_cli_graph_replay_needs_a_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A graph file without [scenario] has no trigger to replay."""
    path = tmp_path / "g.toml"
    path.write_text(
        '[[graph.services]]\nname = "a"\nentry_rate = 1.0\n', encoding="utf-8"
    )
    status, _, err = run(["graph", str(path), "--replay"], capsys)
    assert status == 2
    assert "a replay needs a scenario table" in err


# -- blast radius: the fast sweep against a naive fixed-point iteration ----------


def _naive_blast_radius(
    graph: GraphSpec, fault: str, duration: float
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Blast radius by iterating every equation over every node until it settles.

    The slow reference: holding times iterated down from ``inf`` (the largest
    solution), shares up from 0 with a node failing as soon as its slots fill
    at the shares so far (the least solution), then the times at which
    requests get stuck relaxed until none changes. Returns the saturated
    nodes with the time they fill, and each losing entry service's
    (direct share, share).
    """
    built = ServiceGraph(graph)
    net = built._structure
    core = _core(net, 0.0)
    n, f = net.size, net.names.index(fault)

    # Holding times: H_v = own + max over calls (every attempt to its end).
    worst = [math.inf] * n
    hold = [math.inf] * n
    for _ in range(n + 2):
        for v in range(n):
            longest = 0.0
            for e in net.out_edges[v]:
                attempt = net.timeout[e]
                if math.isinf(attempt):
                    attempt = worst[net.dst[e]]
                longest = max(
                    longest, (net.retries[e] + 1) * attempt + net.backoff_total[e]
                )
            hold[v] = core.own[v] + longest
            if v == f:
                hold[v] = max(hold[v], duration)
            worst[v] = core.wait[v] + hold[v]

    def missed(v: int, hit: list[float]) -> float:
        """Chance that every call of ``v`` misses the nodes with shares ``hit``."""
        miss = 1.0
        for e in net.out_edges[v]:
            k, q = net.per_request[e], hit[net.dst[e]]
            miss *= (1.0 - q) ** math.floor(k) * (1.0 - (k - math.floor(k)) * q)
        return miss

    def fill_time(v: int, given: float) -> float:
        """Seconds until the slots of ``v`` hold only stuck requests."""
        stuck = math.inf if math.isinf(core.nominal[v]) else core.nominal[v] * given
        return net.slots[v] / stuck if given > 0.0 and stuck > 0.0 else math.inf

    direct, share, given = [0.0] * n, [0.0] * n, [0.0] * n
    failing = [v == f for v in range(n)]
    for _ in range(100_000):
        new_direct = [1.0 if v == f else 1.0 - missed(v, direct) for v in range(n)]
        given = [1.0 - missed(v, share) for v in range(n)]
        for v in range(n):
            fill = fill_time(v, given[v])
            failing[v] = failing[v] or (math.isfinite(fill) and fill <= hold[v])
        new_share = [1.0 if failing[v] else given[v] for v in range(n)]
        change = max(
            abs(a - b)
            for a, b in zip(new_direct + new_share, direct + share, strict=True)
        )
        direct, share = new_direct, new_share
        if change < 1e-14:
            break

    since = [0.0 if v == f else math.inf for v in range(n)]
    start = [math.inf] * n
    for _ in range(n + 2):
        for v in range(n):
            reach = [
                since[net.dst[e]] if failing[net.dst[e]] else start[net.dst[e]]
                for e in net.out_edges[v]
                if share[net.dst[e]] > 0.0
            ]
            start[v] = min(reach, default=math.inf)
            if failing[v] and v != f:
                since[v] = start[v] + fill_time(v, given[v])
    saturated = {net.names[v]: since[v] for v in range(n) if failing[v] and v != f}
    losses = {
        net.names[v]: (direct[v], share[v])
        for v in range(n)
        if net.entry[v] > 0.0 and share[v] > 0.0
    }
    return saturated, losses


@settings(max_examples=150, deadline=None)
@given(cyclic_service_graphs(), st.sampled_from([0.5, 5.0, 60.0, math.inf]))
def test_blast_radius_equals_a_naive_fixed_point_on_cyclic_graphs(
    data: dict[str, Any], duration: float
) -> None:
    """Every stall's saturated nodes, times and lost shares match the reference."""
    graph = spec(**data)
    analysis = analyze_graph(
        graph, faults=list(graph.node_kinds), fault_duration=duration
    )
    for radius in analysis.blast_radii:
        saturated, losses = _naive_blast_radius(graph, radius.fault, duration)
        assert {s.node for s in radius.saturated} == set(saturated)
        for s in radius.saturated:
            assert s.time == pytest.approx(saturated[s.node], rel=1e-9)
        assert {loss.service for loss in radius.losses} == set(losses)
        for loss in radius.losses:
            # Shares on a cycle settle to 1e-10 per sweep: a margin of 1e-8.
            direct, share = losses[loss.service]
            assert loss.direct_share == pytest.approx(direct, abs=1e-8)
            assert loss.share == pytest.approx(share, abs=1e-8)


# -- cyclic components: the iterative solver against the factorisation ------------


def _random_component(seed: int, size: int, radius: float) -> np.ndarray:
    """A strongly connected non-negative matrix with the given spectral radius.

    A ring makes it irreducible; a few random calls, mostly one way, make it
    look like a service graph with some calls back.
    """
    rng = np.random.default_rng(seed)
    matrix = np.zeros((size, size))
    matrix[np.arange(size), (np.arange(size) + 1) % size] = rng.uniform(0.1, 1.0, size)
    for _ in range(2 * size):
        i, j = rng.integers(0, size, 2)
        matrix[i, j] = rng.uniform(0.0, 1.0) * (1.0 if i < j else 0.2)
    return matrix * radius / max(abs(np.linalg.eigvals(matrix)))


def _entries(matrix: np.ndarray) -> list[tuple[int, int, float]]:
    rows, cols = np.nonzero(matrix)
    return [
        (int(i), int(j), float(matrix[i, j])) for i, j in zip(rows, cols, strict=True)
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=2, max_value=40),
    st.sampled_from([0.2, 0.7, 0.95, 0.999, 1.001, 1.05, 3.0]),
    st.sampled_from([0.0, 1.0, 7.5]),
)
def test_iterative_component_solve_agrees_with_the_factorisation(
    seed: int, size: int, radius: float, scale: float
) -> None:
    """Forced onto the iteration, the result equals the dense solve, bound for bound."""
    matrix = _random_component(seed, size, radius)
    rhs = (scale * np.random.default_rng(seed + 1).uniform(0.0, 1.0, size)).tolist()
    iterative, bounded = _solve_component(size, _entries(matrix), rhs, direct_nodes=0)
    direct, direct_bounded = _solve_component(
        size, _entries(matrix), rhs, direct_nodes=10**9
    )
    assert bounded == direct_bounded == (radius < 1.0)
    if bounded:
        reference = np.linalg.solve(np.eye(size) - matrix, rhs)
        # Condition number up to 1 / (1 - 0.999): a few digits lost to it.
        np.testing.assert_allclose(iterative, reference, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(iterative, direct, rtol=1e-6, atol=1e-12)
    else:
        expected = math.inf if scale > 0.0 else 0.0
        assert iterative == direct == [expected] * size


@settings(max_examples=40, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=2, max_value=40),
    st.sampled_from([0.2, 0.7, 0.9, 1.1, 1.5, 3.0]),
)
def test_iterative_solve_proves_clear_cases_either_way(
    seed: int, size: int, radius: float
) -> None:
    """Away from radius 1 the iteration decides alone, and says the same as numpy."""
    matrix = _random_component(seed, size, radius)
    rhs = np.random.default_rng(seed + 1).uniform(0.5, 1.0, size)
    outcome = _iterative_solve(scipy.sparse.csr_matrix(matrix), rhs)
    assert outcome is not None
    x, bounded = outcome
    assert bounded == (radius < 1.0)
    if bounded:
        reference = np.linalg.solve(np.eye(size) - matrix, rhs)
        np.testing.assert_allclose(x, reference, rtol=1e-8)


def test_iterative_solve_stops_at_a_diagonal_entry_of_one() -> None:
    """A node that calls itself once per request proves the radius is at least 1."""
    matrix = scipy.sparse.csr_matrix(np.array([[1.0, 0.1], [0.5, 0.0]]))
    outcome = _iterative_solve(matrix, np.ones(2))
    assert outcome is not None
    assert not outcome[1]


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(2, 30))
def test_acyclic_split_leaves_no_cycle_and_levels_descend(seed: int, size: int) -> None:
    """The kept calls form no cycle but self-calls, and every kept call goes down."""
    matrix = _random_component(seed, size, 0.5)
    matrix[0, 0] = 0.25
    caller, callee = np.nonzero(matrix)
    kept, level = _acyclic_split(size, caller, callee, matrix[caller, callee])
    graph = nx.DiGraph()
    graph.add_nodes_from(range(size))
    graph.add_edges_from(
        (int(caller[k]), int(callee[k])) for k in kept if caller[k] != callee[k]
    )
    assert nx.is_directed_acyclic_graph(graph)
    assert (0, 0) in {(int(caller[k]), int(callee[k])) for k in kept}
    assert all(level[u] > level[w] for u, w in graph.edges)


def test_large_cyclic_graph_loads_equal_a_sparse_direct_solve() -> None:
    """Past the size solved directly, the loads still solve (I - W^T) x = entry."""
    rng = np.random.default_rng(7)
    size = 1_500
    services = [
        {"name": f"s{i}", "entry_rate": float(rng.uniform(0.0, 5.0))}
        for i in range(size)
    ]
    pairs = {(i, (i + 1) % size) for i in range(size)}
    while len(pairs) < 4 * size:
        i, j = (int(v) for v in rng.integers(0, size, 2))
        if i != j:
            pairs.add((i, j))
    calls = [
        {
            "caller": f"s{i}",
            "callee": f"s{j}",
            # Calls forward multiply, calls back are rare: a service graph
            # with a few loops through it, every one damped.
            "calls_per_request": 0.3 if j > i else 0.05,
            "max_retries": 1,
        }
        for i, j in sorted(pairs)
    ]
    graph = spec(services=services, calls=calls)
    (cycle,) = find_cycles(graph)
    assert len(cycle.nodes) == size
    p = 0.3
    weight = {
        (i, j): c["calls_per_request"] * (1.0 + p)
        for (i, j), c in zip(sorted(pairs), calls, strict=True)
    }
    rows = [j for i, j in weight]
    cols = [i for i, j in weight]
    system = scipy.sparse.identity(size, format="csc") - scipy.sparse.csc_matrix(
        (list(weight.values()), (rows, cols)), shape=(size, size)
    )
    entry = np.array([s["entry_rate"] for s in services])
    loads = node_loads(graph, failure_probability=p)
    reference = scipy.sparse.linalg.spsolve(system, entry)
    np.testing.assert_allclose(
        [loads[f"s{i}"] for i in range(size)], reference, rtol=1e-8
    )


def test_cli_graph_file_in_another_encoding_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes that are not UTF-8 give the file's name and the rule, no traceback."""
    path = tmp_path / "latin1.toml"
    path.write_bytes("[graph]\n# caf\xe9\n".encode("latin-1"))
    status, _, err = run(["graph", str(path)], capsys)
    assert status == 2
    assert err.count("\n") == 1
    assert "is not UTF-8 text (byte 0xe9" in err


def test_a_database_nothing_calls_is_stable_not_overloaded() -> None:
    """No load and no capacity (no pool in front): nothing to serve, no overload."""
    graph = spec(
        services=[{"name": "web", "entry_rate": 10.0}],
        resources=[
            {"name": "pool", "kind": "pool", "pool_size": 10, "queue_timeout": 1.0},
            {"name": "db", "kind": "database", "service_time": 0.01},
            {"name": "archive", "kind": "database", "service_time": 0.01},
        ],
        calls=[{"caller": "web", "callee": "pool"}, {"caller": "pool", "callee": "db"}],
    )
    analysis = analyze_graph(graph)
    archive = analysis.node("archive")
    assert (archive.nominal_load, archive.capacity) == (0.0, 0.0)
    assert archive.classification == "stable"
    assert analysis.classification == "stable"
