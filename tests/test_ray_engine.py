"""Scale-out on Ray: a local cluster of 2 workers runs a generation's units and writes what one process writes."""

import os
import time
from pathlib import Path

import pytest

from gradmm.config import DPConfig, GenerateConfig, ModelConfig
from gradmm.io.ray_engine import Engine, check_engine, run_on_ray
from gradmm.methods.generate import generate

ray = pytest.importorskip("ray")

TINY = ModelConfig(name="tiny-random", device="cpu")
FAST = dict(n_per_class=6, batch_size=2, outer_steps=2, inner_steps=2, topk=20, init_candidates=2, max_seq_len=10)


class SlowEcho:
    """A worker whose units take long enough that one actor cannot take them all."""

    def __init__(self, tag: str):
        self.tag = tag

    def run(self, x: int) -> tuple:
        time.sleep(1.0)
        return self.tag, x * x, os.getpid()


def test_a_local_cluster_of_two_workers_runs_every_unit_once_on_both():
    # this module's worker class must be importable in the actors: a cluster started here with tests/ on their path
    tests = Path(__file__).parent
    ray.init(num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}})
    try:
        got = {}
        run_on_ray(SlowEcho, ("t",), [(x,) for x in range(6)], Engine(workers=2), lambda call, r: got.update({call: r}))
        assert ray.is_initialized()  # a cluster it did not start is left running
    finally:
        ray.shutdown()
    assert {call[0]: r[1] for call, r in got.items()} == {x: x * x for x in range(6)}
    assert len({r[2] for r in got.values()} - {os.getpid()}) == 2  # two actor processes, neither of them this one


def test_generation_on_two_ray_workers_writes_what_one_process_writes(toy_data, tmp_path):
    gen = GenerateConfig(**FAST)
    generate(toy_data, TINY, gen, DPConfig(), tmp_path / "here", progress=False)
    generate(toy_data, TINY, gen, DPConfig(), tmp_path / "ray", progress=False, engine=Engine(workers=2))
    assert (tmp_path / "ray" / "raw.jsonl").read_bytes() == (tmp_path / "here" / "raw.jsonl").read_bytes()
    assert not list((tmp_path / "ray" / "batches").glob("*.ckpt"))  # every unit finished and was saved
    assert not ray.is_initialized()  # the local cluster it started is shut down
    # a finished run is not sent to Ray again: resuming it starts no cluster
    generate(toy_data, TINY, gen, DPConfig(), tmp_path / "ray", progress=False, engine=Engine(workers=2))
    assert not ray.is_initialized()


def test_bad_engine_settings_are_refused():
    with pytest.raises(ValueError, match="--ray-workers must be"):
        check_engine(Engine(workers=-1))
    with pytest.raises(ValueError, match="needs --ray-workers"):
        check_engine(Engine(workers=0, address="auto"))
