"""The synthetic sample set: byte-determinism, MSR-VTT structure, captions true to the pixels."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.datasets.sample_data import BACKGROUNDS, MOTION_PHRASES, SHAPE_NOUNS, generate_sample_dataset, main

N = 12


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return generate_sample_dataset(tmp_path_factory.mktemp("sample"), n_videos=N, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(sample, tmp_path):
    again = generate_sample_dataset(tmp_path / "again", n_videos=N, seed=3)
    assert _files(again.parent) == _files(sample.parent)
    other = generate_sample_dataset(tmp_path / "other", n_videos=N, seed=4)
    assert other.read_bytes() != sample.read_bytes()


def test_msrvtt_structure(sample):
    ann = json.loads(sample.read_text())
    ids = [v["video_id"] for v in ann["videos"]]
    assert ids == [f"video{i}" for i in range(N)]
    assert Counter(v["split"] for v in ann["videos"]) == {"train": 8, "validate": 2, "test": 2}
    per_video = Counter(s["video_id"] for s in ann["sentences"])
    assert set(per_video) == set(ids) and set(per_video.values()) == {5}
    assert len({s["sen_id"] for s in ann["sentences"]}) == len(ann["sentences"])
    for vid in ids:
        caps = [s["caption"] for s in ann["sentences"] if s["video_id"] == vid]
        assert len(set(caps)) == 5  # five different descriptions


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _blob(frame: np.ndarray, background: str) -> tuple[float, float, int]:
    """Centroid (x, y) and area of the pixels that differ from the background."""
    mask = np.abs(frame.astype(int) - BACKGROUNDS[background]).sum(-1) > 60
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean()), int(mask.sum())


def _motion_holds(motion: str, frames: list[np.ndarray], background: str) -> bool:
    (x0, y0, a0), (xm, _, _), (x1, y1, a1) = (_blob(frames[i], background) for i in (0, len(frames) // 2, -1))
    return {"left": x1 < x0 - 30, "right": x1 > x0 + 30, "up": y1 < y0 - 30, "down": y1 > y0 + 30,
            "grow": a1 > 2 * a0, "shrink": a0 > 2 * a1, "bounce": xm > x0 + 30 and abs(x1 - x0) < 5}[motion]


def test_videos_are_real_and_captions_describe_them(sample):
    ann = json.loads(sample.read_text())
    checked = 0
    for video in ann["videos"]:
        frames = _frames(sample.parent / "videos" / f"{video['video_id']}.mp4")
        assert len(frames) == 48 and frames[0].shape == (128, 128, 3)
        spec = video["sample_spec"]
        caps = [s["caption"] for s in ann["sentences"] if s["video_id"] == video["video_id"]]
        for obj in spec["objects"]:
            assert all(obj["colour"] in c for c in caps)
            assert all(any(n in c for n in SHAPE_NOUNS[obj["shape"]]) for c in caps)
            assert all(any(p in c for p in MOTION_PHRASES[obj["motion"]]) for c in caps)
        if len(spec["objects"]) == 1:
            assert _motion_holds(spec["objects"][0]["motion"], frames, spec["background"]), video
            checked += 1
    assert checked >= N // 2


def test_command_line_entry_point(tmp_path, capsys):
    path = main(["--out", str(tmp_path / "cli"), "--n-videos", "3", "--seed", "1"])
    assert len(list((tmp_path / "cli/videos").glob("*.mp4"))) == 3
    assert json.loads(path.read_text())["info"]["seed"] == 1
    assert "IngestConfig" in capsys.readouterr().out
