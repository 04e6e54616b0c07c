"""Search index files (the only code that knows their format).

An index lives in a folder ``<index_dir>`` (by default ``<run_dir>/index``)::

    CURRENT                  name of the committed build folder (written last, atomically)
    <build>/arrays.h5        one float dataset per array, leading dim = videos (row order of videos.parquet)
    <build>/videos.parquet   one row per video: row, key, split, n_frames, source, caption, thumbs
    <build>/index.json       provenance: checkpoint / shards / vocabulary fingerprints, shapes, config
    <build>/thumbs/*.jpg     thumbnail strips (a few small JPEGs per video)

A build is written into a fresh ``<build>`` folder (every file through ``atomic_path``) and
committed by replacing ``CURRENT``; a reader never sees a half-written index, and a
failed or killed build leaves the previous one in place. Older builds are removed
after the switch. ``arrays.h5`` datasets are contiguous and uncompressed, so readers
memory-map them (no copy; pages are read on demand).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from storage._h5 import atomic_h5, check_schema, h5_size_estimate, set_attrs

INDEX_SCHEMA_VERSION = 1
CURRENT = "CURRENT"
ARRAYS = "arrays.h5"
VIDEOS = "videos.parquet"
META = "index.json"
THUMBS = "thumbs"

VIDEO_SCHEMA = pa.schema([
    ("row", pa.int32()), ("key", pa.string()), ("split", pa.string()), ("n_frames", pa.int32()),
    ("source", pa.string()), ("caption", pa.string()), ("thumbs", pa.list_(pa.string())),
])
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class IndexMissing(FileNotFoundError):
    """No committed index at a path."""


def safe_name(key: str) -> str:
    """A file-name-safe, collision-resistant stem for a video key."""
    import hashlib

    return f"{_SAFE.sub('_', key)[:60]}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


class IndexWriter:
    """Write one index build; ``commit()`` makes it the current one."""

    def __init__(self, index_dir: str | os.PathLike):
        self.index_dir = Path(index_dir)
        self.build = f"build-{uuid.uuid4().hex[:12]}"
        self.dir = self.index_dir / self.build
        (self.dir / THUMBS).mkdir(parents=True, exist_ok=True)

    def write_thumb(self, name: str, jpeg: bytes) -> str:
        """Store one JPEG under thumbs/; returns its path relative to the build folder."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad thumbnail name {name!r}")
        atomic_write_bytes(self.dir / THUMBS / name, jpeg)
        return f"{THUMBS}/{name}"

    def write(self, arrays: Mapping[str, np.ndarray], rows: list[dict[str, Any]], meta: Mapping[str, Any]) -> None:
        n = len(rows)
        for name, a in arrays.items():
            if a.shape[0] != n:
                raise ValueError(f"array {name}: {a.shape[0]} rows for {n} videos")
        self.write_blocks([arrays], rows, meta, sum(int(a.nbytes) for a in arrays.values()))

    def write_blocks(self, blocks: Iterable[Mapping[str, np.ndarray]], rows: list[dict[str, Any]],
                     meta: Mapping[str, Any], data_bytes: int) -> None:
        """:meth:`write` for arrays too large to hold at once: ``blocks`` yields consecutive row blocks, each with
        every array (the first block fixes names, shapes and dtypes); ``data_bytes`` (all arrays, all rows) sizes
        the up-front disk check. Same file as :meth:`write` (contiguous datasets, memory-mappable)."""
        n = len(rows)
        at, names = 0, None
        with atomic_h5(self.dir / ARRAYS, expected_bytes=h5_size_estimate(data_bytes, 64)) as f:
            set_attrs(f, {"n_videos": n}, INDEX_SCHEMA_VERSION)
            for block in blocks:
                if not block:  # no arrays at all (write({}, ...)): nothing to store
                    continue
                m = {int(a.shape[0]) for a in block.values()}
                if names is None:
                    names = set(block)
                    for name, a in block.items():  # contiguous (no chunks, no filters): memory-mappable
                        f.create_dataset(name, shape=(n, *a.shape[1:]), dtype=a.dtype)
                if set(block) != names or len(m) != 1 or at + min(m) > n:
                    raise ValueError(f"index block at row {at}: arrays {sorted(block)} with {sorted(m)} rows do not "
                                     f"continue {sorted(names)} ({n} rows)")
                m = m.pop()
                for name, a in block.items():
                    if m:
                        f[name][at:at + m] = np.ascontiguousarray(a)
                at += m
            if names is not None and at != n:
                raise ValueError(f"index blocks hold {at} rows for {n} videos")
        table = pa.Table.from_pylist(rows, schema=VIDEO_SCHEMA).replace_schema_metadata(
            {b"schema_name": b"search_index_videos", b"schema_version": str(INDEX_SCHEMA_VERSION).encode()})
        with atomic_path(self.dir / VIDEOS) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        atomic_write_text(self.dir / META, json.dumps({"schema_version": INDEX_SCHEMA_VERSION, "build": self.build,
                                                        "n_videos": n, **meta}, indent=2, default=str))

    def commit(self) -> Path:
        atomic_write_text(self.index_dir / CURRENT, self.build + "\n")
        for old in self.index_dir.glob("build-*"):
            if old.is_dir() and old.name != self.build:
                shutil.rmtree(old, ignore_errors=True)
        return self.dir

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def current_build(index_dir: str | os.PathLike) -> Path:
    index_dir = Path(index_dir)
    ptr = index_dir / CURRENT
    if not ptr.exists():
        raise IndexMissing(f"{index_dir}: no search index here; build one with `vtr index --checkpoint ...`")
    name = ptr.read_text().strip()
    if not re.fullmatch(r"build-[0-9a-f]{12}", name) or not (index_dir / name / META).exists():
        raise IndexMissing(f"{index_dir}: CURRENT points at {name!r}, which is not a complete build; rebuild the index")
    return index_dir / name


def read_meta(build_dir: Path) -> dict[str, Any]:
    meta = json.loads((build_dir / META).read_text())
    if meta.get("schema_version") != INDEX_SCHEMA_VERSION:
        raise ValueError(f"{build_dir}: index schema_version {meta.get('schema_version')} != "
                         f"{INDEX_SCHEMA_VERSION}; rebuild the index")
    return meta


def read_videos(build_dir: Path) -> list[dict[str, Any]]:
    path = build_dir / VIDEOS
    md = pq.read_schema(path).metadata or {}
    version = str(INDEX_SCHEMA_VERSION).encode()
    if md.get(b"schema_name") != b"search_index_videos" or md.get(b"schema_version") != version:
        raise ValueError(f"{path}: not a v{INDEX_SCHEMA_VERSION} search-index video table; rebuild the index")
    return pq.read_table(path).to_pylist()


def read_arrays(build_dir: Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """Every array of arrays.h5; memory-mapped (read-only) when the dataset allows it."""
    path = build_dir / ARRAYS
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        check_schema(f, path, INDEX_SCHEMA_VERSION, "search index", "rebuild the index")
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in names:
            ds = f[name]
            offset = ds.id.get_offset() if mmap and ds.chunks is None and ds.compression is None else None
            if offset is not None and ds.size > 0:
                out[name] = np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)
            else:
                out[name] = ds[()]
    return out
