"""What a feature build computes, without Prefect: its config, its weights, its stages' cache keys,
its summary rows and its failure rule.

flows/build.py only declares the tasks and submits them with these keys; the CLI (through the flow),
the flows and the tests call the same functions, so a key or a config field cannot drift between them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, NamedTuple

from pipeline.config import BuildConfig, I3DConfig, ResNetConfig
from pipeline.datasets import ingest
from pipeline.datasets.annotations import annotation_sources
from pipeline import runtime
from pipeline.devices import shard_devices
from pipeline.fingerprint import code_version, content_fingerprint, sha256_file, shard_fingerprint, stage_key
from pipeline.text import concepts as text_concepts
from pipeline.text import hgr_json, lemmas, resources, roles, vocab
from pipeline.text import parse as text_parse
from pipeline.video import shards
from storage.manifest import is_committed

EXTRACTORS = ("resnet152", "i3d_r50")
# the modules each stage runs: their import closure is the stage's code fingerprint (pipeline/fingerprint.py).
# Video modules by NAME: planning a build (keys, cached or not) must not import torch (pipeline/runtime.py).
INGEST_MODULES = (ingest,)
TEXT_MODULES = (text_parse, roles, hgr_json, lemmas, text_concepts, vocab, resources)
VIDEO_MODULES = ("pipeline.video.extract", "pipeline.video.decode", "pipeline.video.backbones")
MERGE_MODULES = ("pipeline.video.merge",)
EXTRACTOR_OF = {"resnet": "resnet152", "i3d": "i3d_r50"}
STAGES = ("ingest", *EXTRACTORS, *(f"merge-{e}" for e in EXTRACTORS), "import-features", "parse", "concepts",
          "vocab")  # import-features: format hgr-bundle (flows/_bundle.py)

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
SHARED_WEIGHTS = ("pretrained", "random")
NAMED_WEIGHTS = {"resnet152": ("imagenet", "imagenet_v2", "random"), "i3d_r50": ("kinetics", "random")}
PRETRAINED = {"resnet152": "imagenet", "i3d_r50": "kinetics"}


# ---- config ----------------------------------------------------------------------------------------------

def deep_merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` merged in, nested dicts merged key by key (``extra`` wins)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def extractor_weights(extractors: list[str], weights: str, resnet_weights: str | None,
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
    frames, I3D ``max(1, batch_size // clip_len)`` clips (the same pixels per pass) on a GPU; I3D on a
    CPU runs ``i3d.cpu_batch_size`` clips per pass (cache-bound there: pipeline/config.py).
    """
    unknown = set(extractors) - set(EXTRACTORS)
    if unknown:
        raise ValueError(f"unknown extractors {sorted(unknown)}; choose from {list(EXTRACTORS)}")
    overrides = overrides or {}
    w = extractor_weights(extractors, weights, resnet_weights, i3d_weights)
    base = {
        "dataset": dataset, "out_root": out_root, "shard_size": shard_size,
        "max_failed_fraction": max_failed_fraction,
        "ingest": {"format": format, "dataset_root": dataset_root, "annotation": annotation},
        "decode": {"max_frames": max_frames, "frame_stride": frame_stride},
        "resnet": {"enabled": "resnet152" in extractors, "weights": w["resnet152"], "batch_size": batch_size,
                   "device": device},
        "i3d": {"enabled": "i3d_r50" in extractors, "weights": w["i3d_r50"], "device": device},
    }
    merged = deep_merge(base, overrides)
    if "batch_size" not in overrides.get("i3d", {}):
        clip_len = merged["i3d"].get("clip_len", I3DConfig.model_fields["clip_len"].default)
        merged["i3d"]["batch_size"] = max(1, batch_size // clip_len)
    return BuildConfig.model_validate(merged)


def check_force(force: Iterable[str]) -> None:
    """``force`` names only stages of a build."""
    bad = set(force) - set(STAGES)
    if bad:
        raise ValueError(f"unknown stages in force: {sorted(bad)}; stages are {list(STAGES)}")


def checked_config(flat: dict[str, Any], overrides: dict | None, force: Iterable[str] = (),
                   generating_sample: bool = False) -> tuple[BuildConfig, bool]:
    """The build-features flow's parameters -> (the BuildConfig to build, whether any extraction shard
    will run: :func:`backbones_needed`), checked before any work: ``force`` names stages, a bundle's
    pieces are found (format hgr-bundle), the annotation and dataset_root exist (unless ``generating_sample``
    writes them next), local weight files fit their backbone (when some extraction
    will run: a committed shard's key already holds its weight file's fingerprint)."""
    check_force(force)
    cfg = make_build_config(**flat, overrides=overrides)
    if cfg.ingest.format == "hgr-bundle":  # no extractors; annotation/text from the bundle (pipeline/datasets/bundle.py)
        from pipeline.datasets.bundle import resolve_config

        cfg = resolve_config(cfg)
    elif not generating_sample:  # generate_sample writes the annotation and the videos next
        check_inputs(cfg)
    needed = backbones_needed(cfg, force)
    if needed:
        validate_weight_files(cfg)
    return cfg, needed


def check_inputs(cfg: BuildConfig) -> None:
    """The annotation file(s) and ``dataset_root`` exist: a user error naming the parameter, before any work."""
    from pipeline.feedback import UserError

    for role, path in annotation_sources(cfg.ingest):
        if not Path(path).is_file():
            what = f"annotation={cfg.ingest.annotation!r}" + (f" (role {role})" if role else "")
            raise UserError(f"{what}: {path} does not exist; pass the annotation file (MSR-VTT / VATEX JSON, "
                            "CSV/JSONL manifest), or generate_sample=N to write the sample dataset there first")
    if not Path(cfg.ingest.dataset_root).is_dir():
        raise UserError(f"dataset_root={cfg.ingest.dataset_root!r}: no such folder; pass the folder holding the "
                        f"videos (named <video_id>{cfg.ingest.video_ext} for MSR-VTT / VATEX)")


def backbones_needed(cfg: BuildConfig, force: Iterable[str] = ()) -> bool:
    """Whether any extraction shard of ``cfg`` will run: an extractor or ingest forced, ingest not
    committed under its key (the videos may change), or a shard not committed under its key. When
    False the build loads no backbone and imports no torch (a cached rerun; pipeline/runtime.py)."""
    enabled = [name for name, sub in (("resnet152", cfg.resnet), ("i3d_r50", cfg.i3d)) if sub.enabled]
    if cfg.ingest.format == "hgr-bundle" or not enabled:
        return False
    root = Path(cfg.out_root) / cfg.dataset
    annotations_present = all(Path(p).exists() for _, p in annotation_sources(cfg.ingest))
    if set(force) & {"ingest", *enabled} or not annotations_present:
        return True
    if not is_committed(root, "ingest", ingest_stage_key(cfg).key):
        return True
    return any(not is_committed(root, k.extractor, k.key, k.spec.id) for k in video_stage_keys(root, cfg))


# ---- weights ---------------------------------------------------------------------------------------------

def validate_weight_files(cfg: BuildConfig) -> None:
    """Every local weights file exists and fits its architecture: checked before any work."""
    for name, sub in (("resnet152", cfg.resnet), ("i3d_r50", cfg.i3d)):
        if not sub.enabled or sub.weights in NAMED_WEIGHTS[name]:
            continue
        from pipeline.video import backbones  # torch: only when a local weights file is in play

        param = {"resnet152": "resnet_weights", "i3d_r50": "i3d_weights"}[name]
        if not Path(sub.weights).is_file():
            raise FileNotFoundError(f"{param}={sub.weights!r}: no such file (expected 'pretrained', 'random' or "
                                    f"a local {name} weights file)")
        backbones.validate_weights_file(name, sub.weights)


def resolve_weights(cfg: BuildConfig, allow_random: bool) -> tuple[BuildConfig, dict[str, Exception]]:
    """Load each enabled backbone's pretrained weights (cached: the extraction tasks reuse them).

    Unreachable weights raise :class:`backbones.BackboneWeightsError` (saying what to do), or with
    ``allow_random`` fall back to ``weights=random``: returns the config to build with and, per
    backbone that fell back ('resnet' / 'i3d'), the error, for the caller to report LOUDLY.
    """
    from pipeline.video import backbones  # torch: only when some extraction will run (flows/build.py)

    updates: dict[str, ResNetConfig | I3DConfig] = {}
    fallbacks: dict[str, Exception] = {}
    for name, sub in (("resnet", cfg.resnet), ("i3d", cfg.i3d)):
        if not sub.enabled or sub.weights == "random":
            continue
        try:
            backbones.get_backbone(EXTRACTOR_OF[name], sub)
        except backbones.BackboneWeightsError as err:
            fallbacks[name] = err
            updates[name] = sub.model_copy(update={"weights": "random"})
    if fallbacks and not allow_random:  # one message for every backbone that lacks its weights
        errors = list(fallbacks.values())
        raise errors[0] if len(errors) == 1 else backbones.BackboneWeightsError(" | ".join(map(str, errors)))
    return cfg.model_copy(update=updates), fallbacks


# ---- stage keys ------------------------------------------------------------------------------------------

class StageKey(NamedTuple):
    """One stage (or shard) run as the flow submits it: its key and what the key was made of."""

    key: str
    code: str
    inputs: dict[str, Any]


class ShardKey(NamedTuple):
    """(extractor, spec, key, model_cfg, code, inputs) of one feature shard."""

    extractor: str
    spec: shards.ShardSpec
    key: str
    model_cfg: ResNetConfig | I3DConfig
    code: str
    inputs: dict[str, Any]


def ingest_stage_key(cfg: BuildConfig) -> StageKey:
    """Annotation/split-list contents + every video file's size and mtime (+ a retry of read errors)."""
    inputs = ingest.ingest_inputs(cfg.ingest, Path(cfg.out_root) / cfg.dataset)
    code = code_version(*INGEST_MODULES)
    return StageKey(stage_key("ingest", cfg.ingest, code, inputs), code, inputs)


def video_stage_keys(root: Path, cfg: BuildConfig) -> list[ShardKey]:
    """One :class:`ShardKey` per enabled extractor and shard of ``root``'s videos table."""
    code = code_version(*VIDEO_MODULES)
    specs = shards.plan_shards(root, cfg.shard_size, cfg.ingest.dataset_root)
    out = []
    for name, sub in (("resnet152", cfg.resnet), ("i3d_r50", cfg.i3d)):
        if not sub.enabled:
            continue
        wfp = content_fingerprint(sub.weights) if Path(sub.weights).is_file() else sub.weights  # by sha256
        # resolved device TYPE and precision + library versions: bf16 and fp32 (or cpu and cuda)
        # features never share a key; the device index (round-robin over GPUs) does not count
        rt = runtime.runtime_fingerprint(sub.device, sub.bf16)
        model_key = sub.model_dump(mode="json", exclude={"device"})
        for spec in specs:
            inputs = {"videos": shard_fingerprint(spec), "weights": wfp, "runtime": rt}
            key = stage_key(name, {"decode": cfg.decode, "model": model_key}, code, inputs)
            out.append(ShardKey(name, spec, key, sub, code, inputs))
    return out


def shard_device_map(planned: list[ShardKey], cfg: BuildConfig, spread_gpus: bool) -> dict:
    """(extractor, shard id) -> device: cuda:(i mod visible GPUs) when spreading, else None (the worker picks)."""
    picked = {}
    for name, sub in (("resnet152", cfg.resnet), ("i3d_r50", cfg.i3d)):
        ids = [s.spec.id for s in planned if s.extractor == name]
        picks = shard_devices(sub.device, len(ids)) if spread_gpus else [None] * len(ids)
        picked.update({(name, sid): d for sid, d in zip(ids, picks)})
    return picked


def merge_stage_key(extractor: str, shard_keys: list[str]) -> StageKey:
    """The merge of one extractor's shards: keyed by the shards' keys."""
    code = code_version(*MERGE_MODULES)
    inputs = {"shards": list(shard_keys)}
    return StageKey(stage_key(f"merge-{extractor}", {}, code, inputs), code, inputs)


def text_stage_keys(root: str | Path, cfg: BuildConfig) -> dict[str, StageKey]:
    """parse (keyed by the captions table's content hash) and concepts / vocab (keyed by parse's key)."""
    code = code_version(*TEXT_MODULES)
    parse_inputs = {"captions": sha256_file(Path(root) / "captions.parquet")}
    pkey = stage_key("parse", cfg.text, code, parse_inputs)
    out = {"parse": StageKey(pkey, code, parse_inputs)}
    for name, sub in (("concepts", cfg.concepts), ("vocab", cfg.vocab)):
        out[name] = StageKey(stage_key(name, sub, code, {"parse": pkey}), code, {"parse": pkey})
    return out


# ---- a build's summary rows, failure rule and stage lines: pipeline/build_report.py ----


def sort_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in DAG order (STAGES), then by shard."""
    return sorted(rows, key=lambda r: (STAGES.index(r["stage"]) if r["stage"] in STAGES else 99, r["shard"]))


def slug(name: str) -> str:
    """``name`` with every non-alphanumeric character as '-' (Prefect artifact keys)."""
    return "".join(c if c.isalnum() else "-" for c in name.lower())
