"""Issue 11: the clip request converts only its grid's frames; the output equals converting every frame.

The reference is the old behaviour (a request keeping every decoded frame, ``every=1``, then the grid),
and once an independent plain PyAV loop. Files cover a right header count (one pass), estimates that
are off or absent (second pass), a header that overstates the count, and videos shorter than a clip.
"""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

import pipeline.video._frames as frames_mod
from pipeline.config import DecodeConfig, I3DConfig
from pipeline.video._frames import ClipGrid, resized_size
from pipeline.video.decode import FrameRequest, decode_video
from pipeline.video.sampling import clip_indices, clip_stacks, decode_products, sample_frames, strided_indices
from tests._videos import (frame_index_of, index_frame, make_overstated_avi, make_truncated, make_vfr,
                           make_video)

SMALL = DecodeConfig(short_side=40, crop=32, frame_stride=4, max_frames=5)
CLIPS = I3DConfig(short_side=40, crop=32, clip_len=4, clip_step=2, max_clips=3)
OTHER_GEOMETRY = CLIPS.model_copy(update={"short_side": 36, "crop": 36})
LENIENT = SMALL.model_copy(update={"max_missing_fraction": 1.0})


def _write(path, n: int, fmt: str, codec: str = "mpeg4"):
    """Index-coded frames muxed as ``fmt`` (raw elementary streams state no count; NUT's estimate is one short)."""
    with av.open(str(path), "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=Fraction(12))
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 64, 48, "yuv420p", 800_000
        for i in range(n):
            c.mux(stream.encode(av.VideoFrame.from_ndarray(index_frame(i), format="rgb24")))
        c.mux(stream.encode(None))
    return path


def _video(kind: str, tmp_path):
    makers = {
        "mp4_61": lambda: make_video(tmp_path / "v.mp4", 61),
        "avi_61": lambda: make_video(tmp_path / "v.avi", 61),
        "mkv_61": lambda: make_video(tmp_path / "v.mkv", 61),  # duration x fps, exact here
        "webm_30": lambda: make_video(tmp_path / "v.webm", 30, codec="libvpx"),
        "mp4_5_short": lambda: make_video(tmp_path / "v.mp4", 5),
        "mp4_1": lambda: make_video(tmp_path / "v.mp4", 1),
        "nut_61_estimate_short": lambda: _write(tmp_path / "v.nut", 61, "nut"),
        "m2v_61_no_count": lambda: _write(tmp_path / "v.m2v", 61, "mpeg2video", "mpeg2video"),
        "m2v_6_no_count_short": lambda: _write(tmp_path / "v.m2v", 6, "mpeg2video", "mpeg2video"),
        "m2v_4_no_count_short": lambda: _write(tmp_path / "v.m2v", 4, "mpeg2video", "mpeg2video"),
        "avi_overstated": lambda: make_overstated_avi(tmp_path / "over.avi", n_frames=30, stated=120),
        "mkv_vfr": lambda: make_vfr(tmp_path / "vfr.mkv"),
        "mp4_cut_lenient": lambda: make_truncated(make_video(tmp_path / "v.mp4", 60, faststart=True),
                                                  tmp_path / "cut.mp4", 0.5),
    }
    return makers[kind]()


# kind -> decode passes the clip request needs
PASSES = {"mp4_61": 1, "avi_61": 1, "mkv_61": 1, "webm_30": 1, "mp4_5_short": 1, "mp4_1": 1,
          "nut_61_estimate_short": 2, "m2v_61_no_count": 2, "m2v_6_no_count_short": 1, "m2v_4_no_count_short": 1,
          "avi_overstated": 2,
          "mkv_vfr": 2, "mp4_cut_lenient": 2}


def _reference(path, cfg: I3DConfig = CLIPS, decode_cfg: DecodeConfig = LENIENT):
    """The old path: every decoded frame converted, then the grid of the decoded count."""
    meta, kept = decode_video(path, {"all": FrameRequest(cfg.short_side, cfg.crop, every=1)}, decode_cfg)
    assert kept["all"].indices == list(range(meta.n_decoded))
    grid = clip_indices(meta.n_decoded, cfg.clip_len, cfg.clip_step, cfg.max_clips)
    return np.stack(kept["all"].frames)[grid], grid, meta


@pytest.fixture()
def conversions(monkeypatch):
    """Calls of the RGB conversion (resize + crop), counted from the moment the fixture is requested."""
    seen, real = [], frames_mod.to_rgb_crop

    def counting(frame, *args, **kwargs):
        seen.append(frame)
        return real(frame, *args, **kwargs)

    monkeypatch.setattr(frames_mod, "to_rgb_crop", counting)
    return seen


def _converted_set(meta, n_expected, grid_cfg: I3DConfig = CLIPS, every: int | None = None) -> set[int]:
    """Frames the sparse path converts: the planned grid's frames that exist, the real grid, and (shared
    geometry) every ``every``-th frame."""
    grid = ClipGrid(grid_cfg.clip_len, grid_cfg.clip_step, grid_cfg.max_clips)
    planned = {i for i in grid.planned(n_expected) if i < meta.n_decoded}
    out = planned | set(grid.indices(meta.n_decoded).ravel().tolist())
    return out | set(range(0, meta.n_decoded, every)) if every else out


@pytest.mark.parametrize("kind", sorted(PASSES))
def test_sparse_clips_equal_converting_every_frame(kind, tmp_path, request):
    path = _video(kind, tmp_path)
    expected, grid, ref_meta = _reference(path)
    seen = request.getfixturevalue("conversions")
    clips = clip_stacks(path, CLIPS, LENIENT)
    assert np.array_equal(clips.clips, expected) and clips.clips.dtype == np.uint8
    assert np.array_equal(clips.indices, grid)
    assert clips.n_padded == int(np.sum(grid[:, 1:] == grid[:, :-1]))
    for field in ("n_decoded", "n_expected", "expected_source", "warnings", "decode_errors", "rotation"):
        assert getattr(clips.meta, field) == getattr(ref_meta, field), field
    assert ref_meta.decode_passes == 1 and clips.meta.decode_passes == PASSES[kind]
    assert len(seen) == len(_converted_set(clips.meta, clips.meta.n_expected))
    if kind != "mp4_cut_lenient":  # (a cut file's last frames decode damaged: equal, not index-coded)
        assert [[frame_index_of(f) for f in clip] for clip in clips.clips] == grid.tolist()


def test_right_header_count_converts_only_the_grid_in_one_pass(tmp_path, conversions):
    path = make_video(tmp_path / "v.mp4", 100)
    clips = clip_stacks(path, CLIPS, SMALL)
    assert clips.indices.tolist() == [[0, 2, 4, 6], [46, 48, 50, 52], [93, 95, 97, 99]]
    assert clips.meta.decode_passes == 1
    assert len(conversions) == 12  # of 100 decoded frames (the old path converted all 100)


def test_header_overstating_the_count_takes_a_second_pass_for_the_real_grid(tmp_path, conversions):
    path = make_overstated_avi(tmp_path / "over.avi", n_frames=30, stated=120)
    clips = clip_stacks(path, CLIPS, SMALL)
    assert (clips.meta.n_decoded, clips.meta.n_expected, clips.meta.decode_passes) == (30, 120, 2)
    assert clips.indices.tolist() == [[0, 2, 4, 6], [12, 14, 16, 18], [23, 25, 27, 29]]
    # first pass: the predicted grid for 120 frames that exist (0, 2, 4, 6); second: the other 8
    assert len(conversions) == 12 and "overstates the frame count" in clips.meta.warnings[0]


@pytest.mark.parametrize("kind", ["mp4_5_short", "mp4_1", "m2v_4_no_count_short"])
def test_video_shorter_than_one_clip_pads_with_its_last_frame(kind, tmp_path):
    clips = clip_stacks(_video(kind, tmp_path), CLIPS, SMALL)
    n = clips.meta.n_decoded
    assert clips.clips.shape == (1, 4, 32, 32, 3) and clips.meta.decode_passes == 1
    assert clips.indices.tolist() == [[min(i, n - 1) for i in (0, 2, 4, 6)]]
    assert [frame_index_of(f) for f in clips.clips[0]] == clips.indices[0].tolist()
    assert clips.n_padded == int(np.sum(np.diff(clips.indices[0]) == 0)) > 0


@pytest.mark.parametrize("kind", ["mp4_61", "avi_overstated", "m2v_61_no_count", "nut_61_estimate_short",
                                  "mp4_5_short"])
@pytest.mark.parametrize("i3d", [CLIPS, OTHER_GEOMETRY], ids=["same-geometry", "other-geometry"])
def test_both_requests_in_one_pass_equal_each_alone(kind, i3d, tmp_path, request):
    path = _video(kind, tmp_path)
    alone_frames, alone_clips = sample_frames(path, SMALL), clip_stacks(path, i3d, SMALL)
    expected, grid, _ = _reference(path, i3d, SMALL)
    seen = request.getfixturevalue("conversions")
    frames, clips = decode_products(path, SMALL, True, i3d)
    assert frames.meta is clips.meta and clips.meta.decode_passes == PASSES[kind]
    assert np.array_equal(frames.frames, alone_frames.frames) and frames.indices == alone_frames.indices
    assert frames.indices == strided_indices(frames.meta.n_decoded, 4, 5)
    assert np.array_equal(clips.clips, alone_clips.clips) and np.array_equal(clips.clips, expected)
    assert np.array_equal(clips.indices, grid) and clips.n_padded == alone_clips.n_padded
    n, every = frames.meta.n_decoded, SMALL.frame_stride
    if i3d is CLIPS:  # one geometry: a frame both keep is converted once, across passes too
        assert len(seen) == len(_converted_set(clips.meta, clips.meta.n_expected, i3d, every))
    else:
        assert len(seen) == len(range(0, n, every)) + len(_converted_set(clips.meta, clips.meta.n_expected, i3d))


def test_equal_to_an_independent_pyav_loop(tmp_path):
    """Guards the reference itself: decode every frame with plain PyAV, resize + crop, index the grid."""
    path = make_overstated_avi(tmp_path / "over.avi", n_frames=45, stated=90)
    frames = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            w, h = resized_size(frame.width, frame.height, CLIPS.short_side)
            rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="BILINEAR").to_ndarray()
            top, left = (h - CLIPS.crop) // 2, (w - CLIPS.crop) // 2
            frames.append(rgb[top:top + CLIPS.crop, left:left + CLIPS.crop])
    grid = clip_indices(len(frames), CLIPS.clip_len, CLIPS.clip_step, CLIPS.max_clips)
    clips = clip_stacks(path, CLIPS, SMALL)
    assert clips.meta.decode_passes == 2 and np.array_equal(clips.clips, np.stack(frames)[grid])


