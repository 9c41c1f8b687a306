"""Matching chooses LM texts without editing them (gradmm_select): the Gram-matrix loss of any subset of rows equals
`match_loss` of those rows, the row exchanges lower f from the best whole batch, and the variant's candidates are
gradmm_swap_start's, so its f is never worse."""

import pytest
import torch

from gradmm.config import DPConfig, GenerateConfig, ModelConfig
from gradmm.core.admm import Layout, Problem, check_config, initialise, select_rows
from gradmm.core.matching import SubsetMatchLoss, class_targets, head_logits, match_loss
from gradmm.core.models import last_hidden
from gradmm.core.projection import allowed_token_mask
from gradmm.methods.generate import SAMPLING_DEMO_DRAWS, check_dp, generate, sampling_prefix_ids
from gradmm.methods.registry import GENERATORS

TINY = ModelConfig(name="tiny-random", device="cpu")


def _problem(model_tok, toy_task, center=None, **kw):
    model, tok = model_tok
    target = class_targets(model, tok, toy_task.pool, toy_task.template, center=center)[1]
    layout = Layout(tok("Text:", add_special_tokens=False).input_ids, tok(" It was", add_special_tokens=False).input_ids, 10)
    cfg = GenerateConfig(**{"topk": 20, "init": "lm", "outer_steps": 0, "init_candidates": 4, **kw})
    return Problem(model, target, layout, tok("Write:", add_special_tokens=False).input_ids, allowed_token_mask(tok), cfg)


@pytest.mark.parametrize("which", ["tiny", "tiny_untied"])
@pytest.mark.parametrize("center", [None, "pool"])
def test_subset_loss_equals_match_loss_of_the_rows(request, toy_task, which, center):
    model_tok = request.getfixturevalue(which)
    problem = _problem(model_tok, toy_task, center=center)
    ids = problem.sample_ids(8, seed=0)
    h = last_hidden(problem.model, input_ids=ids)
    logits = head_logits(problem.model, h)
    set_f = SubsetMatchLoss(h, logits, problem.y, problem.target)
    for rows in ([0, 1, 2], [7, 3], [5], list(range(8))):
        rows = torch.tensor(rows)
        want = match_loss(h[rows], logits[rows], problem.y, problem.target)
        assert set_f(rows).item() == pytest.approx(want.item(), abs=1e-10)


def test_row_exchanges_lower_f_from_the_best_batch(tiny, toy_task):
    problem = _problem(tiny, toy_task, center="pool")
    B = 3
    ids = torch.cat([problem.sample_ids(B, seed=s) for s in range(4)])
    f_batches = [problem.f_ids(ids[k * B:(k + 1) * B]).item() for k in range(4)]
    start = min(range(4), key=f_batches.__getitem__)
    kept = select_rows(problem, ids, start=start)
    assert kept.shape == (B, ids.shape[1])
    rows = [next(i for i in range(len(ids)) if torch.equal(ids[i], k)) for k in kept]  # each kept row is a candidate
    assert len(set(rows)) == B
    assert problem.f_ids(kept).item() < f_batches[start] - 1e-6  # 81 exchanges to try: one of them helps here


def test_initialise_with_rows_never_matches_worse_than_the_best_batch(tiny, toy_task):
    f = {}
    for select in ("batch", "rows"):
        problem = _problem(tiny, toy_task, center="pool", init_select=select)
        X, ids, losses = initialise(problem, 3, torch.Generator().manual_seed(0))
        assert torch.allclose(X, problem.freeze(problem.emb[ids]))
        f[select] = problem.f_ids(ids).item()
        assert len(losses) == 4
    assert f["batch"] == pytest.approx(min(losses), abs=1e-5)  # the same draws, the best whole batch
    assert f["rows"] < f["batch"]


def test_nucleus_sampling_reaches_the_lm_samples(tiny, toy_task):
    """init_top_p is passed to the sampler: a tiny nucleus leaves only the most probable token (greedy)."""
    plain = _problem(tiny, toy_task).sample_ids(4, seed=0)
    greedy = _problem(tiny, toy_task, init_top_p=1e-9).sample_ids(4, seed=0)
    assert len({tuple(r.tolist()) for r in greedy}) == 1
    assert len({tuple(r.tolist()) for r in plain}) > 1


