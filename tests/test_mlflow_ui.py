"""The MLflow UI, checked in a real browser: the runs the pipeline logs must show up there with their params and
metrics, as someone running `make ui` would see them.

A tiny pipeline (the committed notebook, executed by papermill on the tiny-random model in a throw-away project,
as tests/test_notebooks.py does) logs its runs into tmp_path/mlflow.db; `mlflow server` is started on that store
(the flags of `make ui`, on a free port) and headless Chromium, driven by Playwright, opens the experiment's runs
table and each run's page. A full-page screenshot of the runs table goes to reports/figures/mlflow_ui.png.

Needs Playwright (the Python package) and a Chromium binary: `bash scripts/install_browser.sh` installs Debian's
chromium with apt and playwright==1.63.0 with pip (`playwright install`, Playwright's own browser download, is
not used: the system binary is launched with executable_path). Without them the test is skipped.
CHROMIUM=/path/to/chrome picks another binary.
"""

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "reports" / "figures" / "mlflow_ui.png"
EXPERIMENT = "01_classification"
METHODS = ["zero_shot", "random_real", "gradmm"]
TABLE_METRICS = ["accuracy", "dev_accuracy", "wall_seconds"]
TABLE_PARAMS = ["model.name", "data.source", "finetune.steps"]
TABLE_TAGS = ["method"]
SERVER_START_TIMEOUT = 90  # s, until /health answers
UI_TIMEOUT = 60_000  # ms, for the single-page app to render (first load on a busy CI machine)

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def chromium_binary() -> str | None:
    """$CHROMIUM if set, else the first of Debian's / Ubuntu's / Google's names on PATH."""
    names = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else \
        ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
    return next((shutil.which(name) for name in names if shutil.which(name)), None)


CHROMIUM = chromium_binary()
if importlib.util.find_spec("playwright") is None:
    pytest.skip("the playwright package is not installed (bash scripts/install_browser.sh)", allow_module_level=True)
if CHROMIUM is None:
    pytest.skip(f"no chromium binary ({os.environ.get('CHROMIUM') or 'chromium on PATH'}; "
                "bash scripts/install_browser.sh installs Debian's chromium)", allow_module_level=True)


def _notebook_tests():
    """tests/test_notebooks.py, loaded by path (whatever pytest's import mode): its tiny_project writes the
    throw-away project's params.yaml and dataset."""
    spec = importlib.util.spec_from_file_location("_gradmm_test_notebooks", ROOT / "tests" / "test_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def project(tmp_path, monkeypatch):
    """A throw-away project whose mlflow.db holds the runs of the tiny pipeline (zero_shot, random_real, gradmm)."""
    import papermill as pm

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _notebook_tests().tiny_project(tmp_path)
    pm.execute_notebook(ROOT / "notebooks" / "01_classification.ipynb", tmp_path / "executed.ipynb", cwd=str(tmp_path),
                        kernel_name="python3", progress_bar=False,
                        parameters={"datasets": ["local"], "methods": METHODS, "run_missing": True,
                                    "log_mlflow": True, "progress": False})
    assert (tmp_path / "mlflow.db").is_file(), "the notebook logged no MLflow run"
    return tmp_path


@pytest.fixture
def mlflow_server(project):
    """`mlflow server` on the project's store (the flags of `make ui`), on a free port; yields its base URL.
    Started in its own process group, which the teardown terminates (uvicorn's workers included)."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin)] if mlflow_bin.is_file() else [sys.executable, "-m", "mlflow"]
    cmd += ["server", "--backend-store-uri", f"sqlite:///{(project / 'mlflow.db').as_posix()}",
            "--default-artifact-root", str(project / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no huey job consumers: not needed to browse runs
    log = project / "mlflow_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer {base}/health in {SERVER_START_TIMEOUT} s:\n"
                            f"{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)  # anyone left in the group?
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--disable-dev-shm-usage", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 720})
            page.set_default_timeout(UI_TIMEOUT)
            yield page
        finally:
            browser.close()


# ------------------------------------------------------------------------------------------------ helpers
def _set_column(page, name: str, on: bool = True) -> None:
    """Ticks (or unticks) a column in the runs table's Columns dropdown (open)."""
    title = page.locator(".du-bois-light-tree-title").filter(has_text=re.compile(f"^{re.escape(name)}$"))
    node = page.locator(".du-bois-light-tree-treenode").filter(has=title).first
    node.wait_for()
    checked = "checkbox-checked" in (node.get_attribute("class") or "")
    if checked != on:
        node.locator(".du-bois-light-tree-checkbox").click()


def _widen_column(page, header: str, pixels: int) -> None:
    """Drags the resize handle of a runs-table column header to the right (cosmetic: the screenshot's names)."""
    cell = page.locator(".ag-header-cell").filter(has=page.get_by_test_id(f"sort-header-{header}")).first
    handle = cell.locator(".ag-header-cell-resize")
    if not handle.count():
        return
    box = handle.bounding_box()
    if box:
        x, y = box["x"] + 2, box["y"] + box["height"] / 2  # its right half lies under the next header
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + pixels, y, steps=5)
        page.mouse.up()


