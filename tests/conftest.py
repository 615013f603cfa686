"""Shared fixtures. Tests run offline: no Hub downloads, no telemetry."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    return REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


@contextmanager
def _serve(command: list[str], folder: Path, env: dict, timeout: float) -> Iterator[str]:
    """Run ``command`` in ``folder`` on a free 127.0.0.1 port (GRADIO_SERVER_*); yield its URL."""
    port = free_port()
    env = dict(env, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    proc = subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, proc, timeout)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def serve_app(folder: Path, *args: str, timeout: float = 120, **env: str) -> Iterator[str]:
    """Run ``python app.py ARGS`` in ``folder`` with this interpreter; yield its URL."""
    with _serve([sys.executable, "app.py", *args], folder, dict(os.environ, **env), timeout) as u:
        yield u


def make_venv(folder: Path, *pip_args: str, timeout: float = 900) -> Path:
    """A fresh virtual environment in ``folder`` holding only what ``pip install ARGS`` brings.

    Returns its python. Packages come from the package index (as a Space build does); the CPU
    build of torch is never pulled in because nothing here asks for torch.
    """
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pip_args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(pip_args)} failed:\n{proc.stderr[-3000:]}")
    return python


@contextmanager
def serve_space(folder: Path, python: Path, timeout: float = 180) -> Iterator[str]:
    """Start ``python app.py`` in ``folder`` with no flags, as Spaces do; yield its URL.

    Only the port is chosen (GRADIO_SERVER_PORT; a Space sets 7860 and 0.0.0.0 the same way).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV")) and k != "PATH"
    }
    env["PATH"] = f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with _serve([str(python), "app.py"], folder, env, timeout) as url:
        yield url


@contextmanager
def browser_page(width: int = 1280, height: int = 1600) -> Iterator[object]:
    """A Playwright page in Debian's headless chromium (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
