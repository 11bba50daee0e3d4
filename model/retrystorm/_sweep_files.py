"""Output files of sweeps: rows appended as they finish (CSV, JSON lines, Parquet).

The extension of the file chooses the format. CSV and JSON lines are flushed
after every write, so every row written survives even a killed process;
Parquet is written in row groups through ``pyarrow`` (an optional dependency)
and is readable once the file is closed, which a Ctrl-C does too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from retrystorm.errors import InvalidParameterError

__all__ = ["ColumnKind", "SweepFile", "open_sweep_file"]

ColumnKind = Literal["int", "float", "text"]

# Rows buffered before a Parquet row group is written (bigger frames go as
# they are).
_PARQUET_ROWS = 1000
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


class SweepFile:
    """Rows of a sweep written to a file as they come (CSV, JSON lines, Parquet).

    Use `open_sweep_file` to make one; write frames indexed by ``point`` with
    `write`, and `close` it (or use it as a context manager).

    In JSON lines an infinity is written as the string ``"inf"`` (or
    ``"-inf"``) and NaN as null, so every line is strict JSON; CSV writes
    ``inf`` and an empty field.

    Attributes
    ----------
    path
        The file.
    columns
        Column name to kind (``int``, ``float`` or ``text``), in order.
    rows_written
        Rows written so far.
    """

    def __init__(self, path: Path, columns: Mapping[str, ColumnKind]) -> None:
        self.path = path
        self.columns = dict(columns)
        self.rows_written = 0
        self._format = _FORMATS[path.suffix.lower()]
        self._pending: list[pd.DataFrame] = []
        self._parquet: Any = None
        self._schema: Any = None
        self._stream: Any = None
        if self._format == "parquet":
            self._open_parquet()
        else:
            self._stream = path.open("w", encoding="utf-8", newline="")

    def __enter__(self) -> SweepFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, frame: pd.DataFrame) -> None:
        """Append the rows of ``frame`` (indexed by ``point``)."""
        table = self._typed(frame.reset_index())
        if self._format == "csv":
            table.to_csv(self._stream, header=self.rows_written == 0, index=False)
            self._stream.flush()
        elif self._format == "jsonl":
            for record in table.to_dict("records"):
                self._stream.write(json.dumps(_json_ready(record)) + "\n")
            self._stream.flush()
        else:
            self._pending.append(table)
            if sum(len(t) for t in self._pending) >= _PARQUET_ROWS:
                self._flush_parquet()
        self.rows_written += len(table)

    def close(self) -> None:
        """Finish the file (a Parquet file gets its last row group and footer)."""
        if self._parquet is not None:
            self._flush_parquet()
            self._parquet.close()
            self._parquet = None
        if self._stream is not None:
            if self.rows_written == 0 and self._format == "csv":
                self._stream.write(",".join(self.columns) + "\n")
            self._stream.close()
            self._stream = None

    def _typed(self, table: pd.DataFrame) -> pd.DataFrame:
        """Return the columns in order, each with its kind."""
        ordered = table[list(self.columns)].copy()
        for name, kind in self.columns.items():
            if kind == "float":
                ordered[name] = ordered[name].astype(float)
            elif kind == "int":
                ordered[name] = ordered[name].astype(np.int64)
            else:
                ordered[name] = ordered[name].astype(object)
        return ordered

    def _open_parquet(self) -> None:
        """Start a Parquet file with the schema of the columns."""
        pa, pq = _pyarrow()
        kinds = {"int": pa.int64(), "float": pa.float64(), "text": pa.string()}
        self._schema = pa.schema([(n, kinds[k]) for n, k in self.columns.items()])
        self._parquet = pq.ParquetWriter(self.path, self._schema)

    def _flush_parquet(self) -> None:
        """Write the buffered rows as one row group."""
        if not self._pending:
            return
        pa, _ = _pyarrow()
        table = pd.concat(self._pending, ignore_index=True)
        self._pending = []
        self._parquet.write_table(
            pa.Table.from_pandas(table, schema=self._schema, preserve_index=False)
        )


def open_sweep_file(
    path: str | os.PathLike[str], columns: Mapping[str, ColumnKind]
) -> SweepFile:
    """Create (or overwrite) a sweep output file; the extension picks the format.

    Parameters
    ----------
    path
        ``*.csv``, ``*.jsonl`` (or ``*.ndjson``) or ``*.parquet``.
    columns
        Column name to kind (``int``, ``float``, ``text``), in order.

    Returns
    -------
    SweepFile
        The open file.

    Raises
    ------
    InvalidParameterError
        If the extension is not one of those, the folder does not exist, or
        Parquet is asked for without the optional package ``pyarrow``.
    """
    target = Path(path)
    if target.suffix.lower() not in _FORMATS:
        rule = "must end in .csv, .jsonl or .parquet (the extension picks the format)"
        raise InvalidParameterError("out", rule, str(path))
    if not target.parent.is_dir():
        raise InvalidParameterError("out", "must be in an existing folder", str(path))
    return SweepFile(target, columns)


def _pyarrow() -> tuple[Any, Any]:
    """Import pyarrow and its Parquet module, or say how to install them."""
    try:
        import pyarrow as pa  # noqa: PLC0415 - optional dependency
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional dependency
    except ImportError:
        rule = (
            "needs the optional package pyarrow to write Parquet "
            "(pip install 'retrystorm[parquet]'), or use .csv or .jsonl"
        )
        raise InvalidParameterError("out", rule, ".parquet") from None
    return pa, pq


def _json_ready(record: Mapping[str, Any]) -> dict[str, Any]:
    """Prepare a row for strict JSON: NaN becomes null, inf ``"inf"``/``"-inf"``."""
    ready: dict[str, Any] = {}
    for key, value in record.items():
        item = value.item() if isinstance(value, np.generic) else value
        if isinstance(item, float) and math.isnan(item):
            item = None
        elif isinstance(item, float) and math.isinf(item):
            item = "inf" if item > 0 else "-inf"
        ready[key] = item
    return ready
