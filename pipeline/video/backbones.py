"""Feature backbones: construction, weight loading, provenance, batched inference.

* ``resnet152``: torchvision ResNet152 with ``fc`` replaced by Identity
  (2048-d pooled features); ImageNet mean/std on RGB in [0, 1].
  ``weights``: ``'imagenet'`` = ``IMAGENET1K_V1`` (the weights the reference
  extractors used), ``'imagenet_v2'`` = ``IMAGENET1K_V2``, both through
  torchvision's own download cache; a local path (a state dict read with
  ``torch.load(weights_only=True)``); or ``'random'`` (seeded, smoke tests only).
* ``i3d_r50``: pytorchvideo's I3D-R50 (8x8 Kinetics-400 recipe) with the
  head's projection removed: 2048-d. The head's fixed (4, 7, 7) stride-1
  average pool is replaced by a global average pool, which is identical at
  the training input (8 x 224 x 224) and also works for other clip sizes.
  Kinetics normalisation: RGB in [0, 1], mean 0.45, std 0.225 (pytorchvideo's
  recipe; the video_features reference used the original I3D's [-1, 1]).
  ``weights``: ``'kinetics'`` (pytorchvideo model zoo URL, torch hub cache), a
  local ``.pyth``/``.pth`` path, or ``'random'``.

Every backbone records its provenance: weights, the sha256 of the weight file
(or, for random weights, of the state-dict bytes with the seed), and library
versions. Loaded backbones are cached per (extractor, config) in this process.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchvision
from torch import nn

from pipeline.config import I3DConfig, ResNetConfig
from pipeline.devices import resolve_bf16, resolve_device
from pipeline.runtime import library_versions
from pipeline.feedback import UserError
from pipeline.fingerprint import sha256_file, state_dict_sha256
from pipeline.video.fold import fold_batchnorm, frozen_graph
from storage.checkpoints import load_torch_file

log = logging.getLogger(__name__)

EXTRACTORS = ("resnet152", "i3d_r50")
FEATURE_DIM = 2048
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
KINETICS_MEAN, KINETICS_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)
I3D_KINETICS_URL = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/I3D_8x8_R50.pyth"
_IMAGENET = {"imagenet": "IMAGENET1K_V1", "imagenet_v2": "IMAGENET1K_V2"}


class BackboneWeightsError(UserError, RuntimeError):
    """Weights could not be obtained or do not fit the model; the message says what to do."""


@dataclass
class Backbone:
    """A ready model: ``embed(uint8 batch) -> float32 (B, 2048)`` = ``forward(prepare(batch))``.

    ``bf16``: it computes in bfloat16, through autocast (fp32 weights, ResNet) or with its weights
    cast to bf16 (``cast_bf16``: I3D, whose frozen TorchScript graph needs fixed dtypes).
    ``memory_format``: the input layout its (converted) weights expect.
    """

    name: str
    model: nn.Module
    device: torch.device
    dim: int
    provenance: dict[str, Any]
    preprocess: Callable[[torch.Tensor], torch.Tensor]
    bf16: bool
    memory_format: torch.memory_format = torch.contiguous_format
    cast_bf16: bool = False

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) or clips (B, T, H, W, 3) -> the model's input tensor."""
        x = self.preprocess(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        x = x.contiguous(memory_format=self.memory_format)
        return x.to(torch.bfloat16) if self.cast_bf16 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast = self.bf16 and not self.cast_bf16
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            return self.model(x).float()

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) frames (ResNet) or (B, T, H, W, 3) clips (I3D), uint8 RGB."""
        return self.forward(self.prepare(batch)).cpu().numpy()


# ------------------------------------------------------------------ helpers

def _normalizer(mean, std) -> Callable[[torch.Tensor], torch.Tensor]:
    def normalize(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[channel_dim] = 3
        m = torch.tensor(mean, device=x.device).view(shape)
        s = torch.tensor(std, device=x.device).view(shape)
        return (x - m) / s
    return normalize


def _prep_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float, ImageNet-normalised."""
    return _normalizer(IMAGENET_MEAN, IMAGENET_STD)(x.permute(0, 3, 1, 2).float().div_(255), 1)


