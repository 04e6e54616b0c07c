"""Training checkpoints: atomic writes, ``torch.load(weights_only=True)``-safe payloads.

A checkpoint is a dict of plain tensors, dicts, lists, strings, ints, floats, bools and
None only (no pickled classes, no numpy objects), so loading never executes code:

    format_version  int    CHECKPOINT_FORMAT
    model_name      str    registry name of the model ("hanet", ...)
    config_json     str    the resolved TrainConfig as JSON (shapes filled from the shards)
    epoch           int    last finished epoch (0-based)
    best_rsum       float  best validation rsum so far; best_epoch int
    val_metrics     dict   validation metrics of this epoch
    model           dict   state_dict
    optimizer       dict   optimizer state_dict (last.pt only)
    stopper         dict   early-stopping state
    rng             dict   torch / cuda / numpy / python RNG states as tensors
    history_json    str    per-epoch history
    data_fingerprint str   hash of the shard tables/manifests the run trained on
    code_version    str    hash of the training/model source
    vocab           dict   {'words', 'verb', 'noun': sha256 of the vocabulary in id order or None,
                           ...}: the vocabularies the embedding rows / concept ids refer to;
                           pipeline.learn.evaluate refuses shards whose fingerprints differ

Imported reference checkpoints (pipeline/learn/checkpoint_import.py) have the same format, epoch -1,
``imported_from``, ``import_report_json``, ``fidelity_json`` and a ``vocab`` record whose entries
are None unless the import remapped the vocabularies onto a build (then evaluation refuses them).
The HANet fidelity switches (HANetConfig.fidelity, ...) travel inside ``config_json``.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from storage.atomic import atomic_path

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file + fsync + rename)."""
    payload = {"format_version": CHECKPOINT_FORMAT, **payload}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True`` (no code execution) and check the format version."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint")
    ck = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ck, dict) or ck.get("format_version") != CHECKPOINT_FORMAT:
        got = ck.get("format_version") if isinstance(ck, dict) else type(ck).__name__
        raise ValueError(f"{path}: checkpoint format {got!r}, this code reads {CHECKPOINT_FORMAT}")
    return ck


def load_torch_file(path: str | os.PathLike) -> Any:
    """A torch file written elsewhere (a reference checkpoint, backbone weights), read on the CPU
    with ``weights_only=True`` (no code execution); no format check: the caller interprets it."""
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch, as weights_only-safe values."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
