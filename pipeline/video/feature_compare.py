"""`vtr compare-features A B`: how two feature sets of the same videos relate, frame by frame.

Users compare their extracted features with released ones and see cosine 0.85-0.91 without
knowing why: other frames (sampling stride, start frame, resampling), other values (weights,
preprocessing, precision), or both. Per video (aligned by video id = dataset name), with
``C[i, j] = cos(A[i], B[j])``, every alignment hypothesis is scored by the mean of C over the
frame pairs it matches (at least half of the shorter sequence, >= 2 pairs):

* ``B[j] = A[o + s*j]``: B takes every s-th of A's frames from A's frame o (s = 1: a shift);
* ``A[i] = B[o + s*i]``: the same with the roles swapped;
* ``B[j] = (A[j] + A[j+1]) / 2``: B's frames lie half-way between A's (same stride, start
  offset by half a step, e.g. A every 16th frame from 0 and B every 16th from 8);
* ``B = A[round(linspace(0, nA-1, nB))]`` (or swapped): uniform resampling, as HGR's/HANet's
  readers subsample long videos.

The best hypothesis per video (ties: the simpler one) is compared with the mean cosine of ALL
frame pairs (what an unrelated pairing gives). Over all videos, the most frequent best
hypothesis is re-scored on every video, and the verdict says which alignment explains the
difference and whether the values then agree (identical / close / differ / unrelated).
Given A's own sampling (``a_stride`` frames between A's features, from ``a_start``), the
alignment is also stated in video frames ("B samples every 16th frame from frame 8; A every
frame from frame 0").
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

STRIDES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 16, 20, 24, 25, 30, 32, 48, 64)
IDENTICAL, CLOSE = 0.999, 0.95
TOP_PER_STRIDE = 3


@dataclass(frozen=True)
class Fit:
    kind: str          # 'b_from_a' | 'a_from_b' | 'half' | 'resample_b' | 'resample_a'
    stride: int
    offset: int
    score: float       # mean cosine over the matched pairs
    pairs: int

    @property
    def label(self) -> str:
        if self.kind in ("b_from_a", "a_from_b"):
            return f"{self.kind}:s{self.stride}:o{self.offset}"
        return self.kind

    @property
    def simplicity(self) -> tuple:
        return (self.kind not in ("b_from_a", "a_from_b"), self.stride, abs(self.offset), self.kind)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _stride_fits(c: np.ndarray, kind: str, min_pairs: int, stride: int | None = None,
                 offset: int | None = None) -> list[Fit]:
    """``rows[o + s*j] ~ cols[j]`` hypotheses on the (n_rows, n_cols) cosine matrix ``c``: the best
    TOP_PER_STRIDE offsets of every stride, or only (``stride``, ``offset``)."""
    nr, nc = c.shape
    out: list[Fit] = []
    j = np.arange(nc)
    for s in STRIDES if stride is None else (stride,):
        if min(nc, -(-nr // s)) < min_pairs:   # this stride cannot match enough frames
            continue
        lo = -s * (nc - min_pairs)
        offsets = np.arange(lo, nr - s * (min_pairs - 1))
        idx = offsets[:, None] + s * j[None, :]
        ok = (idx >= 0) & (idx < nr)
        n = ok.sum(1)
        keep = n >= min_pairs
        if not keep.any():
            continue
        vals = np.where(ok, c[np.clip(idx, 0, nr - 1), j[None, :]], 0.0).sum(1) / np.maximum(n, 1)
        vals = np.where(keep, vals, -np.inf)
        if offset is not None:   # one hypothesis asked for
            hit = np.flatnonzero(offsets == offset)
            top = hit if s == stride and hit.size and keep[hit[0]] else np.zeros(0, int)
        else:                    # the best few offsets of this stride (with their neighbours' ties)
            top = np.argsort(-vals, kind="stable")[:TOP_PER_STRIDE]
        out += [Fit(kind, s, int(offsets[t]), float(vals[t]), int(n[t])) for t in top if np.isfinite(vals[t])]
    return out


def _resample_fit(c: np.ndarray, kind: str) -> Fit | None:
    nr, nc = c.shape
    if nc < 2 or nr < nc:
        return None
    idx = np.round(np.linspace(0, nr - 1, nc)).astype(int)
    return Fit(kind, 0, 0, float(c[idx, np.arange(nc)].mean()), nc)


def _cosines(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    ua, ub = unit(a), unit(b)
    n = min(len(a), len(b))
    return ua, ub, ua @ ub.T, (max(2, -(-n // 2)) if n > 1 else 1)


def _half(ua: np.ndarray, ub: np.ndarray, min_pairs: int) -> Fit | None:
    if len(ua) < 2:
        return None
    mid = unit((ua[:-1] + ua[1:]) / 2)
    n = min(len(mid), len(ub))
    return Fit("half", 1, 0, float((mid[:n] * ub[:n]).sum(1).mean()), n) if n >= min_pairs else None


def fits(a: np.ndarray, b: np.ndarray) -> tuple[list[Fit], float]:
    """(the hypotheses worth keeping, scored; mean cosine of all frame pairs) for one video."""
    ua, ub, c, min_pairs = _cosines(a, b)
    out = _stride_fits(c, "b_from_a", min_pairs)
    out += [f for f in _stride_fits(c.T, "a_from_b", min_pairs) if f.stride > 1]
    out += [f for f in (_half(ua, ub, min_pairs), _resample_fit(c, "resample_b"), _resample_fit(c.T, "resample_a"))
            if f]
    return out, float(c.mean())


def label_score(a: np.ndarray, b: np.ndarray, label: str) -> float | None:
    """The mean cosine of one video under hypothesis ``label`` (None when it does not apply)."""
    ua, ub, c, min_pairs = _cosines(a, b)
    if label == "half":
        f = _half(ua, ub, min_pairs)
    elif label.startswith("resample"):
        f = _resample_fit(c if label == "resample_b" else c.T, label)
    else:
        kind, s, o = label.split(":")
        got = _stride_fits(c if kind == "b_from_a" else c.T, kind, min_pairs, int(s[1:]), int(o[1:]))
        f = got[0] if got else None
    return f.score if f else None


def best_fit(candidates: list[Fit]) -> Fit:
    top = max(round(f.score, 6) for f in candidates)
    return min((f for f in candidates if round(f.score, 6) >= top - 1e-6), key=lambda f: f.simplicity)


def compare_video(key: str, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    cands, chance = fits(a, b)
    best = best_fit(cands)
    n = min(len(a), len(b))
    row = {"video": key, "n_a": int(len(a)), "n_b": int(len(b)),
           "cos_framewise": float((unit(a[:n]) * unit(b[:n])).sum(1).mean()),
           "cos_mean_pooled": float((unit(a.mean(0)) * unit(b.mean(0))).sum()),
           "best": best.label, "cos_best": best.score, "pairs_best": best.pairs, "cos_all_pairs": chance}
    return row


def describe(fit_label: str, a_stride: int = 0, a_start: int = 0) -> str:
    """One sentence for a hypothesis label (in video frames when A's sampling is given)."""
    if fit_label == "half":
        return "B's frames lie half-way between A's (same stride, start offset by half a step)"
    if fit_label == "resample_b":
        return "B is A uniformly resampled to B's length (round(linspace(0, nA-1, nB)))"
    if fit_label == "resample_a":
        return "A is B uniformly resampled to A's length (round(linspace(0, nB-1, nA)))"
    kind, s, o = fit_label.split(":")
    s, o = int(s[1:]), int(o[1:])
    big, small = ("A", "B") if kind == "b_from_a" else ("B", "A")
    if s == 1:
        if o == 0:
            return "same frames (frame j of A is frame j of B)"
        late, early = (small, big) if o > 0 else (big, small)
        text = f"same stride; {late} starts {abs(o)} of {early}'s steps later ({late}[j] = {early}[j + {abs(o)}])"
    else:
        text = f"{small} takes every {s}th of {big}'s frames from {big}'s frame {o} ({small}[j] = {big}[{o} + {s}*j])"
    if a_stride > 0 and kind == "b_from_a":
        text += (f": B samples every {s * a_stride}th frame from frame {a_start + o * a_stride}; "
                 f"A every {'' if a_stride == 1 else str(a_stride) + 'th '}frame from frame {a_start}").replace(
                     "every 1th frame", "every frame")
    return text


def verdict(label: str, median_cos: float, median_chance: float, a_stride: int = 0, a_start: int = 0) -> dict:
    """The overall diagnosis from the winning alignment and its median cosine over the videos."""
    align = describe(label, a_stride, a_start)
    explained = median_cos - median_chance
    if median_cos >= IDENTICAL:
        values, kind = "values identical once aligned", "identical"
    elif explained < 0.25 * max(1.0 - median_chance, 1e-6):
        values, kind = ("no alignment explains the difference: the features are unrelated frame by frame "
                        "(other weights, backbone or layer?)"), "unrelated"
    elif median_cos >= CLOSE:
        values, kind = "values close but not identical (preprocessing, precision or noise?)", "close"
    else:
        values, kind = "values differ once aligned (weights, preprocessing or resizing?)", "differ"
    if kind == "unrelated":
        return {"alignment": label, "values": kind, "text": values}
    if label == "half" and kind != "identical":
        values = "values as close as in-between frames can be (B's frames are not A's frames)"
    return {"alignment": label, "values": kind, "text": f"{align}; {values} (median cos {median_cos:.4f})"}


def compare_sets(fa: dict[str, np.ndarray], fb: dict[str, np.ndarray], a_stride: int = 0,
                 a_start: int = 0) -> dict[str, Any]:
    """Per-video rows + the overall verdict for two {video: (n, dim)} feature sets."""
    common = sorted(set(fa) & set(fb))
    if not common:
        raise ValueError(f"no video in common ({len(fa)} in A, {len(fb)} in B; video ids are the HDF5 dataset names)")
    dims = {(fa[k].shape[1], fb[k].shape[1]) for k in common}
    if any(da != db for da, db in dims):
        raise ValueError(f"feature widths differ between A and B: {sorted(dims)[:3]}; cosine needs the same width")
    rows = [compare_video(k, fa[k], fb[k]) for k in common]
    winner = Counter(r["best"] for r in rows).most_common(1)[0][0]
    for row in rows:
        row["cos_winner"] = row["cos_best"] if row["best"] == winner else label_score(fa[row["video"]],
                                                                                      fb[row["video"]], winner)
    under = [r["cos_winner"] for r in rows if r["cos_winner"] is not None]
    med = float(np.median(under)) if under else float("nan")
    chance = float(np.median([r["cos_all_pairs"] for r in rows]))
    return {"videos": len(common), "only_in_a": len(set(fa) - set(fb)), "only_in_b": len(set(fb) - set(fa)),
            "dim": int(next(iter(dims))[0]), "winner": winner, "winner_share": sum(r["best"] == winner for r in rows) / len(rows),
            "best_counts": dict(Counter(r["best"] for r in rows).most_common(5)),
            "median_cos_winner": med, "median_cos_framewise": float(np.median([r["cos_framewise"] for r in rows])),
            "median_cos_all_pairs": chance, "verdict": verdict(winner, med, chance, a_stride, a_start), "rows": rows}


# ----------------------------------------------------------------------------- outputs
COLUMNS = ("video", "n_a", "n_b", "best", "cos_best", "cos_winner", "cos_framewise", "cos_mean_pooled",
           "cos_all_pairs", "pairs_best")


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v)


