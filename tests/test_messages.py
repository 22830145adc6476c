"""Messages, roles, content parts, images and tool calls."""

from __future__ import annotations

import base64
import dataclasses
import io
from pathlib import Path

import pytest
from PIL import Image as PILImage
from pydantic import BaseModel

from chatlane.errors import ImageError, MessageError
from chatlane.messages import (
    Image,
    Message,
    Role,
    Text,
    ToolCall,
    assistant,
    system,
    tool_result,
    user,
)


def png_bytes(size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


# --- roles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "role"),
    [
        ("user", Role.USER),
        ("Assistant", Role.ASSISTANT),
        ("SYSTEM", Role.SYSTEM),
        ("tool", Role.TOOL),
        ("ipython", Role.TOOL),
    ],
)
def test_roles_from_strings(value: str, role: Role) -> None:
    assert Role.parse(value) is role
    assert Message(value, "x").role is role  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["bot", "", 3, None])
def test_a_role_that_is_not_one(value: object) -> None:
    with pytest.raises(
        MessageError, match="is not a role; a role is one of 'system', 'user', 'assistant', 'tool'"
    ):
        Message(value, "x")  # type: ignore[arg-type]


def test_role_is_its_string() -> None:
    assert str(Role.USER) == "user"
    assert Role.USER.value == "user"


# --- content --------------------------------------------------------------------------------


def test_content_forms() -> None:
    image = Image.from_bytes(png_bytes())
    message = user(["look", image, Text("here")])
    assert message.content == (Text("look"), image, Text("here"))
    assert message.text == "lookhere"
    assert message.images == (image,)
    assert Message(Role.USER, None).content == ""  # type: ignore[arg-type]
    assert user("hi").parts == (Text("hi"),)
    assert user("").parts == ()
    assert user(image).content == (image,)


@pytest.mark.parametrize("content", [5, b"bytes", {"a": 1}, [1]])
def test_content_that_is_not_text_or_parts(content: object) -> None:
    with pytest.raises(MessageError, match="content"):
        Message(Role.USER, content)  # type: ignore[arg-type]


def test_text_part_needs_a_string() -> None:
    with pytest.raises(MessageError, match="Text needs a str"):
        Text(3)  # type: ignore[arg-type]


def test_messages_are_frozen_values() -> None:
    message = user("hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.content = "changed"  # type: ignore[misc]
    assert message == user("hi")
    assert hash(message) == hash(user("hi"))


def test_only_assistants_make_tool_calls() -> None:
    call = ToolCall("c", "f", {})
    assert assistant("", [call]).tool_calls == (call,)
    assert Message(Role.ASSISTANT, "", [call]).tool_calls == (call,)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="only assistant messages make tool calls, not user"):
        Message(Role.USER, "x", (call,))
    with pytest.raises(MessageError, match="must hold ToolCall, got dict"):
        Message(Role.ASSISTANT, "", ({"id": "c"},))  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="sequence of ToolCall"):
        Message(Role.ASSISTANT, "", "call")  # type: ignore[arg-type]


def test_helpers() -> None:
    assert system("rules") == Message(Role.SYSTEM, "rules")
    assert user("hi", name="ann") == Message(Role.USER, "hi", name="ann")
    assert assistant("thinking done", reasoning="hmm").reasoning == "hmm"


def test_tool_result_ties_to_the_call_and_sends_json() -> None:
    call = ToolCall("call_9", "lookup", {"q": "x"})
    result = tool_result(call, {"answer": 42, "städte": ["Köln"]})
    assert result.role is Role.TOOL
    assert result.tool_call_id == "call_9"
    assert result.name == "lookup"
    assert result.content == '{"answer": 42, "städte": ["Köln"]}'
    assert tool_result("call_1", "plain").content == "plain"
    assert tool_result("call_1", 3.5).content == "3.5"

    class Out(BaseModel):
        value: int

    assert tool_result(call, Out(value=1)).content == '{"value":1}'
    with pytest.raises(MessageError, match="JSON-serialisable"):
        tool_result(call, object())
    with pytest.raises(MessageError, match="needs a ToolCall or a call id"):
        tool_result(3, "x")  # type: ignore[arg-type]


# --- images ---------------------------------------------------------------------------------


def test_image_from_bytes_sniffs_the_type_and_keeps_the_bytes() -> None:
    data = png_bytes()
    image = Image.from_bytes(data)
    assert (image.media_type, image.data) == ("image/png", data)
    assert Image.from_bytes(b"\xff\xd8\xff\xe0rest").media_type == "image/jpeg"
    assert Image.from_bytes(b"GIF89a....").media_type == "image/gif"
    assert Image.from_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 ").media_type == "image/webp"
    assert Image.from_bytes(bytearray(data)).data == data  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="cannot tell the image type"):
        Image.from_bytes(b"hello")
    with pytest.raises(ImageError, match="needs bytes, got str"):
        Image.from_bytes("hello")  # type: ignore[arg-type]


