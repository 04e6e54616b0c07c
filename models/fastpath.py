"""Inference-only fast paths of models/layers.py (no autograd; used when evaluation encodes).

Each computes what the general path computes: MIL top-tau and phrase max-pooling exactly (values
only, no indices), the bf16 BiGRU with nn.GRU's maths on cached bf16 weight copies. Tested
against the general paths in tests/test_text_fast_paths.py.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


MIL_NET_MAX_K = 4  # mil_pool's values-only top-k (no autograd) up to this k


def mil_pool_small_k(filled: Tensor, tau: Tensor, k: int) -> Tensor:
    """mil_pool's result without topk (inference, small k): the k largest values per (b, concept)
    kept sorted by an insertion network of elementwise max/min over the steps (contiguous (B, K)
    slices; ~2x faster than topk over the strided step axis), then summed in topk.cumsum's
    accumulation type and order. The same values as the topk path, bit for bit (ties included:
    only values, never indices, are used); no autograd (max/min split ties' gradients)."""
    tops = [filled[:, 0]]
    for t in range(1, filled.shape[1]):
        cur = filled[:, t]
        for j in range(len(tops)):
            tops[j], cur = torch.maximum(tops[j], cur), torch.minimum(tops[j], cur)
        if len(tops) < k:
            tops.append(cur)
    acc_dtype = torch.float64 if filled.dtype in (torch.float32, torch.float64) else torch.float32
    tau_c = tau.view(-1, 1)
    acc = res = None
    for j in range(k):  # cumsum: acc_type running sum, each prefix cast back to the input dtype
        acc = tops[j].to(acc_dtype) if acc is None else acc + tops[j]
        c = acc.to(filled.dtype)
        res = c if res is None else torch.where(tau_c == j + 1, c, res)
    return res / tau.to(filled.dtype).unsqueeze(-1)


def masked_max_values(x: Tensor, span: Tensor) -> Tensor:
    """masked_max_pool's values without autograd: x (B, L, D), span (B, P, L) bool -> (B, P, D),
    the max over each span as one segment-max of its (phrase, word) pairs (empty spans: 0).
    The same values as the arg-max + gather path (max is exact; ties have equal values)."""
    B, L, D = x.shape
    P = span.shape[1]
    nz = span.reshape(B * P, L).nonzero()
    row, pos = nz[:, 0], nz[:, 1]
    vals = x[torch.div(row, P, rounding_mode="floor"), pos]  # (M, D)
    out = x.new_zeros(B * P, D)  # empty spans stay 0
    out.scatter_reduce_(0, row.view(-1, 1).expand(-1, D), vals, "amax", include_self=False)
    return out.view(B, P, D)


def bf16_gru_weights(enc) -> tuple[Tensor, ...]:
    """bf16 copies of the GRU weights for inference: (W_ih both directions (2*3H, E),
    b_ih (2*3H,), W_hh^T fwd, b_hh fwd, W_hh^T bwd, b_hh bwd), cached until a parameter
    changes (identity, in-place version counter and storage of each parameter are checked per call)."""
    g = enc.gru
    params = (g.weight_ih_l0, g.weight_ih_l0_reverse, g.bias_ih_l0, g.bias_ih_l0_reverse,
              g.weight_hh_l0, g.bias_hh_l0, g.weight_hh_l0_reverse, g.bias_hh_l0_reverse)
    versions = tuple((p._version, p.data_ptr()) for p in params)
    cache = getattr(enc, "_bf16_cache", None)  # (params, versions, weights); holding the
    # parameters themselves, so a replaced one can never alias a cached one by id
    if (cache is None or cache[1] != versions
            or any(a is not b or a.dtype != c for a, b, c in zip(cache[0], params, cache[3]))):
        with torch.no_grad():
            bf = [p.detach().to(torch.bfloat16) for p in params]
            w = (torch.cat(bf[0:2]), torch.cat(bf[2:4]), bf[4].t().contiguous(), bf[5],
                 bf[6].t().contiguous(), bf[7])
        cache = (params, versions, w, tuple(p.dtype for p in params))
        enc.__dict__["_bf16_cache"] = cache  # plain attribute: not a buffer, not in state_dict
    return cache[2]


def bf16_bigru_inference(enc, emb: Tensor, lengths: Tensor, total_length: int) -> Tensor:
    """The bidirectional GRU of ``BiGRUEncoder.forward`` (``enc``) without autograd, in bf16: the
    maths of nn.GRU's
    packed CPU path (input projections of the real steps as one GEMM, then per step
    gh = h W_hh^T + b_hh, r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z),
    n = tanh(gi_n + r * gh_n), h' = (1 - z) n + z h), on one length-sorted packed layout with
    preallocated buffers and the previous step's output rows as the state (no per-step
    cat / index / copy bookkeeping of the generic packed path). n and h' use fused
    addcmul / lerp, so they are rounded to bf16 once instead of after each op (differs from
    nn.GRU on bf16 weights by at most ~1 bf16 ulp; both are within bf16 rounding of fp32).
    Returns (B, T, H) bf16: the mean of both directions, padded steps 0."""
    H = enc.hidden
    w_ih, b_ih, whh_f, bhh_f, whh_b, bhh_b = bf16_gru_weights(enc)
    packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
    data, bs = packed.data, packed.batch_sizes.tolist()
    gi = torch.addmm(b_ih, data, w_ih.t())  # (N, 6H): both directions' input gates
    N, B = data.shape[0], bs[0]
    offs = [0]
    for n in bs:
        offs.append(offs[-1] + n)
    out = data.new_empty(2, N, H)
    gh = data.new_empty(B, 3 * H)
    zeros = data.new_zeros(B, H)
    for d, (whh, bhh) in enumerate(((whh_f, bhh_f), (whh_b, bhh_b))):
        steps = range(len(bs)) if d == 0 else range(len(bs) - 1, -1, -1)
        prev, prev_n = zeros, B  # the state: the previous step's output rows (no copies)
        for t in steps:
            n, a = bs[t], offs[t]
            if n <= prev_n:
                hp = prev[:n]
            else:  # reverse direction: sequences that start here enter with h = 0
                hp = torch.cat([prev, zeros[:n - prev_n]])
            g = gh[:n]
            torch.addmm(bhh, hp, whh, out=g)
            gx = gi[a:a + n, 3 * H * d:3 * H * (d + 1)]
            rz = g[:, :2 * H].add_(gx[:, :2 * H]).sigmoid_()
            new = torch.addcmul(gx[:, 2 * H:], g[:, 2 * H:], rz[:, :H]).tanh_()
            hn = out[d, a:a + n]
            torch.lerp(new, hp, rz[:, H:], out=hn)  # h' = (1 - z) n + z h
            prev, prev_n = hn, n
    avg = (out[0] + out[1]) / 2
    res, _ = pad_packed_sequence(packed._replace(data=avg), batch_first=True, total_length=total_length)
    return res
