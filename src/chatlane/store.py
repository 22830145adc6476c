"""The conversation log: every request and response in SQLite, to list, show, search and continue.

One file (by default ``logs.db`` in the user's data directory) holds conversations, their
model calls (the request, the response or the error, usage, timings, backend and model) and
the tool calls that were run with their results. The schema is versioned with
``PRAGMA user_version`` and migrated forward on open. The database runs in WAL mode with a
busy timeout and every write is one ``BEGIN IMMEDIATE`` transaction, so several processes
(batch workers, two terminals) can write at once without corrupting it or losing a record.

API keys are never written: a backend keeps its key, requests carry none, and the request's
``extra`` fields are redacted of secret-looking names before they are stored.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chatlane._records import (
    message_from_dict,
    message_to_dict,
    request_from_dict,
    request_to_dict,
    response_from_dict,
    response_to_dict,
)
from chatlane.errors import ChatlaneError, InputError
from chatlane.messages import Message
from chatlane.request import ChatRequest
from chatlane.response import ChatResponse

__all__ = [
    "ConversationSummary",
    "LoggedCall",
    "LoggedConversation",
    "LoggedToolRun",
    "Store",
    "StoreError",
    "default_db_path",
    "logging_enabled",
]


log = logging.getLogger("chatlane.store")


class StoreError(ChatlaneError):
    """The log database cannot be opened, migrated or read (or an id names nothing in it)."""


# Each entry moves the schema one version forward; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        backend TEXT,
        model TEXT
    );
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id),
        started_at TEXT NOT NULL,
        backend TEXT,
        model TEXT,
        request TEXT NOT NULL,
        response TEXT,
        error TEXT,
        prompt_text TEXT NOT NULL DEFAULT '',
        response_text TEXT NOT NULL DEFAULT '',
        finish_reason TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        total_tokens INTEGER,
        duration_ms REAL,
        first_token_ms REAL
    );
    CREATE INDEX calls_by_conversation ON calls(conversation_id, id);
    CREATE TABLE tool_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id INTEGER NOT NULL REFERENCES calls(id),
        tool_call_id TEXT NOT NULL,
        name TEXT NOT NULL,
        arguments TEXT NOT NULL,
        result TEXT,
        error TEXT,
        duration_ms REAL
    );
    CREATE INDEX tool_runs_by_call ON tool_runs(call_id);
    """,
    # 2: a batch run's item id, so a logged call can be traced back to its input line.
    """
    ALTER TABLE calls ADD COLUMN batch_item TEXT;
    """,
    # 3: the prompt tokens a server's prefix cache served and the completion tokens spent on
    # reasoning, so that `chatlane logs` shows whether caching works; filled in for the calls
    # logged before from the usage their responses carry.
    """
    ALTER TABLE calls ADD COLUMN cached_tokens INTEGER;
    ALTER TABLE calls ADD COLUMN reasoning_tokens INTEGER;
    UPDATE calls SET
        cached_tokens = json_extract(response, '$.usage.cached_tokens'),
        reasoning_tokens = json_extract(response, '$.usage.reasoning_tokens')
        WHERE response IS NOT NULL AND json_valid(response);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def default_db_path() -> Path:
    """Where the log lives unless told otherwise: ``$CHATLANE_DB``, else ``logs.db`` in the
    user's data directory (``$XDG_DATA_HOME/chatlane``, ``~/.local/share/chatlane``, or the
    platform's application-data folder)."""
    explicit = os.environ.get("CHATLANE_DB")
    if explicit:
        return Path(explicit).expanduser()
    if sys.platform == "win32":  # pragma: no cover - not tested on this platform
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":  # pragma: no cover - not tested on this platform
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "chatlane" / "logs.db"


def logging_enabled() -> bool:
    """False when ``CHATLANE_LOG`` is ``off`` (or ``0``, ``false``, ``no``)."""
    return os.environ.get("CHATLANE_LOG", "on").strip().lower() not in ("off", "0", "false", "no")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's base32: no i, l, o, u


def new_conversation_id() -> str:
    """A 16-character id that sorts by creation time (48 bits of milliseconds, 32 random)."""
    value = (int(time.time() * 1000) << 32) | secrets.randbits(32)
    chars = []
    for _ in range(16):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One line of ``chatlane logs``: a conversation and what it holds."""

    id: str
    created_at: str
    updated_at: str
    title: str
    backend: str | None
    model: str | None
    calls: int
    total_tokens: int
    cached_tokens: int = 0
    """Prompt tokens served from a server's prefix cache, over all calls (where reported)."""
    reasoning_tokens: int = 0
    """Completion tokens spent on reasoning, over all calls (where reported)."""


