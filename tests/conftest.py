"""Shared fixtures. Tests never need a GPU or the internet."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# decode threads and torch share 2 cores: spinning OpenMP workers get descheduled (measured 3x slower)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# the runtime probe cache (pipeline/runtime.py) of this test session, not the user's ~/.cache/vtr
os.environ["VTR_CACHE_DIR"] = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"vtr-test-cache-{os.getpid()}")

import pytest  # noqa: E402

# Prefect configures its console log handler when prefect.main is first imported (lazily, e.g. by
# `from prefect import flow`), bound to the sys.stderr of that moment. Do it at collection time (pytest's session-long capture stream), never first
# inside a test using capsys, whose stream is closed after that test ("I/O operation on closed
# file" in every later flow test when tests/test_cli.py ran first on its own).
import prefect.main  # noqa: E402, F401


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (SQLite) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def tiny_sample(tmp_path_factory):
    """Six real encoded sample videos with captions (MSR-VTT JSON); shared read-only."""
    from pipeline.datasets.sample_data import generate_sample_dataset

    root = tmp_path_factory.mktemp("sample")
    return root, generate_sample_dataset(root, n_videos=6, seed=0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one torch thread avoids OpenMP spin-waits on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
