"""The build-features flow's branch for ``format='hgr-bundle'``: pipeline/datasets/bundle_plan.py's plan as cached tasks.

No decoding or extraction: ingest (names files + ref_captions) -> one ``import-features``
task per bundle feature folder, and parse (hgr-json) -> concepts (HANet's labels when
present) + vocab (the bundle's int2word). Same keys and manifests as
:func:`pipeline.datasets.bundle_plan.build_bundle`, which runs the same plan without Prefect.
"""
from __future__ import annotations

import time
from pathlib import Path

from pipeline.datasets import bundle, bundle_plan
from pipeline.config import BuildConfig
from storage.atomic import atomic_write_text, clean_stale_tmp

from flows import _stages

_TASKS: dict[str, object] = {}


def _task(stage: str, fn):
    if stage not in _TASKS:
        _TASKS[stage] = _stages.stage_task(stage, fn)
    return _TASKS[stage]


def bundle_futures(cfg: BuildConfig, root: str, force: set[str]) -> list:
    """Submit every step of a bundle build; ingest is waited for (nothing runs without it)."""
    cfg = bundle.resolve_config(cfg)  # idempotent; raises BundleError naming missing pieces
    by_stage: dict[str, list] = {}
    futures = []
    for step in bundle_plan.plan(cfg):
        wait = [f for s in step.after for f in by_stage.get(s, [])]
        fut = _stages.submit_stage(_task(step.stage, step.fn), root=root, stage=step.stage, key=step.key,
                                   shard=step.shard, force=step.stage in force, code=step.code,
                                   config=step.config, inputs=step.inputs, kwargs=step.kwargs, wait_for=wait)
        if step.stage == "ingest":
            fut.wait()
            fut.result()  # raise now if ingest failed
        by_stage.setdefault(step.stage, []).append(fut)
        futures.append(fut)
    return futures


def run_bundle_dag(cfg: BuildConfig, root: str, force: set[str], logger, t0: float) -> dict:
    """flows.build._run_dag for a bundle: same artifacts, summary and failure rule."""
    from prefect.artifacts import create_progress_artifact, create_table_artifact

    from flows.build import _summary
    from pipeline.build import slug

    cfg = bundle.resolve_config(cfg)
    removed = clean_stale_tmp(root)
    if removed:
        logger.info("removed %d temporary files left by an interrupted run", removed)
    atomic_write_text(Path(root) / "build_config.json", cfg.model_dump_json(indent=2))
    futures = bundle_futures(cfg, root, force)
    progress = create_progress_artifact(progress=0.0, key=None, description=f"{cfg.dataset}: stages done")
    rows = _summary(futures, progress, t0)
    create_table_artifact(rows, key=f"build-{slug(cfg.dataset)}",
                          description=f"Import of the HGR bundle {cfg.ingest.dataset_root} into {root}")
    executed = sum(r["status"] == "executed" for r in rows)
    logger.info("bundle import of %s done in %.1fs: %d stage runs executed, %d cached; shards in %s",
                cfg.dataset, time.time() - t0, executed, len(rows) - executed, root)
    bundle_plan.check_import_failures(Path(root), cfg)
    return {"root": root, "stages": rows, "executed": executed, "cached": len(rows) - executed}
