"""Fixed inputs for tests/test_fingerprint_keys.py and for the script that recorded the keys the code computed
for them BEFORE the fingerprint helpers moved into pipeline/fingerprint.py (tests/data/make_fingerprint_keys.py).

Nothing here imports a fingerprint helper: only the inputs are built here (files are written under the
current directory, so path-keyed fingerprints see the same relative paths on every machine).
"""
from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

MTIME_NS = 1_700_000_000_123_456_789


class Cfg(BaseModel):
    """A stage config: pydantic, nested inside the key dict (stable_hash then falls back to str())."""

    a: int = 1
    b: str = "x"
    c: list[float] = [0.5, 2.0]


OBJECTS = {
    "dict": {"b": 1, "a": [1, 2, "x"], "nested": {"z": None, "y": 1.25}},
    "list": [1.5, None, True, "é", [3, {"k": "v"}]],
    "model": Cfg(a=7, b="y"),
    "path_default_str": {"p": Path("/x/y"), "t": (1, 2)},
}
HASH_LENGTHS = (8, 12, 16, 20, 32, 64)
STAGE_KEY_CASES = {
    "parse": ("parse", Cfg(), "abc123def456", {"captions": "0" * 64}),
    "merge": ("merge-resnet152", {}, "c0de", {"shards": ["k1", "k2"]}),
    "extract": ("i3d_r50", {"decode": Cfg(b="decode"), "model": {"clip_len": 16, "device": None}}, "c0de2",
                {"videos": "v", "weights": {"sha256": "f" * 64}, "runtime": {"device_type": "cpu"}}),
}
MULTI_PLANS = [{"stage": "resnet152", "key": "k-r", "config": {}, "force": False},
               {"stage": "i3d_r50", "key": "k-i", "inputs": {"x": 1}}]
SAFE_NAME_KEYS = ["video0001", "a/b c:d", "é" * 80, ""]


def write_files(base: Path) -> dict[str, Path]:
    """Files (relative to ``base``) with fixed bytes and mtimes."""
    base.mkdir(parents=True, exist_ok=True)
    files = {"small": base / "small.bin", "big": base / "big.bin", "empty": base / "empty.bin"}
    files["small"].write_bytes(b"hello fingerprint\n")
    files["big"].write_bytes(bytes(range(256)) * 9000 + b"tail")  # > one 1 MiB read chunk
    files["empty"].write_bytes(b"")
    for p in files.values():
        os.utime(p, ns=(MTIME_NS, MTIME_NS))
    files["missing"] = base / "missing.bin"
    return files


CODE_TREE = {
    "pipeline/__init__.py": '"""pkg"""\n',
    "pipeline/a.py": "from pipeline import b\nimport json\n\ndef f():\n    from pipeline.sub import c\n    return c\n",
    "pipeline/b.py": "from .sub.c import X\nX = 1\n",
    "pipeline/sub/__init__.py": "",
    "pipeline/sub/c.py": "from storage.d import Y\nX = 2\n",
    "pipeline/sub/words.txt": "alpha\nbeta\n",
    "pipeline/sub/notes.md": "not a data suffix\n",
    "storage/__init__.py": "",
    "storage/d.py": "Y = 3\n",
    "pipeline/unused.py": "Z = 4\n",
}


def write_code_tree(root: Path) -> Path:
    for rel, text in CODE_TREE.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def shard_spec_fields(base: Path) -> dict:
    """A ShardSpec's fields: relative paths (two written with fixed mtimes, one missing)."""
    files = write_files(base)
    return {"id": "shard-00003", "keys": ["v1", "v2", "v3"],
            "paths": [str(files["small"]), str(files["big"]), str(files["missing"])],
            "splits": ["train", "val", None], "statuses": ["ok", "ok", "missing"], "errors": [None, None, "gone"]}


def tiny_module():
    """A torch module with fixed weights (fp32 and a bf16 buffer) for the state-dict hash."""
    import torch

    m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    with torch.no_grad():
        for i, p in enumerate(m.parameters()):
            p.copy_(torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) / (i + 3))
    m.register_buffer("bf16_buf", torch.linspace(-1, 1, 5).to(torch.bfloat16))
    return m


def planted_tree(root: Path) -> Path:
    """A small planted shard tree (tables, text, features, manifests) for the data and vocabulary fingerprints."""
    from pipeline.datasets.planted import make_planted_shards

    return make_planted_shards(root, n_videos=12, captions_per_video=2, n_verbs=4, n_nouns=5, feat_dim=8,
                               n_frames=4, seed=3, word_dim=8)
