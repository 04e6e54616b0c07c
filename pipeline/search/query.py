"""Text -> video search over a built dataset with a trained checkpoint.

Index (:func:`build_index`): every video with features (all splits by default) is encoded
ONCE by the model's ``encode_videos``; the outputs its ``similarity_parts`` reads (found by
probing one call, as evaluation does) are stored, plus two shortlist matrices (the unit
global embedding, and the level-pooled rows of :func:`pooled_video_levels`), the video
concept probabilities, the top concepts' frame confidences (for heatmaps) and a thumbnail
strip decoded from the source video (PyAV). Files and their format: :mod:`storage.index`.
The index records the checkpoint's sha256, the shards' data fingerprint and a vocabulary
fingerprint (words + concepts).

Search (:class:`Searcher`): the query goes through the captions' text processing (the
parse stage's cleaning + spaCy tokens/tags + role graph with the build's TextConfig, then
words -> ids and role graph -> slots exactly as :func:`pipeline.learn.dataset.load_split`), is
encoded once by ``encode_texts``, then

1. shortlist: ONE exact matrix-vector product over a memory-mapped (n, L*D) matrix, the
   ``k`` best rows by argpartition. Default ``levels``: per level the cosine of the mean of
   the video's frames / clips with the mean of the query's components (a proxy of each
   stacked-attention score) and the global cosine, averaged (~ c_l); ``global``: the
   global cosine only (L = 1). Measured on a 3,200-video planted index (bench_search.py):
   at K = 100 ``levels`` keeps R@10 within 0.3-0.7 points of exhaustive, ``global`` loses 3-4;
2. re-rank: ``similarity_parts`` on the ``k`` shortlisted videos only; fused score
   (c_l + c_p) / 2 (the model's inference score).

``exhaustive=True`` skips stage 1 (every video scored by the full model), for checking.
A model with neither pooled levels nor a global level shortlists by its concept (Jaccard) score.
"""
from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from models.batch import TextBatch, VideoBatch
from models.config import HANetConfig, TrainConfig
from pipeline.fingerprint import sha256_file, stable_hash
from pipeline.learn.dataset import (PAD_ID, UNK_ID, FeatureSource, build_graph, concept_lemmas, feature_path,
                              read_vocab)
from pipeline.learn.evaluate import KeyRecorder
from pipeline.provenance import data_fingerprint
from storage import index as store
from storage.checkpoints import load_checkpoint
from storage.features import dataset_name, read_frame_counts
from storage.manifest import read_manifest
from storage.tables import read_table

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 300
DEFAULT_K = 100
DEFAULT_TOP = 10
PART_LEVELS = ("ind_a", "ind_e", "loc_a", "loc_e", "glo", "c_l", "jac_a", "jac_e", "c_p")
HEAT_TOP_K = 8
_ALWAYS_KEEP = ("verb_probs", "noun_probs", "glo")


class SearchError(ValueError):
    """A query or index problem explained to the user (CLI exit 2, HTTP 400)."""


# ----------------------------------------------------------------------------- fingerprints
def vocabulary_fingerprint(shards_root: str | Path) -> str:
    """Hash of the word vocabulary (id -> word) and the concept vocabularies (id -> lemma)."""
    root = Path(shards_root)
    words = sorted((i, w) for w, i in read_vocab(root).items())
    try:
        concepts = concept_lemmas(root)
    except FileNotFoundError:
        concepts = {}
    return stable_hash({"words": words, "concepts": concepts})


# ----------------------------------------------------------------------------- text -> batch
def caption_arrays(tokens: Sequence[str], nodes, edges, graph_ok: bool, vocab: dict[str, int],
                   hcfg: HANetConfig) -> dict[str, np.ndarray]:
    """One caption's model inputs, as :func:`pipeline.learn.dataset.load_split` builds them:
    word -> id (exact, then lower-cased, else UNK), truncated to max_words, [UNK] when empty;
    role graph -> fixed slots by :func:`pipeline.learn.dataset.build_graph`."""
    ids = []
    for w in list(tokens)[:hcfg.max_words]:
        i = vocab.get(w)
        if i is None:
            i = vocab.get(w.lower(), UNK_ID)
        ids.append(i)
    if not ids:
        ids = [UNK_ID]
    extra = (hcfg.deviation("graph_edges"),) if hasattr(hcfg, "deviation") else ()  # the loader's edge rule
    m, ro, va, ad = build_graph(nodes, edges, len(ids), hcfg.max_words, hcfg.max_verbs, hcfg.max_nouns, graph_ok,
                                *extra)
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
        self.ccfg = ConceptConfig.model_validate(concept_config or {})
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


