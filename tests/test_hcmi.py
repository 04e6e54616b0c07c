"""HCMI-style model (models/hcmi.py): clustering, contrastive losses and their switches, padding
invariance, and learning on the planted world.

Learning (planted world of tests/test_learning.py: 150 test videos, chance t2v R@1 0.67 %;
joint_dim 32, 2 heads, batch 64, Adam lr 1e-2, 8 epochs, single-threaded). Measured while
writing this test (seed 0, test rsum of 600): full 539.5 (t2v R@1 66.2); with label denoising +
marginal enhancement 542.2 (68.3); video-sentence only 537.7; frame-word only 542.7.
The CI run trains the full model with both switches on (so they are exercised end to end) and,
as the cheap ablation, the video-sentence level alone (full must not be worse beyond noise).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models import registry
from models.batch import VideoBatch
from models.blocks import max_mean_similarity, symmetric_info_nce
from models.hcmi import HCMI, HCMIConfig, PART_KEYS, segment_weights
from tests._planted_learning import planted, train_and_test, train_cfg, untrained_test_metrics
from tests.test_hanet import assert_alone_equals_batched, make_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ABLATION_TOLERANCE = 12.0   # rsum points: run-to-run noise (as tests/test_learning.py)

TINY = dict(feat_dim=24, vocab_size=40, word_dim=12, joint_dim=16, n_heads=2, max_frames=12, max_words=10,
            n_verb_concepts=6, n_noun_concepts=9, n_clips=3)


def tiny(**kw) -> HCMIConfig:
    return HCMIConfig(**{**TINY, **kw})


def test_segment_weights_partition_the_real_frames():
    mask = torch.arange(8)[None] < torch.tensor([8, 5, 2, 1])[:, None]
    w = segment_weights(mask, 3)
    assert torch.allclose(w.sum(-1), torch.ones(4, 3))
    assert not w[~mask.unsqueeze(1).expand_as(w)].any()            # padded frames never weighted
    assert torch.equal((w[0] > 0).sum(-1), torch.tensor([2, 3, 3]))  # 8 frames -> 2/3/3 contiguous
    assert torch.equal((w[1] > 0).float().argmax(-1), torch.tensor([0, 1, 3]))


def test_clustering_groups_correlated_frames_and_ignores_padding():
    """Frames from two alternating sources (not contiguous) end up in two different clusters."""
    cfg = tiny(n_clips=2, n_attn_layers=0, dropout_video=0.0)
    torch.manual_seed(0)
    model = HCMI(cfg).eval()
    a, b = torch.randn(16), torch.randn(16)
    f = torch.stack([a if i % 3 else b for i in range(9)] + [torch.randn(16) * 50] * 3)[None]  # 3 padded
    f = f + 0.01 * torch.randn_like(f)
    mask = torch.arange(12)[None] < 9
    centres, assign = model.cluster(f, mask)
    assert torch.allclose(assign[0, :9].sum(-1), torch.ones(9), atol=1e-5) and not assign[0, 9:].any()
    hard = assign[0, :9].argmax(-1)
    src = torch.tensor([0 if i % 3 else 1 for i in range(9)])
    assert (hard == src).all() or (hard == 1 - src).all(), hard
    cos = F.cosine_similarity(centres[0], torch.stack([a, b])[:, None], dim=-1)
    assert cos.max(1).values.min() > 0.99  # each source has a centre


@pytest.mark.parametrize("flags", [{}, {"n_attn_layers": 2}, {"use_frame_word": False},
                                   {"use_clip_phrase": False, "use_video_sentence": False}])
def test_padding_invariance_and_batch_independence(flags):
    cfg = tiny(**flags)
    torch.manual_seed(0)
    model = HCMI(cfg).eval()
    v, t, _ = make_batch(cfg, 4, seed=3, n_frames=[12, 3, 7, 1], lengths=[10, 4, 2, 7])
    full = assert_alone_equals_batched(model, v, t, PART_KEYS)
    # garbage in the padded frames changes nothing either
    noisy = VideoBatch(v.feats + 100 * torch.randn_like(v.feats) * (~v.mask)[..., None], v.mask)
    with torch.no_grad():
        assert torch.allclose(model.similarity(model.encode_videos(noisy), model.encode_texts(t)), full["fused"], atol=1e-5)


def test_max_mean_similarity_matches_a_loop_and_is_chunked():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 8, generator=g), torch.randn(4, 6, 8, generator=g)
    am = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1] * 5], dtype=torch.bool)
    bm = torch.tensor([[1, 1, 0, 0, 0, 0], [0] * 6, [1] * 6, [1, 0, 1, 0, 1, 0]], dtype=torch.bool)
    ref = torch.zeros(3, 4)
    for i in range(3):
        for j in range(4):
            if bm[j].any():
                c = F.cosine_similarity(a[i][am[i]][:, None], b[j][bm[j]][None], dim=-1)
                ref[i, j] = (c.max(0).values.mean() + c.max(1).values.mean()) / 2
    assert torch.allclose(max_mean_similarity(a, am, b, bm), ref, atol=1e-6)
    assert torch.allclose(max_mean_similarity(a, am, b, bm, max_elems=1), ref, atol=1e-6)


def test_info_nce_plain_and_switches():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(6, 6, generator=g) * 2 - 1
    scale = torch.tensor(20.0)
    plain = symmetric_info_nce(s, scale)
    eye = torch.arange(6)
    ref = (F.cross_entropy(20 * s, eye) + F.cross_entropy(20 * s.T, eye)) / 2
    assert torch.allclose(plain, ref, atol=1e-6)
    # switches at zero strength are the plain loss
    assert torch.allclose(symmetric_info_nce(s, scale, denoise_alpha=0.0, marginal_lambda=0.0), ref)
    # marginal enhancement: a negative within delta of the positive gets + log(1 + lambda)
    lam, delta = 1.0, 0.1
    marg = symmetric_info_nce(s, scale, marginal_delta=delta, marginal_lambda=lam)
    d = s.diagonal()
    lr = 20 * s + math.log1p(lam) * ((s >= d[:, None] - delta) & ~torch.eye(6, dtype=torch.bool))
    lc = 20 * s + math.log1p(lam) * ((s >= d[None] - delta) & ~torch.eye(6, dtype=torch.bool))
    assert torch.allclose(marg, (F.cross_entropy(lr, eye) + F.cross_entropy(lc.T, eye)) / 2, atol=1e-6)
    assert marg > plain
    # label denoising: target (1-a) e_i + a p_i with a = alpha (1 - p_ii)
    alpha = 0.5
    den = symmetric_info_nce(s, scale, denoise_alpha=alpha)
    parts = []
    for lg in (20 * s, 20 * s.T):
        p = lg.softmax(1)
        a = alpha * (1 - p.diagonal())
        q = (1 - a)[:, None] * torch.eye(6) + a[:, None] * p
        parts.append(-(q * lg.log_softmax(1)).sum(1).mean())
    assert torch.allclose(den, sum(parts) / 2, atol=1e-6)
    # further positives are not negatives
    pos = torch.zeros(6, 6, dtype=torch.bool)
    pos[0, 1] = True
    lg = (20 * s).masked_fill(pos, float("-inf"))
    assert torch.allclose(symmetric_info_nce(s, scale, pos),
                          (F.cross_entropy(lg, eye) + F.cross_entropy(lg.T, eye)) / 2, atol=1e-6)


def test_loss_levels_temperature_is_learned_and_switches_change_the_loss():
    cfg = tiny(dropout_video=0.0, dropout_text=0.0, dropout_gcn=0.0)
    torch.manual_seed(0)
    model = HCMI(cfg)
    v, t, lab = make_batch(cfg, 6, seed=2)
    out = model.loss(v, t, lab)
    assert set(out) == {"frame_word", "clip_phrase", "video_sentence", "total"}
    assert torch.allclose(out["total"], (out["frame_word"] + out["clip_phrase"] + out["video_sentence"]) / 3)
    out["total"].backward()
    assert model.log_scale.grad is not None and (model.log_scale.grad != 0).all()
    fixed = HCMI(tiny(learn_temperature=False))
    assert not fixed.log_scale.requires_grad
    assert torch.allclose(model.logit_scales(), torch.full((3,), 1 / 0.05))
    on = HCMI(tiny(dropout_video=0.0, dropout_text=0.0, dropout_gcn=0.0, label_denoising=True,
                   marginal_enhancement=True))
    on.load_state_dict(model.state_dict())
    assert not torch.allclose(on.loss(v, t, lab)["total"], out["total"])
    assert registry.get_spec("hcmi").config_cls is HCMIConfig and registry.get_spec("hcmi").model_cls is HCMI


# ----------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return planted(tmp_path_factory.mktemp("planted"))


@pytest.mark.slow
def test_hcmi_learns_planted_retrieval_and_levels(shards, tmp_path):
    cfg = train_cfg("hcmi", dict(joint_dim=32, n_heads=2, max_frames=12, label_denoising=True,
                                 marginal_enhancement=True), epochs=8, lr=1e-2)
    run = train_and_test(shards, tmp_path / "full", cfg)
    before, after = untrained_test_metrics(shards, cfg), run["test"]
    chance_r1 = 100.0 / after["n_videos"]
    assert run["report"]["model_name"] == "hcmi"
    assert after["t2v_r1"] >= max(5 * chance_r1, 35.0), (after, chance_r1)
    assert after["v2t_r1"] >= 35.0
    assert after["t2v_r1"] >= before["t2v_r1"] + 25.0, (before, after)   # the metric moved
    assert after["rsum"] >= before["rsum"] + 200.0, (before["rsum"], after["rsum"])
    # ablation (one cheap level): the video-sentence level alone learns; the hierarchy is not worse
    vs = train_and_test(shards, tmp_path / "vs", train_cfg("hcmi", dict(
        joint_dim=32, n_heads=2, max_frames=12, label_denoising=True, marginal_enhancement=True,
        use_frame_word=False, use_clip_phrase=False), epochs=8, lr=1e-2))
    assert vs["test"]["rsum"] > 450.0, vs["test"]
    assert after["rsum"] >= vs["test"]["rsum"] - ABLATION_TOLERANCE, (after["rsum"], vs["test"]["rsum"])
