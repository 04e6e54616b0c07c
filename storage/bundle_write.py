"""Writing the released layout of HGR (cshizhe/hgr_v2t) / HANet (Roc-Ng/HANet): the inverse of storage/bundle.py.

Every file the reference code opens, in the format its readers expect (checked against the
reference code itself by scripts/run_reference_on_export.py)::

  annotation/RET/ref_captions.json            {video name: [caption, ...]}   (json.load)
  annotation/RET/sent2rolegraph.augment.json  {caption: [graph_nodes, graph_edges]}
  annotation/RET/int2word.npy                 unicode array, word id = position (np.load, no pickle)
  annotation/RET/word2int.json                {word: id}
  public_split/{trn,val,tst}_names.npy        unicode arrays of video names
  ordered_feature/SA/<feature>/{trn,val,tst}_ft.hdf5   {name with '/' -> '_': float32 (n_frames, dim)}
  annotation/{verb,noun}_gt.json              HANet: {video: [[concept ids] per caption]}
  annotation/{verb,noun}_gt_all.json          HANet: {video: {concept id: count / max count, 2 d.p.}}
  annotation/{verb,noun}_words_freq.json      HANet: {lemma: train count}, concept id = position
  results/RET.released/word_embeds.glove42b.th   the ``--resume_file`` of both READMEs: a torch file
                                              {'text_encoder': {'embedding.we.weight': (V, D)}}
                                              (ModelBase.load_checkpoint copies matching names)

graph_nodes: ``{"ROOT": {role, spans: all tokens, words: tokens}, "1": {role, spans, words}, ...}``;
graph_edges: ``[[verb node id, argument node id, role], ...]``; spans index ``caption.split()``
(the readers' tokenisation). Every file is written atomically (temporary name, fsync, rename).

Two ways in: whole files from a built shard tree (pipeline/datasets/export.py), or streamed one
video / caption at a time (:class:`JsonMapWriter`, :class:`FeatureFileWriter`) so a generator
(pipeline/datasets/fullsize.py) never holds a whole dataset.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from storage._h5 import atomic_h5, h5_size_estimate, put_attrs
from storage.atomic import atomic_path, atomic_write_text
from storage.bundle import CONCEPT_FILES, FEATURE_DIRS, REQUIRED, SPLIT_CODES
from storage.features import dataset_name

FEATURE_DIR = FEATURE_DIRS[0]                              # ordered_feature/SA
CONCEPT_DIR = "annotation"                                  # HANet's MSR-VTT path.json
EMBEDDINGS_FILE = "results/RET.released/word_embeds.glove42b.th"   # hgr_v2t README: $resdir/../../
EMBEDDINGS_KEY = ("text_encoder", "embedding.we.weight")   # SentEncoder.embedding (Embedding).we
HANET_WIDTHS = {"verb": 512, "noun": 1024}                 # rolegraphs.py: np.zeros(512) / np.zeros(1024)
ROOT = "ROOT"


class ExportError(ValueError):
    """The shards hold something the released layout (or the reference readers) cannot."""


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False))


def write_string_array(path: str | os.PathLike, values: Iterable[str]) -> Path:
    """A 1-D unicode .npy array (np.load reads it without allow_pickle)."""
    arr = np.array([str(v) for v in values], dtype=str)
    if arr.size == 0:
        arr = np.zeros(0, dtype="<U1")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)
    return Path(path)


def hgr_graph(tokens: list[str], nodes: list[Mapping[str, Any]], edges: list[Mapping[str, Any]]) -> list:
    """Our role graph (nodes with spans into ``tokens``, edges by node position) -> HGR's
    ``[graph_nodes, graph_edges]`` (ROOT first, node ids "1", "2", ... in node order)."""
    gnodes: dict[str, dict[str, Any]] = {ROOT: {"role": ROOT, "spans": list(range(len(tokens))),
                                                "words": list(tokens)}}
    for i, n in enumerate(nodes):
        spans = [int(j) for j in n["spans"]]
        gnodes[str(i + 1)] = {"role": str(n["role"]), "spans": spans, "words": [tokens[j] for j in spans]}
    gedges = [[str(int(e["src"]) + 1), str(int(e["dst"]) + 1), str(e["role"])] for e in edges]
    return [gnodes, gedges]


def write_feature_file(src: str | os.PathLike, dst: str | os.PathLike, keys: list[str],
                       attrs: Mapping[str, Any]) -> dict[str, int]:
    """Copy ``keys``' datasets of one of our feature files into a released ``*_ft.hdf5`` (bit-identical
    float32, same dataset names). A key without a 2-D float32 dataset is an :class:`ExportError`."""
    src = Path(src)
    frames, dim = 0, 0
    with h5py.File(src, "r") as f:
        size = 0
        for key in keys:
            obj = f.get(dataset_name(key))
            if not isinstance(obj, h5py.Dataset) or obj.ndim != 2 or obj.dtype != np.float32:
                what = "missing" if obj is None else f"shape {getattr(obj, 'shape', None)} dtype {getattr(obj, 'dtype', None)}"
                raise ExportError(f"{src}: video '{key}' has no (n_frames, dim) float32 dataset ({what})")
            if dim and obj.shape[1] != dim:
                raise ExportError(f"{src}: video '{key}' has width {obj.shape[1]}, others {dim}")
            dim = int(obj.shape[1])
            size += int(obj.size) * 4
        with atomic_h5(dst, expected_bytes=h5_size_estimate(size, len(keys))) as g:
            put_attrs(g, attrs)
            for key in keys:
                arr = f[dataset_name(key)][()]
                frames += int(arr.shape[0])
                g.create_dataset(dataset_name(key), data=arr)
    return {"videos": len(keys), "frames": frames, "dim": dim}


def write_word_embeddings(path: str | os.PathLike, matrix: np.ndarray) -> Path:
    """The reference's word-embedding init file (a ``--resume_file`` checkpoint with one tensor)."""
    import torch

    outer, name = EMBEDDINGS_KEY
    payload = {outer: {name: torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float32))}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_word_embeddings(path: str | os.PathLike) -> np.ndarray:
    """The (V, D) matrix of a reference word-embedding file (weights_only load: no code runs)."""
    import torch

    outer, name = EMBEDDINGS_KEY
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return data[outer][name].numpy()
    except Exception as exc:  # noqa: BLE001 - any unreadable/foreign file: one clear message
        raise ExportError(f"{path}: not a reference word-embedding file ({outer}/{name}): {exc}") from exc


