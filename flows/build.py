"""The feature DAG: ingest -> [per shard] decode + ResNet152 / I3D -> merge; captions -> text stages.

Deployments (prefect.yaml): build-features/build-msrvtt-features,
build-features/build-vatex-features, build-features/build-sample-features.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.context import FlowRunContext
from prefect.artifacts import create_table_artifact
from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from flows import _feedback, _stages
from pipeline import build as plan
from pipeline import build_report
from pipeline import devices, runtime
from pipeline.config import BuildConfig
from pipeline.datasets import bundle, bundle_plan, ingest, sample_data
from pipeline.text import parse as text_parse
from pipeline.video import merge, shards
from storage.atomic import atomic_write_text, clean_stale_tmp
from storage.lock import exclusive_lock

# Flow parameters that steer the run, not what a stage computes (the others: pipeline.build.FLAT_PARAMS).
RUN_PARAMS = ("allow_random_weights", "generate_sample", "force", "runner", "n_workers", "dask_address",
              "ray_address", "gpu_tasks", "overrides")

ingest_task = _stages.stage_task("ingest", ingest.run_ingest)


def _extract_shard_stages(spec: dict, stages: list[str], models: dict, **kwargs):
    """The extractors ``stages`` of one shard from ONE decode pass per video (extract_shards_multi).
    ShardSpec travels as a plain dict (Prefect walks task parameters as collections). torch is
    imported here, where a backbone runs (a cached build never does), with its threads sized to
    this worker's CPUs."""
    from pipeline.video import extract

    threads = devices.configure_threads()
    get_run_logger().info("torch threads: %d (VTR_NUM_THREADS, else the CPUs available)", threads)
    return extract.extract_shards_multi(spec=shards.ShardSpec.model_validate(spec),
                                        models={name: models[name] for name in stages}, **kwargs)


extract_task = _stages.multi_stage_task("extract", _extract_shard_stages)
merge_task = _stages.stage_task("merge", merge.finalize_features)
parse_task = _stages.stage_task("parse", text_parse.run_parse)
concepts_task = _stages.stage_task("concepts", text_parse.run_concepts)
vocab_task = _stages.stage_task("vocab", text_parse.run_vocab)


def _resolve_weights(cfg: BuildConfig, allow_random: bool) -> BuildConfig:
    """pipeline.build.resolve_weights, with its fallbacks logged loudly in the flow run."""
    cfg, fallbacks = plan.resolve_weights(cfg, allow_random)
    for name, err in fallbacks.items():
        get_run_logger().warning(
            "!!! %s: pretrained weights unavailable (%s). FALLING BACK TO weights=random: features are NOT "
            "meaningful beyond smoke tests; provenance is recorded in every shard.", name, err)
    return cfg


def _text_chain(root: str, cfg: BuildConfig, force: set[str], wait_for) -> list:
    """parse -> (concepts, vocab), keyed by the captions table's content hash."""
    keys = plan.text_stage_keys(root, cfg)
    futures = []
    for name, fn, sub in (("parse", parse_task, cfg.text), ("concepts", concepts_task, cfg.concepts),
                          ("vocab", vocab_task, cfg.vocab)):
        k = keys[name]
        futures.append(_stages.submit_stage(fn, root=root, stage=name, key=k.key, force=name in force,
                                            code=k.code, config=sub, inputs=k.inputs,
                                            kwargs={"root": Path(root), "cfg": sub},
                                            wait_for=wait_for if name == "parse" else futures[:1]))
    return futures


def extraction_groups(planned: list, shard_device: dict, force: set[str]) -> list[dict]:
    """The extraction tasks of a build: ONE per shard, computing every extractor of it that is not
    committed from one decode per video. Each: {'spec', 'plans' (one per extractor: its key, config,
    inputs, code, force), 'models' {extractor: config}, 'device' {extractor: device}}."""
    groups: dict[str, dict] = {}
    for name, spec, key, sub, code, inputs in planned:
        g = groups.setdefault(spec.id, {"spec": spec, "plans": [], "models": {}, "device": {}})
        g["plans"].append({"stage": name, "key": key, "config": sub, "inputs": inputs, "code": code,
                           "force": name in force})
        g["models"][name] = sub
        g["device"][name] = shard_device[(name, spec.id)]
    return list(groups.values())


