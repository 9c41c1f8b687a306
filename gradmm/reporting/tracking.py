"""MLflow logging of the experiment results: an explicit sqlite store, one run per (dataset, method, seed).

Results never depend on MLflow: the notebook writes reports/ first, and any MLflow failure (a locked or
foreign database, a missing package) becomes a warning. Since MLflow 3.7 the default store is
`sqlite:///mlflow.db` relative to wherever the process runs and a plain `./mlruns` file store raises: the
URI is therefore always set explicitly to `<project root>/mlflow.db`, artifacts to `<project root>/mlartifacts`
(both git-ignored). MLFLOW_TRACKING_URI, when set, wins (a shared server, say).

Runs are named after their knobs, `rtpolarity-smollm2-135m-gradmm-n5-seed0-1a2b3c`, the suffix being the
params hash, and tagged with what MLflow does not reliably record: git commit, params hash, device, seed,
library versions. Re-running logs new runs next to the old ones (compare them by the params_hash tag); the report
files shared by all runs go once into one report run. import_results (`gradmm mlflow-import`) fills a store from
committed results and skips those already in it (tag gradmm.result_key).
"""

import contextlib
import functools
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from gradmm import __version__
from gradmm.config import as_dict, build, read_params, section_classes
from gradmm.io.records import read_json
from gradmm.methods.registry import generator_of, variant_settings
from gradmm.reporting import classification as report
from gradmm.reporting.classification import health_figure_path

MAX_PARAM_CHARS = 500  # MLflow's limit on a param value
CLASSIFICATION_EXPERIMENT = "01_classification"  # notebooks/01_classification.ipynb's mlflow_experiment
DEFAULT_IMPORT_DIR = "studies/full-profile/runs"  # the committed full-profile results
RESULT_KEY_TAG = "gradmm.result_key"  # which result file (path and content) a run holds: re-imports skip it
TRAINSET_MISSING_TAG = "gradmm.trainset_missing"
REPORT_KIND_TAG = "gradmm.kind"  # "report" on the run holding the report files
QUIET_LOGGERS = ("alembic", "mlflow.store.db.utils", "mlflow.tracking._tracking_service.client")


def tracking_uri(project_root: str | Path = ".") -> str:
    """sqlite:///<root>/mlflow.db (absolute, so it does not depend on the working directory)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path(project_root).resolve() / 'mlflow.db').as_posix()}"


def artifact_location(project_root: str | Path = ".") -> str:
    return (Path(project_root).resolve() / "mlartifacts").as_uri()


@contextlib.contextmanager
def quiet():
    """Silence the sqlite store's SQLAlchemy deprecation warning and the migrations' INFO lines."""
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # SADeprecationWarning subclasses it
        warnings.filterwarnings("ignore", message=".*noload.*")
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


# ------------------------------------------------------------------------------------ what is recorded
def git_commit(project_root: str | Path = ".") -> str:
    """HEAD's commit, with `-dirty` when tracked files differ from it; "unknown" outside a git repository."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=project_root, capture_output=True, text=True, timeout=10)
        head = run("rev-parse", "HEAD")
        if head.returncode:
            return "unknown"
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)  # metadata.version reads package files: ~10 ms a run
def library_versions() -> dict[str, str]:
    out = {"gradmm": __version__}
    for name in ("torch", "transformers", "mlflow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_name(device: str = "auto") -> str:
    """The device a model.device setting resolves to here (cuda:<GPU name> or cpu)."""
    try:
        if device in ("auto", "cuda") or device.startswith("cuda"):
            if torch.cuda.is_available():
                return f"cuda:{torch.cuda.get_device_name()}"
        return "cpu" if device == "auto" else device
    except Exception:  # noqa: BLE001 - a tag must never fail the logging
        return device


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    """{'generate': {'rho': 0.1}} -> {'generate.rho': '0.1'}; lists as JSON; values cut to MLflow's 500 chars."""
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple, bool)) or value is None else str(value)
            out[name] = text[:MAX_PARAM_CHARS]
    return out


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


