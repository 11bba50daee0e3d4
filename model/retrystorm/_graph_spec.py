"""The schema of a service dependency graph: the ``[graph]`` table of a scenario.

Pydantic models of the services, resources (connection pools, databases and
their tables) and calls of a graph, validated with every problem at its own
location. They live apart from `retrystorm.graph` so that the scenario can
hold a graph without importing the analysis; `retrystorm.graph` re-exports
them. Time is in seconds and rates are per second throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
    "BackoffSpec",
    "CallSpec",
    "GraphSpec",
    "NodeKind",
    "ResourceSpec",
    "ServiceSpec",
    "TableSpec",
]

NodeKind = Literal["service", "pool", "database", "table"]

Name = Annotated[str, StringConstraints(min_length=1, pattern=r"^\S(.*\S)?$")]
FiniteNonnegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class _Spec(BaseModel):
    """Shared configuration: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffSpec(_Spec):
    """Delays between a caller's retries of one call.

    The delay before retry ``k`` (``k = 1, 2, ...``) is
    ``min(cap, initial * multiplier**(k - 1))`` seconds; jitter draws the
    actual delay from ``[0, d]`` (``"full"``) or ``[d/2, d]`` (``"equal"``), so
    ``d`` is always the longest delay.
    """

    initial: FiniteNonnegative = Field(
        default=0.0, description="s, delay before retry 1"
    )
    multiplier: Annotated[float, Field(ge=1.0, allow_inf_nan=False)] = Field(
        default=2.0, description="growth of the delay per retry"
    )
    cap: FiniteNonnegative = Field(default=30.0, description="s, largest delay")
    jitter: Literal["none", "full", "equal"] = Field(
        default="full", description="jitter of the delays"
    )

    def longest_total_delay(self, max_retries: int) -> float:
        """Return the longest total backoff over ``max_retries`` retries, in s."""
        return sum(
            min(self.cap, self.initial * self.multiplier ** (k - 1))
            for k in range(1, max_retries + 1)
        )


class ServiceSpec(_Spec):
    """A service: entry traffic, pods, an optional concurrency cap, own work.

    Attributes
    ----------
    name
        Unique node name.
    entry_rate
        Fresh requests per second arriving from outside the graph (0 for an
        internal service).
    pods
        Number of identical pods.
    concurrency
        Most requests in flight per pod; the excess is rejected fast. ``None``
        (the default) is an asynchronous tier that accepts everything.
    service_time
        Mean time of the service's own work per request, in s (its calls to
        other nodes come on top).
    description
        Free text.
    """

    name: Name = Field(description="unique node name")
    entry_rate: FiniteNonnegative = Field(
        default=0.0, description="/s, fresh requests from outside the graph"
    )
    pods: Annotated[int, Field(ge=1)] = Field(default=1, description="identical pods")
    concurrency: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="most requests in flight per pod (none: unbounded)"
    )
    service_time: FiniteNonnegative = Field(
        default=0.0, description="s, mean own work per request"
    )
    description: str = Field(default="", description="free text")


class TableSpec(_Spec):
    """A table of a database and the share of the database's requests touching it."""

    name: Name = Field(description="table name (the node is database.table)")
    share: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        description="share of the database's requests touching it"
    )


