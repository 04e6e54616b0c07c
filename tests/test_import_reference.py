"""Importing Roc-Ng/HANet checkpoints (layout rebuilt from the reference's module names)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.batch import ROLES
from models.config import HANetConfig
from models.hanet import HANet
from models.import_reference import REFERENCE_ROLES, map_reference_state_dict
from models.layers import count_parameters
from pipeline.learn.checkpoint_import import import_checkpoint
from pipeline.learn.config import TrainConfig

TINY = dict(feat_dim=16, vocab_size=0, word_dim=8, n_verb_concepts=12, n_noun_concepts=16,
            joint_dim=32, gcn_attn_dim=16, se_reduction=4, n_action_clips=3, n_entity_clips=4,
            max_words=10, max_verbs=2, max_nouns=3, max_frames=12)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_state_dicts(F=2048, D=1024, W=300, vocab=10510, Ka=512, Ke=1024, k=5, r=16,
                          A=512, make=torch.randn):
    """{'video_encoder': ..., 'text_encoder': ...} with the reference's names and shapes.
    The BatchNorms appear twice (bn_x and classifier_x.1 share the tensors, as in a real
    state_dict of the reference)."""
    def bn(n):
        return {"weight": make(n), "bias": make(n), "running_mean": make(n),
                "running_var": make(n).abs() + 0.1, "num_batches_tracked": torch.tensor(7)}

    def put(sd, prefix, d):
        sd.update({f"{prefix}.{k_}": v for k_, v in d.items()})

    video: dict[str, torch.Tensor] = {}
    for i in range(3):
        put(video, f"level_embeds.{i}", {"weight": make(D, F), "bias": make(D)})
    put(video, "ft_attn", {"weight": make(1, D), "bias": make(1)})
    bv, bnn = bn(Ka), bn(Ke)
    put(video, "bn_verb", bv)
    put(video, "bn_noun", bnn)
    put(video, "classifier_verb.0", {"weight": make(Ka, D, k), "bias": make(Ka)})
    put(video, "classifier_verb.1", bv)
    put(video, "classifier_noun.0", {"weight": make(Ke, D, 1), "bias": make(Ke)})
    put(video, "classifier_noun.1", bnn)
    for s in ("seblock1", "seblock2"):
        put(video, f"{s}.fc", {"0.weight": make(D // r, D), "2.weight": make(D, D // r)})
    for c in ("conv1", "conv2"):
        put(video, f"{c}.0", {"weight": make(D, D, 1), "bias": make(D)})

    text: dict[str, torch.Tensor] = {"embedding.we.weight": make(vocab, W)}
    for sfx in ("", "_reverse"):
        put(text, "rnn", {f"weight_ih_l0{sfx}": make(3 * D, W), f"weight_hh_l0{sfx}": make(3 * D, D),
                          f"bias_ih_l0{sfx}": make(3 * D), f"bias_hh_l0{sfx}": make(3 * D)})
    put(text, "ft_attn", {"weight": make(1, D), "bias": make(1)})
    text["role_embedding.weight"] = make(16, D)
    put(text, "gcn.layers.0", {"ctx_layer.weight": make(D, D), "layernorm.weight": make(D),
                               "layernorm.bias": make(D), "edge_attn_query.weight": make(A, D),
                               "edge_attn_query.bias": make(A), "edge_attn_key.weight": make(A, D),
                               "edge_attn_key.bias": make(A)})
    tv, tn = bn(Ka), bn(Ke)
    put(text, "bn_verb", tv)
    put(text, "bn_noun", tn)
    put(text, "classifier_verb.0", {"weight": make(Ka, D, 1), "bias": make(Ka)})
    put(text, "classifier_verb.1", tv)
    put(text, "classifier_noun.0", {"weight": make(Ke, D, 1), "bias": make(Ke)})
    put(text, "classifier_noun.1", tn)
    put(text, "fc", {"weight": make(D, D), "bias": make(D)})
    return {"video_encoder": video, "text_encoder": text}


def tiny_reference():
    torch.manual_seed(0)
    return reference_state_dicts(F=16, D=32, W=8, vocab=40, Ka=12, Ke=16, k=5, r=4, A=16)


def test_reference_layout_counts_at_default_size():
    """85 entries; 28,376,170 trainable of which 3,148,800 unused -> ours = the rest."""
    src = reference_state_dicts(make=lambda *s: torch.zeros(*s))
    model = HANet(HANetConfig(vocab_size=10510))
    sd, rep = map_reference_state_dict(src, model)
    assert rep.n_source_entries == 85
    assert rep.dropped_unused_params == 3_148_800
    assert sorted(rep.dropped_unused) == sorted(
        ["video_encoder.conv1.0.weight", "video_encoder.conv1.0.bias", "video_encoder.conv2.0.weight",
         "video_encoder.conv2.0.bias", "text_encoder.fc.weight", "text_encoder.fc.bias"])
    assert len(rep.duplicates) == 20  # 2 encoders x 2 BNs x 5 entries
    assert rep.ok, rep
    assert set(sd) == set(model.state_dict())
    assert rep.n_params_loaded == count_parameters(model) == 25_227_370
    assert rep.n_params_loaded + rep.dropped_unused_params == 28_376_170
    assert rep.role_rows_permuted


def test_import_roundtrip_tensors_equal(tmp_path):
    src = tiny_reference()
    src_path, dst_path = tmp_path / "epoch.3.th", tmp_path / "imported.pt"
    torch.save(src, src_path)
    cfg = HANetConfig(**TINY)
    report = import_checkpoint("hanet", src_path, dst_path, cfg)
    assert report["ok"] and report["hanet_config"]["vocab_size"] == 40
    ck = torch.load(dst_path, map_location="cpu", weights_only=True)
    assert ck["model_name"] == "hanet"
    tcfg = TrainConfig.model_validate_json(ck["config_json"])
    assert tcfg.net.vocab_size == 40
    model = HANet(tcfg.net)
    model.load_state_dict(ck["model"], strict=True)
    ours = model.state_dict()
    v, t = src["video_encoder"], src["text_encoder"]
    expect = {
        "video.fc_event.weight": v["level_embeds.0.weight"],
        "video.fc_action.bias": v["level_embeds.1.bias"],
        "video.fc_entity.weight": v["level_embeds.2.weight"],
        "video.attn_pool.proj.weight": v["ft_attn.weight"],
        "video.verb_head.conv.weight": v["classifier_verb.0.weight"],
        "video.verb_head.bn.running_var": v["bn_verb.running_var"],
        "video.verb_head.bn.num_batches_tracked": v["bn_verb.num_batches_tracked"],
        "video.noun_head.conv.bias": v["classifier_noun.0.bias"],
        "video.noun_head.bn.weight": v["bn_noun.weight"],
        "video.se_action.fc1.weight": v["seblock1.fc.0.weight"],
        "video.se_action.fc2.weight": v["seblock1.fc.2.weight"],
        "video.se_entity.fc1.weight": v["seblock2.fc.0.weight"],
        "text.rnn.embedding.weight": t["embedding.we.weight"],
        "text.rnn.gru.weight_hh_l0": t["rnn.weight_hh_l0"],
        "text.rnn.gru.bias_ih_l0_reverse": t["rnn.bias_ih_l0_reverse"],
        "text.attn_pool.proj.bias": t["ft_attn.bias"],
        "text.gcn.ctx.weight": t["gcn.layers.0.ctx_layer.weight"],
        "text.gcn.norm.bias": t["gcn.layers.0.layernorm.bias"],
        "text.gcn.query.weight": t["gcn.layers.0.edge_attn_query.weight"],
        "text.gcn.key.bias": t["gcn.layers.0.edge_attn_key.bias"],
        "text.verb_head.conv.weight": t["classifier_verb.0.weight"],
        "text.noun_head.bn.running_mean": t["bn_noun.running_mean"],
    }
    for k, want in expect.items():
        assert torch.equal(ours[k], want), k
    # every imported tensor equals its source tensor (role rows re-ordered by name)
    for ours_key, src_key in report["loaded"].items():
        enc, _, name = src_key.partition(".")
        want = src[enc][name]
        if ours_key == "text.role_embedding.weight":
            want = want[[REFERENCE_ROLES.index(r) for r in ROLES]]
        assert torch.equal(ours[ours_key], want), ours_key
    role = ours["text.role_embedding.weight"]
    assert torch.equal(role[ROLES.index("ARG0")], t["role_embedding.weight"][2])
    assert torch.equal(role[ROLES.index("ARG1")], t["role_embedding.weight"][1])
    assert set(report["loaded"]) == set(ours)


def test_flat_prefixed_layout_and_cli(tmp_path, capsys):
    src = tiny_reference()
    flat = {f"{enc}.{k}": v for enc, sd in src.items() for k, v in sd.items()}
    torch.save(flat, tmp_path / "flat.th")
    (tmp_path / "cfg.json").write_text(HANetConfig(**TINY).model_dump_json())
    from flows import cli

    rc = cli.main(["import-checkpoint", str(tmp_path / "flat.th"), str(tmp_path / "out.pt"), "--config",
                   str(tmp_path / "cfg.json")])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] and summary["n_source_entries"] == 85
    # the CLI's checkpoint holds exactly what the nested layout imports to, tensor for tensor
    torch.save(src, tmp_path / "nested.th")
    import_checkpoint("hanet", tmp_path / "nested.th", tmp_path / "nested.pt", HANetConfig(**TINY))
    got, want = (torch.load(tmp_path / f, map_location="cpu", weights_only=True) for f in ("out.pt", "nested.pt"))
    assert got["model_name"] == "hanet" and set(got["model"]) == set(want["model"])
    for k, v in want["model"].items():
        assert torch.equal(got["model"][k], v), k
    assert got["model"]["video.fc_event.weight"].equal(src["video_encoder"]["level_embeds.0.weight"])


def test_mismatched_config_is_reported(tmp_path):
    src = tiny_reference()
    torch.save(src, tmp_path / "r.th")
    with pytest.raises(ValueError, match="shape_errors"):
        import_checkpoint("hanet", tmp_path / "r.th", None, HANetConfig(**{**TINY, "verb_kernel": 3}))
    rep = import_checkpoint("hanet", tmp_path / "r.th", None, HANetConfig(**{**TINY, "verb_kernel": 3}),
                                      strict=False)
    assert any("classifier_verb.0.weight" in e for e in rep["shape_errors"])
    rep = import_checkpoint("hanet", tmp_path / "r.th", None, HANetConfig(**{**TINY, "use_seme": False}),
                                      strict=False)
    assert "video_encoder.seblock1.fc.0.weight" in rep["dropped_by_config"]
    assert "video.local_fc_action.weight" in rep["missing"]


def test_loading_uses_weights_only(tmp_path, monkeypatch):
    torch.save(tiny_reference(), tmp_path / "r.th")
    seen = {}
    real = torch.load

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    import_checkpoint("hanet", tmp_path / "r.th", None, HANetConfig(**TINY))
    assert seen.get("weights_only") is True


def test_unknown_entries_are_reported():
    src = tiny_reference()
    src["video_encoder"]["mystery.weight"] = torch.zeros(3)
    model = HANet(HANetConfig(**{**TINY, "vocab_size": 40}))
    _, rep = map_reference_state_dict(src, model)
    assert rep.unexpected == ["video_encoder.mystery.weight"] and not rep.ok


# ----------------------------------------------------------------------------- golden checkpoint, shards, CLI
GOLDEN = Path(__file__).parent / "fixtures" / "hanet_golden"
REF_VERBS = [f"v{i:02d}" for i in range(32)]  # the golden model's concept vocabularies, reference order
REF_NOUNS = [f"n{i:02d}" for i in range(64)]
METRIC_NAMES = {"ir1": "t2v_r1", "ir5": "t2v_r5", "ir10": "t2v_r10", "imedr": "t2v_medr", "imeanr": "t2v_meanr",
                "cr1": "v2t_r1", "cr5": "v2t_r5", "cr10": "v2t_r10", "cmedr": "v2t_medr", "cmeanr": "v2t_meanr",
                "rsum": "rsum"}


def write_golden_shards(root: Path, seed: int = 0, drop_words: int = 0) -> dict:
    """A shard tree (storage writers) whose content equals the golden fixture's inputs: the 16
    videos' frames, the 60 captions and their role graphs. The build's word and concept
    vocabularies are shuffled relative to the reference's (plus words the reference lacks),
    so the import must remap rows. Returns the paths of the reference's concept lists."""
    from storage.features import write_features
    from storage.tables import write_table

    rng = np.random.default_rng(seed)
    inp = np.load(GOLDEN / "inputs.npz")
    caps = json.loads((GOLDEN / "inputs.json").read_text())["captions"]
    keys = [f"vid{i:02d}" for i in range(len(inp["lengths"]))]
    write_table(root / "captions.parquet", "captions", [
        {"caption_id": j, "key": keys[c["video"]], "sen_id": j, "split": "test", "caption": c["text"]}
        for j, c in enumerate(caps)])
    write_features(root / "features" / "resnet152" / "test.h5",
                   {k: inp["feats"][i, :n] for i, (k, n) in enumerate(zip(keys, inp["lengths"]))},
                   {"extractor": "golden"})
    rows = []
    for j, c in enumerate(caps):
        names = list(c["nodes"])
        rows.append({"caption_id": j, "key": keys[c["video"]], "split": "test", "status": "ok", "error_message": None,
                     "backend": "hgr-json", "tokens": c["text"].split(), "fallback": False,
                     "nodes": [{"role": c["nodes"][n]["role"], "spans": c["nodes"][n]["spans"], "words": ""}
                               for n in names],
                     "edges": [{"src": names.index(s), "dst": names.index(d), "role": r} for s, d, r in c["edges"]]})
    write_table(root / "text" / "role_graphs.parquet", "role_graphs", rows)
    ref_words = [str(w) for w in np.load(GOLDEN / "int2word.npy")]
    oov = sorted({w for c in caps for w in c["text"].split()} - set(ref_words))
    words = list(rng.permutation(ref_words[3 + drop_words:] + oov + ["extra-word"]))
    words = ["<bos>", "<eos>", "<unk>"] + [str(w) for w in words]
    write_table(root / "text" / "words.parquet", "words", [
        {"word_id": i, "word": w, "train_count": 1, "in_embeddings": False} for i, w in enumerate(words)])
    concepts = [{"kind": kind, "concept_id": i, "lemma": str(w), "train_count": 1}
                for kind, lst in (("verb", REF_VERBS), ("noun", REF_NOUNS)) for i, w in enumerate(rng.permutation(lst))]
    write_table(root / "text" / "concepts.parquet", "concepts", concepts)
    (root.parent / "verbs.json").write_text(json.dumps(REF_VERBS))
    (root.parent / "nouns.json").write_text(json.dumps(REF_NOUNS))
    return {"verbs": root.parent / "verbs.json", "nouns": root.parent / "nouns.json", "words": words}


