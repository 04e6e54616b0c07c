"""HDF5 frame-feature files in the reference layout.

One dataset per video: name = video key with '/' replaced by '_', value
float32 (n, D). File attributes record provenance: extractor, weights,
weights_sha256, config (JSON), schema_version. Readers need h5py only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from storage._h5 import atomic_h5, check_schema, h5_size_estimate, put_attrs, schema_mismatch, set_attrs

FEATURE_SCHEMA_VERSION = 1


def dataset_name(key: str) -> str:
    return key.replace("/", "_")


def _set_attrs(f: h5py.File, attrs: Mapping[str, Any]) -> None:
    set_attrs(f, attrs, FEATURE_SCHEMA_VERSION)


def write_features(path: str | os.PathLike, features: Mapping[str, np.ndarray],
                   attrs: Mapping[str, Any],
                   dataset_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Atomically write ``{key: (n, D) array}`` with provenance ``attrs``.

    ``dataset_attrs`` optionally gives per-video attributes (e.g. the decoded
    frame indices each row came from); merges copy them along.
    """
    arrays = {key: np.asarray(arr, dtype=np.float32) for key, arr in features.items()}
    size = h5_size_estimate(sum(a.nbytes for a in arrays.values()), len(arrays))
    with atomic_h5(path, expected_bytes=size) as f:
        _set_attrs(f, attrs)
        for key, arr in arrays.items():
            ds = f.create_dataset(dataset_name(key), data=arr)
            put_attrs(ds, (dataset_attrs or {}).get(key, {}))
    return Path(path)


def merge_features(path: str | os.PathLike, parts: list[str | os.PathLike], keys: set[str] | None,
                   attrs: Mapping[str, Any]) -> Path:
    """Atomically merge part files into one (only ``keys`` when given)."""
    wanted = None if keys is None else {dataset_name(k) for k in keys}
    with atomic_h5(path, expected_bytes=_merged_size(parts, wanted)) as out:
        _set_attrs(out, attrs)
        for part in parts:
            with h5py.File(part, "r") as src:
                for name in src:
                    if wanted is None or name in wanted:
                        src.copy(src[name], out, name=name)
    return Path(path)


def _merged_size(parts: list[str | os.PathLike], wanted: set[str] | None) -> int:
    """Upper size estimate of merging ``wanted`` datasets of ``parts`` (reads metadata only)."""
    data, n = 0, 0
    for part in parts:
        with h5py.File(part, "r") as src:
            for name in src:
                if wanted is None or name in wanted:
                    data, n = data + src[name].id.get_storage_size(), n + 1
    return h5_size_estimate(data, n)


def check_version(f: h5py.File, path: str | os.PathLike) -> None:
    check_schema(f, path, FEATURE_SCHEMA_VERSION, "feature", "rebuild features")


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        check_version(f, path)
        return dict(f.attrs)


def read_frame_counts(path: str | os.PathLike) -> dict[str, int]:
    """{dataset name: number of rows (frames)} of a feature file, without reading the data."""
    with h5py.File(path, "r") as f:
        check_version(f, path)
        return {name: int(f[name].shape[0]) for name in f.keys()}


def read_all_features(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{dataset name: (n, D) array} of every video in a feature file (small files: tests, benchmarks)."""
    with FeatureReader(path) as r:
        return {name: r[name] for name in r.keys()}


class _OpenFeatureFile:
    """A feature file held open read-only; a context manager that closes it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._f = h5py.File(self.path, "r")

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FeatureReader(_OpenFeatureFile):
    """Random access to one feature file; keep one per worker process."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        check_version(self._f, self.path)

    def __contains__(self, key: str) -> bool:
        return dataset_name(key) in self._f

    def __getitem__(self, key: str) -> np.ndarray:
        return self._f[dataset_name(key)][()]

    def keys(self) -> Iterator[str]:
        return iter(self._f.keys())

    @property
    def dim(self) -> int:
        first = next(iter(self._f.values()), None)
        return int(first.shape[1]) if first is not None else 0


@dataclass(frozen=True)
class FeatureEntry:
    """One member of a feature file as found on disk, for checking files that may be broken."""

    name: str
    is_dataset: bool  # False: a group (a feature file holds (n, D) datasets only)
    dtype: np.dtype | None = None
    shape: tuple[int, ...] = ()
    finite: bool | None = None  # all values finite; read only when asked, for non-empty 2-D float datasets


class FeatureFileScan(_OpenFeatureFile):
    """A feature file opened read-only WITHOUT the schema check, to report what is wrong with it.

    ``schema_problem`` is the schema-version check :class:`FeatureReader` enforces, as a message
    (None when the version is right); :meth:`entries` walks every member, one at a time.
    """

    @property
    def schema_problem(self) -> str | None:
        return schema_mismatch(self._f, FEATURE_SCHEMA_VERSION, "feature", "rebuild features")

    def entries(self, read_values: bool = False) -> Iterator[FeatureEntry]:
        for name, obj in self._f.items():
            if not isinstance(obj, h5py.Dataset):
                yield FeatureEntry(name, is_dataset=False)
                continue
            shape = tuple(int(x) for x in obj.shape)
            finite = None
            if read_values and len(shape) == 2 and all(shape) and obj.dtype.kind == "f":
                finite = bool(np.isfinite(obj[()]).all())
            yield FeatureEntry(name, True, obj.dtype, shape, finite)
