"""Shard planning, feature extraction (random seeded weights, tiny crops) and the final merge."""
from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.video import backbones
from pipeline.video.backbones import BackboneWeightsError, get_backbone, load_backbone
from pipeline.fingerprint import sha256_file, shard_fingerprint
from pipeline.config import BuildConfig, DecodeConfig, I3DConfig, IngestConfig, ResNetConfig
from pipeline.video.decode import DecodeTimeoutError
from pipeline.video.extract import extract_shard, extract_shards_multi, prefetch_map
from pipeline.video.merge import finalize_features
from pipeline.video.shards import ShardSpec, plan_shards, shard_outputs
from pipeline.datasets.ingest import run_ingest
from tests._videos import make_truncated, make_video

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")

DECODE = DecodeConfig(short_side=72, crop=64, frame_stride=8, max_frames=3, prefetch=2)
RESNET = ResNetConfig(weights="random", batch_size=4, device="cpu", bf16=False)
I3D = I3DConfig(weights="random", clip_len=4, clip_step=2, max_clips=2, batch_size=2, short_side=72, crop=64,
                device="cpu", bf16=False)
SPLITS = {"a": "train", "b": "train", "c": "validate", "d": "test", "e": "validate"}
EXPECTED_ROWS = {"a": 3, "b": 2, "e": 1}  # 20, 9 and 3 frames at stride 8


def _dataset(base: Path) -> Path:
    """Videos a, b, e decode; c is truncated; d is missing (an ingest error)."""
    videos = base / "videos"
    videos.mkdir(parents=True)
    make_video(videos / "a.mp4", 20)
    make_video(videos / "b.mp4", 9, size=(48, 64))
    make_truncated(make_video(base / "c_full.mp4", 40, faststart=True), videos / "c.mp4", 0.5)
    make_video(videos / "e.mp4", 3)
    ann = base / "ann.json"
    ann.write_text(json.dumps({"videos": [{"video_id": k, "split": s} for k, s in SPLITS.items()],
                               "sentences": []}))
    cfg = BuildConfig(dataset="d", out_root=str(base / "out"),
                      ingest=IngestConfig(dataset_root=str(videos), annotation=str(ann)))
    run_ingest(cfg)
    return base / "out" / "d"


@pytest.fixture(scope="module")
def shard_root(tmp_path_factory) -> Path:
    return _dataset(tmp_path_factory.mktemp("extract"))


@pytest.fixture(scope="module")
def resnet_run(shard_root):
    spec = plan_shards(shard_root, 10)[0]
    return spec, extract_shard(shard_root, spec, "resnet152", DECODE, RESNET)


def _features(root: Path, extractor: str, shard: str) -> dict[str, np.ndarray]:
    with h5py.File(root / shard_outputs(extractor, shard)[0], "r") as f:
        return {k: f[k][()] for k in f}


def test_plan_shards_sorts_chunks_and_fingerprints(shard_root):
    specs = plan_shards(shard_root, 2)
    assert [s.id for s in specs] == ["shard-00000", "shard-00001", "shard-00002"]
    assert [s.keys for s in specs] == [["a", "b"], ["c", "d"], ["e"]]
    assert all(Path(p).is_absolute() for s in specs for p in s.paths)
    assert specs[1].statuses == ["ok", "error"] and specs[0].splits == ["train", "train"]
    before = shard_fingerprint(specs[0])
    assert before == shard_fingerprint(plan_shards(shard_root, 2)[0])
    st = os.stat(specs[0].paths[0])
    os.utime(specs[0].paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert shard_fingerprint(plan_shards(shard_root, 2)[0]) != before


def test_shard_features_and_status(shard_root, resnet_run):
    spec, result = resnet_run
    assert result.outputs == ["features/resnet152/shards/shard-00000.h5",
                              "features/resnet152/shards/shard-00000.status.parquet"]
    assert (result.counts["ok"], result.counts["error"], result.counts["frames"]) == (3, 2, 6)
    feats = _features(shard_root, "resnet152", spec.id)
    assert {k: v.shape for k, v in feats.items()} == {k: (n, 2048) for k, n in EXPECTED_ROWS.items()}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in feats.values())
    with h5py.File(shard_root / result.outputs[0], "r") as f:
        assert f.attrs["weights"] == "random" and len(f.attrs["weights_sha256"]) == 64
        assert json.loads(f.attrs["config"])["decode"]["frame_stride"] == 8
        assert f["a"].attrs["frame_indices"].tolist() == [0, 8, 16]
    rows = {r["key"]: r for r in pq.read_table(shard_root / result.outputs[1]).to_pylist()}
    assert {k: r["status"] for k, r in rows.items()} == {"a": "ok", "b": "ok", "c": "error", "d": "error", "e": "ok"}
    assert rows["c"]["error_message"].startswith("TruncatedVideoError")
    assert rows["d"]["error_message"].startswith("ingest: file not found")
    assert (rows["a"]["n_decoded"], rows["a"]["n_expected"], rows["a"]["n_features"]) == (20, 20, 3)


