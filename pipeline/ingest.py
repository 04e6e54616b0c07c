"""Ingest: annotation file -> ``videos.parquet`` + ``captions.parquet``.

Formats (``IngestConfig.format``):

* ``msrvtt``: the official JSON, ``videos`` = [{video_id, split, ...}] and
  ``sentences`` = [{caption, video_id, sen_id}]. Split 'validate' -> 'val'.
  Video path = ``<video_id><video_ext>`` under ``dataset_root``.
* ``vatex``: a per-split JSON list of {videoID, enCap: [...]}; every row gets
  ``IngestConfig.vatex_split``; sen_id = position in ``enCap``. Files without
  ``enCap`` (the public test set) give videos without captions.
* ``manifest``: CSV (``.csv``) or JSON Lines (any other suffix), one video per
  row with fields ``path`` (relative to ``dataset_root``; absolute paths must
  lie inside it), ``captions``, ``split`` and optional ``key`` (default: the
  path without its extension). In CSV the ``captions`` cell is a JSON array of
  strings (``["a man runs", "someone is running"]``) - unambiguous whatever
  the captions contain; in JSONL it is a JSON list. sen_id = list position.

Rules shared by all formats:

* keys are unique (a repeated key keeps its first row; its captions still
  attach to it) and must stay unique once '/' becomes '_' (HDF5 names);
* a row without a split, or a path escaping ``dataset_root`` ('..', absolute elsewhere, or a symlink
  resolving outside) makes an ``error`` row, as do missing, unreadable and
  stream-less files when ``probe`` is on;
* caption_id = the caption's position in the annotation file (stable across
  runs, never renumbered); captions are stored raw, unaltered.
"""
from __future__ import annotations

import csv
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from pipeline._stage import StageResult
from pipeline.config import BuildConfig, IngestConfig
from pipeline.decode import DecodeError, expected_frames, open_video, pick_video_stream, stream_duration_s, stream_fps
from storage.features import dataset_name
from storage.tables import write_table

SPLIT_ALIASES = {"validate": "val", "validation": "val", "valid": "val"}


def normalize_split(split: Any) -> str | None:
    if split is None or str(split).strip() == "":
        return None
    s = str(split).strip().lower()
    return SPLIT_ALIASES.get(s, s)


def safe_relative_path(root: str | os.PathLike, raw: str) -> str:
    """``raw`` as a normalised POSIX path relative to ``root``; ValueError if it escapes."""
    if not str(raw).strip():
        raise ValueError("empty path")
    root_abs = Path(os.path.abspath(root))
    p = Path(raw)
    lexical = Path(os.path.normpath(p if p.is_absolute() else root_abs / p))
    if lexical == root_abs or not lexical.is_relative_to(root_abs):
        raise ValueError(f"path {raw!r} lies outside dataset_root {root_abs}")
    real = lexical.resolve()
    if not real.is_relative_to(root_abs.resolve()):
        raise ValueError(f"path {raw!r} resolves (through a symlink) to {real}, outside dataset_root {root_abs}")
    return lexical.relative_to(root_abs).as_posix()


# ------------------------------------------------------------------ parsers

def _video(key: str, path: str, split: Any, error: str | None = None) -> dict[str, Any]:
    return {"key": key, "path": path, "split": normalize_split(split), "error": error}


def _caption(caption_id: int, key: str, sen_id: Any, caption: Any) -> dict[str, Any]:
    return {"caption_id": caption_id, "key": key, "sen_id": int(sen_id), "caption": caption}


def _read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read annotation {path}: {exc}") from exc


def load_msrvtt(cfg: IngestConfig) -> tuple[list[dict], list[dict]]:
    data = _read_json(cfg.annotation)
    videos = [_video(v["video_id"], f"{v['video_id']}{cfg.video_ext}", v.get("split")) for v in data["videos"]]
    captions = [_caption(i, s["video_id"], s.get("sen_id", i), s["caption"])
                for i, s in enumerate(data.get("sentences", []))]
    return videos, captions


def load_vatex(cfg: IngestConfig) -> tuple[list[dict], list[dict]]:
    data = _read_json(cfg.annotation)
    videos, captions = [], []
    for item in data:
        key = item["videoID"]
        videos.append(_video(key, f"{key}{cfg.video_ext}", cfg.vatex_split))
        for sen_id, text in enumerate(item.get("enCap") or []):
            captions.append(_caption(len(captions), key, sen_id, text))
    return videos, captions


def _manifest_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON Lines: {exc}") from exc


