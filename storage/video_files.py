"""Encoded video files (PyAV): reproducible writer for generated datasets and tests.

Decoding lives in ``pipeline/video/decode.py``; this module only WRITES videos, and
like every writer in ``storage`` it goes through :func:`atomic_path`.

Reproducibility: given the same frames, codec and FFmpeg build, the bytes are
identical run to run. That needs the muxer's and the encoder's ``bitexact``
flags (no library version strings or timestamps in the file), one encoder
thread (slice partitioning depends on the thread count) and, for libx264,
``mbtree=0`` (its lookahead is otherwise not bit-reproducible).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

from storage.atomic import atomic_path

_CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "mpeg4": {"flags": "+bitexact"},
    "libx264": {"flags": "+bitexact", "x264-params": "mbtree=0:threads=1"},
}
_CONTAINER_FORMAT = {".mp4": "mp4", ".m4a": "mp4", ".mkv": "matroska", ".avi": "avi", ".webm": "webm"}


@dataclass(frozen=True)
class VideoSpec:
    """How to encode: codec name, frame rate, bit rate and extra muxer flags."""

    fps: int = 12
    codec: str = "mpeg4"
    bit_rate: int = 400_000
    pix_fmt: str = "yuv420p"
    faststart: bool = False  # MP4 index at the front (as web-optimised files have)
    codec_options: dict[str, str] = field(default_factory=dict)


def _container_options(spec: VideoSpec) -> dict[str, str]:
    opts = {"fflags": "+bitexact"}
    if spec.faststart:
        opts["movflags"] = "+faststart"
    return opts


def _add_video_stream(container: av.container.OutputContainer, spec: VideoSpec,
                      width: int, height: int) -> av.video.stream.VideoStream:
    options = {**_CODEC_OPTIONS.get(spec.codec, {"flags": "+bitexact"}), **spec.codec_options}
    stream = container.add_stream(spec.codec, rate=Fraction(spec.fps), options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, spec.pix_fmt
    stream.bit_rate = spec.bit_rate
    stream.codec_context.thread_count = 1
    return stream


def _encode_frames(container, stream, frames: Iterable[np.ndarray]) -> int:
    n = 0
    for n, rgb in enumerate(frames, start=1):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    return n


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], spec: VideoSpec = VideoSpec()) -> Path:
    """Atomically encode RGB uint8 frames (H, W, 3), all the same size, into ``path``.

    The container format follows the suffix (.mp4, .mkv, .avi, .webm).
    Returns the path; raises ValueError for an empty frame sequence.
    """
    path = Path(path)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"{path}: no frames to encode")
    fmt = _CONTAINER_FORMAT.get(path.suffix.lower(), "mp4")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=fmt, options=_container_options(spec)) as container:
            stream = _add_video_stream(container, spec, first.shape[1], first.shape[0])
            _encode_frames(container, stream, _chain(first, it))
    return path


def _chain(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    yield first
    yield from rest
