"""Atomic file writes: a file (or a directory: `atomic_directory`) that exists under its final
name is complete.

Every write of something a run depends on (checkpoints, their markers, token shards, the
embedded-corpus cache, downloads, preparation progress) goes through `atomic_write`:
a temporary file in the same directory, fsync, rename over the target, fsync of the
directory. A failure, a kill or a full disk leaves the old file (or none), never half a file.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMPORARY_MARK = ".tmp"


def temporary_path(path: Path) -> Path:
    """Hidden, unique per process and call (processes on several nodes may share a directory)."""
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def free_bytes(where: Path) -> int | None:
    """Free bytes on the disk holding `where` (or its nearest existing parent)."""
    for p in [Path(where), *Path(where).parents]:
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def disk_full(error: BaseException, where: Path, needed: int = 0) -> bool:
    """Whether a failed write failed for want of space: the OS says so, or the disk holding `where`
    has less free than the write needed (numpy and torch report a short write without an errno)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    free = free_bytes(where)
    return free is not None and free < max(needed, 1 << 20)


def write_failure(error: BaseException, where: Path, needed: int = 0) -> str:
    """Why a write under `where` failed, in words: a full disk with the space it has (and needs), or
    the OS's reason; never a library's internals."""
    if disk_full(error, where, needed):
        free = free_bytes(where) or 0
        return (f"the disk holding {where} is full ({free / 2**20:,.0f} MiB free"
                + (f", about {needed / 2**20:,.0f} MiB needed" if needed else "") + ")")
    return getattr(error, "strerror", None) or f"the write failed ({type(error).__name__})"


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(f) on a temporary file, then make it `path` in one rename."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(directory: Path) -> None:
    """Make a rename in directory durable (POSIX; other systems have no directory fsync)."""
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_temporaries(directory: Path, name_pattern: str) -> None:
    """Delete what writes that were killed midway left of files matching name_pattern."""
    for tmp in Path(directory).glob(f".{name_pattern}{TEMPORARY_MARK}*"):
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """A directory written whole or not at all: yields a new private temporary directory beside
    `path` to fill; when the block ends normally it becomes `path` in one rename (path must be
    absent or an empty directory), and on an exception it is removed. Temporaries that killed
    processes left beside `path` are removed first; the files keep the permissions the umask
    gives, whatever the writer chose."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}{TEMPORARY_MARK}"
    for stale in path.parent.glob(f"{prefix}*"):
        pid = stale.name[len(prefix):].split("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:  # a link is removed, never followed
            stale.unlink()
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=path.parent))  # unpredictable, ours alone
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)
        for f in tmp.rglob("*"):
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~mask)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class DirectoryLock:
    """An exclusive lock on a directory for as long as this process holds it: an OS file lock
    on `<directory>/.lock`, which the kernel releases when the process ends however it ends,
    so a killed holder never leaves it stuck. `acquire` returns False while another holds it;
    `release` removes the file again."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / ".lock"
        self._file = None

    def acquire(self) -> bool:
        while True:
            f = open(self.path, "a+")
            try:
                _lock(f)
            except OSError:
                f.close()
                return False
            try:  # the holder before us may have removed the file between our open and our lock
                if os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            f.close()
        try:  # the holder's pid, for messages; the lock itself is the OS's, so a full disk does not stop it
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
        except OSError:
            pass
        self._file = f
        return True

    def holder(self) -> str:
        """The pid the lock file names (the holder's, while it is held)."""
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def held(self) -> bool:
        """Whether a process holds the lock now (this one included)."""
        try:
            with open(self.path) as f:
                _lock(f)  # released again when f closes
        except FileNotFoundError:
            return False
        except OSError:
            return True
        return False

    def release(self) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)  # while still locked, so no one holds a removed file
            try:
                self._file.close()  # closing the file releases the lock
            except OSError:  # its pid could not be written (a full disk): the lock goes all the same
                pass
            self._file = None


def _lock(f) -> None:
    if os.name == "nt":
        import msvcrt
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
