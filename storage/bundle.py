"""Released-data bundles of HGR (cshizhe/hgr_v2t) and HANet (Roc-Ng/HANet): their file formats.

The one place that opens a bundle's files (read-only). Layout, relative to the bundle root
(``dataset_root``), as described in those repositories' READMEs and path configs::

  annotation/RET/ref_captions.json              {video name: [caption, ...]}
  annotation/RET/sent2rolegraph.augment.json    {caption: [graph_nodes, graph_edges]}
  annotation/RET/int2word.npy                   [word] (word id = position)
  annotation/RET/word2int.json                  {word: id}
  public_split/{trn,val,tst}_names.npy          video names of each split
  ordered_feature/SA/<feature>/{trn,val,tst}_ft.hdf5
                                                {name with '/' -> '_': (n_frames, dim)}
                                                (HGR MSR-VTT: <feature> = resnet152.pth, 2048-d;
                                                 HANet VATEX: RET.public.i3d, 1024-d, and its
                                                 path.json spells the folder VATEX_ordered_feature)
  HANet only (optional): {verb,noun}_gt.json   {video: [[concept ids] per caption]} (train videos)
                         {verb,noun}_gt_all.json {video: {concept id: weight}} (train videos)
                         {verb,noun}_words_freq.json {lemma: count}, most frequent first;
                         concept id i = the i-th key (first 512 verbs / 1024 nouns)
                         in annotation/ (MSR-VTT path.json) or annotation/RET/ (VATEX path.json)
                         or the bundle root.

``ordered_feature/MP`` (mean-pooled features) is not used.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from storage._h5 import atomic_h5, h5_size_estimate, set_attrs
from storage.features import FEATURE_SCHEMA_VERSION, dataset_name

SPLIT_CODES = {"train": "trn", "val": "val", "test": "tst"}  # our split -> the bundle's file prefix
ANNOTATION_DIR = "annotation/RET"
SPLIT_DIR = "public_split"
FEATURE_DIRS = ("ordered_feature/SA", "*_ordered_feature/SA")  # HGR README; HANet's VATEX path.json
CONCEPT_DIRS = ("annotation", "annotation/RET", ".")
REQUIRED = {
    "ref_captions": f"{ANNOTATION_DIR}/ref_captions.json",
    "rolegraphs": f"{ANNOTATION_DIR}/sent2rolegraph.augment.json",
    "int2word": f"{ANNOTATION_DIR}/int2word.npy",
    "word2int": f"{ANNOTATION_DIR}/word2int.json",
    **{f"names_{s}": f"{SPLIT_DIR}/{c}_names.npy" for s, c in SPLIT_CODES.items()},
}
CONCEPT_FILES = {f"{k}_{what}": f"{k}_{suffix}" for k in ("verb", "noun")
                 for what, suffix in (("gt", "gt.json"), ("gt_all", "gt_all.json"), ("freq", "words_freq.json"))}


class BundleError(ValueError):
    """A bundle is missing a piece or a file does not have the expected format."""


@dataclass
class BundleLayout:
    """Where each piece of one bundle lies (absolute paths)."""

    root: Path
    files: dict[str, Path]                          # REQUIRED keys
    feature_dir: Path                               # .../ordered_feature/SA
    features: dict[str, dict[str, Path]]            # feature folder -> {split: hdf5 file}
    concepts: dict[str, Path] = field(default_factory=dict)   # CONCEPT_FILES keys found

    @property
    def has_hanet_concepts(self) -> bool:
        return all(f"{k}_gt" in self.concepts for k in ("verb", "noun"))


def _rel(root: Path, p: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _find_feature_dir(root: Path) -> Path | None:
    for pattern in FEATURE_DIRS:
        hits = sorted(p for p in root.glob(pattern) if p.is_dir())
        if hits:
            return hits[0]
    return None


def locate_bundle(root: str | os.PathLike, features: Iterable[str] | None = None) -> BundleLayout:
    """Check a bundle's layout; raise :class:`BundleError` naming EVERY missing piece.

    ``features``: the folders under ordered_feature/SA to use (default: every folder that
    holds at least one ``*_ft.hdf5`` file). Each chosen folder needs all three split files.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"bundle root {root} is not a directory (dataset_root must be the folder "
                          f"holding annotation/, public_split/ and ordered_feature/)")
    missing: list[str] = []
    files = {k: root / rel for k, rel in REQUIRED.items()}
    missing += [REQUIRED[k] for k, p in files.items() if not p.is_file()]
    fdir = _find_feature_dir(root)
    chosen: dict[str, dict[str, Path]] = {}
    if fdir is None:
        missing.append("ordered_feature/SA/<feature>/{trn,val,tst}_ft.hdf5 (no ordered_feature/SA folder)")
    else:
        folders = sorted(p.name for p in fdir.iterdir() if p.is_dir() and any(p.glob("*_ft.hdf5")))
        wanted = list(features) if features is not None else folders
        if not wanted:
            missing.append(f"{_rel(root, fdir)}/<feature>/{{trn,val,tst}}_ft.hdf5 (no feature folder with "
                           "*_ft.hdf5 files)")
        for name in wanted:
            split_files = {s: fdir / name / f"{c}_ft.hdf5" for s, c in SPLIT_CODES.items()}
            absent = [_rel(root, p) for p in split_files.values() if not p.is_file()]
            if absent:
                missing += absent
                if name not in folders:
                    missing[-1] += f" (feature folders present: {folders or 'none'})"
            chosen[name] = split_files
    if missing:
        raise BundleError(f"incomplete HGR bundle at {root}: missing " + "; ".join(missing))
    concepts: dict[str, Path] = {}
    for key, name in CONCEPT_FILES.items():
        for d in CONCEPT_DIRS:
            p = root / d / name
            if p.is_file():
                concepts[key] = p
                break
    return BundleLayout(root=root, files=files, feature_dir=fdir, features=chosen, concepts=concepts)


