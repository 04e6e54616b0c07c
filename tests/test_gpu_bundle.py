"""The GPU check's carried bundle (requirements/gpu-bundle.txt -> .gpu_bundle/, scripts/gpu_check_bundle.sh)
fits what the device tool sends (<= 64 MiB with the project's files) and covers every requirement with a
wheel the GPU image's CPython 3.12 on x86_64 can install. No network: it reads the committed manifest."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQ, MANIFEST = ROOT / "requirements/gpu-bundle.txt", ROOT / "requirements/gpu-bundle.manifest"
LIMIT = 64 * 1024 * 1024  # the device tool's working-tree limit: tracked + untracked-not-ignored + carried


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def requirements() -> dict[str, str]:
    pins = {}
    for line in REQ.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_norm(name)] = version
    return pins


def manifest() -> dict[str, int]:
    rows = [ln.split() for ln in MANIFEST.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return {name: int(size) for size, name in rows}


def _cp312_x86_64(wheel: str) -> bool:
    """Installable by CPython 3.12 on manylinux x86_64 (pure, cp312, or an abi3 wheel of cp3N <= 12)."""
    python, abi, plat = wheel[:-4].split("-")[-3:]
    if plat == "any":
        return python.startswith("py3")
    tags = python.split(".")
    ok_py = "cp312" in tags or (abi == "abi3" and any(int(t[3:]) <= 12 for t in tags if t.startswith("cp3")))
    return ok_py and "x86_64" in plat and "manylinux" in plat


def project_bytes() -> int:
    """Bytes of the files the device tool sends besides carried paths: tracked + untracked, not ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                         capture_output=True).stdout.decode()
    return sum((ROOT / p).stat().st_size for p in out.split("\0") if p and (ROOT / p).is_file())


def test_every_requirement_has_one_cp312_wheel_of_its_pinned_version():
    pins, wheels = requirements(), manifest()
    assert {"av", "pydantic", "pydantic_core", "pytorchvideo", "fvcore", "iopath"} <= set(pins)
    assert not {"prefect", "spacy", "nltk", "torch", "torchvision"} & set(pins)  # not needed / in the image
    for name, version in pins.items():
        mine = [w for w in wheels if _norm(w.split("-")[0]) == name]
        assert mine, f"{name}: no wheel in the manifest"
        assert {w.split("-")[1] for w in mine} == {version}, f"{name}: wheels {mine} are not {version}"
        assert sum(_cp312_x86_64(w) for w in mine) == 1, f"{name}: not exactly one cp312 x86_64 wheel in {mine}"
    assert {_norm(w.split("-")[0]) for w in wheels} == set(pins), "manifest lists wheels nobody asked for"


def test_cp312_tag_check_rejects_other_platforms():
    assert _cp312_x86_64("av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl")
    assert _cp312_x86_64("pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl")
    assert not _cp312_x86_64("pydantic_core-2.50.5-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl")
    assert not _cp312_x86_64("av-18.1.0-cp311-abi3-manylinux_2_28_aarch64.whl")
    assert not _cp312_x86_64("av-18.1.0-cp313-abi3-manylinux_2_28_x86_64.whl")


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_bundle_and_project_fit_the_device_tools_64_mib():
    bundle, project = sum(manifest().values()), project_bytes()
    assert bundle > 10 * 2 ** 20  # PyAV's wheel alone is ~34 MiB: an empty manifest would pass vacuously
    assert bundle + project <= LIMIT, (f"bundle {bundle / 2 ** 20:.1f} MiB + project {project / 2 ** 20:.1f} MiB "
                                       "> 64 MiB: the device tool would refuse the call")
    # the bundle folder must be git-ignored (it travels only as a carried path, counted once)
    assert subprocess.run(["git", "check-ignore", "-q", ".gpu_bundle/x.whl"], cwd=ROOT).returncode == 0


def test_local_bundle_matches_the_manifest():
    local = ROOT / ".gpu_bundle"
    if not local.is_dir():
        pytest.skip("no .gpu_bundle/ here (make gpu-bundle builds it)")
    assert sorted(p.name for p in local.glob("*.whl")) == sorted(manifest())


def test_device_script_installs_exactly_the_bundle_offline():
    text = (ROOT / "scripts/gpu_check_device.sh").read_text()
    for flag in ("--no-index", "--no-deps", "--target", "--find-links .gpu_bundle", "-r requirements/gpu-bundle.txt",
                 "bench/gpu_check.py"):
        assert flag in text, flag
