"""Issue 19: feedback a newcomer can act on. Unit checks of each listed defect (the walkthrough through real
`vtr` processes is tests/test_newcomer.py): one-line user errors, error kinds, the build's report, the
weights key, hostile captions, the README's names and commands."""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import pytest

from pipeline import build as pb
from pipeline import build_report
from pipeline.feedback import UserError, is_user_error, one_line

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _cfg(**changed):
    import inspect

    from flows.build import build_features

    flat = {k: p.default for k, p in inspect.signature(build_features.fn).parameters.items() if k in pb.FLAT_PARAMS}
    return pb.make_build_config(**{**flat, **changed}, overrides={})


# ---- the error contract ----------------------------------------------------------------------------------

def test_one_line_of_a_validation_error_names_the_field():
    from pipeline.config import BuildConfig

    with pytest.raises(ValueError) as err:
        BuildConfig.model_validate({"shard_size": "many"})
    assert is_user_error(err.value)
    text = one_line(err.value)
    assert "\n" not in text and "shard_size" in text and "'many'" in text


def test_bugs_are_not_user_errors():
    assert not is_user_error(KeyError("x")) and not is_user_error(TypeError("y"))
    assert is_user_error(UserError("z")) and is_user_error(FileNotFoundError("f"))


def test_log_filter_strips_the_traceback_of_user_errors_only(monkeypatch):
    from flows._feedback import _TracebackOfUserErrors

    monkeypatch.delenv("VTR_DEBUG", raising=False)

    def record(exc):
        try:
            raise exc
        except Exception:
            return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "boom %r", (exc,),
                                     sys.exc_info())

    user, bug = record(UserError("annotation='x': missing")), record(KeyError("k"))
    f = _TracebackOfUserErrors()
    assert f.filter(user) and user.exc_info is None and "annotation='x'" in user.getMessage()
    assert f.filter(bug) and bug.exc_info is not None  # a bug keeps its traceback
    engine = record(UserError("again"))
    engine.msg, engine.args = "Engine execution exited with unexpected exception", ()
    assert not f.filter(engine)  # Prefect's duplicate report of a user error is dropped
    monkeypatch.setenv("VTR_DEBUG", "1")
    again = record(UserError("u"))
    assert f.filter(again) and again.exc_info is not None


def test_unreachable_server_is_one_user_error_saying_what_to_do(monkeypatch):
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows._feedback import check_server

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("VTR_PREFECT_PORT", "4251")
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        with pytest.raises(UserError) as err:
            check_server(timeout_s=2)
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "make prefect-up" in msg and "VTR_PREFECT_PORT=4251" in msg
    assert "unset PREFECT_API_URL" in msg


def test_missing_inputs_are_named_before_any_work(tmp_path):
    import inspect

    from flows.build import build_features

    flat = {k: p.default for k, p in inspect.signature(build_features.fn).parameters.items() if k in pb.FLAT_PARAMS}
    ann = tmp_path / "a.json"
    with pytest.raises(UserError, match=r"annotation=.*a\.json.*does not exist"):
        pb.checked_config({**flat, "annotation": str(ann)}, {})
    ann.write_text("{}")
    with pytest.raises(UserError, match=r"dataset_root='/nowhere/videos': no such folder.*<video_id>\.mp4"):
        pb.checked_config({**flat, "annotation": str(ann), "dataset_root": "/nowhere/videos"}, {})


def test_evaluate_without_a_built_dataset_says_it_does_not_exist(tmp_path):
    from flows.train import evaluate

    ck = tmp_path / "best.pt"
    ck.write_bytes(b"x")  # never opened: the dataset is checked first
    with pytest.raises(UserError, match=r"dataset='sample': .*out/sample does not exist"):
        evaluate.fn(checkpoint=str(ck), out_root=str(tmp_path / "out"))
    with pytest.raises(UserError, match=r"checkpoint=.*nope\.pt.*no such file"):
        evaluate.fn(checkpoint=str(tmp_path / "nope.pt"), out_root=str(tmp_path / "out"))


# ---- what a build reports --------------------------------------------------------------------------------

def test_error_kinds_are_specific():
    kinds = {m: build_report.error_kind(m) for m in (
        "ingest: file not found: /data/videos/video0.mp4", "ingest: read error (retried on the next build): x",
        "ingest: UnreadableVideoError: empty file", "TruncatedVideoError: 10 of 300 frames",
        "CorruptVideoError: invalid data", "ingest: NoVideoStreamError: audio only", "unexpected KeyError: 'x'")}
    assert list(kinds.values()) == ["file not found", "unreadable", "unreadable", "truncated", "decoder error",
                                    "no video stream", "unexpected KeyError"]


