"""Shared by the HGR / HCMI-style learning tests: the planted world of tests/test_learning.py,
train a registered model through run_train, evaluate the best checkpoint through run_evaluate,
and the same engine on the untrained model (the "before" of the metric-moved assertions)."""
from __future__ import annotations

from pathlib import Path

import torch

from models import registry
from pipeline.learn.config import EvalConfig, TrainConfig
from pipeline.learn.dataset import load_split, load_word_embeddings
from pipeline.learn.evaluate import evaluate_model, run_evaluate
from pipeline.datasets.planted import make_planted_shards
from pipeline.learn.train import resolve_config, run_train

N_VIDEOS, CAPS, SPLITS = 500, 4, (0.6, 0.1, 0.3)   # 150 test videos: chance t2v R@1 = 0.67 %
BATCH = 64


def planted(root: Path) -> Path:
    return make_planted_shards(root, n_videos=N_VIDEOS, captions_per_video=CAPS, n_verbs=8, n_nouns=12,
                               feat_dim=64, n_frames=12, seed=0, split_fractions=SPLITS)


def train_cfg(model: str, mcfg: dict, epochs: int, lr: float, seed: int = 0) -> TrainConfig:
    return TrainConfig(model=model, net=mcfg, batch_size=BATCH,
                       epochs=epochs, lr=lr, seed=seed, log_every=0, patience=epochs)


def train_and_test(shards: Path, run_dir: Path, cfg: TrainConfig) -> dict:
    summary = run_train(shards, run_dir, cfg)
    report = run_evaluate(Path(summary["best_checkpoint"]), shards, EvalConfig(n_heatmaps=0))
    return {"summary": summary, "test": report["metrics"], "report": report}


def untrained_test_metrics(shards: Path, cfg: TrainConfig) -> dict:
    """The same model, initialised as run_train does (seed), scored by the same engine."""
    cfg = resolve_config(shards, cfg)
    mcfg = cfg.net
    test = load_split(shards, "test", mcfg)
    torch.manual_seed(cfg.seed)
    model = registry.create_model(cfg.model, mcfg, load_word_embeddings(shards))
    return evaluate_model(model, test, EvalConfig(n_heatmaps=0))
