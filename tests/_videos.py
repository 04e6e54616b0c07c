"""Tiny test videos made on the fly (PyAV), importable as ``from tests._videos import ...``.

Frames of :func:`make_video` encode their own index in the colour:
red = (i % 16) * 16 + 8, green = (i // 16) * 16 + 8, blue = 128, so a test
can read back WHICH decoded frame it was given (:func:`frame_index_of`).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from storage.video_files import VideoSpec, write_video

CODE_STEP = 16


def index_frame(i: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """An RGB frame (height, width, 3) whose colour encodes ``i`` (i < 256)."""
    w, h = size
    frame = np.empty((h, w, 3), np.uint8)
    frame[..., 0] = (i % CODE_STEP) * CODE_STEP + CODE_STEP // 2
    frame[..., 1] = (i // CODE_STEP) * CODE_STEP + CODE_STEP // 2
    frame[..., 2] = 128
    return frame


def frame_index_of(rgb: np.ndarray) -> int:
    """Inverse of :func:`index_frame` on a decoded (lossy) frame."""
    r, g = float(np.median(rgb[..., 0])), float(np.median(rgb[..., 1]))
    return int(round((g - CODE_STEP // 2) / CODE_STEP)) * CODE_STEP + int(round((r - CODE_STEP // 2) / CODE_STEP))


def make_video(path: Path, n_frames: int = 24, size: tuple[int, int] = (64, 48), codec: str = "mpeg4",
               fps: int = 12, faststart: bool = False) -> Path:
    """Encode ``n_frames`` index-coded frames of ``size`` = (width, height)."""
    frames = (index_frame(i, size) for i in range(n_frames))
    return write_video(path, frames, VideoSpec(fps=fps, codec=codec, faststart=faststart, bit_rate=800_000))


def _encode_audio(container, stream, seconds: float) -> None:
    rate = stream.codec_context.sample_rate
    n = int(rate * seconds)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
    step = stream.codec_context.frame_size or 1024
    for start in range(0, n, step):
        chunk = tone[None, start:start + step]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def make_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An MP4 holding one AAC audio stream and no video stream."""
    with av.open(str(path), "w", format="mp4") as c:
        stream = c.add_stream("aac", rate=16000, layout="mono")
        _encode_audio(c, stream, seconds)
    return path


def make_audio_first(path: Path, n_frames: int = 24, size: tuple[int, int] = (64, 48), fps: int = 12) -> Path:
    """An MP4 whose stream 0 is audio and stream 1 is the index-coded video."""
    with av.open(str(path), "w", format="mp4") as c:
        audio = c.add_stream("aac", rate=16000, layout="mono")
        video = c.add_stream("mpeg4", rate=Fraction(fps))
        video.width, video.height, video.pix_fmt, video.bit_rate = size[0], size[1], "yuv420p", 800_000
        _encode_audio(c, audio, n_frames / fps)
        for i in range(n_frames):
            c.mux(video.encode(av.VideoFrame.from_ndarray(index_frame(i, size), format="rgb24")))
        c.mux(video.encode(None))
    return path


