"""Reading the TOML files of scenarios and graphs, with one-line errors."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from retrystorm.errors import ScenarioError


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the TOML document in the file at ``path``.

    The file must be UTF-8 text (a leading byte-order mark is allowed, as
    some editors write one).

    Raises
    ------
    ScenarioError
        The file cannot be read, is not UTF-8 text, or is not valid TOML;
        the message names the file and says which.
    """
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as error:
        raise ScenarioError(
            source, [("", f"cannot be read ({error.strerror})")]
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        rule = (
            f"is not UTF-8 text (byte 0x{raw[error.start]:02x} at position "
            f"{error.start}); save it as UTF-8"
        )
        raise ScenarioError(source, [("", rule)]) from None
    return parse_toml_text(text, source)


def parse_toml_text(text: str, source: str) -> dict[str, Any]:
    """Return the TOML document in ``text``, read from ``source``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(source, [("", f"is not valid TOML ({error})")]) from None