def _video_chain(root: str, cfg: BuildConfig, force: set[str], wait_for, gpu: bool = False,
                 spread_gpus: bool = False) -> list:
    """One extraction task per shard (every extractor of it, one decode pass) + one merge per extractor.

    Each extractor keeps its own key and ``_stages/<extractor>/<shard>.json`` manifest; the shard
    task computes only the extractors not committed under their key (or forced).
    ``spread_gpus`` (local runner): shard i runs on cuda:(i mod visible GPUs) when the device is
    'auto'/'cuda', so concurrent shard tasks use one GPU each (Dask/Ray pick per worker instead).
    """
    futures, by_extractor = [], {}
    planned = plan.video_stage_keys(Path(root), cfg)
    shard_device = plan.shard_device_map(planned, cfg, spread_gpus)
    shard_future = {}
    for g in extraction_groups(planned, shard_device, force):
        spec, devs = g["spec"], g["device"]
        device = next(iter(devs.values())) if len(set(devs.values())) == 1 else devs
        kwargs = {"root": Path(root), "spec": spec.model_dump(), "decode_cfg": cfg.decode, "models": g["models"],
                  "dataset_root": Path(cfg.ingest.dataset_root), "device": device}
        with _stages.gpu_resource(gpu):  # extraction tasks ask the engine for a GPU
            f = _stages.submit_stages(extract_task, root=root, plans=g["plans"], shard=spec.id, kwargs=kwargs,
                                      wait_for=wait_for)
        futures.append(f)
        for p in g["plans"]:
            shard_future[(p["stage"], spec.id)] = f
    for name, spec, key, *_ in planned:
        by_extractor.setdefault(name, []).append((spec.id, key, shard_future[(name, spec.id)]))
    for name, shards in by_extractor.items():
        stage = f"merge-{name}"
        k = plan.merge_stage_key(name, [key for _, key, _ in shards])
        futures.append(_stages.submit_stage(
            merge_task, root=root, stage=stage, key=k.key, force=stage in force, code=k.code, inputs=k.inputs,
            kwargs={"root": Path(root), "extractor": name, "shard_ids": [s for s, _, _ in shards]},
            wait_for=list({id(f): f for _, _, f in shards}.values())))
    return futures


def _summary(futures: list, step, started_at: float) -> list[dict]:
    """One row per stage run (pipeline.build_report.summary_row); ``step(done, total)`` as each task finishes
    (a shard's extraction is one task: the bar and the progress artifact move per shard)."""
    rows, done = [], 0
    for fut in as_completed(futures):
        done += 1
        step(done, len(futures))
        result = fut.result()  # one manifest, or one per extractor of a shard task
        rows += [build_report.summary_row(m, started_at) for m in (result if isinstance(result, list) else [result])]
    return plan.sort_summary(rows)


@flow(name="build-dag")
def build_dag(cfg: BuildConfig, force: list[str] | None = None, gpu_resource: bool = False) -> dict:
    """Run every stage of ``cfg`` (cached ones are skipped) and return a summary."""
    logger, t0 = get_run_logger(), time.time()
    force = set(force or [])
    root = str(Path(cfg.out_root) / cfg.dataset)
    with exclusive_lock(Path(root) / ".build.lock"):
        return _run_dag(cfg, root, force, logger, t0, gpu_resource)


