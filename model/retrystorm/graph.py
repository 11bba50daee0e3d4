"""Service dependency graphs: load, retry amplification, timeouts and blast radius.

A single tier (clients, web pods, a connection proxy, a database) is the
smallest case of a graph of services and shared resources joined by calls.
This module describes such graphs (`GraphSpec`, validated with pydantic, the
``[graph]`` section of a scenario file), builds them on `networkx.DiGraph`
(`ServiceGraph`), and analyses them statically: the load reaching every node
in the good state and when every attempt fails, the retry amplification along
paths, each node's utilisation and classification, timeout-ordering
violations, the blast radius of a fault, cycles, and stacked retrying layers.

Nodes are *services* (entry traffic, pods, a per-pod concurrency cap, own
work), *pools* (a connection proxy: pool size, queueing timeout, queue limit),
*databases* (optional concurrency limit, contention) and the database's
*tables* (named ``database.table``; the share of the database's requests that
touch each is the call from the database to the table). A call carries the
calls per request, the caller's timeout per attempt, its retries and backoff,
an optional retry budget and whether giving up cancels the callee's work.
Time is in seconds and rates are per second throughout.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg
from numpy.typing import NDArray
from pydantic import ValidationError

from retrystorm._graph_spec import (
    BackoffSpec,
    CallSpec,
    GraphSpec,
    NodeKind,
    ResourceSpec,
    ServiceSpec,
    TableSpec,
)
from retrystorm._toml import read_toml
from retrystorm._validation import check_nonnegative, check_probability
from retrystorm.erlang import erlang_b
from retrystorm.errors import InvalidParameterError, ScenarioError, UnstableSystemError
from retrystorm.mmc import MMc
from retrystorm.mmcd import MMcD
from retrystorm.mmck import MMcK
from retrystorm.retries import (
    attempts_per_request,
    layered_amplification,
    retry_budget_amplification,
)

if TYPE_CHECKING:
    from os import PathLike

__all__ = [
    "BackoffSpec",
    "BlastRadius",
    "CallSpec",
    "CycleReport",
    "GraphAnalysis",
    "GraphSpec",
    "NodeReport",
    "PathAmplification",
    "ResourceSpec",
    "Saturation",
    "ServiceGraph",
    "ServiceLoss",
    "ServiceSpec",
    "StackedRetries",
    "TableSpec",
    "TimeoutViolation",
    "analyze_graph",
    "blast_radius",
    "default_graph",
    "find_cycles",
    "graph_from_file",
    "graph_from_scenario",
    "graph_to_dot",
    "load_graph",
    "node_loads",
    "parse_graph",
    "plot_graph",
    "single_tier_graph",
    "stacked_retries",
    "timeout_violations",
]

Classification = Literal["stable", "vulnerable", "overloaded"]

# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _dotted(loc: Iterable[str | int]) -> str:
    """Return a pydantic location as a dotted path: ``graph.calls.2.timeout``.

    Items of a list are named by position, as everywhere in a scenario (the
    same paths name fields in variants and `Scenario.with_changes`).
    """
    return ".".join(str(part) for part in loc)


def parse_graph(data: Mapping[str, Any], source: str = "<graph>") -> GraphSpec:
    """Validate the contents of a ``[graph]`` table and return the `GraphSpec`.

    Parameters
    ----------
    data
        The graph table (``services``, ``resources``, ``calls``), as read
        from TOML.
    source
        Where the data came from, for the error message.

    Returns
    -------
    GraphSpec
        The validated graph.

    Raises
    ------
    ScenarioError
        Listing every broken rule with its dotted path (``graph.calls.0.callee``).

    Examples
    --------
    >>> parse_graph({"services": [{"name": "web", "entry_rate": -1.0}]})
    Traceback (most recent call last):
    ...
    retrystorm.errors.ScenarioError: invalid scenario <graph>: graph.services.0...
    """
    try:
        return GraphSpec.model_validate(dict(data))
    except ValidationError as exc:
        problems = [
            (_dotted(("graph", *error["loc"])), _message(error))
            for error in exc.errors()
        ]
        raise ScenarioError(source, problems) from None


def _message(error: Mapping[str, Any]) -> str:
    """Return a pydantic error as ``rule (got value)``."""
    message = str(error["msg"])
    if error.get("input") is not None and error["type"] not in {
        "missing",
        "model_type",
    }:
        message += f" (got {error['input']!r})"
    return message


def load_graph(path: str | PathLike[str]) -> GraphSpec:
    """Read the ``[graph]`` section of a TOML file (a scenario or a graph file).

    Parameters
    ----------
    path
        The TOML file.

    Returns
    -------
    GraphSpec
        The validated graph.

    Raises
    ------
    ScenarioError
        If the file cannot be read, is not TOML, has no ``[graph]`` table or
        breaks a rule of the schema.
    """
    source = str(path)
    document = read_toml(path)
    graph = document.get("graph")
    if not isinstance(graph, dict):
        raise ScenarioError(source, [("graph", "the file has no graph table")])
    return parse_graph(graph, source)


def graph_from_file(path: str | PathLike[str]) -> GraphSpec:
    """Read a graph from a TOML file: its ``[graph]`` table, or its single tier.

    Parameters
    ----------
    path
        A graph file, or a scenario file (with or without a graph section).

    Returns
    -------
    GraphSpec
        The file's ``[graph]`` table, or the smallest graph of the scenario
        it describes (`graph_from_scenario`).

    Raises
    ------
    ScenarioError
        If the file cannot be read or breaks a rule (a scenario file is
        validated whole).
    """
    # The scenario module is only needed for scenario files: import it late.
    from retrystorm.scenario import load_scenario  # noqa: PLC0415

    document = read_toml(path)
    if "graph" in document and "scenario" not in document:
        return load_graph(path)
    return graph_from_scenario(load_scenario(path))


def default_graph() -> GraphSpec:
    """Return the graph of the embedded incident of 2025-09-16.

    Seven products (API, panel, checkout, tracking page, returns, payments,
    analytics) reach one asynchronous application tier, one connection proxy
    and one database: the ``[graph]`` table of the embedded incident scenario,
    where every assumed number is documented.

    Returns
    -------
    GraphSpec
        The incident's graph.

    References
    ----------
    [Sendcloud2025]

    Examples
    --------
    >>> spec = default_graph()
    >>> sum(s.entry_rate for s in spec.services)
    160.0
    """
    # The scenario module imports the analysis lazily too: import it late.
    from retrystorm.scenario import default_scenario  # noqa: PLC0415

    return graph_from_scenario(default_scenario())


def graph_from_scenario(scenario: Any) -> GraphSpec:
    """Return a scenario's graph: its ``graph`` section, or its single tier as one.

    Parameters
    ----------
    scenario
        A `retrystorm.scenario.Scenario` (anything with the same fields).

    Returns
    -------
    GraphSpec
        The scenario's ``graph`` if it has one, else `single_tier_graph`.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> scenario = default_scenario()
    >>> len(graph_from_scenario(scenario).services)
    8
    >>> len(graph_from_scenario(scenario.model_copy(update={"graph": None})).services)
    2
    """
    explicit = getattr(scenario, "graph", None)
    if explicit is not None:
        return GraphSpec.model_validate(explicit)
    return single_tier_graph(scenario)


def single_tier_graph(scenario: Any) -> GraphSpec:
    """Return the single tier of a scenario as the smallest graph.

    A single-tier scenario becomes the smallest graph: a ``clients`` service
    (the fresh request rate, no work of its own) calls ``web`` with the
    clients' timeout, retries, backoff and retry budget; ``web`` (its pods,
    and the per-pod cap when its mode is ``bounded``) calls the ``proxy`` pool
    and waits for its answer however long; the proxy holds a connection while
    the ``database`` serves the query; the database's tables are its callees
    with their shares.

    Parameters
    ----------
    scenario
        A `retrystorm.scenario.Scenario` (anything with the same fields).

    Returns
    -------
    GraphSpec
        The graph of the single tier (the scenario's own ``graph`` is left
        aside).

    Notes
    -----
    What the static graph leaves out of a single tier: events, pod crashes
    and their initialisation queries, and circuit breakers (the transient
    models handle those). A time-varying rate profile is represented by its
    largest rate, the demanding case.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> [s.name for s in single_tier_graph(default_scenario()).services]
    ['clients', 'web']
    """
    clients, web, proxy, database = (
        scenario.clients,
        scenario.web,
        scenario.proxy,
        scenario.database,
    )
    bounded = getattr(web, "mode", "async") == "bounded"
    tables = [TableSpec(name=t.name, share=t.share) for t in database.tables]
    return GraphSpec(
        services=(
            ServiceSpec(name="clients", entry_rate=_peak_rate(clients)),
            ServiceSpec(
                name="web",
                pods=web.pods,
                concurrency=web.concurrency_per_pod if bounded else None,
            ),
        ),
        resources=(
            ResourceSpec(
                name="proxy",
                kind="pool",
                pool_size=proxy.pool_size,
                queue_timeout=proxy.queue_timeout,
                queue_limit=proxy.queue_limit,
                cancel_abandoned=proxy.cancel_abandoned,
            ),
            ResourceSpec(
                name="database",
                kind="database",
                service_time=database.service_time,
                contention=database.contention,
                tables=tuple(tables),
            ),
        ),
        calls=(
            CallSpec(
                caller="clients",
                callee="web",
                timeout=clients.timeout,
                max_retries=clients.max_retries,
                backoff=_backoff_of(clients.backoff),
                retry_budget=clients.retry_budget,
            ),
            CallSpec(caller="web", callee="proxy"),
            CallSpec(caller="proxy", callee="database"),
            *(
                CallSpec(
                    caller="database",
                    callee=f"database.{t.name}",
                    calls_per_request=t.share,
                )
                for t in tables
            ),
        ),
        description="the single tier of the scenario as a graph",
    )


def _peak_rate(clients: Any) -> float:
    """Return the largest fresh request rate of a clients section, per s."""
    profile = getattr(clients, "rate_profile", None)
    if profile:
        return float(max(rate for _, rate in profile))
    return float(clients.request_rate)


def _backoff_of(backoff: Any) -> BackoffSpec:
    """Return a scenario's backoff section as a `BackoffSpec`."""
    if backoff is None:
        return BackoffSpec()
    return BackoffSpec(
        initial=backoff.initial,
        multiplier=backoff.multiplier,
        cap=backoff.cap,
        jitter=backoff.jitter,
    )


# ---------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Structure:
    """The graph as flat lists, in the order the sweeps need them."""

    names: list[str]
    kinds: list[NodeKind]
    entry: list[float]
    own_time: list[float]
    slots: list[float]
    queue_timeout: list[float]
    queue_limit: list[float]
    cancel_abandoned: list[bool]
    contention: list[float]
    src: list[int]
    dst: list[int]
    per_request: list[float]
    retries: list[int]
    timeout: list[float]
    budget: list[float]
    cancels: list[bool]
    backoff_total: list[float]
    out_edges: list[list[int]]
    in_edges: list[list[int]]
    components: list[list[int]]
    cyclic: list[bool]
    layered: dict[int, tuple[list[int], list[int]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def size(self) -> int:
        """Number of nodes."""
        return len(self.names)

    def layers(self, index: int) -> tuple[list[int], list[int]]:
        """Return the ``index``-th component in layers (see `_layers_of`)."""
        if index not in self.layered:
            self.layered[index] = _layers_of(self, self.components[index])
        return self.layered[index]


class ServiceGraph:
    """A validated service graph built on a read-only `networkx.DiGraph`.

    Parameters
    ----------
    spec
        The graph's description.

    Attributes
    ----------
    spec : GraphSpec
        The description it was built from.
    digraph : networkx.DiGraph
        Frozen graph: node attributes ``kind``, ``entry_rate``, ``service_time``,
        ``slots`` (most requests in flight, ``inf`` when unbounded),
        ``queue_timeout``, ``queue_limit``, ``cancel_abandoned``,
        ``contention``; edge attributes are the fields of `CallSpec`.

    Examples
    --------
    >>> spec = GraphSpec.model_validate({
    ...     "services": [{"name": "a", "entry_rate": 10.0}, {"name": "b"}],
    ...     "calls": [{"caller": "a", "callee": "b", "calls_per_request": 2.0}],
    ... })
    >>> graph = ServiceGraph(spec)
    >>> sorted(graph.digraph.edges)
    [('a', 'b')]
    >>> graph.digraph.nodes["b"]["kind"]
    'service'
    """

    def __init__(self, spec: GraphSpec) -> None:
        if not isinstance(spec, GraphSpec):
            raise InvalidParameterError(
                "spec", "must be a GraphSpec", type(spec).__name__
            )
        self.spec = spec
        self.digraph: nx.DiGraph[str] = nx.freeze(_build_digraph(spec))

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> ServiceGraph:
        """Build the graph of the ``[graph]`` section of a TOML file."""
        return cls(load_graph(path))

    def __repr__(self) -> str:
        nodes, calls = self.digraph.number_of_nodes(), self.digraph.number_of_edges()
        return f"ServiceGraph({nodes} nodes, {calls} calls)"

    @cached_property
    def _structure(self) -> _Structure:
        return _flatten(self.digraph)


def _build_digraph(spec: GraphSpec) -> nx.DiGraph[str]:
    """Return the DiGraph of a spec, tables as callees of their database."""
    graph: nx.DiGraph[str] = nx.DiGraph()
    for service in spec.services:
        slots = (
            math.inf
            if service.concurrency is None
            else service.pods * service.concurrency
        )
        graph.add_node(
            service.name,
            **_node_attributes(
                "service", service.entry_rate, service.service_time, slots
            ),
        )
    for resource in spec.resources:
        _add_resource(graph, resource)
    for call in spec.calls:
        graph.add_edge(call.caller, call.callee, **_call_attributes(call))
    return graph


def _node_attributes(
    kind: NodeKind, entry_rate: float, service_time: float, slots: float
) -> dict[str, Any]:
    """Return the attributes every node carries, with neutral queue settings."""
    return {
        "kind": kind,
        "entry_rate": entry_rate,
        "service_time": service_time,
        "slots": slots,
        "queue_timeout": 0.0,
        "queue_limit": 0.0,
        "cancel_abandoned": False,
        "contention": 0.0,
    }


def _add_resource(graph: nx.DiGraph[str], resource: ResourceSpec) -> None:
    """Add a pool or a database, and the database's tables with their calls."""
    if resource.kind == "pool":
        attributes = _node_attributes(
            "pool", 0.0, resource.service_time, float(resource.pool_size or 0)
        )
        attributes |= {
            "queue_timeout": resource.queue_timeout,
            "queue_limit": resource.queue_limit,
            "cancel_abandoned": resource.cancel_abandoned,
        }
    else:
        servers = math.inf if resource.servers is None else float(resource.servers)
        attributes = _node_attributes("database", 0.0, resource.service_time, servers)
        attributes["contention"] = resource.contention
    graph.add_node(resource.name, **attributes)
    for table in resource.tables:
        name = f"{resource.name}.{table.name}"
        graph.add_node(name, **_node_attributes("table", 0.0, 0.0, math.inf))
        call = CallSpec(
            caller=resource.name, callee=name, calls_per_request=table.share
        )
        graph.add_edge(resource.name, name, **_call_attributes(call))


def _call_attributes(call: CallSpec) -> dict[str, Any]:
    """Return a call's fields as edge attributes (the backoff stays a `BackoffSpec`)."""
    return {name: value for name, value in call if name not in {"caller", "callee"}}


def _flatten(graph: nx.DiGraph[str]) -> _Structure:
    """Return the flat lists of a graph and its strongly connected components."""
    names = list(graph.nodes)
    index = {name: i for i, name in enumerate(names)}
    nodes = [graph.nodes[name] for name in names]
    edges = list(graph.edges(data=True))
    out_edges: list[list[int]] = [[] for _ in names]
    in_edges: list[list[int]] = [[] for _ in names]
    for e, (u, v, _) in enumerate(edges):
        out_edges[index[u]].append(e)
        in_edges[index[v]].append(e)

    # Components in topological order: single nodes on a DAG, whole strongly
    # connected components (solved together) where there are cycles.
    if nx.is_directed_acyclic_graph(graph):
        components = [[index[name]] for name in nx.topological_sort(graph)]
    else:
        # Within a component, callees before callers as far as the cycles
        # allow (depth-first postorder), so a sweep settles in few passes.
        condensed = nx.condensation(graph)
        components = [
            [
                index[name]
                for name in nx.dfs_postorder_nodes(
                    graph.subgraph(condensed.nodes[c]["members"])
                )
            ]
            for c in nx.topological_sort(condensed)
        ]
    cyclic = [
        len(c) > 1 or graph.has_edge(names[c[0]], names[c[0]]) for c in components
    ]
    delays: dict[tuple[BackoffSpec, int], float] = {}
    for _, _, d in edges:
        key = (d["backoff"], d["max_retries"])
        if key not in delays:
            delays[key] = d["backoff"].longest_total_delay(d["max_retries"])
    return _Structure(
        names=names,
        kinds=[n["kind"] for n in nodes],
        entry=[n["entry_rate"] for n in nodes],
        own_time=[n["service_time"] for n in nodes],
        slots=[n["slots"] for n in nodes],
        queue_timeout=[n["queue_timeout"] for n in nodes],
        queue_limit=[n["queue_limit"] for n in nodes],
        cancel_abandoned=[n["cancel_abandoned"] for n in nodes],
        contention=[n["contention"] for n in nodes],
        src=[index[u] for u, _, _ in edges],
        dst=[index[v] for _, v, _ in edges],
        per_request=[d["calls_per_request"] for _, _, d in edges],
        retries=[d["max_retries"] for _, _, d in edges],
        timeout=[d["timeout"] for _, _, d in edges],
        budget=[d["retry_budget"] for _, _, d in edges],
        cancels=[d["cancels_on_timeout"] for _, _, d in edges],
        backoff_total=[delays[d["backoff"], d["max_retries"]] for _, _, d in edges],
        out_edges=out_edges,
        in_edges=in_edges,
        components=components,
        cyclic=cyclic,
    )


# A cycle of fewer nodes is swept one node at a time, in its depth-first order;
# a larger one is cut into layers first.
_LAYERED_NODES = 16


def _layers_of(st: _Structure, component: list[int]) -> tuple[list[int], list[int]]:
    """Return a cyclic component's nodes in layers, callees first, and the bounds.

    Layer ``i`` is ``nodes[bounds[i]:bounds[i + 1]]``. The lightest calls
    (fewest per request) are set aside until the others form no cycle; a
    node's layer is then its level under the others (`_acyclic_split`), so no
    node calls another of its own layer and a sweep layer by layer carries
    a change along every call but those set aside in one pass. Small
    components keep their depth-first order, one node per layer.
    """
    size = len(component)
    if size < _LAYERED_NODES:
        return component, list(range(size + 1))
    position = {v: i for i, v in enumerate(component)}
    calls = [
        (position[v], position[st.dst[e]], st.per_request[e])
        for v in component
        for e in st.out_edges[v]
        if st.dst[e] in position and st.dst[e] != v
    ]
    _, level = _acyclic_split(
        size,
        np.array([c[0] for c in calls], dtype=np.intp),
        np.array([c[1] for c in calls], dtype=np.intp),
        np.array([c[2] for c in calls]),
    )
    order = np.lexsort((np.arange(size), level))
    bounds = np.searchsorted(level[order], np.arange(level.max() + 2))
    return [component[i] for i in order.tolist()], bounds.tolist()


def _acyclic_split(
    size: int,
    caller: NDArray[np.intp],
    callee: NDArray[np.intp],
    weight: NDArray[np.float64],
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Return the calls kept acyclic and each node's level under them.

    The lightest calls are set aside, the shortest run of them after which
    the others form no cycle (a binary search on its length); a call of a
    node to itself is always kept. A node's level is the longest chain of
    kept calls from it down to a node without any, so every kept call goes
    to a lower level.
    """
    looped = caller == callee
    lightest = np.flatnonzero(~looped)[np.argsort(weight[~looped], kind="stable")]
    low, high = 0, len(lightest)
    while low < high:
        middle = (low + high) // 2
        kept = lightest[middle:]
        if _acyclic(size, caller[kept], callee[kept]):
            high = middle
        else:
            low = middle + 1
    kept = lightest[low:]
    level = _longest_chains(size, caller[kept], callee[kept])
    return np.sort(np.r_[kept, np.flatnonzero(looped)]), level


def _acyclic(size: int, caller: NDArray[np.intp], callee: NDArray[np.intp]) -> bool:
    """Return whether calls between ``size`` nodes (none to itself) form no cycle."""
    matrix = scipy.sparse.csr_matrix(
        (np.ones(len(caller)), (caller, callee)), shape=(size, size)
    )
    count, _ = scipy.sparse.csgraph.connected_components(
        matrix, directed=True, connection="strong"
    )
    return bool(count == size)


def _longest_chains(
    size: int, caller: NDArray[np.intp], callee: NDArray[np.intp]
) -> NDArray[np.intp]:
    """Return the most calls on a chain from each node down (calls acyclic)."""
    callers: list[list[int]] = [[] for _ in range(size)]
    for u, w in zip(caller.tolist(), callee.tolist(), strict=True):
        callers[w].append(u)
    waiting = np.bincount(caller, minlength=size).tolist()
    level = [0] * size
    ready = [v for v in range(size) if waiting[v] == 0]
    for w in ready:
        for u in callers[w]:
            level[u] = max(level[u], level[w] + 1)
            waiting[u] -= 1
            if waiting[u] == 0:
                ready.append(u)
    return np.asarray(level, dtype=np.intp)


def _as_graph(graph: ServiceGraph | GraphSpec) -> ServiceGraph:
    """Accept a spec where a graph is expected."""
    if isinstance(graph, GraphSpec):
        return ServiceGraph(graph)
    if not isinstance(graph, ServiceGraph):
        raise InvalidParameterError(
            "graph", "must be a ServiceGraph or a GraphSpec", type(graph).__name__
        )
    return graph


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeReport:
    """The load on one node and how it copes.

    Attributes
    ----------
    name, kind
        The node.
    entry_rate
        Fresh requests per second arriving from outside the graph.
    nominal_load
        Requests (attempts) per second reaching the node at the analysis'
        failure probability (0: the good state).
    worst_load
        Requests per second reaching it when every attempt of every call
        fails and is retried to the limit (``inf`` in a retrying cycle that
        does not damp).
    capacity
        Requests per second it can complete: slots over holding time
        (``inf`` when nothing limits it).
    holding_time
        Mean time a request holds one of the node's slots in the good state,
        its own work plus its calls, in s.
    longest_wait
        Longest time a request may wait here for a slot, in s (a pool's
        queueing timeout, or its queue drained at capacity if that is sooner).
    caller_deadline
        Tightest timeout of an upstream call whose expiry does not stop the
        work here, in s (``inf``: no caller gives up on it).
    deadline_call
        That call as ``(caller, callee)``, or None.
    amplification
        Largest product of attempts per call along a path from an entry to
        the node, every attempt failing (``inf`` through a retrying cycle).
    nominal_wait
        Mean wait for a slot at the nominal load in steady state, in s
        (``inf`` when the queue has no steady state).
    nominal_failure
        Share of requests that fail here at the nominal load in steady state:
        queueing timeouts and rejections of a pool, rejections of a bounded
        service or database.
    classification
        ``stable``, ``vulnerable`` or ``overloaded``.
    reason
        One sentence on why.
    """

    name: str
    kind: NodeKind
    entry_rate: float
    nominal_load: float
    worst_load: float
    capacity: float
    holding_time: float
    longest_wait: float
    caller_deadline: float
    deadline_call: tuple[str, str] | None
    amplification: float
    nominal_wait: float
    nominal_failure: float
    classification: Classification
    reason: str

    @property
    def nominal_utilization(self) -> float:
        """Nominal load over capacity (0 when the capacity is unbounded)."""
        return _ratio(self.nominal_load, self.capacity)

    @property
    def worst_utilization(self) -> float:
        """Worst-case load over capacity (0 when the capacity is unbounded)."""
        return _ratio(self.worst_load, self.capacity)


def _ratio(load: float, capacity: float) -> float:
    """Return load / capacity with 0 for unbounded capacity and inf for none."""
    if math.isinf(capacity):
        return 0.0
    if capacity == 0.0:
        return math.inf if load > 0.0 else 0.0
    return load / capacity


@dataclass(frozen=True)
class PathAmplification:
    """Retry amplification along one path from an entry service.

    Attributes
    ----------
    path
        Node names from the entry service to the last node.
    retries
        The retries ``R`` of each call along the path.
    calls_per_request
        Product of the calls per request along the path.
    amplification
        Product of the attempts per call when every attempt fails
        (``(R + 1)^L`` for ``L`` calls that each retry ``R`` times, less under
        retry budgets).
    nominal_rate
        Requests per second this path brings to its last node at the
        analysis' failure probability.
    worst_rate
        The same when every attempt fails.
    """

    path: tuple[str, ...]
    retries: tuple[int, ...]
    calls_per_request: float
    amplification: float
    nominal_rate: float
    worst_rate: float


@dataclass(frozen=True)
class TimeoutViolation:
    """A caller that gives up before the work it asked for can end.

    Attributes
    ----------
    kind
        ``"call"``: the call's timeout is shorter than the callee's worst-case
        time to finish all its own attempts. ``"queue"``: a pool's queueing
        timeout is longer than the timeout of a caller it serves.
    node
        The callee (``call``) or the pool (``queue``).
    caller, callee
        The call whose timeout is too short.
    timeout
        That call's timeout, in s.
    time
        The callee's worst-case time (``call``) or the pool's queueing
        timeout (``queue``), in s.
    wasted
        Whether the work goes on after the caller gave up (the call does not
        cancel it, or the pool keeps abandoned requests queued).
    """

    kind: Literal["call", "queue"]
    node: str
    caller: str
    callee: str
    timeout: float
    time: float
    wasted: bool

    @property
    def excess(self) -> float:
        """How much longer the work may run than the caller waits, in s."""
        return self.time - self.timeout


@dataclass(frozen=True)
class ServiceLoss:
    """The goodput an entry service loses to a fault.

    Attributes
    ----------
    service
        The entry service.
    entry_rate
        Its fresh requests per second.
    direct_share
        Share of its requests that touch the faulty node.
    share
        Share of its requests that fail once every saturated resource is
        counted (at least ``direct_share``).
    """

    service: str
    entry_rate: float
    direct_share: float
    share: float

    @property
    def lost_rate(self) -> float:
        """Requests per second that fail: ``entry_rate * share``."""
        return self.entry_rate * self.share


@dataclass(frozen=True)
class Saturation:
    """A resource whose slots fill up with requests stuck behind a fault.

    Attributes
    ----------
    node
        The pool or bounded service.
    time
        Seconds after the fault starts when its slots are all held (a
        first-order estimate: slots over the rate of stuck requests, added to
        the time the resource it depends on saturated).
    """

    node: str
    time: float


@dataclass(frozen=True)
class BlastRadius:
    """Who loses goodput when one node stalls.

    Attributes
    ----------
    fault
        The node that stalls (requests touching it hang until the fault ends).
    duration
        How long the fault lasts, in s.
    saturated
        Resources whose slots fill with stuck requests, in the order they
        fill; every request through them fails as well.
    losses
        Entry services that lose goodput, most requests per second first.
    """

    fault: str
    duration: float
    saturated: tuple[Saturation, ...]
    losses: tuple[ServiceLoss, ...]

    @property
    def lost_rate(self) -> float:
        """Total requests per second that fail."""
        return sum(loss.lost_rate for loss in self.losses)


@dataclass(frozen=True)
class StackedRetries:
    """A shared node reached through several retrying calls on one path.

    Attributes
    ----------
    node
        The shared node (a pool, a database, or a service with several callers).
    layers
        Most retrying calls on one path into it (``inf`` through a retrying cycle).
    amplification
        Largest product of attempts per call along a path into it, every
        attempt failing.
    path
        A path that reaches that amplification (empty when unbounded, and
        beyond the ``top`` most amplified reports of `analyze_graph`).
    """

    node: str
    layers: float
    amplification: float
    path: tuple[str, ...]


@dataclass(frozen=True)
class CycleReport:
    """A strongly connected group of nodes: requests can come back to a node.

    Attributes
    ----------
    nodes
        The nodes of the strongly connected component.
    cycle
        One cycle through them, in call order.
    retrying
        Whether a call on the component retries.
    bounded
        Whether the nominal loads on it are finite (the spectral radius of
        its call matrix is below 1).
    worst_bounded
        The same when every attempt fails.
    """

    nodes: tuple[str, ...]
    cycle: tuple[str, ...]
    retrying: bool
    bounded: bool
    worst_bounded: bool


@dataclass(frozen=True)
class GraphAnalysis:
    """Everything the static analysis of a graph finds.

    Attributes
    ----------
    nodes
        One report per node, in the graph's order.
    violations
        Timeout-ordering violations, largest excess first.
    blast_radii
        Blast radius of each fault analysed, most goodput lost first.
    stacked
        Shared nodes behind several retrying layers, most amplified first.
    cycles
        Strongly connected components.
    top_paths
        The most amplified paths (one per end node, no path that another
        listed path extends).
    failure_probability
        The per-attempt failure probability of the nominal loads.
    """

    nodes: tuple[NodeReport, ...]
    violations: tuple[TimeoutViolation, ...]
    blast_radii: tuple[BlastRadius, ...]
    stacked: tuple[StackedRetries, ...]
    cycles: tuple[CycleReport, ...]
    top_paths: tuple[PathAmplification, ...]
    failure_probability: float

    @property
    def classification(self) -> Classification:
        """The worst classification of any node."""
        order: tuple[Classification, ...] = ("stable", "vulnerable", "overloaded")
        return max(
            (n.classification for n in self.nodes), key=order.index, default="stable"
        )

    def node(self, name: str) -> NodeReport:
        """Return the report of the node called ``name``."""
        for report in self.nodes:
            if report.name == name:
                return report
        raise InvalidParameterError("name", "must name a node of the graph", name)

    def findings(self, limit: int = 3) -> tuple[str, ...]:
        """Return the main findings as sentences, at most ``limit`` of each kind.

        Meant for reports that show the graph beside other results (the
        review command): nodes that are not stable, timeout violations, the
        largest blast radius, stacked retries and unbounded cycles.
        """
        lines = [
            f"{n.name} ({n.kind}) is {n.classification}: {n.reason}"
            for n in self.nodes
            if n.classification != "stable"
        ][:limit]
        lines += [
            f"{v.caller} -> {v.callee} gives up after {v.timeout:.4g} s but "
            + (
                f"{v.node} may take {v.time:.4g} s"
                if v.kind == "call"
                else f"{v.node} queues requests for up to {v.time:.4g} s"
            )
            for v in self.violations[:limit]
        ]
        for radius in self.blast_radii[:1]:
            filled = ", ".join(s.node for s in radius.saturated[:limit]) or "nothing"
            count = len(radius.losses)
            lines.append(
                f"a stall of {radius.fault} fails {radius.lost_rate:.4g} requests/s "
                f"across {count} entry service{'' if count == 1 else 's'} "
                f"(it fills {filled})"
            )
        lines += [
            f"{s.node} sits behind {s.layers:.0f} retrying layers "
            f"(up to x{s.amplification:.4g} attempts)"
            for s in self.stacked[:limit]
        ]
        lines += [
            f"calls loop through {' -> '.join(c.cycle)}: unbounded worst-case loads"
            for c in self.cycles
            if not c.worst_bounded
        ][:limit]
        return tuple(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the analysis as plain data (for JSON), with derived values."""
        nodes = [
            asdict(n)
            | {
                "nominal_utilization": n.nominal_utilization,
                "worst_utilization": n.worst_utilization,
            }
            for n in self.nodes
        ]
        violations = [asdict(v) | {"excess": v.excess} for v in self.violations]
        blasts = [
            asdict(b)
            | {
                "lost_rate": b.lost_rate,
                "losses": [asdict(s) | {"lost_rate": s.lost_rate} for s in b.losses],
            }
            for b in self.blast_radii
        ]
        return {
            "classification": self.classification,
            "failure_probability": self.failure_probability,
            "nodes": nodes,
            "violations": violations,
            "blast_radii": blasts,
            "stacked_retries": [asdict(s) for s in self.stacked],
            "cycles": [asdict(c) for c in self.cycles],
            "top_paths": [asdict(p) for p in self.top_paths],
        }


# ---------------------------------------------------------------------------
# Sweeps over the components, in topological order or its reverse
# ---------------------------------------------------------------------------


# A cyclic component of at most this many nodes is solved by a sparse LU
# factorisation; a larger one by the certified iteration of `_iterative_solve`
# first, whose cost does not depend on the fill-in of a factorisation.
_DIRECT_NODES = 1_000
# The iterative solution is kept where its estimated error is below this
# share of every value (far below the digits reported); otherwise the
# factorisation decides.
_ITERATIVE_TOLERANCE = 1e-10
# Power steps spent looking for a proof that the spectral radius is 1 or more.
_POWER_STEPS = 500
# Steps of the splitting iteration allowed per solution, and in a row that
# grow before it is given up as divergent.
_SPLITTING_STEPS = 2_000
_RISING_STEPS = 50
# A bound proven in floating point must clear 1 by this share of the values.
_CERTAIN_MARGIN = 1e-9
# A difference computed in floating point is trusted beyond this share of the
# terms it subtracts (a generous multiple of the rounding of sparse products).
_ROUNDING = 1e-12


def _solve_component(
    size: int,
    entries: list[tuple[int, int, float]],
    rhs: list[float],
    *,
    direct_nodes: int | None = None,
) -> tuple[list[float], bool]:
    """Solve ``x = rhs + B x`` on one strongly connected component.

    Returns the solution and whether it exists (the spectral radius of the
    non-negative matrix ``B`` is below 1); when it does not, every value is
    ``inf`` if anything flows in and 0 otherwise. Components larger than
    ``direct_nodes`` (default ``_DIRECT_NODES``) are tried iteratively first
    (`_iterative_solve`): whether the solution exists is proven, its error
    estimated below ``_ITERATIVE_TOLERANCE`` of every value; the LU
    factorisation decides wherever that fails.

    Notes
    -----
    ``rho(B) < 1`` exactly when ``(I - B) z = 1`` has a solution ``z > 0``:
    then ``B z = z - 1 < z``, so ``rho(B) <= max_i (Bz)_i / z_i < 1`` by the
    Collatz-Wielandt bound; conversely ``z = sum_k B^k 1 >= 1``
    ([BermanPlemmons1994], chapter 6, theorem 2.3).
    """
    inflow = any(r > 0.0 for r in rhs)
    if any(math.isinf(r) for r in rhs):
        return [math.inf] * size, True
    rows, cols, values = zip(*entries, strict=True) if entries else ((), (), ())
    matrix = scipy.sparse.csc_matrix((values, (rows, cols)), shape=(size, size))
    load = np.asarray(rhs, dtype=float)
    threshold = _DIRECT_NODES if direct_nodes is None else direct_nodes
    if size > threshold and np.all(np.isfinite(load)):
        outcome = _iterative_solve(matrix.tocsr(), load)
        if outcome is not None:
            x, bounded = outcome
            if bounded:
                return x.tolist(), True
            return [math.inf if inflow else 0.0] * size, False
    system = (scipy.sparse.identity(size, format="csc") - matrix).tocsc()
    # One factorisation serves the test vector of ones and the loads.
    both = np.column_stack([np.ones(size), load])
    try:
        solved = scipy.sparse.linalg.splu(system).solve(both)
    except RuntimeError:
        # Exactly singular (spectral radius 1): no finite solution.
        return [math.inf if inflow else 0.0] * size, False
    z, x = solved[:, 0], solved[:, 1]
    if not (np.all(np.isfinite(z)) and np.all(z > 0.0)):
        return [math.inf if inflow else 0.0] * size, False
    return [max(v, 0.0) for v in x.tolist()], True


def _iterative_solve(
    matrix: scipy.sparse.csr_matrix, rhs: NDArray[np.float64]
) -> tuple[NDArray[np.float64], bool] | None:
    """Solve ``x = rhs + B x`` by iteration, or return None where unproven.

    Returns the solution and True where ``rho(B) < 1`` is proven and the
    iteration settled (`_splitting_iteration`); an empty array and False
    where ``rho(B) >= 1`` is proven; None otherwise.

    Notes
    -----
    Service graphs are nearly acyclic: setting aside a few light calls
    (`_acyclic_split`) leaves ``B = F + K`` with ``F`` acyclic, so
    ``M = I - F`` is triangular in level order and solved exactly without
    fill (its diagonal, ``1 - B_ii``, is positive: a diagonal entry of 1 or
    more proves ``rho(B) >= 1`` at once). ``I - B = M - K`` is a regular
    splitting (``M^-1 >= 0``, ``K >= 0``), so ``rho(B) < 1`` exactly when
    ``rho(M^-1 K) < 1`` ([Varga2000], section 3.6), and then the iteration
    ``x <- M^-1 (rhs + K x)`` converges. For any ``y > 0``,
    ``min_i (By)_i / y_i <= rho(B) <= max_i (By)_i / y_i``
    ([HornJohnson2013], theorem 8.1.26): the iterate ``z`` for ``rhs = 1``
    with ``z - Bz > 0`` proves ``rho(B) < 1``; where it fails, power steps
    with ``M^-1 K`` look for a vector that proves ``rho(B) >= 1`` by the
    same bound.
    """
    size = matrix.shape[0]
    if np.any(matrix.diagonal() >= 1.0):
        # rho(B) is at least any diagonal entry of a non-negative B.
        return np.empty(0), False
    coo = matrix.tocoo()
    kept, level = _acyclic_split(size, coo.row, coo.col, coo.data)
    aside = np.setdiff1d(np.arange(len(coo.data)), kept)
    order = np.lexsort((np.arange(size), level))
    rank = np.empty(size, dtype=np.intp)
    rank[order] = np.arange(size)
    triangle = scipy.sparse.identity(size, format="csc") - scipy.sparse.csc_matrix(
        (coo.data[kept], (rank[coo.row[kept]], rank[coo.col[kept]])), shape=(size, size)
    )
    # In level order the kept calls lie below the diagonal: no pivoting, no fill.
    factor = scipy.sparse.linalg.splu(
        triangle, permc_spec="NATURAL", diag_pivot_thresh=0.0
    )

    def solve_triangle(v: NDArray[np.float64]) -> NDArray[np.float64]:
        return factor.solve(v[order])[rank]  # type: ignore[no-any-return]

    aside_matrix = scipy.sparse.csr_matrix(
        (coo.data[aside], (coo.row[aside], coo.col[aside])), shape=(size, size)
    )

    def iterate(v: NDArray[np.float64]) -> NDArray[np.float64] | None:
        return _splitting_iteration(solve_triangle, aside_matrix, v)

    z = iterate(np.ones(size))
    if z is None or not _certifies(matrix, z):
        proven = _powers_reach_one(lambda v: solve_triangle(aside_matrix @ v), size)
        return (np.empty(0), False) if proven else None
    if not np.any(rhs > 0.0):
        return np.zeros(size), True
    x = iterate(rhs)
    return None if x is None else (x, True)


def _certifies(matrix: scipy.sparse.csr_matrix, z: NDArray[np.float64]) -> bool:
    """Return whether ``z > 0`` and ``z - Bz > 0`` beyond rounding (rho(B) < 1)."""
    image = matrix @ z
    return bool(np.all(z > 0.0) and np.all(z - image > _ROUNDING * (z + image)))


def _splitting_iteration(
    solve_triangle: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    aside: scipy.sparse.csr_matrix,
    rhs: NDArray[np.float64],
) -> NDArray[np.float64] | None:
    """Iterate ``x <- M^-1 (rhs + K x)`` from 0 until it settles, or return None.

    With ``M^-1`` and ``K`` non-negative and ``rhs >= 0`` every step only adds
    non-negative terms: the iterates rise to the solution with no
    cancellation, at the rate ``gamma = rho(M^-1 K)``. It stops when the
    remaining error, estimated as ``step * gamma / (1 - gamma)`` from the
    ratio of successive steps, is below ``_ITERATIVE_TOLERANCE`` of every
    value; None if that does not happen within ``_SPLITTING_STEPS`` steps.
    """
    x = solve_triangle(rhs)
    previous, rising = None, 0
    for _ in range(_SPLITTING_STEPS):
        following = solve_triangle(rhs + aside @ x)
        step = following - x
        x = following
        if not np.all(np.isfinite(x)):
            return None
        if not np.any(step > 0.0):
            return x
        if previous is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                gamma = float(np.max(np.where(step > 0.0, step / previous, 0.0)))
            if gamma < 1.0 and np.all(
                step * gamma / (1.0 - gamma) <= _ITERATIVE_TOLERANCE * x
            ):
                return x
            # Steps that keep growing: most likely rho(M^-1 K) >= 1.
            rising = rising + 1 if gamma >= 1.0 else 0
            if rising > _RISING_STEPS:
                return None
        previous = step
    return None


def _powers_reach_one(
    step: Callable[[NDArray[np.float64]], NDArray[np.float64]], size: int
) -> bool:
    """Return whether power steps find ``y > 0`` with ``step(y) >= y``.

    ``step`` applies a non-negative matrix ``G``; such a ``y`` proves
    ``rho(G) >= 1`` (the Collatz-Wielandt bound, [HornJohnson2013], theorem
    8.1.26). A margin of ``_CERTAIN_MARGIN`` covers rounding.
    """
    y = np.ones(size)
    for _ in range(_POWER_STEPS):
        image = step(y)
        if not np.all(image > 0.0):
            return False
        if np.min(image / y) >= 1.0 + _CERTAIN_MARGIN:
            return True
        y = image / np.max(image)
    return False


def _linear_sweep(
    st: _Structure,
    weights: Sequence[float],
    constant: Sequence[float],
    *,
    upstream: bool,
) -> list[float]:
    """Solve ``x_v = constant_v + sum_e weights_e x_(other end of e)``.

    Downstream (``upstream=False``) the sum runs over the calls into ``v``
    from their callers (loads); upstream over the calls out of ``v`` to their
    callees (holding times). Components are visited so every term is known
    before it is used; a cyclic component is solved as one linear system.
    """
    x = list(constant)
    order = reversed(st.components) if upstream else iter(st.components)
    edges_of = st.out_edges if upstream else st.in_edges
    far = st.dst if upstream else st.src
    for component, cyclic in zip(
        order, reversed(st.cyclic) if upstream else st.cyclic, strict=True
    ):
        if not cyclic:
            v = component[0]
            x[v] += sum(weights[e] * x[far[e]] for e in edges_of[v])
            continue
        position = {v: i for i, v in enumerate(component)}
        rhs = [
            x[v]
            + sum(weights[e] * x[far[e]] for e in edges_of[v] if far[e] not in position)
            for v in component
        ]
        inner = [
            (position[v], position[far[e]], weights[e])
            for v in component
            for e in edges_of[v]
            if far[e] in position
        ]
        solved, _ = _solve_component(len(component), inner, rhs)
        for v, value in zip(component, solved, strict=True):
            x[v] = value
    return x


def _settle(
    st: _Structure,
    component: list[int],
    cyclic: bool,
    update: Callable[[int], bool],
    *,
    upstream: bool,
) -> None:
    """Apply ``update`` to the nodes of a component until nothing changes.

    A component without a cycle needs one update. On a cycle the nodes are
    visited in passes, in the component's order (callees first for an
    upstream sweep, callers first for a downstream one), updating only those
    whose inputs changed: the callees' callers upstream, the callers' callees
    downstream. A change reaches later nodes in the same pass and earlier
    ones in the next, so each pass carries every change once around the
    cycles. The minima and maxima settle after finitely many passes and the
    shares converge geometrically; a sweep that has not settled after many
    updates stops with a warning.
    """
    if not cyclic:
        update(component[0])
        return
    members = set(component)
    edges_of, far = (st.in_edges, st.src) if upstream else (st.out_edges, st.dst)
    order = component if upstream else component[::-1]
    size = len(component) + sum(len(edges_of[v]) for v in component)
    budget = max(100_000, 100 * size)
    dirty = set(component)
    while dirty and budget > 0:
        for v in order:
            if v not in dirty:
                continue
            dirty.discard(v)
            budget -= 1
            if update(v):
                dirty.update(far[e] for e in edges_of[v] if far[e] in members)
    if dirty:
        warnings.warn(
            f"values on a cycle of {len(component)} nodes did not settle; "
            "the results on it are approximate",
            RuntimeWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class _Core:
    """Per-node quantities shared by every analysis."""

    nominal: list[float]
    worst: list[float]
    own: list[float]
    holding: list[float]
    capacity: list[float]
    slots: list[float]
    wait: list[float]
    worst_time: list[float]
    deadline: list[float]
    deadline_edge: list[int]
    amplification: list[float]
    amplification_edge: list[int]
    layers: list[float]
    nominal_weights: list[float]
    worst_weights: list[float]


def _attempt_weights(st: _Structure, failure_probability: float) -> list[float]:
    """Return calls per request times attempts per call, under each call's budget."""
    if not st.retries:
        return []
    # Few distinct (retries, budget) pairs: evaluate each once, spread back.
    pairs, inverse = np.unique(
        np.column_stack([st.retries, st.budget]), axis=0, return_inverse=True
    )
    attempts = np.array(
        [
            min(
                float(attempts_per_request(failure_probability, int(retries))),
                retry_budget_amplification(float(budget), int(retries)),
            )
            for retries, budget in pairs
        ]
    )
    weights = np.asarray(st.per_request) * attempts[inverse.ravel()]
    return weights.tolist()  # type: ignore[no-any-return]


def _effective_slots(st: _Structure) -> list[float]:
    """Return each node's slots; a database's are also bounded by its callers'."""
    slots = list(st.slots)
    for v, kind in enumerate(st.kinds):
        if kind == "database":
            callers = sum(st.slots[st.src[e]] for e in st.in_edges[v])
            slots[v] = min(slots[v], callers)
    return slots


def _own_time_at_full_load(st: _Structure, slots: list[float]) -> list[float]:
    """Return own work per request when every slot is busy (database contention)."""
    own = list(st.own_time)
    for v, alpha in enumerate(st.contention):
        if alpha > 0.0 and math.isfinite(slots[v]):
            own[v] *= 1.0 + alpha * (slots[v] - 1.0)
    return own


def _capacities(
    st: _Structure, slots: list[float], holding: list[float]
) -> list[float]:
    """Return requests per second each node can complete: slots / holding time."""
    capacity = []
    for v, (s, h) in enumerate(zip(slots, holding, strict=True)):
        alpha = st.contention[v]
        if math.isinf(s):
            # Unbounded concurrency: contention alone caps the throughput.
            limit = (
                1.0 / (st.own_time[v] * alpha)
                if alpha > 0.0 and st.own_time[v] > 0
                else math.inf
            )
            capacity.append(limit)
        else:
            capacity.append(s / h if h > 0.0 else math.inf)
    return capacity


def _inflight_caps(st: _Structure) -> list[float]:
    """Return the most requests that can be in flight into each node.

    A caller with ``n`` slots that waits for each answer (no timeout, or its
    timeout cancels the callee's work) can have at most ``n`` requests at its
    callee; entry traffic and callers that give up and retry are unbounded.
    """
    cap = [math.inf if rate > 0.0 else 0.0 for rate in st.entry]
    for component, cyclic in zip(st.components, st.cyclic, strict=True):
        for v in component:
            for e in st.in_edges[v]:
                u = st.src[e]
                waits = math.isinf(st.timeout[e]) or st.cancels[e]
                cap[v] += min(st.slots[u], cap[u]) if waits else math.inf
        if cyclic and any(cap[v] > 0.0 for v in component):
            for v in component:
                cap[v] = math.inf
    return cap


def _waits(
    st: _Structure,
    slots: list[float],
    capacity: list[float],
    inflight: list[float],
    deadline: list[float],
) -> list[float]:
    """Return the longest wait for a slot at each pool (0 elsewhere), in s.

    A FIFO queue of at most ``K`` waiting requests served at ``capacity``
    drains in ``K / capacity``; ``K`` is the queue limit, or what the callers
    can have in flight beyond the pool's own slots. A pool that drops
    abandoned requests keeps none beyond its callers' deadline.
    """
    wait = [0.0] * st.size
    for v, kind in enumerate(st.kinds):
        if kind != "pool":
            continue
        queue = min(st.queue_limit[v], max(inflight[v] - slots[v], 0.0))
        if queue == 0.0:
            continue
        drain = queue / capacity[v] if capacity[v] > 0.0 else math.inf
        wait[v] = min(st.queue_timeout[v], drain)
        if st.cancel_abandoned[v]:
            wait[v] = min(wait[v], deadline[v])
    return wait


def _worst_times(
    st: _Structure,
    own: list[float],
    wait: list[float],
    stall: tuple[int, float] | None = None,
) -> tuple[list[float], list[float]]:
    """Return each node's worst-case time to finish a request, and to serve it.

    ``W_v = wait_v + H_v`` with ``H_v = own_v + max_e [(R_e + 1) T_e +
    backoff_e]``, the time a request holds a slot: the call that takes
    longest when every attempt runs to its timeout (a call without a timeout
    takes the callee's own ``W``; calls are taken as concurrent: sequential
    calls only take longer). ``stall`` makes one node hold a request for at
    least the given time. On a cycle the values are iterated down from
    ``inf``, giving the largest consistent values.
    """
    flags = _node_flags(st)
    time = [math.inf if cyclic else 0.0 for cyclic in flags]
    hold = list(time)

    def update(v: int) -> bool:
        longest = 0.0
        for e in st.out_edges[v]:
            timeout = st.timeout[e]
            attempt = timeout if math.isfinite(timeout) else time[st.dst[e]]
            longest = max(longest, (st.retries[e] + 1) * attempt + st.backoff_total[e])
        hold[v] = own[v] + longest
        if stall is not None and v == stall[0]:
            hold[v] = max(hold[v], stall[1])
        value = wait[v] + hold[v]
        changed = value != time[v]
        time[v] = value
        return changed

    for component, cyclic in zip(
        reversed(st.components), reversed(st.cyclic), strict=True
    ):
        _settle(st, component, cyclic, update, upstream=True)
    return time, hold


def _node_flags(st: _Structure) -> list[bool]:
    """Return, for each node, whether it lies on a cycle."""
    flags = [False] * st.size
    for component, cyclic in zip(st.components, st.cyclic, strict=True):
        for v in component:
            flags[v] = cyclic
    return flags


def _deadlines(st: _Structure) -> tuple[list[float], list[int]]:
    """Return each node's tightest uncancelled upstream timeout and its call.

    ``A_v`` is the tightest timeout of any call on a path into ``v``; ``U_v``
    keeps only those whose expiry does not stop the work at ``v`` (some call
    between the timeout and ``v`` does not cancel): over a call ``e = (u, v)``,
    ``U_v <- U_u`` if ``e`` cancels, else ``min(T_e, A_u)``.
    """
    tightest = [math.inf] * st.size
    tightest_edge = [-1] * st.size
    uncancelled = [math.inf] * st.size
    uncancelled_edge = [-1] * st.size

    def update(v: int) -> bool:
        changed = False
        for e in st.in_edges[v]:
            u = st.src[e]
            value, edge = (
                (st.timeout[e], e)
                if st.timeout[e] <= tightest[u]
                else (tightest[u], tightest_edge[u])
            )
            if value < tightest[v]:
                tightest[v], tightest_edge[v], changed = value, edge, True
            if st.cancels[e]:
                value, edge = uncancelled[u], uncancelled_edge[u]
            if value < uncancelled[v]:
                uncancelled[v], uncancelled_edge[v], changed = value, edge, True
        return changed

    for component, cyclic in zip(st.components, st.cyclic, strict=True):
        _settle(st, component, cyclic, update, upstream=False)
    return uncancelled, uncancelled_edge


def _amplification(
    st: _Structure, worst_attempts: list[float]
) -> tuple[list[float], list[int], list[float]]:
    """Return the largest attempt product and retrying-call count into each node.

    Also the last call of a path reaching the largest product (-1 where the
    path starts at the node's own entry traffic). Nodes no entry traffic
    reaches have product 0 and count -1; a reached cycle with a retrying call
    makes both ``inf``.
    """
    product = [1.0 if rate > 0.0 else 0.0 for rate in st.entry]
    layers = [0.0 if rate > 0.0 else -1.0 for rate in st.entry]
    best = [-1] * st.size

    def update(v: int) -> bool:
        changed = False
        for e in st.in_edges[v]:
            u = st.src[e]
            if product[u] > 0.0 and product[u] * worst_attempts[e] > product[v]:
                product[v], best[v], changed = product[u] * worst_attempts[e], e, True
            count = layers[u] + (1.0 if worst_attempts[e] > 1.0 else 0.0)
            if layers[u] >= 0.0 and count > layers[v]:
                layers[v], changed = count, True
        return changed

    for component, cyclic in zip(st.components, st.cyclic, strict=True):
        if not (cyclic and _retrying_inside(st, component, worst_attempts)):
            _settle(st, component, cyclic, update, upstream=False)
            continue
        # A retrying call on a cycle multiplies without end once reached.
        reached = any(
            st.entry[v] > 0.0 or any(product[st.src[e]] > 0.0 for e in st.in_edges[v])
            for v in component
        )
        for v in component if reached else ():
            product[v], layers[v], best[v] = math.inf, math.inf, -1
    return product, best, layers


def _retrying_inside(
    st: _Structure, component: list[int], worst_attempts: list[float]
) -> bool:
    """Return whether a call between two nodes of the component retries."""
    members = set(component)
    return any(
        worst_attempts[e] > 1.0 and st.dst[e] in members
        for v in component
        for e in st.out_edges[v]
    )


def _core(st: _Structure, failure_probability: float) -> _Core:
    """Compute the per-node quantities every analysis uses."""
    # Loads: calls per request times attempts per call, summed over callers.
    nominal_weights = _attempt_weights(st, failure_probability)
    worst_weights = _attempt_weights(st, 1.0)
    nominal = _linear_sweep(st, nominal_weights, st.entry, upstream=False)
    worst = _linear_sweep(st, worst_weights, st.entry, upstream=False)

    # Capacity: slots over the holding time (own work plus the calls it waits
    # for, one attempt each in the good state; database contention at full load).
    slots = _effective_slots(st)
    own = _own_time_at_full_load(st, slots)
    holding = _linear_sweep(st, st.per_request, own, upstream=True)
    capacity = _capacities(st, slots, holding)

    # Time: the longest wait and the worst-case time to finish, against the
    # tightest deadline of a caller that does not cancel the work.
    deadline, deadline_edge = _deadlines(st)
    wait = _waits(st, slots, capacity, _inflight_caps(st), deadline)
    worst_time, _ = _worst_times(st, own, wait)

    worst_attempts = [w / k for w, k in zip(worst_weights, st.per_request, strict=True)]
    amplification, amplification_edge, layers = _amplification(st, worst_attempts)
    return _Core(
        nominal=nominal,
        worst=worst,
        own=own,
        holding=holding,
        capacity=capacity,
        slots=slots,
        wait=wait,
        worst_time=worst_time,
        deadline=deadline,
        deadline_edge=deadline_edge,
        amplification=amplification,
        amplification_edge=amplification_edge,
        layers=layers,
        nominal_weights=nominal_weights,
        worst_weights=worst_weights,
    )


# ---------------------------------------------------------------------------
# Public analyses
# ---------------------------------------------------------------------------


def node_loads(
    graph: ServiceGraph | GraphSpec,
    *,
    failure_probability: float = 0.0,
    worst_case: bool = False,
) -> dict[str, float]:
    """Return the requests per second reaching every node.

    Parameters
    ----------
    graph
        The service graph.
    failure_probability
        Probability that any one attempt of a call fails, in [0, 1] (0: the
        good state, one attempt per call).
    worst_case
        Every attempt fails (``failure_probability = 1``): each call makes all
        its ``R + 1`` attempts, within its retry budget.

    Returns
    -------
    dict
        Node name to requests (attempts) per second; ``inf`` where a cycle
        does not damp.

    Notes
    -----
    With ``k_e`` calls per request and ``a_e`` attempts per call on the call
    ``e``, the loads solve ``x = entry + M^T x`` with ``M_uv = k_e a_e``, where
    ``a_e = min((1 - p^(R+1)) / (1 - p), 1 + budget)``. On a DAG this is one
    pass in topological order, linear in the number of calls; each strongly
    connected component is solved as a sparse linear system, which has a
    non-negative solution exactly when the spectral radius of its block of
    ``M`` is below 1 ([BermanPlemmons1994], chapter 6, theorem 2.3); otherwise
    the loads on it and downstream are ``inf``. Through ``L`` calls that each
    retry ``R`` times the worst case multiplies the load by ``(R + 1)^L``
    ([Brooker2022], [SREBook2016]).

    Examples
    --------
    >>> spec = GraphSpec.model_validate({
    ...     "services": [
    ...         {"name": "a", "entry_rate": 10.0}, {"name": "b"}, {"name": "c"},
    ...     ],
    ...     "calls": [
    ...         {"caller": "a", "callee": "b", "max_retries": 2},
    ...         {"caller": "b", "callee": "c", "max_retries": 2,
    ...          "calls_per_request": 0.5},
    ...     ],
    ... })
    >>> node_loads(spec)
    {'a': 10.0, 'b': 10.0, 'c': 5.0}
    >>> node_loads(spec, worst_case=True)
    {'a': 10.0, 'b': 30.0, 'c': 45.0}
    """
    graph = _as_graph(graph)
    p = (
        1.0
        if worst_case
        else check_probability("failure_probability", failure_probability)
    )
    st = graph._structure
    loads = _linear_sweep(st, _attempt_weights(st, p), st.entry, upstream=False)
    return dict(zip(st.names, loads, strict=True))


def analyze_graph(
    graph: ServiceGraph | GraphSpec,
    *,
    failure_probability: float = 0.0,
    faults: Iterable[str] | None = None,
    fault_duration: float = math.inf,
    top: int = 20,
) -> GraphAnalysis:
    """Analyse a service graph: loads, classification, timeouts, blast radius.

    Parameters
    ----------
    graph
        The service graph.
    failure_probability
        Per-attempt failure probability of the nominal loads, in [0, 1].
    faults
        Nodes whose blast radius to compute. Default: every pool, database
        and table, or, when there are none, the ten nodes with the highest
        nominal load.
    fault_duration
        How long each fault lasts, in s (``inf``: until it is repaired).
    top
        How many of the most amplified paths to list, and how many of the
        stacked-retry reports (the most amplified) carry their path.

    Returns
    -------
    GraphAnalysis
        Node reports, violations, blast radii, stacked retries, cycles and
        the most amplified paths.

    Raises
    ------
    InvalidParameterError
        If a fault names no node, or a number is out of range.

    Notes
    -----
    Each node is classified as the single-tier equilibrium analysis
    classifies the tier it stands for ([Bronson2021], [Huang2022]):

    - ``overloaded`` when the nominal load reaches its capacity (slots over
      holding time): there is no good state to return to;
    - ``vulnerable`` when the worst-case load (every attempt failing and
      retried) exceeds its capacity *and* it can do work for callers that
      have gone: a pool whose longest wait plus holding time exceeds the
      tightest uncancelled caller timeout (and which keeps abandoned
      requests), or a bounded service or database whose worst-case time to
      finish exceeds it. Such a node has a second, self-sustaining state in
      which every attempt waits, times out, is retried and keeps it full;
    - ``stable`` otherwise.

    The waiting bound of a pool is its queueing timeout, or the time to drain
    the most requests that can wait (its queue limit, or what bounded callers
    that wait for the answer can have in flight) at its capacity, whichever
    is shorter [Whitt2006].

    Examples
    --------
    >>> spec = GraphSpec.model_validate({
    ...     "services": [{"name": "clients", "entry_rate": 120.0}, {"name": "web"}],
    ...     "resources": [
    ...         {"name": "proxy", "kind": "pool", "pool_size": 100,
    ...          "queue_timeout": 120.0},
    ...         {"name": "db", "kind": "database", "service_time": 0.4},
    ...     ],
    ...     "calls": [
    ...         {"caller": "clients", "callee": "web", "timeout": 60.0,
    ...          "max_retries": 3},
    ...         {"caller": "web", "callee": "proxy"},
    ...         {"caller": "proxy", "callee": "db"},
    ...     ],
    ... })
    >>> report = analyze_graph(spec).node("proxy")
    >>> report.classification, round(report.nominal_utilization, 2), report.worst_load
    ('vulnerable', 0.48, 480.0)
    """
    graph = _as_graph(graph)
    p = check_probability("failure_probability", failure_probability)
    duration = check_nonnegative("fault_duration", fault_duration, allow_inf=True)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise InvalidParameterError("top", "must be a non-negative integer", top)
    st = graph._structure
    core = _core(st, p)

    steady = _steady_states(st, core)
    verdicts = _classify_all(st, core)
    nodes = tuple(
        _node_report(st, core, steady, verdicts[v], v) for v in range(st.size)
    )
    chosen = (
        _default_faults(st, core)
        if faults is None
        else _node_indices(st, faults, "faults")
    )
    blasts = sorted(
        _blast_radii(st, core, chosen, duration), key=lambda b: (-b.lost_rate, b.fault)
    )
    return GraphAnalysis(
        nodes=nodes,
        violations=_violations(st, core),
        blast_radii=tuple(blasts),
        stacked=_stacked(st, core, top),
        cycles=_cycles(graph, st),
        top_paths=_top_paths(st, core, top),
        failure_probability=p,
    )


def timeout_violations(graph: ServiceGraph | GraphSpec) -> tuple[TimeoutViolation, ...]:
    """Return every call and pool whose timeouts are out of order.

    Parameters
    ----------
    graph
        The service graph.

    Returns
    -------
    tuple of TimeoutViolation
        Largest excess first.

    Notes
    -----
    A call ``u -> v`` with timeout ``T`` is a violation when ``T < W_v``,
    the callee's worst-case time to finish: its own work, its longest wait
    for a slot, and for its slowest call ``(R' + 1) T' + backoff'`` (every
    attempt running to its timeout ``T'``, the longest backoff delays; a call
    without a timeout takes its callee's own worst-case time). A pool is a
    violation when its queueing timeout exceeds the tightest timeout of a
    caller it serves whose expiry does not remove the waiting request.
    Timeouts should shrink going down the call stack ([Brooker2019],
    [SREBook2016]). Time already spent upstream is not subtracted from a
    caller's timeout; that can hide a violation, never invent one.

    Examples
    --------
    >>> spec = GraphSpec.model_validate({
    ...     "services": [
    ...         {"name": "a", "entry_rate": 1.0}, {"name": "b"}, {"name": "c"},
    ...     ],
    ...     "calls": [
    ...         {"caller": "a", "callee": "b", "timeout": 2.0},
    ...         {"caller": "b", "callee": "c", "timeout": 1.0, "max_retries": 2},
    ...     ],
    ... })
    >>> [(v.caller, v.callee, v.timeout, v.time) for v in timeout_violations(spec)]
    [('a', 'b', 2.0, 3.0)]
    """
    graph = _as_graph(graph)
    st = graph._structure
    return _violations(st, _core(st, 0.0))


def blast_radius(
    graph: ServiceGraph | GraphSpec,
    fault: str,
    *,
    duration: float = math.inf,
    failure_probability: float = 0.0,
) -> BlastRadius:
    """Return which entry services lose goodput when ``fault`` stalls, and how much.

    Parameters
    ----------
    graph
        The service graph.
    fault
        The node that stalls: every request touching it hangs until the
        fault ends (a locked table, a hung dependency).
    duration
        How long the stall lasts, in s.
    failure_probability
        Per-attempt failure probability of the loads that fill resources.

    Returns
    -------
    BlastRadius
        The resources that saturate and the services that lose goodput.

    Notes
    -----
    The share of an entry service's requests that touch a node ``X`` is
    computed upstream from ``X`` with calls taken as independent: a node
    making ``k`` calls per request to ``w`` (``floor(k)`` calls, one more
    with probability ``k - floor(k)``) misses ``X`` with probability
    ``(1 - q_w)^floor(k) (1 - (k - floor(k)) q_w)``; along one path this is
    the product of the shares. A resource with ``n`` slots that receives
    ``lambda q`` stuck requests per second fills in ``n / (lambda q)``
    seconds, if its requests are held that long; from then on every request
    through it fails too, and the resources in front of it are checked in
    turn. The times are first-order estimates; the transient replay gives
    the dynamics.

    Examples
    --------
    >>> spec = GraphSpec.model_validate({
    ...     "services": [
    ...         {"name": "panel", "entry_rate": 30.0},
    ...         {"name": "api", "entry_rate": 90.0},
    ...     ],
    ...     "resources": [
    ...         {"name": "proxy", "kind": "pool", "pool_size": 100},
    ...         {"name": "db", "kind": "database", "service_time": 0.4,
    ...          "tables": [{"name": "invoice", "share": 0.6},
    ...                     {"name": "other", "share": 0.4}]},
    ...     ],
    ...     "calls": [
    ...         {"caller": "panel", "callee": "proxy"},
    ...         {"caller": "api", "callee": "proxy"},
    ...         {"caller": "proxy", "callee": "db"},
    ...     ],
    ... })
    >>> radius = blast_radius(spec, "db.invoice", duration=45.0)
    >>> [(s.node, round(s.time, 2)) for s in radius.saturated]
    [('proxy', 1.39)]
    >>> [(loss.service, loss.direct_share, loss.share) for loss in radius.losses]
    [('api', 0.6, 1.0), ('panel', 0.6, 1.0)]
    """
    graph = _as_graph(graph)
    p = check_probability("failure_probability", failure_probability)
    stall = check_nonnegative("duration", duration, allow_inf=True)
    st = graph._structure
    (v,) = _node_indices(st, [fault], "fault")
    (radius,) = _blast_radii(st, _core(st, p), [v], stall)
    return radius


def stacked_retries(graph: ServiceGraph | GraphSpec) -> tuple[StackedRetries, ...]:
    """Return the shared nodes reached through more than one retrying call on a path.

    Parameters
    ----------
    graph
        The service graph.

    Returns
    -------
    tuple of StackedRetries
        Most amplified first.

    Notes
    -----
    Shared nodes are pools, databases and services with several callers.
    Retries at ``L`` stacked layers multiply the worst-case load by up to
    ``(R + 1)^L``; only one layer should retry ([Brooker2019]).

    Examples
    --------
    >>> spec = GraphSpec.model_validate({
    ...     "services": [{"name": "a", "entry_rate": 1.0}, {"name": "b"}],
    ...     "resources": [{"name": "db", "kind": "database"}],
    ...     "calls": [
    ...         {"caller": "a", "callee": "b", "max_retries": 3},
    ...         {"caller": "b", "callee": "db", "max_retries": 3},
    ...     ],
    ... })
    >>> [(s.node, s.layers, s.amplification, s.path) for s in stacked_retries(spec)]
    [('db', 2.0, 16.0, ('a', 'b', 'db'))]
    """
    graph = _as_graph(graph)
    st = graph._structure
    return _stacked(st, _core(st, 0.0), len(st.names))


def find_cycles(graph: ServiceGraph | GraphSpec) -> tuple[CycleReport, ...]:
    """Return the strongly connected components of the graph (self-calls included).

    Parameters
    ----------
    graph
        The service graph.

    Returns
    -------
    tuple of CycleReport
        One per component with a cycle, with one cycle through it and
        whether the loads on it stay finite.

    Examples
    --------
    >>> spec = GraphSpec.model_validate({
    ...     "services": [{"name": "a", "entry_rate": 1.0}, {"name": "b"}],
    ...     "calls": [
    ...         {"caller": "a", "callee": "b"},
    ...         {"caller": "b", "callee": "a", "calls_per_request": 0.5,
    ...          "max_retries": 1},
    ...     ],
    ... })
    >>> [(c.cycle, c.bounded, c.worst_bounded) for c in find_cycles(spec)]
    [(('a', 'b'), True, False)]
    """
    graph = _as_graph(graph)
    return _cycles(graph, graph._structure)


def _node_indices(st: _Structure, names: Iterable[str], parameter: str) -> list[int]:
    """Return the indices of node names, rejecting unknown ones."""
    index = {name: i for i, name in enumerate(st.names)}
    if isinstance(names, str):
        raise InvalidParameterError(parameter, "must be a list of node names", names)
    indices = []
    for name in names:
        if name not in index:
            raise InvalidParameterError(parameter, "must name nodes of the graph", name)
        indices.append(index[name])
    return indices


def _default_faults(st: _Structure, core: _Core) -> list[int]:
    """Every resource and table; without any, the ten most loaded nodes."""
    resources = [v for v, kind in enumerate(st.kinds) if kind != "service"]
    if resources:
        return resources
    ranked = sorted(range(st.size), key=lambda v: (-core.nominal[v], st.names[v]))
    return ranked[:10]


# ---------------------------------------------------------------------------
# Implementations
# ---------------------------------------------------------------------------


def _node_report(
    st: _Structure,
    core: _Core,
    steady: tuple[list[float], list[float]],
    verdict: _Verdict | None,
    v: int,
) -> NodeReport:
    """Classify one node and say why."""
    classification, reason = _classify(core, verdict, v)
    return NodeReport(
        name=st.names[v],
        kind=st.kinds[v],
        entry_rate=st.entry[v],
        nominal_load=core.nominal[v],
        worst_load=core.worst[v],
        capacity=core.capacity[v],
        holding_time=core.holding[v],
        longest_wait=core.wait[v],
        caller_deadline=core.deadline[v],
        deadline_call=(
            (st.names[st.src[edge]], st.names[st.dst[edge]])
            if (edge := core.deadline_edge[v]) >= 0
            else None
        ),
        amplification=core.amplification[v],
        nominal_wait=steady[0][v],
        nominal_failure=steady[1][v],
        classification=classification,
        reason=reason,
    )


def _steady_states(st: _Structure, core: _Core) -> tuple[list[float], list[float]]:
    """Return each node's mean wait and failure share at the nominal load.

    A pool is M/M/c with ``c = pool_size`` connections held for the holding
    time: M/M/c+D with its queueing timeout, M/M/c/K with its queue limit
    (whichever binds first: the limit when the full queue drains within the
    timeout), M/M/c without either. A bounded service or a database with its
    own limit rejects the excess fast: Erlang B, evaluated for all of them at
    once. Holding times are taken as exponential, as in those models.
    """
    wait, failure = [0.0] * st.size, [0.0] * st.size
    rejecting = []
    for v in range(st.size):
        load, hold = core.nominal[v], core.holding[v]
        if load == 0.0 or math.isinf(st.slots[v]) or not 0.0 < hold < math.inf:
            continue
        if math.isinf(load):
            wait[v], failure[v] = math.inf, 1.0
        elif st.kinds[v] == "pool":
            wait[v], failure[v] = _pool_steady_state(st, v, load, hold)
        else:
            rejecting.append(v)
    if rejecting:
        servers = np.array([st.slots[v] for v in rejecting])
        offered = np.array([core.nominal[v] * core.holding[v] for v in rejecting])
        for v, blocked in zip(
            rejecting, np.atleast_1d(erlang_b(servers, offered)), strict=True
        ):
            failure[v] = float(blocked)
    return wait, failure


def _pool_steady_state(
    st: _Structure, v: int, load: float, hold: float
) -> tuple[float, float]:
    """Return a pool's mean wait and failure share in steady state."""
    servers, rate = int(st.slots[v]), 1.0 / hold
    limit, timeout = st.queue_limit[v], st.queue_timeout[v]
    if math.isinf(limit) and math.isinf(timeout):
        try:
            return MMc(
                arrival_rate=load, service_rate=rate, servers=servers
            ).mean_wait, 0.0
        except UnstableSystemError:
            return math.inf, 0.0
    if math.isinf(limit) or timeout < limit / (servers * rate):
        timed = MMcD(
            arrival_rate=load, service_rate=rate, servers=servers, timeout=timeout
        )
        return timed.mean_wait, timed.abandonment_probability
    capped = MMcK(
        arrival_rate=load,
        service_rate=rate,
        servers=servers,
        capacity=servers + int(limit),
    )
    return capped.mean_wait, capped.blocking_probability


# Late shares below this are taken as 0: they change an attempt rate by less
# than a part in 1e12, below any capacity margin that matters.
_NEGLIGIBLE_LATE_SHARE = 1e-12
# Up to this many distinct late shares the loads are computed exactly at each;
# beyond, at evenly spaced shares and interpolated in between.
_EXACT_LATE_SHARES = 8


@dataclass(frozen=True)
class _Verdict:
    """The inputs and outcome of one node's classification."""

    classification: Classification
    late_good: float
    late_bad: float
    good_rate: float
    bad_rate: float


def _late(wait: float, deadline: float, holding: float) -> float:
    """Return the share of requests served after their caller gave up."""
    # fluid.py imports the scenario, which imports this module: import late.
    from retrystorm.fluid import late_share  # noqa: PLC0415

    if math.isinf(deadline):
        return 0.0
    share = late_share(wait, deadline, 1.0 / holding)
    return 0.0 if share < _NEGLIGIBLE_LATE_SHARE else share


def _classify_all(st: _Structure, core: _Core) -> list[_Verdict | None]:
    """Classify every node whose capacity is finite (None for the others).

    Each such node is taken as the single tier of `retrystorm.equilibria`:
    attempts arrive at the rate the graph brings when each attempt fails with
    the share ``p`` that is late, the node serves ``kappa`` (its capacity),
    and its callers give up after ``T`` (its tightest uncancelled deadline).
    A good equilibrium exists iff ``x(p_0) < kappa`` with ``p_0 =
    exp(-T / H)`` (late by service alone, holding time ``H``); a saturated one
    iff ``x(p_w) > kappa`` with ``p_w = exp(-(T - w) / H)`` for the longest
    wait ``w < T`` (1 beyond).
    """
    limited = [
        v
        for v in range(st.size)
        if math.isfinite(core.capacity[v]) and 0.0 < core.holding[v] < math.inf
    ]
    lates = {
        v: (
            _late(0.0, core.deadline[v], core.holding[v]),
            _late(core.wait[v], core.deadline[v], core.holding[v]),
        )
        for v in limited
    }
    rate = _loads_at_shares(st, {p for pair in lates.values() for p in pair})
    verdicts: list[_Verdict | None] = [None] * st.size
    for v in limited:
        late_good, late_bad = lates[v]
        good_rate, bad_rate = rate(v, late_good), rate(v, late_bad)
        capacity = core.capacity[v]
        # A node that nothing reaches serves nothing and cannot be overloaded,
        # whatever its capacity (0 for a database behind no pool).
        classification: Classification = (
            "overloaded"
            if good_rate > 0.0 and not good_rate < capacity
            else ("vulnerable" if bad_rate > capacity else "stable")
        )
        verdicts[v] = _Verdict(classification, late_good, late_bad, good_rate, bad_rate)
    for v in range(st.size):
        # Nothing can be served where the holding time is unbounded.
        if core.capacity[v] == 0.0 and core.nominal[v] > 0.0:
            verdicts[v] = _Verdict(
                "overloaded", 0.0, 0.0, core.nominal[v], core.nominal[v]
            )
    return verdicts


def _loads_at_shares(
    st: _Structure, shares: set[float]
) -> Callable[[int, float], float]:
    """Return ``(v, p) -> load at v when every attempt fails with probability p``.

    Exact at up to ``_EXACT_LATE_SHARES`` distinct shares (one sweep each);
    beyond, the loads are computed at evenly spaced shares and interpolated
    linearly, which overstates them (the load is convex in ``p``).
    """
    grid = sorted(shares | {0.0, 1.0})
    if len(grid) > _EXACT_LATE_SHARES + 2:
        grid = [i / _EXACT_LATE_SHARES for i in range(_EXACT_LATE_SHARES + 1)]
    loads = np.array(
        [
            _linear_sweep(st, _attempt_weights(st, p), st.entry, upstream=False)
            for p in grid
        ]
    )
    points = np.asarray(grid)

    def rate(v: int, p: float) -> float:
        return float(np.interp(p, points, loads[:, v]))

    return rate


def _classify(
    core: _Core, verdict: _Verdict | None, v: int
) -> tuple[Classification, str]:
    """Return the node's classification and a one-sentence reason."""
    capacity = core.capacity[v]
    if verdict is None:
        return "stable", "nothing limits its throughput"
    load = (
        f"{verdict.good_rate:.4g}/s arrive in the good state, "
        f"{_ratio(verdict.good_rate, capacity):.0%} of its capacity {capacity:.4g}/s"
    )
    if verdict.classification == "overloaded":
        return "overloaded", f"{load}: no good state exists"
    deadline, wait = core.deadline[v], core.wait[v]
    if verdict.classification == "vulnerable":
        return "vulnerable", (
            f"{load}; once requests wait {wait:.4g} s, {verdict.late_bad:.0%} of them "
            f"are served after their callers gave up ({deadline:.4g} s) and the "
            f"retries bring {verdict.bad_rate:.4g}/s, more than it serves: a "
            "self-sustaining bad state"
        )
    if verdict.late_bad > 0.0:
        why = f"{verdict.late_bad:.2g} of them are served late"
    else:
        why = "they still leave before their callers give up"
    return "stable", (
        f"{load}; once requests wait {wait:.4g} s, {why}, and the retries bring "
        f"{verdict.bad_rate:.4g}/s, which it serves"
    )


def _violations(st: _Structure, core: _Core) -> tuple[TimeoutViolation, ...]:
    """Return the call and queue violations, largest excess first."""
    found = []
    for e, timeout in enumerate(st.timeout):
        callee = st.dst[e]
        if math.isfinite(timeout) and timeout < core.worst_time[callee]:
            found.append(
                TimeoutViolation(
                    kind="call",
                    node=st.names[callee],
                    caller=st.names[st.src[e]],
                    callee=st.names[callee],
                    timeout=timeout,
                    time=core.worst_time[callee],
                    wasted=not st.cancels[e],
                )
            )
    for v, kind in enumerate(st.kinds):
        edge = core.deadline_edge[v]
        if kind != "pool" or st.cancel_abandoned[v] or edge < 0:
            continue
        if st.queue_timeout[v] > core.deadline[v]:
            found.append(
                TimeoutViolation(
                    kind="queue",
                    node=st.names[v],
                    caller=st.names[st.src[edge]],
                    callee=st.names[st.dst[edge]],
                    timeout=core.deadline[v],
                    time=st.queue_timeout[v],
                    wasted=True,
                )
            )
    return tuple(sorted(found, key=lambda f: (-f.excess, f.kind, f.caller, f.callee)))


def _path_to(st: _Structure, core: _Core, v: int) -> tuple[list[int], list[int]]:
    """Return the nodes and calls of the most amplified path into ``v``."""
    nodes, edges = [v], []
    while core.amplification_edge[nodes[-1]] >= 0:
        e = core.amplification_edge[nodes[-1]]
        edges.append(e)
        nodes.append(st.src[e])
    return nodes[::-1], edges[::-1]


def _path_amplification(st: _Structure, core: _Core, v: int) -> PathAmplification:
    """Return the amplification of the most amplified path into ``v``."""
    nodes, edges = _path_to(st, core, v)
    entry = st.entry[nodes[0]]
    retries = tuple(st.retries[e] for e in edges)
    unbudgeted = all(math.isinf(st.budget[e]) for e in edges)
    amplification = (
        float(layered_amplification(retries))
        if unbudgeted
        else math.prod(core.worst_weights[e] / st.per_request[e] for e in edges)
    )
    return PathAmplification(
        path=tuple(st.names[n] for n in nodes),
        retries=retries,
        calls_per_request=math.prod(st.per_request[e] for e in edges),
        amplification=amplification,
        nominal_rate=entry * math.prod(core.nominal_weights[e] for e in edges),
        worst_rate=entry * math.prod(core.worst_weights[e] for e in edges),
    )


def _top_paths(st: _Structure, core: _Core, top: int) -> tuple[PathAmplification, ...]:
    """Return the most amplified paths, skipping any that a listed path extends."""
    candidates = [
        v
        for v in range(st.size)
        if 0.0 < core.amplification[v] < math.inf and core.amplification_edge[v] >= 0
    ]
    depth = _path_depths(st, core)
    candidates.sort(key=lambda v: (-core.amplification[v], -depth[v], st.names[v]))
    chosen: list[PathAmplification] = []
    for v in candidates:
        if len(chosen) == top:
            break
        path = _path_amplification(st, core, v)
        if not any(c.path[: len(path.path)] == path.path for c in chosen):
            chosen.append(path)
    return tuple(chosen)


def _path_depths(st: _Structure, core: _Core) -> list[int]:
    """Return the number of calls on each node's most amplified path."""
    depth = [0] * st.size
    for component in st.components:
        for v in component:
            e = core.amplification_edge[v]
            if e >= 0 and math.isfinite(core.amplification[v]):
                depth[v] = depth[st.src[e]] + 1
    return depth


def _stacked(st: _Structure, core: _Core, top: int) -> tuple[StackedRetries, ...]:
    """Return the shared nodes behind two or more retrying calls on a path.

    Paths are traced for the ``top`` most amplified only: tracing every one
    costs the depth of the graph per node.
    """
    found = [
        v
        for v, kind in enumerate(st.kinds)
        if core.layers[v] >= 2.0
        and (
            kind in {"pool", "database"}
            or (kind == "service" and len(st.in_edges[v]) > 1)
        )
    ]
    found.sort(key=lambda v: (-core.amplification[v], -core.layers[v], st.names[v]))
    reports = []
    for rank, v in enumerate(found):
        traced = rank < top and math.isfinite(core.amplification[v])
        path = tuple(st.names[n] for n in _path_to(st, core, v)[0]) if traced else ()
        reports.append(
            StackedRetries(st.names[v], core.layers[v], core.amplification[v], path)
        )
    return tuple(reports)


def _cycles(graph: ServiceGraph, st: _Structure) -> tuple[CycleReport, ...]:
    """Return one report per cyclic strongly connected component."""
    nominal = _attempt_weights(st, 0.0)
    worst = _attempt_weights(st, 1.0)
    reports = []
    for component, cyclic in zip(st.components, st.cyclic, strict=True):
        if not cyclic:
            continue
        position = {v: i for i, v in enumerate(component)}
        inner = [
            (e, position[v], position[st.dst[e]])
            for v in component
            for e in st.out_edges[v]
            if st.dst[e] in position
        ]
        names = [st.names[v] for v in sorted(component)]
        cycle = nx.find_cycle(graph.digraph.subgraph(names), source=names[0])
        reports.append(
            CycleReport(
                nodes=tuple(names),
                cycle=tuple(u for u, _ in cycle),
                retrying=any(worst[e] > st.per_request[e] for e, _, _ in inner),
                bounded=_spectral_radius_below_one(len(component), inner, nominal),
                worst_bounded=_spectral_radius_below_one(len(component), inner, worst),
            )
        )
    return tuple(reports)


def _spectral_radius_below_one(
    size: int, inner: list[tuple[int, int, int]], weights: list[float]
) -> bool:
    """Return whether the call matrix of a component has spectral radius below 1."""
    entries = [(i, j, weights[e]) for e, i, j in inner]
    _, bounded = _solve_component(size, entries, [1.0] * size)
    return bounded


def _ancestors(st: _Structure, targets: Iterable[int]) -> list[bool]:
    """Return, for each node, whether it can reach one of the targets."""
    reaches = [False] * st.size
    stack = list(targets)
    for v in stack:
        reaches[v] = True
    while stack:
        v = stack.pop()
        for e in st.in_edges[v]:
            u = st.src[e]
            if not reaches[u]:
                reaches[u] = True
                stack.append(u)
    return reaches


# Shares on a cycle are iterated until no node's changes by more than this:
# far below the percent they are reported in.
_SHARE_TOLERANCE = 1e-10
# A fixed point on a cycle that has not settled after this many sweeps stops
# with a warning (shares converge geometrically, times within the cycle's size).
_MAX_SWEEPS = 10_000
# Faults are assessed a batch of columns at a time so that no per-node array
# of a batch holds more than about this many values (calls are visited a node
# or a layer of a cycle at a time, so no array spans all calls).
_BATCH_VALUES = 2_000_000


@dataclass(frozen=True)
class _StallPlan:
    """What every batch of stalls shares: orders, and each node's fixed times.

    ``order`` lists the nodes callees first along the calls without a timeout
    (the only calls through which a stall lengthens a caller's time);
    ``endless`` marks the nodes on a cycle of such calls (their worst-case
    time is unbounded); ``longest`` is each node's slowest call with a
    timeout, ``(R + 1) T + backoff``, and ``untimed`` its calls without one.
    """

    order: list[int]
    endless: list[bool]
    longest: list[float]
    untimed: list[list[int]]


def _stall_plan(st: _Structure) -> _StallPlan:
    """Return the orders and constants every batch of stalls uses."""
    untimed: list[list[int]] = [[] for _ in range(st.size)]
    longest = [0.0] * st.size
    for e, timeout in enumerate(st.timeout):
        if math.isinf(timeout):
            untimed[st.src[e]].append(e)
        else:
            time = (st.retries[e] + 1) * timeout + st.backoff_total[e]
            longest[st.src[e]] = max(longest[st.src[e]], time)
    waiting: nx.DiGraph[int] = nx.DiGraph()
    waiting.add_nodes_from(range(st.size))
    waiting.add_edges_from((st.src[e], st.dst[e]) for es in untimed for e in es)
    condensed = nx.condensation(waiting)
    order, endless = [], [False] * st.size
    for c in reversed(list(nx.topological_sort(condensed))):
        members = sorted(condensed.nodes[c]["members"])
        order.extend(members)
        if len(members) > 1 or waiting.has_edge(members[0], members[0]):
            for v in members:
                endless[v] = True
    return _StallPlan(order, endless, longest, untimed)


@dataclass
class _Stalls:
    """The state of a batch of stalls, one column per stalled node.

    For each node and stall: the time a request holds a slot with the stall
    in place (``hold``); the share of requests that touch the stalled node
    (``direct``) and that fail once saturated resources are counted
    (``share``); whether the node fails (``failing``) and since when
    (``since``); and the earliest time its requests get stuck (``start``).
    """

    st: _Structure
    core: _Core
    duration: float
    columns: dict[int, list[int]]
    hold: NDArray[np.float64]
    direct: NDArray[np.float64]
    share: NDArray[np.float64]
    failing: NDArray[np.bool_]
    since: NDArray[np.float64]
    start: NDArray[np.float64]
    touched: NDArray[np.bool_]

    @property
    def entries(self) -> list[int]:
        """The nodes with entry traffic."""
        return [v for v, rate in enumerate(self.st.entry) if rate > 0.0]


def _stalled_holding(
    st: _Structure,
    core: _Core,
    plan: _StallPlan,
    *,
    relevant: list[bool],
    columns: dict[int, list[int]],
    duration: float,
) -> NDArray[np.float64]:
    """Return how long each node holds a request under each stall, in s.

    ``H_v = own_v + max(longest_v, max_e [(R_e + 1) W_w + backoff_e])`` over
    the calls ``e = (v, w)`` without a timeout, with ``W_w = wait_w + H_w``;
    a stalled node holds for at least the stall. One pass callees first
    along those calls; a cycle of them holds for ever (the largest solution,
    as in `_worst_times`).
    """
    width = sum(len(stalled) for stalled in columns.values())
    worst = np.repeat(np.asarray(core.worst_time)[:, None], width, axis=1)
    hold = np.zeros((st.size, width))
    for v in plan.order:
        if not relevant[v]:
            continue
        if plan.endless[v]:
            hold[v] = worst[v] = math.inf
            continue
        waiting = np.zeros(width)
        for e in plan.untimed[v]:
            attempt = (st.retries[e] + 1) * worst[st.dst[e]] + st.backoff_total[e]
            waiting = np.maximum(waiting, attempt)
        held = core.own[v] + np.maximum(waiting, plan.longest[v])
        stalled = columns.get(v)
        if stalled:
            held[stalled] = np.maximum(held[stalled], duration)
        hold[v] = held
        worst[v] = core.wait[v] + held
    return hold


def _sweep_stalls(
    st: _Structure,
    core: _Core,
    plan: _StallPlan,
    faults: list[int],
    duration: float,
) -> _Stalls:
    """Return the state of a batch of stalls, components visited callees first."""
    columns: dict[int, list[int]] = {}
    for column, v in enumerate(faults):
        columns.setdefault(v, []).append(column)
    relevant = _ancestors(st, faults)
    size, width = st.size, len(faults)
    stalls = _Stalls(
        st=st,
        core=core,
        duration=duration,
        columns=columns,
        hold=_stalled_holding(
            st, core, plan, relevant=relevant, columns=columns, duration=duration
        ),
        direct=np.zeros((size, width)),
        share=np.zeros((size, width)),
        failing=np.zeros((size, width), dtype=bool),
        since=np.full((size, width), math.inf),
        start=np.full((size, width), math.inf),
        touched=np.zeros(size, dtype=bool),
    )
    for index in reversed(range(len(st.components))):
        component = st.components[index]
        if not relevant[component[0]]:
            continue
        if st.cyclic[index]:
            _settle_stalled_cycle(stalls, index)
        else:
            _settle_stalled_node(stalls, component[0])
    return stalls


def _from_callees(
    stalls: _Stalls, v: int, skip: set[int] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Return the miss chances and earliest stuck time of ``v`` from its callees.

    Only the callees outside ``skip`` count (the rest of its cycle).
    """
    st, width = stalls.st, stalls.share.shape[1]
    miss_direct, miss = np.ones(width), np.ones(width)
    start = np.full(width, math.inf)
    for e in st.out_edges[v]:
        w = st.dst[e]
        if not stalls.touched[w] or (skip is not None and w in skip):
            continue
        _miss(miss_direct, stalls.direct[w], st.per_request[e])
        _miss(miss, stalls.share[w], st.per_request[e])
        stuck = np.where(stalls.failing[w], stalls.since[w], stalls.start[w])
        start = np.where(stalls.share[w] > 0.0, np.minimum(start, stuck), start)
    return miss_direct, miss, start


def _settle_stalled_node(stalls: _Stalls, v: int) -> None:
    """Settle a node outside any cycle from its settled callees."""
    st = stalls.st
    miss_direct, miss, start = _from_callees(stalls, v)
    direct, share = 1.0 - miss_direct, 1.0 - miss
    failing = np.zeros(share.shape, dtype=bool)
    since = np.full(share.shape, math.inf)
    stalled = stalls.columns.get(v, [])
    if stalled:
        direct[stalled] = share[stalled] = 1.0
        failing[stalled], since[stalled] = True, 0.0
    if math.isfinite(st.slots[v]):
        fills, fill = _fills(stalls, [v], share[None, :], failing[None, :])
        failing |= fills[0]
        since[fills[0]] = start[fills[0]] + fill[0][fills[0]]
        share[fills[0]] = 1.0
    stalls.direct[v], stalls.share[v] = direct, share
    stalls.failing[v], stalls.since[v], stalls.start[v] = failing, since, start
    stalls.touched[v] = bool(np.any(share > 0.0))


def _fills(
    stalls: _Stalls,
    nodes: list[int],
    share: NDArray[np.float64],
    failing: NDArray[np.bool_],
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    """Return where the slots of ``nodes`` fill with stuck requests, and how fast.

    A node with ``n`` slots receiving ``lambda q`` stuck requests per second
    fills in ``n / (lambda q)`` s; it fills if its requests are held that long.
    """
    st, core = stalls.st, stalls.core
    slots = np.array([st.slots[v] for v in nodes])[:, None]
    nominal = np.array([core.nominal[v] for v in nodes])[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        # An infinite load brings infinitely many stuck requests as soon as
        # any share of them is stuck; no stuck requests never fill (inf).
        stuck = np.where(share > 0.0, nominal * share, 0.0)
        fill = slots / stuck
    fills = ~failing & np.isfinite(slots) & (stuck > 0.0) & (fill <= stalls.hold[nodes])
    return fills, fill


@dataclass(frozen=True)
class _Layer:
    """One layer of a cycle: its nodes, its calls, and how the calls group.

    Nodes ``start:stop`` (positions in layer order) make calls
    ``first:last``; ``heads`` are the positions, within the layer's calls,
    where each calling node's calls begin, ``callers`` those nodes (relative
    to ``start``), and ``powered`` the calls made at least once per request.
    """

    start: int
    stop: int
    first: int
    last: int
    heads: NDArray[np.intp]
    callers: NDArray[np.intp]
    powered: NDArray[np.intp]

    @property
    def complete(self) -> bool:
        """Whether every node of the layer makes a call inside the cycle."""
        return len(self.callers) == self.stop - self.start


@dataclass(frozen=True)
class _CycleCalls:
    """The calls inside one cycle as arrays, by caller in layer order.

    ``nodes`` lists the component in layer order (`_Structure.layers`);
    ``callee`` holds positions in that order.
    """

    nodes: list[int]
    callee: NDArray[np.intp]
    whole: NDArray[np.float64]
    part: NDArray[np.float64]
    layers: list[_Layer]


def _cycle_calls(st: _Structure, index: int) -> _CycleCalls:
    """Return the calls between the nodes of the ``index``-th component."""
    nodes, bounds = st.layers(index)
    position = {v: i for i, v in enumerate(nodes)}
    pairs = [
        (position[v], position[st.dst[e]], st.per_request[e])
        for v in nodes
        for e in st.out_edges[v]
        if st.dst[e] in position
    ]
    caller = np.array([p[0] for p in pairs], dtype=np.intp)
    callee = np.array([p[1] for p in pairs], dtype=np.intp)
    calls = np.array([p[2] for p in pairs])
    whole = np.floor(calls)
    cuts = np.searchsorted(caller, bounds)
    layers = []
    for start, stop, first, last in zip(
        bounds[:-1], bounds[1:], cuts[:-1].tolist(), cuts[1:].tolist(), strict=True
    ):
        own = caller[first:last]
        heads = np.flatnonzero(np.r_[True, own[1:] != own[:-1]]) if len(own) else own
        layers.append(
            _Layer(
                start=start,
                stop=stop,
                first=first,
                last=last,
                heads=heads,
                callers=own[heads] - start,
                powered=np.flatnonzero(whole[first:last] > 0.0),
            )
        )
    return _CycleCalls(
        nodes=nodes,
        callee=callee,
        whole=whole[:, None],
        part=(calls - whole)[:, None],
        layers=layers,
    )


def _sweep_shares(
    calls: _CycleCalls,
    outer_miss: NDArray[np.float64],
    fixed: NDArray[np.bool_],
    share: NDArray[np.float64],
    given: NDArray[np.float64],
) -> None:
    """Update ``q = 1 - outer_miss * inner_miss(q)`` layer by layer, in place.

    ``given`` receives the shares the callees alone give; where ``fixed``
    the share is 1. A call made ``k`` times per request misses with
    ``(1 - q)^floor(k) (1 - (k - floor(k)) q)`` (see `_miss`); a layer's
    nodes read the shares of earlier layers from this sweep (Gauss-Seidel).
    """
    for layer in calls.layers:
        start, stop, first, last = layer.start, layer.stop, layer.first, layer.last
        q = share[calls.callee[first:last]]
        factor = 1.0 - calls.part[first:last] * q
        if len(layer.powered):
            powered = layer.powered
            factor[powered] *= (1.0 - q[powered]) ** calls.whole[first:last][powered]
        if layer.complete:
            miss = np.multiply.reduceat(factor, layer.heads, axis=0)
        else:
            miss = np.ones((stop - start, share.shape[1]))
            if len(layer.callers):
                miss[layer.callers] = np.multiply.reduceat(factor, layer.heads, axis=0)
        given[start:stop] = 1.0 - outer_miss[start:stop] * miss
        share[start:stop] = np.where(fixed[start:stop], 1.0, given[start:stop])


def _sweep_stuck_times(
    calls: _CycleCalls,
    *,
    reached: NDArray[np.bool_],
    outer_start: NDArray[np.float64],
    failing: NDArray[np.bool_],
    saturated: NDArray[np.bool_],
    fill: NDArray[np.float64],
    times: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]],
) -> bool:
    """Relax the times at which requests get stuck, layer by layer, in place.

    ``times`` holds, per node and stall, the earliest time its requests get
    stuck (``start``: from outside, ``outer_start``, or from a callee they
    reach, ``reached``), the time it fails (``since``: a saturated node
    ``fill`` after its start) and the time its own requests are stuck
    (``since`` where it fails, ``start`` elsewhere). Returns whether any
    time changed.
    """
    start, since, stuck = times
    changed = False
    for layer in calls.layers:
        begin, end, first, last = layer.start, layer.stop, layer.first, layer.last
        callee = calls.callee[first:last]
        reach = np.where(reached[callee], stuck[callee], math.inf)
        earliest = outer_start[begin:end].copy()
        if len(layer.callers):
            inner = np.minimum.reduceat(reach, layer.heads, axis=0)
            earliest[layer.callers] = np.minimum(earliest[layer.callers], inner)
        # Only saturated nodes fail a filling time after their start (the
        # others' filling times may be undefined: none is added for them).
        failed = since[begin:end].copy()
        filling = saturated[begin:end]
        failed[filling] = earliest[filling] + fill[begin:end][filling]
        if np.array_equal(earliest, start[begin:end]) and np.array_equal(
            failed, since[begin:end]
        ):
            continue
        changed = True
        start[begin:end], since[begin:end] = earliest, failed
        stuck[begin:end] = np.where(failing[begin:end], failed, earliest)
    return changed


def _settle_stalled_cycle(stalls: _Stalls, index: int) -> None:
    """Settle the nodes of a cycle together, from their settled callees outside.

    Shares are the least fixed point of the miss equations, approached from
    below by sweeps over the cycle's layers. A node whose slots fill at the
    shares so far fails, which raises the shares of its callers in turn:
    filling only grows with the shares, and the sweeps never pass the least
    fixed point, so the nodes that fail are those that fail there. The times
    at which requests get stuck are the shortest over the calls that carry
    stuck requests (Bellman-Ford sweeps, at most one per node).
    """
    st, width = stalls.st, stalls.share.shape[1]
    calls = _cycle_calls(st, index)
    component = calls.nodes
    members = set(component)
    outer = [_from_callees(stalls, v, members) for v in component]
    outer_miss = np.hstack(
        [np.array([o[0] for o in outer]), np.array([o[1] for o in outer])]
    )
    outer_start = np.array([o[2] for o in outer])
    stalled = np.zeros((len(component), width), dtype=bool)
    for i, v in enumerate(component):
        stalled[i, stalls.columns.get(v, [])] = True

    # Shares: touching the stalled node (left half of the columns), and
    # failing once saturated nodes count (right half), swept together.
    fixed = np.hstack([stalled, stalled])
    share, given = np.zeros_like(outer_miss), np.zeros_like(outer_miss)
    for _ in range(_MAX_SWEEPS):
        before = share.copy()
        _sweep_shares(calls, outer_miss, fixed, share, given)
        fills, fill = _fills(stalls, component, given[:, width:], fixed[:, width:])
        fixed[:, width:] |= fills
        share[:, width:][fills] = 1.0
        if not np.any(fills) and np.all(np.abs(share - before) <= _SHARE_TOLERANCE):
            break
    else:
        _warn_unsettled(len(component))
    failing = fixed[:, width:]
    saturated = failing & ~stalled
    direct, share = share[:, :width], share[:, width:]

    # Times: a failing node is stuck from its start plus its filling time.
    since = np.where(stalled, 0.0, math.inf)
    times = (outer_start.copy(), since, np.where(failing, since, outer_start))
    reached = share > 0.0
    for _ in range(len(component) + 1):
        if not _sweep_stuck_times(
            calls,
            reached=reached,
            outer_start=outer_start,
            failing=failing,
            saturated=saturated,
            fill=fill,
            times=times,
        ):
            break
    start, since, _ = times

    stalls.direct[component], stalls.share[component] = direct, share
    stalls.failing[component] = failing
    stalls.since[component], stalls.start[component] = since, start
    stalls.touched[component] = np.any(share > 0.0, axis=1)


def _warn_unsettled(size: int) -> None:
    """Warn that values on a cycle did not settle."""
    # Stack: here, the cycle, the batch, all batches, the public function.
    warnings.warn(
        f"values on a cycle of {size} nodes did not settle; "
        "the results on it are approximate",
        RuntimeWarning,
        stacklevel=6,
    )


def _miss(miss: NDArray[np.float64], hit: NDArray[np.float64], calls: float) -> None:
    """Multiply ``miss`` by the chance that ``calls`` calls all miss (in place).

    ``k`` calls per request are ``floor(k)`` calls and one more with
    probability ``k - floor(k)``, independent of each other.
    """
    whole = math.floor(calls)
    if whole == 1:
        miss *= 1.0 - hit
    elif whole > 1:
        miss *= (1.0 - hit) ** whole
    if calls > whole:
        miss *= 1.0 - (calls - whole) * hit


def _blast_radii(
    st: _Structure, core: _Core, faults: list[int], duration: float
) -> list[BlastRadius]:
    """Return the blast radius of a stall of each fault lasting ``duration`` s."""
    plan = _stall_plan(st)
    batch = max(1, _BATCH_VALUES // max(st.size, 1))
    radii: list[BlastRadius] = []
    for first in range(0, len(faults), batch):
        chunk = faults[first : first + batch]
        stalls = _sweep_stalls(st, core, plan, chunk, duration)
        radii.extend(_radius(st, stalls, column, v) for column, v in enumerate(chunk))
    return radii


def _radius(st: _Structure, stalls: _Stalls, column: int, fault: int) -> BlastRadius:
    """Assemble the blast radius of one column of a batch."""
    failing = np.flatnonzero(stalls.failing[:, column])
    failing = failing[failing != fault]
    times = stalls.since[failing, column]
    order = np.argsort(times, kind="stable")
    saturated = tuple(
        Saturation(st.names[v], t)
        for v, t in zip(failing[order].tolist(), times[order].tolist(), strict=True)
    )
    entries = np.asarray(stalls.entries, dtype=np.intp)
    shares = stalls.share[entries, column].tolist()
    direct = stalls.direct[entries, column].tolist()
    losses = [
        ServiceLoss(st.names[v], st.entry[v], d, q)
        for v, d, q in zip(entries.tolist(), direct, shares, strict=True)
        if q > 0.0
    ]
    losses.sort(key=lambda s: (-s.lost_rate, s.service))
    return BlastRadius(st.names[fault], stalls.duration, saturated, tuple(losses))


# ---------------------------------------------------------------------------
# Export: Graphviz DOT text and a matplotlib figure
# ---------------------------------------------------------------------------

_SHAPES: dict[NodeKind, str] = {
    "service": "box",
    "pool": "hexagon",
    "database": "cylinder",
    "table": "note",
}
_COLOURS: dict[str, str] = {
    "stable": "#c7e9c0",
    "vulnerable": "#fdd0a2",
    "overloaded": "#fc9272",
    "unknown": "#ffffff",
}


def _quoted(text: str) -> str:
    """Return ``text`` as a DOT double-quoted string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _call_label(data: Mapping[str, Any]) -> str:
    """Return a short label for a call: calls per request, retries, timeout."""
    parts = [f"x{data['calls_per_request']:.3g}"]
    if data["max_retries"]:
        parts.append(f"R={data['max_retries']}")
    if math.isfinite(data["timeout"]):
        parts.append(f"{data['timeout']:.3g} s")
    return ", ".join(parts)


def graph_to_dot(
    graph: ServiceGraph | GraphSpec, analysis: GraphAnalysis | None = None
) -> str:
    r"""Return the graph as Graphviz DOT text, marked with an analysis if given.

    Nodes are shaped by kind (service: box, pool: hexagon, database:
    cylinder, table: note) and, with an analysis, filled by classification
    and labelled with their nominal utilisation; calls that give up too
    early are drawn red and dashed, queues that outwait their callers get a
    red outline.

    Parameters
    ----------
    graph
        The service graph.
    analysis
        Its analysis (optional).

    Returns
    -------
    str
        A ``digraph`` that ``dot -Tpng`` renders.

    Examples
    --------
    >>> spec = GraphSpec.model_validate({
    ...     "services": [{"name": "a", "entry_rate": 1.0}, {"name": "b"}],
    ...     "calls": [{"caller": "a", "callee": "b", "max_retries": 2}],
    ... })
    >>> print(graph_to_dot(spec))
    digraph services {
      rankdir=LR;
      node [fontname="Helvetica", style=filled, fillcolor="#ffffff"];
      "a" [shape=box, label="a\nservice"];
      "b" [shape=box, label="b\nservice"];
      "a" -> "b" [label="x1, R=2"];
    }
    """
    graph = _as_graph(graph)
    reports = {n.name: n for n in analysis.nodes} if analysis is not None else {}
    found = analysis.violations if analysis is not None else ()
    violating = {(v.caller, v.callee) for v in found if v.kind == "call"}
    queueing = {v.node for v in found if v.kind == "queue"}
    lines = [
        "digraph services {",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", style=filled, fillcolor="#ffffff"];',
    ]
    for name, data in graph.digraph.nodes(data=True):
        label = f"{name}\n{data['kind']}"
        attributes = f"shape={_SHAPES[data['kind']]}"
        report = reports.get(name)
        if report is not None:
            label += f"\n{report.nominal_load:.4g}/s"
            if math.isfinite(report.capacity):
                label += f" ({report.nominal_utilization:.0%})"
            attributes += f", fillcolor={_quoted(_COLOURS[report.classification])}"
        if name in queueing:
            attributes += ', color="#d62728", penwidth=2'
        lines.append(f"  {_quoted(name)} [{attributes}, label={_quoted(label)}];")
    for caller, callee, data in graph.digraph.edges(data=True):
        attributes = f"label={_quoted(_call_label(data))}"
        if (caller, callee) in violating:
            attributes += ', color="#d62728", style=dashed, penwidth=2'
        lines.append(f"  {_quoted(caller)} -> {_quoted(callee)} [{attributes}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _layered_positions(graph: nx.DiGraph[str]) -> dict[str, tuple[float, float]]:
    """Place nodes left to right by call depth (cycles share a column)."""
    condensed = nx.condensation(graph)
    column: dict[str, int] = {}
    for depth, generation in enumerate(nx.topological_generations(condensed)):
        for c in generation:
            for name in condensed.nodes[c]["members"]:
                column[name] = depth
    by_column: dict[int, list[str]] = {}
    for name in graph.nodes:
        by_column.setdefault(column[name], []).append(name)
    positions = {}
    for depth, names in by_column.items():
        for row, name in enumerate(names):
            positions[name] = (float(depth), (len(names) - 1) / 2.0 - row)
    return positions


def plot_graph(
    graph: ServiceGraph | GraphSpec,
    analysis: GraphAnalysis,
    path: str | PathLike[str],
    *,
    title: str | None = None,
) -> None:
    """Draw the graph with utilisation, classification and violations to a PNG.

    Parameters
    ----------
    graph
        The service graph.
    analysis
        Its analysis.
    path
        The image file to write.
    title
        Figure title (default: the overall classification).
    """
    # matplotlib is imported only to draw (it is slow to import); the
    # object-oriented API leaves pyplot's global state alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    graph = _as_graph(graph)
    digraph = graph.digraph
    reports = {n.name: n for n in analysis.nodes}
    violating = {(v.caller, v.callee) for v in analysis.violations if v.kind == "call"}
    queueing = {v.node for v in analysis.violations if v.kind == "queue"}
    positions = _layered_positions(digraph)
    columns = 1 + max((x for x, _ in positions.values()), default=0.0)
    rows = 1 + max((abs(y) * 2 for _, y in positions.values()), default=0.0)
    small = digraph.number_of_nodes() > 60

    figure = Figure(
        figsize=(min(4.0 + 2.6 * columns, 40.0), min(3.0 + 0.9 * rows, 40.0))
    )
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_axis_off()
    nodes = list(digraph.nodes)
    nx.draw_networkx_nodes(
        digraph,
        positions,
        nodelist=nodes,
        ax=axes,
        node_size=60 if small else 1400,
        node_color=[_COLOURS[reports[n].classification] for n in nodes],
        # A queue that outwaits its callers gets a red rim.
        edgecolors=["#d62728" if n in queueing else "#444444" for n in nodes],
        linewidths=[2.5 if n in queueing else 1.0 for n in nodes],
    )
    plain = [e for e in digraph.edges if e not in violating]
    nx.draw_networkx_edges(
        digraph,
        positions,
        edgelist=plain,
        ax=axes,
        edge_color="#888888",
        arrows=True,
        node_size=60 if small else 1400,
    )
    nx.draw_networkx_edges(
        digraph,
        positions,
        edgelist=sorted(violating),
        ax=axes,
        edge_color="#d62728",
        style="dashed",
        width=2.0,
        arrows=True,
        node_size=60 if small else 1400,
    )
    if not small:
        labels = {n: _plot_label(n, reports[n]) for n in nodes}
        nx.draw_networkx_labels(digraph, positions, labels=labels, ax=axes, font_size=7)
        edge_labels = {(u, v): _call_label(d) for u, v, d in digraph.edges(data=True)}
        nx.draw_networkx_edge_labels(
            digraph, positions, edge_labels=edge_labels, ax=axes, font_size=6
        )
    legend = [
        Patch(facecolor=c, edgecolor="#444444", label=k)
        for k, c in _COLOURS.items()
        if k != "unknown"
    ]
    legend.append(Patch(facecolor="#d62728", label="call gives up too early"))
    legend.append(
        Patch(facecolor="white", edgecolor="#d62728", label="queue outwaits callers")
    )
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=7)
    axes.set_title(title or f"service graph: {analysis.classification}")
    figure.tight_layout()
    figure.savefig(Path(path), dpi=120)


def _plot_label(name: str, report: NodeReport) -> str:
    """Return a node's plot label: name and nominal utilisation."""
    if math.isinf(report.capacity):
        return f"{name}\n{report.nominal_load:.3g}/s"
    nominal, worst = report.nominal_utilization, report.worst_utilization
    return f"{name}\n{nominal:.0%} ({worst:.0%} worst)"
