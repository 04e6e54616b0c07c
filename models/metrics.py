"""Retrieval metrics for a videos x captions score matrix (text->video and video->text).

Conventions (the same for the dense and the streaming versions):

* ``scores[v, c]`` is the similarity of video ``v`` and caption ``c``; higher = better.
  ``cap2vid[c]`` is the index of caption ``c``'s own video.
* **t2v rank** of caption ``c`` (1-based) = 1 + the number of OTHER videos ``v'`` with
  ``scores[v', c] >= scores[cap2vid[c], c]``.
* **v2t rank** of video ``v`` (1-based) = its best position among its own captions
  = 1 + the number of captions of OTHER videos scoring ``>=`` the best-scoring own caption.
  (Own captions never push each other down.)
* **Ties are pessimistic**: a wrong item with exactly the true item's score counts as
  ranked above it. A degenerate model that gives every pair the same score therefore
  gets the worst possible ranks (R@K ~ 0), never a free 100 %. The reference sorts
  with ``np.argsort`` and breaks ties by index order, which silently rewards constant
  scores for low-index items.
* Captions are **not de-duplicated**. The reference passes captions through ``set()``
  (order changes between runs; a duplicate caption shared by two videos then has two
  correct videos); here every caption row is one query with exactly one correct video.
* R@K is the percentage of queries with rank <= K. MedR = ``median(ranks)`` of the 1-based
  ranks, i.e. the reference's ``np.median(0-based ranks) + 1`` (t2vretrieval/models/
  evaluation.py), NOT floored: an even count can give x.5. MeanR = mean rank.
  ``rsum`` = t2v R@1+R@5+R@10 + v2t R@1+R@5+R@10.
* NaN scores are rejected (ValueError): they would make ranks meaningless.

:class:`RankAccumulator` computes exactly the same ranks from column blocks (a chunk of
captions scored against ALL videos) without holding the full matrix: t2v ranks are
final once a caption's column is seen; for v2t it keeps only the score rows of videos
whose captions have not all been seen yet. Feed captions grouped by video and it holds
at most about a quarter of the matrix; in the worst case (random caption order) the
whole matrix, once.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

KS = (1, 5, 10)
METRIC_KEYS = tuple(
    f"{d}_{m}" for d in ("t2v", "v2t") for m in ("r1", "r5", "r10", "medr", "meanr")
) + ("rsum",)


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().float().numpy()
    return np.asarray(x)


def _check_finite(block: np.ndarray) -> None:
    if np.isnan(block).any():
        raise ValueError("score matrix contains NaN; ranks would be meaningless")


def summarize_ranks(t2v_ranks: Sequence[int] | np.ndarray, v2t_ranks: Sequence[int] | np.ndarray,
                    ks: Sequence[int] = KS) -> dict[str, float]:
    """R@K (percent), MedR, MeanR for both directions and rsum from 1-based ranks."""
    out: dict[str, float] = {}
    rsum = 0.0
    for name, ranks in (("t2v", np.asarray(t2v_ranks)), ("v2t", np.asarray(v2t_ranks))):
        if ranks.size == 0:
            raise ValueError(f"no {name} ranks to summarize")
        if ranks.min() < 1:
            raise ValueError(f"{name} ranks must be 1-based")
        for k in ks:
            r = float(100.0 * np.mean(ranks <= k))
            out[f"{name}_r{k}"] = r
            rsum += r
        out[f"{name}_medr"] = float(np.median(ranks))
        out[f"{name}_meanr"] = float(np.mean(ranks))
    out["rsum"] = rsum
    return out


def _check_cap2vid(cap2vid: np.ndarray, n_videos: int) -> np.ndarray:
    cap2vid = np.asarray(cap2vid, dtype=np.int64)
    if cap2vid.ndim != 1:
        raise ValueError("cap2vid must be 1-D")
    if cap2vid.size and (cap2vid.min() < 0 or cap2vid.max() >= n_videos):
        raise ValueError("cap2vid holds a video index outside the score matrix")
    if np.bincount(cap2vid, minlength=n_videos).min(initial=1) == 0:
        raise ValueError("every video needs at least one caption (v2t rank undefined otherwise)")
    return cap2vid


def retrieval_ranks(scores, cap2vid) -> tuple[np.ndarray, np.ndarray]:
    """1-based (t2v ranks per caption, v2t ranks per video) of a dense (n_videos, n_captions) matrix."""
    s = _as_numpy(scores).astype(np.float32, copy=False)
    n_v, n_c = s.shape
    cap2vid = _check_cap2vid(cap2vid, n_v)
    if cap2vid.size != n_c:
        raise ValueError(f"cap2vid has {cap2vid.size} entries for {n_c} captions")
    _check_finite(s)
    cols = np.arange(n_c)
    pos = s[cap2vid, cols]                                   # (C,) own-video score of each caption
    t2v = (s >= pos[None, :]).sum(axis=0).astype(np.int64)   # own video counted once -> 1-based
    # v2t: best own-caption score per video, then wrong captions at or above it
    best = np.full(n_v, -np.inf, dtype=np.float32)
    np.maximum.at(best, cap2vid, pos)
    # own captions at or above the best are exactly those AT the best (>= 1 per video)
    own_at_best = np.bincount(cap2vid[pos >= best[cap2vid]], minlength=n_v)
    v2t = 1 + (s >= best[:, None]).sum(axis=1).astype(np.int64) - own_at_best
    return t2v, v2t


def retrieval_metrics(scores, cap2vid) -> dict[str, float]:
    """All metrics of a dense score matrix (n_videos, n_captions)."""
    t2v, v2t = retrieval_ranks(scores, cap2vid)
    return summarize_ranks(t2v, v2t)


class RankAccumulator:
    """Exact ranks from column blocks, without holding the whole score matrix.

    ``add(caption_ids, block)`` takes ``block[v, j]`` = score of video ``v`` (ALL videos, in
    order) and caption ``caption_ids[j]``. Each caption must be added exactly once; blocks
    may come in any order. ``ranks()`` / ``metrics()`` once every caption was added.
    """

    def __init__(self, cap2vid, n_videos: int):
        self.n_videos = int(n_videos)
        self.cap2vid = _check_cap2vid(cap2vid, self.n_videos)
        self.n_captions = int(self.cap2vid.size)
        self.t2v = np.zeros(self.n_captions, dtype=np.int64)       # 0 = not seen yet
        self._remaining = np.bincount(self.cap2vid, minlength=self.n_videos).astype(np.int64)
        self._best = np.full(self.n_videos, -np.inf, dtype=np.float32)
        self._v2t = np.ones(self.n_videos, dtype=np.int64)          # 1 + wrong captions >= best
        self._complete = np.zeros(self.n_videos, dtype=bool)
        # held rows of videos still waiting for captions: list of (video_ids, caption_ids, rows)
        self._held: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.peak_held_bytes = 0

    @property
    def held_bytes(self) -> int:
        return sum(r.nbytes for _, _, r in self._held)

    def add(self, caption_ids, block) -> None:
        caption_ids = np.asarray(caption_ids, dtype=np.int64)
        s = _as_numpy(block).astype(np.float32, copy=False)
        if s.shape != (self.n_videos, caption_ids.size):
            raise ValueError(f"block shape {s.shape} != ({self.n_videos}, {caption_ids.size})")
        if caption_ids.size == 0:
            return
        if (self.t2v[caption_ids] != 0).any() or np.unique(caption_ids).size != caption_ids.size:
            raise ValueError("a caption was added twice")
        _check_finite(s)
        vids = self.cap2vid[caption_ids]
        cols = np.arange(caption_ids.size)
        pos = s[vids, cols]
        self.t2v[caption_ids] = (s >= pos[None, :]).sum(axis=0)

        # 1) videos complete before this block: none of their captions are here
        done = np.flatnonzero(self._complete)
        if done.size:
            self._v2t[done] += (s[done] >= self._best[done, None]).sum(axis=1)

        # 2) update own-caption bests and remaining counts
        np.maximum.at(self._best, vids, pos)
        np.subtract.at(self._remaining, vids, 1)
        touched = np.unique(vids)
        newly = touched[self._remaining[touched] == 0]

        # 3) videos completed by this block: count held past rows and this block
        if newly.size:
            thr = self._best[newly, None]
            own = vids[None, :] == newly[:, None]
            self._v2t[newly] += ((s[newly] >= thr) & ~own).sum(axis=1)
            for hv, hc, rows in self._held:
                sel = np.flatnonzero(np.isin(hv, newly))
                if sel.size == 0:
                    continue
                vv = hv[sel]
                held_own = self.cap2vid[hc][None, :] == vv[:, None]
                self._v2t[vv] += ((rows[sel] >= self._best[vv, None]) & ~held_own).sum(axis=1)
            self._complete[newly] = True

        # 4) hold this block's rows of videos that are still incomplete; drop finished rows
        waiting = np.flatnonzero(~self._complete)
        kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for hv, hc, rows in self._held:
            keep = ~self._complete[hv]
            if keep.all():
                kept.append((hv, hc, rows))
            elif keep.any():
                kept.append((hv[keep], hc, np.ascontiguousarray(rows[keep])))
        if waiting.size:
            kept.append((waiting, caption_ids.copy(), np.ascontiguousarray(s[waiting])))
        self._held = kept
        self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)

    @property
    def complete(self) -> bool:
        return bool(self._complete.all()) and bool((self.t2v > 0).all())

    def ranks(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.complete:
            missing = int((self.t2v == 0).sum())
            raise RuntimeError(f"{missing} captions were never added")
        return self.t2v.copy(), self._v2t.copy()

    def metrics(self) -> dict[str, float]:
        return summarize_ranks(*self.ranks())


METRIC_COLUMNS = {"R@1": "r1", "R@5": "r5", "R@10": "r10", "MedR": "medr", "MeanR": "meanr"}


def format_metrics(m: Mapping[str, float], table: bool = False) -> str:
    """One line: 't2v R@1/5/10 a/b/c MedR m MeanR x | v2t ... | rsum s'; ``table``: a text table,
    one row per direction (columns :data:`METRIC_COLUMNS`) and an rsum row."""
    if table:
        lines = [f"{'':>6} " + " ".join(f"{k:>7}" for k in METRIC_COLUMNS)]
        for d in ("t2v", "v2t"):
            lines.append(f"{d:>6} " + " ".join(f"{float(m[f'{d}_{s}']):7.2f}" for s in METRIC_COLUMNS.values()))
        lines.append(f"{'rsum':>6} {float(m['rsum']):7.2f}")
        return "\n".join(lines)
    parts = []
    for d in ("t2v", "v2t"):
        parts.append(f"{d} R@1/5/10 {m[f'{d}_r1']:.1f}/{m[f'{d}_r5']:.1f}/{m[f'{d}_r10']:.1f} "
                     f"MedR {m[f'{d}_medr']:g} MeanR {m[f'{d}_meanr']:.1f}")
    return " | ".join(parts) + f" | rsum {m['rsum']:.1f}"
