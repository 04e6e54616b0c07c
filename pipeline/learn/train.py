"""Training: Adam, validation rsum every epoch, early stopping, atomic resumable checkpoints.

``run_train(shards_root, run_dir, cfg)`` writes into ``run_dir``:

* ``config.json``  - the resolved TrainConfig (shapes filled from the shards), model
  name, data fingerprint, code version; written before the first epoch;
* ``last.pt``      - after every epoch: weights, optimizer, early-stopping and RNG
  state, history (resume point);
* ``best.pt``      - whenever val rsum improved: weights + metrics (no optimizer);
* ``history.json`` - one record per epoch (losses, val metrics, seconds).

Precision: ``cfg.precision`` 'fp32' (default) or 'bf16' = bf16 autocast around the forward pass
where the device has native bf16, the loss maths and all weights/gradients/optimiser state in fp32
(pipeline/learn/precision.py); the precision really used ('fp32', 'bf16 autocast' or the
fallback 'fp32 (bf16 requested; no native bf16 on cpu)') is recorded in config.json, every
history record, both checkpoints and the summary, next to the device.

Determinism: the sampler's shuffle is seeded by (seed, epoch) and the torch/numpy/python
RNGs are re-seeded from (seed, epoch) at the start of every epoch, so a run resumed
from ``last.pt`` after a kill gives the same weights as an uninterrupted one (bit-exact
on CPU). Resuming refuses a changed config (except epochs/patience/logging/device/
workers) or changed shards (data fingerprint).
"""
from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models import registry
from models.metrics import format_metrics
from pipeline.fingerprint import code_version, data_fingerprint
from pipeline.learn.config import EvalConfig, TrainConfig
from pipeline.learn.dataset import dataset_shapes, load_split, load_word_embeddings
from pipeline.learn.batches import TrainBatches
from pipeline.devices import resolve_device
from pipeline.learn.evaluate import evaluate_model
from pipeline.learn import precision
from pipeline.learn.precision import resolve_precision
from storage.atomic import atomic_write_text
from storage.checkpoints import load_checkpoint, rng_state, save_checkpoint, set_rng_state

log = logging.getLogger(__name__)

ModelFactory = Callable[[Any, "torch.Tensor | None"], torch.nn.Module]  # (model config, word embeddings)

# config fields that may change between a run and its resumption
RESUMABLE_CHANGES = {"epochs", "patience", "num_workers", "device", "log_every", "preload_features"}


def training_code_version(model: torch.nn.Module) -> str:
    import models.metrics
    import pipeline.learn.dataset
    import pipeline.learn.evaluate
    import pipeline.learn.precision

    mods = [sys.modules[__name__], pipeline.learn.dataset, pipeline.learn.evaluate, pipeline.learn.precision,
            models.metrics]
    mod = sys.modules.get(type(model).__module__)
    if mod is not None:
        mods.append(mod)
    try:
        return code_version(*mods)
    except (OSError, TypeError):
        return "unknown"


# ----------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 7919]).generate_state(1)[0])


