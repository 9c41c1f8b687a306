"""The `gradmm` command: one subcommand per pipeline stage, each reading its params.yaml sections."""

import argparse
import logging
import sys
import traceback

from tqdm.contrib.logging import logging_redirect_tqdm

from gradmm.commands import (
    cmd_baseline,
    cmd_compare_cells,
    cmd_compare_results,
    cmd_diagnose,
    cmd_evaluate,
    cmd_filter,
    cmd_finetune,
    cmd_generate,
    cmd_gradient_agreement,
    cmd_gradient_agreement_report,
    cmd_info,
    cmd_mlflow_import,
    cmd_prepare,
    cmd_privacy_attacks,
    cmd_profile,
    cmd_quality_scoreboard,
    cmd_runtimes,
    cmd_study,
    cmd_study_report,
    cmd_transfer,
    cmd_transfer_report,
)

log = logging.getLogger("gradmm")
# Mistakes in what the user gave (bad values, missing or unreadable files, unwritable outputs, missing fields):
# one line and exit code 2, the traceback only with -v.
USER_ERRORS = (ValueError, OSError, KeyError)


def _ray_args(p) -> None:
    p.add_argument("--ray-workers", type=_at_least(0), default=0, help="run the ADMM batches on this many Ray "
                   "actors (one GPU each where the model runs on a GPU); 0 = here (other processes running the same "
                   "command share the work)")
    p.add_argument("--ray-address", help="a running Ray cluster ('auto', 'ray://host:10001'; default: RAY_ADDRESS, "
                   "else a local cluster of --ray-workers CPUs)")


