"""Ingest: annotation file -> ``videos.parquet`` + ``captions.parquet``.

Formats (``IngestConfig.format``):

* ``msrvtt``: the official JSON, ``videos`` = [{video_id, split, ...}] and
  ``sentences`` = [{caption, video_id, sen_id}]. Split 'validate' -> 'val'.
  Video path = ``<video_id><video_ext>`` under ``dataset_root``.
* ``vatex``: a per-split JSON list of {videoID, enCap: [...]}; every row gets
  ``IngestConfig.vatex_split`` (or its file's role, below); sen_id = position
  in ``enCap``. Files without ``enCap`` (the public test set) give videos
  without captions. videoIDs are ``<youtube_id>_<start>_<end>``; the video
  file is ``<videoID><video_ext>`` or, when that does not exist,
  ``<youtube_id><video_ext>`` (both namings are common in downloads); a
  ``<youtube_id>`` file that several videoIDs would share is an error row for
  each (one file cannot be every clip of that YouTube video).
* ``manifest``: CSV (``.csv``) or JSON Lines (any other suffix), one video per
  row with fields ``path`` (relative to ``dataset_root``; absolute paths must
  lie inside it), ``captions``, ``split`` and optional ``key`` (default: the
  path without its extension). In CSV the ``captions`` cell is a JSON array of
  strings (``["a man runs", "someone is running"]``) - unambiguous whatever
  the captions contain; in JSONL it is a JSON list. sen_id = list position.

Several annotation files (``IngestConfig.annotation`` as
``"train=/a/train.json,val+test=/a/validation.json"`` or a mapping
{role: path}): each file is read with the format's loader and its rows
without a split of their own get the file's role (for VATEX the role IS the
split). Caption ids continue across files in the order given. Splits are
then settled in this order:

1. ``split_lists`` (split -> file of video ids: HGR's
   ``public_split/{trn,val,tst}_names.npy``, a JSON list or a text file, one
   id per line): a listed video gets that split, whatever the annotation says;
   a video in two lists is an error row.
2. role/split ``val+test``: those videos (error rows included, so the
   division depends on the annotation alone, not on which files are broken)
   are sorted by key, permuted with ``numpy.random.default_rng(split_seed)``;
   the first ``round(n * val_fraction)`` become ``val``, the rest ``test``.
   VATEX: the official validation JSON's 3,000 videos -> 1,500 val / 1,500
   test, as in HGR/HANet (their exact lists: pass them as ``split_lists``);
   a small set is divided in the same proportion.

Rules shared by all formats:

* keys are unique (a repeated key keeps its first row; its captions still
  attach to it) and must stay unique once '/' becomes '_' (HDF5 names);
* a row without a split, or a path string escaping ``dataset_root`` ('..',
  absolute elsewhere) makes an ``error`` row, as do missing, unreadable and
  stream-less files when ``probe`` is on;
* symlinks the data owner put inside ``dataset_root`` (files or folders, the
  usual way to place a large dataset on another disk) are followed and the
  resolved path is recorded (``resolved_path``); ``follow_symlinks=False`` is
  the strict mode: a video resolving outside ``dataset_root`` is an error row;
* a file that cannot be read (permission, I/O error) is an error row whose
  message starts with :data:`READ_ERROR`; the next build retries it (the
  stage key changes while such rows exist) instead of keeping it forever;
* a rerun reuses the header probe of every ``ok`` row whose file (path,
  size, mtime, link target) is unchanged: only new, changed and failed files
  are opened again. The stage's cache key (:func:`ingest_inputs`) covers the
  annotation and split-list contents and every candidate video file's size
  and mtime, so fixing or replacing a video re-ingests, and only the shards
  holding it are re-extracted;
* caption_id = the caption's position in the annotation file, continued
  across several files in the order given (stable across runs, never
  renumbered); captions are stored raw, unaltered.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.config import BuildConfig, IngestConfig
from pipeline.datasets.annotations import annotation_sources, load_annotations, read_id_list
from pipeline.fingerprint import file_fingerprint, sha256_file, stable_hash
from pipeline.stage import StageResult
from pipeline.video.decode import DecodeError, expected_frames, open_video, pick_video_stream, stream_duration_s, stream_fps
from storage.features import dataset_name
from storage.tables import read_table, table_metadata, write_table

READ_ERROR = "read error (retried on the next build)"


def safe_relative_path(root: str | os.PathLike, raw: str, follow_symlinks: bool = False) -> str:
    """``raw`` as a normalised POSIX path relative to ``root``; ValueError if it escapes.

    The path STRING may never leave ``root`` ('..', absolute paths elsewhere).
    Links inside ``root`` are followed when ``follow_symlinks``; otherwise
    (strict) a path resolving outside ``root`` is refused too.
    """
    if not str(raw).strip():
        raise ValueError("empty path")
    root_abs = Path(os.path.abspath(root))
    p = Path(raw)
    lexical = Path(os.path.normpath(p if p.is_absolute() else root_abs / p))
    if lexical == root_abs or not lexical.is_relative_to(root_abs):
        raise ValueError(f"path {raw!r} lies outside dataset_root {root_abs}")
    if not follow_symlinks:
        real = lexical.resolve()
        if not real.is_relative_to(root_abs.resolve()):
            raise ValueError(f"path {raw!r} resolves (through a symlink) to {real}, outside dataset_root "
                             f"{root_abs} (follow_symlinks=False)")
    return lexical.relative_to(root_abs).as_posix()


def resolved_if_linked(root: str | os.PathLike, rel: str) -> str | None:
    """The real path of ``root/rel`` when a link inside ``root`` leads elsewhere; None for a plain file."""
    root_real = Path(root).resolve()
    real = (Path(root) / rel).resolve()
    return None if real == root_real / rel else str(real)


# ------------------------------------------------------------------ parsers


def ingest_inputs(cfg: IngestConfig, out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """What the ingest stage's cache key covers besides its config and code.

    The annotation and split-list files by sha256, the resolved dataset_root,
    and every candidate video file by size, mtime and link target (a missing
    file counts as missing), so adding, fixing or replacing a video changes
    the key. While the committed ``videos.parquet`` under ``out_dir`` has
    :data:`READ_ERROR` rows the key also changes every run: those are retried.
    """
    sources = annotation_sources(cfg)
    for _, path in sources:
        if not Path(path).exists():
            raise FileNotFoundError(f"annotation file {path} does not exist (dataset_root={cfg.dataset_root})")
    videos, _ = load_annotations(cfg)
    root = Path(cfg.dataset_root)
    files = [[v["key"], [_file_state(root, p) for p in (v["path"], *v["alt_paths"])]] for v in videos]
    inputs: dict[str, Any] = {
        "annotations": [[role, sha256_file(path) if Path(path).is_file() else file_fingerprint(path)]
                        for role, path in sources],
        "split_lists": {s: sha256_file(p) for s, p in sorted(cfg.split_lists.items())},
        "dataset_root": str(root.resolve()), "video_files": stable_hash(files, 32)}
    if out_dir is not None and _has_read_errors(Path(out_dir) / "videos.parquet"):
        inputs["retry_read_errors"] = time.time_ns()
    return inputs


def _file_state(root: Path, raw: str) -> Any:
    p = Path(raw) if Path(raw).is_absolute() else root / raw
    try:
        st = p.stat()
    except OSError as exc:
        return ["missing", type(exc).__name__]
    return [st.st_size, st.st_mtime_ns, os.path.realpath(p) if os.path.islink(p) else None]


def _has_read_errors(table: Path) -> bool:
    try:
        messages = read_table(table, "videos", columns=["error_message"]).column("error_message").to_pylist()
    except Exception:  # absent, old schema or unreadable: nothing to retry from it
        return False
    return any(m and m.startswith(READ_ERROR) for m in messages)


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


PROBED = ("n_frames", "fps", "duration_s", "width", "height")


def _empty_row(v: dict) -> dict[str, Any]:
    return {"key": v["key"], "path": v["path"], "split": v["split"], "size_bytes": None, "n_frames": None,
            "fps": None, "duration_s": None, "width": None, "height": None, "status": "ok", "error_message": None,
            "mtime_ns": None, "resolved_path": None}


def _error(row: dict[str, Any], message: str) -> dict[str, Any]:
    return {**row, "status": "error", "error_message": message}


def _locate(v: dict, root: Path, follow: bool) -> str:
    """The first of the video's candidate paths that exists (else the first); ValueError on an escape."""
    candidates = [safe_relative_path(root, p, follow) for p in (v["path"], *v.get("alt_paths", []))]
    return next((c for c in candidates if (root / c).is_file()), candidates[0])


