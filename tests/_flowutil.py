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
    """{extractor/split/key: array} of a shard tree, plus {extractor: precision_kind} under
    the key ``"__precision__"`` (from each merged file's provenance)."""
    out, precision = {}, {}
    for h5 in sorted((Path(root) / "features").glob("*/*.h5")):
        with h5py.File(h5, "r") as f:
            out.update({f"{h5.parent.name}/{h5.stem}/{k}": f[k][()] for k in f})
            prov = json.loads(f.attrs.get("provenance", "{}"))
            precision[h5.parent.name] = prov.get("precision_kind") or prov.get("precision", "fp32")[:4]
    out["__precision__"] = precision
    return out


# element-wise relative tolerance per precision when the same computation runs in another process
# (another torch thread count: oneDNN sums in another order). fp32: a few ulps through ~150 layers;
# bf16: the 8-bit mantissa (2**-8) can flip one rounding step in a layer.
CROSS_PROCESS_RTOL = {"fp32": 1e-4, "bf16": 2.0 ** -6}


def assert_same_features(got: dict, want: dict, cross_process: bool = False) -> None:
    """Equal feature sets: bit-identical within one process configuration; with
    ``cross_process``, equal element-wise within the tolerance of the precision the features
    were computed at: |got - want| <= rtol * (|want| + rms(want)) for every element (the
    rms term covers elements near zero, whose error scales with the array, not with them)."""
    import numpy as np

    assert got.keys() == want.keys()
    assert got["__precision__"] == want["__precision__"]
    for k in want:
        if k == "__precision__":
            continue
        if not cross_process:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
            continue
        rtol = CROSS_PROCESS_RTOL[want["__precision__"][k.split("/")[0]]]
        w = want[k].astype(np.float64)
        bound = rtol * (np.abs(w) + np.sqrt(np.mean(w ** 2)))
        err = np.abs(got[k] - w)
        assert (err <= bound).all(), f"{k}: max |diff| / bound = {(err / bound).max():.2f}"