def test_import_writes_a_checkpoint_storage_accepts(tmp_path):
    """`vtr import-checkpoint` used to write no format_version (evaluate: 'checkpoint format None')."""
    from storage.checkpoints import CHECKPOINT_FORMAT, load_checkpoint

    torch.save(tiny_reference(), tmp_path / "r.th")
    import_checkpoint("hanet", tmp_path / "r.th", tmp_path / "out.pt", HANetConfig(**TINY))
    ck = load_checkpoint(tmp_path / "out.pt")
    assert ck["format_version"] == CHECKPOINT_FORMAT
    cfg = TrainConfig.model_validate_json(ck["config_json"]).net
    assert cfg.fidelity == "reference" and json.loads(ck["fidelity_json"])["verb_clips"] == "reference"
    assert ck["vocab"]["words"] is None  # not remapped for any build
    rep = import_checkpoint("hanet", tmp_path / "r.th", None, HANetConfig(**TINY), fidelity="improved")
    assert rep["fidelity"]["padding"] == "masked"


def test_vocabulary_remap_and_concept_permutation(tmp_path):
    root = tmp_path / "golden"
    paths = write_golden_shards(root)
    rep = import_checkpoint("hanet", GOLDEN / "ref_checkpoint.th", tmp_path / "o.pt", None,
                                      vocab=GOLDEN / "int2word.npy", shards=root,
                                      verb_concepts=paths["verbs"], noun_concepts=paths["nouns"])
    src = torch.load(GOLDEN / "ref_checkpoint.th", weights_only=True)
    ck = torch.load(tmp_path / "o.pt", weights_only=True)
    ref_words = [str(w) for w in np.load(GOLDEN / "int2word.npy")]
    emb, ref_emb = ck["model"]["text.rnn.embedding.weight"], src["text_encoder"]["embedding.we.weight"]
    assert emb.shape[0] == len(paths["words"])
    for i, w in enumerate(paths["words"]):
        j = i if i < 3 else (ref_words.index(w) if w in ref_words else 2)  # missing -> reference UNK row
        assert torch.equal(emb[i], ref_emb[j]), w
    n_missing = sum(w not in ref_words for w in paths["words"][3:])
    assert rep["remap"]["words"]["found_in_reference"] == len(paths["words"]) - 3 - n_missing
    assert rep["remap"]["words"]["coverage"] == pytest.approx(1 - n_missing / (len(paths["words"]) - 3))
    from pipeline.learn.import_vocab import shard_vocabularies

    build_verbs = shard_vocabularies(root)["verb"]
    w, ref_w = ck["model"]["video.verb_head.conv.weight"], src["video_encoder"]["classifier_verb.0.weight"]
    rv, ref_rv = ck["model"]["text.verb_head.bn.running_var"], src["text_encoder"]["bn_verb.running_var"]
    for i, lemma in enumerate(build_verbs):
        assert torch.equal(w[i], ref_w[REF_VERBS.index(lemma)])
        assert torch.equal(rv[i], ref_rv[REF_VERBS.index(lemma)])
    with pytest.raises(ValueError, match="not in the reference"):
        import_checkpoint("hanet", GOLDEN / "ref_checkpoint.th", None, None, vocab=GOLDEN / "int2word.npy",
                                    shards=root, verb_concepts=paths["verbs"], noun_concepts=paths["verbs"])


