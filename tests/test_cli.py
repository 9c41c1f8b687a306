import json

from gradmm.cli import main


def test_evaluate_prints_and_writes_accuracy(paper_data_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    (tmp_path / "empty.yaml").write_text("")  # every section at its defaults
    code = main(["evaluate", "--model", "tiny-random", "--dataset", "rtpolarity", "--data-dir", str(paper_data_dir),
                 "--shots", "1", "--params", str(tmp_path / "empty.yaml"), "--set", "data.pool_per_class=4",
                 "--set", "data.dev_per_class=4", "--set", "data.test_per_class=4", "--output", str(out)])
    assert code == 0
    assert "accuracy" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["n"] == 8 and result["shots_per_class"] == 1


def test_bad_names_fail_fast_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "x.yaml").write_text("")
    assert main(["evaluate", "--dataset", "nope", "--params", str(tmp_path / "x.yaml")]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["evaluate", "--model", "gpt-9", "--params", str(tmp_path / "x.yaml")]) == 2
    assert main(["evaluate", "--set", "data.nokey=1", "--params", str(tmp_path / "x.yaml")]) == 2
    assert "unknown key(s) ['nokey']" in capsys.readouterr().err


def test_info(capsys):
    assert main(["info"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out
