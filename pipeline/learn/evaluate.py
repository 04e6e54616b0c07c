"""Retrieval evaluation: encode every video and caption ONCE, score in blocks, stream ranks.

Loop structure (``evaluate_model``):

1. every video of the split is encoded once, ``encode_batch`` at a time; the outputs
   are kept (optionally cast to ``EvalConfig.store_dtype``) in ``video_chunk`` groups;
2. OUTER loop over caption chunks (``caption_chunk`` captions, grouped by video): the
   chunk is encoded once (``encode_batch`` at a time, padded to one length);
3. INNER loop over the video groups: ``model.similarity`` on (video group x
   ``score_block`` captions) fills one (n_videos x caption_chunk) float32 column block;
4. the column block goes to :class:`models.metrics.RankAccumulator`, which finalises
   t2v ranks at once and holds only rows of videos whose captions are not all seen.

So the text encoder runs once per caption (the reference re-encodes every caption for
each 300-video block) and only one fused score (the model's ``similarity``) is ever
materialised, one column block at a time (the reference keeps seven full matrices).
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models import registry
from models.model_configs import DataConfig
from models.metrics import RankAccumulator, format_metrics
from models.similarity import cosine_matmul_dtype
from pipeline.progress import StepFn
from pipeline.progress import report as report_step
from pipeline.devices import resolve_device
from pipeline.runtime import bf16_is_fast
from pipeline.learn.dataset import SplitData, load_split
from pipeline.learn.precision import cast_floats
from pipeline.fingerprint import data_fingerprint
from pipeline.learn.config import EvalConfig, TrainConfig
from storage.atomic import atomic_write_text
from storage.checkpoints import load_checkpoint

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _cat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    if len(parts) == 1:
        return parts[0]
    out = {}
    for k, v in parts[0].items():
        out[k] = torch.cat([p[k] for p in parts], 0) if torch.is_tensor(v) and v.dim() > 0 else v
    return out


def _slice(d: dict[str, Any], a: int, b: int) -> dict[str, Any]:
    return {k: v[a:b] if torch.is_tensor(v) and v.dim() > 0 else v for k, v in d.items()}


@torch.inference_mode()
def encode_videos(model, data: SplitData, idx: np.ndarray, cfg: EvalConfig, device: torch.device,
                  store: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    parts = []
    for a in range(0, idx.size, cfg.encode_batch):
        vb = data.video_batch(idx[a:a + cfg.encode_batch]).to(device)
        parts.append(cast_floats(model.encode_videos(vb), store))
    return _cat(parts)


@torch.inference_mode()
def encode_texts(model, data: SplitData, idx: np.ndarray, cfg: EvalConfig, device: torch.device):
    pad_to = int(data.lengths[idx].max())  # one length per chunk, so parts concatenate
    bf16 = cfg.text_bf16 and bf16_is_fast(device)
    parts = []
    for a in range(0, idx.size, cfg.encode_batch):
        tb = data.text_batch(idx[a:a + cfg.encode_batch], pad_to=pad_to).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model.encode_texts(tb)
        parts.append(cast_floats(out, torch.float32) if bf16 else out)  # scoring stays fp32
    return _cat(parts)


class KeyRecorder(dict):
    """A dict that remembers which keys were read, to keep only what ``similarity`` needs
    (evaluation's video cache, the search index's stored encoder outputs)."""

    def __init__(self, d):
        super().__init__(d)
        self.used: set[str] = set()
        self.iterated = False

    def __getitem__(self, k):
        self.used.add(k)
        return super().__getitem__(k)

    def get(self, k, default=None):
        self.used.add(k)
        return super().get(k, default)

    def __contains__(self, k):
        self.used.add(k)
        return super().__contains__(k)

    def __iter__(self):
        self.iterated = True
        return super().__iter__()

    def keys(self):
        self.iterated = True
        return super().keys()

    def items(self):
        self.iterated = True
        return super().items()

    def values(self):
        self.iterated = True
        return super().values()


def _prune(d: dict[str, Any], keep: set[str] | None) -> dict[str, Any]:
    return d if keep is None else {k: v for k, v in d.items() if k in keep}


def evaluate_model(model, data: SplitData, cfg: EvalConfig, device: torch.device | None = None,
                   progress: Callable[[str], None] | None = None, step: StepFn | None = None) -> dict[str, Any]:
    """Metrics of ``model`` on ``data`` (see module docstring); restores the train/eval mode. ``step``: per block.

    Video groups are encoded during the first caption chunk; once the first ``similarity`` call has shown
    which video outputs it reads, the others (e.g. heatmap-only ones) are dropped (``cfg.prune_video_outputs``).
    """
    device = device or resolve_device(cfg.device)
    store = None if cfg.store_dtype == "float32" else _DTYPES[cfg.store_dtype]
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    V, C = data.n_videos, data.n_captions
    groups = [(a, min(V, a + cfg.video_chunk)) for a in range(0, V, cfg.video_chunk)]
    cache: list[dict[str, Any] | None] = [None] * len(groups)
    keep: set[str] | None = None
    probed = not cfg.prune_video_outputs
    acc = RankAccumulator(data.cap2vid, V)
    order = np.argsort(data.cap2vid, kind="stable")  # grouped by video: small held state
    n_chunks = math.ceil(C / cfg.caption_chunk)
    t_video = t_text = t_score = t_rank = 0.0
    try:
        with torch.inference_mode(), cosine_matmul_dtype(low := _score_dtype(cfg, device)):
            for k, c0 in enumerate(range(0, C, cfg.caption_chunk)):
                idx = order[c0:c0 + cfg.caption_chunk]
                t1 = time.perf_counter()
                te = encode_texts(model, data, idx, cfg, device)
                t_text += time.perf_counter() - t1
                block = torch.empty((V, idx.size), dtype=torch.float32)
                for gi, (a, b) in enumerate(groups):
                    if cache[gi] is None:  # first caption chunk: encode this video group once
                        t1 = time.perf_counter()
                        cache[gi] = _prune(encode_videos(model, data, np.arange(a, b), cfg, device, store), keep)
                        t_video += time.perf_counter() - t1
                    t1 = time.perf_counter()
                    ve = cast_floats(cache[gi], torch.float32) if store is not None else cache[gi]
                    for s0 in range(0, idx.size, cfg.score_block):
                        s1 = min(idx.size, s0 + cfg.score_block)
                        if not probed:
                            rec = KeyRecorder(ve)
                            block[a:b, s0:s1] = model.similarity(rec, _slice(te, s0, s1)).float().cpu()
                            probed = True
                            keep = None if rec.iterated or not rec.used else set(rec.used)
                            cache[gi] = _prune(cache[gi], keep)
                        else:
                            block[a:b, s0:s1] = model.similarity(ve, _slice(te, s0, s1)).float().cpu()
                    t_score += time.perf_counter() - t1
                t1 = time.perf_counter()
                acc.add(idx, block.numpy())
                t_rank += time.perf_counter() - t1
                del te, block
                if progress is not None:
                    progress(f"captions {min(C, c0 + idx.size)}/{C} (chunk {k + 1}/{n_chunks})")
                report_step(step, k + 1, n_chunks)
            metrics: dict[str, Any] = acc.metrics()
    finally:
        model.train(was_training)
    metrics.update(_run_stats(V, C, time.perf_counter() - t0, (t_video, t_text, t_score, t_rank), acc, cache),
                   score_matmul_bf16=float(low is not None))  # what cfg.score_bf16 gave here
    return metrics


def _score_dtype(cfg: EvalConfig, device: torch.device) -> torch.dtype | None:
    """bf16 for the stacked-attention cosine matmul iff asked for and native on ``device`` (else None = fp32)."""
    return torch.bfloat16 if cfg.score_bf16 and bf16_is_fast(device) else None


def _run_stats(V: int, C: int, seconds: float, times: tuple[float, float, float, float], acc: RankAccumulator,
               cache: list) -> dict[str, Any]:
    """Sizes, timings and memory of one evaluation (added to its metrics)."""
    t_video, t_text, t_score, t_rank = times
    held = sum(v.numel() * v.element_size() for d in cache if d for v in d.values() if torch.is_tensor(v))
    return dict(n_videos=V, n_captions=C, seconds=seconds, video_encode_seconds=t_video,
                text_encode_seconds=t_text, score_seconds=t_score, rank_seconds=t_rank,
                pairs_per_s=V * C / max(seconds, 1e-9), held_score_mb_peak=acc.peak_held_bytes / 2 ** 20,
                video_cache_mb=held / 2 ** 20)


# ----------------------------------------------------------------------------- checkpoints -> models
def model_from_checkpoint(ck: dict[str, Any], model_factory: Callable | None = None):
    """Rebuild the model a checkpoint was trained as (``models.registry``, by its recorded
    ``model_name``) and load its weights. A custom ``model_factory`` gets ``tcfg.net``."""
    tcfg = TrainConfig.model_validate_json(ck["config_json"])
    if model_factory is not None:
        model = model_factory(tcfg.net, None)
    else:
        name = ck.get("model_name") or tcfg.model
        if name != tcfg.model:
            raise ValueError(f"checkpoint records model '{name}' but a config of model '{tcfg.model}'")
        model = registry.create_model(name, tcfg.net)
    missing, unexpected = model.load_state_dict(ck["model"], strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model, tcfg


def checkpoint_data_config(ck: dict[str, Any], tcfg: TrainConfig | None = None) -> DataConfig:
    """The data-loader config of the model checkpoint ``ck`` holds (``tcfg``: its TrainConfig, when read already)."""
    return (tcfg or TrainConfig.model_validate_json(ck["config_json"])).net.data_config()


class VocabularyMismatch(ValueError):
    """A checkpoint's word / concept vocabulary is not the one of the shards it is evaluated on."""


