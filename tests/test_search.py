"""Search index, two-stage retrieval, query text processing, CLI and web API errors (pipeline/search/query.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.search import encode
from pipeline.learn.dataset import load_split
from pipeline.search.query import Searcher
from pipeline.search.encode import SearchError, caption_arrays
from pipeline.search.index import build_index
from storage import index as store
from storage.tables import read_table, write_table
from tests._search_index import make_search_fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUERY = "a man rides a horse"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    root, ck, vroot = make_search_fixture(tmp, n_videos=60, n_sources=3, missing=1)
    meta = build_index(ck, root, dataset_root=vroot, n_thumbs=4, batch=16)
    return root, ck, vroot, meta


@pytest.fixture(scope="module")
def searcher(built):
    return Searcher(built[3]["index_dir"])


def test_index_build(built):
    root, ck, vroot, meta = built
    index_dir = Path(meta["index_dir"])
    assert index_dir == ck.parent / "index"
    build = store.current_build(index_dir)
    videos = store.read_videos(build)
    assert len(videos) == meta["n_videos"] == 60  # every split
    assert {v["split"] for v in videos} == {"train", "val", "test"}
    # thumbnails: 4 real JPEGs for the 3 videos with sources; none for the missing one or planted paths
    with_thumbs = [v for v in videos if v["thumbs"]]
    assert len(with_thumbs) == meta["n_with_thumbnails"] == 3 and meta["thumbnail_errors"] == 0
    for v in with_thumbs:
        assert len(v["thumbs"]) == 4
        for t in v["thumbs"]:
            assert (build / t).read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG magic
    arrays = store.read_arrays(build)
    assert arrays["shortlist"].shape == (60, 32)
    np.testing.assert_allclose(np.linalg.norm(arrays["shortlist"], axis=1), 1.0, atol=1e-5)
    assert isinstance(arrays["enc/ind_a"], np.memmap)
    for key in ("enc/verb_probs", "enc/noun_probs", "enc/glo", "enc/mask", "heat/verb_frames"):
        assert arrays[key].shape[0] == 60
    for key in ("checkpoint_sha256", "shards_fingerprint", "vocabulary_fingerprint"):
        assert meta[key]
    # a rebuild switches CURRENT atomically and removes the old build
    meta2 = build_index(ck, root, tmp_index := ck.parent / "index2", n_thumbs=0)
    b1 = store.current_build(tmp_index)
    build_index(ck, root, tmp_index, n_thumbs=0)
    b2 = store.current_build(tmp_index)
    assert b1 != b2 and not b1.exists() and b2.exists() and meta2["n_with_thumbnails"] == 0


def test_query_text_processing_matches_captions(built):
    """A caption's stored tokens + role graph become exactly the arrays the training loader builds."""
    root, ck, _, _ = built
    s = Searcher(built[3]["index_dir"])
    data = load_split(root, "test", s.hcfg)
    graphs = {g["caption_id"]: g for g in read_table(root / "text" / "role_graphs.parquet", "role_graphs").to_pylist()}
    for j in range(0, data.n_captions, 3):
        g = graphs[int(data.caption_ids[j])]
        a = caption_arrays(g["tokens"], g["nodes"], g["edges"], g["status"] == "ok", s.vocab, s.hcfg)
        L = int(data.lengths[j])
        np.testing.assert_array_equal(a["word_ids"], data.word_ids[j, :L])
        np.testing.assert_array_equal(a["node_masks"], data.node_masks[j])
        np.testing.assert_array_equal(a["node_valid"], data.node_valid[j])
        np.testing.assert_array_equal(a["node_roles"], data.node_roles[j])
        np.testing.assert_array_equal(a["adjacency"], data.adjacency[j])
    # the spaCy path: a query is parsed like a caption (tokens, a V node with arguments, concepts)
    p = s.parse(QUERY)
    assert p.tokens == ["a", "man", "rides", "a", "horse"]
    assert any(n["role"] == "V" for n in p.nodes) and p.graph_ok
    assert set(p.concepts) >= {("verb", "ride"), ("noun", "man"), ("noun", "horse")}