def _not_found(v: dict, root: Path, rel: str) -> str:
    alts = v.get("alt_paths") or []
    if not alts:
        return f"file not found: {root / rel}"
    return f"file not found: tried {', '.join([v['path'], *alts])} under {root}"


def video_row(v: dict, root: Path, probe: bool, follow_symlinks: bool = True,
              previous: dict[str, dict] | None = None) -> dict[str, Any]:
    """One ``videos`` table row: path checked against ``root``, header probed.

    ``previous``: last build's ok rows by key; a row whose file is unchanged
    (path, size, mtime, link target) is reused without opening the file.
    """
    row = _empty_row(v)
    if v["error"] or not v["split"]:
        return _error(row, v["error"] or "missing split")
    try:
        row["path"] = _locate(v, root, follow_symlinks)
    except ValueError as exc:
        return _error(row, str(exc))
    file = root / row["path"]
    if not file.is_file():
        return _error(row, _not_found(v, root, row["path"]))
    try:
        st = file.stat()
        with open(file, "rb") as f:  # permission / I/O errors: retried next build, never cached for good
            f.read(1)
    except OSError as exc:
        return _error(row, f"{READ_ERROR}: {type(exc).__name__}: {exc}")
    row.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns, resolved_path=resolved_if_linked(root, row["path"]))
    old = (previous or {}).get(row["key"])
    if probe and old is not None and all(old[k] == row[k] for k in ("path", "size_bytes", "mtime_ns",
                                                                      "resolved_path", "split")):
        return {**row, **{k: old[k] for k in PROBED}}
    try:
        return {**row, **probe_video(file)} if probe else row
    except DecodeError as exc:
        return _error(row, f"{type(exc).__name__}: {exc}")


