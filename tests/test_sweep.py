"""Sweeps: ranges, grids, vectorised models, scenario rows, files, plots, CLI."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from retrystorm import ErlangA, InvalidParameterError, MMc, MMcD, MMcK, erlang_b
from retrystorm.cli import main
from retrystorm.errors import ConvergenceError
from retrystorm.review import review_scenario
from retrystorm.scenario import Scenario, parse_scenario
from retrystorm.sweep import (
    Axis,
    Grid,
    Quantity,
    QuantityProvider,
    SweepInterrupted,
    fields_provider,
    make_grid,
    model_spec,
    open_sweep_file,
    parse_axis,
    parse_parameter,
    plot_sweep,
    register_provider,
    scenario_quantities,
    sweep_model,
    sweep_scenario,
    unregister_provider,
)
from strategies import (
    abandonment_rates,
    decimal_ranges,
    few_servers,
    loads_per_server,
    queue_rooms,
    service_rates,
    timeouts,
)

# The sweep calls the same kernel as the class; the two may differ only by
# the last-bit rounding of numpy's vector and scalar loops.
KERNEL_RTOL = 1e-13

# A small system with a 45 s lock: each review takes a few hundredths of a
# second, and the grid below holds both verdicts "recovers" and "metastable".
SMALL_TOML = """
[scenario]
name = "small"
horizon = 300.0
time_step = 0.5

[clients]
request_rate = 120.0
timeout = 40.0
max_retries = 3

[web]
pods = 20

[proxy]
pool_size = 100
queue_timeout = 120.0

[database]
service_time = 0.4

