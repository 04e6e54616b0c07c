"""HANet model: shapes, ablations, padding invariance, determinism, gradients, overfitting."""
from __future__ import annotations

import pytest
import torch

from models.batch import ROOT_ROLE, ConceptLabels, TextBatch, VideoBatch
from models.config import HANetConfig
from models.hanet import PART_KEYS, HANet
from models.layers import count_parameters
from models.layers import (MaskedBatchNorm1d, action_clip_weights, entity_clip_weights,
                           masked_max_pool, mil_pool, mil_tau)

TINY = dict(feat_dim=16, vocab_size=40, word_dim=8, n_verb_concepts=12, n_noun_concepts=16,
            joint_dim=32, gcn_attn_dim=16, se_reduction=4, n_action_clips=3, n_entity_clips=4,
            max_words=10, max_verbs=2, max_nouns=3, max_frames=12)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**kw) -> HANetConfig:
    return HANetConfig(**{**TINY, **kw})


def make_batch(cfg: HANetConfig, B: int, seed: int = 0, n_frames=None, lengths=None):
    """Random but well-formed batches; n_frames / lengths (lists) fix the real lengths."""
    g = torch.Generator().manual_seed(seed)
    N, L = cfg.max_frames, cfg.max_words
    nv = torch.tensor(n_frames) if n_frames is not None else torch.randint(1, N + 1, (B,), generator=g)
    lens = torch.tensor(lengths) if lengths is not None else torch.randint(2, L + 1, (B,), generator=g)
    N, L = int(nv.max()) if n_frames is not None else N, int(lens.max()) if lengths is not None else L
    mask = torch.arange(N)[None] < nv[:, None]
    feats = torch.randn(B, N, cfg.feat_dim, generator=g) * mask[..., None]
    ids = torch.randint(3, cfg.vocab_size, (B, L), generator=g)
    ids[torch.arange(L)[None] >= lens[:, None]] = 1
    V, E = cfg.max_verbs, cfg.max_nouns
    P = 1 + V + E
    nm = torch.zeros(B, P, L)
    valid = torch.zeros(B, P, dtype=torch.bool)
    valid[:, 0] = True
    roles = torch.zeros(B, P, dtype=torch.long)
    roles[:, 0] = ROOT_ROLE
    adj = torch.zeros(B, P, P)
    for b in range(B):
        n = int(lens[b])
        nm[b, 0, :n] = 1
        n_v = int(torch.randint(0, V + 1, (1,), generator=g)) if b else V  # row 0: all slots
        n_e = int(torch.randint(0, E + 1, (1,), generator=g)) if b else E
        for k in range(n_v):
            i = 1 + k
            nm[b, i, int(torch.randint(0, n, (1,), generator=g))] = 1
            valid[b, i] = True
            adj[b, 0, i] = adj[b, i, 0] = 1
        for k in range(n_e):
            i = 1 + V + k
            p = int(torch.randint(0, n, (1,), generator=g))
            nm[b, i, p:min(n, p + 2)] = 1
            valid[b, i] = True
            roles[b, i] = int(torch.randint(1, 16, (1,), generator=g))
            if n_v:
                adj[b, 1, i] = adj[b, i, 1] = 1
        adj[b] += torch.diag(valid[b].float())
    v = VideoBatch(feats, mask)
    t = TextBatch(ids, lens, nm, roles, valid, adj)
    verbs = (torch.rand(B, cfg.n_verb_concepts, generator=g) < 0.2).float()
    nouns = (torch.rand(B, cfg.n_noun_concepts, generator=g) < 0.2).float()
    lab = ConceptLabels(verbs, nouns,
                        (torch.rand(B, cfg.n_verb_concepts, generator=g) < 0.1) & (verbs == 0),
                        (torch.rand(B, cfg.n_noun_concepts, generator=g) < 0.1) & (nouns == 0))
    return v, t, lab


