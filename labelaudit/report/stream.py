"""Parquet output in batches (pyarrow ParquetWriter), for reports too large to convert in one piece.

Given a ``schema``, the file has the same columns, types, values and key-value metadata as
:func:`labelaudit.report.parquet.write_parquet` gives for the same rows; only the row groups
differ. It is written to a temporary name and renamed at the end, so an interrupted run leaves
the previous file or none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .files import atomic_path

#: rows converted and written at a time
BATCH_ROWS = 65_536


def write_parquet_batches(batches: Iterable[pd.DataFrame], target: str | Path, *, schema: pa.Schema | None = None,
                          metadata: dict[str, Any] | None = None) -> Path:
    """Write frames with the same columns, one after the other, as one Parquet file.

    Parameters
    ----------
    batches
        Frames with identical columns (e.g. consecutive row ranges of a report); at least one.
    target
        Output file.
    schema
        Types of the leading columns; any other column is written as strings. Default: the
        types pyarrow infers from the first batch.
    metadata
        Key-value metadata; values that are not strings are stored as JSON.
    """
    target = Path(target)
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise ValueError("write_parquet_batches needs at least one batch")
    full_schema = _full_schema(first, schema)
    if metadata:
        encoded = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in metadata.items()}
        full_schema = full_schema.with_metadata({**(full_schema.metadata or {}), **encoded})
    with atomic_path(target) as temporary:
        with pq.ParquetWriter(temporary, full_schema) as writer:
            for frame in _chain(first, iterator):
                writer.write_table(_to_table(frame, full_schema))
    return target


def write_frame_in_batches(frame: pd.DataFrame, target: str | Path, *, schema: pa.Schema | None = None,
                           metadata: dict[str, Any] | None = None, batch_rows: int = BATCH_ROWS) -> Path:
    """``frame`` written ``batch_rows`` rows at a time: never a second full copy in Arrow form."""
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    starts = range(0, max(len(frame), 1), batch_rows)
    return write_parquet_batches((frame.iloc[start:start + batch_rows] for start in starts), target,
                                 schema=schema, metadata=metadata)


def _chain(first: pd.DataFrame, rest: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    yield first
    yield from rest


def _full_schema(frame: pd.DataFrame, schema: pa.Schema | None) -> pa.Schema:
    if schema is None:
        return pa.Schema.from_pandas(frame, preserve_index=False).remove_metadata()
    fields = list(schema)
    fields += [pa.field(column, pa.string()) for column in frame.columns if column not in schema.names]
    return pa.schema(fields)


def _to_table(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    # As write_parquet: a schema column the frame lacks is written as nulls.
    arrays = [pa.array(_values(frame[field.name]), type=field.type, from_pandas=True) if field.name in frame.columns
              else pa.nulls(len(frame), field.type) for field in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _values(series: pd.Series) -> list:
    """Python values with every pandas missing marker (None, NaN, NaT, pd.NA) as None."""
    missing = series.isna().tolist()
    return [None if is_missing else value for value, is_missing in zip(series.tolist(), missing)]