def make_truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` fraction of ``src``'s bytes to ``dst`` (a cut download)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def make_zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def make_text_file(path: Path) -> Path:
    """A text file with a video extension."""
    path.write_text("this is not a video\n" * 50)
    return path


def make_garbage(path: Path, n_bytes: int = 4096, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())
    return path


def make_corrupt(src: Path, dst: Path, n_bytes: int = 400, seed: int = 1) -> Path:
    """``src`` with ``n_bytes`` seeded random bytes written over its middle third (bad packets)."""
    data = bytearray(src.read_bytes())
    start = len(data) // 3
    data[start:start + n_bytes] = np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


# ------------------------------------------------------- odd-but-valid files

VFR_PTS_MS = (0, 40, 50, 60, 300, 310, 700, 1500, 1510, 1520, 2600, 2640, 2650, 4000)
MS = Fraction(1, 1000)


def _video_stream(container, codec: str, size: tuple[int, int], fps: int):
    stream = container.add_stream(codec, rate=Fraction(fps), options={"flags": "+bitexact"})
    stream.width, stream.height, stream.pix_fmt, stream.bit_rate = size[0], size[1], "yuv420p", 800_000
    stream.codec_context.thread_count = 1
    return stream


def make_vfr(path: Path, pts_ms: tuple[int, ...] = VFR_PTS_MS, size: tuple[int, int] = (64, 48),
             codec: str = "mpeg4", nominal_fps: int = 25) -> Path:
    """Index-coded frames with irregular timestamps (bursts and long gaps), in millisecond pts.

    The container follows the suffix. Matroska/WebM store no frame count, so a
    reader's estimate is duration x ``nominal_fps`` (101 for the default pts),
    far more than the ``len(pts_ms)`` frames present.
    """
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as c:
        stream = _video_stream(c, codec, size, nominal_fps)
        stream.codec_context.time_base = MS
        for i, t in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(index_frame(i, size), format="rgb24")
            frame.pts, frame.time_base = t, MS
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return path


def halves_frame(size: tuple[int, int] = (96, 48)) -> np.ndarray:
    """Left half pure red, right half pure blue: shows which way a frame was turned."""
    w, h = size
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, : w // 2, 0] = 255
    frame[:, w // 2:, 2] = 255
    return frame


def make_rotated(path: Path, degrees: int = 90, n_frames: int = 4, size: tuple[int, int] = (96, 48),
                 codec: str = "mpeg4", fps: int = 12) -> Path:
    """:func:`halves_frame` frames stored as is, with a display matrix saying "turn ``degrees`` counter-clockwise".

    Written with PyAV 18's ``VideoStream.set_display_rotation`` (the coded
    side data phones write; FFmpeg reads it back as ``VideoFrame.rotation``).
    """
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as c:
        stream = _video_stream(c, codec, size, fps)
        stream.set_display_rotation(degrees)
        for _ in range(n_frames):
            c.mux(stream.encode(av.VideoFrame.from_ndarray(halves_frame(size), format="rgb24")))
        c.mux(stream.encode(None))
    return path


def make_large(path: Path, n_frames: int = 2, size: tuple[int, int] = (3840, 2160)) -> Path:
    """A few index-coded frames at a very large resolution (4K UHD by default)."""
    return make_video(path, n_frames, size=size)


def make_wrong_extension(path: Path, real_suffix: str, n_frames: int = 10, size: tuple[int, int] = (64, 48)) -> Path:
    """An index-coded video muxed for ``real_suffix`` ('.mkv', '.avi', '.mp4') but saved under ``path``'s name."""
    real = path.with_name(f"{path.stem}.real{real_suffix}")
    make_video(real, n_frames, size=size)
    real.replace(path)
    return path


def make_overstated_avi(path: Path, n_frames: int = 30, stated: int = 120, size: tuple[int, int] = (64, 48)) -> Path:
    """A complete, playable AVI of ``n_frames`` index-coded frames whose headers claim ``stated`` frames.

    Patches the two counts real AVI writers get wrong: the main header's
    ``dwTotalFrames`` (``avih``) and the video stream header's ``dwLength``
    (``strh``), which FFmpeg reports as the stream's frame count. The movi data
    and the idx1 index are untouched, so the file decodes cleanly to its end.
    """
    import struct

    make_video(path, n_frames, size=size)
    data = bytearray(path.read_bytes())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    if avih < 0 or strh < 0 or data[strh + 8:strh + 12] != b"vids":
        raise ValueError(f"{path}: not the AVI layout this helper patches")
    struct.pack_into("<I", data, avih + 8 + 16, stated)  # MainAVIHeader.dwTotalFrames
    struct.pack_into("<I", data, strh + 8 + 32, stated)  # AVIStreamHeader.dwLength
    path.write_bytes(bytes(data))
    return path
