"""``retrystorm queue``: steady-state numbers of one queue model.

Each subcommand builds one model from the library (`MMc`, `MMcK`, `ErlangA`,
`MMcD`) and prints its `summary` as a table with units, or as one JSON object
whose keys are the model's property names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Protocol

import typer
from rich.table import Table

from retrystorm._queue_model import QueueModel
from retrystorm.cli._common import app, console, emit_json, error_console, fail
from retrystorm.erlang_a import ErlangA
from retrystorm.mmc import MMc
from retrystorm.mmcd import MMcD
from retrystorm.mmck import MMcK

__all__ = ["erlang_a", "mmc", "mmcd", "mmck", "queue_app"]

queue_app = typer.Typer(
    name="queue",
    help=(
        "Steady-state numbers of one queue: M/M/c, M/M/c/K (a queue cap), "
        "Erlang-A (exponential patience) or M/M/c+D (a hard queueing timeout). "
        "Example: retrystorm queue mmc --arrival-rate 120 --service-rate 2.5 "
        "--servers 100"
    ),
    no_args_is_help=True,
)
app.add_typer(queue_app, name="queue")

# Row labels, with units, for every property a summary may contain.
_LABELS = {
    "utilization": "utilisation, offered λ/(cμ)",
    "occupancy": "occupancy, fraction of servers busy",
    "blocking_probability": "blocking probability",
    "abandonment_probability": "abandonment probability",
    "throughput": "throughput (requests/s)",
    "wait_probability": "probability of waiting",
    "mean_wait": "mean wait in queue (s)",
    "mean_wait_served": "mean wait of served requests (s)",
    "mean_queue_length": "mean queue length (requests)",
    "mean_response_time": "mean response time (s)",
    "mean_in_system": "mean number in system (requests)",
}

_UNSTABLE_NOTE = (
    "utilisation {rho:.6g} >= 1: the queue grows without bound, every arrival "
    "waits, and the mean waits and queue lengths do not exist."
)


class _Model(Protocol):
    """What the command needs of a model."""

    def summary(self) -> dict[str, float]: ...


def _number(option: str) -> Callable[[str], float]:
    """Return a parser for ``option`` that fails with one line on bad text."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            fail(f"`{option}` must be a number (got {text!r})")
        return int(value) if value.is_integer() and "." not in text else value

    return parse


def _required(option: str, value: float | None) -> Any:
    """Return ``value``, or fail with one line if the option was not given.

    The value goes to a model, which validates it (an integer count, a
    positive rate) and names the rule it breaks.
    """
    if value is None:
        fail(f"missing option --{option.replace('_', '-')}")
    return value


def _option(option: str, metavar: str, help_text: str) -> Any:
    """Return a numeric option without a default, read by `_number`."""
    return typer.Option(
        parser=_number(option), metavar=metavar, help=help_text, show_default=False
    )


ArrivalRate = Annotated[
    float | None,
    _option(
        "arrival_rate", "PER_S", "Poisson arrival rate, requests per second (required)."
    ),
]
ServiceRate = Annotated[
    float | None,
    _option(
        "service_rate",
        "PER_S",
        "Service rate of one server, requests per second (required).",
    ),
]
Servers = Annotated[
    float | None,
    _option(
        "servers",
        "COUNT",
        "Number of servers (connections, workers), a positive integer (required).",
    ),
]
Capacity = Annotated[
    float | None,
    _option(
        "capacity",
        "COUNT",
        "Most requests in the system, waiting plus in service (required, >= servers).",
    ),
]
AbandonmentRate = Annotated[
    float | None,
    _option(
        "abandonment_rate",
        "PER_S",
        "Rate at which one waiting request gives up, per second: "
        "1 / mean patience (required).",
    ),
]
Timeout = Annotated[
    float | None,
    _option(
        "timeout",
        "SECONDS",
        "Every waiting request gives up after exactly this long, seconds (required).",
    ),
]
JsonOutput = Annotated[
    bool, typer.Option("--json", help="Print one JSON object keyed by property name.")
]


