"""A backbone's inference form: BatchNorm folding (each Conv+BatchNorm pair becomes one convolution, kept only
when the folded model agrees with the unfused one on a probe input) and a frozen TorchScript graph."""
from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

log = logging.getLogger(__name__)

FOLD_TOLERANCE = 1e-4  # max relative error allowed for BatchNorm folding (probe input vs unfused)
_CONVS = (nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


def _fold_children(parent: nn.Module) -> int:
    """Fold each BatchNorm into the convolution defined right before it in ``parent``."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded, children = 0, list(parent.named_children())
    for (name_c, conv), (name_n, norm) in zip(children, children[1:]):
        if isinstance(conv, _CONVS) and isinstance(norm, _NORMS) and conv.out_channels == norm.num_features:
            setattr(parent, name_c, fuse_conv_bn_eval(conv, norm))
            setattr(parent, name_n, nn.Identity())
            folded += 1
    return folded


def fold_batchnorm(model: nn.Module, probe: torch.Tensor) -> tuple[nn.Module, bool]:
    """Conv+BatchNorm pairs folded into single convolutions (eval only); (model, done).

    Eager module surgery (no torch.fx tracing, which patches ``nn.Module.__call__``
    process-wide and breaks models running in other threads). Pairs are taken in
    definition order, so the result is checked on ``probe`` against the unfused
    model; any disagreement keeps the unfused model.
    """
    import copy

    fused = copy.deepcopy(model).eval()
    n = sum(_fold_children(m) for m in list(fused.modules()))
    with torch.inference_mode():
        want, got = model(probe), fused(probe)
    err = float((want - got).abs().max() / want.abs().max().clamp_min(1e-12))
    if n == 0 or err > FOLD_TOLERANCE:
        log.warning("BatchNorm folding skipped (%d pairs, relative error %.2e)", n, err)
        return model, False
    return fused, True


def frozen_graph(model: nn.Module, probe: torch.Tensor, layout: torch.memory_format, bf16: bool) -> torch.jit.ScriptModule:
    """``model`` traced on ``probe`` (its dtype and layout) and frozen for inference."""
    device = next(model.parameters()).device
    x = probe.to(device, torch.bfloat16 if bf16 else torch.float32).contiguous(memory_format=layout)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        return torch.jit.freeze(torch.jit.trace(model, x))
