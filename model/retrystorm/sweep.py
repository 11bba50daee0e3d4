"""Parameter sweeps: a model or a scenario over a grid of values, as a table.

Capacity planning asks the same question over and over with other numbers:
"for arrival rates from 100 to 2,000 per second and pools of 50 to 500
connections, where is it safe?". A sweep answers it in one call.

* `sweep_model` evaluates a steady-state model (`MMc`, `MMcK`, `ErlangA`,
  `MMcD`, Erlang B or C) over the whole grid at once with the models' own
  vectorised kernels: a million points in about a second.
* `sweep_scenario` changes numeric fields of a scenario (dotted paths, as in
  `Scenario.with_changes`) and evaluates each changed scenario: its review
  (verdict, recovery time, peak backlog ...) and the steady state of its
  connection pool. The replays run in parallel over the machine's cores, or on
  a Dask cluster, and each finished row is written to the output file at once,
  so an interruption (Ctrl-C) loses no finished row.

Both return a `pandas.DataFrame` with one row per grid point, indexed by the
point's number (row-major: the last parameter varies fastest).

Values of a parameter (`parse_axis`)
    ``2.5`` one value; ``10,30,60,120`` a list; ``100:2000:100`` a range
    ``start:stop:step`` that includes ``stop`` when the steps land on it
    (a negative step counts down); ``log:1:1000:7`` seven values spaced
    evenly on a log scale from 1 to 1000.

Points that have no answer
    A value outside a parameter's domain (a negative rate, 2.5 servers) is a
    mistake in the range and raises `InvalidParameterError` before anything is
    computed. A point whose combination has no answer is a row, not an error:
    for M/M/c at utilisation >= 1 the means are ``inf`` (they do not exist)
    and the wait probability is 1; an M/M/c/K point with ``capacity <
    servers`` is NaN throughout; a scenario point that breaks a scenario rule
    (or whose evaluation fails) has NaN quantities and the reason in the
    ``error`` column.

Quantities of scenarios
    Each quantity comes from a registered `QuantityProvider`: ``review``
    (`review_scenario` without remedies or sensitivity) and ``pool`` (the
    M/M/c and M/M/c+D steady state of the proxy pool in normal operation, as
    ``mmc.<property>`` and ``mmcd.<property>``). `register_provider` adds a
    source; `fields_provider` turns any function that returns a dataclass into
    one, so a new analysis joins sweeps with one registration.

Output files (`open_sweep_file`)
    The extension chooses the format: ``.csv``, ``.jsonl`` (JSON lines; an
    infinity is the string ``"inf"``, NaN is null) or ``.parquet`` (needs the
    optional ``pyarrow``: ``pip install 'retrystorm[parquet]'``). CSV and JSON
    lines are flushed row by row; Parquet is written in row groups and is
    readable once the file is closed, which happens on Ctrl-C too.

Examples
--------
>>> frame = sweep_model(
...     "mmc",
...     {"arrival_rate": "100:300:100", "service_rate": 2.5, "servers": 100},
...     ["utilization", "mean_wait"],
... )
>>> frame
       arrival_rate  service_rate  servers  utilization  mean_wait
point
0             100.0           2.5      100          0.4   0.000000
1             200.0           2.5      100          0.8   0.000...
2             300.0           2.5      100          1.2        inf
>>> parse_axis("proxy.queue_timeout", "10,30,60").values
array([10., 30., 60.])
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from retrystorm._birth_death import FloatArray
from retrystorm._sweep_files import ColumnKind, SweepFile, open_sweep_file
from retrystorm._sweep_plot import plot_sweep
from retrystorm.erlang import erlang_b, erlang_c
from retrystorm.erlang_a import ErlangA, _erlang_a_arrays
from retrystorm.errors import InvalidParameterError, RetrystormError, ScenarioError
from retrystorm.limits import LIMIT_NAMES, compute_limits
from retrystorm.mmc import MMc, _mmc_arrays
from retrystorm.mmcd import MMcD, _mmcd_arrays
from retrystorm.mmck import MMcK, _mmck_arrays
from retrystorm.review import review_scenario
from retrystorm.scenario import Scenario

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "Axis",
    "Grid",
    "ModelSpec",
    "Parameter",
    "Quantity",
    "QuantityProvider",
    "SweepFile",
    "SweepInterrupted",
    "fields_provider",
    "iter_sweep_model",
    "make_grid",
    "model_names",
    "model_spec",
    "open_sweep_file",
    "parse_axis",
    "parse_parameter",
    "plot_sweep",
    "register_model",
    "register_provider",
    "scenario_quantities",
    "sweep_model",
    "sweep_scenario",
    "unregister_provider",
]

Spacing = Literal["single", "list", "linear", "log"]
Progress = Callable[[int, int], None]
"""Called as ``progress(completed, total)`` after each row is written."""

# One axis may hold at most this many values (80 MB of doubles).
_MAX_AXIS = 10_000_000
# Model grids are evaluated (and streamed) in chunks of this many points.
_MODEL_CHUNK = 1 << 18
# Seconds to wait for a Dask scheduler to answer.
_SCHEDULER_TIMEOUT = 10.0
# Scenario tasks in flight per worker: enough to keep each busy, few enough
# that a huge grid never sits in memory as futures.
_IN_FLIGHT_PER_WORKER = 2
_FORMS = (
    "a number (2.5), a list (10,30,60), a range start:stop:step (100:2000:100) "
    "or log:start:stop:count (log:1:1000:7)"
)


# -- values of one parameter -----------------------------------------------------


@dataclass(frozen=True, eq=False)
class Axis:
    """The values one parameter takes in a sweep.

    Attributes
    ----------
    name
        The parameter (a model parameter or a dotted scenario path).
    values
        The values, in sweep order (read-only).
    spacing
        How they were given: ``single``, ``list``, ``linear`` or ``log``.
    """

    name: str
    values: NDArray[np.float64]
    spacing: Spacing = "list"

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=float).reshape(-1)
        values.flags.writeable = False
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def swept(self) -> bool:
        """Whether the axis takes more than one value."""
        return self.values.size > 1


def parse_axis(name: str, text: str) -> Axis:
    """Return the values ``text`` gives for the parameter ``name``.

    Parameters
    ----------
    name
        The parameter, for messages.
    text
        ``2.5``, ``10,30,60``, ``start:stop:step`` or ``log:start:stop:count``
        (see the module docstring).

    Returns
    -------
    Axis
        The values in the order given.

    Raises
    ------
    InvalidParameterError
        Naming the parameter, if ``text`` is empty, not a number where one is
        needed, a range with a zero step or a step away from ``stop``
        (reversed), a list with an empty or repeated item, or more than ten
        million values.

    Examples
    --------
    >>> parse_axis("servers", "50:200:50").values
    array([ 50., 100., 150., 200.])
    >>> parse_axis("timeout", "log:1:100:3").values
    array([  1.,  10., 100.])
    >>> parse_axis("rate", "0.1:0.3:0.1").values
    array([0.1, 0.2, 0.3])
    >>> parse_axis("servers", "200:50:50")
    Traceback (most recent call last):
    ...
    retrystorm.errors.InvalidParameterError: `servers` must be a range whose step ...
    """
    stripped = text.strip()
    if not stripped:
        raise InvalidParameterError(name, f"needs values: {_FORMS}", text)
    if stripped.lower().startswith("log:"):
        return Axis(name, _log_values(name, stripped), "log")
    if ":" in stripped:
        return Axis(name, _linear_values(name, stripped), "linear")
    if "," in stripped:
        return Axis(name, _list_values(name, stripped), "list")
    return Axis(name, np.array([_number(name, stripped, text)]), "single")


def parse_parameter(text: str) -> Axis:
    """Return the axis of a ``NAME=VALUES`` argument (``servers=50:500:50``).

    Raises
    ------
    InvalidParameterError
        If there is no ``=`` or no name, or the values are bad (`parse_axis`).

    Examples
    --------
    >>> parse_parameter("proxy.queue_timeout=30,120").values
    array([ 30., 120.])
    """
    name, equals, values = text.partition("=")
    if not equals or not name.strip():
        rule = "must look like NAME=VALUES (for example servers=50:500:50)"
        raise InvalidParameterError("param", rule, text)
    return parse_axis(name.strip(), values)


def _decimal(name: str, part: str, text: str) -> Decimal:
    """Return ``part`` as a finite decimal, or raise naming the parameter."""
    try:
        value = Decimal(part.strip())
    except InvalidOperation:
        value = Decimal("nan")
    if not value.is_finite():
        rule = f"must be given as {_FORMS}; {part.strip()!r} is not a finite number"
        raise InvalidParameterError(name, rule, text)
    return value


def _number(name: str, part: str, text: str) -> float:
    """Return ``part`` as a float (``inf`` allowed), or raise naming the parameter."""
    try:
        value = float(part.strip())
    except ValueError:
        value = math.nan
    if math.isnan(value):
        rule = f"must be given as {_FORMS}; {part.strip()!r} is not a number"
        raise InvalidParameterError(name, rule, text)
    return value


def _check_count(name: str, count: int, text: str) -> None:
    """Refuse axes too long to hold."""
    if count > _MAX_AXIS:
        rule = f"must have at most {_MAX_AXIS:,} values (this range has {count:,})"
        raise InvalidParameterError(name, rule, text)


def _list_values(name: str, text: str) -> NDArray[np.float64]:
    """``a,b,c``: the numbers in the order given, none empty or repeated."""
    parts = text.split(",")
    if any(not part.strip() for part in parts):
        raise InvalidParameterError(name, "must be a list without empty items", text)
    values = [_number(name, part, text) for part in parts]
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        rule = f"must be a list without repeated values ({repeated[0]:g} repeats)"
        raise InvalidParameterError(name, rule, text)
    _check_count(name, len(values), text)
    return np.array(values)


def _linear_values(name: str, text: str) -> NDArray[np.float64]:
    """``start:stop:step``, counted exactly in decimal so 0.1 steps land on stop."""
    parts = text.split(":")
    if len(parts) != 3:
        rule = f"must be a range start:stop:step with three parts ({_FORMS})"
        raise InvalidParameterError(name, rule, text)
    start, stop, step = (_decimal(name, part, text) for part in parts)
    if step == 0:
        raise InvalidParameterError(name, "must be a range with a non-zero step", text)
    if (stop - start) * step < 0:
        rule = (
            "must be a range whose step goes from start towards stop "
            "(use a negative step to count down)"
        )
        raise InvalidParameterError(name, rule, text)
    count = int((stop - start) / step) + 1
    _check_count(name, count, text)
    return _decimal_steps(start, step, count)


def _decimal_steps(start: Decimal, step: Decimal, count: int) -> NDArray[np.float64]:
    """``start + k step`` for ``k < count``, each the double nearest the decimal.

    With ``d`` decimal places, ``(start 10^d + k step 10^d) / 10^d`` is an
    exact integer divided once, so ``0.1:0.3:0.1`` gives 0.3 and not
    0.30000000000000004. Beyond 2^53 the plain float steps are used.
    """
    places = max(0, -int(start.as_tuple().exponent), -int(step.as_tuple().exponent))
    scale = Decimal(10) ** places
    first, stride = start * scale, step * scale
    last = first + stride * (count - 1)
    k = np.arange(count, dtype=float)
    if places <= 22 and max(abs(first), abs(last)) < 2**53:
        return (float(first) + k * float(stride)) / float(scale)
    return float(start) + k * float(step)


def _log_values(name: str, text: str) -> NDArray[np.float64]:
    """``log:start:stop:count``: ``count`` values evenly spaced in log."""
    parts = text.split(":")[1:]
    if len(parts) != 3:
        rule = f"must be log:start:stop:count with three numbers ({_FORMS})"
        raise InvalidParameterError(name, rule, text)
    start, stop = (float(_decimal(name, part, text)) for part in parts[:2])
    count_text = parts[2].strip()
    if not count_text.isdigit() or int(count_text) < 2:
        rule = "must be log:start:stop:count with a whole count of at least 2"
        raise InvalidParameterError(name, rule, text)
    if start <= 0.0 or stop <= 0.0:
        rule = "must be log:start:stop:count with a positive start and stop"
        raise InvalidParameterError(name, rule, text)
    if start == stop:
        rule = "must be log:start:stop:count with start and stop different"
        raise InvalidParameterError(name, rule, text)
    count = int(count_text)
    _check_count(name, count, text)
    values = np.geomspace(start, stop, count)
    values[0], values[-1] = start, stop  # exact ends
    return values


# -- the grid ---------------------------------------------------------------------


class Grid:
    """The Cartesian product of axes, generated lazily.

    Point ``i`` is in row-major order (the last axis varies fastest); only
    the chunk asked for is ever materialised, so a grid of a billion points
    costs the memory of its axes.

    Parameters
    ----------
    axes
        One axis per parameter, names distinct.

    Raises
    ------
    InvalidParameterError
        If two axes have the same name.

    Examples
    --------
    >>> grid = make_grid({"a": "1,2", "b": "10:30:10"})
    >>> len(grid), grid.shape
    (6, (2, 3))
    >>> grid.point(4)
    {'a': 2.0, 'b': 20.0}
    """

    def __init__(self, axes: Iterable[Axis]) -> None:
        self.axes = tuple(axes)
        names = [axis.name for axis in self.axes]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise InvalidParameterError(name, "must be given only once", name)

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters, in order."""
        return tuple(axis.name for axis in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """The number of values of each axis."""
        return tuple(len(axis) for axis in self.axes)

    @property
    def swept(self) -> tuple[str, ...]:
        """The parameters that take more than one value."""
        return tuple(axis.name for axis in self.axes if axis.swept)

    def __len__(self) -> int:
        return math.prod(self.shape)

    def axis(self, name: str) -> Axis:
        """Return the axis of parameter ``name``."""
        return self.axes[self.names.index(name)]

    def columns(self, start: int = 0, stop: int | None = None) -> dict[str, FloatArray]:
        """Return the values of points ``start .. stop - 1``, one array per axis."""
        end = len(self) if stop is None else min(stop, len(self))
        indices = np.unravel_index(np.arange(start, end), self.shape)
        return {
            axis.name: axis.values[index]
            for axis, index in zip(self.axes, indices, strict=True)
        }

    def chunks(self, size: int) -> Iterator[tuple[int, dict[str, FloatArray]]]:
        """Yield ``(first point, columns)`` for consecutive chunks of ``size``."""
        for start in range(0, len(self), size):
            yield start, self.columns(start, start + size)

    def point(self, index: int) -> dict[str, float]:
        """Return the parameter values of point ``index`` (0 to ``len - 1``)."""
        if not 0 <= index < len(self):
            raise IndexError(f"point {index} is not in a grid of {len(self)} points")
        position = np.unravel_index(index, self.shape)
        return {
            axis.name: float(axis.values[i])
            for axis, i in zip(self.axes, position, strict=True)
        }

    def points(self) -> Iterator[tuple[int, dict[str, float]]]:
        """Yield ``(index, values)`` for every point, lazily."""
        values = itertools.product(*(axis.values.tolist() for axis in self.axes))
        for index, combination in enumerate(values):
            yield index, dict(zip(self.names, combination, strict=True))


GridLike = Grid | Mapping[str, "Axis | str | float | Sequence[float]"] | Iterable[str]


def make_grid(parameters: GridLike) -> Grid:
    """Return a grid from axes, a mapping or ``NAME=VALUES`` strings.

    Parameters
    ----------
    parameters
        A `Grid`; a mapping from parameter to an `Axis`, a text to parse
        (``"100:2000:100"``), a number or a sequence of numbers; or an
        iterable of ``NAME=VALUES`` strings.

    Returns
    -------
    Grid
        The grid, axes in the order given.

    Raises
    ------
    InvalidParameterError
        If any axis is bad (`parse_axis`) or a name repeats.
    """
    if isinstance(parameters, Grid):
        return parameters
    if isinstance(parameters, Mapping):
        return Grid(_axis(name, spec) for name, spec in parameters.items())
    return Grid(parse_parameter(text) for text in parameters)


def _axis(name: str, spec: Axis | str | float | Sequence[float]) -> Axis:
    """One axis from any of the forms `make_grid` accepts."""
    if isinstance(spec, Axis):
        return dataclasses.replace(spec, name=name)
    if isinstance(spec, str):
        return parse_axis(name, spec)
    try:
        values = np.atleast_1d(np.asarray(spec, dtype=float))
    except (TypeError, ValueError):
        values = np.array([math.nan])
    if values.size == 0 or np.isnan(values).any():
        raise InvalidParameterError(name, "must have values that are numbers", spec)
    return Axis(name, values, "single" if values.size == 1 else "list")


def _suggest(name: str, known: Iterable[str]) -> str:
    """``"; did you mean x?"`` for the closest known names, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(close)}?" if close else ""


# -- steady-state models ------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    """One parameter of a model that sweeps accept.

    Attributes
    ----------
    name
        The keyword of the model (``arrival_rate``).
    kind
        ``"positive"`` (finite and > 0: rates, times, loads) or ``"count"``
        (a whole number >= 1).
    description
        What it is, with its unit.
    """

    name: str
    kind: Literal["positive", "count"]
    description: str


@dataclass(frozen=True)
class ModelSpec:
    """A steady-state model that `sweep_model` can evaluate over a grid.

    Attributes
    ----------
    name
        The name used in sweeps and on the command line (``mmc``).
    title
        The model's usual name (``M/M/c``).
    parameters
        The parameters, all required.
    quantities
        The quantities it reports, in order.
    kernel
        Called with one float array per parameter (as keywords, broadcast
        together, already checked against each parameter's kind); returns
        an array per quantity.
    model_class
        The class with the same parameters and properties, if any.
    invalid
        Called with the parameter arrays; True where a combination has no
        model (its row is NaN), or None.
    boundary
        A quantity whose level 1 separates stable from unstable points
        (``utilization``), or None.
    notes
        The rule for points without an answer, for help texts.
    """

    name: str
    title: str
    parameters: tuple[Parameter, ...]
    quantities: tuple[str, ...]
    kernel: Callable[..., Mapping[str, Any]]
    model_class: type | None = None
    invalid: Callable[[Mapping[str, FloatArray]], NDArray[np.bool_]] | None = None
    boundary: str | None = None
    notes: str = ""

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """The parameters' names, in order."""
        return tuple(p.name for p in self.parameters)


_RATE = Parameter("arrival_rate", "positive", "Poisson arrival rate, requests/s")
_SERVICE = Parameter("service_rate", "positive", "service rate of one server, /s")
_SERVERS = Parameter("servers", "count", "number of servers (connections)")
_QUEUE_QUANTITIES = (
    "offered_load",
    "utilization",
    "occupancy",
    "throughput",
    "wait_probability",
    "mean_wait",
    "mean_queue_length",
    "mean_response_time",
    "mean_in_system",
)
_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Make a model available to `sweep_model` and ``retrystorm sweep model``.

    Raises
    ------
    InvalidParameterError
        If a model of that name is registered already.
    """
    if spec.name in _MODELS:
        raise InvalidParameterError("model", "is registered already", spec.name)
    _MODELS[spec.name] = spec


def model_names() -> tuple[str, ...]:
    """Return the names of the registered models, in registration order."""
    return tuple(_MODELS)


def model_spec(model: str | type | ModelSpec) -> ModelSpec:
    """Return the registered model named ``model`` (or whose class it is).

    Raises
    ------
    InvalidParameterError
        If no registered model has that name or class (the message suggests
        the closest names).
    """
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, type):
        for spec in _MODELS.values():
            if spec.model_class is model:
                return spec
        rule = f"must be a registered model class ({', '.join(_MODELS)})"
        raise InvalidParameterError("model", rule, model.__name__)
    key = model.strip().lower().replace("-", "_").replace("/", "")
    if key in _MODELS:
        return _MODELS[key]
    rule = f"must be one of {', '.join(_MODELS)}{_suggest(key, _MODELS)}"
    raise InvalidParameterError("model", rule, model)


def _mmck_invalid(columns: Mapping[str, FloatArray]) -> NDArray[np.bool_]:
    """Mark the M/M/c/K points with fewer places than servers: they have no model."""
    return np.asarray(columns["capacity"] < columns["servers"])


def _erlang_b_kernel(servers: FloatArray, offered_load: FloatArray) -> dict[str, Any]:
    return {"blocking_probability": erlang_b(servers, offered_load)}


def _erlang_c_kernel(servers: FloatArray, offered_load: FloatArray) -> dict[str, Any]:
    return {
        "wait_probability": erlang_c(servers, offered_load),
        "utilization": offered_load / servers,
    }


def _register_builtin_models() -> None:
    """Register the library's steady-state models."""
    load = Parameter("offered_load", "positive", "offered load, erlangs")
    register_model(
        ModelSpec(
            "mmc",
            "M/M/c",
            (_RATE, _SERVICE, _SERVERS),
            tuple(q for q in _QUEUE_QUANTITIES if q not in ("occupancy", "throughput")),
            _mmc_arrays,
            MMc,
            boundary="utilization",
            notes="at utilisation >= 1 the means are inf, wait_probability is 1",
        )
    )
    register_model(
        ModelSpec(
            "mmck",
            "M/M/c/K",
            (
                _RATE,
                _SERVICE,
                _SERVERS,
                Parameter("capacity", "count", "most requests inside, K >= servers"),
            ),
            ("blocking_probability", *_QUEUE_QUANTITIES),
            _mmck_arrays,
            MMcK,
            invalid=_mmck_invalid,
            boundary="utilization",
            notes="a point with capacity < servers is NaN",
        )
    )
    register_model(
        ModelSpec(
            "erlang_a",
            "Erlang-A (M/M/c+M)",
            (
                _RATE,
                _SERVICE,
                _SERVERS,
                Parameter("abandonment_rate", "positive", "patience rate, /s"),
            ),
            ("abandonment_probability", "mean_busy_servers", *_QUEUE_QUANTITIES),
            _erlang_a_arrays,
            ErlangA,
            boundary="utilization",
            notes="always stable",
        )
    )
    register_model(
        ModelSpec(
            "mmcd",
            "M/M/c+D",
            (
                _RATE,
                _SERVICE,
                _SERVERS,
                Parameter("timeout", "positive", "queueing timeout, s"),
            ),
            (
                "abandonment_probability",
                "mean_busy_servers",
                "mean_wait_served",
                *_QUEUE_QUANTITIES,
            ),
            _mmcd_arrays,
            MMcD,
            boundary="utilization",
            notes="always stable",
        )
    )
    register_model(
        ModelSpec(
            "erlang_b",
            "Erlang B (M/M/c/c)",
            (_SERVERS, load),
            ("blocking_probability",),
            _erlang_b_kernel,
        )
    )
    register_model(
        ModelSpec(
            "erlang_c",
            "Erlang C (M/M/c)",
            (_SERVERS, load),
            ("wait_probability", "utilization"),
            _erlang_c_kernel,
            boundary="utilization",
            notes="at utilisation >= 1 wait_probability is 1",
        )
    )


_register_builtin_models()


def _check_model_grid(spec: ModelSpec, grid: Grid) -> None:
    """Every grid axis is a parameter of the model and every parameter is given."""
    for name in grid.names:
        if name not in spec.parameter_names:
            rule = (
                f"is not a parameter of {spec.name}"
                f"{_suggest(name, spec.parameter_names)} "
                f"(parameters: {', '.join(spec.parameter_names)})"
            )
            raise InvalidParameterError(name, rule, grid.axis(name).values.tolist())
    for parameter in spec.parameters:
        if parameter.name not in grid.names:
            rule = f"must be given for {spec.name} ({parameter.description})"
            raise InvalidParameterError(parameter.name, rule, None)
        _check_domain(parameter, grid.axis(parameter.name))


def _check_domain(parameter: Parameter, axis: Axis) -> None:
    """Each value lies in the parameter's domain: a mistake in the range if not."""
    values = axis.values
    if parameter.kind == "count":
        bad = ~np.isfinite(values) | (values < 1.0) | (values != np.floor(values))
        rule = "must contain only whole numbers >= 1"
    else:
        bad = ~np.isfinite(values) | (values <= 0.0)
        rule = "must contain only finite positive numbers"
    if bad.any():
        raise InvalidParameterError(parameter.name, rule, float(values[bad][0]))


def _check_quantities(
    requested: Iterable[str] | None, known: Sequence[str], what: str
) -> tuple[str, ...]:
    """Return the requested quantities (default: all), each known, once each."""
    names = tuple(known) if requested is None else tuple(dict.fromkeys(requested))
    if not names:
        raise InvalidParameterError("quantity", "must name at least one quantity", [])
    for name in names:
        if name not in known:
            rule = (
                f"must be a quantity of {what}{_suggest(name, known)} "
                f"(quantities: {', '.join(known)})"
            )
            raise InvalidParameterError("quantity", rule, name)
    return names


def iter_sweep_model(
    model: str | type | ModelSpec,
    grid: GridLike,
    quantities: Iterable[str] | None = None,
    *,
    chunk_size: int = _MODEL_CHUNK,
) -> Iterator[pd.DataFrame]:
    """Yield the rows of `sweep_model` chunk by chunk (bounded memory).

    Parameters and errors are those of `sweep_model`; ``chunk_size`` is the
    number of points per chunk. All checks happen before the first chunk.
    """
    spec = model_spec(model)
    checked = make_grid(grid)
    _check_model_grid(spec, checked)
    names = _check_quantities(quantities, spec.quantities, spec.name)
    size = max(1, int(chunk_size))
    return (
        _model_chunk(spec, names, start, columns)
        for start, columns in checked.chunks(size)
    )


def _model_chunk(
    spec: ModelSpec,
    quantities: tuple[str, ...],
    start: int,
    columns: dict[str, FloatArray],
) -> pd.DataFrame:
    """Evaluate one chunk: the parameters, then each quantity (NaN where invalid)."""
    size = len(next(iter(columns.values())))
    valid = np.ones(size, dtype=bool)
    if spec.invalid is not None:
        valid = ~np.asarray(spec.invalid(columns), dtype=bool)
    every = bool(valid.all())
    # The kernels work elementwise, so only the valid points are evaluated.
    arguments = columns if every else {k: v[valid] for k, v in columns.items()}
    with np.errstate(all="ignore"):  # inf where a mean does not exist, by rule
        values = spec.kernel(**arguments) if valid.any() else {}

    data: dict[str, Any] = {}
    for parameter in spec.parameters:
        column = columns[parameter.name]
        data[parameter.name] = (
            column.astype(np.int64) if parameter.kind == "count" else column
        )
    for name in quantities:
        result = np.full(size, np.nan)
        if valid.any():
            result[valid] = np.broadcast_to(
                np.asarray(values[name], dtype=float), (int(valid.sum()),)
            )
        data[name] = result
    index = pd.RangeIndex(start, start + size, name="point")
    return pd.DataFrame(data, index=index)


def sweep_model(
    model: str | type | ModelSpec,
    grid: GridLike,
    quantities: Iterable[str] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    chunk_size: int = _MODEL_CHUNK,
) -> pd.DataFrame:
    """Evaluate a steady-state model at every point of a grid, vectorised.

    Parameters
    ----------
    model
        A registered model's name (``"mmc"``, ``"mmck"``, ``"erlang_a"``,
        ``"mmcd"``, ``"erlang_b"``, ``"erlang_c"``; see `model_names`), its
        class (`MMc` ...) or a `ModelSpec`.
    grid
        Every parameter of the model, each with one value or several (see
        `make_grid`); parameters with several values span the grid.
    quantities
        Properties of the model to report (default: all of them; see
        `ModelSpec.quantities`).
    out
        A ``.csv``, ``.jsonl`` or ``.parquet`` file to write the rows to as
        they are computed (see `open_sweep_file`).
    chunk_size
        Points evaluated at once (bounds the memory of the evaluation).

    Returns
    -------
    pandas.DataFrame
        One row per grid point, indexed by ``point`` (row-major order): the
        parameters, then the quantities. Points without an answer follow the
        module's rule (``inf`` means of an unstable M/M/c, NaN rows of an
        M/M/c/K with ``capacity < servers``).

    Raises
    ------
    InvalidParameterError
        For an unknown model, parameter or quantity (with the closest names),
        a missing parameter, or a value outside its parameter's domain.

    Notes
    -----
    Every quantity comes from the same vectorised kernel as the model's
    class, so a row equals ``Model(**row_parameters).<quantity>`` to the last
    digit.

    Examples
    --------
    >>> frame = sweep_model(
    ...     "erlang_a",
    ...     {"arrival_rate": 10 / 3, "service_rate": 1 / 3, "servers": "13:15:1",
    ...      "abandonment_rate": 0.2},
    ...     ["wait_probability"],
    ... )
    >>> frame["wait_probability"].round(5).tolist()
    [0.2258, 0.14526, 0.08855]
    """
    chunks = iter_sweep_model(model, grid, quantities, chunk_size=chunk_size)
    if out is None:
        return pd.concat(list(chunks))
    spec = model_spec(model)
    kept = []
    with open_sweep_file(out, _model_columns(spec, quantities)) as sink:
        for chunk in chunks:
            sink.write(chunk)
            kept.append(chunk)
    return pd.concat(kept)


def _model_columns(
    spec: ModelSpec, quantities: Iterable[str] | None
) -> dict[str, ColumnKind]:
    """Return the output columns of a model sweep and their kinds."""
    names = _check_quantities(quantities, spec.quantities, spec.name)
    columns: dict[str, ColumnKind] = {"point": "int"}
    for parameter in spec.parameters:
        columns[parameter.name] = "int" if parameter.kind == "count" else "float"
    columns.update(dict.fromkeys(names, "float"))
    return columns


# -- quantities of scenarios -------------------------------------------------------


@dataclass(frozen=True)
class Quantity:
    """A quantity a scenario sweep can report.

    Attributes
    ----------
    name
        The column name (``recovery_time``, ``mmc.mean_wait``).
    description
        What it is, with its unit.
    kind
        ``"float"`` (NaN where it does not exist) or ``"text"``.
    """

    name: str
    description: str
    kind: Literal["float", "text"] = "float"


@dataclass(frozen=True)
class QuantityProvider:
    """A source of quantities for scenario sweeps.

    Attributes
    ----------
    name
        The source (``review``, ``pool``).
    quantities
        What it provides.
    compute
        Called as ``compute(scenario, names)`` with the requested names of
        this provider; returns a value per name (a float, None for "does not
        exist", or a string for text quantities). It runs in worker processes,
        so it must be picklable (a module-level function) and may raise a
        `RetrystormError`, which marks that point's row as failed.
    """

    name: str
    quantities: tuple[Quantity, ...]
    compute: Callable[[Scenario, frozenset[str]], Mapping[str, Any]]


_PROVIDERS: dict[str, QuantityProvider] = {}


def register_provider(provider: QuantityProvider) -> None:
    """Make a provider's quantities available to `sweep_scenario`.

    Raises
    ------
    InvalidParameterError
        If a provider of that name is registered already, or one of its
        quantities is provided by another.

    Examples
    --------
    A new analysis joins sweeps with one call (see also `fields_provider`):

    >>> def pool_size(scenario, names):
    ...     return {"pool_size": float(scenario.proxy.pool_size)}
    >>> register_provider(QuantityProvider(
    ...     "example", (Quantity("pool_size", "connections"),), pool_size))
    >>> "pool_size" in scenario_quantities()
    True
    >>> unregister_provider("example")
    """
    if provider.name in _PROVIDERS:
        raise InvalidParameterError("provider", "is registered already", provider.name)
    taken = scenario_quantities()
    for quantity in provider.quantities:
        if quantity.name in taken:
            rule = "must not name a quantity another provider gives"
            raise InvalidParameterError("quantity", rule, quantity.name)
    _PROVIDERS[provider.name] = provider


def unregister_provider(name: str) -> None:
    """Remove a registered provider (nothing happens if there is none)."""
    _PROVIDERS.pop(name, None)


def scenario_quantities() -> dict[str, Quantity]:
    """Return every quantity scenario sweeps can report, by name."""
    return {q.name: q for p in _PROVIDERS.values() for q in p.quantities}


def fields_provider(
    name: str,
    function: Callable[[Scenario], Any],
    quantities: Iterable[Quantity],
    *,
    part: str | None = None,
) -> QuantityProvider:
    """Return a provider that calls ``function(scenario)`` and reads attributes.

    Parameters
    ----------
    name
        The provider's name; its quantities are named ``<name>.<attribute>``.
    function
        A picklable function of a scenario returning an object (a frozen
        dataclass) whose attributes hold the quantities; an attribute that
        is None becomes NaN.
    quantities
        The attributes to offer, as `Quantity` objects named by attribute.
    part
        If given, the attribute of each attribute to report: ``"value"``
        when every attribute is a result object with a ``value`` field.

    Returns
    -------
    QuantityProvider
        Ready for `register_provider`.

    Examples
    --------
    The design limits join sweeps with one registration (each limit is an
    object whose ``value`` is the number)::

        register_provider(fields_provider(
            "limits", compute_limits,
            [Quantity("queue_timeout_max", "s"), Quantity("max_retries", "retries")],
            part="value",
        ))

    >>> provider = fields_provider(
    ...     "header", lambda scenario: scenario.scenario, [Quantity("horizon", "s")]
    ... )
    >>> [q.name for q in provider.quantities]
    ['header.horizon']
    >>> from retrystorm.scenario import default_scenario
    >>> provider.compute(default_scenario(), frozenset({"header.horizon"}))
    {'header.horizon': 3000.0}
    """
    offered = tuple(
        dataclasses.replace(quantity, name=f"{name}.{quantity.name}")
        for quantity in quantities
    )
    return QuantityProvider(name, offered, _AttributeReader(name, function, part))


@dataclass(frozen=True)
class _AttributeReader:
    """Call a function of a scenario and read attributes of its result (picklable).

    Attributes
    ----------
    prefix
        The provider's name, the prefix of its quantities.
    function
        The function of a scenario.
    part
        The attribute to read of each attribute, or None.
    """

    prefix: str
    function: Callable[[Scenario], Any]
    part: str | None = None

    def __call__(self, scenario: Scenario, names: frozenset[str]) -> dict[str, Any]:
        result = self.function(scenario)
        values = {}
        for name in names:
            value = getattr(result, name.removeprefix(self.prefix + "."))
            values[name] = value if self.part is None else getattr(value, self.part)
        return values


_REVIEW_QUANTITIES = (
    Quantity("verdict", "stable, recovers, metastable or overloaded", "text"),
    Quantity("recovery_time", "s from the end of the trigger to the good state"),
    Quantity("peak_queue", "largest backlog of the replay, requests"),
    Quantity("peak_time", "when the backlog peaked, s"),
    Quantity("classification", "stable, vulnerable or overloaded equilibria", "text"),
    Quantity("critical_backlog", "backlog above which it does not recover, requests"),
    Quantity("goodput_during_trigger", "goodput share of demand during the trigger"),
    Quantity("goodput_after_trigger", "goodput share of demand after the trigger"),
)


def _review_quantities(scenario: Scenario, names: frozenset[str]) -> dict[str, Any]:
    """Review the scenario (no remedies, no sensitivity) and pick the numbers."""
    review = review_scenario(scenario, remedies=False, sensitivity=False, limits=False)
    values = {
        "verdict": review.verdict,
        "recovery_time": review.recovery_time,
        "peak_queue": review.peak_queue,
        "peak_time": review.peak_time,
        "classification": review.classification,
        "critical_backlog": review.equilibria.critical_backlog,
        "goodput_during_trigger": review.goodput_during_trigger,
        "goodput_after_trigger": review.goodput_after_trigger,
    }
    return {name: values[name] for name in names}


_POOL_MODELS: dict[str, Callable[..., dict[str, FloatArray]]] = {
    "mmc": _mmc_arrays,
    "mmcd": _mmcd_arrays,
}


def _pool_quantities(scenario: Scenario, names: frozenset[str]) -> dict[str, Any]:
    """Model the proxy pool in normal operation as M/M/c and M/M/c+D (no retries)."""
    rate = scenario.clients.peak_request_rate
    if rate <= 0.0:
        return dict.fromkeys(names)
    parameters = {
        "arrival_rate": rate,
        "service_rate": 1.0 / scenario.database.service_time,
        "servers": scenario.proxy.pool_size,
    }
    values: dict[str, Any] = {}
    with np.errstate(all="ignore"):  # inf where an M/M/c mean does not exist
        for prefix, kernel in _POOL_MODELS.items():
            wanted = {n for n in names if n.startswith(prefix + ".")}
            if not wanted:
                continue
            extra = (
                {"timeout": scenario.proxy.queue_timeout} if prefix == "mmcd" else {}
            )
            result = kernel(**parameters, **extra)
            values.update({n: float(result[n.partition(".")[2]]) for n in wanted})
    return values


def _pool_quantity_list() -> tuple[Quantity, ...]:
    """``mmc.*`` and ``mmcd.*``: every quantity of the two pool models."""
    what = {
        "mmc": "M/M/c of the pool at the peak fresh rate, no retries",
        "mmcd": "M/M/c+D of the pool with the proxy's queueing timeout",
    }
    return tuple(
        Quantity(f"{prefix}.{name}", f"{name} of the {what[prefix]}")
        for prefix in ("mmc", "mmcd")
        for name in _MODELS[prefix].quantities
    )


register_provider(QuantityProvider("review", _REVIEW_QUANTITIES, _review_quantities))
register_provider(QuantityProvider("pool", _pool_quantity_list(), _pool_quantities))
register_provider(
    fields_provider(
        "limits",
        compute_limits,
        [
            Quantity(name, f"design limit {name} (see retrystorm limits)")
            for name in LIMIT_NAMES
        ],
        part="value",
    )
)

_DEFAULT_SCENARIO_QUANTITIES = ("verdict", "recovery_time", "peak_queue")


# -- scenario sweeps ----------------------------------------------------------------


class SweepInterrupted(KeyboardInterrupt):
    """A scenario sweep was interrupted; the finished rows are kept.

    Derives from `KeyboardInterrupt`, so code that handles Ctrl-C handles it.

    Parameters
    ----------
    frame
        The rows that finished (and were written to the output file), sorted
        by point.
    total
        The number of points of the grid.
    """

    def __init__(self, frame: pd.DataFrame, total: int) -> None:
        self.frame = frame
        self.total = total
        super().__init__(f"sweep interrupted after {len(frame)} of {total} points")


@dataclass(frozen=True)
class _Plan:
    """What a worker needs: the providers, each with its requested names."""

    parts: tuple[tuple[QuantityProvider, frozenset[str]], ...]
    integer_fields: frozenset[str] = field(default_factory=frozenset)


def _plan(quantities: tuple[str, ...], integer_fields: frozenset[str]) -> _Plan:
    """Group the requested quantities by provider."""
    parts = []
    for provider in _PROVIDERS.values():
        names = frozenset(q.name for q in provider.quantities) & set(quantities)
        if names:
            parts.append((provider, names))
    return _Plan(tuple(parts), integer_fields)


def _evaluate(
    scenario: Scenario, plan: _Plan, index: int, values: Mapping[str, float]
) -> tuple[int, dict[str, Any]]:
    """One grid point: change the scenario, ask each provider; errors become text."""
    changes = {
        path: int(value) if path in plan.integer_fields else value
        for path, value in values.items()
    }
    row: dict[str, Any] = {"error": ""}
    try:
        changed = scenario.with_changes(changes) if changes else scenario
        for provider, names in plan.parts:
            row.update(provider.compute(changed, names))
    except RetrystormError as error:
        row = {"error": _one_line(error)}
    return index, row


def _one_line(error: RetrystormError) -> str:
    """Return the message on one line (of a scenario error: its first problem)."""
    if isinstance(error, ScenarioError) and error.problems:
        path, message = error.problems[0]
        return f"{path}: {message}" if path else message
    return " ".join(str(error).split())


# Set in each worker process by `_start_worker`.
_WORKER: tuple[Scenario, _Plan] | None = None


def _start_worker(scenario: Scenario, plan: _Plan) -> None:
    """Keep the scenario in the worker and leave Ctrl-C to the parent process."""
    global _WORKER  # noqa: PLW0603 - per-process state of a worker
    _WORKER = (scenario, plan)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _evaluate_in_worker(
    index: int, values: Mapping[str, float]
) -> tuple[int, dict[str, Any]]:
    """`_evaluate` with the worker's scenario and plan."""
    assert _WORKER is not None, "the worker was not started by _start_worker"
    scenario, plan = _WORKER
    return _evaluate(scenario, plan, index, values)


class _Rows:
    """Collects finished rows, writes each at once and reports progress."""

    def __init__(
        self,
        columns: Mapping[str, ColumnKind],
        total: int,
        sink: SweepFile | None,
        progress: Progress | None,
    ) -> None:
        self.columns = dict(columns)
        self.total = total
        self.sink = sink
        self.progress = progress
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        index: int,
        values: Mapping[str, float],
        result: Mapping[str, Any],
        *,
        report: bool = True,
    ) -> None:
        """Record one finished point and write it; then report progress."""
        row = {"point": index, **values, **result}
        self.rows.append(row)
        if self.sink is not None:
            self.sink.write(self._frame([row]))
        if report and self.progress is not None:
            self.progress(len(self.rows), self.total)

    def frame(self) -> pd.DataFrame:
        """Every row so far, sorted by point."""
        return self._frame(sorted(self.rows, key=lambda row: row["point"]))

    def _frame(self, rows: list[dict[str, Any]]) -> pd.DataFrame:
        data: dict[str, Any] = {}
        for name, kind in self.columns.items():
            column = [row.get(name) for row in rows]
            if kind == "float":
                data[name] = np.array(
                    [math.nan if v is None else float(v) for v in column], dtype=float
                )
            elif kind == "int":
                data[name] = np.array(column, dtype=np.int64)
            else:
                data[name] = pd.array(column, dtype=object)
        return pd.DataFrame(data).set_index("point")


def sweep_scenario(
    scenario: Scenario,
    grid: GridLike,
    quantities: Iterable[str] | None = None,
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    out: str | os.PathLike[str] | None = None,
    scheduler: str | Client | None = None,
) -> pd.DataFrame:
    """Evaluate a scenario with its numeric fields changed over a grid.

    Parameters
    ----------
    scenario
        The scenario; unswept fields keep its values.
    grid
        Numeric fields by dotted path (``proxy.queue_timeout``,
        ``clients.request_rate``, ``events.0.duration``), each with its
        values (see `make_grid`). Whole-number fields (``proxy.pool_size``)
        take whole numbers.
    quantities
        What to report (default: ``verdict``, ``recovery_time``,
        ``peak_queue``); see `scenario_quantities`.
    workers
        Processes to run the points in (default: ``os.cpu_count()``; 1 runs
        them in this process). Ignored with ``scheduler``.
    progress
        Called as ``progress(completed, total)`` after each finished row has
        been written.
    out
        A ``.csv``, ``.jsonl`` or ``.parquet`` file; each row is written as
        soon as it finishes (in the order points finish; the ``point`` column
        gives the grid order).
    scheduler
        The address of a Dask scheduler (``tcp://host:8786``) or a
        ``distributed.Client``: the points run on that cluster instead, with
        the same rows. Needs the optional ``dask.distributed``
        (``pip install 'retrystorm[dask]'``).

    Returns
    -------
    pandas.DataFrame
        One row per point, indexed by ``point``: the swept fields, the
        quantities (NaN where one does not exist, as a recovery time of a
        system that does not recover) and ``error`` (empty, or why the point
        has no answer: a changed scenario that breaks a rule).

    Raises
    ------
    InvalidParameterError
        For a path that is not a numeric field of the scenario or a quantity
        that is not known (both with the closest names), a fractional value
        of a whole-number field, a bad ``workers``, ``out`` or ``scheduler``.
    SweepInterrupted
        On Ctrl-C (or a ``KeyboardInterrupt`` from ``progress``): carries the
        finished rows, which are also in ``out``, complete and readable.

    Notes
    -----
    The grid is generated lazily and at most two points per worker are in
    flight, so memory does not grow with the grid beyond the finished rows
    (a few hundred bytes each). Workers ignore Ctrl-C; the parent stops
    handing out points, waits for the running ones (keeping their rows) and
    closes the file.

    Worker processes start the platform's way (`concurrent.futures`). Where
    that is by spawning a fresh interpreter (Windows, macOS, Python 3.14 on
    Linux), a script must call this under ``if __name__ == "__main__":``, and
    a custom provider's ``compute`` must be importable by the workers.

    Examples
    --------
    >>> from retrystorm.scenario import default_scenario
    >>> frame = sweep_scenario(
    ...     default_scenario(),
    ...     {"clients.request_rate": "100,200"},
    ...     ["mmc.utilization", "mmc.wait_probability"],
    ...     workers=1,
    ... )
    >>> frame[["clients.request_rate", "mmc.utilization"]]
           clients.request_rate  mmc.utilization
    point
    0                     100.0             0.40
    1                     200.0             0.80
    """
    checked = make_grid(grid)
    integer_fields = _check_scenario_grid(scenario, checked)
    names = _check_quantities(
        _DEFAULT_SCENARIO_QUANTITIES if quantities is None else quantities,
        tuple(scenario_quantities()),
        "scenarios",
    )
    plan = _plan(names, integer_fields)
    columns = _scenario_columns(checked, names, integer_fields)
    count = _check_workers(workers)

    sink = open_sweep_file(out, columns) if out is not None else None
    rows = _Rows(columns, len(checked), sink, progress)
    client: Any = None
    try:
        client = _client(scheduler) if scheduler is not None else None
        if client is not None:
            _run_on_dask(client, scenario, plan, checked, rows)
        elif min(count, len(checked)) <= 1:
            for index, values in checked.points():
                rows.add(index, values, _evaluate(scenario, plan, index, values)[1])
        else:
            _run_in_processes(min(count, len(checked)), scenario, plan, checked, rows)
    except KeyboardInterrupt:
        raise SweepInterrupted(rows.frame(), len(checked)) from None
    finally:
        if sink is not None:
            sink.close()
        if client is not None and isinstance(scheduler, str):
            client.close()
    return rows.frame()


def _check_scenario_grid(scenario: Scenario, grid: Grid) -> frozenset[str]:
    """Every axis names a numeric field; whole-number fields get whole numbers."""
    fields = scenario.numeric_fields()
    integers = set()
    for axis in grid.axes:
        if axis.name not in fields:
            rule = (
                f"must be a numeric field of scenario {scenario.name}"
                f"{_suggest(axis.name, fields)}"
            )
            raise InvalidParameterError(axis.name, rule, axis.values.tolist())
        if isinstance(scenario.field_value(axis.name), int):
            integers.add(axis.name)
            values = axis.values
            bad = ~np.isfinite(values) | (values != np.floor(values))
            if bad.any():
                rule = "must contain only whole numbers (the field is a count)"
                raise InvalidParameterError(axis.name, rule, float(values[bad][0]))
    return frozenset(integers)


def _scenario_columns(
    grid: Grid, quantities: tuple[str, ...], integer_fields: frozenset[str]
) -> dict[str, ColumnKind]:
    """Return the output columns of a scenario sweep and their kinds."""
    known = scenario_quantities()
    columns: dict[str, ColumnKind] = {"point": "int"}
    for name in grid.names:
        columns[name] = "int" if name in integer_fields else "float"
    for name in quantities:
        columns[name] = known[name].kind
    columns["error"] = "text"
    return columns


def _check_workers(workers: int | None) -> int:
    """Return the number of worker processes (default: the machine's CPUs)."""
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidParameterError("workers", "must be a positive integer", workers)
    return workers


def _run_in_processes(
    workers: int, scenario: Scenario, plan: _Plan, grid: Grid, rows: _Rows
) -> None:
    """Run the points in a process pool, a bounded number in flight."""
    pool = ProcessPoolExecutor(
        max_workers=workers, initializer=_start_worker, initargs=(scenario, plan)
    )
    pending: dict[Future[tuple[int, dict[str, Any]]], dict[str, float]] = {}
    limit = workers * _IN_FLIGHT_PER_WORKER
    points = grid.points()
    try:
        while True:
            for index, values in itertools.islice(points, limit - len(pending)):
                pending[pool.submit(_evaluate_in_worker, index, values)] = values
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index, result = future.result()
                rows.add(index, pending.pop(future), result)
    except KeyboardInterrupt:
        # Stop handing out points; keep the rows of the points already running.
        pool.shutdown(wait=True, cancel_futures=True)
        for future, values in pending.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                index, result = future.result()
                rows.add(index, values, result, report=False)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _client(scheduler: str | Client) -> Any:
    """Return a Dask client for an address (or the client given)."""
    try:
        from distributed import Client  # noqa: PLC0415 - optional dependency
    except ImportError:
        rule = (
            "needs the optional package dask.distributed "
            "(pip install 'retrystorm[dask]')"
        )
        raise InvalidParameterError("scheduler", rule, str(scheduler)) from None
    if isinstance(scheduler, Client):
        return scheduler
    if not isinstance(scheduler, str) or not scheduler.strip():
        rule = "must be the address of a Dask scheduler or a distributed.Client"
        raise InvalidParameterError("scheduler", rule, scheduler)
    try:
        return Client(scheduler, timeout=_SCHEDULER_TIMEOUT)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as error:
        rule = f"must be the address of a running Dask scheduler ({error})"
        raise InvalidParameterError("scheduler", rule, scheduler) from None


def _run_on_dask(
    client: Any, scenario: Scenario, plan: _Plan, grid: Grid, rows: _Rows
) -> None:
    """Run the points on a Dask cluster, a bounded number in flight."""
    from distributed import as_completed  # noqa: PLC0415 - optional dependency

    threads = max(1, sum(client.nthreads().values()))
    limit = threads * _IN_FLIGHT_PER_WORKER
    [shared] = client.scatter([scenario], broadcast=True)
    points = grid.points()
    pending: dict[Any, dict[str, float]] = {}

    def submit(count: int) -> list[Any]:
        futures = []
        for index, values in itertools.islice(points, count):
            future = client.submit(_evaluate, shared, plan, index, values, pure=False)
            pending[future] = values
            futures.append(future)
        return futures

    queue = as_completed(submit(limit))  # type: ignore[no-untyped-call]
    try:
        for future in queue:
            index, result = future.result()
            rows.add(index, pending.pop(future), result)
            queue.update(submit(1))  # type: ignore[no-untyped-call]
    except KeyboardInterrupt:
        client.cancel(list(pending))
        raise
