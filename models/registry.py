"""The model registry: every retrieval model buildable by name, its config as data.

``create_model(name, cfg, word_embeddings)`` is the only place that names a model class;
training, evaluation, heatmaps, checkpoint import and the flows go through it. Each entry
(:class:`ModelSpec`) declares

* ``config_cls`` / ``config_field``: its typed config and the TrainConfig field holding it;
* ``needs``: what it reads from a batch (``video``: frame features + mask, ``words``: word
  ids + lengths, ``graph``: role-graph spans/roles/adjacency, ``labels``: concept labels);
* ``score_parts``: the (B_v, B_t) matrices ``model.similarity_parts`` returns, and
  ``fused``: the name of the matrix ``model.similarity`` returns (what retrieval ranks by;
  HANet's ``similarity_parts`` stops at c_l / c_p, its fused score is (c_l + c_p) / 2).

Every registered model implements the same interface: ``encode_videos(VideoBatch) -> dict``,
``encode_texts(TextBatch) -> dict``, ``similarity_parts(ve, te) -> dict``,
``similarity(ve, te) -> (B_v, B_t)``, ``loss(v, t, labels, positives=None) -> dict`` with
a ``total`` entry, and ``loss_from_parts(ve, te, parts, labels, positives=None)``: the same loss
from the encoder outputs and ``similarity_parts`` (training runs those under bf16 autocast with
``TrainConfig.precision='bf16'`` and the loss maths in fp32). Model modules are imported lazily (only when built).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel

from .config import HANetConfig, TrainConfig
from .layers import count_parameters  # noqa: F401  (re-exported: models.registry.count_parameters)
from .model_configs import DATA_FIELDS, SHAPE_FIELDS, HCMIConfig, HGRConfig

BATCH_FIELDS = ("video", "words", "graph", "labels")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config_cls: type[BaseModel]
    config_field: str
    builder: str | Callable[..., Any]  # "module:attr" (imported lazily) or a callable(cfg, word_embeddings)
    needs: frozenset[str]
    score_parts: tuple[str, ...]
    fused: str
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self, cfg: BaseModel, word_embeddings=None):
        fn = self.builder
        if isinstance(fn, str):
            mod, attr = fn.split(":")
            fn = getattr(importlib.import_module(mod), attr)
        return fn(cfg, word_embeddings)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"model '{spec.name}' is already registered")
    unknown = set(spec.needs) - set(BATCH_FIELDS)
    if unknown:
        raise ValueError(f"{spec.name}: unknown batch needs {sorted(unknown)}; known {BATCH_FIELDS}")
    if spec.fused not in spec.score_parts:
        raise ValueError(f"{spec.name}: fused score '{spec.fused}' not among {spec.score_parts}")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model '{name}'; known: {model_names()}")
    return _REGISTRY[name]


def create_model(name: str, cfg: BaseModel | dict | None = None, word_embeddings=None):
    """Build model ``name`` from its config (an instance, a dict of its fields, or None = defaults)."""
    spec = get_spec(name)
    if cfg is None:
        cfg = spec.config_cls()
    elif isinstance(cfg, dict):
        cfg = spec.config_cls.model_validate(cfg)
    elif not isinstance(cfg, spec.config_cls):
        raise TypeError(f"model '{name}' takes a {spec.config_cls.__name__}, got {type(cfg).__name__}")
    return spec.build(cfg, word_embeddings)


def model_config(train_cfg: TrainConfig, name: str | None = None) -> BaseModel:
    """The config of model ``name`` (default ``train_cfg.model``) held by ``train_cfg``."""
    return getattr(train_cfg, get_spec(name or train_cfg.model).config_field)


def with_model_config(train_cfg: TrainConfig, cfg: BaseModel, name: str | None = None) -> TrainConfig:
    return train_cfg.model_copy(update={get_spec(name or train_cfg.model).config_field: cfg})


def active_config_dump(train_cfg: TrainConfig) -> dict[str, Any]:
    """``train_cfg`` as JSON data without the configs of the models it does not train, so a run's
    identity (run-directory key, resume check) does not change when another model's defaults do.
    For HANet this equals the dump of a TrainConfig from before other models existed."""
    d = train_cfg.model_dump(mode="json")
    if train_cfg.model not in _REGISTRY:
        return d
    active = _REGISTRY[train_cfg.model].config_field
    for spec in _REGISTRY.values():
        if spec.config_field != active:
            d.pop(spec.config_field, None)
    return d


def fill_shapes(cfg: BaseModel, shapes: dict[str, int]) -> BaseModel:
    """``cfg`` with the shard facts (feat_dim, vocab_size, word_dim, concept counts) filled in."""
    upd = {k: v for k, v in shapes.items() if k in type(cfg).model_fields and k in SHAPE_FIELDS}
    return cfg.model_copy(update=upd)


def data_config(cfg: BaseModel) -> HANetConfig:
    """The HANetConfig the data loader (pipeline.learn.dataset.load_split) reads its caps from.

    HANet's own config is used as is; for the other models the loader-relevant fields
    (``DATA_FIELDS``, plus ``graph_edges`` where the loader knows it) are copied over.
    """
    if isinstance(cfg, HANetConfig):
        return cfg
    fields = HANetConfig.model_fields
    upd = {k: getattr(cfg, k) for k in DATA_FIELDS + ("frame_norm", "graph_edges")
           if k in fields and k in type(cfg).model_fields}
    return HANetConfig(**upd)


def train_data_config(train_cfg: TrainConfig) -> HANetConfig:
    return data_config(model_config(train_cfg))


def _hanet(cfg: HANetConfig, word_embeddings=None):
    from .hanet import HANet

    return HANet(cfg, word_embeddings)


register(ModelSpec(
    name="hanet", config_cls=HANetConfig, config_field="hanet", builder=_hanet,
    needs=frozenset({"video", "words", "graph", "labels"}),
    score_parts=("ind_a", "ind_e", "loc_a", "loc_e", "glo", "jac_a", "jac_e", "c_l", "c_p", "fused"),
    fused="fused",
    description="HANet (Wu et al., ACM MM 2021): individual/local/global alignment + concept Jaccard; "
                "fused = (c_l + c_p) / 2",
))
register(ModelSpec(
    name="hgr", config_cls=HGRConfig, config_field="hgr", builder="models.hgr:HGR",
    needs=frozenset({"video", "words", "graph"}),
    score_parts=("glo", "verb", "noun", "fused"), fused="fused",
    description="HGR (Chen et al., CVPR 2020): global + verb + noun matching, mean fusion",
))
register(ModelSpec(
    name="hcmi", config_cls=HCMIConfig, config_field="hcmi", builder="models.hcmi:HCMI",
    needs=frozenset({"video", "words", "graph"}),
    score_parts=("frame_word", "clip_phrase", "video_sentence", "fused"), fused="fused",
    description="HCMI-style: frame-word, clip-phrase, video-sentence contrastive matching",
))
