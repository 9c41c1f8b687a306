"""Several processes share one resumable run by starting the same command: each unit of work (a generation
batch, a fine-tuning run) is done under an exclusive lock on its own lock file, so that on one GPU (or a
shared local disk) N copies of `gradmm generate` / `gradmm study` split the work instead of repeating it.

Locks are `fcntl.flock` locks: the kernel drops them when a process dies, so a unit left by a killed worker
is taken over (and resumed from its checkpoint) by the next process that reaches it. flock is not reliable
on network file systems: there, give each machine its own run directory (one `dvc exp` per worker).
"""

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterable
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True):
    """Yield True while holding an exclusive lock on `path` (created if missing); False if `blocking` is off
    and another process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def shared_loop(items: Iterable, lock_path: Callable[[object], Path], is_done: Callable[[object], bool],
                work: Callable[[object], None]) -> None:
    """Run `work(item)` for each item not yet done, sharing the items with any process running the same loop.

    First pass: take every free item. Second pass: wait for the items other processes hold; each is done
    when its lock is released, or was left by a process that died, and is then done here.
    """
    waiting = []
    for item in items:
        if is_done(item):
            continue
        with file_lock(lock_path(item), blocking=False) as mine:
            if not mine:
                waiting.append(item)
            elif not is_done(item):
                work(item)
    for item in waiting:
        with file_lock(lock_path(item)):
            if not is_done(item):
                work(item)
