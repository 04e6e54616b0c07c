"""What every stage function returns, so flows can record and cache it uniformly."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel

from pipeline.feedback import UserError
from storage.manifest import StageManifest, commit_status, read_manifest, write_manifest

log = logging.getLogger(__name__)


@dataclass
class StageResult:
    """Outputs are paths RELATIVE to the dataset's shard root."""

    outputs: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_stage(root: str | os.PathLike, stage: str, key: str, fn: Callable[[], StageResult], *,
              config: Any = None, inputs: dict | None = None, code: str = "",
              shard: str | None = None, force: bool = False) -> tuple[StageManifest, bool]:
    """Run ``fn`` unless ``stage``/``shard`` is already committed under ``key``.

    Returns (manifest, executed). The manifest is written LAST, after every
    output of ``fn`` is in place, so a killed run leaves the stage uncommitted
    and the next run redoes exactly the uncommitted stages/shards.
    """
    status = commit_status(root, stage, key, shard)
    if not force and status == "committed":
        return read_manifest(root, stage, shard), False
    log.info("running %s%s: %s", stage, f"/{shard}" if shard else "", "forced" if force else status)
    t0 = time.perf_counter()
    result = fn()
    cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else (config or {})
    manifest = StageManifest(
        stage=stage, key=key, shard=shard, config=cfg, code_version=code, inputs=inputs or {},
        outputs=result.outputs, counts=result.counts,
        timings_s={**result.timings_s, "total": round(time.perf_counter() - t0, 3)},
    )
    write_manifest(root, manifest)
    return manifest, True


@dataclass
class StagePlan:
    """One stage/shard of a combined run (:func:`run_stages`): its own key, config, inputs and code."""

    stage: str
    key: str
    config: Any = None
    inputs: dict | None = None
    code: str = ""
    force: bool = False


def run_stages(root: str | os.PathLike, plans: list[StagePlan],
               fn: Callable[[list[str]], dict[str, StageResult]],
               shard: str | None = None) -> list[tuple[StageManifest, bool]]:
    """Several stages of one shard computed by ONE call of ``fn`` (e.g. every extractor of a shard
    from one decode pass), each committed exactly as :func:`run_stage` would commit it alone.

    ``fn(stages)`` computes only the stages that are forced or not committed under their own key
    and returns a StageResult per stage; each manifest is then written last, one per stage, so
    caching, resume and forcing stay per stage. Returns (manifest, executed) per plan, in order.
    """
    todo = [p.stage for p in plans if p.force or commit_status(root, p.stage, p.key, shard) != "committed"]
    results: dict[str, StageResult] = {}
    t0 = time.perf_counter()
    if todo:
        log.info("running %s%s", ", ".join(todo), f"/{shard}" if shard else "")
        results = fn(todo)
    total = round(time.perf_counter() - t0, 3)
    out = []
    for p in plans:
        if p.stage not in todo:
            out.append((read_manifest(root, p.stage, shard), False))
            continue
        result = results[p.stage]
        cfg = p.config.model_dump(mode="json") if isinstance(p.config, BaseModel) else (p.config or {})
        manifest = StageManifest(
            stage=p.stage, key=p.key, shard=shard, config=cfg, code_version=p.code, inputs=p.inputs or {},
            outputs=result.outputs, counts=result.counts, timings_s={**result.timings_s, "total": total},
        )
        write_manifest(root, manifest)
        out.append((manifest, True))
    return out


class BuildFailedError(UserError, RuntimeError):
    """Too many videos of a build have no features: the build did not do its job."""


def too_many_failed(n: int, n_failed: int, max_failed_fraction: float) -> bool:
    """The failure rule of a build: more than ``max_failed_fraction`` of the videos failed, or every one did."""
    return bool(n and n_failed / n > max_failed_fraction or (n_failed and n_failed == n))
