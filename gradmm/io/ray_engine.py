"""Scale-out on Ray: independent units of work (ADMM batches) on a pool of actors, each holding the model once.

On one machine, N processes running the same command already share a run through file locks
(`gradmm.io.worksharing`). Across machines, or over several GPUs of one machine, Ray schedules the units:
`gradmm generate --ray-workers N` starts a local Ray cluster, or joins a running one (`--ray-address auto`, or
Ray's own RAY_ADDRESS), and runs the units on N actors with a GPU each where the model runs on a GPU. The
driver writes every result into the run directory as it arrives, so an interrupted run resumes from what it
holds; checkpoints of unfinished batches resume only where the workers share the driver's disk.
"""

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engine:
    """Where units of work run: workers 0 = in this process (shared with other processes by file locks);
    n > 0 = on n Ray actors, in a running Ray cluster at `address` (or RAY_ADDRESS) or a local one started here."""

    workers: int = 0
    address: str | None = None


LOCAL = Engine()


def check_engine(engine: Engine) -> None:
    if engine.workers < 0:
        raise ValueError(f"--ray-workers must be ≥ 0 (0 = no Ray), got {engine.workers}")
    if engine.address and not engine.workers:
        raise ValueError(f"--ray-address {engine.address!r} needs --ray-workers ≥ 1")
    if engine.workers:
        try:
            import ray  # noqa: F401
        except ImportError as e:
            raise ValueError("--ray-workers needs Ray: pip install ray==2.58.0 (requirements.txt pins it)") from e


def _indexed(worker_cls: type) -> type:
    class Indexed(worker_cls):
        def run_indexed(self, i, call):
            return i, self.run(*call)

    Indexed.__name__ = worker_cls.__name__  # what Ray's logs and dashboard call the actors
    return Indexed


def run_on_ray(worker_cls: type, init_args: tuple, calls: Sequence[tuple], engine: Engine,
               on_result: Callable[[tuple, object], None], gpus: float = 0) -> None:
    """Run worker.run(*call) for every call on `engine.workers` actors worker_cls(*init_args) (Ray's
    ActorPool), calling on_result(call, result) here as each finishes, in the order they finish."""
    import ray
    from ray.util import ActorPool

    if not calls:
        return
    started = not ray.is_initialized()
    if started:
        address = engine.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, include_dashboard=False)
        else:  # a local cluster: one CPU per worker (each worker's torch then runs on one thread)
            ray.init(num_cpus=engine.workers, include_dashboard=False)
    try:
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(_indexed(worker_cls))
        n = min(engine.workers, len(calls))
        pool = ActorPool([actor.remote(*init_args) for _ in range(n)])
        log.info("Ray: %d units of work on %d actors", len(calls), n)
        for i, result in pool.map_unordered(lambda a, ic: a.run_indexed.remote(*ic), list(enumerate(calls))):
            on_result(calls[i], result)
    finally:
        if started:
            ray.shutdown()
