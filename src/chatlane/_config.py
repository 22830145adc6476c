"""Where the command line gets its backend, tools and schemas from.

Settings come from, in order of precedence: command-line options, environment variables
(``CHATLANE_BACKEND``, ``CHATLANE_BASE_URL``, ``CHATLANE_COMPLETION_URL``, ``CHATLANE_GGUF``,
``CHATLANE_MODEL``, ``CHATLANE_DIALECT``, ``CHATLANE_FORMAT``, ``CHATLANE_PROFILE``,
``CHATLANE_API_KEY``), and a TOML config file (``$CHATLANE_CONFIG``, else
``$XDG_CONFIG_HOME/chatlane/config.toml`` or ``~/.config/chatlane/config.toml``) with the same
names in lower case. Python objects (a backend factory, a tool function, a Pydantic model)
are named ``module:attribute`` or ``path/to/file.py:attribute``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from chatlane.errors import ChatlaneError, InputError

if TYPE_CHECKING:
    from chatlane.backends.base import Backend
    from chatlane.formats.base import PromptFormat
    from chatlane.tools import Tool

__all__ = [
    "BackendSettings",
    "UsageError",
    "config_path",
    "load_object",
    "load_schema",
    "load_tool",
    "make_backend",
    "make_format",
    "resolve_settings",
]


class UsageError(InputError):
    """The command line asks for something that cannot be done as given (exit status 2)."""


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """What picks and configures the backend. API keys are kept out of the repr."""

    backend: str | None = None
    base_url: str | None = None
    completion_url: str | None = None
    gguf: str | None = None
    model: str | None = None
    dialect: str | None = None
    format: str | None = None
    profile: str | None = None
    api_key: str | None = None
    source: str = "options"
    """Where the backend choice came from: ``options``, ``environment`` or the config file."""

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.name != "api_key" and getattr(self, f.name) is not None
        )
        return f"BackendSettings({shown})"


_NAMES = tuple(f.name for f in fields(BackendSettings) if f.name != "source")


def config_path() -> Path:
    """The config file: ``$CHATLANE_CONFIG``, else ``config.toml`` in the user's config dir."""
    explicit = os.environ.get("CHATLANE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "chatlane" / "config.toml"


def _read_config(path: Path) -> dict[str, Any]:
    import tomllib

    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the config file {str(path)!r}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"the config file {str(path)!r} is not valid TOML: {e}") from e
    unknown = sorted(set(data) - set(_NAMES))
    if unknown:
        raise UsageError(
            f"the config file {str(path)!r} has unknown setting {unknown[0]!r}; "
            f"known: {', '.join(_NAMES)}"
        )
    for key, value in data.items():
        if not isinstance(value, str):
            raise UsageError(f"the config file {str(path)!r}: {key} must be a string")
    return data


CHOOSERS = ("backend", "base_url", "completion_url", "gguf")
"""The settings that pick the kind of backend: one level (options, environment, config
file) that names any of them decides, so ``--gguf`` is not mixed with an environment's
``CHATLANE_BASE_URL``."""


def resolve_settings(options: Mapping[str, Any]) -> BackendSettings:
    """Settings from command-line ``options`` (None where not given), then the environment,
    then the config file."""
    config = _read_config(config_path())
    levels: list[dict[str, Any]] = [
        {name: options.get(name) for name in _NAMES},
        {name: os.environ.get(f"CHATLANE_{name.upper()}") or None for name in _NAMES},
        {name: config.get(name) for name in _NAMES},
    ]
    values: dict[str, Any] = {}
    for level, source in zip(levels, ("options", "environment", str(config_path())), strict=True):
        if any(level[name] is not None for name in CHOOSERS):
            values.update({name: level[name] for name in CHOOSERS})
            values["source"] = source
            break
    for name in _NAMES:
        if name not in CHOOSERS:
            values[name] = next((lv[name] for lv in levels if lv[name] is not None), None)
    settings = BackendSettings(**values)
    if settings.api_key is None and settings.base_url and os.environ.get("OPENAI_API_KEY"):
        settings = replace(settings, api_key=os.environ["OPENAI_API_KEY"])
    return settings


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment (where keys sometimes hide), for labels."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def load_object(spec: str, what: str) -> Any:
    """The object that ``module:attribute`` or ``path/file.py:attribute`` names.

    The current directory is importable, as it is for ``python -m``.
    """
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"{what} {spec!r} must look like module:name or path/to/file.py:name")
    try:
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise UsageError(f"{what} {spec!r}: no file {module_name!r}")
            unique = f"_chatlane_user_{abs(hash(str(path.resolve())))}"
            module = sys.modules.get(unique)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(unique, path)
                if loader_spec is None or loader_spec.loader is None:
                    raise UsageError(f"{what} {spec!r}: {module_name!r} is not a Python file")
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[unique] = module
                loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except UsageError:
        raise
    except ModuleNotFoundError as e:
        raise UsageError(f"{what} {spec!r}: no module named {e.name!r}") from e
    except Exception as e:
        raise ChatlaneError(
            f"{what} {spec!r}: importing {module_name!r} failed: {type(e).__name__}: {e}"
        ) from e
    obj = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{what} {spec!r}: {module_name!r} has no {attribute!r}") from None
    return obj


