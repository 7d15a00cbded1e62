"""The SQLite state file on its volume: what SQLite itself does not say.

A file deleted (or replaced) while the daemon runs keeps answering through the descriptor SQLite
holds, so every save would vanish with the process; a full volume or the process's file-size
limit fails saves only once the file must grow; a state directory the daemon cannot write and a
corrupt file both fail the open, but need opposite advice; and nothing in SQLite stops a second
daemon from sending every alert of the same file again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from monitor.errors import StateStoreError

# Readiness wants this much room for the state files to grow: a full re-read of a check's history
# is saved in one transaction, and the write-ahead log grows by it.
HEADROOM_BYTES = 1 << 20

_CORRUPT = {sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT}


def companions(path: Path) -> list[Path]:
    """The database and the files SQLite keeps next to it in WAL mode."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino


def open_failure(path: Path, exc: Exception) -> str:
    """Why the state file cannot be opened, with the advice that fits the cause."""
    problem = f"cannot open the state store {path}: {exc}"
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _CORRUPT:
        return (
            f"{problem}. The file is not a SQLite database or is corrupt: move it aside (the "
            "monitor rebuilds baselines from the warehouse, but forgets open alerts and unsent "
            "notifications)"
        )
    unwritable = [p for p in [path.parent, *companions(path)] if not _writable(p)]
    if unwritable:
        return (
            f"{problem}. {unwritable[0]} is not writable by this process (uid {os.geteuid()}): "
            f"the state store writes {path.name} and creates its -wal and -shm files next to "
            "it. Make the directory and its files writable (on Kubernetes: a volume mounted "
            "read-write, and fsGroup or ownership matching the pod's user); keep the file, it "
            "holds the open alerts and unsent notifications"
        )
    return problem


def _writable(path: Path) -> bool:
    """Could this process write the file, or create it in the nearest existing directory?"""
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return os.access(path, os.W_OK, effective_ids=True)


def moved(path: Path, opened: tuple[int, int]) -> str | None:
    """Why saves to the file opened as ``path`` would be lost: it was deleted or replaced."""
    try:
        if identity(path) == opened:
            return None
    except FileNotFoundError:
        return (
            f"state store {path} was deleted while the daemon ran: saves would go to a file "
            "that no longer exists and are refused. Restore it from a backup and restart, or "
            "restart to begin an empty store (open alerts and unsent notifications are lost)"
        )
    except OSError as exc:
        return f"state store {path}: cannot check the file: {exc.strerror}"
    return (
        f"state store {path} was replaced by another file while the daemon ran: saves would go "
        "to the file it opened, which no longer has that name; restart the daemon to use the "
        "new file"
    )


def room(path: Path) -> list[str]:
    """What keeps the state files from growing by a save: a full volume, a file-size limit."""
    found = []
    volume = os.statvfs(path.parent)
    free = volume.f_bavail * volume.f_frsize
    if free < HEADROOM_BYTES:
        found.append(
            f"state store {path}: {free // 1024} KiB free on its volume, under the "
            f"{HEADROOM_BYTES // 1024} KiB a save may need; free space or grow the volume"
        )
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        largest = max((p.stat().st_size for p in companions(path) if p.exists()), default=0)
        if limit - largest < HEADROOM_BYTES:
            found.append(
                f"state store {path}: the process's file-size limit (ulimit -f, {limit // 1024} "
                f"KiB) leaves {max(limit - largest, 0) // 1024} KiB for its files to grow, "
                f"under the {HEADROOM_BYTES // 1024} KiB a save may need; raise the limit"
            )
    return found


class FileLock:
    """One daemon per state file: an exclusive ``flock`` on ``<state file>.lock``, held while
    the store is open and released by the kernel if the process dies. The lock file names its
    holder for the refusal message."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StateStoreError(open_failure(path, exc)) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(self._fd, 200, 0).decode(errors="replace").strip()
            os.close(self._fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateStoreError(f"cannot lock the state store {path}: {exc}") from None
            raise StateStoreError(
                f"state store {path} is in use by another kpi-monitor ({holder or 'unknown'}): "
                "two daemons on one state file would each send every alert. Stop the other one, "
                "or give this one its own state.path"
            ) from None
        started = datetime.now(UTC).isoformat(timespec="seconds")
        holder = f"pid {os.getpid()} on {os.uname().nodename}, since {started}"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, holder.encode(), 0)

    def release(self) -> None:
        """Drop the lock (closing the descriptor does); a second call does nothing, as closing
        a descriptor twice could close another file that has reused its number."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
