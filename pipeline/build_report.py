"""What a finished build tells its user, without Prefect: one summary row per stage run (ok / error / frames /
seconds as columns), the stage lines logged in the build's own flow run, the failed videos with specific
error kinds, the failure rule and the warning of a Completed build with failed videos.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.config import BuildConfig
from pipeline.stage import BuildFailedError, too_many_failed
from storage.tables import read_table

COLUMNS = ("ok", "error", "frames")  # counts shown as their own columns; the rest stay in 'other'
FIRST_FAILED = 3  # per-video messages quoted in a build's warning / failure


def summary_row(manifest: dict[str, Any], started_at: float) -> dict[str, Any]:
    """One summary row per stage run; 'executed' iff its manifest was committed during this build.
    Columns: stage, shard, status, ok, error, frames, seconds, other (the remaining counts, JSON)."""
    status = "executed" if manifest["created_at"] >= started_at else "cached"
    counts = dict(manifest["counts"])
    if "errors" in counts and "error" not in counts:  # parse counts 'errors'
        counts["error"] = counts.pop("errors")
    row: dict[str, Any] = {"stage": manifest["stage"], "shard": manifest.get("shard") or "", "status": status}
    row.update({c: counts.pop(c, "") for c in COLUMNS})
    row["seconds"] = round(float(manifest["timings_s"].get("total", 0.0)), 2)
    row["other"] = json.dumps(counts, sort_keys=True) if counts else ""
    return row


def stage_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per stage run, e.g. 'resnet152/shard-00001 executed: ok 3, error 1, frames 12 (2.1 s)'."""
    out = []
    for r in rows:
        where = f"{r['stage']}/{r['shard']}" if r["shard"] else r["stage"]
        counts = ", ".join(f"{c} {r[c]}" for c in COLUMNS if r.get(c) != "")
        extra = f"; {r['other']}" if r.get("other") else ""
        out.append(f"{where} {r['status']}: {counts or '-'}{extra} ({r['seconds']:.1f} s)")
    return out


# an error row's message (after an 'ingest: ' prefix) -> its kind, first match wins
ERROR_KINDS = (("file not found", "file not found"), ("read error", "unreadable"),
               ("UnreadableVideoError", "unreadable"), ("TruncatedVideoError", "truncated"),
               ("CorruptVideoError", "decoder error"), ("NoVideoStreamError", "no video stream"),
               ("NoFramesError", "no frames"), ("DecodeTimeoutError", "decode timeout"),
               ("missing split", "missing split"))


def error_kind(message: str | None) -> str:
    """The kind of an error row: 'file not found', 'unreadable', 'truncated', 'decoder error', 'no video
    stream', 'no frames', 'decode timeout', 'missing split', else its message up to the first ':'."""
    text = (message or "unknown").strip()
    if text.startswith("ingest:"):
        text = text[len("ingest:"):].strip()
    for prefix, kind in ERROR_KINDS:
        if text.startswith(prefix):
            return kind
    return text.split(":", 1)[0].strip() or "unknown"


def failed_videos(root: Path, cfg: BuildConfig) -> tuple[int, dict[str, str | None]]:
    """(videos, {key: error message} of the videos without features) over the enabled extractors' status
    tables. A video counts as failed when any enabled extractor has no features for it; with no extractor
    enabled, ingest's ``videos.parquet`` statuses decide."""
    tables = [root / f"features/{name}/status.parquet"
              for name, sub in (("resnet152", cfg.resnet), ("i3d_r50", cfg.i3d)) if sub.enabled]
    schema_of = {t: "feature_status" for t in tables if t.exists()} or {root / "videos.parquet": "videos"}
    schema_of = {p: sch for p, sch in schema_of.items() if p.exists()}
    failed: dict[str, str | None] = {}
    keys: set[str] = set()
    for path, schema in schema_of.items():
        for r in read_table(path, schema).to_pylist():
            keys.add(r["key"])
            if r["status"] != "ok":
                failed.setdefault(r["key"], r["error_message"])
    return len(keys), failed


def _kinds(failed: dict[str, str | None]) -> dict[str, int]:
    return dict(Counter(map(error_kind, failed.values())).most_common())  # most frequent first, ties as met


def failure_summary(root: Path, cfg: BuildConfig) -> tuple[int, int, dict[str, int]]:
    """(videos, videos without features, error kinds -> count)."""
    n, failed = failed_videos(root, cfg)
    return n, len(failed), _kinds(failed)


def _failure_text(root: Path, n: int, failed: dict[str, str | None]) -> str:
    kinds = ", ".join(f"{k}: {v}" for k, v in _kinds(failed).items())
    first = "; ".join(f"{k}: {m}" for k, m in list(failed.items())[:FIRST_FAILED])
    more = f" (and {len(failed) - FIRST_FAILED} more)" if len(failed) > FIRST_FAILED else ""
    return (f"{len(failed)} of {n} videos have no features ({kinds}); first: {first}{more}. All per-video "
            f"messages: {root}/features/*/status.parquet and {root}/videos.parquet (rows with status != 'ok')")


def failure_warning(root: Path, cfg: BuildConfig) -> str | None:
    """The warning of a build that completes with failed videos (None when every video has features)."""
    n, failed = failed_videos(root, cfg)
    return _failure_text(root, n, failed) if failed else None


def check_failures(root: Path, cfg: BuildConfig) -> str | None:
    """Raise :class:`BuildFailedError` (error kinds, the first per-video messages) when too many videos failed;
    else the warning of :func:`failure_warning` (one read of the status tables for both)."""
    n, failed = failed_videos(root, cfg)
    if too_many_failed(n, len(failed), cfg.max_failed_fraction):
        raise BuildFailedError(
            f"more than max_failed_fraction={cfg.max_failed_fraction:g} of the videos failed: "
            f"{_failure_text(root, n, failed)}; the shards written so far are kept. Check dataset_root / "
            "annotation, or raise max_failed_fraction")
    return _failure_text(root, n, failed) if failed else None
