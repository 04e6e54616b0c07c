"""storage/: atomic writes, schema-checked tables, manifests, the output-root lock; pipeline.stage."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.fingerprint import stage_key
from pipeline.stage import StageResult, run_stage
from storage import atomic_path
from storage.atomic import TMP_MARK, clean_stale_tmp
from storage.lock import OutputRootBusyError, exclusive_lock
from storage.manifest import is_committed, read_manifest
from storage.tables import SchemaError, read_table, write_table

CAPTION = {"caption_id": 0, "key": "v1", "sen_id": 0, "split": "train", "caption": "a <b>cat</b>\x07 runs"}


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_old_version_whole(tmp_path):
    final = tmp_path / "x.txt"
    final.write_text("old")
    with atomic_path(final) as tmp:
        tmp.write_text("new")
        assert final.read_text() == "old"  # invisible until renamed
    assert final.read_text() == "new"


def test_clean_stale_tmp_removes_only_temporaries(tmp_path):
    (tmp_path / "keep.parquet").write_text("x")
    (tmp_path / f"{TMP_MARK}abc-keep.parquet").write_text("partial")
    assert clean_stale_tmp(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["keep.parquet"]


def test_table_roundtrip_keeps_raw_text(tmp_path):
    path = write_table(tmp_path / "captions.parquet", "captions", [CAPTION])
    assert read_table(path, "captions").to_pylist() == [CAPTION]
    assert pq.read_table(path).column("caption")[0].as_py() == CAPTION["caption"]  # pyarrow alone


def test_read_table_refuses_other_schema(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"caption_id": [1]}), path)
    with pytest.raises(SchemaError, match="rebuild"):
        read_table(path, "captions")
    write_table(tmp_path / "c.parquet", "captions", [CAPTION])
    with pytest.raises(SchemaError):
        read_table(tmp_path / "c.parquet", "videos")


def _stage(root, calls, key="k1", force=False):
    def fn():
        calls.append(1)
        (root / "out.txt").write_text("data")
        return StageResult(outputs=["out.txt"], counts={"n": 1})
    return run_stage(root, "demo", key, fn, config={"a": 1}, force=force)


def test_run_stage_commits_then_skips(tmp_path):
    calls = []
    _, executed = _stage(tmp_path, calls)
    assert executed and is_committed(tmp_path, "demo", "k1")
    m, executed = _stage(tmp_path, calls)
    assert not executed and m.counts == {"n": 1} and len(calls) == 1


@pytest.mark.parametrize("change", ["key", "force", "lost_output"])
def test_run_stage_reruns_when_needed(tmp_path, change):
    calls = []
    _stage(tmp_path, calls)
    if change == "lost_output":
        (tmp_path / "out.txt").unlink()
    _, executed = _stage(tmp_path, calls, key="k2" if change == "key" else "k1", force=change == "force")
    assert executed and len(calls) == 2
    assert read_manifest(tmp_path, "demo").key == ("k2" if change == "key" else "k1")


def test_failed_stage_is_not_committed(tmp_path):
    def boom():
        raise OSError("disk full")
    with pytest.raises(OSError):
        run_stage(tmp_path, "demo", "k", boom)
    assert read_manifest(tmp_path, "demo") is None


def test_stage_key_depends_on_every_part():
    base = stage_key("s", {"a": 1}, "code1", {"f": "x"})
    assert base == stage_key("s", {"a": 1}, "code1", {"f": "x"})
    others = [stage_key("t", {"a": 1}, "code1", {"f": "x"}), stage_key("s", {"a": 2}, "code1", {"f": "x"}),
              stage_key("s", {"a": 1}, "code2", {"f": "x"}), stage_key("s", {"a": 1}, "code1", {"f": "y"})]
    assert base not in others and len(set(others)) == 4


def test_lock_refuses_second_writer(tmp_path):
    with exclusive_lock(tmp_path / ".build.lock"):
        with pytest.raises(OutputRootBusyError, match="another build"):
            with exclusive_lock(tmp_path / ".build.lock"):
                pass
    with exclusive_lock(tmp_path / ".build.lock"):  # released on exit
        pass



_FULL_DISK_WRITER = """
import resource, signal, sys
import numpy as np
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # write() then fails with EFBIG, like a full disk
lim = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (lim, lim))
rng = np.random.default_rng(0)
arrays = {f"v{i}": rng.random((4, 2048)).astype(np.float32) for i in range(int(sys.argv[3]))}
if sys.argv[4] == "write_features":                     # the production writer: refused up front
    from storage.features import write_features
    write_features(sys.argv[1], arrays, {"a": 1})
else:                                                   # no size given: HDF5 really hits the limit
    from storage._h5 import atomic_h5
    with atomic_h5(sys.argv[1]) as f:
        for k, a in arrays.items():
            f.create_dataset(k, data=a)
