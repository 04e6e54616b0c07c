"""The researcher's path (issue 10): MSR-VTT and VATEX as published, local weight files, train, evaluate.

Two tiny datasets in the official layouts are built through the build flow with
the parameters of the ``build-msrvtt-features`` / ``build-vatex-features``
deployments in prefect.yaml (only paths, sizes and weight files replaced), with
LOCAL weight files for both backbones (seeded state dicts saved in torchvision's
ResNet152 and pytorchvideo's I3D-R50 checkpoint layouts, never
``weights=random``), then trained and evaluated by the train flow:

* MSR-VTT: the official JSON (``videos`` with ``split`` train/validate/test,
  ``sentences``) with broken videos: a zero-byte file, a cut download, a
  missing file, and a playable AVI whose header overstates its frame count
  (an ok row with a warning, issue 10 item 8);
* VATEX: ``vatex_training_v1.0.json`` -> train and ``vatex_validation_v1.0.json``
  -> seeded val/test, videoIDs ``<youtube_id>_<start>_<end>``, files named
  either way.

Asserted: split sizes, the weight files' sha256 in every feature file's
provenance, the evaluation report.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from storage.tables import read_table
from tests._videos import make_overstated_avi, make_truncated, make_video, make_zero_byte
from tests._oracle import assert_report_matches_oracle

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SIZE = (64, 64)
N_FRAMES = 8
# 64x64 videos: decode at their size; one 4-frame I3D stack; few concepts (tiny vocabularies)
TINY = {"decode": {"short_side": 64, "crop": 64},
        "i3d": {"clip_len": 4, "clip_step": 2, "max_clips": 1, "short_side": 64, "crop": 64},
        "concepts": {"n_verbs": 6, "n_nouns": 8}}
TINY_FLAT = {"max_frames": 4, "frame_stride": 2, "batch_size": 16, "shard_size": 8, "n_workers": 1}
TINY_HANET = {"hanet": {"joint_dim": 32, "gcn_attn_dim": 16, "max_frames": 4, "n_action_clips": 2,
                        "n_entity_clips": 3}}
SUBJECTS = ("a man", "a woman", "a dog", "a child", "a cat")
ACTIONS = ("is riding a horse", "is playing a guitar", "is cooking food", "runs on the beach", "throws a ball")


def _captions(rng: np.random.Generator, n: int) -> list[str]:
    return [f"{SUBJECTS[rng.integers(len(SUBJECTS))]} {ACTIONS[rng.integers(len(ACTIONS))]}" for _ in range(n)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _deployment(name: str) -> dict:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    return dict(next(d for d in spec["deployments"] if d["name"] == name)["parameters"])


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict[str, Path]:
    """Seeded state dicts as the published checkpoints store them (not weights=random)."""
    import torch
    import torchvision
    from pytorchvideo.models.hub import i3d_r50

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet152(weights=None).state_dict(), d / "resnet152-seeded.pth")
    torch.manual_seed(2)  # pytorchvideo's model-zoo files hold the state dict under 'model_state'
    torch.save({"model_state": i3d_r50(pretrained=False).state_dict()}, d / "I3D_8x8_R50-seeded.pyth")
    return {"resnet152": d / "resnet152-seeded.pth", "i3d_r50": d / "I3D_8x8_R50-seeded.pyth"}


def _msrvtt(base: Path) -> tuple[Path, Path]:
    videos, rng = base / "videos", np.random.default_rng(0)
    videos.mkdir(parents=True)
    plan = ["train"] * 6 + ["validate"] * 2 + ["test"] * 2
    for i, _ in enumerate(plan):
        make_video(videos / f"video{i}.mp4", N_FRAMES, size=SIZE)
    # the broken and the odd: all in train
    make_zero_byte(videos / "video10.mp4")
    make_truncated(make_video(base / "full.mp4", 40, size=SIZE, faststart=True), videos / "video11.mp4", 0.5)
    make_overstated_avi(base / "over.avi", N_FRAMES, stated=40, size=SIZE).replace(videos / "video13.mp4")
    plan += ["train"] * 4  # video12: listed, no file
    ann = {"info": {"year": 2016, "version": "1.0"},
           "videos": [{"category": i % 20, "url": f"https://www.youtube.com/watch?v=x{i}", "video_id": f"video{i}",
                       "start time": 1.0, "end time": 2.0, "split": split, "id": i} for i, split in enumerate(plan)],
           "sentences": [{"caption": c, "video_id": f"video{i}", "sen_id": 3 * i + k}
                         for i in range(len(plan)) for k, c in enumerate(_captions(rng, 3))]}
    (base / "annotation").mkdir()
    path = base / "annotation" / "MSR_VTT.json"
    path.write_text(json.dumps(ann))
    return videos, path


def _vatex(base: Path) -> tuple[Path, Path]:
    videos, rng = base / "videos", np.random.default_rng(1)
    videos.mkdir(parents=True)
    train = [f"Tr_{i}-abcdefg"[:11] + f"_{10 * i:06d}_{10 * i + 10:06d}" for i in range(6)]
    val = [f"Va-{i}_hijklmn"[:11] + f"_{10 * i:06d}_{10 * i + 10:06d}" for i in range(4)]
    for n, vid in enumerate(train + val):
        name = vid if n % 2 else vid.rsplit("_", 2)[0]  # <videoID>.mp4 or <youtube_id>.mp4
        make_video(videos / f"{name}.mp4", N_FRAMES, size=SIZE)
    for name, ids in (("vatex_training_v1.0.json", train), ("vatex_validation_v1.0.json", val)):
        (base / name).write_text(json.dumps([{"videoID": v, "enCap": _captions(rng, 3), "chCap": ["..."] * 3}
                                             for v in ids]))
    return videos, base


def _build(deployment: str, dataset: str, videos: Path, annotation: str, out: Path, weights: dict[str, Path]) -> dict:
    from flows.build import build_features

    params = _deployment(deployment)
    params.update(dataset=dataset, dataset_root=str(videos), annotation=annotation, out_root=str(out),
                  resnet_weights=str(weights["resnet152"]), i3d_weights=str(weights["i3d_r50"]), **TINY_FLAT)
    params["overrides"] = {**params.get("overrides", {}), **TINY,
                           "ingest": {**params.get("overrides", {}).get("ingest", {})}}
    assert params["allow_random_weights"] is False and "weights" in params  # the deployment's own rule
    return build_features(**params)


def _split_sizes(root: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for row in read_table(root / "videos.parquet", "videos").to_pylist():
        sizes[row["split"]] = sizes.get(row["split"], 0) + 1
    return sizes


def _assert_provenance(root: Path, weights: dict[str, Path]) -> dict[str, int]:
    n_videos = {}
    for extractor, file in weights.items():
        want = _sha256(file)
        for split_file in sorted((root / "features" / extractor).glob("*.h5")):
            with h5py.File(split_file, "r") as f:
                assert f.attrs["weights_sha256"] == want, (split_file, f.attrs["weights_sha256"])
                assert f.attrs["weights"] == str(file.resolve())
                n_videos[f"{extractor}/{split_file.stem}"] = len(f)
    return n_videos


def _train_and_evaluate(dataset: str, out: Path, runs: Path) -> dict:
    from flows.train import train

    result = train(dataset=dataset, out_root=str(out), runs_root=str(runs), epochs=2, batch_size=8,
                   overrides=TINY_HANET)
    report = json.loads((Path(result["run_dir"]) / "report.json").read_text())
    assert (report["split"], report["features"], report["model_name"]) == ("test", "resnet152", "hanet")
    assert report["data_fingerprint_matches"] is True and report["checkpoint_epoch"] in (0, 1)
    for direction in ("t2v", "v2t"):
        assert set(report[direction]) >= {"R@1", "R@5", "R@10", "MedR", "MeanR"}
    assert result["report"]["rsum"] == pytest.approx(report["rsum"])
    assert_report_matches_oracle(report, Path(report["checkpoint"]), out / dataset)
    return report


def test_msrvtt_official_json_with_local_weights_builds_trains_and_evaluates(
        prefect_server, weight_files, tmp_path, one_torch_thread):
    videos, ann = _msrvtt(tmp_path / "msrvtt")
    out = tmp_path / "out"
    summary = _build("build-msrvtt-features", "msrvtt", videos, str(ann), out, weight_files)
    root = Path(summary["root"])
    assert _split_sizes(root) == {"train": 10, "val": 2, "test": 2}
    status = {r["key"]: r for r in read_table(root / "features/resnet152/status.parquet",
                                                "feature_status").to_pylist()}
    broken = {k for k, r in status.items() if r["status"] == "error"}
    assert broken == {"video10", "video11", "video12"}, status
    odd = status["video13"]  # the header says 40 frames, the file cleanly holds 8
    assert (odd["status"], odd["n_decoded"], odd["n_expected"]) == ("ok", N_FRAMES, 40) and odd["warning"]
    assert _assert_provenance(root, weight_files) == {
        "resnet152/train": 7, "resnet152/val": 2, "resnet152/test": 2,
        "i3d_r50/train": 7, "i3d_r50/val": 2, "i3d_r50/test": 2}
    _train_and_evaluate("msrvtt", out, tmp_path / "runs")


def test_vatex_training_and_validation_json_with_local_weights_builds_trains_and_evaluates(
        prefect_server, weight_files, tmp_path, one_torch_thread):
    videos, base = _vatex(tmp_path / "vatex")
    out = tmp_path / "out"
    # the deployment's annotation (train=...,val+test=...) with its data/vatex folder moved here
    annotation = _deployment("build-vatex-features")["annotation"].replace("data/vatex", str(base))
    summary = _build("build-vatex-features", "vatex", videos, annotation, out, weight_files)
    root = Path(summary["root"])
    assert _split_sizes(root) == {"train": 6, "val": 2, "test": 2}  # 3,000 -> 1,500 / 1,500, scaled
    rows = read_table(root / "videos.parquet", "videos").to_pylist()
    assert all(r["status"] == "ok" for r in rows), rows
    assert {r["path"] for r in rows} >= {"Tr_0-abcdef.mp4", "Va-1_hijklm_000010_000020.mp4"}  # both namings
    assert _assert_provenance(root, weight_files) == {
        "resnet152/train": 6, "resnet152/val": 2, "resnet152/test": 2,
        "i3d_r50/train": 6, "i3d_r50/val": 2, "i3d_r50/test": 2}
    _train_and_evaluate("vatex", out, tmp_path / "runs")
