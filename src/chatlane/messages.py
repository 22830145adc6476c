"""Messages: roles, content parts (text and images) and tool calls.

All values here are frozen: a conversation is a tuple of messages that nobody mutates.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import mimetypes
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

from chatlane.errors import ImageError, MessageError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "Content",
    "Image",
    "Message",
    "Part",
    "Role",
    "Text",
    "ToolCall",
    "assistant",
    "system",
    "tool_result",
    "user",
]


class Role(enum.StrEnum):
    """Who speaks a message. (``ipython`` is how Llama renders the tool role, not a role.)"""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"

    @classmethod
    def parse(cls, value: Role | str) -> Role:
        """Return the role named by ``value``; raise `MessageError` for anything else."""
        if isinstance(value, Role):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
            if value.lower() == "ipython":
                return cls.TOOL
        allowed = ", ".join(repr(r.value) for r in cls)
        raise MessageError(f"{value!r} is not a role; a role is one of {allowed}")

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Text:
    """A text part of a message's content."""

    text: str
    kind: ClassVar[Literal["text"]] = "text"

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise MessageError(f"Text needs a str, got {type(self.text).__name__}")


_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)
IMAGE_MEDIA_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff"}
)


def sniff_media_type(data: bytes) -> str | None:
    """Return the media type that ``data``'s magic bytes announce, or None."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return None


@dataclass(frozen=True, slots=True)
class Image:
    """An image part: the original bytes and their media type, or a URL the server fetches.

    An image keeps its original encoding: chatlane never re-encodes what it was given.
    Build one with `Image.from_path`, `from_bytes`, `from_pil`, `from_url` or `from_data_uri`.
    """

    data: bytes | None = None
    """The encoded image (PNG, JPEG, ...), or None for an image given only by URL."""
    media_type: str | None = None
    """The media type of ``data``, such as ``image/png``."""
    url: str | None = None
    """An http(s) URL the server fetches itself, when the image was given by URL."""
    detail: str | None = None
    """OpenAI's optional ``detail`` hint (``auto``, ``low``, ``high``)."""
    kind: ClassVar[Literal["image"]] = "image"

    def __post_init__(self) -> None:
        if self.data is None and self.url is None:
            raise ImageError("an Image needs either data or a url")
        if self.data is not None:
            if not isinstance(self.data, bytes | bytearray | memoryview):
                raise ImageError(f"Image data must be bytes, got {type(self.data).__name__}")
            if not isinstance(self.data, bytes):
                object.__setattr__(self, "data", bytes(self.data))
            if self.media_type is None:
                raise ImageError("an Image with data needs a media_type")
        if self.media_type is not None and self.media_type not in IMAGE_MEDIA_TYPES:
            raise ImageError(f"{self.media_type!r} is not an image media type chatlane knows")

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> Image:
        """An image from encoded bytes; the media type is read from the bytes when not given."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ImageError(f"Image.from_bytes needs bytes, got {type(data).__name__}")
        data = bytes(data)
        sniffed = sniff_media_type(data)
        if media_type is None:
            if sniffed is None:
                raise ImageError(
                    "cannot tell the image type of these bytes (not PNG, JPEG, GIF, WebP, BMP or TIFF)"
                )
            media_type = sniffed
        return cls(data=data, media_type=media_type)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> Image:
        """An image read from a file."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ImageError(f"cannot read image file {os.fspath(path)!r}: {e.strerror}") from e
        media_type = sniff_media_type(data)
        if media_type is None:
            guessed, _ = mimetypes.guess_type(os.fspath(path))
            if guessed in IMAGE_MEDIA_TYPES:
                media_type = guessed
        if media_type is None:
            raise ImageError(f"{os.fspath(path)!r} is not an image chatlane can read")
        return cls(data=data, media_type=media_type)

    @classmethod
    def from_pil(cls, image: PILImage, format: str | None = None) -> Image:
        """An image from a Pillow image, in its own format when it has one, else PNG."""
        import io

        fmt = (format or getattr(image, "format", None) or "PNG").upper()
        buffer = io.BytesIO()
        try:
            image.save(buffer, format=fmt)
        except (OSError, ValueError, KeyError) as e:
            raise ImageError(f"cannot encode the Pillow image as {fmt}: {e}") from e
        return cls.from_bytes(buffer.getvalue())

    @classmethod
    def from_url(cls, url: str, *, detail: str | None = None) -> Image:
        """An image given by URL. ``data:`` URIs are decoded; http(s) URLs are sent as they are."""
        if url.startswith("data:"):
            image = cls.from_data_uri(url)
            return cls(data=image.data, media_type=image.media_type, detail=detail)
        if not url.startswith(("http://", "https://")):
            raise ImageError(f"an image URL must be http(s) or a data URI, got {url[:40]!r}")
        return cls(url=url, detail=detail)

    @classmethod
    def from_data_uri(cls, uri: str) -> Image:
        """An image from a ``data:image/...;base64,...`` URI."""
        if not uri.startswith("data:") or "," not in uri:
            raise ImageError(f"not a data URI: {uri[:40]!r}")
        header, payload = uri[5:].split(",", 1)
        parts = header.split(";")
        media_type = parts[0] or None
        if "base64" not in parts[1:]:
            raise ImageError("an image data URI must be base64-encoded")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ImageError(f"the data URI's base64 payload is invalid: {e}") from e
        return cls.from_bytes(data, media_type)

    def to_data_uri(self) -> str:
        """This image as a ``data:`` URI (or its URL when it was given by URL)."""
        if self.data is None:
            assert self.url is not None
            return self.url
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def __repr__(self) -> str:
        if self.data is None:
            return f"Image(url={self.url!r})"
        return f"Image(media_type={self.media_type!r}, {len(self.data)} bytes)"


