"""The model registry: every retrieval model buildable by name, its config as data.

Each model registers itself in its own module, beside its class (as timm does)::

    @register("hgr", config=HGRConfig, needs={"video", "words", "graph"},
              score_parts=("glo", "verb", "noun", "fused"), fused="fused",
              importer="models.hgr_import:import_hgr_state")
    class HGR(nn.Module): ...

There is no central list: a name not registered yet is looked up by importing the modules of the
``models`` package (every folder on ``models.__path__``) once, so a new model is one new file in
models/ (and its test). Each entry (:class:`ModelSpec`) declares

* ``model_cls`` / ``config_cls``: the ``nn.Module`` (built as ``model_cls(cfg, word_embeddings)``) and its
  typed config (a pydantic model with the fields of ``models.model_configs.ModelConfig``);
* ``needs``: what it reads from a batch (``video``: frame features + mask, ``words``: word
  ids + lengths, ``graph``: role-graph spans/roles/adjacency, ``labels``: concept labels);
* ``score_parts``: the (B_v, B_t) matrices ``model.similarity_parts`` returns, and
  ``fused``: the name of the matrix ``model.similarity`` returns (what retrieval ranks by;
  HANet's ``similarity_parts`` stops at c_l / c_p, its fused score is (c_l + c_p) / 2);
* ``importer``: the reader of the model's reference checkpoint ("module:function", imported when
  used), a pure function over tensors (see :func:`import_state`), or None;
* presets: JSON files ``models/presets/<name>/<preset>.json`` (``{"source": ..., "config": {...}}``),
  the paper setups as data (:func:`preset_config`, ``create_model(name, preset=...)``).

Every registered model implements the same interface: ``encode_videos(VideoBatch) -> dict``,
``encode_texts(TextBatch) -> dict``, ``similarity_parts(ve, te) -> dict``,
``similarity(ve, te) -> (B_v, B_t)``, ``loss(v, t, labels, positives=None) -> dict`` with
a ``total`` entry, and ``loss_from_parts(ve, te, parts, labels, positives=None)``: the same loss
from the encoder outputs and ``similarity_parts`` (training runs those under bf16 autocast and
the loss maths in fp32).
"""
from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import BaseModel

from .model_configs import SHAPE_FIELDS

BATCH_FIELDS = ("video", "words", "graph", "labels")
PRESETS = Path(__file__).resolve().parent / "presets"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_cls: Callable[..., Any]  # model_cls(cfg, word_embeddings) -> nn.Module
    config_cls: type[BaseModel]
    needs: frozenset[str]
    score_parts: tuple[str, ...]
    fused: str
    importer: str | Callable[..., Any] | None = None  # "module:function" (imported when used) or a callable
    description: str = ""

    def build(self, cfg: BaseModel, word_embeddings=None):
        return self.model_cls(cfg, word_embeddings)

    def import_function(self) -> Callable[..., Any]:
        if self.importer is None:
            raise ValueError(f"model '{self.name}' has no checkpoint importer")
        if isinstance(self.importer, str):
            mod, attr = self.importer.split(":")
            return getattr(importlib.import_module(mod), attr)
        return self.importer


_REGISTRY: dict[str, ModelSpec] = {}
_SCANNED: set[str] = set()  # modules of the models package imported by the lookup


