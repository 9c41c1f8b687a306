"""What each `gradmm` subcommand does: read its params sections, check them before any expensive work, call the
package, print a summary. gradmm.cli parses the command line and dispatches here."""

import json
import platform
import time
from pathlib import Path

import torch

from gradmm import __version__
from gradmm.config import (
    DataConfig,
    DPConfig,
    ExperimentConfig,
    FilterConfig,
    FinetuneConfig,
    GenerateConfig,
    ModelConfig,
    PrivacyConfig,
    StudyConfig,
    apply_profile,
    load_config,
    read_params,
)
from gradmm.core import admm
from gradmm.core.data import DATASETS, check_dataset_name, load_task, task_from_dir, write_task
from gradmm.core.diagnostics import format_distances, target_distances
from gradmm.core.models import OFFLINE_MODELS, check_model_name, load_model
from gradmm.core.scoring import icl_accuracy
from gradmm.experiments import gradient_agreement
from gradmm.experiments.privacy import check_privacy, run_attacks
from gradmm.experiments.transfer import run_target, settings
from gradmm.experiments.variants import check_study, finetune_overrides, run_cell, screen_config
from gradmm.io.paths import PROJECT_ROOT, cache_dir, data_dir
from gradmm.io.ray_engine import Engine, check_engine
from gradmm.io.records import check_writable, read_text_rows, write_json, write_jsonl
from gradmm.methods import filtering, finetune, registry
from gradmm.methods.generate import check_dp, generate
from gradmm.methods.registry import BASELINES, check_method, variant_overrides, variant_settings
from gradmm.methods.trainsets import at_budget, check_experiment, evaluate_method, make_trainset
from gradmm.reporting import gradient_agreement as agreement_report
from gradmm.reporting import transfer, variants
from gradmm.reporting.classification import compare_tables
from gradmm.reporting.privacy import attack_tables, membership_summary
from gradmm.reporting.runtimes import read_stage_times, runtime_summary
from gradmm.reporting.scoreboard import write_scoreboard
from gradmm.reporting.tracking import (
    CLASSIFICATION_EXPERIMENT,
    DEFAULT_IMPORT_DIR,
    LiveRun,
    import_results,
    tracking_uri,
)


def _data_model(args) -> tuple[DataConfig, ModelConfig]:
    overrides = list(args.overrides)
    for flag, key in (("dataset", "data.dataset"), ("data_dir", "data.data_dir"), ("template", "data.template"),
                      ("model", "model.name"), ("device", "model.device")):
        if getattr(args, flag, None) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    data_cfg = load_config(DataConfig, "data", args.params, overrides)
    model_cfg = load_config(ModelConfig, "model", args.params, overrides)
    check_dataset_name(data_cfg.dataset)  # cheap checks before any model is loaded
    check_model_name(model_cfg.name)
    return data_cfg, model_cfg


