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


def test_demo_uses_the_shared_runner():
    demo = (ROOT / "scripts/demo.sh").read_text()
    assert "tee /dev/stderr" not in demo and "lib_deploy.sh" in demo
