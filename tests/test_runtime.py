"""The runtime probe (pipeline/runtime.py): cached answers equal torch's, a changed machine re-probes,
and a cached probe costs no torch import."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from pipeline import runtime
from pipeline.devices import resolve_bf16, resolve_device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VTR_CACHE_DIR", str(tmp_path))
    runtime.probe.cache_clear()
    yield tmp_path
    runtime.probe.cache_clear()


def _live_fingerprint(device: str, bf16: bool) -> dict:
    """What extraction itself resolves (asked of torch): the device, and the precision the backbone
    picks there (devices.resolve_bf16); a CUDA device not visible here counts as bf16-capable."""
    dev = resolve_device(device)
    unseen_gpu = dev.type == "cuda" and not torch.cuda.is_available()
    uses_bf16 = bf16 and (unseen_gpu or resolve_bf16(bf16, dev, "extraction")[0])
    return {"device_type": dev.type, "precision": "bf16" if uses_bf16 else "fp32",
            "versions": runtime.library_versions()}


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
@pytest.mark.parametrize("bf16", [True, False])
def test_cached_fingerprint_equals_torchs_answer(cache, device, bf16):
    runtime.probe()  # live, written
    runtime.probe.cache_clear()
    assert runtime.probe() == runtime.live_probe()  # read back
    assert runtime.runtime_fingerprint(device, bf16) == _live_fingerprint(device, bf16)


def _probe_in_subprocess(env: dict) -> tuple[bool, dict]:
    code = ("import sys, json; from pipeline import runtime; p = runtime.probe(); "
            "print(json.dumps(['torch' in sys.modules, p.versions]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    imported, versions = json.loads(out.stdout.strip().splitlines()[-1])
    return imported, versions


def test_second_process_reads_the_probe_without_importing_torch(cache):
    env = {**os.environ, "VTR_CACHE_DIR": str(cache), "PYTHONPATH": ROOT}
    first = _probe_in_subprocess(env)
    second = _probe_in_subprocess(env)
    assert first == (True, runtime.library_versions())  # probed live, with torch
    assert second == (False, runtime.library_versions())  # from the cache: no torch
    assert len(list(cache.glob("runtime-*.json"))) == 1
    hidden = _probe_in_subprocess({**env, "CUDA_VISIBLE_DEVICES": ""})  # another GPU view: probe again
    assert hidden[0] is True and len(list(cache.glob("runtime-*.json"))) == 2
    off = _probe_in_subprocess({**env, "VTR_CACHE_DIR": "off"})
    assert off[0] is True


def test_identity_follows_what_the_answers_depend_on(monkeypatch):
    base = runtime.identity()
    assert runtime.identity() == base
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert runtime.identity() != base
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(runtime, "_cpu", lambda: ["flags : avx2"])  # a CPU without avx512_bf16
    assert runtime.identity() != base


def test_unreadable_cache_file_is_probed_again(cache):
    runtime.probe()
    (path,) = cache.glob("runtime-*.json")
    path.write_text("{half")
    runtime.probe.cache_clear()
    assert runtime.probe() == runtime.live_probe()
    assert json.loads(path.read_text())["versions"]["torch"] == torch.__version__  # rewritten whole
