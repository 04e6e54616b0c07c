"""Frame features of a split as fixed-size arrays: uniform subsampling / padding to max_frames with a mask, read
through one HDF5 handle per process (optionally preloaded)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from storage.features import FeatureReader


def sample_frames(feats: np.ndarray, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) -> ((max_frames, D) float32, (max_frames,) bool mask)."""
    feats = np.asarray(feats, dtype=np.float32)
    n, d = feats.shape
    out = np.zeros((max_frames, d), dtype=np.float32)
    mask = np.zeros(max_frames, dtype=bool)
    if n > max_frames:
        idx = np.round(np.linspace(0, n - 1, max_frames)).astype(np.int64)
        out[:] = feats[idx]
        mask[:] = True
    else:
        out[:n] = feats
        mask[:n] = True
    return out, mask


# ----------------------------------------------------------------------------- features
class FeatureSource:
    """Fixed-size frame features by video key: one HDF5 handle per process, optional preload."""

    def __init__(self, path: Path, max_frames: int):
        self.path = Path(path)
        self.max_frames = max_frames
        self._reader: FeatureReader | None = None
        self._pid: int | None = None
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _r(self) -> FeatureReader:
        if self._reader is None or self._pid != os.getpid():
            self._reader = FeatureReader(self.path)  # never share an h5py handle across fork
            self._pid = os.getpid()
        return self._reader

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        return sample_frames(self._r()[key], self.max_frames)

    def preload(self, keys: Sequence[str]) -> None:
        for k in keys:
            self._cache[k] = self.get(k)

    def close(self) -> None:
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self._reader = None

    def __getstate__(self):  # picklable for DataLoader workers: no open handle travels
        d = dict(self.__dict__)
        d["_reader"] = None
        d["_pid"] = None
        return d
