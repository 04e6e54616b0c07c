"""Adding a model = one new file (+ its test): a model registered in its own file is creatable, trainable
and evaluable by name, with nothing else edited (no central list, no TrainConfig field, no loader config)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import models
from models import registry

PLUGIN_DIR = Path(__file__).resolve().parent / "fixtures" / "model_plugin"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def plugin_on_models_path(monkeypatch):
    """The fixture folder as one more folder of the ``models`` package: its file is models.toy_plugin."""
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(PLUGIN_DIR)])
    yield
    registry.unregister("toy-plugin")
    sys.modules.pop("models.toy_plugin", None)
    registry._SCANNED.discard("models.toy_plugin")


def test_a_model_in_one_new_file_is_found_built_trained_and_evaluated_by_name(plugin_on_models_path, tmp_path):
    from pipeline.datasets.planted import make_planted_shards
    from pipeline.learn.config import EvalConfig, TrainConfig
    from pipeline.learn.evaluate import run_evaluate
    from pipeline.learn.train import run_train

    assert "models.toy_plugin" not in sys.modules  # nobody imports it: the registry finds it by name
    spec = registry.get_spec("toy-plugin")
    assert spec.model_cls.__module__ == "models.toy_plugin" and "toy-plugin" in registry.model_names()
    model = registry.create_model("toy-plugin", {"feat_dim": 8, "vocab_size": 20, "word_dim": 4, "joint_dim": 6})
    assert type(model) is spec.model_cls and model.video_fc.out_features == 6
    shards = make_planted_shards(tmp_path / "p", n_videos=20, seed=0, feat_dim=16)
    cfg = TrainConfig.model_validate({"model": "toy-plugin", "toy-plugin": {"joint_dim": 12, "max_frames": 12},
                                      "epochs": 1, "batch_size": 8, "log_every": 0})
    summary = run_train(shards, tmp_path / "run", cfg)
    report = run_evaluate(Path(summary["best_checkpoint"]), shards, EvalConfig(n_heatmaps=0))
    assert report["model_name"] == "toy-plugin" and report["metrics"]["n_videos"] == 4  # the 20 % test split
    from pipeline.learn.evaluate import model_from_checkpoint
    from storage.checkpoints import load_checkpoint

    back, tcfg = model_from_checkpoint(load_checkpoint(Path(summary["best_checkpoint"])))
    assert type(back) is spec.model_cls and type(tcfg.net) is spec.config_cls and tcfg.net.joint_dim == 12


def test_an_unknown_model_names_the_registered_ones():
    with pytest.raises(KeyError, match=r"unknown model 'nope'; known: \[.*'hanet'.*'hgr'"):
        registry.get_spec("nope")
