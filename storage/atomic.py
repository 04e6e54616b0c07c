"""Write-to-temp, fsync, rename: the one way this project creates files."""
from __future__ import annotations

import contextlib
import errno
import os
import resource
import uuid
from pathlib import Path
from typing import Iterator

TMP_MARK = ".tmp-"


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (so a rename survives a crash), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_room(folder: str | os.PathLike, nbytes: int, what: str) -> None:
    """Refuse up front (OSError ENOSPC / EFBIG) a write of ~``nbytes`` that cannot fit.

    Checks the free space of ``folder``'s file system and the process's file-size limit
    (RLIMIT_FSIZE). Libraries such as HDF5 handle a write that fails half-way badly (the
    error can be swallowed, or the process crashes later), so a write that is bound to fail
    should never start. Concurrent writers can still fill the disk in between; the writers
    here stay safe in that case too (temporary names, verified before the rename).
    """
    mib = 2 ** 20
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    if nbytes > free:
        raise OSError(errno.ENOSPC, f"No space left on device: {what} needs ~{nbytes / mib:.1f} MiB, "
                      f"{free / mib:.1f} MiB free under {folder}; free some space and rerun")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and nbytes > limit:
        raise OSError(errno.EFBIG, f"File too large: {what} needs ~{nbytes / mib:.2f} MiB, over this process's "
                      f"file-size limit (RLIMIT_FSIZE, ulimit -f) of {limit / mib:.2f} MiB")


def tmp_name(final: Path) -> Path:
    """A unique temporary sibling of ``final`` (same folder, so rename is atomic)."""
    return final.with_name(f"{TMP_MARK}{uuid.uuid4().hex[:12]}-{final.name}")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, expected_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path; on success fsync it and rename it to ``final``.

    On any exception the temporary file is removed and ``final`` is untouched.
    ``expected_bytes`` (an upper estimate of the file's size): refuse up front, with a
    clear OSError, a file that cannot fit (:func:`ensure_room`).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if expected_bytes is not None:
        ensure_room(final.parent, expected_bytes, final.name)
    tmp = tmp_name(final)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(final: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_text(final: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(final, text.encode("utf-8"))


def clean_stale_tmp(folder: str | os.PathLike) -> int:
    """Remove temporaries left by a killed writer; returns how many were removed."""
    folder = Path(folder)
    if not folder.exists():
        return 0
    stale = [p for p in folder.rglob(f"{TMP_MARK}*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)
