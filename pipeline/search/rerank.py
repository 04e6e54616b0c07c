"""Stage 2 of search on prepared video arrays: HANet's scores of the shortlisted videos, without redoing
per query what depends on the video alone.

:func:`models.similarity.stacked_attention` normalises every frame / clip of every scored video and
forms each video's (N, N) cosine Gram matrix on every call: for one query and K = 100 shortlisted
videos that is a pass over ~29 MB of components per level (four levels) plus 4 x K small matrix
products, the bulk of the re-rank (profile: bench/results/bench_search_scale-*.txt). Both depend on the
video only, so the index stores them once (:func:`prepared_video_arrays`, build time):

* ``prep/<level>_norm`` (n, N): the components' L2 norms ``|v_i|``;
* ``prep/<level>_gram`` (n, N, N): ``C = V^ V^T`` of the unit, masked components (fusion "embed").

Per query (:func:`prepared_parts`): ``c = (V s^T) / |v|`` (one matmul over the raw components, the
division on the (K N, M) product instead of on the (K, N, D) components), then the model's own stacked-attention tail
(:func:`models.similarity.attention_from_cosines`), the global cosine, the concept Jaccards and the fusion of
:meth:`models.hanet.HANet.similarity_parts`. Same maths; the values differ from the
model's by float32 rounding only (tests/test_search_rerank.py bounds it and checks the ranking).
Used for HANet checkpoints on indexes that carry the arrays; anything else goes through the model.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from models.similarity import attention_from_cosines, cosine_matrix, jaccard_matrix, unit_components

# level -> (the video's mask key, the text's mask key)
LEVELS = {"ind_a": ("mask", "verb_mask"), "ind_e": ("mask", "noun_mask"),
          "loc_a": ("loc_a_mask", "verb_mask"), "loc_e": ("loc_e_mask", "noun_mask")}
EPS = 1e-8


def prepared_video_arrays(ve: dict[str, Tensor], keys: Sequence[str], fusion: str = "embed") -> dict[str, Tensor]:
    """The per-video arrays :func:`prepared_parts` reads (norms, and Gram matrices for fusion 'embed') of
    every stacked-attention level in ``keys`` (the outputs the index stores); {} if there is none."""
    out: dict[str, Tensor] = {}
    for level, (mkey, _) in LEVELS.items():
        if level not in keys or mkey not in ve or ve[level].dim() != 3:
            continue
        v = ve[level].float()
        vn, norm = unit_components(v, ve[mkey], EPS)
        out[f"{level}_norm"] = norm
        if fusion == "embed":
            out[f"{level}_gram"] = vn @ vn.transpose(1, 2)
    return out


def can_prepare(model, stored: Sequence[str]) -> bool:
    """Whether ``model`` is scored by HANet's similarity_parts and the index stores what it needs."""
    cfg = getattr(model, "cfg", None)
    if type(model).__name__ != "HANet" or getattr(cfg, "attn_fusion", None) not in ("embed", "sim"):
        return False
    need = [lv for lv in ("ind_a", "ind_e", "loc_a", "loc_e") if lv in getattr(model, "enabled_parts", ())]
    suffixes = ("_norm", "_gram") if cfg.attn_fusion == "embed" else ("_norm",)
    return all(f"prep/{lv}{s}" in stored for lv in need for s in suffixes)


def _attend(v: Tensor, mask: Tensor, norm: Tensor, gram: Tensor | None, s: Tensor, s_mask: Tensor,
            lam: float) -> Tensor:
    """stacked_attention(v, mask, s, s_mask, lam, fusion) for K videos and B_t (usually 1) texts: (K, B_t)."""
    K, N, D = v.shape
    Bt, P, _ = s.shape
    keep = mask.to(v.dtype)
    valid = s_mask.reshape(-1).nonzero().squeeze(1)
    if valid.numel() == 0:
        return v.new_zeros(K, Bt)
    rows = F.normalize(s.reshape(Bt * P, D).index_select(0, valid), dim=-1, eps=EPS)  # (M, D)
    c = torch.mm(v.reshape(K * N, D), rows.T).mul_((keep / norm.clamp(min=EPS)).reshape(K * N, 1))
    weight = (norm * keep if gram is not None else keep).unsqueeze(-1)
    score = attention_from_cosines(c, K, N, weight, gram, lam, EPS, inplace=True)  # (K, M)
    owner = torch.div(valid, P, rounding_mode="floor")
    return score.new_zeros(K, Bt).index_add_(1, owner, score) / s_mask.sum(1).clamp(min=1).to(v.dtype)


def prepared_parts(model, ve: dict[str, Tensor], te: dict[str, Tensor]) -> dict[str, Tensor]:
    """:meth:`HANet.similarity_parts` (every (K, B_t) part, c_l and c_p) from the gathered rows ``ve`` of the
    stored video outputs plus their ``prep/*`` arrays (keys without the prefix, e.g. ``ind_a_gram``)."""
    cfg = model.cfg
    embed = cfg.attn_fusion == "embed"
    K, Bt = ve["verb_probs"].shape[0], te["verb_probs"].shape[0]
    parts: dict[str, Tensor] = {}
    for level in model.enabled_parts:
        if level == "glo":
            parts["glo"] = cosine_matrix(ve["glo"], te["glo"])
            continue
        mkey, tkey = LEVELS[level]
        parts[level] = _attend(ve[level], ve[mkey], ve[f"{level}_norm"], ve[f"{level}_gram"] if embed else None,
                               te[level], te[tkey], cfg.attn_lambda)
    zeros = ve["verb_probs"].new_zeros(K, Bt)
    parts["c_l"] = torch.stack([parts[k] for k in model.enabled_parts]).mean(0)
    parts["jac_a"] = jaccard_matrix(ve["verb_probs"], te["verb_probs"])
    parts["jac_e"] = jaccard_matrix(ve["noun_probs"], te["noun_probs"])
    parts["c_p"] = (parts["jac_a"] + parts["jac_e"]) / 2
    return {k: parts.get(k, zeros) for k in ("ind_a", "ind_e", "loc_a", "loc_e", "glo", "jac_a", "jac_e", "c_l",
                                             "c_p")}
