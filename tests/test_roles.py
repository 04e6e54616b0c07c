"""Role graphs: the spacy-dep labeller on hand-checked captions, graph structure, HGR import.

Needs the spaCy model (requirements/text-models.txt) and WordNet
(scripts/setup_wordnet.sh); when missing these tests FAIL with the set-up command.
"""
from __future__ import annotations

import pytest

from pipeline.config import TextConfig
from pipeline.text import hgr_json, resources
from pipeline.text.lemmas import WordNetLemmas
from pipeline.text.roles import ROLES, graph_from_doc, normalize_role

CFG = TextConfig()

# caption -> {verb: [(role, argument words)]}, checked by hand
EXPECTED = {
    "a woman is cooking pasta in a kitchen": {
        "cooking": [("ARG0", "a woman"), ("ARG1", "pasta"), ("ARGM-LOC", "in a kitchen")]},
    "a man drives a red car down the road": {
        "drives": [("ARG0", "a man"), ("ARG1", "a red car"), ("ARGM-DIR", "down the road")]},
    "someone is folding paper to make an airplane": {
        "folding": [("ARG0", "someone"), ("ARG1", "paper"), ("ARGM-PRP", "to make an airplane")],
        "make": [("ARG0", "someone"), ("ARG1", "an airplane")]},
    "a man who is wearing a hat is talking to a woman": {
        "wearing": [("ARG0", "a man"), ("ARG1", "a hat")],
        "talking": [("ARG0", "a man who is wearing a hat"), ("ARGM-DIR", "to a woman")]},
    "a girl is cutting bread with a knife and eating it": {
        "cutting": [("ARG0", "a girl"), ("ARG1", "bread"), ("ARGM-MNR", "with a knife")],
        "eating": [("ARG0", "a girl"), ("ARG1", "it")]},
    "a ball is kicked by a boy": {
        "kicked": [("ARG0", "by a boy"), ("ARG1", "a ball")]},
    "a man gives the dog a bone": {
        "gives": [("ARG0", "a man"), ("ARG1", "a bone"), ("ARG2", "the dog")]},
    "people are dancing while music plays": {
        "dancing": [("ARG0", "people"), ("ARGM-TMP", "while music plays")],
        "plays": [("ARG0", "music")]},
    "a man picks up a ball": {
        "picks up": [("ARG0", "a man"), ("ARG1", "a ball")]},
    "a woman is talking with her friend": {
        "talking": [("ARG0", "a woman"), ("ARGM-COM", "with her friend")]},
    "a dog running in the park": {
        "running": [("ARG0", "a dog"), ("ARGM-LOC", "in the park")]},
    "a cat can jump quickly onto the table": {
        "jump": [("ARG0", "a cat"), ("ARGM-DIR", "onto the table"), ("ARGM-MNR", "quickly"),
                 ("ARGM-MOD", "can")]},
    "a boy tries to climb a tree": {
        "tries": [("ARG0", "a boy"), ("ARG1", "to climb a tree")],
        "climb": [("ARG0", "a boy"), ("ARG1", "a tree")]},
    "a egg has been broken and dropped into the cup": {
        "broken": [("ARG1", "a egg")],
        "dropped": [("ARG1", "a egg"), ("ARGM-DIR", "into the cup")]},
    "two men are fighting during a soccer game": {
        "fighting": [("ARG0", "two men"), ("ARGM-TMP", "during a soccer game")]},
    "the ball that the man kicked flies over the fence": {
        "kicked": [("ARG0", "the man"), ("ARG1", "the ball")],
        "flies": [("ARG0", "the ball that the man kicked"), ("ARGM-DIR", "over the fence")]},
}


@pytest.fixture(scope="module")
def nlp():
    return resources.load_spacy(CFG.spacy_model, tuple(CFG.spacy_disable))


@pytest.fixture(scope="module")
def lexicon():
    return WordNetLemmas()


def graph(nlp, lexicon, text):
    return graph_from_doc(nlp(text), lexicon)


@pytest.mark.parametrize("caption", list(EXPECTED))
def test_frames_match_hand_checked_roles(nlp, lexicon, caption):
    got = {verb: sorted(args) for verb, args in graph(nlp, lexicon, caption).frames().items()}
    assert got == EXPECTED[caption]