def _manifest_captions(value: Any) -> list[str]:
    """A JSON list of strings (CSV cell text or JSONL value); ValueError otherwise."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"captions must be a JSON array of strings: {exc}") from exc
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise ValueError("captions must be a JSON array of strings")
    return value


def _manifest_key(record: dict[str, Any]) -> str:
    key = str(record.get("key") or "").strip()
    return key or str(Path(str(record.get("path") or "")).with_suffix("").as_posix())


def _manifest_row(record: dict[str, Any], captions: list[dict]) -> dict[str, Any]:
    key = _manifest_key(record)
    try:
        texts = _manifest_captions(record.get("captions"))
    except ValueError as exc:
        return _video(key, str(record.get("path") or ""), record.get("split"), str(exc))
    for sen_id, text in enumerate(texts):
        captions.append(_caption(len(captions), key, sen_id, text))
    return _video(key, str(record.get("path") or ""), record.get("split"))


def load_manifest(cfg: IngestConfig) -> tuple[list[dict], list[dict]]:
    path = Path(cfg.annotation)
    if not path.is_file():
        raise ValueError(f"manifest not found: {path}")
    captions: list[dict] = []
    videos = [_manifest_row(r, captions) for r in _manifest_records(path)]
    return videos, captions


LOADERS: dict[str, Callable[[IngestConfig], tuple[list[dict], list[dict]]]] = {
    "msrvtt": load_msrvtt, "vatex": load_vatex, "manifest": load_manifest,
}


def load_annotations(cfg: IngestConfig) -> tuple[list[dict], list[dict]]:
    """Parse ``cfg.annotation`` -> (videos, captions), before any file-system check.

    videos: {key, path (as written), split, error}; captions: {caption_id,
    key, sen_id, caption}. Malformed files raise ValueError.
    """
    try:
        return LOADERS[cfg.format](cfg)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{cfg.annotation}: not a valid {cfg.format} annotation ({exc!r})") from exc


# ------------------------------------------------------------------ checks

def dedupe_videos(videos: list[dict]) -> tuple[list[dict], list[str]]:
    """Drop repeated keys (first wins); flag keys whose HDF5 names collide."""
    seen: dict[str, str] = {}
    names: dict[str, str] = {}
    out, notes = [], []
    for v in videos:
        if v["key"] in seen:
            notes.append(f"duplicate key {v['key']!r} ignored (first row kept)")
            continue
        seen[v["key"]] = v["key"]
        name = dataset_name(v["key"])
        if name in names and v["error"] is None:
            v = {**v, "error": f"key {v['key']!r} collides with {names[name]!r} once '/' becomes '_'"}
        names.setdefault(name, v["key"])
        out.append(v)
    return out, notes


def probe_video(path: Path) -> dict[str, Any]:
    """Header facts of ``path``'s video stream; raises DecodeError when there are none."""
    with open_video(path) as container:
        stream = pick_video_stream(container)
        n_frames, _ = expected_frames(stream, container)
        return {"n_frames": n_frames, "fps": stream_fps(stream), "duration_s": stream_duration_s(stream, container),
                "width": stream.codec_context.width or None, "height": stream.codec_context.height or None}


def _empty_row(v: dict) -> dict[str, Any]:
    return {"key": v["key"], "path": v["path"], "split": v["split"], "size_bytes": None, "n_frames": None,
            "fps": None, "duration_s": None, "width": None, "height": None, "status": "ok", "error_message": None}


def _error(row: dict[str, Any], message: str) -> dict[str, Any]:
    return {**row, "status": "error", "error_message": message}


def video_row(v: dict, root: Path, probe: bool) -> dict[str, Any]:
    """One ``videos`` table row: path checked against ``root``, header probed."""
    row = _empty_row(v)
    if v["error"] or not v["split"]:
        return _error(row, v["error"] or "missing split")
    try:
        row["path"] = safe_relative_path(root, v["path"])
    except ValueError as exc:
        return _error(row, str(exc))
    file = root / row["path"]
    if not file.is_file():
        return _error(row, f"file not found: {file}")
    row["size_bytes"] = file.stat().st_size
    try:
        return {**row, **probe_video(file)} if probe else row
    except DecodeError as exc:
        return _error(row, f"{type(exc).__name__}: {exc}")


def caption_rows(captions: list[dict], splits: dict[str, str | None]) -> tuple[list[dict], int]:
    """Captions of known videos, with their video's split; returns (rows, n_orphans)."""
    rows = [{**c, "split": splits[c["key"]]} for c in captions if c["key"] in splits]
    return rows, len(captions) - len(rows)


# ------------------------------------------------------------------ stage

def _probe_all(videos: list[dict], cfg: IngestConfig) -> list[dict]:
    root = Path(cfg.dataset_root)
    with ThreadPoolExecutor(max_workers=cfg.probe_workers) as pool:
        return list(pool.map(lambda v: video_row(v, root, cfg.probe), videos))


def _counts(rows: list[dict], n_captions: int) -> dict[str, int]:
    n_err = sum(r["status"] == "error" for r in rows)
    return {"videos": len(rows), "ok": len(rows) - n_err, "error": n_err, "captions": n_captions}


def run_ingest(cfg: BuildConfig) -> StageResult:
    """Write ``<out_root>/<dataset>/videos.parquet`` and ``captions.parquet``."""
    t0 = time.perf_counter()
    out = Path(cfg.out_root) / cfg.dataset
    videos, captions = load_annotations(cfg.ingest)
    videos, notes = dedupe_videos(videos)
    rows = _probe_all(videos, cfg.ingest)
    caps, n_orphans = caption_rows(captions, {r["key"]: r["split"] for r in rows})
    if n_orphans:
        notes.append(f"{n_orphans} captions name videos absent from the annotation and were dropped")
    meta = {"dataset_root": str(Path(cfg.ingest.dataset_root).resolve()), "format": cfg.ingest.format,
            "annotation": str(Path(cfg.ingest.annotation).resolve())}
    write_table(out / "videos.parquet", "videos", rows, extra_metadata=meta)
    write_table(out / "captions.parquet", "captions", caps, extra_metadata=meta)
    return StageResult(outputs=["videos.parquet", "captions.parquet"], counts=_counts(rows, len(caps)),
                       timings_s={"ingest": round(time.perf_counter() - t0, 3)}, notes=notes)
