"""Hypothesis strategies shared by the test modules.

Each strategy draws parameters in the units of the public API: rates per
second, times in seconds, whole numbers of servers.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import numpy as np
from hypothesis import strategies as st

__all__ = [
    "abandonment_rates",
    "birth_death_chains",
    "decimal_ranges",
    "failure_probabilities",
    "few_servers",
    "fluid_scenarios",
    "loads_per_server",
    "queue_rooms",
    "retry_chains",
    "retry_counts",
    "servers",
    "service_dags",
    "service_rates",
    "timeouts",
    "utilizations",
    "vulnerable_scenarios",
]

servers = st.integers(min_value=1, max_value=500)
service_rates = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)
utilizations = st.floats(min_value=1e-4, max_value=0.999, allow_nan=False)

# Steady-state models (erlang, mmc, mmck, erlang_a, mmcd).
few_servers = st.integers(min_value=1, max_value=40)
loads_per_server = st.floats(min_value=1e-3, max_value=3.0, allow_nan=False)
queue_rooms = st.integers(min_value=0, max_value=60)
abandonment_rates = st.floats(min_value=1e-2, max_value=1e2, allow_nan=False)
timeouts = st.floats(min_value=1e-3, max_value=1e2, allow_nan=False)


# Service graphs (graph): small random DAGs as `GraphSpec` mappings. Calls go
# from a lower to a higher node index, so every draw is acyclic; small enough
# for brute-force path enumeration as the slow reference.
@st.composite
def service_dags(draw: st.DrawFn, max_nodes: int = 6) -> dict[str, Any]:
    """Draw services ``s0 .. s(n-1)`` with entry traffic and retrying calls."""
    size = draw(st.integers(min_value=1, max_value=max_nodes))
    rates = st.one_of(st.just(0.0), st.floats(min_value=0.1, max_value=100.0))
    services = [{"name": f"s{i}", "entry_rate": draw(rates)} for i in range(size)]
    pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    budgets = st.one_of(st.just(math.inf), st.floats(min_value=0.0, max_value=2.0))
    calls = [
        {
            "caller": f"s{i}",
            "callee": f"s{j}",
            "calls_per_request": draw(st.floats(min_value=0.1, max_value=3.0)),
            "max_retries": draw(st.integers(min_value=0, max_value=3)),
            "retry_budget": draw(budgets),
        }
        for i, j in sorted(chosen)
    ]
    return {"services": services, "calls": calls}


# Scenarios for the fluid model (scenario, fluid, equilibria): small systems
# (a few dozen connections, minutes of replay) so one replay takes a few tens of
# milliseconds, with every feature switched on at random.
@st.composite
def fluid_scenarios(
    draw: st.DrawFn,
    *,
    contention: bool = True,
    breaker: bool = True,
    crashes: bool = True,
    fast_service: bool = False,
) -> dict[str, Any]:
    """Draw a valid scenario mapping with a lock and, at random, other events.

    ``fast_service``: the mean service time is at most a tenth of the client
    timeout, so that (almost) no request is late in the good state;
    ``contention``, ``breaker`` and ``crashes`` switch those mechanisms off.
    """
    pool = draw(st.integers(min_value=5, max_value=40))
    client_timeout = draw(st.floats(min_value=2.0, max_value=20.0))
    longest = min(1.0, client_timeout / 10.0) if fast_service else 1.0
    service_time = draw(st.floats(min_value=0.05, max_value=longest))
    load = draw(st.floats(min_value=0.1, max_value=0.95))
    queue_timeout = draw(st.floats(min_value=2.0, max_value=30.0))
    horizon = draw(st.floats(min_value=60.0, max_value=150.0))
    initial = draw(st.floats(min_value=0.0, max_value=2.0))
    web: dict[str, Any] = {
        "pods": draw(st.integers(min_value=1, max_value=6)),
        "restart_delay": draw(st.floats(min_value=0.0, max_value=10.0)),
        "init_queries": draw(st.integers(min_value=0, max_value=3)),
        "crash_failure_share": draw(st.floats(min_value=0.2, max_value=0.8)),
    }
    if crashes and draw(st.booleans()):
        web["crash_after"] = draw(st.floats(min_value=2.0, max_value=20.0))
        if draw(st.booleans()):
            # Health checks that query the database; at least one fluid step.
            step = min(client_timeout, queue_timeout) / 12.0
            web["probe_timeout"] = draw(st.floats(min_value=step, max_value=10.0))
    if draw(st.booleans()):
        web["mode"] = "bounded"
        web["concurrency_per_pod"] = draw(st.integers(min_value=1, max_value=30))
    if breaker and draw(st.booleans()):
        web["circuit_breaker"] = {
            "failure_threshold": draw(st.floats(min_value=0.1, max_value=0.9)),
            "open_duration": draw(st.floats(min_value=1.0, max_value=20.0)),
            "probe_share": draw(st.floats(min_value=0.05, max_value=1.0)),
        }
    events: list[dict[str, Any]] = [
        {
            "kind": "lock",
            # The replay starts empty; the lock comes after the warm-up.
            "at": draw(st.floats(min_value=10.0 * service_time, max_value=25.0)),
            "duration": draw(st.floats(min_value=1.0, max_value=40.0)),
            "table": "hot",
        }
    ]
    optional = {
        "rollback": {"kind": "rollback", "at": 30.0, "duration": 20.0},
        "shed": {"kind": "shed", "at": 10.0, "duration": 15.0, "fraction": 0.4},
        "capacity": {"kind": "capacity", "at": 25.0, "duration": 10.0, "fraction": 0.3},
        "cold_restart": {"kind": "cold_restart", "at": 50.0, "duration": 5.0},
    }
    chosen = draw(st.lists(st.sampled_from(sorted(optional)), unique=True))
    events.extend(optional[name] for name in chosen)
    share = draw(st.floats(min_value=0.1, max_value=1.0))
    tables = [{"name": "hot", "share": share}]
    if share < 1.0:
        tables.append({"name": "rest", "share": 1.0 - share})
    return {
        "scenario": {
            "name": "generated",
            "horizon": horizon,
            "time_step": min(client_timeout, queue_timeout) / 12.0,
        },
        "clients": {
            "request_rate": load * pool / service_time,
            "timeout": client_timeout,
            "max_retries": draw(st.integers(min_value=0, max_value=3)),
            "retry_budget": draw(
                st.one_of(st.just(math.inf), st.floats(min_value=0.05, max_value=2.0))
            ),
            "backoff": {
                "initial": initial,
                "multiplier": draw(st.floats(min_value=1.0, max_value=3.0)),
                "cap": initial + draw(st.floats(min_value=0.0, max_value=8.0)),
                "jitter": draw(st.sampled_from(["none", "full", "equal"])),
            },
        },
        "web": web,
        "proxy": {
            "pool_size": pool,
            "queue_timeout": queue_timeout,
            "queue_limit": draw(
                st.one_of(st.just(math.inf), st.floats(min_value=0.0, max_value=400.0))
            ),
            "cancel_abandoned": draw(st.booleans()),
        },
        "database": {
            "service_time": service_time,
            "contention": draw(st.floats(min_value=0.0, max_value=0.05))
            if contention
            else 0.0,
            "tables": tables,
        },
        "events": events,
    }


# Retry amplification (retries): per-attempt failure probabilities over the
# closed interval, and retry limits as configured in practice.
failure_probabilities = st.floats(min_value=0.0, max_value=1.0)
retry_counts = st.integers(min_value=0, max_value=20)


# Parameter sweeps (sweep): ranges start:stop:step typed as decimal text, as on
# the command line, counting up or down; stop may fall between two steps.
@st.composite
def decimal_ranges(draw: st.DrawFn) -> tuple[str, Decimal, Decimal, int]:
    """Draw ``(text, start, step, count)`` of a valid ``start:stop:step`` range."""
    places = draw(st.integers(min_value=0, max_value=3))
    start = Decimal(draw(st.integers(min_value=-(10**5), max_value=10**5)))
    step_units = draw(st.integers(min_value=1, max_value=10**4))
    count = draw(st.integers(min_value=1, max_value=200))
    short = draw(st.integers(min_value=0, max_value=step_units - 1))
    sign = draw(st.sampled_from([1, -1]))
    start = start.scaleb(-places)
    step = Decimal(sign * step_units).scaleb(-places)
    stop = start + step * (count - 1) + Decimal(sign * short).scaleb(-places)
    return f"{start}:{stop}:{step}", start, step, count


# Limits (limits): small systems with a self-sustaining bad state (every served
# attempt late once the queue is full, retries that outrun the pool), no breaker
# and no crashes (the bisections assume a verdict monotone in the trigger), fast
# service (no late work at normal load) and a long quiet horizon after the lock.
@st.composite
def vulnerable_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """Draw a valid scenario mapping whose equilibria are 'vulnerable'."""
    pool = draw(st.integers(min_value=5, max_value=30))
    client_timeout = draw(st.floats(min_value=2.0, max_value=10.0))
    service_time = draw(st.floats(min_value=0.05, max_value=client_timeout / 10.0))
    load = draw(st.floats(min_value=0.3, max_value=0.8))
    # (R + 1) lambda > c mu: the retries alone keep a full queue full.
    retries = draw(st.integers(min_value=math.ceil(1.0 / load), max_value=4))
    share = draw(st.floats(min_value=0.3, max_value=1.0))
    tables = [{"name": "hot", "share": share}]
    if share < 1.0:
        tables.append({"name": "rest", "share": 1.0 - share})
    return {
        "scenario": {
            "name": "vulnerable",
            "horizon": 600.0,
            "time_step": client_timeout / 12.0,
        },
        "clients": {
            "request_rate": load * pool / service_time,
            "timeout": client_timeout,
            "max_retries": retries,
            "backoff": {"initial": 0.5, "multiplier": 2.0, "cap": 2.0},
        },
        "web": {"pods": draw(st.integers(min_value=1, max_value=6))},
        "proxy": {
            "pool_size": pool,
            # Well above the client timeout: every attempt of a full queue is late.
            "queue_timeout": client_timeout * draw(st.floats(1.5, 3.0)),
        },
        "database": {"service_time": service_time, "tables": tables},
        "events": [
            {
                "kind": "lock",
                "at": draw(st.floats(min_value=10.0, max_value=20.0)),
                "duration": draw(st.floats(min_value=2.0, max_value=40.0)),
                "table": "hot",
            }
        ],
    }


# Markov chains (chain): small retry/timeout chains (at most a few thousand
# states) with every feature switched on at random; a finite queue limit keeps
# every draw stable whatever its load.
@st.composite
def retry_chains(draw: st.DrawFn) -> dict[str, Any]:
    """Draw `retrystorm.RetryChain` parameters small enough to solve in ms."""
    parameters: dict[str, Any] = {
        "arrival_rate": draw(st.floats(min_value=0.1, max_value=6.0)),
        "service_rate": draw(st.floats(min_value=0.2, max_value=3.0)),
        "servers": draw(st.integers(min_value=1, max_value=3)),
        "queue_limit": draw(st.integers(min_value=0, max_value=6)),
    }
    patience = draw(st.sampled_from(["none", "exponential", "timeout"]))
    if patience == "exponential":
        parameters["abandonment_rate"] = draw(st.floats(min_value=0.05, max_value=5.0))
    if patience == "timeout":
        parameters["timeout"] = draw(st.floats(min_value=0.2, max_value=10.0))
        parameters["timeout_phases"] = draw(st.integers(min_value=1, max_value=2))
    if patience != "none" and draw(st.booleans()):
        parameters["cancel_abandoned"] = False
        if draw(st.booleans()):
            parameters["orphan_timeout"] = draw(
                st.floats(min_value=0.1, max_value=10.0)
            )
    if draw(st.booleans()):
        parameters["retry_rate"] = draw(st.floats(min_value=0.05, max_value=5.0))
        parameters["retry_probability"] = draw(st.floats(min_value=0.0, max_value=1.0))
        parameters["orbit_limit"] = draw(st.integers(min_value=1, max_value=6))
    return parameters


# Birth-death chains (escape): rates spanning two decades either way, up to 30
# states, a start state above the target; small enough for a dense check.
@st.composite
def birth_death_chains(
    draw: st.DrawFn,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Draw ``(births, deaths, start, target)`` of a birth-death chain on 0..M."""
    size = draw(st.integers(min_value=2, max_value=30))
    rates = st.floats(min_value=1e-2, max_value=1e2)
    births = np.array(draw(st.lists(rates, min_size=size, max_size=size)))
    deaths = np.array(draw(st.lists(rates, min_size=size, max_size=size)))
    births[-1], deaths[0] = 0.0, 0.0
    target = draw(st.integers(min_value=0, max_value=size - 2))
    start = draw(st.integers(min_value=target + 1, max_value=size - 1))
    return births, deaths, start, target