# ----------------------------------------------------------------------------- thumbnails
def video_thumbnails(path: Path, n: int, height: int = 72, timeout_s: float = 10.0,
                     max_frames: int = 3000) -> list[bytes]:
    """``n`` JPEGs spread evenly over the video (PyAV decode, scaled to ``height`` px)."""
    from pipeline.video.decode import expected_frames, open_video, pick_video_stream

    container = open_video(path, timeout_s)
    try:
        stream = pick_video_stream(container)
        total, _ = expected_frames(stream, container)
        small = []
        want = None
        if total:
            want = set(np.round(np.linspace(0, max(total - 1, 0), n)).astype(int).tolist())
        t0 = time.monotonic()
        for i, frame in enumerate(container.decode(stream)):
            if i >= max_frames or time.monotonic() - t0 > timeout_s:
                break
            if want is None or i in want:
                w = max(1, int(round(frame.width * height / max(frame.height, 1))))
                small.append(frame.to_image(width=w, height=height))
            if want is not None and i >= max(want):
                break
    finally:
        container.close()
    if not small:
        return []
    pick = np.round(np.linspace(0, len(small) - 1, min(n, len(small)))).astype(int)
    out = []
    for j in pick:
        buf = io.BytesIO()
        small[int(j)].convert("RGB").save(buf, format="JPEG", quality=80)
        out.append(buf.getvalue())
    return out


# ----------------------------------------------------------------------------- probing
def _dummy_text(vocab: dict[str, int], hcfg: HANetConfig) -> TextBatch:
    return text_batch(caption_arrays(["<unk>"], [], [], False, vocab, hcfg))


# ----------------------------------------------------------------------------- build
def load_model(checkpoint: str | Path, device: str | torch.device = "cpu"):
    from pipeline.learn.evaluate import model_from_checkpoint

    ck = load_checkpoint(checkpoint)
    model, tcfg = model_from_checkpoint(ck)
    model.to(device).eval()
    return model, tcfg, ck


def data_config(tcfg: TrainConfig) -> HANetConfig:
    """The loader caps (max_words/verbs/nouns/frames) of the checkpoint's model."""
    try:
        from models import registry

        return registry.train_data_config(tcfg)
    except (ImportError, AttributeError):
        return tcfg.hanet


def _model_cfg(tcfg: TrainConfig):
    try:
        from models import registry

        return registry.model_config(tcfg)
    except (ImportError, AttributeError):
        return tcfg.hanet


def _index_videos(root: Path, extractor: str, splits: Sequence[str] | None) -> list[dict[str, Any]]:
    """Videos with >= 1 feature frame: {key, split, path}, ordered by (key)."""
    t = read_table(root / "videos.parquet", "videos", columns=["key", "path", "split"]).to_pylist()
    by_split: dict[str, dict[str, int]] = {}
    out = []
    for r in t:
        sp = r["split"]
        if splits is not None and sp not in splits:
            continue
        if sp not in by_split:
            fp = feature_path(root, extractor, sp)
            by_split[sp] = read_frame_counts(fp) if fp.exists() else {}
        if by_split[sp].get(dataset_name(r["key"]), 0) > 0:
            out.append(r)
    out.sort(key=lambda r: r["key"])
    return out


def _first_captions(root: Path) -> dict[str, str]:
    t = read_table(root / "captions.parquet", "captions", columns=["caption_id", "key", "caption"]).to_pylist()
    out: dict[str, tuple[int, str]] = {}
    for r in t:
        if r["key"] not in out or r["caption_id"] < out[r["key"]][0]:
            out[r["key"]] = (r["caption_id"], r["caption"] or "")
    return {k: v[1] for k, v in out.items()}