[[events]]
kind = "lock"
at = 60.0
duration = 45.0
table = "all"
"""
GRID = {"proxy.queue_timeout": "10,120", "clients.request_rate": "100,200"}
QUANTITIES = ["verdict", "recovery_time", "peak_queue", "mmc.wait_probability"]


@pytest.fixture(scope="module")
def small() -> Scenario:
    """The small scenario."""
    return parse_scenario(tomllib.loads(SMALL_TOML), source="small")


@pytest.fixture(scope="module")
def reference(small: Scenario) -> pd.DataFrame:
    """The small grid swept in this process, the reference for other runs."""
    return sweep_scenario(small, GRID, QUANTITIES, workers=1)


# -- ranges ------------------------------------------------------------------------


def test_a_single_number_is_one_value() -> None:
    """``2.5`` is the axis of one value."""
    axis = parse_axis("service_rate", " 2.5 ")
    assert axis.values.tolist() == [2.5]
    assert axis.spacing == "single"
    assert not axis.swept


def test_a_list_keeps_its_order() -> None:
    """``a,b,c`` gives the values as typed, infinity included."""
    assert parse_axis("x", "30, 10,inf").values.tolist() == [30.0, 10.0, math.inf]


def test_a_range_includes_stop_when_a_step_lands_on_it() -> None:
    """``start:stop:step`` counts from start and includes stop when reached."""
    assert parse_axis("x", "100:500:100").values.tolist() == [100, 200, 300, 400, 500]
    assert parse_axis("x", "1:10:4").values.tolist() == [1.0, 5.0, 9.0]
    assert parse_axis("x", "5:5:1").values.tolist() == [5.0]


def test_a_negative_step_counts_down() -> None:
    """``120:30:-30`` counts down to 30."""
    assert parse_axis("x", "120:30:-30").values.tolist() == [120.0, 90.0, 60.0, 30.0]


def test_decimal_steps_give_the_decimal_values_exactly() -> None:
    """0.1:0.3:0.1 gives 0.3 itself, not 0.1 + 0.1 + 0.1 = 0.30000000000000004."""
    assert parse_axis("x", "0.1:0.3:0.1").values.tolist() == [0.1, 0.2, 0.3]


@given(decimal_ranges())
def test_every_range_value_is_the_double_nearest_its_decimal(
    drawn: tuple[str, Decimal, Decimal, int],
) -> None:
    """Value k of start:stop:step is float(start + k step), computed exactly."""
    text, start, step, count = drawn
    expected = [float(start + k * step) for k in range(count)]
    assert parse_axis("x", text).values.tolist() == expected


def test_log_ranges_are_geometric_with_exact_ends() -> None:
    """log:1:1000:7 spaces seven values evenly in log, ending at 1 and 1000."""
    values = parse_axis("x", "log:1:1000:7").values
    assert values[0] == 1.0
    assert values[-1] == 1000.0
    assert np.diff(np.log10(values)) == pytest.approx(np.full(6, 0.5), rel=1e-12)


def test_a_parameter_argument_is_name_equals_values() -> None:
    """``NAME=VALUES`` names the axis."""
    axis = parse_parameter("proxy.queue_timeout=30,120")
    assert axis.name == "proxy.queue_timeout"
    assert axis.values.tolist() == [30.0, 120.0]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "needs values"),
        ("   ", "needs values"),
        ("abc", "'abc' is not a number"),
        ("1:x:2", "'x' is not a finite number"),
        ("1,b", "'b' is not a number"),
        ("1:2:3:4", "three parts"),
        ("10:1:1", "step goes from start towards stop"),
        ("1:10:-1", "step goes from start towards stop"),
        ("1:10:0", "non-zero step"),
        ("1,,2", "without empty items"),
        ("1,2,1", "without repeated values"),
        ("log:1:10:1", "whole count of at least 2"),
        ("log:1:10:x", "whole count of at least 2"),
        ("log:0:10:5", "positive start and stop"),
        ("log:5:5:3", "start and stop different"),
        ("log:1:10", "three numbers"),
        ("0:1e9:1", "at most 10,000,000 values"),
    ],
)
def test_bad_ranges_are_errors_naming_the_parameter(text: str, match: str) -> None:
    """Each malformed range is an InvalidParameterError that names the parameter."""
    with pytest.raises(InvalidParameterError, match=rf"^`arrival_rate` .*{match}"):
        parse_axis("arrival_rate", text)


def test_a_parameter_argument_needs_an_equals_sign() -> None:
    """``servers50`` is not NAME=VALUES."""
    with pytest.raises(InvalidParameterError, match=r"`param` must look like NAME="):
        parse_parameter("servers50")


def test_a_parameter_may_be_given_only_once() -> None:
    """Two axes for one parameter are refused."""
    with pytest.raises(InvalidParameterError, match=r"`servers` must be given only"):
        make_grid(["servers=1,2", "servers=3"])


# -- grids -------------------------------------------------------------------------


def test_grid_points_are_row_major_and_agree_with_columns() -> None:
    """Point i is the i-th of the product, the last axis fastest, however fetched."""
    grid = make_grid({"a": "1,2,3", "b": [10.0, 20.0], "c": 7})
    assert len(grid) == 6
    assert grid.shape == (3, 2, 1)
    assert grid.swept == ("a", "b")
    listed = list(grid.points())
    assert [values for _, values in listed][:3] == [
        {"a": 1.0, "b": 10.0, "c": 7.0},
        {"a": 1.0, "b": 20.0, "c": 7.0},
        {"a": 2.0, "b": 10.0, "c": 7.0},
    ]
    columns = grid.columns(2, 5)
    for offset, index in enumerate(range(2, 5)):
        assert grid.point(index) == listed[index][1]
        assert {k: v[offset] for k, v in columns.items()} == listed[index][1]


def test_a_huge_grid_costs_only_its_axes() -> None:
    """A grid of 10^18 points is built and sampled without materialising it."""
    grid = Grid(Axis(name, np.arange(1e6)) for name in "abc")
    assert len(grid) == 10**18
    assert grid.point(10**18 - 1) == {"a": 999999.0, "b": 999999.0, "c": 999999.0}


# -- model sweeps ------------------------------------------------------------------


def assert_rows_equal_the_class(frame: pd.DataFrame, make: Callable[..., Any]) -> None:
    """Every quantity of every row equals the class built from that row."""
    spec = model_spec(make)
    for _, row in frame.iterrows():
        model = make(**{p: row[p] for p in spec.parameter_names})
        summary = {**model.summary(), "offered_load": model.offered_load}
        for quantity in frame.columns.drop(list(spec.parameter_names)):
            expected = (
                summary[quantity] if quantity in summary else getattr(model, quantity)
            )
            assert row[quantity] == pytest.approx(expected, rel=KERNEL_RTOL), quantity


@settings(max_examples=25)
@given(
    st.lists(loads_per_server, min_size=1, max_size=4),
    service_rates,
    st.lists(few_servers, min_size=1, max_size=3, unique=True),
    st.tuples(queue_rooms, abandonment_rates, timeouts),
)
def test_sweep_rows_equal_the_model_classes_at_sampled_points(
    loads: list[float],
    mu: float,
    counts: list[int],
    extras: tuple[int, float, float],
) -> None:
    """The vectorised sweep of each model equals its class at every grid point."""
    room, theta, timeout = extras
    rates = sorted({load * mu * counts[0] for load in loads})
    common = {"arrival_rate": rates, "service_rate": mu, "servers": counts}
    assert_rows_equal_the_class(sweep_model("mmc", common), MMc)
    capacity = {**common, "servers": counts[0], "capacity": counts[0] + room}
    assert_rows_equal_the_class(sweep_model(MMcK, capacity), MMcK)
    patience = {**common, "abandonment_rate": theta}
    assert_rows_equal_the_class(sweep_model("erlang_a", patience), ErlangA)
    assert_rows_equal_the_class(
        sweep_model("mmcd", {**common, "timeout": timeout}), MMcD
    )


def test_unstable_mmc_points_report_inf_means_and_certain_waiting() -> None:
    """At utilisation >= 1 the means do not exist (inf) and P(wait) is 1."""
    frame = sweep_model(
        "mmc", {"arrival_rate": "200:300:50", "service_rate": 1.0, "servers": 250}
    )
    unstable = frame[frame["utilization"] >= 1.0]
    assert len(unstable) == 2
    assert (unstable["wait_probability"] == 1.0).all()
    assert np.isinf(unstable[["mean_wait", "mean_in_system"]].to_numpy()).all()
    assert np.isfinite(frame.loc[0].to_numpy(dtype=float)).all()


def test_mmck_points_with_fewer_places_than_servers_are_nan() -> None:
    """capacity < servers has no M/M/c/K: its row is NaN, the others are computed."""
    frame = sweep_model(
        "mmck",
        {"arrival_rate": 5.0, "service_rate": 1.0, "servers": "4,8", "capacity": 6},
        ["blocking_probability"],
    )
    assert math.isnan(frame.loc[1, "blocking_probability"])
    expected = MMcK(arrival_rate=5.0, service_rate=1.0, servers=4, capacity=6)
    assert frame.loc[0, "blocking_probability"] == pytest.approx(
        expected.blocking_probability, rel=KERNEL_RTOL
    )


def test_erlang_b_sweep_is_the_erlang_b_function() -> None:
    """The erlang_b model is erlang_b over the grid."""
    frame = sweep_model("erlang_b", {"servers": "1:30:1", "offered_load": "5,25"})
    expected = erlang_b(frame["servers"].to_numpy(), frame["offered_load"].to_numpy())
    assert frame["blocking_probability"].to_numpy() == pytest.approx(expected, rel=0)


def test_chunked_evaluation_equals_one_pass() -> None:
    """Chunks of 7 points give the same rows as a single chunk."""
    grid = {"arrival_rate": "1:60:1", "service_rate": 0.5, "servers": "50:150:50"}
    whole = sweep_model("mmc", grid)
    chunked = sweep_model("mmc", grid, chunk_size=7)
    pd.testing.assert_frame_equal(whole, chunked)


def test_unknown_model_suggests_the_closest() -> None:
    """A misspelt model name lists the close names."""
    with pytest.raises(InvalidParameterError, match=r"`model` .*did you mean mmc"):
        sweep_model("mcc", {"servers": 1})


def test_unknown_model_parameter_suggests_the_closest() -> None:
    """``server`` is not an M/M/c parameter; ``servers`` is suggested."""
    with pytest.raises(
        InvalidParameterError, match=r"`server` is not a parameter of mmc; did you mean"
    ):
        sweep_model("mmc", {"arrival_rate": 1, "service_rate": 1, "server": 5})


def test_every_model_parameter_must_be_given() -> None:
    """A missing parameter is named."""
    with pytest.raises(InvalidParameterError, match=r"`servers` must be given for mmc"):
        sweep_model("mmc", {"arrival_rate": 1, "service_rate": 1})


@pytest.mark.parametrize(
    ("parameter", "values", "match"),
    [
        ("servers", "1,2.5", "whole numbers >= 1"),
        ("servers", "0:10:5", "whole numbers >= 1"),
        ("arrival_rate", "-1,1", "finite positive numbers"),
        ("arrival_rate", "1,inf", "finite positive numbers"),
    ],
)
def test_values_outside_a_parameters_domain_are_errors(
    parameter: str, values: str, match: str
) -> None:
    """A value no model accepts is a mistake in the range, not a NaN row."""
    grid = {"arrival_rate": 1.0, "service_rate": 1.0, "servers": 2, parameter: values}
    with pytest.raises(InvalidParameterError, match=rf"`{parameter}` .*{match}"):
        sweep_model("mmc", grid)


def test_unknown_quantity_suggests_the_closest() -> None:
    """A misspelt quantity names the close ones."""
    grid = {"arrival_rate": 1, "service_rate": 1, "servers": 2}
    with pytest.raises(InvalidParameterError, match=r"did you mean mean_wait"):
        sweep_model("mmc", grid, ["mean_wiat"])


# -- scenario sweeps ---------------------------------------------------------------


def test_scenario_rows_equal_direct_reviews(
    small: Scenario, reference: pd.DataFrame
) -> None:
    """Each row is review_scenario of the scenario with that point's changes."""
    assert len(reference) == 4
    for point, row in reference.iterrows():
        changes = {path: row[path] for path in GRID}
        review = review_scenario(
            small.with_changes(changes), remedies=False, sensitivity=False
        )
        assert row["verdict"] == review.verdict, point
        assert row["peak_queue"] == review.peak_queue
        expected = math.nan if review.recovery_time is None else review.recovery_time
        assert row["recovery_time"] == pytest.approx(expected, nan_ok=True)
        assert row["error"] == ""
    assert set(reference["verdict"]) == {"recovers", "metastable"}


