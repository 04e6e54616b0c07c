"""Feature extraction stage: shard planning, per-shard extraction, final merge.

Layout under a dataset's shard root::

    features/<extractor>/shards/<shard>.h5              one dataset per ok video
    features/<extractor>/shards/<shard>.status.parquet  one row per video (schema feature_status)
    features/<extractor>/<split>.h5                     merged, reference layout
    features/<extractor>/status.parquet                 merged status

Per shard, videos are decoded by daemon prefetch threads (``DecodeConfig.
prefetch`` videos ahead) while the main thread runs the backbone on batches
that span video boundaries (``batch_size`` frames or clips). With both
extractors (:func:`extract_shards_multi`) each video is decoded ONCE for both.
Every shard HDF5 dataset carries the decode indices its rows came from
(``frame_indices``; for I3D (n_clips, clip_len) with padding visible as
repeats) and ``n_padded``.

Status rows: ``ok``, or ``error`` with the reason (ingest error, decode error,
time-out). Feature counts: one row per sampled frame (ResNet) or clip (I3D).
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from pipeline.config import DecodeConfig, I3DConfig, ResNetConfig
from pipeline.stage import StageResult
from pipeline.video.backbones import EXTRACTORS, Backbone, forward_batch_size, get_backbone
from pipeline.video.decode import DecodeError, DecodeTimeoutError, VideoMeta
from pipeline.video.sampling import decode_products
from pipeline.video.shards import ShardSpec, shard_outputs
from storage.features import write_features
from storage.tables import write_table

HARD_TIMEOUT_FACTOR = 2.0  # a decode not back after this many times its limit is abandoned
ModelConfig = ResNetConfig | I3DConfig


# ------------------------------------------------------------------ prefetch

def _start(fn: Callable[[Any], Any], item: Any) -> Future:
    """Run ``fn(item)`` in a daemon thread (a stuck decoder cannot block process exit)."""
    fut: Future = Future()

    def work() -> None:
        fut.set_running_or_notify_cancel()
        try:
            fut.set_result(fn(item))
        except BaseException as exc:  # delivered to the consumer, which makes it a row
            fut.set_exception(exc)

    threading.Thread(target=work, daemon=True, name="decode-prefetch").start()
    return fut


def _outcome(fut: Future, deadline: float, timeout_s: float) -> tuple[Any, BaseException | None]:
    try:
        return fut.result(timeout=max(0.0, deadline - time.monotonic())), None
    except FutureTimeout:
        return None, DecodeTimeoutError(f"decoder did not return within {deadline_s(timeout_s):g} s; "
                                        "its thread was abandoned")
    except Exception as exc:
        return None, exc


def deadline_s(timeout_s: float) -> float:
    return HARD_TIMEOUT_FACTOR * timeout_s


def prefetch_map(fn: Callable[[Any], Any], items: Iterable[Any], depth: int,
                 timeout_s: float) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Yield (item, result, error) in order, running ``fn`` up to ``depth`` items ahead."""
    todo, running = deque(items), deque()

    def fill() -> None:
        while todo and len(running) <= depth:
            item = todo.popleft()
            running.append((item, time.monotonic() + deadline_s(timeout_s), _start(fn, item)))

    fill()
    while running:
        item, deadline, fut = running.popleft()
        result, error = _outcome(fut, deadline, timeout_s)
        fill()
        yield item, result, error


# ------------------------------------------------------------------ batching

@dataclass
class _Batcher:
    """Feeds frames/clips of consecutive videos to a backbone in full batches."""

    backbone: Backbone
    batch_size: int
    queue: deque = field(default_factory=deque)  # [key, units, offset]
    n_queued: int = 0
    parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    model_s: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, units: np.ndarray) -> None:
        self.queue.append([key, units, 0])
        self.parts[key], self.model_s[key] = [], 0.0
        self.n_queued += len(units)
        while self.n_queued >= self.batch_size:
            self._run(self.batch_size)

    def flush(self) -> None:
        while self.n_queued:
            self._run(min(self.n_queued, self.batch_size))

    def _take(self, n: int) -> tuple[np.ndarray, list[tuple[str, int]]]:
        chunks, owners = [], []
        while n:
            entry = self.queue[0]
            key, units, offset = entry
            got = units[offset:offset + n]
            chunks.append(got)
            owners.append((key, len(got)))
            entry[2] += len(got)
            n -= len(got)
            if entry[2] == len(units):
                self.queue.popleft()
        return np.concatenate(chunks), owners

    def _run(self, n: int) -> None:
        batch, owners = self._take(n)
        self.n_queued -= n
        t0 = time.perf_counter()
        out = self.backbone.embed(batch)
        dt = time.perf_counter() - t0
        start = 0
        for key, count in owners:
            self.parts[key].append(out[start:start + count])
            self.model_s[key] += dt * count / n
            start += count

    def features(self, key: str) -> np.ndarray:
        return np.concatenate(self.parts[key]).astype(np.float32, copy=False)