def _prep_clips(x: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, H, W) float, Kinetics-normalised."""
    return _normalizer(KINETICS_MEAN, KINETICS_STD)(x.permute(0, 4, 1, 2, 3).float().div_(255), 1)



def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _warn_random(name: str, seed: int) -> None:
    msg = (f"{name}: RANDOM weights (seed {seed}) - features are meaningless; use them for smoke "
           "tests and benchmarks only")
    warnings.warn(msg, stacklevel=3)
    log.warning(msg)


def _unwrap_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for wrapper in ("model_state", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise BackboneWeightsError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A local checkpoint as a state dict, read with ``weights_only=True`` (no code execution)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(f"weights file not found: {path}")
    try:
        obj = load_torch_file(path)
    except Exception as exc:  # pickle with non-tensor objects, or not a torch file
        raise BackboneWeightsError(
            f"{path}: cannot be read with torch.load(weights_only=True) ({exc}). Re-save only the "
            "state dict: torch.save(torch.load(p, weights_only=False)['model_state'], 'clean.pth')"
        ) from exc
    return _unwrap_state(obj, path)


def _arch(extractor: str) -> nn.Module:
    """The full architecture (classifier / projection head included) of ``extractor``, as stored in files."""
    if extractor == "resnet152":
        return torchvision.models.resnet152(weights=None)
    if extractor == "i3d_r50":
        return _i3d_arch()
    raise ValueError(f"unknown extractor {extractor!r}; expected one of {EXTRACTORS}")


def feature_arch(extractor: str) -> nn.Module:
    """``extractor``'s feature model as extraction runs it (classifier / projection head removed), with
    untrained weights: build it under ``torch.device("meta")`` to count FLOPs without memory."""
    model = _arch(extractor)
    if extractor == "resnet152":
        model.fc = nn.Identity()
        return model
    return _strip_i3d_head(model)


def state_mismatch(extractor: str, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Keys of ``state`` missing from / unexpected for / shaped unlike ``extractor``'s architecture.

    The architecture is built on the meta device (no memory, no init): ~0.1 s.
    """
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in _arch(extractor).state_dict().items()}
    return {"missing": sorted(set(want) - set(state)), "unexpected": sorted(set(state) - set(want)),
            "wrong_shape": sorted(f"{k} {tuple(v.shape)} (expected {want[k]})" for k, v in state.items()
                                  if k in want and tuple(v.shape) != want[k])}


def _mismatch_text(bad: dict[str, list[str]], limit: int = 5) -> str:
    parts = []
    for what, keys in bad.items():
        if keys:
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"{len(keys)} {what.replace('_', ' ')} keys: {', '.join(keys[:limit])}{more}")
    return "; ".join(parts)


def check_state(extractor: str, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise BackboneWeightsError naming ``source`` and the missing/unexpected keys when they do not fit."""
    bad = state_mismatch(extractor, state)
    if any(bad.values()):
        expected = {"resnet152": "a torchvision ResNet152 state dict (conv1.weight ... fc.bias)",
                    "i3d_r50": "a pytorchvideo i3d_r50 state dict (blocks.0.conv.weight ... blocks.6.proj.bias), "
                               "optionally under 'model_state'"}[extractor]
        raise BackboneWeightsError(f"{source}: not {extractor} weights (expected {expected}): {_mismatch_text(bad)}")


def validate_weights_file(extractor: str, path: str | os.PathLike) -> None:
    """Read a local weights file and check it against ``extractor``'s architecture (before any work)."""
    check_state(extractor, load_state_file(path), str(path))


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str, extractor: str) -> None:
    check_state(extractor, state, source)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BackboneWeightsError(f"{source}: weights do not fit the model: {exc}") from exc


def _offline_help(what: str, url: str, exc: Exception, param: str) -> BackboneWeightsError:
    """``param``: the build parameter that takes this backbone's file (resnet_weights / i3d_weights)."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return BackboneWeightsError(
        f"{param}: could not obtain {what} weights ({type(exc).__name__}: {exc}). Offline? Download {url} on "
        f"a machine with internet, then either copy it to {cache} (torch hub cache) or pass "
        f"{param}=<path to {cache.name}>; for smoke tests only, pass {param}=random "
        "(or allow_random_weights=true)."
    )


def _hub_file_provenance(label: str, url: str) -> dict[str, Any]:
    cache = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return {"weights": label, "weights_url": url, "weights_sha256": sha256_file(cache)}


def _file_provenance(path: str) -> dict[str, Any]:
    return {"weights": str(Path(path).resolve()), "weights_sha256": sha256_file(path)}


# ------------------------------------------------------------------ ResNet152

def _resnet_state(weights: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict (fc included) named by ``weights``, and its provenance."""
    if weights in _IMAGENET:
        enum = getattr(torchvision.models.ResNet152_Weights, _IMAGENET[weights])
        try:
            state = enum.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            raise _offline_help(f"ImageNet ResNet152 ({enum.name})", enum.url, exc, "resnet_weights") from exc
        return state, _hub_file_provenance(weights, enum.url)
    return load_state_file(weights), _file_provenance(weights)


def build_resnet152(cfg: ResNetConfig) -> tuple[nn.Module, dict[str, Any]]:
    if cfg.weights == "random":
        model = _seeded(lambda: torchvision.models.resnet152(weights=None), cfg.seed)
        prov = {"weights": "random", "seed": cfg.seed}
        _warn_random("resnet152", cfg.seed)
    else:
        state, prov = _resnet_state(cfg.weights)
        model = torchvision.models.resnet152(weights=None)
        _load_into(model, state, cfg.weights, "resnet152")
    model.fc = nn.Identity()
    if cfg.weights == "random":
        prov["weights_sha256"] = state_dict_sha256(model)
    return model, prov


# ------------------------------------------------------------------ I3D-R50