# Service graphs with cycles (graph): services ``s0 .. s(n-1)``, some with a
# concurrency cap so that stalls saturate them, calls in both directions (so
# strongly connected components and self-calls occur), timeouts finite or
# absent; small enough for a naive fixed-point iteration as the reference.
@st.composite
def cyclic_service_graphs(draw: st.DrawFn, max_nodes: int = 6) -> dict[str, Any]:
    """Draw a service graph whose calls may loop, with caps and timeouts."""
    size = draw(st.integers(min_value=1, max_value=max_nodes))
    caps = st.one_of(st.none(), st.integers(min_value=1, max_value=20))
    services = [
        {
            "name": f"s{i}",
            "entry_rate": draw(st.sampled_from([0.0, 1.0, 10.0, 50.0])),
            "concurrency": draw(caps),
            "service_time": draw(st.sampled_from([0.0, 0.01, 0.2])),
        }
        for i in range(size)
    ]
    pairs = [(i, j) for i in range(size) for j in range(size)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=3 * size))
    calls = [
        {
            "caller": f"s{i}",
            "callee": f"s{j}",
            # Calls back or to oneself below 1 per request: a loop that
            # calls itself on every request would recurse without end.
            "calls_per_request": draw(
                st.sampled_from([0.05, 0.3, 0.6] if j <= i else [0.3, 1.0, 2.5])
            ),
            "timeout": draw(st.sampled_from([math.inf, 0.5, 5.0])),
            "max_retries": draw(st.integers(min_value=0, max_value=2)),
        }
        for i, j in chosen
    ]
    return {"services": services, "calls": calls}
