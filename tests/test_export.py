"""`vtr export` (pipeline/datasets/export.py, storage/bundle_write.py): the released HGR/HANet layout.

The round trip: a planted shard tree -> export -> ``format=hgr-bundle`` import (with
``vocab.embeddings='bundle'``) gives the same shards (features and word vectors bit-identical,
captions, role graphs, vocabulary, concepts and labels). That the reference code itself trains on an export
is shown by scripts/run_reference_on_export.py (log under bench/results/).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import BuildConfig
from pipeline.datasets.bundle_plan import build_bundle
from pipeline.datasets.export import caption_tokens, run_export
from pipeline.datasets.planted import make_planted_shards
from storage.bundle_write import ExportError, read_word_embeddings
from storage.tables import read_table, write_table


def _rows(root: Path, rel: str) -> list[dict]:
    return pq.read_table(root / rel).to_pylist()


def _by_sen(root: Path, rel: str) -> dict[tuple[str, int], dict]:
    """Rows of a per-caption table keyed by (video, sen_id): caption ids are renumbered by a re-import."""
    sen = {c["caption_id"]: (c["key"], c["sen_id"]) for c in _rows(root, "captions.parquet")}
    return {sen[r["caption_id"]]: r for r in _rows(root, rel)}


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    src = make_planted_shards(base / "planted", n_videos=24, captions_per_video=3, seed=3,
                              failed_graph_fraction=0.1)
    summary = run_export(src, base / "bundle")
    cfg = BuildConfig.model_validate({
        "dataset": "back", "out_root": str(base / "out"), "text": {"spacy_model": "en_core_web_sm"},
        "vocab": {"embeddings": "bundle"},   # the export's word_embeds file, so the vectors come back too
        "ingest": {"format": "hgr-bundle", "dataset_root": str(base / "bundle"), "annotation": ""}})
    back = Path(build_bundle(cfg)["root"])
    return src, base / "bundle", back, summary


def test_export_layout_files(round_trip):
    src, bundle, back, summary = round_trip
    for rel in ("annotation/RET/ref_captions.json", "annotation/RET/sent2rolegraph.augment.json",
                "annotation/RET/int2word.npy", "annotation/RET/word2int.json", "public_split/trn_names.npy",
                "ordered_feature/SA/resnet152.pth/tst_ft.hdf5", "annotation/verb_gt.json",
                "annotation/noun_gt_all.json", "annotation/verb_words_freq.json", "export.json"):
        assert (bundle / rel).is_file(), rel
    # the readers' np.load without allow_pickle works: plain unicode arrays
    names = np.load(bundle / "public_split/val_names.npy")
    assert names.dtype.kind == "U"
    assert list(names) == [v["key"] for v in _rows(src, "videos.parquet") if v["split"] == "val"]
    emb = read_word_embeddings(bundle / "results/RET.released/word_embeds.glove42b.th")
    with h5py.File(src / "text/embeddings.h5") as f:
        np.testing.assert_array_equal(emb, f["embeddings"][()])
    assert summary["counts"]["graphs_failed"] > 0 and summary["counts"]["videos_left_out"] == 0
    assert not list(bundle.parent.glob(".bundle.partial-*"))


def test_export_round_trip_same_shards(round_trip):
    src, bundle, back, _ = round_trip
    assert [(v["key"], v["split"]) for v in _rows(back, "videos.parquet")] == sorted(
        ((v["key"], v["split"]) for v in _rows(src, "videos.parquet")), key=lambda kv: ("train", "val", "test").index(kv[1]))
    a, b = _by_sen(src, "captions.parquet"), _by_sen(back, "captions.parquet")
    assert a.keys() == b.keys() and all(a[k]["caption"] == b[k]["caption"] and a[k]["split"] == b[k]["split"] for k in a)
    ga, gb = _by_sen(src, "text/role_graphs.parquet"), _by_sen(back, "text/role_graphs.parquet")
    n_failed = 0
    for k, g in ga.items():
        assert gb[k]["tokens"] == g["tokens"] and gb[k]["nodes"] == g["nodes"] and gb[k]["edges"] == g["edges"], k
        if g["status"] == "ok":
            assert gb[k]["status"] == "ok" and gb[k]["fallback"] == g["fallback"]
        else:   # a failed graph has no released form: it comes back as an empty graph
            n_failed += 1
            assert gb[k]["nodes"] == [] and gb[k]["fallback"]
    assert n_failed > 0
    # vocabulary: same words at the same ids; concepts and every label equal
    assert [(w["word_id"], w["word"]) for w in _rows(src, "text/words.parquet")] == \
        [(w["word_id"], w["word"]) for w in _rows(back, "text/words.parquet")]
    key = lambda r: (r["kind"], r["concept_id"])  # noqa: E731
    assert sorted((key(r), r["lemma"], r["train_count"]) for r in _rows(src, "text/concepts.parquet")) == \
        sorted((key(r), r["lemma"], r["train_count"]) for r in _rows(back, "text/concepts.parquet"))
    with h5py.File(src / "text/embeddings.h5") as f, h5py.File(back / "text/embeddings.h5") as g:
        assert f["embeddings"][()].tobytes() == g["embeddings"][()].tobytes()
    la, lb = _by_sen(src, "text/caption_labels.parquet"), _by_sen(back, "text/caption_labels.parquet")
    assert {k: (r["verb_ids"], r["noun_ids"]) for k, r in la.items()} == \
        {k: (r["verb_ids"], r["noun_ids"]) for k, r in lb.items()}
    va = {r["key"]: (r["verb_ids"], r["noun_ids"]) for r in _rows(src, "text/video_labels.parquet")}
    assert va == {r["key"]: (r["verb_ids"], r["noun_ids"]) for r in _rows(back, "text/video_labels.parquet")}


def test_export_round_trip_features_bit_identical(round_trip):
    src, bundle, back, _ = round_trip
    n = 0
    for split in ("train", "val", "test"):
        with h5py.File(src / "features/resnet152" / f"{split}.h5") as f, \
                h5py.File(back / "features/imported-resnet152" / f"{split}.h5") as g:
            assert set(f) == set(g)
            for k in f:
                assert f[k].dtype == g[k].dtype == np.float32
                assert f[k][()].tobytes() == g[k][()].tobytes()
                n += 1
    assert n == 24


def test_export_leaves_out_videos_without_features_and_refuses_what_the_layout_cannot_hold(round_trip, tmp_path):
    src, bundle, _, _ = round_trip
    tree = tmp_path / "tree"
    shutil.copytree(src, tree)
    status = read_table(tree / "features/resnet152/status.parquet", "feature_status").to_pylist()
    status[0].update(status="error", error_message="decode failed")
    write_table(tree / "features/resnet152/status.parquet", "feature_status", status)
    s = run_export(tree, tmp_path / "x")
    assert s["counts"]["videos_left_out"] == 1 and s["left_out"][0] == {"key": status[0]["key"],
                                                                        "why": "no 'resnet152' features"}
    refs = json.loads((tmp_path / "x/annotation/RET/ref_captions.json").read_text())
    assert status[0]["key"] not in refs and len(refs) == 23
    # an earlier export is replaced only with overwrite; a foreign folder never
    with pytest.raises(ExportError, match="overwrite"):
        run_export(tree, tmp_path / "x")
    assert run_export(tree, tmp_path / "x", overwrite=True)["counts"]["videos_left_out"] == 1
    (tmp_path / "mine").mkdir()
    with pytest.raises(ExportError, match="not an earlier export"):
        run_export(tree, tmp_path / "mine", overwrite=True)
    with pytest.raises(ExportError, match="feature set 'i3d_r50' lacks"):
        run_export(tree, tmp_path / "y", features=["i3d_r50"])
    # HANet's reader holds 512 verb concepts
    rows = read_table(tree / "text/concepts.parquet", "concepts").to_pylist()
    n_verbs = sum(r["kind"] == "verb" for r in rows)
    rows += [{"kind": "verb", "concept_id": i, "lemma": f"v{i}", "train_count": 1} for i in range(n_verbs, 513)]
    write_table(tree / "text/concepts.parquet", "concepts", [r for r in rows if r["kind"] == "verb"] +
                [r for r in rows if r["kind"] == "noun"])
    with pytest.raises(ExportError, match="513 verb concepts: HANet's reader holds at most 512"):
        run_export(tree, tmp_path / "z")
    assert not (tmp_path / "z").exists() and not list(tmp_path.glob(".z.partial-*"))
    assert run_export(tree, tmp_path / "z", hanet_concepts=False)["counts"]["hanet_concepts"] == 0


def test_caption_tokens_follow_the_loaders_lookup():
    w2i = {"a": 3, "man": 4, "Paris": 5}
    assert caption_tokens(["A", "man", "Paris", "Rome"], w2i) == ["a", "man", "Paris", "Rome"]


def test_deployments_validate_against_their_flows():
    import importlib

    import yaml

    root = Path(__file__).resolve().parents[1]
    deps = {d["name"]: d for d in yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]}
    for name in ("export-released-layout", "compare-features"):
        path, fn = deps[name]["entrypoint"].split(":")
        flow = getattr(importlib.import_module(path[:-3].replace("/", ".")), fn)
        flow.validate_parameters(dict(deps[name]["parameters"]))


def test_export_flow_in_process(round_trip, tmp_path, prefect_server):
    """`vtr export`'s flow (flows/export.py) on the planted tree: the summary and the markdown artifact's text."""
    from flows.export import export, export_report

    src = round_trip[0]
    s = export(dataset=src.name, out_root=str(src.parent), dest=str(tmp_path / "flow-export"))
    assert (tmp_path / "flow-export/annotation/RET/ref_captions.json").is_file()
    assert s["counts"]["test_videos"] == sum(v["split"] == "test" for v in _rows(src, "videos.parquet"))
    assert "ordered_feature/SA/resnet152.pth" in export_report(s)


def test_bundle_import_then_export_gives_the_bundle_back(tmp_path):
    """The other direction: a released bundle (tests/test_bundle.py's, imported features) -> our shards ->
    export writes the same files (captions, graphs, names, vocabulary, HANet files for its train videos)."""
    from tests.test_bundle import _cfg, make_bundle

    facts = make_bundle(tmp_path / "rel")
    root = Path(build_bundle(_cfg(tmp_path / "rel", tmp_path / "out"))["root"])
    s = run_export(root, tmp_path / "again")
    assert s["features"]["imported-resnet152"]["folder"] == "resnet152.pth"
    for rel in ("annotation/RET/ref_captions.json", "annotation/RET/sent2rolegraph.augment.json",
                "annotation/RET/word2int.json", "annotation/verb_words_freq.json", "annotation/noun_words_freq.json"):
        a, b = (json.loads((d / rel).read_text()) for d in (tmp_path / "rel", tmp_path / "again"))
        assert a == b and list(a) == list(b), rel
    for rel in ("annotation/RET/int2word.npy", *(f"public_split/{c}_names.npy" for c in ("trn", "val", "tst"))):
        assert np.load(tmp_path / "rel" / rel).tolist() == np.load(tmp_path / "again" / rel).tolist(), rel
    for kind in ("verb", "noun"):   # ours lists every video; the release's train videos are unchanged
        gt = json.loads((tmp_path / "again/annotation" / f"{kind}_gt.json").read_text())
        assert {k: gt[k] for k in facts["names"]["trn"]} == \
            {k: [sorted(set(ids)) for ids in v] for k, v in facts[f"{kind}_gt"].items()}
    for code in ("trn", "val", "tst"):
        with h5py.File(tmp_path / "rel/ordered_feature/SA/resnet152.pth" / f"{code}_ft.hdf5") as f, \
                h5py.File(tmp_path / "again/ordered_feature/SA/resnet152.pth" / f"{code}_ft.hdf5") as g:
            assert set(f) == set(g) and all(f[k][()].tobytes() == g[k][()].tobytes() for k in f)
