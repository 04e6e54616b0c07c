"""`vtr compare-features` (pipeline/video/feature_compare.py): the diagnosis names the relation the test planted.

Features of a smooth "video" (a random walk around a base vector, one row per decoded frame) are
sampled the way extractors differ: another stride and start frame, a shift, half a step apart,
uniform resampling, noise, another weights seed. The test knows each relation; the verdict must
name it (and, with A's sampling given, state it in video frames).
"""
from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest

from pipeline.datasets.export import run_export
from pipeline.datasets.planted import make_planted_shards
from pipeline.video.feature_compare import compare_sets, run_compare_features


def _videos(n: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        frames = int(rng.integers(240, 400))
        base = rng.normal(size=64) * 3
        out[f"video{i}"] = (base + np.cumsum(rng.normal(size=(frames, 64)) * 0.5, axis=0)).astype(np.float32)
    return out


U = _videos()


def _pair(fa, fb):
    return {k: fa(u) for k, u in U.items()}, {k: fb(u) for k, u in U.items()}


def test_other_stride_and_start_frame_named_in_video_frames():
    a, b = _pair(lambda u: u, lambda u: u[8::16])
    r = compare_sets(a, b, a_stride=1, a_start=0)
    assert r["winner"] == "b_from_a:s16:o8" and r["winner_share"] == 1.0
    assert r["verdict"]["values"] == "identical"
    assert "B samples every 16th frame from frame 8; A every frame from frame 0" in r["verdict"]["text"]
    # frame j vs frame j would have said "different features"
    assert r["median_cos_framewise"] < 0.9 < r["median_cos_winner"]


def test_shift_and_swapped_roles():
    a, b = _pair(lambda u: u[0::4], lambda u: u[12::4])        # B starts 3 steps later
    r = compare_sets(a, b)
    assert r["winner"] == "b_from_a:s1:o3" and r["verdict"]["values"] == "identical"
    assert "B starts 3 of A's steps later" in r["verdict"]["text"]
    a, b = _pair(lambda u: u[4::8], lambda u: u)                 # A is the sparse one
    r = compare_sets(a, b)
    assert r["winner"] == "a_from_b:s8:o4" and "A takes every 8th of B's frames from B's frame 4" in r["verdict"]["text"]


def test_half_step_offset_and_uniform_resampling():
    a, b = _pair(lambda u: u[0::16], lambda u: u[8::16])         # A from frame 0, B from frame 8, both every 16th
    r = compare_sets(a, b)
    assert r["winner"] == "half" and "half-way" in r["verdict"]["text"]
    idx = lambda n: np.round(np.linspace(0, n - 1, 20)).astype(int)  # noqa: E731 - the readers' 'select'
    a, b = _pair(lambda u: u[::3], lambda u: u[::3][idx(len(u[::3]))])
    r = compare_sets(a, b)
    assert r["winner"] == "resample_b" and r["verdict"]["values"] == "identical"


def test_noise_is_close_values_and_other_weights_are_unrelated():
    rng = np.random.default_rng(1)
    a, b = _pair(lambda u: u, lambda u: u + rng.normal(size=u.shape).astype(np.float32))
    r = compare_sets(a, b)
    assert r["winner"] == "b_from_a:s1:o0" and r["verdict"]["values"] == "close"
    assert 0.95 < r["median_cos_winner"] < 0.999
    w0, w1 = rng.normal(size=(64, 64)), rng.normal(size=(64, 64))
    a, b = _pair(lambda u: np.maximum(u @ w0, 0), lambda u: np.maximum(u @ w1, 0))  # same frames, another seed
    r = compare_sets(a, b)
    assert r["verdict"]["values"] == "unrelated" and "unrelated" in r["verdict"]["text"]
    # the same "backbone" twice is identical
    r = compare_sets(a, {k: v.copy() for k, v in a.items()})
    assert r["verdict"]["values"] == "identical" and r["winner"] == "b_from_a:s1:o0"


def test_outputs_and_released_layout_against_ours(tmp_path):
    """Our features/<set>/ folder vs the same features in an export's ordered_feature/SA folder; worst listed."""
    src = make_planted_shards(tmp_path / "p", n_videos=16, captions_per_video=2, seed=2)
    run_export(src, tmp_path / "x")
    released = tmp_path / "x/ordered_feature/SA/resnet152.pth"
    with h5py.File(released / "tst_ft.hdf5", "a") as f:     # one video re-extracted with noise
        name = sorted(f)[0]
        x = f[name][()]
        del f[name]
        f[name] = x + np.random.default_rng(0).normal(size=x.shape).astype(np.float32) * 2
    r = run_compare_features(str(src / "features/resnet152"), str(released), str(tmp_path / "cmp"), worst=3)
    assert r["videos"] == 16 and r["winner"] == "b_from_a:s1:o0"
    rows = list(csv.DictReader(open(r["paths"]["csv"])))
    assert len(rows) == 16
    worst = min(rows, key=lambda row: float(row["cos_winner"]))
    assert worst["video"] == name and float(worst["cos_winner"]) < 0.99
    md = open(r["paths"]["markdown"]).read()
    assert "Worst 3 videos" in md and f"| {name} |" in md
    assert open(r["paths"]["histogram"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.load(open(r["paths"]["json"]))["videos"] == 16


def test_refuses_disjoint_or_different_widths():
    with pytest.raises(ValueError, match="no video in common"):
        compare_sets({"a": np.ones((3, 4))}, {"b": np.ones((3, 4))})
    with pytest.raises(ValueError, match="widths differ"):
        compare_sets({"a": np.ones((3, 4))}, {"a": np.ones((3, 5))})


def test_compare_features_flow(tmp_path, prefect_server):
    """The flow (flows/compare_features.py) as `vtr compare-features` and the deployment run it."""
    from flows.compare_features import compare_features

    with h5py.File(tmp_path / "a.h5", "w") as fa, h5py.File(tmp_path / "b_ft.hdf5", "w") as fb:
        for k, u in list(U.items())[:4]:
            fa[k] = u
            fb[k] = u[8::16]
    r = compare_features(str(tmp_path / "a.h5"), str(tmp_path / "b_ft.hdf5"), out_dir=str(tmp_path / "o"),
                         a_stride=1)
    assert r["winner"] == "b_from_a:s16:o8" and "from frame 8" in r["verdict"]["text"]
    assert (tmp_path / "o/compare.md").is_file() and (tmp_path / "o/histogram.png").is_file()
