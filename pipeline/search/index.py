"""The search index of a built dataset and a trained checkpoint.

:func:`build_index`: every video with features (all splits by default) is encoded ONCE by the model's
``encode_videos``; the outputs its ``similarity_parts`` reads (found by probing one call, as evaluation does)
are stored, plus two shortlist matrices (the unit global embedding, and the level-pooled rows of
:func:`pipeline.search.encode.pooled_video_levels`), the video concept probabilities, the top concepts' frame
confidences (for heatmaps) and a thumbnail strip decoded from the source video (PyAV). Files and their format:
:mod:`storage.index`. The index records the checkpoint's sha256, the shards' data fingerprint and a vocabulary
fingerprint (words + concepts). Queries against it: pipeline/search/query.py."""
from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from models.batch import VideoBatch
from models.model_configs import DataConfig
from pipeline.learn.config import TrainConfig
from pipeline.progress import StepFn
from pipeline.progress import report as report_step
from pipeline.fingerprint import data_fingerprint, sha256_file, vocabulary_fingerprint
from pipeline.learn.dataset import feature_path, read_vocab
from pipeline.learn.features import FeatureSource
from pipeline.learn.evaluate import KeyRecorder
from pipeline.search.rerank import prepared_video_arrays
from pipeline.search.encode import (HEAT_TOP_K, SearchError, _ALWAYS_KEEP, _dummy_text, data_config, load_model,
                                    pooled_video_levels, read_vocabularies)
