"""Provenance of a training run: what the shards it read looked like (no model or training code)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.fingerprint import stable_hash
from storage.manifest import manifest_files, read_manifest_data
from storage.tables import table_stats


def data_fingerprint(root: str | Path, extractor: str) -> str:
    """Hash of what training reads: table row counts/schema tags/sizes, feature file sizes,
    stage manifest keys. Path- and mtime-free, so a copied shard tree keeps its hash."""
    root = Path(root)
    items: list[Any] = []
    tables = [root / "videos.parquet", root / "captions.parquet", *sorted((root / "text").glob("*.parquet"))]
    for p in tables:
        if p.exists():
            num_rows, meta = table_stats(p)
            items.append([p.relative_to(root).as_posix(), num_rows, meta, p.stat().st_size])
    for p in [root / "text" / "embeddings.h5", *sorted((root / "features" / extractor).glob("*.h5"))]:
        if p.exists():
            items.append([p.relative_to(root).as_posix(), p.stat().st_size])
    for p in manifest_files(root):
        try:
            m = read_manifest_data(p)
            items.append([p.relative_to(root).as_posix(), m.get("key"), m.get("counts")])
        except (OSError, ValueError):
            items.append([p.relative_to(root).as_posix(), "unreadable"])
    return stable_hash(items)


def built_data_fingerprint(root: str | Path, extractor: str) -> str:
    """:func:`data_fingerprint` of a dataset that was built (FileNotFoundError when ``root`` has no
    committed stage): what scheduled retraining compares with the fingerprint of its last run."""
    if not manifest_files(root):
        raise FileNotFoundError(f"{root}: no committed stages; run a build-features deployment first")
    return data_fingerprint(root, extractor)
