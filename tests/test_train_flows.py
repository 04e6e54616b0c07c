"""The train / evaluate / retrain flows over shards (through Prefect, tiny model)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.datasets.planted import make_planted_shards
from tests._oracle import assert_report_matches_oracle

TINY_HANET = {"hanet": {"joint_dim": 32, "gcn_attn_dim": 16, "max_frames": 12, "n_action_clips": 4,
                        "n_entity_clips": 6}}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    make_planted_shards(out / "planted", n_videos=30, seed=0)
    return out


def test_train_flow_trains_evaluates_and_publishes(prefect_server, shards, tmp_path):
    from flows.train import evaluate, train

    result = train(dataset="planted", out_root=str(shards), runs_root=str(tmp_path), run_name="t",
                   epochs=2, batch_size=16, overrides=TINY_HANET)
    run_dir = Path(result["run_dir"])
    assert (run_dir / "best.pt").exists() and (run_dir / "last.pt").exists()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["split"] == "test" and set(report["t2v"]) == {"R@1", "R@5", "R@10", "MedR", "MeanR"}
    assert_report_matches_oracle(report, run_dir / "best.pt", shards / "planted")
    again = evaluate(checkpoint=str(run_dir / "best.pt"), dataset="planted", out_root=str(shards), split="test")
    assert again["rsum"] == pytest.approx(report["rsum"])  # evaluation is deterministic


def test_retrain_skips_unchanged_shards_and_retrains_changed(prefect_server, shards, tmp_path):
    from flows.train import retrain

    kw = dict(dataset="planted", out_root=str(shards), runs_root=str(tmp_path), epochs=1, batch_size=16,
              overrides=TINY_HANET)
    first = retrain(**kw)
    assert first["skipped"] is False and Path(first["run_dir"], "best.pt").exists()
    assert retrain(**kw)["skipped"] is True
    manifest = next((shards / "planted" / "_stages").glob("*.json"))
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "key": data["key"] + "-rebuilt"}))  # a stage was rebuilt
    try:
        third = retrain(**kw)
        assert third["skipped"] is False and third["shards"] != first["shards"]
    finally:
        manifest.write_text(json.dumps(data))


def test_train_after_a_rebuild_starts_a_new_run_instead_of_failing(prefect_server, shards, tmp_path):
    """Issue 10 item 4: run directories are keyed by config + shards; a rebuilt dataset starts a new run."""
    from flows.train import train

    kw = dict(dataset="planted", out_root=str(shards), runs_root=str(tmp_path), epochs=1, batch_size=16,
              overrides=TINY_HANET)
    first = train(**kw)
    manifest = next((shards / "planted" / "_stages").glob("*.json"))
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "key": data["key"] + "-rebuilt"}))  # a stage was rebuilt
    try:
        second = train(**kw)  # resume=True (default) used to fail here with "shards changed"
        assert second["run_dir"] != first["run_dir"] and Path(second["run_dir"], "best.pt").exists()
        assert second["train"]["resumed_from_epoch"] is None
    finally:
        manifest.write_text(json.dumps(data))
    third = train(**kw)  # the original shards again: the first run is found and resumed
    assert third["run_dir"] == first["run_dir"] and third["train"]["resumed_from_epoch"] == 1