def test_pool_quantities_are_the_pool_models(
    small: Scenario, reference: pd.DataFrame
) -> None:
    """mmc.* is M/M/c of the pool: peak fresh rate, 1/service_time, pool_size."""
    for _, row in reference.iterrows():
        pool = MMc(
            arrival_rate=row["clients.request_rate"],
            service_rate=1.0 / small.database.service_time,
            servers=small.proxy.pool_size,
        )
        assert row["mmc.wait_probability"] == pytest.approx(
            pool.wait_probability, rel=KERNEL_RTOL
        )


def test_worker_processes_give_the_same_rows(
    small: Scenario, reference: pd.DataFrame
) -> None:
    """Two worker processes give exactly the rows of the in-process run."""
    parallel = sweep_scenario(small, GRID, QUANTITIES, workers=2)
    pd.testing.assert_frame_equal(parallel, reference)


def test_a_point_that_breaks_a_scenario_rule_is_a_row_with_the_reason(
    small: Scenario,
) -> None:
    """A too-short timeout for the time step gives NaN and the broken rule."""
    frame = sweep_scenario(
        small, {"proxy.queue_timeout": "2,120"}, ["recovery_time"], workers=1
    )
    assert math.isnan(frame.loc[0, "recovery_time"])
    assert frame.loc[0, "error"].startswith("scenario.time_step: must be at most")
    assert frame.loc[1, "error"] == ""