# The params.yaml sections a method's result depends on (its own stages' sections).
BASELINE_SECTIONS = ("data", "model", "filter", "finetune", "experiment")
GENERATOR_SECTIONS = ("data", "model", "generate", "dp", "filter", "finetune", "experiment")


def relevant_params(params: dict, method: str, dataset: str | None = None, model: str | None = None,
                    n_per_class: int | None = None) -> dict:
    """The sections of params.yaml behind one result, as the stages see them: defaults filled in by the config
    dataclasses, the method's variant and the result's own dataset, model and budget applied
    (gradmm_dp shows dp.enabled = true, a result of rtpolarity shows data.dataset = rtpolarity)."""
    generator = generator_of(method)
    overrides = {s: dict(v) for s, v in (variant_settings(generator, params) if generator else {}).items()}
    for section, key, value in (("data", "dataset", dataset), ("model", "name", model),
                                ("experiment", "n_per_class", n_per_class), ("filter", "n_per_class", n_per_class)):
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    classes, out = section_classes(), {}
    for section in GENERATOR_SECTIONS if generator else BASELINE_SECTIONS:
        values = {**(params.get(section) or {}), **overrides.get(section, {})}
        try:
            out[section] = as_dict(build(classes[section], values, section))
        except (ValueError, TypeError):  # a key this version does not know: log what the file says
            out[section] = values
    return out


def run_name(result: dict, hash_: str) -> str:
    """rtpolarity-smollm2-135m-gradmm-n5-seed0-1a2b3c."""
    model = str(result.get("model")).replace("/", "_")  # hub ids: microsoft/phi-1_5
    knobs = [result["dataset"], model, result["method"], f"n{result.get('n_per_class')}", f"seed{result.get('seed')}"]
    return "-".join(knobs + [hash_[:6]])


def _metrics(result: dict) -> dict[str, float]:
    keys = ["accuracy", "dev_accuracy", "wall_seconds", "n_train", "majority_share"] + [
        k for k in result if k.startswith(("share_", "diag_"))]
    out = {}
    for k in keys:
        try:
            value = float(result.get(k))
        except (TypeError, ValueError):
            continue
        if value == value:  # NaN (zero-shot has no dev accuracy) is left out
            out[k] = value
    return out


# ---------------------------------------------------------------------------------------------- logging
def log_result(experiment: str, result: dict, params: dict, artifacts=(), tags: dict | None = None,
               project_root: str | Path = ".") -> str | None:
    """One MLflow run for one result row; returns its run id, or None (with a warning) if MLflow failed.

    result: a row of gradmm.reporting.classification.collect_results (dataset, model, method, n_per_class, seed, accuracy,
    dev_accuracy, wall_seconds, share_*); params: the nested params sections (flattened here); artifacts:
    files, or (file, artifact folder) pairs, to attach (missing files are skipped); tags: extra tags.
    """
    try:
        with quiet():
            return _log_result(experiment, result, params, artifacts, tags or {}, project_root)
    except Exception as err:  # noqa: BLE001 - the results are already on disk: never lose them to MLflow
        warnings.warn(f"MLflow logging of {result.get('dataset')}/{result.get('method')}/seed{result.get('seed')} "
                      f"failed ({type(err).__name__}: {err}); the results are in reports/ and runs/", RuntimeWarning,
                      stacklevel=2)
        return None


def _experiment_id(client, name: str, project_root) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(project_root))
    except Exception:  # created meanwhile by another process
        return client.get_experiment_by_name(name).experiment_id