def test_features_are_deterministic_and_independent_of_batching(shard_root, resnet_run, tmp_path):
    spec, _ = resnet_run
    first = _features(shard_root, "resnet152", spec.id)
    copy = tmp_path / "copy"
    extract_shard(copy, spec, "resnet152", DECODE, RESNET)
    one_by_one = tmp_path / "one"
    extract_shard(one_by_one, spec, "resnet152", DECODE.model_copy(update={"prefetch": 0}),
                  RESNET.model_copy(update={"batch_size": 1}))
    for key, value in first.items():
        np.testing.assert_array_equal(_features(copy, "resnet152", spec.id)[key], value)
        np.testing.assert_allclose(_features(one_by_one, "resnet152", spec.id)[key], value, rtol=1e-4,
                                   atol=1e-4 * float(np.abs(value).max()))


def test_one_decode_pass_feeds_both_extractors(shard_root, resnet_run, tmp_path):
    spec, _ = resnet_run
    results = extract_shards_multi(tmp_path, spec, {"resnet152": RESNET, "i3d_r50": I3D}, DECODE)
    assert results["i3d_r50"].counts["padded"] == 1
    for key, value in _features(shard_root, "resnet152", spec.id).items():
        np.testing.assert_array_equal(_features(tmp_path, "resnet152", spec.id)[key], value)
    clips = _features(tmp_path, "i3d_r50", spec.id)
    assert {k: v.shape for k, v in clips.items()} == {"a": (2, 2048), "b": (1, 2048), "e": (1, 2048)}
    with h5py.File(tmp_path / shard_outputs("i3d_r50", spec.id)[0], "r") as f:
        assert f["e"].attrs["frame_indices"].tolist() == [[0, 2, 2, 2]] and f["e"].attrs["n_padded"] == 2


def test_finalize_merges_per_split(shard_root, resnet_run):
    spec, _ = resnet_run
    result = finalize_features(shard_root, "resnet152", [spec.id])
    base = shard_root / "features/resnet152"
    assert sorted(result.outputs) == sorted(f"features/resnet152/{n}" for n in
                                            ("train.h5", "val.h5", "test.h5", "status.parquet"))
    with h5py.File(base / "train.h5", "r") as f:
        assert sorted(f) == ["a", "b"] and f.attrs["split"] == "train" and f.attrs["extractor"] == "resnet152"
    with h5py.File(base / "val.h5", "r") as f, h5py.File(base / "test.h5", "r") as g:
        assert sorted(f) == ["e"] and len(g) == 0
    assert pq.read_table(base / "status.parquet").num_rows == 5


