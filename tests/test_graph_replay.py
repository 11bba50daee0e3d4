"""Graph replays: the fluid model of each shared tier, followed per product."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from retrystorm.equilibria import find_equilibria
from retrystorm.errors import InvalidParameterError
from retrystorm.fluid import simulate_fluid
from retrystorm.graph import GraphSpec, default_graph
from retrystorm.graph_replay import replay_graph
from retrystorm.review import judge
from retrystorm.scenario import default_scenario

# Ten minutes cover the 45 s lock at t = 60 s and what follows it, and keep
# each replay well under a second.
HORIZON = 600.0


def products_on_pools(**extra: Any) -> GraphSpec:
    """Two products on pool p1 (one at half exposure), one on p2, one on neither."""
    base: dict[str, Any] = {
        "services": [
            {"name": "full", "entry_rate": 40.0},
            {"name": "half", "entry_rate": 20.0},
            {"name": "other", "entry_rate": 30.0},
            {"name": "static", "entry_rate": 10.0},
        ],
        "resources": [
            {"name": "p1", "kind": "pool", "pool_size": 50, "queue_timeout": 120.0},
            {
                "name": "d1",
                "kind": "database",
                "service_time": 0.4,
                "tables": [
                    {"name": "invoice", "share": 0.6},
                    {"name": "rest", "share": 0.4},
                ],
            },
            {"name": "p2", "kind": "pool", "pool_size": 50, "queue_timeout": 120.0},
            {"name": "d2", "kind": "database", "service_time": 0.4},
        ],
        "calls": [
            {"caller": "full", "callee": "p1", "timeout": 40.0, "max_retries": 3},
            {
                "caller": "half",
                "callee": "p1",
                "timeout": 40.0,
                "max_retries": 3,
                "calls_per_request": 0.5,
            },
            {"caller": "other", "callee": "p2", "timeout": 40.0, "max_retries": 3},
            {"caller": "p1", "callee": "d1"},
            {"caller": "p2", "callee": "d2"},
        ],
    }
    return GraphSpec.model_validate(base | extra)


def test_incident_graph_replays_exactly_the_single_tier_fluid_model() -> None:
    """Products with one client setting on one tier are the incident's single tier."""
    scenario = default_scenario()
    replay = replay_graph(default_graph(), scenario, horizon=HORIZON)
    (tier,) = replay.tiers
    reference = simulate_fluid(scenario, horizon=HORIZON)
    np.testing.assert_array_equal(tier.trajectory.goodput, reference.goodput)
    np.testing.assert_array_equal(tier.trajectory.queue, reference.queue)
    verdict, recovery = judge(reference, find_equilibria(scenario, horizon=HORIZON))
    assert (tier.verdict, tier.recovery_time) == (verdict, recovery)


def test_products_goodput_adds_up_to_the_tier_goodput() -> None:
    """Every incident product sends all its requests through the proxy."""
    replay = replay_graph(default_graph(), default_scenario(), horizon=HORIZON)
    (tier,) = replay.tiers
    np.testing.assert_allclose(
        replay.goodput.sum(axis=0), tier.trajectory.goodput, rtol=1e-12, atol=1e-9
    )
    assert {p.outcome for p in replay.products} == {tier.verdict}


def test_every_incident_product_fails_when_the_lock_starts() -> None:
    """The lock starts at 60 s; each product fails within one step of it."""
    replay = replay_graph(default_graph(), default_scenario(), horizon=HORIZON)
    step = replay.tiers[0].scenario.time_step
    for product in replay.products:
        assert product.failed_at is not None
        assert 60.0 <= product.failed_at <= 60.0 + step
        assert product.lowest_share < 0.5


def test_half_exposed_product_loses_half_of_what_the_tier_loses() -> None:
    """A product touching the pool with q = 1/2 keeps 1 - q (1 - r(t)) of its demand."""
    replay = replay_graph(products_on_pools(), default_scenario(), horizon=HORIZON)
    tier = next(t for t in replay.tiers if t.pool == "p1")
    index = [p.service for p in replay.products].index("half")
    expected = 20.0 * (1.0 - 0.5 * (1.0 - tier.goodput_ratio))
    np.testing.assert_allclose(replay.goodput[index], expected, rtol=1e-12)
    assert replay.product("half").tiers == (("p1", 0.5),)


def test_lock_on_one_database_spares_the_other_tier() -> None:
    """The invoice lock is on d1: p2's product never fails, static touches nothing."""
    replay = replay_graph(products_on_pools(), default_scenario(), horizon=HORIZON)
    other, static = replay.product("other"), replay.product("static")
    assert other.failed_at is None
    assert other.outcome == "stable"
    assert static.outcome == "unaffected"
    assert static.tiers == ()
    assert replay.product("full").failed_at is not None
    p2 = next(t for t in replay.tiers if t.pool == "p2")
    assert not [e for e in p2.scenario.events if e.kind == "lock"]


def test_tier_scenario_takes_the_pool_and_its_callers_settings() -> None:
    """Demand, deadline call, pool and database make the tier's scenario."""
    replay = replay_graph(products_on_pools(), default_scenario(), horizon=HORIZON)
    tier = next(t for t in replay.tiers if t.pool == "p1").scenario
    # By hand: 40 + 20 * 0.5 = 50 requests per second reach p1.
    assert tier.clients.request_rate == 50.0
    assert (tier.clients.timeout, tier.clients.max_retries) == (40.0, 3)
    assert (tier.proxy.pool_size, tier.proxy.queue_timeout) == (50, 120.0)
    assert [(t.name, t.share) for t in tier.database.tables] == [
        ("invoice", 0.6),
        ("rest", 0.4),
    ]


def test_unknown_product_is_rejected() -> None:
    """GraphReplay.product names an entry service."""
    replay = replay_graph(default_graph(), default_scenario(), horizon=120.0)
    with pytest.raises(InvalidParameterError, match="`service` must name an entry"):
        replay.product("nowhere")


def test_graph_without_a_pool_cannot_be_replayed() -> None:
    """Only pools with a database behind them are fluid tiers."""
    graph = GraphSpec.model_validate({"services": [{"name": "a", "entry_rate": 1.0}]})
    with pytest.raises(InvalidParameterError, match="must have a pool that calls"):
        replay_graph(graph, default_scenario())


def test_table_shares_above_one_cannot_be_replayed() -> None:
    """The fluid model has one table per query."""
    data = products_on_pools().model_dump()
    data["resources"][1]["tables"] = [
        {"name": "invoice", "share": 0.8},
        {"name": "rest", "share": 0.4},
    ]
    with pytest.raises(InvalidParameterError, match="shares adding up to at most 1"):
        replay_graph(GraphSpec.model_validate(data), default_scenario())


def test_non_positive_horizon_is_rejected() -> None:
    """The replay needs a positive horizon."""
    with pytest.raises(InvalidParameterError, match="`horizon` must be finite"):
        replay_graph(default_graph(), default_scenario(), horizon=0.0)