class ResourceSpec(_Spec):
    """A shared resource: a connection pool (proxy) or a database.

    Attributes
    ----------
    name
        Unique node name.
    kind
        ``"pool"``: a connection proxy; a request waits in a FIFO queue for one
        of ``pool_size`` connections and holds it while its calls to the
        pool's callees (the database) run. ``"database"``: does the queries;
        its concurrency is limited by ``servers`` if given, else only by the
        pools in front of it.
    pool_size
        Connections of a pool (required for a pool).
    servers
        Most concurrent queries of a database (optional).
    service_time
        Mean own work per request, in s: a database's query time; for a pool,
        any time a connection is held beyond its calls (usually 0).
    queue_timeout
        Longest wait for a connection, in s (pool; ``inf``: no timeout).
    queue_limit
        Most requests waiting for a connection (pool; ``inf``: no limit).
    cancel_abandoned
        Pool: a waiting request whose caller has given up leaves at once.
    contention
        Database: with ``b`` busy connections each query takes
        ``service_time * (1 + contention * (b - 1))``.
    tables
        Database: its tables, each a node named ``database.table``.
    description
        Free text.
    """

    name: Name = Field(description="unique node name")
    kind: Literal["pool", "database"] = Field(
        description="pool (connection proxy) or database"
    )
    pool_size: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="connections of a pool"
    )
    servers: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="most concurrent queries of a database"
    )
    service_time: FiniteNonnegative = Field(
        default=0.0, description="s, mean own work per request"
    )
    queue_timeout: Annotated[float, Field(gt=0.0)] = Field(
        default=math.inf, description="s, longest wait for a connection (pool)"
    )
    queue_limit: Annotated[float, Field(ge=0.0)] = Field(
        default=math.inf, description="most requests waiting for a connection (pool)"
    )
    cancel_abandoned: bool = Field(
        default=False, description="a pool drops waits whose caller gave up"
    )
    contention: FiniteNonnegative = Field(
        default=0.0, description="database slowdown per extra busy connection"
    )
    tables: tuple[TableSpec, ...] = Field(
        default=(), description="tables of a database"
    )
    description: str = Field(default="", description="free text")

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> ResourceSpec:
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        if self.kind == "pool" and self.pool_size is None:
            problems.append((("pool_size",), "a pool needs a pool_size", None))
        pool_only = {
            "pool_size": self.pool_size is not None,
            "queue_timeout": not math.isinf(self.queue_timeout),
            "queue_limit": not math.isinf(self.queue_limit),
            "cancel_abandoned": self.cancel_abandoned,
        }
        database_only = {
            "servers": self.servers is not None,
            "contention": self.contention != 0.0,
            "tables": bool(self.tables),
        }
        wrong = database_only if self.kind == "pool" else pool_only
        problems.extend(
            ((name,), f"does not apply to a {self.kind}", getattr(self, name))
            for name, present in wrong.items()
            if present
        )
        if not (math.isinf(self.queue_limit) or self.queue_limit.is_integer()):
            problems.append((("queue_limit",), "must be a whole number or inf", None))
        problems.extend(_duplicate_names(self.tables, ("tables",)))
        _raise_problems("ResourceSpec", problems)
        return self


class CallSpec(_Spec):
    """Calls from one node to another, with the caller's timeout and retries.

    Attributes
    ----------
    caller, callee
        Node names.
    calls_per_request
        Mean number of calls per request of the caller (a share below 1 when
        only some requests make the call).
    timeout
        How long the caller waits for one attempt, in s (``inf``: it waits for
        the callee's answer however long).
    max_retries
        Retries after the first attempt (``R``; ``R + 1`` attempts at most).
    backoff
        Delays between retries.
    retry_budget
        Retries allowed as a share of first attempts (``inf``: unlimited), so
        attempts per call are at most ``1 + retry_budget``.
    cancels_on_timeout
        When the caller gives up on an attempt (its own timeout, or its own
        caller cancelling it), the callee's work for that attempt stops.
    """

    caller: Name = Field(description="calling node")
    callee: Name = Field(description="called node")
    calls_per_request: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = Field(
        default=1.0, description="mean calls per request of the caller"
    )
    timeout: Annotated[float, Field(gt=0.0)] = Field(
        default=math.inf, description="s, the caller's timeout per attempt (inf: none)"
    )
    max_retries: Annotated[int, Field(ge=0)] = Field(
        default=0, description="retries after the first attempt"
    )
    backoff: BackoffSpec = Field(
        default_factory=BackoffSpec, description="delays between retries"
    )
    retry_budget: Annotated[float, Field(ge=0.0)] = Field(
        default=math.inf, description="retries per first attempt (inf: unlimited)"
    )
    cancels_on_timeout: bool = Field(
        default=False, description="giving up stops the callee's work"
    )