@functools.lru_cache(maxsize=8)
def _client(uri: str):
    """One client per store: a new one costs ~50 ms, a few seconds over the runs of a report."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _start_run(client, experiment: str, result: dict, flat: dict, tags: dict, project_root, start_ms: int) -> str:
    hash_ = params_hash(flat)
    all_tags = {"git_commit": git_commit(project_root), "params_hash": hash_,
                "device": tags.get("device") or device_name(str(flat.get("model.device", "auto"))),
                "seed": str(result.get("seed")), "dataset": str(result.get("dataset")),
                "method": str(result.get("method")), "model": str(result.get("model")),
                "n_per_class": str(result.get("n_per_class")),
                **{f"version.{k}": v for k, v in library_versions().items()}, **{k: str(v) for k, v in tags.items()}}
    return client.create_run(_experiment_id(client, experiment, project_root), run_name=run_name(result, hash_),
                             tags=all_tags, start_time=start_ms).info.run_id


def _complete_run(client, run_id: str, result: dict, flat: dict | None, artifacts, tags: dict, start_ms: int,
                  curves: str = "all", end_ms: int | None = None) -> None:
    """Final metrics, the loss curves (`curves`: "all" or "best", see loss_curves), params, tags and artifacts;
    then the run ends at end_ms (default: now)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.time import get_current_time_millis

    now = end_ms or get_current_time_millis()
    metrics = [Metric(k, v, now, 0) for k, v in _metrics(result).items()] + loss_curves(result, start_ms, curves)
    for i in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    client.log_batch(run_id, params=[Param(k, v) for k, v in (flat or {}).items()],
                     tags=[RunTag("mlflow.note.content", _note(result))] + [RunTag(k, str(v)) for k, v in tags.items()])
    for item in artifacts:
        path, folder = item if isinstance(item, tuple) else (item, None)
        if path and Path(path).is_file():
            client.log_artifact(run_id, str(path), folder)
    client.set_terminated(run_id, end_time=now)


def _log_result(experiment, result, params, artifacts, tags, project_root) -> str:
    from mlflow.utils.time import get_current_time_millis

    client = _client(tracking_uri(project_root))
    flat = flatten(params)
    # logged after the fact: the run spans the result's real duration (wall_seconds), ending now
    end = get_current_time_millis()
    start = end - int(1000 * float(result.get("wall_seconds") or 0))
    run_id = _start_run(client, experiment, result, flat, tags, project_root, start)
    try:
        _complete_run(client, run_id, result, flat, artifacts, {}, start, end_ms=end)
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    return run_id


class LiveRun:
    """An MLflow run open while one result is made (`gradmm finetune --mlflow-root`): `log_metric` sends the
    fine-tuning loss per step and each LR's dev accuracy as they come; `finish` adds what the result file holds
    (final metrics, params, the training set and raw texts, its result key, so the report and mlflow-import
    do not log it again); `fail` ends it FAILED. MLflow errors warn once and turn it into a no-op: the result
    files never depend on the tracking store."""

    def __init__(self, experiment: str, result: dict, params: dict, project_root: str | Path = "."):
        from mlflow.utils.time import get_current_time_millis

        self.experiment, self.result, self.project_root = experiment, dict(result), project_root
        self.params = params
        self.start = get_current_time_millis()
        self.run_id = None
        self._guard(self._open, opening=True)

    def _guard(self, fn, opening: bool = False):
        if self.run_id is None and not opening:  # never opened, or stopped after an MLflow error
            return None
        try:
            with quiet():
                return fn()
        except Exception as err:  # noqa: BLE001 - live tracking must never fail the run that makes the result
            warnings.warn(f"MLflow live logging stopped ({type(err).__name__}: {err}); the result file is "
                          "unaffected (gradmm mlflow-import can log it later)", RuntimeWarning, stacklevel=3)
            self.run_id = None

    def _open(self):
        r = self.result
        flat = flatten(relevant_params(self.params, r["method"], r.get("dataset"), r.get("model"),
                                       r.get("n_per_class")))
        self.client = _client(tracking_uri(self.project_root))
        self.run_id = _start_run(self.client, self.experiment, r, flat, {"gradmm.live": "true"}, self.project_root,
                                 self.start)
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])

    def log_metric(self, name: str, value: float, step: int) -> None:
        from mlflow.utils.time import get_current_time_millis

        self._guard(lambda: self.client.log_metric(self.run_id, name, float(value), get_current_time_millis(), step))

    def finish(self, result_file: str | Path, runs_dir: str | Path, figures_dir: str | Path = "reports/figures"):
        """Complete the run from the written result file; returns the run id (None if tracking failed)."""
        def complete():
            row = {k: v for k, v in report.result_row(Path(result_file)).items() if not _missing(v)}
            _, artifacts, tags = _row_run(row, self.params, runs_dir, figures_dir, self.project_root)
            _complete_run(self.client, self.run_id, row, None, artifacts, tags, self.start, curves="best")
            return self.run_id
        return self._guard(complete)

    def fail(self) -> None:
        self._guard(lambda: self.client.set_terminated(self.run_id, status="FAILED"))


