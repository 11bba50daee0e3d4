"""Sweeps on a Dask cluster: the same rows and the same files as a local run."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client, LocalCluster
from retrystorm import InvalidParameterError
from retrystorm.cli import main
from retrystorm.scenario import Scenario, parse_scenario
from retrystorm.sweep import sweep_scenario
from test_sweep import GRID, QUANTITIES, SMALL_TOML


@pytest.fixture(scope="module")
def small() -> Scenario:
    """The small scenario of test_sweep."""
    return parse_scenario(tomllib.loads(SMALL_TOML), source="small")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A one-worker cluster in this process (threads), with no dashboard."""
    with LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as local:
        yield local


@pytest.fixture(scope="module")
def local_run(
    small: Scenario, tmp_path_factory: pytest.TempPathFactory
) -> tuple[pd.DataFrame, Path]:
    """The small grid swept in this process, and its CSV file."""
    path = tmp_path_factory.mktemp("local") / "local.csv"
    return sweep_scenario(small, GRID, QUANTITIES, workers=1, out=path), path


def read_sorted(path: Path) -> pd.DataFrame:
    """A sweep's CSV file, indexed and sorted by point."""
    return pd.read_csv(path).set_index("point").sort_index()


def test_a_dask_run_gives_the_rows_of_a_local_run(
    small: Scenario, cluster: LocalCluster, local_run: tuple[pd.DataFrame, Path]
) -> None:
    """Through a Client, every row equals the in-process run's."""
    with Client(cluster) as client:
        remote = sweep_scenario(small, GRID, QUANTITIES, scheduler=client)
    pd.testing.assert_frame_equal(remote, local_run[0])


def test_a_dask_run_writes_the_file_of_a_local_run(
    small: Scenario,
    cluster: LocalCluster,
    local_run: tuple[pd.DataFrame, Path],
    tmp_path: Path,
) -> None:
    """Given the scheduler's address, the output file holds the local rows."""
    sweep_scenario(
        small,
        GRID,
        QUANTITIES,
        scheduler=cluster.scheduler_address,
        out=tmp_path / "dask.csv",
    )
    pd.testing.assert_frame_equal(
        read_sorted(tmp_path / "dask.csv"), read_sorted(local_run[1])
    )


def test_cli_scheduler_option_runs_on_the_cluster(
    cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--scheduler ADDRESS sweeps on the cluster and prints the same table."""
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL_TOML)
    arguments = ["sweep", "scenario", str(scenario)]
    for path, values in GRID.items():
        arguments += ["--param", f"{path}={values}"]
    outputs = []
    for extra in (["--workers", "1"], ["--scheduler", cluster.scheduler_address]):
        with pytest.raises(SystemExit) as exit_info:
            main([*arguments, *extra])
        assert exit_info.value.code in (0, None)
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert "metastable" in outputs[1]


def test_an_unreachable_scheduler_is_a_clear_error(
    small: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler address nobody listens on is reported, not a traceback."""
    monkeypatch.setattr("retrystorm.sweep._SCHEDULER_TIMEOUT", 0.5)
    with pytest.raises(InvalidParameterError, match=r"`scheduler` must be the address"):
        sweep_scenario(small, GRID, scheduler="tcp://127.0.0.1:9")
