"""Locks between kernels (processes) on one machine: a folder one kernel works in, a small file several rewrite.

    lock = FolderLock("runs/demo", "the run in runs/demo")   # FolderInUseError if another process holds it
    lock.release()                                            # (or when `lock` is garbage collected)
    with folder_locked("runs/feedback.db-drafts"):            # a read-modify-write, one process at a time
        ...

Advisory locks (`fcntl.flock`) on the folder itself, so no lock file is ever left behind: the system drops a lock
when its process ends, however it ends (a killed kernel never leaves a stale lock). A process may take the same
folder's lock again (a cell run twice in one kernel); only other processes are refused. Where locks are not
available (Windows, a file system without them) nothing is locked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rlhf_lab.core.errors import SetupError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

__all__ = ["FolderInUseError", "FolderLock", "folder_locked", "hold_while_writing", "being_written"]

_HELD: dict[str, list] = {}  # resolved folder -> [fd, holders] of the locks this process holds


class FolderInUseError(SetupError):
    """Another kernel or process holds the lock of a folder this one wants to work in."""


def _open_folder(folder: Path) -> int | None:
    try:
        return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None


def _locked(folder: Path) -> int | None:
    """A descriptor of `folder` that holds its exclusive lock, or None where there is none to take (no flock, a
    folder that cannot be opened, a file system without locks); BlockingIOError when another process holds it."""
    fd = _open_folder(folder) if fcntl is not None else None
    if fd is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:  # BlockingIOError: held elsewhere (raised); anything else: no locks here
        os.close(fd)
        if isinstance(err, BlockingIOError):
            raise
        return None
    return fd


class FolderLock:
    """An exclusive lock on `folder` (which must exist) for this process, until `release()`; `what` names the folder
    in the refusal ("the run in runs/demo"). See the module docstring."""

    def __init__(self, folder: str | Path, what: str):
        self.key, self.held = str(Path(folder).resolve()), False
        entry = _HELD.get(self.key)
        if entry is None:
            try:
                fd = _locked(Path(self.key))
            except BlockingIOError:
                raise FolderInUseError(
                    f"{what} is in use by another kernel or process: only one may work in it at a time, as two would "
                    "undo each other's work. Close it there (run.close()) or restart that kernel, then try again."
                ) from None
            if fd is None:  # no locks here: go on unlocked
                return
            entry = _HELD[self.key] = [fd, 0]
        entry[1] += 1
        self.held = True

    def release(self) -> None:
        """Give the lock back (once; the folder is unlocked when no object of this process holds it)."""
        if not self.held:
            return
        self.held = False
        entry = _HELD.get(self.key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del _HELD[self.key]
                with contextlib.suppress(OSError):
                    os.close(entry[0])

    def __del__(self):
        with contextlib.suppress(Exception):
            self.release()


@contextlib.contextmanager
def folder_locked(folder: str | Path):
    """Hold an exclusive lock on `folder` (made if missing; waiting for the lock) for the block: for a
    read-modify-write of a small file in it that other processes rewrite too. A folder removed and made again while
    waiting is locked anew. Where the folder cannot be made, opened or locked, the block runs unlocked."""
    folder, fd = Path(folder), None
    for _ in range(10 if fcntl is not None else 0):
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
        fd = _open_folder(folder)
        if fd is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks
            os.close(fd)
            fd = None
            break
        with contextlib.suppress(OSError):
            if os.stat(folder).st_ino == os.fstat(fd).st_ino:
                break  # the folder at that path is the one locked
        os.close(fd)
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def hold_while_writing(folder: str | Path) -> int | None:
    """Lock `folder` (a temporary folder this process fills) so that `being_written` says so to other processes;
    returns the descriptor to `os.close` when done (None where locks are not available)."""
    try:
        return _locked(Path(folder))
    except BlockingIOError:
        return None


def being_written(folder: str | Path) -> bool:
    """Whether a live process holds `folder` with `hold_while_writing` (a killed one holds nothing)."""
    try:
        fd = _locked(Path(folder))
    except BlockingIOError:
        return True
    if fd is not None:
        os.close(fd)
    return False
