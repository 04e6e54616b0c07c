"""Which torch device a stage runs on, and whether bf16 pays off there (extraction, training,
evaluation and search all resolve ``device='auto'`` here)."""
from __future__ import annotations

import torch


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX).

    On other CPUs (e.g. AVX2-only) PyTorch emulates it and convolutions run
    5-20x SLOWER than fp32, so there ``cfg.bf16`` falls back to fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


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
    if device in ("auto", "cuda") and torch.cuda.is_available():
        slot = _worker_slot()
        return torch.device(f"cuda:{slot % torch.cuda.device_count()}" if slot is not None else "cuda")
    if device == "auto":
        return torch.device("cpu")
    return torch.device(device)
