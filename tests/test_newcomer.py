"""Issue 19: a newcomer's walkthrough through real `vtr` processes.

The README's path (sample data, a build, validate) and the mistakes people make on it, each as its own
`vtr` process (all started at once, then awaited: the walkthrough costs about as much as its slowest
process). For every mistake: exit code 2, at most 3 lines on stderr, the parameter named, no traceback.
The build with a missing video must complete and say so where the user looks: a WARNING on the console
and, with the stage lines, in the build-features flow run's OWN log (what `prefect flow-run logs` shows).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests._flowutil import COMMON, ROOT, TINY

VTR = [sys.executable, "-m", "flows.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str | None) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(ROOT),
           # never fetch weights from the internet in a test: a closed local proxy fails at once
           "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "VTR_NO_PROGRESS": "1"}
    env.pop("VTR_DEBUG", None)
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}  # a None value: unset (e.g. PREFECT_API_URL)


def _tiny_args(dataset_root: Path, annotation: Path, out: Path) -> list[str]:
    args = ["--dataset", "tiny", "--dataset-root", str(dataset_root), "--annotation", str(annotation),
            "--out-root", str(out), "--overrides", json.dumps(TINY)]
    for k, v in COMMON.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


@pytest.fixture(scope="module")
def walkthrough(prefect_server, tiny_sample, tmp_path_factory):
    """Start every process at once; {name: (returncode, stdout, stderr)}."""
    tmp = tmp_path_factory.mktemp("newcomer")
    _, ann = tiny_sample
    videos = tmp / "videos"  # the sample with one video missing
    shutil.copytree(Path(ann).parent / "videos", videos)
    missing = sorted(videos.iterdir())[0]
    missing.unlink()
    fake_ck = tmp / "best.pt"
    fake_ck.write_bytes(b"not opened: the dataset is checked first")
    weights = tmp / "resnet152.pth"
    weights.write_bytes(b"x")
    dead = f"http://127.0.0.1:{_free_port()}/api"
    tiny = _tiny_args(videos, Path(ann), tmp / "out")
    offline = _tiny_args(Path(ann).parent / "videos", Path(ann), tmp / "out-offline")
    offline[offline.index("--weights") + 1] = "pretrained"
    runs = {
        # README path: sample data, a build (one video missing: Completed + WARNING), validate
        "sample-data": (VTR + ["sample-data", "--out", str(tmp / "s"), "--n-videos", "2"], {}),
        "build-missing-video": (VTR + ["build", *tiny], {}),
        # README: "Without a server, the same flows run in-process" (text stages only: no torch, quick)
        "build-in-process": (VTR + ["build", *_tiny_args(Path(ann).parent / "videos", Path(ann), tmp / "out-ip"),
                                    "--extractors"], {"PREFECT_API_URL": None}),
        # mistakes
        "build-no-annotation": (VTR + ["build"], {}),  # README's bare `vtr build`, no sample data here
        "build-bad-dataset-root": (VTR + ["build", "--annotation", str(ann), "--dataset-root", str(tmp / "nope")], {}),
        "build-weights-file-both": (VTR + ["build", "--annotation", str(ann), "--weights", str(weights)], {}),
        "build-bad-override": (VTR + ["build", "--overrides", '{"shard_size": "many"}'], {}),
        "build-offline-weights": (VTR + ["build", *offline], {}),
        "build-no-server": (VTR + ["build"], {"PREFECT_API_URL": dead}),
        "evaluate-no-dataset": (VTR + ["evaluate", str(fake_ck)], {}),
        "evaluate-no-checkpoint": (VTR + ["evaluate", str(tmp / "runs/nope.pt")], {}),
        "search-no-index": (VTR + ["search", "a man rides a horse", "--index", str(tmp / "noindex")], {}),
    }
    procs = {name: subprocess.Popen(cmd, cwd=tmp, env=_env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for name, (cmd, extra) in runs.items()}
    out = {name: (p.wait(timeout=400), p.stdout.read(), p.stderr.read()) for name, p in procs.items()}
    return {"results": out, "tmp": tmp, "missing": missing.name, "dead": dead}


MISTAKES = {  # name -> what the one line must name
    "build-no-annotation": ["annotation=", "does not exist", "generate_sample"],
    "build-bad-dataset-root": ["dataset_root=", "no such folder"],
    "build-weights-file-both": ["resnet_weights=", "i3d_weights="],
    "build-bad-override": ["shard_size"],
    "build-offline-weights": ["resnet_weights=", "resnet152-394f9c45.pth", "i3d_weights=", "I3D_8x8_R50.pyth"],
    "build-no-server": ["PREFECT_API_URL=", "make prefect-up", "unset PREFECT_API_URL"],
    "evaluate-no-dataset": ["dataset='sample'", "out/sample does not exist"],
    "evaluate-no-checkpoint": ["checkpoint=", "no such file"],
    "search-no-index": ["noindex"],
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_each_mistake_is_one_actionable_line(walkthrough, name):
    code, out, err = walkthrough["results"][name]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err[-3000:])
    assert "Traceback" not in err + out
    assert len(lines) <= 3, err
    command = name.split("-")[0]
    assert any(ln.startswith(f"vtr {command}: ") for ln in lines), err
    for needle in MISTAKES[name]:
        assert needle in err, (needle, err)
    if name == "build-no-server":
        assert walkthrough["dead"] in err


def test_readme_path_completes_and_says_what_failed_where_the_user_looks(walkthrough):
    res, tmp, missing = walkthrough["results"], walkthrough["tmp"], walkthrough["missing"]
    assert res["sample-data"][0] == 0 and (tmp / "s" / "annotation.json").exists()
    code, out, err = res["build-missing-video"]
    assert code == 0, err[-3000:]
    assert "Traceback" not in err + out
    warning = [ln for ln in err.splitlines() if "WARNING" in ln and "have no features" in ln]
    assert warning and "1 of 6 videos have no features (file not found: 1)" in warning[0]
    assert missing in warning[0] and "status.parquet" in warning[0]
    assert "resnet152/shard-00000 executed: ok" in out  # stage lines on the console (stdout)
    # the same lines in the build-features run's own log (not only in its build-dag subflow's)
    logs = _flow_run_logs("build-features", str(tmp / "out"))
    assert any(m.startswith("ingest executed: ok 5, error 1") for m in logs), logs
    assert any(m.startswith("resnet152/shard-00000 executed: ok") for m in logs), logs
    assert any("1 of 6 videos have no features (file not found: 1)" in m for m in logs), logs
    assert subprocess.run(VTR + ["validate", str(tmp / "out" / "tiny")], cwd=ROOT, env=_env(),
                          capture_output=True).returncode == 0
    # the README's inspection commands, on this tree as out/sample
    (tmp / "insp" / "out").mkdir(parents=True)
    (tmp / "insp" / "out" / "sample").symlink_to(tmp / "out" / "tiny")
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r'^  (python -c "import pyarrow.*?"[^\n]*?)(?:   #.*)?$', readme.replace("\\\n", ""), re.M)
    assert len(commands) == 2, commands
    env = _env(PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    outs = [subprocess.run(["bash", "-c", c], cwd=tmp / "insp", env=env, capture_output=True, text=True)
            for c in commands]
    assert all(o.returncode == 0 for o in outs), [o.stderr[-500:] for o in outs]
    assert "video1" in outs[0].stdout and missing.split(".")[0] in outs[1].stdout and "file not found" in outs[1].stdout


def test_in_process_build_runs_cleanly(walkthrough):
    """PREFECT_API_URL unset: Prefect's temporary server, and no internal ERROR lines or tracebacks."""
    code, out, err = walkthrough["results"]["build-in-process"]
    assert code == 0, err[-3000:]
    assert "vocab executed" in out
    for noise in ("ERROR", "Traceback", "Logging error", "Cannot put items", "EventsWorker"):
        assert noise not in err + out, (noise, err[-3000:])


def test_a_failed_run_has_the_same_message_as_state_and_log_without_traceback(walkthrough):
    """The Prefect side of a mistake: the run's state message is the CLI's line, its log has no traceback."""
    _, _, err = walkthrough["results"]["build-bad-dataset-root"]
    line = next(ln for ln in err.splitlines() if ln.startswith("vtr build: "))[len("vtr build: "):]
    run, logs = _flow_run("build-features", "dataset_root", str(walkthrough["tmp"] / "nope"))
    assert run.state.is_failed() and line in run.state.message
    assert any(line in m for m in logs) and not any("Traceback" in m for m in logs), logs


def _flow_run_logs(flow_name: str, out_root: str) -> list[str]:
    return _flow_run(flow_name, "out_root", out_root)[1]


def _flow_run(flow_name: str, param: str, value: str):
    """(the one run of ``flow_name`` whose parameter ``param`` is ``value``, the messages it logged)."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId

    async def read() -> list[str]:
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
            (run,) = [r for r in runs if r.parameters.get(param) == value]
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
            return run, [log.message for log in logs]

    return asyncio.run(read())