def test_evaluation_refuses_unmapped_or_foreign_vocabularies(tmp_path):
    from pipeline.learn.config import EvalConfig
    from pipeline.learn.evaluate import VocabularyMismatch, run_evaluate

    root = tmp_path / "golden"
    paths = write_golden_shards(root)
    cfg = EvalConfig(device="cpu", n_heatmaps=0)
    # imported without any remap: refused, naming the fix
    import_checkpoint("hanet", GOLDEN / "ref_checkpoint.th", tmp_path / "plain.pt", None)
    with pytest.raises(VocabularyMismatch, match="not remapped.*--vocab"):
        run_evaluate(tmp_path / "plain.pt", root, cfg, tmp_path / "ev")
    # remapped for these shards: accepted, and the reference's metrics come out
    import_checkpoint("hanet", GOLDEN / "ref_checkpoint.th", tmp_path / "m.pt", None, vocab=GOLDEN / "int2word.npy",
                                shards=root, verb_concepts=paths["verbs"], noun_concepts=paths["nouns"])
    report = run_evaluate(tmp_path / "m.pt", root, cfg, tmp_path / "ev")
    golden = json.loads((GOLDEN / "golden.json").read_text())["metrics"]
    for ref_name, ours in METRIC_NAMES.items():
        assert report["metrics"][ours] == pytest.approx(golden[ref_name], abs=1e-9), ref_name
    assert report["fidelity"]["fidelity"] == "reference" and report["vocab_check"]["checked"]
    # the same checkpoint on shards with another word list: refused
    other = tmp_path / "other" / "golden"
    write_golden_shards(other, seed=1)
    with pytest.raises(VocabularyMismatch, match="word vocabulary"):
        run_evaluate(tmp_path / "m.pt", other, cfg, tmp_path / "ev2")
    # same words, verb concepts in another order: refused too
    from storage.tables import write_table

    same = tmp_path / "same" / "golden"
    write_golden_shards(same, seed=0)
    write_table(same / "text" / "concepts.parquet", "concepts",
                [{"kind": "verb", "concept_id": i, "lemma": w, "train_count": 1} for i, w in enumerate(REF_VERBS[::-1])]
                + [{"kind": "noun", "concept_id": i, "lemma": w, "train_count": 1} for i, w in enumerate(REF_NOUNS)])
    with pytest.raises(VocabularyMismatch, match="verb concept") as err:
        run_evaluate(tmp_path / "m.pt", same, cfg, tmp_path / "ev3")
    assert "word vocabulary" not in str(err.value)


