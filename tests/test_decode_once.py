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


def _submitted_tasks(tmp_path, monkeypatch) -> list[dict]:
    """The task submissions of flows.build._video_chain for 4 videos, 2 per shard, both extractors."""
    import inspect

    from flows import _stages
    from flows import build as fb
    from pipeline import build as pb
    from storage.schemas import SCHEMAS
    from storage.tables import write_table

    blank = dict.fromkeys(SCHEMAS["videos"][1].names)
    write_table(tmp_path / "videos.parquet", "videos",
                [{**blank, "key": f"v{i}", "path": f"v{i}.mp4", "split": "train", "status": "ok"} for i in range(4)])
    flat = {k: p.default for k, p in inspect.signature(fb.build_features.fn).parameters.items() if k in pb.FLAT_PARAMS}
    cfg = pb.make_build_config(**{**flat, "weights": "random", "shard_size": 2, "dataset_root": str(tmp_path),
                                  "extractors": ["resnet152", "i3d_r50"]}, overrides={})
    submitted: list[dict] = []
    monkeypatch.setattr(_stages, "submit_stage", lambda task, **kw: submitted.append(kw) or kw)
    monkeypatch.setattr(_stages, "submit_stages", lambda task, **kw: submitted.append(kw) or kw)
    fb._video_chain(str(tmp_path), cfg, set(), [])
    return submitted


def test_product_flow_has_no_per_extractor_switch_and_the_bench_recreates_the_old_split(tmp_path, monkeypatch):
    """The flow always runs ONE extraction task per shard (both extractors, one decode); the per-extractor
    tasks bench/bench_build.py compares against come from the bench wrapping flows.build.extraction_groups
    (no switch in the product code), with the same stage keys and merges."""
    import sys
    from pathlib import Path

    from flows import build as fb

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from bench_build import _per_extractor

    assert not hasattr(fb, "DECODE_ONCE")
    once = _submitted_tasks(tmp_path, monkeypatch)
    shards = [kw for kw in once if "plans" in kw]
    assert [(kw["shard"], [p["stage"] for p in kw["plans"]]) for kw in shards] == \
        [("shard-00000", ["resnet152", "i3d_r50"]), ("shard-00001", ["resnet152", "i3d_r50"])]
    monkeypatch.setattr(fb, "extraction_groups", _per_extractor(fb.extraction_groups))
    old = _submitted_tasks(tmp_path, monkeypatch)
    split = [kw for kw in old if "plans" in kw]
    assert [(kw["shard"], [p["stage"] for p in kw["plans"]]) for kw in split] == \
        [("shard-00000", ["resnet152"]), ("shard-00001", ["resnet152"]),
         ("shard-00000", ["i3d_r50"]), ("shard-00001", ["i3d_r50"])]  # extractor by extractor, as before
    assert [set(kw["kwargs"]["models"]) for kw in split] == [{p["stage"]} for kw in split for p in kw["plans"]]
    keys = lambda tasks: sorted((p["stage"], p["key"]) for kw in tasks if "plans" in kw for p in kw["plans"])  # noqa: E731
    assert keys(old) == keys(once)
    merges = lambda tasks: [(kw["stage"], kw["key"]) for kw in tasks if "plans" not in kw]  # noqa: E731
    assert merges(old) == merges(once) and len(merges(once)) == 2
