"""Which decoded frames the extractors keep (ResNet152 frames, I3D clip stacks), and the wrappers returning them.

:func:`sample_frames` (ResNet, MSR-VTT convention) and :func:`clip_stacks` (I3D) decode one video
for one extractor; :func:`decode_products` gives both from ONE pass (pipeline/video/decode.py). The clip
request converts only its grid's frames (a second pass when the stated frame count mispredicts the
grid: pipeline/video/_frames.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import DecodeConfig, I3DConfig
from pipeline.video._frames import ClipGrid, clip_indices
from pipeline.video.decode import DecodedClips, DecodedVideo, FrameRequest, KeptFrames, VideoMeta, decode_video


def uniform_positions(n: int, k: int) -> np.ndarray:
    """round(linspace(0, n-1, k)): the reference's uniform subsampling of n items to k."""
    return np.round(np.linspace(0, n - 1, k)).astype(np.int64)


def strided_indices(n_decoded: int, stride: int, max_frames: int) -> list[int]:
    """One frame every ``stride`` decoded frames (0, stride, ...), capped at ``max_frames``.

    A video shorter than the stride still gives frame 0.
    """
    candidates = list(range(0, n_decoded, stride))
    if len(candidates) > max_frames:
        candidates = [candidates[i] for i in uniform_positions(len(candidates), max_frames)]
    return candidates


def frames_request(cfg: DecodeConfig) -> FrameRequest:
    return FrameRequest(short_side=cfg.short_side, crop=cfg.crop, every=cfg.frame_stride)


def clips_request(cfg: I3DConfig) -> FrameRequest:
    return FrameRequest(short_side=cfg.short_side, crop=cfg.crop,
                        clips=ClipGrid(clip_len=cfg.clip_len, clip_step=cfg.clip_step, max_clips=cfg.max_clips))


def pick_frames(kept: KeptFrames, meta: VideoMeta, cfg: DecodeConfig) -> DecodedVideo:
    wanted = strided_indices(meta.n_decoded, cfg.frame_stride, cfg.max_frames)
    position = {idx: i for i, idx in enumerate(kept.indices)}
    frames = np.stack([kept.frames[position[i]] for i in wanted])
    return DecodedVideo(frames=frames, indices=wanted, meta=meta)


def pick_clips(kept: KeptFrames, meta: VideoMeta, cfg: I3DConfig) -> DecodedClips:
    grid = clip_indices(meta.n_decoded, cfg.clip_len, cfg.clip_step, cfg.max_clips)
    used = np.unique(grid)  # sorted; kept holds at least these (in any order, maybe more)
    position = {idx: i for i, idx in enumerate(kept.indices)}
    frames = np.stack([kept.frames[position[i]] for i in used.tolist()])
    n_padded = int(np.sum(grid[:, 1:] == grid[:, :-1]))
    return DecodedClips(clips=frames[np.searchsorted(used, grid)], indices=grid, n_padded=n_padded, meta=meta)


def sample_frames(path: str | Path, cfg: DecodeConfig = DecodeConfig()) -> DecodedVideo:
    """MSR-VTT frame sampling: (n, crop, crop, 3) uint8 RGB, one per ``frame_stride`` frames."""
    meta, kept = decode_video(path, {"frames": frames_request(cfg)}, cfg)
    return pick_frames(kept["frames"], meta, cfg)


def clip_stacks(path: str | Path, cfg: I3DConfig = I3DConfig(),
                decode_cfg: DecodeConfig = DecodeConfig()) -> DecodedClips:
    """I3D input: up to ``max_clips`` stacks of ``clip_len`` frames, ``clip_step`` apart.

    ``decode_cfg`` supplies the decode settings (threads, time limit,
    truncation tolerance); the geometry comes from ``cfg``.
    """
    meta, kept = decode_video(path, {"clips": clips_request(cfg)}, decode_cfg)
    return pick_clips(kept["clips"], meta, cfg)


def decode_products(path: str | Path, decode_cfg: DecodeConfig, frames: bool,
                    i3d_cfg: I3DConfig | None) -> tuple[DecodedVideo | None, DecodedClips | None]:
    """Both extractors' inputs from ONE decode pass (either may be skipped)."""
    requests = {}
    if frames:
        requests["frames"] = frames_request(decode_cfg)
    if i3d_cfg is not None:
        requests["clips"] = clips_request(i3d_cfg)
    meta, kept = decode_video(path, requests, decode_cfg)
    video = pick_frames(kept["frames"], meta, decode_cfg) if frames else None
    clips = pick_clips(kept["clips"], meta, i3d_cfg) if i3d_cfg is not None else None
    return video, clips
