"""Stage runtimes (gradmm.reporting.runtimes) and the Makefile that runs the full profile's stages (scripts/full_makefile.py)."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from gradmm.reporting import runtimes

ROOT = Path(__file__).resolve().parent.parent


def test_stage_times_take_machine_labels_and_the_last_line_of_a_stage(tmp_path):
    path = tmp_path / "times.tsv"
    path.write_text("# machine: H200\n0\t176280\tgenerate@tweets-gradmm-0\n"
                    "# machine: CPU\n2\t5000\tfinetune@tweets-gradmm-5-0\n0\t300000\tfinetune@tweets-gradmm-5-0\n"
                    "0\t100000\tfinetune@tweets-random_real-5-0\n1\t42\tfilter@rtpolarity-gradmm-20-1\n")
    df = runtimes.read_stage_times(path)
    assert list(df["stage"]) == ["generate@tweets-gradmm-0", "finetune@tweets-gradmm-5-0",
                                 "finetune@tweets-random_real-5-0", "filter@rtpolarity-gradmm-20-1"]
    assert list(df["machine"]) == ["H200", "CPU", "CPU", "CPU"]
    assert df.loc[1, "seconds"] == 300.0 and df.loc[1, "exit_code"] == 0  # the failed first try is replaced

    summary = runtimes.runtime_summary(df)
    assert list(summary["kind"]) == ["generate", "filter", "finetune"]  # pipeline order
    fine = summary[summary["kind"] == "finetune"].iloc[0]
    assert (fine["finished"], fine["failed"], fine["median_seconds"]) == (2, 0, 200.0)
    assert fine["total_hours"] == pytest.approx(400 / 3600)
    failed = summary[summary["kind"] == "filter"].iloc[0]
    assert (failed["finished"], failed["failed"]) == (0, 1)

    md = runtimes.write_runtime_tables(df, tmp_path / "t.csv", tmp_path / "t.md")
    assert "| finetune | tweets | CPU | 2 | 0 | 200 | 300 | 0.11 |" in md
    assert "| filter | rtpolarity | CPU | 0 | 1 | – | – | – |" in md  # failed only: no times, not 'nan'
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 5


def test_a_malformed_stage_line_is_named(tmp_path):
    path = tmp_path / "times.tsv"
    path.write_text("0\t12\tfinetune@tweets-gradmm-5-0\nnot a line\n")
    with pytest.raises(ValueError, match=r"times.tsv:2: 'not a line'"):
        runtimes.read_stage_times(path)


def _full_makefile():
    spec = importlib.util.spec_from_file_location("full_makefile", ROOT / "scripts" / "full_makefile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _makefile_rules(run_dir):
    """{target: prerequisites} of RUN_DIR/Makefile."""
    return {line.split(":")[0]: line.split(":", 1)[1].split()
            for line in (run_dir / "Makefile").read_text().splitlines() if line.startswith("runs/")}


def test_the_makefile_runs_the_dvc_stages_in_order_and_leaves_out_what_exists(tmp_path, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["experiment"].update(datasets=["tweets"], seeds=[0], n_per_class=[5], generators=["gradmm"],
                                baselines=["random_real"], methods=["random_real", "gradmm", "gradmm_no_filter"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_dir = tmp_path / "run"
    module = _full_makefile()
    monkeypatch.setattr("sys.argv", ["full_makefile.py", str(tmp_path / "params.yaml"), str(run_dir)])
    module.main()
    text = (run_dir / "Makefile").read_text()
    rules = _makefile_rules(run_dir)
    assert rules["runs/tweets/data/meta.json"] == []
    assert rules["runs/tweets/generated/gradmm-seed0/raw.jsonl"] == ["runs/tweets/data/meta.json"]
    assert rules["runs/tweets/trainsets/gradmm-n5-seed0.jsonl"] == ["runs/tweets/generated/gradmm-seed0/raw.jsonl"]
    assert set(rules["runs/tweets/results/gradmm-n5-seed0.json"]) == {"runs/tweets/data/meta.json",
                                                                       "runs/tweets/trainsets/gradmm-n5-seed0.jsonl"}
    # the filter's second output (the unfiltered set) is made by the filter's rule, named by its first output
    assert set(rules["runs/tweets/results/gradmm_no_filter-n5-seed0.json"]) == {
        "runs/tweets/data/meta.json", "runs/tweets/trainsets/gradmm-n5-seed0.jsonl"}
    assert "gradmm finetune --task runs/tweets/data --method gradmm --n-per-class 5 --seed 0" in text
    assert len(rules) == 7  # prepare, generate, filter, baseline, 3 finetunes
    goals = next(line for line in text.splitlines() if line.startswith("all:")).split()[1:]
    assert all("/results/" in g for g in goals[:2])  # results first: make builds a result's inputs before the next

    for done in ("runs/tweets/data/meta.json", "runs/tweets/generated/gradmm-seed0/raw.jsonl"):
        (run_dir / done).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / done).write_text("{}")
    module.main()  # a second call resumes: what exists is left out, and so are the dependencies on it
    rules = _makefile_rules(run_dir)
    assert "runs/tweets/data/meta.json" not in rules and "runs/tweets/generated/gradmm-seed0/raw.jsonl" not in rules
    assert rules["runs/tweets/trainsets/gradmm-n5-seed0.jsonl"] == []
    assert len(rules) == 5

    # A fresh clone: the training sets are committed, the raw texts (and the prepared data) are not. Only the
    # results' own stages come back; a generation is re-made only for a training set that is missing.
    for rel in ("runs/tweets/trainsets/gradmm-n5-seed0.jsonl", "runs/tweets/trainsets/gradmm_no_filter-n5-seed0.jsonl",
                "runs/tweets/trainsets/gradmm-n5-seed0_filter.json", "runs/tweets/trainsets/random_real-n5-seed0.jsonl",
                "runs/tweets/trainsets/random_real-n5-seed0.info.json"):
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text("{}")
    (run_dir / "runs/tweets/generated/gradmm-seed0/raw.jsonl").unlink()
    (run_dir / "runs/tweets/data/meta.json").unlink()
    module.main()
    rules = set(_makefile_rules(run_dir))
    assert rules == {"runs/tweets/data/meta.json", "runs/tweets/results/gradmm-n5-seed0.json",
                     "runs/tweets/results/gradmm_no_filter-n5-seed0.json", "runs/tweets/results/random_real-n5-seed0.json"}
    (run_dir / "runs/tweets/trainsets/gradmm-n5-seed0.jsonl").unlink()
    module.main()
    rules = set(_makefile_rules(run_dir))
    assert {"runs/tweets/generated/gradmm-seed0/raw.jsonl", "runs/tweets/trainsets/gradmm-n5-seed0.jsonl"} < rules


def test_the_runtimes_command_prints_the_summary_and_names_a_missing_file(tmp_path, capsys):
    from gradmm.cli import main

    path = tmp_path / "times.tsv"
    path.write_text("# machine: CPU\n0\t120000\tfinetune@tweets-gradmm-5-0\n")
    main(["runtimes", str(path)])
    out = capsys.readouterr().out
    assert "finetune" in out and "120.00" in out and "CPU" in out
    with pytest.raises(SystemExit, match="no stage times at .*nothing.tsv"):
        main(["runtimes", str(tmp_path / "nothing.tsv")])


def test_the_makefile_quotes_the_values_dvc_pastes_into_commands(tmp_path, monkeypatch):
    import shlex

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["experiment"].update(datasets=["it's"], seeds=[0], n_per_class=[5], generators=["gradmm"],
                                baselines=["random_real"], methods=["random_real"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr("sys.argv", ["full_makefile.py", str(tmp_path / "params.yaml"), str(tmp_path / "run")])
    _full_makefile().main()
    makefile = (tmp_path / "run" / "Makefile").read_text()
    recipe = next(line for line in makefile.splitlines() if "gradmm prepare" in line)
    shell = recipe.removeprefix("\t@").replace("$$", "$")  # what make hands to the shell
    command = shell.split("; ")[2]
    assert shlex.split(command) == ["gradmm", "prepare", "--dataset", "it's", "--out", "runs/it's/data", ">",
                                    "logs/prepare@it's.log", "2>&1"]