def _run_dag(cfg: BuildConfig, root: str, force: set[str], logger, t0: float, gpu: bool) -> dict:
    bundle_format = cfg.ingest.format == "hgr-bundle"
    if bundle_format:  # released data: features imported, no decoding (pipeline/datasets/bundle.py)
        cfg = bundle.resolve_config(cfg)  # idempotent; raises BundleError naming missing pieces
    removed = clean_stale_tmp(root)
    if removed:
        logger.info("removed %d temporary files left by an interrupted run", removed)
    atomic_write_text(Path(root) / "build_config.json", cfg.model_dump_json(indent=2))
    if bundle_format:
        from flows._bundle import bundle_futures

        futures = bundle_futures(cfg, root, force)
        what = f"Import of the HGR bundle {cfg.ingest.dataset_root}"
    else:
        futures, what = _feature_futures(cfg, root, force, gpu), f"Build of {cfg.dataset}"
    with _feedback.progress(f"build {cfg.dataset}", "tasks") as step:
        rows = _summary(futures, step, t0)
    create_table_artifact(rows, key=f"build-{plan.slug(cfg.dataset)}", description=f"{what} into {root}")
    executed = sum(r["status"] == "executed" for r in rows)
    logger.info("%s done in %.1fs: %d stage runs executed, %d cached; shards in %s",
                what, time.time() - t0, executed, len(rows) - executed, root)
    return {"root": root, "stages": rows, "executed": executed, "cached": len(rows) - executed}


def _report(summary: dict, cfg: BuildConfig) -> None:
    """In the build-features run's OWN log (what `prefect flow-run logs` and the UI show first): one line per
    stage run, then the failure rule (too many failed videos: the run fails with the reasons), else a
    WARNING with the count and the first per-video messages when some videos have no features."""
    logger, root = get_run_logger(), Path(summary["root"])
    for line in build_report.stage_lines(summary["stages"]):
        logger.info(line)
    if cfg.ingest.format == "hgr-bundle":
        bundle_plan.check_import_failures(root, cfg)
        return
    warning = build_report.check_failures(root, cfg)  # raises past max_failed_fraction, else the warning (or None)
    if warning:
        logger.warning(warning)


def _feature_futures(cfg: BuildConfig, root: str, force: set[str], gpu: bool) -> list:
    """Ingest (waited for: nothing downstream runs without it), then the video and text chains."""
    ik = plan.ingest_stage_key(cfg)
    ing = _stages.submit_stage(ingest_task, root=root, stage="ingest", key=ik.key, force="ingest" in force,
                               code=ik.code, config=cfg.ingest, inputs=ik.inputs, kwargs={"cfg": cfg})
    ing.wait()
    ing.result()  # raise now if ingest failed
    spread = type(FlowRunContext.get().task_runner).__name__ == "ThreadPoolTaskRunner"
    return [ing] + _video_chain(root, cfg, force, [ing], gpu, spread_gpus=spread) + _text_chain(root, cfg, force, [ing])


def _task_runner(runner: str, n_workers: int, dask_address: str | None, ray_address: str | None,
                 gpu_tasks: bool):
    """The Prefect task runner of a build; refused before any work when the run parameters disagree."""
    if gpu_tasks and runner == "local":
        raise ValueError("gpu_tasks=True needs runner='dask' or 'ray' (an engine that schedules GPUs)")
    for name, value, needs in (("dask_address", dask_address, "dask"), ("ray_address", ray_address, "ray")):
        if value and runner != needs:
            raise ValueError(f"{name} is set but runner={runner!r}: use runner={needs!r}")
    local_gpus = 0
    if gpu_tasks and not (dask_address or ray_address):
        local_gpus = runtime.visible_gpus()
        if not local_gpus:
            raise ValueError("gpu_tasks=True with a local Dask/Ray engine, but no GPU is visible here: "
                             "drop gpu_tasks (CPU run) or point dask_address / ray_address at a cluster with GPUs")
    return _stages.make_task_runner(runner, n_workers, dask_address, local_gpus=local_gpus, ray_address=ray_address)


def _build(cfg: BuildConfig, force: list[str], allow_random: bool, runner, gpu_tasks: bool,
           backbones_needed: bool) -> dict:
    """Weights resolved when some extraction will run (``backbones_needed``; a fully cached build loads
    none and imports no torch), then the DAG as a subflow on ``runner``.

    The subflow sends no heartbeats of its own: it runs in this flow's process and thread, whose
    heartbeats already detect a crash, and Prefect joins a flow's heartbeat thread at exit, which
    sleeps in 1 s steps (each flow end waited up to 1 s: build walls landed on whole seconds)."""
    if backbones_needed:
        cfg = _resolve_weights(cfg, allow_random)
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        summary = build_dag.with_options(task_runner=runner)(cfg, force=force, gpu_resource=gpu_tasks)
    _report(summary, cfg)
    return summary