def load_backend(spec: str) -> Backend:
    """A backend from ``module:factory``: a `Backend` object, or a callable returning one."""
    from chatlane.backends.base import Backend

    obj = load_object(spec, "--backend")
    if not isinstance(obj, Backend) and callable(obj):
        try:
            obj = obj()
        except ChatlaneError:
            raise
        except Exception as e:
            raise ChatlaneError(
                f"--backend {spec!r}: calling it failed: {type(e).__name__}: {e}"
            ) from e
    if not isinstance(obj, Backend):
        raise UsageError(
            f"--backend {spec!r} gave a {type(obj).__name__}, not a chatlane Backend "
            "(such as OpenAIChat, CompletionChat, LlamaCpp or Fake)"
        )
    return obj


def load_tool(spec: str) -> Tool:
    """A tool from ``module:function`` (a typed, documented function, or a `Tool`)."""
    from chatlane.tools import Tool

    obj = load_object(spec, "--tool")
    if isinstance(obj, Tool):
        if obj.function is None:
            raise UsageError(f"--tool {spec!r} has no Python function behind it to run")
        return obj
    if not callable(obj):
        raise UsageError(f"--tool {spec!r} is a {type(obj).__name__}, not a function")
    from chatlane.errors import SchemaError

    try:
        return Tool.from_function(obj)
    except SchemaError as e:
        raise UsageError(f"--tool {spec!r}: {e}") from e


def load_schema(spec: str) -> Any:
    """A response format from a JSON schema file or a ``module:Model`` Pydantic class."""
    path = Path(spec)
    if spec.endswith(".json") or (path.is_file() and ":" not in spec):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise UsageError(f"--schema: cannot read {spec!r}: {e.strerror}") from e
        except ValueError as e:
            raise UsageError(f"--schema: {spec!r} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise UsageError(f"--schema: {spec!r} must hold a JSON object (a schema)")
        return data
    obj = load_object(spec, "--schema")
    if isinstance(obj, type) and hasattr(obj, "model_json_schema"):
        return obj
    if isinstance(obj, dict):
        return obj
    raise UsageError(f"--schema {spec!r} is neither a Pydantic model class nor a JSON schema")


def make_format(
    name: str | None,
    profile: str | None = None,
    *,
    tool_format: str | None = None,
    date: str | None = None,
    model: str | None = None,
) -> PromptFormat:
    """The registered prompt format called ``name``, with the settings given (each family
    says which it takes). Without a name, the format `chatlane.formats.detect` finds for
    ``model`` (a model id), else `chatlane.formats.DEFAULT`."""
    from chatlane import formats

    settings = {
        key: value
        for key, value in (("profile", profile), ("tool_format", tool_format), ("date", date))
        if value is not None
    }
    if name is None and model:
        from chatlane.formats.base import ModelInfo

        found = formats.detect(ModelInfo(model_id=model), **settings)
        if found is not None:
            return found
    name = (name or formats.DEFAULT).lower()
    if name not in formats.names():
        raise UsageError(f"unknown format {name!r}; formats: {', '.join(formats.names())}")
    return formats.get(name, **settings)


def make_backend(settings: BackendSettings, *, retries: int | None = None) -> tuple[Backend, str]:
    """The backend the settings pick, and a label for it (without secrets) for the log.

    ``retries`` sets how often the HTTP transport retries a failed request.
    """
    http: dict[str, Any] = {}
    if retries is not None:
        if retries < 0:
            raise UsageError(f"--retries must be 0 or more, got {retries}")
        from chatlane.backends.transport import RetryPolicy

        http["retry"] = RetryPolicy(max_retries=retries)
    chosen = [
        name
        for name in ("backend", "base_url", "completion_url", "gguf")
        if getattr(settings, name) is not None
    ]
    if not chosen:
        raise UsageError(
            "no backend: give --base-url, --completion-url, --gguf or --backend "
            "(or set CHATLANE_BASE_URL, ... or a config file; see chatlane run --help)"
        )
    if len(chosen) > 1:
        if settings.source == "options":
            given = " and ".join("--" + c.replace("_", "-") for c in chosen)
        elif settings.source == "environment":
            given = " and ".join(f"CHATLANE_{c.upper()}" for c in chosen)
        else:
            given = " and ".join(chosen) + f" (in {settings.source})"
        raise UsageError(f"choose one backend: {given} were both given")
    if settings.backend is not None:
        return load_backend(settings.backend), settings.backend
    if settings.base_url is not None:
        from chatlane.backends.openai_chat import OpenAIChat

        backend: Backend = OpenAIChat(
            settings.base_url,
            api_key=settings.api_key,
            model=settings.model,
            dialect=settings.dialect or "openai",
            **http,
        )
        return backend, f"OpenAIChat {safe_url(settings.base_url)}"
    if settings.completion_url is not None:
        from chatlane.backends.completion import CompletionChat

        kwargs: dict[str, Any] = {
            "format": make_format(settings.format, settings.profile, model=settings.model)
        }
        if settings.dialect is not None:
            kwargs["dialect"] = settings.dialect
        if settings.api_key is not None:
            kwargs["api_key"] = settings.api_key
        if settings.model is not None:
            kwargs["model"] = settings.model
        backend = CompletionChat(settings.completion_url, **kwargs, **http)
        return backend, f"CompletionChat {safe_url(settings.completion_url)}"
    assert settings.gguf is not None
    from chatlane.backends.llamacpp import LlamaCpp

    gguf_kwargs: dict[str, Any] = {}
    if settings.format is not None or settings.profile is not None:
        gguf_kwargs["format"] = make_format(settings.format, settings.profile)
    backend = LlamaCpp(settings.gguf, **gguf_kwargs)
    return backend, f"LlamaCpp {Path(settings.gguf).name}"
