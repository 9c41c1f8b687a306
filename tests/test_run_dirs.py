"""Run directories are data that travel: loading them runs no code, two runs with other params never mix in
one, and a DP run's noise is private (drawn from OS entropy, never written) while the run still resumes."""

import json
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

import gradmm.methods.generate as generate_module
from gradmm.config import DPConfig, GenerateConfig, ModelConfig
from gradmm.core.dp import clip_target, noisy_target
from gradmm.core.matching import class_targets
from gradmm.io.tensorfiles import load_tensors
from gradmm.io.worksharing import claimed_run_dir
from gradmm.methods.generate import build_targets, generate

TINY = ModelConfig(name="tiny-random", device="cpu")
FAST = dict(n_per_class=4, batch_size=2, outer_steps=2, inner_steps=2, topk=20, init_candidates=2, max_seq_len=10)


class Exploit:  # unpickling this runs a shell command
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (__import__("os").system, (f"touch {self.marker}",))


def plant_pickle(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump({"X": Exploit(marker)}, f)
    torch.save({"payload": Exploit(marker)}, path.with_suffix(".pt"))  # the old format's name, too


@pytest.mark.parametrize("planted", ["batches/class0-batch0.safetensors", "batches/class0-batch0.ckpt"])
def test_a_crafted_file_in_a_run_directory_runs_no_code(toy_data, tmp_path, planted):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    generate(toy_data, TINY, GenerateConfig(**FAST), DPConfig(), out, progress=False)  # a real run to tamper with
    (out / "raw.jsonl").unlink()
    for f in (out / "batches").glob("*.safetensors"):
        f.unlink()
    plant_pickle(out / planted, marker)
    with pytest.raises(ValueError, match=r"class0-batch0\.(safetensors|ckpt) is not a readable gradmm tensor file"):
        generate(toy_data, TINY, GenerateConfig(**FAST), DPConfig(), out, progress=False)
    assert not marker.exists()


def test_a_truncated_checkpoint_names_its_file(toy_data, tmp_path):
    out = tmp_path / "run"
    generate(toy_data, TINY, GenerateConfig(**FAST), DPConfig(), out, progress=False)
    good = out / "batches" / "class1-batch1.safetensors"
    good.write_bytes(good.read_bytes()[:50])
    (out / "raw.jsonl").unlink()
    with pytest.raises(ValueError, match="class1-batch1.safetensors is not a readable gradmm tensor file"):
        generate(toy_data, TINY, GenerateConfig(**FAST), DPConfig(), out, progress=False)


HOLD_CLAIM = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gradmm.io.worksharing import claimed_run_dir
    with claimed_run_dir(Path(sys.argv[1]), {"rho": 0.1}):
        print("claimed", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def other_process_holds(tmp_path):
    """A second process that has claimed tmp_path/run with other params and is working in it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "claimed"
    yield tmp_path / "run"
    proc.kill()
    proc.wait()


def test_a_second_run_with_other_params_refuses_while_the_first_works(toy_data, other_process_holds):
    out = other_process_holds
    with pytest.raises(ValueError, match="different params"):
        generate(toy_data, TINY, GenerateConfig(**{**FAST, "rho": 0.5}), DPConfig(), out, progress=False)
    with pytest.raises(ValueError, match="another process is working on"):  # and is not archived under it
        generate(toy_data, TINY, GenerateConfig(**{**FAST, "rho": 0.5}), DPConfig(), out, progress=False,
                 archive_stale=True)
    assert json.loads((out / "run_config.json").read_text()) == {"rho": 0.1}
    assert not (out.parent / ".archive").exists()


def test_same_params_share_and_an_idle_stale_directory_is_archived(tmp_path):
    out = tmp_path / "run"
    with claimed_run_dir(out, {"rho": 0.1}):
        with claimed_run_dir(out, {"rho": 0.1}):  # a second worker of the same run shares it
            pass
    (out / "finished.json").write_text("{}")
    with claimed_run_dir(out, {"rho": 0.5}, archive_stale=True):  # nobody works in it: archived whole
        assert json.loads((out / "run_config.json").read_text()) == {"rho": 0.5}
    archived = list((tmp_path / ".archive").iterdir())
    assert len(archived) == 1 and (archived[0] / "finished.json").exists()


def test_a_run_recorded_before_a_field_existed_is_the_same_run_at_its_default(toy_data, tmp_path):
    """A code update that adds a config field (at its default) keeps a finished run: no archive, no redo, and the
    record is left as it was written; the field at another value is another run."""
    out = tmp_path / "gen"
    cfg = GenerateConfig(n_per_class=2, batch_size=2, outer_steps=1, inner_steps=1, topk=20, init_candidates=1,
                         max_seq_len=10)
    generate(toy_data, ModelConfig(name="tiny-random", device="cpu"), cfg, DPConfig(), out, progress=False)
    config = out / "run_config.json"
    recorded = json.loads(config.read_text())
    del recorded["generate"]["match_softmax"], recorded["generate"]["parallel_batches"]  # as older code wrote it
    older = json.dumps(recorded, indent=2, sort_keys=True) + "\n"
    config.write_text(older)
    raw, batches = (out / "raw.jsonl").read_text(), sorted((out / "batches").glob("*.safetensors"))
    stamps = [b.stat().st_mtime_ns for b in batches]
    generate(toy_data, ModelConfig(name="tiny-random", device="cpu"), cfg, DPConfig(), out, progress=False,
             archive_stale=True)
    assert not (tmp_path / ".archive").exists() and (out / "raw.jsonl").read_text() == raw
    assert batches and [b.stat().st_mtime_ns for b in batches] == stamps  # no batch redone
    assert config.read_text() == older
    other = GenerateConfig(**{**cfg.__dict__, "match_softmax": "label_words"})
    generate(toy_data, ModelConfig(name="tiny-random", device="cpu"), other, DPConfig(), out, progress=False,
             archive_stale=True)
    assert len(list((tmp_path / ".archive").iterdir())) == 1
    assert json.loads(config.read_text())["generate"]["match_softmax"] == "label_words"


def test_each_batch_rechecks_the_claim(toy_data, tmp_path, monkeypatch):
    out, real = tmp_path / "run", generate_module.run_batches

    def then_overwritten(*args, **kwargs):  # as if another run had rewritten the directory's config
        result = real(*args, **kwargs)
        (out / "run_config.json").write_text("{}\n")
        return result

    monkeypatch.setattr(generate_module, "run_batches", then_overwritten)
    with pytest.raises(ValueError, match="changed under this run"):
        generate(toy_data, TINY, GenerateConfig(**FAST), DPConfig(), out, progress=False)
    assert len(list((out / "batches").glob("*.safetensors"))) == 1  # the finished batch is kept


def test_dp_noise_is_fresh_per_draw_and_per_class(tiny, toy_data):
    from gradmm.core.data import load_task
    model, tok = tiny
    task = load_task(toy_data)
    clean = class_targets(model, tok, task.pool, task.template)
    a, _ = noisy_target(clean[0], 1.0, 1e-4)
    b, _ = noisy_target(clean[0], 1.0, 1e-4)
    assert not torch.equal(a.noise_W, b.noise_W)  # OS entropy: a config cannot regenerate the noise
    (c0, c1), _ = build_targets(model, tok, task, GenerateConfig(), DPConfig(enabled=True, noise_seed_not_private=3))
    assert not torch.equal(c0.noise_W, c1.noise_W)  # even from one seed, classes get independent draws
    (e10, _), _ = build_targets(model, tok, task, GenerateConfig(), DPConfig(enabled=True, epsilon=10.0))
    (e1, _), _ = build_targets(model, tok, task, GenerateConfig(), DPConfig(enabled=True, epsilon=1.0))
    assert not torch.allclose(e10.noise_W / e10.sigma, e1.noise_W / e1.sigma)  # no ε reuses another's N(0, 1) draw


def test_a_dp_run_writes_only_the_release_and_resumes_byte_identical(tiny, toy_data, tmp_path, monkeypatch):
    from gradmm.core.data import load_task
    model, tok = tiny
    task = load_task(toy_data)
    dp = DPConfig(enabled=True, epsilon=1.0)
    out = tmp_path / "dp"
    real, calls = generate_module.run_batches, {"n": 0}

    def dies_in_the_third_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_module, "run_batches", dies_in_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        generate(toy_data, TINY, GenerateConfig(**FAST), dp, out, progress=False)
    release = (out / "dp_targets.safetensors").read_bytes()
    monkeypatch.setattr(generate_module, "run_batches", real)
    generate(toy_data, TINY, GenerateConfig(**FAST), dp, out, progress=False)
    assert (out / "dp_targets.safetensors").read_bytes() == release  # resumed on the same draw

    tensors, meta = load_tensors(out / "dp_targets.safetensors")
    assert set(tensors) == {"G_W.0", "G_W.1", "G_b.0", "G_b.1"} and meta["private"]
    clean = [clip_target(t, dp.clip_norm).dense()[0].float() for t in class_targets(model, tok, task.pool, task.template)]
    for g, G in enumerate(clean):  # what is kept is the clipped target plus N(0, σ²): the release, not the clean one
        residual = (tensors[f"G_W.{g}"] - G).flatten()
        assert residual.std().item() == pytest.approx(meta["targets"][g]["sigma"], rel=0.05)
        assert abs(residual.mean().item()) < 0.05 * meta["targets"][g]["sigma"]
    names = {p.name for p in out.rglob("*") if p.is_file()}
    assert not {n for n in names if "noise" in n or "clean" in n}

    # The same kill and resume from a fixed (non-private) seed ends byte-identical to an uninterrupted run.
    fixed = DPConfig(enabled=True, epsilon=1.0, noise_seed_not_private=7)
    generate(toy_data, TINY, GenerateConfig(**FAST), fixed, tmp_path / "ref", progress=False)
    calls["n"] = 0
    monkeypatch.setattr(generate_module, "run_batches", dies_in_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        generate(toy_data, TINY, GenerateConfig(**FAST), fixed, tmp_path / "cut", progress=False)
    monkeypatch.setattr(generate_module, "run_batches", real)
    generate(toy_data, TINY, GenerateConfig(**FAST), fixed, tmp_path / "cut", progress=False)
    assert (tmp_path / "cut" / "raw.jsonl").read_bytes() == (tmp_path / "ref" / "raw.jsonl").read_bytes()