def test_image_from_path_keeps_the_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "pic.png"
    path.write_bytes(png_bytes((7, 5)))
    image = Image.from_path(path)
    assert image.data == path.read_bytes()
    assert image.media_type == "image/png"


def test_an_image_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"cannot read image file .*missing\.png"):
        Image.from_path(tmp_path / "missing.png")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageError, match=r"notes\.txt' is not an image"):
        Image.from_path(text)


def test_image_from_pil() -> None:
    picture = PILImage.new("RGB", (6, 4), (1, 2, 3))
    image = Image.from_pil(picture)
    assert image.media_type == "image/png"
    assert image.data is not None
    assert PILImage.open(io.BytesIO(image.data)).size == (6, 4)
    assert Image.from_pil(picture, format="JPEG").media_type == "image/jpeg"
    with pytest.raises(ImageError, match="cannot encode"):
        Image.from_pil(picture, format="NOPE")


def test_image_from_url_and_data_uri() -> None:
    data = png_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    from_uri = Image.from_data_uri(uri)
    assert from_uri.data == data
    assert from_uri.to_data_uri() == uri
    assert Image.from_url(uri, detail="high") == Image(
        data=data, media_type="image/png", detail="high"
    )
    remote = Image.from_url("https://example.test/cat.jpg")
    assert (remote.url, remote.data, remote.to_data_uri()) == (
        "https://example.test/cat.jpg",
        None,
        "https://example.test/cat.jpg",
    )
    with pytest.raises(ImageError, match="http"):
        Image.from_url("file:///etc/passwd")
    with pytest.raises(ImageError, match="base64-encoded"):
        Image.from_data_uri("data:image/png,abc")
    with pytest.raises(ImageError, match="base64 payload is invalid"):
        Image.from_data_uri("data:image/png;base64,!!!")
    with pytest.raises(ImageError, match="not a data URI"):
        Image.from_data_uri("image/png;base64,abc")


def test_image_needs_data_or_url_and_a_known_type() -> None:
    with pytest.raises(ImageError, match="either data or a url"):
        Image()
    with pytest.raises(ImageError, match="needs a media_type"):
        Image(data=b"abc")
    with pytest.raises(ImageError, match="'text/plain' is not an image media type"):
        Image(data=b"abc", media_type="text/plain")


def test_image_repr_does_not_dump_the_bytes() -> None:
    image = Image.from_bytes(png_bytes())
    assert repr(image) == f"Image(media_type='image/png', {len(image.data or b'')} bytes)"


# --- tool calls -----------------------------------------------------------------------------


def test_tool_call_keeps_the_exact_argument_text() -> None:
    call = ToolCall.from_raw("c1", "f", '{ "city" : "Paris" }')
    assert call.arguments == {"city": "Paris"}
    assert call.raw_arguments == '{ "city" : "Paris" }'
    assert call.valid


def test_tool_call_from_arguments_writes_json() -> None:
    call = ToolCall("c1", "f", {"city": "Zürich"})
    assert call.raw_arguments == '{"city": "Zürich"}'
    assert ToolCall("c", "f").arguments == {}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ('{"a": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ('"text"', "got str"),
    ],
)
def test_invalid_arguments_are_visible_not_raised(raw: str, error: str) -> None:
    call = ToolCall.from_raw("c", "f", raw)
    assert call.arguments == {}
    assert not call.valid
    assert error in (call.arguments_error or "")
    assert call.raw_arguments == raw


def test_empty_arguments_are_an_empty_object() -> None:
    for raw in ("", "  "):
        call = ToolCall.from_raw("c", "f", raw)
        assert call.arguments == {}
        assert call.valid


def test_tool_call_name_must_be_text() -> None:
    with pytest.raises(MessageError, match="name must be a str"):
        ToolCall("c", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["tool_call_id", "name", "reasoning"])
def test_message_text_fields_must_be_text(field: str) -> None:
    with pytest.raises(MessageError, match=f"a message's {field} must be a str, got int"):
        Message(Role.ASSISTANT, "x", **{field: 1})  # type: ignore[arg-type]


def test_every_public_type_is_a_frozen_slotted_dataclass() -> None:
    import importlib

    checked = 0
    for module_name in ("messages", "tools", "request", "response", "events"):
        module = importlib.import_module(f"chatlane.{module_name}")
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and dataclasses.is_dataclass(value):
                params = value.__dataclass_params__  # type: ignore[attr-defined]
                assert params.frozen, name
                assert "__slots__" in value.__dict__, name
                checked += 1
    assert checked >= 15
