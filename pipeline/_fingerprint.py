"""Stable hashes for cache keys: configs, input files and stage code."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from pydantic import BaseModel


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj`` (pydantic models dumped first)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Content-sensitive but cheap: path, size and mtime_ns (missing files included)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p), "missing": True}
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def files_fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    return stable_hash([file_fingerprint(p) for p in paths])


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def code_version(*modules: ModuleType) -> str:
    """Hash of the source of the modules a stage runs: editing them invalidates caches."""
    sources = [inspect.getsource(m) for m in modules]
    return stable_hash(sources, n=12)
