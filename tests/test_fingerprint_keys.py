"""One fingerprint module, same keys: every helper in pipeline/fingerprint.py gives, for the fixed inputs of
tests/_fingerprint_inputs.py, exactly the keys the helpers gave at their old homes (fixtures/fingerprint_keys/
fingerprint_keys.json, written by the OLD code: its "_note" names the commit, make_fingerprint_keys.py how).

A cache key that changes silently re-runs every cached stage of every user's tree (or, worse, one that
stops changing serves stale outputs), so a refactor of these helpers must keep them byte-identical. The
planted-tree keys also depend on pipeline/datasets/planted.py and the storage writers: a deliberate change
there means re-recording those two entries (and saying so), not editing them by hand.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import fingerprint as fp
from pipeline.search.encode import read_vocabularies
from pipeline.video.shards import ShardSpec
from storage.index import safe_name
from tests import _fingerprint_inputs as inp

OLD = json.loads((Path(__file__).parent / "fixtures" / "fingerprint_keys" / "fingerprint_keys.json").read_text())


def _json(x):
    return json.loads(json.dumps(x))  # tuples -> lists, as the fixture stores them


def test_fixture_comes_from_the_old_code():
    assert "145a26f" in OLD["_note"] and "before the move" in OLD["_note"]


def test_stable_hash():
    assert {f"{k}/{n}": fp.stable_hash(o, n) for k, o in inp.OBJECTS.items() for n in inp.HASH_LENGTHS} \
        == OLD["stable_hash"]
    assert {k: fp.stable_hash(o) for k, o in inp.OBJECTS.items()} == OLD["stable_hash_default"]


def test_file_hashes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the inputs' paths are relative: the same strings on every machine
    files = inp.write_files(Path("files"))
    assert {k: fp.sha256_file(p) for k, p in files.items() if k != "missing"} == OLD["sha256_file"]
    assert fp.sha256_file(files["big"], chunk=7) == OLD["sha256_file_chunk7"]
    assert {k: fp.file_fingerprint(p) for k, p in files.items()} == OLD["file_fingerprint"]
    assert {k: fp.content_fingerprint(p) for k, p in files.items()} == OLD["content_fingerprint"]


def test_code_fingerprints(tmp_path):
    root = inp.write_code_tree(tmp_path)
    assert {n: sorted(fp.module_closure([n], root)) for n in ("pipeline.a", "pipeline.sub.c")} == OLD["module_closure"]
    assert {n: fp.code_fingerprint([n], root) for n in ("pipeline.a", "pipeline.b", "storage.d")} \
        == OLD["code_fingerprint"]
    assert fp.code_fingerprint(["pipeline.b", "storage.d"], root) == OLD["code_fingerprint_multi"]


def test_stage_keys(tmp_path, monkeypatch):
    assert {k: fp.stage_key(*args) for k, args in inp.STAGE_KEY_CASES.items()} == OLD["stage_key"]
    assert fp.multi_stage_key("shard-00001", inp.MULTI_PLANS) == OLD["multi_stage_key"]["shard"]
    assert fp.multi_stage_key(None, inp.MULTI_PLANS[:1]) == OLD["multi_stage_key"]["none"]
    monkeypatch.chdir(tmp_path)
    assert fp.shard_fingerprint(ShardSpec(**inp.shard_spec_fields(Path("shard-files")))) == OLD["shard_fingerprint"]


def test_weights_and_file_names():
    pytest.importorskip("torch")
    assert fp.state_dict_sha256(inp.tiny_module()) == OLD["state_dict_sha256"]
    assert {k: safe_name(k) for k in inp.SAFE_NAME_KEYS} == OLD["safe_name"]


def test_vocabulary_fingerprint_of_recorded_vocabularies():
    v = OLD["vocabulary_inputs"]
    assert fp.vocabulary_fingerprint(v["words"], v["concepts"]) == OLD["vocabulary_fingerprint"]


def test_planted_tree_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = inp.planted_tree(Path("planted"))
    assert {ex: fp.data_fingerprint(tree, ex) for ex in ("resnet152", "i3d_r50")} == OLD["data_fingerprint"]
    assert fp.built_data_fingerprint(tree, "resnet152") == OLD["built_data_fingerprint"]
    words, concepts = read_vocabularies(tree)
    assert _json([words, concepts]) == [OLD["vocabulary_inputs"]["words"], OLD["vocabulary_inputs"]["concepts"]]
    assert fp.vocabulary_fingerprint(words, concepts) == OLD["vocabulary_fingerprint"]
    with pytest.raises(FileNotFoundError, match="no committed stages"):
        fp.built_data_fingerprint(tmp_path / "empty", "resnet152")