VOCAB_LABELS = {"words": "word vocabulary (text/words.parquet)",
                "verb": "verb concept vocabulary (text/concepts.parquet)",
                "noun": "noun concept vocabulary (text/concepts.parquet)"}


def check_vocabularies(ck: dict[str, Any], shards_root: Path, checkpoint: Path | str = "checkpoint") -> dict[str, Any]:
    """Refuse (VocabularyMismatch) a checkpoint whose recorded vocabulary fingerprints differ from
    the shards' (embedding rows / concept ids would silently mean other words / concepts).

    ``ck['vocab']`` = {'words'|'verb'|'noun': sha256 of the vocabulary in id order, or None}
    (training records the shards' it ran on; pipeline.learn.checkpoint_import records the build it
    remapped a reference checkpoint onto, None when not remapped). An imported checkpoint
    without a record, or with a None entry, is refused too. A trained checkpoint from before
    this record existed is only checked through its data fingerprint (a warning).
    """
    from pipeline.learn.import_vocab import shard_fingerprints

    rec = ck.get("vocab")
    imported = ck.get("imported_from") is not None
    if rec is None and not imported:
        return {"checked": False, "reason": "checkpoint records no vocabulary fingerprints"}
    rec = rec or {}
    now = shard_fingerprints(shards_root)
    problems = []
    for kind, label in VOCAB_LABELS.items():
        want = rec.get(kind)
        if want is None and imported:
            problems.append(f"{label}: the checkpoint was not remapped onto any build's vocabulary")
        elif want != now[kind]:
            problems.append(f"{label}: checkpoint {str(want)[:12]}... != shards {str(now[kind])[:12]}...")
    if problems:
        hint = (f"re-import it for these shards: vtr import-checkpoint --model {ck.get('model_name')} SRC.th DST.pt "
                f"--shards {shards_root} --vocab int2word.npy --verb-concepts VERBS --noun-concepts NOUNS"
                if imported else "evaluate it on the shards it was trained on")
        raise VocabularyMismatch(f"{checkpoint}: refusing to evaluate on {shards_root}: " + "; ".join(problems)
                                 + f". Its embedding rows / concept ids would mean other words; {hint}")
    return {"checked": True, **{k: now[k] for k in VOCAB_LABELS}}


