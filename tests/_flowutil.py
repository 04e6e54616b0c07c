"""Helpers for tests that run the build flow (in-process or as a `vtr build` subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
TINY = {  # small frames and clips so ResNet152 / I3D run in seconds on 2 CPU cores
    "decode": {"crop": 64, "short_side": 72},
    "i3d": {"clip_len": 4, "clip_step": 2, "max_clips": 1, "crop": 64, "short_side": 72},
    "concepts": {"n_verbs": 8, "n_nouns": 12},
}
COMMON = {"max_frames": 4, "frame_stride": 4, "batch_size": 8, "weights": "random", "shard_size": 3}


def build(sample, out, **kw):
    """Run the build-features flow in this process on the tiny sample."""
    from flows.build import build_features

    _, ann = sample
    overrides = kw.pop("overrides", TINY)
    return build_features(dataset="tiny", dataset_root=str(Path(ann).parent / "videos"), annotation=str(ann),
                          out_root=str(out), overrides=overrides, **{**COMMON, **kw})


def build_cmd(sample, out, *extra: str) -> list[str]:
    """The same build as a `vtr build` command line (for subprocess tests)."""
    _, ann = sample
    args = [sys.executable, "-m", "flows.cli", "build", "--dataset", "tiny",
            "--dataset-root", str(Path(ann).parent / "videos"), "--annotation", str(ann),
            "--out-root", str(out), "--overrides", json.dumps(TINY)]
    for k, v in COMMON.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args + list(extra)


def subprocess_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT)}


def popen(cmd: list[str], log: Path, **kw) -> subprocess.Popen:
    """Start ``cmd`` against the test Prefect server; stdout+stderr go to ``log``."""
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=fh, stderr=subprocess.STDOUT, **kw)


def executed(summary) -> set[tuple[str, str]]:
    return {(r["stage"], r["shard"]) for r in summary["stages"] if r["status"] == "executed"}


def features(root: Path) -> dict:
    out = {}
    for h5 in sorted((Path(root) / "features").glob("*/*.h5")):
        with h5py.File(h5, "r") as f:
            out.update({f"{h5.parent.name}/{h5.stem}/{k}": f[k][()] for k in f})
    return out


def assert_same_features(got: dict, want: dict, scale_tol: float = 0.0) -> None:
    """Equal feature sets; with ``scale_tol``, equal up to that fraction of each array's largest value.

    Exact equality holds within one process configuration; across processes with
    other torch thread counts, oneDNN sums in another order (fp32 rounding only).
    """
    import numpy as np

    assert got.keys() == want.keys()
    for k in want:
        if scale_tol == 0.0:
            np.testing.assert_array_equal(got[k], want[k])
        else:
            assert np.abs(got[k] - want[k]).max() <= scale_tol * np.abs(want[k]).max(), k
