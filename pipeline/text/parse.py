"""Stage entry points of the text branch: parse, concepts, vocab.

Each reads from and writes under a dataset shard root ``root``:

- :func:`run_parse` ``captions.parquet`` -> ``text/tokens.parquet``,
  ``text/role_graphs.parquet``
- :func:`run_concepts` ``text/tokens.parquet`` -> ``text/concepts.parquet``,
  ``text/caption_labels.parquet``, ``text/video_labels.parquet``
- :func:`run_vocab` ``text/tokens.parquet`` -> ``text/words.parquet``,
  ``text/embeddings.h5``

Captions are never altered in storage; parsing works on a cleaned copy
(control / format characters -> space, whitespace collapsed, optional HTML
unescape + tag removal, word and character caps). Per-caption outcome is a
status: 'ok', 'empty' (nothing left to parse), 'truncated' (parsed after the
caps), 'error' (message in error_message); one bad caption never stops the
stage. Missing models/corpora raise :class:`~pipeline.text.resources.ResourceMissing`
with the setup command.
"""
from __future__ import annotations

import html
import re
import time
import unicodedata
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from pipeline.stage import StageResult
from pipeline.config import ConceptConfig, TextConfig, VocabConfig
from pipeline.text import concepts, hgr_json, resources, vocab
from pipeline.text.lemmas import WordNetLemmas
from pipeline.text.roles import RoleGraph, graph_from_doc
from storage.tables import read_table, write_table
from storage.text import write_embeddings

TOKENS = "text/tokens.parquet"
ROLE_GRAPHS = "text/role_graphs.parquet"
CONCEPTS = "text/concepts.parquet"
CAPTION_LABELS = "text/caption_labels.parquet"
VIDEO_LABELS = "text/video_labels.parquet"
WORDS = "text/words.parquet"
EMBEDDINGS = "text/embeddings.h5"
CAPTIONS = "captions.parquet"

OK, EMPTY, TRUNCATED, ERROR = "ok", "empty", "truncated", "error"
HTML_TAG = re.compile(r"<[^<>]{1,200}>")
WHITESPACE = re.compile(r"\s+")


# --- caption cleaning --------------------------------------------------------

@dataclass
class Prepared:
    text: str
    status: str = OK
    message: str | None = None


def clean_text(raw: str, strip_html: bool = True) -> str:
    """Parse text: control/format characters -> space, HTML removed, whitespace collapsed."""
    if strip_html:
        raw = html.unescape(HTML_TAG.sub(" ", raw))
    chars = (" " if unicodedata.category(c).startswith("C") else c for c in raw)
    return WHITESPACE.sub(" ", "".join(chars)).strip()


def loose_key(text: str) -> str:
    """Lookup key tolerant to case, spacing and control characters."""
    return clean_text(text, strip_html=False).lower()


def prepare_caption(raw: str | None, cfg: TextConfig) -> Prepared:
    """The cleaned, capped text to parse and its status."""
    if not (raw or "").strip():
        return Prepared("", EMPTY, "empty caption")
    text = clean_text(raw or "", cfg.strip_html)
    if not text:
        return Prepared("", EMPTY, "no text after removing control characters and whitespace")
    words = text.split(" ")
    notes = []
    if len(words) > cfg.max_caption_words:
        text = " ".join(words[: cfg.max_caption_words])
        notes.append(f"{len(words)} words, parsed the first {cfg.max_caption_words}")
    if len(text) > cfg.max_caption_chars:
        text = text[: cfg.max_caption_chars].rstrip()
        notes.append(f"parsed the first {cfg.max_caption_chars} characters")
    return Prepared(text, TRUNCATED, "; ".join(notes)) if notes else Prepared(text)


# --- parsing -----------------------------------------------------------------

@dataclass
class Parsed:
    """One caption's parse: tokens (the list role-graph spans index into), tags, lemmas, graph."""

    status: str = OK
    message: str | None = None
    tokens: list[str] = field(default_factory=list)
    pos: list[str] = field(default_factory=list)
    lemmas: list[str] = field(default_factory=list)
    graph: RoleGraph | None = None


def _one(nlp: Any, item: Any) -> Any:
    try:
        return nlp(item)
    except Exception as exc:  # noqa: BLE001 - one caption's failure becomes its row
        return exc


def safe_pipe(nlp: Any, items: Sequence[Any], batch_size: int, n_process: int = 1) -> Iterator[Any]:
    """nlp.pipe over ``items`` yielding a Doc or the Exception, in order; a failing
    batch is redone one item at a time so only the bad items fail."""
    start = 0
    while start < len(items):
        try:
            for doc in nlp.pipe(items[start:], batch_size=batch_size, n_process=n_process):
                start += 1
                yield doc
        except Exception:  # noqa: BLE001
            end = min(start + batch_size, len(items))
            for item in items[start:end]:
                yield _one(nlp, item)
            start = end