Part: TypeAlias = Text | Image
Content: TypeAlias = str | tuple[Part, ...]


def _coerce_content(content: Any) -> Content:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Text | Image):
        return (content,)
    if isinstance(content, Iterable) and not isinstance(content, bytes | Mapping):
        parts: list[Part] = []
        for item in content:
            if isinstance(item, str):
                parts.append(Text(item))
            elif isinstance(item, Text | Image):
                parts.append(item)
            else:
                raise MessageError(
                    f"message content parts must be str, Text or Image, got {type(item).__name__}"
                )
        return tuple(parts)
    raise MessageError(
        f"message content must be a str or a sequence of Text and Image parts, got {type(content).__name__}"
    )


_NOT_PARSED: Any = object()


@dataclass(frozen=True, slots=True, init=False)
class ToolCall:
    """A call of a tool by the model.

    ``arguments`` is the parsed JSON object; ``raw_arguments`` is the exact text the model
    produced, so nothing is lost on a round trip. Arguments that are not a JSON object are
    not an exception: ``arguments`` is then empty and ``arguments_error`` says what is wrong.
    """

    id: str
    name: str
    arguments: Mapping[str, Any]
    raw_arguments: str
    arguments_error: str | None

    def __init__(
        self,
        id: str,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        raw_arguments: str | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise MessageError(f"a tool call's name must be a str, got {type(name).__name__}")
        error: str | None = None
        if raw_arguments is None:
            parsed: Mapping[str, Any] = dict(arguments or {})
            raw_arguments = json.dumps(parsed, ensure_ascii=False)
        elif arguments is not None:
            parsed = dict(arguments)
        else:
            parsed, error = parse_arguments(raw_arguments)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "arguments", parsed)
        object.__setattr__(self, "raw_arguments", raw_arguments)
        object.__setattr__(self, "arguments_error", error)

    @classmethod
    def from_raw(cls, id: str, name: str, raw_arguments: str) -> ToolCall:
        """A call whose arguments are the exact text a model or server produced."""
        return cls(id, name, raw_arguments=raw_arguments)

    @property
    def valid(self) -> bool:
        """Whether the arguments parsed as a JSON object."""
        return self.arguments_error is None

    def __repr__(self) -> str:
        return f"ToolCall(id={self.id!r}, name={self.name!r}, arguments={self.raw_arguments!r})"