def markdown(result: dict[str, Any], a: str, b: str, worst: int = 10) -> str:
    v = result["verdict"]
    lines = [f"# compare-features", "", f"A: `{a}`  ", f"B: `{b}`", "",
             f"**{v['text']}**", "",
             f"{result['videos']} videos in both (only in A: {result['only_in_a']}, only in B: {result['only_in_b']}), "
             f"dim {result['dim']}. Alignment `{result['winner']}` is the best for {result['winner_share']:.0%} of "
             f"the videos; median cosine under it {result['median_cos_winner']:.4f}, frame j vs frame j "
             f"{result['median_cos_framewise']:.4f}, any frame vs any frame {result['median_cos_all_pairs']:.4f}.", "",
             "| best alignment | videos |", "|---|---|"]
    lines += [f"| `{k}` ({describe(k)}) | {n} |" for k, n in result["best_counts"].items()]
    rows = sorted(result["rows"], key=lambda r: (r["cos_winner"] if r["cos_winner"] is not None else -2.0))[:worst]
    lines += ["", f"Worst {len(rows)} videos (cosine under `{result['winner']}`):", "",
              "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    w.writeheader()
    for r in rows:
        w.writerow({c: r[c] for c in COLUMNS})
    return buf.getvalue()


def histogram(result: dict[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from storage.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(-1, 1, 81) if min(r["cos_framewise"] for r in result["rows"]) < 0 else np.linspace(0, 1, 81)
    for col, name in (("cos_winner", f"aligned ({result['winner']})"), ("cos_framewise", "frame j vs frame j")):
        vals = [r[col] for r in result["rows"] if r[col] is not None]
        ax.hist(vals, bins=bins, alpha=0.6, label=name)
    ax.set_xlabel("per-video mean cosine")
    ax.set_ylabel("videos")
    ax.legend()
    ax.set_title(result["verdict"]["alignment"] + ": " + result["verdict"]["values"])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_compare_features(a: str, b: str, out_dir: str, a_stride: int = 0, a_start: int = 0,
                         worst: int = 10) -> dict[str, Any]:
    """Read both feature sets, compare, write compare.json / compare.md / per_video.csv / histogram.png."""
    import json
    from pathlib import Path

    from storage.atomic import atomic_write_text
    from storage.bundle_write import read_feature_set

    fa, ia = read_feature_set(a)
    fb, ib = read_feature_set(b)
    result = compare_sets(fa, fb, a_stride, a_start)
    out = Path(out_dir)
    paths = {"json": out / "compare.json", "markdown": out / "compare.md", "csv": out / "per_video.csv",
             "histogram": out / "histogram.png"}
    atomic_write_text(paths["csv"], csv_text(result["rows"]))
    md = markdown(result, a, b, worst)
    atomic_write_text(paths["markdown"], md)
    histogram(result, paths["histogram"])
    atomic_write_text(paths["json"], json.dumps({**result, "a": {"path": a, **ia}, "b": {"path": b, **ib}},
                                                indent=1, default=str))
    return {**result, "markdown": md, "paths": {k: str(p) for k, p in paths.items()}}