def randomise_bn(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial running statistics, so eval-mode tests exercise them."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, MaskedBatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def crop_video(v: VideoBatch, i: int) -> VideoBatch:
    n = int(v.mask[i].sum())
    return VideoBatch(v.feats[i:i + 1, :n], v.mask[i:i + 1, :n])


def crop_text(t: TextBatch, i: int) -> TextBatch:
    n = int(t.lengths[i])
    return TextBatch(t.word_ids[i:i + 1, :n], t.lengths[i:i + 1], t.node_masks[i:i + 1, :, :n],
                     t.node_roles[i:i + 1], t.node_valid[i:i + 1], t.adjacency[i:i + 1])



def _same_item(alone: torch.Tensor, batched: torch.Tensor) -> torch.Tensor:
    """``batched`` (one row of a padded batch) cut to ``alone``'s length along dim 1 when that
    is a per-frame / per-word dimension."""
    if alone.dim() >= 2 and batched.dim() >= 2 and alone.shape[1] != batched.shape[1]:
        return batched[:, :alone.shape[1]]
    return batched


def assert_alone_equals_batched(model, v: VideoBatch, t: TextBatch, part_keys, atol: float = 1e-5) -> dict:
    """Every item encoded alone (no padding) equals the same item in the batch with longer mates:
    each video and text output, and every score part in both directions. Returns the batch's parts."""
    with torch.no_grad():
        ve, te = model.encode_videos(v), model.encode_texts(t)
        full = model.similarity_parts(ve, te)
        for i in range(v.feats.shape[0]):
            vi, ti = model.encode_videos(crop_video(v, i)), model.encode_texts(crop_text(t, i))
            for enc, batched in ((vi, ve), (ti, te)):
                for k, x in enc.items():
                    if torch.is_tensor(x):
                        y = _same_item(x, batched[k][i:i + 1])
                        assert torch.allclose(x.float(), y.float(), atol=atol), (k, i)
            alone_v, alone_t = model.similarity_parts(vi, te), model.similarity_parts(ve, ti)
            for k in part_keys:
                assert torch.allclose(alone_v[k], full[k][i:i + 1], atol=atol), (k, i)
                assert torch.allclose(alone_t[k], full[k][:, i:i + 1], atol=atol), (k, i)
    return full

ABLATIONS = {
    "full": {},
    "sim_fusion": dict(attn_fusion="sim"),
    "ind_only": dict(use_local=False, use_global=False),
    "local_only": dict(use_individual=False, use_global=False),
    "global_only": dict(use_individual=False, use_local=False),
    "no_seme": dict(use_seme=False),
    "no_gcn": dict(use_gcn=False),
    "no_mask_bce": dict(mask_other_caption_concepts=False),
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_shapes_and_finite(name):
    cfg = tiny_cfg(**ABLATIONS[name])
    torch.manual_seed(0)
    model = HANet(cfg)
    v, t, lab = make_batch(cfg, 5)
    model.eval()
    with torch.no_grad():
        ve, te = model.encode_videos(v), model.encode_texts(t)
        for d, B in ((ve, 5), (te, 5)):
            assert all(x.shape[0] == B for x in d.values())
        N = v.feats.shape[1]
        assert ve["verb_probs"].shape == (5, 12) and ve["noun_probs"].shape == (5, 16)
        assert ve["frame_verb_probs"].shape == (5, N, 12) and ve["frame_noun_probs"].shape == (5, N, 16)
        assert te["verb_probs"].shape == (5, 12) and te["noun_probs"].shape == (5, 16)
        assert (ve["frame_verb_probs"][~v.mask] == 0).all()
        if cfg.use_local and cfg.use_seme:
            assert ve["loc_a"].shape == (5, 3, 32) and ve["loc_e"].shape == (5, 4, 32)
        ve3 = {k: x[:3] for k, x in ve.items()}
        parts = model.similarity_parts(ve3, te)
        assert set(parts) == set(PART_KEYS)
        for k, s in parts.items():
            assert s.shape == (3, 5), k
            assert torch.isfinite(s).all(), k
        enabled = torch.stack([parts[k] for k in model.enabled_parts]).mean(0)
        assert torch.allclose(parts["c_l"], enabled)
        assert torch.allclose(parts["c_p"], (parts["jac_a"] + parts["jac_e"]) / 2)
        sim = model.similarity(ve3, te)
        assert torch.allclose(sim, (parts["c_l"] + parts["c_p"]) / 2)
    model.train()
    out = model.loss(v, t, lab)
    assert set(out) == {"total", "rank_l", "rank_p", "bce_video", "bce_text"}
    assert all(torch.isfinite(x) for x in out.values())
    expect = out["rank_l"] + cfg.eta * out["rank_p"] + cfg.mu * (out["bce_video"] + out["bce_text"])
    assert torch.allclose(out["total"], expect)


def test_no_level_enabled_is_rejected():
    with pytest.raises(ValueError):
        HANet(tiny_cfg(use_individual=False, use_local=False, use_global=False))


@pytest.mark.parametrize("name", ["full", "no_seme", "no_gcn", "sim_fusion"])
def test_padding_invariance_eval(name):
    """An item encoded alone (no padding) == the same item in a batch with longer mates."""
    cfg = tiny_cfg(**ABLATIONS[name])
    torch.manual_seed(0)
    model = HANet(cfg)
    randomise_bn(model)
    model.eval()
    v, t, _ = make_batch(cfg, 4, seed=3, n_frames=[12, 3, 7, 1], lengths=[10, 4, 2, 7])
    assert_alone_equals_batched(model, v, t, PART_KEYS)


def test_padding_invariance_train_mode_statistics():
    """Train mode (BN on batch statistics, no dropout): extra padding changes nothing, and the
    BN running statistics are computed over the real positions only."""
    cfg = tiny_cfg(dropout_video=0.0, dropout_text=0.0, dropout_gcn=0.0)
    torch.manual_seed(0)
    a, b = HANet(cfg), HANet(cfg)
    b.load_state_dict(a.state_dict())
    a.train(), b.train()
    v, t, _ = make_batch(cfg, 3, seed=5, n_frames=[5, 2, 4], lengths=[3, 6, 2])
    pad = 7
    v2 = VideoBatch(torch.cat([v.feats, torch.randn(3, pad, cfg.feat_dim)], 1),  # garbage padding
                    torch.cat([v.mask, torch.zeros(3, pad, dtype=torch.bool)], 1))
    t2 = TextBatch(torch.cat([t.word_ids, torch.full((3, pad), 5)], 1), t.lengths,
                   torch.cat([t.node_masks, torch.zeros(3, t.node_masks.shape[1], pad)], 2),
                   t.node_roles, t.node_valid, t.adjacency)
    ea, eb = a.encode_videos(v), b.encode_videos(v2)
    ta, tb = a.encode_texts(t), b.encode_texts(t2)
    for k in ("verb_probs", "noun_probs", "loc_a", "loc_e", "glo"):
        assert torch.allclose(ea[k], eb[k], atol=1e-5), k
    for k in ta:
        assert torch.allclose(ta[k], tb[k], atol=1e-5), k
    for (na, ma), (nb, mb) in zip(a.named_modules(), b.named_modules()):
        if isinstance(ma, MaskedBatchNorm1d):
            assert torch.allclose(ma.running_mean, mb.running_mean, atol=1e-6), na
            assert torch.allclose(ma.running_var, mb.running_var, atol=1e-5), na
    # running mean == momentum * mean over the real frames of the (pre-BN) conv output
    head = a.video.noun_head
    with torch.no_grad():
        x = a.video.fc_entity(v.feats)[v.mask]  # (M, D) real frames only
        pre = x @ head.conv.weight.squeeze(-1).T + head.conv.bias
    assert torch.allclose(head.bn.running_mean, 0.1 * pre.mean(0), atol=1e-5)


def test_masked_batchnorm_matches_plain_bn_on_valid_rows():
    torch.manual_seed(0)
    bn, ref = MaskedBatchNorm1d(6), torch.nn.BatchNorm1d(6)
    x = torch.randn(4, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]).bool()
    y = bn(x, mask)
    y_ref = ref(x[mask])
    assert torch.allclose(y[mask], y_ref, atol=1e-6)
    assert (y[~mask] == 0).all()
    assert torch.allclose(bn.running_mean, ref.running_mean)
    assert torch.allclose(bn.running_var, ref.running_var)
    bn.eval(), ref.eval()
    assert torch.allclose(bn(x, mask)[mask], ref(x[mask]), atol=1e-6)


def test_eval_determinism_and_batch_mate_independence():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = HANet(cfg)
    randomise_bn(model)
    model.eval()
    v, t, _ = make_batch(cfg, 6, seed=2)
    v_other, t_other, _ = make_batch(cfg, 6, seed=9)
    with torch.no_grad():
        s1 = model.similarity(model.encode_videos(v), model.encode_texts(t))
        s2 = model.similarity(model.encode_videos(v), model.encode_texts(t))
        assert torch.equal(s1, s2)
        # rows 0..2 with different batch-mates (same padded length)
        v_mix = VideoBatch(torch.cat([v.feats[:3], v_other.feats[3:]]),
                           torch.cat([v.mask[:3], v_other.mask[3:]]))
        ve_mix = model.encode_videos(v_mix)
        s3 = model.similarity(ve_mix, model.encode_texts(t))
        assert torch.allclose(s3[:3], s1[:3], atol=1e-6)


def test_similarity_chunking_matches_unchunked(monkeypatch):
    import models.similarity as sim
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = HANet(cfg).eval()
    v, t, _ = make_batch(cfg, 7, seed=4)
    with torch.no_grad():
        ve, te = model.encode_videos(v), model.encode_texts(t)
        big = model.similarity_parts(ve, te)
        monkeypatch.setattr(sim, "DEFAULT_MAX_ELEMS", 50)
        orig = sim.stacked_attention
        monkeypatch.setattr("models.hanet.stacked_attention",
                            lambda *a, **k: orig(*a, **{**k, "max_elems": 50}))
        small = model.similarity_parts(ve, te)
    for k in PART_KEYS:
        assert torch.allclose(big[k], small[k], atol=1e-6), k


@pytest.mark.parametrize("name", ["full", "no_seme", "no_gcn", "global_only", "ind_only"])
def test_gradients_reach_every_used_parameter(name):
    cfg = tiny_cfg(**ABLATIONS[name])
    torch.manual_seed(0)
    model = HANet(cfg).train()
    v, t, lab = make_batch(cfg, 6, seed=1)
    model.loss(v, t, lab)["total"].backward()
    # exactly-zero gradients by design: a conv bias right before (batch-statistics) BN, and
    # biases that shift every logit of a softmax equally (attention pooling, GCN key)
    before_bn = {n for n, _ in model.named_parameters()
                 if n.endswith(("head.conv.bias", "attn_pool.proj.bias", "gcn.key.bias"))}
    for n, p in model.named_parameters():
        assert p.grad is not None, f"{n} got no gradient"
        assert torch.isfinite(p.grad).all(), n
        if n not in before_bn:
            assert p.grad.abs().sum() > 0, f"{n} has an all-zero gradient"


def test_overfits_tiny_batch():
    cfg = tiny_cfg(dropout_video=0.0, dropout_text=0.0, dropout_gcn=0.0)
    torch.manual_seed(0)
    model = HANet(cfg).train()
    v, t, lab = make_batch(cfg, 8, seed=7)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model.loss(v, t, lab)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
        losses.append(out["total"].item())
    assert losses[-1] < 0.3 * losses[0], losses
    model.eval()
    with torch.no_grad():
        s = model.similarity(model.encode_videos(v), model.encode_texts(t))
    assert (s.argmax(1) == torch.arange(8)).float().mean() >= 0.75


# ---------------------------------------------------------------- building blocks
@pytest.mark.parametrize("n,tau", [(1, 1), (7, 1), (8, 1), (9, 2), (16, 2), (17, 3), (20, 3)])
def test_mil_tau_edge_cases(n, tau):
    assert int(mil_tau(torch.tensor([n]), 8)) == tau
    T, K = 24, 5
    probs = torch.rand(1, T, K)
    mask = torch.arange(T)[None] < n
    probs_padded = probs.clone()
    probs_padded[~mask] = 1.0  # padded steps must never be picked, even when "confident"
    got = mil_pool(probs_padded, mask, 8)
    want = probs[0, :n].topk(tau, dim=0).values.mean(0)
    assert torch.allclose(got[0], want)


def test_mil_pool_mixed_lengths_batch():
    probs = torch.rand(3, 10, 4)
    mask = torch.arange(10)[None] < torch.tensor([[1], [9], [10]])
    got = mil_pool(probs, mask, 8)
    for b, (n, tau) in enumerate([(1, 1), (9, 2), (10, 2)]):
        assert torch.allclose(got[b], probs[b, :n].topk(tau, 0).values.mean(0))


def test_action_clip_window_clipped_at_borders():
    T = 8
    mask = (torch.arange(T) < 6)[None]  # 6 real frames, 2 padded
    probs = torch.zeros(1, T, 3)
    probs[0, 0, 0] = 1.0   # argmax at the first frame -> frames 0..2
    probs[0, 5, 1] = 1.0   # argmax at the last real frame -> frames 3..5 (not the padded 6, 7)
    probs[0, 3, 2] = 1.0   # middle -> frames 1..5
    probs[0, 7, :] = 5.0   # a padded frame never wins
    w = action_clip_weights(probs, mask, 2)
    assert torch.allclose(w[0, 0], torch.tensor([1, 1, 1, 0, 0, 0, 0, 0]) / 3)
    assert torch.allclose(w[0, 1], torch.tensor([0, 0, 0, 1, 1, 1, 0, 0]) / 3)
    assert torch.allclose(w[0, 2], torch.tensor([0, 1, 1, 1, 1, 1, 0, 0]) / 5)
    one = action_clip_weights(torch.rand(1, 4, 2), torch.tensor([[True, False, False, False]]), 2)
    assert torch.allclose(one[0], torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]]))


