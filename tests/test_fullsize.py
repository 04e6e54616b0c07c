"""Full-size dataset generator (pipeline/datasets/fullsize.py, storage/bundle_write.py streamed writers) at a tiny scale:
released bundle layout, real per-video shapes, determinism, streaming (per-video seeds, bounded memory),
and a bundle build (format=hgr-bundle) that reads it back."""
from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import BuildConfig
from pipeline.datasets import fullsize as fs
from pipeline.datasets.bundle_plan import build_bundle
from storage.bundle import locate_bundle

SCALE = 0.004  # MSR-VTT: 26 / 2 / 12 videos


def _read(root: Path) -> dict:
    ann = root / "annotation" / "RET"
    out = {"refs": json.loads((ann / "ref_captions.json").read_text()),
           "graphs": json.loads((ann / "sent2rolegraph.augment.json").read_text()),
           "int2word": np.load(ann / "int2word.npy").tolist(),
           "word2int": json.loads((ann / "word2int.json").read_text()),
           "names": {c: np.load(root / "public_split" / f"{c}_names.npy").tolist() for c in ("trn", "val", "tst")},
           "feats": {}}
    for c in ("trn", "val", "tst"):
        with h5py.File(root / "ordered_feature" / "SA" / "resnet152.pth" / f"{c}_ft.hdf5") as f:
            out["feats"][c] = {k: f[k][()] for k in f}
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("fullsize") / "msrvtt"
    counts = fs.write_fullsize_bundle(root, "msrvtt", SCALE, seed=3)
    return root, counts, _read(root)


def test_layout_counts_and_shapes(bundle):
    root, counts, b = bundle
    layout = locate_bundle(root)  # the reader's own layout check
    assert list(layout.features) == ["resnet152.pth"]
    want = fs.scaled_counts(fs.SPECS["msrvtt"], SCALE)
    assert want == {"train": 26, "val": 2, "test": 12}
    assert [len(b["names"][c]) for c in ("trn", "val", "tst")] == [26, 2, 12]
    assert b["names"]["trn"][0] == "video0" and b["names"]["tst"][0] == "video28"   # MSR-VTT's naming, one sequence
    assert set(b["refs"]) == {n for c in b["names"].values() for n in c}
    assert all(len(caps) == 20 for caps in b["refs"].values())
    words = [len(c.split()) for caps in b["refs"].values() for c in caps]
    assert abs(np.mean(words) - 9.3) < 0.5 and counts["captions"] == 40 * 20
    for c, names in b["names"].items():
        assert set(b["feats"][c]) == set(names)
        for x in b["feats"][c].values():
            assert x.dtype == np.float32 and x.shape[1] == 2048 and 10 <= x.shape[0] <= 40
    # every caption has its role graph (ROOT words = the caption's tokens, spans inside them)
    for caps in b["refs"].values():
        for text in caps:
            nodes, edges = b["graphs"][text]
            assert nodes["ROOT"]["words"] == text.split()
            assert all(max(n["spans"]) < len(text.split()) for n in nodes.values())
            assert {e[2] for e in edges} >= {"ARG0", "ARG1"}
    # HGR's vocabulary: specials, then train words; word2int its inverse
    assert b["int2word"][:3] == ["<BOS>", "<EOS>", "<UNK>"]
    assert b["word2int"] == {w: i for i, w in enumerate(b["int2word"])}
    train_words = {w for n in b["names"]["trn"] for c in b["refs"][n] for w in c.split()}
    assert set(b["int2word"][3:]) == train_words


def test_deterministic_and_streamed_per_video(bundle, tmp_path):
    root, counts, b = bundle
    again = _read(Path(fs.write_fullsize_bundle(tmp_path / "again", "msrvtt", SCALE, seed=3) and tmp_path / "again"))
    assert again["refs"] == b["refs"] and again["graphs"] == b["graphs"] and again["int2word"] == b["int2word"]
    for c in b["feats"]:
        assert all(np.array_equal(again["feats"][c][k], x) for k, x in b["feats"][c].items())
    # video i comes from its own seed: the same at any size (a larger set only appends videos)
    w = fs.World(fs.SPECS["msrvtt"], 3)
    small = list(fs.generate_videos(w, "train", 3, seed=3))
    big = fs.generate_videos(w, "train", 10_000, seed=3)   # a lazy stream: nothing generated yet
    for (n1, x1, c1), (n2, x2, c2) in zip(small, big):
        assert n1 == n2 and np.array_equal(x1, x2) and c1 == c2
    assert np.array_equal(small[1][1], b["feats"]["trn"]["video1"])
    other = _read(Path(fs.write_fullsize_bundle(tmp_path / "seed4", "msrvtt", SCALE, seed=4) and tmp_path / "seed4"))
    assert other["refs"] != b["refs"]


