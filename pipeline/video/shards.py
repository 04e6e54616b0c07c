"""Which videos each feature shard holds, and where its outputs go: planning without torch (a cached
rerun plans every shard's key without importing a backbone; pipeline/video/extract.py computes them)."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from storage.tables import read_table, table_metadata


class ShardSpec(BaseModel):
    """One shard's videos, in key order; ``paths`` are absolute (their part of the extraction keys:
    :func:`pipeline.fingerprint.shard_fingerprint`)."""

    model_config = ConfigDict(frozen=True)

    id: str
    keys: list[str]
    paths: list[str]
    splits: list[str | None]
    statuses: list[str]
    errors: list[str | None]


def shard_id(i: int) -> str:
    return f"shard-{i:05d}"


def _spec(i: int, rows: list[dict], base: Path) -> ShardSpec:
    return ShardSpec(id=shard_id(i), keys=[r["key"] for r in rows], paths=[str(base / r["path"]) for r in rows],
                     splits=[r["split"] for r in rows], statuses=[r["status"] for r in rows],
                     errors=[r["error_message"] for r in rows])


def plan_shards(root: str | Path, shard_size: int, dataset_root: str | Path | None = None) -> list[ShardSpec]:
    """Split ``videos.parquet`` (sorted by key) into shards of ``shard_size`` videos.

    Paths are made absolute with ``dataset_root``, by default the one ingest
    recorded in the table's metadata.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    path = Path(root) / "videos.parquet"
    rows = sorted(read_table(path, "videos").to_pylist(), key=lambda r: r["key"])
    base = Path(dataset_root or table_metadata(path)["dataset_root"])
    return [_spec(i, rows[s:s + shard_size], base) for i, s in enumerate(range(0, len(rows), shard_size))]


def shard_outputs(extractor: str, shard: str) -> tuple[str, str]:
    """(features, status) paths of one shard, relative to the shard root."""
    base = f"features/{extractor}/shards/{shard}"
    return f"{base}.h5", f"{base}.status.parquet"
