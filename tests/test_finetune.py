"""Fine-tuning with the label-word classification loss and dev-only LR selection, on a tiny random Llama."""

import pytest
import torch

from gradmm.config import FinetuneConfig, load_config
from gradmm.core.data import TEMPLATES, Example, Task
from gradmm.core.models import load_model
from gradmm.core.scoring import accuracy, first_label_ids, predict
from gradmm.methods.finetune import batch_order, check_config, classification_loss, finetune_and_evaluate, train_copy

TEMPLATE = TEMPLATES["paper"]
POS = ["good good good", "good good", "very good good", "good good good good", "so good good"]
NEG = ["bad bad bad", "bad bad", "very bad bad", "bad bad bad bad", "so bad bad"]
TRAIN = [Example(t, 1) for t in POS] + [Example(t, 0) for t in NEG]


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_model("tiny-random", device="cpu")


def toy_task(test_flipped: bool = False) -> Task:
    # dev = the training texts; test = the same texts, optionally with flipped labels (dev and test disagree)
    test = [Example(e.text, 1 - e.label) for e in TRAIN] if test_flipped else list(TRAIN)
    return Task("toy", ["negative", "positive"], TEMPLATE, [], list(TRAIN), test)


def train_metrics(model, tok):
    with torch.no_grad():
        loss = classification_loss(model, tok, TRAIN, TEMPLATE, first_label_ids(tok, TEMPLATE)).item()
    preds = predict(model, tok, [e.text for e in TRAIN], TEMPLATE, progress=False)
    return loss, accuracy(preds, TRAIN)


def test_finetuning_fits_a_separable_toy_task_and_leaves_the_base_model_alone(tiny):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss0, acc0 = train_metrics(model, tok)
    tuned, losses = train_copy(model, tok, TRAIN, TEMPLATE, FinetuneConfig(steps=20), lr=1e-2, seed=0,
                               progress=False)
    loss1, acc1 = train_metrics(tuned, tok)
    assert len(losses) == 20
    assert loss1 < 0.25 * loss0, (loss0, loss1)
    assert acc1 == 1.0 and acc0 < 1.0  # the random model does not already solve it
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())


def test_best_lr_is_chosen_on_dev_only(tiny):
    model, tok = tiny
    # 1e-9 leaves the random model (dev 0.5, test 0.5); 1e-2 learns the task (dev 1.0, test 0.0 because the
    # test labels are flipped). Selecting on test would pick 1e-9; selecting on dev must pick 1e-2.
    cfg = FinetuneConfig(learning_rates=[1e-2, 1e-9], steps=20)
    res = finetune_and_evaluate(model, tok, TRAIN, toy_task(test_flipped=True), cfg, seed=0, progress=False)
    dev = res["dev_accuracies"]
    assert len(set(dev.values())) == 2  # the grid really disagrees
    best = max(dev.values())
    assert res["best_lr"] == min(float(lr) for lr, acc in dev.items() if acc == best) == 1e-2
    assert res["dev_accuracy"] == best == 1.0
    assert res["test_accuracy"] == pytest.approx(1.0 - res["dev_accuracy"])  # the test score of that model
    assert res["test_prediction_shares"] == pytest.approx([0.5, 0.5])
    assert [r["lr"] for r in res["runs"]] == [1e-9, 1e-2]
    assert res["wall_seconds"] > 0 and res["n_train"] == 10 and res["missing_classes"] == []


def test_ties_go_to_the_smaller_lr(tiny):
    model, tok = tiny
    res = finetune_and_evaluate(model, tok, TRAIN, toy_task(), FinetuneConfig(learning_rates=[2e-2, 1e-2], steps=20),
                                seed=0, progress=False)
    assert set(res["dev_accuracies"].values()) == {1.0}
    assert res["best_lr"] == 1e-2


def test_same_seed_same_result_other_seed_other_order(tiny):
    model, tok = tiny
    cfg = FinetuneConfig(learning_rates=[1e-3], steps=6, batch_size=4)
    a = finetune_and_evaluate(model, tok, TRAIN, toy_task(), cfg, seed=3, progress=False)
    b = finetune_and_evaluate(model, tok, TRAIN, toy_task(), cfg, seed=3, progress=False)
    c = finetune_and_evaluate(model, tok, TRAIN, toy_task(), cfg, seed=4, progress=False)
    assert a["runs"][0]["train_losses"] == b["runs"][0]["train_losses"]
    assert a["test_accuracy"] == b["test_accuracy"] and a["dev_accuracies"] == b["dev_accuracies"]
    assert a["runs"][0]["train_losses"] != c["runs"][0]["train_losses"]


def test_empty_training_set_raises(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="empty"):
        finetune_and_evaluate(model, tok, [], toy_task(), FinetuneConfig(), seed=0, progress=False)


def test_missing_class_is_allowed_but_recorded(tiny):
    model, tok = tiny
    only_pos = [e for e in TRAIN if e.label == 1]
    with pytest.warns(UserWarning, match="negative"):
        res = finetune_and_evaluate(model, tok, only_pos, toy_task(), FinetuneConfig(learning_rates=[1e-3], steps=2),
                                    seed=0, progress=False)
    assert res["missing_classes"] == ["negative"] and res["train_class_counts"] == [0, 5]


def test_lora_trains_adapters_only(tiny):
    pytest.importorskip("peft")
    model, tok = tiny
    cfg = FinetuneConfig(steps=20, lora=True, lora_r=4, lora_alpha=8)
    tuned, losses = train_copy(model, tok, TRAIN, TEMPLATE, cfg, lr=3e-2, seed=0, progress=False)
    assert any("lora_" in name for name, _ in tuned.named_parameters())
    assert not any("lora_" in name for name, _ in model.named_parameters())
    assert train_metrics(tuned, tok)[0] < 0.5 * train_metrics(model, tok)[0]


def test_batch_order_is_seeded_balanced_and_without_repeats_in_a_batch():
    a = batch_order(10, 10, 8, seed=1)
    assert a == batch_order(10, 10, 8, seed=1) and a != batch_order(10, 10, 8, seed=2)
    assert all(len(b) == 8 == len(set(b)) for b in a)
    counts = torch.bincount(torch.tensor([i for b in a for i in b]), minlength=10)
    assert counts.tolist() == [8] * 10  # 80 draws = exactly 8 epochs
    assert batch_order(3, 4, 8, seed=0) and all(sorted(b) == [0, 1, 2] for b in batch_order(3, 4, 8, seed=0))


def test_config_loads_from_params_and_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("finetune:\n  steps: 5\n  learning_rates: [1.0e-4]\n")
    cfg = load_config(FinetuneConfig, "finetune", params, ["finetune.batch_size=4"])
    assert (cfg.steps, cfg.learning_rates, cfg.batch_size) == (5, [1e-4], 4)
    with pytest.raises(ValueError):
        finetune_and_evaluate(None, None, TRAIN, toy_task(), FinetuneConfig(learning_rates=[]), seed=0)
    check_config(FinetuneConfig())  # the defaults are valid