def loss_curves(result: dict, start_ms: int, curves: str = "all") -> list:
    """Step metrics from the result file's `lr_runs`: `train_loss` per fine-tuning step of the LR picked on dev and,
    with curves="all", `train_loss/lr_<lr>` and `dev_accuracy/lr_<lr>` for every LR of the grid ("best": a live
    run logged those as they came); timestamps spread over each LR's own seconds. Results written before
    fine-tuning kept its curves have none."""
    from mlflow.entities import Metric

    path = result.get("result_file")
    runs = read_json(Path(path)).get("lr_runs") if path and Path(path).is_file() else None
    out, t0 = [], start_ms
    for r in runs or []:
        losses, span = r.get("train_losses") or [], int(1000 * float(r.get("seconds") or 0))
        names = ([f"train_loss/lr_{r['lr']:g}"] if curves == "all" else []) + (
            ["train_loss"] if r["lr"] == result.get("best_lr") else [])
        for step, loss in enumerate(losses):
            stamp = t0 + span * step // max(len(losses), 1)
            out += [Metric(name, float(loss), stamp, step) for name in names]
        if curves == "all":
            out.append(Metric(f"dev_accuracy/lr_{r['lr']:g}", float(r["dev_accuracy"]), t0 + span, len(losses)))
        t0 += span
    return out


def _missing(value) -> bool:
    """None, NaN or pandas' <NA>: a value a run leaves out (never a list, which pd.isna would map)."""
    return pd.api.types.is_scalar(value) and bool(pd.isna(value))


def _note(result: dict) -> str:
    r = result
    acc = f"{r['accuracy']:.3f}" if isinstance(r.get("accuracy"), float) else "?"
    return (f"{r.get('method')} on {r.get('dataset')} ({r.get('model')}, n = {r.get('n_per_class')} per class, "
            f"seed {r.get('seed')}): test accuracy {acc}")


def trainset_path(result_file: str | Path | None, train_file: str | None, project_root: str | Path = ".") -> Path | None:
    """The training set a result was fine-tuned on, or None when it cannot be found.

    The file of that name in the trainsets/ folder beside the result's results/ folder comes first: results
    copied out of the project they ran in (studies/full-profile/runs) still record `runs/<dataset>/...`,
    which here may name another profile's set of the same name. Else `train_file` as recorded (absolute,
    or relative to the project root it ran in)."""
    if not train_file:
        return None
    candidates = [Path(train_file) if Path(train_file).is_absolute() else Path(project_root) / train_file]
    if result_file:
        candidates.insert(0, Path(result_file).parent.parent / "trainsets" / Path(train_file).name)
    return next((p for p in candidates if p.is_file()), None)


def result_key(result_file: str | Path, runs_dir: str | Path) -> str:
    """A stable id of one result: its path below the results folder and its content (a re-run result is new)."""
    result_file = Path(result_file)
    try:
        rel = result_file.resolve().relative_to(Path(runs_dir).resolve()).as_posix()
    except ValueError:
        rel = result_file.as_posix()
    return hashlib.sha256(rel.encode() + b"\0" + result_file.read_bytes()).hexdigest()[:16]


