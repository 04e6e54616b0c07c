"""What the search index and the queries share: the checkpoint loaded for search, a query parsed and turned into
a text batch exactly as the captions of pipeline.learn.dataset.load_split, the vocabularies the index is keyed by, and the
level-pooled shortlist rows of videos and queries."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from models.batch import TextBatch
from models.model_configs import DataConfig
from pipeline.learn.dataset import UNK_ID, concept_lemmas, read_vocab
from pipeline.learn.config import TrainConfig
from pipeline.learn.graphs import build_graph
from storage.checkpoints import load_checkpoint


MAX_QUERY_CHARS = 300
DEFAULT_K = 100
DEFAULT_TOP = 10
PART_LEVELS = ("ind_a", "ind_e", "loc_a", "loc_e", "glo", "c_l", "jac_a", "jac_e", "c_p")
HEAT_TOP_K = 8
_ALWAYS_KEEP = ("verb_probs", "noun_probs", "glo")


class SearchError(ValueError):
    """A query or index problem explained to the user (CLI exit 2, HTTP 400)."""


# ----------------------------------------------------------------------------- vocabularies
def read_vocabularies(shards_root: str | Path) -> tuple[dict[str, int], dict[str, list[str]]]:
    """({word: id}, {'verb'|'noun': [lemma by id]} or {} without concepts): what
    :func:`pipeline.fingerprint.vocabulary_fingerprint` hashes."""
    root = Path(shards_root)
    try:
        concepts = concept_lemmas(root)
    except FileNotFoundError:
        concepts = {}
    return read_vocab(root), concepts


# ----------------------------------------------------------------------------- text -> batch
def caption_arrays(tokens: Sequence[str], nodes, edges, graph_ok: bool, vocab: dict[str, int],
                   hcfg: DataConfig) -> dict[str, np.ndarray]:
    """One caption's model inputs, as :func:`pipeline.learn.dataset.load_split` builds them:
    word -> id (exact, then lower-cased, else UNK), truncated to max_words, [UNK] when empty;
    role graph -> fixed slots by :func:`pipeline.learn.graphs.build_graph`."""
    ids = []
    for w in list(tokens)[:hcfg.max_words]:
        i = vocab.get(w)
        if i is None:
            i = vocab.get(w.lower(), UNK_ID)
        ids.append(i)
    if not ids:
        ids = [UNK_ID]
    m, ro, va, ad = build_graph(nodes, edges, len(ids), hcfg.max_words, hcfg.max_verbs, hcfg.max_nouns, graph_ok,
                                hcfg.graph_edges)  # the loader's edge rule
    return {"word_ids": np.asarray(ids, dtype=np.int64), "node_masks": m, "node_roles": ro, "node_valid": va,
            "adjacency": ad, "n_unk": int(sum(i == UNK_ID for i in ids))}


def text_batch(arrs: dict[str, np.ndarray]) -> TextBatch:
    """A one-caption TextBatch (same dtypes as SplitData.text_batch)."""
    L = int(arrs["word_ids"].size)
    return TextBatch(
        word_ids=torch.from_numpy(arrs["word_ids"][None, :]),
        lengths=torch.tensor([L], dtype=torch.int64),
        node_masks=torch.from_numpy(arrs["node_masks"][None, :, :L].astype(np.float32)),
        node_roles=torch.from_numpy(arrs["node_roles"][None].astype(np.int64)),
        node_valid=torch.from_numpy(arrs["node_valid"][None].copy()),
        adjacency=torch.from_numpy(arrs["adjacency"][None].astype(np.float32)),
    )


@dataclass
class ParsedQuery:
    text: str
    tokens: list[str]
    nodes: list[dict]
    edges: list[dict]
    graph_ok: bool
    concepts: list[tuple[str, str]]          # (kind, lemma) occurrences, caption rules
    notes: list[str] = field(default_factory=list)


class QueryParser:
    """The caption text processing of the build (pipeline.text.parse with its TextConfig)."""

    def __init__(self, text_config: dict[str, Any] | None = None, concept_config: dict[str, Any] | None = None):
        from pipeline.config import ConceptConfig, TextConfig

        self.cfg = TextConfig.model_validate(text_config or {})
        concept_config = concept_config or {}
        if isinstance(concept_config.get("concepts"), dict):  # a bundle build's concepts stage records
            concept_config = concept_config["concepts"]       # {concepts: ConceptConfig, bundle_concepts: ...}
        self.ccfg = ConceptConfig.model_validate(concept_config)
        self._nlp = self._lexicon = self._stop = None

    def _load(self):
        if self._nlp is None:
            from pipeline.text import resources
            from pipeline.text.lemmas import WordNetLemmas
            from pipeline.text.parse import load_nlp

            self._nlp = load_nlp(self.cfg)
            self._lexicon = WordNetLemmas(fix=self.ccfg.fix_lemmatizer)
            self._stop = resources.stopwords_en()

    def __call__(self, query: str) -> ParsedQuery:
        from pipeline.text import concepts as text_concepts
        from pipeline.text.parse import ERROR, parse_captions

        self._load()
        if self.cfg.backend == "hgr-json":  # no graph file entry for a new sentence: spaCy roles instead
            cfg = self.cfg.model_copy(update={"backend": "spacy-dep"})
        else:
            cfg = self.cfg
        p = parse_captions([query], cfg, self._nlp, self._lexicon)[0]
        notes = [p.message] if p.message else []
        if p.status == ERROR or not p.tokens:
            return ParsedQuery(query, query.split(), [], [], False, [], notes + ["parse failed: words only"])
        g = p.graph
        nodes, edges = (g.node_rows(), g.edge_rows()) if g else ([], [])
        concepts = text_concepts.caption_concepts(p.tokens, p.pos, self._lexicon, self._stop,
                                                  self.ccfg.lemmatize_all)
        return ParsedQuery(query, list(p.tokens), nodes, edges, g is not None, concepts, notes)


def check_query(query: str) -> str:
    if not isinstance(query, str):
        raise SearchError("the query must be text")
    q = query.strip()
    if not q:
        raise SearchError("empty query: type a few words, e.g. 'a man rides a horse'")
    if len(q) > MAX_QUERY_CHARS:
        raise SearchError(f"query too long: {len(q)} characters, the limit is {MAX_QUERY_CHARS}")
    return q


# ----------------------------------------------------------------------------- probing
def _dummy_text(vocab: dict[str, int], hcfg: DataConfig) -> TextBatch:
    return text_batch(caption_arrays(["<unk>"], [], [], False, vocab, hcfg))


# ----------------------------------------------------------------------------- build
def load_model(checkpoint: str | Path, device: str | torch.device = "cpu"):
    from pipeline.learn.evaluate import model_from_checkpoint

    ck = load_checkpoint(checkpoint)
    model, tcfg = model_from_checkpoint(ck)
    model.to(device).eval()
    return model, tcfg, ck


def data_config(tcfg: TrainConfig) -> DataConfig:
    """The loader caps (max_words/verbs/nouns/frames) and edge rule of the checkpoint's model."""
    return tcfg.net.data_config()


