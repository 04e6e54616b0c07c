"""The build DAG through Prefect: caching, selective reruns, forcing, lost outputs, resume after SIGKILL."""
from __future__ import annotations

import errno
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests._flowutil import build as _build
from tests._flowutil import COMMON, TINY, assert_same_features, build_cmd, popen
from tests._flowutil import executed as _executed
from tests._flowutil import features as _features


def _deep(base: dict, extra: dict) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for k, v in extra.items():
        out.setdefault(k, {}).update(v)
    return out


@pytest.fixture(scope="module")
def sample(tiny_sample):
    return tiny_sample


@pytest.fixture(scope="module")
def built(prefect_server, sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, _build(sample, out)


def test_first_build_runs_every_stage(built):
    out, summary = built
    stages = {s for s, _ in _executed(summary)}
    assert {"ingest", "resnet152", "i3d_r50", "merge-resnet152", "merge-i3d_r50", "parse", "concepts",
            "vocab"} <= stages
    assert summary["cached"] == 0
    root = Path(summary["root"])
    videos = pq.read_table(root / "videos.parquet").to_pylist()
    assert len(videos) == 6
    for name in ("resnet152", "i3d_r50"):
        n = 0
        for split in {v["split"] for v in videos}:
            with h5py.File(root / "features" / name / f"{split}.h5", "r") as f:
                n += len(f)
                assert all(f[k].shape[1] == 2048 and f[k].dtype == np.float32 for k in f)
                assert f.attrs["weights"] == "random"
        assert n == 6


def test_rerun_recomputes_nothing(built, sample):
    out, _ = built
    again = _build(sample, out)
    assert _executed(again) == set() and again["executed"] == 0, again["stages"]


def test_backbones_are_needed_only_when_an_extraction_shard_will_run(built, sample):
    """A finished tree: no weights to resolve; forcing an extractor or ingest, or another extraction
    config, does need them; forcing a text stage does not."""
    import inspect

    from flows.build import build_features
    from pipeline import build as pb

    out, _ = built
    _, ann = sample
    flat = {k: p.default for k, p in inspect.signature(build_features.fn).parameters.items() if k in pb.FLAT_PARAMS}
    flat.update(dataset="tiny", dataset_root=str(Path(ann).parent / "videos"), annotation=str(ann),
                out_root=str(out), **COMMON)
    cfg = pb.make_build_config(**flat, overrides=TINY)
    assert not pb.backbones_needed(cfg) and not pb.backbones_needed(cfg, ["parse", "vocab"])
    assert pb.backbones_needed(cfg, ["i3d_r50"]) and pb.backbones_needed(cfg, ["ingest"])
    assert pb.backbones_needed(cfg.model_copy(update={"i3d": cfg.i3d.model_copy(update={"clip_len": 8})}))
    assert pb.backbones_needed(cfg.model_copy(update={"out_root": str(out / "elsewhere")}))


def test_cached_rerun_in_a_new_process_imports_no_torch(built, sample, tmp_path):
    """`vtr build` of a finished tree: every stage cached, and neither torch nor a backbone loaded
    (the keys' runtime answers come from the probe cache, pipeline/runtime.py). ``-X importtime``
    lists every module the process imported."""
    out, _ = built
    log = tmp_path / "rerun.log"
    proc = popen([build_cmd(sample, out)[0], "-X", "importtime", *build_cmd(sample, out)[1:]], log)
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "(0 stage runs executed" in text, text[-3000:]
    imported = {ln.rsplit("|", 1)[1].strip() for ln in text.splitlines() if ln.startswith("import time:")}
    assert "prefect" in imported and "pipeline.build" in imported  # the trace is there
    assert not {"torch", "torchvision", "pytorchvideo"} & imported


def test_changed_i3d_config_reruns_only_i3d(built, sample):
    out, _ = built
    summary = _build(sample, out, overrides=_deep(TINY, {"i3d": {"clip_len": 6}}))
    assert {s for s, _ in _executed(summary)} == {"i3d_r50", "merge-i3d_r50"}
    restored = _build(sample, out)  # the old config's shards are rebuilt, nothing else
    assert {s for s, _ in _executed(restored)} == {"i3d_r50", "merge-i3d_r50"}


def test_changed_text_config_reruns_only_text(built, sample):
    out, _ = built
    summary = _build(sample, out, overrides=_deep(TINY, {"concepts": {"n_verbs": 5}}))
    assert {s for s, _ in _executed(summary)} == {"concepts"}
    _build(sample, out)


def test_force_one_stage(built, sample):
    out, _ = built
    summary = _build(sample, out, force=["parse"])
    assert {s for s, _ in _executed(summary)} == {"parse"}  # same content: downstream keys unchanged


def test_lost_shard_output_is_rebuilt(built, sample):
    out, summary = built
    part = Path(summary["root"]) / "features" / "resnet152" / "shards" / "shard-00001.h5"
    assert part.exists()
    part.unlink()
    again = _build(sample, out)
    # only the lost part is rebuilt; the merged files (same shard keys) are still valid and kept
    assert _executed(again) == {("resnet152", "shard-00001")}
    assert part.exists()


def test_killed_build_resumes_to_same_outputs(built, sample, tmp_path):
    """SIGKILL the build process mid-way; a rerun finishes only what is missing, same bytes of features."""
    _, reference = built
    out = tmp_path / "out"
    # one video per shard: one task per shard commits both extractors of it together, so with 2 shards
    # of 3 the window between the first shard's commit and the merges is too short to kill in
    proc = popen(build_cmd(sample, out, "--shard-size", "1"), tmp_path / "build.log")
    first_shard = out / "tiny" / "_stages" / "resnet152" / "shard-00000.json"
    deadline = time.time() + 240
    while not first_shard.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first_shard.exists(), (tmp_path / "build.log").read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "tiny" / "_stages" / "merge-i3d_r50.json").exists(), "killed too late to test resume"
    kept = out / "tiny" / "features" / "resnet152" / "shards" / "shard-00000.h5"
    kept_bytes = kept.read_bytes()
    resumed = _build(sample, out, shard_size=1)
    assert ("resnet152", "shard-00000") not in _executed(resumed)  # committed work kept...
    assert kept.read_bytes() == kept_bytes  # ...untouched
    # the killed run was another process (other torch thread setup): equal up to fp32 rounding
    assert_same_features(_features(Path(resumed["root"])), _features(Path(reference["root"])), cross_process=True)
    assert not list(Path(resumed["root"]).rglob(".tmp-*"))


@pytest.mark.parametrize("exc, retried", [
    (OSError(errno.ENOSPC, "No space left on device"), True),   # someone may free space
    (OSError(errno.EIO, "I/O error"), True),
    (OSError(errno.EFBIG, "File too large"), False),            # a file-size limit stays
    (PermissionError(errno.EACCES, "Permission denied"), False),
    (FileNotFoundError(errno.ENOENT, "gone"), False),
    (ValueError("bad config"), False),
])
def test_only_transient_io_errors_are_retried(exc, retried):
    from flows._stages import _retry_on_io

    class State:
        def result(self, raise_on_failure=True):
            return exc

    assert _retry_on_io(None, None, State()) is retried
