"""The ``retrystorm`` command line: a thin shell over the public library.

Each command lives in its own module of this package and registers itself on
`app`; `main` loads them all, runs the command and turns the library's own
errors into a one-line message on stderr with a non-zero exit status.
"""

from __future__ import annotations

import importlib
import sys

import typer

from retrystorm.cli._common import app, fail
from retrystorm.errors import RetrystormError

__all__ = ["app", "main"]

# The command modules, in the order their commands are listed by --help.
_COMMAND_MODULES = (
    "retrystorm.cli.queue",
    "retrystorm.cli.review",
    "retrystorm.cli.limits",
    "retrystorm.cli.graph",
    "retrystorm.cli.chain",
    "retrystorm.cli.sweep",
)


def _load_commands() -> None:
    """Import every command module that exists, so each registers on `app`."""
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only a missing command module is skipped; a missing dependency
            # inside one is a real error and must surface.
            if exc.name != name:
                raise


def main(argv: list[str] | None = None) -> None:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``).

    Raises
    ------
    SystemExit
        Always, with status 0 on success, 2 for a user mistake.
    """
    _load_commands()
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="retrystorm")
    except RetrystormError as exc:
        fail(str(exc))
    except typer.Exit:
        raise
