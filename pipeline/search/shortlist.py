"""Stage 1 of search: the ``k`` best rows of ``matrix @ q`` over an (n, D) float32 matrix (usually a
read-only memory map of the index's level-pooled shortlist rows, D = 5 x 1024 for HANet).

Exact, the product streams the whole matrix once per query: 10,000 x 5,120 float32 is 205 MB (~20 ms
here), 35,000 videos 717 MB (~70 ms). Two cheaper first passes, each followed by an EXACT float32
re-score of its best candidates (so the scores returned are always the exact ones):

* ``coarse`` (default from COARSE_MIN_ROWS rows): the rows projected once, at open, onto the top
  ``coarse_dim`` right singular vectors of an evenly spaced sample of them (randomised SVD, fixed seed;
  uncentred, so inner products are what it preserves), stored float16 (float32 where a float16
  product is not faster here); a query scores all rows in that space (35,000 x 256 x 2 B = 18 MB), the
  best ``coarse_candidates(k)`` are re-scored exactly. Approximate: a true top-k row whose projected
  score falls below the candidate cut is missed; how often is measured
  (bench/bench_search_scale.py: 'same shortlist as exact'), and R@10 against exhaustive with it;
* ``fast`` (float16 copy of the full matrix; tried from FAST_MIN_ROWS rows when coarse is off): the best
  ``4k + 64`` by the float16 product are re-scored (float16 errors, ~1e-3, cannot move a true top-k row
  below 4k + 64 in practice).
"""
from __future__ import annotations

import time

import numpy as np
import torch

FAST_MIN_ROWS = 20_000   # from this many videos a float16 copy of the shortlist matrix is tried
COARSE_MIN_ROWS = 4_096  # below this the exact product is already cheap
COARSE_DIM = 256
COARSE_SAMPLE = 8_192    # rows the projection is fitted on
BLOCK = 65_536


def coarse_candidates(k: int) -> int:
    """How many rows the coarse pass hands to the exact re-score for a top-``k`` shortlist: 4k + 64. Measured
    (bench_search_scale.py's index, 150 queries, K = 100): the exact top-100 was whole in the coarse top 164 on
    every query at 10,000 and at 35,000 videos (top 116: 97-99 % at worst), so 464 leaves ~3x margin."""
    return 4 * k + 64


def _best_ms(f, reps: int = 5) -> float:
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def _f16_faster(m: torch.Tensor) -> bool:
    """Whether a float16 matrix-vector product beats float32 on this CPU (probed on up to 16,384 rows)."""
    probe = m[: min(int(m.shape[0]), 16384)].float().clone()
    p16 = probe.to(torch.float16)
    q = torch.nn.functional.normalize(torch.ones(probe.shape[1]), dim=0)
    return _best_ms(lambda: p16 @ q.to(torch.float16)) * 1.3 < _best_ms(lambda: probe @ q)


def _top(s: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest of ``s``, in increasing index order."""
    idx = np.argpartition(-s, k - 1)[:k] if k < s.size else np.arange(s.size)
    return np.sort(idx).astype(np.int64)


class ShortlistMatrix:
    """Exact (or coarse-then-exact, fast-then-exact) top-k of ``matrix @ q``; see the module doc."""

    def __init__(self, matrix: torch.Tensor, fast: str = "auto", coarse: str = "auto", coarse_dim: int = COARSE_DIM):
        self.m = matrix
        self.n, self.dim = int(matrix.shape[0]), int(matrix.shape[1])
        self.m16: torch.Tensor | None = None
        self.basis: torch.Tensor | None = None   # (D, r) projection of the coarse pass
        self.coarse: torch.Tensor | None = None  # (n, r) projected rows
        self.setup_s = 0.0
        t0 = time.perf_counter()
        if coarse == "on" or (coarse == "auto" and self.n >= COARSE_MIN_ROWS and self.dim >= 2 * coarse_dim):
            self._fit_coarse(min(coarse_dim, self.dim))
        elif fast == "on" or (fast == "auto" and self.n >= FAST_MIN_ROWS and _f16_faster(matrix)):
            self.m16 = self._blocks(lambda a, b: matrix[a:b].to(torch.float16), self.dim, torch.float16)
        self.setup_s = time.perf_counter() - t0

    def _blocks(self, fn, width: int, dtype) -> torch.Tensor:
        out = torch.empty((self.n, width), dtype=dtype)
        for a in range(0, self.n, BLOCK):
            out[a:a + BLOCK] = fn(a, min(self.n, a + BLOCK))
        return out

    def _fit_coarse(self, r: int) -> None:
        take = np.unique(np.linspace(0, self.n - 1, min(self.n, COARSE_SAMPLE)).astype(np.int64))
        sample = self.m[torch.from_numpy(take)].float()
        gen_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(0)  # svd_lowrank draws its test matrix from the global generator
            _, _, v = torch.svd_lowrank(sample, q=min(r + 16, *sample.shape), niter=3)
        finally:
            torch.random.set_rng_state(gen_state)
        self.basis = v[:, :r].contiguous()
        rows = self._blocks(lambda a, b: self.m[a:b].float() @ self.basis, r, torch.float32)
        self.coarse = rows.to(torch.float16) if _f16_faster(rows) else rows

    @property
    def mode(self) -> str:
        return "coarse" if self.coarse is not None else "fast" if self.m16 is not None else "exact"

    @property
    def nbytes(self) -> int:
        """Memory held besides the (mapped) matrix."""
        held = [t for t in (self.m16, self.coarse, self.basis) if t is not None]
        return sum(t.numel() * t.element_size() for t in held)

    def _exact(self, rows: np.ndarray, q: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        s = (self.m[torch.from_numpy(rows)] @ q).numpy()
        keep = _top(s, k)
        return rows[keep], s[keep]

    def topk(self, q: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(the k best rows in index order, their exact scores)"""
        k = max(1, min(int(k), self.n))
        if self.coarse is not None:
            qc = (q.float() @ self.basis).to(self.coarse.dtype)
            cand = _top((self.coarse @ qc).float().numpy(), min(self.n, coarse_candidates(k)))
            return self._exact(cand, q, k)
        if self.m16 is not None:
            s16 = (self.m16 @ q.to(torch.float16)).float().numpy()
            return self._exact(_top(s16, min(self.n, 4 * k + 64)), q, k)
        s = (self.m @ q).numpy()
        rows = _top(s, k)
        return rows, s[rows]
