"""What this machine's torch runtime can do, known WITHOUT importing torch when nothing changed.

A feature stage's cache key holds the resolved device type, the precision it really computes in
and the library versions (pipeline/build.py). Asking torch costs ~3 s of imports (torch +
torchvision + pytorchvideo), which is most of a fully cached rerun. So the answers are probed
once with torch (:func:`live_probe`) and kept in a small JSON file named after everything the
answers depend on (:func:`identity`): the interpreter, each library's installed version and
file, the GPU device nodes and driver, the environment variables that hide GPUs or cap the CPU
ISA, and the CPU's model and flags. Any change there is a different file, hence a fresh probe.

The cache lives in ``$VTR_CACHE_DIR`` (default ``$XDG_CACHE_HOME/vtr``, else ``~/.cache/vtr``);
``VTR_CACHE_DIR=off`` probes live every time. Keys computed from a cached probe are the same
strings as from a live one (tests/test_runtime.py checks both ways).
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.fingerprint import stable_hash
from storage.atomic import atomic_write_text

LIBRARIES = ("torch", "torchvision", "pytorchvideo", "av")  # the ones that shape features
# hide or reorder GPUs, or cap the CPU instruction set oneDNN/ATen use (changes the bf16 answer)
ENV_VARS = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
            "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
PROBE_VERSION = 1  # bump when Probe's fields or their meaning change


@dataclass(frozen=True)
class Probe:
    """The answers a cache key needs: CUDA presence and count, native bf16 on CUDA / CPU, versions."""

    cuda_available: bool
    cuda_count: int
    cuda_bf16: bool
    cpu_bf16: bool
    versions: dict[str, str] = field(default_factory=dict)


def bf16_is_fast(device) -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX).

    On other CPUs (e.g. AVX2-only) PyTorch emulates it and convolutions run
    5-20x SLOWER than fp32, so there ``cfg.bf16`` falls back to fp32.
    """
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the features (decoder included)."""
    import av
    import pytorchvideo
    import torch
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "pytorchvideo": getattr(pytorchvideo, "__version__", "?"), "av": av.__version__}


def live_probe() -> Probe:
    """Ask torch (imports it)."""
    import torch

    cuda = torch.cuda.is_available()
    return Probe(cuda_available=cuda, cuda_count=torch.cuda.device_count() if cuda else 0,
                 cuda_bf16=bool(cuda and bf16_is_fast(torch.device("cuda"))),
                 cpu_bf16=bf16_is_fast(torch.device("cpu")), versions=library_versions())


def _library(name: str) -> list[Any]:
    """Installed version and where (+ mtime) it lives, found without importing it."""
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = None
    spec = importlib.util.find_spec(name)
    origin = Path(spec.origin) if spec and spec.origin else None
    return [name, version, str(origin), origin.stat().st_mtime_ns if origin and origin.exists() else None]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _cpu() -> list[str]:
    """Model name and flag lines of /proc/cpuinfo (first CPU): they decide native bf16."""
    text = _read("/proc/cpuinfo") or platform.processor()
    lines = [ln for ln in text.splitlines() if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    return sorted(set(lines))


def identity() -> str:
    """Hash of everything :class:`Probe`'s answers depend on (cheap: no torch import)."""
    dev = Path("/dev")
    gpus = sorted(p.name for p in dev.glob("nvidia*")) + sorted(p.name for p in dev.glob("dri/render*"))
    return stable_hash({
        "probe": PROBE_VERSION, "python": [sys.executable, sys.prefix, sys.version],
        "libraries": [_library(n) for n in LIBRARIES], "env": {k: os.environ.get(k) for k in ENV_VARS},
        "gpu_nodes": gpus, "nvidia_driver": _read("/proc/driver/nvidia/version"), "cpu": _cpu(),
        "host": platform.node()}, n=20)


def cache_dir() -> Path | None:
    """Where probes are kept; None when ``VTR_CACHE_DIR=off``."""
    env = os.environ.get("VTR_CACHE_DIR", "").strip()
    if env.lower() == "off":
        return None
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vtr"


def _load(path: Path) -> Probe | None:
    try:
        return Probe(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # missing, half-read or from another Probe layout: probe again


def _save(path: Path, p: Probe) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(asdict(p), sort_keys=True))
    except OSError:
        pass  # a read-only home only costs the next run a live probe


@functools.cache
def probe() -> Probe:
    """This process's :class:`Probe`: from the cache when the machine's identity matches, else live
    (and cached). Computed once per process; tests replace it with monkeypatch."""
    folder = cache_dir()
    if folder is None:
        return live_probe()
    path = folder / f"runtime-{identity()}.json"
    cached = _load(path)
    if cached is not None:
        return cached
    fresh = live_probe()
    _save(path, fresh)
    return fresh


def device_type(device: str) -> str:
    """The torch device TYPE ``device`` resolves to ('auto' -> 'cuda' when CUDA is usable, else 'cpu')."""
    if device == "auto":
        return "cuda" if probe().cuda_available else "cpu"
    return device.split(":", 1)[0]


def precision_kind(requested_bf16: bool, dtype: str) -> str:
    """'bf16' or 'fp32': what a backbone on a ``dtype`` device really computes in. A CUDA device this
    process cannot see (planning for remote GPU workers) is assumed to have native bf16 (Ampere+)."""
    if not requested_bf16:
        return "fp32"
    p = probe()
    if dtype == "cuda":
        return "bf16" if (p.cuda_bf16 or not p.cuda_available) else "fp32"
    return "bf16" if dtype == "cpu" and p.cpu_bf16 else "fp32"


def runtime_fingerprint(device: str, bf16: bool) -> dict[str, Any]:
    """Resolved device type, resolved precision, library versions: part of every extraction key."""
    dtype = device_type(device)
    return {"device_type": dtype, "precision": precision_kind(bf16, dtype), "versions": dict(probe().versions)}


def visible_gpus() -> int:
    """CUDA devices this process can use (0 without CUDA)."""
    p = probe()
    return p.cuda_count if p.cuda_available else 0