def test_few_shot_sampling_shows_pool_texts_of_the_class(tiny, toy_task):
    """init_shots: each candidate batch is sampled after a few-shot instruction holding init_shots pool texts of its
    class (a fresh draw per instruction, the same draws for the same seed), and its seed picks the instruction."""
    model, tok = tiny
    gen = GenerateConfig(init="lm", init_shots=2)
    prefixes = sampling_prefix_ids(tok, toy_task, 1, gen)
    assert len(prefixes) == SAMPLING_DEMO_DRAWS and prefixes == sampling_prefix_ids(tok, toy_task, 1, gen)
    assert sampling_prefix_ids(tok, toy_task, 1, GenerateConfig(init="lm")) == []
    shown = [tok.decode(p) for p in prefixes]
    for text in shown:
        demos = [ex for ex in toy_task.pool if " ".join(ex.text.split()) in text]
        assert len(demos) == 2 and {ex.label for ex in demos} == {1}
    assert len(set(shown)) > 1  # not one draw for every batch
    few = _problem(tiny, toy_task, init_shots=2)
    few.sampling_prefixes = prefixes
    contexts, real_generate = [], model.generate

    def recording_generate(input_ids, **kw):  # the real sampler; only its context is noted
        contexts.append(input_ids[0].tolist())
        return real_generate(input_ids=input_ids, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model, "generate", recording_generate)
        few.sample_ids(4, seed=5)
        _problem(tiny, toy_task).sample_ids(4, seed=5)
    layout_prefix = few.layout.prefix_ids
    assert contexts[0] == prefixes[5 % len(prefixes)] + layout_prefix  # the instruction its seed picks
    assert contexts[1] == few.decoding_prefix + layout_prefix  # zero-shot: the decoding prefix


def test_few_shot_generation_runs_and_is_refused_where_it_cannot_be(toy_data, toy_task, tiny, tmp_path):
    small = {"n_per_class": 2, "batch_size": 2, "max_seq_len": 10, "topk": 20}
    runs = {m: generate(toy_data, TINY, GenerateConfig(**{**GENERATORS[m]["generate"], **small}), DPConfig(),
                        tmp_path / m, progress=False) for m in ("gradmm_select", "gradmm_select_few_shot")}
    f_few, f_zero = (runs[m]["classes"][0]["f_init_candidates"] for m in ("gradmm_select_few_shot", "gradmm_select"))
    assert f_few != f_zero  # other candidates were drawn
    with pytest.raises(ValueError, match="init_shots=11: the pool has only 10 texts of class 'negative'"):
        generate(toy_data, TINY, GenerateConfig(**{**GENERATORS["gradmm_select_few_shot"]["generate"], **small,
                                                   "init_shots": 11}), DPConfig(), tmp_path / "many", progress=False)
    assert not (tmp_path / "many").exists()  # refused before the run directory was claimed
    with pytest.raises(ValueError, match="init_shots=2.*init 'lm'"):
        check_config(GenerateConfig(init_shots=2))
    with pytest.raises(ValueError, match="init_shots=-1"):
        check_config(GenerateConfig(init="lm", init_shots=-1))
    with pytest.raises(ValueError, match="init_shots=4 with dp.enabled"):
        check_dp(DPConfig(enabled=True), GenerateConfig(init="lm", init_shots=4))


