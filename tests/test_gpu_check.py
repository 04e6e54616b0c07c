"""bench/gpu_check.py runs end to end in its CPU mode at a tiny scale WITHOUT Prefect (nor Dask, Ray,
spaCy, NLTK), as on the lent GPU machine: every GPU step imports only pipeline/, models/, storage/."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("prefect", "prefect_dask", "prefect_ray", "dask", "distributed", "ray", "spacy", "nltk")

# Installed in every process of the run (the path step's spawned workers too) via sitecustomize.
SITECUSTOMIZE = textwrap.dedent(f"""
    import os, sys

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                with open(os.environ["VTR_BLOCKED_LOG"], "a") as f:
                    f.write(name + "\\n")
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, _Block())
""")


@pytest.mark.slow  # ~1-2 min on 2 cores: seven steps, two spawned extraction processes
def test_gpu_check_cpu_tiny_without_prefect(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site/sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
           "VTR_BLOCKED_LOG": str(tmp_path / "blocked.txt"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/gpu_check.py"), "--device", "cpu", "--tiny",
                           "--out", str(out), "--workdir", str(tmp_path / "w")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # the blocker really ran: the build step's probe for Prefect hit it
    assert "prefect" in (tmp_path / "blocked.txt").read_text().split()
    res = json.loads(out.read_text())
    steps = res["steps"]
    assert res["device"] == "cpu" and res["failed"] == []
    assert set(steps) == {"roofline", "extract", "path", "build", "train", "eval", "agree"}
    assert "Prefect is not installed" in steps["build"]["skipped"]
    assert steps["roofline"]["fp32"]["tflops"] > 0 and steps["roofline"]["bf16"]["tflops"] > 0
    ex = steps["extract"]
    assert ex["resnet152"]["flops_per_unit"] > 1e8  # ResNet152 at 64x64: ~1.9 GFLOPs (2 x 0.94 G multiply-adds), counted by torch
    assert ex["i3d_r50"]["flops_per_unit"] > ex["resnet152"]["flops_per_unit"]  # 4 frames of a 3D ResNet-50
    for ext in ("resnet152", "i3d_r50"):
        for kind in ("bf16", "fp32"):
            assert ex[ext][kind]["units_per_s"] > 0 and ex[ext][kind]["pct_of_roofline"] > 0
    path = steps["path"]
    assert path["processes"] == 2 and path["ok_videos"] == path["videos"] and path["resnet_frames"] > 0
    assert path["i3d_clips"] > 0 and path["gpu_busy_pct"] is None  # no GPU: no busy share invented
    assert steps["train"]["fp32"]["s_per_step_incl_val"] > 0
    assert steps["eval"]["captions"] == steps["eval"]["videos"] * 2 and steps["eval"]["fp32"]["seconds"] > 0
    # agreement against an independent float64 reference (not the CPU against itself)
    agree = steps["agree"]
    assert 0 < agree["cpu_fp32_vs_ref"]["rel_l2"] < 1e-5
    assert agree["device_fp32_vs_ref"]["rel_l2"] < 1e-5 and agree["device_strict_fp32_vs_ref"]["rel_l2"] < 1e-5
    assert agree["device_bf16_vs_ref"]["rel_l2"] < 3e-2
    if "bf16" in agree["device_bf16_used"]:  # bf16 really ran: its rounding must show against float64
        assert agree["device_bf16_vs_ref"]["rel_l2"] > 1e-4


def test_feature_arch_on_meta_has_the_published_size():
    """pipeline.video.backbones.feature_arch (gpu_check's FLOP count): the feature models, heads removed."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.video.backbones import feature_arch

    for extractor, shape, gmacs in (("resnet152", (1, 3, 224, 224), 11.5), ("i3d_r50", (1, 3, 8, 224, 224), None)):
        with torch.device("meta"):
            model, x = feature_arch(extractor).eval(), torch.empty(shape)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            out = model(x)
        assert tuple(out.reshape(1, -1).shape) == (1, 2048), extractor
        if gmacs:  # ResNet152: 11.5 G multiply-adds per 224x224 image (torchvision's model card)
            assert abs(counter.get_total_flops() / 2e9 - gmacs) < 0.1
