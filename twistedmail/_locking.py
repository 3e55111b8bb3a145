"""
One process at a time: an exclusive ``flock`` taken without waiting.

The outbound queue's runner and the Maildir store's delivery journal each
belong to one daemon; a second process (the admin command, a second store
on the same data) must learn at once that another holds it, not wait.
"""

from __future__ import annotations

import errno
import fcntl
import os


def try_lock(path: str) -> int | None:
    """
    Take the lock on ``path`` (made if missing): its open descriptor, to
    keep open for as long as the lock should hold, or None if another
    open file already holds it (in this process or another).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd
