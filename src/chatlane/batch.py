"""Batch runs: many requests under a concurrency limit, each result written as it finishes.

The input is JSON Lines, one request per line: an OpenAI-style body (``{"messages": [...],
...}``), optionally with an ``id`` (or ``custom_id``), or the OpenAI Batch API shape
(``{"custom_id": ..., "body": {...}}``). A line without an id is known by its line number.

The output is JSON Lines too, one line per input, in the order the requests finish:
``{"id", "line", "response": {...}, "duration_ms"}`` or ``{"id", "line", "error": {"type",
"message", ...}}``. Each line is appended with one ``write`` as soon as its request is done,
so an interrupted run (Ctrl-C, a kill) loses nothing that finished; run it again
and every input already in the output is skipped. A torn last line (a crash in the middle of
a write) is cut off on restart. A failed request does not stop the run: its error is its
line, and ``retry_failed`` runs it again on a later run.

Retries of transient failures (rate limits, server errors, dropped connections) happen in
the backend's transport; what still fails here is recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatlane._records import request_from_dict, response_to_dict
from chatlane.errors import (
    APIStatusError,
    InputError,
    ParseError,
    StreamInterrupted,
)
from chatlane.request import ChatRequest
from chatlane.response import ChatResponse

if TYPE_CHECKING:
    from chatlane.backends.base import Backend
    from chatlane.store import Store

__all__ = ["BatchItem", "BatchProgress", "arun_batch", "read_batch_input", "run_batch"]

RequestDecoder = Callable[[Any], ChatRequest]


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One input line: its id, its line number, and its request (or why it cannot be read)."""

    id: str
    line: int
    request: ChatRequest | None
    problem: str | None = None
    """Why the line could not be read as a request; such an item fails without a model call."""


@dataclass(slots=True)
class BatchProgress:
    """How a batch run stands; handed to the progress callback after every finished item."""

    total: int
    """Inputs in the file."""
    skipped: int = 0
    """Inputs already answered by an earlier run."""
    done: int = 0
    """Answered in this run."""
    failed: int = 0
    """Failed in this run."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        """Inputs finished in this run (answered or failed)."""
        return self.done + self.failed

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.finished

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """Finished requests per second in this run."""
        elapsed = self.elapsed
        return self.finished / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds until every input is finished, at the current rate (None before the first)."""
        rate = self.rate
        return self.remaining / rate if rate > 0 else None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _item_id(record: Mapping[str, Any], line: int) -> str:
    for key in ("custom_id", "id"):
        value = record.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return f"line-{line}"


def read_batch_input(
    path: str | os.PathLike[str], decode: RequestDecoder = request_from_dict
) -> list[BatchItem]:
    """Read a batch input file. A line that is not a usable request becomes an item with a
    ``problem`` (it fails on its own line); two lines with the same id are an `InputError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read the batch input {os.fspath(path)!r}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise InputError(f"the batch input {os.fspath(path)!r} is not UTF-8: {e}") from e
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        # A byte-order mark may start any line (files joined from several editors' output).
        raw = raw.removeprefix("\ufeff")
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as e:
            items.append(BatchItem(f"line-{number}", number, None, f"not valid JSON: {e}"))
            continue
        if not isinstance(record, dict):
            items.append(
                BatchItem(
                    f"line-{number}", number, None, f"a line must be a JSON object, not {raw[:20]}"
                )
            )
            continue
        item_id = _item_id(record, number)
        if item_id in seen:
            raise InputError(
                f"{os.fspath(path)}: lines {seen[item_id]} and {number} share the id {item_id!r}"
            )
        seen[item_id] = number
        body = record["body"] if isinstance(record.get("body"), dict) else record
        body = {k: v for k, v in body.items() if k not in ("id", "custom_id")}
        try:
            items.append(BatchItem(item_id, number, decode(body)))
        except (InputError, ParseError) as e:
            items.append(BatchItem(item_id, number, None, str(e)))
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            # A decoder that missed a wrong type: the line still fails on its own.
            items.append(
                BatchItem(
                    item_id, number, None, f"the request cannot be read: {type(e).__name__}: {e}"
                )
            )
    return items


def finished_ids(path: str | os.PathLike[str], *, retry_failed: bool = False) -> set[str]:
    """The ids an output file already holds (answered, and failed unless ``retry_failed``).

    A last line without its newline was torn by a crash mid-write: it is cut off, so its
    request runs again.
    """
    p = Path(path)
    if not p.exists():
        return set()
    data = p.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(p, "r+b") as f:
            f.truncate(keep)
        data = data[:keep]
    ids: set[str] = set()
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as e:
            raise InputError(
                f"the batch output {os.fspath(path)!r} line {number} is not JSON ({e}); "
                "is it the output of another tool?"
            ) from e
        if not isinstance(record, dict) or "id" not in record:
            raise InputError(
                f"the batch output {os.fspath(path)!r} line {number} is not a chatlane result"
            )
        if "response" in record or not retry_failed:
            ids.add(str(record["id"]))
    return ids


def error_record(error: BaseException) -> dict[str, Any]:
    """An error as JSON: its type, its message, and whatever it carries (status, body, partial
    output), so nothing received is lost."""
    out: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, APIStatusError):
        out["status_code"] = error.status_code
        out["body"] = error.body
        if error.request_id:
            out["request_id"] = error.request_id
    if isinstance(error, StreamInterrupted):
        out["partial"] = response_to_dict(error.partial)
    if isinstance(error, ParseError) and error.text is not None:
        out["text"] = error.text
    return out


class _Appender:
    """Appends whole lines to a file with one ``write`` each (O_APPEND).

    Once ``os.write`` returns, the line is the kernel's: a killed process cannot lose it, so
    there is no fsync per line (it capped a run at about 250 lines a second); the file is
    synced when the run ends. A machine crash may lose the last lines, and a torn last line
    is cut on restart: those inputs then simply run again.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: Mapping[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)


