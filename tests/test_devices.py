"""One device per worker (issue 10 item 5) and run-time thread counts (item 10), with 2 faked GPUs."""
from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from flows import _stages
from flows import build as fb
from pipeline import build as pb
from pipeline import devices, runtime
from pipeline.video import backbones
from tests._optional import needs_prefect_ray


def _gpus(monkeypatch, n: int) -> None:
    """torch (running a stage) and the runtime probe (planning it) both see ``n`` GPUs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    probe = runtime.Probe(cuda_available=n > 0, cuda_count=n, cuda_bf16=n > 0, cpu_bf16=True, versions={})
    monkeypatch.setattr(runtime, "probe", lambda: probe)


@pytest.fixture()
def two_gpus(monkeypatch):
    _gpus(monkeypatch, 2)


@pytest.fixture()
def no_gpu(monkeypatch):
    _gpus(monkeypatch, 0)


def test_local_runner_spreads_shards_round_robin_over_visible_gpus(two_gpus):
    assert devices.shard_devices("auto", 5) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert devices.shard_devices("cuda", 2) == ["cuda:0", "cuda:1"]
    assert devices.shard_devices("cuda:1", 2) == [None, None]  # explicit: as configured
    assert devices.shard_devices("cpu", 2) == [None, None]


def test_no_gpu_no_spreading(no_gpu):
    assert devices.shard_devices("auto", 3) == [None] * 3
    assert backbones.resolve_device("auto") == torch.device("cpu")


def test_video_chain_gives_each_shard_task_its_gpu(two_gpus, monkeypatch, tmp_path):
    from storage.schemas import SCHEMAS
    from storage.tables import write_table

    blank = dict.fromkeys(SCHEMAS["videos"][1].names)
    write_table(tmp_path / "videos.parquet", "videos",
                [{**blank, "key": f"v{i}", "path": f"v{i}.mp4", "split": "train", "status": "ok"} for i in range(6)])
    flat = {k: p.default for k, p in inspect.signature(fb.build_features.fn).parameters.items() if k in pb.FLAT_PARAMS}
    cfg = pb.make_build_config(**{**flat, "weights": "random", "shard_size": 2, "dataset_root": str(tmp_path),
                                  "extractors": ["resnet152"]}, overrides={})
    submitted = []
    monkeypatch.setattr(_stages, "submit_stage", lambda task, **kw: submitted.append(kw) or kw)
    monkeypatch.setattr(_stages, "submit_stages", lambda task, **kw: submitted.append(kw) or kw)
    fb._video_chain(str(tmp_path), cfg, set(), [], spread_gpus=True)
    shards = [kw for kw in submitted if "plans" in kw]  # one extraction task per shard
    assert [kw["kwargs"]["device"] for kw in shards] == ["cuda:0", "cuda:1", "cuda:0"]
    assert len({kw["plans"][0]["key"] for kw in shards}) == 3  # the device index is not in the key: shards differ by videos
    submitted.clear()
    fb._video_chain(str(tmp_path), cfg, set(), [], spread_gpus=False)  # Dask / Ray: the worker picks
    assert {kw["kwargs"]["device"] for kw in submitted if "plans" in kw} == {None}


def test_dask_worker_uses_the_gpu_of_its_index(two_gpus, monkeypatch):
    import distributed

    for name, want in ((0, "cuda:0"), (1, "cuda:1"), (3, "cuda:1")):
        monkeypatch.setattr(distributed, "get_worker", lambda name=name: SimpleNamespace(name=name))
        assert backbones.resolve_device("auto") == torch.device(want)
    monkeypatch.setattr(distributed, "get_worker", lambda: SimpleNamespace(name="tcp://10.0.0.1:3456"))
    assert backbones.resolve_device("auto") == torch.device("cuda")  # remote worker: its own visible GPU


def test_dask_local_cluster_advertises_only_gpus_that_exist(two_gpus):
    runner = _stages.make_task_runner("dask", 4, local_gpus=runtime.visible_gpus())
    assert runner.cluster_kwargs["n_workers"] == 2 and runner.cluster_kwargs["resources"] == {"GPU": 1}
    runner = _stages.make_task_runner("dask", 4)
    assert runner.cluster_kwargs["n_workers"] == 4 and "resources" not in runner.cluster_kwargs


def test_ray_local_node_advertises_every_visible_gpu(two_gpus):
    needs_prefect_ray()
    runner = _stages.make_task_runner("ray", 4, local_gpus=runtime.visible_gpus())
    assert runner.init_kwargs["num_gpus"] == 2


def test_gpu_tasks_without_a_gpu_is_refused_before_any_work(no_gpu, prefect_server, tmp_path):
    with pytest.raises(ValueError, match="no GPU is visible"):
        fb.build_features(dataset="x", dataset_root=str(tmp_path / "v"), annotation=str(tmp_path / "a.json"),
                          out_root=str(tmp_path / "out"), runner="dask", gpu_tasks=True, weights="random",
                          generate_sample=2)
    assert not (tmp_path / "out").exists() and not (tmp_path / "a.json").exists()


def test_compose_gpu_workers_get_one_distinct_gpu_each():
    compose = yaml.safe_load(Path("docker/compose.yaml").read_text())
    ids = []
    for name, svc in compose["services"].items():
        devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
        for d in devices:
            if d.get("driver") == "nvidia":
                assert "count" not in d, f"{name}: reserve one device_id, not a count"
                assert len(d["device_ids"]) == 1, name
                ids.append(d["device_ids"][0])
    assert len(ids) >= 2 and len(set(ids)) == len(ids)


# ------------------------------------------------------------------ threads (item 10)

def test_prefect_yaml_does_not_pin_a_thread_count():
    doc = yaml.safe_load(Path("prefect.yaml").read_text())
    envs = [doc["definitions"]["work_pool"]["job_variables"]["env"]]
    envs += [((d.get("work_pool") or {}).get("job_variables") or {}).get("env") or {} for d in doc["deployments"]]
    for env in envs:
        assert not {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "VTR_NUM_THREADS"} & set(env), env


def test_thread_count_comes_from_the_cpus_available_or_the_env(monkeypatch):
    import os

    monkeypatch.delenv("VTR_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert 1 <= devices.available_cpus() <= 3
    monkeypatch.setenv("VTR_NUM_THREADS", "5")
    assert devices.available_cpus() == 5
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("VTR_NUM_THREADS", "1")
        assert devices.configure_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    monkeypatch.delenv("VTR_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # an explicit OpenMP setting is torch's to honour
    assert devices.configure_threads() == torch.get_num_threads() == before
    monkeypatch.setenv("VTR_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="VTR_NUM_THREADS"):
        devices.available_cpus()
