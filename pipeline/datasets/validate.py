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
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np

from pipeline.fingerprint import sha256_file
from storage.atomic import TMP_MARK, atomic_write_text
from storage.features import FeatureFileScan, dataset_name
from storage.manifest import ManifestVersionError, load_manifest_file, manifest_files
from storage.schemas import SCHEMAS, schema
from storage.tables import SchemaError, read_table, table_schema, table_schema_name

CHECKSUMS_FILE = "checksums.json"
CHECKSUMS_VERSION = 1
FEATURE_STATUSES = ("ok", "error")

# Problem kinds (stable strings: tests and tooling match on them).
MISSING_ROOT = "missing_root"
MISSING_TABLE = "missing_table"
SCHEMA = "schema"                    # wrong schema name/version/columns, or unreadable table
UNKNOWN_TABLE = "unknown_table"      # a Parquet file under text/ of no known schema
DUPLICATE_KEY = "duplicate_key"
UNKNOWN_VIDEO = "unknown_video"      # a row/feature references a key not in videos.parquet
UNKNOWN_CAPTION = "unknown_caption"
SPLIT_MISMATCH = "split_mismatch"
MISSING_FEATURE = "missing_feature"  # no feature dataset and no error row
FEATURE_FOR_ERROR = "feature_for_error"
MISSING_STATUS_ROW = "missing_status_row"
BAD_STATUS = "bad_status"
FEATURE_FILE = "feature_file"        # unreadable file / wrong schema_version attr
FEATURE_DTYPE = "feature_dtype"
FEATURE_SHAPE = "feature_shape"      # not 2-D, empty, inconsistent D, n != n_features
FEATURE_VALUES = "feature_values"    # NaN/Inf (deep only)
TMP_FILE = "tmp_file"
MANIFEST = "manifest"                # unparsable manifest / wrong version / bad output path
MISSING_OUTPUT = "missing_output"
CHECKSUM = "checksum"                # unreadable checksums.json, missing file or sha256 mismatch


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str  # relative to the dataset root ('.' for the root itself)
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class ValidationReport:
    root: Path
    problems: list[Problem] = field(default_factory=list)
    checked: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:  # truthy when clean
        return self.ok

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self.problems}

    def add(self, kind: str, path: str | Path, message: str) -> None:
        self.problems.append(Problem(kind, self._rel(path), message))

    def _rel(self, path: str | Path) -> str:
        p = Path(path)
        try:
            return p.relative_to(self.root).as_posix() or "."
        except ValueError:
            return str(path)

    def summary(self) -> str:
        what = ", ".join(f"{n} {k}" for k, n in sorted(self.checked.items()))
        state = "clean" if self.ok else f"{len(self.problems)} problem(s)"
        return f"{self.root}: {state} (checked {what or 'nothing'})"

    def format(self, limit: int | None = None) -> str:
        lines = [str(p) for p in self.problems[:limit]]
        if limit is not None and len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        lines.append(self.summary())
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers

def _is_tmp(path: Path) -> bool:
    return path.name.startswith(TMP_MARK)


