"""What a clone's user meets first: the licence and citation files, and the `make ui` / `make lab` commands."""

import re
import subprocess
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_the_licence_is_the_one_pyproject_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert (ROOT / "LICENSE").read_text().startswith(f"{declared} License")


def test_citation_cff_cites_this_software_and_the_paper_as_the_readme_does():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert {"cff-version", "message", "title", "authors", "license"} <= set(cff)
    paper = cff["preferred-citation"]
    readme = (ROOT / "README.md").read_text()
    bib_title = re.search(r"title\s*=\s*\{(.+?)\}", readme).group(1)
    assert paper["title"] == bib_title and str(paper["year"]) in readme
    assert [a["family-names"] for a in paper["authors"]] == ["Nguyen", "Li", "Bateni", "Mirrokni", "Razaviyayn",
                                                             "Mirzasoleiman"]


def _make_dry(*args) -> str:
    return subprocess.run(["make", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def test_make_lab_serves_the_repository_root_without_a_browser_on_a_chosen_port():
    cmd = _make_dry("lab", "LAB_PORT=9123")
    assert "--no-browser" in cmd and f"--notebook-dir={ROOT}" in cmd and "--ServerApp.port=9123" in cmd
    assert not re.search(r"\snotebooks/?\s*$", cmd)  # no subfolder as the root: reports/ and params.yaml stay reachable


def test_make_ui_takes_a_port_and_starts_no_job_consumers():
    cmd = _make_dry("ui", "UI_PORT=5123")
    assert "--port 5123" in cmd and "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in cmd
    assert f"sqlite:///{ROOT}/mlflow.db" in cmd
