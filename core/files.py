"""Opening inputs: only regular files are ever opened. A FIFO named *.jpg would block `open()`
until a writer comes, and a device may have side effects; each is a `not_a_regular_file` rejection
(a failure row), never a hang."""

from __future__ import annotations

import os
import stat

from core.images import ImageRejected

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a symbolic link"}


def not_regular(st: os.stat_result) -> str | None:
    """What a non-regular file is (for its `not_a_regular_file` row), or None for a regular file."""
    return None if stat.S_ISREG(st.st_mode) else _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")


def read_regular_file(path: str, follow_links: bool = True) -> bytes | Exception:
    """A regular file's bytes, or why not: a FIFO, socket or device is `not_a_regular_file` and is
    never opened (a FIFO blocks `open()` until a writer comes; a device may have side effects)."""
    try:
        st = os.stat(path, follow_symlinks=follow_links)
        if stat.S_ISLNK(st.st_mode):
            return ImageRejected("link", "symbolic link not followed (ingest source follow_links: true takes it)")
        kind = not_regular(st)
        if kind is None:
            # O_NONBLOCK: a file swapped for a FIFO since the stat still cannot block; fstat sees it
            flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(os.open(path, flags), "rb") as f:
                kind = not_regular(os.fstat(f.fileno()))
                if kind is None:
                    return f.read()
    except OSError as e:
        return OSError(e.strerror or type(e).__name__)
    return ImageRejected("not_a_regular_file", kind)