def test_entity_clip_topk_frames():
    probs = torch.tensor([[[0.1], [0.9], [0.5], [0.7], [0.99]]])  # frame 4 is padding
    mask = torch.tensor([[True, True, True, True, False]])
    w = entity_clip_weights(probs, mask, 3)
    assert torch.allclose(w[0, 0], torch.tensor([0, 1, 1, 1, 0]) / 3)
    w2 = entity_clip_weights(probs, torch.tensor([[True, True, False, False, False]]), 3)
    assert torch.allclose(w2[0, 0], torch.tensor([0.5, 0.5, 0, 0, 0]))


def test_masked_max_pool_and_empty_spans():
    x = torch.randn(2, 5, 4, requires_grad=True)
    spans = torch.zeros(2, 3, 5)
    spans[0, 0, 1:3] = 1
    spans[1, 1, 4] = 1  # slot 0 of row 1 and slot 2 of both rows are empty
    out = masked_max_pool(x, spans, max_elems=8)
    assert torch.allclose(out[0, 0], x[0, 1:3].max(0).values)
    assert torch.allclose(out[1, 1], x[1, 4])
    assert (out[1, 0] == 0).all() and (out[:, 2] == 0).all()
    out.sum().backward()
    assert x.grad[0, 1:3].sum() == 4 and x.grad[0, 0].abs().sum() == 0


