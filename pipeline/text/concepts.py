"""Verb and noun concept vocabularies and labels (HANet's recipe, on our tokens).

Per caption, from the tokens and Penn POS tags of the parse stage (one spaCy
pass; NLTK's word_tokenize + pos_tag need the punkt and perceptron-tagger
downloads, which are unavailable offline):

1. drop punctuation (tokens that do not start with a letter or digit, e.g.
   '.', "'s", "n't") and NLTK's 179 English stopwords (lowercased match);
2. keep NN* tags as nouns and VB* tags as verbs;
3. lemmatize with NLTK's WordNet lemmatizer (VB* as 'v', NN* as 'n'), with
   the fixes of :mod:`pipeline.text.lemmas` unless ``fix_lemmatizer=False``;
   ``lemmatize_all=False`` reproduces the reference's pitfall of leaving
   tokens tagged exactly 'VB' / 'NN' unlemmatized (lowercased only);
4. count occurrences over TRAIN captions only and keep the top ``n_verbs`` /
   ``n_nouns`` lemmas by count, ties broken alphabetically; concept ids are
   dense from 0 in that order, per kind;
5. labels: per caption the sorted ids present (a multi-hot as an id list),
   per video the union over its captions (every split).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

KINDS = ("verb", "noun")
REFERENCE_UNLEMMATIZED_TAGS = ("VB", "NN")


@dataclass
class ConceptVocab:
    """Selected lemmas per kind, in id order, with their train counts."""

    lemmas: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    counts: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def ids(self, kind: str) -> dict[str, int]:
        return {lemma: i for i, lemma in enumerate(self.lemmas[kind])}

    def rows(self) -> list[dict[str, Any]]:
        return [{"kind": k, "concept_id": i, "lemma": lemma, "train_count": self.counts[k][i]}
                for k in KINDS for i, lemma in enumerate(self.lemmas[k])]


def concept_kind(tag: str) -> str | None:
    if tag.startswith("VB"):
        return "verb"
    return "noun" if tag.startswith("NN") else None


def is_word(token: str) -> bool:
    """Punctuation filter: a concept token starts with a letter or digit."""
    return bool(token) and token[0].isalnum()


def caption_concepts(tokens: Sequence[str], tags: Sequence[str], lexicon: Any,
                     stopwords: frozenset[str], lemmatize_all: bool = True) -> list[tuple[str, str]]:
    """(kind, lemma) of every concept occurrence in one caption, in token order."""
    out = []
    for token, tag in zip(tokens, tags):
        kind = concept_kind(tag)
        low = token.lower()
        if kind is None or not is_word(token) or low in stopwords:
            continue
        if not lemmatize_all and tag in REFERENCE_UNLEMMATIZED_TAGS:
            out.append((kind, low))
        else:
            out.append((kind, lexicon.lemma(low, "v" if kind == "verb" else "n")))
    return out


def count_concepts(per_caption: Iterable[list[tuple[str, str]]]) -> dict[str, Counter]:
    counts = {k: Counter() for k in KINDS}
    for concepts in per_caption:
        for kind, lemma in concepts:
            counts[kind][lemma] += 1
    return counts


def top_k(counts: Counter, k: int) -> list[tuple[str, int]]:
    """The k most frequent items, ties broken by the item (alphabetical)."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]


def build_vocab(counts: dict[str, Counter], n_verbs: int, n_nouns: int) -> ConceptVocab:
    vocab = ConceptVocab()
    for kind, k in (("verb", n_verbs), ("noun", n_nouns)):
        chosen = top_k(counts[kind], k)
        vocab.lemmas[kind] = [lemma for lemma, _ in chosen]
        vocab.counts[kind] = [n for _, n in chosen]
    return vocab


def label_ids(concepts: list[tuple[str, str]], ids: dict[str, dict[str, int]]) -> dict[str, list[int]]:
    """{'verb_ids': [...], 'noun_ids': [...]} of the selected concepts in one caption."""
    out = {}
    for kind in KINDS:
        found = {ids[kind][lemma] for k, lemma in concepts if k == kind and lemma in ids[kind]}
        out[f"{kind}_ids"] = sorted(found)
    return out


def video_label_rows(caption_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-video union of caption labels, videos in first-seen order."""
    videos: dict[str, dict[str, Any]] = {}
    for row in caption_rows:
        video = videos.setdefault(row["key"], {"key": row["key"], "split": row["split"],
                                               "verb_ids": set(), "noun_ids": set()})
        video["verb_ids"].update(row["verb_ids"])
        video["noun_ids"].update(row["noun_ids"])
    return [{**v, "verb_ids": sorted(v["verb_ids"]), "noun_ids": sorted(v["noun_ids"])}
            for v in videos.values()]