@dataclass(frozen=True, slots=True)
class LoggedToolRun:
    """A tool call that was run, and its result or error."""

    tool_call_id: str
    name: str
    arguments: str
    result: str | None
    error: str | None
    duration_ms: float | None


@dataclass(frozen=True, slots=True)
class LoggedCall:
    """One model call: the request, the response (or the error), usage and timings."""

    id: int
    started_at: str
    backend: str | None
    model: str | None
    request: dict[str, Any]
    response: ChatResponse | None
    error: str | None
    duration_ms: float | None
    first_token_ms: float | None
    tool_runs: tuple[LoggedToolRun, ...]
    batch_item: str | None

    @property
    def messages(self) -> tuple[Message, ...]:
        """The request's messages, read back."""
        return tuple(
            message_from_dict(m, f"messages[{i}]")
            for i, m in enumerate(self.request.get("messages", []))
        )


@dataclass(frozen=True, slots=True)
class LoggedConversation:
    """A conversation and all its calls, oldest first."""

    summary: ConversationSummary
    calls: tuple[LoggedCall, ...]

    def messages(self) -> list[Message]:
        """The conversation so far, to continue it: the last request's messages followed by
        the answer to it (a call that failed adds nothing)."""
        for call in reversed(self.calls):
            if call.response is not None:
                return [*call.messages, call.response.message]
        return list(self.calls[-1].messages) if self.calls else []


