"""Golden parity with the reference implementation itself (Roc-Ng/HANet, commit in golden.json).

tests/fixtures/hanet_golden/ was written by scripts/make_hanet_golden.py, which runs the
reference's own modules (a small model with perturbed weights, saved by the reference's
save code) on 16 videos (1-10 frames) x 60 captions and records its per-level score
matrices, fused scores, metrics, one training-mode loss and every parameter gradient.
Here the checkpoint is imported and our HANet (fidelity='reference') must reproduce them;
the role graphs our loader builds in reference mode must equal the reference reader's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.batch import ROLES, ROOT_ROLE, ConceptLabels, TextBatch, VideoBatch
from models.config import HANetConfig
from models.hanet import HANet
from models.import_reference import REFERENCE_ROLES, map_reference_state_dict
from models.metrics import retrieval_metrics
from pipeline.learn.checkpoint_import import import_checkpoint
from pipeline.learn.graphs import build_graph
from storage.checkpoints import load_checkpoint

FIX = Path(__file__).parent / "fixtures" / "hanet_golden"
ZERO_DROPOUT = dict(dropout_video=0.0, dropout_text=0.0, dropout_gcn=0.0)
# reference metric names -> ours (the reference's 'i' = image (video) retrieval = t2v, 'c' = v2t)
METRIC_NAMES = {"ir1": "t2v_r1", "ir5": "t2v_r5", "ir10": "t2v_r10", "imedr": "t2v_medr", "imeanr": "t2v_meanr",
                "cr1": "v2t_r1", "cr5": "v2t_r5", "cr10": "v2t_r10", "cmedr": "v2t_medr", "cmeanr": "v2t_meanr",
                "rsum": "rsum"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def golden():
    g = dict(np.load(FIX / "golden.npz"))
    inputs = dict(np.load(FIX / "inputs.npz"))
    meta = json.loads((FIX / "golden.json").read_text())
    caps = json.loads((FIX / "inputs.json").read_text())
    return g, inputs, meta, caps


@pytest.fixture(scope="module")
def imported(tmp_path_factory, golden):
    out = tmp_path_factory.mktemp("imp") / "imported.pt"
    rep = import_checkpoint("hanet", FIX / "ref_checkpoint.th", out, HANetConfig(**ZERO_DROPOUT))
    assert rep["ok"], rep
    ck = load_checkpoint(out)  # format_version is set: storage.checkpoints accepts it
    from pipeline.learn.config import TrainConfig

    cfg = TrainConfig.model_validate_json(ck["config_json"]).net
    assert cfg.fidelity == "reference" and set(cfg.deviations().values()) == {"reference"}
    model = HANet(cfg)
    model.load_state_dict(ck["model"], strict=True)
    return model, rep


def video_batch(inputs, idx) -> VideoBatch:
    feats, lengths = inputs["feats"][idx], inputs["lengths"][idx]
    mask = np.arange(feats.shape[1])[None, :] < lengths[:, None]
    return VideoBatch(feats=torch.from_numpy(feats), mask=torch.from_numpy(mask))


def text_batch(g, idx) -> TextBatch:
    """The reference reader's arrays (golden.npz) -> our TextBatch layout."""
    ids, lens = g["sent_ids"][idx], g["sent_lens"][idx]
    vm, nm = g["verb_masks"][idx], g["noun_masks"][idx]
    B, L = ids.shape
    root = np.arange(L)[None, :] < lens[:, None]
    masks = np.concatenate([root[:, None], vm, nm], 1).astype(np.float32)
    to_ours = np.array([ROLES.index(r) for r in REFERENCE_ROLES])
    roles = np.concatenate([np.full((B, 1), ROOT_ROLE), to_ours[g["node_roles"][idx]]], 1)
    valid = masks.any(-1)
    return TextBatch(word_ids=torch.from_numpy(ids.astype(np.int64)), lengths=torch.from_numpy(lens.astype(np.int64)),
                     node_masks=torch.from_numpy(masks), node_roles=torch.from_numpy(roles.astype(np.int64)),
                     node_valid=torch.from_numpy(valid),
                     adjacency=torch.from_numpy((g["rel_edges"][idx] > 0).astype(np.float32)))


