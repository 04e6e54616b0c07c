"""Prefect plumbing shared by the flows: cached stage tasks, I/O retries, runners.

Caching has two layers with ONE key per stage/shard (``pipeline.fingerprint.stage_key``:
stage name, stage config, stage code version, input fingerprints):
1. Prefect's cache (``cache_key_fn`` returns that key; results persisted), so
   a rerun shows the task as ``Cached`` without running it;
2. the commit manifest on disk (``_stages/...json``, written last), so a killed
   run resumes at shard granularity even without Prefect's result store.
If a committed output disappeared, the flow refreshes that task's cache.
"""
from __future__ import annotations

import errno
from typing import Any, Callable

from prefect import task
from prefect.logging import get_run_logger

from flows._feedback import install_log_filters
from pipeline.fingerprint import multi_stage_key
from pipeline.stage import StagePlan, StageResult, run_stage, run_stages
from storage.manifest import is_committed

install_log_filters()  # a user error's traceback stays out of the run logs (pipeline/feedback.py)
IO_RETRIES = 2
IO_RETRY_DELAY_S = 3


_PERMANENT_ERRNOS = {errno.EFBIG, errno.EROFS, errno.ENAMETOOLONG}  # retrying cannot help


def _retry_on_io(task_, task_run, state) -> bool:
    """Retry transient I/O failures only; a bad config or bad code fails at once."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - result unavailable: be conservative
        return False
    if not isinstance(exc, OSError) or isinstance(exc, (FileNotFoundError, PermissionError)):
        return False
    return exc.errno not in _PERMANENT_ERRNOS  # e.g. a full disk (ENOSPC) may be freed meanwhile



def _cache_key(context, parameters: dict[str, Any]) -> str:
    return parameters["key"]


def stage_task(name: str, fn: Callable[..., StageResult]):
    """A Prefect task named ``name`` that runs ``fn`` through ``run_stage``."""

    @task(name=name, cache_key_fn=_cache_key, persist_result=True, retries=IO_RETRIES,
          retry_delay_seconds=IO_RETRY_DELAY_S, retry_condition_fn=_retry_on_io)
    def _task(root: str, stage: str, key: str, shard: str | None = None, force: bool = False,
              code: str = "", config: Any = None, inputs: dict | None = None,
              kwargs: dict | None = None) -> dict:
        logger = get_run_logger()
        manifest, executed = run_stage(root, stage, key, lambda: fn(**(kwargs or {})), config=config,
                                       inputs=inputs, code=code, shard=shard, force=force)
        where = f"{stage}/{shard}" if shard else stage
        logger.info("%s %s: %s", where, "done" if executed else "already committed", manifest.counts)
        return {**manifest.model_dump(mode="json"), "executed": executed}

    return _task


def submit_stage(task_fn, *, root: str, stage: str, key: str, shard: str | None = None,
                 force: bool = False, wait_for=None, **params):
    """Submit a stage task; bypass Prefect's cache when forced or the outputs are gone."""
    refresh = force or not is_committed(root, stage, key, shard)
    run_name = f"{stage}-{shard}" if shard else stage
    t = task_fn.with_options(refresh_cache=refresh, task_run_name=run_name)
    return t.submit(root=root, stage=stage, key=key, shard=shard, force=force,
                    wait_for=wait_for or [], **params)


def multi_stage_task(name: str, fn: Callable[..., dict[str, StageResult]]):
    """A Prefect task named ``name`` that computes several stages of one shard in one call of
    ``fn(stages=[...], **kwargs)`` (``pipeline.stage.run_stages``): only those not committed under
    their own key (or forced) run, each gets its own manifest. Returns one manifest dict per stage.

    Its Prefect cache key (:func:`pipeline.fingerprint.multi_stage_key`) is the tuple of the per-stage keys, so a cached
    result is only ever served when every stage it reports has the same key as now.
    """

    @task(name=name, cache_key_fn=_cache_key, persist_result=True, retries=IO_RETRIES,
          retry_delay_seconds=IO_RETRY_DELAY_S, retry_condition_fn=_retry_on_io)
    def _task(root: str, key: str, plans: list[dict], shard: str | None = None,
              kwargs: dict | None = None) -> list[dict]:
        logger = get_run_logger()
        done = run_stages(root, [StagePlan(**p) for p in plans],
                          lambda stages: fn(stages=stages, **(kwargs or {})), shard=shard)
        out = []
        for manifest, executed in done:
            logger.info("%s/%s %s: %s", manifest.stage, shard, "done" if executed else "already committed",
                        manifest.counts)
            out.append({**manifest.model_dump(mode="json"), "executed": executed})
        return out

    return _task