def _report(model: _Model, title: str, json_output: bool) -> None:
    """Print the model's summary as a table or JSON; mark what does not exist."""
    summary = model.summary()
    unstable = isinstance(model, MMc) and not model.stable
    values: dict[str, Any] = {
        name: None if unstable and math.isinf(value) else value
        for name, value in summary.items()
    }
    note = _UNSTABLE_NOTE.format(rho=summary["utilization"]) if unstable else None
    if json_output:
        emit_json(values)
        if note:
            error_console.print(f"note: {note}", highlight=False, soft_wrap=True)
        return
    table = Table(title=title, title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in values.items():
        shown = "does not exist" if value is None else f"{value:.6g}"
        table.add_row(_LABELS[name], shown)
    console.print(table)
    if note:
        console.print(f"note: {note}", highlight=False)


def _title(kind: str, model: QueueModel, extra: str = "") -> str:
    """Return a table title: the model's kind, its rates and servers, ``extra``."""
    return (
        f"{kind}  λ = {model.arrival_rate:g}/s, μ = {model.service_rate:g}/s, "
        f"c = {model.servers}{extra}"
    )


def _rates(
    arrival_rate: float | None, service_rate: float | None, servers: float | None
) -> dict[str, Any]:
    """Return the three options every model takes, checked for presence."""
    return {
        "arrival_rate": _required("arrival_rate", arrival_rate),
        "service_rate": _required("service_rate", service_rate),
        "servers": _required("servers", servers),
    }


@queue_app.command()
def mmc(
    arrival_rate: ArrivalRate = None,
    service_rate: ServiceRate = None,
    servers: Servers = None,
    json_output: JsonOutput = False,
) -> None:
    """M/M/c: c servers and an unbounded first-come-first-served queue.

    Example: retrystorm queue mmc --arrival-rate 120 --service-rate 2.5 --servers 100
    """
    model = MMc(**_rates(arrival_rate, service_rate, servers))
    _report(model, _title("M/M/c", model), json_output)


@queue_app.command()
def mmck(
    arrival_rate: ArrivalRate = None,
    service_rate: ServiceRate = None,
    servers: Servers = None,
    capacity: Capacity = None,
    json_output: JsonOutput = False,
) -> None:
    """M/M/c/K: a queue cap; arrivals that find it full are refused.

    Example: retrystorm queue mmck --arrival-rate 120 --service-rate 2.5
    --servers 40 --capacity 60
    """
    model = MMcK(
        **_rates(arrival_rate, service_rate, servers),
        capacity=_required("capacity", capacity),
    )
    extra = f", K = {model.capacity}  (waits are of admitted requests)"
    _report(model, _title("M/M/c/K", model, extra), json_output)


@queue_app.command("erlang-a")
def erlang_a(
    arrival_rate: ArrivalRate = None,
    service_rate: ServiceRate = None,
    servers: Servers = None,
    abandonment_rate: AbandonmentRate = None,
    json_output: JsonOutput = False,
) -> None:
    """Erlang-A (M/M/c+M): waiting requests give up after an exponential patience.

    Example: retrystorm queue erlang-a --arrival-rate 120 --service-rate 2.5
    --servers 45 --abandonment-rate 0.1
    """
    model = ErlangA(
        **_rates(arrival_rate, service_rate, servers),
        abandonment_rate=_required("abandonment_rate", abandonment_rate),
    )
    extra = f", θ = {model.abandonment_rate:g}/s  (waits over all arrivals)"
    _report(model, _title("Erlang-A", model, extra), json_output)


@queue_app.command()
def mmcd(
    arrival_rate: ArrivalRate = None,
    service_rate: ServiceRate = None,
    servers: Servers = None,
    timeout: Timeout = None,
    json_output: JsonOutput = False,
) -> None:
    """M/M/c+D: a hard queueing timeout, like a connection proxy's.

    Example: retrystorm queue mmcd --arrival-rate 120 --service-rate 2.5
    --servers 45 --timeout 120
    """
    model = MMcD(
        **_rates(arrival_rate, service_rate, servers),
        timeout=_required("timeout", timeout),
    )
    extra = f", T = {model.timeout:g} s  (waits over all arrivals)"
    _report(model, _title("M/M/c+D", model, extra), json_output)
