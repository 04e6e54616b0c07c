"""Streamed writers of the released HGR/HANet bundle layout (:mod:`storage.bundle` reads it), one
video or caption at a time, so a generator (pipeline/datasets/fullsize.py) never holds a whole
dataset. (storage/bundle_write.py exports a built shard tree; this module writes from a stream.)

Each file appears atomically (temp + fsync + rename) when its writer closes without an error:

* :class:`JsonMapWriter`  - a ``{key: value}`` JSON object written entry by entry
  (``ref_captions.json``, ``sent2rolegraph.augment.json``);
* :class:`FeatureFileWriter` - one ``*_ft.hdf5`` file, one ``(n_frames, dim)`` float32 dataset per
  video, named as the release names them ('/' -> '_');
* :func:`write_string_array` - a 1-D string ``.npy`` (names files, ``int2word.npy``), no pickle;
* :func:`write_json` - a small JSON file (``word2int.json``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from storage.atomic import atomic_path, atomic_write_text
from storage.bundle import ANNOTATION_DIR, FEATURE_DIRS, SPLIT_CODES, SPLIT_DIR
from storage.features import dataset_name

FEATURE_ROOT = FEATURE_DIRS[0]  # ordered_feature/SA


def annotation_path(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / ANNOTATION_DIR / name


def names_path(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / SPLIT_DIR / f"{SPLIT_CODES[split]}_names.npy"


def feature_path(root: str | os.PathLike, folder: str, split: str) -> Path:
    return Path(root) / FEATURE_ROOT / folder / f"{SPLIT_CODES[split]}_ft.hdf5"


def write_string_array(path: str | os.PathLike, items: Iterable[str]) -> Path:
    """A 1-D unicode ``.npy`` (readable without ``allow_pickle``)."""
    arr = np.array(list(items), dtype=str)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data))


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
    """``with FeatureFileWriter(path) as w: w.add(video_name, frames)`` -> one bundle ``*_ft.hdf5``."""

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
