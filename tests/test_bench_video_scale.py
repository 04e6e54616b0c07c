"""bench/bench_video_scale.py reports the build's real counts: shards on disk, the task runs Prefect
recorded for the flow run, failed videos from the status tables, units per video from the manifests."""
from __future__ import annotations

import shutil
from pathlib import Path

from bench import bench_video_scale as bvs


def test_progress_points_and_in_run_marginal():
    # shards of 2, 2, 2 videos committed at t = 1, 3, 7 s (samples every second)
    samples = [(0.0, 100.0, 0, 1.0), (1.0, 110.0, 1, 1.0), (2.0, 111.0, 1, 1.0), (3.0, 112.0, 2, 1.0),
               (5.0, 113.0, 2, 1.0), (7.0, 120.0, 3, 2.0)]
    pts = bvs._at_fractions(samples, [2, 2, 2], 6)
    assert [p["videos"] for p in pts] == [2, 4, 6, 6]  # 25 % = 1.5 videos -> first shard; 75 % = 4.5 -> all 6
    assert [p["t_s"] for p in pts] == [1.0, 3.0, 7.0, 7.0]
    assert [p["rss_mb"] for p in pts] == [110.0, 112.0, 120.0, 120.0]
    assert pts[1]["marginal_s_per_video"] == 1.0 and pts[2]["marginal_s_per_video"] == 2.0
    assert pts[3]["marginal_s_per_video"] is None  # no video between the two points


def test_deployment_params_are_prefect_yaml_ones():
    p = bvs.geometry_params("sample")
    assert p["shard_size"] == 40 and p["overrides"]["decode"] == {"short_side": 128, "crop": 112}
    assert "weights" not in p and "dataset_root" not in p
    assert bvs.deployment_params("build-msrvtt-features")["max_frames"] == 20


def test_measure_build_counts_are_the_real_ones(prefect_server, tiny_sample, tmp_path):
    """Six sample videos, one truncated, shards of 2: the report's counts match the disk and Prefect."""
    src, _ = tiny_sample
    shutil.copytree(src, tmp_path / "data")
    ann = tmp_path / "data" / "annotation.json"
    bad = tmp_path / "data" / "videos" / "video4.mp4"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 3])
    params = {**bvs.geometry_params("tiny"), "shard_size": 2}
    r = bvs.measure_build(ann, tmp_path / "out", params, sample_s=0.2)

    root = tmp_path / "out" / "scale"
    on_disk = {e: len(list((root / "features" / e / "shards").glob("shard-*.h5"))) for e in ("resnet152", "i3d_r50")}
    assert r["shard_files"] == on_disk == {"resnet152": 3, "i3d_r50": 3}
    assert r["planned_shards"] == 3 and r["shards_committed"] == 3
    # ingest + one extraction task per shard + a merge per extractor + parse, concepts, vocab
    assert r["prefect"]["stage_task_runs"] == 1 + 3 + 2 + 3
    assert r["prefect"]["task_runs"] == r["prefect"]["stage_task_runs"] + 1  # + the build-dag subflow's task
    assert r["prefect"]["task_states"] == {"Completed": r["prefect"]["task_runs"]}
    assert sorted(set(r["prefect"]["stage_task_names"])) == sorted(
        ["ingest", "merge-resnet152", "merge-i3d_r50", "parse", "concepts", "vocab"]
        + [f"resnet152+i3d_r50-shard-0000{i}" for i in range(3)])
    assert r["status_videos"] == 6 and r["failed_videos"] == 1
    ok = r["per_extractor"]["resnet152"]
    assert ok["ok"] == 5 and ok["error"] == 1 and ok["units_per_video"] == 4.0  # max_frames 4 of 48 frames
    assert r["per_extractor"]["i3d_r50"]["units_per_video"] == 1.0  # max_clips 1
    assert r["at_fractions"][-1]["videos"] == 6 and r["peak_rss_mb"] >= r["rss_max_sampled_mb"] > 0

