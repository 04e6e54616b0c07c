"""Batched similarities vs slow per-pair reference implementations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.similarity import cosine_matrix, jaccard_matrix, stacked_attention


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def slow_stacked_attention(v, v_mask, s, s_mask, lam, fusion):
    """Literal per-pair, per-component loop (attended vector built explicitly)."""
    Bv, Bt = v.shape[0], s.shape[0]
    out = torch.zeros(Bv, Bt, dtype=torch.float64)
    for a in range(Bv):
        frames = v[a][v_mask[a]].double() if v_mask is not None else v[a].double()
        for b in range(Bt):
            scores = []
            for j in range(s.shape[1]):
                if not s_mask[b, j]:
                    continue
                phrase = s[b, j].double()
                c = F.cosine_similarity(frames, phrase.unsqueeze(0), dim=-1)  # (n,)
                a_ = c.clamp(min=0)
                a_ = a_ / (a_.norm() + 1e-12)
                g = torch.softmax(lam * a_, 0)
                if fusion == "sim":
                    scores.append((g * c).sum())
                else:
                    att = (g.unsqueeze(1) * frames).sum(0)
                    scores.append(F.cosine_similarity(att, phrase, dim=0))
            out[a, b] = torch.stack(scores).mean() if scores else 0.0
    return out


@pytest.mark.parametrize("fusion", ["embed", "sim"])
@pytest.mark.parametrize("with_mask", [True, False])
def test_stacked_attention_matches_loop(fusion, with_mask):
    g = torch.Generator().manual_seed(0)
    Bv, Bt, N, P, D = 4, 5, 7, 3, 6
    v = torch.randn(Bv, N, D, generator=g)
    s = torch.randn(Bt, P, D, generator=g)
    v_mask = torch.arange(N)[None] < torch.tensor([[7], [1], [4], [6]]) if with_mask else None
    if v_mask is not None:
        v = v * v_mask[..., None]
    s_mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0], [0, 1, 1], [1, 0, 1]]).bool()
    got = stacked_attention(v, v_mask, s, s_mask, 4.0, fusion)
    want = slow_stacked_attention(v, v_mask, s, s_mask, 4.0, fusion)
    assert got.shape == (Bv, Bt)
    assert torch.allclose(got.double(), want, atol=1e-5)
    assert (got[:, 2] == 0).all()  # a caption without valid components scores 0
    chunked = stacked_attention(v, v_mask, s, s_mask, 4.0, fusion, max_elems=1)
    assert torch.allclose(chunked, got, atol=1e-6)


@pytest.mark.parametrize("fusion", ["embed", "sim"])
def test_bench_reference_fusion_baseline_matches_loop(fusion):
    """bench/bench_eval.py's naive baseline computes the same scores (a fair baseline, not another model)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from _reference_fusion import reference_stacked_attention

    g = torch.Generator().manual_seed(2)
    v, s = torch.randn(3, 6, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    v_mask = torch.arange(6)[None] < torch.tensor([[6], [2], [5]])
    v = v * v_mask[..., None]
    s_mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 1], [1, 1, 1]]).bool()
    got = reference_stacked_attention(v, v_mask, s, s_mask, 4.0, fusion)
    assert torch.allclose(got.double(), slow_stacked_attention(v, v_mask, s, s_mask, 4.0, fusion), atol=1e-5)


def test_stacked_attention_all_components_padded_scores_zero():
    v, s = torch.randn(2, 4, 3), torch.randn(3, 2, 3)
    out = stacked_attention(v, None, s, torch.zeros(3, 2, dtype=torch.bool), 4.0)
    assert out.shape == (2, 3) and (out == 0).all()


def test_stacked_attention_ignores_padded_frame_values():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(2, 5, 4, generator=g)
    s = torch.randn(3, 2, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    sm = torch.ones(3, 2, dtype=torch.bool)
    a = stacked_attention(v, mask, s, sm, 4.0)
    v2 = v.clone()
    v2[0, 3:] = 100.0  # garbage in the padding
    b = stacked_attention(v2, mask, s, sm, 4.0)
    assert torch.allclose(a, b, atol=1e-6)


def test_stacked_attention_gradients_finite_with_zero_components():
    v = torch.zeros(2, 3, 4, requires_grad=True)  # all-zero frames: cos 0, norm 0
    s = torch.randn(2, 2, 4, requires_grad=True)
    out = stacked_attention(v, None, s, torch.ones(2, 2, dtype=torch.bool), 4.0)
    out.sum().backward()
    assert torch.isfinite(v.grad).all() and torch.isfinite(s.grad).all()


def test_jaccard_formula():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(4, 9, generator=g)
    q = torch.rand(6, 9, generator=g)
    got = jaccard_matrix(p, q)
    want = torch.minimum(p[:, None], q[None]).sum(-1) / torch.maximum(p[:, None], q[None]).sum(-1)
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(jaccard_matrix(p, p).diagonal(), torch.ones(4))
    one_hot = torch.eye(3)
    assert torch.allclose(jaccard_matrix(one_hot, one_hot), torch.eye(3))


def test_cosine_matrix():
    a, b = torch.randn(3, 5), torch.randn(4, 5)
    want = F.cosine_similarity(a[:, None], b[None], dim=-1)
    assert torch.allclose(cosine_matrix(a, b), want, atol=1e-6)


@pytest.mark.parametrize("fusion", ["embed", "sim"])
def test_autograd_path_equals_inference_path(fusion):
    g = torch.Generator().manual_seed(3)
    v = torch.randn(3, 6, 5, generator=g)
    s = torch.randn(4, 2, 5, generator=g)
    vm = torch.arange(6)[None] < torch.tensor([[6], [2], [4]])
    sm = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]]).bool()
    with torch.no_grad():
        fast = stacked_attention(v, vm, s, sm, 4.0, fusion)
    vg, sg = v.clone().requires_grad_(), s.clone().requires_grad_()
    slow = stacked_attention(vg, vm, sg, sm, 4.0, fusion)
    assert torch.allclose(fast, slow.detach(), atol=1e-6)
    slow.sum().backward()
    assert torch.isfinite(vg.grad).all() and (vg.grad[1, 2:] == 0).all()  # padding gets no gradient