def submit_stages(task_fn, *, root: str, plans: list[dict], shard: str | None = None, wait_for=None, **params):
    """Submit a :func:`multi_stage_task`; bypass Prefect's cache when any stage is forced or not committed."""
    refresh = any(p.get("force") or not is_committed(root, p["stage"], p["key"], shard) for p in plans)
    names = "+".join(p["stage"] for p in plans)
    t = task_fn.with_options(refresh_cache=refresh, task_run_name=f"{names}-{shard}" if shard else names)
    return t.submit(root=root, key=multi_stage_key(shard, plans), plans=plans, shard=shard,
                    wait_for=wait_for or [], **params)


GPU_RESOURCE = "GPU"  # dask worker resource name: `dask worker --resources GPU=1`
RAY_INSTALL = ".venv/bin/pip install -r requirements/ray.txt"
RUNNERS = ("local", "dask", "ray")


def gpu_resource(enabled: bool, task_runner=None):
    """Context in which submitted tasks ask the engine for one GPU (no-op when not ``enabled``).

    Dask: a ``GPU`` resource annotation; Ray: the ``num_gpus=1`` remote option.
    ``task_runner``: the engine to ask (default: the current flow run's).
    """
    import contextlib

    if not enabled:
        return contextlib.nullcontext()
    if task_runner is None:
        from prefect.context import FlowRunContext

        task_runner = FlowRunContext.get().task_runner
    engine = type(task_runner).__module__.split(".")[0]
    if engine == "prefect_dask":
        import dask

        return dask.annotate(resources={GPU_RESOURCE: 1})
    if engine == "prefect_ray":
        from prefect_ray.context import remote_options

        # max_calls=0: keep the worker (and its loaded backbone) for the next shard, as a Dask
        # worker does; Ray's default for GPU tasks (1) starts a fresh process per task
        return remote_options(num_gpus=1, max_calls=0)
    raise ValueError(f"GPU tasks need runner 'dask' or 'ray', not {type(task_runner).__name__}")


def _ray_task_runner():
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as err:
        raise ImportError(f"runner='ray' needs the optional prefect-ray package: {RAY_INSTALL}") from err
    return RayTaskRunner


def make_task_runner(runner: str, n_workers: int, dask_address: str | None = None,
                     local_gpus: int = 0, ray_address: str | None = None):
    """'local' threads, Dask (a LocalCluster, or an existing scheduler's address) or Ray
    (a local Ray with ``n_workers`` CPUs and no dashboard, or an existing cluster's address).

    ``local_gpus``: the GPUs a local engine advertises for GPU tasks, one per device that
    exists (:func:`pipeline.runtime.visible_gpus`): a Dask LocalCluster gets at most that many workers, each
    with ``GPU=1`` (its tasks use cuda:<worker index>); the local Ray node ``num_gpus`` of them.
    """
    if runner == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=n_workers)
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        kwargs = {"n_workers": n_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
        if local_gpus:  # one worker per GPU that exists, never more GPU slots than devices
            kwargs.update(n_workers=min(n_workers, local_gpus), resources={GPU_RESOURCE: 1})
        return DaskTaskRunner(cluster_kwargs=kwargs)
    if runner == "ray":
        RayTaskRunner = _ray_task_runner()
        if ray_address:
            return RayTaskRunner(address=ray_address)
        init = {"num_cpus": n_workers, "include_dashboard": False}
        if local_gpus:
            init["num_gpus"] = local_gpus
        return RayTaskRunner(init_kwargs=init)
    raise ValueError(f"unknown runner {runner!r}: use one of {', '.join(map(repr, RUNNERS))}")
