"""Text -> video search over a built dataset with a trained checkpoint.

The index it searches: :func:`pipeline.search.index.build_index`; what both share (model loading, query
parsing, pooled shortlist levels): pipeline/search/encode.py.

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

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.fingerprint import sha256_file, vocabulary_fingerprint
from pipeline.learn.dataset import concept_lemmas, read_vocab
from pipeline.search.encode import (DEFAULT_K, DEFAULT_TOP, HEAT_TOP_K, PART_LEVELS, ParsedQuery, QueryParser, SearchError,
                                    _model_cfg, caption_arrays, check_query, data_config, load_model, pooled_text_levels,
                                    read_vocabularies, text_batch)
from pipeline.search.rerank import can_prepare, prepared_parts
from pipeline.search.shortlist import ShortlistMatrix
from storage import index as store

log = logging.getLogger(__name__)


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
                 parser: QueryParser | None = None, shortlist: str = "auto", fast: str = "auto",
                 coarse: str = "auto", rerank: str = "auto"):
        """``coarse`` / ``fast``: stage-1 passes (pipeline/search/shortlist.py; "off" = the exact product);
        ``rerank``: "auto" scores the shortlist on the index's prepared arrays where it has them
        (pipeline/search/rerank.py), "model" always through ``model.similarity_parts``."""
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
        vfp = vocabulary_fingerprint(*read_vocabularies(self.shards_root))
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
        self.shortlist = ShortlistMatrix(_tensor(self.arrays[name]), fast, coarse) if name else None
        if rerank not in ("auto", "model"):
            raise SearchError(f"rerank must be 'auto' or 'model', not {rerank!r}")
        self.prepared = rerank == "auto" and can_prepare(self.model, list(self.arrays))
        if self.prepared:  # the stored per-video norms / Gram matrices, gathered with the outputs
            self.enc.update({k[5:]: _tensor(v) for k, v in self.arrays.items() if k.startswith("prep/")})
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
        prepared = self.prepared and not exhaustive  # exhaustive (the check) always scores through the model
        for a in range(0, cand.numel(), block):
            ve = self._rows(cand[a:a + block])
            p = prepared_parts(self.model, ve, te) if prepared else self.model.similarity_parts(ve, te)
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