def caption_rows(captions: list[dict], splits: dict[str, str | None]) -> tuple[list[dict], int]:
    """Captions of known videos, with their video's split; returns (rows, n_orphans)."""
    rows = [{**c, "split": splits[c["key"]]} for c in captions if c["key"] in splits]
    return rows, len(captions) - len(rows)


# ------------------------------------------------------------------ stage

def _previous_ok_rows(out: Path, cfg: IngestConfig) -> dict[str, dict]:
    """Last build's ok rows (same dataset_root, probe on), for reuse; {} when there is nothing usable."""
    table = out / "videos.parquet"
    try:
        meta = table_metadata(table)
        if meta.get("dataset_root") != str(Path(cfg.dataset_root).resolve()) or meta.get("probe") != "True":
            return {}
        return {r["key"]: r for r in read_table(table, "videos").to_pylist() if r["status"] == "ok"}
    except Exception:  # absent, an older schema, unreadable: probe everything
        return {}


def _probe_all(videos: list[dict], cfg: IngestConfig, previous: dict[str, dict] | None = None) -> list[dict]:
    root = Path(cfg.dataset_root)
    with ThreadPoolExecutor(max_workers=cfg.probe_workers) as pool:
        rows = list(pool.map(lambda v: video_row(v, root, cfg.probe, cfg.follow_symlinks, previous), videos))
    return _refuse_shared_fallbacks(videos, rows)


