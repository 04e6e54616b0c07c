"""Blocks shared by the HGR-family models (HGR, HCMI-style): built on models.layers, not copied.

* :class:`MultiLevelVideoProjection` - K Linear(D_feat -> D) frame projections (+dropout), the
  first one attention-pooled into one vector (HGR's MultilevelEncoder; HANet's action / entity /
  event branches are the same three projections).
* :class:`RoleGraphTextEncoder` - word embedding -> BiGRU (fwd/bwd averaged), attention-pooled
  sentence, max-pooled phrase spans x role embedding, a stack of (attention) GCN layers over the
  role graph (HGR's RoleGraphEncoder; HANet's text graph is the one-layer case).
* :class:`GCNLayer` - the plain (non-attention) graph convolution of the HGR reference.
* :func:`max_mean_similarity` - token-wise late interaction (each token's best match, averaged
  both ways), chunked so no (B_v, B_t, N, M) temporary exceeds a bound.
* :func:`symmetric_info_nce` - the CLIP-style contrastive loss, with the optional label
  denoising / marginal sample enhancement of the HCMI-style model (formulas in docs/models.md).

Padding rule as in models.layers: padded frames/words/empty graph slots never change a real
item's output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batch import ROLES, TextBatch
from .layers import AttentionPool, AttnGCNLayer, BiGRUEncoder, masked_max_pool, zero_pad
from .similarity import DEFAULT_MAX_ELEMS


class MultiLevelVideoProjection(nn.Module):
    """``n_levels`` Linear(D_feat -> D) + dropout over the frames; level 0 is also attention-pooled.

    forward(x (B,N,F), mask (B,N)) -> (pooled (B,D), [level_k (B,N,D)]), padded frames 0.
    """

    def __init__(self, feat_dim: int, dim: int, n_levels: int, dropout: float):
        super().__init__()
        self.levels = nn.ModuleList(nn.Linear(feat_dim, dim) for _ in range(n_levels))
        self.attn_pool = AttentionPool(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, list[Tensor]]:
        levels = [zero_pad(self.dropout(fc(x)), mask) for fc in self.levels]
        return self.attn_pool(levels[0], mask), levels


class GCNLayer(nn.Module):
    """g' = LayerNorm(g + dropout(W_ctx A g)), A = the adjacency restricted to valid nodes and
    row-normalised (rows without edges stay 0): the reference's non-attention GCNLayer."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.ctx = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, g: Tensor, adjacency: Tensor, valid: Tensor) -> Tensor:
        a = adjacency.to(g.dtype) * (valid.unsqueeze(1) & valid.unsqueeze(2)).to(g.dtype)
        a = a / a.sum(-1, keepdim=True).clamp(min=1e-12)
        return self.norm(g + self.dropout(self.ctx(torch.bmm(a, g))))


class RoleGraphTextEncoder(nn.Module):
    """Words -> BiGRU states; sentence = attention pool; phrases = max-pool over spans x role
    embedding; graph nodes [sentence, verbs, nouns] -> ``gcn_layers`` GCN layers.

    forward(t) -> dict with words (B,L,D) (padded 0), word_mask (B,L), sent (B,D) the pooled
    sentence, phrases (B,V+E,D) pre-GCN max-pooled spans (no role), nodes (B,1+V+E,D) after the
    GCN (invalid slots 0), node_valid (B,1+V+E).
    """

    def __init__(self, vocab_size: int, word_dim: int, dim: int, dropout: float, gcn_layers: int,
                 gcn_attention: bool, gcn_attn_dim: int, gcn_dropout: float,
                 word_embeddings: Tensor | None = None):
        super().__init__()
        self.rnn = BiGRUEncoder(vocab_size, word_dim, dim, dropout, word_embeddings)
        self.attn_pool = AttentionPool(dim)
        self.role_embedding = nn.Embedding(len(ROLES), dim)  # the root node carries no role
        attn_dim = gcn_attn_dim or dim // 2
        self.gcn = nn.ModuleList(
            AttnGCNLayer(dim, attn_dim, gcn_dropout) if gcn_attention else GCNLayer(dim, gcn_dropout)
            for _ in range(gcn_layers))

    def forward(self, t: TextBatch) -> dict[str, Tensor]:
        L = t.word_ids.shape[1]
        wmask = torch.arange(L, device=t.word_ids.device).unsqueeze(0) < t.lengths.unsqueeze(1)
        words = self.rnn(t.word_ids, t.lengths)
        sent = self.attn_pool(words, wmask)
        valid = t.node_valid.to(torch.bool)
        spans = (t.node_masks[:, 1:] > 0) & wmask.unsqueeze(1) & valid[:, 1:].unsqueeze(-1)
        phrases = masked_max_pool(words, spans)
        roles = torch.where(valid[:, 1:], t.node_roles[:, 1:], torch.zeros_like(t.node_roles[:, 1:]))
        nodes = torch.cat([sent.unsqueeze(1), phrases * self.role_embedding(roles)], 1)
        for layer in self.gcn:
            nodes = layer(nodes, t.adjacency, valid)
        nodes = nodes * valid.unsqueeze(-1).to(nodes.dtype)
        return {"words": words, "word_mask": wmask, "sent": sent, "phrases": phrases, "nodes": nodes,
                "node_valid": valid}


