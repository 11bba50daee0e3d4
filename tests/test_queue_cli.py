"""``retrystorm queue``: tables, JSON keyed by property names, one-line errors."""

from __future__ import annotations

import json

import pytest
from retrystorm import ErlangA, MMc, MMcD, MMcK
from retrystorm.cli import main

COMMON = ["--arrival-rate", "120", "--service-rate", "2.5", "--servers", "60"]
CASES = [
    (["mmc"], MMc(arrival_rate=120, service_rate=2.5, servers=60)),
    (
        ["mmck", "--capacity", "80"],
        MMcK(arrival_rate=120, service_rate=2.5, servers=60, capacity=80),
    ),
    (
        ["erlang-a", "--abandonment-rate", "0.1"],
        ErlangA(arrival_rate=120, service_rate=2.5, servers=60, abandonment_rate=0.1),
    ),
    (
        ["mmcd", "--timeout", "120"],
        MMcD(arrival_rate=120, service_rate=2.5, servers=60, timeout=120),
    ),
]


def run(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run the CLI; return (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["queue", *arguments])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize(("command", "model"), CASES, ids=lambda case: str(case)[:12])
def test_json_is_the_models_summary_keyed_by_property_name(
    command: list[str], model: MMc, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one object equal to the library's summary()."""
    status, out, _ = run([command[0], *COMMON, *command[1:], "--json"], capsys)
    assert status == 0
    assert json.loads(out) == model.summary()


@pytest.mark.parametrize(("command", "model"), CASES, ids=lambda case: str(case)[:12])
def test_table_labels_carry_units(
    command: list[str], model: MMc, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table shows every quantity with its unit."""
    status, out, _ = run([command[0], *COMMON, *command[1:]], capsys)
    assert status == 0
    assert "mean wait in queue (s)" in out
    assert "mean queue length (requests)" in out
    assert f"{model.summary()['mean_in_system']:.6g}" in out


def test_unstable_mmc_reports_what_exists_and_nulls_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """rho >= 1: exit 0, utilisation and P(wait) = 1, means null, a note on stderr."""
    status, out, err = run(
        [
            "mmc",
            "--arrival-rate",
            "300",
            "--service-rate",
            "2.5",
            "--servers",
            "100",
            "--json",
        ],
        capsys,
    )
    values = json.loads(out)
    assert status == 0
    assert values["utilization"] == pytest.approx(1.2)
    assert values["wait_probability"] == 1.0
    assert values["mean_wait"] is None
    assert values["mean_in_system"] is None
    assert "do not exist" in err


def test_unstable_mmc_table_marks_missing_quantities(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The table says 'does not exist' and explains why."""
    status, out, _ = run(
        ["mmc", "--arrival-rate", "250", "--service-rate", "2.5", "--servers", "100"],
        capsys,
    )
    assert status == 0
    assert "does not exist" in out
    assert "grows without bound" in out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["mmc", "--arrival-rate", "abc", "--service-rate", "1", "--servers", "2"],
            "`arrival_rate` must be a number",
        ),
        (
            ["mmc", "--service-rate", "1", "--servers", "2"],
            "missing option --arrival-rate",
        ),
        (
            ["mmc", "--arrival-rate", "-1", "--service-rate", "1", "--servers", "2"],
            "`arrival_rate` must be positive",
        ),
        (
            ["mmc", "--arrival-rate", "1", "--service-rate", "1", "--servers", "2.5"],
            "`servers` must be an integer",
        ),
        (
            ["mmc", "--arrival-rate", "1", "--service-rate", "1", "--servers", "0"],
            "`servers` must be a positive integer",
        ),
        (
            ["mmck", *COMMON, "--capacity", "30"],
            "`capacity` must be at least `servers` (60)",
        ),
        (["erlang-a", *COMMON], "missing option --abandonment-rate"),
        (["mmcd", *COMMON, "--timeout", "0"], "`timeout` must be positive"),
        (["mmcd", *COMMON, "--timeout", "nan"], "`timeout` must be a number, not NaN"),
    ],
)
def test_user_mistakes_exit_non_zero_with_one_line(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user mistake exits 2 with a single line on stderr and no traceback."""
    status, out, err = run(arguments, capsys)
    assert status == 2
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_help_carries_a_runnable_example(capsys: pytest.CaptureFixture[str]) -> None:
    """The group help shows an example command."""
    status, out, _ = run(["--help"], capsys)
    assert status == 0
    assert "retrystorm queue mmc --arrival-rate" in out