def _model_cfg(tcfg: TrainConfig):
    return tcfg.net


# ----------------------------------------------------------------------------- shortlist
POOLED_LEVELS = ("ind_a", "ind_e", "loc_a", "loc_e")


def _level_mask(d: dict[str, torch.Tensor], level: str) -> torch.Tensor | None:
    for name in (f"{level}_mask", "mask"):
        if name in d and d[name].dim() == 2:
            return d[name]
    return None


def pooled_video_levels(ve: dict[str, torch.Tensor], keys: Sequence[str]) -> tuple[list[str], torch.Tensor] | None:
    """The level-pooled shortlist rows: per fine-grained level, the unit mean of the video's (valid)
    frames / clips, then the unit global embedding, concatenated (B, L*D). None without such levels.

    Why: stacked attention scores a text component by the cosine of an attention-weighted mean of
    the frames (lambda = 4: a soft weighting), so the cosine of the plain mean with the mean of the
    unit text components tracks each level's score; the dot product of these rows with
    :func:`pooled_text_levels` is ~ the mean of the level scores (c_l) in ONE matrix-vector product."""
    levels, blocks = [], []
    for lv in POOLED_LEVELS:
        x = ve.get(lv) if lv in keys else None
        m = _level_mask(ve, lv) if x is not None else None
        if x is None or m is None or x.dim() != 3 or m.shape[:2] != x.shape[:2]:
            continue
        mf = m.to(x.dtype).unsqueeze(-1)
        blocks.append(torch.nn.functional.normalize((x.float() * mf).sum(1) / mf.sum(1).clamp(min=1), dim=-1))
        levels.append(lv)
    if not levels:
        return None
    if "glo" in ve:
        blocks.append(torch.nn.functional.normalize(ve["glo"].float(), dim=-1))
        levels.append("glo")
    return levels, torch.cat(blocks, 1)


def pooled_text_levels(te: dict[str, torch.Tensor], levels: Sequence[str]) -> torch.Tensor | None:
    """The query side of :func:`pooled_video_levels` (one caption): per level, the mean of its unit
    valid components (verb phrases/nodes for *_a, noun ones for *_e), the unit global vector; all / L."""
    blocks = []
    for lv in levels:
        if lv not in te:
            return None
        if lv == "glo":
            blocks.append(torch.nn.functional.normalize(te["glo"].float(), dim=-1)[0])
            continue
        m = te.get("verb_mask" if lv.endswith("_a") else "noun_mask")
        if m is None:
            return None
        x = torch.nn.functional.normalize(te[lv].float(), dim=-1) * m.float().unsqueeze(-1)
        blocks.append(x.sum(1)[0] / m.float().sum().clamp(min=1))
    return torch.cat(blocks).cpu() / len(levels)
