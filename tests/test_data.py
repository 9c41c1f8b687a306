import csv
import hashlib
import json

import pytest

from gradmm.config import DataConfig
from gradmm.core.data import (
    PAPER_FILES,
    Example,
    deduplicate,
    download_paper_data,
    load_examples,
    load_task,
    resolve_template,
    stratified_splits,
)
from gradmm.io.paths import SHARED_DATA_DIR
from tests.conftest import toy_examples


def test_paper_datasets_from_a_data_dir(paper_data_dir, small_split):
    for name in ("rtpolarity", "imdb"):
        task = load_task(DataConfig(dataset=name, data_dir=str(paper_data_dir), **small_split))
        assert len(task.pool) == len(task.dev) == len(task.test) == 8
        assert not any(ex.text.endswith("\n") for ex in task.pool)  # rtpolarity's trailing " \n" stripped


def test_splits_are_disjoint_stratified_and_seeded():
    rows = toy_examples(30)
    a = stratified_splits(rows, 2, {"pool": 5, "dev": 10, "test": 10}, seed=0)
    b = stratified_splits(rows, 2, {"pool": 5, "dev": 10, "test": 10}, seed=0)
    c = stratified_splits(rows, 2, {"pool": 5, "dev": 10, "test": 10}, seed=1)
    assert a == b and a != c
    texts = [set(ex.text for ex in a[s]) for s in ("pool", "dev", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert sum(ex.label for ex in a["pool"]) == 5 and len(a["pool"]) == 10


def test_deduplicate_drops_copies_and_conflicting_labels():
    rows = [Example("Same  text", 1), Example("same text", 1), Example("clash", 0), Example("clash", 1),
            Example("", 0), Example("unique", 0)]
    assert deduplicate(rows) == [Example("Same  text", 1), Example("unique", 0)]


def test_tweets_from_the_package_and_from_a_stand_in(tmp_path):
    examples, names = load_examples(DataConfig(dataset="tweets"))
    assert names == ["negative", "positive"] and len(examples) > 20000  # 23,140 binary rows before de-dup
    path = tmp_path / "tweets.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sentiment", "confidence", "text"])
        w.writerows([["negative", 1, "bad day"], ["neutral", 1, "a day"], ["positive", 1, "good day"]])
    examples, _ = load_examples(DataConfig(dataset="tweets", source=str(path)))
    assert examples == [Example("bad day", 0), Example("good day", 1)]


def test_hub_loaders_on_a_local_copy(tmp_path):
    # same layout and fields as the hub dataset; SST-2's unlabelled test rows (-1) are dropped
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"idx": i, "sentence": f"s{i}", "label": i % 2}) + "\n"
                                                  for i in range(6)))
    (tmp_path / "test.jsonl").write_text(json.dumps({"idx": 9, "sentence": "x", "label": -1}) + "\n")
    examples, names = load_examples(DataConfig(dataset="sst2", source=str(tmp_path)))
    assert len(examples) == 6 and names == ["negative", "positive"]
    emo = tmp_path / "emo"
    emo.mkdir()
    (emo / "train.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": i % 4}) + "\n" for i in range(8)))
    examples, names = load_examples(DataConfig(dataset="tweet_emotion", source=str(emo)))
    assert names == ["sadness", "joy"] and sorted(e.label for e in examples) == [0, 0, 1, 1]


def test_local_multiclass_jsonl_and_csv(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"body": f"t{i}", "y": ["a", "b", "c"][i % 3]}) + "\n" for i in range(9)))
    cfg = DataConfig(dataset="local", source=str(path), text_field="body", label_field="y", label_names=["a", "b", "c"],
                     template="{text} Topic:", label_words=[" sports", " music", " food"],
                     pool_per_class=1, dev_per_class=1, test_per_class=1)
    task = load_task(cfg)
    assert task.n_classes == 3 and sorted(ex.label for ex in task.pool) == [0, 1, 2]
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("text,label\nx,0\ny,1\n")
    examples, _ = load_examples(DataConfig(dataset="local", source=str(csv_path), label_names=["n", "p"]))
    assert examples == [Example("x", 0), Example("y", 1)]


