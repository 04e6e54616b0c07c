"""The compare flow: every model trained on the same shards/seed, one table (artifact, markdown, PNG)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.datasets.planted import make_planted_shards

TINY = {"hanet": {"joint_dim": 16, "gcn_attn_dim": 8, "max_frames": 12, "n_action_clips": 4, "n_entity_clips": 6},
        "hgr": {"joint_dim": 16, "max_frames": 12},
        "hcmi": {"joint_dim": 16, "max_frames": 12, "n_heads": 2}}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    make_planted_shards(out / "planted", n_videos=30, seed=0)
    return out


def _trainable_parameters(checkpoint: Path) -> int:
    """The trainable parameter count of the model a checkpoint rebuilds (not the run's own record)."""
    from pipeline.learn.evaluate import model_from_checkpoint
    from storage.checkpoints import load_checkpoint

    model, _ = model_from_checkpoint(load_checkpoint(checkpoint))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_compare_flow_writes_table_markdown_chart_and_artifact(prefect_server, shards, tmp_path):
    from prefect.client.orchestration import get_client

    from flows.compare import compare

    res = compare(models=["hanet", "hgr", "hcmi"], dataset="planted", out_root=str(shards),
                  runs_root=str(tmp_path), run_name="cmp", epochs=1, batch_size=16, seed=3, overrides=TINY)
    out = Path(res["out_dir"])
    assert [r["model"] for r in res["rows"]] == ["hanet", "hgr", "hcmi"]
    for r in res["rows"]:
        report = json.loads((out / r["model"] / "report.json").read_text())
        assert report["model_name"] == r["model"]
        assert r["rsum"] == pytest.approx(report["rsum"], abs=0.01)
        assert r["params"] == _trainable_parameters(out / r["model"] / "best.pt")  # counted independently
        history = json.loads((out / r["model"] / "history.json").read_text())
        want = sum(h["train_seconds"] for h in history) / len(history)
        assert len(history) == 1 and r["train_s_per_epoch"] == pytest.approx(want, abs=1e-3)
        assert r["eval_s"] == pytest.approx(report["metrics"]["seconds"], abs=1e-3)
        cfg = json.loads((out / r["model"] / "config.json").read_text())
        assert cfg["model_name"] == r["model"] and cfg["train_config"]["seed"] == 3  # same seed for all
        assert cfg["data_fingerprint"] == json.loads((out / "hanet" / "config.json").read_text())["data_fingerprint"]
    assert len({r["params"] for r in res["rows"]}) == 3  # three different models
    md = (out / "comparison.md").read_text()
    for col in ("t2v R@1", "v2t MedR", "rsum", "params", "train s/epoch", "eval s", "hgr", "hcmi"):
        assert col in md
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["hanet", "hgr", "hcmi"]

    async def artifacts():
        async with get_client() as client:
            return await client.read_artifacts()

    import asyncio

    tables = [a for a in asyncio.run(artifacts()) if a.type == "table" and "model comparison" in (a.description or "")]
    assert tables, "no comparison table artifact"
    data = tables[0].data if isinstance(tables[0].data, list) else json.loads(tables[0].data)
    assert {row["model"] for row in data} == {"hanet", "hgr", "hcmi"}


def test_compare_refuses_unknown_model_before_training(prefect_server, shards, tmp_path):
    from flows.compare import compare

    with pytest.raises(Exception, match="unknown model 'nope'"):
        compare(models=["hgr", "nope"], dataset="planted", out_root=str(shards), runs_root=str(tmp_path), epochs=1)
    assert not (tmp_path / "compare").exists()


def test_train_flow_model_parameter_and_evaluate_check(prefect_server, shards, tmp_path):
    from flows.train import evaluate, train

    res = train(dataset="planted", out_root=str(shards), runs_root=str(tmp_path), run_name="h", epochs=1,
                batch_size=16, overrides={"hgr": TINY["hgr"]}, model="hgr")
    assert Path(res["run_dir"]).parent.name == "hgr" and res["report"]["model_name"] == "hgr"
    ck = str(Path(res["run_dir"]) / "best.pt")
    again = evaluate(checkpoint=ck, dataset="planted", out_root=str(shards), model="hgr")
    assert again["rsum"] == pytest.approx(res["report"]["rsum"])
    with pytest.raises(Exception, match="holds model 'hgr', not 'hcmi'"):
        evaluate(checkpoint=ck, dataset="planted", out_root=str(shards), model="hcmi")


def test_retrain_model_parameter_keeps_its_own_marker(prefect_server, shards, tmp_path):
    from flows.train import retrain

    kw = dict(dataset="planted", out_root=str(shards), runs_root=str(tmp_path), epochs=1, batch_size=16,
              overrides={"hgr": TINY["hgr"]})
    first = retrain(model="hgr", **kw)
    assert first["skipped"] is False and Path(first["run_dir"]).parent.name == "hgr"
    assert (tmp_path / "retrain" / "planted-hgr.json").exists()
    assert not (tmp_path / "retrain" / "planted.json").exists()   # hanet's marker is untouched
    assert retrain(model="hgr", **kw)["skipped"] is True


def test_deployments_with_model_parameters_validate_against_their_flows():
    """compare/compare-models (and train/evaluate/retrain with model=) as prefect.yaml declares them."""
    import importlib

    import yaml

    from models import registry

    root = Path(__file__).resolve().parents[1]
    deps = {d["name"]: d for d in yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]}
    assert deps["compare-models"]["entrypoint"] == "flows/compare.py:compare"
    for name in ("compare-models", "train-hanet", "evaluate-hanet", "retrain-hanet"):
        path, fn = deps[name]["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path[:-3].replace("/", ".")), fn)
        params = dict(deps[name]["parameters"])
        if name == "evaluate-hanet":
            params["checkpoint"] = "runs/hgr/x/best.pt"
        if name != "compare-models":
            params["model"] = "hgr"
        flow.validate_parameters(params)   # raises on unknown names / wrong types
    assert set(deps["compare-models"]["parameters"]["models"]) <= set(registry.model_names())
