"""A run's lock, so that one process in the world trains a run: `flock` (the default) or an
owner file, for filesystems where flock does not reach across machines.

`flock` (filelock's FileLock on Unix: flock(2) on RUN/.lock). The kernel drops it when its holder
dies, however it dies (SIGKILL, the OOM killer, a node that reboots and so drops its locks), so
there is nothing stale to clean up. It excludes processes of other machines where the filesystem
makes flock cluster-wide: local disks; NFSv4, and NFSv3 with lockd / NLM (Linux clients turn
flock into byte-range locks the server keeps, since kernel 2.6.12); Lustre mounted with `-o flock`
(not `localflock`, which locks on one node only, nor `noflock`, where it fails); IBM Storage Scale
(GPFS); BeeGFS with tuneUseGlobalFileLocks. It does NOT exclude across machines on NFS mounted
with `nolock` or `local_lock=flock|all`, Lustre with `localflock`, or other filesystems that keep
locks per client: there, two machines could train the same run into the same folder.

`owner-file` (FACTRECALL_LOCK=owner-file, or `run --lock-method owner-file`): the lock is the file
RUN/.lock.owner, made by link(2) from a unique file (what open(2)'s manual advises on NFS, where
link is atomic), holding the holder's host, pid and a token. The holder refreshes its mtime every
`HEARTBEAT_S`. A lock is stale, and taken over, when its holder is a dead process of this host,
or when its mtime is older than `STALE_AFTER_S` (a holder on another host that died, or lost its
node): clocks of the nodes and the file server must agree to within minutes (NTP does). A holder
that is alive but frozen for longer than STALE_AFTER_S (a suspended job) loses its lock. The holder
also takes flock on RUN/.lock where it can, so that the TUI (which probes that) sees the run live;
where flock is node-local, a TUI on another node shows a live run as interrupted.

Every process working on a runs folder must use the same method: the two do not see each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from factrecall_bench.errors import UserError

LOCK_METHODS = ("flock", "owner-file")
LOCK_ENV = "FACTRECALL_LOCK"
"""The environment variable that chooses the method (inherited by workers and cluster jobs)."""
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0


class RunLock(Protocol):
    def acquire(self) -> bool:
        """Take the lock without waiting; whether it was taken."""

    def release(self) -> None: ...


def lock_method() -> str:
    """The method FACTRECALL_LOCK names (flock when unset); another value is a UserError."""
    method = os.environ.get(LOCK_ENV, "") or "flock"
    if method not in LOCK_METHODS:
        raise UserError(f"{LOCK_ENV}={method!r}: expected one of {', '.join(LOCK_METHODS)}")
    return method


def use_lock_method(method: str) -> None:
    """Choose the method for this process and those it starts (workers, cluster jobs)."""
    if method not in LOCK_METHODS:
        raise UserError(f"--lock-method {method!r}: expected one of {', '.join(LOCK_METHODS)}")
    os.environ[LOCK_ENV] = method


def run_lock(path: Path, method: str | None = None) -> RunLock:
    """The lock of a run whose flock file is `path` (RUN/.lock), by `method` (default: the
    environment's)."""
    method = method or lock_method()
    if method == "flock":
        return FlockLock(path)
    return OwnerFileLock(path.with_name(path.name + ".owner"), flock_path=path)


@dataclass
class FlockLock:
    path: Path

    def __post_init__(self) -> None:
        from filelock import FileLock

        self._lock = FileLock(str(self.path), timeout=0)

    def acquire(self) -> bool:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            return False
        return True

    def release(self) -> None:
        self._lock.release()


@dataclass
class OwnerFileLock:
    """An owner file made atomically by link(2), refreshed by a heartbeat thread."""

    path: Path
    heartbeat_s: float = HEARTBEAT_S
    stale_after_s: float = STALE_AFTER_S
    flock_path: Path | None = None
    """Also held, as far as the filesystem allows, once the owner file is ours: RUN/.lock, which
    the TUI probes to tell a live run from an interrupted one (where flock is node-local, only a
    TUI on the holder's node sees it held)."""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _stop: threading.Event = field(default_factory=threading.Event)
    _flock: Any = None

    def acquire(self) -> bool:
        for _ in range(3):  # a stale lock taken over, then our own try; a lost race gives up
            if self._create():
                self._start_heartbeat()
                self._flock = _flock_if_possible(self.flock_path)
                return True
            owner = read_owner(self.path)
            if owner is None and not self.path.exists():
                continue  # released meanwhile: try again
            owner = owner or {}  # unreadable: judged by its age alone
            if not self.is_stale(owner) or not self._take_over(owner):
                return False
        return False

    def release(self) -> None:
        self._stop.set()
        if self._flock is not None:
            self._flock.release()
            self._flock = None
        owner = read_owner(self.path)
        if owner is not None and owner.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def is_stale(self, owner: dict[str, Any]) -> bool:
        """Whether the lock's holder is gone: a dead process of this host, or (on another host)
        silent for longer than `stale_after_s`."""
        if owner.get("host") == socket.gethostname():
            return not _process_alive(owner.get("pid"))
        try:
            silent_s = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return silent_s > self.stale_after_s

    def _create(self) -> bool:
        """Make the lock file, whole, or find it there: link(2) of a unique file is atomic, also
        on NFS (where a retried link whose reply was lost shows as a link count of 2)."""
        unique = self.path.with_name(f"{self.path.name}.{self.token}")
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                 "since": time.time()}
        unique.write_text(json.dumps(owner), "utf-8")
        try:
            os.link(unique, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:
            return unique.stat().st_nlink == 2
        finally:
            unique.unlink(missing_ok=True)

    def _take_over(self, stale: dict[str, Any]) -> bool:
        """Move the stale lock away (rename is atomic: one taker wins); if what moved is not the
        stale lock (another taker's fresh one), put it back and give up."""
        moved_to = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.rename(self.path, moved_to)
        except FileNotFoundError:
            return True  # gone already: try to create it
        moved = read_owner(moved_to)
        if moved is not None and moved.get("token") != stale.get("token"):
            with contextlib.suppress(FileExistsError):
                os.link(moved_to, self.path)
            moved_to.unlink(missing_ok=True)
            return False
        moved_to.unlink(missing_ok=True)
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True).start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return


def _flock_if_possible(path: Path | None) -> Any:
    """flock on `path` for the TUI's sake, waiting a moment (a TUI probe holds it for an
    instant); None where it cannot be had (no flock on this filesystem, or held elsewhere)."""
    if path is None:
        return None
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), timeout=1.0)
    try:
        lock.acquire()
    except (Timeout, OSError):
        return None
    return lock


def read_owner(path: Path) -> dict[str, Any] | None:
    """The owner file's content; None if there is none (or it cannot be read as one)."""
    try:
        owner = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
