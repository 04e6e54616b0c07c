"""Checkpoints written before models/ became a library still load, score and key their runs as they did.

tests/fixtures/old_checkpoints/ was written by the code of the commit its scores.json names
(make_old_checkpoints.py there says how): HANet / HGR / HCMI trained two steps on planted shards, and a
HANet and an HGR reference checkpoint imported. Their config_json is the old TrainConfig (one field per
model: hanet, hgr, hcmi). The current code must rebuild the same model from each, give the same scores on
the same batch, and compute the same run identity (the run-directory key) from its config.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.fingerprint import stable_hash
from pipeline.learn.evaluate import model_from_checkpoint
from pipeline.learn.runs import run_identity
from storage.checkpoints import load_checkpoint
from tests.test_hanet import make_batch

FIX = Path(__file__).resolve().parent / "fixtures" / "old_checkpoints"
RECORD = json.loads((FIX / "scores.json").read_text())

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", sorted(RECORD["checkpoints"]))
def test_old_checkpoint_loads_and_scores_as_before(name):
    want = RECORD["checkpoints"][name]
    ck = load_checkpoint(FIX / name)
    assert ck["model_name"] == want["model_name"]
    assert {"hanet", "hgr", "hcmi"} <= set(json.loads(ck["config_json"]))  # really the old layout
    model, tcfg = model_from_checkpoint(ck)
    assert tcfg.model == want["model_name"]
    assert stable_hash(run_identity(tcfg)) == want["run_identity"]
    v, t, _ = make_batch(tcfg.net, 4, seed=1)
    model.eval()
    with torch.no_grad():
        got = model.similarity(model.encode_videos(v), model.encode_texts(t)).double()
    torch.testing.assert_close(got, torch.tensor(want["scores"], dtype=torch.float64), rtol=0, atol=1e-6)
