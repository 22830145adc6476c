"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Property tests explore a fixed, reproducible set of examples on CI (CI=true), so a run's result
# depends on the code alone; locally they keep exploring new examples on every run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny random-weight Llama 3 GGUF (real tokenizer), built once and cached."""
    pytest.importorskip("gguf")
    pytest.importorskip("llama_models")
    from chatlane.testing import tiny_llama3_gguf

    return tiny_llama3_gguf()


@pytest.fixture(scope="session")
def tiny_engine(tiny_model: Path) -> Iterator[Any]:
    """A `LlamaCpp` on the tiny model (its Llama 3 format picked from the file), loaded once."""
    pytest.importorskip("llama_cpp")
    from chatlane.backends.llamacpp import LlamaCpp

    # One thread: the model is tiny, and on shared cores llama.cpp's threads spin on each other.
    with LlamaCpp(tiny_model, n_ctx=1024, n_threads=1) as engine:
        yield engine


@pytest.fixture(scope="session")
def llama_server(tiny_model: Path) -> Iterator[str]:
    """llama.cpp's own OpenAI-compatible server (``python -m llama_cpp.server``) on 127.0.0.1,
    running the tiny model under the alias ``tiny``: its ``/v1`` URL."""
    # Found, not imported: the server runs in its own process.
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (the chatlane[local] extra)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_model)),
            *("--host", "127.0.0.1", "--port", str(port), "--model_alias", "tiny"),
            *("--n_ctx", "2048", "--n_threads", "2", "--verbose", "false"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"llama_cpp.server exited with {process.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not start within 60 s")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        if process.stderr:
            process.stderr.close()


def pytest_unconfigure(config: pytest.Config) -> None:
    # llama-cpp-python 0.3.36 opens two handles on os.devnull at import (llama_cpp/_utils.py)
    # and never closes them; with warnings as errors that is a ResourceWarning at exit.
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()
