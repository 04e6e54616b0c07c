"""One writer per output root: an advisory lock that dies with its process."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator


class OutputRootBusyError(RuntimeError):
    """Another live process is building into the same output root."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive, non-blocking flock on ``path``; refuse clearly if it is taken.

    The kernel releases the lock when the holder dies (even on SIGKILL), so a
    killed build never leaves a stale lock behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise OutputRootBusyError(
                f"{path.parent} is being written by another build (pid {holder}); "
                "wait for it to finish or use another out_root") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)