def layout_paths(root: Path) -> dict[str, Path]:
    """Where each small file of an export goes (the paths storage/bundle.py looks for first)."""
    out = {k: root / rel for k, rel in REQUIRED.items()}
    out["embeddings"] = root / EMBEDDINGS_FILE
    out.update({k: root / CONCEPT_DIR / name for k, name in CONCEPT_FILES.items()})
    return out


def feature_path(root: str | os.PathLike, folder: str, split: str) -> Path:
    return Path(root) / FEATURE_DIR / folder / f"{SPLIT_CODES[split]}_ft.hdf5"


class JsonMapWriter:
    """``with JsonMapWriter(path) as w: w.add(key, value)`` -> one JSON object, streamed to disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self._f = None
        self.n = 0

    def __enter__(self) -> "JsonMapWriter":
        tmp = self._ctx.__enter__()
        self._f = open(tmp, "w", encoding="utf-8")
        self._f.write("{")
        return self

    def add(self, key: str, value: Any) -> None:
        self._f.write(("," if self.n else "") + json.dumps(key) + ":" + json.dumps(value, separators=(",", ":")))
        self.n += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self._f.write("}")
        self._f.close()
        return bool(self._ctx.__exit__(exc_type, exc, tb))


class FeatureFileWriter:
    """``with FeatureFileWriter(path) as w: w.add(video_name, frames)`` -> one released ``*_ft.hdf5``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self._f: h5py.File | None = None
        self.n = 0
        self.bytes = 0

    def __enter__(self) -> "FeatureFileWriter":
        self._f = h5py.File(self._ctx.__enter__(), "w")
        return self

    def add(self, name: str, frames: np.ndarray) -> None:
        if frames.ndim != 2:
            raise ValueError(f"{name}: features must be (n_frames, dim), got shape {frames.shape}")
        self._f.create_dataset(dataset_name(name), data=np.asarray(frames, dtype=np.float32))
        self.n += 1
        self.bytes += frames.shape[0] * frames.shape[1] * 4

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._f.close()
        return bool(self._ctx.__exit__(exc_type, exc, tb))


def read_feature_set(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every video's frame features of a feature file or folder, whatever wrote it: ours
    (``features/<set>/`` or one ``<split>.h5``) or a release (``ordered_feature/SA/<feature>/`` or one
    ``*_ft.hdf5``; a (1, n, dim) dataset is read as (n, dim)). Returns ({dataset name: float32 (n, dim)},
    {'files': [...], 'attrs': the first file's attributes}). No schema check: this is for comparing."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".h5", ".hdf5")
                       and not p.name.startswith("."))
        if not files:
            raise ExportError(f"{path}: no .h5 / .hdf5 feature files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise ExportError(f"{path}: no such feature file or folder")
    out: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {}
    for file in files:
        try:
            with h5py.File(file, "r") as f:
                attrs = attrs or {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
                for name, obj in f.items():
                    if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3) and obj.dtype.kind == "f":
                        arr = obj[()]
                        arr = arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else arr
                        if arr.ndim == 2 and arr.shape[0] > 0:
                            out[name] = np.asarray(arr, np.float32)
        except OSError as exc:
            raise ExportError(f"{file}: not a readable HDF5 feature file: {exc}") from exc
    return out, {"files": [str(f) for f in files], "attrs": attrs}
