"""HDF5 attribute conventions shared by every .h5 file this project writes."""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import h5py
import numpy as np

_NATIVE = (str, int, float, bool, np.ndarray)


def put_attrs(obj: h5py.File | h5py.Dataset, attrs: Mapping[str, Any]) -> None:
    """Store ``attrs`` on a file or dataset; values h5py can't store natively become JSON."""
    for k, v in attrs.items():
        obj.attrs[k] = v if isinstance(v, _NATIVE) else json.dumps(v, default=str)


def set_attrs(f: h5py.File, attrs: Mapping[str, Any], schema_version: int) -> None:
    """``schema_version`` plus provenance ``attrs`` on a file."""
    f.attrs["schema_version"] = schema_version
    put_attrs(f, attrs)


def check_schema(f: h5py.File, path: str | os.PathLike, expected: int, what: str, fix: str) -> None:
    """Refuse a file written with another schema version, saying how to fix it."""
    got = int(f.attrs.get("schema_version", -1))
    if got != expected:
        raise ValueError(f"{path}: {what} schema_version {got} != {expected}; {fix}")
