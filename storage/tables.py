"""Parquet tables with a checked schema name and version."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from storage.atomic import atomic_path
from storage.schemas import schema, version

META_NAME = b"schema_name"
META_VERSION = b"schema_version"


class SchemaError(ValueError):
    """A table on disk does not match the schema this code expects."""


def to_table(name: str, rows: Iterable[Mapping[str, Any]] | Mapping[str, list]) -> pa.Table:
    """Build a table of schema ``name`` from row dicts or a column dict."""
    sch = schema(name)
    if isinstance(rows, Mapping):
        return pa.table({f.name: rows[f.name] for f in sch}, schema=sch)
    return pa.Table.from_pylist(list(rows), schema=sch)


def write_table(path: str | os.PathLike, name: str, table: pa.Table | Iterable[Mapping[str, Any]],
                extra_metadata: Mapping[str, str] | None = None) -> Path:
    """Atomically write ``table`` (or rows) as Parquet, tagged with its schema name/version."""
    if not isinstance(table, pa.Table):
        table = to_table(name, table)
    sch = schema(name)
    if not table.schema.equals(sch, check_metadata=False):
        table = table.select(sch.names).cast(sch)
    meta = {META_NAME: name.encode(), META_VERSION: str(version(name)).encode()}
    for k, v in (extra_metadata or {}).items():
        meta[k.encode()] = str(v).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def read_table(path: str | os.PathLike, name: str, columns: list[str] | None = None) -> pa.Table:
    """Read a table, refusing one whose schema name or version differs from this code's."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: table '{name}' not found; run the stage that writes it first")
    meta = pq.read_schema(path).metadata or {}
    got_name = meta.get(META_NAME, b"?").decode()
    got_version = meta.get(META_VERSION, b"?").decode()
    if got_name != name or got_version != str(version(name)):
        raise SchemaError(
            f"{path}: table is '{got_name}' v{got_version}, this code reads '{name}' v{version(name)}; "
            "rebuild the stage that wrote it"
        )
    return pq.read_table(path, columns=columns)


def table_metadata(path: str | os.PathLike) -> dict[str, str]:
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items()}


def table_schema(path: str | os.PathLike) -> pa.Schema:
    """The Arrow schema of a Parquet file as stored (no schema-name check; reads the footer only)."""
    return pq.read_schema(path)


def table_schema_name(path: str | os.PathLike) -> str:
    """The schema name a table was tagged with when written ('' when untagged)."""
    return ((pq.read_schema(path).metadata or {}).get(META_NAME, b"")).decode()


def table_stats(path: str | os.PathLike) -> tuple[int, dict[str, str]]:
    """(row count, key/value metadata without Arrow's own ARROW:* entries) from the footer only."""
    md = pq.read_metadata(path)
    return md.num_rows, {k.decode(): v.decode() for k, v in (md.metadata or {}).items() if not k.startswith(b"ARROW")}
