"""Decoding and frame sampling on real tiny videos (PyAV), including broken inputs."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import DecodeConfig, I3DConfig
from pipeline.video._frames import resized_size
from pipeline.video.decode import (CorruptVideoError, DecodeTimeoutError, NoVideoStreamError, TruncatedVideoError,
                                   UnreadableVideoError)
from pipeline.video.sampling import clip_indices, clip_stacks, decode_products, sample_frames, strided_indices
from tests._videos import (frame_index_of, make_audio_first, make_audio_only, make_corrupt, make_garbage,
                           make_text_file, make_truncated, make_video, make_zero_byte)

SMALL = DecodeConfig(short_side=40, crop=32, frame_stride=4, max_frames=5)
CLIPS = I3DConfig(short_side=40, crop=32, clip_len=4, clip_step=2, max_clips=3)


def _bad(kind: str, tmp_path):
    good = make_video(tmp_path / "good.mp4", 60, faststart=kind == "truncated_index_first")
    makers = {
        "zero_byte": lambda: make_zero_byte(tmp_path / "zero.mp4"),
        "missing": lambda: tmp_path / "missing.mp4",
        "text_renamed": lambda: make_text_file(tmp_path / "notes.mp4"),
        "random_bytes": lambda: make_garbage(tmp_path / "garbage.mp4"),
        "audio_only": lambda: make_audio_only(tmp_path / "audio.mp4"),
        "truncated_index_last": lambda: make_truncated(good, tmp_path / "cut.mp4", 0.5),
        "truncated_index_first": lambda: make_truncated(good, tmp_path / "cut.mp4", 0.5),
        "corrupt_packets": lambda: make_corrupt(good, tmp_path / "corrupt.mp4"),
    }
    return makers[kind]()


@pytest.mark.parametrize("kind, error", [
    ("zero_byte", UnreadableVideoError), ("missing", UnreadableVideoError),
    ("text_renamed", UnreadableVideoError), ("random_bytes", UnreadableVideoError),
    ("audio_only", NoVideoStreamError), ("truncated_index_last", UnreadableVideoError),
    ("truncated_index_first", TruncatedVideoError), ("corrupt_packets", CorruptVideoError),
])
def test_bad_inputs_raise_their_decode_error(kind, error, tmp_path):
    path = _bad(kind, tmp_path)
    with pytest.raises(error) as info:
        sample_frames(path, SMALL)
    assert str(info.value)  # a message the status row can carry


def test_truncated_file_reports_its_shortfall(tmp_path):
    cut = make_truncated(make_video(tmp_path / "v.mp4", 60, faststart=True), tmp_path / "cut.mp4", 0.5)
    with pytest.raises(TruncatedVideoError, match=r"decoded \d+ of 60 frames"):
        sample_frames(cut, SMALL)
    lenient = sample_frames(cut, SMALL.model_copy(update={"max_missing_fraction": 1.0}))
    assert 0 < lenient.meta.n_decoded < lenient.meta.n_expected == 60


def test_samples_every_stride_th_decoded_frame(tmp_path):
    video = sample_frames(make_video(tmp_path / "v.mp4", 18), SMALL)
    assert video.indices == [0, 4, 8, 12, 16]
    assert [frame_index_of(f) for f in video.frames] == video.indices
    assert video.frames.shape == (5, 32, 32, 3) and video.frames.dtype == np.uint8
    assert (video.meta.n_decoded, video.meta.n_expected, video.meta.fps) == (18, 18, 12.0)


def test_long_video_is_capped_uniformly(tmp_path):
    video = sample_frames(make_video(tmp_path / "v.mp4", 60), SMALL)
    assert video.indices == [0, 16, 28, 40, 56]  # 15 candidates -> round(linspace(0, 14, 5)) * 4
    assert [frame_index_of(f) for f in video.frames] == video.indices


@pytest.mark.parametrize("n, stride, cap, expected", [
    (48, 16, 20, [0, 16, 32]),
    (10, 16, 20, [0]),           # shorter than the stride: still one frame
    (1, 16, 20, [0]),
    (17, 16, 20, [0, 16]),
    (400, 16, 20, None),         # 25 candidates capped to 20
])
def test_strided_indices(n, stride, cap, expected):
    got = strided_indices(n, stride, cap)
    if expected is not None:
        assert got == expected
    else:
        assert len(got) == cap and got[0] == 0 and got[-1] == 384 and got == sorted(set(got))


@pytest.mark.parametrize("n, clip_len, step, max_clips, expected", [
    (5, 4, 2, 3, [[0, 2, 4, 4]]),                            # short: last frame repeated
    (1, 4, 2, 3, [[0, 0, 0, 0]]),
    (14, 4, 2, 3, [[0, 2, 4, 6], [7, 9, 11, 13]]),            # two non-overlapping stacks fit
    (100, 4, 2, 3, [[0, 2, 4, 6], [46, 48, 50, 52], [93, 95, 97, 99]]),
])
def test_clip_indices(n, clip_len, step, max_clips, expected):
    assert clip_indices(n, clip_len, step, max_clips).tolist() == expected


def test_audio_first_file_decodes_its_video_stream(tmp_path):
    video = sample_frames(make_audio_first(tmp_path / "av.mp4", 12), SMALL)
    assert video.meta.stream_index == 1
    assert [frame_index_of(f) for f in video.frames] == [0, 4, 8]


def test_one_frame_video_gives_one_frame_and_a_padded_clip(tmp_path):
    path = make_video(tmp_path / "one.mp4", 1)
    assert sample_frames(path, SMALL).frames.shape == (1, 32, 32, 3)
    clips = clip_stacks(path, CLIPS, SMALL)
    assert clips.clips.shape == (1, 4, 32, 32, 3)
    assert clips.indices.tolist() == [[0, 0, 0, 0]] and clips.n_padded == 3


def test_clip_stacks_hold_the_indexed_frames(tmp_path):
    clips = clip_stacks(make_video(tmp_path / "v.mp4", 30), CLIPS, SMALL)
    assert clips.clips.shape == (3, 4, 32, 32, 3) and clips.n_padded == 0
    decoded = [[frame_index_of(f) for f in clip] for clip in clips.clips]
    assert decoded == clips.indices.tolist()


def test_one_pass_gives_both_products(tmp_path):
    path = make_video(tmp_path / "v.mp4", 30)
    frames, clips = decode_products(path, SMALL, True, CLIPS)
    assert frames.meta is clips.meta  # same decode pass
    np.testing.assert_array_equal(frames.frames, sample_frames(path, SMALL).frames)
    np.testing.assert_array_equal(clips.clips, clip_stacks(path, CLIPS, SMALL).clips)


def test_resize_then_centre_crop_geometry(tmp_path):
    assert resized_size(64, 48, 40) == (53, 40)
    assert resized_size(48, 64, 40) == (40, 53)
    wide = make_video(tmp_path / "wide.mp4", 4, size=(96, 32))
    assert sample_frames(wide, SMALL).frames.shape == (1, 32, 32, 3)


def test_time_limit_is_enforced(tmp_path):
    path = make_video(tmp_path / "v.mp4", 30)
    with pytest.raises(DecodeTimeoutError):
        sample_frames(path, SMALL.model_copy(update={"timeout_s": 1e-9}))


def test_crop_larger_than_short_side_is_refused(tmp_path):
    with pytest.raises(ValueError, match="crop"):
        sample_frames(make_video(tmp_path / "v.mp4", 4), DecodeConfig(short_side=40, crop=48))


def test_deadline_is_checked_inside_the_frame_loop(tmp_path, monkeypatch):
    import pipeline.video.decode as decode

    class Clock:  # every reading is 100 s later than the previous one
        now = 0.0

        def monotonic(self):
            self.now += 100.0
            return self.now

    path = make_video(tmp_path / "v.mp4", 30)
    monkeypatch.setattr(decode, "time", Clock())
    with pytest.raises(DecodeTimeoutError, match="decode exceeded 150 s"):
        sample_frames(path, SMALL.model_copy(update={"timeout_s": 150.0}))


def test_header_overstating_the_frame_count_is_ok_with_a_warning(tmp_path):
    """Issue 10 item 8: a complete AVI whose headers claim 120 frames but store 30 decodes cleanly to
    its end: the frames that exist are used, the counts are kept, and a warning says the header lies."""
    from tests._videos import make_overstated_avi

    path = make_overstated_avi(tmp_path / "over.avi", n_frames=30, stated=120)
    video = sample_frames(path, SMALL)
    assert (video.meta.n_decoded, video.meta.n_expected) == (30, 120)
    assert [frame_index_of(f) for f in video.frames] == video.indices == strided_indices(30, 4, 5)
    assert len(video.meta.warnings) == 1 and "overstates the frame count" in video.meta.warnings[0]
    assert "120" in video.meta.warnings[0] and "30" in video.meta.warnings[0]
    clips = clip_stacks(path, CLIPS, SMALL)
    assert clips.indices.max() == 29 and clips.meta.warnings


@pytest.mark.parametrize("suffix, keep", [(".mp4", 0.5), (".avi", 0.7)])
def test_cut_files_are_still_truncated_not_warnings(suffix, keep, tmp_path):
    """The clean-end rule must not let a cut file through: a cut faststart MP4 (short read at EOF)
    and a cut AVI (video data up to the last byte) stay errors."""
    good = make_video(tmp_path / f"good{suffix}", 60, faststart=suffix == ".mp4")
    cut = make_truncated(good, tmp_path / f"cut{suffix}", keep)
    with pytest.raises((TruncatedVideoError, CorruptVideoError)):
        sample_frames(cut, SMALL)


def test_complete_files_carry_no_warning(tmp_path):
    for name in ("v.mp4", "v.avi", "v.mkv"):
        assert sample_frames(make_video(tmp_path / name, 20), SMALL).meta.warnings == []
