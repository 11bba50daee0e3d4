"""Scenario files: the system, its trigger and its assumptions, validated.

A scenario describes one system (clients that retry, a web tier of pods, a
connection proxy, a database) and what happens to it (a table lock, a rollback,
a cold restart ...). It is written in TOML and validated here before anything
is computed; a mistake is reported with the dotted path of the field, the rule
it breaks and the value received, all problems at once.

Units: seconds for times and durations, per second for rates, everywhere.

The file has these tables (every field is documented on its model below):

``[scenario]``
    name, description, horizon (s) and the fluid model's time step (s).
``[clients]`` and ``[clients.backoff]``
    fresh request rate (constant or a piecewise profile), client timeout,
    retries, retry budget and backoff.
``[web]`` and ``[web.circuit_breaker]``
    the tier's mode (``async`` or ``bounded``), pods, crash rules (failing
    connection requests, health checks on the database), restarts.
``[proxy]``
    pool size, queueing timeout, queue limit, cancellation of abandoned waits.
``[database]`` and ``[[database.tables]]``
    mean service time, contention, tables with the share of queries on each.
``[[events]]``
    ``lock``, ``capacity``, ``rollback``, ``cold_restart`` and ``shed``.
``[[assumptions]]``
    every value the facts do not give, with where it comes from.
``[[variants]]``
    named changes (remedies) applied on top of the scenario.
``[graph]`` (optional)
    the services, resources and calls around the tier, as a service
    dependency graph (`retrystorm.graph`); the single-tier models above
    leave it alone.

Dotted paths name a field in assumptions, variants, `Scenario.with_changes` and
`Scenario.numeric_fields`; items of a list are named by position
(``events.0.duration``, ``database.tables.0.share``).

References
----------
[Sendcloud2025] for the embedded incident scenario.

Examples
--------
>>> scenario = default_scenario()
>>> scenario.name
'incident-2025-09-16'
>>> scenario.proxy.queue_timeout
120.0
>>> scenario.variant("proxy-timeout-30s").proxy.queue_timeout
30.0
>>> scenario.with_changes({"clients.request_rate": 60.0}).clients.request_rate
60.0
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import math
import numbers
import os
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from retrystorm._graph_spec import GraphSpec
from retrystorm._toml import parse_toml_text, read_toml
from retrystorm.errors import ScenarioError

__all__ = [
    "Assumption",
    "Backoff",
    "CapacityEvent",
    "CircuitBreaker",
    "Clients",
    "ColdRestartEvent",
    "Database",
    "Event",
    "Header",
    "LockEvent",
    "Proxy",
    "RollbackEvent",
    "Scenario",
    "ShedEvent",
    "Table",
    "Variant",
    "Web",
    "default_scenario",
    "embedded_scenario",
    "embedded_scenario_names",
    "load_scenario",
    "parse_scenario",
]

DEFAULT_SCENARIO = "incident-2025-09-16"
# The fluid model keeps one ring-buffer bin per step of the longest timeout; a
# tenth of a timeout per step keeps the discretisation error of a timeout
# below 5 %, and the step cap bounds the memory of one replay.
_STEPS_PER_TIMEOUT = 10
_MAX_STEPS = 2_000_000
_SHARE_TOLERANCE = 1e-9
_VALUE_TOLERANCE = 1e-9
_FIXED_SECTIONS = ("assumptions", "variants")


# -- field types ---------------------------------------------------------------------


def _only_numbers(value: Any) -> Any:
    """Reject strings, booleans and NaN where a number is expected."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError("must be a number")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError("must be a number, not NaN")
    return value


def _finite(value: float) -> float:
    """Reject infinities where only finite numbers make sense."""
    if math.isinf(value):
        raise ValueError("must be finite")
    return value


