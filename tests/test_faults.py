"""Fault injection at the flow level: full disk, permission denied, two builds at once, Dask/Ray workers.

Each asserts that nothing good is lost: no partial file under a final name, a
clear error, and a rerun that completes to the same outputs.
"""
from __future__ import annotations

import os
import re
import resource
import signal
import sys
import time
from pathlib import Path

import pytest

from flows import _stages
from tests._optional import needs_prefect_ray
from storage.lock import OutputRootBusyError
from tests._flowutil import assert_same_features, build, build_cmd, features, popen

slow = pytest.mark.slow  # every test that runs a flow; the runner-choice unit tests at the end are fast


@pytest.fixture(scope="module")
def reference(prefect_server, tiny_sample, tmp_path_factory):
    """An uninterrupted local build: what every faulty run must end up equal to."""
    out = tmp_path_factory.mktemp("ref")
    return features(Path(build(tiny_sample, out)["root"]))


def _assert_same(root: Path, want: dict, cross_process: bool = True) -> None:
    assert_same_features(features(root), want, cross_process)


def _final_files_readable(root: Path) -> None:
    """Every file under a final name is whole (Parquet/HDF5 open); no temporaries left."""
    import h5py
    import pyarrow.parquet as pq

    for p in root.rglob("*"):
        if p.suffix == ".parquet":
            pq.read_table(p)
        elif p.suffix == ".h5":
            h5py.File(p, "r").close()
    assert not [p for p in root.rglob(".tmp-*")]


def _limit_file_size(limit_bytes: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG, like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


@slow
def test_disk_full_fails_clearly_and_rerun_completes(tiny_sample, reference, tmp_path):
    out, log = tmp_path / "out", tmp_path / "build.log"
    proc = popen(build_cmd(tiny_sample, out), log, preexec_fn=_limit_file_size(48_000))
    assert proc.wait(timeout=600) > 0   # a failed flow run, not a crash (no signal)
    text = log.read_text()
    assert "File too large: shard-" in text and "needs ~" in text, text[-2000:]   # refused before HDF5 wrote
    _final_files_readable(out / "tiny")
    _assert_same(Path(build(tiny_sample, out)["root"]), reference)


NO_DAC_OVERRIDE = ["setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override"]


@slow
def test_permission_denied_on_output_root(tiny_sample, tmp_path):
    out = tmp_path / "readonly"
    out.mkdir()
    os.chmod(out, 0o555)
    # root ignores file modes through CAP_DAC_OVERRIDE: drop that capability (util-linux setpriv)
    prefix = NO_DAC_OVERRIDE if os.geteuid() == 0 else []
    proc = popen(prefix + build_cmd(tiny_sample, out), tmp_path / "build.log")
    assert proc.wait(timeout=600) != 0
    text = (tmp_path / "build.log").read_text()
    assert "Permission denied" in text and str(out) in text, text[-2000:]
    assert list(out.iterdir()) == []


@slow
def test_second_build_into_same_root_is_refused(tiny_sample, reference, tmp_path):
    out = tmp_path / "out"
    proc = popen(build_cmd(tiny_sample, out), tmp_path / "build.log")
    lock = out / "tiny" / ".build.lock"
    deadline = time.time() + 300
    while not (lock.exists() and lock.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    # pause the first build while it holds the lock: the second one reaches the lock only after
    # its own set-up (seconds), by which time a tiny first build could otherwise have finished
    proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(OutputRootBusyError, match="another build"):
            build(tiny_sample, out)
    finally:
        proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=600) == 0, (tmp_path / "build.log").read_text()[-2000:]
    _assert_same(out / "tiny", reference)


@slow
def test_dask_local_cluster_matches_local_run(tiny_sample, reference, tmp_path):
    # (gpu_tasks needs a visible GPU now: a LocalCluster advertises GPUs only where they exist;
    # tests/test_devices.py checks that wiring with 2 faked devices)
    summary = build(tiny_sample, tmp_path / "out", runner="dask", n_workers=2)
    assert summary["cached"] == 0
    # Dask workers run torch with 1 thread (the local run with 2): float reductions are summed in
    # another order, so features agree to fp32 rounding, not bit for bit (random-init ResNet152
    # activations reach ~1e7, where that rounding is visible)
    _assert_same(Path(summary["root"]), reference)


@slow
def test_ray_local_matches_local_run(tiny_sample, reference, tmp_path):
    needs_prefect_ray()
    # a local Ray with 2 CPUs (gpu_tasks needs a visible GPU: tests/test_devices.py fakes two)
    summary = build(tiny_sample, tmp_path / "out", runner="ray", n_workers=2)
    assert summary["cached"] == 0
    _assert_same(Path(summary["root"]), reference)


def test_ray_runner_without_prefect_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "prefect_ray", None)  # `import prefect_ray` now raises ImportError
    with pytest.raises(ImportError, match=re.escape("pip install -r requirements/ray.txt")) as err:
        _stages.make_task_runner("ray", 2)
    assert str(err.value).endswith(".venv/bin/pip install -r requirements/ray.txt")
    with pytest.raises(ValueError, match="'local', 'dask', 'ray'"):
        _stages.make_task_runner("spark", 2)


def test_gpu_tasks_request_a_gpu_from_dask_and_ray():
    import dask
    from prefect_dask import DaskTaskRunner

    with _stages.gpu_resource(True, DaskTaskRunner()):
        assert dask.get_annotations() == {"resources": {_stages.GPU_RESOURCE: 1}}
    needs_prefect_ray()
    from prefect_ray.context import RemoteOptionsContext

    ray_runner = _stages.make_task_runner("ray", 2, local_gpus=1)  # configured, not started
    assert ray_runner.init_kwargs == {"num_cpus": 2, "include_dashboard": False, "num_gpus": 1,
                                      "namespace": "prefect"}
    with _stages.gpu_resource(True, ray_runner):
        assert RemoteOptionsContext.get().current_remote_options == {"num_gpus": 1, "max_calls": 0}
    assert RemoteOptionsContext.get().current_remote_options == {}
    assert _stages.make_task_runner("ray", 2, ray_address="ray://head:10001").address == "ray://head:10001"