def parse_arguments(raw: str) -> tuple[dict[str, Any], str | None]:
    """Parse a tool call's argument text: (the object, None) or ({}, what is wrong)."""
    if raw.strip() == "":
        return {}, None
    try:
        value = json.loads(raw)
    except ValueError as e:
        return {}, f"arguments are not valid JSON: {e}"
    if not isinstance(value, dict):
        return {}, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, None


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation.

    ``content`` is a str or a tuple of `Text` and `Image` parts (lists are turned into
    tuples, plain strings in a list into `Text`); ``None`` is read as empty.
    """

    role: Role
    content: Content = ""
    tool_calls: tuple[ToolCall, ...] = ()
    """The calls an assistant message makes."""
    tool_call_id: str | None = None
    """For a tool message: the id of the call it answers."""
    name: str | None = None
    """For a tool message, the tool's name; otherwise an optional participant name."""
    reasoning: str | None = None
    """An assistant's reasoning text, where the server reports it separately."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "role", Role.parse(self.role))
        for field_name in ("tool_call_id", "name", "reasoning"):
            value = getattr(self, field_name)
            if value is not None and not isinstance(value, str):
                raise MessageError(
                    f"a message's {field_name} must be a str, got {type(value).__name__}"
                )
        object.__setattr__(self, "content", _coerce_content(self.content))
        calls = self.tool_calls
        if calls is None:
            calls = ()
        if not isinstance(calls, tuple):
            if not isinstance(calls, Sequence) or isinstance(calls, str):
                raise MessageError("tool_calls must be a sequence of ToolCall")
            calls = tuple(calls)
        for call in calls:
            if not isinstance(call, ToolCall):
                raise MessageError(f"tool_calls must hold ToolCall, got {type(call).__name__}")
        if calls and self.role is not Role.ASSISTANT:
            raise MessageError(f"only assistant messages make tool calls, not {self.role.value}")
        object.__setattr__(self, "tool_calls", calls)

    @property
    def text(self) -> str:
        """The message's text: its content, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, Text))

    @property
    def images(self) -> tuple[Image, ...]:
        """The message's image parts."""
        if isinstance(self.content, str):
            return ()
        return tuple(p for p in self.content if isinstance(p, Image))

    @property
    def parts(self) -> tuple[Part, ...]:
        """The content as parts (a str becomes one `Text`, or none when empty)."""
        if isinstance(self.content, str):
            return (Text(self.content),) if self.content else ()
        return self.content


def system(content: str | Sequence[str | Part]) -> Message:
    """A system message."""
    return Message(Role.SYSTEM, content)  # type: ignore[arg-type]


def user(content: str | Sequence[str | Part] | Part, *, name: str | None = None) -> Message:
    """A user message: text, or a sequence of text and images."""
    return Message(Role.USER, content, name=name)  # type: ignore[arg-type]


def assistant(
    content: str | Sequence[str | Part] = "",
    tool_calls: Sequence[ToolCall] = (),
    *,
    reasoning: str | None = None,
) -> Message:
    """An assistant message, with the tool calls it makes."""
    return Message(Role.ASSISTANT, content, tuple(tool_calls), reasoning=reasoning)  # type: ignore[arg-type]


def tool_result(call: ToolCall | str, content: Any, *, name: str | None = None) -> Message:
    """The result of a tool call, tied to its call id.

    ``content`` that is not a str (a dict, a list, a number, a pydantic model) is sent as JSON.
    """
    if isinstance(call, ToolCall):
        call_id, name = call.id, name or call.name
    elif isinstance(call, str):
        call_id = call
    else:
        raise MessageError(f"tool_result needs a ToolCall or a call id, got {type(call).__name__}")
    if not isinstance(content, str | tuple | list):
        content = _to_json_text(content)
    return Message(Role.TOOL, content, tool_call_id=call_id, name=name)


def _to_json_text(value: Any) -> str:
    dump = getattr(value, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    try:
        return json.dumps(value, ensure_ascii=False)
    except TypeError as e:
        raise MessageError(f"a tool result must be text or JSON-serialisable: {e}") from e
