"""Parquet output with the run's key-value metadata, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .files import atomic_path


def write_parquet(frame: pd.DataFrame, target: str | Path, *, schema: pa.Schema | None = None,
                  metadata: dict[str, Any] | None = None) -> Path:
    """Write ``frame`` to ``target``; ``schema`` fixes the leading columns' types (extra columns are
    written as strings, schema columns the frame lacks as nulls); ``metadata`` values that are not
    strings are stored as JSON."""
    table = _to_table(frame, schema)
    if metadata:
        encoded = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in metadata.items()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **encoded})
    target = Path(target)
    with atomic_path(target) as temporary:
        pq.write_table(table, temporary)
    return target


def _to_table(frame: pd.DataFrame, schema: pa.Schema | None) -> pa.Table:
    if schema is None:
        return pa.Table.from_pandas(frame, preserve_index=False)
    fields = list(schema)
    for column in frame.columns:
        if column not in schema.names:
            fields.append(pa.field(column, pa.string()))
    full = pa.schema(fields)
    # A schema column the frame lacks (e.g. the data-issue columns of a frame built by other code) is null.
    arrays = [pa.array(_column_values(frame[f.name]), type=f.type, from_pandas=True) if f.name in frame.columns
              else pa.nulls(len(frame), f.type) for f in full]
    return pa.Table.from_arrays(arrays, schema=full)


def _column_values(series: pd.Series) -> list:
    return [None if _is_missing(v) else v for v in series.tolist()]


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The labelaudit key-value metadata of a Parquet file, JSON values decoded."""
    raw = pq.read_schema(path).metadata or {}
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode()
        if name == "pandas":
            continue
        text = value.decode()
        try:
            decoded[name] = json.loads(text)
        except json.JSONDecodeError:
            decoded[name] = text
    return decoded