def _number(text: str) -> float:
    match = re.search(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)
    assert match, f"no number in {text!r}"
    return float(match.group())


# ---------------------------------------------------------------------------------------------------- test
def test_runs_with_params_and_metrics_in_the_mlflow_ui(project, mlflow_server, page):
    import mlflow
    from playwright.sync_api import expect

    client = mlflow.MlflowClient(f"sqlite:///{(project / 'mlflow.db').as_posix()}")
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None, f"no experiment {EXPERIMENT!r} in {project / 'mlflow.db'}"
    all_runs = client.search_runs([exp.experiment_id])
    runs = [r for r in all_runs if r.data.tags.get("gradmm.kind") != "report"]  # the report run: tables, figure
    assert sorted(r.data.tags["method"] for r in runs) == sorted(METHODS)

    # The experiment's runs table. MLflow 3's UI opens an experiment on its GenAI (traces) overview unless the
    # experiment is typed: workflowType=machine_learning is its "Model training" switch.
    page.goto(f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
    for run in runs:
        expect(page.get_by_text(run.info.run_name, exact=True).first).to_be_visible()
    expect(page.get_by_text(f"{len(all_runs)} matching runs")).to_be_visible()

    close_assistant = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if close_assistant.count():  # the assistant side panel would take a third of the screenshot
        close_assistant.first.click()
    page.get_by_role("button", name="Columns", exact=True).click()  # the dropdown lists every metric, param and tag logged
    for name in ("Dataset", "Source", "Models"):  # empty for these runs: room for the metrics and params
        _set_column(page, name, on=False)
    for name in TABLE_METRICS + TABLE_PARAMS + TABLE_TAGS:
        _set_column(page, name, on=True)
    page.keyboard.press("Escape")
    grid = page.locator(".ag-root").first
    for name in TABLE_METRICS + TABLE_PARAMS + TABLE_TAGS:
        expect(grid.get_by_text(name, exact=True).first).to_be_visible()
    for value in ("tiny-random", "toy.jsonl", *METHODS):
        expect(grid.get_by_text(value, exact=True).first).to_be_visible()
    _widen_column(page, "Run Name", 180)  # full run names in the screenshot
    page.wait_for_timeout(500)  # let the column layout settle before the screenshot
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000

    # Each run's page: every metric with its value, and the params (a generator's own section for gradmm).
    for run in runs:
        page.goto(f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}")
        expect(page.get_by_text(run.info.run_name, exact=True).first).to_be_visible()
        for key, value in run.data.metrics.items():
            row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True)).first
            expect(row).to_be_visible()
            assert _number(row.inner_text().split(key, 1)[1]) == pytest.approx(value, rel=1e-3, abs=1e-3), key
        params = run.data.params
        shown = ["data.source", "model.name", "finetune.steps"] + (["generate.outer_steps"] if "generate.outer_steps"
                                                                   in params else [])
        for key in shown:
            row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True)).first
            expect(row).to_contain_text(params[key])
        for tag in ("params_hash", "method"):
            expect(page.get_by_role("status", name=tag, exact=True).first).to_contain_text(run.data.tags[tag])