def test_cli_import_then_evaluate_reproduces_reference_metrics(prefect_server, tmp_path):
    """`vtr import-checkpoint` + `vtr evaluate` end to end on shards equal to the golden inputs."""
    from flows.cli import main as vtr

    out_root = tmp_path / "out"
    paths = write_golden_shards(out_root / "golden")
    dst = tmp_path / "imported.pt"
    assert vtr(["import-checkpoint", str(GOLDEN / "ref_checkpoint.th"), str(dst), "--vocab",
                str(GOLDEN / "int2word.npy"), "--shards", str(out_root / "golden"),
                "--verb-concepts", str(paths["verbs"]), "--noun-concepts", str(paths["nouns"])]) == 0
    assert vtr(["evaluate", str(dst), "--dataset", "golden", "--out-root", str(out_root), "--split", "test"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    golden = json.loads((GOLDEN / "golden.json").read_text())["metrics"]
    for ref_name, ours in METRIC_NAMES.items():
        assert report["metrics"][ours] == pytest.approx(golden[ref_name], abs=1e-9), ref_name


def test_hanet_frequency_files_are_concept_lists(tmp_path):
    """HANet's {verb,noun}_words_freq.json is {lemma: count}, most frequent first, and lists
    more lemmas than the head holds: ids are file positions, truncated to the head's rows."""
    from pipeline.learn.import_vocab import read_concept_list

    root = tmp_path / "golden"
    paths = write_golden_shards(root)
    counts = {w: 1000 - i for i, w in enumerate(REF_VERBS + ["rare-a", "rare-b"])}  # counts, not ids
    (tmp_path / "verb_words_freq.json").write_text(json.dumps(counts))
    nouns = {w: 500 - i for i, w in enumerate(REF_NOUNS + ["rare-n"])}
    (tmp_path / "noun_words_freq.json").write_text(json.dumps(nouns))
    assert read_concept_list(tmp_path / "verb_words_freq.json")[:32] == REF_VERBS
    assert read_concept_list(paths["verbs"]) == REF_VERBS  # a plain list is unchanged
    (tmp_path / "ids.json").write_text(json.dumps({w: i for i, w in enumerate(reversed(REF_VERBS))}))
    assert read_concept_list(tmp_path / "ids.json") == REF_VERBS[::-1]  # {lemma: id} still an id map
    via_freq = import_checkpoint("hanet", GOLDEN / "ref_checkpoint.th", tmp_path / "f.pt", None,
                                           vocab=GOLDEN / "int2word.npy", shards=root,
                                           verb_concepts=tmp_path / "verb_words_freq.json",
                                           noun_concepts=tmp_path / "noun_words_freq.json")
    via_list = import_checkpoint("hanet", GOLDEN / "ref_checkpoint.th", tmp_path / "l.pt", None,
                                           vocab=GOLDEN / "int2word.npy", shards=root,
                                           verb_concepts=paths["verbs"], noun_concepts=paths["nouns"])
    assert via_freq["remap"]["verb"] == via_list["remap"]["verb"]
    a, b = torch.load(tmp_path / "f.pt", weights_only=True), torch.load(tmp_path / "l.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
