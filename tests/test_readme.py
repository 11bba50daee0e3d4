"""The README's examples run, so they cannot go stale."""

from __future__ import annotations

import doctest
import re
import shlex
from pathlib import Path

import pytest
from retrystorm.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    """Return the bodies of the README's fenced blocks tagged ``language``."""
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def _console_commands() -> list[str]:
    """Return each ``$ retrystorm ...`` line of the README's console blocks."""
    lines = "\n".join(_blocks("console")).splitlines()
    return [line[2:] for line in lines if line.startswith("$ retrystorm ")]


def test_readme_opens_with_the_two_fresh_machine_commands() -> None:
    """The first two shell blocks install-and-review and install-and-test."""
    first, second = _blocks("sh")[:2]
    assert "pip install" in first
    assert "retrystorm" in first
    assert "pip install" in second
    assert "pytest" in second


def test_readme_python_examples_pass() -> None:
    """Every ``>>>`` line of the README's Python blocks gives what it shows."""
    parser = doctest.DocTestParser()
    text = "\n".join(_blocks("python"))
    test = parser.get_doctest(text, {}, "README.md", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert test.examples, "the README has no Python example"
    assert runner.failures == 0


@pytest.mark.parametrize("command", _console_commands())
def test_readme_command_runs(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every ``$ retrystorm`` line of the README exits with status 0."""
    with pytest.raises(SystemExit) as exit_info:
        main(shlex.split(command)[1:])
    assert exit_info.value.code in (0, None), capsys.readouterr().err
