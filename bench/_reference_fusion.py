"""The stacked-attention fusion computed the way the reference code does it (a benchmark baseline).

Same maths as :func:`models.similarity.stacked_attention` (tests/test_similarity.py checks
both against a per-pair loop), but with the reference's data flow (reference-facts.md,
"PITFALLS"): all (video, caption, frame, component) cosines of a block, softmax weights
over frames, then the attended vectors are MATERIALISED as a (B_v, B_t, P, D) tensor and
compared with the components; padded components are scored and masked out afterwards.
This is what costs the reference ~2.2 GB temporaries per 300 x 300 block.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reference_stacked_attention(v: Tensor, v_mask: Tensor | None, s: Tensor, s_mask: Tensor, lam: float,
                                fusion: str = "embed", eps: float = 1e-8, max_elems: int | None = None) -> Tensor:
    """(B_v, B_t) scores; v (B_v, N, D), s (B_t, P, D); ``max_elems`` is ignored (no chunking)."""
    vn, sn = F.normalize(v, dim=-1, eps=eps), F.normalize(s, dim=-1, eps=eps)
    c = torch.einsum("vnd,tpd->vtnp", vn, sn)  # (Bv, Bt, N, P) cosines
    a = c.clamp(min=0)
    a = a / a.norm(dim=2, keepdim=True).clamp(min=eps)
    logits = lam * a
    if v_mask is not None:
        logits = logits.masked_fill(~v_mask[:, None, :, None], float("-inf"))
    gamma = torch.softmax(logits, dim=2)
    if fusion == "sim":
        score = (gamma * c).sum(2)  # (Bv, Bt, P)
    else:
        attended = torch.einsum("vtnp,vnd->vtpd", gamma, v)  # (Bv, Bt, P, D), materialised
        score = F.cosine_similarity(attended, s.unsqueeze(0), dim=-1, eps=eps)
    pm = s_mask.to(score.dtype)
    return (score * pm).sum(-1) / pm.sum(-1).clamp(min=1)
