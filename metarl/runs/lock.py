"""One writer per run folder: an OS advisory lock (``fcntl.flock``) on ``RUN/.lock``.

The lock belongs to the open file: the kernel releases it when the process ends, however it
ends (``kill -9`` included), so a stale lock file never blocks a resume. The holder writes its
PID into the file, so that a second writer's error names it. Where ``fcntl`` does not exist
(Windows) there is no lock.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import ModelFileError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunFolderBusy(ModelFileError):
    """Another live process writes this run folder."""


class RunLock:
    """The lock of ``run_dir`` (which must exist); `acquire` raises `RunFolderBusy` if another process holds it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if self._fd is not None or fcntl is None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise ModelFileError(f"{self.run_dir}: cannot create the lock file {LOCK_FILE} "
                                 f"({e.strerror or e.__class__.__name__})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"process {holder}" if holder else "another process"
                raise RunFolderBusy(f"{self.run_dir}: in use by {who}, which is writing this run folder; wait for "
                                    f"it to end (or stop it) and try again, or use another --out") from None
            raise ModelFileError(f"{self.run_dir}: cannot lock the run folder ({e.strerror})") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the PID; a second writer's message then says "another process"
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None
