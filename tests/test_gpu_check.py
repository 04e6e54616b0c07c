"""bench/gpu_check.py (`make gpu-check`) runs end to end in its CPU mode at a tiny scale."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_tiny(prefect_server, tmp_path, one_torch_thread):
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_check

    res = gpu_check.main(["--device", "cpu", "--tiny", "--no-harness", "--out", str(tmp_path / "r.json"),
                          "--workdir", str(tmp_path / "w")])
    assert json.loads((tmp_path / "r.json").read_text())["device"] == "cpu"
    steps = res["steps"]
    assert set(steps) == {"roofline", "extract", "path", "build", "train", "agree"}
    assert steps["roofline"]["fp32"]["tflops"] > 0 and steps["roofline"]["bf16"]["tflops"] > 0
    ex = steps["extract"]
    assert ex["flops_per_frame"] > 1e8  # ResNet152 at 64x64: ~0.94 GFLOPs, counted by torch
    for kind in ("bf16", "fp32"):
        assert ex[kind]["frames_per_s"] > 0 and 0 < ex[kind]["pct_of_roofline"] < 100
    assert steps["build"]["resnet152_device"] == "cpu" and steps["build"]["executed"] > 0
    assert steps["path"]["fp32"]["frames"] > 0 and steps["train"]["eval_s"] > 0
    assert steps["agree"]["max_rel_diff_fp32_cpu_vs_device"] == 0.0  # CPU vs itself, said so in the note
    assert steps["agree"]["note"]
