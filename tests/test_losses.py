"""Ranking and concept losses vs brute force."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.losses import concept_bce, hardest_negative_hinge


def brute_force_hinge(S, margin, positives=None):
    B = S.shape[0]
    excluded = torch.eye(B, dtype=torch.bool)
    if positives is not None:
        excluded |= positives
    total_t, total_v = 0.0, 0.0
    for i in range(B):  # video i: hardest negative caption
        worst = 0.0
        for j in range(B):
            if not excluded[i, j]:
                worst = max(worst, max(0.0, margin + float(S[i, j]) - float(S[i, i])))
        total_t += worst
    for j in range(B):  # caption j: hardest negative video
        worst = 0.0
        for i in range(B):
            if not excluded[i, j]:
                worst = max(worst, max(0.0, margin + float(S[i, j]) - float(S[j, j])))
        total_v += worst
    return total_t / B + total_v / B


def test_hardest_negative_vs_brute_force():
    g = torch.Generator().manual_seed(0)
    for B in (1, 2, 5, 9):
        S = torch.rand(B, B, generator=g) * 2 - 1
        got = hardest_negative_hinge(S, 0.2)
        assert abs(float(got) - brute_force_hinge(S, 0.2)) < 1e-6


def test_hardest_negative_with_extra_positives():
    g = torch.Generator().manual_seed(1)
    S = torch.rand(6, 6, generator=g)
    pos = torch.zeros(6, 6, dtype=torch.bool)
    pos[0, 3] = pos[3, 0] = True  # videos 0 and 3 are the same clip
    got = hardest_negative_hinge(S, 0.2, pos)
    assert abs(float(got) - brute_force_hinge(S, 0.2, pos)) < 1e-6


def test_hinge_zero_when_well_separated_and_gradient():
    S = torch.eye(4) * 0.9
    assert float(hardest_negative_hinge(S, 0.2)) == 0.0
    S = torch.zeros(4, 4, requires_grad=True)
    hardest_negative_hinge(S, 0.2).backward()
    assert torch.allclose(S.grad.diagonal(), torch.full((4,), -2 / 4))


def test_concept_bce_plain_and_masked():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 7, generator=g) * 0.98 + 0.01
    y = (torch.rand(3, 7, generator=g) < 0.4).float()
    assert torch.allclose(concept_bce(p, y), F.binary_cross_entropy(p, y))
    ignore = torch.zeros(3, 7, dtype=torch.bool)
    ignore[0, :3] = True
    ignore[2, 6] = True
    want = []
    for b in range(3):
        keep = ~ignore[b]
        want.append(F.binary_cross_entropy(p[b, keep], y[b, keep]))
    assert torch.allclose(concept_bce(p, y, ignore), torch.stack(want).mean())
    assert torch.allclose(concept_bce(p, y, torch.zeros_like(ignore)), F.binary_cross_entropy(p, y))


def test_concept_bce_saturated_is_finite():
    p = torch.tensor([[0.0, 1.0]], requires_grad=True)
    y = torch.tensor([[1.0, 0.0]])
    out = concept_bce(p, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(p.grad).all()