def test_nodes_are_deduplicated_and_spans_index_tokens(nlp, lexicon):
    g = graph(nlp, lexicon, "a girl is cutting bread with a knife and eating it")
    girl = [i for i, n in enumerate(g.nodes) if n.words == "a girl"]
    assert len(girl) == 1, "one ARG0 node shared by both verbs"
    assert sum(dst == girl[0] for _, dst, _ in g.edges) == 2
    for node in g.nodes:
        assert node.role in ROLES
        assert node.words == " ".join(g.tokens[i] for i in node.spans)
    for src, dst, role in g.edges:
        assert g.nodes[src].role == "V" and g.nodes[dst].role == role != "V"


def test_copula_is_no_frame_and_fallback_is_the_references(nlp, lexicon):
    g = graph(nlp, lexicon, "the man is happy")
    assert g.fallback and not g.edges
    assert [(n.role, n.words) for n in g.nodes] == [("NOUN", "the man"), ("V", "is")]


def test_frames_need_an_argument(nlp, lexicon):
    g = graph(nlp, lexicon, "dancing")
    assert g.fallback and not g.edges


def test_normalize_role_follows_the_reference_reader():
    assert normalize_role("C-ARG1") == "ARG1"
    assert normalize_role("R-ARGM-LOC") == "ARGM-LOC"
    assert normalize_role("ARGM-NEG") == "NOUN"
    assert normalize_role("ARGM-GOL") == "NOUN"
    assert len(ROLES) == 16


# --- hgr-json ----------------------------------------------------------------

HGR_SENTENCE = "a egg has been broken and dropped into the cup"
HGR_WORDS = HGR_SENTENCE.split()
HGR_GRAPH = [
    {"ROOT": {"words": HGR_WORDS, "spans": list(range(len(HGR_WORDS))), "role": "ROOT"},
     "1": {"role": "V", "spans": [4], "words": ["broken"]},
     "2": {"role": "ARG1", "spans": [0, 1], "words": ["a", "egg"]},
     "3": {"role": "V", "spans": [6], "words": ["dropped"]},
     "4": {"role": "ARG4", "spans": [7, 8, 9], "words": ["into", "the", "cup"]},
     "5": {"role": "R-ARGM-TMP", "spans": [2], "words": ["has"]}},
    [["1", "2", "ARG1"], ["3", "2", "ARG1"], ["3", "4", "ARG4"], ["3", "5", "R-ARGM-TMP"]],
]


def test_hgr_convert_keeps_order_drops_root_and_normalizes_roles():
    tokens = hgr_json.hgr_tokens(HGR_SENTENCE, HGR_GRAPH)
    g = hgr_json.convert(HGR_GRAPH, tokens)
    assert tokens == HGR_WORDS
    assert [(n.role, n.spans, n.words) for n in g.nodes] == [
        ("V", (4,), "broken"), ("ARG1", (0, 1), "a egg"), ("V", (6,), "dropped"),
        ("ARG4", (7, 8, 9), "into the cup"), ("ARGM-TMP", (2,), "has")]
    assert g.edges == [(0, 1, "ARG1"), (2, 1, "ARG1"), (2, 3, "ARG4"), (2, 4, "ARGM-TMP")]
    assert not g.fallback


def test_hgr_augmented_graph_without_edges_is_fallback():
    raw = [{"ROOT": {"words": ["a", "dog"], "spans": [0, 1], "role": "ROOT"},
            "1": {"role": "NOUN", "spans": [0, 1], "words": ["a", "dog"]}}, []]
    g = hgr_json.convert(raw, ["a", "dog"])
    assert g.fallback and [(n.role, n.words) for n in g.nodes] == [("NOUN", "a dog")]


def test_hgr_rejects_spans_outside_the_tokens():
    raw = [{"1": {"role": "V", "spans": [7], "words": ["x"]}}, []]
    with pytest.raises(ValueError, match="outside"):
        hgr_json.convert(raw, ["a", "dog"])


def test_hgr_lookup_exact_then_loose():
    graphs = hgr_json.HgrGraphs({HGR_SENTENCE: HGR_GRAPH}, lambda s: " ".join(s.lower().split()))
    assert graphs.find(HGR_SENTENCE)[0] == HGR_SENTENCE
    assert graphs.find("  A egg has been BROKEN and dropped into the cup ")[0] == HGR_SENTENCE
    assert graphs.find("a cat") is None
