"""Reference files fetched at test time from package registries (never committed).

`sdist_file` gives a file of the llama-cpp-python 0.3.36 sdist (its vendored templates and
vocabulary GGUFs); `o200k_base_file` the ``o200k_base`` tiktoken file that the litellm
wheel bundles (for openai-harmony, which cannot download it here). Both are fetched once
with ``pip download`` into ``$CHATLANE_CACHE/refs`` (default ``~/.cache/chatlane/refs``);
the test is skipped, saying why, only when pip cannot fetch the package.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

__all__ = ["O200K_CACHE_NAME", "o200k_base_file", "refs_dir", "sdist_file"]

LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
O200K_CACHE_NAME = "fb374d419588a4632f3f557e76b4b70aebbca790"
"""tiktoken's cache name for o200k_base (the sha1 of its download URL)."""
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def refs_dir() -> Path:
    root = os.environ.get("CHATLANE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "chatlane"
    path = base / "refs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pip_download(spec: str, *extra: str) -> Path:
    target = refs_dir() / "downloads"
    name = spec.split("==")[0].replace("-", "_").lower()
    found = (
        [p for p in target.glob("*") if p.name.lower().startswith(name)] if target.is_dir() else []
    )
    if found:
        return found[0]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", *extra, "-d", str(target), spec],
        capture_output=True,
        text=True,
    )
    found = [p for p in target.glob("*") if p.name.lower().startswith(name)]
    if done.returncode != 0 or not found:
        reason = f"pip cannot fetch {spec}: {done.stderr.strip()[-300:]}"
        print(reason)
        pytest.skip(reason)
    return found[0]


def sdist_file(member: str) -> Path:
    """``member`` (a path under ``vendor/llama.cpp/``) of the llama-cpp-python sdist."""
    out = refs_dir() / "llama-cpp-python-0.3.36" / member
    if out.is_file():
        return out
    sdist = _pip_download(LLAMA_CPP_SDIST, "--no-binary", ":all:")
    with tarfile.open(sdist) as tar:
        name = f"llama_cpp_python-0.3.36/vendor/llama.cpp/{member}"
        source = tar.extractfile(name)
        assert source is not None, name
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_bytes(source.read())
        tmp.replace(out)
    return out


def o200k_base_file() -> Path:
    """The o200k_base vocabulary, checked by its sha256, in a directory of its own (point
    ``TIKTOKEN_ENCODINGS_BASE`` at the directory: the file is also named ``o200k_base.tiktoken``)."""
    directory = refs_dir() / "o200k"
    out = directory / "o200k_base.tiktoken"
    if not out.is_file():
        wheel = _pip_download("litellm")
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.endswith("/" + O200K_CACHE_NAME)]
            assert names, "the litellm wheel no longer bundles o200k_base"
            data = z.read(names[0])
        digest = hashlib.sha256(data).hexdigest()
        assert digest == O200K_SHA256, f"o200k_base from the litellm wheel has sha256 {digest}"
        directory.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
    return out
