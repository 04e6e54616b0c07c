"""The build-features flow's branch for ``format='hgr-bundle'``: pipeline/datasets/bundle_plan.py's plan as cached tasks.

No decoding or extraction: ingest (names files + ref_captions) -> one ``import-features``
task per bundle feature folder, and parse (hgr-json) -> concepts (HANet's labels when
present) + vocab (the bundle's int2word). Same keys and manifests as
:func:`pipeline.datasets.bundle_plan.build_bundle`, which runs the same plan without Prefect.
"""
from __future__ import annotations

from pipeline.datasets import bundle_plan
from pipeline.config import BuildConfig

from flows import _stages

_TASKS: dict[str, object] = {}


def _task(stage: str, fn):
    if stage not in _TASKS:
        _TASKS[stage] = _stages.stage_task(stage, fn)
    return _TASKS[stage]


def bundle_futures(cfg: BuildConfig, root: str, force: set[str]) -> list:
    """Submit every step of a bundle build (``cfg`` resolved by :func:`bundle.resolve_config`);
    ingest is waited for (nothing runs without it)."""
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
