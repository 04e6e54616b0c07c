"""Which torch device a stage runs on, and whether bf16 pays off there (extraction, training,
evaluation and search all resolve ``device='auto'`` here); the GPUs and CPUs a process may use
(shards spread over the visible GPUs, torch threads sized to the CPUs available)."""
from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING

from pipeline import runtime
from pipeline.runtime import bf16_is_fast  # the rule lives with the probe that caches it

if TYPE_CHECKING:  # torch is imported where a device is used, not to plan a (cached) build
    import torch

log = logging.getLogger(__name__)


def resolve_bf16(requested: bool, device: torch.device, what: str) -> tuple[bool, str]:
    """(compute in bf16?, what really runs: 'fp32', 'bf16 autocast' or 'fp32 (bf16 requested; no
    native bf16 on <device type>)'). The fallback is logged as a warning naming ``what`` (extraction
    of a backbone, training, ...): the output records say which precision was used."""
    if not requested:
        return False, "fp32"
    if bf16_is_fast(device):
        return True, "bf16 autocast"
    log.warning("%s: bf16 requested but %s has no native bf16 (PyTorch would emulate it, slower than fp32): "
                "running fp32", what, device)
    return False, f"fp32 (bf16 requested; no native bf16 on {device.type})"


def _worker_slot() -> int | None:
    """This process's index in a Dask LocalCluster (workers named 0..n-1), else None."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    return name if isinstance(name, int) else None


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' = a GPU when present, else the CPU; 'auto' / 'cuda' in Dask LocalCluster worker i
    = cuda:(i mod visible GPUs) (one device per worker); explicit devices as given."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        slot = _worker_slot()
        return torch.device(f"cuda:{slot % torch.cuda.device_count()}" if slot is not None else "cuda")
    if device == "auto":
        return torch.device("cpu")
    return torch.device(device)


def shard_devices(device: str, n_shards: int) -> list[str | None]:
    """Local runner: one device per concurrent shard task, round-robin over the visible GPUs.

    ``device`` 'auto' / 'cuda' with GPUs visible -> cuda:0, cuda:1, ... by shard index; an
    explicit device ('cpu', 'cuda:N') or no GPU -> None (the configured device is used).
    Planning only: the GPU count comes from :func:`pipeline.runtime.probe` (no torch import).
    """
    n = runtime.visible_gpus()
    if device not in ("auto", "cuda") or n == 0:
        return [None] * n_shards
    return [f"cuda:{i % n}" for i in range(n_shards)]


def available_cpus() -> int:
    """CPUs this process may use: ``VTR_NUM_THREADS`` if set, else the CPU affinity mask capped
    by a cgroup v2 CPU quota (containers), at least 1."""
    env = os.environ.get("VTR_NUM_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"VTR_NUM_THREADS={env!r}: expected a positive integer")
        return int(env)
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            n = min(n, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def configure_threads() -> int:
    """torch intra-op threads = :func:`available_cpus` (run time, per process; replaces a fixed
    OMP_NUM_THREADS in prefect.yaml). An explicit OMP_NUM_THREADS (without VTR_NUM_THREADS) is
    left to torch, which already honours it. Returns the count in effect."""
    import torch

    if os.environ.get("OMP_NUM_THREADS") and not os.environ.get("VTR_NUM_THREADS"):
        return torch.get_num_threads()
    n = available_cpus()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
