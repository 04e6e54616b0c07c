"""Shard tables -> batches: frames, words, role-graph slots, concept labels, sampler."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from models.batch import ROLE_IDS, ROOT_ROLE
from models.config import HANetConfig
from pipeline.learn.dataset import PAD_ID, UNK_ID, dataset_shapes, load_split, load_word_embeddings
from pipeline.learn.features import sample_frames
from pipeline.learn.batches import TrainBatches, epoch_batches
from pipeline.learn.graphs import build_graph
from pipeline.datasets.planted import make_planted_shards
from storage.features import write_features
from storage.tables import write_table
from storage.text import write_embeddings

HCFG = HANetConfig(max_words=10, max_verbs=2, max_nouns=3, max_frames=8, n_verb_concepts=3, n_noun_concepts=4,
                   feat_dim=4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def node(role, spans, words=""):
    return {"role": role, "spans": spans, "words": words}


def edge(s, d, role="ARG"):
    return {"src": s, "dst": d, "role": role}


LONG = [f"w{i}" for i in range(15)]
# caption_id, video, tokens, graph status, nodes, edges, verb ids, noun ids
CAPTIONS = [
    (10, "v0", "a man rides a horse".split(), "ok",
     [node("V", [2]), node("ARG0", [0, 1]), node("ARG1", [3, 4])], [edge(0, 1), edge(0, 2)], [0], [0, 1]),
    (11, "v0", "the man jumps".split(), "ok", [node("V", [2]), node("ARG0", [0, 1])], [edge(0, 1)], [1], [0]),
    (12, "v1", "ZEBRA xyzzy dances".split(), "failed", [], [], [2], []),
    (13, "v2", LONG, "ok",
     [node("ROOT", list(range(15))), node("V", [1]), node("ARG0", [0]), node("ARG1", [2, 3]),
      node("V", [12]), node("ARG1", [13]), node("V", [5]), node("ARGM-LOC", [6, 11]), node("V", [8]),
      node("ARG0", [9])],
     [edge(0, 1), edge(1, 2), edge(1, 3), edge(4, 5), edge(6, 7), edge(8, 9)], [], [2]),
    (14, "v3", "a dog runs".split(), "ok", [], [], [], [2]),          # video without features
    (15, "v2", "a dog and a cat run".split(), "ok",                  # no-frame fallback graph
     [node("NOUN", [0, 1]), node("NOUN", [3, 4]), node("V", [5])], [], [2], [2, 3]),
    (16, "v4", "a cat".split(), "ok", [], [], [], [3]),              # video with zero frames
]
WORDS = ["<bos>", "<eos>", "<unk>", "a", "man", "rides", "horse", "the", "jumps", "zebra", "dances", "dog", "and",
         "cat", "run"] + LONG


def write_tiny_tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    cap_rows, graph_rows, label_rows = [], [], []
    for cid, key, toks, status, nodes, edges, vv, nn in CAPTIONS:
        cap_rows.append({"caption_id": cid, "key": key, "sen_id": cid, "split": "train", "caption": " ".join(toks)})
        graph_rows.append({"caption_id": cid, "key": key, "split": "train", "status": status, "error_message": "",
                           "backend": "test", "tokens": toks, "nodes": nodes, "edges": edges,
                           "fallback": cid == 15})
        label_rows.append({"caption_id": cid, "key": key, "split": "train", "verb_ids": vv, "noun_ids": nn})
    write_table(root / "captions.parquet", "captions", cap_rows)
    write_table(root / "text" / "role_graphs.parquet", "role_graphs", graph_rows)
    write_table(root / "text" / "caption_labels.parquet", "caption_labels", label_rows)
    write_table(root / "text" / "concepts.parquet", "concepts",
                [{"kind": "verb", "concept_id": i, "lemma": w, "train_count": 1} for i, w in
                 enumerate(["ride", "jump", "dance"])]
                + [{"kind": "noun", "concept_id": i, "lemma": w, "train_count": 1} for i, w in
                   enumerate(["man", "horse", "dog", "cat"])])
    write_table(root / "text" / "words.parquet", "words",
                [{"word_id": i, "word": w, "train_count": 1, "in_embeddings": True} for i, w in enumerate(WORDS)])
    write_embeddings(root / "text" / "embeddings.h5", rng.standard_normal((len(WORDS), 5)).astype(np.float32), {})
    feats = {"v0": np.arange(30 * 4, dtype=np.float32).reshape(30, 4), "v1": np.ones((3, 4), np.float32),
             "v2": rng.standard_normal((8, 4)).astype(np.float32), "v4": np.zeros((0, 4), np.float32)}
    write_features(root / "features" / "resnet152" / "train.h5", feats, {"extractor": "test"})
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_tiny_tree(tmp_path_factory.mktemp("tiny"))
    return load_split(root, "train", HCFG)


def test_sample_frames_subsample_and_pad():
    x = np.arange(30, dtype=np.float32)[:, None].repeat(3, 1)
    out, mask = sample_frames(x, 8)
    expect = np.round(np.linspace(0, 29, 8)).astype(int)
    np.testing.assert_array_equal(out[:, 0], expect)
    assert mask.all() and out[0, 0] == 0 and out[-1, 0] == 29
    out, mask = sample_frames(x[:3], 8)
    assert mask.tolist() == [True] * 3 + [False] * 5
    np.testing.assert_array_equal(out[3:], 0)
    out, mask = sample_frames(x[:8], 8)
    np.testing.assert_array_equal(out[:, 0], np.arange(8))
    assert mask.all()


def test_split_selection_and_order(tiny):
    assert tiny.keys == ["v0", "v1", "v2"]
    assert tiny.notes["videos_without_features"] == 2          # v3 missing, v4 zero frames
    assert tiny.caption_ids.tolist() == [10, 11, 12, 13, 15]   # grouped by video, then caption_id
    assert tiny.cap2vid.tolist() == [0, 0, 1, 2, 2]
    vb = tiny.video_batch([0, 1])
    assert vb.feats.shape == (2, 8, 4) and vb.mask.dtype == torch.bool
    assert vb.mask[0].all() and vb.mask[1].tolist() == [True] * 3 + [False] * 5
    np.testing.assert_array_equal(vb.feats[0, :, 0].numpy(), np.round(np.linspace(0, 29, 8)) * 4)
    assert (vb.feats[1, 3:] == 0).all()


def test_words_vocab_unk_truncation(tiny):
    w = {x: i for i, x in enumerate(WORDS)}
    assert tiny.word_ids[0, :5].tolist() == [w["a"], w["man"], w["rides"], w["a"], w["horse"]]
    assert (tiny.word_ids[0, 5:] == PAD_ID).all()
    assert tiny.word_ids[2, :3].tolist() == [w["zebra"], UNK_ID, w["dances"]]  # lower-cased, OOV -> UNK
    assert tiny.lengths.tolist() == [5, 3, 3, 10, 6]                           # 15 tokens cut to max_words
    assert tiny.notes["captions_truncated"] == 1
    tb = tiny.text_batch([0, 1])
    assert tb.word_ids.shape == (2, 5) and tb.node_masks.shape == (2, 6, 5)    # padded to the batch max
    assert tb.adjacency.dtype == torch.float32 and tb.node_valid.dtype == torch.bool
    assert tiny.text_batch([1], pad_to=9).word_ids.shape == (1, 9)


def test_graph_slots_caps_clipping_and_edges(tiny):
    # caption 13 (row 3): ROOT node in the table ignored; verbs at tokens 1, 5 kept (12 is past
    # max_words, 8 is a third verb); args 0, [2,3], [6] (span 11 clipped); node 9's verb was cut
    G = 6
    m, roles, valid, adj = tiny.node_masks[3], tiny.node_roles[3], tiny.node_valid[3], tiny.adjacency[3]
    assert valid.tolist() == [True] * G
    assert roles.tolist() == [ROOT_ROLE, ROLE_IDS["V"], ROLE_IDS["V"], ROLE_IDS["ARG0"], ROLE_IDS["ARG1"],
                              ROLE_IDS["ARGM-LOC"]]
    spans = [np.flatnonzero(m[i]).tolist() for i in range(G)]
    assert spans == [list(range(10)), [1], [5], [0], [2, 3], [6]]
    expect = np.eye(G, dtype=bool)
    for a, b in [(0, 1), (0, 2), (1, 3), (1, 4), (2, 5)]:
        expect[a, b] = expect[b, a] = True
    np.testing.assert_array_equal(adj, expect)


def test_failed_graph_is_root_only_and_fallback_graph(tiny):
    assert tiny.node_valid[2].tolist() == [True] + [False] * 5      # status 'failed'
    assert tiny.node_masks[2, 0, :3].all() and not tiny.node_masks[2, 0, 3:].any()
    assert tiny.adjacency[2].sum() == 1
    assert tiny.notes["graphs_not_ok"] == 1
    # fallback (row 4): V 'run' + two NOUN chunks with no edges -> nouns hang off the root
    valid, adj = tiny.node_valid[4], tiny.adjacency[4]
    assert valid.tolist() == [True, True, False, True, True, False]
    assert adj[0, 1] and adj[0, 3] and adj[0, 4] and adj[3, 0] and not adj[1, 3]
    assert tiny.node_roles[4, 3] == ROLE_IDS["NOUN"]


def test_build_graph_direct():
    nodes = [node("V", [0]), node("ARG1", [1])]
    m, r, v, a = build_graph(nodes, [edge(0, 1)], n_words=2, max_words=4, max_verbs=1, max_nouns=1, ok=False)
    assert v.tolist() == [True, False, False] and m[0].tolist() == [True, True, False, False]
    m, r, v, a = build_graph(nodes, [edge(0, 1)], n_words=2, max_words=4, max_verbs=1, max_nouns=1)
    assert v.all() and a[1, 2] and a[2, 1] and a[0, 1] and not a[0, 2]


def test_labels_and_ignore_masks(tiny):
    lab = tiny.labels([0, 1, 3, 4])
    assert lab.verbs.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]]
    assert lab.nouns.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]
    # concepts of the video's OTHER captions that this caption lacks
    assert lab.verb_ignore.tolist() == [[False, True, False], [True, False, False], [False, False, True],
                                        [False, False, False]]
    assert lab.noun_ignore.tolist() == [[False, False, False, False], [False, True, False, False],
                                        [False, False, False, True], [False, False, False, False]]
    assert lab.verb_ignore.dtype == torch.bool


@pytest.mark.parametrize("per_video,batch", [(5, 8), (20, 8), (3, 64)])
def test_unique_video_batches(per_video, batch):
    cap2vid = np.repeat(np.arange(13), per_video)
    b0 = epoch_batches(cap2vid, batch, seed=1, epoch=0)
    for b in b0:
        assert len(set(cap2vid[b].tolist())) == b.size <= batch      # no video twice in a batch
    used = Counter(np.concatenate(b0).tolist())
    assert max(used.values()) == 1                                    # each caption at most once
    assert len(used) >= cap2vid.size - per_video                      # only a short tail may be dropped
    again = epoch_batches(cap2vid, batch, seed=1, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(b0, again))       # deterministic in (seed, epoch)
    other = epoch_batches(cap2vid, batch, seed=1, epoch=1)
    assert not all(np.array_equal(a, b) for a, b in zip(b0, other))
    full = [b for b in b0 if b.size == batch]
    assert len(full) >= (cap2vid.size // batch) - per_video           # nearly all batches are full


def test_plain_batches_allow_duplicates():
    cap2vid = np.repeat(np.arange(3), 20)
    bs = epoch_batches(cap2vid, 16, seed=0, epoch=0, unique_videos=False)
    assert sum(b.size for b in bs) == 60 and any(len(set(cap2vid[b])) < b.size for b in bs)


def test_planted_tree_loads(tmp_path):
    root = make_planted_shards(tmp_path / "p", n_videos=30, captions_per_video=3, n_verbs=5, n_nouns=7,
                               feat_dim=16, n_frames=6, seed=3)
    shapes = dataset_shapes(root, "resnet152")
    assert shapes["feat_dim"] == 16 and shapes["n_verb_concepts"] <= 5 and shapes["n_noun_concepts"] <= 7
    emb = load_word_embeddings(root)
    assert emb.shape == (shapes["vocab_size"], shapes["word_dim"])
    h = HANetConfig(max_frames=6, **shapes)
    counts = {}
    for split in ("train", "val", "test"):
        d = load_split(root, split, h)
        counts[split] = d.n_videos
        assert d.n_captions == 3 * d.n_videos and d.notes["videos_without_features"] == 0
        vb = d.video_batch(range(d.n_videos))
        assert vb.mask.any(1).all()
    assert sum(counts.values()) == 30
    batches = list(TrainBatches(load_split(root, "train", h), 4, 0, 0))
    v, t, lab = batches[0]
    assert len(v) == len(t) == len(lab) == 4 and lab.verbs.sum(1).min() >= 1
