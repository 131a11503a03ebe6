"""The venv opens the notebooks: a real ``jupyter server`` process on a free localhost port, with a token."""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_jupyter_server_serves_the_notebooks(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "data"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_PLATFORM_DIRS": "1"}
    cmd = [sys.executable, "-m", "jupyter", "server", "--no-browser", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={NOTEBOOKS}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers often run as root; Jupyter refuses without this
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        status, deadline = None, time.monotonic() + 60
        while status is None and time.monotonic() < deadline:
            assert proc.poll() is None, f"jupyter server exited: {proc.stderr.read()[-2000:]}"
            try:
                status = _get(f"{base}/api/status", token)
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        assert status is not None and "started" in status
        try:  # the token is required
            urllib.request.urlopen(f"{base}/api/contents", timeout=5)
            raise AssertionError("the server answered without its token")
        except urllib.error.HTTPError as e:
            assert e.code == 403
        listing = _get(f"{base}/api/contents", token)
        names = {c["name"] for c in listing["content"]}
        assert "01_quickstart.ipynb" in names
        nb = _get(f"{base}/api/contents/01_quickstart.ipynb?type=notebook&content=1", token)
        assert nb["type"] == "notebook" and nb["content"]["nbformat"] == 4 and nb["content"]["cells"]
        specs = _get(f"{base}/api/kernelspecs", token)
        assert "python3" in specs["kernelspecs"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None


def test_lab_and_widgets_are_installed():
    """``make lab`` runs ``jupyter lab``; ipywidgets lets tqdm draw its bars (no "IProgress not found")."""
    out = subprocess.run([sys.executable, "-m", "jupyter", "lab", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip()[0].isdigit()
    import ipywidgets  # noqa: F401
    from tqdm.notebook import IProgress

    assert IProgress is not None