def _row_run(row: dict, params: dict, runs_dir, figures_dir, project_root) -> tuple[dict, list, dict]:
    """A result row's params, artifacts (its training set; for GRADMM methods the raw synthetic texts and the
    run's generation-health figure) and tags (its result key; TRAINSET_MISSING_TAG when the set is not found)."""
    tags = {}
    if row.get("result_file") and Path(row["result_file"]).is_file():
        tags[RESULT_KEY_TAG] = result_key(row["result_file"], runs_dir)
    trainset = trainset_path(row.get("result_file"), row.get("train_file"), project_root)
    if row.get("train_file") and trainset is None:
        tags[TRAINSET_MISSING_TAG] = f"{row['train_file']} not found, nor beside the result"
    artifacts = [(trainset, "trainset")]
    generator = generator_of(row["method"])
    if generator:
        run_dir = Path(runs_dir) / row["dataset"] / "generated" / f"{generator}-seed{row['seed']}"
        artifacts += [(run_dir / "raw.jsonl", "synthetic"),
                      (health_figure_path(figures_dir, row["dataset"], run_dir.name), "figures")]
    p = relevant_params(params, row["method"], row["dataset"], row.get("model"), row.get("n_per_class"))
    return p, artifacts, tags


def _rows(df) -> list[dict]:
    return [{k: v for k, v in row.items() if not _missing(v)} for row in df.to_dict("records")]


def log_results(df, experiment: str, params: dict, project_root: str | Path = ".", runs_dir: str | Path = "runs",
                figures=(), figures_dir: str | Path = "reports/figures", tags: dict | None = None) -> list[str]:
    """log_result for every row of a results table (artifacts: see _row_run) not in the store yet (its result key:
    a run logged live by `gradmm finetune`, or by an earlier report of the same results); the report files shared
    by all rows (`figures`: tables, figures) go once into one report run (log_report), not into each run.
    Returns the run id of every row in the store (new or found)."""
    try:
        with quiet():
            logged = _logged_keys(_client(tracking_uri(project_root)), experiment)
    except Exception:  # noqa: BLE001 - log_result below warns if the store is unusable
        logged = {}
    run_ids = []
    for row in _rows(df):
        p, artifacts, row_tags = _row_run(row, params, runs_dir, figures_dir, project_root)
        run_id = logged.get(row_tags.get(RESULT_KEY_TAG)) or log_result(
            experiment, row, p, artifacts, {**(tags or {}), **row_tags}, project_root)
        if run_id:
            run_ids.append(run_id)
    files = [Path(f) for f in figures if Path(f).is_file()]
    report_key = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
    if files and report_key not in logged:
        log_report(experiment, files, {**(tags or {}), RESULT_KEY_TAG: report_key}, project_root)
    return run_ids


def log_report(experiment: str, files, tags: dict | None = None, project_root: str | Path = ".") -> str | None:
    """One run (tag REPORT_KIND_TAG = report) holding the report files of a set of result runs; its run id, or
    None (with a warning) if MLflow failed."""
    try:
        with quiet():
            client = _client(tracking_uri(project_root))
            all_tags = {"git_commit": git_commit(project_root), REPORT_KIND_TAG: "report",
                        "mlflow.note.content": "The report files (tables, figures) of this experiment's result runs",
                        **{k: str(v) for k, v in (tags or {}).items()}}
            name = "-".join(["report", *[str(all_tags[k]) for k in ("profile",) if k in all_tags]])
            run_id = client.create_run(_experiment_id(client, experiment, project_root), run_name=name,
                                       tags=all_tags).info.run_id
            for path in files:
                if Path(path).is_file():
                    client.log_artifact(run_id, str(path), "report")
            client.set_terminated(run_id)
            return run_id
    except Exception as err:  # noqa: BLE001 - the report files are already on disk
        warnings.warn(f"MLflow logging of the report files failed ({type(err).__name__}: {err})", RuntimeWarning,
                      stacklevel=2)
        return None