class Store:
    """The conversation log in one SQLite file (see the module docstring).

    Thread-safe: one connection guarded by a lock. Several processes may open the same file.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_db_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the log {str(self.path)!r}: {e}") from e
        self._lock = threading.RLock()
        try:
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise StoreError(f"{str(self.path)!r} is not a usable chatlane log: {e}") from e

    @classmethod
    def open_default(cls, path: str | os.PathLike[str] | None = None) -> Store | None:
        """The log at ``path`` (or the default place), or None when ``CHATLANE_LOG=off``."""
        if not logging_enabled():
            return None
        return cls(path)

    # ---- schema

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the log {str(self.path)!r} has schema version {version}, newer than this "
                    f"chatlane knows ({SCHEMA_VERSION}); upgrade chatlane to read it"
                )
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        db.execute(statement)
            if version != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so two writers queue on the busy
        # timeout instead of one failing with "database is locked" halfway through.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- writing

    def new_conversation(
        self, *, title: str = "", backend: str | None = None, model: str | None = None
    ) -> str:
        """Start a conversation; return its id."""
        cid = new_conversation_id()
        now = _now()
        with self._write() as db:
            db.execute(
                "INSERT INTO conversations (id, created_at, updated_at, title, backend, model)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (cid, now, now, title[:200], backend, model),
            )
        return cid

    def log_call(
        self,
        conversation_id: str | None,
        request: ChatRequest,
        response: ChatResponse | None = None,
        *,
        error: BaseException | str | None = None,
        backend: str | None = None,
        model: str | None = None,
        duration: float | None = None,
        first_token: float | None = None,
        batch_item: str | None = None,
    ) -> tuple[str, int]:
        """Record one model call (a new conversation when ``conversation_id`` is None).

        ``duration`` and ``first_token`` are seconds. Returns (conversation id, call id).
        """
        model = model or (response.model if response is not None else None) or request.model
        request_json = json.dumps(request_to_dict(request), ensure_ascii=False)
        prompt_text = "\n".join(m.text for m in request.messages)
        usage = response.usage if response is not None else None
        error_text = None
        if error is not None:
            error_text = (
                error if isinstance(error, str) else f"{type(error).__name__}: {error}".strip()
            )
        title = next((m.text for m in request.messages if m.role.value == "user"), "")
        now = _now()
        with self._write() as db:
            if conversation_id is None:
                conversation_id = new_conversation_id()
                db.execute(
                    "INSERT INTO conversations (id, created_at, updated_at, title, backend, model)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (conversation_id, now, now, title[:200], backend, model),
                )
            else:
                updated = db.execute(
                    "UPDATE conversations SET updated_at = ?, model = coalesce(model, ?),"
                    " backend = coalesce(backend, ?),"
                    " title = CASE WHEN title = '' THEN ? ELSE title END WHERE id = ?",
                    (now, model, backend, title[:200], conversation_id),
                ).rowcount
                if not updated:
                    raise StoreError(f"no conversation {conversation_id!r} in the log")
            cursor = db.execute(
                "INSERT INTO calls (conversation_id, started_at, backend, model, request,"
                " response, error, prompt_text, response_text, finish_reason, prompt_tokens,"
                " completion_tokens, total_tokens, duration_ms, first_token_ms, batch_item,"
                " cached_tokens, reasoning_tokens)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    now,
                    backend,
                    model,
                    request_json,
                    json.dumps(response_to_dict(response), ensure_ascii=False)
                    if response is not None
                    else None,
                    error_text,
                    prompt_text,
                    response.text if response is not None else "",
                    response.finish_reason.value if response is not None else None,
                    usage.prompt_tokens if usage else None,
                    usage.completion_tokens if usage else None,
                    usage.total_tokens if usage else None,
                    duration * 1000 if duration is not None else None,
                    first_token * 1000 if first_token is not None else None,
                    batch_item,
                    usage.cached_tokens if usage else None,
                    usage.reasoning_tokens if usage else None,
                ),
            )
            call_id = cursor.lastrowid
        assert call_id is not None
        return conversation_id, call_id

    def log_tool_run(
        self,
        call_id: int,
        *,
        tool_call_id: str,
        name: str,
        arguments: str,
        result: str | None = None,
        error: str | None = None,
        duration: float | None = None,
    ) -> None:
        """Record a tool call that the model call ``call_id`` made and that was run."""
        with self._write() as db:
            db.execute(
                "INSERT INTO tool_runs (call_id, tool_call_id, name, arguments, result, error,"
                " duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    call_id,
                    tool_call_id,
                    name,
                    arguments,
                    result,
                    error,
                    duration * 1000 if duration is not None else None,
                ),
            )

    # ---- reading

    _SUMMARY = (
        "SELECT c.id, c.created_at, c.updated_at, c.title, c.backend, c.model,"
        " count(k.id), coalesce(sum(k.total_tokens), 0), coalesce(sum(k.cached_tokens), 0),"
        " coalesce(sum(k.reasoning_tokens), 0)"
        " FROM conversations c LEFT JOIN calls k ON k.conversation_id = c.id"
    )

    def conversations(self, limit: int = 20) -> list[ConversationSummary]:
        """The most recently updated conversations, newest first."""
        with self._lock:
            rows = self._db.execute(
                self._SUMMARY
                + " GROUP BY c.id ORDER BY c.updated_at DESC, max(k.id) DESC, c.rowid DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return _summaries(rows)

    def search(self, text: str, limit: int = 20) -> list[ConversationSummary]:
        """Conversations whose prompts or answers contain ``text`` (case-insensitive for ASCII),
        newest first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._lock:
            rows = self._db.execute(
                self._SUMMARY + " WHERE c.id IN (SELECT conversation_id FROM calls"
                " WHERE prompt_text LIKE ?1 ESCAPE '\\' OR response_text LIKE ?1 ESCAPE '\\')"
                " OR c.title LIKE ?1 ESCAPE '\\'"
                " GROUP BY c.id ORDER BY c.updated_at DESC, max(k.id) DESC, c.rowid DESC LIMIT ?2",
                (pattern, limit),
            ).fetchall()
        return _summaries(rows)

    def resolve(self, id_or_prefix: str) -> str:
        """The full id of the conversation that ``id_or_prefix`` names (``last`` for the newest)."""
        if id_or_prefix == "last":
            latest = self.conversations(1)
            if not latest:
                raise StoreError("the log holds no conversation yet")
            return latest[0].id
        if not id_or_prefix or any(c in id_or_prefix for c in "%_\\"):
            raise InputError(f"{id_or_prefix!r} is not a conversation id")
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM conversations WHERE id LIKE ? ORDER BY id LIMIT 3",
                (id_or_prefix.lower() + "%",),
            ).fetchall()
        if not rows:
            raise StoreError(f"no conversation {id_or_prefix!r} in the log {str(self.path)!r}")
        if len(rows) > 1:
            raise InputError(
                f"{id_or_prefix!r} names several conversations ({rows[0][0]}, {rows[1][0]}, ...);"
                " give more of the id"
            )
        return str(rows[0][0])

    def conversation(self, id_or_prefix: str) -> LoggedConversation:
        """A conversation with every call and tool run (``id_or_prefix`` as for `resolve`)."""
        cid = self.resolve(id_or_prefix)
        with self._lock:
            summary = self._db.execute(
                self._SUMMARY + " WHERE c.id = ? GROUP BY c.id", (cid,)
            ).fetchone()
            rows = self._db.execute(
                "SELECT id, started_at, backend, model, request, response, error, duration_ms,"
                " first_token_ms, batch_item FROM calls WHERE conversation_id = ? ORDER BY id",
                (cid,),
            ).fetchall()
            runs: dict[int, list[LoggedToolRun]] = {}
            for run in self._db.execute(
                "SELECT call_id, tool_call_id, name, arguments, result, error, duration_ms"
                " FROM tool_runs WHERE call_id IN"
                " (SELECT id FROM calls WHERE conversation_id = ?) ORDER BY id",
                (cid,),
            ):
                runs.setdefault(run[0], []).append(LoggedToolRun(*run[1:]))
        calls = tuple(_call(cid, row, runs) for row in rows)
        if summary is None:
            raise StoreError(f"no conversation {cid!r} in the log")
        return LoggedConversation(_summary(summary), calls)

    def count_calls(self) -> int:
        """How many model calls the log holds."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM calls").fetchone()[0])


def _summary(row: Sequence[Any]) -> ConversationSummary:
    """A summary from its row; `StoreError` naming the row when a value has the wrong type."""
    kinds: tuple[tuple[str, tuple[type, ...]], ...] = (
        ("id", (str,)),
        ("created_at", (str,)),
        ("updated_at", (str,)),
        ("title", (str,)),
        ("backend", (str, type(None))),
        ("model", (str, type(None))),
        ("calls", (int,)),
        ("total_tokens", (int,)),
        ("cached_tokens", (int,)),
        ("reasoning_tokens", (int,)),
    )
    for (name, types), value in zip(kinds, row, strict=True):
        if not isinstance(value, types):
            raise StoreError(
                f"the log's conversation row {row[0]!r} is damaged: its {name} is "
                f"{type(value).__name__} {value!r:.40}"
            )
    return ConversationSummary(*row)


def _summaries(rows: Sequence[Sequence[Any]]) -> list[ConversationSummary]:
    """The readable summaries; a damaged row is reported (logged) and skipped, so a listing
    goes on with the rest."""
    out: list[ConversationSummary] = []
    for row in rows:
        try:
            out.append(_summary(row))
        except StoreError as e:
            log.warning("%s; it is left out of the listing", e)
    return out


def _call(cid: str, row: Sequence[Any], runs: Mapping[int, list[LoggedToolRun]]) -> LoggedCall:
    """A logged call from its row; `StoreError` naming the row when it cannot be read."""
    try:
        request = json.loads(row[4])
        if not isinstance(request, dict):
            raise TypeError(f"the request is a {type(request).__name__}, not an object")
        request_from_dict(request)  # the messages must be readable too
        response = response_from_dict(json.loads(row[5])) if row[5] else None
        for name, value, types in (
            ("started_at", row[1], (str,)),
            ("error", row[6], (str, type(None))),
            ("duration_ms", row[7], (int, float, type(None))),
            ("first_token_ms", row[8], (int, float, type(None))),
            ("batch_item", row[9], (str, type(None))),
        ):
            if not isinstance(value, types):
                raise TypeError(f"its {name} is {type(value).__name__}")
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        # ChatlaneError's input kinds are ValueErrors too.
        raise StoreError(
            f"the log's call row {row[0]} (conversation {cid!r}) is damaged and cannot be read: {e}"
        ) from e
    return LoggedCall(
        id=row[0],
        started_at=row[1],
        backend=row[2],
        model=row[3],
        request=request,
        response=response,
        error=row[6],
        duration_ms=row[7],
        first_token_ms=row[8],
        tool_runs=tuple(runs.get(row[0], ())),
        batch_item=row[9],
    )


def conversation_to_json(conversation: LoggedConversation) -> dict[str, Any]:
    """A logged conversation as JSON (for ``chatlane logs show --json``)."""
    s = conversation.summary
    return {
        "id": s.id,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "title": s.title,
        "backend": s.backend,
        "model": s.model,
        "total_tokens": s.total_tokens,
        "calls": [
            {
                "id": c.id,
                "started_at": c.started_at,
                "backend": c.backend,
                "model": c.model,
                "request": c.request,
                "response": response_to_dict(c.response) if c.response is not None else None,
                "error": c.error,
                "duration_ms": c.duration_ms,
                "first_token_ms": c.first_token_ms,
                "batch_item": c.batch_item,
                "tool_runs": [
                    {
                        "tool_call_id": r.tool_call_id,
                        "name": r.name,
                        "arguments": r.arguments,
                        "result": r.result,
                        "error": r.error,
                        "duration_ms": r.duration_ms,
                    }
                    for r in c.tool_runs
                ],
            }
            for c in conversation.calls
        ],
    }


def messages_to_json(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages as OpenAI-style JSON objects (what ``/save`` writes)."""
    return [message_to_dict(m) for m in messages]
