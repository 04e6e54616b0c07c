"""Vocabularies of an imported checkpoint, as word lists: their fingerprints, and the remapping of embedding
rows / concept heads from the reference's vocabulary onto a build's. Pure functions over lists and tensors;
reading the lists (the reference's files, a shard tree's tables) is pipeline.learn.import_vocab's."""
from __future__ import annotations

import torch
from torch import Tensor


SPECIALS = 3  # ids 0 <bos>, 1 <eos> (= padding), 2 <unk> in both the reference and our words table
REF_UNK = 2


def fingerprint(items: list[str]) -> str:
    """sha256 of a vocabulary in id order (one entry per line)."""
    import hashlib

    return hashlib.sha256("\n".join(items).encode("utf-8")).hexdigest()


def remap_word_rows(emb: Tensor, ref_words: list[str], build_words: list[str]) -> tuple[Tensor, dict]:
    """Reference embedding rows (ref_words order) -> rows in build_words order.

    Specials (ids 0-2) map by id. A build word is looked up exactly, then lower-cased; a word
    the reference lacks gets the reference's UNK row: the reference itself encodes any word
    outside its vocabulary as UNK (readers/mpdata.py process_sent), so this reproduces it.
    """
    if emb.shape[0] != len(ref_words):
        raise ValueError(f"reference vocabulary has {len(ref_words)} words, its embedding {emb.shape[0]} rows")
    index = {w: i for i, w in enumerate(ref_words) if i >= SPECIALS}
    lower: dict[str, int] = {}
    for w, i in index.items():
        lower.setdefault(w.lower(), i)
    src = []
    n_found = 0
    for i, w in enumerate(build_words):
        if i < SPECIALS:
            src.append(i)
            continue
        j = index.get(w, lower.get(w.lower()))
        n_found += j is not None
        src.append(REF_UNK if j is None else j)
    n_words = max(0, len(build_words) - SPECIALS)
    report = {"build_words": n_words, "found_in_reference": n_found,
              "coverage": n_found / n_words if n_words else 1.0,
              "reference_words": max(0, len(ref_words) - SPECIALS),
              "missing_initialised_as": "the reference's UNK row (row 2)"}
    return emb[torch.as_tensor(src, dtype=torch.long)].clone(), report


CONCEPT_KEYS = {
    "verb": ("video_encoder", ("classifier_verb.0", "bn_verb", "classifier_verb.1"),
             "text_encoder", ("classifier_verb.0", "bn_verb", "classifier_verb.1")),
    "noun": ("video_encoder", ("classifier_noun.0", "bn_noun", "classifier_noun.1"),
             "text_encoder", ("classifier_noun.0", "bn_noun", "classifier_noun.1")),
}


def remap_concept_rows(parts: dict[str, dict[str, Tensor]], kind: str, ref_lemmas: list[str],
                       build_lemmas: list[str]) -> dict:
    """Permute the concept-head output rows (conv weight/bias, BN weight/bias/running stats) of
    both encoders from the reference's concept order to the build's. Every build concept must
    exist in the reference vocabulary (a concept head cannot be made up): ValueError otherwise."""
    index = {w: i for i, w in enumerate(ref_lemmas)}
    missing = [w for w in build_lemmas if w not in index]
    if missing:
        raise ValueError(f"{len(missing)} of the build's {len(build_lemmas)} {kind} concepts are not in the "
                         f"reference's {kind} vocabulary (e.g. {missing[:5]}); a concept head cannot be remapped")
    perm = torch.as_tensor([index[w] for w in build_lemmas], dtype=torch.long)
    enc_v, prefixes_v, enc_t, prefixes_t = CONCEPT_KEYS[kind]
    for enc, prefixes in ((enc_v, prefixes_v), (enc_t, prefixes_t)):
        for name in list(parts[enc]):
            if any(name.startswith(p + ".") for p in prefixes):
                val = parts[enc][name]
                if val.dim() >= 1 and val.shape[0] == len(ref_lemmas):
                    parts[enc][name] = val[perm].clone()
    return {"build_concepts": len(build_lemmas), "reference_concepts": len(ref_lemmas),
            "identity": perm.tolist() == list(range(len(ref_lemmas)))}
