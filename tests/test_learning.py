"""End to end on planted data: the real HANet must learn retrieval and concepts through our engine.

Planted world (pipeline/datasets/planted.py): 500 videos (300 train / 50 val / 150 test), 4 captions
each, 2 events (subject, verb, object) per video visible on frame windows. Chance t2v R@1
on the test split = 1/150 = 0.67 %. Small HANet (joint_dim 32), batch 64, Adam lr 1e-2,
15 epochs, best-val checkpoint; single-threaded (~12-20 s per run on the shared 2-core box).

Measured while writing this test (3 seeds, this exact setup, test rsum of 600):
  full 561.3 / 551.3 / 552.0    individual 548.2 / 556.7 / 552.5
  local 556.5 / 549.8 / 547.0   global 542.8 / 551.5 / 547.3
  -> full - best single level = +4.8 / -5.4 / -0.5 (mean -0.4, sd 5.1): the full model is as
     good as the best single level, and which single level is best changes with the seed.
With the earlier 100-train-video split the full model trailed the individual level by 7-12
points in two of three seeds even after 40 epochs (c_l is the equal-weight mean of five parts, eq. 19, so each
part gets less of the hinge's push, and 7 steps per epoch is too little data for that).
The ablation assertion therefore allows run-to-run noise only: ABLATION_TOLERANCE = 12 rsum
points (about 2.3 sd of the paired gap). Since the single levels here lie within ~15 points of
each other, this is a noise-level check, not proof that the levels are complementary (the
paper's Table 3 claim needs real data); the second assertion checks that every level learns
on its own.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import HANetConfig
from pipeline.learn.config import EvalConfig, TrainConfig
from pipeline.learn.dataset import concept_lemmas, load_split, load_word_embeddings
from pipeline.learn.evaluate import evaluate_model, model_from_checkpoint, run_evaluate
from pipeline.datasets.planted import make_planted_shards
from pipeline.learn.train import run_train
from storage.checkpoints import load_checkpoint

N_VIDEOS, CAPS, SPLITS = 500, 4, (0.6, 0.1, 0.3)
EPOCHS, LR, BATCH = 15, 1e-2, 64
ABLATION_TOLERANCE = 12.0   # rsum points (of 600): run-to-run noise; see the module docstring

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_planted_shards(tmp_path_factory.mktemp("planted"), n_videos=N_VIDEOS, captions_per_video=CAPS,
                               n_verbs=8, n_nouns=12, feat_dim=64, n_frames=12, seed=0, split_fractions=SPLITS)


def hcfg(**flags) -> HANetConfig:
    return HANetConfig(joint_dim=32, gcn_attn_dim=16, max_frames=12, n_action_clips=4, n_entity_clips=6,
                       se_reduction=8, **flags)


def train_and_test(shards: Path, run_dir: Path, seed: int = 0, **flags) -> dict:
    cfg = TrainConfig(hanet=hcfg(**flags), batch_size=BATCH, epochs=EPOCHS, lr=LR, seed=seed, log_every=0,
                      patience=EPOCHS)
    summary = run_train(shards, run_dir, cfg)
    report = run_evaluate(Path(summary["best_checkpoint"]), shards, EvalConfig(n_heatmaps=0))
    return {"summary": summary, "test": report["metrics"]}


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over concepts (columns with >= 1 positive) of the AP of ranking videos by score."""
    aps = []
    for k in range(labels.shape[1]):
        y = labels[:, k]
        if not y.any():
            continue
        order = np.argsort(-scores[:, k], kind="stable")
        hits = y[order]
        precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
        aps.append(float(precision[hits].mean()))
    return float(np.mean(aps))


def planted_labels(shards: Path, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth of the planted world: each test video's verbs / nouns (all its events)."""
    truth = json.loads((shards / "planted_truth.json").read_text())
    lem = concept_lemmas(shards)
    vid = {w: i for i, w in enumerate(lem["verb"])}
    nid = {w: i for i, w in enumerate(lem["noun"])}
    verbs = np.zeros((len(keys), len(vid)), dtype=bool)
    nouns = np.zeros((len(keys), len(nid)), dtype=bool)
    for i, k in enumerate(keys):
        for e in truth[k]["events"]:
            if e["verb"] in vid:
                verbs[i, vid[e["verb"]]] = True
            for n in (e["subject"], e["object"]):
                if n in nid:
                    nouns[i, nid[n]] = True
    return verbs, nouns


@pytest.fixture(scope="module")
def full_run(shards, tmp_path_factory):
    return train_and_test(shards, tmp_path_factory.mktemp("full"))


def test_retrieval_is_learned_and_moved(shards, full_run):
    from models.hanet import HANet

    _, tcfg = model_from_checkpoint(load_checkpoint(Path(full_run["summary"]["best_checkpoint"])))
    test = load_split(shards, "test", tcfg.net)
    chance_r1 = 100.0 / test.n_videos
    torch.manual_seed(0)  # the untrained model (run_train's init) through the same engine
    before = evaluate_model(HANet(tcfg.net, load_word_embeddings(shards)), test, EvalConfig(n_heatmaps=0))
    after = full_run["test"]
    assert after["t2v_r1"] >= max(5 * chance_r1, 35.0), (after, chance_r1)
    assert after["v2t_r1"] >= 35.0
    assert after["t2v_r1"] >= before["t2v_r1"] + 25.0, (before, after)   # the metric moved
    assert after["rsum"] >= before["rsum"] + 200.0, (before["rsum"], after["rsum"])
    assert after["t2v_medr"] <= 3 < before["t2v_medr"]


def test_video_concept_heads_recover_planted_concepts(shards, full_run):
    ck = load_checkpoint(Path(full_run["summary"]["best_checkpoint"]))
    model, tcfg = model_from_checkpoint(ck)
    model.eval()
    test = load_split(shards, "test", tcfg.net)
    with torch.inference_mode():
        out = model.encode_videos(test.video_batch(range(test.n_videos)))
    verbs, nouns = planted_labels(shards, test.keys)
    for name, probs, labels in (("verb", out["verb_probs"], verbs), ("noun", out["noun_probs"], nouns)):
        ap = average_precision(probs.numpy(), labels)
        chance = float(labels.mean())           # AP of a random ranking ~ positive rate
        assert ap >= 0.65 and ap >= 2 * chance, (name, ap, chance)
        # and the top-ranked concepts of a video are mostly its planted ones
        k = int(round(labels.sum(1).mean()))
        top = np.argsort(-probs.numpy(), 1)[:, :k]
        hit = np.take_along_axis(labels, top, 1).mean()
        assert hit >= 0.55 and hit >= 2 * chance, (name, hit, chance)


def test_full_model_not_worse_than_best_single_level(shards, full_run, tmp_path):
    singles = {
        "individual": dict(use_local=False, use_global=False),
        "local": dict(use_individual=False, use_global=False),
        "global": dict(use_individual=False, use_local=False),
    }
    rsum = {name: train_and_test(shards, tmp_path / name, **flags)["test"]["rsum"] for name, flags in singles.items()}
    full = full_run["test"]["rsum"]
    best = max(rsum.values())
    assert full >= best - ABLATION_TOLERANCE, (full, rsum)
    assert min(rsum.values()) > 450.0, rsum   # every level learns on its own (measured 542-557)
