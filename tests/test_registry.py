"""The model registry (models/registry.py): models by name, configs as data, no import cycle."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import registry
from models.config import HANetConfig
from pipeline.learn.config import TrainConfig
from models.model_configs import DataConfig
from tests.test_hanet import make_batch

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(feat_dim=24, vocab_size=40, word_dim=12, joint_dim=16, max_frames=12, max_words=10,
            n_verb_concepts=6, n_noun_concepts=9)
EXTRA = {"hanet": dict(gcn_attn_dim=8, n_action_clips=3, n_entity_clips=4, se_reduction=4),
         "hgr": {}, "hcmi": dict(n_heads=2)}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ["hanet", "hgr", "hcmi"])
def test_every_model_builds_from_data_and_serves_the_common_interface(name):
    spec = registry.get_spec(name)
    cfg = spec.config_cls.model_validate({**TINY, **EXTRA[name]})
    torch.manual_seed(0)
    model = registry.create_model(name, cfg.model_dump())  # a dict of fields is enough
    v, t, lab = make_batch(cfg, 5, seed=1)
    out = model.loss(v, t, lab)
    assert torch.isfinite(out["total"])
    model.eval()
    with torch.no_grad():
        ve, te = model.encode_videos(v), model.encode_texts(t)
        parts = model.similarity_parts(ve, te)
        fused = model.similarity(ve, te)
    assert fused.shape == (5, 5)
    declared = set(spec.score_parts) - ({spec.fused} if spec.fused not in parts else set())
    assert declared <= set(parts), (declared, set(parts))
    for k in declared:
        assert parts[k].shape == (5, 5)
    if spec.fused in parts:
        assert torch.equal(parts[spec.fused], fused)
    with torch.no_grad():  # the loss from precomputed parts (how bf16 training computes it) is the loss
        whole = model.loss(v, t, lab)
        split = model.loss_from_parts(ve, te, parts, lab)
    assert whole.keys() == split.keys() and all(torch.equal(whole[k], split[k]) for k in whole)
    assert spec.needs <= set(registry.BATCH_FIELDS) and {"video", "words"} <= spec.needs
    # the loader config carries the model's caps (its own config class, not HANet's)
    dcfg = cfg.data_config()
    assert isinstance(dcfg, DataConfig) and type(cfg) is spec.config_cls
    assert all(getattr(dcfg, f) == getattr(cfg, f) for f in DataConfig.model_fields if f != "graph_edges")
    assert dcfg.graph_edges == (cfg.deviation("graph_edges") if name == "hanet" else cfg.graph_edges)


def test_train_config_holds_the_trained_models_config_and_fills_shapes():
    tc = TrainConfig.model_validate({"model": "hgr", "hgr": {"joint_dim": 64}})
    assert isinstance(tc.net, registry.get_spec("hgr").config_cls) and tc.net.joint_dim == 64
    d = json.loads(tc.model_dump_json())  # written under the model's name, the checkpoints' layout
    assert d["model"] == "hgr" and d["hgr"]["joint_dim"] == 64 and not {"net", "hanet", "hcmi"} & set(d)
    assert TrainConfig.model_validate(d) == tc
    # a config of the old layout (one entry per model): the other models' entries are ignored
    assert TrainConfig.model_validate({**d, "hanet": {"joint_dim": 8}, "hcmi": {}}) == tc
    assert TrainConfig().net == registry.get_spec("hanet").config_cls()
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        TrainConfig(model="nope")
    with pytest.raises(ValueError, match="nope_field"):
        TrainConfig(model="hgr", hgr={"nope_field": 1})
    assert tc.for_model("hanet").net == registry.get_spec("hanet").config_cls() and tc.for_model("hgr") is tc
    filled = registry.fill_shapes(tc.net, {"feat_dim": 7, "vocab_size": 11, "word_dim": 5,
                                           "n_verb_concepts": 3, "n_noun_concepts": 4})
    assert (filled.feat_dim, filled.vocab_size, filled.word_dim) == (7, 11, 5)
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        registry.create_model("nope")


def test_unknown_model_refused_before_reading_data(tmp_path):
    from pipeline.learn.train import run_train

    with pytest.raises(KeyError, match="unknown model"):
        run_train(tmp_path / "no-shards", tmp_path / "run", TrainConfig(), model_name="nope")


def test_a_registered_model_trains_and_evaluates_by_name(tmp_path):
    """train/evaluate reach a newly registered model through the registry alone."""
    from pipeline.learn.evaluate import model_from_checkpoint
    from pipeline.datasets.planted import make_planted_shards
    from pipeline.learn.train import run_train
    from storage.checkpoints import load_checkpoint
    from tests._toy_model import ToyModel, toy_factory

    shards = make_planted_shards(tmp_path / "p", n_videos=20, seed=0, feat_dim=16)
    registry.add(registry.ModelSpec(name="toy-registered", model_cls=toy_factory, config_cls=HANetConfig,
                                    needs=frozenset({"video", "words"}), score_parts=("score",), fused="score"))
    try:
        cfg = TrainConfig(model="toy-registered", epochs=1, batch_size=8, log_every=0,
                          net=HANetConfig(max_frames=12))
        s = run_train(shards, tmp_path / "run", cfg)
        ck = load_checkpoint(Path(s["best_checkpoint"]))
        assert ck["model_name"] == "toy-registered"
        model, tcfg = model_from_checkpoint(ck)
        assert isinstance(model, ToyModel) and tcfg.model == "toy-registered"
    finally:
        registry.unregister("toy-registered")


def test_no_import_cycle_between_train_and_evaluate():
    code = ("import sys, pipeline.learn.evaluate; assert 'pipeline.learn.train' not in sys.modules, 'evaluate imports train'; "
            "import pipeline.learn.heatmaps; assert 'pipeline.learn.train' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


MODEL_CLASSES = {"HANet", "HGR", "HCMI"}
MODEL_MODULES = {"models.hanet", "models.hgr", "models.hcmi"}


@pytest.mark.parametrize("path", ["pipeline/learn/train.py", "pipeline/learn/evaluate.py", "pipeline/learn/heatmaps.py",
                                  "flows/train.py", "flows/compare.py", "pipeline/learn/compare.py"])
def test_stage_code_never_names_a_model_class(path):
    tree = ast.parse((ROOT / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module not in MODEL_MODULES, (path, node.module)
            assert not {a.name for a in node.names} & MODEL_CLASSES, (path, node.lineno)
        elif isinstance(node, ast.Import):
            assert not {a.name for a in node.names} & MODEL_MODULES, (path, node.lineno)
        elif isinstance(node, ast.Name):
            assert node.id not in MODEL_CLASSES, (path, node.lineno)


def test_run_identity_ignores_other_models_configs():
    """Changing HCMI's config (or its defaults) never changes a HANet run's key or resume check."""
    from pipeline.fingerprint import stable_hash
    from pipeline.learn.train import _comparable

    from pipeline.learn.runs import run_identity

    a, b = TrainConfig(), TrainConfig(hcmi={"n_clips": 7}, hgr={"joint_dim": 8})
    assert stable_hash(run_identity(a)) == stable_hash(run_identity(b))
    assert _comparable(a) == _comparable(b)
    c = TrainConfig(model="hgr", hgr={"joint_dim": 8})
    assert "hgr" in run_identity(c) and "hanet" not in run_identity(c)
    assert _comparable(TrainConfig(model="hgr")) != _comparable(c)
