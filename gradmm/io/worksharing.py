"""Several processes share one resumable run by starting the same command: each unit of work (a generation
batch, a fine-tuning run) is done under an exclusive lock on its own lock file, so that on one GPU (or a
shared local disk) N copies of `gradmm generate` / `gradmm study` split the work instead of repeating it.

A run directory is claimed before any work (`claimed_run_dir`): processes started with the same params share
it, a process with other params is refused (or, asked to, archives the directory when nobody is writing into
it), and every unit re-checks the claim before it starts.

Locks are `fcntl.flock` locks: the kernel drops them when a process dies, so a unit left by a killed worker
is taken over (and resumed from its checkpoint) by the next process that reaches it. flock is not reliable
on network file systems: there, give each machine its own run directory (one `dvc exp` per worker).
"""

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from gradmm.config import field_defaults
from gradmm.io.records import write_text

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True, shared: bool = False):
    """Yield True while holding an exclusive (or `shared`) lock on `path` (created if missing); False if
    `blocking` is off and another process holds a conflicting one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def params_blob(params: dict) -> str:
    return json.dumps(params, indent=2, sort_keys=True) + "\n"


def _with_added_defaults(old, new, defaults: dict[str, list]):
    """`old` (a recorded run's params) with the keys that only `new` has added where `new` holds one of that
    config field's `defaults` (config.field_defaults): what the code did before the field existed. Other
    differences are kept."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = {k: _with_added_defaults(v, new.get(k), defaults) for k, v in old.items()}
        out.update({k: v for k, v in new.items() if k not in old and v in defaults.get(k, [])})
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [_with_added_defaults(a, b, defaults) for a, b in zip(old, new)]
    return old


def same_run(recorded: str, params: dict) -> bool:
    """Does a run_config.json's text hold a run with `params`? The same text, or a run recorded before some
    config fields existed, with `params` holding those fields' defaults (so a code update that adds a field
    does not make finished runs look stale)."""
    blob = params_blob(params)
    if recorded == blob:
        return True
    try:
        old = json.loads(recorded)
    except ValueError:
        return False
    return params_blob(_with_added_defaults(old, json.loads(blob), field_defaults())) == blob


def check_claim(out: Path, params: dict) -> None:
    """Refuse to go on if `out` no longer holds a run with `params` (checked before each unit of work)."""
    path = Path(out) / "run_config.json"
    if not path.is_file() or not same_run(path.read_text(), params):
        raise ValueError(f"{path} changed under this run (another process with other params?): stopping "
                         "before the next unit of work; finished units are kept")


@contextlib.contextmanager
def _claim_lock(out: Path):
    """An exclusive lock on out/.claim.lock, retried if an archive moved the directory while we waited (the
    lock we got is then on a file that is no longer the directory's own)."""
    path = out / ".claim.lock"
    while True:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                yield
                return
        finally:
            os.close(fd)  # closing drops the lock


@contextlib.contextmanager
def claimed_run_dir(out: Path, params: dict, archive_stale: bool = False):
    """Hold `out` for a run with `params` while the block runs. The check and the writing of run_config.json
    are one step under a lock, so two runs can't both claim an empty directory; a run with the same params
    shares the directory (worksharing), one with other params is refused or, with `archive_stale`, moves the
    directory whole to an .archive/ folder beside it, but only when no process is working in it (each
    holder keeps a shared lock on out/.active.lock), so nothing finished is deleted or pulled away."""
    out, blob = Path(out), params_blob(params)
    with contextlib.ExitStack() as held:
        with _claim_lock(out):
            config = out / "run_config.json"
            if config.exists() and not same_run(config.read_text(), params):
                if not archive_stale:
                    raise ValueError(f"{out} holds a run with different params ({config}); use another output "
                                     "directory, or delete that one yourself if its work is no longer wanted")
                with file_lock(out / ".active.lock", blocking=False) as idle:
                    if not idle:
                        raise ValueError(f"{out} holds a run with different params that another process is "
                                         "working on: not archived; wait for it or use another output directory")
                    archive = out.parent / ".archive" / f"{out.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
                    archive.parent.mkdir(parents=True, exist_ok=True)
                    out.rename(archive)
                log.info("moved the run with other params to %s", archive)
                held.enter_context(claimed_run_dir(out, params))  # the fresh directory, claimed anew
            else:
                if not config.exists() or config.read_text() == blob:
                    write_text(config, blob)
                else:  # recorded before some fields existed, at their defaults: the record stays as it ran
                    log.info("%s was recorded before some config fields existed; it ran as their defaults", config)
                held.enter_context(file_lock(out / ".active.lock", shared=True))
        yield out


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
