"""Flat build parameters reach every stage they name; per-extractor weights are checked before any work;
a build whose videos failed ends Failed (issue 10 items 1-2, issue 13)."""
from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
import torch

from flows import build as fb
from pipeline import build as pb
from pipeline import build_report
from pipeline.stage import BuildFailedError
from pipeline.video import backbones
from pipeline.config import BuildConfig, I3DConfig

DEFAULTS = {k: p.default for k, p in inspect.signature(fb.build_features.fn).parameters.items()}
# a non-default value per flat parameter (the table below must name every one)
CHANGED = {
    "dataset": "other", "dataset_root": "/data/x/videos", "annotation": "/data/x/a.json", "out_root": "/o",
    "format": "vatex", "extractors": ["resnet152"], "max_frames": 7, "frame_stride": 5, "batch_size": 48,
    "device": "cuda:1", "weights": "random", "resnet_weights": "imagenet_v2", "i3d_weights": "random",
    "shard_size": 9, "max_failed_fraction": 0.25,
}


def _cfg(**changed) -> BuildConfig:
    flat = {k: DEFAULTS[k] for k in pb.FLAT_PARAMS}
    flat.update(changed)
    return pb.make_build_config(**flat, overrides={})


def _get(cfg: BuildConfig, path: str):
    obj = cfg
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def test_every_flow_parameter_is_a_stage_parameter_or_a_run_parameter():
    params = set(DEFAULTS)
    assert params == set(pb.FLAT_PARAMS) | set(fb.RUN_PARAMS), (
        "a build-features parameter is neither wired into BuildConfig (FLAT_PARAMS) nor a run parameter")
    assert set(CHANGED) == set(pb.FLAT_PARAMS)
    assert set(inspect.signature(pb.make_build_config).parameters) - {"overrides"} == set(pb.FLAT_PARAMS)


def _moved(a: BuildConfig, b: BuildConfig) -> set[str]:
    da, db = a.model_dump(), b.model_dump()
    out = set()
    for k in da:
        if isinstance(da[k], dict):
            out |= {f"{k}.{f}" for f in da[k] if da[k][f] != db[k][f]}
        elif da[k] != db[k]:
            out.add(k)
    return out


@pytest.mark.parametrize("name", sorted(pb.FLAT_PARAMS))
def test_flat_parameter_reaches_every_field_it_names(name):
    base = _cfg()
    values = [["i3d_r50"], ["resnet152"]] if name == "extractors" else [CHANGED[name]]
    reached = set()
    for value in values:
        moved = _moved(base, _cfg(**{name: value}))
        assert moved <= set(pb.FLAT_PARAMS[name]), f"{name}={value!r} also moved {moved}"
        reached |= moved
    assert reached == set(pb.FLAT_PARAMS[name]), f"{name} does not reach {set(pb.FLAT_PARAMS[name]) - reached}"


def test_batch_size_is_frames_per_pass_for_both_backbones():
    cfg = _cfg(batch_size=64)
    assert cfg.resnet.batch_size == 64
    assert cfg.i3d.batch_size == 64 // cfg.i3d.clip_len == 8
    flat = {k: DEFAULTS[k] for k in pb.FLAT_PARAMS}
    cfg = pb.make_build_config(**{**flat, "batch_size": 64}, overrides={"i3d": {"clip_len": 16}})
    assert cfg.i3d.batch_size == 4
    cfg = pb.make_build_config(**{**flat, "batch_size": 64}, overrides={"i3d": {"batch_size": 3}})
    assert cfg.i3d.batch_size == 3  # overrides win


def test_weights_file_for_both_backbones_is_refused_with_the_per_extractor_names(tmp_path):
    with pytest.raises(ValueError, match="resnet_weights=.*i3d_weights="):
        _cfg(weights=str(tmp_path / "resnet152.pth"))
    # one extractor: the shared file goes to it
    cfg = _cfg(weights="/w/r.pth", extractors=["resnet152"])
    assert cfg.resnet.weights == "/w/r.pth"
    cfg = _cfg(resnet_weights="/w/r.pth", i3d_weights="/w/i.pyth")
    assert (cfg.resnet.weights, cfg.i3d.weights) == ("/w/r.pth", "/w/i.pyth")
    cfg = _cfg(weights="random", i3d_weights="pretrained")
    assert (cfg.resnet.weights, cfg.i3d.weights) == ("random", "kinetics")


def test_architecture_check_accepts_the_real_layout():
    sd = {k: torch.zeros(v.shape) for k, v in backbones._arch("resnet152").state_dict().items()}
    assert not any(backbones.state_mismatch("resnet152", sd).values())