def test_wrong_dataset_root_rows_say_file_not_found(tmp_path):
    from pipeline.datasets.ingest import video_row

    row = video_row({"key": "video0", "path": "video0.mp4", "split": "train", "error": None}, tmp_path, probe=False)
    assert row["status"] == "error" and build_report.error_kind("ingest: " + row["error_message"]) == "file not found"


def test_summary_rows_have_ok_error_frames_seconds_columns():
    m = {"stage": "resnet152", "shard": "shard-00001", "created_at": 10.0, "timings_s": {"total": 2.3449},
         "counts": {"ok": 3, "error": 1, "frames": 12, "padded": 0}}
    row = build_report.summary_row(m, started_at=5.0)
    assert list(row) == ["stage", "shard", "status", "ok", "error", "frames", "seconds", "other"]
    assert (row["ok"], row["error"], row["frames"], row["seconds"]) == (3, 1, 12, 2.34)
    assert build_report.stage_lines([row]) == ['resnet152/shard-00001 executed: ok 3, error 1, frames 12; {"padded": 0} (2.3 s)']


def test_completed_build_with_failed_videos_warns_with_count_messages_and_where(tmp_path):
    from storage.schemas import SCHEMAS
    from storage.tables import write_table

    blank = dict.fromkeys(SCHEMAS["feature_status"][1].names)
    msgs = [None, "ingest: file not found: /v/b.mp4", None, "CorruptVideoError: x", "ingest: file not found: /v/e.mp4",
            "ingest: file not found: /v/f.mp4", "ingest: file not found: /v/g.mp4"]
    rows = [{**blank, "key": f"v{i}", "split": "train", "shard": "shard-00000",
             "status": "ok" if m is None else "error", "error_message": m} for i, m in enumerate(msgs)]
    cfg = _cfg(extractors=["resnet152"])
    write_table(tmp_path / "features/resnet152/status.parquet", "feature_status", rows)
    text = build_report.failure_warning(tmp_path, cfg)
    assert text.startswith("5 of 7 videos have no features (file not found: 4, decoder error: 1)")
    assert "v1: ingest: file not found: /v/b.mp4" in text and "(and 2 more)" in text
    assert f"{tmp_path}/features/*/status.parquet" in text


# ---- the listed defects ----------------------------------------------------------------------------------

def test_weights_key_follows_the_file_content_not_its_size_and_mtime(tmp_path):
    from pipeline.fingerprint import content_fingerprint

    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(b"A" * 64)
    first = content_fingerprint(a)
    st = a.stat()
    a.unlink()
    a.write_bytes(b"B" * 64)  # a same-size replacement...
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))  # ...with the same mtime
    assert content_fingerprint(a) != first
    b.write_bytes(b"B" * 64)
    assert content_fingerprint(b) == content_fingerprint(a)  # same bytes elsewhere: same input


def test_build_keys_use_the_weights_sha256(tmp_path, monkeypatch):
    from pipeline.fingerprint import sha256_file
    from pipeline.video import shards

    w = tmp_path / "r.pth"
    w.write_bytes(b"weights")
    spec = shards.ShardSpec(id="shard-00000", keys=["v"], paths=[str(tmp_path / "v.mp4")], splits=["train"],
                            statuses=["ok"], errors=[None])
    monkeypatch.setattr(shards, "plan_shards", lambda *a, **k: [spec])
    cfg = _cfg(extractors=["resnet152"], resnet_weights=str(w))
    (key,) = pb.video_stage_keys(tmp_path, cfg)
    assert key.inputs["weights"] == {"sha256": sha256_file(w)}


@pytest.mark.parametrize("raw, note", [("", "empty caption"), ("   ", "empty caption"), ("\t\n ", "empty caption"),
                                       ("\x00\x01\u200b", "no text after removing control characters")])
def test_hostile_captions_say_what_they_are(raw, note):
    from pipeline.config import TextConfig
    from pipeline.text.parse import EMPTY, prepare_caption

    p = prepare_caption(raw, TextConfig())
    assert p.status == EMPTY and p.message.startswith(note)


