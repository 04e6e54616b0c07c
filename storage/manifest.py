"""Stage manifests: a JSON file written LAST marks a stage (or a shard) committed.

``<root>/_stages/<stage>.json`` or ``<root>/_stages/<stage>/<shard>.json``.
It records the cache key, the stage config, code version, input fingerprints,
counts and timings, so a shard tree explains how it was made.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from storage.atomic import TMP_MARK, atomic_write_text

MANIFEST_SCHEMA_VERSION = 1


class StageManifest(BaseModel):
    stage: str
    key: str
    schema_version: int = MANIFEST_SCHEMA_VERSION
    shard: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    code_version: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    timings_s: dict[str, float] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)


def manifest_path(root: str | os.PathLike, stage: str, shard: str | None = None) -> Path:
    base = Path(root) / "_stages"
    return base / stage / f"{shard}.json" if shard is not None else base / f"{stage}.json"


def write_manifest(root: str | os.PathLike, manifest: StageManifest) -> Path:
    path = manifest_path(root, manifest.stage, manifest.shard)
    atomic_write_text(path, manifest.model_dump_json(indent=2))
    return path


class ManifestVersionError(ValueError):
    """A manifest written with another MANIFEST_SCHEMA_VERSION."""


def manifest_files(root: str | os.PathLike) -> list[Path]:
    """Every manifest file under ``root/_stages`` (stages and their shards), sorted; no temporaries."""
    base = Path(root) / "_stages"
    if not base.is_dir():
        return []
    return sorted(p for p in [*base.glob("*.json"), *base.glob("*/*.json")] if not p.name.startswith(TMP_MARK))


def read_manifest_data(path: str | os.PathLike) -> dict[str, Any]:
    """A manifest file's JSON as stored, unchecked (OSError / ValueError when unreadable)."""
    return json.loads(Path(path).read_text())


def load_manifest_file(path: str | os.PathLike) -> StageManifest:
    """One manifest file, checked: ManifestVersionError for another schema version,
    pydantic's ValidationError (a ValueError) for a file that is not a stage manifest."""
    data = read_manifest_data(path)
    if data.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise ManifestVersionError(
            f"{path}: manifest schema_version {data.get('schema_version')!r} != {MANIFEST_SCHEMA_VERSION}; "
            "rebuild this output root with the current code"
        )
    return StageManifest.model_validate(data)


def read_manifest(root: str | os.PathLike, stage: str, shard: str | None = None) -> StageManifest | None:
    """The committed manifest, or None when the stage/shard is not committed."""
    path = manifest_path(root, stage, shard)
    if not path.exists():
        return None
    return load_manifest_file(path)


def commit_status(root: str | os.PathLike, stage: str, key: str, shard: str | None = None) -> str:
    """'committed', or why not: 'not built', 'inputs/config changed', 'output lost: <path>'."""
    m = read_manifest(root, stage, shard)
    if m is None:
        return "not built"
    if m.key != key:
        return "inputs/config changed"
    lost = [o for o in m.outputs if not (Path(root) / o).exists()]
    return f"output lost: {lost[0]}" if lost else "committed"


def is_committed(root: str | os.PathLike, stage: str, key: str, shard: str | None = None) -> bool:
    """True when the stage/shard was committed with this exact cache key and its outputs exist."""
    return commit_status(root, stage, key, shard) == "committed"