class EarlyStopper:
    """Tracks the best validation value; ``should_stop`` after ``patience`` epochs without a gain
    (a gain = value > best + min_delta; NaN never gains). patience 0 = never stop early."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best = -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, epoch: int, value: float) -> bool:
        if value == value and value > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = float(value), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = float(d["best"]), int(d["best_epoch"]), int(d["bad_epochs"])


def resolve_config(shards_root: Path, cfg: TrainConfig, model_name: str | None = None) -> TrainConfig:
    """Fill the shape fields (feat_dim, vocab, word_dim, K_a, K_e) of the trained model's config
    (``cfg.net``, also what a custom factory gets) from the shards."""
    shapes = dataset_shapes(shards_root, cfg.features, "train")
    cfg = cfg.for_model(model_name or cfg.model)
    if cfg.net.vocab_size not in (0, shapes["vocab_size"]):
        raise ValueError(f"config vocab_size {cfg.net.vocab_size} != shards' {shapes['vocab_size']}")
    return cfg.with_net(registry.fill_shapes(cfg.net, shapes))


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    d = cfg.model_dump(mode="json")  # the trained model's config only (other models' never mattered)
    for k in RESUMABLE_CHANGES:
        d.pop(k, None)
    return d


def _to(batch, device):
    return batch if device.type == "cpu" else batch.to(device)


# ----------------------------------------------------------------------------- the loop
@dataclass
class _Run:
    """Everything one training run holds while its epochs go by."""

    name: str
    cfg: TrainConfig
    device: torch.device
    run_dir: Path
    shards_root: Path
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    stopper: EarlyStopper
    train_data: Any
    val_data: Any
    fingerprint: str
    code_ver: str
    vocab_record: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    resumed_from: int | None = None
    bf16: bool = False  # bf16 autocast in effect (cfg.precision resolved on this device)
    precision: str = "fp32"  # what the run really computes in, as recorded

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"


def _setup(shards_root: Path, run_dir: Path, cfg: TrainConfig, model_factory: ModelFactory | None,
           model_name: str | None) -> _Run:
    """Resolve the model and its config from the shards, seed, read the splits, build model and optimiser."""
    run_dir.mkdir(parents=True, exist_ok=True)
    name = model_name or (cfg.model if model_factory is None else getattr(model_factory, "__name__", "custom"))
    if model_factory is None:
        registry.get_spec(name)  # unknown names fail before any data is read
        cfg = cfg.for_model(name)
    device = resolve_device(cfg.device)
    # a custom factory (tests) is handed cfg.net, a registered model its own config (cfg.net too)
    cfg = resolve_config(shards_root, cfg)
    mcfg = cfg.net
    dcfg = mcfg.data_config()
    seed_everything(cfg.seed)
    train_data = load_split(shards_root, "train", dcfg, cfg.features, cfg.preload_features)
    val_data = load_split(shards_root, cfg.val_split, dcfg, cfg.features, cfg.preload_features)
    emb = load_word_embeddings(shards_root)
    model = (model_factory(mcfg, emb) if model_factory is not None
             else registry.create_model(name, mcfg, emb)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    fingerprint = data_fingerprint(shards_root, cfg.features)
    from pipeline.learn.import_vocab import shard_fingerprints  # vocabularies checked by pipeline.learn.evaluate
    bf16, precision = resolve_precision(cfg.precision, device)
    return _Run(name, cfg, device, run_dir, shards_root, model, opt, EarlyStopper(cfg.patience, cfg.min_improvement),
                train_data, val_data, fingerprint, training_code_version(model), shard_fingerprints(shards_root),
                bf16=bf16, precision=precision)


def _resume(run: _Run) -> None:
    """Continue from ``last.pt``: same config (but RESUMABLE_CHANGES), same shards, same model."""
    ck = load_checkpoint(run.last_path)
    old = TrainConfig.model_validate_json(ck["config_json"])
    if _comparable(old) != _comparable(run.cfg):
        raise ValueError(f"{run.last_path}: config differs from the run being resumed; "
                         "use resume=False or a new run_dir")
    if ck.get("data_fingerprint") != run.fingerprint:
        raise ValueError(f"{run.last_path}: shards changed since this run started "
                         f"({ck.get('data_fingerprint')} -> {run.fingerprint}); use resume=False or a new run_dir "
                         "(the train flow without run_name keys run directories by config + shards)")
    if ck.get("model_name") != run.name:
        raise ValueError(f"{run.last_path}: trained model '{ck.get('model_name')}', asked for '{run.name}'")
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    run.stopper.load_state_dict(ck["stopper"])
    run.stopper.patience = run.cfg.patience
    run.history = json.loads(ck["history_json"])
    set_rng_state(ck["rng"])
    run.start_epoch = run.resumed_from = int(ck["epoch"]) + 1
    log.info("resuming %s from epoch %d (best rsum %.2f at epoch %d)", run.run_dir, run.start_epoch,
             run.stopper.best, run.stopper.best_epoch)


def _write_config(run: _Run) -> None:
    """config.json of the run (what it trains, on what, with which code) and the opening log line."""
    n_params = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    atomic_write_text(run.run_dir / "config.json", json.dumps({
        "model_name": run.name, "train_config": run.cfg.model_dump(mode="json"), "data_fingerprint": run.fingerprint,
        "code_version": run.code_ver, "shards_root": str(run.shards_root), "trainable_parameters": n_params,
        "train": run.train_data.notes, "val": run.val_data.notes, "device": str(run.device), "precision": run.precision,
    }, indent=2))
    log.info("training %s (%d parameters) on %s: %d train captions / %d videos, val %d videos; device %s, %s",
             run.name, n_params, run.shards_root, run.train_data.n_captions, run.train_data.n_videos,
             run.val_data.n_videos, run.device, run.precision)


def _payload(run: _Run, epoch: int, val: dict[str, Any], with_optimizer: bool) -> dict[str, Any]:
    p = {
        "model_name": run.name, "config_json": run.cfg.model_dump_json(), "epoch": epoch,
        "best_rsum": run.stopper.best, "best_epoch": run.stopper.best_epoch,
        "val_metrics": {k: float(v) for k, v in val.items()},
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "stopper": run.stopper.state_dict(), "rng": rng_state(), "history_json": json.dumps(run.history),
        "data_fingerprint": run.fingerprint, "code_version": run.code_ver, "vocab": run.vocab_record,
        "device": str(run.device), "precision": run.precision,
    }
    if with_optimizer:
        p["optimizer"] = run.opt.state_dict()
    return p


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, vb, tb, lb, *, bf16: bool = False,
               device_type: str = "cpu", grad_clip: float = 0.0, where: str = "") -> dict[str, Any]:
    """One optimiser step on a batch: zero_grad, ``model.loss`` (its forward pass under bf16
    autocast when ``bf16``, see pipeline/learn/precision.py; the loss maths in fp32), backward,
    optional gradient clipping, ``opt.step()``. Returns the loss parts (graph attached).
    The step of run_train, and of bench/bench_train.py."""
    opt.zero_grad(set_to_none=True)
    parts = precision.loss(model, vb, tb, lb, device_type, bf16)
    loss = parts["total"]
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()}{' at ' + where if where else ''}")
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return parts


def _train_epoch(run: _Run, epoch: int) -> tuple[int, dict[str, float], float]:
    """One epoch of optimiser steps: (steps, summed scalar loss parts, seconds)."""
    cfg, model, opt = run.cfg, run.model, run.opt
    seed_everything(epoch_seed(cfg.seed, epoch))
    model.train()
    batches = TrainBatches(run.train_data, cfg.batch_size, cfg.seed, epoch, cfg.unique_videos_per_batch,
                           cfg.max_steps_per_epoch, cfg.num_workers)
    t0 = time.perf_counter()
    sums: dict[str, float] = {}
    n_steps = 0
    for step, (vb, tb, lb) in enumerate(batches):
        vb, tb, lb = _to(vb, run.device), _to(tb, run.device), _to(lb, run.device)
        parts = train_step(model, opt, vb, tb, lb, bf16=run.bf16, device_type=run.device.type,
                           grad_clip=cfg.grad_clip, where=f"epoch {epoch} step {step}")
        for k, v in parts.items():
            if torch.is_tensor(v) and v.numel() == 1:
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        n_steps += 1
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            log.info("epoch %d step %d/%d loss %.4f (%.2f s/step)", epoch, step + 1, len(batches),
                     sums["total"] / n_steps, (time.perf_counter() - t0) / n_steps)
    return n_steps, sums, time.perf_counter() - t0


def _end_epoch(run: _Run, epoch: int, n_steps: int, sums: dict[str, float], train_s: float,
               eval_cfg: EvalConfig) -> dict[str, Any]:
    """Validate, record the epoch in the history, write best.pt (when improved), last.pt and history.json."""
    val = evaluate_model(run.model, run.val_data, eval_cfg, run.device)
    stopper = run.stopper
    improved = stopper.update(epoch, val["rsum"])
    record = {"epoch": epoch, "steps": n_steps, "train_seconds": train_s, "precision": run.precision,
              "loss": {k: v / max(n_steps, 1) for k, v in sums.items()},
              "val": {k: float(v) for k, v in val.items()}, "improved": improved,
              "best_rsum": stopper.best, "best_epoch": stopper.best_epoch}
    run.history.append(record)
    log.info("epoch %d: loss %.4f, val %s%s", epoch, record["loss"].get("total", float("nan")),
             format_metrics(val), " (best)" if improved else f" (no gain for {stopper.bad_epochs})")
    if improved:
        save_checkpoint(run.best_path, _payload(run, epoch, val, with_optimizer=False))
    save_checkpoint(run.last_path, _payload(run, epoch, val, with_optimizer=True))
    atomic_write_text(run.run_dir / "history.json", json.dumps(run.history, indent=1))
    return record


def _summary(run: _Run) -> dict[str, Any]:
    best_rec = next((r for r in run.history if r["epoch"] == run.stopper.best_epoch), None)
    return {
        "run_dir": str(run.run_dir), "model_name": run.name,
        "best_checkpoint": str(run.best_path) if run.best_path.exists() else None,
        "last_checkpoint": str(run.last_path) if run.last_path.exists() else None,
        "config_path": str(run.run_dir / "config.json"), "history_path": str(run.run_dir / "history.json"),
        "best_epoch": run.stopper.best_epoch, "best_rsum": run.stopper.best,
        "best_metrics": best_rec["val"] if best_rec else None,
        "epochs_run": len(run.history), "stopped_early": run.stopper.should_stop,
        "resumed_from_epoch": run.resumed_from, "device": str(run.device), "precision": run.precision,
    }


def run_train(shards_root: Path, run_dir: Path, cfg: TrainConfig, resume: bool = True, *,
              model_factory: ModelFactory | None = None, model_name: str | None = None,
              on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train on ``shards_root``'s train split, validate on ``cfg.val_split``; see module docstring.

    The model is ``models.registry.create_model(cfg.model, cfg.net)``;
    ``model_factory``/``model_name`` override the registry (e.g. toy models in tests; the factory
    gets ``cfg.net``). Checkpoints record the model name.
    Returns a summary: best_epoch, best_rsum, best_metrics, epochs_run, stopped_early,
    resumed_from_epoch, device, precision (as really used), paths (best/last checkpoint, config, history).
    """
    run = _setup(Path(shards_root), Path(run_dir), cfg, model_factory, model_name)
    if resume and run.last_path.exists():
        _resume(run)
    elif run.last_path.exists():
        log.warning("%s: resume=False, starting over (existing checkpoints will be replaced)", run.run_dir)
    _write_config(run)
    eval_cfg = EvalConfig(split=run.cfg.val_split, device=str(run.device), n_heatmaps=0)
    for epoch in range(run.start_epoch, run.cfg.epochs):
        if run.stopper.should_stop:
            break
        n_steps, sums, train_s = _train_epoch(run, epoch)
        record = _end_epoch(run, epoch, n_steps, sums, train_s, eval_cfg)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if run.stopper.should_stop:
            log.info("early stop after epoch %d: no val rsum gain for %d epochs", epoch, run.stopper.bad_epochs)
    return _summary(run)
