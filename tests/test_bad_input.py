"""Bad input to the `gradmm` command: every mistake ends in exit code 2 and one message naming what is wrong (the
section.key and its value, the file and line, the path) before any model loads, and never in a traceback."""

import json
import os
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from gradmm.cli import main
from gradmm.config import _alternatives, load_config, section_classes

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ROW = {"text": "a fine film", "label": 1}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A params file (the repo's), a raw/training set, and no model loading: the checks must come first."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "train.jsonl").write_text(json.dumps(TRAIN_ROW) + "\n")

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was found")

    # every module that imported load_model holds its own name for it
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "gradmm" and hasattr(module, "load_model"):
            monkeypatch.setattr(module, "load_model", no_model)
    return tmp_path


def run(argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `gradmm argv`; argparse's own errors exit through SystemExit."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out + out.err


def stage_args(command: str, project: Path, out: Path | None = None) -> list[str]:
    """A complete `gradmm <command>` call on the tiny model, writing to `out` (default: a fresh path)."""
    out = str(out or project / "out" / command)
    train = str(project / "train.jsonl")
    args = {"evaluate": ["--output", out], "prepare": ["--out", out], "generate": ["--out", out],
            "filter": ["--raw", train, "--out", out], "baseline": ["--method", "random_real", "--out", out],
            "finetune": ["--method", "random_real", "--train", train, "--out", out], "diagnose": ["--out", out],
            "study": ["--method", "gradmm", "--out", out], "privacy-attacks": ["--out", out],
            "transfer": ["--target", "minilm", "--out", out]}[command]
    return [command, "--params", str(project / "params.yaml"), "--model", "tiny-random", *args]


def assert_user_error(code: int, text: str, *names: str) -> None:
    assert code == 2, text
    assert "Traceback" not in text
    for name in names:
        assert name in text, f"{name!r} not in {text!r}"


# The command that reads each params section (and checks it before its work), and settings it needs for that.
SECTION_COMMAND = {"data": ("prepare", []), "model": ("prepare", []), "generate": ("generate", []),
                   "dp": ("generate", ["dp.enabled=true"]), "filter": ("filter", []), "finetune": ("finetune", []),
                   "experiment": ("baseline", []), "study": ("study", []), "privacy": ("privacy-attacks", []),
                   "transfer": ("transfer", [])}

# An out-of-range value of every numeric field of every section.
OUT_OF_RANGE = {
    "data.max_text_tokens": 0, "data.pool_per_class": 0, "data.dev_per_class": 0, "data.test_per_class": 0,
    "data.split_seed": -1,
    "generate.n_per_class": 0, "generate.batch_size": 0, "generate.seq_len": -1, "generate.max_seq_len": 0,
    "generate.outer_steps": 0, "generate.inner_steps": 0, "generate.lr": 0, "generate.rho": -0.1,
    "generate.rho_growth": 0.5, "generate.topk": 0, "generate.init_candidates": 0, "generate.init_norm": -1,
    "generate.grad_clip": -1, "generate.matching_weight": -1, "generate.stop_changed_fraction": 1.5,
    "generate.seed": -1, "generate.swap_steps": -1, "generate.swap_candidates": 0, "generate.swap_next_topk": 0,
    "generate.init_top_p": 0, "generate.init_shots": -1, "generate.stop_patience": -1, "generate.parallel_batches": 0,
    "dp.epsilon": 0, "dp.delta": 1, "dp.clip_norm": 0, "dp.noise_seed_not_private": -1,
    "filter.n_per_class": 0, "filter.label_shots": -1, "filter.alpha": -1, "filter.seed": -1,
    "filter.path_steps": [25], "filter.path_lr": 0,
    "finetune.learning_rates": [0], "finetune.steps": 0, "finetune.batch_size": 0, "finetune.weight_decay": -1,
    "finetune.max_grad_norm": -1, "finetune.eval_batch_size": 0, "finetune.lora_r": 0, "finetune.lora_alpha": 0,
    "experiment.seeds": [-1], "experiment.n_per_class": [0], "experiment.llm_raw_per_class": 0,
    "experiment.llm_shots": -1, "experiment.llm_consistent_per_class": -1, "experiment.llm_max_raw_per_class": -1,
    "study.n_per_class": [0], "study.raw_per_class": 0, "study.generation_seeds": [-1], "study.seeds": [-1],
    "study.diagnostics_sets": 0,
    "privacy.n_per_class": 0, "privacy.attack_lr": 0, "privacy.attack_seed": -1, "privacy.members": 0,
    "privacy.canaries": 0, "privacy.canary_repeats": 0, "privacy.canary_alternatives": 0, "privacy.epsilons": [0],
    "privacy.dp_seeds": [-1],
    "transfer.n_per_class": 0, "transfer.seeds": [-1], "transfer.generation_seed": -1, "transfer.probe_c": [0],
}


def numeric_fields() -> dict[str, tuple[type, bool]]:
    """section.key -> (int or float, whether it is a list) for every numeric field of every params section."""
    out = {}
    for section, cls in section_classes().items():
        for key, annotation in typing.get_type_hints(cls).items():
            for alt in _alternatives(annotation):
                is_list = typing.get_origin(alt) is list
                kind = typing.get_args(alt)[0] if is_list else alt
                if kind in (int, float):
                    out.setdefault(f"{section}.{key}", (kind, is_list))
    return out


NUMERIC = numeric_fields()


def test_every_numeric_field_has_an_out_of_range_case():
    assert sorted(NUMERIC) == sorted(OUT_OF_RANGE)


def _set_args(field: str, value: str) -> tuple[list[str], str]:
    """(the --set arguments giving `field` this value, the command that reads its section)."""
    command, settings = SECTION_COMMAND[field.split(".")[0]]
    return [arg for s in settings for arg in ("--set", s)] + ["--set", f"{field}={value}"], command


@pytest.mark.parametrize("field", sorted(OUT_OF_RANGE))
def test_an_out_of_range_value_is_refused_before_the_work(field, project, capsys):
    value = json.dumps(OUT_OF_RANGE[field])
    extra, command = _set_args(field, value)
    code, text = run(stage_args(command, project) + extra, capsys)
    assert_user_error(code, text, field, value)


WRONG_TYPE = [(f, "abc", "'abc'") for f in sorted(NUMERIC)]
for f, (kind, listed) in sorted(NUMERIC.items()):  # not integral / not finite: (value, how the message shows it)
    bad, shown = ("2.5", "2.5") if kind is int else ("NaN", "nan")
    WRONG_TYPE.append((f, f"[{bad}]" if listed else bad, shown))


@pytest.mark.parametrize("field, value, shown", WRONG_TYPE, ids=[f"{f}={v}" for f, v, _ in WRONG_TYPE])
def test_a_value_of_the_wrong_type_is_refused(field, value, shown, project, capsys):
    extra, command = _set_args(field, value)
    code, text = run(stage_args(command, project) + extra, capsys)
    assert_user_error(code, text, field, shown)


@pytest.mark.parametrize("override, shown", [
    ("generate.center=yes", "generate.center must be true or false, got 'yes'"),  # YAML 1.1 would read True
    ("generate.rho=.inf", "generate.rho must be a finite number, got inf"),
    ("generate.outer_steps=true", "generate.outer_steps must be an integer, got True"),
    ("finetune.learning_rates=[1e-4, abc]", "finetune.learning_rates must be a list of finite numbers"),
    ("study.generate=abc", "study.generate must be a mapping, got 'abc'"),
])
def test_other_wrong_types(override, shown, project, capsys):
    code, text = run(stage_args("prepare", project) + ["--set", override], capsys)
    assert_user_error(code, text, shown)


def test_a_wrong_type_in_the_params_file_is_refused(project, capsys):
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("  outer_steps: 4", "  outer_steps: 2.5"))
    code, text = run(stage_args("generate", project), capsys)
    assert_user_error(code, text, "generate.outer_steps must be an integer, got 2.5")


def test_a_missing_params_file_is_an_error_naming_it(project, capsys, monkeypatch):
    code, text = run(["prepare", "--params", str(project / "nope.yaml"), "--out", str(project / "task")], capsys)
    assert_user_error(code, text, "nope.yaml", "does not exist")
    (project / "elsewhere").mkdir()
    monkeypatch.chdir(project / "elsewhere")  # the wrong folder: no params.yaml
    code, text = run(["prepare", "--out", str(project / "task")], capsys)
    assert_user_error(code, text, "params file params.yaml does not exist")


@pytest.mark.parametrize("text, shown", [
    ("data: [unclosed\n", "not readable YAML"),
    ("- a list\n", "must map section names"),
    ("data: 5\n", "section(s) ['data'] are not"),
    ("genrate:\n  rho: 0.5\n", "unknown section(s) ['genrate']"),
])
def test_a_malformed_params_file_is_an_error_naming_it(text, shown, project, capsys):
    (project / "params.yaml").write_text(text)
    code, out = run(stage_args("prepare", project), capsys)
    assert_user_error(code, out, "params.yaml", shown)


def test_an_unknown_section_or_key_of_set_is_refused_whatever_the_command_reads(project, capsys):
    code, text = run(stage_args("prepare", project) + ["--set", "genrate.rho=0.5"], capsys)
    assert_user_error(code, text, "unknown params section 'genrate'", "'generate'", "'finetune'")
    code, text = run(stage_args("prepare", project) + ["--set", "generate.rhoo=0.5"], capsys)
    assert_user_error(code, text, "unknown key(s) ['rhoo']", "'rho'")


def test_string_values_stay_strings(project, capsys):
    params = project / "params.yaml"
    template = "Review: {text} It was"  # YAML would read "Review: ..." as a mapping
    assert load_config(section_classes()["data"], "data", params, [f"data.template={template}"]).template == template
    assert load_config(section_classes()["filter"], "filter", params,
                       ['filter.label_template="review"']).label_template == "review"  # json.dumps'ed overrides
    assert load_config(section_classes()["data"], "data", params, ["data.data_dir=null"]).data_dir is None
    assert load_config(section_classes()["model"], "model", params, ["model.name=true"]).name == "true"
    label_words = 'data.label_words=[" bad", " good"]'
    code, text = run(stage_args("prepare", project) + ["--template", template, "--set", label_words], capsys)
    assert code == 0, text
    assert json.loads((project / "out" / "prepare" / "meta.json").read_text())["template"] == template


@pytest.mark.parametrize("argv, shown", [
    (["filter", "--n-per-class", "0"], "--n-per-class: must be ≥ 1, got 0"),
    (["finetune", "--n-per-class", "0"], "--n-per-class: must be ≥ 1, got 0"),
    (["baseline", "--n-per-class", "-1"], "--n-per-class: must be ≥ 1, got -1"),
    (["generate", "--seed", "-1"], "--seed: must be ≥ 0, got -1"),
    (["evaluate", "--shots", "-1"], "--shots: must be ≥ 0, got -1"),
    (["evaluate", "--batch-size", "0"], "--batch-size: must be ≥ 1, got 0"),
    (["diagnose", "--set-size", "0"], "--set-size: must be ≥ 1, got 0"),
    (["diagnose", "--n-sets", "x"], "--n-sets: must be an integer ≥ 1, got 'x'"),
])
def test_count_options_are_checked(argv, shown, project, capsys):
    code, text = run(stage_args(argv[0], project) + argv[1:], capsys)
    assert_user_error(code, text, shown)


COMMANDS = ["evaluate", "prepare", "generate", "filter", "baseline", "finetune", "diagnose", "study", "privacy-attacks",
            "transfer"]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unwritable_output_fails_before_the_work(command, project, capsys):
    (project / "a_file").write_text("")
    code, text = run(stage_args(command, project, out=project / "a_file" / "out"), capsys)
    assert_user_error(code, text, "a_file", "not a folder")


def test_an_unwritable_second_output_of_filter_fails_before_the_work(project, capsys):
    (project / "a_file").write_text("")
    code, text = run(stage_args("filter", project) + ["--no-filter-out", str(project / "a_file" / "x.jsonl")], capsys)
    assert_user_error(code, text, "a_file", "not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_output_folder_without_write_permission_fails_before_the_work(project, capsys):
    locked = project / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, text = run(stage_args("finetune", project, out=locked / "result.json"), capsys)
    finally:
        locked.chmod(0o700)
    assert_user_error(code, text, "no write permission", "locked")


@pytest.mark.parametrize("content, shown", [
    (b'{"text": "fine", "label": 1}\n{"text": "broken\n', "train.jsonl, line 2: not valid JSON"),
    (b'{"text": "fine", "label": 1}\n\n{"text": "caf\xe9", "label": 0}\n', "train.jsonl, line 3: not UTF-8"),
    (b'["a list", 1]\n', "train.jsonl, line 1: expected a JSON object, got list"),
    (b'{"text": null, "label": 1}\n', "train.jsonl, line 1: 'text' must be a string, got None"),
    (b'{"text": "fine"}\n', "train.jsonl, line 1: 'label' must be an integer class index, got None"),
    (b'{"text": "fine", "label": "positive"}\n', "train.jsonl, line 1: 'label' must be an integer"),
])
def test_a_corrupt_training_set_names_the_file_and_line(content, shown, project, capsys):
    (project / "train.jsonl").write_bytes(content)
    code, text = run(stage_args("finetune", project), capsys)
    assert_user_error(code, text, shown)
    code, text = run(stage_args("filter", project), capsys)  # the raw texts are read the same way
    assert_user_error(code, text, shown)


def test_a_missing_paper_data_directory_names_the_options_that_exist(project, capsys, monkeypatch):
    monkeypatch.delenv("GRADMM_DATA_DIR", raising=False)
    monkeypatch.setattr("gradmm.io.paths.SHARED_DATA_DIR", project / "no-shared-data")
    code, text = run(stage_args("prepare", project) + ["--dataset", "rtpolarity"], capsys)
    assert_user_error(code, text, "--data-dir", "GRADMM_DATA_DIR")
    assert "download-data" not in text  # no such command


def test_verbose_shows_the_traceback_and_keeps_the_exit_code(project, capsys):
    code, text = run(["-v"] + stage_args("prepare", project) + ["--set", "generate.rho=abc"], capsys)
    assert code == 2 and "Traceback" in text and "generate.rho must be a finite number" in text
    code, text = run(stage_args("prepare", project) + ["-v", "--set", "generate.rho=abc"], capsys)
    assert code == 2 and "Traceback" in text


def test_a_bug_is_one_line_without_verbose(project, capsys):
    code, text = run(stage_args("finetune", project), capsys)  # the fixture's model loader raises AssertionError
    assert code == 1 and "error: internal AssertionError: a model was loaded" in text and "-v: the traceback" in text
    assert "Traceback" not in text


def test_concurrent_first_runs_share_the_tokenizer_cache(tmp_path, monkeypatch):
    """Another process finishes the tiny model's tokenizer cache while this one is between its save and rename:
    both end with a complete folder (a shared temporary folder made one of them fail)."""
    from transformers import PreTrainedTokenizerBase

    from gradmm.core import models

    models.load_tokenizer("tiny-random")  # the real cache, made once for every test: a fast copy to load from
    cached, from_pretrained = models.cache_dir() / "tokenizers" / "smollm2", models.AutoTokenizer.from_pretrained
    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", staticmethod(
        lambda path, **kw: from_pretrained(cached) if "gguf_file" in kw else from_pretrained(path, **kw)))
    monkeypatch.setattr(models, "cache_dir", lambda: tmp_path / "cache")
    save = PreTrainedTokenizerBase.save_pretrained
    raced = []

    def save_then_race(self, folder, *args, **kwargs):
        out = save(self, folder, *args, **kwargs)
        if not raced:  # the other process runs to the end now, under its own process id
            raced.append(folder)
            monkeypatch.setattr(models.os, "getpid", lambda: 999999)
            models.load_tokenizer("tiny-random")
        return out

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", save_then_race)
    tok = models.load_tokenizer("tiny-random")
    folder = tmp_path / "cache" / "tokenizers" / "smollm2"
    assert (folder / "tokenizer_config.json").is_file() and len(tok) > 1000
    assert [p.name for p in folder.parent.iterdir()] == ["smollm2"]  # no temporary folder left behind


@pytest.mark.parametrize("args, shown", [
    (["--set", "model.dtyp=bfloat16"], "unknown key(s) ['dtyp'] in params section 'model'"),
    (["--set", "model"], "must look like section.key=value"),
    (["--bogus"], "unknown argument '--bogus'"),
])
def test_the_main_command_refuses_a_bad_override_before_it_copies_or_runs_anything(args, shown):
    """scripts/quick.sh --set: the README's main command checks its overrides as `gradmm --set` does, first."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(["bash", str(ROOT / "scripts" / "quick.sh"), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and shown in run.stderr and "Traceback" not in run.stderr
    assert "Running stage" not in run.stdout