def max_mean_similarity(a: Tensor, a_mask: Tensor, b: Tensor, b_mask: Tensor,
                        max_elems: int = DEFAULT_MAX_ELEMS, eps: float = 1e-8) -> Tensor:
    """Token-wise late interaction between sets: (B_v, N, D) x (B_t, M, D) -> (B_v, B_t).

    c_nm = cos(a_n, b_m) over valid tokens; score = (mean_m max_n c_nm + mean_n max_m c_nm) / 2
    (each text token's best video token and each video token's best text token). A pair with
    no valid token on one side scores 0. Computed in chunks of texts so that no
    (B_v, N, chunk, M) temporary exceeds ``max_elems`` elements.
    """
    Bv, N, D = a.shape
    Bt, M, _ = b.shape
    an = F.normalize(a, dim=-1, eps=eps)
    bn = F.normalize(b, dim=-1, eps=eps)
    am, bm = a_mask.to(torch.bool), b_mask.to(torch.bool)
    na = am.sum(1).clamp(min=1).to(a.dtype)  # (Bv,)
    nb = bm.sum(1).clamp(min=1).to(a.dtype)  # (Bt,)
    neg = torch.finfo(a.dtype).min
    chunk = max(1, max_elems // max(1, Bv * N * M))
    out = []
    for s in range(0, Bt, chunk):
        bc, bmc = bn[s:s + chunk], bm[s:s + chunk]
        c = torch.einsum("vnd,tmd->vtnm", an, bc)  # (Bv, T, N, M)
        valid = am[:, None, :, None] & bmc[None, :, None, :]
        c = c.masked_fill(~valid, neg)
        t2v = c.max(2).values.masked_fill(~bmc[None], 0).sum(-1) / nb[s:s + chunk][None]  # text tokens
        v2t = c.max(3).values.masked_fill(~am[:, None], 0).sum(-1) / na[:, None]          # video tokens
        both = am.any(1)[:, None] & bmc.any(1)[None]
        out.append(torch.where(both, (t2v + v2t) / 2, torch.zeros_like(t2v)))
    return torch.cat(out, 1) if len(out) > 1 else out[0]


def symmetric_info_nce(scores: Tensor, logit_scale: Tensor, positives: Tensor | None = None, *,
                       denoise_alpha: float = 0.0, marginal_delta: float = 0.0,
                       marginal_lambda: float = 0.0) -> Tensor:
    """Symmetric InfoNCE over a (B, B) similarity matrix (row i = video i, diagonal = positives).

    L = (CE_rows + CE_cols) / 2 with logits = logit_scale * S. Further true pairs in
    ``positives`` are removed from the negatives. Options (docs/models.md):

    * marginal sample enhancement (``marginal_lambda`` > 0): a negative j of anchor i with
      S_ij >= S_ii - delta is "marginal" and counts (1 + lambda) times in the softmax
      denominator, i.e. its logit gets + log(1 + lambda) (the indicator is not differentiated);
    * adaptive label denoising (``denoise_alpha`` > 0): the one-hot target of anchor i becomes
      q_i = (1 - a_i) e_i + a_i p_i, with p_i = softmax(logits_i) (detached) and
      a_i = alpha * (1 - p_ii): the less the model believes the given pair, the more its target
      moves toward the model's own distribution.
    """
    B = scores.shape[0]
    eye = torch.eye(B, dtype=torch.bool, device=scores.device)
    excluded = eye.clone() if positives is None else (eye | positives.to(torch.bool))
    logits = logit_scale * scores
    if marginal_lambda > 0:
        import math

        diag = scores.diagonal()
        with torch.no_grad():
            marg_r = (scores >= diag.unsqueeze(1) - marginal_delta) & ~excluded  # anchor = video row
            marg_c = (scores >= diag.unsqueeze(0) - marginal_delta) & ~excluded  # anchor = text column
        bonus = math.log1p(marginal_lambda)
        logits_r = logits + bonus * marg_r.to(logits.dtype)
        logits_c = logits + bonus * marg_c.to(logits.dtype)
    else:
        logits_r = logits_c = logits
    other = excluded & ~eye
    logits_r = logits_r.masked_fill(other, float("-inf"))
    logits_c = logits_c.masked_fill(other, float("-inf"))

    def ce(lg: Tensor) -> Tensor:  # rows are anchors, target = the diagonal
        logp = torch.log_softmax(lg, dim=1)
        target = eye.to(lg.dtype)
        if denoise_alpha > 0:
            with torch.no_grad():
                p = logp.exp()
                a = denoise_alpha * (1 - p.diagonal())
                target = (1 - a).unsqueeze(1) * target + a.unsqueeze(1) * p
        return -(target * logp.masked_fill(~torch.isfinite(logp), 0)).sum(1).mean()

    return (ce(logits_r) + ce(logits_c.T)) / 2