def test_selection_settings_are_checked():
    with pytest.raises(ValueError, match="init_select 'best'"):
        check_config(GenerateConfig(init="lm", init_select="best"))
    with pytest.raises(ValueError, match="init 'lm'"):
        check_config(GenerateConfig(init_select="rows"))
    with pytest.raises(ValueError, match="init_top_p"):
        check_config(GenerateConfig(init="lm", init_top_p=0.0))
    check_config(GenerateConfig(**GENERATORS["gradmm_select_nucleus"]["generate"]))
    with pytest.raises(ValueError, match="match_softmax 'labels'.*'vocabulary', 'label_words'"):
        check_config(GenerateConfig(match_softmax="labels"))
    check_config(GenerateConfig(**GENERATORS["gradmm_select_finetune_loss"]["generate"]))
    with pytest.raises(ValueError, match="match_softmax 'label_words' with dp.enabled"):
        check_dp(DPConfig(enabled=True), GenerateConfig(match_softmax="label_words"))


def test_the_match_ladder_draws_the_same_lm_batches(toy_data, tmp_path):
    """Same seeds, same candidates: gradmm_lm_start keeps the first batch drawn, gradmm_swap_start the best of
    them, gradmm_select the best rows, so their f never rises along that order, class by class."""
    small = {"n_per_class": 2, "batch_size": 2, "max_seq_len": 10, "topk": 20}
    out = {m: generate(toy_data, TINY, GenerateConfig(**{**GENERATORS[m]["generate"], **small}), DPConfig(),
                       tmp_path / m, progress=False) for m in ("gradmm_lm_start", "gradmm_swap_start", "gradmm_select")}
    for first, a, b in zip(*(out[m]["classes"] for m in ("gradmm_lm_start", "gradmm_swap_start", "gradmm_select"))):
        assert all(fb <= fa + 1e-9 for fa, fb in zip(a["f_Z"], b["f_Z"]))
        assert b["f_init_candidates"] == a["f_init_candidates"]  # the same LM batches were drawn
        assert all(fa == pytest.approx(min(c), abs=1e-5) for fa, c in zip(a["f_Z"], a["f_init_candidates"]))
        assert first["f_Z"] == pytest.approx([c[0] for c in a["f_init_candidates"]], abs=1e-5)


def test_the_wide_selection_draws_gradmm_selects_batches_and_more(toy_data, tmp_path):
    """gradmm_select_wide draws 8 LM batches, the first 4 those of gradmm_select (same seeds): its pool holds
    gradmm_select's, and its start, the best of 8 batches, matches at least as well as the best of 4."""
    small = {"n_per_class": 2, "batch_size": 2, "max_seq_len": 10, "topk": 20}
    out = {m: generate(toy_data, TINY, GenerateConfig(**{**GENERATORS[m]["generate"], **small}), DPConfig(),
                       tmp_path / m, progress=False) for m in ("gradmm_select", "gradmm_select_wide")}
    for narrow, wide in zip(out["gradmm_select"]["classes"], out["gradmm_select_wide"]["classes"]):
        for c4, c8 in zip(narrow["f_init_candidates"], wide["f_init_candidates"]):
            assert len(c4) == 4 and len(c8) == 8 and c8[:4] == c4
            assert min(c8) <= min(c4)


def test_selecting_by_the_fine_tuning_loss_scores_by_its_own_target(toy_data, tmp_path):
    """gradmm_select_finetune_loss scores its LM batches by the label-word gradient (other values than
    gradmm_select's vocabulary one), and the rows it chooses match no worse than the best whole batch."""
    small = {"n_per_class": 2, "batch_size": 2, "max_seq_len": 10, "topk": 20}
    out = {m: generate(toy_data, TINY, GenerateConfig(**{**GENERATORS[m]["generate"], **small}), DPConfig(),
                       tmp_path / m, progress=False) for m in ("gradmm_select", "gradmm_select_finetune_loss")}
    for vocab, words in zip(out["gradmm_select"]["classes"], out["gradmm_select_finetune_loss"]["classes"]):
        assert len(words["f_init_candidates"]) == len(vocab["f_init_candidates"])
        assert words["f_init_candidates"] != vocab["f_init_candidates"]  # another loss scores the same batches
        assert all(f <= min(c) + 1e-9 for f, c in zip(words["f_Z"], words["f_init_candidates"]))
    run_config = (tmp_path / "gradmm_select_finetune_loss" / "run_config.json").read_text()
    assert '"match_softmax": "label_words"' in run_config