def test_two_stage_equals_exhaustive_when_k_covers_the_index(searcher, built):
    n = searcher.n
    ex = searcher.search(QUERY, top=n, exhaustive=True)
    two = searcher.search(QUERY, top=n, k=n)
    assert ex["mode"] == "exhaustive" and two["mode"] == "two-stage"
    assert [h["key"] for h in ex["results"]] == [h["key"] for h in two["results"]]
    np.testing.assert_allclose([h["score"] for h in ex["results"]], [h["score"] for h in two["results"]], atol=1e-6)
    # the fused score is the model's own score of (video, query), computed here independently
    te, _, _ = searcher.encode_query(QUERY)
    data = {k: torch.from_numpy(np.array(v)) for k, v in searcher.arrays.items() if k.startswith("enc/")}
    ve = {k[4:]: v for k, v in data.items()}
    ref = searcher.model.similarity(ve, te)[:, 0].numpy()
    got = np.empty(n)
    for h in ex["results"]:
        got[h["row"]] = h["score"]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # a smaller K: the shortlist holds the K best global cosines, results are a re-ranking of them
    small = searcher.search(QUERY, top=5, k=10)
    assert small["shortlist"] == "levels" and searcher.meta["shortlist_levels"] == ["ind_a", "ind_e", "loc_a", "loc_e", "glo"]
    q = encode.pooled_text_levels(te, searcher.meta["shortlist_levels"]).numpy()
    s1 = np.asarray(searcher.arrays["shortlist_levels"]) @ q
    best10 = set(np.argsort(-s1)[:10].tolist())
    assert {h["row"] for h in small["results"]} <= best10
    scores = [h["score"] for h in small["results"]]
    assert scores == sorted(scores, reverse=True)
    # the level-pooled rows: unit mean of each level's valid frames / clips, then the unit global vector
    ve = {k: torch.from_numpy(np.array(v[:4])) for k, v in ((k[4:], v) for k, v in searcher.arrays.items()
                                                             if k.startswith("enc/"))}
    lv, rows = encode.pooled_video_levels(ve, list(ve))
    m = ve["mask"].float().unsqueeze(-1)
    mean_a = torch.nn.functional.normalize((ve["ind_a"] * m).sum(1) / m.sum(1), dim=-1)
    D = ve["ind_a"].shape[-1]
    np.testing.assert_allclose(rows[:, :D].numpy(), mean_a.numpy(), atol=1e-6)
    np.testing.assert_allclose(rows.numpy(), np.asarray(searcher.arrays["shortlist_levels"][:4]), atol=1e-6)
    # global-only shortlist: the K best global cosines
    g = Searcher(built[3]["index_dir"], shortlist="global")
    res = g.search(QUERY, top=5, k=10)
    glo = np.asarray(g.arrays["shortlist"]) @ torch.nn.functional.normalize(te["glo"], dim=-1)[0].numpy()
    assert res["shortlist"] == "global" and {h["row"] for h in res["results"]} <= set(np.argsort(-glo)[:10].tolist())


