"""Training precision (``TrainConfig.precision``): fp32, or bf16 autocast for the forward pass.

``precision='bf16'`` runs the model's encoders and scoring (``encode_videos``,
``encode_texts``, ``similarity_parts``: the matmuls, convolutions and GCNs, nearly all of a
step's time) under ``torch.autocast(dtype=bfloat16)``, where the device has native bf16
(:func:`pipeline.devices.bf16_is_fast`: CUDA, or CPUs with AVX512-BF16 / AMX); elsewhere
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

import logging
from typing import Any

import torch

from pipeline.devices import bf16_is_fast

log = logging.getLogger(__name__)

def resolve_precision(requested: str, device: torch.device) -> tuple[bool, str]:
    """(use bf16 autocast?, what the run really computes in: 'fp32' | 'bf16 autocast' |
    'fp32 (bf16 requested; no native bf16 on <device type>)')."""
    if requested == "fp32":
        return False, "fp32"
    if requested != "bf16":
        raise ValueError(f"precision {requested!r}: expected 'fp32' or 'bf16'")
    if bf16_is_fast(device):
        return True, "bf16 autocast"
    log.warning("precision='bf16' requested but %s has no native bf16 (PyTorch would emulate it, slower than "
                "fp32): training in fp32", device)
    return False, f"fp32 (bf16 requested; no native bf16 on {device.type})"


def _fp32(out: Any) -> Any:
    """Floating tensors of an encoder / scoring output (a tensor or a dict of them) as fp32."""
    if torch.is_tensor(out):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _fp32(v) for k, v in out.items()}
    return out


def loss(model: torch.nn.Module, v, t, labels, device_type: str, bf16: bool) -> dict[str, torch.Tensor]:
    """``model.loss(v, t, labels)``, its forward pass (encoders + scoring) under bf16 autocast when
    ``bf16``, the loss maths on fp32 copies of their outputs."""
    if not bf16:
        return model.loss(v, t, labels)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        ve, te = model.encode_videos(v), model.encode_texts(t)
        parts = model.similarity_parts(ve, te)
    return model.loss_from_parts(_fp32(ve), _fp32(te), _fp32(parts), labels)