def test_whole_number_fields_are_swept_as_integers(small: Scenario) -> None:
    """proxy.pool_size takes whole numbers and comes back as integers."""
    frame = sweep_scenario(
        small, {"proxy.pool_size": "50:100:50"}, ["mmc.utilization"], workers=1
    )
    assert frame["proxy.pool_size"].tolist() == [50, 100]
    assert frame["mmc.utilization"].tolist() == pytest.approx([0.96, 0.48])


def test_unknown_scenario_field_suggests_the_closest(small: Scenario) -> None:
    """A misspelt dotted path names the close fields."""
    with pytest.raises(
        InvalidParameterError, match=r"`proxy.queue_timout` .*did you mean proxy"
    ):
        sweep_scenario(small, {"proxy.queue_timout": "10,30"}, workers=1)


def test_fractions_of_a_whole_number_field_are_refused(small: Scenario) -> None:
    """proxy.pool_size = 50.5 is a mistake in the range."""
    with pytest.raises(InvalidParameterError, match=r"`proxy.pool_size` .*whole"):
        sweep_scenario(small, {"proxy.pool_size": "50,50.5"}, workers=1)


def test_unknown_scenario_quantity_suggests_the_closest(small: Scenario) -> None:
    """``verdit`` is not a quantity; ``verdict`` is suggested."""
    with pytest.raises(InvalidParameterError, match=r"did you mean verdict"):
        sweep_scenario(small, GRID, ["verdit"], workers=1)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_workers_must_be_a_positive_integer(small: Scenario, workers: Any) -> None:
    """Zero, negative, fractional or boolean worker counts are refused."""
    with pytest.raises(InvalidParameterError, match=r"`workers` must be a positive"):
        sweep_scenario(small, GRID, workers=workers)


