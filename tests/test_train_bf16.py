"""TrainConfig.precision='bf16': bf16 autocast around the forward pass, loss maths and weights fp32.

The bf16 tests pretend the CPU has native bf16 (``bf16_is_fast`` -> True), so they exercise
autocast on any machine (PyTorch emulates bf16 where the CPU lacks it: same numbers, slower);
the fallback test pretends the opposite. Planted world of tests/test_learning.py
(tests/_planted_learning.py); small HANet, one torch thread.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from pipeline import devices
from models import registry
from models.config import HANetConfig
from pipeline.learn.config import TrainConfig
from pipeline.learn.batches import TrainBatches
from pipeline.learn.dataset import load_split, load_word_embeddings
from pipeline.learn.runs import run_identity
from pipeline.learn.train import resolve_config, run_train, train_step
from storage.checkpoints import load_checkpoint
from tests._planted_learning import planted, train_and_test, train_cfg, untrained_test_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HANET = dict(joint_dim=32, gcn_attn_dim=16, max_frames=12, n_action_clips=4, n_entity_clips=6, se_reduction=8)
EPOCHS, LR = 5, 1e-2   # 5 epochs: test rsum ~540 of 600 (fp32 538.0, bf16 543.5 measured), untrained 17
U_BF16 = 2.0 ** -8     # bf16 unit roundoff (8 significant bits)
FALLBACK = "fp32 (bf16 requested; no native bf16 on cpu)"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(devices, "bf16_is_fast", lambda device: True)


class LinearDtypes:
    """Output dtypes of every nn.Linear call while active (did autocast really run?)."""

    def __enter__(self):
        self.seen: set[torch.dtype] = set()

        def hook(module, args, out):
            if isinstance(module, torch.nn.Linear):
                self.seen.add(out.dtype)
        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_bf16_training_learns_retrieval(shards, tmp_path, native_bf16):
    """As test_learning.test_retrieval_is_learned_and_moved, with precision='bf16', 5 epochs."""
    runs = {p: train_and_test(shards, tmp_path / p, train_cfg("hanet", HANET, EPOCHS, LR).model_copy(
        update={"precision": p})) for p in ("fp32", "bf16")}
    assert runs["bf16"]["summary"]["precision"] == "bf16 autocast" and runs["fp32"]["summary"]["precision"] == "fp32"
    before = untrained_test_metrics(shards, train_cfg("hanet", HANET, EPOCHS, LR))
    after = runs["bf16"]["test"]
    chance_r1 = 100.0 / 150
    assert after["t2v_r1"] >= max(5 * chance_r1, 35.0) and after["v2t_r1"] >= 35.0, after
    assert after["t2v_r1"] >= before["t2v_r1"] + 25.0, (before, after)    # the metric moved
    assert after["rsum"] >= before["rsum"] + 200.0, (before["rsum"], after["rsum"])
    assert after["t2v_medr"] <= 3 < before["t2v_medr"]
    # and as well as fp32 (same seed): within 25 rsum points = ~5 sd of the seed-to-seed spread
    # that tests/test_learning.py measured for this world (sd 5.1)
    assert after["rsum"] >= runs["fp32"]["test"]["rsum"] - 25.0, (after["rsum"], runs["fp32"]["test"]["rsum"])


def _model_and_batch(shards: Path):
    cfg = resolve_config(shards, TrainConfig(hanet=HANetConfig(**HANET)))
    data = load_split(shards, "train", cfg.net)
    torch.manual_seed(0)
    model = registry.create_model("hanet", cfg.net, load_word_embeddings(shards)).train()
    for m in model.modules():   # same maths in both runs: no dropout masks to match
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model, next(iter(TrainBatches(data, 64, seed=0, epoch=0)))


def test_bf16_step_loss_close_to_fp32_and_gradients_fp32(shards, native_bf16):
    model, batch = _model_and_batch(shards)
    out = {}
    for bf16 in (False, True):
        m = copy.deepcopy(model)
        opt = torch.optim.Adam(m.parameters(), lr=1e-4)
        with LinearDtypes() as seen:
            parts = train_step(m, opt, *batch, bf16=bf16)
        assert seen.seen == ({torch.bfloat16} if bf16 else {torch.float32})   # autocast ran (only) when asked
        assert all(v.dtype == torch.float32 for v in parts.values())        # the loss maths ran in fp32
        grads = [p.grad for p in m.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
        assert all(p.dtype == torch.float32 for p in m.parameters())        # master weights stay fp32
        out[bf16] = ({k: float(v.detach()) for k, v in parts.items()}, torch.cat([g.flatten() for g in grads]))
    # Tolerance: bf16 rounds every matmul input and output to u = 2^-8 relative. A score passes a
    # few such roundings in series (weights, activations, the matmul output of each layer), so a
    # per-pair score/probability is off by at most a few u; each loss part is a mean of
    # 1-Lipschitz functions (hinge max, BCE of clamped probabilities ~O(1) slope) of them, so
    # |dL| <= 4u * max(1, |L|) (1.6 %) even without the averaging-out of independent rounding
    # errors over the batch. Measured on 6 batches: <= 9.2e-4 relative (0.24 u).
    for k, v in out[False][0].items():
        assert abs(out[True][0][k] - v) <= 4 * U_BF16 * max(1.0, abs(v)), (k, v, out[True][0][k])
    # the gradient points the same way: a near-tie of hardest negatives may flip under bf16 and move
    # a few rows' hinge gradients wholesale (cosine measured 0.964-0.9995 on 6 batches)
    assert torch.nn.functional.cosine_similarity(out[False][1], out[True][1], dim=0) > 0.9


@pytest.mark.parametrize("requested, native, expected", [
    ("fp32", True, "fp32"),
    ("bf16", True, "bf16 autocast"),
    ("bf16", False, FALLBACK),
])
def test_precision_really_used_is_recorded(shards, tmp_path, monkeypatch, caplog, requested, native, expected):
    monkeypatch.setattr(devices, "bf16_is_fast", lambda device: native)
    cfg = train_cfg("hanet", HANET, 1, LR).model_copy(update={"precision": requested, "max_steps_per_epoch": 2})
    with LinearDtypes() as seen, caplog.at_level("WARNING", logger="pipeline.devices"):
        summary = run_train(shards, tmp_path, cfg)
    assert (torch.bfloat16 in seen.seen) == (expected == "bf16 autocast")   # fallback: nothing ran in bf16
    assert summary["precision"] == expected and summary["device"] == "cpu"
    conf = json.loads((tmp_path / "config.json").read_text())
    assert conf["precision"] == expected and conf["device"] == "cpu"
    assert conf["train_config"]["precision"] == requested
    assert [h["precision"] for h in json.loads((tmp_path / "history.json").read_text())] == [expected]
    for name in ("last.pt", "best.pt"):
        ck = load_checkpoint(tmp_path / name)
        assert ck["precision"] == expected and TrainConfig.model_validate_json(ck["config_json"]).precision == requested
    warned = [r for r in caplog.records if "no native bf16" in r.getMessage()]
    assert bool(warned) == (expected == FALLBACK)


def test_default_precision_keeps_run_directory_keys():
    """Run directories are keyed by the config (pipeline.learn.runs.run_dir_for): the fp32 default
    leaves the key of a config from before the field existed unchanged; bf16 is another run."""
    default = TrainConfig()
    assert "precision" not in run_identity(default)
    assert run_identity(default) == {k: v for k, v in default.model_dump(mode="json").items()
                                     if k != "precision"}
    assert run_identity(default.model_copy(update={"precision": "bf16"}))["precision"] == "bf16"
