"""Evaluation engine: encode once, chunked == dense, report.json + heatmaps from a checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import HANetConfig
from pipeline.learn.config import EvalConfig, TrainConfig
from models.metrics import METRIC_KEYS, retrieval_metrics
from pipeline.devices import resolve_device
from pipeline.learn.dataset import dataset_shapes, load_split, load_word_embeddings
from pipeline.learn.evaluate import encode_texts, encode_videos, evaluate_model, run_evaluate
from pipeline.datasets.planted import make_planted_shards
from pipeline.learn.train import run_train
from tests._toy_model import ToyModel, toy_factory


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@torch.inference_mode()
def score_matrix(model, data, cfg: EvalConfig) -> torch.Tensor:
    """The dense (n_videos, n_captions) fused score matrix, the reference the chunked engine must equal."""
    device = resolve_device(cfg.device)  # as evaluate_model resolves it
    was_training = model.training
    model.eval()
    try:
        ve = encode_videos(model, data, np.arange(data.n_videos), cfg, device)
        te = encode_texts(model, data, np.arange(data.n_captions), cfg, device)
        return model.similarity(ve, te).float().cpu()
    finally:
        model.train(was_training)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_planted_shards(tmp_path_factory.mktemp("planted"), n_videos=50, captions_per_video=4, n_verbs=5,
                               n_nouns=7, feat_dim=16, n_frames=6, seed=2, split_fractions=(0.4, 0.2, 0.4))


@pytest.fixture(scope="module")
def hcfg(shards):
    return HANetConfig(joint_dim=16, gcn_attn_dim=8, max_frames=6, n_action_clips=3, n_entity_clips=4,
                       se_reduction=4, **dataset_shapes(shards, "resnet152"))


@pytest.fixture(scope="module")
def test_data(shards, hcfg):
    return load_split(shards, "test", hcfg)


def pick(m):
    return {k: m[k] for k in METRIC_KEYS}


SMALL = EvalConfig(video_chunk=7, caption_chunk=9, encode_batch=4, score_block=5, n_heatmaps=0)
BIG = EvalConfig(video_chunk=1000, caption_chunk=100000, encode_batch=100000, score_block=100000, n_heatmaps=0)


def test_each_video_and_caption_encoded_once(test_data, hcfg):
    torch.manual_seed(0)
    model = ToyModel(hcfg)
    model.train()
    m = evaluate_model(model, test_data, SMALL)
    c = model.counts
    assert c["videos"] == test_data.n_videos and c["texts"] == test_data.n_captions
    assert c["similarity_pairs"] == test_data.n_videos * test_data.n_captions
    assert model.training                                   # mode restored
    assert m["n_videos"] == test_data.n_videos and m["n_captions"] == test_data.n_captions


@pytest.mark.parametrize("cfg", [SMALL, EvalConfig(video_chunk=1, caption_chunk=1, encode_batch=1, score_block=1),
                                 EvalConfig(video_chunk=13, caption_chunk=50, encode_batch=64, score_block=7)])
def test_chunked_equals_dense_toy(test_data, hcfg, cfg):
    torch.manual_seed(0)
    model = ToyModel(hcfg)
    dense = retrieval_metrics(score_matrix(model, test_data, BIG), test_data.cap2vid)
    assert pick(evaluate_model(model, test_data, cfg)) == dense
    assert pick(evaluate_model(model, test_data, BIG)) == dense


def test_real_hanet_chunked_equals_dense(test_data, hcfg, shards):
    from models.hanet import HANet

    torch.manual_seed(0)
    model = HANet(hcfg, load_word_embeddings(shards))
    calls = {"v": 0, "t": 0}
    enc_v, enc_t = model.encode_videos, model.encode_texts

    def count_v(vb):
        calls["v"] += len(vb)
        return enc_v(vb)

    def count_t(tb):
        calls["t"] += len(tb)
        return enc_t(tb)

    model.encode_videos, model.encode_texts = count_v, count_t
    chunked = evaluate_model(model, test_data, SMALL)
    assert calls == {"v": test_data.n_videos, "t": test_data.n_captions}
    dense_scores = score_matrix(model, test_data, BIG)
    # same ranks up to float summation order: compare the metrics, and the scores closely
    dense = retrieval_metrics(dense_scores, test_data.cap2vid)
    for k in METRIC_KEYS:
        assert chunked[k] == pytest.approx(dense[k], abs=1e-9), k
    unpruned = evaluate_model(model, test_data, SMALL.model_copy(update={"prune_video_outputs": False}))
    assert pick(unpruned) == pick(chunked)
    assert chunked["video_cache_mb"] < 0.9 * unpruned["video_cache_mb"]   # frame concept probs dropped
    # bf16-cached video states: checked on the scores, element-wise, against what bf16 storage can
    # move them (unit roundoff u = 2**-8 per stored element; cosines/Jaccards move <= ~2u, the
    # stacked attention's softmax (temperature 4) amplifies that: bound 8u; measured 1.7u), and the
    # metrics equal those of the dense matrix of bf16-stored states
    half = evaluate_model(model, test_data, SMALL.model_copy(update={"store_dtype": "bfloat16"}))
    model.eval()
    with torch.inference_mode():
        ve = encode_videos(model, test_data, np.arange(test_data.n_videos), BIG, torch.device("cpu"))
        te = encode_texts(model, test_data, np.arange(test_data.n_captions), BIG, torch.device("cpu"))
        stored = {k: v.to(torch.bfloat16).float() if torch.is_tensor(v) and v.is_floating_point() else v
                  for k, v in ve.items()}
        s32, s16 = model.similarity(ve, te).float(), model.similarity(stored, te).float()
    assert torch.allclose(s32, dense_scores, atol=1e-5)
    assert (s16 - s32).abs().max() <= 8 * 2.0 ** -8, (s16 - s32).abs().max()
    assert not torch.equal(s16, s32)  # the storage really was bf16
    half_dense = retrieval_metrics(s16, test_data.cap2vid)
    for k in METRIC_KEYS:
        assert half[k] == pytest.approx(half_dense[k], abs=1e-9), k


def test_run_evaluate_report_and_heatmaps(shards, hcfg, tmp_path):
    cfg = TrainConfig(hanet=hcfg.model_copy(update={"joint_dim": 16}), batch_size=8, epochs=1,
                      max_steps_per_epoch=2, log_every=0)
    s = run_train(shards, tmp_path / "run", cfg, model_factory=toy_factory, model_name="toy")
    rep = run_evaluate(tmp_path / "run" / "best.pt", shards, EvalConfig(n_heatmaps=2, video_chunk=5,
                                                                        caption_chunk=11), model_factory=toy_factory)
    path = tmp_path / "run" / "report.json"
    assert rep["report_path"] == str(path)
    on_disk = json.loads(path.read_text())
    assert set(on_disk["t2v"]) == {"R@1", "R@5", "R@10", "MedR", "MeanR"} and "rsum" in on_disk
    assert on_disk["data_fingerprint_matches"] and on_disk["checkpoint_epoch"] == s["best_epoch"]
    assert on_disk["metrics"]["n_videos"] == load_split(shards, "test", cfg.net).n_videos
    assert len(rep["heatmaps"]) == 2
    for p in rep["heatmaps"]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the demo's closing summary reads this very report (scripts/demo_summary.py)
    import runpy

    demo_summary = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "demo_summary.py"))
    text = demo_summary["summary"](Path(shards), path)
    assert f"{on_disk['metrics']['rsum']:7.2f}" in text and rep["heatmaps"][0] in text
    assert "videos.parquet" in text
    out = tmp_path / "elsewhere"
    rep2 = run_evaluate(tmp_path / "run" / "best.pt", shards, EvalConfig(n_heatmaps=0, split="val"), out,
                        model_factory=toy_factory)
    assert (out / "report.json").exists() and rep2["heatmaps"] == [] and rep2["split"] == "val"


def test_heatmaps_from_real_hanet(test_data, hcfg, shards, tmp_path):
    from models.hanet import HANet
    from pipeline.learn.heatmaps import draw_concept_heatmaps

    model = HANet(hcfg, load_word_embeddings(shards))
    paths = draw_concept_heatmaps(model, test_data, tmp_path, n=1, top_k=3)
    assert len(paths) == 1 and paths[0].stat().st_size > 1000
