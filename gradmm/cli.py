"""The `gradmm` command: one subcommand per pipeline stage, each reading its params.yaml sections."""

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from gradmm.config import load_config
from gradmm.data import DATASETS, DataConfig, check_dataset_name
from gradmm.models import OFFLINE_MODELS, ModelConfig, check_model_name

log = logging.getLogger("gradmm")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a params value, e.g. --set data.dataset=rtpolarity (repeatable)")


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
    from gradmm.data import load_task
    from gradmm.models import load_model
    from gradmm.scoring import icl_accuracy

    data_cfg, model_cfg = _data_model(args)
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


def cmd_generate(args) -> dict:
    from gradmm.admm import GenerateConfig, check_config
    from gradmm.generate import DPConfig, check_dp, generate

    data_cfg, model_cfg = _data_model(args)
    gen = load_config(GenerateConfig, "generate", args.params, args.overrides)
    dp = load_config(DPConfig, "dp", args.params, args.overrides)
    check_config(gen)
    check_dp(dp)
    metrics = generate(data_cfg, model_cfg, gen, dp, Path(args.out))
    for c in metrics["classes"]:
        print(f"{c['class']}: L={c['seq_len']} f(Z) per batch {[round(v, 4) for v in c['f_Z']]} "
              f"log-ppl {c['mean_log_perplexity']:.2f}" + (f" SNR {c['snr']:.2e}" if c["snr"] is not None else ""))
    print(f"{metrics['n_raw']} raw texts in {Path(args.out) / 'raw.jsonl'}")
    return metrics


def cmd_filter(args) -> dict:
    from gradmm.data import load_task
    from gradmm.filtering import FilterConfig, check_config, filter_rows
    from gradmm.generate import DPConfig
    from gradmm.models import load_model
    from gradmm.records import read_jsonl, write_json, write_jsonl

    data_cfg, model_cfg = _data_model(args)
    cfg = load_config(FilterConfig, "filter", args.params, args.overrides)
    dp = load_config(DPConfig, "dp", args.params, args.overrides)
    check_config(cfg)
    if not Path(args.raw).is_file():
        raise FileNotFoundError(f"raw texts {args.raw} do not exist: run `gradmm generate` first")
    rows = read_jsonl(Path(args.raw))
    task = load_task(data_cfg)
    model, tok = load_model(model_cfg.name, model_cfg.device, model_cfg.dtype)
    kept, stats = filter_rows(model, tok, task, rows, cfg, private=dp.enabled)
    out = Path(args.out)
    write_jsonl(out, kept)
    write_json(out.with_name(out.stem + "_metrics.json"), stats)
    print(f"kept per class {stats['kept']} of raw {stats['raw']} -> {out}")
    return stats


def cmd_info(args) -> None:
    import torch
    import transformers

    from gradmm import __version__
    from gradmm.paths import cache_dir, data_dir

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradmm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("evaluate", help="zero-/k-shot in-context accuracy by label-word scoring")
    _common(p)
    p.add_argument("--model", help="model name (overrides model.name)")
    p.add_argument("--dataset", help="dataset name (overrides data.dataset)")
    p.add_argument("--data-dir", help="folder holding rtpolarity/ and imdb/")
    p.add_argument("--template", help="template name or string with {text} (overrides data.template)")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--shots", type=int, default=0, help="in-context demonstrations per class (default 0)")
    p.add_argument("--split", default="test", choices=["dev", "test"])
    p.add_argument("--seed", type=int, default=0, help="seed for the choice of demonstrations")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--output", help="write the result as JSON here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("generate", help="GRADMM: class targets, ADMM batches, raw synthetic texts (resumable)")
    _common(p)
    p.add_argument("--out", required=True, help="run directory (restarting the same command resumes it)")
    p.add_argument("--model", help="model name (overrides model.name)")
    p.add_argument("--dataset", help="dataset name (overrides data.dataset)")
    p.add_argument("--data-dir", help="folder holding rtpolarity/ and imdb/")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("filter", help="label-consistency filter, rank by match loss, balance -> synthetic.jsonl")
    _common(p)
    p.add_argument("--raw", required=True, help="raw.jsonl written by `gradmm generate`")
    p.add_argument("--out", required=True, help="the filtered synthetic.jsonl to write")
    p.add_argument("--model", help="model name (overrides model.name)")
    p.add_argument("--dataset", help="dataset name (overrides data.dataset)")
    p.add_argument("--data-dir", help="folder holding rtpolarity/ and imdb/")
    p.set_defaults(func=cmd_filter)

    p = sub.add_parser("info", help="versions, device, cache, and the models and datasets known by name")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with logging_redirect_tqdm():  # logs go through tqdm.write and don't break progress bars
        try:
            args.func(args)
        except (ValueError, FileNotFoundError, KeyError) as err:
            print(f"gradmm {args.command}: error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