"""


def _write_under_file_limit(path, limit: int, n_videos: int, how: str):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", _FULL_DISK_WRITER, str(path), str(limit), str(n_videos), how],
                          cwd=root, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("n_videos", [1, 6])
def test_hdf5_write_that_cannot_fit_is_refused_up_front(tmp_path, n_videos):
    final = tmp_path / "part.h5"
    proc = _write_under_file_limit(final, 48_000, n_videos, "write_features")
    assert proc.returncode == 1, proc.stderr[-2000:]   # a Python exception, not a crash inside HDF5
    assert "OSError: [Errno 27] File too large: part.h5 needs" in proc.stderr, proc.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("n_videos", [1, 3, 6])
@pytest.mark.parametrize("limit", [20_000, 48_000, 70_000, 120_000])
def test_hdf5_write_failing_inside_hdf5_never_leaves_a_broken_final_file(tmp_path, limit, n_videos):
    """HDF5 can swallow a failed write in close(); atomic_h5 reopens the file before the rename."""
    import h5py
    import numpy as np

    final = tmp_path / "part.h5"
    proc = _write_under_file_limit(final, limit, n_videos, "atomic_h5")
    if proc.returncode != 0:
        assert "File too large" in proc.stderr, proc.stderr[-2000:]
        assert not final.exists()
    else:
        rng = np.random.default_rng(0)
        want = {f"v{i}": rng.random((4, 2048)).astype(np.float32) for i in range(n_videos)}
        with h5py.File(final, "r") as f:
            assert {k: f[k][()].tolist() for k in f} == {k: v.tolist() for k, v in want.items()}
    if proc.returncode >= 0:  # a Python-level failure cleans up after itself
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_MARK)]
    else:  # HDF5 crashed the process (it can, after a failed write): the rerun's sweep removes the rest
        clean_stale_tmp(tmp_path)
        assert list(tmp_path.iterdir()) == []


def _pretend_free_space(monkeypatch, folder, nbytes: int) -> None:
    """Make storage.atomic see only ``nbytes`` free on ``folder``'s file system."""
    import os

    real, blocks = os.statvfs(folder), nbytes // 4096
    fake = os.statvfs_result((real.f_bsize, 4096, real.f_blocks, blocks, blocks, real.f_files, real.f_ffree,
                              real.f_favail, real.f_flag, real.f_namemax))
    monkeypatch.setattr("storage.atomic.os.statvfs", lambda _: fake)


def test_full_disk_is_refused_before_writing(tmp_path, monkeypatch):
    import errno

    import numpy as np

    from storage.features import write_features

    _pretend_free_space(monkeypatch, tmp_path, 40 * 1024)
    with pytest.raises(OSError) as err:
        write_features(tmp_path / "x.h5", {"v": np.zeros((20, 2048))}, {})
    assert err.value.errno == errno.ENOSPC and "No space left on device: x.h5 needs" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_merge_checks_room_for_the_wanted_videos_only(tmp_path, monkeypatch):
    import errno

    import numpy as np

    from storage.features import merge_features, write_features

    part = write_features(tmp_path / "part.h5", {f"v{i}": np.ones((50, 2048)) for i in range(8)}, {})  # ~3.3 MB
    _pretend_free_space(monkeypatch, tmp_path, 1 << 20)   # 1 MiB: room for 2 of 8 videos
    merge_features(tmp_path / "test.h5", [part], {"v0", "v1"}, {})
    with pytest.raises(OSError) as err:
        merge_features(tmp_path / "train.h5", [part], None, {})
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.h5", "test.h5"]


def test_read_functions_callers_use_instead_of_opening_files(tmp_path):
    """The named reads outside callers use (issue 14): frame counts, all features, a scan of an
    untrusted file (schema problem as a message, not an exception), table stats/schema name,
    manifests, foreign torch files."""
    import h5py
    import numpy as np
    import torch

    from storage.checkpoints import load_torch_file
    from storage.features import FeatureFileScan, read_all_features, read_frame_counts, write_features
    from storage.manifest import (ManifestVersionError, StageManifest, load_manifest_file, manifest_files,
                                  write_manifest)
    from storage.tables import table_schema_name, table_stats

    feats = {"a/1": np.ones((3, 4), np.float32), "b": np.zeros((5, 4), np.float32)}
    path = write_features(tmp_path / "f.h5", feats, {"extractor": "x"})
    assert read_frame_counts(path) == {"a_1": 3, "b": 5}
    got = read_all_features(path)
    assert set(got) == {"a_1", "b"} and np.array_equal(got["a_1"], feats["a/1"])
    with FeatureFileScan(path) as scan:
        assert scan.schema_problem is None
        assert [(e.name, e.shape, e.finite) for e in scan.entries(read_values=True)] == [
            ("a_1", (3, 4), True), ("b", (5, 4), True)]
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.attrs["schema_version"] = 7
        f.create_dataset("v", data=np.array([np.nan], np.float32).reshape(1, 1))
    with FeatureFileScan(tmp_path / "bad.h5") as scan:
        assert "schema_version 7 != 1" in scan.schema_problem
        assert [e.finite for e in scan.entries(read_values=True)] == [False]
        assert [e.finite for e in scan.entries()] == [None]
    with pytest.raises(ValueError, match="schema_version 7 != 1"):
        read_frame_counts(tmp_path / "bad.h5")

    table = write_table(tmp_path / "c.parquet", "captions", [CAPTION], extra_metadata={"origin": "test"})
    rows, meta = table_stats(table)
    assert rows == 1 and meta["origin"] == "test" and meta["schema_name"] == "captions"
    assert not any(k.startswith("ARROW") for k in meta)
    assert table_schema_name(table) == "captions"

    write_manifest(tmp_path, StageManifest(stage="s", key="k"))
    write_manifest(tmp_path, StageManifest(stage="e", shard="0", key="k"))
    (tmp_path / "_stages" / f"{TMP_MARK}x-s.json").write_text("{}")
    assert [p.relative_to(tmp_path).as_posix() for p in manifest_files(tmp_path)] == [
        "_stages/e/0.json", "_stages/s.json"]
    assert load_manifest_file(tmp_path / "_stages/s.json").key == "k"
    (tmp_path / "_stages/old.json").write_text('{"schema_version": 0, "stage": "old", "key": "k"}')
    with pytest.raises(ManifestVersionError):
        load_manifest_file(tmp_path / "_stages/old.json")

    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    assert torch.equal(load_torch_file(tmp_path / "w.pt")["w"], torch.ones(2))
