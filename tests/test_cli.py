"""`vtr`: flow subcommands generated from the flow signatures (issue 10 item 9); every
subcommand's --help and one cheap invocation."""
from __future__ import annotations

import importlib
import inspect
import json

import av
import pytest

from flows import cli

ALL = [*cli.FLOW_COMMANDS, "sample-data", "validate", "import-checkpoint", "index", "search", "serve"]


def _flow_fn(command: str):
    module, attr, _ = cli.FLOW_COMMANDS[command]
    flow = getattr(importlib.import_module(module), attr)
    return inspect.unwrap(flow.fn)


@pytest.mark.parametrize("command", ALL)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: vtr {command}" in out
    if command in cli.FLOW_COMMANDS:  # one option (or positional) per flow parameter: no drift possible
        for name, param in inspect.signature(_flow_fn(command)).parameters.items():
            flag = name if param.default is inspect.Parameter.empty else f"--{name.replace('_', '-')}"
            assert flag in out, (command, flag)


@pytest.fixture()
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "run_flow", lambda flow, kwargs: seen.append((flow.name, kwargs)))
    return seen


def test_build_invocation_reaches_the_flow_with_every_parameter(calls):
    assert cli.main(["build", "--generate-sample", "3", "--resnet-weights", "/w/r.pth", "--i3d-weights", "random",
                     "--extractors", "resnet152", "--force", "parse", "vocab", "--batch-size", "16",
                     "--overrides", '{"i3d": {"clip_len": 16}}', "--dask-gpu", "--runner", "dask"]) == 0
    (name, kw), = calls
    assert name == "build-features"
    assert set(kw) == set(inspect.signature(_flow_fn("build")).parameters)
    assert kw["generate_sample"] == 3 and kw["resnet_weights"] == "/w/r.pth" and kw["i3d_weights"] == "random"
    assert kw["extractors"] == ["resnet152"] and kw["force"] == ["parse", "vocab"] and kw["batch_size"] == 16
    assert kw["overrides"] == {"i3d": {"clip_len": 16}} and kw["gpu_tasks"] is True and kw["dask_address"] is None


def test_train_evaluate_retrain_compare_invocations(calls):
    cli.main(["train", "--no-resume", "--test-split", "val", "--epochs", "2", "--overrides", '{"lr": 0.1}'])
    cli.main(["evaluate", "runs/x/best.pt", "--overrides", '{"split": "val"}', "--split", "val"])
    cli.main(["retrain", "--epochs", "1"])
    cli.main(["compare", "--models", "hanet", "hgr", "--epochs", "1"])
    (t, train), (e, ev), (r, re), (c, cmp_) = calls
    assert (t, e, r, c) == ("train", "evaluate", "retrain", "compare")
    assert train["resume"] is False and train["test_split"] == "val" and train["overrides"] == {"lr": 0.1}
    assert ev["checkpoint"] == "runs/x/best.pt" and ev["overrides"] == {"split": "val"}
    assert re["epochs"] == 1 and cmp_["models"] == ["hanet", "hgr"]


def test_bad_json_and_bad_choice_are_usage_errors(calls, capsys):
    for argv in (["build", "--overrides", "{nope"], ["build", "--overrides", "[1]"], ["build", "--format", "avi"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
    assert not calls


def test_sample_data_and_validate(tmp_path, capsys):
    assert cli.main(["sample-data", "--out", str(tmp_path / "s"), "--n-videos", "2"]) == 0
    ann = json.loads((tmp_path / "s" / "annotation.json").read_text())
    assert [v["video_id"] for v in ann["videos"]] == ["video0", "video1"]
    for v in ann["videos"]:  # each video file decodes (PyAV directly), each caption names its first object's colour
        with av.open(str(tmp_path / "s" / "videos" / f"{v['video_id']}.mp4")) as container:
            assert sum(1 for _ in container.decode(video=0)) > 0
        captions = [c["caption"] for c in ann["sentences"] if c["video_id"] == v["video_id"]]
        assert captions and all(v["sample_spec"]["objects"][0]["colour"] in c for c in captions)
    assert cli.main(["validate", str(tmp_path / "nothing-built")]) == 1


def test_import_checkpoint_config_is_a_path(tmp_path, capsys):
    argv = ["import-checkpoint", "src.th", str(tmp_path / "dst.pt"), "--config", str(tmp_path / "c.json")]
    assert cli.main(argv) == 2  # a user error: one line, exit 2 (flows/cli.py main)
    err = capsys.readouterr().err
    assert "--config" in err and "no such file" in err
    (tmp_path / "c.json").write_text(json.dumps({"nope_field": 1}))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "nope_field" in err and len(err.strip().splitlines()) == 1  # read as a HANetConfig file, not inline JSON


def test_search_plugin_commands_are_registered(tmp_path, capsys):
    assert cli.main(["search", "a man rides", "--index", str(tmp_path / "none")]) == 2
    assert cli.main(["serve", "--index", str(tmp_path / "none")]) == 2
    # the stage refuses (no Prefect needed): one line, exit 2
    assert cli.main(["index", "--no-flow", "--checkpoint", str(tmp_path / "none.pt"), "--out-root", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