def cmd_evaluate(args) -> dict:
    data_cfg, model_cfg = _data_model(args)
    if args.output:
        check_writable(Path(args.output))
    task = load_task(data_cfg)  # data errors surface before the model loads
    model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
    start = time.perf_counter()
    result = icl_accuracy(model, tok, task, args.shots, args.split, args.seed, args.batch_size)
    result.update(model=model_cfg.name, dataset=task.name, template=task.template.format,
                  wall_seconds=round(time.perf_counter() - start, 2))
    print(f"{task.name} {args.split} ({result['n']} texts), {model_cfg.name}, {args.shots}-shot per class: "
          f"accuracy {result['accuracy']:.3f}  prediction shares {[round(s, 3) for s in result['prediction_shares']]}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _task(args, data_cfg: DataConfig):
    """The prepared task folder given by --task, else the task built from the data params."""
    if getattr(args, "task", None) and getattr(args, "template", None):
        raise ValueError(f"--template {args.template!r} with --task {args.task}: a prepared task keeps the template "
                         "it was prepared with; pass --template to `gradmm prepare` instead")
    return task_from_dir(Path(args.task)) if getattr(args, "task", None) else load_task(data_cfg)


def _rows_task_model(args, data_cfg, model_cfg, path: str, what: str):
    """The jsonl rows a stage reads, its task and its model; a missing file fails before the model loads."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist: {what}")
    rows, task = read_text_rows(Path(path)), _task(args, data_cfg)
    return rows, task, *load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)


def _variant(args) -> list[str]:
    if getattr(args, "variant", None) is None:
        return list(args.overrides)
    return variant_overrides(args.variant, read_params(args.params)) + list(args.overrides)  # explicit --set wins


def cmd_prepare(args) -> None:
    data_cfg, _ = _data_model(args)
    check_writable(Path(args.out), directory=True)
    task = load_task(data_cfg)
    write_task(task, Path(args.out))
    print(f"{task.name}: pool {len(task.pool)}, dev {len(task.dev)}, test {len(task.test)} -> {args.out}")


def cmd_generate(args) -> dict:
    overrides = _variant(args)
    if args.seed is not None:
        overrides.append(f"generate.seed={args.seed}")
    data_cfg, model_cfg = _data_model(args)
    gen = load_config(GenerateConfig, "generate", args.params, overrides)
    dp = load_config(DPConfig, "dp", args.params, overrides)
    admm.check_config(gen)
    check_dp(dp, gen)
    engine = Engine(args.ray_workers, args.ray_address)
    check_engine(engine)
    check_writable(Path(args.out), directory=True)
    metrics = generate(_task(args, data_cfg), model_cfg, gen, dp, Path(args.out), archive_stale=args.archive_stale,
                       engine=engine)
    for c in metrics["classes"]:
        print(f"{c['class']}: L={c['seq_len']} f(Z) per batch {[round(v, 4) for v in c['f_Z']]} "
              f"log-ppl {c['mean_log_perplexity']:.2f}" + (f" SNR {c['snr']:.2e}" if c["snr"] is not None else ""))
    print(f"{metrics['n_raw']} raw texts in {Path(args.out) / 'raw.jsonl'}")
    return metrics


def cmd_filter(args) -> dict:
    overrides = _variant(args)
    data_cfg, model_cfg = _data_model(args)
    cfg = load_config(FilterConfig, "filter", args.params, overrides)
    if args.n_per_class is not None:
        cfg.n_per_class = args.n_per_class
    dp = load_config(DPConfig, "dp", args.params, overrides)
    filtering.check_config(cfg)
    for path in (args.out, args.no_filter_out):
        if path:
            check_writable(Path(path))
    rows, task, model, tok = _rows_task_model(args, data_cfg, model_cfg, args.raw, "raw texts (run `gradmm generate` first)")
    method = args.variant or "gradmm"
    kept, info = make_trainset(method, model, tok, task, None, 0, cfg, raw=rows, private=dp.enabled, n=cfg.n_per_class)
    stats = info["filter"]
    out = Path(args.out)
    write_jsonl(out, kept)
    write_json(out.with_name(out.stem + "_filter.json"), stats)
    print(f"kept per class {stats['kept']} of raw {stats['raw']} -> {out}"
          + (" — EMPTY training set" if stats["empty"] else f" — short classes {stats['short']}" if stats["short"] else ""))
    if args.no_filter_out:  # the same budget without the filter (the gradmm_no_filter ablation)
        unfiltered, _ = make_trainset(f"{method}_no_filter", model, tok, task, None, 0, cfg, progress=False, raw=rows,
                                      private=dp.enabled, n=cfg.n_per_class)
        write_jsonl(Path(args.no_filter_out), unfiltered)
    return stats


def _experiment(args):
    """The experiment section at this call's budget (--n-per-class, else experiment.n_per_class's only one)."""
    cfg = load_config(ExperimentConfig, "experiment", args.params, args.overrides)
    check_experiment(cfg)
    return at_budget(cfg, args.n_per_class)


def cmd_baseline(args) -> dict:
    if args.method not in BASELINES:
        raise ValueError(f"unknown baseline {args.method!r}: use one of {list(BASELINES)}")
    data_cfg, model_cfg = _data_model(args)
    exp = _experiment(args)
    filter_cfg = load_config(FilterConfig, "filter", args.params, args.overrides)
    filter_cfg.n_per_class = exp.n_per_class
    check_writable(Path(args.out))
    task = _task(args, data_cfg)
    model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
    rows, info = make_trainset(args.method, model, tok, task, exp, args.seed, filter_cfg)
    write_jsonl(Path(args.out), rows)
    write_json(Path(args.out).with_suffix(".info.json"), info)
    print(f"{args.method}: {len(rows)} texts -> {args.out}")
    return info


def cmd_finetune(args) -> dict:
    check_method(args.method)
    data_cfg, model_cfg = _data_model(args)
    exp = _experiment(args)
    cfg = load_config(FinetuneConfig, "finetune", args.params, args.overrides)
    finetune.check_config(cfg)
    check_writable(Path(args.out))  # not found only after the training
    rows, task, model, tok = _rows_task_model(args, data_cfg, model_cfg, args.train, "training set")
    live = None
    if args.mlflow_root and registry.get(args.method).finetuned:
        live = LiveRun(CLASSIFICATION_EXPERIMENT, {"dataset": task.name, "model": model_cfg.name, "method": args.method,
                                                   "n_per_class": exp.n_per_class, "seed": args.seed},
                       read_params(args.params), args.mlflow_root)
    try:
        result = evaluate_method(args.method, rows, model, tok, task, cfg, args.seed,
                                 log_metric=live.log_metric if live else None)
    except BaseException:
        if live:
            live.fail()
        raise
    result.update(dataset=task.name, model=model_cfg.name, n_per_class=exp.n_per_class, train_file=str(args.train))
    write_json(Path(args.out), result)
    if live:
        # the result key is the path below <runs>/ (runs/<dataset>/results/<file>), as the report's
        live.finish(args.out, Path(args.out).resolve().parents[2], Path(args.mlflow_root) / "reports" / "figures")
    if result.get("empty_trainset"):
        print(f"{task.name} {args.method} seed {args.seed}: EMPTY training set, no accuracy (recorded in {args.out})")
        return result
    print(f"{task.name} {args.method} seed {args.seed}: test accuracy {result['test_accuracy']:.3f} "
          f"(shares {[round(x, 2) for x in result['test_prediction_shares']]}, {result['wall_seconds']} s)")
    return result


def cmd_diagnose(args) -> list:
    data_cfg, model_cfg = _data_model(args)
    if args.out:
        check_writable(Path(args.out))
    synthetic = read_text_rows(Path(args.synthetic)) if args.synthetic else None
    task = _task(args, data_cfg)
    model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
    rows = target_distances(model, tok, task, synthetic, args.set_size, args.n_sets, args.seed)
    print("match loss f of text sets against each class target (mean ± std over sets; lower = closer)")
    print(format_distances(rows))
    if args.out:
        write_json(Path(args.out), rows)
    return rows


def cmd_study(args) -> list:
    data_cfg, model_cfg = _data_model(args)
    cfg = load_config(StudyConfig, "study", args.params, args.overrides)
    if args.screen:
        cfg = screen_config(cfg)
    check_study(cfg)
    if args.method not in cfg.methods:
        raise ValueError(f"method {args.method!r} is not in study.{'screen.' if args.screen else ''}methods {cfg.methods}")
    ft = load_config(FinetuneConfig, "finetune", args.params, finetune_overrides(cfg) + list(args.overrides))
    finetune.check_config(ft)
    engine = Engine(args.ray_workers, args.ray_address)
    check_engine(engine)
    check_writable(Path(args.out), directory=True)
    results = run_cell(_task(args, data_cfg), args.method, cfg, args.params, model_cfg, ft,
                       load_config(FilterConfig, "filter", args.params, args.overrides),
                       load_config(ExperimentConfig, "experiment", args.params, args.overrides), Path(args.out),
                       overrides=args.overrides, engine=engine)
    accs = [r["test_accuracy"] for r in results if not r.get("empty_trainset")]
    empty = f", {len(results) - len(accs)} with an EMPTY training set (no accuracy)" if len(accs) < len(results) else ""
    print(f"{args.method}: {len(results)} runs{empty}" + (f", test accuracy mean {sum(accs) / len(accs):.3f} "
          f"(min {min(accs):.3f}, max {max(accs):.3f})" if accs else "") + f" -> {args.out}")
    return results


def cmd_privacy_attacks(args) -> dict:
    data_cfg, model_cfg = _data_model(args)
    cfg = load_config(PrivacyConfig, "privacy", args.params, args.overrides)
    check_privacy(cfg)
    study = load_config(StudyConfig, "study", args.params, args.overrides)
    check_study(study)
    ft = load_config(FinetuneConfig, "finetune", args.params, finetune_overrides(study) + list(args.overrides))
    finetune.check_config(ft)
    check_writable(Path(args.out), directory=True)
    run_attacks(_task(args, data_cfg), cfg, study, args.params, model_cfg, ft,
                load_config(FilterConfig, "filter", args.params, args.overrides),
                load_config(ExperimentConfig, "experiment", args.params, args.overrides), Path(args.study), Path(args.out))
    tables = attack_tables(Path(args.out).parent, Path(args.study))
    if len(tables["membership"]):
        print(membership_summary(tables["membership"]).to_string())
    return tables


def cmd_transfer(args) -> list:
    data_cfg, model_cfg = _data_model(args)
    cfg, _, ft = settings(args.params, args.overrides)
    if args.target not in cfg.targets:
        raise ValueError(f"target {args.target!r} is not in transfer.targets {cfg.targets}")
    check_writable(Path(args.out), directory=True)
    results = run_target(_task(args, data_cfg), args.target, cfg, Path(args.study), model_cfg, ft, Path(args.out))
    print(f"{args.target}: {len(results)} runs -> {args.out}")
    return results


def cmd_transfer_report(args) -> None:
    cfg = settings(args.params)[0] if args.study else None
    transfer.write_report(args.runs, args.reports, args.study, cfg, args.name)
    print((Path(args.reports) / "tables" / f"{args.name}.md").read_text())


def cmd_study_report(args) -> None:
    df = variants.write_report(args.runs, args.reports, None if args.no_mlflow else args.params, args.name,
                               project_root=args.mlflow_root, samples=args.samples)
    print((Path(args.reports) / "tables" / f"{args.name}.md").read_text())
    print(f"{len(df)} runs -> {args.reports}/tables/{args.name}.csv, {args.reports}/figures/{args.name}.png")


def cmd_mlflow_import(args) -> None:
    args.experiment = args.experiment or CLASSIFICATION_EXPERIMENT
    c = import_results(args.runs or DEFAULT_IMPORT_DIR, args.experiment, args.project_root)
    failed = f", {c['failed']} failed (see the warnings)" if c["failed"] else ""
    print(f"mlflow-import: {c['added']} runs added, {c['skipped']} skipped as existing, {c['trainsets_missing']} "
          f"training sets missing (tag gradmm.trainset_missing){failed}, report run {'added' if c['report'] else 'kept'}"
          f" -> experiment {args.experiment!r} at {tracking_uri(args.project_root)}; browse them: make ui")


def cmd_compare_results(args) -> None:
    for path in (args.committed, args.rerun):
        if not Path(path).is_file():
            raise SystemExit(f"compare-results: no table at {path} (a classification.csv written by the report stage)")
    print(compare_tables(args.committed, args.rerun)[1])


def cmd_compare_cells(args) -> None:
    studies = {}
    for item in args.studies:
        label, sep, folder = item.rpartition("=")
        folder, at, method = folder.partition("@")  # FOLDER@METHOD: that study's cell of another method
        if at:
            registry.check_method(method)
        if not sep or not label or not Path(folder).is_dir():
            raise ValueError(f"compare-cells: {item!r} is not LABEL=FOLDER[@METHOD] with an existing folder of study cells")
        studies[label] = (Path(folder), method or args.method)
    table = variants.compare_cells(studies, args.dataset)
    if args.out:
        check_writable(Path(args.out))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.round(4).to_csv(args.out, index=False)
    print(table.round(3).to_string(index=False))


def cmd_quality_scoreboard(args) -> None:
    missing = [s for s in args.studies if not Path(s).is_dir()]
    if missing:
        raise ValueError(f"quality-scoreboard: no study folder at {missing}")
    out = Path(args.out)
    for path in (out.with_suffix(".csv"), out.with_suffix(".md")):
        check_writable(path)
    write_scoreboard([Path(s) for s in args.studies], out)
    print(out.with_suffix(".md").read_text())


def cmd_gradient_agreement(args) -> list:
    _, model_cfg = _data_model(args)
    task = task_from_dir(Path(args.task))
    studies = [Path(s) for s in args.studies]
    for study in studies:
        if not study.is_dir():
            raise ValueError(f"gradient-agreement: study folder {study} does not exist")
    out = Path(args.out)
    check_writable(out)
    sets = gradient_agreement.collect_sets(studies, task.name)
    if not sets:
        raise ValueError(f"gradient-agreement: no {task.name} training set with fine-tuning results under "
                         f"{[str(s) for s in studies]}")
    model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
    partial = out.with_suffix(".partial.jsonl")  # finished rows of an interrupted run
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = gradient_agreement.measure_sets(model, tok, task, sets, partial=partial)
    import pandas as pd

    pd.DataFrame(rows).round(6).to_csv(out, index=False)
    partial.unlink(missing_ok=True)
    print(f"{task.name}: {len(rows)} training sets measured -> {out}")
    return rows


def cmd_gradient_agreement_report(args) -> None:
    for path in args.tables:
        if not Path(path).is_file():
            raise ValueError(f"gradient-agreement-report: no table at {path} (written by `gradmm gradient-agreement`)")
    corr = agreement_report.write_report([Path(p) for p in args.tables], Path(args.out), Path(args.markdown),
                                         Path(args.figure))
    print(agreement_report.markdown(corr))


def cmd_runtimes(args) -> None:
    times = Path(args.times)
    if not times.is_file():
        raise SystemExit(f"no stage times at {times}: scripts/full_profile.sh writes <run dir>/times.tsv")
    print(runtime_summary(read_stage_times(times)).to_string(index=False, float_format=lambda x: f"{x:.2f}"))


def cmd_profile(args) -> None:
    changed = apply_profile(PROJECT_ROOT / "profiles" / f"{args.name}.yaml", args.params, variant_settings)
    print(f"profile {args.name}: {len(changed)} values changed in {args.params}"
          + (f" ({', '.join(changed)})" if changed else "") + "; `git checkout params.yaml` returns to quick")


def cmd_info(args) -> None:
    import transformers


    print(f"gradmm {__version__}, python {platform.python_version()}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"device: {'cuda (' + torch.cuda.get_device_name() + ')' if torch.cuda.is_available() else 'cpu'}, "
          f"{torch.get_num_threads()} threads")
    print(f"model cache: {cache_dir()}")
    print(f"data directory: {data_dir() or 'none (rtpolarity/imdb need --data-dir or GRADMM_DATA_DIR)'}")
    print("models:")
    for name, what in OFFLINE_MODELS.items():
        print(f"  {name:20s} {what}")
    print("  <hub id or folder>   any causal LM, e.g. microsoft/phi-1_5, meta-llama/Llama-3.2-1B (internet)")
    print("datasets:")
    for name, what in DATASETS.items():
        print(f"  {name:20s} {what}")
