"""Label-row SNR and the X-step cosine under DP noise (gradmm.experiments.dp_fidelity), on the tiny random models."""

import csv
import importlib.util
from pathlib import Path

import pytest
import torch
import yaml
from conftest import toy_examples

from gradmm.config import DPConfig, GenerateConfig
from gradmm.core.admm import Layout, Problem
from gradmm.core.data import TEMPLATES
from gradmm.core.dp import clip_target, noisy_target
from gradmm.core.matching import class_targets
from gradmm.core.projection import allowed_token_mask
from gradmm.core.scoring import prompt_ids
from gradmm.experiments.dp_fidelity import XStepGradient, fidelity, label_row_snr, measure

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = TEMPLATES["paper"]


@pytest.fixture(scope="module", params=["tied", "untied"])
def setting(request, tiny, tiny_untied):
    model, tok = tiny if request.param == "tied" else tiny_untied
    return model, tok, class_targets(model, tok, toy_examples(10), TEMPLATE)[1]


def batches(model, n=2, B=4, L=8):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, L, model.config.hidden_size, generator=g) for _ in range(n)]


def test_label_row_snr_is_the_ratio_of_the_dense_label_rows(setting):
    _, _, target = setting
    noisy, _ = noisy_target(target, 1.0, 1e-4, clip_norm=0.5)
    G_W, G_b = clip_target(target, 0.5).dense()
    y = target.label_id
    signal = torch.cat([G_W[y], G_b[y:y + 1]]) if target.has_bias else G_W[y]
    noise = torch.cat([noisy.noise_W[y], noisy.noise_b[y:y + 1]]) if target.has_bias else noisy.noise_W[y]
    assert label_row_snr(noisy) == pytest.approx((signal.norm() / noise.double().norm()).item(), rel=1e-6)
    with pytest.raises(ValueError, match="no noise"):
        label_row_snr(target)


def test_the_x_step_gradient_is_the_gradient_of_problem_f_on_the_free_positions(setting):
    model, tok, target = setting
    layout = Layout(prompt_ids(tok, TEMPLATE.prefix), tok(TEMPLATE.suffix, add_special_tokens=False).input_ids, 8)
    problem = Problem(model, target, layout, [], allowed_token_mask(tok, model.get_input_embeddings().weight.shape[0]),
                      GenerateConfig())
    X = problem.freeze(batches(model, 1)[0]).requires_grad_(True)
    free = 1 - problem.fixed_mask
    expected = torch.autograd.grad(problem.f(X), X)[0] * free
    grad = XStepGradient(model, X, target.label_id, free)
    got = grad(target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(grad(target), got)  # the kept forward serves a second target
    assert got[:, layout.free].abs().sum() > 0 and got[:, layout.free.stop:].abs().sum() == 0  # template frozen


def test_the_x_step_follows_the_target_at_huge_epsilon_and_not_at_tiny(setting):
    model, _, target = setting
    huge, tiny_eps = fidelity(model, batches(model), target, [1e6, 1e-4], delta=1e-4, clip_norm=1.0, draws=8)
    assert huge["cos_min"] > 0.999 and huge["label_row_snr"] > 100
    assert abs(tiny_eps["cos_mean"]) < 0.25 and tiny_eps["label_row_snr"] < 0.01
    for row in (huge, tiny_eps):  # the label row carries the signal: its SNR dwarfs the whole matrix's
        assert row["label_row_snr"] > 50 * row["whole_snr"]
        assert row["draws"] == 8 and row["batches"] == 2


@pytest.mark.parametrize("kw, message", [({"epsilons": [0.0]}, "epsilon"), ({"epsilons": []}, "epsilons"),
                                         ({"draws": 0}, "draws"), ({"mechanism": "laplace"}, "mechanism 'laplace'"),
                                         ({"relation": "add"}, "relation 'add'"), ({"delta": 1.0}, "delta"),
                                         ({"clip_norm": -1.0}, "clip norm")])
def test_bad_settings_are_named_before_any_model_work(kw, message):
    args = dict(model=None, batches=[], target=None, epsilons=[1.0], delta=1e-4, clip_norm=1.0) | kw
    with pytest.raises(ValueError, match=message):
        fidelity(**args)


def test_measure_covers_every_class_kind_and_epsilon(tiny, toy_task):
    model, tok = tiny
    gen = GenerateConfig(batch_size=2, max_seq_len=10, init_candidates=2)
    rows = measure(model, tok, toy_task, gen, DPConfig(), [10.0, 0.05], draws=2, batches_per_kind=1)
    assert [(r["class"], r["x"], r["epsilon"]) for r in rows] == [
        (c, x, e) for c in toy_task.class_names for x in ("random", "lm") for e in (10.0, 0.05)]
    assert all(-1 <= r["cos_min"] <= r["cos_mean"] <= r["cos_max"] <= 1 for r in rows)
    with pytest.raises(ValueError, match="batch kind 'real'"):
        measure(model, tok, toy_task, gen, DPConfig(), [1.0], kinds=("real",))


def load_script():
    spec = importlib.util.spec_from_file_location("dp_fidelity_script", ROOT / "scripts" / "dp_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_writes_the_table_and_names_bad_input(tmp_path, capsys):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"]["name"] = "tiny-random"
    params["generate"].update(batch_size=2, max_seq_len=12, init_candidates=1)
    params["privacy"]["epsilons"] = [1.0]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    script = load_script()
    assert script.main(["--params", str(tmp_path / "params.yaml"), "--datasets", "tweets", "--draws", "1",
                        "--batches", "1", "--out-dir", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "dp_fidelity.csv").open()))
    assert [(r["class"], r["x"]) for r in rows] == [("negative", "random"), ("negative", "lm"),
                                                   ("positive", "random"), ("positive", "lm")]
    assert "label-row SNR" in (tmp_path / "out" / "dp_fidelity.md").read_text()
    assert script.main(["--params", str(tmp_path / "params.yaml"), "--datasets", "imbd"]) == 2
    assert "imbd" in capsys.readouterr().err
    assert script.main(["--params", str(tmp_path / "params.yaml"), "--draws", "0"]) == 2
    assert "draws" in capsys.readouterr().err