def test_parameter_count_matches_reference_scale():
    """Reference: 28,376,170 trainable incl. 3,148,800 never-used (conv1, conv2, text fc) at
    vocab 10,510; we build the used ones only."""
    model = HANet(HANetConfig(vocab_size=10510))
    assert count_parameters(model) == 28_376_170 - 3_148_800


def test_concept_head_conv_equals_nn_conv1d_with_zero_padding():
    from models.layers import ConceptHead
    torch.manual_seed(0)
    head = ConceptHead(6, 4, kernel=5).eval()
    randomise_bn(head)
    x = torch.randn(2, 7, 6)
    mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 0, 0, 0]]).bool()
    got = head(x, mask)
    # the lone short sequence through a plain Conv1d + BN(eval) + sigmoid
    ref = head.conv(x[1:, :3].transpose(1, 2)).transpose(1, 2)
    bn = head.bn
    ref = torch.sigmoid((ref - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
    assert torch.allclose(got[1, :3], ref[0], atol=1e-5)
    assert (got[1, 3:] == 0).all()


@pytest.mark.parametrize("norm, invariant", [("l2", True), ("none", False)])
def test_frame_norm_makes_videos_scale_invariant(norm, invariant):
    cfg = tiny_cfg(frame_norm=norm)
    torch.manual_seed(0)
    model = HANet(cfg).eval()
    v, _, _ = make_batch(cfg, 3)
    big = VideoBatch(feats=v.feats * 1e4, mask=v.mask)
    with torch.no_grad():
        a, b = model.encode_videos(v)["glo"], model.encode_videos(big)["glo"]
    assert torch.allclose(a, b, atol=1e-5) is invariant
