"""Stage cache keys: computed code closure (issue 10 item 7) and runtime provenance (item 6)."""
from __future__ import annotations

import shutil
from pathlib import Path

import dataclasses

import numpy as np
import pytest

from flows import build as fb
from pipeline import build as pb
from pipeline import runtime
from pipeline.fingerprint import REPO_ROOT, code_fingerprint, module_closure

STAGE_ROOTS = {  # the modules pipeline/build.py hashes per stage
    "ingest": ["pipeline.datasets.ingest"],
    "extract": list(pb.VIDEO_MODULES),  # by name: planning imports no torch
    "merge": ["pipeline.video.merge"],
    "text": [m.__name__ for m in pb.TEXT_MODULES],
}


@pytest.fixture()
def project_copy(tmp_path) -> Path:
    for pkg in ("pipeline", "storage", "models", "flows"):
        shutil.copytree(REPO_ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _keys(root: Path) -> dict[str, str]:
    return {stage: code_fingerprint(names, root) for stage, names in STAGE_ROOTS.items()}


def test_closure_follows_imports_transitively():
    closure = module_closure(["pipeline.video.extract"])
    for mod in ("pipeline.video.decode", "pipeline.video.backbones", "pipeline.config", "pipeline.stage",
                "storage.features", "storage.schemas", "storage.manifest", "storage.atomic", "pipeline"):
        assert mod in closure, mod
    assert not any(n.startswith("models.") for n in module_closure(["pipeline.datasets.ingest"]))
    assert "pipeline.text/stopwords_en.txt" in module_closure(["pipeline.text.parse"])


def test_editing_a_storage_schema_invalidates_the_stages_that_use_it(project_copy):
    before = _keys(project_copy)
    with open(project_copy / "storage/schemas.py", "a") as f:
        f.write("\n# a schema edit\n")
    after = _keys(project_copy)
    assert all(after[s] != before[s] for s in STAGE_ROOTS), (before, after)


@pytest.mark.parametrize("edited, must_change", [
    ("pipeline/config.py", {"ingest", "extract", "text"}),  # merge reads shards, not configs
    ("pipeline/stage.py", {"ingest", "extract", "merge", "text"}),
    ("pipeline/video/backbones.py", {"extract"}),  # merge: through the shard keys it is keyed by
    ("pipeline/video/shards.py", {"extract", "merge"}),
    ("pipeline/text/roles.py", {"text"}),
    ("models/hanet.py", set()),
])
def test_an_edit_invalidates_exactly_its_importers(project_copy, edited, must_change):
    module = edited.removesuffix(".py").replace("/", ".")
    importers = {s for s, roots in STAGE_ROOTS.items() if module in module_closure(roots, project_copy)}
    assert must_change <= importers
    before = _keys(project_copy)
    with open(project_copy / edited, "a") as f:
        f.write("\n# edit\n")
    after = _keys(project_copy)
    assert {s for s in STAGE_ROOTS if after[s] != before[s]} == importers


# ------------------------------------------------------------------ runtime in the key

@pytest.fixture()
def planned(tmp_path):
    from storage.schemas import SCHEMAS
    from storage.tables import write_table

    blank = dict.fromkeys(SCHEMAS["videos"][1].names)
    write_table(tmp_path / "videos.parquet", "videos",
                [{**blank, "key": f"v{i}", "path": f"v{i}.mp4", "split": "train", "status": "ok"} for i in range(3)],
                extra_metadata={"dataset_root": str(tmp_path)})
    return tmp_path


def _video_keys(root: Path, **changes) -> set[str]:
    flat = {k: p.default for k, p in __import__("inspect").signature(fb.build_features.fn).parameters.items()
            if k in pb.FLAT_PARAMS}
    flat.update({"weights": "random", "shard_size": 2, "dataset_root": str(root)}, **changes)
    cfg = pb.make_build_config(**flat, overrides={})
    return {k for _, _, k, *_ in pb.video_stage_keys(root, cfg)}


def _machine(monkeypatch, **changes) -> None:
    """This machine's runtime probe with ``changes`` (what another machine would answer)."""
    real = runtime.live_probe()
    monkeypatch.setattr(runtime, "probe", lambda: dataclasses.replace(real, **changes))


def test_precision_device_type_and_versions_are_in_the_key(planned, monkeypatch):
    base = _video_keys(planned, device="cpu")
    assert len(base) == 4  # 2 extractors x 2 shards
    _machine(monkeypatch, cpu_bf16=False)
    fp32 = _video_keys(planned, device="cpu")
    _machine(monkeypatch, cpu_bf16=True)
    bf16 = _video_keys(planned, device="cpu")
    assert fp32.isdisjoint(bf16)
    assert _video_keys(planned, device="cuda:0") == _video_keys(planned, device="cuda:1")  # index: no
    assert _video_keys(planned, device="cuda").isdisjoint(bf16)  # type: yes
    _machine(monkeypatch, cpu_bf16=True, versions={**runtime.library_versions(), "av": "0.0.1"})
    assert _video_keys(planned, device="cpu").isdisjoint(bf16)
    _machine(monkeypatch, cpu_bf16=True, cuda_available=True, cuda_count=1, cuda_bf16=True)
    assert _video_keys(planned, device="auto") == _video_keys(planned, device="cuda")  # auto -> the GPU
    _machine(monkeypatch, cpu_bf16=True, cuda_available=False, cuda_count=0)
    assert _video_keys(planned, device="auto") == bf16  # auto -> the CPU


def test_merge_refuses_mixed_provenance(tmp_path):
    from pipeline.video.shards import shard_outputs
    from pipeline.video.merge import finalize_features
    from storage.features import write_features
    from storage.schemas import SCHEMAS
    from storage.tables import write_table

    blank = dict.fromkeys(SCHEMAS["feature_status"][1].names)
    prov = {"weights": "random", "device": "cuda:0", "device_type": "cuda", "precision": "bf16 autocast",
            "precision_kind": "bf16", **runtime.library_versions()}
    common = {"extractor": "resnet152", "weights": "random", "weights_sha256": "x", "feature_dim": 2,
              "config": {}, "sampling": "s"}
    for i, p in enumerate([prov, {**prov, "device": "cuda:1"}, {**prov, "device": "cpu", "device_type": "cpu",
                                                               "precision": "fp32", "precision_kind": "fp32"}]):
        sid = f"shard-{i:05d}"
        h5, status = shard_outputs("resnet152", sid)
        write_features(tmp_path / h5, {f"v{i}": np.ones((2, 2))}, {**common, "shard": sid, "provenance": p})
        write_table(tmp_path / status, "feature_status",
                    [{**blank, "key": f"v{i}", "split": "train", "shard": sid, "status": "ok"}])
    finalize_features(tmp_path, "resnet152", ["shard-00000", "shard-00001"])  # cuda:0 + cuda:1 merge fine
    with pytest.raises(ValueError, match=r"mixed provenance \(device_type, precision_kind differ\).*"
                                         r"device_type=cpu, precision_kind=fp32: shard-00002"):
        finalize_features(tmp_path, "resnet152", ["shard-00000", "shard-00001", "shard-00002"])
