"""Frame-level concept confidence heatmaps (like HANet's Figs. 4-5), one PNG per video.

For each chosen video: the top ``top_k`` verb and noun concepts by the model's
video-level probability, drawn as concepts x frames of the frame-level probabilities
(only real frames; frame index = position after sampling to max_frames). Concepts that
appear in the video's captions are marked with '*'. Needs the model's
``encode_videos`` to return 'frame_verb_probs', 'frame_noun_probs', 'verb_probs',
'noun_probs'; otherwise nothing is drawn (logged).
"""
from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pipeline.learn.dataset import SplitData, concept_lemmas
from storage.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

NEEDED = ("frame_verb_probs", "frame_noun_probs", "verb_probs", "noun_probs")


def pick_videos(n_videos: int, n: int) -> list[int]:
    """``n`` video indices spread evenly over the split (deterministic)."""
    if n <= 0 or n_videos == 0:
        return []
    return sorted(set(np.round(np.linspace(0, n_videos - 1, min(n, n_videos))).astype(int).tolist()))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def heatmap_png(panels: Sequence[tuple[str, np.ndarray, list[str]]], n_valid: int, top_k: int, title: str,
                dpi: int) -> bytes:
    """One PNG of stacked panels (kind, (concepts, frames) probabilities, one label per concept)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(max(4.0, 0.35 * n_valid + 3.0), 1.2 + 0.32 * 2 * top_k),
                             constrained_layout=True)
    try:
        for ax, (kind, mat, labels) in zip(axes, panels):
            im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_yticks(range(len(labels)), labels, fontsize=7)
            ax.set_xticks(range(n_valid), [str(i) for i in range(n_valid)], fontsize=6)
            ax.set_ylabel(f"top {kind}s")
            fig.colorbar(im, ax=ax, fraction=0.03)
        axes[-1].set_xlabel("frame (after sampling)")
        axes[0].set_title(title[:90], fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()
    finally:
        plt.close(fig)


def draw_concept_heatmaps(model, data: SplitData, out_dir: Path, n: int, device: torch.device | str = "cpu",
                          top_k: int = 8, videos: Sequence[int] | None = None) -> list[Path]:
    idx = list(videos) if videos is not None else pick_videos(data.n_videos, n)
    if not idx:
        return []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model.encode_videos(data.video_batch(idx).to(device))
    finally:
        model.train(was_training)
    if not all(k in out for k in NEEDED):
        log.info("model gives no frame-level concept probabilities; no heatmaps drawn")
        return []
    try:
        lemmas = concept_lemmas(data.root)
    except FileNotFoundError:
        lemmas = {"verb": [], "noun": []}
    truth_v, truth_n = data.video_labels(idx)
    masks = data.video_batch(idx).mask.numpy()
    out_dir = Path(out_dir)
    paths = []
    for j, v in enumerate(idx):
        n_valid = int(masks[j].sum())
        panels = []
        for kind, fkey, vkey, truth in (("verb", "frame_verb_probs", "verb_probs", truth_v[j]),
                                        ("noun", "frame_noun_probs", "noun_probs", truth_n[j])):
            vid_p = out[vkey][j].float().cpu().numpy()
            frm_p = out[fkey][j, :n_valid].float().cpu().numpy()          # (frames, K)
            top = np.argsort(-vid_p, kind="stable")[:top_k]
            names = lemmas.get(kind, [])
            labels = [(names[c] if c < len(names) and names[c] else f"{kind}{c}") + (" *" if truth[c] else "")
                      + f" ({vid_p[c]:.2f})" for c in top]
            panels.append((kind, frm_p[:, top].T, labels))
        caps = data.captions_of(v)
        title = data.keys[v] + (f": {data.captions[caps[0]]}" if caps.size else "")
        path = out_dir / f"{j:02d}_{_safe(data.keys[v])}.png"
        atomic_write_bytes(path, heatmap_png(panels, n_valid, top_k, title, dpi=90))
        paths.append(path)
    log.info("wrote %d concept heatmaps to %s", len(paths), out_dir)
    return paths
