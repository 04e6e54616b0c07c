"""format='hgr-bundle': shards from HGR/HANet released data (pipeline/datasets/bundle.py, storage/bundle.py).

A synthetic bundle in exactly the released layout (HGR README + HANet path.json):
annotation/RET/{ref_captions.json, sent2rolegraph.augment.json, int2word.npy, word2int.json},
public_split/{trn,val,tst}_names.npy, ordered_feature/SA/<feature>/{trn,val,tst}_ft.hdf5,
and HANet's annotation/{verb,noun}_gt(_all).json + {verb,noun}_words_freq.json.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.datasets.bundle import feature_set_name
from pipeline.datasets.bundle_plan import build_bundle
from pipeline.config import BuildConfig
from storage.bundle import BundleError

SUBJECTS = [("a", "man"), ("a", "woman"), ("the", "dog"), ("a", "child")]
VERBS = ["running", "cooking", "singing", "playing"]
PLACES = [("in", "the", "kitchen"), ("on", "the", "road"), ("at", "the", "park")]
VERB_LEMMA = {"running": "run", "cooking": "cook", "singing": "sing", "playing": "play"}
SPLITS = {"trn": 10, "val": 4, "tst": 5}
CAPS_PER_VIDEO = 3


def _caption(i: int, j: int) -> tuple[str, list, list]:
    """Caption text, its HGR graph nodes and edges (ROOT + V + ARG0 + ARGM-LOC)."""
    det, subj = SUBJECTS[(i + j) % 4]
    verb = VERBS[(i * 3 + j) % 4]
    place = PLACES[(i + 2 * j) % 3]
    words = [det, subj, "is", verb, *place]
    nodes = {"ROOT": {"role": "ROOT", "spans": list(range(len(words))), "words": words},
             "1": {"role": "V", "spans": [3], "words": [verb]},
             "2": {"role": "ARG0", "spans": [0, 1], "words": [det, subj]},
             "3": {"role": "ARGM-LOC", "spans": [4, 5, 6], "words": list(place)}}
    edges = [["1", "2", "ARG0"], ["1", "3", "ARGM-LOC"]]
    return " ".join(words), nodes, edges


def make_bundle(root: Path, dim: int = 24, feature: str = "resnet152.pth", hanet: bool = True,
                seed: int = 0) -> dict:
    """Write a small bundle; returns facts the tests check against."""
    rng = np.random.default_rng(seed)
    ann = root / "annotation" / "RET"
    ann.mkdir(parents=True)
    (root / "public_split").mkdir()
    fdir = root / "ordered_feature" / "SA" / feature
    fdir.mkdir(parents=True)
    refs, graphs, names = {}, {}, {}
    k = 0
    for code, n in SPLITS.items():
        names[code] = [f"video{k + i}" for i in range(n)]
        k += n
        np.save(root / "public_split" / f"{code}_names.npy", np.array(names[code]))
        with h5py.File(fdir / f"{code}_ft.hdf5", "w") as f:
            for name in names[code]:
                f.create_dataset(name, data=rng.normal(size=(int(rng.integers(3, 12)), dim)).astype(np.float32))
        for name in names[code]:
            i = int(name[5:])
            refs[name] = []
            for j in range(CAPS_PER_VIDEO):
                text, nodes, edges = _caption(i, j)
                refs[name].append(text)
                graphs[text] = [nodes, edges]
    (ann / "ref_captions.json").write_text(json.dumps(refs))
    (ann / "sent2rolegraph.augment.json").write_text(json.dumps(graphs))
    # HGR's vocabulary: BOS/EOS/UNK first, then words in ITS order (alphabetical here, not by count)
    words = sorted({w for caps in refs.values() for c in caps for w in c.split()})
    int2word = ["<BOS>", "<EOS>", "<UNK>", *words]
    np.save(ann / "int2word.npy", np.array(int2word))
    (ann / "word2int.json").write_text(json.dumps({w: i for i, w in enumerate(int2word)}))
    facts = {"names": names, "refs": refs, "int2word": int2word, "dim": dim}
    if hanet:
        # HANet's vocabularies, most frequent first; ids index these lists
        verbs = ["play", "run", "cook", "sing", "be"]
        nouns = ["road", "man", "kitchen", "dog", "park", "woman", "child"]
        (root / "annotation" / "verb_words_freq.json").write_text(json.dumps({v: 100 - i for i, v in enumerate(verbs)}))
        (root / "annotation" / "noun_words_freq.json").write_text(json.dumps({v: 90 - i for i, v in enumerate(nouns)}))
        vgt, ngt = {}, {}
        for name in names["trn"]:
            vgt[name] = [[verbs.index(VERB_LEMMA[c.split()[3]])] for c in refs[name]]
            ngt[name] = [[nouns.index(w) for w in c.split() if w in nouns] for c in refs[name]]
        for kind, gt in (("verb", vgt), ("noun", ngt)):
            (root / "annotation" / f"{kind}_gt.json").write_text(json.dumps(gt))
            all_ = {n: {str(i): 1.0 for ids in lists for i in ids} for n, lists in gt.items()}
            (root / "annotation" / f"{kind}_gt_all.json").write_text(json.dumps(all_))
        facts.update(verbs=verbs, nouns=nouns, verb_gt=vgt, noun_gt=ngt)
    return facts


def _cfg(bundle: Path, out: Path, **extra) -> BuildConfig:
    return BuildConfig.model_validate({
        "dataset": "hgr", "out_root": str(out),
        "ingest": {"format": "hgr-bundle", "dataset_root": str(bundle), "annotation": ""},
        "text": {"spacy_model": "en_core_web_sm"}, **extra})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("bundle")
    facts = make_bundle(base / "MSRVTT")
    # one test video lost its features: a status row, not a failed build
    with h5py.File(base / "MSRVTT" / "ordered_feature" / "SA" / "resnet152.pth" / "tst_ft.hdf5", "a") as f:
        del f["video16"]
    summary = build_bundle(_cfg(base / "MSRVTT", base / "out"))
    return base, facts, summary, Path(summary["root"])


def test_bundle_build_tables(built):
    base, facts, summary, root = built
    assert {r["stage"] for r in summary["stages"]} == {"ingest", "import-features", "parse", "concepts", "vocab"}
    videos = pq.read_table(root / "videos.parquet").to_pylist()
    split_of = {v["key"]: v["split"] for v in videos}
    for code, split in (("trn", "train"), ("val", "val"), ("tst", "test")):
        assert [v["key"] for v in videos if v["split"] == split] == facts["names"][code]
    caps = pq.read_table(root / "captions.parquet").to_pylist()
    assert len(caps) == sum(SPLITS.values()) * CAPS_PER_VIDEO
    for c in caps:  # sen_id = position in ref_captions' list (HANet's label index)
        assert facts["refs"][c["key"]][c["sen_id"]] == c["caption"] and c["split"] == split_of[c["key"]]

    # role graphs from the bundle's sent2rolegraph (hgr-json), HGR tokens kept
    graphs = pq.read_table(root / "text" / "role_graphs.parquet").to_pylist()
    assert {g["backend"] for g in graphs} == {"hgr-json"} and {g["status"] for g in graphs} == {"ok"}
    g = graphs[0]
    assert [n["role"] for n in g["nodes"]] == ["V", "ARG0", "ARGM-LOC"] and len(g["edges"]) == 2

    # the bundle's vocabulary, ids unchanged (alphabetical there, not by count)
    words = pq.read_table(root / "text" / "words.parquet").to_pylist()
    assert [w["word"] for w in words] == facts["int2word"]
    assert [w["word_id"] for w in words] == list(range(len(facts["int2word"])))
    assert sum(w["train_count"] for w in words) == sum(len(c.split()) for n in facts["names"]["trn"]
                                                      for c in facts["refs"][n])
    with h5py.File(root / "text" / "embeddings.h5") as f:
        assert f["embeddings"].shape[0] == len(facts["int2word"])


def test_bundle_features_imported(built):
    base, facts, summary, root = built
    name = feature_set_name("resnet152.pth")
    assert name == "imported-resnet152" and feature_set_name("RET.public.i3d") == "imported-i3d"
    src_dir = base / "MSRVTT" / "ordered_feature" / "SA" / "resnet152.pth"
    for code, split in (("trn", "train"), ("val", "val"), ("tst", "test")):
        with h5py.File(root / "features" / name / f"{split}.h5") as f, h5py.File(src_dir / f"{code}_ft.hdf5") as s:
            assert set(f) == set(s)
            for k in s:
                np.testing.assert_array_equal(f[k][()], s[k][()])
                assert f[k].dtype == np.float32
            assert f.attrs["source_file"].endswith(f"{code}_ft.hdf5") and int(f.attrs["dim"]) == facts["dim"]
            from pipeline.fingerprint import sha256_file

            assert f.attrs["source_sha256"] == sha256_file(src_dir / f"{code}_ft.hdf5")
            assert f.attrs["extractor"] == name and int(f.attrs["schema_version"]) >= 1
    status = {r["key"]: r for r in pq.read_table(root / "features" / name / "status.parquet").to_pylist()}
    assert len(status) == sum(SPLITS.values())
    assert status["video16"]["status"] == "error" and "video16" in status["video16"]["error_message"]
    assert all(r["status"] == "ok" for k, r in status.items() if k != "video16")
    # the tree is valid: every video has a feature or an error row
    from pipeline.datasets.validate import validate_tree

    report = validate_tree(root)
    assert report.ok, report.format()


def test_bundle_concepts_imported_from_hanet(built):
    base, facts, summary, root = built
    meta = pq.read_schema(root / "text" / "concepts.parquet").metadata
    assert meta[b"concept_source"] == b"hanet-gt"
    concepts = pq.read_table(root / "text" / "concepts.parquet").to_pylist()
    assert [c["lemma"] for c in concepts if c["kind"] == "verb"] == facts["verbs"]
    assert [c["lemma"] for c in concepts if c["kind"] == "noun"] == facts["nouns"]
    caps = {(c["key"], c["sen_id"]): c["caption_id"] for c in pq.read_table(root / "captions.parquet").to_pylist()}
    labels = {r["caption_id"]: r for r in pq.read_table(root / "text" / "caption_labels.parquet").to_pylist()}
    for name in facts["names"]["trn"]:
        for j in range(CAPS_PER_VIDEO):
            lab = labels[caps[(name, j)]]
            assert lab["verb_ids"] == sorted(set(facts["verb_gt"][name][j]))
            assert lab["noun_ids"] == sorted(set(facts["noun_gt"][name][j]))
    # test captions: labelled by our recipe against the imported vocabulary
    name = facts["names"]["tst"][0]
    text = facts["refs"][name][0]
    lab = labels[caps[(name, 0)]]
    assert facts["verbs"].index(VERB_LEMMA[text.split()[3]]) in lab["verb_ids"]
    assert facts["nouns"].index(text.split()[1]) in lab["noun_ids"]


def test_bundle_rebuild_cached_and_concepts_computed_without_hanet_files(built, tmp_path):
    base, facts, summary, root = built
    again = build_bundle(_cfg(base / "MSRVTT", base / "out"))
    assert not any(r["executed"] for r in again["stages"])
    # HGR's bundle (no HANet concept files): concepts computed from train captions, recorded
    make_bundle(tmp_path / "hgr", hanet=False, dim=8)
    s = build_bundle(_cfg(tmp_path / "hgr", tmp_path / "out", concepts={"n_verbs": 3, "n_nouns": 4}))
    meta = pq.read_schema(Path(s["root"]) / "text" / "concepts.parquet").metadata
    assert meta[b"concept_source"] == b"computed"
    lemmas = [c["lemma"] for c in pq.read_table(Path(s["root"]) / "text" / "concepts.parquet").to_pylist()]
    assert len(lemmas) == 7 and {"run", "cook", "sing", "play"} & set(lemmas)
    # the text backend follows an explicit choice (our parser on the bundle's captions)
    from pipeline.datasets.bundle import resolve_config

    own = resolve_config(_cfg(tmp_path / "hgr", tmp_path / "out", text={"backend": "spacy-dep"}))
    assert own.text.backend == "spacy-dep" and own.text.hgr_json is None
    assert resolve_config(_cfg(tmp_path / "hgr", tmp_path / "out")).text.backend == "hgr-json"


def _copy_without(src: Path, dst: Path, rel: str) -> Path:
    shutil.copytree(src, dst)
    target = dst / rel
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    return dst


@pytest.mark.parametrize("rel, named", [
    ("annotation/RET/ref_captions.json", "annotation/RET/ref_captions.json"),
    ("annotation/RET/sent2rolegraph.augment.json", "sent2rolegraph.augment.json"),
    ("annotation/RET/int2word.npy", "int2word.npy"),
    ("public_split/val_names.npy", "public_split/val_names.npy"),
    ("ordered_feature/SA/resnet152.pth/tst_ft.hdf5", "ordered_feature/SA/resnet152.pth/tst_ft.hdf5"),
    ("ordered_feature", "ordered_feature/SA"),
])
def test_bundle_missing_piece_named(built, tmp_path, rel, named):
    base = built[0]
    bad = _copy_without(base / "MSRVTT", tmp_path / "b", rel)
    with pytest.raises(BundleError, match=named.replace(".", r"\.").replace("{", r"\{")):
        build_bundle(_cfg(bad, tmp_path / "out"))
    assert not (tmp_path / "out" / "hgr" / "videos.parquet").exists()  # refused before any work


def test_bundle_malformed_files(built, tmp_path):
    """Each malformed file is named, and refused before any work (no table written)."""
    base = built[0]

    def broken(name: str, rel: str, write) -> Path:
        bad = tmp_path / name
        shutil.copytree(base / "MSRVTT", bad)
        write(bad / rel)
        return bad

    cases = [
        ("annotation/RET/word2int.json", lambda p: p.write_text(json.dumps({"<BOS>": 0})),
         "word2int.json and int2word.npy disagree"),
        ("annotation/RET/ref_captions.json", lambda p: p.write_text("{not json"), "ref_captions.json.*JSON"),
        ("annotation/RET/ref_captions.json", lambda p: p.write_text(json.dumps({"video0": "a man"})),
         "captions of 'video0' must be a list of strings"),
        ("public_split/trn_names.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object)),
         "trn_names.npy: train names is a pickled object array"),
        ("annotation/verb_gt.json", lambda p: p.write_text(json.dumps({"video0": [[0]]})),
         "verb_gt.json: 'video0' has 1 caption label lists, ref_captions.json 3 captions"),
        ("annotation/noun_gt.json", lambda p: p.write_text(json.dumps({"video0": [[0], [99], []]})),
         "noun_gt.json: 'video0' uses concept id 99, beyond the 7 noun concepts"),
    ]
    for i, (rel, write, message) in enumerate(cases):
        bad = broken(f"b{i}", rel, write)
        with pytest.raises(BundleError, match=message):
            build_bundle(_cfg(bad, tmp_path / f"o{i}"))
        if i < 4:
            assert not (tmp_path / f"o{i}" / "hgr" / "videos.parquet").exists(), rel


def test_bundle_train_evaluate_i3d_width(tmp_path):
    """VATEX-style bundle (I3D folder, 1024-d): train 1 epoch and evaluate on the imported features."""
    import torch

    from models.config import HANetConfig
    from pipeline.learn.config import EvalConfig, TrainConfig
    from pipeline.learn.evaluate import run_evaluate
    from pipeline.learn.train import run_train

    make_bundle(tmp_path / "VATEX", dim=1024, feature="RET.public.i3d", seed=1)
    s = build_bundle(_cfg(tmp_path / "VATEX", tmp_path / "out"))
    root = Path(s["root"])
    torch.set_num_threads(1)
    cfg = TrainConfig(hanet=HANetConfig(joint_dim=16, gcn_attn_dim=8, max_frames=6, n_action_clips=2,
                                        n_entity_clips=3), features="imported-i3d", batch_size=8, epochs=1,
                      lr=1e-3, device="cpu", log_every=100)
    res = run_train(root, tmp_path / "run", cfg)
    ck = torch.load(res["paths"]["best"] if "paths" in res else tmp_path / "run" / "best.pt", weights_only=True)
    tcfg = TrainConfig.model_validate_json(ck["config_json"])
    assert tcfg.net.feat_dim == 1024 and tcfg.features == "imported-i3d"
    assert tcfg.net.vocab_size == len(pq.read_table(root / "text" / "words.parquet"))
    assert (tcfg.net.n_verb_concepts, tcfg.net.n_noun_concepts) == (5, 7)
    rep = run_evaluate(tmp_path / "run" / "best.pt", root, EvalConfig(split="test", device="cpu", n_heatmaps=0))
    assert rep["features"] == "imported-i3d"
    assert rep["data_notes"]["videos"] == SPLITS["tst"] and 0 <= rep["rsum"] <= 600


@pytest.mark.slow  # the Prefect test server starts in ~40 s on a loaded 2-core machine (shared by a session)
def test_bundle_through_the_build_flow(built, tmp_path, prefect_server):
    """build-features with format='hgr-bundle': the same shards as build_bundle, cached on rerun;
    a bundle whose features are mostly missing ends Failed with the error kinds."""
    from flows.build import build_features
    from pipeline.stage import BuildFailedError

    base, facts, summary, root = built
    kw = dict(dataset="hgr", dataset_root=str(base / "MSRVTT"), annotation="", out_root=str(tmp_path / "out"),
              format="hgr-bundle", overrides={"text": {"spacy_model": "en_core_web_sm"}})
    s = build_features(**kw)
    assert {r["stage"] for r in s["stages"]} == {"ingest", "import-features", "parse", "concepts", "vocab"}
    assert all(r["status"] == "executed" for r in s["stages"])
    for rel in ("videos.parquet", "captions.parquet", "text/words.parquet", "text/caption_labels.parquet",
                "features/imported-resnet152/status.parquet"):
        got, want = pq.read_table(Path(s["root"]) / rel), pq.read_table(root / rel)
        if "seconds" in want.column_names:  # timings differ
            got, want = got.drop(["seconds"]), want.drop(["seconds"])
        assert got.equals(want), rel
    cfg = json.loads((Path(s["root"]) / "build_config.json").read_text())
    assert cfg["text"]["backend"] == "hgr-json" and not cfg["resnet"]["enabled"] and not cfg["i3d"]["enabled"]
    assert build_features(**kw)["executed"] == 0

    bad = tmp_path / "bad"
    shutil.copytree(base / "MSRVTT", bad)
    for code in ("trn", "val"):
        with h5py.File(bad / "ordered_feature" / "SA" / "resnet152.pth" / f"{code}_ft.hdf5", "w"):
            pass  # emptied: 14 of 19 videos without features
    with pytest.raises(BuildFailedError, match="no feature dataset: 1[45]"):
        build_features(**{**kw, "dataset_root": str(bad), "dataset": "bad"})


GOLDEN = Path(__file__).parent / "fixtures" / "hanet_golden"


def golden_bundle(root: Path) -> dict:
    """The golden fixture's test data (16 videos, 60 captions, role graphs, features and the
    reference's vocabulary, tests/fixtures/hanet_golden: made by Roc-Ng/HANet e679703 itself)
    written as a released bundle: the 16 videos are the test split; 2 + 2 extra videos (reusing
    golden captions) make train/val. HANet's concept files list the golden model's vocabularies."""
    inp = np.load(GOLDEN / "inputs.npz")
    caps = json.loads((GOLDEN / "inputs.json").read_text())["captions"]
    ann = root / "annotation" / "RET"
    ann.mkdir(parents=True)
    (root / "public_split").mkdir()
    fdir = root / "ordered_feature" / "SA" / "resnet152.pth"
    fdir.mkdir(parents=True)
    test = [f"vid{i:02d}" for i in range(len(inp["lengths"]))]
    names = {"trn": ["extra0", "extra1"], "val": ["extra2", "extra3"], "tst": test}
    refs = {k: [] for k in test}
    graphs = {}
    for c in caps:
        refs[test[c["video"]]].append(c["text"])
        graphs[c["text"]] = [c["nodes"], c["edges"]]
    for i, k in enumerate(names["trn"] + names["val"]):
        refs[k] = [caps[i]["text"], caps[i + 4]["text"]]
    rng = np.random.default_rng(0)
    for code, keys in names.items():
        np.save(root / "public_split" / f"{code}_names.npy", np.array(keys))
        with h5py.File(fdir / f"{code}_ft.hdf5", "w") as f:
            for k in keys:
                arr = inp["feats"][test.index(k), :inp["lengths"][test.index(k)]] if k in test else \
                    rng.normal(size=(6, inp["feats"].shape[2]))
                f.create_dataset(k, data=np.asarray(arr, dtype=np.float32))
    (ann / "ref_captions.json").write_text(json.dumps(refs))
    (ann / "sent2rolegraph.augment.json").write_text(json.dumps(graphs))
    shutil.copy(GOLDEN / "int2word.npy", ann / "int2word.npy")
    shutil.copy(GOLDEN / "word2int.json", ann / "word2int.json")
    verbs, nouns = [f"v{i:02d}" for i in range(32)], [f"n{i:02d}" for i in range(64)]
    for kind, lst in (("verb", verbs), ("noun", nouns)):
        (root / "annotation" / f"{kind}_words_freq.json").write_text(json.dumps({w: 1000 - i for i, w in enumerate(lst)}))
        gt = {k: [[(i + j) % len(lst)] for j in range(2)] for i, k in enumerate(names["trn"])}
        (root / "annotation" / f"{kind}_gt.json").write_text(json.dumps(gt))
    (root.parent / "verbs.json").write_text(json.dumps(verbs))
    (root.parent / "nouns.json").write_text(json.dumps(nouns))
    return {"verbs": root.parent / "verbs.json", "nouns": root.parent / "nouns.json"}


def test_reference_checkpoint_on_bundle_reproduces_reference_metrics(tmp_path, one_torch_thread):
    """A Roc-Ng/HANet checkpoint imported onto a bundle build needs no remapping (the build kept
    the bundle's word and concept vocabularies: the import is the identity) and scores exactly
    the metrics the reference code computed on the same data."""
    import torch

    from pipeline.learn.config import EvalConfig
    from pipeline.learn.checkpoint_import import import_checkpoint
    from pipeline.learn.evaluate import run_evaluate

    lists = golden_bundle(tmp_path / "MSRVTT")
    root = Path(build_bundle(_cfg(tmp_path / "MSRVTT", tmp_path / "out"))["root"])
    rep = import_checkpoint("hanet", GOLDEN / "ref_checkpoint.th", tmp_path / "ref.pt", None,
                                      vocab=tmp_path / "MSRVTT" / "annotation" / "RET" / "int2word.npy",
                                      shards=root, verb_concepts=lists["verbs"], noun_concepts=lists["nouns"])
    src = torch.load(GOLDEN / "ref_checkpoint.th", weights_only=True)
    ck = torch.load(tmp_path / "ref.pt", weights_only=True)
    # identity: every embedding row and concept-head row where the reference had it
    assert torch.equal(ck["model"]["text.rnn.embedding.weight"], src["text_encoder"]["embedding.we.weight"])
    assert torch.equal(ck["model"]["video.verb_head.conv.weight"], src["video_encoder"]["classifier_verb.0.weight"])
    assert torch.equal(ck["model"]["video.noun_head.conv.weight"], src["video_encoder"]["classifier_noun.0.weight"])
    assert rep["remap"]["words"]["coverage"] == 1.0
    report = run_evaluate(tmp_path / "ref.pt", root, EvalConfig(device="cpu", n_heatmaps=0,
                                                                  features="imported-resnet152"), tmp_path / "ev")
    golden = json.loads((GOLDEN / "golden.json").read_text())["metrics"]
    names = {"ir1": "t2v_r1", "ir5": "t2v_r5", "ir10": "t2v_r10", "imedr": "t2v_medr", "imeanr": "t2v_meanr",
             "cr1": "v2t_r1", "cr5": "v2t_r5", "cr10": "v2t_r10", "cmedr": "v2t_medr", "cmeanr": "v2t_meanr",
             "rsum": "rsum"}
    for ref_name, ours in names.items():
        assert report["metrics"][ours] == pytest.approx(golden[ref_name], abs=1e-9), ref_name
