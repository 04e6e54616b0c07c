"""The feature DAG: ingest -> [per shard] decode + ResNet152 / I3D -> merge; captions -> text stages.

Deployments (prefect.yaml): build-features/build-msrvtt-features,
build-features/build-vatex-features, build-features/build-sample-features.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow
from prefect.context import FlowRunContext
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.logging import get_run_logger

from flows import _stages
from pipeline.config import BuildConfig, I3DConfig
from pipeline.datasets import ingest, sample_data
from pipeline.fingerprint import code_version, file_fingerprint, sha256_file
from pipeline.stage import stage_key
from pipeline.text import concepts as text_concepts
from pipeline.text import hgr_json, lemmas, resources, roles, vocab
from pipeline.text import parse as text_parse
from pipeline.video import backbones, decode, extract
from storage.atomic import atomic_write_text, clean_stale_tmp
from storage.lock import exclusive_lock
from storage.tables import read_table

EXTRACTORS = ("resnet152", "i3d_r50")
TEXT_MODULES = (text_parse, roles, hgr_json, lemmas, text_concepts, vocab, resources)
VIDEO_MODULES = (extract, decode, backbones)
EXTRACTOR_OF = {"resnet": "resnet152", "i3d": "i3d_r50"}
STAGES = ("ingest", *EXTRACTORS, *(f"merge-{e}" for e in EXTRACTORS), "import-features", "parse", "concepts",
          "vocab")  # import-features: format hgr-bundle (flows/_bundle.py)

ingest_task = _stages.stage_task("ingest", ingest.run_ingest)


def _extract_shard(spec: dict, **kwargs):
    """ShardSpec travels as a plain dict (Prefect walks task parameters as collections)."""
    return extract.extract_shard(spec=extract.ShardSpec.model_validate(spec), **kwargs)


extract_task = _stages.stage_task("extract", _extract_shard)
merge_task = _stages.stage_task("merge", extract.finalize_features)
parse_task = _stages.stage_task("parse", text_parse.run_parse)
concepts_task = _stages.stage_task("concepts", text_parse.run_concepts)
vocab_task = _stages.stage_task("vocab", text_parse.run_vocab)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Flat flow parameter -> the BuildConfig fields it sets (``overrides`` win over all of them).
# tests/test_build_params.py enumerates the flow's signature against this table, so a new flat
# parameter that reaches no stage fails there.
FLAT_PARAMS: dict[str, tuple[str, ...]] = {
    "dataset": ("dataset",),
    "dataset_root": ("ingest.dataset_root",),
    "annotation": ("ingest.annotation",),
    "out_root": ("out_root",),
    "format": ("ingest.format",),
    "extractors": ("resnet.enabled", "i3d.enabled"),
    "max_frames": ("decode.max_frames",),
    "frame_stride": ("decode.frame_stride",),
    "batch_size": ("resnet.batch_size", "i3d.batch_size"),
    "device": ("resnet.device", "i3d.device"),
    "weights": ("resnet.weights", "i3d.weights"),
    "resnet_weights": ("resnet.weights",),
    "i3d_weights": ("i3d.weights",),
    "shard_size": ("shard_size",),
    "max_failed_fraction": ("max_failed_fraction",),
}
# Flow parameters that steer the run, not what a stage computes.
RUN_PARAMS = ("allow_random_weights", "generate_sample", "force", "runner", "n_workers", "dask_address",
              "ray_address", "gpu_tasks", "overrides")
SHARED_WEIGHTS = ("pretrained", "random")
NAMED_WEIGHTS = {"resnet152": ("imagenet", "imagenet_v2", "random"), "i3d_r50": ("kinetics", "random")}
PRETRAINED = {"resnet152": "imagenet", "i3d_r50": "kinetics"}


def _extractor_weights(extractors: list[str], weights: str, resnet_weights: str | None,
                       i3d_weights: str | None) -> dict[str, str]:
    """Each enabled extractor's weights: its own parameter, else the shared ``weights``."""
    both = set(EXTRACTORS) <= set(extractors)
    if weights not in SHARED_WEIGHTS and both:
        raise ValueError(
            f"weights={weights!r}: a weights file fits one backbone only, and both resnet152 and i3d_r50 are "
            "enabled. Pass resnet_weights=<ResNet152 file> and i3d_weights=<I3D-R50 file> (each 'pretrained', "
            "'random' or a local file); weights= only sets the shared default 'pretrained' or 'random'")
    out = {}
    for name, own in (("resnet152", resnet_weights), ("i3d_r50", i3d_weights)):
        value = own or weights
        out[name] = PRETRAINED[name] if value == "pretrained" else value
    return out


