import json
import random

import pytest

from gradmm.config import DataConfig
from gradmm.core.data import TEMPLATES, Example, Task


@pytest.fixture(scope="session")
def tiny():
    from gradmm.core.models import load_model

    return load_model("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def tiny_untied():
    from gradmm.core.models import load_model

    return load_model("tiny-random-untied", device="cpu")


@pytest.fixture(scope="session")
def smollm2():
    from gradmm.core.models import load_model

    return load_model("smollm2-135m", device="cpu")


POSITIVE = ["a wonderful, moving film", "great acting and a great story", "i loved every minute of it",
            "a delightful and charming comedy", "brilliant, funny and warm", "an excellent piece of work"]
NEGATIVE = ["a dull, boring mess", "terrible acting and an awful plot", "i hated every minute of it",
            "a tedious and lifeless drama", "stupid, ugly and cold", "a dreadful waste of time"]


def toy_examples(n_per_class: int = 30) -> list[Example]:
    rng = random.Random(0)
    rows = []
    for i in range(n_per_class):
        rows.append(Example(f"{rng.choice(POSITIVE)} number {i}", 1))
        rows.append(Example(f"{rng.choice(NEGATIVE)} number {i}", 0))
    return rows


@pytest.fixture
def toy_task() -> Task:
    rows = toy_examples()
    return Task("toy", ["negative", "positive"], TEMPLATES["paper"], rows[:20], rows[20:40], rows[40:60])


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> DataConfig:
    """A local two-class dataset file (the generation tests' input, through the real local loader)."""
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    path.write_text("".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in toy_examples(30)))
    return DataConfig(dataset="local", source=str(path), label_names=["negative", "positive"],
                      pool_per_class=10, dev_per_class=5, test_per_class=5)


@pytest.fixture
def paper_data_dir(tmp_path):
    """A stand-in for the paper's data directory: same layout and fields, a few rows each."""
    rt, imdb = tmp_path / "rtpolarity", tmp_path / "imdb"
    rt.mkdir(), imdb.mkdir()
    rows = toy_examples(20)
    for name, part in (("train", rows[:24]), ("validation", rows[24:])):
        (rt / f"{name}.jsonl").write_text("".join(
            json.dumps({"id": i, "inputs": ex.text + " \n", "label": ex.label}) + "\n" for i, ex in enumerate(part)))
        (imdb / f"{name}_len256.jsonl").write_text("".join(
            json.dumps({"text": ex.text, "label": ex.label}) + "\n" for ex in part))
    return tmp_path


@pytest.fixture
def small_split() -> dict:
    return dict(pool_per_class=4, dev_per_class=4, test_per_class=4)


def data_cfg(**kw) -> DataConfig:
    return DataConfig(**kw)
