"""The application's training and evaluation settings (models/ holds only the models' own configs).

``TrainConfig`` names the model it trains (``model``: a registry name, models/registry.py) and holds
that model's config (``net``, an instance of the model's registered config class). As data it is
written with the model's config under the model's name, ``{"model": "hgr", "hgr": {...}, "lr": ...}``,
the layout checkpoints have always recorded; reading one, the configs of other registered models
(checkpoints written before this module existed held one per model) are ignored, so every old
checkpoint still reads. Nothing here knows a model by name: a newly registered model is trainable
without a change to this file.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, model_serializer, model_validator

from models import registry


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainConfig(_Config):
    model: str = Field("hanet", description="registry name (models/registry.py), e.g. hanet | hgr | hcmi")
    net: SerializeAsAny[BaseModel] = Field(
        None, description="the model's own config (its registered config class; written under the model's name)",
        validate_default=True)
    features: str = Field("resnet152", description="feature folder under features/ to train on")
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 50
    patience: int = Field(10, description="early stop after this many epochs without val rsum gain")
    grad_clip: float = Field(0.0, description="0 = off")
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    unique_videos_per_batch: bool = Field(True, description="no same-video false negatives in a batch")
    val_split: str = "val"
    max_steps_per_epoch: int = Field(0, description="0 = full epoch (tests/demos cap it)")
    min_improvement: float = Field(0.0, description="val rsum must exceed the best by more than this to count as a gain")
    preload_features: bool = Field(False, description="read the train/val frame features into RAM once (else HDF5 per item)")
    log_every: int = Field(50, description="log the running loss every this many steps")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="'bf16' = torch.autocast(bfloat16) around the forward pass (encoders + scoring) where the "
        "device has native bf16 (pipeline.runtime.bf16_is_fast: CUDA, CPUs with AVX512-BF16/AMX; elsewhere fp32 "
        "with a logged warning); the loss maths, master weights, gradients and Adam state stay fp32, no GradScaler "
        "(bf16 has fp32's exponent range). ~2x faster steps on such CPUs. Default fp32: the reference's numerics; "
        "bf16 (scores rounded to ~3 significant digits) is a choice to opt into (docs/models.md 'Training precision')")

    @model_validator(mode="before")
    @classmethod
    def _model_config_by_name(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        name = data.setdefault("model", "hanet")
        if not registry.is_registered(name):
            raise ValueError(f"unknown model '{name}'; known: {registry.model_names()}")
        given = data.pop(name, None)
        if "net" in data and given is not None:
            raise ValueError(f"give model '{name}'s config as '{name}' or 'net', not both")
        given = data.pop("net", given)
        for key in [k for k in data if k not in cls.model_fields]:
            if registry.is_registered(key):  # another model's config: not what this run trains
                data.pop(key)
        data["net"] = registry.model_config(name, given.model_dump() if isinstance(given, BaseModel)
                                            and not isinstance(given, registry.get_spec(name).config_cls) else given)
        return data

    @model_serializer(mode="wrap")
    def _model_config_under_its_name(self, handler) -> dict[str, Any]:
        d = handler(self)
        return {"model": d.pop("model"), self.model: d.pop("net"), **d}

    def with_net(self, net: BaseModel) -> "TrainConfig":
        """The same settings with the model's config replaced (same model)."""
        return self.model_copy(update={"net": registry.model_config(self.model, net)})

    def for_model(self, name: str) -> "TrainConfig":
        """The same training settings for model ``name`` (its default config unless it is this one's model)."""
        if name == self.model:
            return self
        d = self.model_dump()
        d.pop(self.model)
        return TrainConfig.model_validate({**d, "model": name})


class EvalConfig(_Config):
    split: str = "test"
    video_chunk: int = Field(500, description="videos scored per block")
    caption_chunk: int = Field(2000, description="captions encoded and scored per block")
    device: str = "auto"
    store_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="dtype of cached video embeddings between blocks")
    n_heatmaps: int = Field(4, description="test videos drawn as concept heatmaps")
    heatmap_top_k: int = Field(8, description="verb and noun concepts (each) shown per heatmap")
    encode_batch: int = Field(256, description="videos / captions per encode call (bounds encoder temporaries)")
    score_block: int = Field(500, description="captions per model.similarity call inside a caption chunk "
                                              "(bounds the fine-grained alignment temporaries)")
    features: str | None = Field(None, description="feature folder; None = the one the checkpoint trained on")
    prune_video_outputs: bool = Field(True, description="keep only the encode_videos outputs that similarity "
                                                        "reads (found on the first block) between blocks")
    text_bf16: bool = Field(False, description="bf16 autocast for caption encoding where the device has native bf16 "
                                               "(CUDA, AVX512-BF16/AMX CPUs; else fp32): ~2.5x faster on such CPUs, "
                                               "scores differ by ~5e-5 on average, <= ~5e-3 (bench/bench_bf16_scores.py; "
                                               "off: bit-exact reference parity)")
    score_bf16: bool = Field(False, description="the stacked-attention cosine matmul in bf16 where the device has native "
                                                "bf16 (models.similarity.cosine_matmul_dtype; attention and fusion stay "
                                                "fp32): ~2x faster scoring on such CPUs; deviation measured by "
                                                "bench/bench_bf16_scores.py (off: bit-exact reference parity)")
