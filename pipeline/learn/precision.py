"""Training precision (``TrainConfig.precision``): fp32, or bf16 autocast for the forward pass.

``precision='bf16'`` runs the model's encoders and scoring (``encode_videos``,
``encode_texts``, ``similarity_parts``: the matmuls, convolutions and GCNs, nearly all of a
step's time) under ``torch.autocast(dtype=bfloat16)``, where the device has native bf16
(:func:`pipeline.runtime.bf16_is_fast`: CUDA, or CPUs with AVX512-BF16 / AMX); elsewhere
PyTorch would emulate bf16 (slower than fp32), so training falls back to fp32 with a logged
warning, as extraction does (pipeline/video/backbones.py).

What stays fp32:

* master weights, Adam state and gradients of the parameters (autocast casts copies of the
  weights per op; ``.grad`` of an fp32 parameter is fp32);
* the loss maths: the encoders' and the scoring's floating outputs are cast back to fp32 and
  ``model.loss_from_parts`` runs on them OUTSIDE autocast, so the hinge's
  ``max`` over the (B, B) scores, HCMI's InfoNCE ``logsumexp`` and the concept BCE work on
  fp32 tensors (CPU autocast leaves softmax/logsumexp in bf16 when their input is bf16, and
  CUDA autocast refuses ``binary_cross_entropy`` altogether);
* the optimiser step and validation (evaluation has its own ``EvalConfig.text_bf16``).

No GradScaler: bf16 has fp32's 8-bit exponent (range ~1e-38..3e38), so gradients do not
underflow as fp16's (5-bit exponent) would; only the mantissa is shorter (8 bits: unit
roundoff 2^-8 = 0.4 %). This relies on the registry's model interface (models/registry.py):
``loss(v, t, ...) == loss_from_parts(ve, te, similarity_parts(ve, te), ...)`` with ``ve, te`` the
encoders' outputs.
"""
from __future__ import annotations

from typing import Any

import torch

from pipeline.devices import resolve_bf16


def resolve_precision(requested: str, device: torch.device) -> tuple[bool, str]:
    """(use bf16 autocast?, what the run really computes in: 'fp32' | 'bf16 autocast' |
    'fp32 (bf16 requested; no native bf16 on <device type>)'), as extraction decides it."""
    if requested not in ("fp32", "bf16"):
        raise ValueError(f"precision {requested!r}: expected 'fp32' or 'bf16'")
    return resolve_bf16(requested == "bf16", device, "training")


def cast_floats(d: dict[str, Any], dtype: torch.dtype | None) -> dict[str, Any]:
    """``d`` (an encoder's or the scoring's outputs) with its floating tensors cast to ``dtype``
    (None: unchanged); masks, indices and other values as they are."""
    if dtype is None:
        return d
    return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in d.items()}


def loss(model: torch.nn.Module, v, t, labels, device_type: str, bf16: bool) -> dict[str, torch.Tensor]:
    """``model.loss(v, t, labels)``, its forward pass (encoders + scoring) under bf16 autocast when
    ``bf16``, the loss maths on fp32 copies of their outputs."""
    if not bf16:
        return model.loss(v, t, labels)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        ve, te = model.encode_videos(v), model.encode_texts(t)
        parts = model.similarity_parts(ve, te)
    fp32 = torch.float32
    return model.loss_from_parts(cast_floats(ve, fp32), cast_floats(te, fp32), cast_floats(parts, fp32), labels)
