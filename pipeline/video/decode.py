"""Decode videos with PyAV and sample what the feature extractors need.

One pass over a video (:func:`decode_video`) serves several consumers: each
asks, through a :class:`FrameRequest`, for a geometry (short-side resize, then
centre crop) and which decoded frames to keep. :func:`sample_frames` (ResNet,
MSR-VTT convention) and :func:`clip_stacks` (I3D) are thin wrappers, and
:func:`decode_products` gives both from ONE pass when both extractors run
(pipeline/video/sampling.py, with the frame / clip index rules).

Choices (the PyAV traps behind them are listed in the install notes):

* Frames are addressed by their position in the decoder's output ("decode
  index"), never by pts: real files have pts that go backwards.
* The video stream is picked explicitly (first video stream that is not an
  attached cover picture); stream 0 is often audio.
* ``thread_type = SLICE``: with FRAME/AUTO threading FFmpeg swallows decode
  errors of a truncated file. Parallelism comes from decoding several videos
  at once (the extractor's prefetch threads) instead.
* A truncated file whose index sits at the front decodes cleanly but short:
  the decoded count is compared with the container's stated count (or
  duration x fps); smaller shortfalls than ``DecodeConfig.max_missing_fraction``
  are only reported in :class:`VideoMeta` (n_decoded vs n_expected).
* A larger shortfall against a stated frame COUNT is a truncated file
  (:class:`TruncatedVideoError`) only when there is evidence that the file
  ends inside the stream: the demuxer flagged a packet corrupt (a short read
  at end of file: what a cut MP4 with its index at the front gives), or the
  last video packet runs up to the last byte of the file (a cut at a packet
  boundary; complete files end with an index, a trailer or other streams).
  Otherwise the stream ended cleanly and the HEADER overstates the count
  (real AVI files do this: a Cinepak AVI declared 444 frames and stored 68):
  the video is ok, its features come from the frames that exist, and
  ``VideoMeta.warnings`` says so (the extractor's status row carries it in
  ``warning``). Limit: a complete file whose last video packet is also its
  last byte AND whose header overstates the count is indistinguishable from a
  cut file and is reported as truncated.
* duration x fps (Matroska/WebM state no frame count) is only an estimate:
  a variable-frame-rate file has fewer frames than its nominal rate implies.
  A count shortfall against that estimate is an error only if the decoded
  frames' timestamps also stop short of the stated duration (by more than
  the same fraction); a cut file stops early, a VFR file does not.
* Time limit: the deadline (``timeout_s``) is checked between packets, and
  PyAV's interrupt callback (``av.open(timeout=...)``) bounds blocking reads.
  A decoder stuck INSIDE one FFmpeg call cannot be interrupted from Python;
  the extractor therefore waits for each decode with its own deadline and
  abandons (daemon) threads that overrun it. A process per video would make
  that hard kill possible but costs a fork and a frame copy per video; not
  worth it for files that are already probed at ingest.
* Rotation (display matrix, as phones write it) is recorded
  (``VideoMeta.rotation``, degrees counter-clockwise as FFmpeg reports it) and,
  with ``DecodeConfig.apply_rotation``, applied with ``np.rot90`` so features
  see upright frames (the reference extractors ignore it: set False to match
  them). Only multiples of 90 degrees are applied (``rotation_applied``);
  mirror flips in the matrix are not. The turn is done on the resized frame,
  before the centre crop: resizing the short side commutes with a quarter
  turn, and turning the small image is cheaper than the full-size one.
* Only the frames a request keeps are converted to RGB. I3D's clip grid depends on the decoded
  count, known at the end: the first pass converts the grid predicted from the stated count, and a
  second pass converts what a wrong prediction missed (``VideoMeta.decode_passes``; the rules and
  the conversion itself are in pipeline/video/_frames.py). The deadline covers both passes.
"""
from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import av
import numpy as np

from pipeline.config import DecodeConfig
from pipeline.video._frames import (ClipGrid, Selector, first_pass_selectors, keep_frame, missing_clip_frames,
                                    quarter_turns)


class DecodeError(Exception):
    """A video that cannot give frames; the caller turns it into a status row."""