def replay_peak(scenario: Scenario) -> Any:
    """A picklable function of a scenario returning a result object."""
    return review_scenario(scenario, remedies=False, sensitivity=False)


def test_a_registered_provider_is_one_registration(small: Scenario) -> None:
    """fields_provider + register_provider make a new column available."""
    provider = fields_provider(
        "replay", replay_peak, [Quantity("peak_time", "s"), Quantity("window_end", "s")]
    )
    register_provider(provider)
    try:
        assert "replay.window_end" in scenario_quantities()
        frame = sweep_scenario(
            small, {"proxy.queue_timeout": 30}, ["replay.window_end"], workers=1
        )
        assert frame.loc[0, "replay.window_end"] == small.horizon
    finally:
        unregister_provider("replay")
    assert "replay.window_end" not in scenario_quantities()


def always_fails(scenario: Scenario, names: frozenset[str]) -> dict[str, Any]:
    """A provider whose method never converges."""
    raise ConvergenceError("test method", 3, 0.5)


def test_a_provider_error_marks_only_its_row(small: Scenario) -> None:
    """A RetrystormError in a provider becomes that row's error text."""
    register_provider(
        QuantityProvider("failing", (Quantity("never", "-"),), always_fails)
    )
    try:
        frame = sweep_scenario(
            small, {"proxy.queue_timeout": "30,60"}, ["never"], workers=1
        )
    finally:
        unregister_provider("failing")
    assert (
        frame["error"].tolist()
        == ["test method did not converge after 3 iterations (residual 0.5)"] * 2
    )
    assert frame["never"].isna().all()


def test_a_quantity_cannot_be_provided_twice() -> None:
    """Registering a provider of ``verdict`` again is refused."""
    duplicate = QuantityProvider(
        "again", (Quantity("verdict", "-", "text"),), always_fails
    )
    with pytest.raises(InvalidParameterError, match=r"`quantity` must not name"):
        register_provider(duplicate)


# -- output files and interruption -------------------------------------------------


def read_rows(path: Path) -> pd.DataFrame:
    """Read a sweep file of any format back, indexed and sorted by point."""
    if path.suffix == ".csv":
        frame = pd.read_csv(
            path, keep_default_na=False, na_values={"recovery_time": [""]}
        )
    elif path.suffix == ".jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines()]
        frame = pd.DataFrame(records)
        for name in frame.columns:
            if frame[name].isin(["inf", "-inf"]).any():  # strict JSON's infinity
                frame[name] = [
                    float(v) if v is not None else math.nan for v in frame[name]
                ]
    else:
        frame = pd.read_parquet(path)
    return frame.set_index("point").sort_index()


