"""The vocabularies an imported checkpoint is remapped between, read from files: the reference's word list
(int2word.npy / word2int.json) and concept lists, and a shard tree's words and concepts (through storage/).
The remapping itself is models.import_vocab's (pure functions over these lists)."""
from __future__ import annotations

import json
from pathlib import Path

from models.import_vocab import fingerprint


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