class UnreadableVideoError(DecodeError):
    """Missing, empty or not a media file."""


class NoVideoStreamError(DecodeError):
    """A media file without a video stream (e.g. audio only)."""


class CorruptVideoError(DecodeError):
    """The demuxer or decoder failed on the stream's data."""


class TruncatedVideoError(DecodeError):
    """Far fewer frames decoded than the container states."""


class NoFramesError(DecodeError):
    """The video stream decoded to zero frames."""


class DecodeTimeoutError(DecodeError):
    """Decoding took longer than the per-video limit."""


FROM_COUNT = "container frame count"
FROM_DURATION = "duration x fps"
FROM_NOTHING = "unknown"


@dataclass(frozen=True)
class FrameRequest:
    """Keep decoded frames whose index is a multiple of ``every``, resized and cropped.

    With ``clips``, keep the frames of that clip grid for the decoded count instead (``every`` unused):
    only those frames are converted (planned from the stated count, completed by a second pass).
    """

    short_side: int
    crop: int
    every: int = 1
    clips: ClipGrid | None = None


@dataclass
class VideoMeta:
    path: str
    stream_index: int
    n_decoded: int
    n_expected: int | None
    expected_source: str
    fps: float | None
    duration_s: float | None
    width: int
    height: int
    rotation: int = 0
    rotation_applied: int = 0  # the part of ``rotation`` turned upright (0: none)
    first_time_s: float | None = None  # earliest / latest decoded frame timestamp
    last_time_s: float | None = None
    decode_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    file_size: int | None = None  # bytes on disk when decoding started
    corrupt_packets: int = 0  # packets the demuxer flagged corrupt (short read at end of file)
    last_packet_end: int | None = None  # byte offset just past the furthest video packet (None: unknown)
    warnings: list[str] = field(default_factory=list)  # non-fatal findings (e.g. header overstates count)
    decode_passes: int = 1  # 2: a clip grid needed frames the first pass did not convert (pipeline/video/_frames.py)


@dataclass
class KeptFrames:
    indices: list[int]
    frames: list[np.ndarray]


@dataclass
class DecodedVideo:
    """Sampled frames (n, crop, crop, 3) uint8 RGB and their decode indices."""

    frames: np.ndarray
    indices: list[int]
    meta: VideoMeta


@dataclass
class DecodedClips:
    """Clip stacks (n_clips, clip_len, crop, crop, 3) uint8 RGB and their decode indices.

    ``indices`` has shape (n_clips, clip_len); a short video's stacks repeat its
    last frame, ``n_padded`` counts those repeated slots.
    """

    clips: np.ndarray
    indices: np.ndarray
    n_padded: int
    meta: VideoMeta


# ----------------------------------------------------------------- container

def pick_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream that is not an attached picture (cover art)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = ", ".join(f"#{s.index} {s.type}" for s in container.streams) or "none"
    raise NoVideoStreamError(f"no video stream (streams: {kinds})")