def make_build_config(dataset: str, dataset_root: str, annotation: str, out_root: str, format: str,
                      extractors: list[str], max_frames: int, frame_stride: int, batch_size: int,
                      device: str, weights: str, shard_size: int, overrides: dict | None,
                      resnet_weights: str | None = None, i3d_weights: str | None = None,
                      max_failed_fraction: float = 0.5) -> BuildConfig:
    """Flat deployment parameters (+ nested ``overrides``, which win) -> one validated BuildConfig.

    ``batch_size`` is frames per forward pass for both backbones: ResNet152 batches that many
    frames, I3D ``max(1, batch_size // clip_len)`` clips (the same pixels per pass).
    """
    unknown = set(extractors) - set(EXTRACTORS)
    if unknown:
        raise ValueError(f"unknown extractors {sorted(unknown)}; choose from {list(EXTRACTORS)}")
    overrides = overrides or {}
    w = _extractor_weights(extractors, weights, resnet_weights, i3d_weights)
    base = {
        "dataset": dataset, "out_root": out_root, "shard_size": shard_size,
        "max_failed_fraction": max_failed_fraction,
        "ingest": {"format": format, "dataset_root": dataset_root, "annotation": annotation},
        "decode": {"max_frames": max_frames, "frame_stride": frame_stride},
        "resnet": {"enabled": "resnet152" in extractors, "weights": w["resnet152"], "batch_size": batch_size,
                   "device": device},
        "i3d": {"enabled": "i3d_r50" in extractors, "weights": w["i3d_r50"], "device": device},
    }
    merged = _deep_merge(base, overrides)
    if "batch_size" not in overrides.get("i3d", {}):
        clip_len = merged["i3d"].get("clip_len", I3DConfig.model_fields["clip_len"].default)
        merged["i3d"]["batch_size"] = max(1, batch_size // clip_len)
    return BuildConfig.model_validate(merged)


def validate_weight_files(cfg: BuildConfig) -> None:
    """Every local weights file exists and fits its architecture: checked before any work."""
    for name, sub in (("resnet152", cfg.resnet), ("i3d_r50", cfg.i3d)):
        if not sub.enabled or sub.weights in NAMED_WEIGHTS[name]:
            continue
        param = {"resnet152": "resnet_weights", "i3d_r50": "i3d_weights"}[name]
        if not Path(sub.weights).is_file():
            raise FileNotFoundError(f"{param}={sub.weights!r}: no such file (expected 'pretrained', 'random' or "
                                    f"a local {name} weights file)")
        backbones.validate_weights_file(name, sub.weights)


def _resolve_weights(cfg: BuildConfig, allow_random: bool) -> BuildConfig:
    """Fail early (with what to do) when pretrained weights are unreachable, or fall back loudly."""
    logger = get_run_logger()
    updates = {}
    for name, sub in (("resnet", cfg.resnet), ("i3d", cfg.i3d)):
        if not sub.enabled or sub.weights == "random":
            continue
        try:
            backbones.get_backbone(EXTRACTOR_OF[name], sub)  # cached: the task reuses it
        except backbones.BackboneWeightsError as err:
            if not allow_random:
                raise
            logger.warning("!!! %s: pretrained weights unavailable (%s). FALLING BACK TO weights=random: "
                           "features are NOT meaningful beyond smoke tests; provenance is recorded in "
                           "every shard.", name, err)
            updates[name] = sub.model_copy(update={"weights": "random"})
    return cfg.model_copy(update=updates)


def _ingest_inputs(cfg: BuildConfig) -> dict[str, Any]:
    """Annotation/split-list contents + every video file's size and mtime (+ a retry of read errors)."""
    return ingest.ingest_inputs(cfg.ingest, Path(cfg.out_root) / cfg.dataset)


def _video_stage_keys(root: Path, cfg: BuildConfig):
    """(extractor, spec, key, model_cfg, code, inputs) for every enabled extractor and shard."""
    code = code_version(*VIDEO_MODULES)
    specs = extract.plan_shards(root, cfg.shard_size, cfg.ingest.dataset_root)
    out = []
    for name, sub in (("resnet152", cfg.resnet), ("i3d_r50", cfg.i3d)):
        if not sub.enabled:
            continue
        wfp = file_fingerprint(sub.weights) if Path(sub.weights).is_file() else sub.weights
        # resolved device TYPE and precision + library versions: bf16 and fp32 (or cpu and cuda)
        # features never share a key; the device index (round-robin over GPUs) does not count
        runtime = backbones.runtime_fingerprint(sub)
        model_key = sub.model_dump(mode="json", exclude={"device"})
        for spec in specs:
            inputs = {"videos": spec.fingerprint(), "weights": wfp, "runtime": runtime}
            key = stage_key(name, {"decode": cfg.decode, "model": model_key}, code, inputs)
            out.append((name, spec, key, sub, code, inputs))
    return out


def _text_chain(root: str, cfg: BuildConfig, force: set[str], wait_for) -> list:
    """parse -> (concepts, vocab), keyed by the captions table's content hash."""
    code = code_version(*TEXT_MODULES)
    captions_sha = sha256_file(Path(root) / "captions.parquet")
    pkey = stage_key("parse", cfg.text, code, {"captions": captions_sha})
    parse = _stages.submit_stage(parse_task, root=root, stage="parse", key=pkey, force="parse" in force,
                                 code=code, config=cfg.text, inputs={"captions": captions_sha},
                                 kwargs={"root": Path(root), "cfg": cfg.text}, wait_for=wait_for)
    futures = [parse]
    for name, fn, sub in (("concepts", concepts_task, cfg.concepts), ("vocab", vocab_task, cfg.vocab)):
        key = stage_key(name, sub, code, {"parse": pkey})
        futures.append(_stages.submit_stage(fn, root=root, stage=name, key=key, force=name in force,
                                            code=code, config=sub, inputs={"parse": pkey},
                                            kwargs={"root": Path(root), "cfg": sub}, wait_for=[parse]))
    return futures


def _video_chain(root: str, cfg: BuildConfig, force: set[str], wait_for, gpu: bool = False,
                 spread_gpus: bool = False) -> list:
    """Extraction task per (extractor, shard) + one merge per extractor.

    ``spread_gpus`` (local runner): shard i runs on cuda:(i mod visible GPUs) when the device is
    'auto'/'cuda', so concurrent shard tasks use one GPU each (Dask/Ray pick per worker instead).
    """
    futures, by_extractor = [], {}
    planned = _video_stage_keys(Path(root), cfg)
    devices = {}
    for name, sub in (("resnet152", cfg.resnet), ("i3d_r50", cfg.i3d)):
        specs = [spec.id for n, spec, *_ in planned if n == name]
        devices.update({(name, sid): d for sid, d in zip(specs, _stages.shard_devices(sub.device, len(specs))
                                                              if spread_gpus else [None] * len(specs))})
    for name, spec, key, sub, code, inputs in planned:
        kwargs = {"root": Path(root), "spec": spec.model_dump(), "extractor": name, "decode_cfg": cfg.decode,
                  "model_cfg": sub, "dataset_root": Path(cfg.ingest.dataset_root),
                  "device": devices[(name, spec.id)]}
        with _stages.gpu_resource(gpu):  # extraction tasks ask the engine for a GPU
            f = _stages.submit_stage(extract_task, root=root, stage=name, key=key, shard=spec.id,
                                     force=name in force, code=code, config=sub, inputs=inputs,
                                     kwargs=kwargs, wait_for=wait_for)
        by_extractor.setdefault(name, []).append((spec.id, key, f))
    merge_code = code_version(extract)
    for name, shards in by_extractor.items():
        stage = f"merge-{name}"
        key = stage_key(stage, {}, merge_code, {"shards": [k for _, k, _ in shards]})
        futures += [f for _, _, f in shards]
        futures.append(_stages.submit_stage(
            merge_task, root=root, stage=stage, key=key, force=stage in force, code=merge_code,
            inputs={"shards": [k for _, k, _ in shards]},
            kwargs={"root": Path(root), "extractor": name, "shard_ids": [s for s, _, _ in shards]},
            wait_for=[f for _, _, f in shards]))
    return futures


def _summary(futures: list, progress_id, started_at: float) -> list[dict]:
    """One row per stage run; 'executed' iff its manifest was committed during this build."""
    rows, done = [], 0
    for fut in as_completed(futures):
        done += 1
        if progress_id is not None:
            update_progress_artifact(progress_id, progress=100.0 * done / len(futures))
        res = fut.result()
        status = "executed" if res["created_at"] >= started_at else "cached"
        rows.append({"stage": res["stage"], "shard": res.get("shard") or "", "status": status,
                     "seconds": res["timings_s"].get("total", 0.0),
                     "counts": json.dumps(res["counts"], sort_keys=True)})
    rows.sort(key=lambda r: (STAGES.index(r["stage"]) if r["stage"] in STAGES else 99, r["shard"]))
    return rows


@flow(name="build-dag")
def build_dag(cfg: BuildConfig, force: list[str] | None = None, gpu_resource: bool = False) -> dict:
    """Run every stage of ``cfg`` (cached ones are skipped) and return a summary."""
    logger, t0 = get_run_logger(), time.time()
    force = set(force or [])
    root = str(Path(cfg.out_root) / cfg.dataset)
    with exclusive_lock(Path(root) / ".build.lock"):
        return _run_dag(cfg, root, force, logger, t0, gpu_resource)


def _run_dag(cfg: BuildConfig, root: str, force: set[str], logger, t0: float, gpu: bool) -> dict:
    if cfg.ingest.format == "hgr-bundle":  # released data: features imported, no decoding (pipeline/datasets/bundle.py)
        from flows._bundle import run_bundle_dag

        return run_bundle_dag(cfg, root, force, logger, t0)
    removed = clean_stale_tmp(root)
    if removed:
        logger.info("removed %d temporary files left by an interrupted run", removed)
    atomic_write_text(Path(root) / "build_config.json", cfg.model_dump_json(indent=2))
    ing_inputs = _ingest_inputs(cfg)
    ing_key = stage_key("ingest", cfg.ingest, code_version(ingest), ing_inputs)
    ing = _stages.submit_stage(ingest_task, root=root, stage="ingest", key=ing_key, force="ingest" in force,
                               code=code_version(ingest), config=cfg.ingest, inputs=ing_inputs,
                               kwargs={"cfg": cfg})
    ing.wait()
    ing.result()  # raise now if ingest failed: nothing downstream can run
    spread = type(FlowRunContext.get().task_runner).__name__ == "ThreadPoolTaskRunner"
    futures = ([ing] + _video_chain(root, cfg, force, [ing], gpu, spread_gpus=spread)
               + _text_chain(root, cfg, force, [ing]))
    progress = create_progress_artifact(progress=0.0, key=None, description=f"{cfg.dataset}: stages done")
    rows = _summary(futures, progress, t0)
    create_table_artifact(rows, key=f"build-{_slug(cfg.dataset)}",
                          description=f"Build of {cfg.dataset} into {root}")
    executed = sum(r["status"] == "executed" for r in rows)
    logger.info("build of %s done in %.1fs: %d stage runs executed, %d cached; shards in %s",
                cfg.dataset, time.time() - t0, executed, len(rows) - executed, root)
    check_failures(Path(root), cfg)
    return {"root": root, "stages": rows, "executed": executed, "cached": len(rows) - executed}


def error_kind(message: str | None) -> str:
    """The kind of an error row: its message up to the first ':' (e.g. 'ingest', 'DecodeError')."""
    return (message or "unknown").split(":", 1)[0].strip() or "unknown"


def failure_summary(root: Path, cfg: BuildConfig) -> tuple[int, int, dict[str, int]]:
    """(videos, videos without features, error kinds -> count) over the enabled extractors' status tables.

    A video counts as failed when any enabled extractor has no features for it; with no
    extractor enabled, ingest's ``videos.parquet`` statuses decide.
    """
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
    kinds: dict[str, int] = {}
    for msg in failed.values():
        kinds[error_kind(msg)] = kinds.get(error_kind(msg), 0) + 1
    return len(keys), len(failed), dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


class BuildFailedError(RuntimeError):
    """Too many videos of a build have no features: the build did not do its job."""


def check_failures(root: Path, cfg: BuildConfig) -> None:
    n, n_failed, kinds = failure_summary(root, cfg)
    if n and n_failed / n > cfg.max_failed_fraction or (n_failed and n_failed == n):
        summary = ", ".join(f"{k}: {v}" for k, v in kinds.items())
        raise BuildFailedError(
            f"{n_failed} of {n} videos failed (more than max_failed_fraction={cfg.max_failed_fraction:g}); "
            f"error kinds: {summary}. Per-video messages: {root}/features/*/status.parquet "
            f"(and videos.parquet); the shards written so far are kept")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower())