def assert_same_rows(found: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Rows read back equal the expected rows of the same points."""
    assert list(found.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(
        found.astype(expected.dtypes.to_dict()),
        expected.loc[found.index],
        check_index_type=False,
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_model_sweep_files_hold_every_row(tmp_path: Path, suffix: str) -> None:
    """The file written by sweep_model reads back as the returned frame (inf too)."""
    path = tmp_path / f"rows{suffix}"
    grid = {"arrival_rate": "50:150:50", "service_rate": 1.0, "servers": 100}
    frame = sweep_model("mmc", grid, ["utilization", "mean_wait"], out=path)
    assert np.isinf(frame["mean_wait"]).any()
    assert_same_rows(read_rows(path), frame)


def stop_after(count: int) -> Callable[[int, int], None]:
    """A progress callback that presses Ctrl-C after ``count`` rows."""

    def progress(completed: int, total: int) -> None:
        if completed >= count:
            raise KeyboardInterrupt

    return progress


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_interrupted_sweeps_keep_every_finished_row(
    small: Scenario, reference: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    """Ctrl-C after 2 rows leaves a complete, readable file with those rows."""
    path = tmp_path / f"rows{suffix}"
    with pytest.raises(SweepInterrupted) as stopped:
        sweep_scenario(
            small, GRID, QUANTITIES, workers=1, out=path, progress=stop_after(2)
        )
    assert stopped.value.total == 4
    kept = stopped.value.frame
    assert list(kept.index) == [0, 1]
    pd.testing.assert_frame_equal(kept, reference.loc[[0, 1]])
    assert_same_rows(read_rows(path), reference.loc[[0, 1]])


def test_interrupted_parallel_sweeps_keep_the_rows_of_running_points(
    small: Scenario, reference: pd.DataFrame, tmp_path: Path
) -> None:
    """With workers, rows finishing while stopping are written too; none is lost."""
    path = tmp_path / "rows.csv"
    with pytest.raises(SweepInterrupted) as stopped:
        sweep_scenario(
            small, GRID, QUANTITIES, workers=2, out=path, progress=stop_after(1)
        )
    kept = stopped.value.frame
    assert 1 <= len(kept) <= 4
    assert_same_rows(read_rows(path), kept)
    pd.testing.assert_frame_equal(kept, reference.loc[kept.index])


def test_an_unknown_extension_is_refused(tmp_path: Path) -> None:
    """The extension picks the format; .json is not one."""
    with pytest.raises(InvalidParameterError, match=r"`out` must end in .csv"):
        open_sweep_file(tmp_path / "rows.json", {"point": "int"})


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    """Output into a folder that does not exist fails before any work."""
    with pytest.raises(InvalidParameterError, match=r"`out` must be in an existing"):
        open_sweep_file(tmp_path / "no" / "rows.csv", {"point": "int"})


def test_parquet_without_pyarrow_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pyarrow, .parquet names the extra to install."""
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    with pytest.raises(InvalidParameterError, match=r"retrystorm\[parquet\]"):
        open_sweep_file(tmp_path / "rows.parquet", {"point": "int"})


def test_a_scheduler_without_dask_says_how_to_install_it(
    small: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without dask.distributed, --scheduler names the extra to install."""
    monkeypatch.setitem(__import__("sys").modules, "distributed", None)
    with pytest.raises(InvalidParameterError, match=r"retrystorm\[dask\]"):
        sweep_scenario(small, GRID, scheduler="tcp://127.0.0.1:1")


# -- plots -------------------------------------------------------------------------


def test_plots_are_written_for_one_and_two_swept_parameters(
    reference: pd.DataFrame, tmp_path: Path
) -> None:
    """A line plot, a numeric heat map with the boundary and a verdict map."""
    line = sweep_model(
        "mmc",
        {"arrival_rate": "log:10:300:20", "service_rate": 1.0, "servers": 100},
        ["mean_wait", "utilization"],
    )
    plot_sweep(
        line,
        tmp_path / "line.png",
        ["arrival_rate", "service_rate", "servers"],
        ["mean_wait"],
        boundary="utilization",
        log_axes=["arrival_rate"],
    )
    plot_sweep(
        reference,
        tmp_path / "map.png",
        list(GRID),
        ["verdict", "recovery_time", "peak_queue"],
        boundary="verdict",
    )
    for name in ("line.png", "map.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_need_one_or_two_swept_parameters(tmp_path: Path) -> None:
    """Three swept parameters cannot be drawn."""
    grid = {"arrival_rate": "1,2", "service_rate": "1,2", "servers": "5,6"}
    frame = sweep_model("mmc", grid, ["mean_wait"])
    with pytest.raises(InvalidParameterError, match=r"`plot` needs one or two"):
        plot_sweep(frame, tmp_path / "x.png", list(grid), ["mean_wait"])


# -- the command line --------------------------------------------------------------


def run(
    arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run the CLI; return (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *arguments])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


MMC_ARGS = [
    "model",
    "mmc",
    "--param",
    "arrival_rate=100:2000:100",
    "--param",
    "servers=50:500:50",
    "--param",
    "service_rate=2.5",
    "--quantity",
    "mean_wait",
    "--quantity",
    "wait_probability",
]


def test_cli_model_sweep_shows_the_row_count_and_writes_every_row(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """200 points: the first and last rows on screen, all of them in --out."""
    out = tmp_path / "mmc.csv"
    status, text, _ = run([*MMC_ARGS, "--out", str(out), "--rows", "6"], capsys)
    assert status == 0
    assert "200 rows (the first 3 and the last 3 shown)" in text
    assert "service_rate = 2.5" in text
    rows = pd.read_csv(out)
    assert len(rows) == 200
    expected = MMc(arrival_rate=100.0, service_rate=2.5, servers=50).mean_wait
    assert rows.loc[0, "mean_wait"] == pytest.approx(expected, rel=KERNEL_RTOL)
    assert f"{expected:.6g}" in text


def test_cli_model_sweep_draws_a_heat_map(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--plot with two swept parameters writes a PNG."""
    status, text, _ = run([*MMC_ARGS, "--plot", str(tmp_path / "mmc.png")], capsys)
    assert status == 0
    assert "plot written to" in text
    assert (tmp_path / "mmc.png").stat().st_size > 0


def test_cli_bad_range_is_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A reversed range exits 2 with one line naming the parameter."""
    arguments = ["model", "mmc", "-p", "arrival_rate=10:1:1", "-p", "servers=2"]
    status, _, err = run([*arguments, "-p", "service_rate=1"], capsys)
    assert status == 2
    assert err.strip().startswith("error: `arrival_rate` must be a range")
    assert len(err.strip().splitlines()) == 1


def test_cli_unknown_parameter_suggests_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A misspelt parameter exits 2 and suggests the valid name."""
    arguments = ["model", "mmc", "-p", "arrival_rate=1", "-p", "server=2"]
    status, _, err = run([*arguments, "-p", "service_rate=1"], capsys)
    assert status == 2
    assert "did you mean servers" in err


def test_cli_refuses_a_plot_of_three_swept_parameters(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The plot check comes before any work and names the swept parameters."""
    arguments = ["model", "mmc", "-p", "arrival_rate=1,2", "-p", "servers=2,3"]
    arguments += ["-p", "service_rate=1,2", "--plot", str(tmp_path / "x.png")]
    status, _, err = run(arguments, capsys)
    assert status == 2
    assert "needs one or two swept parameters (got 3" in err


def test_cli_scenario_sweep_prints_verdicts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A scenario file swept over two fields prints one row per point."""
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL_TOML)
    out = tmp_path / "rows.parquet"
    arguments = ["scenario", str(scenario), "-p", "proxy.queue_timeout=10,120"]
    arguments += ["-p", "clients.request_rate=100,200", "--workers", "1"]
    arguments += ["--out", str(out), "--plot", str(tmp_path / "map.png")]
    status, text, _ = run(arguments, capsys)
    assert status == 0
    assert "metastable" in text
    assert "4 rows" in text
    assert len(pd.read_parquet(out)) == 4
    assert (tmp_path / "map.png").stat().st_size > 0


def test_cli_lists_models_and_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """'sweep models' and 'sweep fields' list what can be swept and reported."""
    status, text, _ = run(["models"], capsys)
    assert status == 0
    assert "abandonment_rate" in text
    assert "erlang_c" in text
    status, text, _ = run(["fields"], capsys)
    assert status == 0
    assert "proxy.queue_timeout" in text
    assert "recovery_time" in text