def _refuse_shared_fallbacks(videos: list[dict], rows: list[dict]) -> list[dict]:
    """A fallback name (VATEX ``<youtube_id>.mp4``) found for several videos cannot be right for all: errors."""
    by_path: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r["status"] == "ok":
            by_path.setdefault(r["path"], []).append(i)
    out = list(rows)
    for path, idx in by_path.items():
        via_alt = [i for i in idx if path in {Path(os.path.normpath(a)).as_posix() for a in videos[i]["alt_paths"]}]
        if len(idx) > 1 and via_alt:
            keys = ", ".join(rows[i]["key"] for i in idx)
            for i in via_alt:
                out[i] = _error(rows[i], f"fallback file {path} would serve several videos ({keys}); name the "
                                         "files by their full video id")
    return out


def _split_counts(rows: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[str(r["split"])] = out.get(str(r["split"]), 0) + 1
    return out


def _counts(rows: list[dict], n_captions: int) -> dict[str, int]:
    n_err = sum(r["status"] == "error" for r in rows)
    return {"videos": len(rows), "ok": len(rows) - n_err, "error": n_err, "captions": n_captions}


def run_ingest(cfg: BuildConfig) -> StageResult:
    """Write ``<out_root>/<dataset>/videos.parquet`` and ``captions.parquet``."""
    if cfg.ingest.format == "hgr-bundle":  # released data, no video files (pipeline/datasets/bundle.py)
        from pipeline.datasets.bundle import run_bundle_ingest

        return run_bundle_ingest(cfg)
    t0 = time.perf_counter()
    out = Path(cfg.out_root) / cfg.dataset
    videos, captions = load_annotations(cfg.ingest)
    videos, notes = dedupe_videos(videos)
    previous = _previous_ok_rows(out, cfg.ingest) if cfg.ingest.probe else {}
    rows = _probe_all(videos, cfg.ingest, previous)
    reused = sum(1 for r in rows if r["key"] in previous and r["status"] == "ok"
                 and r["mtime_ns"] == previous[r["key"]]["mtime_ns"])
    if reused:
        notes.append(f"{reused} unchanged videos kept their previous probe")
    if cfg.ingest.split_lists:
        keys = {r["key"] for r in rows}
        unknown = {k for path in cfg.ingest.split_lists.values() for k in read_id_list(path)} - keys
        if unknown:
            notes.append(f"{len(unknown)} ids of the split lists are not in the annotation (ignored), "
                         f"e.g. {sorted(unknown)[:3]}")
    notes.append("splits: " + ", ".join(f"{k} {v}" for k, v in sorted(_split_counts(rows).items())))
    n_links = sum(r["resolved_path"] is not None for r in rows)
    if n_links:
        notes.append(f"{n_links} videos are symlinks inside dataset_root (followed; resolved_path recorded)")
    caps, n_orphans = caption_rows(captions, {r["key"]: r["split"] for r in rows})
    if n_orphans:
        notes.append(f"{n_orphans} captions name videos absent from the annotation and were dropped")
    sources = annotation_sources(cfg.ingest)
    annotation = str(Path(sources[0][1]).resolve()) if sources[0][0] is None else \
        ",".join(f"{role}={Path(p).resolve()}" for role, p in sources)
    meta = {"dataset_root": str(Path(cfg.ingest.dataset_root).resolve()), "format": cfg.ingest.format,
            "annotation": annotation, "probe": str(cfg.ingest.probe),
            "splits": json.dumps(_split_counts(rows), sort_keys=True)}
    write_table(out / "videos.parquet", "videos", rows, extra_metadata=meta)
    write_table(out / "captions.parquet", "captions", caps, extra_metadata=meta)
    return StageResult(outputs=["videos.parquet", "captions.parquet"], counts=_counts(rows, len(caps)),
                       timings_s={"ingest": round(time.perf_counter() - t0, 3)}, notes=notes)
