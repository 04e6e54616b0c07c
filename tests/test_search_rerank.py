"""Search's prepared re-rank (pipeline/search/rerank.py) and coarse shortlist (pipeline/search/shortlist.py):
same scores as the model's own scoring (float32 rounding), same rankings, the old paths still reachable."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.hanet import HANet
from pipeline.search.index import build_index
from pipeline.search.query import Searcher
from pipeline.search.rerank import can_prepare, prepared_parts, prepared_video_arrays
from pipeline.search.shortlist import ShortlistMatrix, coarse_candidates
from storage import index as store
from tests._search_index import make_search_fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUERIES = ("a man rides a horse", "a woman is cooking food in a kitchen", "dog", "two people play a song on guitars")
# prepared vs model parts: measured max |diff| 1.8e-7 over these queries x 60 videos (both fusions): 1e-5 leaves
# room for other BLAS blockings, and is far below the score gaps that order results (checked separately)
TOL = 1e-5


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rerank")
    root, ck, vroot = make_search_fixture(tmp, n_videos=60, n_sources=0, missing=0)
    meta = build_index(ck, root, n_thumbs=0, batch=16)
    return root, ck, meta


def test_index_stores_the_prepared_arrays(built):
    _, _, meta = built
    s = Searcher(meta["index_dir"])
    a = s.arrays
    for level in ("ind_a", "ind_e", "loc_a", "loc_e"):
        v = torch.from_numpy(np.array(a[f"enc/{level}"]))
        m = torch.from_numpy(np.array(a["enc/mask" if level.startswith("ind") else f"enc/{level}_mask"]))
        norm = np.asarray(a[f"prep/{level}_norm"])
        gram = np.asarray(a[f"prep/{level}_gram"])
        np.testing.assert_allclose(norm, v.norm(dim=-1).numpy(), rtol=1e-6)
        vn = torch.nn.functional.normalize(v, dim=-1) * m.unsqueeze(-1)
        np.testing.assert_allclose(gram, (vn @ vn.transpose(1, 2)).numpy(), atol=1e-6)
        assert np.all(gram[~m.numpy()] == 0)  # padded frames / clips take no part
    assert s.prepared and can_prepare(s.model, list(a))


@pytest.mark.parametrize("fusion", ["embed", "sim"])
def test_prepared_parts_equal_the_models(built, fusion):
    s = Searcher(built[2]["index_dir"])
    torch.manual_seed(1)
    model = HANet(s.model.cfg.model_copy(update={"attn_fusion": fusion})).eval()
    ve = {k: torch.from_numpy(np.array(v)) for k, v in s.arrays.items() if k.startswith("enc/")}
    ve = {k[4:]: v for k, v in ve.items()}
    ve.update(prepared_video_arrays(ve, list(ve), fusion))
    assert ("ind_a_gram" in ve) == (fusion == "embed")
    with torch.inference_mode():
        for q in QUERIES:
            te, _, _ = s.encode_query(q)
            want = model.similarity_parts(ve, te)
            got = prepared_parts(model, ve, te)
            assert set(got) == set(want)
            for name in want:
                np.testing.assert_allclose(got[name].numpy(), want[name].numpy(), atol=TOL, err_msg=name)
            fused = ((got["c_l"] + got["c_p"]) / 2)[:, 0].numpy()
            ref = model.similarity(ve, te)[:, 0].numpy()
            assert np.array_equal(np.argsort(-fused, kind="stable"), np.argsort(-ref, kind="stable")) or \
                np.abs(np.sort(fused) - np.sort(ref)).max() < TOL  # only exact-tie swaps may differ


def test_search_results_equal_the_model_path(built):
    s_new = Searcher(built[2]["index_dir"])
    s_old = Searcher(built[2]["index_dir"], rerank="model", coarse="off")
    assert s_new.prepared and not s_old.prepared
    for q in QUERIES:
        for k in (10, 60):
            a, b = s_new.search(q, top=10, k=k), s_old.search(q, top=10, k=k)
            assert [h["row"] for h in a["results"]] == [h["row"] for h in b["results"]]
            np.testing.assert_allclose([h["score"] for h in a["results"]], [h["score"] for h in b["results"]],
                                       atol=TOL)
            for ha, hb in zip(a["results"], b["results"]):
                assert ha["levels"].keys() == hb["levels"].keys()
                np.testing.assert_allclose(list(ha["levels"].values()), list(hb["levels"].values()), atol=TOL)
    with pytest.raises(ValueError, match="rerank must be"):
        Searcher(built[2]["index_dir"], rerank="fast")


def test_an_index_without_prepared_arrays_is_scored_by_the_model(built, tmp_path):
    """Indexes built before the prepared arrays existed still search, through model.similarity_parts."""
    src = store.current_build(built[2]["index_dir"])
    arrays = {k: np.array(v) for k, v in store.read_arrays(src).items() if not k.startswith("prep/")}
    w = store.IndexWriter(tmp_path / "old")
    meta = {k: v for k, v in store.read_meta(src).items() if k not in ("schema_version", "build", "n_videos")}
    w.write(arrays, store.read_videos(src), meta)
    w.commit()
    old, new = Searcher(tmp_path / "old"), Searcher(built[2]["index_dir"])
    assert not old.prepared and new.prepared
    a, b = old.search(QUERIES[0], top=10), new.search(QUERIES[0], top=10)
    assert [h["row"] for h in a["results"]] == [h["row"] for h in b["results"]]


def _clustered(n: int, d: int, seed: int, rank: int = 40) -> torch.Tensor:
    """Unit rows near a ``rank``-dim subspace (as encoder outputs are), clustered, with a little full-rank noise."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g))[0]
    centres = torch.randn(64, rank, generator=g)
    low = centres[torch.randint(0, 64, (n,), generator=g)] + 0.6 * torch.randn(n, rank, generator=g)
    return torch.nn.functional.normalize(low @ basis.T + 0.02 * torch.randn(n, d, generator=g), dim=-1)