@pytest.mark.parametrize("n_expected, n_decoded", [(61, 61), (60, 61), (None, 61), (None, 6), (120, 30)])
def test_plan_is_the_predicted_grid_or_the_first_clip(n_expected, n_decoded):
    grid = ClipGrid(CLIPS.clip_len, CLIPS.clip_step, CLIPS.max_clips)
    planned = grid.planned(n_expected)
    expect = grid.indices(n_expected) if n_expected else np.array([0, 2, 4, 6])
    assert planned == frozenset(expect.ravel().tolist())
    if n_expected is None:  # every grid starts with the first clip (clamped to the last frame)
        assert set(grid.indices(n_decoded)[0].tolist()) <= planned | {n_decoded - 1}


@pytest.mark.parametrize("degrees", [0, 90, 270])
def test_forced_second_pass_keeps_rotation_and_pixels(degrees, tmp_path, monkeypatch):
    """Plan as if the count were unknown (first clip only) on a rotated MP4: the held last frame and the
    second pass turn frames like the first pass does."""
    import pipeline.video.decode as decode
    from tests._videos import make_rotated

    path = make_rotated(tmp_path / "r.mp4", degrees, n_frames=20)
    expected, grid, _ = _reference(path, CLIPS, SMALL)
    real = decode.first_pass_selectors
    monkeypatch.setattr(decode, "first_pass_selectors", lambda requests, n_expected: real(requests, None))
    clips = clip_stacks(path, CLIPS, SMALL)
    assert clips.meta.decode_passes == 2 and clips.meta.rotation_applied % 360 == degrees  # (270 reads -90)
    assert np.array_equal(clips.clips, expected) and np.array_equal(clips.indices, grid)