Number = Annotated[float, BeforeValidator(_only_numbers), AfterValidator(_finite)]
NumberOrInf = Annotated[float, BeforeValidator(_only_numbers)]
Count = Annotated[int, BeforeValidator(_only_numbers)]
Fraction = Annotated[float, BeforeValidator(_only_numbers), Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    """Base of every scenario model: immutable, and unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# -- sections ------------------------------------------------------------------------


class Header(_Model):
    """The ``[scenario]`` table: what the scenario is and how long to replay it.

    Attributes
    ----------
    name
        Short name, shown in reports.
    description
        One or two sentences on what the scenario is.
    horizon
        End of the replay, in seconds after t = 0.
    time_step
        Step of the fluid model, in seconds (at most a tenth of the client
        timeout and of the proxy queueing timeout).
    """

    name: str = Field(min_length=1, description="short name shown in reports")
    description: str = Field(default="", description="what the scenario is")
    horizon: Number = Field(gt=0.0, description="s, end of the replay")
    time_step: Number = Field(default=0.25, gt=0.0, description="s, fluid model step")


class Backoff(_Model):
    """The ``[clients.backoff]`` table: delays between a failure and its retry.

    The delay before retry ``k`` (k = 1 for the first retry) is
    ``d_k = min(cap, initial * multiplier**(k - 1))`` seconds; jitter draws the
    actual delay from ``d_k`` exactly (``none``), uniformly on ``[0, d_k]``
    (``full``) or uniformly on ``[d_k / 2, d_k]`` (``equal``).

    Attributes
    ----------
    initial
        Seconds before the first retry (before jitter).
    multiplier
        Growth of the delay per retry (>= 1).
    cap
        Largest delay in seconds (>= initial).
    jitter
        ``"none"``, ``"full"`` or ``"equal"``.
    """

    initial: Number = Field(default=1.0, ge=0.0, description="s, delay before retry 1")
    multiplier: Number = Field(default=2.0, ge=1.0, description="growth of the delay")
    cap: Number = Field(default=30.0, ge=0.0, description="s, largest delay")
    jitter: Literal["none", "full", "equal"] = Field(
        default="full", description="jitter"
    )

    def delay(self, retry: int) -> float:
        """Return the delay before jitter ``d_k`` for retry ``retry`` (1-based)."""
        return min(self.cap, self.initial * self.multiplier ** (retry - 1))


def _default_backoff() -> Backoff:
    return Backoff()


class Clients(_Model):
    """The ``[clients]`` table: who sends requests and how they retry.

    Attributes
    ----------
    request_rate
        Fresh requests per second (constant); exclusive with `rate_profile`.
    rate_profile
        Piecewise-constant fresh request rate as ``(start s, rate /s)`` pairs,
        the first starting at 0.
    timeout
        Seconds a client waits for one attempt before giving up on it.
    max_retries
        Retries after the first attempt (R; R + 1 attempts in all).
    retry_budget
        Retries allowed as a share of fresh requests (a token bucket: each
        fresh request adds this many tokens, each retry spends one); ``inf``
        means unlimited.
    backoff
        Delays between a failure and the retry.
    """

    request_rate: Number | None = Field(
        default=None, ge=0.0, description="/s, fresh rate"
    )
    rate_profile: tuple[tuple[Number, Number], ...] | None = Field(
        default=None, min_length=1, description="[[start s, rate /s], ...]"
    )
    timeout: Number = Field(gt=0.0, description="s, client timeout per attempt")
    max_retries: Count = Field(ge=0, description="retries after the first attempt")
    retry_budget: NumberOrInf = Field(
        default=math.inf,
        ge=0.0,
        description="retries per fresh request (inf: unlimited)",
    )
    backoff: Backoff = Field(
        default_factory=_default_backoff, description="retry delays"
    )

    @property
    def longest_attempts_time(self) -> float:
        """Seconds a request takes when every attempt times out (s).

        ``(R + 1) T_c`` plus every backoff delay before jitter: the longest a
        client keeps one request alive.
        """
        delays = sum(self.backoff.delay(k) for k in range(1, self.max_retries + 1))
        return (self.max_retries + 1) * self.timeout + delays

    @property
    def peak_request_rate(self) -> float:
        """The largest fresh request rate in requests per second."""
        if self.rate_profile is None:
            return float(self.request_rate or 0.0)
        return max(rate for _, rate in self.rate_profile)

    def rate_at(self, times: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return the fresh request rate (per second) at each of ``times``."""
        if self.rate_profile is None:
            return np.full(np.shape(times), float(self.request_rate or 0.0))
        starts = np.array([start for start, _ in self.rate_profile])
        rates = np.array([rate for _, rate in self.rate_profile])
        index = np.searchsorted(starts, times, side="right") - 1
        return rates[np.clip(index, 0, len(rates) - 1)]

    def requests_between(self, start: float, end: float) -> float:
        """Return the expected number of fresh requests sent in ``[start, end)``."""
        if self.rate_profile is None:
            return float(self.request_rate or 0.0) * (end - start)
        total = 0.0
        bounds = [s for s, _ in self.rate_profile[1:]] + [math.inf]
        for (begin, rate), stop in zip(self.rate_profile, bounds, strict=True):
            overlap = min(end, stop) - max(start, begin)
            total += rate * max(0.0, overlap)
        return total


class CircuitBreaker(_Model):
    """The ``[web.circuit_breaker]`` table (absent: no breaker).

    Attributes
    ----------
    failure_threshold
        Opens when the share of failed connection requests exceeds this.
    open_duration
        Seconds it stays open; attempts fail fast meanwhile.
    probe_share
        Share of attempts let through while half-open.
    """

    failure_threshold: Number = Field(default=0.5, gt=0.0, lt=1.0, description="share")
    open_duration: Number = Field(default=10.0, gt=0.0, description="s open")
    probe_share: Number = Field(default=0.1, gt=0.0, le=1.0, description="share probed")


class Web(_Model):
    """The ``[web]`` table: the pods between the clients and the proxy.

    Attributes
    ----------
    mode
        ``"async"``: every attempt asks the proxy for a connection at once;
        ``"bounded"``: at most ``pods up * concurrency_per_pod`` attempts in
        flight, the excess rejected fast.
    pods
        Number of pods behind the load balancer.
    concurrency_per_pod
        Attempts in flight per pod (required in bounded mode, an error in
        async mode).
    crash_after
        Seconds: while the share of failed connection requests is above
        `crash_failure_share`, or while the pods' health checks fail (see
        `probe_timeout`), each up pod crashes at rate 1/crash_after.
        Absent: pods never crash.
    crash_failure_share
        Failure share above which pods crash.
    probe_timeout
        Seconds a pod's health check (a liveness probe that queries the
        database) waits for a connection before it fails. While the proxy's
        head-of-line wait exceeds it, health checks fail and up pods crash at
        rate 1/crash_after (with `crash_after` absent, failing checks restart
        nothing). The checks' own connection requests are not modelled: one
        per pod and probe period (10 s by default in Kubernetes) is a small
        load next to client traffic. Absent or ``inf``: the health checks do
        not depend on the database.
    restart_delay
        Seconds a crashed or restarted pod is down.
    init_queries
        Connection requests a pod makes when it starts (no client, no retry).
    circuit_breaker
        Optional breaker on connection requests.
    """

    mode: Literal["async", "bounded"] = Field(default="async", description="tier mode")
    pods: Count = Field(ge=1, description="pods behind the balancer")
    concurrency_per_pod: Count | None = Field(
        default=None, ge=1, description="bounded cap"
    )
    crash_after: Number | None = Field(default=None, gt=0.0, description="s to crash")
    crash_failure_share: Number = Field(
        default=0.5, ge=0.0, lt=1.0, description="share"
    )
    probe_timeout: NumberOrInf | None = Field(
        default=None, gt=0.0, description="s a health check waits for a connection"
    )
    restart_delay: Number = Field(default=0.0, ge=0.0, description="s a pod is down")
    init_queries: Count = Field(default=0, ge=0, description="queries per pod start")
    circuit_breaker: CircuitBreaker | None = Field(default=None, description="breaker")


class Proxy(_Model):
    """The ``[proxy]`` table: the connection pool in front of the database.

    Attributes
    ----------
    pool_size
        Connections to the database (c).
    queue_timeout
        Seconds a request may wait for a connection before failing (T_q).
    queue_limit
        Most requests waiting for a connection (``inf``: no limit); the
        excess is rejected fast.
    cancel_abandoned
        Whether a waiting request whose client gave up (or whose pod went
        down) is removed from the queue at once.
    """

    pool_size: Count = Field(ge=1, description="connections (c)")
    queue_timeout: Number = Field(gt=0.0, description="s, queueing timeout")
    queue_limit: NumberOrInf = Field(
        default=math.inf, ge=0.0, description="most waiting"
    )
    cancel_abandoned: bool = Field(default=False, description="drop abandoned waits")


class Table(_Model):
    """One ``[[database.tables]]`` entry: a table and the share of queries on it.

    Attributes
    ----------
    name
        Table name (events refer to it).
    share
        Share of requests whose query touches this table (shares sum to 1).
    """

    name: str = Field(min_length=1, description="table name")
    share: Number = Field(gt=0.0, le=1.0, description="share of queries")


def _one_table() -> tuple[Table, ...]:
    return (Table(name="all", share=1.0),)


class Database(_Model):
    """The ``[database]`` table.

    Attributes
    ----------
    service_time
        Mean seconds a request holds its connection (exponential).
    contention
        alpha >= 0: with b busy connections each serves at rate
        ``(1/service_time) / max(1, 1 + alpha (b - 1))``.
    tables
        Tables and the share of queries touching each; default one table
        ``all`` with share 1.
    max_connections
        Most connections the database accepts from all pods and proxies
        together (its ``max_connections``); absent: not stated.
    """

    service_time: Number = Field(gt=0.0, description="s, mean hold time")
    contention: Number = Field(default=0.0, ge=0.0, description="alpha")
    tables: tuple[Table, ...] = Field(
        default_factory=_one_table, min_length=1, description="tables"
    )
    max_connections: Count | None = Field(
        default=None, ge=1, description="most connections the database accepts"
    )


# -- events --------------------------------------------------------------------------


class _Event(_Model):
    """Fields every event has: a start and a duration in seconds."""

    at: Number = Field(ge=0.0, description="s, start")
    duration: Number = Field(gt=0.0, description="s, length")

    @property
    def end(self) -> float:
        """The time the event ends, in seconds."""
        return self.at + self.duration


class LockEvent(_Event):
    """A lock on `table`: queries on it hold their connection until it ends."""

    kind: Literal["lock"] = Field(description="event kind")
    table: str = Field(min_length=1, description="locked table")


class CapacityEvent(_Event):
    """The pool drops to `fraction` of its size (a degraded dependency)."""

    kind: Literal["capacity"] = Field(description="event kind")
    fraction: Number = Field(ge=0.0, lt=1.0, description="pool share left")


class RollbackEvent(_Event):
    """A rolling restart of every pod, evenly spread over `duration`."""

    kind: Literal["rollback"] = Field(description="event kind")


class ColdRestartEvent(_Event):
    """Everything stopped and emptied; every pod starts after `duration`."""

    kind: Literal["cold_restart"] = Field(description="event kind")


class ShedEvent(_Event):
    """The load balancer rejects `fraction` of arriving attempts fast."""

    kind: Literal["shed"] = Field(description="event kind")
    fraction: Number = Field(gt=0.0, le=1.0, description="share shed")


Event = Annotated[
    LockEvent | CapacityEvent | RollbackEvent | ColdRestartEvent | ShedEvent,
    Field(discriminator="kind"),
]
_EVENT_KINDS = frozenset({"lock", "capacity", "rollback", "cold_restart", "shed"})
_TRIGGER_KINDS = ("lock", "capacity")


# -- assumptions and variants --------------------------------------------------------


class Assumption(_Model):
    """A value the facts do not give, with where it comes from.

    Attributes
    ----------
    field
        Dotted path of the field (``clients.request_rate``).
    value
        The field's value (checked against the field).
    source
        Where the value comes from and why it was chosen.
    vary
        Whether a sensitivity analysis varies it (numeric fields only).
    """

    field: str = Field(min_length=1, description="dotted path")
    value: bool | int | float | str = Field(description="the field's value")
    source: str = Field(min_length=1, description="where it comes from and why")
    vary: bool = Field(default=True, description="varied in the sensitivity analysis")


class Variant(_Model):
    """A named change of the scenario (a remedy), applied by `Scenario.variant`.

    Attributes
    ----------
    name
        Variant name (no ``/``).
    description
        What it changes and why.
    set
        Dotted path -> new value (a value may be a whole table).
    add_events
        Events appended to the scenario's.
    """

    name: str = Field(min_length=1, pattern=r"^[^/]+$", description="name")
    description: str = Field(default="", description="what it changes")
    set: dict[str, Any] = Field(default_factory=dict, description="path -> value")
    add_events: tuple[Event, ...] = Field(default=(), description="events appended")


# -- the scenario --------------------------------------------------------------------


class _CrossFieldError(ValueError):
    """Rules that span fields, each with its own dotted path."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))


class Scenario(_Model):
    """A validated scenario: the system, its events, assumptions and variants.

    Build one with `load_scenario`, `parse_scenario` or `default_scenario`;
    each validates every field and every rule between fields.

    Attributes
    ----------
    scenario
        The ``[scenario]`` table (name, description, horizon, time step).
    clients, web, proxy, database
        The system, table by table.
    events
        Events in file order.
    assumptions
        Values the facts do not give.
    variants
        Named changes (remedies).
    graph
        The service dependency graph around the tier (the ``[graph]``
        table, see `retrystorm.graph.GraphSpec`), or None.
    """

    scenario: Header = Field(description="name, horizon (s), time step (s)")
    clients: Clients = Field(description="fresh requests, timeouts, retries")
    web: Web = Field(description="the pods in front of the proxy")
    proxy: Proxy = Field(description="the connection pool and its queue")
    database: Database = Field(description="service time (s) and tables")
    events: tuple[Event, ...] = Field(default=(), description="events in file order")
    assumptions: tuple[Assumption, ...] = Field(
        default=(), description="assumed values"
    )
    variants: tuple[Variant, ...] = Field(default=(), description="named changes")
    graph: GraphSpec | None = Field(
        default=None, description="services, resources and calls around the tier"
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Scenario:
        problems = [
            *_clients_problems(self.clients),
            *_web_problems(self.web),
            *_table_problems(self.database.tables),
            *_event_problems(self),
            *_step_problems(self),
            *_assumption_problems(self),
            *_variant_problems(self),
        ]
        if problems:
            raise _CrossFieldError(problems)
        return self

    # -- convenience views ------------------------------------------------

    @property
    def name(self) -> str:
        """The scenario's name."""
        return self.scenario.name

    @property
    def horizon(self) -> float:
        """End of the replay in seconds."""
        return self.scenario.horizon

    @property
    def time_step(self) -> float:
        """Step of the fluid model in seconds."""
        return self.scenario.time_step

    @property
    def trigger_end(self) -> float | None:
        """End of the last lock or capacity event (s), or None without one."""
        ends = [event.end for event in self.events if event.kind in _TRIGGER_KINDS]
        return max(ends, default=None)

    @property
    def trigger_start(self) -> float | None:
        """Start of the first lock or capacity event (s), or None without one."""
        starts = [event.at for event in self.events if event.kind in _TRIGGER_KINDS]
        return min(starts, default=None)

    @property
    def first_intervention(self) -> float | None:
        """Time of the first cold restart (s), or None without one."""
        starts = [event.at for event in self.events if event.kind == "cold_restart"]
        return min(starts, default=None)

    @property
    def variant_names(self) -> tuple[str, ...]:
        """The names of the scenario's variants, in file order."""
        return tuple(variant.name for variant in self.variants)

    @property
    def vary_assumptions(self) -> tuple[Assumption, ...]:
        """The assumptions a sensitivity analysis varies."""
        return tuple(a for a in self.assumptions if a.vary)

    # -- derived scenarios ----------------------------------------------------

    def with_changes(self, changes: Mapping[str, Any]) -> Scenario:
        """Return a copy with fields changed by dotted path, validated again.

        An assumption on a changed field takes the new value; one on a field
        the change removes, or sets to None, is dropped.

        Parameters
        ----------
        changes
            Dotted path -> new value (``{"proxy.queue_timeout": 30.0}``); a
            value may be a whole table (``{"web.circuit_breaker": {}}``).

        Returns
        -------
        Scenario
            The changed scenario.

        Raises
        ------
        ScenarioError
            A path does not name a field (the message suggests close names),
            or the changed scenario breaks a rule.
        """
        data = _plain(self.model_dump())
        problems = [
            problem
            for path, value in changes.items()
            for problem in _set_path(data, path, value)
        ]
        if problems:
            raise ScenarioError(f"<changes to {self.name}>", problems)
        _refresh_assumptions(data, list(changes))
        return parse_scenario(data, source=f"<changes to {self.name}>")

    def variant(self, name: str) -> Scenario:
        """Return the scenario with variant ``name`` applied.

        Raises
        ------
        ScenarioError
            No variant has that name (the message lists the names).
        """
        for variant in self.variants:
            if variant.name == name:
                return _apply_variant(self, variant)
        known = ", ".join(self.variant_names) or "none"
        message = f"unknown variant {name!r} (known: {known})"
        raise ScenarioError(self.name, [("variants", message)])

    def numeric_fields(self) -> dict[str, float]:
        """Return every numeric field by dotted path (assumptions, variants out).

        Infinite values (``queue_limit = inf``) are included as ``inf``;
        absent optional fields are left out.
        """
        data = _plain(self.model_dump())
        return {
            path: float(value)
            for path, value in _leaves(data)
            if _is_number(value) and path.split(".")[0] not in _FIXED_SECTIONS
        }

    def field_value(self, path: str) -> Any:
        """Return the value at dotted ``path``.

        Raises
        ------
        ScenarioError
            ``path`` does not name a field.
        """
        data = _plain(self.model_dump())
        found, value = _get_path(data, path)
        if not found:
            raise ScenarioError(self.name, [(path, _unknown_path(data, path))])
        return value


# -- rules between fields ------------------------------------------------------------


def _clients_problems(clients: Clients) -> Iterator[tuple[str, str]]:
    """Exactly one demand description, and a well-formed profile."""
    if (clients.request_rate is None) == (clients.rate_profile is None):
        yield (
            "clients.request_rate",
            (
                "exactly one of request_rate and rate_profile must be given "
                f"(got request_rate={clients.request_rate!r}, "
                f"rate_profile={clients.rate_profile!r})"
            ),
        )
    if clients.backoff.cap < clients.backoff.initial:
        yield (
            "clients.backoff.cap",
            (
                f"must be at least backoff.initial = {clients.backoff.initial} "
                f"(got {clients.backoff.cap!r})"
            ),
        )
    yield from _profile_problems(clients.rate_profile or ())


def _profile_problems(
    profile: tuple[tuple[float, float], ...],
) -> Iterator[tuple[str, str]]:
    """Check that a profile starts at 0, its starts increase, its rates are >= 0."""
    if profile and profile[0][0] != 0.0:
        yield ("clients.rate_profile.0.0", f"must be 0 (got {profile[0][0]!r})")
    for index, (start, rate) in enumerate(profile):
        if rate < 0.0:
            yield (f"clients.rate_profile.{index}.1", f"must be >= 0 (got {rate!r})")
        if index and start <= profile[index - 1][0]:
            yield (
                f"clients.rate_profile.{index}.0",
                (
                    f"start times must increase (got {start!r} after "
                    f"{profile[index - 1][0]!r})"
                ),
            )


def _web_problems(web: Web) -> Iterator[tuple[str, str]]:
    """Check that the concurrency cap comes with the bounded mode only."""
    if web.mode == "bounded" and web.concurrency_per_pod is None:
        yield (
            "web.concurrency_per_pod",
            "is required when web.mode = 'bounded' (got None)",
        )
    if web.mode == "async" and web.concurrency_per_pod is not None:
        yield (
            "web.concurrency_per_pod",
            (
                "is only allowed when web.mode = 'bounded' "
                f"(got {web.concurrency_per_pod!r} with mode 'async')"
            ),
        )


def _table_problems(tables: tuple[Table, ...]) -> Iterator[tuple[str, str]]:
    """Table names are unique and the shares sum to 1."""
    names = [table.name for table in tables]
    for index, name in enumerate(names):
        if name in names[:index]:
            yield (f"database.tables.{index}.name", f"is a duplicate (got {name!r})")
    total = sum(table.share for table in tables)
    if abs(total - 1.0) > _SHARE_TOLERANCE:
        yield ("database.tables", f"shares must sum to 1 (got {total!r})")


def _event_problems(scenario: Scenario) -> Iterator[tuple[str, str]]:
    """Check that locks name a known table.

    Events may start at or after the horizon (a replay shortened to look at
    the start of a scenario): they then have no effect.
    """
    names = [table.name for table in scenario.database.tables]
    for index, event in enumerate(scenario.events):
        if event.kind == "lock" and event.table not in names:
            yield (
                f"events.{index}.table",
                (
                    f"must name a table of database.tables ({', '.join(names)}) "
                    f"(got {event.table!r})"
                ),
            )


def _step_problems(scenario: Scenario) -> Iterator[tuple[str, str]]:
    """Check that the step resolves the timeouts and bounds the replay's memory."""
    step = scenario.time_step
    shortest = min(scenario.clients.timeout, scenario.proxy.queue_timeout)
    if step * _STEPS_PER_TIMEOUT > shortest:
        yield (
            "scenario.time_step",
            (
                f"must be at most a tenth of the shortest timeout ({shortest!r} s) "
                f"(got {step!r})"
            ),
        )
    probe = scenario.web.probe_timeout
    if probe is not None and step > probe:
        # The fluid model reads the head-of-line wait in whole steps: a
        # coarser step could not tell a probe's wait from any queue at all.
        yield (
            "scenario.time_step",
            f"must be at most web.probe_timeout ({probe!r} s) (got {step!r})",
        )
    if scenario.horizon / step > _MAX_STEPS:
        yield (
            "scenario.time_step",
            (
                f"must give at most {_MAX_STEPS:,} steps over the horizon "
                f"(got {step!r} for horizon {scenario.horizon!r})"
            ),
        )


def _assumption_problems(scenario: Scenario) -> Iterator[tuple[str, str]]:
    """Each assumption names a field once and repeats its value."""
    data = _plain(scenario.model_dump())
    seen: set[str] = set()
    for index, assumption in enumerate(scenario.assumptions):
        path = f"assumptions.{index}"
        if assumption.field in seen:
            yield (f"{path}.field", f"is a duplicate (got {assumption.field!r})")
        seen.add(assumption.field)
        found, value = _get_path(data, assumption.field)
        if not found or assumption.field.split(".")[0] in _FIXED_SECTIONS:
            yield (f"{path}.field", _unknown_path(data, assumption.field))
        elif assumption.vary and not _is_number(value):
            yield (
                f"{path}.vary",
                (
                    f"must be false for a non-numeric field (got true for "
                    f"{assumption.field} = {value!r})"
                ),
            )
        elif not _same_value(value, assumption.value):
            yield (
                f"{path}.value",
                (
                    f"must equal the value of {assumption.field} ({value!r}) "
                    f"(got {assumption.value!r})"
                ),
            )


def _variant_problems(scenario: Scenario) -> Iterator[tuple[str, str]]:
    """Variant names are unique and each variant gives a valid scenario."""
    names: list[str] = []
    for index, variant in enumerate(scenario.variants):
        if variant.name in names:
            yield (f"variants.{index}.name", f"is a duplicate (got {variant.name!r})")
        names.append(variant.name)
        try:
            _apply_variant(scenario, variant)
        except ScenarioError as error:
            for path, message in error.problems:
                yield _variant_problem(index, variant, path, message)


def _variant_problem(
    index: int, variant: Variant, path: str, message: str
) -> tuple[str, str]:
    """Name a problem of a variant by the ``set`` entry that caused it, if any."""
    for changed in variant.set:
        if path == changed or path.startswith(changed + "."):
            return f"variants.{index}.set.{path}", message
    return f"variants.{index}", f"{path}: {message}" if path else message


def _apply_variant(scenario: Scenario, variant: Variant) -> Scenario:
    """Return ``scenario`` with ``variant``'s changes and events, without variants."""
    data = _plain(scenario.model_dump())
    problems = [
        problem
        for path, value in variant.set.items()
        for problem in _set_path(data, path, value)
    ]
    if problems:
        raise ScenarioError(variant.name, problems)
    _refresh_assumptions(data, list(variant.set))
    data["events"] = [
        *data["events"],
        *_plain([e.model_dump() for e in variant.add_events]),
    ]
    data["variants"] = []
    data["scenario"]["name"] = f"{scenario.name}/{variant.name}"
    if variant.description:
        data["scenario"]["description"] = variant.description
    return parse_scenario(data, source=f"<variant {variant.name}>")


# -- dotted paths --------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Return a deep copy with tuples turned into lists (so paths can be set)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return copy.copy(value)


def _children(node: Any) -> Iterator[tuple[str, Any]]:
    """Yield (segment, child) for a dict or list node."""
    if isinstance(node, dict):
        yield from ((str(key), item) for key, item in node.items())
    elif isinstance(node, list):
        yield from ((str(index), item) for index, item in enumerate(node))


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (dotted path, value) for every leaf below ``node``."""
    for segment, child in _children(node):
        path = f"{prefix}.{segment}" if prefix else segment
        if isinstance(child, dict | list):
            yield from _leaves(child, path)
        else:
            yield path, child


def _all_paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Yield every dotted path below ``node``, inner nodes included."""
    for segment, child in _children(node):
        path = f"{prefix}.{segment}" if prefix else segment
        yield path
        yield from _all_paths(child, path)


def _step(node: Any, segment: str) -> tuple[bool, Any]:
    """Return (found, child) for one path segment."""
    if isinstance(node, dict) and segment in node:
        return True, node[segment]
    if isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
        return True, node[int(segment)]
    return False, None


def _get_path(data: Any, path: str) -> tuple[bool, Any]:
    """Return (found, value) at dotted ``path``."""
    node = data
    for segment in path.split("."):
        found, node = _step(node, segment)
        if not found:
            return False, None
    return True, node


def _set_path(data: Any, path: str, value: Any) -> list[tuple[str, str]]:
    """Set ``value`` at ``path`` in place; return problems (unknown path)."""
    parent_path, _, last = path.rpartition(".")
    found, parent = _get_path(data, parent_path) if parent_path else (True, data)
    exists = found and _step(parent, last)[0]
    if not exists or path.split(".", maxsplit=1)[0] in _FIXED_SECTIONS:
        return [(path, _unknown_path(data, path))]
    if isinstance(parent, dict):
        parent[last] = _plain(value)
    else:
        parent[int(last)] = _plain(value)
    return []


def _unknown_path(data: Any, path: str) -> str:
    """Say that ``path`` names no field, suggesting the closest names."""
    candidates = [p for p in _all_paths(data) if p.split(".")[0] not in _FIXED_SECTIONS]
    close = difflib.get_close_matches(path, candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"does not name a field of the scenario (got {path!r}){hint}"


def _refresh_assumptions(data: dict[str, Any], changed: list[str]) -> None:
    """Give assumptions on changed fields their new value; drop removed ones.

    An assumption on (or below) a changed path takes the field's new value; one
    whose field the change removed (``events = []``) or switched off (set to
    None: ``web.crash_after = None``, pods never crash) is no longer an
    assumption of the scenario: an absent optional field assumes no value.
    """
    kept = []
    for assumption in data["assumptions"]:
        field = assumption["field"]
        if not any(field == path or field.startswith(path + ".") for path in changed):
            kept.append(assumption)
            continue
        found, value = _get_path(data, field)
        if found and value is not None:
            assumption["value"] = value
            kept.append(assumption)
    data["assumptions"] = kept


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (booleans are not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _same_value(field_value: Any, stated: Any) -> bool:
    """Whether an assumption's stated value equals the field's value."""
    if _is_number(field_value) and _is_number(stated):
        if math.isinf(field_value) or math.isinf(stated):
            return bool(field_value == stated)
        return math.isclose(field_value, stated, rel_tol=_VALUE_TOLERANCE, abs_tol=0.0)
    return bool(type(field_value) is type(stated) and field_value == stated)


# -- loading -------------------------------------------------------------------------


def _error_path(location: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into a dotted path (event tags removed)."""
    parts: list[str] = []
    for index, part in enumerate(location):
        after_index = index > 0 and isinstance(location[index - 1], int)
        if after_index and part in _EVENT_KINDS:
            continue
        parts.append(str(part))
    return ".".join(parts)


def _error_message(error: Mapping[str, Any]) -> str:
    """Phrase one pydantic error as 'rule (got value)'."""
    kind = error["type"]
    if kind == "missing":
        return "is required (got nothing)"
    if kind == "extra_forbidden":
        return f"is not a known field (got {error['input']!r})"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if kind == "graph_rule" and error["input"] is None:
        # A rule of the graph between fields: no single value to echo.
        return message
    return f"{message} (got {error['input']!r})"


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    """Every problem of a validation error as (dotted path, message)."""
    problems: list[tuple[str, str]] = []
    for item in error.errors():
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, _CrossFieldError):
            problems.extend(cause.problems)
            continue
        path = _error_path(item["loc"])
        message = _error_message(item)
        if item["type"] == "extra_forbidden":
            message += _field_hint(item["loc"])
        problems.append((path, message))
    return problems


def _field_hint(location: tuple[int | str, ...]) -> str:
    """Suggest the known field closest to an unknown one."""
    model: type[BaseModel] = Scenario
    for part in location[:-1]:
        if isinstance(part, int) or part in _EVENT_KINDS:
            continue
        annotation = model.model_fields.get(str(part))
        nested = _model_of(annotation.annotation if annotation else None)
        if nested is None:
            return ""
        model = nested
    close = difflib.get_close_matches(str(location[-1]), list(model.model_fields), n=2)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """Return the scenario model inside an annotation, if there is exactly one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _model_of(argument)
        if found is not None:
            return found
    return None


def parse_scenario(data: Mapping[str, Any], source: str = "<dict>") -> Scenario:
    """Validate a scenario given as nested mappings (as read from TOML).

    Parameters
    ----------
    data
        The scenario's tables.
    source
        Where the data came from, for messages.

    Returns
    -------
    Scenario
        The validated scenario.

    Raises
    ------
    ScenarioError
        Listing every broken rule as (dotted path, rule and value).

    Examples
    --------
    >>> parse_scenario({"scenario": {"name": "x", "horizon": 60.0}})
    Traceback (most recent call last):
    ...
    retrystorm.errors.ScenarioError: invalid scenario <dict>: clients: is required ...
    """
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        raise ScenarioError(source, _problems(error)) from None


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario file (TOML).

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    Scenario
        The validated scenario.

    Raises
    ------
    ScenarioError
        The file cannot be read, is not TOML, or breaks a rule.
    """
    return parse_scenario(read_toml(path), source=os.fspath(path))


def _parse_toml(text: str, source: str) -> Scenario:
    """Parse TOML text and validate it as a scenario."""
    return parse_scenario(parse_toml_text(text, source), source=source)


def embedded_scenario_names() -> tuple[str, ...]:
    """Return the names of the scenarios shipped with the package, sorted."""
    folder = importlib.resources.files("retrystorm") / "scenarios"
    names = (item.name for item in folder.iterdir() if item.name.endswith(".toml"))
    return tuple(sorted(name.removesuffix(".toml") for name in names))


def embedded_scenario(name: str) -> Scenario:
    """Return the embedded scenario ``name`` (see `embedded_scenario_names`).

    Raises
    ------
    ScenarioError
        No embedded scenario has that name.
    """
    if name not in embedded_scenario_names():
        known = ", ".join(embedded_scenario_names())
        raise ScenarioError(f"<embedded: {name}>", [("", f"is not embedded ({known})")])
    resource = importlib.resources.files("retrystorm") / "scenarios" / f"{name}.toml"
    return _parse_toml(resource.read_text(encoding="utf-8"), f"<embedded: {name}>")


def default_scenario() -> Scenario:
    """Return the embedded incident of 2025-09-16, the default scenario.

    References
    ----------
    [Sendcloud2025]
    """
    return embedded_scenario(DEFAULT_SCENARIO)