# ------------------------------------------------------------------------------ committed results in
@contextlib.contextmanager
def sqlite_without_fsync():
    """New sqlite connections skip fsync (PRAGMA synchronous = OFF) inside the block: ~10 commits a run at
    ~10 ms each on a slow disk are most of an import's time. Safe against a crash of this process; only an OS
    crash mid-import could corrupt the store, and the committed results can be imported again."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def no_fsync(dbapi_connection, _record):
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            dbapi_connection.execute("PRAGMA synchronous = OFF")

    event.listen(Engine, "connect", no_fsync)
    try:
        yield
    finally:
        event.remove(Engine, "connect", no_fsync)


def _logged_keys(client, experiment: str) -> dict[str, str]:
    """Result key -> run id of every run of the experiment that holds one."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    keys, token = {}, None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=f"tags.`{RESULT_KEY_TAG}` LIKE '%'",
                                  max_results=1000, page_token=token)
        keys.update((r.data.tags[RESULT_KEY_TAG], r.info.run_id) for r in page)
        token = page.token
        if not token:
            return keys


def import_results(runs_dir: str | Path = DEFAULT_IMPORT_DIR, experiment: str = CLASSIFICATION_EXPERIMENT,
                   project_root: str | Path = ".") -> dict:
    """One MLflow run per `<runs_dir>/<dataset>/results/*.json` not logged yet (keyed by RESULT_KEY_TAG), as
    log_results logs them, with the params of `<runs_dir>/../params.yaml` (else the project's), plus one report
    run with the classification table and figure of all of them. Returns the counts: added, skipped (logged
    before), failed (MLflow refused), trainsets_missing (tagged TRAINSET_MISSING_TAG), report (added or not)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"results folder {runs_dir} does not exist: pass a folder holding "
                                f"<dataset>/results/*.json (default {DEFAULT_IMPORT_DIR})")
    df = report.collect_results(runs_dir)
    if df.empty:
        raise FileNotFoundError(f"no results in {runs_dir}: expected {runs_dir}/<dataset>/results/*.json")
    params_file = next((p for p in (runs_dir.parent / "params.yaml", Path(project_root) / "params.yaml")
                        if p.is_file()), None)
    params = read_params(params_file) if params_file else {}
    with sqlite_without_fsync():
        return _import_rows(df, runs_dir, params, experiment, project_root)


def _import_rows(df, runs_dir: Path, params: dict, experiment: str, project_root) -> dict:

    with quiet():
        logged = _logged_keys(_client(tracking_uri(project_root)), experiment)
    # Where the results came from, not this machine: the result files do not record their device.
    source = {"imported_from": runs_dir.as_posix(), "device": "unknown (imported)"}
    counts = {"added": 0, "skipped": 0, "failed": 0, "trainsets_missing": 0, "report": False}
    keys = []
    for row in _rows(df):
        p, artifacts, tags = _row_run(row, params, runs_dir, runs_dir.parent / "reports" / "figures", project_root)
        keys.append(tags[RESULT_KEY_TAG])
        if tags[RESULT_KEY_TAG] in logged:
            counts["skipped"] += 1
            continue
        counts["trainsets_missing"] += TRAINSET_MISSING_TAG in tags
        run_id = log_result(experiment, row, p, artifacts, {**source, **tags}, project_root)
        counts["added" if run_id else "failed"] += 1
    report_key = hashlib.sha256("".join(sorted(keys)).encode()).hexdigest()[:16]
    if report_key not in logged:
        with tempfile.TemporaryDirectory() as tmp:
            files = [Path(tmp) / "classification.csv", Path(tmp) / "classification.md", Path(tmp) / "classification.png"]
            report.write_classification_table(df, files[0])
            report.write_markdown_summary(df, files[1], title=f"Classification ({runs_dir.as_posix()}): test accuracy (%)")
            report.plot_classification(df, files[2])
            counts["report"] = log_report(experiment, files, {**source, RESULT_KEY_TAG: report_key}, project_root) is not None
    return counts
