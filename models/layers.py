"""Building blocks of HANet that respect padding masks.

Every sequence tensor here is laid out (B, T, C) with a bool mask (B, T), True = real step.
The rule of this module: padded steps never influence a real step's output. They are zeroed
before convolutions (so a k=5 conv sees exactly the zero padding a lone sequence would see),
excluded from BatchNorm statistics, from the SE squeeze, from attention and from MIL pooling,
and zero in every output.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .fastpath import MIL_NET_MAX_K, bf16_bigru_inference, masked_max_values, mil_pool_small_k


def zero_pad(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, T, C) with padded steps set to 0."""
    return x * mask.unsqueeze(-1).to(x.dtype)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over the channel axis of (B, T, C) that only sees real steps.

    Training: mean/variance over the valid positions of the batch only (running statistics are
    updated from those, unbiased as in nn.BatchNorm1d). Eval: running statistics, so a sample's
    output never depends on its batch-mates. Parameter/buffer names equal nn.BatchNorm1d's.
    Padded positions come out as 0.
    """

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        y = self.forward_flat(x[mask])  # (M, C): the valid positions only
        out = y.new_zeros(x.shape[:-1] + (y.shape[-1],))  # y.dtype: autocast-safe
        out[mask] = y
        return out

    def forward_flat(self, flat: Tensor) -> Tensor:
        """BN of (M, C) rows that are all real positions."""
        # batch statistics need >= 2 values; a lone valid position is normalised with the
        # running statistics instead (plain BatchNorm1d would raise)
        use_batch_stats = self.training and flat.shape[0] > 1
        if use_batch_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        if self.momentum is not None:
            momentum = self.momentum
        else:  # cumulative moving average, as nn.BatchNorm1d
            momentum = 1.0 / max(1, int(self.num_batches_tracked or 1))
        return F.batch_norm(flat, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch_stats, momentum, self.eps)


class ConceptHead(nn.Module):
    """sigma(BN(Conv1d_k(x))) per step (eqs. 1-4): (B, T, C_in) -> (B, T, K) confidences.

    Inputs at padded steps are zeroed before the convolution (zero 'same' padding), BN is masked,
    and outputs at padded steps are 0.
    """

    def __init__(self, in_dim: int, n_concepts: int, kernel: int = 1):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"concept-head kernel must be odd, got {kernel}")
        self.conv = nn.Conv1d(in_dim, n_concepts, kernel, padding=kernel // 2)
        self.bn = MaskedBatchNorm1d(n_concepts)

    def forward(self, x: Tensor, mask: Tensor, leak: bool = False) -> Tensor:
        """leak=True (HANetConfig padding='reference'): x is used as given at every step (padded
        steps keep whatever the previous layer produced, e.g. a Linear's bias), the conv sees them
        and BatchNorm's batch statistics include every step of (B, T); outputs at padded steps are
        still 0 (nothing downstream reads them)."""
        if leak:
            k = self.conv.kernel_size[0]
            if k == 1:
                h = F.linear(x, self.conv.weight.squeeze(-1), self.conv.bias)
            else:
                T = x.shape[1]
                xp = F.pad(x, (0, 0, k // 2, k // 2))
                taps = torch.cat([xp[:, i:i + T] for i in range(k)], dim=-1)
                w = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)
                h = F.linear(taps, w, self.conv.bias)
            y = self.bn.forward_flat(h.reshape(-1, h.shape[-1])).view(h.shape)
            return zero_pad(torch.sigmoid(y), mask)
        if self.conv.kernel_size[0] == 1:  # per-step: compute on the real steps only
            flat = F.linear(x[mask], self.conv.weight.squeeze(-1), self.conv.bias)
            y = torch.sigmoid(self.bn.forward_flat(flat))
            out = y.new_zeros(x.shape[:-1] + (y.shape[-1],))  # y.dtype: autocast-safe
            out[mask] = y
            return out
        # k > 1: zero padded steps, then the conv as one matmul over the k stacked taps
        # (same weights as nn.Conv1d with 'same' zero padding; faster than mkldnn here on CPU)
        k, T = self.conv.kernel_size[0], x.shape[1]
        xp = F.pad(zero_pad(x, mask), (0, 0, k // 2, k // 2))
        taps = torch.cat([xp[:, i:i + T] for i in range(k)], dim=-1)  # (B, T, k*C_in)
        w = self.conv.weight.permute(0, 2, 1).reshape(self.conv.out_channels, -1)
        h = F.linear(taps, w, self.conv.bias)
        return zero_pad(torch.sigmoid(self.bn(h, mask)), mask)


class SEBlock(nn.Module):
    """Squeeze-and-excitation over channels (Hu et al.), squeeze = mean over valid steps only."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: Tensor, mask: Tensor, leak: bool = False) -> Tensor:
        """leak=True (padding='reference'): the squeeze averages every step of x, padded ones too."""
        m = mask.unsqueeze(-1).to(x.dtype)
        squeeze = x.mean(1) if leak else (x * m).sum(1) / m.sum(1).clamp(min=1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(squeeze))))
        return x * gate.unsqueeze(1) * m