def test_offline_weights_error_names_the_parameter_and_the_readme_file(monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    import torchvision

    from pipeline.video import backbones

    def offline(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torchvision.models.ResNet152_Weights.IMAGENET1K_V1.__class__, "get_state_dict",
                        lambda self, *a, **k: offline())
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    for fn, param, other in ((lambda: backbones._resnet_state("imagenet"), "resnet_weights", "i3d_weights"),
                             (lambda: backbones._i3d_state("kinetics"), "i3d_weights", "resnet_weights")):
        with pytest.raises(backbones.BackboneWeightsError) as err:
            fn()
        msg = str(err.value)
        assert f"{param}=<path to " in msg and f"{param}=random" in msg and other not in msg
        assert not re.search(r"(?<![a-z0-9_])weights=", msg)  # never the bare shared parameter
        file_name = re.search(r"<path to ([^>]+)>", msg).group(1)
        assert f"{param}=/weights/{file_name}" in README or f"{param}=/path/{file_name}" in README, file_name


def test_readme_states_port_deployments_file_naming_and_pandas():
    assert "VTR_PREFECT_PORT" in README
    up = (ROOT / "scripts/prefect_up.sh").read_text()
    for name in ("build-index", "compare-models", "build-features", "train-hanet", "evaluate-hanet"):
        assert name in up or name.split("-")[0] in up
    assert re.search(r"grep -E \"[^\"]*build-index", up) and re.search(r"grep -E \"[^\"]*compare", up)
    assert "video_ext" in README and "<video_id>.mp4" in README
    assert re.search(r"^pandas==", (ROOT / "requirements/base.txt").read_text(), re.M)
    pa = pytest.importorskip("pyarrow")
    assert pa.table({"a": [1]}).to_pandas()["a"].tolist() == [1]


def test_http_overlong_query_is_one_400_message_without_the_query():
    from fastapi.testclient import TestClient

    from pipeline.search.web import create_app

    class Stub:
        meta, n = {"shards_root": "out/x", "checkpoint": "best.pt", "checkpoint_epoch": 1}, 0
        calls = 0

        def search(self, q, **kw):
            Stub.calls += 1
            return {"results": []}

    client = TestClient(create_app(Stub()))
    long = "horse " * 1000  # 6,000 characters
    r = client.get("/api/search", params={"q": long})
    assert r.status_code == 400 and r.json() == {"error": "query too long: 6000 characters, the limit is 300"}
    assert Stub.calls == 0 and len(r.content) < 200
    r = client.get("/api/search", params={"q": "a man", "top": "lots"})
    assert r.status_code == 400 and set(r.json()) == {"error"} and "top" in r.json()["error"]
    assert "lots" not in r.text


def test_progress_bar_in_a_terminal_shows_count_rate_and_eta():
    """A real pseudo-terminal: the bar of flows/_feedback.progress (rich) with done/total, rate, ETA."""
    import pty
    import subprocess

    code = ("import time\nfrom flows._feedback import progress\n"
            "with progress('train hanet', 'epochs', prefect=False) as step:\n"
            "    for i in range(1, 4):\n        time.sleep(0.3)\n        step(i, 3)\n")
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "150", "TERM": "xterm"}
    env.pop("VTR_NO_PROGRESS", None)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=follower, stdout=follower, stderr=follower, env=env,
                            cwd=ROOT)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert "train hanet" in text and "3/3" in text and "ETA" in text
    assert re.search(r"\d+\.\d\d epochs/s", text), text[-800:]


def test_progress_artifact_moves_with_every_step(prefect_server, monkeypatch):
    import prefect.artifacts as pa
    from prefect import flow

    from flows._feedback import progress

    seen = []
    monkeypatch.setattr(pa, "update_progress_artifact", lambda art, progress: seen.append(round(progress, 1)))

    @flow
    def steps():
        with progress("evaluate", "caption blocks") as step:
            for i in range(1, 5):
                step(i, 4)

    steps()
    assert seen == [25.0, 50.0, 75.0, 100.0]


def test_env_sh_makes_the_server_stream_logs_for_watch():
    import subprocess

    out = subprocess.run(["bash", "-c", "source scripts/env.sh && env"], cwd=ROOT, capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}).stdout
    assert "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED=true" in out
    assert "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED=true" in out


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, capsys, monkeypatch):
    from flows import cli

    monkeypatch.delenv("VTR_DEBUG", raising=False)
    argv = ["import-checkpoint", "src.th", str(tmp_path / "dst.pt"), "--config", str(tmp_path / "c.json")]
    assert cli.main(argv) == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(FileNotFoundError, match="--config"):
        cli.main(["--debug", *argv])
    monkeypatch.setenv("VTR_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli.main(argv)
    monkeypatch.delenv("VTR_DEBUG")
    with pytest.raises(FileNotFoundError):
        cli.main(["--debug", *argv])
    assert "VTR_DEBUG" not in os.environ  # --debug is for that command only
