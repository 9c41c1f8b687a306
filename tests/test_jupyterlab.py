"""`make lab`: JupyterLab from the project's .venv serves the notebooks, with the .venv's Python as the kernel."""

import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e
def test_jupyterlab_lists_the_notebooks_with_the_project_kernel(tmp_path):
    port, token = _free_port(), secrets.token_hex(8)
    jupyter = Path(sys.executable).parent / "jupyter"
    server = subprocess.Popen([str(jupyter), "lab", "--no-browser", f"--notebook-dir={ROOT}", "--ServerApp.ip=127.0.0.1",
                               f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", "--allow-root"],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"),
                              env={"PATH": str(jupyter.parent), "HOME": str(tmp_path), "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    try:
        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?token={token}", timeout=5) as r:
                return json.loads(r.read())

        for _ in range(120):  # the server starts in a few seconds
            try:
                contents = get("/api/contents/notebooks")
                break
            except OSError:
                if server.poll() is not None:
                    break  # it exited: the log says why
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer: " + (tmp_path / "lab.log").read_text()[-2000:])
        names = {c["name"] for c in contents["content"]}
        assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} <= names
        specs = get("/api/kernelspecs")
        default = specs["kernelspecs"][specs["default"]]["spec"]
        python = Path(default["argv"][0])
        assert python.name.startswith("python") and (python.parent / "gradmm").exists()  # the project's .venv
        assert get("/lab/api/settings") is not None  # the Lab application itself, not only the server
    finally:
        server.terminate()
        server.wait(timeout=30)