def stream_fps(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def stream_duration_s(stream, container) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def expected_frames(stream, container) -> tuple[int | None, str]:
    """What the container claims: its frame count, else duration x fps, else unknown."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames), FROM_COUNT
    duration, fps = stream_duration_s(stream, container), stream_fps(stream)
    if duration and fps:
        return int(round(duration * fps)), FROM_DURATION
    return None, FROM_NOTHING


def open_video(path: str | Path, timeout_s: float | None = None) -> av.container.InputContainer:
    """Open a media file, turning every failure into an :class:`UnreadableVideoError`."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableVideoError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise UnreadableVideoError(f"empty file (0 bytes): {path}")
    try:
        return av.open(str(path), timeout=timeout_s)
    except av.error.ExitError as exc:  # PyAV's interrupt callback: the I/O time limit
        raise DecodeTimeoutError(f"opening took longer than {timeout_s:g} s") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise UnreadableVideoError(f"not a readable media file ({type(exc).__name__}: {exc})") from exc


# ------------------------------------------------------------------- decoding

def _new_meta(path: Path, stream, container) -> VideoMeta:
    n_expected, source = expected_frames(stream, container)
    return VideoMeta(path=str(path), stream_index=stream.index, n_decoded=0, n_expected=n_expected,
                     expected_source=source, fps=stream_fps(stream),
                     duration_s=stream_duration_s(stream, container),
                     width=stream.codec_context.width, height=stream.codec_context.height,
                     file_size=path.stat().st_size)


def _track_packet(meta: VideoMeta, packet) -> None:
    """Where the stream's data ends in the file, and whether the demuxer saw a short read."""
    if packet.is_corrupt:
        meta.corrupt_packets += 1
    pos, size = packet.pos, packet.size
    if pos is not None and pos >= 0 and size:
        meta.last_packet_end = max(meta.last_packet_end or 0, pos + size)


def _decoded_frames(container, stream, meta: VideoMeta, cfg: DecodeConfig, t0: float) -> Iterator[av.VideoFrame]:
    """Frames in decoder output order; bad packets are counted (and tolerated up to the config)."""
    try:
        for packet in container.demux(stream):
            if time.monotonic() - t0 > cfg.timeout_s:
                raise DecodeTimeoutError(f"decode exceeded {cfg.timeout_s:g} s after {meta.n_decoded} frames")
            _track_packet(meta, packet)
            yield from _decode_packet(packet, meta, cfg)
    except av.error.ExitError as exc:
        raise DecodeTimeoutError(f"reading exceeded {cfg.timeout_s:g} s after {meta.n_decoded} frames") from exc
    except av.error.FFmpegError as exc:  # demuxer failure: the rest of the file is unreadable
        raise CorruptVideoError(f"demuxing failed after {meta.n_decoded} frames: {exc}") from exc


def _decode_packet(packet, meta: VideoMeta, cfg: DecodeConfig) -> list[av.VideoFrame]:
    try:
        return packet.decode()
    except av.error.FFmpegError as exc:
        meta.decode_errors.append(f"after frame {meta.n_decoded}: {exc}")
        if len(meta.decode_errors) > cfg.max_decode_errors:
            raise CorruptVideoError(f"decoder error after {meta.n_decoded} of {meta.n_expected} "
                                    f"expected frames (truncated or corrupt file): {exc}") from exc
        return []


def _set_rotation(meta: VideoMeta, frame: av.VideoFrame, cfg: DecodeConfig) -> None:
    meta.rotation = int(getattr(frame, "rotation", 0) or 0)
    applicable = cfg.apply_rotation and quarter_turns(meta.rotation) is not None
    meta.rotation_applied = meta.rotation if applicable else 0


def _track_time(meta: VideoMeta, frame: av.VideoFrame) -> None:
    """Earliest and latest timestamp (min/max: pts may go backwards)."""
    t = frame.time
    if t is None:
        return
    meta.first_time_s = t if meta.first_time_s is None else min(meta.first_time_s, t)
    meta.last_time_s = t if meta.last_time_s is None else max(meta.last_time_s, t)


def decoded_span_s(meta: VideoMeta) -> float | None:
    """Seconds the decoded frames cover (last timestamp - first + one nominal frame)."""
    if meta.first_time_s is None or not meta.fps:
        return None
    return meta.last_time_s - meta.first_time_s + 1 / meta.fps


def _reaches_duration(meta: VideoMeta, cfg: DecodeConfig) -> bool:
    """A count estimated from duration x fps falls short but the frames span the duration: variable frame rate."""
    span = decoded_span_s(meta)
    if meta.expected_source != FROM_DURATION or span is None or not meta.duration_s:
        return False
    return span >= (1 - cfg.max_missing_fraction) * meta.duration_s


def ends_inside_stream(meta: VideoMeta) -> bool:
    """Evidence that the file was cut: a short (corrupt) packet, or video data up to the last byte."""
    if meta.corrupt_packets:
        return True
    return meta.last_packet_end is not None and meta.file_size is not None \
        and meta.last_packet_end >= meta.file_size


def _check_complete(meta: VideoMeta, cfg: DecodeConfig) -> None:
    if meta.n_decoded == 0:
        raise NoFramesError(f"video stream #{meta.stream_index} decoded to 0 frames "
                            f"(container states {meta.n_expected})")
    if meta.n_expected is None:
        return
    missing = meta.n_expected - meta.n_decoded
    if missing <= max(cfg.missing_frames_slack, cfg.max_missing_fraction * meta.n_expected) \
            or _reaches_duration(meta, cfg):
        return
    span = decoded_span_s(meta)
    covered = f", frames span {span:.2f} of {meta.duration_s:.2f} s" if span and meta.duration_s else ""
    if meta.expected_source == FROM_COUNT and not ends_inside_stream(meta):
        meta.warnings.append(f"container states {meta.n_expected} frames but the stream ended cleanly after "
                             f"{meta.n_decoded} ({meta.expected_source}{covered}): the header overstates "
                             "the frame count; features come from the frames that exist")
        return
    raise TruncatedVideoError(f"decoded {meta.n_decoded} of {meta.n_expected} frames "
                              f"({meta.expected_source}{covered}); the file is probably truncated")


def _validate(requests: Mapping[str, FrameRequest]) -> None:
    for name, req in requests.items():
        if req.crop > req.short_side:
            raise ValueError(f"request {name!r}: crop {req.crop} larger than short_side {req.short_side}")


def _decode_pass(path: str | Path, requests: Mapping[str, FrameRequest], selectors: Mapping[str, Selector] | None,
                 cfg: DecodeConfig, t0: float, stop_after: int | None = None):
    """One pass: (meta, kept frames, last decoded frame unconverted).

    ``selectors`` None: the first pass (planned from the stated count); ``stop_after``: stop once that
    decode index is reached (a second pass, which only converts).
    """
    with open_video(path, cfg.timeout_s) as container:
        stream = pick_video_stream(container)
        stream.thread_type, stream.thread_count = "SLICE", cfg.threads
        meta = _new_meta(Path(path), stream, container)
        if selectors is None:
            selectors = first_pass_selectors(requests, meta.n_expected)
        kept, last = {name: KeptFrames([], []) for name in requests}, None
        with closing(_decoded_frames(container, stream, meta, cfg, t0)) as frames:
            for last in frames:
                if meta.n_decoded == 0:
                    _set_rotation(meta, last, cfg)
                _track_time(meta, last)
                keep_frame(last, meta.n_decoded, requests, selectors, kept, cfg.interpolation,
                           quarter_turns(meta.rotation_applied))
                meta.n_decoded += 1
                if stop_after is not None and meta.n_decoded > stop_after:
                    break
    return meta, kept, last


def _second_pass(path: str | Path, requests: Mapping[str, FrameRequest], missing: dict[str, frozenset[int]],
                 meta: VideoMeta, kept: dict[str, KeptFrames], cfg: DecodeConfig, t0: float) -> None:
    """Decode again and convert exactly the clip frames the first pass missed (into ``kept``)."""
    again = {name: requests[name] for name in missing}
    _, extra, _ = _decode_pass(path, again, missing, cfg, t0, stop_after=max(max(m) for m in missing.values()))
    for name, need in missing.items():
        if set(extra[name].indices) != need:
            lost = sorted(need - set(extra[name].indices))[:5]
            raise CorruptVideoError(f"second decode pass did not give frames {lost} of the {meta.n_decoded} "
                                    "the first pass decoded")
        kept[name].indices.extend(extra[name].indices)
        kept[name].frames.extend(extra[name].frames)
    meta.decode_passes = 2


def decode_video(path: str | Path, requests: Mapping[str, FrameRequest],
                 cfg: DecodeConfig = DecodeConfig()) -> tuple[VideoMeta, dict[str, KeptFrames]]:
    """Decode every frame of ``path`` once and keep what each request asks for.

    A clip request whose predicted grid missed frames gets them from a second pass (module notes).
    Raises a :class:`DecodeError` subclass for anything that cannot give frames.
    """
    _validate(requests)
    t0 = time.monotonic()
    meta, kept, last = _decode_pass(path, requests, None, cfg, t0)
    _check_complete(meta, cfg)
    missing = missing_clip_frames(requests, kept, meta.n_decoded, last, cfg.interpolation,
                                  quarter_turns(meta.rotation_applied))
    del last
    if missing:
        _second_pass(path, requests, missing, meta, kept, cfg, t0)
    meta.seconds = time.monotonic() - t0
    return meta, kept