async def arun_batch(
    backend: Backend,
    items: Iterable[BatchItem],
    output: str | os.PathLike[str],
    *,
    concurrency: int = 4,
    retry_failed: bool = False,
    on_progress: Callable[[BatchProgress], None] | None = None,
    store: Store | None = None,
    backend_name: str | None = None,
) -> BatchProgress:
    """Run every item not yet in ``output``, at most ``concurrency`` at a time, appending each
    result as it finishes (see the module docstring). Returns the final progress."""
    if concurrency < 1:
        raise InputError(f"concurrency must be at least 1, got {concurrency}")
    items = list(items)
    out_path = Path(output)
    done_ids = finished_ids(out_path, retry_failed=retry_failed)
    todo = [item for item in items if item.id not in done_ids]
    progress = BatchProgress(total=len(items), skipped=len(items) - len(todo))
    if on_progress is not None:
        on_progress(progress)
    if not todo:
        return progress
    queue: asyncio.Queue[BatchItem] = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)
    appender = _Appender(out_path)

    def finish(item: BatchItem, record: dict[str, Any], response: ChatResponse | None) -> None:
        appender.write(record)
        if response is not None:
            progress.done += 1
            if response.usage is not None:
                progress.prompt_tokens += response.usage.prompt_tokens
                progress.completion_tokens += response.usage.completion_tokens
        else:
            progress.failed += 1
        if on_progress is not None:
            on_progress(progress)

    async def worker() -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            base: dict[str, Any] = {"id": item.id, "line": item.line}
            if item.request is None:
                finish(
                    item, {**base, "error": {"type": "InputError", "message": item.problem}}, None
                )
                continue
            started = time.monotonic()
            try:
                response = await backend.achat(item.request)
            except Exception as e:
                duration = time.monotonic() - started
                # The output line first, then the log row: a run killed in between leaves a
                # line that a rerun skips and at most a missing log row, never a duplicate.
                finish(item, {**base, "error": error_record(e)}, None)
                if store is not None:
                    store.log_call(
                        None,
                        item.request,
                        error=e,
                        backend=backend_name,
                        duration=duration,
                        batch_item=item.id,
                    )
                continue
            duration = time.monotonic() - started
            record = {
                **base,
                "response": response_to_dict(response),
                "duration_ms": round(duration * 1000, 1),
            }
            finish(item, record, response)
            if store is not None:
                store.log_call(
                    None,
                    item.request,
                    response,
                    backend=backend_name,
                    duration=duration,
                    batch_item=item.id,
                )

    try:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(todo)))))
    finally:
        appender.close()
    return progress


def run_batch(
    backend: Backend,
    items: Iterable[BatchItem],
    output: str | os.PathLike[str],
    **options: Any,
) -> BatchProgress:
    """The blocking twin of `arun_batch`."""
    return asyncio.run(arun_batch(backend, items, output, **options))
