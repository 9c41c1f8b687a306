"""The classification experiment: every method's training set and score at an equal budget, per dataset.

Every method ends, per budget n and seed, as a training set `runs/<dataset>/trainsets/<method>-n<n>-seed<s>.jsonl`
and a result `runs/<dataset>/results/<method>-n<n>-seed<s>.json` (trainset_file, result_file). The DVC stages
make them one by one through the CLI; `produce_missing` makes them in-process (the notebook's tiny test) with
the same functions (gradmm.methods.trainsets).
"""

from pathlib import Path

from gradmm.config import (
    DataConfig,
    DPConfig,
    ExperimentConfig,
    FilterConfig,
    FinetuneConfig,
    GenerateConfig,
    ModelConfig,
    load_config,
    read_params,
)
from gradmm.core.data import load_task, task_from_dir, write_task
from gradmm.core.models import load_model
from gradmm.io.records import read_jsonl, write_json, write_jsonl
from gradmm.methods import registry
from gradmm.methods.generate import generate
from gradmm.methods.trainsets import evaluate_method, make_trainset


def trainset_file(runs_dir: str | Path, dataset: str, method: str, n: int, seed: int) -> Path:
    return Path(runs_dir) / dataset / "trainsets" / f"{method}-n{n}-seed{seed}.jsonl"


def result_file(runs_dir: str | Path, dataset: str, method: str, n: int, seed: int) -> Path:
    return Path(runs_dir) / dataset / "results" / f"{method}-n{n}-seed{seed}.json"


def experiment_settings(params: dict, datasets=None, methods=None, seeds=None, model=None, n_per_class=None) -> dict:
    """The notebook's settings: each one given (not None) wins, the rest come from params.yaml
    (experiment.datasets/methods/seeds/n_per_class, model.name), as the DVC stages see them."""
    exp, model_section = params.get("experiment") or {}, params.get("model") or {}
    out = {"datasets": datasets if datasets is not None else exp.get("datasets"),
           "methods": methods if methods is not None else exp.get("methods"),
           "seeds": seeds if seeds is not None else exp.get("seeds"),
           "model": model if model is not None else model_section.get("name"),
           "n_per_class": n_per_class if n_per_class is not None else exp.get("n_per_class")}
    unset = [k for k, v in out.items() if v is None]
    if unset:
        raise ValueError(f"{unset} are neither notebook parameters nor set in the params file "
                         "(experiment.datasets/methods/seeds/n_per_class, model.name)")
    if not isinstance(out["n_per_class"], (list, tuple)):  # a single budget is a grid of one
        out["n_per_class"] = [out["n_per_class"]]
    return out


def produce_missing(missing: list[tuple[str, str, int, int]], runs_dir: str | Path, model: str,
                    params_file: str | Path = "params.yaml", progress: bool = True) -> list[Path]:
    """Make the missing (dataset, method, n, seed) results in-process, as the DVC stages would, into the same files.

    The settings come from params_file (the model name from the argument, each budget from its tuple); a
    dataset's prepared task in runs_dir/<dataset>/data is used when present, else it is prepared there.
    """
    if not missing:
        return []
    runs_dir, written = Path(runs_dir), []
    model_cfg = load_config(ModelConfig, "model", params_file, [f"model.name={model}"])
    lm, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
    for dataset in dict.fromkeys(d for d, _, _, _ in missing):
        data_dir = runs_dir / dataset / "data"
        if not (data_dir / "meta.json").is_file():  # the prepare stage
            write_task(load_task(load_config(DataConfig, "data", params_file, [f"data.dataset={dataset}"])), data_dir)
        task = task_from_dir(data_dir)
        params = read_params(params_file)
        for _, method, n, seed in [m for m in missing if m[0] == dataset]:
            base = [f"model.name={model}", f"experiment.n_per_class={n}", f"filter.n_per_class={n}"]
            exp = load_config(ExperimentConfig, "experiment", params_file, base)
            finetune_cfg = load_config(FinetuneConfig, "finetune", params_file, base)
            train = trainset_file(runs_dir, dataset, method, n, seed)
            generator = registry.generator_of(method)
            if generator:  # the generate and filter stages
                overrides = base + registry.variant_overrides(generator, params) + [f"generate.seed={seed}"]
                gen = load_config(GenerateConfig, "generate", params_file, overrides)
                dp = load_config(DPConfig, "dp", params_file, overrides)
                out = runs_dir / dataset / "generated" / f"{generator}-seed{seed}"  # shared by every budget
                generate(task, model_cfg, gen, dp, out, progress=progress, archive_stale=True)
                filter_cfg = load_config(FilterConfig, "filter", params_file, overrides)
                rows, _ = make_trainset(method, lm, tok, task, exp, seed, filter_cfg, progress,
                                        raw=read_jsonl(out / "raw.jsonl"), private=dp.enabled)
            else:  # the baseline stage
                filter_cfg = load_config(FilterConfig, "filter", params_file, base)
                rows, _ = make_trainset(method, lm, tok, task, exp, seed, filter_cfg, progress=progress)
            write_jsonl(train, rows)
            result = evaluate_method(method, rows, lm, tok, task, finetune_cfg, seed, progress)  # the finetune stage
            result.update(dataset=task.name, model=model_cfg.name, n_per_class=n, train_file=str(train))
            path = result_file(runs_dir, dataset, method, n, seed)
            write_json(path, result)
            written.append(path)
    return written