def test_finalize_refuses_shards_made_with_other_weights(shard_root, resnet_run, tmp_path):
    spec, _ = resnet_run
    root = tmp_path / "root"
    for shard in ("shard-00000", "shard-00001"):
        for src, dst in zip(shard_outputs("resnet152", spec.id), shard_outputs("resnet152", shard)):
            (root / dst).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shard_root / src, root / dst)
    with h5py.File(root / shard_outputs("resnet152", "shard-00001")[0], "a") as f:
        f.attrs["weights_sha256"] = "0" * 64
    with pytest.raises(ValueError, match="weights_sha256"):
        finalize_features(root, "resnet152", ["shard-00000", "shard-00001"])
    with pytest.raises(FileNotFoundError):
        finalize_features(root, "resnet152", ["shard-00000", "shard-00009"])


def test_shard_outside_dataset_root_is_refused(resnet_run, tmp_path):
    spec, _ = resnet_run
    with pytest.raises(ValueError, match="outside dataset_root"):
        extract_shard(tmp_path, spec, "resnet152", DECODE, RESNET, dataset_root=tmp_path)
    escaped = ShardSpec(id="shard-00007", keys=["x"], paths=["/elsewhere/x.mp4"], splits=["train"],
                        statuses=["error"], errors=["path '../x.mp4' lies outside dataset_root"])
    result = extract_shard(tmp_path, escaped, "resnet152", DECODE, RESNET, dataset_root=tmp_path)
    assert (result.counts["ok"], result.counts["error"]) == (0, 1)  # an ingest error row, not a refusal
    row = pq.read_table(tmp_path / result.outputs[1]).to_pylist()[0]
    assert row["error_message"].startswith("ingest: path '../x.mp4'")


def test_prefetch_abandons_a_hung_decode_and_keeps_order():
    release, unblocked = threading.Event(), threading.Event()

    def work(item):
        if item == "hang":
            release.wait(60)  # stuck until the test releases it (60 s: a regression fails, never deadlocks)
            unblocked.set()
        if item == "bad":
            raise RuntimeError("boom")
        return item.upper()

    try:
        out = list(prefetch_map(work, ["x", "hang", "bad", "y"], depth=1, timeout_s=0.1))
        assert not unblocked.is_set()  # every result came back while the hung item was still stuck
    finally:
        release.set()
    assert [(i, r) for i, r, _ in out] == [("x", "X"), ("hang", None), ("bad", None), ("y", "Y")]
    assert isinstance(out[1][2], DecodeTimeoutError) and str(out[2][2]) == "boom"


def test_backbone_cache_and_random_provenance():
    assert get_backbone("i3d_r50", I3D) is get_backbone("i3d_r50", I3D)
    other = load_backbone("i3d_r50", I3D.model_copy(update={"seed": 1}))
    prov = get_backbone("i3d_r50", I3D).provenance
    assert prov["seed"] == 0 and other.provenance["seed"] == 1
    assert prov["weights_sha256"] != other.provenance["weights_sha256"]
    assert prov["torch"] == torch.__version__


def test_local_weights_file_is_loaded_and_hashed(tmp_path):
    full = backbones._seeded(backbones._i3d_arch, I3D.seed).state_dict()  # what weights='random' starts from
    path = tmp_path / "i3d.pth"
    torch.save({"model_state": full}, path)  # pytorchvideo's checkpoint layout
    loaded = load_backbone("i3d_r50", I3D.model_copy(update={"weights": str(path)}))
    assert loaded.provenance["weights_sha256"] == sha256_file(path)
    state = get_backbone("i3d_r50", I3D).model.state_dict()
    assert loaded.model.state_dict().keys() == state.keys()
    for k, v in loaded.model.state_dict().items():
        torch.testing.assert_close(v, state[k])


def test_unreachable_pretrained_weights_say_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(BackboneWeightsError, match="weights=random") as info:
        load_backbone("i3d_r50", I3D.model_copy(update={"weights": "kinetics"}))
    assert "I3D_8x8_R50.pyth" in str(info.value) and "weights=<path" in str(info.value)
    with pytest.raises(BackboneWeightsError, match="not found"):
        load_backbone("resnet152", RESNET.model_copy(update={"weights": "/nonexistent/r152.pth"}))
