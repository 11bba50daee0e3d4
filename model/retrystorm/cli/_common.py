"""Shared pieces of the command line: the app, output helpers, error exits."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from retrystorm.errors import InvalidParameterError

__all__ = ["app", "check_plot_path", "console", "emit_json", "fail", "to_jsonable"]

# The figure formats every matplotlib backend writes.
PLOT_SUFFIXES = (".png", ".pdf", ".svg")

app = typer.Typer(
    name="retrystorm",
    help=(
        "Will a short stall turn into a self-sustaining outage? Queueing models "
        "of retries, timeouts and backpressure. Time is in seconds, rates are "
        "per second."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Keep ``retrystorm`` a group of commands even when only one is loaded."""


# No emoji codes: ":100:" in a name or a range stays what the user typed.
console = Console(emoji=False)
error_console = Console(stderr=True, emoji=False)


def fail(message: str, status: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``status``."""
    error_console.print(
        f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True
    )
    raise SystemExit(status)


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars, tuples and non-finite floats for strict JSON.

    Infinities become the strings ``"inf"``/``"-inf"`` and NaN becomes null,
    so the output is valid JSON that every parser reads.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def emit_json(payload: Any) -> None:
    """Write ``payload`` as one JSON document on stdout."""
    sys.stdout.write(json.dumps(to_jsonable(payload), indent=2) + "\n")


def check_plot_path(plot: Path | None) -> None:
    """Refuse a figure path that cannot be written, before any work is done.

    Raises
    ------
    InvalidParameterError
        The suffix is not one of `PLOT_SUFFIXES`, or the folder is missing.
    """
    if plot is None:
        return
    if plot.suffix.lower() not in PLOT_SUFFIXES:
        rule = f"must end in {', '.join(PLOT_SUFFIXES)} (the figure's format)"
        raise InvalidParameterError("plot", rule, str(plot))
    if not plot.parent.is_dir():
        raise InvalidParameterError("plot", "must be in an existing folder", str(plot))