def run_evaluate(checkpoint: Path, shards_root: Path, cfg: EvalConfig, out_dir: Path | None = None,
                 *, model_factory: Callable | None = None, expect_model: str | None = None,
                 step: StepFn | None = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on split ``cfg.split`` of ``shards_root``.

    Writes ``report.json`` (metrics, counts, timings, checkpoint provenance) and, when
    the model exposes frame concept probabilities, ``heatmaps/*.png`` into ``out_dir``
    (default: the checkpoint's folder). Returns the report dict (+ ``report_path``).
    ``expect_model``: refuse a checkpoint of another registered model.
    """
    checkpoint, shards_root = Path(checkpoint), Path(shards_root)
    out_dir = Path(out_dir) if out_dir is not None else checkpoint.parent
    device = resolve_device(cfg.device)
    ck = load_checkpoint(checkpoint)
    if expect_model and ck.get("model_name") != expect_model:
        raise ValueError(f"{checkpoint} holds model '{ck.get('model_name')}', not '{expect_model}'")
    vocab_check = check_vocabularies(ck, shards_root, checkpoint)
    model, tcfg = model_from_checkpoint(ck, model_factory)
    model.to(device).eval()
    extractor = cfg.features or tcfg.features
    data = load_split(shards_root, cfg.split, checkpoint_data_config(ck, tcfg), extractor)
    fp_now = data_fingerprint(shards_root, extractor)
    if fp_now != ck.get("data_fingerprint"):
        log.warning("shards at %s differ from the ones %s was trained on (fingerprint %s != %s)",
                    shards_root, checkpoint.name, fp_now, ck.get("data_fingerprint"))
    log.info("evaluating %s on %s/%s: %d videos x %d captions", checkpoint, shards_root.name, cfg.split,
             data.n_videos, data.n_captions)
    metrics = evaluate_model(model, data, cfg, device, progress=log.info, step=step)
    log.info("%s: %s", cfg.split, format_metrics(metrics))
    heatmaps: list[str] = []
    if cfg.n_heatmaps > 0:
        from pipeline.learn.heatmaps import draw_concept_heatmaps

        heatmaps = [str(p) for p in draw_concept_heatmaps(model, data, out_dir / "heatmaps", cfg.n_heatmaps,
                                                          device=device, top_k=cfg.heatmap_top_k)]
    report = {
        **{d: {"R@1": metrics[f"{d}_r1"], "R@5": metrics[f"{d}_r5"], "R@10": metrics[f"{d}_r10"],
               "MedR": metrics[f"{d}_medr"], "MeanR": metrics[f"{d}_meanr"]} for d in ("t2v", "v2t")},
        "rsum": metrics["rsum"],
        "metrics": {k: metrics[k] for k in metrics},
        "split": cfg.split, "features": extractor, "shards_root": str(shards_root),
        "checkpoint": str(checkpoint), "checkpoint_epoch": ck.get("epoch"), "model_name": ck.get("model_name"),
        "train_best_val_rsum": ck.get("best_rsum"), "code_version": ck.get("code_version"),
        "data_fingerprint": fp_now, "data_fingerprint_matches": fp_now == ck.get("data_fingerprint"),
        "data_notes": data.notes, "eval_config": cfg.model_dump(mode="json"),
        "heatmaps": heatmaps, "device": str(device),
        "conventions": "ties pessimistic; captions not de-duplicated; MedR = median of 1-based ranks "
                       "(the reference's np.median(0-based)+1, not floored)",
        "fidelity": ({"fidelity": tcfg.net.fidelity, **tcfg.net.deviations()}
                     if (ck.get("model_name") or tcfg.model) == "hanet" else None),
        "vocab_check": vocab_check, "imported_from": ck.get("imported_from"),
    }
    path = out_dir / "report.json"
    atomic_write_text(path, json.dumps(report, indent=2, default=float))
    report["report_path"] = str(path)
    return report