def test_cli_search_json(built, capsys):
    from flows.cli import main

    rc = main(["search", QUERY, "--index", built[3]["index_dir"], "--top", "3", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["query"] == QUERY and len(res["results"]) == 3 and res["k"] == 60 and res["mode"] == "two-stage"
    h = res["results"][0]
    assert set(h["levels"]) >= {"ind_a", "ind_e", "loc_a", "loc_e", "glo", "c_l", "c_p"}
    assert abs(h["score"] - (h["levels"]["c_l"] + h["levels"]["c_p"]) / 2) < 1e-5
    assert set(h["shared_concepts"]) == {"verb", "noun"}
    assert {c["concept"] for kind in ("verb", "noun") for c in h["shared_concepts"][kind]} <= {"ride", "man", "horse"}
    assert res["query_info"]["concepts"] == {"verb": ["ride"], "noun": ["horse", "man"]}
    rc = main(["search", QUERY, "--index", built[3]["index_dir"], "--top", "2"])
    out = capsys.readouterr().out
    assert rc == 0 and "query concepts: verbs ride; nouns horse, man" in out


def test_errors(built, searcher, tmp_path, capsys):
    from flows.cli import main

    root, ck, _, meta = built
    for bad in ("", "   \n\t"):
        with pytest.raises(SearchError, match="empty query"):
            searcher.search(bad)
    with pytest.raises(SearchError, match="too long"):
        searcher.search("horse " * 100)
    assert main(["search", "  ", "--index", meta["index_dir"], "--json"]) == 2
    assert "empty query" in json.loads(capsys.readouterr().out)["error"]
    assert main(["search", QUERY, "--index", str(tmp_path / "nothing")]) == 2
    assert "no search index" in capsys.readouterr().err
    # an index built for another vocabulary
    other = tmp_path / "other"
    shutil.copytree(root, other)
    words = read_table(other / "text" / "words.parquet", "words").to_pylist()
    words[-1]["word"] = "zebra"
    write_table(other / "text" / "words.parquet", "words", words)
    with pytest.raises(SearchError, match="another vocabulary"):
        Searcher(meta["index_dir"], shards_root=other)
    # and a checkpoint that is not the index's
    from tests._search_index import make_checkpoint

    ck2 = make_checkpoint(root, tmp_path / "other.pt", seed=1)
    with pytest.raises(SearchError, match="not the checkpoint"):
        Searcher(meta["index_dir"], checkpoint=ck2)


def test_web_api_serves_only_index_files(searcher):
    from fastapi.testclient import TestClient

    from pipeline.search.web import create_app

    c = TestClient(create_app(searcher))
    assert c.get("/").status_code == 200
    r = c.get("/api/search", params={"q": QUERY, "top": 3})
    assert r.status_code == 200 and len(r.json()["results"]) == 3
    r = c.get("/api/search", params={"q": ""})
    assert r.status_code == 400 and "empty query" in r.json()["error"]
    assert c.get("/api/search", params={"q": "x" * 400}).status_code == 400
    thumb = next(t for v in searcher.videos for t in v["thumbs"])
    r = c.get(f"/files/{thumb}")
    assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"
    for bad in ("index.json", "arrays.h5", "../CURRENT", "thumbs/../index.json", "%2e%2e/%2e%2e/etc/passwd",
                "/etc/passwd", thumb.replace(".jpg", ".png")):
        assert c.get(f"/files/{bad}").status_code == 404, bad
    r = c.get("/api/heatmap/0.png")
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    assert c.get(f"/api/heatmap/{searcher.n}.png").status_code == 404


def test_float16_shortlist_returns_the_exact_top_k():
    from pipeline.search.shortlist import ShortlistMatrix

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(32, 64, generator=g)
    m = torch.nn.functional.normalize(centres[torch.randint(0, 32, (6000,), generator=g)]
                                      + 0.5 * torch.randn(6000, 64, generator=g), dim=-1)
    exact, fast = ShortlistMatrix(m, fast="off"), ShortlistMatrix(m, fast="on")
    assert exact.m16 is None and fast.m16 is not None
    for q in torch.nn.functional.normalize(torch.randn(5, 64, generator=g), dim=-1):
        r0, s0 = exact.topk(q, 100)
        r1, s1 = fast.topk(q, 100)
        np.testing.assert_array_equal(r0, r1)
        np.testing.assert_allclose(s0, s1, atol=1e-6)
        assert np.all(np.diff(r0) > 0) and s0.min() >= np.sort((m @ q).numpy())[-100] - 1e-6
