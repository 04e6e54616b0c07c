"""Which decoded frames one decode pass converts, and the conversion itself (resize, turn, centre crop).

Converting a frame (swscale colour conversion and resize to RGB, then the crop) costs far more than
decoding it: on the 256x256 sample videos (240 frames) decoding costs ~0.03 ms a frame, converting
~0.3 ms a frame (decoding all and converting none ~0.008 s a video, converting all ~0.08 s). A
pass therefore converts only the frames its requests keep. ResNet's frames are known up front
(every ``frame_stride``-th decoded frame). I3D's clip grid (:func:`clip_indices`) depends on the
number of decoded frames, which is only known at the end of the stream, so a clip request
(:class:`ClipGrid`) is planned and checked (issue 11, "decode once"):

* The first pass converts the frames of the grid predicted from the container's stated count
  (``expected_frames``: frame count, or duration x fps). With no stated count at all (raw
  elementary streams: .h264, .m2v) it converts the first clip only (0, step, 2 step, ...), which
  every grid starts with. The last decoded frame is held unconverted either way, so a grid whose
  only unconverted frame is the last one (a short video's padding repeats it) needs no second pass.
* At the end the real grid for ``n_decoded`` is known. Frames it needs that the first pass did not
  convert (header count wrong, duration x fps off by a frame, a variable frame rate, a shortfall
  accepted as ok, no stated count) come from a SECOND pass that converts exactly those frames and
  stops after the last of them; ``VideoMeta.decode_passes`` is 2 then. Pixels, indices and meta are
  the same as converting every frame (the decoder is deterministic; the second pass checks that it
  saw the frames it needed).
* Why no stated count does not mean converting every frame (the old behaviour): a second pass costs
  a decode (~0.03 ms a frame, plus opening the file) and the grid's conversions, converting every
  frame ~0.3 ms a frame, so two passes win for anything longer than a few frames; the videos where
  they would not (one clip span or shorter) need no second pass: the first clip and the held last
  frame are their whole grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import av
import numpy as np

QUARTER_TURN = 90  # degrees of one np.rot90 step

Selector = int | frozenset  # keep every n-th decoded frame (int), or exactly these decode indices


def clip_indices(n_decoded: int, clip_len: int, clip_step: int, max_clips: int) -> np.ndarray:
    """(n_clips, clip_len) decode indices of uniformly placed stacks.

    As many non-overlapping stacks as fit (at least 1, at most ``max_clips``),
    spread from the first to the last frame; slots past the end repeat the last
    frame.
    """
    span = (clip_len - 1) * clip_step + 1
    n_clips = min(max_clips, max(1, n_decoded // span))
    starts = np.round(np.linspace(0, max(n_decoded - span, 0), n_clips)).astype(np.int64)
    grid = starts[:, None] + clip_step * np.arange(clip_len)[None, :]
    return np.minimum(grid, n_decoded - 1)


@dataclass(frozen=True)
class ClipGrid:
    """The clip layout a request keeps (I3D): :func:`clip_indices` of the decoded count."""

    clip_len: int
    clip_step: int
    max_clips: int

    @property
    def span(self) -> int:
        return (self.clip_len - 1) * self.clip_step + 1

    def indices(self, n_decoded: int) -> np.ndarray:
        return clip_indices(n_decoded, self.clip_len, self.clip_step, self.max_clips)

    def planned(self, n_expected: int | None) -> frozenset[int]:
        """What the first pass converts: the grid of the stated count, else the first clip (every grid's)."""
        return frozenset(self.indices(n_expected or self.span).ravel().tolist())


def first_pass_selectors(requests: Mapping[str, object], n_expected: int | None) -> dict[str, Selector]:
    """Per request: ``every`` for plain requests, the planned grid's frames for clip requests."""
    return {name: req.clips.planned(n_expected) if req.clips is not None else req.every
            for name, req in requests.items()}


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side scaled to ``short_side``, aspect ratio kept."""
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def quarter_turns(rotation: int) -> int | None:
    """``np.rot90``'s k that shows a frame upright, given its counter-clockwise display rotation in degrees.

    None when the rotation is not a multiple of 90 degrees (not applied).
    """
    if rotation % QUARTER_TURN:
        return None
    return (rotation // QUARTER_TURN) % 4


def to_rgb_crop(frame: av.VideoFrame, short_side: int, crop: int, interpolation: str,
                turns: int = 0) -> np.ndarray:
    """Resize the short side to ``short_side`` (swscale), turn ``turns`` quarters counter-clockwise,
    then centre-crop ``crop`` x ``crop``."""
    w, h = resized_size(frame.width, frame.height, short_side)
    rgb = np.rot90(frame.reformat(width=w, height=h, format="rgb24", interpolation=interpolation).to_ndarray(), turns)
    h, w = rgb.shape[:2]
    top, left = (h - crop) // 2, (w - crop) // 2
    return np.ascontiguousarray(rgb[top:top + crop, left:left + crop])


def _wants(selector: Selector, index: int) -> bool:
    return index in selector if isinstance(selector, frozenset) else index % selector == 0


def keep_frame(frame: av.VideoFrame, index: int, requests: Mapping[str, object], selectors: Mapping[str, Selector],
               kept: Mapping[str, object], interpolation: str, turns: int) -> None:
    """Convert ``frame`` once per geometry for the requests that select ``index`` and append it to their kept frames."""
    converted: dict[tuple[int, int], np.ndarray] = {}
    for name, req in requests.items():
        if not _wants(selectors[name], index):
            continue
        geom = (req.short_side, req.crop)
        if geom not in converted:
            converted[geom] = to_rgb_crop(frame, req.short_side, req.crop, interpolation, turns)
        kept[name].indices.append(index)
        kept[name].frames.append(converted[geom])


def _borrow(name: str, need: set[int], requests: Mapping[str, object], kept: Mapping[str, object]) -> None:
    """Take the ``need``ed frames another request of the same geometry converted (one array, as within a pass)."""
    geom = (requests[name].short_side, requests[name].crop)
    for other, req in requests.items():
        if other == name or (req.short_side, req.crop) != geom:
            continue
        for index, rgb in zip(kept[other].indices, kept[other].frames):
            if index in need:
                kept[name].indices.append(index)
                kept[name].frames.append(rgb)
                need.discard(index)


def missing_clip_frames(requests: Mapping[str, object], kept: Mapping[str, object], n_decoded: int,
                        last: av.VideoFrame | None, interpolation: str, turns: int) -> dict[str, frozenset[int]]:
    """Per clip request, the real grid's frames still unconverted after the first pass.

    Frames another request of the same geometry kept are shared; the last decoded frame (``last``,
    held unconverted) is converted here when the grid needs it.
    """
    missing = {}
    for name, req in requests.items():
        if req.clips is None:
            continue
        need = set(req.clips.indices(n_decoded).ravel().tolist()) - set(kept[name].indices)
        _borrow(name, need, requests, kept)
        if n_decoded - 1 in need and last is not None:
            keep_frame(last, n_decoded - 1, {name: req}, {name: 1}, kept, interpolation, turns)
            need.discard(n_decoded - 1)
        if need:
            missing[name] = frozenset(need)
    return missing
