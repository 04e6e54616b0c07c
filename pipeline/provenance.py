"""Provenance of a training run: what the shards it read looked like (no model or training code)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from pipeline.fingerprint import stable_hash


def data_fingerprint(root: str | Path, extractor: str) -> str:
    """Hash of what training reads: table row counts/schema tags/sizes, feature file sizes,
    stage manifest keys. Path- and mtime-free, so a copied shard tree keeps its hash."""
    root = Path(root)
    items: list[Any] = []
    tables = [root / "videos.parquet", root / "captions.parquet", *sorted((root / "text").glob("*.parquet"))]
    for p in tables:
        if p.exists():
            md = pq.read_metadata(p)
            meta = {k.decode(): v.decode() for k, v in (md.metadata or {}).items() if not k.startswith(b"ARROW")}
            items.append([p.relative_to(root).as_posix(), md.num_rows, meta, p.stat().st_size])
    for p in [root / "text" / "embeddings.h5", *sorted((root / "features" / extractor).glob("*.h5"))]:
        if p.exists():
            items.append([p.relative_to(root).as_posix(), p.stat().st_size])
    for p in sorted((root / "_stages").rglob("*.json")) if (root / "_stages").exists() else []:
        try:
            m = json.loads(p.read_text())
            items.append([p.relative_to(root).as_posix(), m.get("key"), m.get("counts")])
        except (OSError, ValueError):
            items.append([p.relative_to(root).as_posix(), "unreadable"])
    return stable_hash(items)