def add(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Register ``spec`` (what the decorator does); ``replace`` allows re-registering a name."""
    old = _REGISTRY.get(spec.name)
    if old is not None and not replace and old.model_cls is not spec.model_cls:
        raise ValueError(f"model '{spec.name}' is already registered")
    unknown = set(spec.needs) - set(BATCH_FIELDS)
    if unknown:
        raise ValueError(f"{spec.name}: unknown batch needs {sorted(unknown)}; known {BATCH_FIELDS}")
    if spec.fused not in spec.score_parts:
        raise ValueError(f"{spec.name}: fused score '{spec.fused}' not among {spec.score_parts}")
    _REGISTRY[spec.name] = spec
    return spec


def register(name: str, *, config: type[BaseModel], needs: Iterable[str], score_parts: Iterable[str], fused: str,
             importer: str | Callable[..., Any] | None = None, description: str = "", replace: bool = False):
    """Class decorator: register the decorated ``nn.Module`` as model ``name``."""
    def deco(cls):
        add(ModelSpec(name=name, model_cls=cls, config_cls=config, needs=frozenset(needs),
                      score_parts=tuple(score_parts), fused=fused, importer=importer,
                      description=description or (cls.__doc__ or "").strip().split("\n")[0]), replace=replace)
        return cls
    return deco


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _scan() -> None:
    """Import every not yet imported module of the models package (each registers its models)."""
    import models

    for info in pkgutil.iter_modules(models.__path__):
        full = f"models.{info.name}"
        if info.name.startswith("_") or full in _SCANNED:
            continue
        _SCANNED.add(full)
        importlib.import_module(full)


def model_names() -> list[str]:
    _scan()
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    if name not in _REGISTRY:
        _scan()
    return name in _REGISTRY


def get_spec(name: str) -> ModelSpec:
    if not is_registered(name):
        raise KeyError(f"unknown model '{name}'; known: {model_names()}")
    return _REGISTRY[name]


def preset_names(name: str) -> list[str]:
    return sorted(p.stem for p in (PRESETS / name).glob("*.json"))


def preset_config(name: str, preset: str) -> BaseModel:
    """The config of model ``name`` stored as preset ``preset`` (models/presets/<name>/<preset>.json)."""
    spec = get_spec(name)
    path = PRESETS / name / f"{preset}.json"
    if not path.is_file():
        raise KeyError(f"model '{name}' has no preset '{preset}'; known: {preset_names(name)}")
    return spec.config_cls.model_validate(json.loads(path.read_text())["config"])


def model_config(name: str, cfg: BaseModel | dict | None = None, *, preset: str | None = None) -> BaseModel:
    """Model ``name``'s config from an instance, a dict of its fields (over ``preset``'s when given) or
    None (the preset, else the defaults)."""
    spec = get_spec(name)
    if isinstance(cfg, spec.config_cls):
        if preset is not None:
            raise ValueError("give a config instance or a preset (+ a dict of overrides), not both")
        return cfg
    if cfg is not None and not isinstance(cfg, dict):
        raise TypeError(f"model '{name}' takes a {spec.config_cls.__name__}, got {type(cfg).__name__}")
    base = preset_config(name, preset).model_dump() if preset is not None else {}
    return spec.config_cls.model_validate({**base, **(cfg or {})})


def create_model(name: str, cfg: BaseModel | dict | None = None, word_embeddings=None, *, preset: str | None = None):
    """Build model ``name`` from its config (an instance, a dict of its fields, or None = defaults),
    optionally starting from one of its presets: ``create_model("hanet", preset="msrvtt")``."""
    return get_spec(name).build(model_config(name, cfg, preset=preset), word_embeddings)


create = create_model


def fill_shapes(cfg: BaseModel, shapes: dict[str, int]) -> BaseModel:
    """``cfg`` with the shard facts (feat_dim, vocab_size, word_dim, concept counts) filled in."""
    upd = {k: v for k, v in shapes.items() if k in type(cfg).model_fields and k in SHAPE_FIELDS}
    return cfg.model_copy(update=upd)


def import_state(name: str, source: dict, cfg: BaseModel | None = None, **options) -> dict[str, Any]:
    """Read a reference checkpoint of model ``name`` (``source``: the loaded dict of state dicts) with
    its registered importer: ``{"model": the filled nn.Module, "config": its config, "report": {...},
    "vocab": {"words"|"verb"|"noun": fingerprint or None}, ...}``. ``options`` are the importer's
    keyword arguments (vocabularies as word lists, model-specific switches)."""
    return get_spec(name).import_function()(source, cfg, **options)