def test_coarse_shortlist_rescores_exactly_and_keeps_the_top_k():
    m = _clustered(6000, 640, 0)
    exact, coarse = ShortlistMatrix(m, fast="off", coarse="off"), ShortlistMatrix(m, coarse="on", coarse_dim=64)
    assert exact.mode == "exact" and coarse.mode == "coarse" and coarse.basis.shape == (640, 64)
    assert ShortlistMatrix(m).mode == "coarse"  # default from COARSE_MIN_ROWS rows when D >= 2 * coarse_dim
    again = ShortlistMatrix(m, coarse="on", coarse_dim=64)
    assert torch.equal(again.coarse, coarse.coarse)  # deterministic (fixed-seed randomised SVD)
    g = torch.Generator().manual_seed(5)
    kept = []
    for q in torch.nn.functional.normalize(m[torch.randint(0, 6000, (8,), generator=g)]
                                           + 0.05 * torch.randn(8, 640, generator=g), dim=-1):
        r0, s0 = exact.topk(q, 50)
        r1, s1 = coarse.topk(q, 50)
        assert r1.size == 50 and np.all(np.diff(r1) > 0)
        np.testing.assert_allclose(s1, (m[torch.from_numpy(r1)] @ q).numpy(), atol=1e-6)  # exact scores
        kept.append(len(set(r0.tolist()) & set(r1.tolist())) / 50)
    # the exact top-50 survives the coarse cut (200 + 64 candidates of 6,000): measured 1.0 on every query here
    assert min(kept) == 1.0, kept
    assert coarse_candidates(50) == 264


def test_index_written_in_blocks_equals_one_write(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"enc/x": rng.standard_normal((10, 3, 4)).astype(np.float32), "enc/m": rng.random((10, 3)) > 0.5,
              "shortlist": rng.standard_normal((10, 8)).astype(np.float32)}
    rows = [{"row": i, "key": f"v{i}", "split": "test", "n_frames": 3, "source": "", "caption": "", "thumbs": []}
            for i in range(10)]
    nbytes = sum(a.nbytes for a in arrays.values())
    one, blocks = store.IndexWriter(tmp_path / "one"), store.IndexWriter(tmp_path / "blocks")
    one.write(arrays, rows, {})
    blocks.write_blocks(({k: a[s:s + 4] for k, a in arrays.items()} for s in range(0, 10, 4)), rows, {}, nbytes)
    a, b = store.read_arrays(one.commit()), store.read_arrays(blocks.commit())
    assert set(a) == set(b) and all(isinstance(v, np.memmap) for v in b.values())
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])
    bad = store.IndexWriter(tmp_path / "bad")
    with pytest.raises(ValueError, match="do not continue"):
        bad.write_blocks([{k: a[:4] for k, a in arrays.items()}, {"enc/x": arrays["enc/x"][4:]}], rows, {}, nbytes)
    with pytest.raises(ValueError, match="hold 4 rows for 10"):
        bad.write_blocks([{k: a[:4] for k, a in arrays.items()}], rows, {}, nbytes)
    assert not (tmp_path / "bad" / bad.build / store.ARRAYS).exists()  # nothing half-written