def analyze(doc: Any, lexicon: WordNetLemmas, graph: RoleGraph | None = None) -> Parsed:
    """Tokens, Penn tags, WordNet lemmas and (unless given) the spacy-dep role graph of a Doc."""
    tokens = [t.text for t in doc]
    pos = [t.tag_ for t in doc]
    lemmas = [lexicon.lemma_for_tag(w, tag) for w, tag in zip(tokens, pos)]
    return Parsed(OK, None, tokens, pos, lemmas, graph if graph is not None else graph_from_doc(doc, lexicon))


def _finish(result: Any, prep: Prepared, lexicon: WordNetLemmas, graph_of=None) -> Parsed:
    if isinstance(result, Exception):
        return Parsed(ERROR, f"{type(result).__name__}: {result}"[:500])
    try:
        parsed = analyze(result, lexicon, graph_of(result) if graph_of else None)
    except Exception as exc:  # noqa: BLE001
        return Parsed(ERROR, f"{type(exc).__name__}: {exc}"[:500])
    parsed.status, parsed.message = prep.status, prep.message
    return parsed


def parse_spacy_dep(preps: list[Prepared], cfg: TextConfig, nlp: Any, lexicon: WordNetLemmas) -> list[Parsed]:
    """Backend spacy-dep: one nlp.pipe pass gives tokens, tags and role graphs."""
    todo = [i for i, p in enumerate(preps) if p.status != EMPTY]
    out = [Parsed(p.status, p.message) for p in preps]
    docs = safe_pipe(nlp, [preps[i].text for i in todo], cfg.batch_size, cfg.n_process)
    for i, result in zip(todo, docs):
        out[i] = _finish(result, preps[i], lexicon)
    return out


def _hgr_input(raw: str, prep: Prepared, graphs: hgr_json.HgrGraphs, nlp: Any) -> tuple[Any, Any]:
    """(what spaCy tags: HGR's tokens as a Doc, or the text when absent; HGR graph or None)."""
    from spacy.tokens import Doc

    hit = graphs.find(raw or "")
    if hit is None:
        return prep.text, None
    tokens = hgr_json.hgr_tokens(*hit)
    if not tokens or not all(w.strip() for w in tokens):
        return ValueError(f"hgr json tokens unusable: {tokens[:10]}"), hit
    return Doc(nlp.vocab, words=tokens), hit


def _hgr_graph(hit: Any):
    if hit is None:
        return None
    return lambda doc: hgr_json.convert(hit[1], [t.text for t in doc])


HGR_CHUNK = 4096  # captions tagged at a time: each chunk's Docs (and their tensors) are dropped before the next


def parse_hgr(raws: list[str], preps: list[Prepared], cfg: TextConfig, nlp: Any,
              lexicon: WordNetLemmas, graphs: hgr_json.HgrGraphs) -> list[Parsed]:
    """Backend hgr-json: graphs from the file; spaCy tags HGR's own tokens (for POS/lemmas), ``HGR_CHUNK``
    captions at a time (holding every tagged Doc until the end took 4.7 GB at MSR-VTT's 200,000 captions)."""
    out = [Parsed(p.status, p.message) for p in preps]
    for a in range(0, len(raws), HGR_CHUNK):
        _parse_hgr_chunk(raws, preps, cfg, nlp, lexicon, graphs, out, range(a, min(len(raws), a + HGR_CHUNK)))
    return out


def _parse_hgr_chunk(raws: list[str], preps: list[Prepared], cfg: TextConfig, nlp: Any, lexicon: WordNetLemmas,
                     graphs: hgr_json.HgrGraphs, out: list[Parsed], rows: range) -> None:
    """Fill ``out[i]`` for ``i`` in ``rows`` (see :func:`parse_hgr`)."""
    items = {i: _hgr_input(raws[i], preps[i], graphs, nlp) for i in rows}
    for i, (item, hit) in items.items():
        if isinstance(item, Exception):
            out[i] = _finish(item, preps[i], lexicon)
    todo = [i for i, (item, hit) in items.items()
            if not isinstance(item, Exception) and (hit is not None or preps[i].status != EMPTY)]
    found = [i for i in todo if items[i][1] is not None]
    # captions found in the file keep its graph: spaCy only tags them, without its dependency parser
    # (~1.3x fewer CPU seconds per caption, same tokens/tags/lemmas); the others are parsed as before
    for group, ctx in ((found, _without_parser(nlp)), ([i for i in todo if items[i][1] is None], nullcontext())):
        with ctx:
            docs = safe_pipe(nlp, [items[i][0] for i in group], cfg.batch_size, cfg.n_process)
            for i, result in zip(group, docs):
                hit = items[i][1]
                out[i] = _finish(result, preps[i] if hit is None else Prepared(raws[i]), lexicon, _hgr_graph(hit))
                if hit is None and out[i].status != ERROR:
                    out[i].status, out[i].message, out[i].graph = ERROR, hgr_json.NOT_FOUND, None


