"""Processes started with the same command share its work (gradmm.io.worksharing): nothing done twice, the same
files as one process, and a unit left by a dead process is taken over."""

import json
import multiprocessing as mp
import time
from pathlib import Path

from gradmm.io.worksharing import file_lock, shared_loop


def _hold(lock: str, done: str | None, seconds: float, ready) -> None:
    with file_lock(Path(lock)):
        ready.set()
        time.sleep(seconds)
        if done:
            Path(done).write_text("by the other process")


def test_a_held_item_is_waited_for_and_a_dead_holders_item_is_redone(tmp_path):
    ctx = mp.get_context("spawn")
    done = {i: tmp_path / f"{i}.done" for i in range(4)}
    lock = {i: tmp_path / ".locks" / f"{i}" for i in range(4)}
    ready1, ready3 = ctx.Event(), ctx.Event()
    finishes = ctx.Process(target=_hold, args=(str(lock[1]), str(done[1]), 1.0, ready1))  # finishes item 1
    dies = ctx.Process(target=_hold, args=(str(lock[3]), None, 1.0, ready3))  # exits without finishing item 3
    finishes.start(), dies.start()
    assert ready1.wait(60) and ready3.wait(60)
    worked = []

    def work(i):
        worked.append(i)
        done[i].write_text("here")

    shared_loop(range(4), lock.get, lambda i: done[i].exists(), work)
    finishes.join(), dies.join()
    assert worked == [0, 2, 3]  # 1 was finished by its holder; 3 was left unfinished, so it is done here
    assert done[1].read_text() == "by the other process"
    assert all(p.exists() for p in done.values())


def test_file_lock_is_exclusive_and_not_blocking_on_request(tmp_path):
    with file_lock(tmp_path / "l") as first:
        assert first
        with file_lock(tmp_path / "l", blocking=False) as second:  # flock: a second open file is refused too
            assert second is False
    with file_lock(tmp_path / "l", blocking=False) as again:
        assert again


def _count_batches(calls: str) -> None:
    """Make this process append "<pid> <seed>" to `calls` for each generation batch it runs."""
    import os

    import gradmm.methods.generate as generate_module

    real = generate_module.run_batches

    def counted(problem, batch_size, seeds, ckpts, progress):
        with open(calls, "a") as f:
            f.writelines(f"{os.getpid()} {seed}\n" for seed in seeds)
        return real(problem, batch_size, seeds, ckpts, progress)

    generate_module.run_batches = counted


def _generate_counting(data_path: str, out: str, calls: str) -> None:
    from gradmm.config import DataConfig, DPConfig, GenerateConfig, ModelConfig
    from gradmm.methods.generate import generate

    _count_batches(calls)
    data = DataConfig(dataset="local", source=data_path, label_names=["negative", "positive"], pool_per_class=10,
                      dev_per_class=5, test_per_class=5)
    gen = GenerateConfig(n_per_class=6, batch_size=2, outer_steps=3, inner_steps=3, topk=20, init_candidates=2,
                         max_seq_len=10)
    generate(data, ModelConfig(name="tiny-random", device="cpu"), gen, DPConfig(), Path(out), progress=False)


def test_two_processes_split_a_generation_and_write_what_one_process_writes(tmp_path):
    from tests.conftest import toy_examples

    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in toy_examples(30)))
    ctx = mp.get_context("spawn")
    # One process alone, started as the workers are (the test process's thread settings can differ after other
    # tests, and a float reduction over other threads can change the last digit).
    alone = ctx.Process(target=_generate_counting, args=(str(data), str(tmp_path / "alone"), str(tmp_path / "alone.calls")))
    alone.start()
    alone.join(300)
    assert alone.exitcode == 0
    workers = [ctx.Process(target=_generate_counting, args=(str(data), str(tmp_path / "shared"), str(tmp_path / "shared.calls")))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    assert [w.exitcode for w in workers] == [0, 0]
    alone = [line.split()[1] for line in (tmp_path / "alone.calls").read_text().splitlines()]
    shared = [line.split()[1] for line in (tmp_path / "shared.calls").read_text().splitlines()]
    assert len(alone) == 6 and sorted(shared) == sorted(alone)  # 2 classes × 3 batches, none done twice
    for name in ("raw.jsonl", "history.jsonl"):
        assert (tmp_path / "shared" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes()


def _study_counting(project: str, calls: str) -> None:
    import os

    from gradmm.cli import main

    _count_batches(calls)
    # Both processes start the cell together: one that finished importing first could otherwise take every
    # tiny batch before the other arrives, which says nothing about sharing.
    ready = Path(project) / f"ready-{os.getpid()}"
    ready.touch()
    deadline = time.monotonic() + 120
    while len(list(Path(project).glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.chdir(project)
    main(["study", "--params", "params.yaml", "--task", "task", "--method", "gradmm", "--out", "cell",
          "--set", "model.name=tiny-random", "--set", "model.device=cpu", "--set", "study.methods=[\"gradmm\"]",
          "--set", "study.n_per_class=[2]", "--set", "study.raw_per_class=4", "--set", "study.seeds=[0, 1]",
          "--set", 'study.generate={"batch_size": 1, "outer_steps": 2, "inner_steps": 2, "topk": 20, '
                   '"init_candidates": 2, "max_seq_len": 10}',
          "--set", "finetune.steps=1", "--set", "finetune.batch_size=2"])


def test_two_processes_of_one_study_cell_share_its_generation(tmp_path):
    """The batches of a cell's generation are split between the processes, not made by the first alone
    (a set lock held during the whole generation once serialised them)."""
    import shutil

    from gradmm.core.data import TEMPLATES, Task, write_task
    from gradmm.io.paths import PROJECT_ROOT
    from tests.conftest import toy_examples

    rows = toy_examples(30)
    write_task(Task("toy", ["negative", "positive"], TEMPLATES["paper"], rows[:20], rows[20:40], rows[40:60]),
              tmp_path / "task")
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_study_counting, args=(str(tmp_path), str(tmp_path / "calls"))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(600)
    assert [w.exitcode for w in workers] == [0, 0]
    calls = [line.split() for line in (tmp_path / "calls").read_text().splitlines()]
    seeds = [seed for _, seed in calls]
    assert len(seeds) == 8 and len(set(seeds)) == 8  # 2 classes × 4 batches of 1, none made twice
    assert len({pid for pid, _ in calls}) == 2  # both processes generated
    assert sorted(p.name for p in (tmp_path / "cell").glob("result-*.json")) == ["result-n2-g0-s0.json",
                                                                                "result-n2-g0-s1.json"]


def test_a_cells_runs_start_with_each_sets_first_run():
    from gradmm.experiments.variants import run_order

    runs = run_order([20], [0, 1, 2], [0, 1])
    assert runs[:3] == [(20, 0, 0), (20, 1, 0), (20, 2, 0)]  # two workers start on two different sets
    assert sorted(runs) == [(20, g, s) for g in range(3) for s in range(2)]
