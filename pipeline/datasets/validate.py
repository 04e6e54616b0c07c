"""Check that a dataset's shard tree is complete and self-consistent.

``validate_tree(root)`` inspects one dataset root (``<out>/<dataset>/``) and
returns a :class:`ValidationReport` listing every problem found; it never
modifies the tree. ``python -m pipeline.datasets.validate ROOT [ROOT ...]`` prints the
problems and exits 1 when there is any, 0 when the tree is clean.

What is checked (see docs/shards.md for the layout):

* every Parquet table at a known place (videos.parquet, captions.parquet,
  features/<extractor>/status.parquet, text/<name>.parquet) carries the schema
  name and version this code reads (:func:`storage.tables.read_table`) and the
  expected columns and types;
* for every extractor folder under features/, every video of videos.parquet
  has either a feature dataset in features/<extractor>/<split>.h5 (status
  'ok') or an error row in status.parquet (status 'error', and then no
  feature); no feature or status row for unknown videos;
* feature files carry ``schema_version`` == FEATURE_SCHEMA_VERSION; every
  dataset is float32, 2-D, non-empty, with one feature width D per extractor
  (``deep=True`` also reads the values and rejects NaN/Inf);
* no leftover temporary files (``storage.atomic.TMP_MARK``) anywhere;
* every stage manifest under _stages/ parses and its outputs exist inside
  the root;
* captions and the per-caption/per-video text tables reference known videos
  (and caption ids), with the video's split;
* optional ``checksums.json``: the sha256 of every listed file matches.
  :func:`write_checksums` creates it (atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.datasets.checksums import _check_checksums, write_checksums
from pipeline.datasets.problems import (BAD_STATUS, DUPLICATE_KEY, FEATURE_DTYPE, FEATURE_FILE, FEATURE_FOR_ERROR,
                                        FEATURE_SHAPE, FEATURE_VALUES, MANIFEST, MISSING_FEATURE, MISSING_OUTPUT,
                                        MISSING_ROOT, MISSING_STATUS_ROW, MISSING_TABLE, SCHEMA, SPLIT_MISMATCH,
                                        TMP_FILE, UNKNOWN_CAPTION, UNKNOWN_TABLE, UNKNOWN_VIDEO, ValidationReport,
                                        _col, _duplicates, _is_tmp, _load_table, _preview, _safe_rel, _walk_files)
from storage.features import FeatureFileScan, dataset_name
from storage.manifest import ManifestVersionError, load_manifest_file, manifest_files
from storage.schemas import SCHEMAS, schema
from storage.tables import table_schema_name

FEATURE_STATUSES = ("ok", "error")


# --------------------------------------------------------------------------- checks

def _check_tmp_files(report: ValidationReport, root: Path) -> None:
    for path in _walk_files(root):
        report.checked["files"] += 1
        if _is_tmp(path):
            report.add(TMP_FILE, path, "leftover temporary file of an interrupted writer "
                       "(storage.atomic.clean_stale_tmp removes it; rerun the stage that wrote it)")


def _check_videos(report: ValidationReport, root: Path) -> dict[str, str] | None:
    """key -> split of videos.parquet, or None when it cannot be read."""
    path = root / "videos.parquet"
    table = _load_table(report, path, "videos", columns=["key", "split"])
    if table is None:
        return None
    keys, splits = _col(table, "key"), _col(table, "split")
    dups = _duplicates(keys)
    if dups:
        report.add(DUPLICATE_KEY, path, f"{len(dups)} duplicate video key(s): {_preview(dups)}")
    names = Counter(dataset_name(k) for k in keys if k is not None)
    clash = sorted(n for n, c in names.items() if c > 1 and n not in {dataset_name(d) for d in dups})
    if clash:
        report.add(DUPLICATE_KEY, path, "distinct keys map to the same HDF5 dataset name "
                   f"('/' -> '_'): {_preview(clash)}")
    if any(k is None for k in keys):
        report.add(SCHEMA, path, "null video key(s)")
    report.checked["videos"] += len(keys)
    return {k: s for k, s in zip(keys, splits) if k is not None}


def _check_refs(report: ValidationReport, path: Path, table, videos: dict[str, str] | None,
                what: str, caption_ids: set[int] | None = None) -> None:
    cols = table.column_names
    if videos is not None and "key" in cols:
        keys = _col(table, "key")
        unknown = sorted({k for k in keys if k not in videos}, key=str)
        if unknown:
            report.add(UNKNOWN_VIDEO, path, f"{len(unknown)} {what} key(s) not in videos.parquet: "
                       f"{_preview(unknown)}")
        if "split" in cols:
            bad = sorted({k for k, s in zip(keys, _col(table, "split"))
                          if k in videos and s != videos[k]}, key=str)
            if bad:
                report.add(SPLIT_MISMATCH, path, f"{len(bad)} {what} row(s) whose split differs from "
                           f"videos.parquet: {_preview(bad)}")
    if caption_ids is not None and "caption_id" in cols:
        unknown_c = sorted({c for c in _col(table, "caption_id") if c not in caption_ids})
        if unknown_c:
            report.add(UNKNOWN_CAPTION, path, f"{len(unknown_c)} caption_id(s) not in captions.parquet: "
                       f"{_preview(unknown_c)}")


def _check_captions(report: ValidationReport, root: Path, videos: dict[str, str] | None) -> set[int] | None:
    path = root / "captions.parquet"
    if not path.exists():
        return None
    table = _load_table(report, path, "captions", columns=["caption_id", "key", "split"])
    if table is None:
        return None
    ids = _col(table, "caption_id")
    dups = _duplicates(ids)
    if dups:
        report.add(DUPLICATE_KEY, path, f"{len(dups)} duplicate caption_id(s): {_preview(dups)}")
    _check_refs(report, path, table, videos, "caption")
    report.checked["captions"] += len(ids)
    return set(ids)


def _check_text(report: ValidationReport, root: Path, videos: dict[str, str] | None,
                caption_ids: set[int] | None) -> None:
    folder = root / "text"
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.parquet")):
        if _is_tmp(path):
            continue
        name = path.stem
        if name not in SCHEMAS:
            try:
                name = table_schema_name(path)
            except Exception as e:
                report.add(SCHEMA, path, f"cannot read Parquet schema: {type(e).__name__}: {e}")
                continue
            if name not in SCHEMAS:
                report.add(UNKNOWN_TABLE, path, f"no known schema for this table (schema_name '{name}')")
                continue
        cols = [c for c in ("caption_id", "key", "split") if c in schema(name).names]
        table = _load_table(report, path, name, columns=cols or None)
        if table is None or not cols:
            continue
        _check_refs(report, path, table, videos, name, caption_ids)
        if name in ("tokens", "role_graphs", "caption_labels"):
            dups = _duplicates(_col(table, "caption_id"))
            if dups:
                report.add(DUPLICATE_KEY, path, f"{len(dups)} duplicate caption_id(s): {_preview(dups)}")
        elif name == "video_labels":
            dups = _duplicates(_col(table, "key"))
            if dups:
                report.add(DUPLICATE_KEY, path, f"{len(dups)} duplicate key(s): {_preview(dups)}")


def _scan_feature_file(report: ValidationReport, path: Path, deep: bool) -> dict[str, tuple[int, int]] | None:
    """dataset name -> (n, D) of one feature file (D = -1 when not 2-D); None if unreadable."""
    shapes: dict[str, tuple[int, int]] = {}
    try:
        with FeatureFileScan(path) as scan:
            if scan.schema_problem:  # the check storage.features.FeatureReader enforces
                report.add(FEATURE_FILE, path, scan.schema_problem)
            for e in scan.entries(read_values=deep):
                if not e.is_dataset:
                    report.add(FEATURE_SHAPE, path, f"'{e.name}' is a group, expected a (n, D) dataset")
                    continue
                report.checked["feature datasets"] += 1
                if e.dtype != np.float32:
                    report.add(FEATURE_DTYPE, path, f"'{e.name}' has dtype {e.dtype}, expected float32")
                if len(e.shape) != 2:
                    report.add(FEATURE_SHAPE, path, f"'{e.name}' has shape {e.shape}, expected 2-D (n, D)")
                    shapes[e.name] = (e.shape[0] if e.shape else 0, -1)  # present, but no valid D
                    continue
                n, d = e.shape
                if n == 0 or d == 0:
                    report.add(FEATURE_SHAPE, path, f"'{e.name}' is empty: shape {e.shape}")
                if e.finite is False:  # read only with deep=True
                    report.add(FEATURE_VALUES, path, f"'{e.name}' contains NaN or Inf")
                shapes[e.name] = (n, d)
    except Exception as e:
        report.add(FEATURE_FILE, path, f"cannot read HDF5 feature file: {type(e).__name__}: {e}")
        return None
    report.checked["feature files"] += 1
    return shapes


def _feature_files(report: ValidationReport, folder: Path, deep: bool) -> dict[str, dict[str, tuple[int, int]]]:
    """split -> {dataset name: (n, D)} of the extractor's feature files (one per split); widths must agree."""
    files: dict[str, dict[str, tuple[int, int]]] = {}
    for path in sorted(folder.glob("*.h5")):
        if _is_tmp(path):
            continue
        shapes = _scan_feature_file(report, path, deep)
        if shapes is not None:
            files[path.stem] = shapes
    dims = Counter(d for shapes in files.values() for (_, d) in shapes.values() if d >= 0)
    if len(dims) > 1:
        main_d = dims.most_common(1)[0][0]
        for split, shapes in files.items():
            odd = sorted(n for n, (_, d) in shapes.items() if d >= 0 and d != main_d)
            if odd:
                report.add(FEATURE_SHAPE, folder / f"{split}.h5",
                           f"feature width differs from the extractor's D={main_d}: {_preview(odd)}")
    return files