def _without_parser(nlp: Any):
    """``nlp`` with its dependency parser disabled for the duration (no-op when it has none)."""
    names = [p for p in ("parser",) if p in getattr(nlp, "pipe_names", ())]
    return nlp.select_pipes(disable=names) if names else nullcontext()


def load_nlp(cfg: TextConfig) -> Any:
    return resources.load_spacy(cfg.spacy_model, tuple(cfg.spacy_disable))


def parse_captions(raws: list[str], cfg: TextConfig, nlp: Any = None,
                   lexicon: WordNetLemmas | None = None) -> list[Parsed]:
    """Parse raw captions with the configured backend (what run_parse does, without files)."""
    nlp = nlp if nlp is not None else load_nlp(cfg)
    lexicon = lexicon if lexicon is not None else WordNetLemmas()
    preps = [prepare_caption(r, cfg) for r in raws]
    if cfg.backend == "hgr-json":
        if not cfg.hgr_json:
            raise ValueError("backend 'hgr-json' needs TextConfig.hgr_json (path to sent2rolegraph.augment.json)")
        graphs = hgr_json.HgrGraphs.load(cfg.hgr_json, loose_key)
        return parse_hgr(raws, preps, cfg, nlp, lexicon, graphs)
    return parse_spacy_dep(preps, cfg, nlp, lexicon)


# --- rows and counts ---------------------------------------------------------

def _meta(caption: dict[str, Any], parsed: Parsed) -> dict[str, Any]:
    return {"caption_id": caption["caption_id"], "key": caption["key"], "split": caption["split"],
            "status": parsed.status, "error_message": parsed.message}


def token_row(caption: dict[str, Any], parsed: Parsed) -> dict[str, Any]:
    return {**_meta(caption, parsed), "tokens": parsed.tokens, "pos": parsed.pos, "lemmas": parsed.lemmas}


def graph_row(caption: dict[str, Any], parsed: Parsed, backend: str) -> dict[str, Any]:
    g = parsed.graph
    return {**_meta(caption, parsed), "backend": backend, "tokens": parsed.tokens,
            "nodes": g.node_rows() if g else [], "edges": g.edge_rows() if g else [],
            "fallback": bool(g and g.fallback)}


def parse_counts(parsed: list[Parsed]) -> dict[str, int]:
    graphs = [p.graph for p in parsed if p.graph is not None]
    framed = [g for g in graphs if not g.fallback]
    return {
        "captions": len(parsed),
        "ok": sum(p.status == OK for p in parsed),
        "truncated": sum(p.status == TRUNCATED for p in parsed),
        "empty": sum(p.status == EMPTY for p in parsed),
        "errors": sum(p.status == ERROR for p in parsed),
        "fallback": sum(g.fallback for g in graphs),
        "verbs": sum(n.role == "V" for g in framed for n in g.nodes),
        "args": sum(n.role != "V" for g in framed for n in g.nodes),
        "edges": sum(len(g.edges) for g in framed),
    }


# --- stage entry points ------------------------------------------------------

def run_parse(root: Path, cfg: TextConfig) -> StageResult:
    """captions.parquet -> text/tokens.parquet + text/role_graphs.parquet."""
    root = Path(root)
    t0 = time.perf_counter()
    captions = read_table(root / CAPTIONS, "captions").to_pylist()
    nlp, lexicon = load_nlp(cfg), WordNetLemmas()
    t1 = time.perf_counter()
    parsed = parse_captions([c["caption"] for c in captions], cfg, nlp, lexicon)
    t2 = time.perf_counter()
    meta = {"backend": cfg.backend, **resources.model_provenance(nlp, cfg.spacy_model)}
    write_table(root / TOKENS, "tokens", [token_row(c, p) for c, p in zip(captions, parsed)], meta)
    write_table(root / ROLE_GRAPHS, "role_graphs",
                [graph_row(c, p, cfg.backend) for c, p in zip(captions, parsed)], meta)
    counts = parse_counts(parsed)
    rate = counts["captions"] / max(t2 - t1, 1e-9)
    return StageResult(
        outputs=[TOKENS, ROLE_GRAPHS], counts=counts,
        timings_s={"load": t1 - t0, "parse": t2 - t1, "write": time.perf_counter() - t2},
        notes=[f"backend {cfg.backend}, {meta['spacy_model_meta']}, {rate:.0f} captions/s"],
    )