def test_wrong_weight_file_fails_before_any_work_naming_file_and_keys(tmp_path, prefect_server):
    bad = tmp_path / "i3d_as_resnet.pth"
    torch.save({"blocks.0.conv.weight": torch.zeros(64, 3, 5, 7, 7), "fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(backbones.BackboneWeightsError) as err:
        pb.validate_weight_files(_cfg(resnet_weights=str(bad)))
    msg = str(err.value)
    assert str(bad) in msg and "resnet152" in msg
    assert "missing" in msg and "conv1.weight" in msg and "unexpected" in msg and "blocks.0.conv.weight" in msg
    assert "fc.weight (3, 3) (expected (1000, 2048))" in msg
    # through the flow: nothing is written, no sample generated
    out = tmp_path / "out"
    data = tmp_path / "data"
    with pytest.raises(backbones.BackboneWeightsError, match="i3d_as_resnet.pth"):
        fb.build_features(dataset="x", dataset_root=str(data / "videos"), annotation=str(data / "a.json"),
                          out_root=str(out), generate_sample=2, resnet_weights=str(bad), i3d_weights="random")
    assert not out.exists() and not data.exists()
    with pytest.raises(FileNotFoundError, match="i3d_weights="):
        pb.validate_weight_files(_cfg(i3d_weights=str(tmp_path / "nope.pyth")))


def test_i3d_defaults_match_the_pretrained_8x8_model_and_the_sample_keeps_its_own():
    import yaml

    cfg = I3DConfig()
    assert (cfg.clip_len, cfg.clip_step) == (8, 8)
    deployments = {d["name"]: d for d in yaml.safe_load(Path("prefect.yaml").read_text())["deployments"]}
    sample_i3d = deployments["build-sample-features"]["parameters"]["overrides"]["i3d"]
    assert sample_i3d["clip_step"] == 2  # 48-frame sample videos: 8x8 stacks would be mostly padding
    for name in ("build-msrvtt-features", "build-vatex-features"):
        assert "clip_step" not in deployments[name]["parameters"].get("overrides", {}).get("i3d", {})


def _status_tables(root: Path, statuses: list[tuple[str, str | None]]) -> None:
    from storage.schemas import SCHEMAS
    from storage.tables import write_table

    blank = dict.fromkeys(SCHEMAS["feature_status"][1].names)
    rows = [{**blank, "key": f"v{i}", "split": "train", "shard": "shard-00000",
             "status": "ok" if msg is None else "error", "error_message": msg}
            for i, (_, msg) in enumerate(statuses)]
    for ext in ("resnet152", "i3d_r50"):
        write_table(root / f"features/{ext}/status.parquet", "feature_status", rows)


def test_failed_share_above_the_limit_fails_with_error_kinds(tmp_path):
    _status_tables(tmp_path, [("a", None), ("b", "ingest: file not found: /v/b.mp4"), ("c", "CorruptVideoError: bad"),
                              ("d", "ingest: file not found: /v/d.mp4")])
    cfg = _cfg()
    assert build_report.failure_summary(tmp_path, cfg) == (4, 3, {"file not found": 2, "decoder error": 1})
    with pytest.raises(BuildFailedError, match=r"3 of 4 videos have no features \(file not found: 2, "
                                                  r"decoder error: 1\); first: v1: ingest: file not found: /v/b.mp4"):
        build_report.check_failures(tmp_path, cfg)
    build_report.check_failures(tmp_path, cfg.model_copy(update={"max_failed_fraction": 0.8}))  # 75 % <= 80 %


def test_build_where_every_video_failed_ends_failed(prefect_server, tiny_sample, tmp_path):
    from prefect import get_client  # noqa: F401 - the harness is up
    from tests._flowutil import COMMON, TINY

    src_root, ann = tiny_sample
    videos = tmp_path / "videos"
    videos.mkdir()
    for p in (Path(ann).parent / "videos").iterdir():
        (videos / p.name).write_bytes(b"not a video at all")
    shutil.copy(ann, tmp_path / "annotation.json")
    with pytest.raises(BuildFailedError, match=r"6 of 6 videos have no features \((unreadable|decoder error)"):
        fb.build_features(dataset="broken", dataset_root=str(videos), annotation=str(tmp_path / "annotation.json"),
                          out_root=str(tmp_path / "out"), extractors=["resnet152"], overrides=TINY,
                          **{**COMMON, "max_failed_fraction": 1.0})
