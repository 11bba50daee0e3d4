"""Replay a trigger through a service graph: which products fail, when, how long.

The static analysis of `retrystorm.graph` says which nodes can fall into a
self-sustaining bad state and who depends on them; this module replays a
trigger (a table lock, a capacity drop) with the fluid model of
`retrystorm.fluid` and follows each entry service (each product) through it.

How the graph is coupled to the fluid model
-------------------------------------------
Every connection pool with a database behind it is one *shared tier*, and it
is replayed as the single tier the fluid model describes:

- its demand is the sum of the graph's attempt streams into the pool in the
  good state (the nominal load with one attempt per call), so every product
  whose requests reach it adds its share;
- its clients' timeout, retries, backoff and retry budget are those of the
  call that sets the pool's tightest deadline (the callers that give up
  first; `NodeReport.deadline_call`);
- its web tier is the service that calls the pool (its pods, and its
  per-pod cap when it has one); crash, restart and breaker settings come
  from the template scenario, as do the events and the horizon;
- its proxy is the pool and its database the pool's callee, with the
  database's tables and their shares; a lock event applies to the tier
  whose database has that table.

Each entry service then fails in proportion to what it sends through each
tier: with ``q_e(P)`` the share of its requests touching pool ``P`` (from
`retrystorm.graph.blast_radius`) and ``r_P(t)`` the tier's goodput over its
demand (above 1 while a backlog of retries drains), its goodput is
``lambda_e prod_P (1 - q_e(P) (1 - r_P(t)))``; for products that all send
every request through one tier these add up to the tier's goodput.

Approximations, stated once: one shared tier is one fluid class, so products
with different client settings are replayed with the settings of the
tightest one; tiers are replayed independently (a failure in one tier does
not change the load of another, and requests touching several tiers fail
independently in each); services between the entries and the pool other than
the pool's direct caller only pass load on; the success share of a tier is
read at the time of completion (a request's earlier attempts are not traced
through time). For one shared tier fed by products with one client setting,
as in the incident, the replay is the fluid model itself.

References
----------
[LiuWhitt2012], [Whitt2006] (the fluid model), [Bronson2021] (the sustaining
loop), [Sendcloud2025] (the incident).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from retrystorm._toml import read_toml
from retrystorm.equilibria import find_equilibria
from retrystorm.errors import InvalidParameterError, ScenarioError
from retrystorm.fluid import GOODPUT_TOLERANCE, FluidTrajectory, simulate_fluid
from retrystorm.graph import (
    CallSpec,
    GraphSpec,
    ResourceSpec,
    ServiceGraph,
    analyze_graph,
    blast_radius,
    graph_from_scenario,
)
from retrystorm.review import judge
from retrystorm.scenario import Scenario, parse_scenario

__all__ = [
    "GraphReplay",
    "ProductOutcome",
    "TierReplay",
    "load_replay_inputs",
    "replay_graph",
]

Outcome = Literal["unaffected", "stable", "recovers", "metastable", "overloaded"]
_SEVERITY: tuple[Outcome, ...] = (
    "unaffected",
    "stable",
    "recovers",
    "metastable",
    "overloaded",
)
# A step must be at most a tenth of the shortest timeout (the fluid model's rule).
_STEPS_PER_TIMEOUT = 10.0


@dataclass(frozen=True)
class TierReplay:
    """The fluid replay of one shared tier (a pool and its database).

    Attributes
    ----------
    pool
        The pool's node name.
    database
        The database behind it.
    scenario
        The single-tier scenario replayed.
    trajectory
        The replay.
    verdict
        ``stable``, ``recovers``, ``metastable`` or ``overloaded``, as the
        review command judges a single tier.
    recovery_time
        Seconds after the trigger ended until the tier was back in the good
        state (0 for ``stable``), or None.
    """

    pool: str
    database: str
    scenario: Scenario
    trajectory: FluidTrajectory
    verdict: Literal["stable", "recovers", "metastable", "overloaded"]
    recovery_time: float | None

    @property
    def goodput_ratio(self) -> NDArray[np.float64]:
        """Goodput over demand at each step (above 1 while a backlog drains)."""
        run = self.trajectory
        with np.errstate(divide="ignore", invalid="ignore"):
            # No demand in a step: nothing fails, the ratio is 1.
            ratio = np.where(run.fresh_rate > 0.0, run.goodput / run.fresh_rate, 1.0)
        return np.asarray(ratio)


@dataclass(frozen=True)
class ProductOutcome:
    """What one entry service (a product) lived through.

    Attributes
    ----------
    service
        The entry service.
    entry_rate
        Its fresh requests per second.
    tiers
        The shared tiers its requests touch, with the share touching each.
    outcome
        ``unaffected`` (it touches no replayed tier), else the worst verdict
        of the tiers it touches.
    failed_at
        First time (s) its goodput fell below its demand (by more than the
        fluid model's good-state tolerance), or None.
    lowest_share
        The smallest ratio of its goodput to its demand at any step.
    recovered_at
        Time (s) from which every tier it touches stayed in the good state
        (the latest of their recoveries), or None if one never recovers
        before the first intervention or the horizon.
    """

    service: str
    entry_rate: float
    tiers: tuple[tuple[str, float], ...]
    outcome: Outcome
    failed_at: float | None
    lowest_share: float
    recovered_at: float | None


@dataclass(frozen=True)
class GraphReplay:
    """A trigger replayed through a service graph.

    Attributes
    ----------
    time
        End of each step (s), shared by every tier.
    tiers
        The replay of each shared tier.
    products
        The outcome of each entry service, most requests per second first.
    goodput
        Requests per second that succeed, one row per product (in the order
        of ``products``), one column per step.
    """

    time: NDArray[np.float64]
    tiers: tuple[TierReplay, ...]
    products: tuple[ProductOutcome, ...]
    goodput: NDArray[np.float64]

    def product(self, service: str) -> ProductOutcome:
        """Return the outcome of the entry service ``service``."""
        for outcome in self.products:
            if outcome.service == service:
                return outcome
        raise InvalidParameterError("service", "must name an entry service", service)

    def to_dict(self) -> dict[str, Any]:
        """Return the replay's findings as plain data (no time series)."""
        return {
            "tiers": [
                {
                    "pool": t.pool,
                    "database": t.database,
                    "verdict": t.verdict,
                    "recovery_time": t.recovery_time,
                    "peak_queue": t.trajectory.peak_queue,
                    "peak_time": t.trajectory.peak_time,
                }
                for t in self.tiers
            ],
            "products": [
                {
                    "service": p.service,
                    "entry_rate": p.entry_rate,
                    "tiers": [list(pair) for pair in p.tiers],
                    "outcome": p.outcome,
                    "failed_at": p.failed_at,
                    "lowest_share": p.lowest_share,
                    "recovered_at": p.recovered_at,
                }
                for p in self.products
            ],
        }


def replay_graph(
    graph: ServiceGraph | GraphSpec,
    scenario: Scenario,
    *,
    horizon: float | None = None,
) -> GraphReplay:
    """Replay a scenario's trigger through a service graph, tier by tier.

    Parameters
    ----------
    graph
        The service graph (its pools, databases and entry services).
    scenario
        The template: its events (the trigger and any interventions), its
        horizon and the settings the graph does not carry (pod crashes and
        restarts, circuit breaker, time step).
    horizon
        End of the replay (s); default the scenario's.

    Returns
    -------
    GraphReplay
        Each shared tier's replay and each product's outcome.

    Raises
    ------
    InvalidParameterError
        If the graph has no pool with a database behind it, or a database's
        table shares add up to more than 1 (the fluid model has one table
        per query), or ``horizon`` is not positive.

    Notes
    -----
    See the module docstring for how the graph is coupled to the fluid
    model and what that approximates.

    Examples
    --------
    >>> from retrystorm.graph import default_graph
    >>> from retrystorm.scenario import default_scenario
    >>> replay = replay_graph(default_graph(), default_scenario(), horizon=300.0)
    >>> [(t.pool, t.database) for t in replay.tiers]
    [('proxy', 'database')]
    >>> [p.service for p in replay.products][:3]
    ['api', 'panel', 'checkout']
    >>> api = replay.product("api")
    >>> api.tiers, 60.0 <= api.failed_at < 61.0
    ((('proxy', 1.0),), True)
    """
    spec = graph.spec if isinstance(graph, ServiceGraph) else graph
    if not isinstance(spec, GraphSpec):
        raise InvalidParameterError(
            "graph", "must be a ServiceGraph or a GraphSpec", type(graph).__name__
        )
    if horizon is not None and not (math.isfinite(horizon) and horizon > 0.0):
        raise InvalidParameterError("horizon", "must be finite and positive", horizon)
    analysis = analyze_graph(spec, faults=[])
    pools = _shared_tiers(spec)
    if not pools:
        raise InvalidParameterError(
            "graph", "must have a pool that calls a database to replay", "none"
        )
    tiers = [_tier_scenario(spec, analysis, scenario, pool, db) for pool, db in pools]
    step = min(t.time_step for t in tiers)
    end = horizon if horizon is not None else scenario.horizon
    replays = tuple(
        _replay_tier(t, pool, db, step, end)
        for t, (pool, db) in zip(tiers, pools, strict=True)
    )
    return _products(spec, replays)


def load_replay_inputs(path: str | os.PathLike[str]) -> tuple[GraphSpec, Scenario]:
    """Read a scenario file as a graph and the scenario to replay through it.

    Parameters
    ----------
    path
        A scenario file (TOML); its ``[graph]`` section, if any, is the graph,
        else its single tier is (`retrystorm.graph.graph_from_scenario`).

    Returns
    -------
    graph : GraphSpec
        The graph.
    scenario : Scenario
        The scenario (its events are the trigger).

    Raises
    ------
    ScenarioError
        If the file cannot be read, has no ``[scenario]`` table, or breaks a
        rule.
    """
    source = os.fspath(path)
    document = read_toml(path)
    if "scenario" not in document:
        raise ScenarioError(source, [("scenario", "a replay needs a scenario table")])
    scenario = parse_scenario(document, source=source)
    return graph_from_scenario(scenario), scenario


def _shared_tiers(spec: GraphSpec) -> list[tuple[str, str]]:
    """Return each (pool, database) where the pool calls exactly one database."""
    kinds = spec.node_kinds
    tiers = []
    for resource in spec.resources:
        if resource.kind != "pool":
            continue
        databases = [
            c.callee
            for c in spec.calls
            if c.caller == resource.name and kinds[c.callee] == "database"
        ]
        if len(databases) == 1:
            tiers.append((resource.name, databases[0]))
    return tiers


def _tier_scenario(
    spec: GraphSpec, analysis: Any, template: Scenario, pool: str, database: str
) -> Scenario:
    """Return the single-tier scenario of one pool and its database."""
    resources = {r.name: r for r in spec.resources}
    report = analysis.node(pool)
    data = template.model_dump()
    for key in ("assumptions", "variants", "graph"):
        data.pop(key, None)
    data["clients"] = _clients(spec, template, report)
    data["clients"]["request_rate"] = report.nominal_load
    data["clients"]["rate_profile"] = None
    data["web"] = _web(spec, template, pool)
    data["proxy"] = _proxy(resources[pool])
    data["database"] = _database(resources[pool], resources[database])
    # A database without tables has the fluid model's one table "all".
    tables = {t["name"] for t in data["database"].get("tables", [{"name": "all"}])}
    data["events"] = [
        _renamed(event, database)
        for event in data["events"]
        if event["kind"] != "lock" or _table_of(event["table"], database) in tables
    ]
    timeouts = [data["clients"]["timeout"], data["proxy"]["queue_timeout"]]
    data["scenario"]["time_step"] = min(
        data["scenario"]["time_step"], min(timeouts) / _STEPS_PER_TIMEOUT
    )
    return parse_scenario(data, source=f"<tier {pool} of the graph>")


def _clients(spec: GraphSpec, template: Scenario, report: Any) -> dict[str, Any]:
    """Return the clients section: the settings of the pool's deadline call."""
    clients = template.clients.model_dump()
    if report.deadline_call is None:
        return clients
    caller, callee = report.deadline_call
    call: CallSpec = next(
        c for c in spec.calls if (c.caller, c.callee) == (caller, callee)
    )
    clients |= {
        "timeout": call.timeout,
        "max_retries": call.max_retries,
        "retry_budget": call.retry_budget,
        "backoff": call.backoff.model_dump(),
    }
    return clients


def _web(spec: GraphSpec, template: Scenario, pool: str) -> dict[str, Any]:
    """Return the web section: the pool's one direct caller, if it is a service."""
    web = template.web.model_dump()
    services = {s.name: s for s in spec.services}
    callers = [c.caller for c in spec.calls if c.callee == pool]
    if len(callers) != 1 or callers[0] not in services:
        return web
    caller = services[callers[0]]
    bounded = caller.concurrency is not None
    return web | {
        "mode": "bounded" if bounded else "async",
        "pods": caller.pods,
        "concurrency_per_pod": caller.concurrency,
    }


def _proxy(pool: ResourceSpec) -> dict[str, Any]:
    """Return the proxy section of a pool."""
    return {
        "pool_size": pool.pool_size,
        "queue_timeout": pool.queue_timeout,
        "queue_limit": pool.queue_limit,
        "cancel_abandoned": pool.cancel_abandoned,
    }


def _database(pool: ResourceSpec, database: ResourceSpec) -> dict[str, Any]:
    """Return the database section, with a remainder table if shares fall short."""
    tables = [{"name": t.name, "share": t.share} for t in database.tables]
    total = sum(t.share for t in database.tables)
    if total > 1.0 + 1e-9:
        raise InvalidParameterError(
            f"{database.name}.tables",
            "must have shares adding up to at most 1 to be replayed",
            total,
        )
    if tables and total < 1.0 - 1e-9:
        tables.append({"name": "(rest)", "share": 1.0 - total})
    section: dict[str, Any] = {
        # A connection is held for the query and any time the pool adds.
        "service_time": database.service_time + pool.service_time,
        "contention": database.contention,
    }
    if tables:
        section["tables"] = tables
    return section


def _table_of(table: str, database: str) -> str:
    """Return a lock event's table name without its database prefix."""
    return table.removeprefix(f"{database}.")


def _renamed(event: dict[str, Any], database: str) -> dict[str, Any]:
    """Return an event with a lock's table named as the tier's database names it."""
    if event["kind"] != "lock":
        return event
    return event | {"table": _table_of(event["table"], database)}


def _replay_tier(
    scenario: Scenario, pool: str, database: str, step: float, horizon: float
) -> TierReplay:
    """Replay one tier on the common time grid and judge it."""
    trajectory = simulate_fluid(scenario, horizon=horizon, time_step=step)
    equilibria = find_equilibria(scenario, horizon=min(horizon, scenario.horizon))
    verdict, recovery = judge(trajectory, equilibria)
    return TierReplay(pool, database, scenario, trajectory, verdict, recovery)


def _products(spec: GraphSpec, tiers: tuple[TierReplay, ...]) -> GraphReplay:
    """Follow every entry service through the tiers its requests touch."""
    time = tiers[0].trajectory.time
    exposure = {
        t.pool: {
            loss.service: loss.direct_share
            for loss in blast_radius(spec, t.pool, duration=0.0).losses
        }
        for t in tiers
    }
    outcomes, rows = [], []
    for service in sorted(spec.services, key=lambda s: (-s.entry_rate, s.name)):
        if service.entry_rate <= 0.0:
            continue
        touched = [(t, exposure[t.pool].get(service.name, 0.0)) for t in tiers]
        touched = [(t, q) for t, q in touched if q > 0.0]
        share = np.ones_like(time)
        for tier, q in touched:
            share *= 1.0 - q * (1.0 - tier.goodput_ratio)
        rows.append(service.entry_rate * share)
        outcomes.append(
            _outcome(service.name, service.entry_rate, touched, share, time)
        )
    return GraphReplay(
        time=time,
        tiers=tiers,
        products=tuple(outcomes),
        goodput=np.array(rows) if rows else np.zeros((0, len(time))),
    )


def _outcome(
    name: str,
    rate: float,
    touched: list[tuple[TierReplay, float]],
    share: NDArray[np.float64],
    time: NDArray[np.float64],
) -> ProductOutcome:
    """Summarise one product's replay."""
    if not touched:
        return ProductOutcome(name, rate, (), "unaffected", None, 1.0, None)
    failing = np.flatnonzero(share < 1.0 - GOODPUT_TOLERANCE)
    outcome = max((t.verdict for t, _ in touched), key=_SEVERITY.index)
    moments = [t.trajectory.recovered_at() for t, _ in touched]
    recovered = (
        None
        if any(m is None for m in moments)
        else max(m for m in moments if m is not None)
    )
    return ProductOutcome(
        service=name,
        entry_rate=rate,
        tiers=tuple((t.pool, q) for t, q in touched),
        outcome=outcome,
        failed_at=float(time[failing[0]]) if len(failing) else None,
        lowest_share=float(share.min()) if len(share) else 1.0,
        recovered_at=recovered,
    )