@flow(name="build-features", log_prints=True)
def build_features(
    dataset: str = "sample",
    dataset_root: str = "data/sample/videos",
    annotation: str = "data/sample/annotation.json",
    out_root: str = "out",
    format: Literal["msrvtt", "vatex", "manifest", "hgr-bundle"] = "msrvtt",
    extractors: list[str] = list(EXTRACTORS),
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
    ``batch_size``: frames per forward pass (I3D: ``batch_size // clip_len`` clips).
    ``max_failed_fraction``: the build fails (with a summary of the error kinds) when more
    than this share of the videos could not be extracted.

    ``force``: stage names to recompute (ingest, resnet152, i3d_r50, merge-*, parse,
    concepts, vocab). ``overrides``: nested BuildConfig fields, e.g.
    ``{"i3d": {"clip_len": 16}, "text": {"spacy_model": "en_core_web_md"}}``.
    ``runner``: 'local' threads, 'dask' (a LocalCluster of ``n_workers`` processes, or the
    scheduler at ``dask_address``) or 'ray' (optional: ``pip install -r requirements/ray.txt``;
    a local Ray with ``n_workers`` CPUs, or the cluster at ``ray_address``, e.g.
    ``ray://head:10001``).
    ``gpu_tasks``: extraction tasks request one GPU from the engine: a ``GPU`` resource on
    Dask (start workers with ``dask worker ADDRESS --resources GPU=1``, one per GPU; a
    LocalCluster gets one worker per visible GPU, worker i using cuda:i), ``num_gpus=1`` on
    Ray (a local Ray advertises the visible GPUs); refused where no GPU is visible. With the
    local runner, ``device`` 'auto'/'cuda' spreads shards round-robin over the visible GPUs.
    ``generate_sample``: when > 0 and the annotation file is missing, first write
    that many deterministic sample videos (the bundled sample dataset).
    """
    if gpu_tasks and runner == "local":
        raise ValueError("gpu_tasks=True needs runner='dask' or 'ray' (an engine that schedules GPUs)")
    for name, value, needs in (("dask_address", dask_address, "dask"), ("ray_address", ray_address, "ray")):
        if value and runner != needs:
            raise ValueError(f"{name} is set but runner={runner!r}: use runner={needs!r}")
    # parameters, weight files and the runner first: a bad value or a missing engine fails before any work
    bad = set(force) - set(STAGES)
    if bad:
        raise ValueError(f"unknown stages in force: {sorted(bad)}; stages are {list(STAGES)}")
    cfg = make_build_config(dataset, dataset_root, annotation, out_root, format, extractors, max_frames,
                            frame_stride, batch_size, device, weights, shard_size, overrides,
                            resnet_weights=resnet_weights, i3d_weights=i3d_weights,
                            max_failed_fraction=max_failed_fraction)
    if cfg.ingest.format == "hgr-bundle":  # no extractors; annotation/text from the bundle (pipeline/datasets/bundle.py)
        from pipeline.datasets.bundle import resolve_config

        cfg = resolve_config(cfg)
    validate_weight_files(cfg)
    local_gpus = 0
    if gpu_tasks and not (dask_address or ray_address):
        local_gpus = _stages.visible_gpus()
        if not local_gpus:
            raise ValueError("gpu_tasks=True with a local Dask/Ray engine, but no GPU is visible here: "
                             "drop gpu_tasks (CPU run) or point dask_address / ray_address at a cluster with GPUs")
    runner_obj = _stages.make_task_runner(runner, n_workers, dask_address, local_gpus=local_gpus,
                                          ray_address=ray_address)
    get_run_logger().info("torch threads: %d (VTR_NUM_THREADS, else the CPUs available)",
                          _stages.configure_threads())
    if generate_sample and not Path(annotation).exists():
        sample_data.generate_sample_dataset(Path(dataset_root).parent, n_videos=generate_sample)
    cfg = _resolve_weights(cfg, allow_random_weights)
    summary = build_dag.with_options(task_runner=runner_obj)(cfg, force=list(force), gpu_resource=gpu_tasks)
    print(f"shards written under {summary['root']} "
          f"({summary['executed']} stage runs executed, {summary['cached']} cached)")
    return summary