@pytest.mark.parametrize("cfg, message", [
    (DataConfig(dataset="nope"), "unknown dataset 'nope'"),
    (DataConfig(dataset="rtpolarity", data_dir="/does/not/exist"), "does not exist"),
    (DataConfig(dataset="local", source="x.txt", label_names=["a", "b"]), "must end in .jsonl or .csv"),
    (DataConfig(dataset="local", source="x.jsonl"), "label_names"),
    (DataConfig(template="no placeholder"), "neither one of"),
    (DataConfig(label_words=[" a", " b", " c"]), "3 label words"),
    (DataConfig(pool_per_class=0), "pool_per_class must be ≥ 1"),
    (DataConfig(pool_per_class=100000), "reduce them"),
])
def test_bad_input_is_named(cfg, message):
    with pytest.raises((ValueError, FileNotFoundError, KeyError), match=message):
        load_task(cfg)


def test_missing_field_and_empty_class(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a", "lab": 0}) + "\n")
    with pytest.raises(KeyError, match="no field 'label'"):
        load_examples(DataConfig(dataset="local", source=str(path), label_names=["a", "b"]))
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": 0}) + "\n" for i in range(5)))
    with pytest.raises(ValueError, match="class 'b' has no examples"):
        load_task(DataConfig(dataset="local", source=str(path), label_names=["a", "b"],
                             pool_per_class=1, dev_per_class=1, test_per_class=1))


def test_template_resolution():
    t = resolve_template(DataConfig(template="review"), 2)
    assert t.prompt("x") == "Review: x\nSentiment (positive or negative):" and t.label_words == (" negative", " positive")
    assert t.prefix == "Review: " and t.suffix == "\nSentiment (positive or negative):"


def test_download_checks_the_pinned_checksum(tmp_path):
    remote = tmp_path / "remote"
    (remote / "imdb").mkdir(parents=True)
    for rel in PAPER_FILES["imdb"]:
        (remote / rel).write_text("not the real file\n")
    with pytest.raises(ValueError, match="sha256"):
        download_paper_data("imdb", tmp_path / "dest", base_url=remote.as_uri() + "/")


@pytest.mark.skipif(not SHARED_DATA_DIR.is_dir(), reason="needs ../shared/data")
def test_download_from_a_mirror_of_the_real_files(tmp_path):
    dest = download_paper_data("rtpolarity", tmp_path, base_url=SHARED_DATA_DIR.as_uri() + "/")
    for rel, digest in PAPER_FILES["rtpolarity"].items():
        assert hashlib.sha256((dest / rel).read_bytes()).hexdigest() == digest


@pytest.mark.skipif(not SHARED_DATA_DIR.is_dir(), reason="needs ../shared/data")
def test_real_paper_splits_load():
    task = load_task(DataConfig(dataset="rtpolarity"))
    assert len(task.test) == 400 and len(task.pool) == 100
    task = load_task(DataConfig(dataset="imdb"))
    assert len(task.test) == 400


def test_a_null_text_is_an_error_not_the_string_none(tmp_path):
    path = tmp_path / "topics.jsonl"
    rows = [{"text": f"text {i}", "label": i % 2} for i in range(10)] + [{"text": None, "label": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"topics.jsonl: row 10: the text must be a string, got None"):
        load_examples(DataConfig(dataset="local", source=str(path), label_names=["a", "b"]))


def test_a_prepared_task_with_a_null_text_names_file_and_line(tmp_path):
    from gradmm.core.data import TEMPLATES, Task, task_from_dir, write_task
    ex = toy_examples(12)
    write_task(Task("toy", ["negative", "positive"], TEMPLATES["paper"], ex[:4], ex[4:8], ex[8:]), tmp_path)
    lines = (tmp_path / "dev.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"text": None, "label": 1})
    (tmp_path / "dev.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"dev.jsonl, line 2: 'text' must be a string, got None"):
        task_from_dir(tmp_path)