# ----------------------------------------------------------------------------- small files
def read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: cannot read {what} as JSON: {exc}") from exc


def read_string_array(path: Path, what: str, allow_pickle: bool = False) -> list[str]:
    """A 1-D .npy array of strings (names files, int2word). Object arrays need ``allow_pickle``
    (pickle can run code: only for bundles you trust)."""
    try:
        arr = np.load(path, allow_pickle=allow_pickle)
    except ValueError as exc:
        if not allow_pickle and "pickle" in str(exc).lower():
            raise BundleError(f"{path}: {what} is a pickled object array; re-save it as a string array "
                              "(np.save(p, np.array(list, dtype=str))) or set bundle.allow_pickle=true "
                              "for a bundle you trust") from exc
        raise BundleError(f"{path}: cannot read {what}: {exc}") from exc
    except OSError as exc:
        raise BundleError(f"{path}: cannot read {what}: {exc}") from exc
    if not isinstance(arr, np.ndarray) or arr.ndim != 1:
        raise BundleError(f"{path}: {what} must be a 1-D array, got shape {getattr(arr, 'shape', None)}")
    if arr.dtype.kind == "S":
        return [x.decode("utf-8") for x in arr.tolist()]
    if arr.dtype.kind not in "UO" or not all(isinstance(x, str) for x in arr.tolist()):
        raise BundleError(f"{path}: {what} must hold strings, got dtype {arr.dtype}")
    return [str(x) for x in arr.tolist()]


# ----------------------------------------------------------------------------- frame features
def feature_file_dim(path: Path, names: Iterable[str]) -> tuple[int, int]:
    """(most common feature width among ``names``' datasets, n datasets in the file); metadata only."""
    widths: Counter = Counter()
    try:
        with h5py.File(path, "r") as f:
            n = len(f)
            for name in names:
                obj = f.get(dataset_name(name))
                if isinstance(obj, h5py.Dataset) and obj.ndim >= 2:
                    widths[int(obj.shape[-1])] += 1
    except OSError as exc:
        raise BundleError(f"{path}: not a readable HDF5 feature file: {exc}") from exc
    return (widths.most_common(1)[0][0] if widths else 0), n


@dataclass
class ImportedVideo:
    key: str
    status: str               # ok | error
    error_message: str | None
    n_features: int | None


def _check_array(obj: Any, dim: int) -> tuple[np.ndarray | None, str | None]:
    if not isinstance(obj, h5py.Dataset):
        return None, "is a group, not a (n_frames, dim) dataset"
    shape = tuple(int(x) for x in obj.shape)
    if len(shape) == 3 and shape[0] == 1:  # (1, n, dim), as some I3D releases store it
        shape = shape[1:]
    if len(shape) != 2:
        return None, f"has shape {tuple(obj.shape)}, expected (n_frames, dim)"
    if shape[0] == 0:
        return None, "has no frames"
    if shape[1] != dim:
        return None, f"has width {shape[1]}, the file's features have {dim}"
    arr = np.asarray(obj[()], dtype=np.float32).reshape(shape)
    if not np.isfinite(arr).all():
        return None, "contains NaN or Inf"
    return arr, None


def import_feature_file(src: Path, dst: Path, keys: list[str], attrs: dict[str, Any]) -> tuple[list[ImportedVideo], dict[str, int]]:
    """Copy the datasets of ``keys`` from a bundle feature file into our layout, one video at a time.

    Each video's features are read, checked (2-D, >= 1 frame, the file's width, finite) and
    written as float32 under the same dataset name; a video without a usable dataset becomes an
    ``error`` :class:`ImportedVideo` (and gets no dataset). ``dst`` appears atomically, verified.
    Returns (one ImportedVideo per key, counts).
    """
    dim, n_in_file = feature_file_dim(src, keys)
    out: list[ImportedVideo] = []
    wanted = {dataset_name(k) for k in keys}
    with h5py.File(src, "r") as f:
        size = sum(int(np.prod(f[n].shape[-2:])) * 4 for n in wanted
                   if isinstance(f.get(n), h5py.Dataset) and f[n].ndim >= 2)
        stray = sum(1 for n in f if n not in wanted)
        with atomic_h5(dst, expected_bytes=h5_size_estimate(size, len(keys))) as g:
            set_attrs(g, {**attrs, "dim": dim}, FEATURE_SCHEMA_VERSION)
            for key in keys:
                name = dataset_name(key)
                obj = f.get(name)
                if obj is None:
                    out.append(ImportedVideo(key, "error", f"no feature dataset '{name}' in {src.name}", None))
                    continue
                arr, problem = _check_array(obj, dim)
                if problem:
                    out.append(ImportedVideo(key, "error", f"feature dataset '{name}' in {src.name} {problem}", None))
                    continue
                g.create_dataset(name, data=arr)
                out.append(ImportedVideo(key, "ok", None, int(arr.shape[0])))
    n_ok = sum(v.status == "ok" for v in out)
    return out, {"videos": len(out), "ok": n_ok, "error": len(out) - n_ok, "dim": dim,
                 "datasets_in_source": n_in_file, "datasets_not_in_split": stray}
