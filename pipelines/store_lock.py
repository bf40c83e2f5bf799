"""One writer per store: an advisory `flock` on `<store>/.vicl.lock`.

Two `vicl` runs writing one store delete each other's temporary files (each run clears the
leftovers of a killed run) and race on the same parts, so every command that writes the store or
`paths.out` takes this lock first and a second writer stops at once, naming the holder.

The kernel drops a `flock` when its holder dies (killed, crashed, machine rebooted), so a stale
lock needs no cleanup: the next run simply gets it. The file's JSON (pid, host, command, since)
is only read to say who holds it. The descriptor is opened close-on-exec (Python's default), so
the Ray processes a run starts never inherit the lock and it ends with the run's own process.
On NFS, Linux implements `flock` with NFS byte-range locks, so it holds across machines too.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager, suppress
from pathlib import Path

LOCK_NAME = ".vicl.lock"  # at the store root, outside every dvc output (images/, nodes/, ...)


class StoreLocked(RuntimeError):
    """Another live process holds the store's lock."""


def _holder_line(path: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder.get("pid"):  # the holder has the lock but has not written its record yet
        return "another vicl process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder['pid']} on {holder.get('host', '?')} (`{holder.get('command', '?')}`, since {since})"


def _record(command: str) -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                       "since": time.time()}) + "\n"


def _open(path: Path, required: bool) -> int | None:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno == errno.EROFS and not required:
            return None  # a read-only store cannot be written by anyone on this mount: nothing to guard
        raise


@contextmanager
def store_lock(store: str | Path, command: str, required: bool = True):
    """Hold the store's writer lock for the block; raise StoreLocked at once if another process has it.

    `required=False` (commands that only read the store, such as preview and report) goes on
    without a lock when there is no store yet or it is on a read-only file system; for a writer
    that is the OSError(EROFS) it is."""
    store = Path(store)
    if required:
        store.mkdir(parents=True, exist_ok=True)
    path = store / LOCK_NAME
    fd = _open(path, required) if store.is_dir() else None
    if fd is None:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreLocked(f"the store {store.absolute()} is in use by {_holder_line(path)}: "
                              f"wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _record(command).encode(), 0)
        try:
            yield path
        finally:
            with suppress(OSError):
                os.ftruncate(fd, 0)  # released: nobody is named as holder any more
    finally:
        os.close(fd)  # closing drops the flock