def test_memory_bounded_by_one_video_not_the_dataset(tmp_path):
    """Peak Python-traced memory while writing 120 videos stays far below their features' total size."""
    tracemalloc.start()
    try:
        counts = fs.write_fullsize_bundle(tmp_path / "b", "msrvtt", 0.012, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    feature_bytes = counts["frames"] * 2048 * 4
    assert counts["videos"] == 120 and feature_bytes > 20 * 2 ** 20
    assert peak < feature_bytes / 8, (peak, feature_bytes)


def test_vatex_shape(tmp_path):
    counts = fs.write_fullsize_bundle(tmp_path / "v", "vatex", 0.001, seed=0)
    assert (counts["train_videos"], counts["val_videos"], counts["test_videos"]) == (26, 2, 2)
    assert counts["dim"] == 1024 and counts["captions"] == 30 * 10 and abs(counts["mean_words"] - 15) < 1.0
    layout = locate_bundle(tmp_path / "v")
    assert list(layout.features) == ["RET.public.i3d"]
    with pytest.raises(ValueError, match="unknown dataset"):
        fs.write_fullsize_bundle(tmp_path / "x", "msvd", 1.0)
    with pytest.raises(ValueError, match="scale"):
        fs.scaled_counts(fs.SPECS["vatex"], 0)


@pytest.fixture(scope="module")
def built(bundle, tmp_path_factory):
    root = bundle[0]
    cfg = BuildConfig.model_validate({"dataset": "msrvtt", "out_root": str(tmp_path_factory.mktemp("shards")),
                                      "ingest": {"format": "hgr-bundle", "dataset_root": str(root), "annotation": ""},
                                      "text": {"spacy_model": "en_core_web_sm"}})
    return build_bundle(cfg)


def test_bundle_build_reads_it(bundle, built):
    root, counts, b = bundle
    summary = built
    out = Path(summary["root"])
    by = {r["stage"]: r["counts"] for r in summary["stages"]}
    assert by["ingest"]["videos"] == 40 and by["ingest"]["error"] == 0 and by["ingest"]["captions"] == 800
    assert by["import-features"]["ok"] == 40 and by["import-features"]["dim"] == 2048
    assert by["parse"]["errors"] == 0 and by["parse"]["fallback"] == 0   # every caption found in the role graphs
    assert by["vocab"]["words"] == len(b["int2word"]) and by["vocab"]["train_tokens_unknown"] == 0
    concepts = pq.read_table(out / "text" / "concepts.parquet").to_pylist()
    planted_verbs = set(fs.World(fs.SPECS["msrvtt"], 3).verbs)
    got = {c["lemma"] for c in concepts if c["kind"] == "verb"}
    assert len(got & planted_verbs) >= 10   # the planted verbs are found as verb concepts (lemmatised)


@pytest.fixture(scope="module")
def trained(built, tmp_path_factory):
    from models.config import HANetConfig
    from pipeline.learn.config import TrainConfig
    from pipeline.learn.train import run_train

    h = HANetConfig(joint_dim=32, gcn_attn_dim=16, max_frames=12, n_action_clips=4, n_entity_clips=6, se_reduction=8)
    return run_train(Path(built["root"]), tmp_path_factory.mktemp("run"), TrainConfig(
        features="imported-resnet152", hanet=h, epochs=1, batch_size=8, max_steps_per_epoch=2, log_every=0))


def test_search_on_an_index_of_a_bundle_build(built, trained, tmp_path):
    """Regression (found by bench/bench_fullsize.py): Searcher failed on any index of a bundle build, because
    the bundle's concepts stage records {concepts: ConceptConfig, bundle_concepts: ...} as its config and the
    query parser validated that whole dict as a ConceptConfig (pydantic 'Extra inputs are not permitted')."""
    from pipeline.search.index import build_index
    from pipeline.search.query import Searcher

    shards = Path(built["root"])
    meta = build_index(trained["best_checkpoint"], shards, tmp_path / "index", n_thumbs=0)
    assert meta["n_videos"] == 40 and "bundle_concepts" in meta["concept_config"]
    searcher = Searcher(tmp_path / "index")
    res = searcher.search("a man rides a horse in the park", top=5)
    assert len(res["results"]) == 5 and searcher.parse.ccfg.n_verbs == 512


def test_index_built_in_place(built, tmp_path):
    """Regression (bench/bench_fullsize.py): build_index kept every batch's arrays in lists and concatenated them
    at the end, so its peak memory was twice the index (MSR-VTT's 10,000 videos: ~3 GB of arrays -> ~6 GB; VATEX's
    29,000 would need ~18 GB). Now each array is allocated once and filled batch by batch: peak ~ index + a batch."""
    import numpy as np

    from models.config import HANetConfig
    from pipeline.learn.config import TrainConfig
    from pipeline.learn.train import run_train
    from pipeline.search.index import build_index

    h = HANetConfig(joint_dim=1024, gcn_attn_dim=16, max_frames=20, se_reduction=8)  # stored rows >> a feature batch
    trained = run_train(Path(built["root"]), tmp_path / "run", TrainConfig(
        features="imported-resnet152", hanet=h, epochs=1, batch_size=4, max_steps_per_epoch=1, log_every=0))
    tracemalloc.start()
    try:
        meta = build_index(trained["best_checkpoint"], Path(built["root"]), tmp_path / "index", n_thumbs=0, batch=4)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stored = sum(int(np.prod(shape)) * np.dtype(dt).itemsize for shape, dt in meta["arrays"].values())
    assert meta["n_videos"] == 40 and stored > 8 * 2 ** 20
    assert peak < 1.6 * stored, (peak, stored)


def test_hgr_json_parse_tags_found_captions_without_the_parser(bundle, monkeypatch):
    """bench_fullsize found parse at the edge of 1,000 captions/s: the hgr-json backend ran spaCy's dependency
    parser on every caption although the role graph comes from the file (only tokens, tags and lemmas are
    read). Found captions are now tagged with the parser disabled; captions absent from the file are parsed as
    before; every output is identical."""
    from contextlib import nullcontext

    from pipeline.config import TextConfig
    from pipeline.text import parse as P
    from pipeline.text.lemmas import WordNetLemmas

    root = bundle[0]
    caps = [c for caps in list(bundle[2]["refs"].values())[:5] for c in caps] + ["a cat sits on the mat", ""]
    cfg = TextConfig(spacy_model="en_core_web_sm", backend="hgr-json",
                     hgr_json=str(root / "annotation" / "RET" / "sent2rolegraph.augment.json"))
    nlp, lex = P.load_nlp(cfg), WordNetLemmas()
    seen, real = [], P.safe_pipe

    def spy(nlp_, items, *a, **k):
        seen.append((len(items), "parser" in nlp_.pipe_names))
        yield from real(nlp_, items, *a, **k)

    monkeypatch.setattr(P, "safe_pipe", spy)
    new = P.parse_captions(caps, cfg, nlp, lex)
    assert seen == [(100, False), (1, True)]     # found captions without the parser, the missing one with it
    assert "parser" in nlp.pipe_names            # restored afterwards
    monkeypatch.setattr(P, "_without_parser", lambda nlp_: nullcontext())
    old = P.parse_captions(caps, cfg, nlp, lex)

    def key(p):
        return p.status, p.message, p.tokens, p.pos, p.lemmas, (p.graph.node_rows(), p.graph.edge_rows()) if p.graph else None

    assert [key(p) for p in new] == [key(p) for p in old]
    assert new[-2].status == "error" and new[-2].tokens[:2] == ["a", "cat"] and new[-1].status == "empty"


def test_hgr_json_parse_in_chunks_same_output_bounded_docs(bundle, monkeypatch):
    """bench_fullsize: the parse stage peaked at 4.7 GB RSS at MSR-VTT's 200,000 captions because parse_hgr
    built and kept a tagged spaCy Doc per caption until the end. It now tags HGR_CHUNK captions at a time:
    at most a chunk of Docs is alive, outputs identical; traced memory falls with the chunk size."""
    import tracemalloc

    from pipeline.config import TextConfig
    from pipeline.text import parse as P
    from pipeline.text.lemmas import WordNetLemmas

    root = bundle[0]
    caps = [c for caps in bundle[2]["refs"].values() for c in caps]       # 800 captions
    cfg = TextConfig(spacy_model="en_core_web_sm", backend="hgr-json",
                     hgr_json=str(root / "annotation" / "RET" / "sent2rolegraph.augment.json"))
    nlp, lex = P.load_nlp(cfg), WordNetLemmas()
    P.parse_captions(caps[:50], cfg, nlp, lex)  # warm-up (lazy spaCy / WordNet state)

    def run(chunk):
        monkeypatch.setattr(P, "HGR_CHUNK", chunk)
        tracemalloc.start()
        try:
            res = P.parse_captions(caps, cfg, nlp, lex)
            return res, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    sizes, real = [], P.safe_pipe
    monkeypatch.setattr(P, "safe_pipe", lambda nlp_, items, *a, **k: (sizes.append(len(items)), real(nlp_, items, *a, **k))[1])
    small, peak_small = run(100)
    assert max(sizes) == 100 and sum(sizes) == len(caps)
    whole, peak_whole = run(len(caps))

    def key(p):
        return p.status, p.tokens, p.pos, p.lemmas, (p.graph.node_rows(), p.graph.edge_rows()) if p.graph else None

    assert [key(p) for p in small] == [key(p) for p in whole]
    assert peak_small < 0.8 * peak_whole, (peak_small, peak_whole)
