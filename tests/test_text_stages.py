"""The three text stages end to end on a tiny shard, hostile captions included.

Needs the spaCy model and WordNet (make setup); when missing these tests FAIL
with the set-up command.
"""
from __future__ import annotations

import json

import h5py
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConceptConfig, TextConfig, VocabConfig
from pipeline.text.parse import (CAPTIONS, EMBEDDINGS, ROLE_GRAPHS, TOKENS, WORDS, clean_text,
                                 prepare_caption, run_concepts, run_parse, run_vocab, safe_pipe)
from storage.tables import write_table

HOSTILE = {
    "empty": "",
    "blank": " \t\n\x00\x07 ",
    "long": "a man walks " + "very " * 10_000 + "slowly",
    "cjk": "一个男人在厨房里做饭",
    "control": "a man\x00 is\u200b cooking\x1b pasta",
    "html": "<b>a woman</b> is slicing bread &amp; cheese",
}
NORMAL = [
    ("v1", "train", "a woman is cooking pasta in a kitchen"),
    ("v1", "train", "men are riding horses on the beach"),
    ("v2", "train", "a man drives a red car down the road"),
    ("v2", "val", "a dog running in the park"),
    ("v3", "test", "the man is happy"),
]


def caption_rows():
    rows = [(k, s, c) for k, s, c in NORMAL] + [("v9", "train", c) for c in HOSTILE.values()]
    return [{"caption_id": 100 + i, "key": k, "sen_id": i, "split": s, "caption": c}
            for i, (k, s, c) in enumerate(rows)]


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    root = tmp_path_factory.mktemp("shard")
    write_table(root / CAPTIONS, "captions", caption_rows())
    return root, run_parse(root, TextConfig())


def by_caption(path):
    return {r["caption_id"]: r for r in pq.read_table(path).to_pylist()}


def test_parse_outputs_readable_with_pyarrow_alone(shard):
    root, result = shard
    assert result.outputs == [TOKENS, ROLE_GRAPHS]
    tokens, graphs = by_caption(root / TOKENS), by_caption(root / ROLE_GRAPHS)
    assert set(tokens) == set(graphs) == {r["caption_id"] for r in caption_rows()}
    for cid, row in graphs.items():
        assert row["tokens"] == tokens[cid]["tokens"], "spans index the same token list in both tables"
        assert len(tokens[cid]["pos"]) == len(tokens[cid]["lemmas"]) == len(row["tokens"])
        for node in row["nodes"]:
            assert node["words"] == " ".join(row["tokens"][i] for i in node["spans"])
    assert graphs[100]["backend"] == "spacy-dep"
    assert tokens[101]["lemmas"] == ["man", "be", "ride", "horse", "on", "the", "beach"]


def test_parse_counts_and_statuses(shard):
    root, result = shard
    status = {r["caption"]: g["status"] for r, g in zip(caption_rows(), pq.read_table(root / ROLE_GRAPHS).to_pylist())}
    assert status[HOSTILE["empty"]] == status[HOSTILE["blank"]] == "empty"
    assert status[HOSTILE["long"]] == "truncated"
    assert status[HOSTILE["cjk"]] == status[HOSTILE["control"]] == status[HOSTILE["html"]] == "ok"
    c = result.counts
    assert (c["captions"], c["empty"], c["truncated"], c["errors"]) == (11, 2, 1, 0)
    assert c["ok"] == 8 and c["fallback"] >= 1 and c["verbs"] >= 4


def test_hostile_text_is_cleaned_for_parsing_only(shard):
    root, _ = shard
    graphs = by_caption(root / ROLE_GRAPHS)
    control = graphs[100 + len(NORMAL) + 4]
    assert control["tokens"] == ["a", "man", "is", "cooking", "pasta"]
    html = graphs[100 + len(NORMAL) + 5]
    assert "<b>" not in " ".join(html["tokens"]) and "&" in html["tokens"]
    long = graphs[100 + len(NORMAL) + 2]
    assert len(long["tokens"]) == TextConfig().max_caption_words
    stored = pq.read_table(root / CAPTIONS).column("caption").to_pylist()
    assert stored == [r["caption"] for r in caption_rows()], "raw captions untouched"