def concepts_per_caption(rows: list[dict[str, Any]], cfg: ConceptConfig) -> list[list[tuple[str, str]]]:
    lexicon, stop = WordNetLemmas(fix=cfg.fix_lemmatizer), resources.stopwords_en()
    return [concepts.caption_concepts(r["tokens"], r["pos"], lexicon, stop, cfg.lemmatize_all) for r in rows]


def concept_counts(rows: list[dict[str, Any]], labels: list[dict[str, Any]], videos: list[dict[str, Any]],
                   counts: dict[str, Any], cv: concepts.ConceptVocab) -> dict[str, int]:
    return {
        "captions": len(rows), "train_captions": sum(r["split"] == "train" for r in rows),
        "videos": len(videos), "verbs": len(cv.lemmas["verb"]), "nouns": len(cv.lemmas["noun"]),
        "verb_candidates": len(counts["verb"]), "noun_candidates": len(counts["noun"]),
        "captions_without_concepts": sum(not (lab["verb_ids"] or lab["noun_ids"]) for lab in labels),
    }


def run_concepts(root: Path, cfg: ConceptConfig) -> StageResult:
    """text/tokens.parquet -> concepts, caption_labels, video_labels (vocabularies from TRAIN only)."""
    root = Path(root)
    t0 = time.perf_counter()
    rows = read_table(root / TOKENS, "tokens", columns=["caption_id", "key", "split", "tokens", "pos"]).to_pylist()
    per_caption = concepts_per_caption(rows, cfg)
    counts = concepts.count_concepts(c for r, c in zip(rows, per_caption) if r["split"] == "train")
    cv = concepts.build_vocab(counts, cfg.n_verbs, cfg.n_nouns)
    ids = {k: cv.ids(k) for k in concepts.KINDS}
    labels = [{"caption_id": r["caption_id"], "key": r["key"], "split": r["split"], **concepts.label_ids(c, ids)}
              for r, c in zip(rows, per_caption)]
    videos = concepts.video_label_rows(labels)
    write_table(root / CONCEPTS, "concepts", cv.rows())
    write_table(root / CAPTION_LABELS, "caption_labels", labels)
    write_table(root / VIDEO_LABELS, "video_labels", videos)
    stats = concept_counts(rows, labels, videos, counts, cv)
    return StageResult(
        outputs=[CONCEPTS, CAPTION_LABELS, VIDEO_LABELS], counts=stats,
        timings_s={"concepts": time.perf_counter() - t0},
        notes=[] if stats["train_captions"] else ["no train captions: empty concept vocabularies"],
    )


def run_vocab(root: Path, cfg: VocabConfig) -> StageResult:
    """text/tokens.parquet -> text/words.parquet + text/embeddings.h5 (train tokens, lowercased)."""
    root = Path(root)
    t0 = time.perf_counter()
    rows = read_table(root / TOKENS, "tokens", columns=["split", "tokens"]).to_pylist()
    counts = vocab.word_counts(r["tokens"] for r in rows if r["split"] == "train")
    words = vocab.build_words(counts, cfg.min_count)
    emb = vocab.init_embeddings([w for w, _ in words], cfg)
    write_table(root / WORDS, "words", [
        {"word_id": i, "word": w, "train_count": n, "in_embeddings": emb.found[i]}
        for i, (w, n) in enumerate(words)])
    write_embeddings(root / EMBEDDINGS, emb.matrix, {
        "source": emb.source, "source_sha256": emb.sha256, "dim": emb.dim,
        "coverage": emb.coverage, "n_found": sum(emb.found), "n_words": len(words),
        "specials": list(vocab.SPECIALS), "seed": cfg.seed})
    pct = 100.0 * emb.coverage
    return StageResult(
        outputs=[WORDS, EMBEDDINGS],
        counts={"words": len(words), "specials": len(vocab.SPECIALS), "found": sum(emb.found),
                "dim": emb.dim, "coverage_pct": round(pct), "coverage_bp": round(100 * pct)},
        timings_s={"vocab": time.perf_counter() - t0},
        notes=[f"embeddings {emb.source}: {pct:.2f}% of {len(words) - len(vocab.SPECIALS)} words found, dim {emb.dim}"],
    )