def _at_least(low: int):
    """An argparse type: an integer ≥ low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer ≥ {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be ≥ {low}, got {value}")
        return value
    return parse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a params value, e.g. --set data.dataset=rtpolarity (repeatable)")
    # also after the subcommand; SUPPRESS keeps a `gradmm -v <cmd>` from being reset by this parser's default
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging, tracebacks")












































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
    p.add_argument("--shots", type=_at_least(0), default=0, help="in-context demonstrations per class (default 0)")
    p.add_argument("--split", default="test", choices=["dev", "test"])
    p.add_argument("--seed", type=_at_least(0), default=0, help="seed for the choice of demonstrations")
    p.add_argument("--batch-size", type=_at_least(1), default=16)
    p.add_argument("--output", help="write the result as JSON here")
    p.set_defaults(func=cmd_evaluate)

    def stage(name, help_text, func, needs_out=True):
        p = sub.add_parser(name, help=help_text)
        _common(p)
        p.add_argument("--model", help="model name (overrides model.name)")
        p.add_argument("--dataset", help="dataset name (overrides data.dataset)")
        p.add_argument("--data-dir", help="folder holding rtpolarity/ and imdb/")
        p.add_argument("--template", help="template name or string with {text} (overrides data.template)")
        p.add_argument("--task", help="a prepared task folder (gradmm prepare); default: built from data params")
        p.add_argument("--out", required=needs_out, help="where to write")
        p.set_defaults(func=func)
        return p

    p = stage("prepare", "de-duplicate and split a dataset into pool/dev/test jsonl", cmd_prepare)
    p.set_defaults(task=None)
    p = stage("generate", "GRADMM: class targets, ADMM batches, raw synthetic texts (resumable)", cmd_generate)
    p.add_argument("--variant", help="a generator variant (gradmm, gradmm_dp, gradmm_no_projection, ...)")
    p.add_argument("--seed", type=_at_least(0), help="overrides generate.seed")
    p.add_argument("--archive-stale", action="store_true",
                   help="move a run directory holding other params to .archive/ beside it instead of refusing")
    _ray_args(p)
    p = stage("filter", "label-consistency filter, rank by match loss, balance -> training set", cmd_filter)
    p.add_argument("--raw", required=True, help="raw.jsonl written by `gradmm generate`")
    p.add_argument("--variant", help="the generator variant the raw texts came from (its dp settings apply)")
    p.add_argument("--n-per-class", type=_at_least(1), help="overrides filter.n_per_class")
    p.add_argument("--no-filter-out", help="also write the same budget without the filter here")
    p = stage("baseline", "the training set of a baseline method (random_real, herding, llm_zero_shot_gen, ...)",
              cmd_baseline)
    p.add_argument("--method", required=True)
    p.add_argument("--seed", type=_at_least(0), default=0)
    p.add_argument("--n-per-class", type=_at_least(1), help="the budget n (default: experiment.n_per_class's only one)")
    p = stage("finetune", "fine-tune on a training set (or score in context) and report test accuracy", cmd_finetune)
    p.add_argument("--method", required=True, help="the method the training set belongs to")
    p.add_argument("--train", required=True, help="training set jsonl (text, label)")
    p.add_argument("--seed", type=_at_least(0), default=0)
    p.add_argument("--n-per-class", type=_at_least(1),
                   help="the budget n the set was made for (recorded in the result)")
    p.add_argument("--mlflow-root", help="log the run live into the MLflow store in this folder (mlflow.db): loss "
                   "per step, dev accuracy per LR, then the result, its params and training set (default: no logging)")

    p = stage("diagnose", "does the class target separate the classes? f of synthetic, real and random sets",
              cmd_diagnose, needs_out=False)
    p.add_argument("--synthetic", help="a synthetic jsonl (raw.jsonl or a training set) to place beside the references")
    p.add_argument("--set-size", type=_at_least(1), default=10)
    p.add_argument("--n-sets", type=_at_least(1), default=5)
    p.add_argument("--seed", type=_at_least(0), default=0)

    p = stage("study", "one dataset × method cell of the variants study (does matching the gradient add value?): "
              "generate, filter, fine-tune over study.seeds (resumable)", cmd_study)
    p.add_argument("--method", required=True, help="a GRADMM variant or a study baseline (study.methods)")
    p.add_argument("--screen", action="store_true", help="a cell of the screen (study.screen replaces the study's "
                   "datasets, n_per_class and methods)")
    _ray_args(p)
    p = stage("privacy-attacks", "membership inference on fine-tuned models, canaries and the DP sweep for one "
              "dataset (privacy section; resumable)", cmd_privacy_attacks)
    p.add_argument("--study", default="studies/variants", help="the variants study's cells (<study>/<dataset>/<method>/)")
    p = stage("transfer", "fine-tune a target model (transfer.targets) on the study's sets and its own baselines "
              "(resumable)", cmd_transfer)
    p.add_argument("--target", required=True, help="a causal LM name or 'minilm' (the linear probe)")
    p.add_argument("--study", default="studies/variants", help="the variants study's cells (the source sets)")
    p = sub.add_parser("transfer-report", help="transfer: reports/tables/transfer.{csv,md}, figures/transfer.png")
    p.add_argument("--runs", default="studies/transfer", help="<runs>/<dataset>/<target>/<method>/")
    p.add_argument("--reports", default="reports")
    p.add_argument("--study", default=None, help="add the source model's own results from these study cells "
                   "(the transfer section's datasets, methods, n_per_class and seeds)")
    p.add_argument("--params", default="params.yaml", help="the transfer section, with --study")
    p.add_argument("--name", default="transfer", help="file name of the table and figure (e.g. transfer_reverse)")
    p.set_defaults(func=cmd_transfer_report)
    p = sub.add_parser("study-report", help="variants study: reports/tables/variants.{csv,md}, figures/variants.png")
    p.add_argument("--runs", default="studies/variants", help="the study's cells (<runs>/<dataset>/<method>/)")
    p.add_argument("--reports", default="reports")
    p.add_argument("--params", default="params.yaml", help="params logged with each MLflow run")
    p.add_argument("--no-mlflow", action="store_true", help="write the tables and figure only")
    p.add_argument("--name", default="variants", help="file name of the tables and figure (e.g. quality)")
    p.add_argument("--samples", type=_at_least(0), default=0, help="sample texts per class and cell in the table")
    p.add_argument("--mlflow-root", help="the folder of the MLflow store (default: the params file's folder)")
    p.set_defaults(func=cmd_study_report)

    p = sub.add_parser("mlflow-import", help="fill the MLflow store (mlflow.db) from committed results: one run "
                       "per result JSON with its training set; re-running adds none twice")
    p.add_argument("runs", nargs="?", help="<runs>/<dataset>/results/*.json (default: studies/full-profile/runs, "
                   "the committed full profile)")
    p.add_argument("--experiment", help="default: 01_classification, the experiment of notebook 01")
    p.add_argument("--project-root", default=".", help="the folder of mlflow.db and mlartifacts/")
    p.set_defaults(func=cmd_mlflow_import)

    p = sub.add_parser("compare-results", help="a re-run's classification.csv against the committed one, run by run")
    p.add_argument("committed", help="e.g. reports/tables/classification.csv")
    p.add_argument("rerun", help="e.g. .quick/reports/tables/classification.csv (scripts/quick.sh)")
    p.set_defaults(func=cmd_compare_results)

    p = sub.add_parser("compare-cells", help="one study cell run in several studies (e.g. fp32 and the fast path): "
                       "accuracy, seed spread, f(Z), Welch's p against the first")
    p.add_argument("studies", nargs="+", help="LABEL=FOLDER: each study's cells (<folder>/<dataset>/<method>/); "
                   "LABEL=FOLDER@METHOD: that study's cell of another method")
    p.add_argument("--dataset", required=True)
    p.add_argument("--method", required=True, help="the cell's method where a study names none")
    p.add_argument("--out", help="write the table here (csv)")
    p.set_defaults(func=cmd_compare_cells)

    p = sub.add_parser("quality-scoreboard", help="every setting of the quality studies against the quality goal "
                       "(LM text + 5, real text − 1), and the setting the dev splits pick")
    p.add_argument("studies", nargs="+", help="study folders (<folder>/<dataset>/<method>/)")
    p.add_argument("--out", required=True, help="written as <out>.csv and <out>.md")
    p.set_defaults(func=cmd_quality_scoreboard)

    p = sub.add_parser("gradient-agreement", help="for every training set of the given studies: the distance of "
                       "its gradients (head, last block, all blocks, all weights) to the dev split's, beside the "
                       "accuracy it fine-tuned to; resumes an interrupted run")
    _common(p)
    p.add_argument("--task", required=True, help="a prepared task folder (its dev split is the reference)")
    p.add_argument("--studies", nargs="+", required=True, help="study folders (<study>/<dataset>/<method>/)")
    p.add_argument("--out", required=True, help="the table of sets (csv)")
    p.set_defaults(func=cmd_gradient_agreement)

    p = sub.add_parser("gradient-agreement-report", help="Spearman's rho of each gradient distance with accuracy, "
                       "per dataset: table, markdown and figure")
    p.add_argument("tables", nargs="+", help="tables of sets written by `gradmm gradient-agreement`")
    p.add_argument("--out", required=True, help="the correlations (csv)")
    p.add_argument("--markdown", required=True)
    p.add_argument("--figure", required=True)
    p.set_defaults(func=cmd_gradient_agreement_report)

    p = sub.add_parser("runtimes", help="stage runtimes of a full-profile run (its times.tsv), per stage and dataset")
    p.add_argument("times", nargs="?", default="studies/full-profile/times.tsv")
    p.set_defaults(func=cmd_runtimes)

    p = sub.add_parser("profile", help="switch params.yaml to a profile (full, paper); quick is the committed one")
    p.add_argument("name", help="a file name in profiles/ without .yaml: full | paper")
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=cmd_profile)

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
        except Exception as err:
            user_error = isinstance(err, USER_ERRORS)
            if args.verbose:
                traceback.print_exc()
            message = err.args[0] if isinstance(err, KeyError) and err.args else err  # str(KeyError) adds quotes
            if not user_error:  # a bug: one line too, and how to see where it is
                message = f"internal {type(err).__name__}: {message}" + ("" if args.verbose else " (-v: the traceback)")
            print(f"gradmm {args.command}: error: {message}", file=sys.stderr)
            return 2 if user_error else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