class AttentionPool(nn.Module):
    """softmax(x W) over valid steps, then the weighted sum (eqs. 9-10): (B,T,C) -> (B,C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        scores = self.proj(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        return torch.einsum("bt,btc->bc", torch.softmax(scores, dim=1), x)


def mil_tau(n_valid: Tensor, divisor: int) -> Tensor:
    """tau = ceil(n_valid / divisor), at least 1.

    The paper writes floor(N/8), which is 0 for N < 8 (an empty top-k); the reference code uses
    ceil over the real length, which is what we do (and never fewer than 1 instance).
    """
    return torch.div(n_valid + divisor - 1, divisor, rounding_mode="floor").clamp(min=1)


def mil_pool(probs: Tensor, mask: Tensor, divisor: int) -> Tensor:
    """Video/text-level concept score (eq. 8): mean of the top-tau step confidences per concept.

    probs (B, T, K) in [0, 1], mask (B, T) -> (B, K). Padded steps never enter the top-tau.
    """
    tau = mil_tau(mask.sum(1), divisor)  # (B,)
    k = min(int(tau.max()), probs.shape[1])
    filled = probs.masked_fill(~mask.unsqueeze(-1), -1.0)  # below every real confidence
    if k <= MIL_NET_MAX_K and not (torch.is_grad_enabled() and probs.requires_grad):
        return mil_pool_small_k(filled, tau, k)
    top = filled.topk(k, dim=1).values.cumsum(dim=1)  # (B, k, K); the first tau are real steps
    idx = (tau - 1).view(-1, 1, 1).expand(-1, 1, probs.shape[-1])
    return top.gather(1, idx).squeeze(1) / tau.to(probs.dtype).unsqueeze(-1)


def action_clip_weights(frame_probs: Tensor, mask: Tensor, window: int) -> Tensor:
    """Averaging weights of the action clips (SeMe, verbs).

    frame_probs (B, T, Q) confidences of the Q selected concepts; returns (B, Q, T): for each
    concept, uniform weights over the frames within +-window of its argmax frame, the window
    intersected with the real frames (clipped at both borders, so a clip at a border averages
    fewer frames instead of being shifted).
    """
    filled = frame_probs.masked_fill(~mask.unsqueeze(-1), -1.0)
    centre = filled.argmax(dim=1)  # (B, Q)
    t = torch.arange(frame_probs.shape[1], device=frame_probs.device)
    w = ((t.view(1, 1, -1) - centre.unsqueeze(-1)).abs() <= window) & mask.unsqueeze(1)
    w = w.to(frame_probs.dtype)
    return w / w.sum(-1, keepdim=True).clamp(min=1)


def action_clip_weights_reference(frame_probs: Tensor, mask: Tensor, window: int) -> Tensor:
    """Action clips as the reference builds them (t2vretrieval/encoders/mlvideo.py): per video, if
    EVERY selected concept's argmax frame c satisfies window <= c <= n_valid-1-window, each concept's
    clip is the uniform mean of the 2*window+1 frames around c; otherwise (all-or-nothing per video)
    every concept of that video uses its argmax frame alone. (B, T, Q) -> (B, Q, T)."""
    filled = frame_probs.masked_fill(~mask.unsqueeze(-1), -1.0)
    centre = filled.argmax(dim=1)  # (B, Q)
    n_valid = mask.sum(1)  # (B,)
    inside = (centre.min(dim=1).values >= window) & (centre.max(dim=1).values + window < n_valid)
    t = torch.arange(frame_probs.shape[1], device=frame_probs.device)
    dist = (t.view(1, 1, -1) - centre.unsqueeze(-1)).abs()
    w = torch.where(inside.view(-1, 1, 1), dist <= window, dist == 0).to(frame_probs.dtype)
    return w / w.sum(-1, keepdim=True)


def entity_clip_weights_reference(frame_probs: Tensor, mask: Tensor, k: int) -> Tensor:
    """Entity clips as the reference builds them: the mean of the top-k frames per concept when the
    video has >= k real frames (the reference: > 2 for k = 3), else the argmax frame. (B,T,Q)->(B,Q,T)."""
    w_top = entity_clip_weights(frame_probs, mask, k)
    filled = frame_probs.masked_fill(~mask.unsqueeze(-1), -1.0)
    one = F.one_hot(filled.argmax(dim=1), frame_probs.shape[1]).to(frame_probs.dtype)  # (B, Q, T)
    short = (mask.sum(1) < k).view(-1, 1, 1)
    return torch.where(short, one, w_top)


def entity_clip_weights(frame_probs: Tensor, mask: Tensor, k: int) -> Tensor:
    """Averaging weights of the entity clips (SeMe, nouns): the top-k real frames per concept
    (not necessarily contiguous; fewer when the video has fewer than k frames). (B,T,Q)->(B,Q,T)."""
    B, T, Q = frame_probs.shape
    kk = min(k, T)
    filled = frame_probs.masked_fill(~mask.unsqueeze(-1), -1.0)
    vals, idx = filled.topk(kk, dim=1)  # (B, kk, Q)
    keep = (vals >= 0).to(frame_probs.dtype)
    w = frame_probs.new_zeros(B, Q, T)
    w.scatter_add_(2, idx.transpose(1, 2), keep.transpose(1, 2))
    return w / w.sum(-1, keepdim=True).clamp(min=1)


def masked_max_pool(x: Tensor, span_masks: Tensor, max_elems: int = 1 << 24) -> Tensor:
    """Max-pool word states over each phrase span.

    x (B, L, D) word states; span_masks (B, P, L) {0,1}. Returns (B, P, D); a phrase with an
    empty span gets 0 (the reference fills -1e10 and relies on later masking).
    The arg-max positions are found without autograd and the values are then gathered, so the
    backward pass is a cheap scatter instead of a pass over a (B, P, L, D) tensor. The arg-max
    runs over the non-empty phrases only, one word position at a time on the phrases that
    contain it: work ~ (sum of span lengths) x D instead of B x P x L x D (a masked argmax over
    the strided L axis took ~23 % of caption encoding). ``max_elems`` is kept for compatibility.
    """
    B, L, D = x.shape
    P = span_masks.shape[1]
    span = span_masks > 0
    if not (torch.is_grad_enabled() and x.requires_grad):
        return masked_max_values(x, span)  # evaluation: no arg-max needed (~10x faster)
    with torch.no_grad():
        xd = x.detach()
        idx = torch.zeros((B * P, D), dtype=torch.long, device=x.device)  # word position of each max
        rows = span.reshape(B * P, L).any(-1).nonzero().squeeze(1)  # phrases with a non-empty span
        if rows.numel():
            owner, sp = torch.div(rows, P, rounding_mode="floor"), span.reshape(B * P, L)[rows]
            best = xd.new_full((rows.numel(), D), float("-inf"))
            arg = torch.zeros((rows.numel(), D), dtype=torch.long, device=x.device)
            for pos in range(L):
                r = sp[:, pos].nonzero().squeeze(1)
                if r.numel() == 0:
                    continue
                cand, cur = xd[owner[r], pos], best[r]
                better = cand > cur  # strict: ties keep the first position, as argmax does
                best[r] = torch.where(better, cand, cur)
                arg[r] = torch.where(better, pos, arg[r])
            idx[rows] = arg
        idx = idx.view(B, P, D)
    pooled = x.gather(1, idx)  # out[b, p, d] = x[b, idx[b, p, d], d]
    return pooled.masked_fill(~span.any(-1, keepdim=True), 0.0)


class BiGRUEncoder(nn.Module):
    """Word embedding -> dropout -> 1-layer BiGRU; forward and backward states AVERAGED (eq. 13).

    Packed sequences, so padding never enters the recurrence; padded outputs are 0.
    GRU weights orthogonal, biases 0 (reference init). Embedding uniform(+-1/sqrt(dim)) unless
    pretrained vectors are given.
    """

    def __init__(self, vocab_size: int, word_dim: int, hidden: int, dropout: float,
                 word_embeddings: Tensor | None = None):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, word_dim)
        if word_embeddings is not None:
            if tuple(word_embeddings.shape) != (vocab_size, word_dim):
                raise ValueError(f"word_embeddings {tuple(word_embeddings.shape)} != "
                                 f"({vocab_size}, {word_dim})")
            with torch.no_grad():
                self.embedding.weight.copy_(word_embeddings)
        else:
            bound = 1.0 / math.sqrt(word_dim)
            nn.init.uniform_(self.embedding.weight, -bound, bound)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(word_dim, hidden, num_layers=1, batch_first=True, bidirectional=True)
        self.hidden = hidden
        for name, p in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, word_ids: Tensor, lengths: Tensor, keep_bf16: bool = False) -> Tensor:
        """(B, T, H) word states. Under CPU bf16 autocast they are bf16 values; returned as fp32
        unless ``keep_bf16`` (for callers whose every consumer of the states either autocasts them
        to bf16 or promotes them to fp32 exactly: same results, no cast round trips)."""
        emb = self.dropout(self.embedding(word_ids))
        # CPU autocast leaves RNNs in fp32; under bf16 autocast run the GRU on bf16 copies of its
        # weights (~4x faster where bf16 is native), output back in fp32 as without autocast
        bf16 = (emb.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        if bf16 and not torch.is_grad_enabled():  # evaluation: our own loop (same GRU maths)
            out = bf16_bigru_inference(self, emb.to(torch.bfloat16), lengths.cpu(), word_ids.shape[1])
            return out if keep_bf16 else out.float()
        packed = pack_padded_sequence(emb.to(torch.bfloat16) if bf16 else emb, lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        if bf16:
            weights = {k: v.to(torch.bfloat16) for k, v in self.gru.named_parameters()}
            out, _ = torch.func.functional_call(self.gru, weights, (packed,))
        else:
            out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=word_ids.shape[1])
        out = (out[..., :self.hidden] + out[..., self.hidden:]) / 2
        return out.float() if bf16 else out


class AttnGCNLayer(nn.Module):
    """One attention graph-convolution layer over the role graph (eqs. 14-15, HGR style).

    beta = softmax_j(q(g_i) . k(g_j) / sqrt(d)) over the neighbours j given by the adjacency
    (and valid nodes only); g' = LayerNorm(g + dropout(W_ctx sum_j beta_ij g_j)).
    Node inputs already carry the role embedding (phrase x role), as in the reference.
    """

    def __init__(self, dim: int, attn_dim: int, dropout: float):
        super().__init__()
        self.query = nn.Linear(dim, attn_dim)
        self.key = nn.Linear(dim, attn_dim)
        self.ctx = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(attn_dim)

    def forward(self, g: Tensor, adjacency: Tensor, valid: Tensor) -> Tensor:
        edge = (adjacency > 0) & valid.unsqueeze(1) & valid.unsqueeze(2)
        scores = torch.einsum("bid,bjd->bij", self.query(g), self.key(g)) * self.scale
        scores = scores.masked_fill(~edge, torch.finfo(scores.dtype).min)
        beta = torch.softmax(scores, dim=-1) * edge.to(g.dtype)  # nodes without edges get 0
        ctx = self.ctx(torch.bmm(beta, g))
        return self.norm(g + self.dropout(ctx))


def count_parameters(model, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter elements, each shared tensor counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
