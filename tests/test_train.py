"""Training loop: weights_only checkpoints, bit-exact resume after a kill, early stopping."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

import pipeline.learn.train as train_mod
from models.config import HANetConfig
from pipeline.learn.config import TrainConfig
from models.metrics import METRIC_KEYS
from pipeline.datasets.planted import make_planted_shards
from pipeline.learn.train import EarlyStopper, run_train
from storage.checkpoints import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from tests._toy_model import toy_factory


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_planted_shards(tmp_path_factory.mktemp("planted"), n_videos=40, captions_per_video=3, n_verbs=5,
                               n_nouns=7, feat_dim=16, n_frames=6, seed=1)


def cfg(**kw) -> TrainConfig:
    base = dict(hanet=HANetConfig(joint_dim=16, max_frames=6), batch_size=8, epochs=3, lr=1e-2, log_every=2,
                patience=10)
    base.update(kw)
    return TrainConfig(**base)


def train(shards, run_dir, c, **kw):
    return run_train(shards, run_dir, c, model_factory=toy_factory, model_name="toy", **kw)


def fake_metrics(rsum: float) -> dict:
    m = {k: 0.0 for k in METRIC_KEYS}
    m["rsum"] = float(rsum)
    return m


def test_checkpoints_load_weights_only(shards, tmp_path):
    s = train(shards, tmp_path, cfg(epochs=2, max_steps_per_epoch=3))
    assert s["epochs_run"] == 2 and s["best_epoch"] in (0, 1) and s["resumed_from_epoch"] is None
    last = torch.load(tmp_path / "last.pt", weights_only=True)   # no pickled objects anywhere
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    for key in ("model", "optimizer", "config_json", "epoch", "best_rsum", "rng", "stopper", "data_fingerprint",
                "code_version", "model_name", "history_json", "val_metrics"):
        assert key in last, key
    assert "optimizer" not in best and best["epoch"] == s["best_epoch"]
    assert last["epoch"] == 1 and last["model_name"] == "toy"
    tc = TrainConfig.model_validate_json(last["config_json"])
    assert tc.net.feat_dim == 16 and tc.net.vocab_size > 3     # shapes resolved from the shards
    conf = json.loads((tmp_path / "config.json").read_text())
    assert conf["data_fingerprint"] == last["data_fingerprint"] and conf["model_name"] == "toy"
    hist = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [0, 1] and all(h["steps"] == 3 for h in hist)
    assert "rsum" in hist[0]["val"] and "total" in hist[0]["loss"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert load_checkpoint(tmp_path / "best.pt")["format_version"] == 1


def test_resume_after_kill_is_bit_exact(shards, tmp_path, monkeypatch):
    c = cfg(epochs=3)
    ref = train(shards, tmp_path / "a", c)
    assert ref["epochs_run"] == 3

    real_eval = train_mod.evaluate_model
    calls = {"n": 0}

    def killing_eval(*a, **kw):  # the process dies in epoch 1, after its training steps
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real_eval(*a, **kw)

    monkeypatch.setattr(train_mod, "evaluate_model", killing_eval)
    with pytest.raises(KeyboardInterrupt):
        train(shards, tmp_path / "b", c)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 0
    monkeypatch.setattr(train_mod, "evaluate_model", real_eval)
    res = train(shards, tmp_path / "b", c)
    assert res["resumed_from_epoch"] == 1 and res["epochs_run"] == 3

    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k         # bit-exact on CPU
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    assert a["best_rsum"] == b["best_rsum"] and a["best_epoch"] == b["best_epoch"]
    ha, hb = json.loads(a["history_json"]), json.loads(b["history_json"])
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]


def test_resume_refuses_changed_config_but_allows_more_epochs(shards, tmp_path):
    train(shards, tmp_path, cfg(epochs=1, max_steps_per_epoch=2))
    with pytest.raises(ValueError, match="config differs"):
        train(shards, tmp_path, cfg(epochs=2, max_steps_per_epoch=2, lr=5e-3))
    s = train(shards, tmp_path, cfg(epochs=2, max_steps_per_epoch=2))
    assert s["resumed_from_epoch"] == 1 and s["epochs_run"] == 2
    s = train(shards, tmp_path, cfg(epochs=2, max_steps_per_epoch=2), resume=False)   # start over
    assert s["resumed_from_epoch"] is None and s["epochs_run"] == 2


def test_early_stopping_on_a_fake_val_curve(shards, tmp_path, monkeypatch):
    curve = iter([10, 30, 20, 25, 29.9, 40, 50, 60])
    monkeypatch.setattr(train_mod, "evaluate_model", lambda *a, **kw: fake_metrics(next(curve)))
    c = cfg(epochs=8, patience=3, max_steps_per_epoch=1)
    s = train(shards, tmp_path, c)
    # best at epoch 1 (30); epochs 2, 3, 4 bring no gain -> stop after epoch 4
    assert s["epochs_run"] == 5 and s["stopped_early"] and s["best_epoch"] == 1 and s["best_rsum"] == 30
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4
    again = train(shards, tmp_path, c)                     # resuming a stopped run trains nothing
    assert again["epochs_run"] == 5 and again["stopped_early"]
    more = train(shards, tmp_path, cfg(epochs=6, patience=5, max_steps_per_epoch=1))  # patience raised
    assert more["epochs_run"] == 6 and more["best_epoch"] == 5 and more["best_rsum"] == 40
    assert not more["stopped_early"]


def test_early_stopper_rules():
    e = EarlyStopper(patience=2, min_delta=1.0)
    assert e.update(0, 10.0) and not e.update(1, 10.5) and not e.update(2, math.nan)
    assert e.should_stop and e.best == 10.0 and e.best_epoch == 0
    e2 = EarlyStopper(patience=0)
    for i in range(5):
        e2.update(i, 1.0)
    assert not e2.should_stop                               # patience 0 = never stop early
    e3 = EarlyStopper(3)
    e3.load_state_dict(e.state_dict())
    assert e3.best == 10.0 and e3.bad_epochs == 2 and not e3.should_stop


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "model": {"w": torch.ones(2)}})

    def broken_save(obj, f, *a, **kw):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"epoch": 2, "model": {"w": torch.zeros(2)}})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception):
        load_checkpoint(path)


def test_rng_state_roundtrip(tmp_path):
    torch.manual_seed(3); np.random.seed(3); random.seed(3)
    st = rng_state()
    save_checkpoint(tmp_path / "r.pt", {"rng": st})
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_data_workers_do_not_change_the_trajectory(shards, tmp_path):
    c = cfg(epochs=1, max_steps_per_epoch=3)
    train(shards, tmp_path / "w0", c)
    train(shards, tmp_path / "w1", c.model_copy(update={"num_workers": 1}))
    a = load_checkpoint(tmp_path / "w0" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "w1" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