# ------------------------------------------------------------------ extraction

@dataclass
class _Video:
    key: str
    path: str
    split: str | None
    ingest_error: str | None


@dataclass
class _Record:
    video: _Video
    meta: VideoMeta | None = None
    error: str | None = None
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)  # per extractor


class _IngestError(Exception):
    pass


def _videos(spec: ShardSpec) -> list[_Video]:
    return [_Video(k, p, s, None if st == "ok" else (e or f"ingest status {st!r}"))
            for k, p, s, st, e in zip(spec.keys, spec.paths, spec.splits, spec.statuses, spec.errors)]


def _decode_job(video: _Video, decode_cfg: DecodeConfig, frames: bool, i3d_cfg: I3DConfig | None):
    if video.ingest_error:
        raise _IngestError(video.ingest_error)
    return decode_products(video.path, decode_cfg, frames, i3d_cfg)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, _IngestError):
        return f"ingest: {exc}"
    kind = type(exc).__name__ if isinstance(exc, DecodeError) else f"unexpected {type(exc).__name__}"
    return f"{kind}: {exc}"


def _units(extractor: str, products) -> tuple[np.ndarray, dict[str, Any]]:
    frames, clips = products
    if extractor == "resnet152":
        return frames.frames, {"frame_indices": np.asarray(frames.indices, np.int64), "n_padded": 0}
    return clips.clips, {"frame_indices": clips.indices, "n_padded": clips.n_padded}


def _feed(video: _Video, products, error: BaseException | None, batchers: dict[str, _Batcher]) -> _Record:
    if error is not None:
        return _Record(video, error=_error_text(error))
    record = _Record(video, meta=(products[0] or products[1]).meta)
    for name, batcher in batchers.items():
        units, attrs = _units(name, products)
        batcher.add(video.key, units)
        record.attrs[name] = {**attrs, "n_decoded": record.meta.n_decoded, "rotation": record.meta.rotation}
    return record


def sampling_description(extractor: str, decode_cfg: DecodeConfig, cfg: ModelConfig) -> str:
    if extractor == "resnet152":
        return (f"one frame every {decode_cfg.frame_stride} decoded frames (decode order, from frame 0), capped at "
                f"{decode_cfg.max_frames} by round(linspace); >=1 frame per video; short side "
                f"{decode_cfg.short_side} -> centre crop {decode_cfg.crop}; ImageNet mean/std")
    return (f"up to {cfg.max_clips} stacks of {cfg.clip_len} frames {cfg.clip_step} apart (as many non-overlapping "
            f"stacks as fit, >=1, spread by round(linspace)); short videos repeat their last frame; short side "
            f"{cfg.short_side} -> centre crop {cfg.crop}; Kinetics mean 0.45 std 0.225")


def _file_attrs(extractor: str, spec: ShardSpec, backbone: Backbone, cfg: ModelConfig,
                decode_cfg: DecodeConfig) -> dict[str, Any]:
    prov = backbone.provenance
    return {"extractor": extractor, "weights": str(prov["weights"]), "weights_sha256": prov["weights_sha256"],
            "provenance": prov, "feature_dim": backbone.dim, "shard": spec.id,
            "config": {"decode": decode_cfg.model_dump(mode="json"), "model": cfg.model_dump(mode="json")},
            "sampling": sampling_description(extractor, decode_cfg, cfg)}


def _status_row(rec: _Record, shard: str, batcher: _Batcher) -> dict[str, Any]:
    v, m = rec.video, rec.meta
    ok = rec.error is None
    return {"key": v.key, "split": v.split, "shard": shard, "status": "ok" if ok else "error",
            "error_message": rec.error, "n_decoded": m.n_decoded if m else None,
            "n_expected": m.n_expected if m else None,
            "n_features": len(batcher.features(v.key)) if ok else None, "fps": m.fps if m else None,
            "duration_s": m.duration_s if m else None,
            "seconds": round(m.seconds + batcher.model_s.get(v.key, 0.0), 4) if m else None,
            "warning": "; ".join(m.warnings) if m and m.warnings else None}