def _walk_files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _safe_rel(root: Path, rel: str) -> Path | None:
    """``root / rel`` when ``rel`` is a relative path that stays inside ``root``."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
        return None
    return root / Path(*p.parts)


def _load_table(report: ValidationReport, path: Path, name: str, columns: list[str] | None = None):
    """read_table plus a column/type check; records a problem and returns None on failure."""
    try:
        table = read_table(path, name, columns=columns)
    except FileNotFoundError:
        report.add(MISSING_TABLE, path, f"table '{name}' not found")
        return None
    except SchemaError as e:
        report.add(SCHEMA, path, str(e).split(": ", 1)[-1])
        return None
    except Exception as e:  # corrupt Parquet, truncated file, ...
        report.add(SCHEMA, path, f"cannot read as Parquet table '{name}': {type(e).__name__}: {e}")
        return None
    report.checked["tables"] += 1
    try:
        on_disk = table_schema(path)
    except Exception as e:  # pragma: no cover - read_table already read it
        report.add(SCHEMA, path, f"cannot read schema: {e}")
        return None
    expected = schema(name)
    missing = [f.name for f in expected if f.name not in on_disk.names]
    wrong = [f"{f.name}: {on_disk.field(f.name).type} != {f.type}" for f in expected
             if f.name in on_disk.names and not on_disk.field(f.name).type.equals(f.type)]
    if missing or wrong:
        report.add(SCHEMA, path, f"columns differ from schema '{name}': "
                   + "; ".join(([f"missing {missing}"] if missing else []) + wrong))
        return None
    return table


def _col(table, name: str) -> list:
    return table.column(name).to_pylist()


def _duplicates(values: Iterable[Any]) -> list[Any]:
    return sorted((v for v, n in Counter(values).items() if n > 1), key=str)


def _preview(items: Sequence[Any], n: int = 5) -> str:
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more


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


def _check_extractor(report: ValidationReport, folder: Path, videos: dict[str, str] | None, deep: bool) -> None:
    ext = folder.name
    # feature files, one per split
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

    # status table
    status_path = folder / "status.parquet"
    status: dict[str, dict[str, Any]] = {}
    if status_path.exists():
        table = _load_table(report, status_path, "feature_status",
                            columns=["key", "split", "status", "error_message", "n_features"])
        if table is not None:
            rows = table.to_pylist()
            dups = _duplicates(r["key"] for r in rows)
            if dups:
                report.add(DUPLICATE_KEY, status_path, f"{len(dups)} duplicate key(s): {_preview(dups)}")
            bad = sorted({str(r["status"]) for r in rows if r["status"] not in FEATURE_STATUSES})
            if bad:
                report.add(BAD_STATUS, status_path, f"status values {bad} (allowed: {list(FEATURE_STATUSES)})")
            status = {r["key"]: r for r in rows}
            if videos is not None:
                _check_refs(report, status_path, table, videos, f"{ext} status")
    else:
        report.add(MISSING_TABLE, status_path, f"extractor '{ext}' has no status.parquet "
                   "(one row per video: ok | error)")

    if videos is None:
        return

    # every video: a feature (status ok) xor an error row
    missing: dict[str, list[str]] = {}
    for_error: dict[str, list[str]] = {}
    no_row: dict[str, list[str]] = {}
    n_mismatch: dict[str, list[str]] = {}
    for key, split in videos.items():
        shapes = files.get(split, {})
        feat = shapes.get(dataset_name(key))
        row = status.get(key)
        st = row["status"] if row else None
        if feat is None and st != "error":
            missing.setdefault(split, []).append(key)
        elif feat is not None and st == "error":
            for_error.setdefault(split, []).append(key)
        elif feat is not None and row is None and status_path.exists():
            no_row.setdefault(split, []).append(key)
        if feat is not None and feat[1] >= 0 and row is not None and st == "ok" \
                and row.get("n_features") is not None and int(row["n_features"]) != feat[0]:
            n_mismatch.setdefault(split, []).append(f"{key} ({feat[0]} rows, status says {row['n_features']})")
    for split, keys in sorted(missing.items()):
        report.add(MISSING_FEATURE, folder / f"{split}.h5",
                   f"{len(keys)} video(s) have neither a '{ext}' feature nor an error row in status.parquet: "
                   f"{_preview(keys)}")
    for split, keys in sorted(for_error.items()):
        report.add(FEATURE_FOR_ERROR, folder / f"{split}.h5",
                   f"{len(keys)} video(s) marked 'error' in status.parquet still have a feature: {_preview(keys)}")
    for split, keys in sorted(no_row.items()):
        report.add(MISSING_STATUS_ROW, status_path,
                   f"{len(keys)} video(s) of split '{split}' have a feature but no status row: {_preview(keys)}")
    for split, keys in sorted(n_mismatch.items()):
        report.add(FEATURE_SHAPE, folder / f"{split}.h5",
                   f"{len(keys)} feature(s) disagree with status n_features: {_preview(keys)}")

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
