"""HDF5 attribute conventions shared by every .h5 file this project writes."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from storage.atomic import atomic_path

_NATIVE = (str, int, float, bool, np.ndarray)


def put_attrs(obj: h5py.File | h5py.Dataset, attrs: Mapping[str, Any]) -> None:
    """Store ``attrs`` on a file or dataset; values h5py can't store natively become JSON."""
    for k, v in attrs.items():
        obj.attrs[k] = v if isinstance(v, _NATIVE) else json.dumps(v, default=str)


def set_attrs(f: h5py.File, attrs: Mapping[str, Any], schema_version: int) -> None:
    """``schema_version`` plus provenance ``attrs`` on a file."""
    f.attrs["schema_version"] = schema_version
    put_attrs(f, attrs)


def schema_mismatch(f: h5py.File, expected: int, what: str, fix: str) -> str | None:
    """Why ``f`` is not of schema version ``expected`` (missing, unreadable or other), or None."""
    got = f.attrs.get("schema_version", None)
    try:
        ok = got is not None and int(got) == expected
    except (TypeError, ValueError):
        ok = False
    return None if ok else f"{what} schema_version {got if got is not None else 'missing'} != {expected}; {fix}"


def check_schema(f: h5py.File, path: str | os.PathLike, expected: int, what: str, fix: str) -> None:
    """Refuse a file written with another schema version, saying how to fix it."""
    problem = schema_mismatch(f, expected, what, fix)
    if problem:
        raise ValueError(f"{path}: {problem}")


H5_OVERHEAD = 64 * 1024  # superblock, root group, file attributes (bytes, generous)
H5_PER_OBJECT = 8 * 1024  # object header + attributes of one dataset (bytes, generous)


def h5_size_estimate(data_bytes: int, n_objects: int) -> int:
    """An upper estimate of an HDF5 file holding ``data_bytes`` in ``n_objects`` datasets."""
    return data_bytes + H5_OVERHEAD + H5_PER_OBJECT * n_objects


@contextlib.contextmanager
def atomic_h5(final: str | os.PathLike, expected_bytes: int | None = None) -> Iterator[h5py.File]:
    """An HDF5 file opened for writing under a temporary name, renamed to ``final`` only if whole.

    ``expected_bytes`` (see :func:`h5_size_estimate`): refuse up front, with a clear OSError,
    a file the disk or the process's file-size limit cannot hold (passed to ``atomic_path``):
    HDF5 handles a write that fails half-way badly. If a write still fails (someone else
    filled the disk), HDF5 may swallow the error inside ``close()`` or an object's
    deallocation, leaving a file with a broken header; so the temporary is closed and then
    REOPENED read-only (HDF5 checks the superblock and the stored end-of-file against the
    real size, and every object header is visited) before the rename. A file that fails any
    of these is deleted and the error propagates.
    """
    with atomic_path(final, expected_bytes) as tmp:
        f = h5py.File(tmp, "w")
        try:
            yield f
        finally:
            _close(f, Path(final))
        verify_h5(tmp)


def _close(f: h5py.File, final: Path) -> None:
    """Close, turning HDF5's wrapped write errors into an OSError that names the file."""
    try:
        f.close()
    except (RuntimeError, OSError) as e:  # e.g. "Can't decrement id ref count (... 'File too large')"
        raise OSError(f"{final.name}: writing HDF5 failed: {e}") from e


def verify_h5(path: str | os.PathLike) -> None:
    """Raise OSError if ``path`` is not a complete HDF5 file."""
    try:
        with h5py.File(path, "r") as f:
            f.visit(lambda name: None)  # walks every group/dataset header
    except Exception as e:  # h5py raises OSError/RuntimeError/KeyError for broken files
        raise OSError(f"{Path(path).name}: HDF5 file incomplete after writing ({e}); nothing was committed") from e
