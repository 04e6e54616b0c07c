"""Annotation parsers of the ingest stage: MSR-VTT JSON, VATEX JSON, a generic manifest (JSON lines / CSV),
several annotation files with split roles (``train=A,val+test=B``), split lists, and the seeded val/test
division. Each returns (videos, captions) as plain rows; pipeline/datasets/ingest.py checks and writes them."""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.config import IngestConfig


SPLIT_ALIASES = {"validate": "val", "validation": "val", "valid": "val"}
VAL_TEST = "val+test"  # role/split: divided into val and test by a seeded permutation
_ROLE_ENTRY = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_+-]*)\s*=\s*(\S.*?)\s*$")
_VATEX_ID = re.compile(r"^(.+)_(\d+)_(\d+)$")


def normalize_split(split: Any) -> str | None:
    if split is None or str(split).strip() == "":
        return None
    s = str(split).strip().lower()
    return SPLIT_ALIASES.get(s, s)


def _video(key: str, path: str, split: Any, error: str | None = None,
           alt_paths: tuple[str, ...] = ()) -> dict[str, Any]:
    """``alt_paths``: other file names tried, in order, when ``path`` does not exist."""
    return {"key": key, "path": path, "split": normalize_split(split), "error": error, "alt_paths": list(alt_paths)}


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


def vatex_file_names(video_id: str, ext: str) -> tuple[str, tuple[str, ...]]:
    """(``<videoID><ext>``, alternatives): ``<youtube_id><ext>`` for ``<youtube_id>_<start>_<end>`` ids."""
    m = _VATEX_ID.match(video_id)
    return f"{video_id}{ext}", ((f"{m.group(1)}{ext}",) if m else ())


def load_vatex(cfg: IngestConfig) -> tuple[list[dict], list[dict]]:
    data = _read_json(cfg.annotation)
    videos, captions = [], []
    for item in data:
        key = item["videoID"]
        path, alts = vatex_file_names(key, cfg.video_ext)
        videos.append(_video(key, path, cfg.vatex_split, alt_paths=alts))
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


def annotation_sources(cfg: IngestConfig) -> list[tuple[str | None, str]]:
    """[(role, path)] of ``cfg.annotation``: one plain file (role None), or ``role=path`` entries / a mapping."""
    ann = cfg.annotation
    if isinstance(ann, dict):
        entries = list(ann.items())
    else:
        parts = [e for e in str(ann).split(",")]
        matches = [_ROLE_ENTRY.match(e) for e in parts]
        if not any(matches):
            return [(None, str(ann))]
        if not all(matches):
            raise ValueError(f"annotation {ann!r}: mixes 'role=path' entries with plain ones; write every "
                             "file as role=path (roles: train, val, test, val+test, ...)")
        entries = [(m.group(1), m.group(2)) for m in matches]
    if not entries:
        raise ValueError("annotation: no file given")
    out = [(VAL_TEST if str(r).strip().lower() == VAL_TEST else normalize_split(r), str(p)) for r, p in entries]
    if any(r is None for r, _ in out):
        raise ValueError(f"annotation {ann!r}: every file needs a non-empty split role")
    return out


def _load_one(cfg: IngestConfig, role: str | None, path: str) -> tuple[list[dict], list[dict]]:
    update: dict[str, Any] = {"annotation": path}
    if role is not None:
        update["vatex_split"] = role
    sub = cfg.model_copy(update=update)
    try:
        videos, captions = LOADERS[cfg.format](sub)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid {cfg.format} annotation ({exc!r})") from exc
    if role is not None:
        videos = [v if v["split"] else {**v, "split": role} for v in videos]
    return videos, captions


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Video ids of a split list: .npy (HGR's *_names.npy), .json (a list) or text (one id per line)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            try:
                arr = np.load(path, allow_pickle=False)
            except ValueError as exc:
                raise ValueError(f"split list {path}: an object (pickled) array; save it as strings "
                                 f"(np.save(path, np.array(names, dtype=str))) or as a text file ({exc})") from exc
            return [str(x) for x in arr.reshape(-1).tolist()]
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise ValueError(f"split list {path}: expected a JSON list of ids")
            return [str(x) for x in data]
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read split list {path}: {exc}") from exc


def _apply_split_lists(videos: list[dict], split_lists: dict[str, str]) -> list[dict]:
    listed: dict[str, list[str]] = {}
    for split, path in split_lists.items():
        for key in read_id_list(path):
            listed.setdefault(key, []).append(normalize_split(split))
    out = []
    for v in videos:
        splits = sorted(set(listed.get(v["key"], [])))
        if len(splits) > 1:
            v = {**v, "error": v["error"] or f"video listed in several split lists: {splits}"}
        elif splits:
            v = {**v, "split": splits[0]}
        out.append(v)
    return out


def divide_val_test(keys: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Seeded val/test division: sorted keys, permuted, the first round(n * val_fraction) -> val."""
    ordered = sorted(keys)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    n_val = int(round(len(ordered) * val_fraction))
    return {ordered[i]: ("val" if rank < n_val else "test") for rank, i in enumerate(perm)}


def _settle_splits(videos: list[dict], cfg: IngestConfig) -> list[dict]:
    if cfg.split_lists:
        videos = _apply_split_lists(videos, cfg.split_lists)
    pooled = [v["key"] for v in videos if v["split"] == VAL_TEST]
    if not pooled:
        return videos
    division = divide_val_test(pooled, cfg.val_fraction, cfg.split_seed)
    return [{**v, "split": division[v["key"]]} if v["split"] == VAL_TEST else v for v in videos]


def load_annotations(cfg: IngestConfig) -> tuple[list[dict], list[dict]]:
    """Parse ``cfg.annotation`` (one file or several with roles) -> (videos, captions), before any
    file-system check. Splits are settled (split lists, val+test division).

    videos: {key, path (as written), split, error, alt_paths}; captions: {caption_id,
    key, sen_id, caption}. Malformed files raise ValueError.
    """
    videos: list[dict] = []
    captions: list[dict] = []
    for role, path in annotation_sources(cfg):
        vids, caps = _load_one(cfg, role, path)
        offset = (max(c["caption_id"] for c in captions) + 1) if captions else 0
        videos += vids
        captions += [{**c, "caption_id": c["caption_id"] + offset} for c in caps]
    return _settle_splits(videos, cfg), captions
