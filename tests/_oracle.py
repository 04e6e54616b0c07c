"""An independent check of a report's retrieval metrics.

The product's evaluation streams ranks through ``models.metrics.RankAccumulator`` over
chunked score blocks. This oracle re-scores the whole split in ONE dense matrix (every
video against every caption, no chunking) and ranks with a plain Python loop written from
the metric definitions (pessimistic ties, 1-based ranks, MedR = median of the ranks), so
a report that disagrees with it has a bug in chunking, ranking or the metric formulas.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch

from pipeline.learn.config import EvalConfig
from pipeline.learn.dataset import load_split
from pipeline.learn.evaluate import checkpoint_data_config, encode_texts, encode_videos, model_from_checkpoint
from storage.checkpoints import load_checkpoint


def dense_scores(checkpoint: Path, shards_root: Path, split: str = "test", features: str | None = None):
    """(scores[v, c], cap2vid) of ``checkpoint`` on ``split``, scored as one matrix."""
    ck = load_checkpoint(Path(checkpoint))
    model, tcfg = model_from_checkpoint(ck)
    model.eval()
    data = load_split(shards_root, split, checkpoint_data_config(ck, tcfg), features or tcfg.features)
    cfg, cpu = EvalConfig(), torch.device("cpu")
    with torch.inference_mode():
        ve = encode_videos(model, data, np.arange(data.n_videos), cfg, cpu)
        te = encode_texts(model, data, np.arange(data.n_captions), cfg, cpu)
        scores = model.similarity(ve, te).float().numpy()
    return scores, data.cap2vid


def _rank(values: list[float], true_value: float, n_true: int) -> int:
    """1 + the number of wrong items scoring >= the true one (ties pessimistic)."""
    return 1 + sum(1 for x in values if x >= true_value) - n_true


def oracle_metrics(scores: np.ndarray, cap2vid: np.ndarray) -> dict[str, dict[str, float]]:
    """R@1/5/10, MedR, MeanR per direction and rsum, from the definitions."""
    n_videos, n_captions = scores.shape
    t2v = []
    for c in range(n_captions):
        col = [float(scores[v, c]) for v in range(n_videos)]
        t2v.append(_rank(col, col[cap2vid[c]], 1))
    v2t = []
    for v in range(n_videos):
        own = [c for c in range(n_captions) if cap2vid[c] == v]
        best = max(float(scores[v, c]) for c in own)
        others = [float(scores[v, c]) for c in range(n_captions) if cap2vid[c] != v]
        v2t.append(1 + sum(1 for x in others if x >= best))
    out = {}
    for name, ranks in (("t2v", t2v), ("v2t", v2t)):
        out[name] = {f"R@{k}": 100.0 * sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
        out[name]["MedR"] = float(statistics.median(ranks))
        out[name]["MeanR"] = float(sum(ranks)) / len(ranks)
    out["rsum"] = sum(out[d][f"R@{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10))
    return out


def assert_report_matches_oracle(report: dict, checkpoint: Path, shards_root: Path, features: str | None = None,
                                 tol: float = 1e-6) -> dict:
    """The report's metrics equal the oracle's on the same checkpoint and shards."""
    scores, cap2vid = dense_scores(checkpoint, shards_root, report["split"], features or report["features"])
    want = oracle_metrics(scores, cap2vid)
    for d in ("t2v", "v2t"):
        for k, v in want[d].items():
            assert abs(report[d][k] - v) <= tol, (d, k, report[d][k], v)
    assert abs(report["rsum"] - want["rsum"]) <= tol, (report["rsum"], want["rsum"])
    return want
