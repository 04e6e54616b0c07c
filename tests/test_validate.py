"""pipeline.datasets.validate: a consistent tree is clean; each kind of corruption is reported (exit 1)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.datasets import checksums
from pipeline.datasets import problems as P
from pipeline.datasets import validate as V
from storage.atomic import TMP_MARK
from storage.features import dataset_name, write_features
from storage.manifest import StageManifest, manifest_path, write_manifest
from storage.tables import write_table

EXT = "resnet152"
D = 8
VIDEOS = [  # key, split, feature rows (None = decode error)
    ("video0", "train", 3),
    ("video1", "train", 4),
    ("clips/video2", "train", None),
    ("video3", "test", 2),
    ("video4", "test", 5),
]


def _video_row(key: str, split: str) -> dict:
    return {"key": key, "path": f"{key}.mp4", "split": split, "size_bytes": 1000, "n_frames": 40,
            "fps": 20.0, "duration_s": 2.0, "width": 64, "height": 48, "status": "ok", "error_message": None}


def _status_row(key: str, split: str, n: int | None) -> dict:
    return {"key": key, "split": split, "shard": "00000", "status": "ok" if n else "error",
            "error_message": None if n else "InvalidDataError: truncated", "n_decoded": 40 if n else 0,
            "n_expected": 40, "n_features": n or 0, "fps": 20.0, "duration_s": 2.0, "seconds": 0.1}


def _features(split: str, dtype=np.float32, dim: int = D) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal((n, dim)).astype(dtype) for k, s, n in VIDEOS if s == split and n}


def _write_h5_raw(path: Path, arrays: dict[str, np.ndarray], schema_version: int = 1) -> None:
    """Bypass storage.features (which casts to float32) to plant bad files."""
    path.unlink(missing_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = schema_version
        for k, a in arrays.items():
            f.create_dataset(dataset_name(k), data=a)


def build_tree(root: Path) -> Path:
    write_table(root / "videos.parquet", "videos", [_video_row(k, s) for k, s, _ in VIDEOS])
    captions = [{"caption_id": i * 2 + j, "key": k, "sen_id": j, "split": s, "caption": f"a person {j}"}
                for i, (k, s, _) in enumerate(VIDEOS) for j in range(2)]
    write_table(root / "captions.parquet", "captions", captions)
    write_table(root / "text" / "caption_labels.parquet", "caption_labels",
                [{"caption_id": c["caption_id"], "key": c["key"], "split": c["split"],
                  "verb_ids": [0], "noun_ids": [1]} for c in captions])
    write_table(root / "text" / "concepts.parquet", "concepts",
                [{"kind": "verb", "concept_id": 0, "lemma": "run", "train_count": 3},
                 {"kind": "noun", "concept_id": 0, "lemma": "person", "train_count": 5}])
    feat = root / "features" / EXT
    for split in ("train", "test"):
        write_features(feat / f"{split}.h5", _features(split), {"extractor": EXT, "weights": "random"})
    write_table(feat / "status.parquet", "feature_status", [_status_row(k, s, n) for k, s, n in VIDEOS])
    write_manifest(root, StageManifest(stage="ingest", key="k1", outputs=["videos.parquet", "captions.parquet"]))
    write_manifest(root, StageManifest(stage=EXT, key="k2", shard="00000",
                                       outputs=[f"features/{EXT}/train.h5", f"features/{EXT}/test.h5",
                                                f"features/{EXT}/status.parquet"]))
    write_manifest(root, StageManifest(stage="concepts", key="k3",
                                       outputs=["text/concepts.parquet", "text/caption_labels.parquet"]))
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path / "msrvtt")


def test_clean_tree(tree: Path, capsys):
    report = V.validate_tree(tree, deep=True)
    assert report.ok, report.format()
    assert report.checked["videos"] == len(VIDEOS)
    assert report.checked["feature datasets"] == 4
    assert report.checked["manifests"] == 3
    assert V.main([str(tree)]) == 0
    assert "clean" in capsys.readouterr().out


def test_checksums_roundtrip(tree: Path):
    path = checksums.write_checksums(tree)
    doc = json.loads(path.read_text())
    assert "videos.parquet" in doc["files"] and checksums.CHECKSUMS_FILE not in doc["files"]
    assert not any(p.name.startswith(TMP_MARK) for p in tree.rglob("*"))
    report = V.validate_tree(tree)
    assert report.ok, report.format()
    assert report.checked["checksums"] == len(doc["files"])


def test_out_root_with_several_datasets(tmp_path: Path, capsys):
    build_tree(tmp_path / "a")
    build_tree(tmp_path / "b")
    assert V.main([str(tmp_path)]) == 0
    (tmp_path / "b" / "features" / EXT / "status.parquet").unlink()
    assert V.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "missing_table: features/resnet152/status.parquet" in out


def test_missing_root(tmp_path: Path):
    report = V.validate_tree(tmp_path / "nope")
    assert report.kinds == {P.MISSING_ROOT}
    assert V.main([str(tmp_path / "nope")]) == 1


# --------------------------------------------------------------------------- corruptions

def c_missing_feature(root: Path) -> None:
    feats = _features("train")
    del feats["video1"]  # status row still says ok
    write_features(root / "features" / EXT / "train.h5", feats, {})


def c_feature_without_any_status(root: Path) -> None:
    feats = _features("test")
    del feats["video4"]
    write_features(root / "features" / EXT / "test.h5", feats, {})
    rows = [_status_row(k, s, n) for k, s, n in VIDEOS if k != "video4"]
    write_table(root / "features" / EXT / "status.parquet", "feature_status", rows)


def c_feature_for_error_row(root: Path) -> None:
    feats = _features("train")
    feats["clips/video2"] = np.zeros((2, D), np.float32)
    write_features(root / "features" / EXT / "train.h5", feats, {})


def c_wrong_table_version(root: Path) -> None:
    path = root / "videos.parquet"
    t = pq.read_table(path)
    meta = dict(t.schema.metadata)
    meta[b"schema_version"] = b"99"
    pq.write_table(t.replace_schema_metadata(meta), path)


def c_wrong_table_name(root: Path) -> None:
    path = root / "text" / "concepts.parquet"
    t = pq.read_table(path)
    pq.write_table(t.replace_schema_metadata({b"schema_name": b"words", b"schema_version": b"1"}), path)


def c_wrong_feature_version(root: Path) -> None:
    with h5py.File(root / "features" / EXT / "test.h5", "a") as f:
        f.attrs["schema_version"] = 7


def c_stray_temp_file(root: Path) -> None:
    (root / "features" / EXT / f"{TMP_MARK}0123456789ab-train.h5").write_bytes(b"half written")


def c_missing_manifest_output(root: Path) -> None:
    (root / "text" / "concepts.parquet").unlink()


def c_manifest_escapes_root(root: Path) -> None:
    write_manifest(root, StageManifest(stage="evil", key="k", outputs=["../elsewhere.parquet"]))


def c_bad_manifest(root: Path) -> None:
    manifest_path(root, "ingest").write_text("{not json")


def c_checksum_mismatch(root: Path) -> None:
    checksums.write_checksums(root)
    # a later, valid rewrite of a listed file: only the checksum catches it
    write_manifest(root, StageManifest(stage="ingest", key="k1-changed",
                                       outputs=["videos.parquet", "captions.parquet"]))


def c_checksum_missing_file(root: Path) -> None:
    checksums.write_checksums(root)
    (root / "_stages" / "concepts.json").unlink()


def c_float64_dataset(root: Path) -> None:
    _write_h5_raw(root / "features" / EXT / "test.h5", _features("test", dtype=np.float64))


def c_one_dim_dataset(root: Path) -> None:
    arrays = _features("test")
    arrays["video3"] = arrays["video3"].ravel()
    _write_h5_raw(root / "features" / EXT / "test.h5", arrays)


def c_inconsistent_width(root: Path) -> None:
    write_features(root / "features" / EXT / "test.h5", _features("test", dim=D + 1), {})


def c_nan_feature(root: Path) -> None:
    arrays = _features("test")
    arrays["video3"][0, 0] = np.nan
    write_features(root / "features" / EXT / "test.h5", arrays, {})


def c_unknown_feature(root: Path) -> None:
    arrays = _features("test")
    arrays["ghost"] = np.zeros((1, D), np.float32)
    write_features(root / "features" / EXT / "test.h5", arrays, {})


def c_caption_unknown_video(root: Path) -> None:
    rows = [{"caption_id": 100, "key": "ghost", "sen_id": 0, "split": "train", "caption": "x"}]
    rows += [{"caption_id": i, "key": k, "sen_id": 0, "split": s, "caption": "y"}
             for i, (k, s, _) in enumerate(VIDEOS)]
    write_table(root / "captions.parquet", "captions", rows)


def c_label_unknown_caption(root: Path) -> None:
    write_table(root / "text" / "caption_labels.parquet", "caption_labels",
                [{"caption_id": 999, "key": "video0", "split": "train", "verb_ids": [], "noun_ids": []}])


def c_split_mismatch(root: Path) -> None:
    rows = [_status_row(k, "test" if k == "video0" else s, n) for k, s, n in VIDEOS]
    write_table(root / "features" / EXT / "status.parquet", "feature_status", rows)


def c_bad_status_value(root: Path) -> None:
    rows = [_status_row(k, s, n) for k, s, n in VIDEOS]
    rows[0]["status"] = "done"
    write_table(root / "features" / EXT / "status.parquet", "feature_status", rows)


def c_n_features_mismatch(root: Path) -> None:
    rows = [_status_row(k, s, n) for k, s, n in VIDEOS]
    rows[0]["n_features"] = 99
    write_table(root / "features" / EXT / "status.parquet", "feature_status", rows)


def c_truncated_parquet(root: Path) -> None:
    path = root / "captions.parquet"
    path.write_bytes(path.read_bytes()[:50])


def c_truncated_h5(root: Path) -> None:
    path = root / "features" / EXT / "train.h5"
    path.write_bytes(path.read_bytes()[:100])


def c_duplicate_video(root: Path) -> None:
    rows = [_video_row(k, s) for k, s, _ in VIDEOS] + [_video_row("video0", "train")]
    write_table(root / "videos.parquet", "videos", rows)


def c_extractor_without_status(root: Path) -> None:
    write_features(root / "features" / "i3d_r50" / "train.h5", {"video0": np.zeros((1, 4), np.float32)}, {})


CORRUPTIONS: list[tuple[Callable[[Path], None], set[str]]] = [
    (c_missing_feature, {P.MISSING_FEATURE}),
    (c_feature_without_any_status, {P.MISSING_FEATURE}),
    (c_feature_for_error_row, {P.FEATURE_FOR_ERROR}),
    (c_wrong_table_version, {P.SCHEMA}),
    (c_wrong_table_name, {P.SCHEMA}),
    (c_wrong_feature_version, {P.FEATURE_FILE}),
    (c_stray_temp_file, {P.TMP_FILE}),
    (c_missing_manifest_output, {P.MISSING_OUTPUT}),
    (c_manifest_escapes_root, {P.MANIFEST}),
    (c_bad_manifest, {P.MANIFEST}),
    (c_checksum_mismatch, {P.CHECKSUM}),
    (c_checksum_missing_file, {P.CHECKSUM}),
    (c_float64_dataset, {P.FEATURE_DTYPE}),
    (c_one_dim_dataset, {P.FEATURE_SHAPE}),
    (c_inconsistent_width, {P.FEATURE_SHAPE}),
    (c_nan_feature, {P.FEATURE_VALUES}),
    (c_unknown_feature, {P.UNKNOWN_VIDEO}),
    (c_caption_unknown_video, {P.UNKNOWN_VIDEO, P.UNKNOWN_CAPTION}),  # labels now point at gone ids
    (c_label_unknown_caption, {P.UNKNOWN_CAPTION}),
    (c_split_mismatch, {P.SPLIT_MISMATCH}),
    (c_bad_status_value, {P.BAD_STATUS}),
    (c_n_features_mismatch, {P.FEATURE_SHAPE}),
    (c_truncated_parquet, {P.SCHEMA}),
    (c_truncated_h5, {P.FEATURE_FILE, P.MISSING_FEATURE}),  # unreadable file: its videos lack features
    (c_duplicate_video, {P.DUPLICATE_KEY}),
    (c_extractor_without_status, {P.MISSING_TABLE, P.MISSING_FEATURE}),
]


@pytest.mark.parametrize("corrupt,kinds", CORRUPTIONS, ids=[c.__name__[2:] for c, _ in CORRUPTIONS])
def test_corruption_reported(tree: Path, corrupt, kinds, capsys):
    corrupt(tree)
    report = V.validate_tree(tree, deep=True)
    assert not report.ok
    assert report.kinds == kinds, report.format()  # reported, and nothing spurious
    assert V.main([str(tree), "--deep"]) == 1
    out = capsys.readouterr().out
    for kind in kinds:
        assert f"{kind}: " in out


def test_main_subprocess_exit_codes(tree: Path):
    """`python -m pipeline.datasets.validate ROOT` from a shell: 0 clean, 1 with problems."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    run = lambda: subprocess.run([sys.executable, "-m", "pipeline.datasets.validate", str(tree)], cwd=repo,
                                 capture_output=True, text=True, timeout=60)
    ok = run()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    c_stray_temp_file(tree)
    bad = run()
    assert bad.returncode == 1
    assert "tmp_file: features/resnet152/.tmp-" in bad.stdout
