"""scripts/: `make demo > demo.log 2>&1` keeps the whole log (issue 10 item 11)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_PREFECT = """#!/usr/bin/env bash
for i in $(seq 1 200); do echo "flow log line $i"; done
echo "progress on stderr" >&2
[ "$FAKE_OK" = 1 ] && echo "Flow run 'x' finished successfully in 'Completed'." || echo "Flow run 'x' Failed"
"""


def _run_demo_step(tmp_path: Path, ok: bool) -> tuple[int, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "prefect").write_text(FAKE_PREFECT)
    (bin_dir / "prefect").chmod(0o755)
    log = tmp_path / "demo.log"
    script = (f"source {ROOT}/scripts/lib_deploy.sh; echo 'line before the run'; "
              "run_deployment 'build-features/x' --param a=1 || exit 1; echo 'line after the run'")
    with open(log, "w") as fh:  # exactly `... > demo.log 2>&1`
        rc = subprocess.run(["bash", "-c", script], stdout=fh, stderr=subprocess.STDOUT, timeout=30,
                            env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_OK": str(int(ok))}
                            ).returncode
    return rc, log.read_text()


def test_redirected_demo_log_keeps_every_line(tmp_path):
    rc, text = _run_demo_step(tmp_path, ok=True)
    assert rc == 0
    lines = text.splitlines()
    assert lines[0] == "line before the run" and lines[-1] == "line after the run"
    assert sum(line.startswith("flow log line") for line in lines) == 200
    assert "progress on stderr" in text and text.count("flow log line 17\n") == 1  # once, not truncated/duplicated


def test_a_run_that_did_not_complete_fails_the_demo(tmp_path):
    rc, text = _run_demo_step(tmp_path, ok=False)
    assert rc == 1 and "did not complete" in text and "line after the run" not in text
    assert "line before the run" in text and "flow log line 200" in text


FAKE_TOOL = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$CALLS"
if [ "$(basename "$0")" = prefect ]; then
  for i in $(seq 1 200); do echo "flow log line $i of $3"; done
  case "$3" in "$FAIL_AT"*) echo "Flow run 'x' Failed";; *) echo "Flow run 'x' finished successfully in 'Completed'.";; esac
fi
"""


def _run_demo(tmp_path: Path, fail_at: str = "none") -> tuple[int, str, list[str]]:
    """scripts/demo.sh itself, in a copy of scripts/ whose venv holds fake prefect / python / vtr."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("demo.sh", "env.sh", "lib_deploy.sh"):
        (repo / "scripts" / name).write_text((ROOT / "scripts" / name).read_text())
    (repo / "scripts" / "prefect_up.sh").write_text('echo "prefect_up $*" >> "$CALLS"\n')
    (repo / ".venv" / "bin").mkdir(parents=True)
    for tool in ("prefect", "python", "vtr"):
        (repo / ".venv" / "bin" / tool).write_text(FAKE_TOOL)
        (repo / ".venv" / "bin" / tool).chmod(0o755)
    calls, log = tmp_path / "calls.txt", tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VTR_"))}
    with open(log, "w") as fh:  # `make demo > demo.log 2>&1`
        rc = subprocess.run(["bash", str(repo / "scripts" / "demo.sh")], stdout=fh, stderr=subprocess.STDOUT,
                            timeout=60, env={**env, "CALLS": str(calls), "FAIL_AT": fail_at}).returncode
    return rc, log.read_text(), calls.read_text().splitlines()


def test_demo_runs_its_deployments_in_order_and_keeps_their_whole_output(tmp_path):
    rc, text, calls = _run_demo(tmp_path)
    assert rc == 0, text
    runs = [c.split()[3] for c in calls if c.startswith("prefect deployment run")]
    assert runs == ["build-features/build-sample-features", "train/train-hanet", "build-index/build-index"]
    assert calls[0] == "prefect_up " and all("--watch" in c for c in calls if c.startswith("prefect "))
    for dep in ("build-features/build-sample-features", "train/train-hanet", "build-index/build-index"):
        assert sum(line.startswith("flow log line") and line.endswith(f"of {dep}") for line in text.splitlines()) == 200
    assert calls[-1].startswith("vtr search")


def test_demo_stops_at_the_first_deployment_that_does_not_complete(tmp_path):
    rc, text, calls = _run_demo(tmp_path, fail_at="train/")
    assert rc == 1 and "deployment run train/train-hanet did not complete" in text
    assert not any("build-index" in c or c.startswith(("vtr", "python")) for c in calls)
    assert "flow log line 200 of train/train-hanet" in text  # the failed run's output is kept