def test_fixture_is_small_and_pinned(golden):
    _, _, meta, _ = golden
    assert meta["reference_commit"].startswith("e679703")
    assert sum(p.stat().st_size for p in FIX.iterdir()) < 2 * 2 ** 20


def test_every_matrix_and_metric_matches_reference(golden, imported):
    g, inputs, meta, caps = golden
    model, _ = imported
    model.eval()
    n_v, n_c = len(inputs["lengths"]), len(caps["captions"])
    with torch.no_grad():
        ve = model.encode_videos(video_batch(inputs, np.arange(n_v)))
        te = model.encode_texts(text_batch(g, np.arange(n_c)))
        parts = model.similarity_parts(ve, te)
        fused = model.similarity(ve, te)
    for name in meta["score_order"]:
        diff = (parts[name] - torch.from_numpy(g[f"score/{name}"])).abs().max().item()
        assert diff <= 1e-5, (name, diff)
    assert (fused - torch.from_numpy(g["fused"])).abs().max().item() <= 1e-5
    assert (ve["verb_probs"] - torch.from_numpy(g["video_verb_probs"])).abs().max().item() <= 1e-5
    cap2vid = np.array([c["video"] for c in caps["captions"]])
    ours = retrieval_metrics(fused.numpy(), cap2vid)
    for ref_name, our_name in METRIC_NAMES.items():
        assert ours[our_name] == pytest.approx(meta["metrics"][ref_name], abs=1e-9), ref_name


def test_improved_mode_differs_on_the_same_weights(golden, imported):
    """The deviations are real: with our fixes, the local matrices move (short videos)."""
    g, inputs, meta, caps = golden
    model, _ = imported
    improved = HANet(model.cfg.model_copy(update={"fidelity": "improved"}))
    improved.load_state_dict(model.state_dict())
    improved.eval()
    n_v, n_c = len(inputs["lengths"]), len(caps["captions"])
    with torch.no_grad():
        parts = improved.similarity_parts(improved.encode_videos(video_batch(inputs, np.arange(n_v))),
                                          improved.encode_texts(text_batch(g, np.arange(n_c))))
    assert (parts["loc_a"] - torch.from_numpy(g["score/loc_a"])).abs().max().item() > 1e-3


def test_training_loss_and_gradients_match_reference(golden, imported):
    g, inputs, meta, caps = golden
    model, _ = imported
    model.train()
    pairs = caps["train_pairs"]
    vids = np.array([v for v, _ in pairs])
    cidx = np.array([j for _, j in pairs])
    cl = caps["captions"]
    labels = {}
    for kind, n in (("verb", model.cfg.n_verb_concepts), ("noun", model.cfg.n_noun_concepts)):
        lab = np.zeros((len(pairs), n), bool)
        vid_all = np.zeros((len(pairs), n), bool)
        for r, (v, j) in enumerate(pairs):
            lab[r, cl[j][kind + "s"]] = True
            for c in cl:
                if c["video"] == v:
                    vid_all[r, c[kind + "s"]] = True
        labels[kind] = (torch.from_numpy(lab.astype(np.float32)), torch.from_numpy(vid_all & ~lab))
    lb = ConceptLabels(verbs=labels["verb"][0], nouns=labels["noun"][0],
                       verb_ignore=labels["verb"][1], noun_ignore=labels["noun"][1])
    model.zero_grad(set_to_none=True)
    loss = model.loss(video_batch(inputs, vids), text_batch(g, cidx), lb)["total"]
    loss.backward()
    assert loss.item() == pytest.approx(meta["train_loss"], abs=1e-5)
    ref_grads = {k[len("grad/"):]: torch.from_numpy(v) for k, v in g.items() if k.startswith("grad/")}
    mapped, _ = map_reference_state_dict(ref_grads, model)
    n_checked = 0
    for name, p in model.named_parameters():
        want = mapped.get(name)
        assert want is not None, name
        got = p.grad if p.grad is not None else torch.zeros_like(p)
        # 1e-3 relative to the tensor's largest gradient; the 1e-6 floor only matters for
        # gradients that are zero in exact arithmetic (conv biases before a training-mode
        # BatchNorm: both sides are float noise of ~1e-8..1e-7 there)
        scale = want.abs().max().item()
        assert (got - want).abs().max().item() <= 1e-3 * scale + 1e-6, name
        n_checked += 1
    assert n_checked == len(list(model.parameters()))
    model.eval()