def _status_rows(report: ValidationReport, folder: Path, videos: dict[str, str] | None) -> dict[str, dict[str, Any]]:
    """key -> row of the extractor's status.parquet (checked: unique keys, known statuses and videos)."""
    status_path, ext = folder / "status.parquet", folder.name
    if not status_path.exists():
        report.add(MISSING_TABLE, status_path, f"extractor '{ext}' has no status.parquet "
                   "(one row per video: ok | error)")
        return {}
    table = _load_table(report, status_path, "feature_status",
                        columns=["key", "split", "status", "error_message", "n_features"])
    if table is None:
        return {}
    rows = table.to_pylist()
    dups = _duplicates(r["key"] for r in rows)
    if dups:
        report.add(DUPLICATE_KEY, status_path, f"{len(dups)} duplicate key(s): {_preview(dups)}")
    bad = sorted({str(r["status"]) for r in rows if r["status"] not in FEATURE_STATUSES})
    if bad:
        report.add(BAD_STATUS, status_path, f"status values {bad} (allowed: {list(FEATURE_STATUSES)})")
    if videos is not None:
        _check_refs(report, status_path, table, videos, f"{ext} status")
    return {r["key"]: r for r in rows}


def _coverage(files: dict[str, dict[str, tuple[int, int]]], status: dict[str, dict[str, Any]],
              videos: dict[str, str], has_status: bool) -> dict[str, dict[str, list[str]]]:
    """Per problem kind, split -> the videos breaking 'a feature (status ok) xor an error row'."""
    out: dict[str, dict[str, list[str]]] = {MISSING_FEATURE: {}, FEATURE_FOR_ERROR: {}, MISSING_STATUS_ROW: {},
                                             FEATURE_SHAPE: {}}
    for key, split in videos.items():
        feat = files.get(split, {}).get(dataset_name(key))
        row = status.get(key)
        st = row["status"] if row else None
        if feat is None and st != "error":
            out[MISSING_FEATURE].setdefault(split, []).append(key)
        elif feat is not None and st == "error":
            out[FEATURE_FOR_ERROR].setdefault(split, []).append(key)
        elif feat is not None and row is None and has_status:
            out[MISSING_STATUS_ROW].setdefault(split, []).append(key)
        if feat is not None and feat[1] >= 0 and row is not None and st == "ok" \
                and row.get("n_features") is not None and int(row["n_features"]) != feat[0]:
            out[FEATURE_SHAPE].setdefault(split, []).append(f"{key} ({feat[0]} rows, status says {row['n_features']})")
    return out


