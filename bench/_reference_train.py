"""HANet's training loss computed the way the reference code computes it (a benchmark baseline).

Same parameters (it runs on a :class:`models.hanet.HANet`'s own modules) and the same maths as
``HANet.loss`` with ``HANetConfig(fidelity="reference")`` (tests/test_bench_baselines.py checks
the two losses are equal), but the data flow of Roc-Ng/HANet e679703
(t2vretrieval/encoders/mlvideo.py, mlsent.py, models/mlmatch.py, criterion.py):

* batches cut to their longest video / caption; dense ``nn.Conv1d`` + ``nn.BatchNorm1d`` over the
  padded (B, C, T) tensors (padded steps enter the statistics), SE squeeze over every step;
* per-sample Python loops: MIL top-k (``torch.topk`` on ``[:len]`` then ``torch.cat`` row by row)
  for video and text, and the SeMe verb / noun clips (all-or-nothing +-2 window, top-3 nouns);
* the BiGRU sorted, packed and unsorted (``calc_rnn_outs_with_sort``);
* phrase max-pool over a (B, P, L, D) tensor filled with -1e10;
* every (video, caption) pair scored densely: all (B_v, B_t, N, P) cosines, softmax over frames,
  the attended vectors MATERIALISED as (B_v, B_t, P, D), padded text components scored then
  masked; Jaccard through (B_v, B_t, K) min / max tensors;
* all seven part losses evaluated (the reference computes them for its monitor), then
  fusion + eta * concept + mu * masked BCE.

Dropout: the same ``nn.Dropout`` modules are applied to the same tensors, so with dropout off
(or the same RNG stream) the loss equals ours in reference-fidelity mode.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def _l2norm(x: Tensor, dim: int = -1) -> Tensor:
    return x / torch.norm(x, p=2, dim=dim, keepdim=True).clamp(min=1e-10)


def _cosine_sim(im: Tensor, s: Tensor) -> Tensor:
    inner = im.mm(s.t())
    im_norm = torch.sqrt((im ** 2).sum(1).view(-1, 1) + 1e-18)
    s_norm = torch.sqrt((s ** 2).sum(1).view(1, -1) + 1e-18)
    return inner / (im_norm * s_norm)


def _sequence_mask(lengths: Tensor, max_len: int) -> Tensor:
    return torch.arange(0, max_len).type_as(lengths).repeat(lengths.size(0), 1).lt(lengths.unsqueeze(1))


def _contrastive(scores: Tensor, margin: float) -> Tensor:
    """criterion.ContrastiveLoss(margin, max_violation=True, direction='bi', topk=1)."""
    B = scores.size(0)
    diagonal = scores.diag().view(B, 1)
    pos = torch.eye(B).bool()
    cost_s = (margin + scores - diagonal.expand_as(scores)).clamp(min=0).masked_fill(pos, 0)
    cost_s = torch.topk(cost_s, 1, dim=1)[0] / B
    cost_im = (margin + scores - diagonal.t().expand_as(scores)).clamp(min=0).masked_fill(pos, 0)
    cost_im = torch.topk(cost_im, 1, dim=0)[0] / B
    return cost_s.sum() + cost_im.sum()


def _dense_head(head, x_bct: Tensor) -> Tensor:
    """sigmoid(BatchNorm1d(Conv1d(x))) on the padded (B, C, T) tensor, as nn.Sequential does."""
    return torch.sigmoid(nn.BatchNorm1d.forward(head.bn, head.conv(x_bct)))


def _mil_loop(logits: Tensor, lens: np.ndarray) -> Tensor:
    k = np.ceil(lens / 8).astype("int32")
    out = torch.zeros(0)
    for i in range(logits.shape[0]):
        tmp, _ = torch.topk(logits[i][:lens[i]], k=int(k[i]), dim=0)
        out = torch.cat([out, torch.mean(tmp, 0, keepdim=True)], dim=0)
    return out


def reference_video(enc, feats: Tensor, lens: Tensor, n_verbs: int, n_nouns: int, window: int):
    T = int(lens.max())
    x = feats[:, :T]  # the reference's collate pads to the longest video
    embeds = [enc.dropout(fc(x)) for fc in (enc.fc_event, enc.fc_action, enc.fc_entity)]
    attn = enc.attn_pool.proj(embeds[0]).squeeze(2)
    attn = torch.softmax(attn.masked_fill(~_sequence_mask(lens, T), -1e18), dim=1)
    sent = torch.sum(embeds[0] * attn.unsqueeze(2), 1)

    def se(block, x_bct):
        y = x_bct.mean(2)  # AdaptiveAvgPool1d over every step, padded ones too
        y = torch.sigmoid(block.fc2(F.relu(block.fc1(y)))).unsqueeze(2)
        return torch.mul(x_bct, y)

    re1 = embeds[1].permute(0, 2, 1)
    se1 = se(enc.se_action, re1).permute(0, 2, 1).contiguous()
    logits_verb = _dense_head(enc.verb_head, re1).permute(0, 2, 1)
    re2 = embeds[2].permute(0, 2, 1)
    se2 = se(enc.se_entity, re2).permute(0, 2, 1).contiguous()
    logits_noun = _dense_head(enc.noun_head, re2).permute(0, 2, 1)

    seq_len = lens.cpu().numpy()
    inst_verb, inst_noun = _mil_loop(logits_verb, seq_len), _mil_loop(logits_noun, seq_len)
    _, top_v = torch.topk(inst_verb, k=n_verbs, dim=1)
    _, top_n = torch.topk(inst_noun, k=n_nouns, dim=1)
    embeds_verb, embeds_noun = torch.zeros(0), torch.zeros(0)
    for i in range(x.shape[0]):
        ind = torch.argmax(logits_verb[i, :lens[i], top_v[i]], dim=0)
        if torch.max(ind) + window < lens[i] and torch.min(ind) > window - 1:
            emb = sum(se1[i:i + 1, ind + o, :] for o in range(-window, window + 1)) / (2 * window + 1)
        else:
            emb = se1[i:i + 1, ind, :]
        embeds_verb = torch.cat([embeds_verb, emb], dim=0)
        ln = logits_noun[i, :lens[i], top_n[i]]
        if ln.shape[0] > 2:
            _, ind = torch.topk(ln, k=3, dim=0)
            emb = (se2[i:i + 1, ind[0], :] + se2[i:i + 1, ind[1], :] + se2[i:i + 1, ind[2], :]) / 3
        else:
            emb = se2[i:i + 1, torch.argmax(ln, dim=0), :]
        embeds_noun = torch.cat([embeds_noun, emb], dim=0)
    return {"sent": sent, "verb": embeds_verb, "noun": embeds_noun, "local": [embeds[1], embeds[2]],
            "logits": [inst_verb, inst_noun], "lens": lens, "max_len": T}


def reference_text(enc, word_ids: Tensor, lens: Tensor, node_masks: Tensor, node_roles: Tensor,
                   node_valid: Tensor, adjacency: Tensor, n_verbs: int):
    L = int(lens.max())
    ids = word_ids[:, :L]
    rnn = enc.rnn
    emb = rnn.dropout(rnn.embedding(ids))
    sorted_lens, sort_idx = torch.sort(lens, descending=True)  # calc_rnn_outs_with_sort
    _, unsort_idx = torch.sort(sort_idx, descending=False)
    packed = pack_padded_sequence(torch.index_select(emb, 0, sort_idx), sorted_lens.cpu(), batch_first=True)
    out, _ = rnn.gru(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=L)
    out = torch.index_select(out, 0, unsort_idx)
    H = rnn.hidden
    words = (out[..., :H] + out[..., H:]) / 2
    attn = enc.attn_pool.proj(words).squeeze(2).masked_fill(~_sequence_mask(lens, L), -1e18)
    sent = torch.sum(words * torch.softmax(attn, dim=1).unsqueeze(2), 1)
    re = words.permute(0, 2, 1)
    logits_verb = _dense_head(enc.verb_head, re).permute(0, 2, 1)
    logits_noun = _dense_head(enc.noun_head, re).permute(0, 2, 1)
    seq_len = lens.cpu().numpy()
    inst_verb, inst_noun = _mil_loop(logits_verb, seq_len), _mil_loop(logits_noun, seq_len)

    valid = node_valid.to(torch.bool)
    spans = (node_masks[:, 1:, :L] > 0) & valid[:, 1:].unsqueeze(-1)
    roles = torch.where(valid[:, 1:], node_roles[:, 1:], torch.zeros_like(node_roles[:, 1:]))

    def pool(m):  # pool_phrases(..., 'max'): a (B, P, L, D) tensor
        return torch.max(words.unsqueeze(1).masked_fill(m.unsqueeze(3) == 0, -1e10), 2)[0]

    verb_raw, noun_raw = pool(spans[:, :n_verbs]), pool(spans[:, n_verbs:])
    verb = verb_raw * enc.role_embedding(roles[:, :n_verbs])
    noun = noun_raw * enc.role_embedding(roles[:, n_verbs:])
    nodes = torch.cat([sent.unsqueeze(1), verb, noun], 1)
    g = enc.gcn
    scores = torch.einsum("bod,bid->boi", g.query(nodes), g.key(nodes)) * g.scale
    scores = scores.masked_fill(adjacency == 0, -1e18)
    scores = torch.softmax(scores, dim=2).masked_fill(adjacency == 0, 0)
    nodes = g.norm(nodes + g.dropout(g.ctx(torch.bmm(scores, nodes))))
    return {"sent": nodes[:, 0], "verb": nodes[:, 1:1 + n_verbs].contiguous(),
            "noun": nodes[:, 1 + n_verbs:].contiguous(), "local": [verb_raw, noun_raw],
            "logits": [inst_verb, inst_noun], "verb_mask": valid[:, 1:1 + n_verbs],
            "noun_mask": valid[:, 1 + n_verbs:]}


def reference_phrase_scores(vid: Tensor, vid_masks: Tensor, phr: Tensor, phr_masks: Tensor, sigma: float,
                            mask_flag: bool) -> Tensor:
    """mlmatch.generate_phrase_scores ('embed' fusion): dense over every (video, caption) pair."""
    Bv, N, _ = vid.size()
    pad = (vid_masks == 0).unsqueeze(1).unsqueeze(3)
    Bt, P, D = phr.size()
    sims = _cosine_sim(vid.reshape(-1, D), phr.reshape(-1, D)).view(Bv, N, Bt, P).transpose(1, 2)
    a = sims.masked_fill(pad, 0) if mask_flag else sims
    a = a.clamp(min=0)  # the reference: a[a < 0] = 0 (in place)
    a = _l2norm(a, dim=2)
    if mask_flag:
        a = a.masked_fill(pad, -1e18)
    a = torch.softmax(sigma * a, dim=2)
    attended = torch.einsum("abcd,ace->abde", a, vid)  # (Bv, Bt, P, D), materialised
    sims = torch.einsum("abde,bde->abd", _l2norm(attended), _l2norm(phr))
    return torch.sum(sims * phr_masks.float().unsqueeze(0), 2) / torch.sum(phr_masks, 1).float().unsqueeze(0).clamp(min=1)


def reference_jaccard(im: Tensor, s: Tensor) -> Tensor:
    im = im.unsqueeze(1).expand(-1, s.size(0), -1)
    s = s.unsqueeze(0).expand(im.size(0), -1, -1)
    return torch.min(im, s).sum(-1) / torch.max(im, s).sum(-1)


def reference_loss(model, vb, tb, lb) -> Tensor:
    """forward_loss of the reference's RoleGraphMatchModel on our batch tensors and our HANet's weights."""
    cfg = model.cfg
    if not (cfg.use_individual and cfg.use_local and cfg.use_global and cfg.use_seme and cfg.use_gcn):
        raise ValueError("the reference-style baseline covers the full HANet only")
    lens_v = vb.mask.sum(1).long()
    v = reference_video(model.video, vb.feats, lens_v, cfg.n_action_clips, cfg.n_entity_clips, cfg.action_window)
    t = reference_text(model.text, tb.word_ids, tb.lengths.long(), tb.node_masks, tb.node_roles, tb.node_valid,
                       tb.adjacency, cfg.max_verbs)
    vid_masks = _sequence_mask(v["lens"], v["max_len"])
    sig = cfg.attn_lambda
    sent_scores = _cosine_sim(v["sent"], t["sent"])
    cv = reference_jaccard(v["logits"][0], t["logits"][0])
    cn = reference_jaccard(v["logits"][1], t["logits"][1])
    verb_scores = reference_phrase_scores(v["verb"], vid_masks, t["verb"], t["verb_mask"], sig, False)
    ind_verb = reference_phrase_scores(v["local"][0], vid_masks, t["local"][0], t["verb_mask"], sig, True)
    noun_scores = reference_phrase_scores(v["noun"], vid_masks, t["noun"], t["noun_mask"], sig, False)
    ind_noun = reference_phrase_scores(v["local"][1], vid_masks, t["local"][1], t["noun_mask"], sig, True)
    scores = (sent_scores + verb_scores + noun_scores + ind_verb + ind_noun) / 5
    scores2 = (cv + cn) / 2
    m = cfg.margin
    for s in (sent_scores, verb_scores, noun_scores, cv, cn):  # computed for the reference's monitor
        _contrastive(s, m)
    concept_loss = cfg.eta * _contrastive(scores2, m)

    def bce(probs, labels, ignore):
        keep = (~ignore.bool()).float() if cfg.mask_other_caption_concepts else torch.ones_like(labels)
        per = torch.sum(keep * F.binary_cross_entropy(probs, labels, reduction="none"), dim=1)
        return cfg.mu * torch.mean(per / keep.sum(1))

    b = (bce(v["logits"][0], lb.verbs, lb.verb_ignore) + bce(v["logits"][1], lb.nouns, lb.noun_ignore)
         + bce(t["logits"][0], lb.verbs, lb.verb_ignore) + bce(t["logits"][1], lb.nouns, lb.noun_ignore))
    return _contrastive(scores, m) + b + concept_loss