@flow(name="build-features", log_prints=True)
def build_features(
    dataset: str = "sample",
    dataset_root: str = "data/sample/videos",
    annotation: str = "data/sample/annotation.json",
    out_root: str = "out",
    format: Literal["msrvtt", "vatex", "manifest", "hgr-bundle"] = "msrvtt",
    extractors: list[str] = list(plan.EXTRACTORS),
    max_frames: int = 20,
    frame_stride: int = 16,
    batch_size: int = 32,
    device: str = "auto",
    weights: str = "pretrained",
    resnet_weights: str | None = None,
    i3d_weights: str | None = None,
    allow_random_weights: bool = False,
    shard_size: int = 64,
    max_failed_fraction: float = 0.5,
    generate_sample: int = 0,
    force: list[str] = [],
    runner: Literal["local", "dask", "ray"] = "local",
    n_workers: int = 2,
    dask_address: str | None = None,
    ray_address: str | None = None,
    gpu_tasks: bool = False,
    overrides: dict = {},
) -> dict:
    """Build a dataset's shards.

    ``weights``: the shared default of both backbones, 'pretrained' or 'random' (a local file
    only when a single extractor is enabled). ``resnet_weights`` / ``i3d_weights``: one
    backbone's weights, 'pretrained', 'random' or a local file (torchvision ResNet152 /
    pytorchvideo i3d_r50 state dict), checked against its architecture before any work.
    ``batch_size``: frames per forward pass (I3D: ``batch_size // clip_len`` clips on a GPU; on a
    CPU ``overrides.i3d.cpu_batch_size`` clips, default 1, measured fastest there).
    ``max_failed_fraction``: the build fails (with a summary of the error kinds) when more
    than this share of the videos could not be extracted. ``force``: stage names to recompute
    (ingest, resnet152, i3d_r50, merge-*, parse, concepts, vocab). ``overrides``: nested
    BuildConfig fields, e.g. ``{"i3d": {"clip_len": 16}, "text": {"spacy_model": "en_core_web_md"}}``.
    ``runner``: 'local' threads, 'dask' (a LocalCluster of ``n_workers`` processes, or the
    scheduler at ``dask_address``) or 'ray' (optional: ``pip install -r requirements/ray.txt``;
    a local Ray with ``n_workers`` CPUs, or the cluster at ``ray_address``, e.g. ``ray://head:10001``).
    ``gpu_tasks``: extraction tasks request one GPU from the engine: a ``GPU`` resource on
    Dask (start workers with ``dask worker ADDRESS --resources GPU=1``, one per GPU; a
    LocalCluster gets one worker per visible GPU, worker i using cuda:i), ``num_gpus=1`` on
    Ray (a local Ray advertises the visible GPUs); refused where no GPU is visible. With the
    local runner, ``device`` 'auto'/'cuda' spreads shards round-robin over the visible GPUs.
    ``generate_sample``: when > 0 and the annotation file is missing, first write
    that many deterministic sample videos (the bundled sample dataset).
    """
    # parameters, weight files and the runner first: a bad value or a missing engine fails before any work
    flat = {k: v for k, v in locals().items() if k in plan.FLAT_PARAMS}
    generate = bool(generate_sample) and not Path(annotation).exists()
    cfg, backbones_needed = plan.checked_config(flat, overrides, force, generating_sample=generate)
    runner_obj = _task_runner(runner, n_workers, dask_address, ray_address, gpu_tasks)
    if generate:
        sample_data.generate_sample_dataset(Path(dataset_root).parent, n_videos=generate_sample)
    summary = _build(cfg, list(force), allow_random_weights, runner_obj, gpu_tasks, backbones_needed)
    print(f"shards written under {summary['root']} ({summary['executed']} stage runs executed, {summary['cached']} cached)")
    return summary
