"""Vocabularies of an imported checkpoint: the reference's words and concept lists, the shards' ones, their
fingerprints, and the remapping of embedding rows / concept heads from one onto the other."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor


SPECIALS = 3  # ids 0 <bos>, 1 <eos> (= padding), 2 <unk> in both the reference and our words table
REF_UNK = 2


def fingerprint(items: list[str]) -> str:
    """sha256 of a vocabulary in id order (one entry per line)."""
    import hashlib

    return hashlib.sha256("\n".join(items).encode("utf-8")).hexdigest()


def read_reference_words(path: str | Path) -> list[str]:
    """The reference's word list in id order, from its int2word.npy or word2int.json."""
    path = Path(path)
    if path.suffix == ".npy":
        import numpy as np

        return [str(w) for w in np.load(path, allow_pickle=False).tolist()]
    if path.suffix == ".json":
        obj = json.loads(path.read_text())
        if isinstance(obj, list):
            return [str(w) for w in obj]
        words = [""] * (max(obj.values()) + 1)
        for w, i in obj.items():
            words[int(i)] = str(w)
        return words
    return path.read_text().splitlines()


def read_concept_list(path: str | Path) -> list[str]:
    """A concept vocabulary in id order: a JSON list, a JSON {lemma: id} dict, HANet's
    ``{verb,noun}_words_freq.json`` ({lemma: count}, most frequent first: id = position in the
    file), or one lemma a line. A dict is read as {lemma: id} only when its values are exactly
    the ids 0..n-1; otherwise it is a frequency file and its key order gives the ids."""
    path = Path(path)
    if path.suffix == ".json":
        obj = json.loads(path.read_text())
        if isinstance(obj, dict):
            values = list(obj.values())
            if all(isinstance(v, int) for v in values) and sorted(values) == list(range(len(values))):
                out = [""] * len(values)
                for w, i in obj.items():
                    out[i] = str(w)
                return out
            return [str(w) for w in obj]
        return [str(w) for w in obj]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def shard_vocabularies(root: str | Path) -> dict[str, list[str]]:
    """{'words': [...], 'verb': [...], 'noun': [...]} of a shard tree, each in id order
    (text/words.parquet, text/concepts.parquet; a missing table gives [])."""
    from storage.tables import read_table
    from storage.text import read_concept_lemmas

    root = Path(root)
    out: dict[str, list[str]] = {"words": [], "verb": [], "noun": []}
    wp = root / "text" / "words.parquet"
    if wp.exists():
        t = read_table(wp, "words", columns=["word_id", "word"])
        ids, words = t.column("word_id").to_pylist(), t.column("word").to_pylist()
        lst = [""] * (max(ids) + 1 if ids else 0)
        for i, w in zip(ids, words):
            lst[i] = w
        out["words"] = lst
    cp = root / "text" / "concepts.parquet"
    if cp.exists():
        out.update(read_concept_lemmas(cp))
    return out


def shard_fingerprints(root: str | Path) -> dict[str, str | None]:
    v = shard_vocabularies(root)
    return {k: fingerprint(v[k]) if v[k] else None for k in ("words", "verb", "noun")}


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
