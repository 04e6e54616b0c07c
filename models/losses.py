"""HANet losses (eqs. 21-25)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def hardest_negative_hinge(scores: Tensor, margin: float, positives: Tensor | None = None) -> Tensor:
    """VSE++ max-violation hinge loss, both directions, mean over the batch (eqs. 21-22).

    scores (B, B): row i = video i, column j = text j; (i, i) are the positive pairs.
    For each video the hardest negative text, for each text the hardest negative video:
      L = mean_i [m + max_{j!=i} S_ij - S_ii]_+ + mean_j [m + max_{i!=j} S_ij - S_jj]_+
    `positives` (B, B) bool optionally marks further pairs that must not act as negatives
    (e.g. two captions of the same video in one batch); the diagonal is always excluded.
    """
    B = scores.shape[0]
    if scores.shape != (B, B):
        raise ValueError(f"scores must be square, got {tuple(scores.shape)}")
    diag = scores.diagonal()
    excluded = torch.eye(B, dtype=torch.bool, device=scores.device)
    if positives is not None:
        excluded = excluded | positives.to(torch.bool)
    cost_t = (margin + scores - diag.unsqueeze(1)).clamp(min=0).masked_fill(excluded, 0)
    cost_v = (margin + scores - diag.unsqueeze(0)).clamp(min=0).masked_fill(excluded, 0)
    return cost_t.max(dim=1).values.mean() + cost_v.max(dim=0).values.mean()


def concept_bce(probs: Tensor, labels: Tensor, ignore: Tensor | None = None) -> Tensor:
    """Binary cross-entropy over the concept vocabulary (one term of eqs. 23-24).

    probs, labels (B, K). Without `ignore`: mean over the K concepts, then over the batch
    (the paper's 1/K sum). With `ignore` (B, K) bool: ignored concepts are left out and each
    row is averaged over its remaining concepts (the reference's masked BCE).
    """
    eps = 1e-7  # keeps log() finite for saturated confidences (BCELoss clamps at -100)
    bce = F.binary_cross_entropy(probs.clamp(eps, 1 - eps), labels.to(probs.dtype), reduction="none")
    if ignore is None:
        return bce.mean()
    keep = (~ignore.to(torch.bool)).to(probs.dtype)
    return ((bce * keep).sum(-1) / keep.sum(-1).clamp(min=1)).mean()
