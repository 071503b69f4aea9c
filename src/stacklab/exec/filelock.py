"""The one host-side file lock: an exclusive flock on a lock file, held for a `with` block.

Used where two stacklab processes (two labs, or a lab and a test) may build the same shared thing at once: an
image in the shared cache, a base disk, the private libvirtd's record. flock, not a pid file: the lock goes away
with its process, even after SIGKILL.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created, with its parent directories) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