class GraphSpec(_Spec):
    """A service dependency graph: services, resources and the calls between them.

    Names are unique across services, resources and tables (a table is named
    ``database.table``). Every call names known nodes, at most one call joins
    a caller to a callee, and tables make no calls. Self-calls and cycles are
    allowed; the analysis reports them.

    Examples
    --------
    >>> spec = GraphSpec.model_validate({
    ...     "services": [{"name": "web", "entry_rate": 100.0}],
    ...     "resources": [
    ...         {"name": "proxy", "kind": "pool", "pool_size": 50},
    ...         {"name": "db", "kind": "database", "service_time": 0.2},
    ...     ],
    ...     "calls": [
    ...         {"caller": "web", "callee": "proxy"},
    ...         {"caller": "proxy", "callee": "db"},
    ...     ],
    ... })
    >>> [s.name for s in spec.services]
    ['web']
    """

    services: tuple[ServiceSpec, ...] = Field(default=(), description="services")
    resources: tuple[ResourceSpec, ...] = Field(
        default=(), description="connection pools and databases"
    )
    calls: tuple[CallSpec, ...] = Field(default=(), description="calls between nodes")
    description: str = Field(default="", description="free text")

    @model_validator(mode="after")
    def _references_are_known(self) -> GraphSpec:
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        if not self.services and not self.resources:
            problems.append(
                ((), "a graph needs at least one service or resource", None)
            )
        problems.extend(_duplicate_names(self.services, ("services",)))
        problems.extend(_duplicate_names(self.resources, ("resources",)))
        problems.extend(self._name_clashes())
        problems.extend(self._call_problems())
        _raise_problems("GraphSpec", problems)
        return self

    def _name_clashes(self) -> list[tuple[tuple[str | int, ...], str, object]]:
        """Names used by both a service and a resource, or a resource and a table."""
        seen = {s.name: ("services", i) for i, s in enumerate(self.services)}
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        for i, resource in enumerate(self.resources):
            if resource.name in seen:
                problems.append(
                    (
                        ("resources", i, "name"),
                        "is already a service name",
                        resource.name,
                    )
                )
            seen.setdefault(resource.name, ("resources", i))
        for i, resource in enumerate(self.resources):
            for j, table in enumerate(resource.tables):
                full = f"{resource.name}.{table.name}"
                if full in seen:
                    loc = ("resources", i, "tables", j, "name")
                    problems.append((loc, "makes a node name already in use", full))
        return problems

    def _call_problems(self) -> list[tuple[tuple[str | int, ...], str, object]]:
        """Return the calls naming unknown nodes, made by tables, or repeated."""
        kinds = self.node_kinds
        problems: list[tuple[tuple[str | int, ...], str, object]] = []
        pairs: set[tuple[str, str]] = set()
        for i, call in enumerate(self.calls):
            for end in ("caller", "callee"):
                name = getattr(call, end)
                if name not in kinds:
                    problems.append((("calls", i, end), "names no node", name))
            if kinds.get(call.caller) == "table":
                problems.append(
                    (
                        ("calls", i, "caller"),
                        "is a table (tables make no calls)",
                        call.caller,
                    )
                )
            if (call.caller, call.callee) in pairs:
                rule = "repeats a call (merge them: add their calls_per_request)"
                problems.append((("calls", i), rule, f"{call.caller} -> {call.callee}"))
            pairs.add((call.caller, call.callee))
        return problems

    @property
    def node_kinds(self) -> dict[str, NodeKind]:
        """Every node name and its kind, services first, tables after their database."""
        kinds: dict[str, NodeKind] = {s.name: "service" for s in self.services}
        for resource in self.resources:
            kinds[resource.name] = resource.kind
            for table in resource.tables:
                kinds[f"{resource.name}.{table.name}"] = "table"
        return kinds


def _duplicate_names(
    items: Sequence[ServiceSpec | ResourceSpec | TableSpec], prefix: tuple[str, ...]
) -> list[tuple[tuple[str | int, ...], str, object]]:
    """Return a problem for each item whose name an earlier item already used."""
    seen: set[str] = set()
    problems: list[tuple[tuple[str | int, ...], str, object]] = []
    for i, item in enumerate(items):
        if item.name in seen:
            problems.append(
                ((*prefix, i, "name"), "repeats an earlier name", item.name)
            )
        seen.add(item.name)
    return problems


def _raise_problems(
    title: str, problems: list[tuple[tuple[str | int, ...], str, object]]
) -> None:
    """Raise one pydantic error listing every problem at its own location."""
    if not problems:
        return
    details = [
        InitErrorDetails(
            # Braces are escaped: pydantic formats the message as a template.
            type=PydanticCustomError(
                "graph_rule", rule.replace("{", "{{").replace("}", "}}")
            ),
            loc=loc,
            input=value,
        )
        for loc, rule, value in problems
    ]
    raise ValidationError.from_exception_data(title, details)