def _report_coverage(report: ValidationReport, folder: Path, found: dict[str, dict[str, list[str]]]) -> None:
    ext, status_path = folder.name, folder / "status.parquet"
    for split, keys in sorted(found[MISSING_FEATURE].items()):
        report.add(MISSING_FEATURE, folder / f"{split}.h5",
                   f"{len(keys)} video(s) have neither a '{ext}' feature nor an error row in status.parquet: "
                   f"{_preview(keys)}")
    for split, keys in sorted(found[FEATURE_FOR_ERROR].items()):
        report.add(FEATURE_FOR_ERROR, folder / f"{split}.h5",
                   f"{len(keys)} video(s) marked 'error' in status.parquet still have a feature: {_preview(keys)}")
    for split, keys in sorted(found[MISSING_STATUS_ROW].items()):
        report.add(MISSING_STATUS_ROW, status_path,
                   f"{len(keys)} video(s) of split '{split}' have a feature but no status row: {_preview(keys)}")
    for split, keys in sorted(found[FEATURE_SHAPE].items()):
        report.add(FEATURE_SHAPE, folder / f"{split}.h5",
                   f"{len(keys)} feature(s) disagree with status n_features: {_preview(keys)}")


def _check_extractor(report: ValidationReport, folder: Path, videos: dict[str, str] | None, deep: bool) -> None:
    files = _feature_files(report, folder, deep)
    status = _status_rows(report, folder, videos)
    if videos is None:
        return
    found = _coverage(files, status, videos, (folder / "status.parquet").exists())
    _report_coverage(report, folder, found)
    # features of unknown videos (or in the wrong split's file)
    by_name = {dataset_name(k): (k, s) for k, s in videos.items()}
    for split, shapes in sorted(files.items()):
        stray = sorted(n for n in shapes if n not in by_name or by_name[n][1] != split)
        if stray:
            report.add(UNKNOWN_VIDEO, folder / f"{split}.h5",
                       f"{len(stray)} dataset(s) match no video of split '{split}': {_preview(stray)}")