def _write_shard(root: Path, spec: ShardSpec, extractor: str, batcher: _Batcher, records: list[_Record],
                 attrs: dict[str, Any], timings: dict[str, float]) -> StageResult:
    h5, status = shard_outputs(extractor, spec.id)
    ok = [r for r in records if r.error is None]
    feats = {r.video.key: batcher.features(r.video.key) for r in ok}
    write_features(root / h5, feats, attrs, {r.video.key: r.attrs[extractor] for r in ok})
    write_table(root / status, "feature_status", [_status_row(r, spec.id, batcher) for r in records])
    counts = {"ok": len(ok), "error": len(records) - len(ok), "frames": sum(len(f) for f in feats.values()),
              "decoded_frames": sum(r.meta.n_decoded for r in ok),
              "padded": sum(r.attrs[extractor]["n_padded"] > 0 for r in ok)}
    return StageResult(outputs=[h5, status], counts=counts,
                       timings_s={**timings, "model": round(sum(batcher.model_s.values()), 3)})


def _check_request(models: dict[str, ModelConfig], spec: ShardSpec, dataset_root: str | Path | None) -> None:
    for name, cfg in models.items():
        expected = ResNetConfig if name == "resnet152" else I3DConfig
        if name not in EXTRACTORS or not isinstance(cfg, expected):
            raise ValueError(f"extractor {name!r} with {type(cfg).__name__}: expected one of {EXTRACTORS} "
                             "with ResNetConfig / I3DConfig")
    if dataset_root is not None:  # the path strings; links inside the root were vetted at ingest (issue 13)
        base = Path(os.path.abspath(dataset_root))
        outside = [p for p, st in zip(spec.paths, spec.statuses)
                   if st == "ok" and not Path(os.path.abspath(p)).is_relative_to(base)]
        if outside:
            raise ValueError(f"shard {spec.id}: {len(outside)} paths lie outside dataset_root {base}, "
                             f"e.g. {outside[0]}")


def extract_shards_multi(root: str | Path, spec: ShardSpec, models: dict[str, ModelConfig],
                         decode_cfg: DecodeConfig, dataset_root: str | Path | None = None,
                         device: str | dict[str, str | None] | None = None) -> dict[str, StageResult]:
    """Run several extractors on one shard with ONE decode pass per video.

    ``models`` maps 'resnet152' -> ResNetConfig and/or 'i3d_r50' -> I3DConfig.
    ``device``: run on this device instead of the configs' (the flow spreads shards over GPUs;
    the recorded config keeps the configured device, the provenance the one used); a dict gives
    one per extractor (None: as configured).
    Returns one StageResult per extractor (outputs relative to ``root``).
    """
    root, t0 = Path(root), time.perf_counter()
    _check_request(models, spec, dataset_root)
    devs = device if isinstance(device, dict) else dict.fromkeys(models, device)
    backbones = {name: get_backbone(name, cfg.model_copy(update={"device": devs.get(name)}) if devs.get(name) else cfg)
                 for name, cfg in models.items()}
    t_load = time.perf_counter() - t0
    batchers = {name: _Batcher(backbones[name], forward_batch_size(cfg, backbones[name].device))
                for name, cfg in models.items()}
    job = partial(_decode_job, decode_cfg=decode_cfg, frames="resnet152" in models, i3d_cfg=models.get("i3d_r50"))
    records = [_feed(v, res, err, batchers)
               for v, res, err in prefetch_map(job, _videos(spec), decode_cfg.prefetch, decode_cfg.timeout_s)]
    for b in batchers.values():
        b.flush()
    timings = {"load": round(t_load, 3), "decode_sum": round(sum(r.meta.seconds for r in records if r.meta), 3),
               "extract": round(time.perf_counter() - t0, 3)}
    return {name: _write_shard(root, spec, name, batchers[name], records,
                               _file_attrs(name, spec, backbones[name], cfg, decode_cfg), timings)
            for name, cfg in models.items()}


def extract_shard(root: str | Path, spec: ShardSpec, extractor: str, decode_cfg: DecodeConfig,
                  model_cfg: ModelConfig, dataset_root: str | Path | None = None,
                  device: str | None = None) -> StageResult:
    """Extract ``extractor`` ('resnet152' | 'i3d_r50') features of one shard.

    Writes ``features/<extractor>/shards/<shard>.h5`` and ``.status.parquet``;
    counts: ok, error, frames (feature rows), decoded_frames, padded.
    ``dataset_root``, when given, must contain every path of the shard.
    """
    return extract_shards_multi(root, spec, {extractor: model_cfg}, decode_cfg, dataset_root, device)[extractor]