from storage import index as store
from storage.features import dataset_name, read_frame_counts
from storage.manifest import read_manifest
from storage.tables import read_table

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- thumbnails
def video_thumbnails(path: Path, n: int, height: int = 72, timeout_s: float = 10.0,
                     max_frames: int = 3000) -> list[bytes]:
    """``n`` JPEGs spread evenly over the video (PyAV decode, scaled to ``height`` px)."""
    from pipeline.video.decode import expected_frames, open_video, pick_video_stream

    container = open_video(path, timeout_s)
    try:
        stream = pick_video_stream(container)
        total, _ = expected_frames(stream, container)
        small = []
        want = None
        if total:
            want = set(np.round(np.linspace(0, max(total - 1, 0), n)).astype(int).tolist())
        t0 = time.monotonic()
        for i, frame in enumerate(container.decode(stream)):
            if i >= max_frames or time.monotonic() - t0 > timeout_s:
                break
            if want is None or i in want:
                w = max(1, int(round(frame.width * height / max(frame.height, 1))))
                small.append(frame.to_image(width=w, height=height))
            if want is not None and i >= max(want):
                break
    finally:
        container.close()
    if not small:
        return []
    pick = np.round(np.linspace(0, len(small) - 1, min(n, len(small)))).astype(int)
    out = []
    for j in pick:
        buf = io.BytesIO()
        small[int(j)].convert("RGB").save(buf, format="JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def _index_videos(root: Path, extractor: str, splits: Sequence[str] | None) -> list[dict[str, Any]]:
    """Videos with >= 1 feature frame: {key, split, path}, ordered by (key)."""
    t = read_table(root / "videos.parquet", "videos", columns=["key", "path", "split"]).to_pylist()
    by_split: dict[str, dict[str, int]] = {}
    out = []
    for r in t:
        sp = r["split"]
        if splits is not None and sp not in splits:
            continue
        if sp not in by_split:
            fp = feature_path(root, extractor, sp)
            by_split[sp] = read_frame_counts(fp) if fp.exists() else {}
        if by_split[sp].get(dataset_name(r["key"]), 0) > 0:
            out.append(r)
    out.sort(key=lambda r: r["key"])
    return out


def _first_captions(root: Path) -> dict[str, str]:
    t = read_table(root / "captions.parquet", "captions", columns=["caption_id", "key", "caption"]).to_pylist()
    out: dict[str, tuple[int, str]] = {}
    for r in t:
        if r["key"] not in out or r["caption_id"] < out[r["key"]][0]:
            out[r["key"]] = (r["caption_id"], r["caption"] or "")
    return {k: v[1] for k, v in out.items()}


def _dataset_root(root: Path) -> Path | None:
    m = read_manifest(root, "ingest")
    d = (m.inputs or {}).get("dataset_root") if m else None
    return Path(d) if d else None


def _source_path(dataset_root: Path | None, rel: str) -> Path | None:
    if dataset_root is None or not rel or "://" in rel:
        return None
    base = dataset_root.resolve()
    p = (base / rel).resolve()
    if base != p and base not in p.parents:
        return None
    return p if p.is_file() else None


def _checked_model(checkpoint: Path, root: Path, device: str):
    """(model, train config, checkpoint dict, vocabulary, n words): the checkpoint must fit the shards' words."""
    model, tcfg, ck = load_model(checkpoint, device)
    vocab = read_vocab(root)
    n_words = max(vocab.values()) + 1 if vocab else 0
    if getattr(model, "vocab_size", n_words) != n_words:
        raise SearchError(f"{checkpoint.name} was trained with a {model.vocab_size}-word vocabulary, the shards at "
                          f"{root} have {n_words} words: index the dataset the checkpoint was trained on")
    return model, tcfg, ck, vocab, n_words


def _video_batch(sources: dict[str, FeatureSource], part: list[dict], root: Path, extractor: str,
                 max_frames: int) -> VideoBatch:
    fm = []
    for r in part:
        src = sources.get(r["split"])
        if src is None:
            src = sources[r["split"]] = FeatureSource(feature_path(root, extractor, r["split"]), max_frames)
        fm.append(src.get(r["key"]))
    feats, masks = zip(*fm)
    return VideoBatch(feats=torch.from_numpy(np.stack(feats)), mask=torch.from_numpy(np.stack(masks)))


def _kept_outputs(model, ve: dict, vocab: dict[str, int], hcfg: DataConfig, device: str) -> set[str]:
    """Which video outputs the scoring reads (probed with one dummy caption), plus the always kept ones."""
    rec = KeyRecorder(ve)
    model.similarity_parts(rec, model.encode_texts(_dummy_text(vocab, hcfg).to(device)))
    used = set(ve) if rec.iterated or not rec.used else rec.used & set(ve)
    return {k for k in used | set(_ALWAYS_KEEP) if k in ve and torch.is_tensor(ve[k])}


def _collect(out: dict[str, np.ndarray], at: int, n: int, ve: dict, keep: set[str], dtype,
             fusion: str | None = None) -> list[str] | None:
    """Write one batch's stored arrays into rows ``at``.. of ``out`` (each allocated once, ``n`` rows, on first
    sight: the index is built in place, never as a list of chunks plus their concatenation, which doubled the
    peak memory); returns the pooled shortlist levels (or None). ``fusion`` (HANet's attn_fusion): also the
    re-rank's per-video arrays (pipeline/search/rerank.py), from the components as stored (``dtype``)."""
    part: dict[str, np.ndarray] = {}
    for k in sorted(keep):
        v = ve[k].detach().cpu()
        part[f"enc/{k}"] = v.numpy() if v.dtype == torch.bool or not v.is_floating_point() else v.float().numpy()
    if fusion is not None:
        enc = {k: part[f"enc/{k}"] for k in keep}
        stored = {k: torch.from_numpy(a.astype(dtype).astype(np.float32) if a.dtype.kind == "f" else a)
                  for k, a in enc.items()}
        part.update({f"prep/{k}": t.numpy() for k, t in prepared_video_arrays(stored, sorted(keep), fusion).items()})
    if "glo" in ve:
        part["shortlist"] = torch.nn.functional.normalize(ve["glo"].float(), dim=-1).cpu().numpy()
    lv = pooled_video_levels(ve, sorted(keep))
    if lv is not None:
        part["shortlist_levels"] = lv[1].cpu().numpy()
    for kind in ("verb", "noun"):
        fk, pk = f"frame_{kind}_probs", f"{kind}_probs"
        if fk in ve and pk in ve:
            top = ve[pk].float().topk(min(HEAT_TOP_K, ve[pk].shape[-1]), dim=-1).indices  # (B, k)
            frames = ve[fk].float().gather(2, top.unsqueeze(1).expand(-1, ve[fk].shape[1], -1))
            part[f"heat/{kind}_ids"] = top.cpu().numpy().astype(np.int32)
            part[f"heat/{kind}_frames"] = frames.cpu().numpy().astype(np.float16)
    for name, arr in part.items():
        if name not in out:
            kind = dtype if name.startswith("enc/") and arr.dtype.kind == "f" else arr.dtype
            out[name] = np.empty((n, *arr.shape[1:]), dtype=kind)
        out[name][at:at + arr.shape[0]] = arr
    return lv[0] if lv is not None else None


def _encode_all(model, videos: list[dict], root: Path, extractor: str, hcfg: DataConfig, vocab: dict[str, int],
                device: str, batch: int, dtype, progress: Callable[[str], None] | None,
                step: StepFn | None = None):
    """(arrays to store, frames per video, pooled shortlist levels) of every video, ``batch`` at a time."""
    sources: dict[str, FeatureSource] = {}
    keep: set[str] | None = None
    fusion = model.cfg.attn_fusion if type(model).__name__ == "HANet" else None
    levels_used: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    n_frames = np.zeros(len(videos), dtype=np.int32)
    for a in range(0, len(videos), batch):
        part = videos[a:a + batch]
        vb = _video_batch(sources, part, root, extractor, hcfg.max_frames)
        n_frames[a:a + len(part)] = vb.mask.sum(1).numpy()
        ve = model.encode_videos(vb.to(device))
        if keep is None:  # which outputs does the scoring read?
            keep = _kept_outputs(model, ve, vocab, hcfg, device)
        levels_used = _collect(arrays, a, len(videos), ve, keep, dtype, fusion) or levels_used
        if progress:
            progress(f"encoded {min(a + batch, len(videos))}/{len(videos)} videos")
        report_step(step, min(a + batch, len(videos)), len(videos))
    for s in sources.values():
        s.close()
    return arrays, n_frames, levels_used


def _video_rows(writer, videos: list[dict], n_frames: np.ndarray, captions: dict[str, str], droot: Path | None,
                n_thumbs: int, thumb_height: int) -> tuple[list[dict], int, int]:
    """(index rows, videos with thumbnails, thumbnail errors); thumbnails written through ``writer``."""
    rows, n_with_thumbs, thumb_errors = [], 0, 0
    for i, r in enumerate(videos):
        thumbs: list[str] = []
        src = _source_path(droot, r["path"]) if n_thumbs > 0 else None
        if src is not None:
            try:
                jpgs = video_thumbnails(src, n_thumbs, thumb_height)
            except Exception as exc:  # noqa: BLE001 - a bad source video gets no thumbnails
                log.warning("thumbnails of %s: %s", r["key"], exc)
                jpgs, thumb_errors = [], thumb_errors + 1
            stem = store.safe_name(r["key"])
            thumbs = [writer.write_thumb(f"{stem}_{j}.jpg", b) for j, b in enumerate(jpgs)]
            n_with_thumbs += bool(thumbs)
        rows.append({"row": i, "key": r["key"], "split": r["split"], "n_frames": int(n_frames[i]),
                     "source": r["path"] or "", "caption": captions.get(r["key"], ""), "thumbs": thumbs})
    return rows, n_with_thumbs, thumb_errors


def _index_meta(checkpoint: Path, ck: dict, tcfg: TrainConfig, root: Path, n_words: int, droot: Path | None,
                videos: list[dict], arrays: dict[str, np.ndarray], levels_used: list[str], store_dtype: str,
                ) -> dict[str, Any]:
    parse_m, concepts_m = read_manifest(root, "parse"), read_manifest(root, "concepts")
    extractor = tcfg.features
    return {
        "checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint),
        "checkpoint_epoch": ck.get("epoch"), "model_name": ck.get("model_name", tcfg.model),
        "train_config_json": ck["config_json"], "shards_root": str(root), "extractor": extractor,
        "shards_fingerprint": data_fingerprint(root, extractor),
        "vocabulary_fingerprint": vocabulary_fingerprint(*read_vocabularies(root)),
        "vocab_size": n_words, "checkpoint_data_fingerprint": ck.get("data_fingerprint"),
        "text_config": parse_m.config if parse_m else {}, "concept_config": concepts_m.config if concepts_m else {},
        "dataset_root": str(droot) if droot else None, "splits": sorted({r["split"] for r in videos}),
        "arrays": {k: [list(a.shape), str(a.dtype)] for k, a in arrays.items()},
        "shortlist_levels": levels_used, "store_dtype": store_dtype,
    }


@torch.inference_mode()
def build_index(checkpoint: str | Path, shards_root: str | Path, index_dir: str | Path | None = None, *,
                splits: Sequence[str] | None = None, dataset_root: str | Path | None = None,
                n_thumbs: int = 4, thumb_height: int = 72, batch: int = 128, device: str = "cpu",
                store_dtype: str = "float32", progress: Callable[[str], None] | None = None,
                step: StepFn | None = None) -> dict[str, Any]:
    """Encode every video of ``shards_root`` once with ``checkpoint`` into ``index_dir``
    (default: ``<checkpoint folder>/index``). Returns the index metadata (+ ``index_dir``)."""
    t0 = time.perf_counter()
    checkpoint, root = Path(checkpoint).resolve(), Path(shards_root).resolve()
    index_dir = Path(index_dir) if index_dir is not None else checkpoint.parent / "index"
    model, tcfg, ck, vocab, n_words = _checked_model(checkpoint, root, device)
    hcfg, extractor = data_config(tcfg), tcfg.features
    videos = _index_videos(root, extractor, splits)
    if not videos:
        raise SearchError(f"{root}: no video with '{extractor}' features to index")
    droot = Path(dataset_root) if dataset_root is not None else _dataset_root(root)
    captions = _first_captions(root)
    dtype = {"float32": np.float32, "float16": np.float16}[store_dtype]
    arrays, n_frames, levels_used = _encode_all(model, videos, root, extractor, hcfg, vocab, device, batch, dtype,
                                                progress, step)
    t_encode = time.perf_counter() - t0
    writer = store.IndexWriter(index_dir)
    try:
        rows, n_with_thumbs, thumb_errors = _video_rows(writer, videos, n_frames, captions, droot, n_thumbs,
                                                        thumb_height)
        meta = {**_index_meta(checkpoint, ck, tcfg, root, n_words, droot, videos, arrays, levels_used, store_dtype),
                "n_with_thumbnails": n_with_thumbs, "thumbnail_errors": thumb_errors,
                "encode_seconds": round(t_encode, 3), "seconds": round(time.perf_counter() - t0, 3)}
        writer.write(arrays, rows, meta)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    log.info("indexed %d videos (%d with thumbnails) into %s", len(videos), n_with_thumbs, index_dir)
    return {**meta, "n_videos": len(videos), "index_dir": str(index_dir), "build_dir": str(writer.dir)}


def index_summary(meta: dict[str, Any]) -> str:
    """One line on a built index (what :func:`build_index` returned)."""
    return (f"indexed {meta['n_videos']} videos ({meta['n_with_thumbnails']} with thumbnails) of "
            f"{meta['shards_root']} with {meta['checkpoint']} into {meta['index_dir']} in {meta['seconds']:.1f} s")


def index_report(meta: dict[str, Any]) -> str:
    """Markdown on a built index: the summary line and the fingerprints it is valid for."""
    return (f"### Search index\n{index_summary(meta)}\n\nvocabulary `{meta['vocabulary_fingerprint']}`, "
            f"shards `{meta['shards_fingerprint']}`, checkpoint sha256 `{meta['checkpoint_sha256'][:16]}`")