def test_concepts_and_vocab_after_parse(shard):
    root, _ = shard
    concepts = run_concepts(root, ConceptConfig())
    lemmas = {r["lemma"] for r in pq.read_table(root / "text/concepts.parquet").to_pylist()}
    assert {"cook", "ride", "drive", "woman", "man", "horse"} <= lemmas
    assert "dog" not in lemmas and "park" not in lemmas  # val caption only
    assert concepts.counts["train_captions"] == 9
    result = run_vocab(root, VocabConfig(random_dim=16))
    words = [r["word"] for r in pq.read_table(root / WORDS).to_pylist()]
    assert words[:3] == ["<bos>", "<eos>", "<unk>"] and "dog" not in words and "woman" in words
    with h5py.File(root / EMBEDDINGS, "r") as f:
        assert f["embeddings"].shape == (len(words), 16)
    assert result.counts["words"] == len(words)


def test_hgr_json_backend(tmp_path):
    words = "a man is riding a horse".split()
    graphs = {"a man is riding a horse": [
        {"ROOT": {"words": words, "spans": list(range(6)), "role": "ROOT"},
         "1": {"role": "V", "spans": [3], "words": ["riding"]},
         "2": {"role": "ARG0", "spans": [0, 1], "words": ["a", "man"]},
         "3": {"role": "ARG1", "spans": [4, 5], "words": ["a", "horse"]}},
        [["1", "2", "ARG0"], ["1", "3", "ARG1"]]]}
    path = tmp_path / "sent2rolegraph.augment.json"
    path.write_text(json.dumps(graphs))
    rows = [{"caption_id": 1, "key": "v1", "sen_id": 0, "split": "train", "caption": "A man is riding a horse "},
            {"caption_id": 2, "key": "v1", "sen_id": 1, "split": "train", "caption": "a cat sleeps"}]
    write_table(tmp_path / CAPTIONS, "captions", rows)
    result = run_parse(tmp_path, TextConfig(backend="hgr-json", hgr_json=str(path)))
    got = by_caption(tmp_path / ROLE_GRAPHS)
    assert got[1]["status"] == "ok" and got[1]["backend"] == "hgr-json" and got[1]["tokens"] == words
    nodes = [(n["role"], n["words"]) for n in got[1]["nodes"]]
    assert nodes == [("V", "riding"), ("ARG0", "a man"), ("ARG1", "a horse")]
    assert got[1]["edges"] == [{"src": 0, "dst": 1, "role": "ARG0"}, {"src": 0, "dst": 2, "role": "ARG1"}]
    assert (got[2]["status"], got[2]["error_message"], got[2]["nodes"]) == ("error", "not in hgr json", [])
    assert by_caption(tmp_path / TOKENS)[1]["pos"][3] == "VBG"  # spaCy tags HGR's tokens
    assert result.counts["errors"] == 1


def test_prepare_caption_caps_and_cleaning():
    cfg = TextConfig(max_caption_words=3, max_caption_chars=8)
    assert prepare_caption(None, cfg).status == "empty"
    p = prepare_caption("one two three four", cfg)
    assert (p.text, p.status) == ("one two", "truncated") and "4 words" in p.message
    assert clean_text("a\x00b\u200bc  <i>d</i> &lt;e&gt;") == "a b c d <e>"
    assert clean_text("<i>d</i>", strip_html=False) == "<i>d</i>"


class FlakyNlp:
    """Stands in for a spaCy pipeline that fails on one text."""

    def __call__(self, text):
        if "BOOM" in text:
            raise RuntimeError("tokenizer exploded")
        return text.upper()

    def pipe(self, texts, batch_size, n_process=1):
        texts = list(texts)
        for start in range(0, len(texts), batch_size):
            batch = [self(t) for t in texts[start:start + batch_size]]
            yield from batch


def test_safe_pipe_isolates_a_failing_caption():
    texts = ["a", "b", "c", "BOOM", "d", "e", "f"]
    out = list(safe_pipe(FlakyNlp(), texts, batch_size=2))
    assert out[:3] == ["A", "B", "C"] and out[4:] == ["D", "E", "F"]
    assert isinstance(out[3], RuntimeError)
