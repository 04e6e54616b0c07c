"""Ingest of MSR-VTT, VATEX and manifest annotations into videos/captions tables."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.config import BuildConfig, IngestConfig
from pipeline.datasets.ingest import run_ingest, safe_relative_path
from pipeline.datasets.annotations import load_annotations
from storage.tables import read_table, table_metadata
from tests._videos import make_audio_only, make_text_file, make_video, make_zero_byte


def _build(tmp_path: Path, fmt: str, annotation: Path, **ingest) -> BuildConfig:
    return BuildConfig(dataset="d", out_root=str(tmp_path / "out"),
                       ingest=IngestConfig(format=fmt, dataset_root=str(tmp_path / "videos"),
                                           annotation=str(annotation), **ingest))


def _tables(tmp_path: Path) -> tuple[dict[str, dict], list[dict]]:
    videos = read_table(tmp_path / "out/d/videos.parquet", "videos").to_pylist()
    captions = read_table(tmp_path / "out/d/captions.parquet", "captions").to_pylist()
    return {v["key"]: v for v in videos}, captions


def _msrvtt(tmp_path: Path) -> Path:
    (tmp_path / "videos").mkdir()
    make_video(tmp_path / "videos/video0.mp4", 8)
    make_video(tmp_path / "videos/video1.mp4", 5, size=(48, 32))
    ann = {"videos": [{"video_id": "video0", "split": "train", "category": 3},
                      {"video_id": "video1", "split": "validate"},
                      {"video_id": "video2", "split": "test"}],
           "sentences": [{"caption": "a man  is Running.", "video_id": "video1", "sen_id": 7},
                         {"caption": "kids play", "video_id": "video0", "sen_id": 3},
                         {"caption": "orphan", "video_id": "video9", "sen_id": 4},
                         {"caption": "rain", "video_id": "video2", "sen_id": 5}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(ann))
    return path


def test_msrvtt_ingest_probes_videos_and_keeps_captions_raw(tmp_path):
    result = run_ingest(_build(tmp_path, "msrvtt", _msrvtt(tmp_path)))
    videos, captions = _tables(tmp_path)
    assert result.counts == {"videos": 3, "ok": 2, "error": 1, "captions": 3}
    assert {k: v["split"] for k, v in videos.items()} == {"video0": "train", "video1": "val", "video2": "test"}
    v1 = videos["video1"]
    assert (v1["path"], v1["n_frames"], v1["fps"], v1["width"], v1["height"], v1["status"]) == \
        ("video1.mp4", 5, 12.0, 48, 32, "ok")
    assert videos["video2"]["status"] == "error" and "not found" in videos["video2"]["error_message"]
    assert [(c["caption_id"], c["key"], c["sen_id"], c["split"], c["caption"]) for c in captions] == [
        (0, "video1", 7, "val", "a man  is Running."), (1, "video0", 3, "train", "kids play"),
        (3, "video2", 5, "test", "rain")]  # ids keep annotation positions; the orphan is dropped
    assert any("1 captions" in n for n in result.notes)
    assert table_metadata(tmp_path / "out/d/videos.parquet")["dataset_root"] == str((tmp_path / "videos").resolve())


def test_vatex_rows_take_the_configured_split(tmp_path):
    (tmp_path / "videos").mkdir()
    make_video(tmp_path / "videos/abc_000001_000011.mp4", 4)
    ann = tmp_path / "vatex_val.json"
    ann.write_text(json.dumps([{"videoID": "abc_000001_000011", "enCap": ["one", "two"], "chCap": ["x"]},
                               {"videoID": "def_000002_000012"}]))
    run_ingest(_build(tmp_path, "vatex", ann, vatex_split="val", probe=False))
    videos, captions = _tables(tmp_path)
    assert {k: (v["split"], v["status"]) for k, v in videos.items()} == {
        "abc_000001_000011": ("val", "ok"), "def_000002_000012": ("val", "error")}
    assert [(c["caption_id"], c["sen_id"], c["caption"]) for c in captions] == [(0, 0, "one"), (1, 1, "two")]


def _manifest_records(tmp_path: Path) -> list[dict]:
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    make_video(videos / "sub/a.mp4", 4)
    make_video(videos / "b.mp4", 4)
    make_video(tmp_path / "outside.mp4", 4)
    (videos / "link.mp4").symlink_to(tmp_path / "outside.mp4")
    return [
        {"path": "sub/a.mp4", "captions": ["a cat, sitting", "x | y"], "split": "train"},
        {"path": str(videos / "b.mp4"), "captions": ["b"], "split": "test", "key": "bee"},
        {"path": "../outside.mp4", "captions": ["c"], "split": "train"},
        {"path": str(tmp_path / "outside.mp4"), "captions": [], "split": "train", "key": "abs"},
        {"path": "link.mp4", "captions": [], "split": "train"},
        {"path": "sub/../b.mp4", "captions": [], "split": "", "key": "nosplit"},
    ]


def _write_manifest(tmp_path: Path, records: list[dict], kind: str) -> Path:
    if kind == "jsonl":
        path = tmp_path / "m.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "captions", "split", "key"])
        writer.writeheader()
        writer.writerows({**r, "captions": json.dumps(r["captions"])} for r in records)
    return path


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest_ingest_and_path_escapes(tmp_path, kind):
    ann = _write_manifest(tmp_path, _manifest_records(tmp_path), kind)
    run_ingest(_build(tmp_path, "manifest", ann))
    videos, captions = _tables(tmp_path)
    assert videos["sub/a"]["status"] == "ok" and videos["sub/a"]["n_frames"] == 4
    assert (videos["bee"]["path"], videos["bee"]["status"]) == ("b.mp4", "ok")  # absolute inside the root
    assert "outside dataset_root" in videos["../outside"]["error_message"]
    assert "outside dataset_root" in videos["abs"]["error_message"]
    # a link the data owner put inside the root is followed (issue 13), its target recorded
    assert (videos["link"]["status"], videos["link"]["path"]) == ("ok", "link.mp4")
    assert videos["link"]["resolved_path"] == str((tmp_path / "outside.mp4").resolve())
    assert videos["sub/a"]["resolved_path"] is None
    assert videos["nosplit"]["error_message"] == "missing split"
    assert [(c["key"], c["sen_id"], c["caption"]) for c in captions][:3] == [
        ("sub/a", 0, "a cat, sitting"), ("sub/a", 1, "x | y"), ("bee", 0, "b")]


def test_strict_mode_refuses_links_leading_outside(tmp_path):
    ann = _write_manifest(tmp_path, _manifest_records(tmp_path), "jsonl")
    run_ingest(_build(tmp_path, "manifest", ann, follow_symlinks=False))
    videos, _ = _tables(tmp_path)
    assert videos["link"]["status"] == "error" and "symlink" in videos["link"]["error_message"]
    assert "follow_symlinks=False" in videos["link"]["error_message"]
    assert videos["sub/a"]["status"] == "ok"


def test_csv_captions_must_be_a_json_list(tmp_path):
    (tmp_path / "videos").mkdir()
    ann = tmp_path / "m.csv"
    ann.write_text("path,captions,split\nv.mp4,just text,train\n")
    videos, _ = load_annotations(IngestConfig(format="manifest", dataset_root=str(tmp_path / "videos"),
                                              annotation=str(ann)))
    assert "JSON array" in videos[0]["error"]


@pytest.mark.parametrize("maker, message", [
    (make_zero_byte, "empty file"), (make_audio_only, "no video stream"), (make_text_file, "not a readable"),
])
def test_probe_turns_bad_files_into_error_rows(tmp_path, maker, message):
    (tmp_path / "videos").mkdir()
    maker(tmp_path / "videos/bad.mp4")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"videos": [{"video_id": "bad", "split": "train"}], "sentences": []}))
    run_ingest(_build(tmp_path, "msrvtt", ann))
    row = _tables(tmp_path)[0]["bad"]
    assert row["status"] == "error" and message in row["error_message"]
    assert pq.read_table(tmp_path / "out/d/videos.parquet").num_rows == 1  # readable by pyarrow alone


def test_probe_off_only_checks_existence(tmp_path):
    (tmp_path / "videos").mkdir()
    make_text_file(tmp_path / "videos/t.mp4")
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"videos": [{"video_id": "t", "split": "train"}], "sentences": []}))
    run_ingest(_build(tmp_path, "msrvtt", ann, probe=False))
    row = _tables(tmp_path)[0]["t"]
    size = (tmp_path / "videos/t.mp4").stat().st_size
    assert (row["status"], row["n_frames"], row["size_bytes"]) == ("ok", None, size)


def test_duplicate_and_colliding_keys(tmp_path):
    (tmp_path / "videos").mkdir()
    ann = tmp_path / "m.jsonl"
    rows = [{"path": "a/b.mp4", "captions": ["1"], "split": "train"},
            {"path": "a_b.mp4", "captions": ["2"], "split": "train"},
            {"path": "a/b.mp4", "captions": ["3"], "split": "train"}]
    ann.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_ingest(_build(tmp_path, "manifest", ann, probe=False))
    videos, captions = _tables(tmp_path)
    assert sorted(videos) == ["a/b", "a_b"]
    assert "collides" in videos["a_b"]["error_message"]
    assert any("duplicate key 'a/b'" in n for n in result.notes)
    assert [c["caption"] for c in captions if c["key"] == "a/b"] == ["1", "3"]


@pytest.mark.parametrize("raw, ok", [
    ("x.mp4", True), ("d/../x.mp4", True), ("../x.mp4", False), ("d/../../x.mp4", False), ("/etc/passwd", False),
    ("", False), (".", False),
])
def test_safe_relative_path(tmp_path, raw, ok):
    if ok:
        assert safe_relative_path(tmp_path, raw) == "x.mp4"
    else:
        with pytest.raises(ValueError):
            safe_relative_path(tmp_path, raw)


def test_malformed_annotation_is_a_clear_error(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"videos": [{"split": "train"}]}))
    with pytest.raises(ValueError, match="not a valid msrvtt annotation"):
        load_annotations(IngestConfig(dataset_root=str(tmp_path), annotation=str(ann)))


# ------------------------------------------------------------------ several files, split roles (issue 10 item 3)

def _vatex_file(path: Path, ids: list[str], captions: bool = True) -> Path:
    path.write_text(json.dumps([{"videoID": i, **({"enCap": [f"{i} caption {k}" for k in range(2)]} if captions else {})}
                                for i in ids]))
    return path


def _vatex(tmp_path: Path, n_train: int = 4, n_val: int = 10) -> tuple[Path, Path, list[str], list[str]]:
    videos = tmp_path / "videos"
    videos.mkdir()
    train = [f"tr{i:02d}_{i:06d}_{i + 10:06d}" for i in range(n_train)]
    val = [f"Va_-{i:02d}_{i:06d}_{i + 10:06d}" for i in range(n_val)]  # YouTube ids hold '_' and '-'
    for n, vid in enumerate(train + val):
        # half the files are named <videoID>.mp4, the other half <youtube_id>.mp4
        name = vid if n % 2 == 0 else vid.rsplit("_", 2)[0]
        make_text_file(videos / f"{name}.mp4")  # probe=False below: existence is what matters here
    return (_vatex_file(tmp_path / "vatex_training_v1.0.json", train),
            _vatex_file(tmp_path / "vatex_validation_v1.0.json", val), train, val)


def test_vatex_training_and_validation_files_make_train_val_test(tmp_path):
    tr, va, train, val = _vatex(tmp_path)
    cfg = _build(tmp_path, "vatex", tr, probe=False)
    cfg = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(
        update={"annotation": f"train={tr},val+test={va}"})})
    result = run_ingest(cfg)
    videos, captions = _tables(tmp_path)
    splits = {k: v["split"] for k, v in videos.items()}
    assert [k for k in train if splits[k] == "train"] == train
    assert sorted(splits[k] for k in val) == ["test"] * 5 + ["val"] * 5  # 1,500 / 1,500 scaled to 10
    assert all(v["status"] == "ok" for v in videos.values()), videos
    # both namings resolve: <videoID>.mp4 and <youtube_id>.mp4
    assert videos[train[0]]["path"] == f"{train[0]}.mp4" and videos[train[1]]["path"] == "tr01.mp4"
    assert videos[val[1]]["path"] == "Va_-01.mp4"
    # caption ids continue across files; every caption carries its video's split
    assert [c["caption_id"] for c in captions] == list(range(2 * (len(train) + len(val))))
    assert all(c["split"] == splits[c["key"]] for c in captions)
    assert result.counts["videos"] == len(train) + len(val)
    # the division is seeded and depends on the annotation alone
    again = load_annotations(cfg.ingest)[0]
    assert {v["key"]: v["split"] for v in again} == splits
    other = load_annotations(cfg.ingest.model_copy(update={"split_seed": 1}))[0]
    assert {v["key"]: v["split"] for v in other} != splits


def test_split_lists_override_the_annotation(tmp_path):
    import numpy as np

    tr, va, train, val = _vatex(tmp_path)
    np.save(tmp_path / "val_names.npy", np.array(val[:3], dtype=str))  # HGR public_split layout
    (tmp_path / "tst_names.txt").write_text("\n".join(val[3:]) + "\n")
    ingest = IngestConfig(format="vatex", dataset_root=str(tmp_path / "videos"),
                          annotation={"train": str(tr), "val+test": str(va)},
                          split_lists={"val": str(tmp_path / "val_names.npy"), "test": str(tmp_path / "tst_names.txt")})
    splits = {v["key"]: v["split"] for v in load_annotations(ingest)[0]}
    assert [splits[k] for k in val] == ["val"] * 3 + ["test"] * 7
    assert all(splits[k] == "train" for k in train)
    (tmp_path / "tst_names.txt").write_text("\n".join(val[3:] + ["gone_000000_000010"]) + "\n")
    cfg = BuildConfig(dataset="d", out_root=str(tmp_path / "out"), ingest=ingest.model_copy(update={"probe": False}))
    notes = run_ingest(cfg).notes
    assert any("1 ids of the split lists are not in the annotation" in n for n in notes), notes
    assert "splits: test 7, train 4, val 3" in notes


def test_missing_vatex_file_names_both_candidates(tmp_path):
    (tmp_path / "videos").mkdir()
    ann = _vatex_file(tmp_path / "v.json", ["abc_000001_000011"])
    run_ingest(_build(tmp_path, "vatex", ann, probe=False))
    msg = _tables(tmp_path)[0]["abc_000001_000011"]["error_message"]
    assert "abc_000001_000011.mp4" in msg and "abc.mp4" in msg


@pytest.mark.parametrize("annotation, message", [
    ("train=a.json,plain.json", "mixes"),
])
def test_bad_multi_file_annotation_is_a_clear_error(tmp_path, annotation, message):
    with pytest.raises(ValueError, match=message):
        load_annotations(IngestConfig(format="vatex", dataset_root=str(tmp_path), annotation=annotation))


def test_annotation_sources_parse():
    from pipeline.datasets.annotations import annotation_sources

    def srcs(a):
        return annotation_sources(IngestConfig(format="vatex", dataset_root=".", annotation=a))

    assert srcs("/data/x=1/ann.json") == [(None, "/data/x=1/ann.json")]
    assert srcs("train=/a/t.json, validation=/a/v.json") == [("train", "/a/t.json"), ("val", "/a/v.json")]
    assert srcs("train=/a/t.json,val+test=/a/v.json")[1] == ("val+test", "/a/v.json")


# ------------------------------------------------------------------ cache key, cheap reruns (issue 13)

def test_ingest_key_covers_every_video_file(tmp_path):
    import os

    from pipeline.datasets.ingest import ingest_inputs

    ann = _msrvtt(tmp_path)
    cfg = _build(tmp_path, "msrvtt", ann).ingest
    first = ingest_inputs(cfg)
    assert ingest_inputs(cfg) == first  # nothing changed: same key
    make_video(tmp_path / "videos/video2.mp4", 6)  # the missing video appears
    second = ingest_inputs(cfg)
    assert second != first
    os.utime(tmp_path / "videos/video0.mp4", ns=(1, 1))  # a file replaced in place (other mtime)
    assert ingest_inputs(cfg) != second


def test_rerun_probes_only_new_changed_and_failed_files(tmp_path, monkeypatch):
    import pipeline.datasets.ingest as ingest_mod

    ann = _msrvtt(tmp_path)
    cfg = _build(tmp_path, "msrvtt", ann)
    run_ingest(cfg)
    probed: list[str] = []
    real = ingest_mod.probe_video
    monkeypatch.setattr(ingest_mod, "probe_video", lambda p: probed.append(Path(p).name) or real(p))
    result = run_ingest(cfg)
    assert probed == [] and any("2 unchanged videos" in n for n in result.notes)
    make_video(tmp_path / "videos/video2.mp4", 6)
    make_video(tmp_path / "videos/video1.mp4", 7, size=(48, 32))  # re-downloaded: other content
    run_ingest(cfg)
    assert sorted(probed) == ["video1.mp4", "video2.mp4"]
    videos, _ = _tables(tmp_path)
    assert (videos["video1"]["n_frames"], videos["video2"]["status"]) == (7, "ok")


def test_read_errors_are_rows_that_the_next_build_retries(tmp_path, monkeypatch):
    import builtins

    import pipeline.datasets.ingest as ingest_mod
    from pipeline.datasets.ingest import READ_ERROR, ingest_inputs

    ann = _msrvtt(tmp_path)
    cfg = _build(tmp_path, "msrvtt", ann)
    real_open = builtins.open

    def flaky(file, *a, **kw):
        if str(file).endswith("video0.mp4"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **kw)

    monkeypatch.setattr(ingest_mod, "open", flaky, raising=False)
    run_ingest(cfg)
    row = _tables(tmp_path)[0]["video0"]
    assert row["status"] == "error" and row["error_message"].startswith(READ_ERROR)
    out = tmp_path / "out/d"
    assert ingest_inputs(cfg.ingest, out) != ingest_inputs(cfg.ingest, out)  # a new key each run: retried
    monkeypatch.undo()
    run_ingest(cfg)  # the transient error is gone
    assert _tables(tmp_path)[0]["video0"]["status"] == "ok"
    assert ingest_inputs(cfg.ingest, out) == ingest_inputs(cfg.ingest, out)  # stable again: cached


# ------------------------------------------------------------------ through the build flow (issue 13)

def test_symlinked_dataset_builds_and_a_fixed_video_reextracts_only_its_shard(prefect_server, tiny_sample,
                                                                              tmp_path):
    """Videos placed as links into another disk build (resolved paths recorded); replacing a broken
    target re-ingests and re-extracts exactly the shard holding it; nothing else reruns."""
    import shutil

    from tests._flowutil import build, executed

    sample_root, ann = tiny_sample
    disk, root = tmp_path / "other_disk", tmp_path / "dataset" / "videos"
    disk.mkdir()
    root.mkdir(parents=True)
    for src in sorted((Path(ann).parent / "videos").glob("*.mp4")):
        if src.stem == "video3":
            make_text_file(disk / src.name)  # a broken download
        else:
            shutil.copy(src, disk / src.name)
        (root / src.name).symlink_to(disk / src.name)
    (tmp_path / "dataset" / "annotation.json").write_text(Path(ann).read_text())
    sample = (tmp_path / "dataset", tmp_path / "dataset" / "annotation.json")
    out = tmp_path / "out"

    first = build(sample, out, extractors=["resnet152"])
    data = Path(first["root"])
    videos = {r["key"]: r for r in read_table(data / "videos.parquet", "videos").to_pylist()}
    assert len(videos) == 6 and videos["video3"]["status"] == "error"
    for key, row in videos.items():
        assert row["resolved_path"] == str((disk / f"{key}.mp4").resolve()), row
        assert (row["status"] == "ok") == (key != "video3"), row

    shutil.copy(Path(ann).parent / "videos" / "video3.mp4", disk / "video3.mp4")  # fixed at the target
    second = build(sample, out, extractors=["resnet152"])
    assert executed(second) == {("ingest", ""), ("resnet152", "shard-00001"), ("merge-resnet152", "")}, \
        second["stages"]
    status = {r["key"]: r for r in read_table(data / "features/resnet152/status.parquet",
                                                "feature_status").to_pylist()}
    assert all(r["status"] == "ok" for r in status.values()), status
    assert executed(build(sample, out, extractors=["resnet152"])) == set()  # and then all cached


def test_several_manifests_with_roles_and_a_val_test_division(tmp_path):
    """Multi-split ingest is format-generic: manifest rows without a split take their file's role,
    a row's own split wins, and 'val+test' rows are divided like VATEX's validation set."""
    (tmp_path / "videos").mkdir()
    for name in "abcdefgh":
        make_text_file(tmp_path / f"videos/{name}.mp4")
    first = tmp_path / "train.jsonl"
    first.write_text("".join(json.dumps({"path": f"{n}.mp4", "captions": [n]}) + "\n" for n in "abc")
                     + json.dumps({"path": "d.mp4", "captions": ["d"], "split": "test"}) + "\n")
    second = tmp_path / "held_out.csv"
    second.write_text("path,captions\n" + "".join(f'{n}.mp4,"[""{n}""]"\n' for n in "efgh"))
    cfg = IngestConfig(format="manifest", dataset_root=str(tmp_path / "videos"), probe=False,
                       annotation=f"train={first},val+test={second}")
    videos, captions = load_annotations(cfg)
    splits = {v["key"]: v["split"] for v in videos}
    assert [splits[k] for k in "abcd"] == ["train", "train", "train", "test"]
    assert sorted(splits[k] for k in "efgh") == ["test", "test", "val", "val"]
    assert [c["caption_id"] for c in captions] == list(range(8))


def test_a_youtube_id_file_shared_by_two_video_ids_is_refused(tmp_path):
    """Two VATEX clips of one YouTube video cannot both be <youtube_id>.mp4: error rows, not wrong features."""
    (tmp_path / "videos").mkdir()
    make_text_file(tmp_path / "videos/yt1.mp4")
    make_text_file(tmp_path / "videos/yt2_000005_000015.mp4")
    make_text_file(tmp_path / "videos/yt2.mp4")
    ann = _vatex_file(tmp_path / "v.json", ["yt1_000000_000010", "yt1_000020_000030", "yt2_000005_000015"])
    run_ingest(_build(tmp_path, "vatex", ann, probe=False))
    videos, _ = _tables(tmp_path)
    for key in ("yt1_000000_000010", "yt1_000020_000030"):
        assert videos[key]["status"] == "error" and "several videos" in videos[key]["error_message"]
    assert (videos["yt2_000005_000015"]["status"], videos["yt2_000005_000015"]["path"]) == \
        ("ok", "yt2_000005_000015.mp4")
