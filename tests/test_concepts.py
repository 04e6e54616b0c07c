"""Concept vocabularies: filtering, lemmas, train-only counts, top-K ties, labels.

run_concepts reads only text/tokens.parquet, so these tests write that table
by hand (no spaCy). WordNet is needed (scripts/setup_wordnet.sh).
"""
from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipeline.config import ConceptConfig
from pipeline.text import resources
from pipeline.text.concepts import caption_concepts, top_k
from pipeline.text.lemmas import WordNetLemmas
from pipeline.text.parse import CAPTION_LABELS, CONCEPTS, TOKENS, VIDEO_LABELS, run_concepts
from storage.tables import write_table


def tok_row(cid, key, split, tagged, status="ok"):
    words = [w for w, _ in tagged]
    return {"caption_id": cid, "key": key, "split": split, "status": status, "error_message": None,
            "tokens": words, "pos": [t for _, t in tagged], "lemmas": [w.lower() for w in words]}


ROWS = [
    # v1 (train): men riding horses; a man rides a horse
    tok_row(0, "v1", "train", [("Men", "NNS"), ("are", "VBP"), ("riding", "VBG"), ("horses", "NNS"), (".", ".")]),
    tok_row(1, "v1", "train", [("a", "DT"), ("man", "NN"), ("rides", "VBZ"), ("a", "DT"), ("horse", "NN")]),
    # v2 (train): the sun shines on the water; he's cooking
    tok_row(2, "v2", "train", [("the", "DT"), ("sun", "NN"), ("shines", "VBZ"), ("on", "IN"), ("the", "DT"),
                               ("water", "NN")]),
    tok_row(3, "v2", "train", [("he", "PRP"), ("'s", "VBZ"), ("cooking", "VBG"), ("horses", "NN")]),
    # v3 (val): a zebra jumps -- never counted
    tok_row(4, "v3", "val", [("a", "DT"), ("zebra", "NN"), ("jumps", "VBZ"), ("horse", "NN")]),
    tok_row(5, "v3", "val", [], status="empty"),
]


@pytest.fixture(scope="module")
def lexicon():
    return WordNetLemmas()


def write_tokens(root, rows=ROWS):
    write_table(root / TOKENS, "tokens", rows)


def concepts_table(root):
    rows = pq.read_table(root / CONCEPTS).to_pylist()
    return {k: [(r["lemma"], r["train_count"]) for r in rows if r["kind"] == k] for k in ("verb", "noun")}


def test_top_k_breaks_ties_alphabetically():
    counts = Counter({"ride": 2, "cook": 2, "walk": 3, "eat": 1, "bake": 2})
    assert top_k(counts, 3) == [("walk", 3), ("bake", 2), ("cook", 2)]
    assert top_k(counts, 10)[-1] == ("eat", 1)


def test_caption_concepts_filters_stopwords_punctuation_and_lemmatizes(lexicon):
    tokens = ["Men", "are", "riding", "horses", ".", "'s", "doing"]
    tags = ["NNS", "VBP", "VBG", "NNS", ".", "VBZ", "VBG"]
    got = caption_concepts(tokens, tags, lexicon, resources.stopwords_en())
    assert got == [("noun", "man"), ("verb", "ride"), ("noun", "horse")]


def test_reference_pitfall_leaves_vb_nn_tags_unlemmatized(lexicon):
    tokens, tags = ["horses", "horses", "riding", "riding"], ["NN", "NNS", "VB", "VBG"]
    stop = resources.stopwords_en()
    assert caption_concepts(tokens, tags, lexicon, stop, lemmatize_all=False) == [
        ("noun", "horses"), ("noun", "horse"), ("verb", "riding"), ("verb", "ride")]
    assert [c for _, c in caption_concepts(tokens, tags, lexicon, stop)] == ["horse", "horse", "ride", "ride"]


def test_vocabularies_count_train_only_with_ties_by_word(tmp_path):
    write_tokens(tmp_path)
    result = run_concepts(tmp_path, ConceptConfig())
    table = concepts_table(tmp_path)
    assert table["verb"] == [("ride", 2), ("cook", 1), ("shine", 1)]
    assert table["noun"] == [("horse", 3), ("man", 2), ("sun", 1), ("water", 1)]
    assert "zebra" not in dict(table["noun"]) and "jump" not in dict(table["verb"])
    assert result.counts["train_captions"] == 4 and result.counts["verbs"] == 3
    assert result.outputs == [CONCEPTS, CAPTION_LABELS, VIDEO_LABELS]


def test_top_k_limits_and_labels(tmp_path):
    write_tokens(tmp_path)
    run_concepts(tmp_path, ConceptConfig(n_verbs=1, n_nouns=2))
    assert concepts_table(tmp_path) == {"verb": [("ride", 2)], "noun": [("horse", 3), ("man", 2)]}
    caption_rows = pq.read_table(tmp_path / CAPTION_LABELS).to_pylist()
    labels = {r["caption_id"]: (r["verb_ids"], r["noun_ids"]) for r in caption_rows}
    assert labels[0] == ([0], [0, 1])     # ride; horse, man
    assert labels[2] == ([], [])          # shine, sun, water: outside the top-K
    assert labels[4] == ([], [0])         # val caption still labelled: horse
    assert labels[5] == ([], [])          # empty caption
    video_rows = pq.read_table(tmp_path / VIDEO_LABELS).to_pylist()
    videos = {r["key"]: (r["split"], r["verb_ids"], r["noun_ids"]) for r in video_rows}
    assert videos == {"v1": ("train", [0], [0, 1]), "v2": ("train", [], [0]), "v3": ("val", [], [0])}


def test_no_train_captions_gives_empty_vocabularies(tmp_path):
    write_tokens(tmp_path, [r for r in ROWS if r["split"] != "train"])
    result = run_concepts(tmp_path, ConceptConfig())
    assert concepts_table(tmp_path) == {"verb": [], "noun": []}
    assert result.notes and result.counts["verbs"] == 0