def _check_features(report: ValidationReport, root: Path, videos: dict[str, str] | None, deep: bool) -> None:
    base = root / "features"
    if not base.is_dir():
        return
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        report.checked["extractors"] += 1
        _check_extractor(report, folder, videos, deep)


def _check_manifests(report: ValidationReport, root: Path) -> None:
    for path in manifest_files(root):
        try:
            m = load_manifest_file(path)
        except ManifestVersionError as e:
            report.add(MANIFEST, path, str(e).removeprefix(f"{path}: "))
            continue
        except Exception as e:
            report.add(MANIFEST, path, f"not a stage manifest: {type(e).__name__}: {str(e).splitlines()[0]}")
            continue
        report.checked["manifests"] += 1
        for out in m.outputs:
            target = _safe_rel(root, out)
            if target is None:
                report.add(MANIFEST, path, f"output '{out}' is not a relative path inside the root")
            elif not target.exists():
                report.add(MISSING_OUTPUT, path, f"stage '{m.stage}' lists output '{out}', which does not exist")


# --------------------------------------------------------------------------- API

def validate_tree(root: str | os.PathLike, deep: bool = False) -> ValidationReport:
    """Validate one dataset root (``<out>/<dataset>/``); read-only.

    ``deep=True`` additionally reads every feature array to reject NaN/Inf.
    """
    root = Path(root)
    report = ValidationReport(root=root)
    if not root.is_dir():
        report.add(MISSING_ROOT, root, "not a directory")
        return report
    _check_tmp_files(report, root)
    videos = _check_videos(report, root)
    caption_ids = _check_captions(report, root, videos)
    _check_text(report, root, videos, caption_ids)
    _check_features(report, root, videos, deep)
    _check_manifests(report, root)
    _check_checksums(report, root)
    return report


def _dataset_roots(path: Path) -> list[Path]:
    """``path`` itself when it is a dataset root, else its sub-folders that are."""
    if not path.is_dir() or (path / "videos.parquet").exists():
        return [path]
    subs = sorted(p for p in path.iterdir() if p.is_dir() and (p / "videos.parquet").exists())
    return subs or [path]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.datasets.validate",
        description="Validate shard trees; exit 1 on any inconsistency, 0 when clean. "
                    "A ROOT without videos.parquet is searched one level down for dataset roots.")
    parser.add_argument("roots", nargs="+", type=Path, metavar="ROOT")
    parser.add_argument("--deep", action="store_true", help="also read feature values (NaN/Inf check)")
    parser.add_argument("--write-checksums", action="store_true",
                        help="write checksums.json for each root that validates clean")
    parser.add_argument("--limit", type=int, default=200, help="print at most this many problems per root")
    args = parser.parse_args(argv)

    failed = False
    for arg in args.roots:
        for root in _dataset_roots(arg):
            report = validate_tree(root, deep=args.deep)
            print(report.format(limit=args.limit))
            if not report.ok:
                failed = True
            elif args.write_checksums:
                print(f"wrote {write_checksums(root)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
