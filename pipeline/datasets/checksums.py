"""checksums.json of a shard tree: written on request (``python -m pipeline.datasets.validate --write-checksums``),
verified by every validation when present."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from pipeline.datasets.problems import CHECKSUM, ValidationReport, _is_tmp, _safe_rel, _walk_files
from pipeline.fingerprint import sha256_file
from storage.atomic import atomic_write_text


CHECKSUMS_FILE = "checksums.json"
CHECKSUMS_VERSION = 1


def _check_checksums(report: ValidationReport, root: Path) -> None:
    path = root / CHECKSUMS_FILE
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if data.get("algorithm", "sha256") != "sha256" or not isinstance(files, dict):
            raise ValueError("expected {'algorithm': 'sha256', 'files': {path: hex}}")
    except Exception as e:
        report.add(CHECKSUM, path, f"unreadable checksums file: {type(e).__name__}: {e}")
        return
    for rel, want in sorted(files.items()):
        target = _safe_rel(root, rel)
        if target is None:
            report.add(CHECKSUM, path, f"'{rel}' is not a relative path inside the root")
            continue
        if not target.is_file():
            report.add(CHECKSUM, target, "listed in checksums.json but missing")
            continue
        report.checked["checksums"] += 1
        got = sha256_file(target)
        if got != str(want).lower():
            report.add(CHECKSUM, target, f"sha256 {got[:16]}... != {str(want)[:16]}... in checksums.json")


def write_checksums(root: str | os.PathLike, paths: Iterable[str | os.PathLike] | None = None) -> Path:
    """Atomically write ``<root>/checksums.json`` with the sha256 of ``paths``.

    ``paths`` (relative to ``root`` or absolute inside it) default to every file
    under the root except checksums.json itself and temporary files.
    """
    root = Path(root)
    if paths is None:
        targets = [p for p in _walk_files(root) if p.name != CHECKSUMS_FILE and not _is_tmp(p)]
    else:
        targets = [p if Path(p).is_absolute() else root / p for p in map(Path, paths)]
    files: dict[str, str] = {}
    for p in targets:
        rel = Path(p).resolve().relative_to(root.resolve()).as_posix()
        files[rel] = sha256_file(Path(p))
    doc = {"version": CHECKSUMS_VERSION, "algorithm": "sha256", "files": dict(sorted(files.items()))}
    return atomic_write_text(root / CHECKSUMS_FILE, json.dumps(doc, indent=1) + "\n")
