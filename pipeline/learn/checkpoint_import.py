"""Import a reference implementation's checkpoint as this project's checkpoint, for any registered model.

``import_checkpoint(model, SRC, DST, ...)`` reads the source file (storage/), the vocabulary lists it is
remapped between (the reference's files, the shard tree's tables: pipeline.learn.import_vocab), hands them
to the model's registered importer (``models.registry.import_state``: pure functions over tensors and
lists, e.g. models.import_reference.import_hanet_state, models.hgr_import.import_hgr_state) and writes the
filled model as a checkpoint of this project's format (model_name, config_json = the TrainConfig holding
the imported config, weights, ``imported_from``, ``vocab``), which ``vtr evaluate`` reads.
``vtr import-checkpoint --model NAME`` (flows/cli.py) is its command line.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from models import registry
from pipeline.learn.config import TrainConfig
from pipeline.learn.import_vocab import read_concept_list, read_reference_words, shard_vocabularies

# options whose value is a file this module reads into a list for the importer
_FILE_OPTIONS = {"vocab": "reference_words"}


def _importer_kwargs(name: str, *, vocab, shards, verb_concepts, noun_concepts, **options) -> dict[str, Any]:
    """The importer's keyword arguments from the command's options (files read here); an option the
    model's importer does not take is refused (one line naming it)."""
    if (vocab or verb_concepts or noun_concepts) and shards is None:
        raise ValueError("remapping a vocabulary needs the shard tree it is for (shards=...)")
    kw: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
    if shards is not None:
        kw["build_vocab"] = shard_vocabularies(shards)
    if vocab is not None:
        kw["reference_words"] = read_reference_words(vocab)
    concepts = {k: read_concept_list(p) for k, p in (("verb", verb_concepts), ("noun", noun_concepts)) if p}
    if concepts:
        kw["reference_concepts"] = concepts
    accepted = inspect.signature(registry.get_spec(name).import_function()).parameters
    given = {"reference_words": "vocab", "reference_concepts": "verb/noun concepts"}
    for k in kw:
        if k not in accepted and k != "build_vocab":
            raise ValueError(f"model '{name}''s checkpoint import takes no {given.get(k, k)} option")
    if "build_vocab" not in accepted:
        kw.pop("build_vocab", None)
    return kw


def import_checkpoint(model: str, src_path: str | Path, dst_path: str | Path | None, cfg=None, strict: bool = True,
                      *, vocab: str | Path | None = None, shards: str | Path | None = None,
                      verb_concepts: str | Path | None = None, noun_concepts: str | Path | None = None,
                      **options) -> dict[str, Any]:
    """Read reference checkpoint ``src_path`` of registered model ``model``, map it onto the model (``cfg``:
    its config or a dict of its fields; shapes are read from the source) and, if ``dst_path``, save it as this
    project's checkpoint. ``vocab`` (the reference's int2word.npy / word2int.json) and ``verb_concepts`` /
    ``noun_concepts`` (its concept lists) + ``shards``: remap the word embedding / concept heads onto the
    shard tree's vocabularies. ``options``: the importer's own switches (HANet: ``fidelity``).
    Returns the importer's JSON report (+ ``source``, ``destination``)."""
    from storage.checkpoints import load_torch_file, save_checkpoint

    src_path = Path(src_path)
    cfg = None if cfg is None else registry.model_config(model, cfg)
    kwargs = _importer_kwargs(model, vocab=vocab, shards=shards, verb_concepts=verb_concepts,
                              noun_concepts=noun_concepts, **options)
    source = load_torch_file(src_path)
    if not isinstance(source, dict):
        raise ValueError(f"{src_path}: expected a dict of state dicts, got {type(source).__name__}")
    try:
        out = registry.import_state(model, source, cfg, strict=strict, **kwargs)
    except ValueError as e:
        raise ValueError(f"{src_path}: {e}") from None
    result = {**out["result"], "source": str(src_path)}
    vocab_record = {**result["vocab"], "remapped_for": str(Path(shards)) if shards is not None else None}
    result["vocab"] = vocab_record
    if dst_path is not None:
        save_checkpoint(dst_path, {
            "model_name": model, "config_json": TrainConfig(model=model, net=out["config"]).model_dump_json(),
            "model": {k: v.detach().cpu() for k, v in out["model"].state_dict().items()}, "epoch": -1,
            "imported_from": str(src_path), "vocab": vocab_record, **out["checkpoint"],
        })
        result["destination"] = str(dst_path)
    return result