def test_reference_graph_edges_equal_reference_reader(golden):
    """pipeline.learn.graphs.build_graph(edges_mode='reference') == the reference reader's arrays."""
    g, _, _, caps = golden
    to_ours = np.array([ROLES.index(r) for r in REFERENCE_ROLES])
    for j, c in enumerate(caps["captions"]):
        keys = list(c["nodes"])
        nodes = [{"role": c["nodes"][k]["role"], "spans": c["nodes"][k]["spans"]} for k in keys]
        edges = [{"src": keys.index(s), "dst": keys.index(d), "role": r} for s, d, r in c["edges"]]
        n_words = min(len(c["text"].split()), 30)
        masks, roles, valid, adj = build_graph(nodes, edges, n_words, 30, 4, 6, True, "reference")
        L = masks.shape[1]
        ref_masks = np.concatenate([g["verb_masks"][j], g["noun_masks"][j]], 0)
        ref_masks = np.pad(ref_masks, ((0, 0), (0, L - ref_masks.shape[1])))
        assert np.array_equal(masks[1:], ref_masks), j
        assert np.array_equal(adj, g["rel_edges"][j] > 0), j
        ref_roles = to_ours[g["node_roles"][j]]
        assert np.array_equal(roles[1:][valid[1:]], ref_roles[valid[1:]]), j
    # and the improved graph differs (self loops, root<->verb)
    m, r, v, a = build_graph([{"role": "V", "spans": [0]}, {"role": "ARG0", "spans": [1]}],
                             [{"src": 0, "dst": 1, "role": "ARG0"}], 2, 30, 4, 6, True, "improved")
    assert a[0, 0] and a[0, 1] and a[1, 0]


def test_reference_clip_rules_unit():
    from models.layers import action_clip_weights, action_clip_weights_reference, entity_clip_weights_reference

    T = 10
    mask = torch.ones(2, T, dtype=torch.bool)
    probs = torch.zeros(2, T, 2)
    probs[0, 3, 0] = probs[0, 5, 1] = 1.0  # both argmax frames inside [2, 7]: +-2 windows
    probs[1, 3, 0] = probs[1, 1, 1] = 1.0  # one verb peaks at frame 1: every verb of video 1 -> one frame
    w = action_clip_weights_reference(probs, mask, 2)
    assert torch.allclose(w[0, 0, 1:6], torch.full((5,), 0.2)) and w[0, 0].sum() == 1
    assert w[1, 0, 3] == 1 and w[1, 0].sum() == 1 and w[1, 1, 1] == 1
    assert action_clip_weights(probs, mask, 2)[1, 0, 1:6].eq(0.2).all()  # ours: window kept
    short = torch.tensor([[True, True, False], [True, True, True]])
    p = torch.tensor([[[0.2], [0.9], [0.0]], [[0.2], [0.9], [0.5]]])
    e = entity_clip_weights_reference(p, short, 3)
    assert e[0, 0].tolist() == [0.0, 1.0, 0.0]  # 2 frames: the argmax frame only
    assert torch.allclose(e[1, 0], torch.full((3,), 1 / 3))


def test_reference_padding_depends_on_batch_mates(imported, golden):
    """The reference's padding leak (what padding='masked' removes): a short video's local
    embedding changes with the length of the longest video in its batch."""
    _, inputs, _, _ = golden
    model, _ = imported
    model.eval()
    short = int(np.flatnonzero(inputs["lengths"] == 3)[0])
    with torch.no_grad():
        alone = model.encode_videos(video_batch(inputs, np.array([short])))["loc_a"]
        mixed = model.encode_videos(video_batch(inputs, np.array([short, int(np.argmax(inputs["lengths"]))])))["loc_a"]
    assert (alone[0] - mixed[0]).abs().max().item() > 1e-4
    masked = HANet(model.cfg.model_copy(update={"padding": "masked"}))
    masked.load_state_dict(model.state_dict())
    masked.eval()
    with torch.no_grad():
        alone = masked.encode_videos(video_batch(inputs, np.array([short])))["loc_a"]
        mixed = masked.encode_videos(video_batch(inputs, np.array([short, int(np.argmax(inputs["lengths"]))])))["loc_a"]
    assert torch.allclose(alone[0], mixed[0], atol=1e-6)
