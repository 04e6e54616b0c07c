"""Issue 11: one decode pass per video feeds every extractor of a shard, with per-extractor caching.

In-process builds (local thread runner) with ``pipeline.video.extract.decode_products`` wrapped to
count its calls: both extractors of a shard come from ONE decode per video; a forced extractor or
one added later recomputes (and decodes for) only that extractor.
"""
from __future__ import annotations

from collections import Counter

import pytest

from pipeline.video import extract
from tests._flowutil import build as _build
from tests._flowutil import executed as _executed

N_VIDEOS, SHARDS = 6, ("shard-00000", "shard-00001")  # tiny sample: 6 videos, shard_size 3


@pytest.fixture()
def decodes(monkeypatch):
    """Counter of (video file name, frames wanted, clips wanted) per decode_products call."""
    calls, real = Counter(), extract.decode_products

    def counting(path, decode_cfg, frames, i3d_cfg):
        calls[(str(path).rsplit("/", 1)[-1], bool(frames), i3d_cfg is not None)] += 1
        return real(path, decode_cfg, frames, i3d_cfg)

    monkeypatch.setattr(extract, "decode_products", counting)
    return calls


def _only(name: str) -> set[tuple[str, str]]:
    return {(name, s) for s in SHARDS} | {(f"merge-{name}", "")}


def test_both_extractors_share_one_decode_per_video_and_force_reruns_one(prefect_server, tiny_sample, tmp_path,
                                                                          decodes):
    summary = _build(tiny_sample, tmp_path)
    assert _only("resnet152") | _only("i3d_r50") <= _executed(summary)
    assert len(decodes) == N_VIDEOS and set(decodes.values()) == {1}  # each video decoded once...
    assert {(f, c) for _, f, c in decodes} == {(True, True)}  # ...for frames AND clips together
    decodes.clear()
    forced = _build(tiny_sample, tmp_path, force=["i3d_r50"])
    # ResNet shards stay committed and untouched; the merge keeps its key (same shard keys)
    assert _executed(forced) == {("i3d_r50", s) for s in SHARDS}
    assert len(decodes) == N_VIDEOS and {(f, c) for _, f, c in decodes} == {(False, True)}  # clips only


def test_extractor_added_later_computes_only_itself(prefect_server, tiny_sample, tmp_path, decodes):
    first = _build(tiny_sample, tmp_path, extractors=["resnet152"])
    assert _executed(first) >= _only("resnet152") and not any(s.startswith(("i3d", "merge-i3d"))
                                                               for s, _ in _executed(first))
    decodes.clear()
    both = _build(tiny_sample, tmp_path, extractors=["resnet152", "i3d_r50"])
    assert _executed(both) == _only("i3d_r50")
    assert len(decodes) == N_VIDEOS and {(f, c) for _, f, c in decodes} == {(False, True)}
    decodes.clear()
    assert _executed(_build(tiny_sample, tmp_path)) == set() and not decodes  # rerun: all cached