def _dataset_root(root: Path) -> Path | None:
    m = read_manifest(root, "ingest")
    d = (m.inputs or {}).get("dataset_root") if m else None
    return Path(d) if d else None


def _source_path(dataset_root: Path | None, rel: str) -> Path | None:
    if dataset_root is None or not rel or "://" in rel:
        return None
    base = dataset_root.resolve()
    p = (base / rel).resolve()
    if base != p and base not in p.parents:
        return None
    return p if p.is_file() else None


@torch.inference_mode()
def build_index(checkpoint: str | Path, shards_root: str | Path, index_dir: str | Path | None = None, *,
                splits: Sequence[str] | None = None, dataset_root: str | Path | None = None,
                n_thumbs: int = 4, thumb_height: int = 72, batch: int = 128, device: str = "cpu",
                store_dtype: str = "float32", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Encode every video of ``shards_root`` once with ``checkpoint`` into ``index_dir``
    (default: ``<checkpoint folder>/index``). Returns the index metadata (+ ``index_dir``)."""
    t0 = time.perf_counter()
    checkpoint, root = Path(checkpoint).resolve(), Path(shards_root).resolve()
    index_dir = Path(index_dir) if index_dir is not None else checkpoint.parent / "index"
    model, tcfg, ck = load_model(checkpoint, device)
    hcfg, extractor = data_config(tcfg), tcfg.features
    vocab = read_vocab(root)
    n_words = max(vocab.values()) + 1 if vocab else 0
    if getattr(model, "vocab_size", n_words) != n_words:
        raise SearchError(f"{checkpoint.name} was trained with a {model.vocab_size}-word vocabulary, the shards at "
                          f"{root} have {n_words} words: index the dataset the checkpoint was trained on")
    videos = _index_videos(root, extractor, splits)
    if not videos:
        raise SearchError(f"{root}: no video with '{extractor}' features to index")
    droot = Path(dataset_root) if dataset_root is not None else _dataset_root(root)
    captions = _first_captions(root)
    sources: dict[str, FeatureSource] = {}
    dtype = {"float32": np.float32, "float16": np.float16}[store_dtype]

    keep: set[str] | None = None
    levels_used: list[str] = []
    chunks: dict[str, list[np.ndarray]] = {}
    n_frames = np.zeros(len(videos), dtype=np.int32)
    for a in range(0, len(videos), batch):
        part = videos[a:a + batch]
        fm = []
        for r in part:
            src = sources.get(r["split"])
            if src is None:
                src = sources[r["split"]] = FeatureSource(feature_path(root, extractor, r["split"]), hcfg.max_frames)
            fm.append(src.get(r["key"]))
        feats, masks = zip(*fm)
        vb = VideoBatch(feats=torch.from_numpy(np.stack(feats)), mask=torch.from_numpy(np.stack(masks)))
        n_frames[a:a + len(part)] = vb.mask.sum(1).numpy()
        ve = model.encode_videos(vb.to(device))
        if keep is None:  # which outputs does the scoring read?
            rec = KeyRecorder(ve)
            model.similarity_parts(rec, model.encode_texts(_dummy_text(vocab, hcfg).to(device)))
            used = set(ve) if rec.iterated or not rec.used else rec.used & set(ve)
            keep = {k for k in used | set(_ALWAYS_KEEP) if k in ve and torch.is_tensor(ve[k])}
        for k in sorted(keep):
            v = ve[k].detach().cpu()
            arr = v.numpy() if v.dtype == torch.bool or not v.is_floating_point() else v.float().numpy().astype(dtype)
            chunks.setdefault(f"enc/{k}", []).append(arr)
        if "glo" in ve:
            chunks.setdefault("shortlist", []).append(
                torch.nn.functional.normalize(ve["glo"].float(), dim=-1).cpu().numpy())
        lv = pooled_video_levels(ve, sorted(keep))
        if lv is not None:
            chunks.setdefault("shortlist_levels", []).append(lv[1].cpu().numpy())
            levels_used = lv[0]
        for kind in ("verb", "noun"):
            fk, pk = f"frame_{kind}_probs", f"{kind}_probs"
            if fk in ve and pk in ve:
                top = ve[pk].float().topk(min(HEAT_TOP_K, ve[pk].shape[-1]), dim=-1).indices  # (B, k)
                frames = ve[fk].float().gather(2, top.unsqueeze(1).expand(-1, ve[fk].shape[1], -1))
                chunks.setdefault(f"heat/{kind}_ids", []).append(top.cpu().numpy().astype(np.int32))
                chunks.setdefault(f"heat/{kind}_frames", []).append(frames.cpu().numpy().astype(np.float16))
        if progress:
            progress(f"encoded {min(a + batch, len(videos))}/{len(videos)} videos")
    for s in sources.values():
        s.close()
    arrays = {k: np.concatenate(v, 0) for k, v in chunks.items()}
    t_encode = time.perf_counter() - t0

    writer = store.IndexWriter(index_dir)
    try:
        rows, n_with_thumbs, thumb_errors = [], 0, 0
        for i, r in enumerate(videos):
            thumbs: list[str] = []
            src = _source_path(droot, r["path"]) if n_thumbs > 0 else None
            if src is not None:
                try:
                    jpgs = video_thumbnails(src, n_thumbs, thumb_height)
                except Exception as exc:  # noqa: BLE001 - a bad source video gets no thumbnails
                    log.warning("thumbnails of %s: %s", r["key"], exc)
                    jpgs, thumb_errors = [], thumb_errors + 1
                stem = store.safe_name(r["key"])
                thumbs = [writer.write_thumb(f"{stem}_{j}.jpg", b) for j, b in enumerate(jpgs)]
                n_with_thumbs += bool(thumbs)
            rows.append({"row": i, "key": r["key"], "split": r["split"], "n_frames": int(n_frames[i]),
                         "source": r["path"] or "", "caption": captions.get(r["key"], ""), "thumbs": thumbs})
        parse_m, concepts_m = read_manifest(root, "parse"), read_manifest(root, "concepts")
        meta = {
            "checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint),
            "checkpoint_epoch": ck.get("epoch"), "model_name": ck.get("model_name", tcfg.model),
            "train_config_json": ck["config_json"], "shards_root": str(root), "extractor": extractor,
            "shards_fingerprint": data_fingerprint(root, extractor), "vocabulary_fingerprint": vocabulary_fingerprint(root),
            "vocab_size": n_words, "checkpoint_data_fingerprint": ck.get("data_fingerprint"),
            "text_config": parse_m.config if parse_m else {}, "concept_config": concepts_m.config if concepts_m else {},
            "dataset_root": str(droot) if droot else None, "splits": sorted({r["split"] for r in videos}),
            "arrays": {k: [list(a.shape), str(a.dtype)] for k, a in arrays.items()},
            "shortlist_levels": levels_used,
            "store_dtype": store_dtype, "n_with_thumbnails": n_with_thumbs, "thumbnail_errors": thumb_errors,
            "encode_seconds": round(t_encode, 3), "seconds": round(time.perf_counter() - t0, 3),
        }
        writer.write(arrays, rows, meta)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    log.info("indexed %d videos (%d with thumbnails) into %s", len(videos), n_with_thumbs, index_dir)
    return {**meta, "n_videos": len(videos), "index_dir": str(index_dir), "build_dir": str(writer.dir)}


# ----------------------------------------------------------------------------- shortlist
POOLED_LEVELS = ("ind_a", "ind_e", "loc_a", "loc_e")
FAST_MIN_ROWS = 20_000   # from this many videos a float16 copy of the shortlist matrix is tried


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


class ShortlistMatrix:
    """Stage 1 over an (n, D) float32 matrix (usually a read-only memory map): exact top-k of
    ``matrix @ q``. From FAST_MIN_ROWS rows, if a float16 matrix-vector product is measurably
    faster on this CPU (probed once), a float16 copy scores all rows, the best ``4k + 64`` are
    re-scored exactly in float32, and the exact top-k of those is returned (float16 errors,
    ~1e-3, cannot move a true top-k row below 4k + 64 in practice)."""

    def __init__(self, matrix: torch.Tensor, fast: str = "auto"):
        self.m = matrix
        self.n = int(matrix.shape[0])
        self.m16: torch.Tensor | None = None
        if fast == "on" or (fast == "auto" and self.n >= FAST_MIN_ROWS and self._f16_faster()):
            self.m16 = torch.empty(matrix.shape, dtype=torch.float16)
            for a in range(0, self.n, 65536):
                self.m16[a:a + 65536] = matrix[a:a + 65536].to(torch.float16)

    def _f16_faster(self) -> bool:
        probe = self.m[: min(self.n, 16384)].clone()
        p16 = probe.to(torch.float16)
        q = torch.nn.functional.normalize(torch.ones(probe.shape[1]), dim=0)

        def best(f) -> float:
            f()
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t)
            return min(ts)

        t32 = best(lambda: probe @ q)
        t16 = best(lambda: p16 @ q.to(torch.float16))
        return t16 * 1.3 < t32

    @property
    def nbytes(self) -> int:
        return self.m16.numel() * 2 if self.m16 is not None else 0

    def topk(self, q: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(the k best rows in index order, their exact scores)"""
        k = max(1, min(int(k), self.n))
        if self.m16 is None:
            s = (self.m @ q).numpy()
            rows = np.argpartition(-s, k - 1)[:k] if k < self.n else np.arange(self.n)
            rows = np.sort(rows).astype(np.int64)
            return rows, s[rows]
        s16 = (self.m16 @ q.to(torch.float16)).float().numpy()
        c = min(self.n, 4 * k + 64)
        cand = np.sort(np.argpartition(-s16, c - 1)[:c] if c < self.n else np.arange(self.n)).astype(np.int64)
        s = (self.m[torch.from_numpy(cand)] @ q).numpy()
        keep = np.argpartition(-s, k - 1)[:k] if k < cand.size else np.arange(cand.size)
        keep = np.sort(keep)
        return cand[keep], s[keep]


def shortlist_topk(matrix: torch.Tensor, q: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows (index order) of ``matrix @ q`` and their scores."""
    return ShortlistMatrix(matrix, fast="off").topk(q, k)


# ----------------------------------------------------------------------------- search


@dataclass
class Hit:
    row: int
    key: str
    split: str
    score: float
    levels: dict[str, float]
    shared: dict[str, list[dict[str, Any]]]
    caption: str
    thumbs: list[str]
    shortlist_score: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "key": self.key, "split": self.split, "score": self.score, "levels": self.levels,
                "shared_concepts": self.shared, "caption": self.caption, "thumbs": self.thumbs,
                "shortlist_score": self.shortlist_score}


class Searcher:
    """An opened index + its model; ``search(query)`` is thread-safe (inference only)."""

    def __init__(self, index_dir: str | Path, *, checkpoint: str | Path | None = None,
                 shards_root: str | Path | None = None, device: str = "cpu", mmap: bool = True,
                 parser: QueryParser | None = None, shortlist: str = "auto", fast: str = "auto"):
        self.index_dir = Path(index_dir)
        self.build_dir = store.current_build(self.index_dir)
        self.meta = store.read_meta(self.build_dir)
        self.videos = store.read_videos(self.build_dir)
        self.arrays = store.read_arrays(self.build_dir, mmap=mmap)
        self.device = torch.device(device)
        ckpt = Path(checkpoint) if checkpoint else Path(self.meta["checkpoint"])
        self.shards_root = Path(shards_root) if shards_root else Path(self.meta["shards_root"])
        if not ckpt.exists():
            raise SearchError(f"{ckpt}: the index's checkpoint is gone; pass --checkpoint or rebuild the index")
        sha = sha256_file(ckpt)
        if sha != self.meta["checkpoint_sha256"]:
            raise SearchError(f"{ckpt} is not the checkpoint this index was built with (sha256 {sha[:12]} != "
                              f"{self.meta['checkpoint_sha256'][:12]}); rebuild the index with `vtr index`")
        vfp = vocabulary_fingerprint(self.shards_root)
        if vfp != self.meta["vocabulary_fingerprint"]:
            raise SearchError(f"the index at {self.index_dir} was built for another vocabulary (fingerprint "
                              f"{self.meta['vocabulary_fingerprint']}) than the one at {self.shards_root} ({vfp}); "
                              "rebuild the index with `vtr index` for these shards")
        self.model, self.tcfg, _ = load_model(ckpt, self.device)
        self.hcfg = data_config(self.tcfg)
        mcfg = _model_cfg(self.tcfg)
        self.vocab = read_vocab(self.shards_root)
        self.lemmas = concept_lemmas(self.shards_root)
        self.lemma_ids = {kind: {w: i for i, w in enumerate(ws)} for kind, ws in self.lemmas.items()}
        self.parse = parser or QueryParser(self.meta.get("text_config"), self.meta.get("concept_config"))
        self.n = len(self.videos)
        self.enc = {k[4:]: _tensor(v) for k, v in self.arrays.items() if k.startswith("enc/")}
        self.shortlist_mode = self._pick_shortlist(shortlist)
        name = {"levels": "shortlist_levels", "global": "shortlist"}.get(self.shortlist_mode)
        self.shortlist = ShortlistMatrix(_tensor(self.arrays[name]), fast) if name else None
        self._topn = {"verb": max(1, int(getattr(mcfg, "n_action_clips", 10))),
                      "noun": max(1, int(getattr(mcfg, "n_entity_clips", 20)))}

    # -- query -----------------------------------------------------------------
    def encode_query(self, query: str) -> tuple[dict[str, torch.Tensor], ParsedQuery, dict[str, Any]]:
        q = check_query(query)
        pq_ = self.parse(q)
        arrs = caption_arrays(pq_.tokens, pq_.nodes, pq_.edges, pq_.graph_ok, self.vocab, self.hcfg)
        if arrs["n_unk"] == arrs["word_ids"].size:
            pq_.notes.append("no query word is in the vocabulary")
        with torch.inference_mode():
            te = self.model.encode_texts(text_batch(arrs).to(self.device))
        info = {"tokens": pq_.tokens[:self.hcfg.max_words], "unknown_words": arrs["n_unk"],
                "verbs": int(arrs["node_valid"][1:1 + self.hcfg.max_verbs].sum()),
                "nouns": int(arrs["node_valid"][1 + self.hcfg.max_verbs:].sum())}
        return te, pq_, info

    def _rows(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in self.enc.items():
            x = v.index_select(0, idx)
            out[k] = (x.float() if x.is_floating_point() else x).to(self.device)
        return out

    def _pick_shortlist(self, mode: str) -> str:
        """'levels' (level-pooled rows, see :func:`pooled_video_levels`; default), 'global' (global
        embeddings only), or 'concepts' (Jaccard of concept scores: a model with neither)."""
        have = {"levels": "shortlist_levels" in self.arrays and bool(self.meta.get("shortlist_levels")),
                "global": "shortlist" in self.arrays, "concepts": "enc/verb_probs" in self.arrays}
        if mode == "auto":  # 'none': the model exposes nothing cheap; every search scores all videos
            return next((m for m in ("levels", "global", "concepts") if have[m]), "none")
        if mode not in have or not have[mode]:
            raise SearchError(f"shortlist '{mode}' is not available in this index (have: "
                              f"{', '.join(m for m, ok in have.items() if ok)})")
        return mode

    def shortlist_rows(self, te: dict[str, torch.Tensor], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: (the ``k`` shortlisted rows in index order, their shortlist scores)."""
        q = None
        if self.shortlist_mode == "levels":
            q = pooled_text_levels(te, self.meta["shortlist_levels"])
        elif self.shortlist_mode == "global" and "glo" in te:
            q = torch.nn.functional.normalize(te["glo"].float().cpu(), dim=-1)[0]
        if q is not None:
            return self.shortlist.topk(q, k)
        from models.similarity import jaccard_matrix

        s = (jaccard_matrix(self.enc["verb_probs"].float(), te["verb_probs"].float().cpu())[:, 0]
             + jaccard_matrix(self.enc["noun_probs"].float(), te["noun_probs"].float().cpu())[:, 0]).numpy()
        k = max(1, min(int(k), s.size))
        rows = np.sort(np.argpartition(-s, k - 1)[:k]).astype(np.int64)
        return rows, s[rows]

    @torch.inference_mode()
    def rank(self, te: dict[str, torch.Tensor], k: int = DEFAULT_K, exhaustive: bool = False,
             block: int = 512) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray | None, dict]:
        """(rows, fused scores, parts, shortlist scores) of the scored videos, best first."""
        t0 = time.perf_counter()
        s1 = None
        if exhaustive or self.shortlist_mode == "none":
            cand = torch.arange(self.n)
        else:
            rows, s1_rows = self.shortlist_rows(te, k)
            s1 = dict(zip(rows.tolist(), s1_rows.tolist()))
            cand = torch.from_numpy(rows)  # index order: a forward sweep over the (mapped) arrays
        t1 = time.perf_counter()
        parts: dict[str, list[torch.Tensor]] = {}
        for a in range(0, cand.numel(), block):
            p = self.model.similarity_parts(self._rows(cand[a:a + block]), te)
            for name, m in p.items():
                parts.setdefault(name, []).append(m[:, 0].float().cpu())
        P = {name: torch.cat(v).numpy() for name, v in parts.items()}
        fused = (P["c_l"] + P["c_p"]) / 2 if "c_l" in P and "c_p" in P else self._fallback(cand, te)
        order = np.lexsort((cand.numpy(), -fused))  # score desc, then row asc
        rows = cand.numpy()[order]
        timing = {"shortlist_ms": (t1 - t0) * 1e3, "rerank_ms": (time.perf_counter() - t1) * 1e3,
                  "scored": int(cand.numel())}
        s1_rows = np.asarray([s1[int(r)] for r in rows]) if s1 is not None else None
        return rows, fused[order], {n: v[order] for n, v in P.items()}, s1_rows, timing

    def _fallback(self, cand, te):
        return self.model.similarity(self._rows(cand), te)[:, 0].float().cpu().numpy()

    def shared_concepts(self, row: int, parsed: ParsedQuery) -> dict[str, list[dict[str, Any]]]:
        """Concepts of the query (caption rules: lemmas in the concept vocabulary) that the model
        finds in the video (among its top n_action_clips verbs / n_entity_clips nouns, or p >= 0.5)."""
        out: dict[str, list[dict[str, Any]]] = {"verb": [], "noun": []}
        seen = set()
        for kind, lemma in parsed.concepts:
            cid = self.lemma_ids.get(kind, {}).get(lemma)
            key = f"enc/{kind}_probs"
            if cid is None or (kind, cid) in seen or key not in self.arrays:
                continue
            seen.add((kind, cid))
            probs = np.asarray(self.arrays[key][row], dtype=np.float32)
            p = float(probs[cid])
            rank = int((probs > p).sum())
            if p >= 0.5 or rank < self._topn[kind]:
                out[kind].append({"concept": lemma, "id": int(cid), "video_prob": round(p, 4), "video_rank": rank + 1})
        return out

    def search(self, query: str, top: int = DEFAULT_TOP, k: int = DEFAULT_K,
               exhaustive: bool = False) -> dict[str, Any]:
        load = getattr(self.parse, "_load", None)
        if load is not None:
            load()  # spaCy / WordNet load once per process: not part of a query's time
        t0 = time.perf_counter()
        top = max(1, min(int(top), self.n))
        k = max(top, int(k))
        te, parsed, info = self.encode_query(query)
        t1 = time.perf_counter()
        rows, fused, parts, s1, timing = self.rank(te, k, exhaustive)
        hits = []
        for j in range(min(top, rows.size)):
            r = int(rows[j])
            v = self.videos[r]
            hits.append(Hit(r, v["key"], v["split"], float(fused[j]),
                            {n: float(parts[n][j]) for n in PART_LEVELS if n in parts},
                            self.shared_concepts(r, parsed), v["caption"], list(v["thumbs"] or []),
                            float(s1[j]) if s1 is not None else None).as_dict())
        q_concepts = {"verb": sorted({l for kd, l in parsed.concepts if kd == "verb" and l in self.lemma_ids["verb"]}),
                      "noun": sorted({l for kd, l in parsed.concepts if kd == "noun" and l in self.lemma_ids["noun"]})}
        return {"query": parsed.text, "mode": "exhaustive" if exhaustive else "two-stage",
                "shortlist": None if exhaustive else self.shortlist_mode,
                "k": min(k, self.n), "n_videos": self.n, "results": hits, "query_info": {**info, "concepts": q_concepts,
                                                                                     "notes": parsed.notes},
                "enabled_levels": list(getattr(self.model, "enabled_parts", ())),
                "timing_ms": {"text": (t1 - t0) * 1e3, **{a: b for a, b in timing.items() if a != "scored"},
                              "total": (time.perf_counter() - t0) * 1e3}}

    # -- heatmap ---------------------------------------------------------------
    def heatmap_png(self, row: int) -> bytes | None:
        """Frame-level confidences of the video's top verb / noun concepts as a PNG (None if not stored)."""
        if "heat/verb_frames" not in self.arrays or not 0 <= row < self.n:
            return None
        from pipeline.learn.heatmaps import heatmap_png

        n_valid = max(1, int(self.videos[row]["n_frames"]))
        panels = []
        for kind in ("verb", "noun"):
            ids = np.asarray(self.arrays[f"heat/{kind}_ids"][row])
            mat = np.asarray(self.arrays[f"heat/{kind}_frames"][row], dtype=np.float32)[:n_valid].T
            probs = np.asarray(self.arrays[f"enc/{kind}_probs"][row], dtype=np.float32)
            names = self.lemmas.get(kind, [])
            labels = [f"{names[c] if c < len(names) and names[c] else kind + str(c)} ({probs[c]:.2f})" for c in ids]
            panels.append((kind, mat, labels))
        return heatmap_png(panels, n_valid, HEAT_TOP_K, self.videos[row]["key"], dpi=80)

    def file_path(self, rel: str) -> Path | None:
        """The path of an index file named by a result (thumbnails) or None: nothing else is served."""
        if rel not in self._served:
            return None
        return self.build_dir / rel

    @property
    def _served(self) -> set[str]:
        s = getattr(self, "_served_set", None)
        if s is None:
            s = self._served_set = {t for v in self.videos for t in (v["thumbs"] or [])}
        return s


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A torch view of a (read-only) memory map, without copying."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # non-writable array: we never write
        return torch.from_numpy(a)


def format_results(res: dict[str, Any]) -> str:
    """Human-readable result list for the CLI."""
    lines = [f"query: {res['query']!r}  ({res['mode']}, K={res['k']} of {res['n_videos']} videos, "
             f"{res['timing_ms']['total']:.0f} ms)"]
    qc = res["query_info"]["concepts"]
    lines.append(f"query concepts: verbs {', '.join(qc['verb']) or '-'}; nouns {', '.join(qc['noun']) or '-'}")
    for note in res["query_info"].get("notes", []):
        lines.append(f"note: {note}")
    have = res["results"][0]["levels"] if res["results"] else {}
    lv = [n for n in ("ind_a", "ind_e", "loc_a", "loc_e", "glo", "c_p") if n in have]
    lines.append(f"{'#':>3} {'score':>7}  " + " ".join(f"{n:>6}" for n in lv) + "  video / shared concepts")
    for i, h in enumerate(res["results"], 1):
        shared = ", ".join(c["concept"] for kind in ("verb", "noun") for c in h["shared_concepts"][kind]) or "-"
        lines.append(f"{i:>3} {h['score']:7.4f}  " + " ".join(f"{h['levels'][n]:6.3f}" for n in lv)
                     + f"  {h['key']} [{h['split']}]  shared: {shared}")
        if h["caption"]:
            lines.append(f"{'':>13}e.g. \"{h['caption'][:80]}\"")
    return "\n".join(lines)
