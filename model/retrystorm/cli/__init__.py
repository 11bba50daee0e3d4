"""The ``retrystorm`` command line: a thin shell over the public library.

Each command lives in its own module of this package and registers itself on
`app`; `main` loads them all, runs the command and turns the library's own
errors into a one-line message on stderr with a non-zero exit status.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer
from typer.exceptions import TyperException

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
    command = typer.main.get_command(app)
    args = argv if argv is not None else sys.argv[1:]
    try:
        status = command.main(args=args, prog_name="retrystorm", standalone_mode=False)
    except RetrystormError as exc:
        fail(str(exc))
    except (click.Abort, typer.Abort):
        fail("aborted", 130)
    except (click.ClickException, TyperException) as exc:
        # Usage mistakes get the same one-line form as the library's errors
        # (typer vendors its own copy of click, so both families are caught).
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        status = getattr(exc, "exit_code", 2)
        if not message:  # no arguments at all: the help was printed already
            raise SystemExit(status) from None
        fail(message, status)
    raise SystemExit(status if isinstance(status, int) else 0)