def _i3d_arch() -> nn.Module:
    from pytorchvideo.models.hub import i3d_r50
    return i3d_r50(pretrained=False)


def _i3d_state(weights: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if weights == "kinetics":
        try:
            obj = torch.hub.load_state_dict_from_url(I3D_KINETICS_URL, map_location="cpu",
                                                     progress=False, weights_only=True)
        except Exception as exc:
            raise _offline_help("Kinetics I3D-R50", I3D_KINETICS_URL, exc, "i3d_weights") from exc
        return _unwrap_state(obj, Path(I3D_KINETICS_URL)), _hub_file_provenance("kinetics", I3D_KINETICS_URL)
    return load_state_file(weights), _file_provenance(weights)


def _strip_i3d_head(model: nn.Module) -> nn.Module:
    head = model.blocks[-1]
    head.pool = nn.AdaptiveAvgPool3d(1)
    head.proj, head.activation = None, None
    return model


def build_i3d_r50(cfg: I3DConfig) -> tuple[nn.Module, dict[str, Any]]:
    if cfg.weights == "random":
        model = _seeded(_i3d_arch, cfg.seed)
        prov = {"weights": "random", "seed": cfg.seed}
        _warn_random("i3d_r50", cfg.seed)
    else:
        model = _i3d_arch()
        state, prov = _i3d_state(cfg.weights)
        _load_into(model, state, cfg.weights, "i3d_r50")
    model = _strip_i3d_head(model)
    if cfg.weights == "random":
        prov["weights_sha256"] = state_dict_sha256(model)
    return model, prov


# ------------------------------------------------------------------ public


def load_backbone(extractor: str, cfg: ResNetConfig | I3DConfig) -> Backbone:
    """Build ``extractor`` ('resnet152' | 'i3d_r50') from ``cfg``, in eval mode on its device."""
    if extractor == "resnet152":
        model, prov = build_resnet152(cfg)
        prep, layout = _prep_frames, torch.channels_last if cfg.channels_last else torch.contiguous_format
    elif extractor == "i3d_r50":
        model, prov = build_i3d_r50(cfg)
        prep, layout = _prep_clips, torch.channels_last_3d if cfg.channels_last else torch.contiguous_format
    else:
        raise ValueError(f"unknown extractor {extractor!r}; expected one of {EXTRACTORS}")
    device = resolve_device(cfg.device)
    model = model.eval()
    if cfg.fuse_bn:
        model, prov["bn_folded"] = fold_batchnorm(model, _probe_input(extractor, cfg))
    model = model.to(device, memory_format=layout)
    bf16, precision = resolve_bf16(cfg.bf16, device, extractor)
    freeze = extractor == "i3d_r50" and cfg.freeze
    if freeze:  # TorchScript trace + freeze: oneDNN prepacks the 3D convolutions' weights once
        model = frozen_graph(model.to(torch.bfloat16) if bf16 else model, _probe_input(extractor, cfg), layout, bf16)
        precision = precision.replace("autocast", "weights, frozen graph") if bf16 else f"{precision}, frozen graph"
    prov.update(library_versions(), extractor=extractor, device=str(device), device_type=device.type,
                precision=precision, precision_kind="bf16" if bf16 else "fp32")
    return Backbone(extractor, model, device, FEATURE_DIM, prov, prep, bf16, layout, cast_bf16=freeze and bf16)


def forward_batch_size(cfg: ResNetConfig | I3DConfig, device: torch.device) -> int:
    """Frames / clips per forward pass: ``batch_size``, or I3D's ``cpu_batch_size`` on a CPU."""
    if isinstance(cfg, I3DConfig) and device.type == "cpu":
        return cfg.cpu_batch_size
    return cfg.batch_size


def _probe_input(extractor: str, cfg: ResNetConfig | I3DConfig) -> torch.Tensor:
    """A small seeded input of the model's layout, to check BatchNorm folding."""
    g = torch.Generator().manual_seed(0)
    if extractor == "resnet152":
        return torch.randn(1, 3, 64, 64, generator=g)
    return torch.randn(1, 3, 4, 64, 64, generator=g)


_CACHE: dict[tuple[str, str], Backbone] = {}
# Seeded random init uses torch's global RNG: builds must not interleave across threads
# (concurrent shard tasks), or two shards would get different "random" weights.
_BUILD_LOCK = threading.Lock()
MODEL_FIELDS = ("weights", "device", "bf16", "channels_last", "seed", "fuse_bn", "freeze")  # what shapes the model


def get_backbone(extractor: str, cfg: ResNetConfig | I3DConfig) -> Backbone:
    """:func:`load_backbone`, cached per (extractor, config) for the life of the process (thread-safe).

    Only the fields that shape the model count: another batch size or sampling reuses it.
    """
    key = (extractor, cfg.model_dump_json(include={f for f in MODEL_FIELDS if f in type(cfg).model_fields}))
    with _BUILD_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_backbone(extractor, cfg)
        return _CACHE[key]
