"""A bundle build as a plan of keyed steps (ingest, one import-features per feature folder, parse, concepts,
vocab): the build-features flow submits them as Prefect tasks (flows/_bundle.py), :func:`build_bundle` runs
them in-process; the failure rule of an import."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline.config import BuildConfig
from pipeline.datasets.bundle import (FEATURE_PREFIX, FEATURE_STAGE, feature_sets, layout_of, resolve_config,
                                      run_bundle_ingest, run_import_features)
from pipeline.datasets.bundle_text import (BUNDLE_EMBEDDINGS, bundle_embeddings_file, concept_mode,
                                           run_bundle_concepts, run_bundle_vocab)
from pipeline.fingerprint import code_version, file_fingerprint, sha256_file, stage_key
from pipeline.stage import BuildFailedError, StageResult, run_stage, too_many_failed
from storage import bundle as sb
from storage.tables import read_table


# ----------------------------------------------------------------------------- plan
@dataclass
class Step:
    """One stage (or one feature folder) of a bundle build, with its cache key."""

    stage: str
    key: str
    fn: Callable[..., StageResult]
    kwargs: dict[str, Any]
    config: Any
    inputs: dict[str, Any]
    code: str
    shard: str | None = None
    after: list[str] = field(default_factory=list)   # stage names this one reads from

    @property
    def id(self) -> str:
        return f"{self.stage}/{self.shard}" if self.shard else self.stage


def _bundle_code() -> str:
    import sys

    return code_version(sys.modules[__name__], sb)


def _text_code() -> str:
    from pipeline.text import concepts, hgr_json, lemmas, parse, resources, roles, vocab

    return code_version(parse, roles, hgr_json, lemmas, concepts, vocab, resources)


def plan(cfg: BuildConfig) -> list[Step]:
    """Every step of a bundle build in dependency order (``cfg`` as :func:`resolve_config` gives)."""
    layout = layout_of(cfg)
    root = Path(cfg.out_root) / cfg.dataset
    code, tcode = _bundle_code(), _text_code()
    sha = {k: sha256_file(p) for k, p in layout.files.items() if k != "rolegraphs" and not k.startswith("int2")}
    ing_inputs = {"ref_captions": sha["ref_captions"], **{k: v for k, v in sha.items() if k.startswith("names_")},
                  "root": str(layout.root.resolve())}
    ing_cfg = {"ingest": cfg.ingest.model_dump(mode="json"), "allow_pickle": cfg.bundle.allow_pickle}
    ing = Step("ingest", stage_key("ingest", ing_cfg, code, ing_inputs), run_bundle_ingest, {"cfg": cfg},
               ing_cfg, ing_inputs, code)
    steps = [ing]
    for name, folder in feature_sets(layout).items():
        inputs = {"ingest": ing.key, "files": {s: file_fingerprint(p) for s, p in layout.features[folder].items()}}
        steps.append(Step(FEATURE_STAGE, stage_key(FEATURE_STAGE, {"feature": folder}, code, inputs),
                          run_import_features, {"root": root, "cfg": cfg, "folder": folder}, {"feature": folder},
                          inputs, code, shard=name, after=["ingest"]))
    from pipeline.text.parse import run_parse

    p_inputs = {"ingest": ing.key, "rolegraphs": sha256_file(cfg.text.hgr_json) if cfg.text.hgr_json else None}
    parse = Step("parse", stage_key("parse", cfg.text, tcode, p_inputs), run_parse, {"root": root, "cfg": cfg.text},
                 cfg.text, p_inputs, tcode, after=["ingest"])
    steps.append(parse)
    mode = concept_mode(cfg, layout)
    c_inputs = {"parse": parse.key, "mode": mode,
                "files": {k: sha256_file(p) for k, p in sorted(layout.concepts.items())} if mode == "hanet" else {}}
    c_cfg = {"concepts": cfg.concepts.model_dump(mode="json"), "bundle_concepts": cfg.bundle.concepts}
    steps.append(Step("concepts", stage_key("concepts", c_cfg, code + tcode, c_inputs), run_bundle_concepts,
                      {"root": root, "cfg": cfg}, c_cfg, c_inputs, code + tcode, after=["parse"]))
    v_inputs = {"parse": parse.key, "int2word": sha256_file(layout.files["int2word"]),
                "word2int": sha256_file(layout.files["word2int"])}
    if cfg.vocab.embeddings == BUNDLE_EMBEDDINGS:
        v_inputs["embeddings"] = sha256_file(bundle_embeddings_file(layout))
    v_cfg = {"vocab": cfg.vocab.model_dump(mode="json"), "allow_pickle": cfg.bundle.allow_pickle}
    steps.append(Step("vocab", stage_key("vocab", v_cfg, code + tcode, v_inputs), run_bundle_vocab,
                      {"root": root, "cfg": cfg}, v_cfg, v_inputs, code + tcode, after=["parse"]))
    return steps


def build_bundle(cfg: BuildConfig, force: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """Run a whole bundle build in this process (no Prefect), committed stage by stage.

    The ``build-features`` flow runs the same :func:`plan` as Prefect tasks. Returns
    {'root', 'stages': [{stage, shard, executed, counts}], 'config'}.
    """
    from storage.atomic import atomic_write_text, clean_stale_tmp
    from storage.lock import exclusive_lock

    cfg = resolve_config(cfg)
    root = Path(cfg.out_root) / cfg.dataset
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    with exclusive_lock(root / ".build.lock"):
        clean_stale_tmp(root)
        atomic_write_text(root / "build_config.json", cfg.model_dump_json(indent=2))
        for step in plan(cfg):
            manifest, executed = run_stage(root, step.stage, step.key, lambda s=step: s.fn(**s.kwargs),
                                           config=step.config, inputs=step.inputs, code=step.code,
                                           shard=step.shard, force=step.stage in force)
            rows.append({"stage": step.stage, "shard": step.shard or "", "executed": executed,
                         "counts": manifest.counts})
    return {"root": str(root), "stages": rows, "config": cfg}


def import_failure_summary(root: Path) -> tuple[int, int, dict[str, int]]:
    """(videos, videos without imported features in some feature set, error kinds -> count)."""
    failed: dict[str, str | None] = {}
    keys: set[str] = set()
    for path in sorted((root / "features").glob(f"{FEATURE_PREFIX}*/status.parquet")):
        for r in read_table(path, "feature_status", columns=["key", "status", "error_message"]).to_pylist():
            keys.add(r["key"])
            if r["status"] != "ok":
                failed.setdefault(r["key"], r["error_message"])
    kinds: dict[str, int] = {}
    for msg in failed.values():
        kind = "no feature dataset" if (msg or "").startswith("no feature dataset") else "unusable feature dataset"
        kinds[kind] = kinds.get(kind, 0) + 1
    return len(keys), len(failed), kinds


def check_import_failures(root: Path, cfg: BuildConfig) -> None:
    """Raise :class:`BuildFailedError` when too many videos have no usable features in the bundle."""
    n, n_failed, kinds = import_failure_summary(root)
    if too_many_failed(n, n_failed, cfg.max_failed_fraction):
        raise BuildFailedError(
            f"{n_failed} of {n} videos have no usable features in the bundle (more than max_failed_fraction="
            f"{cfg.max_failed_fraction:g}): {', '.join(f'{k}: {v}' for k, v in kinds.items())}. Per-video "
            f"messages: {root}/features/{FEATURE_PREFIX}*/status.parquet")
