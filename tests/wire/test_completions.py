"""The completion-endpoint codec: request bodies per dialect and what responses and chunks say."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatlane.errors import BadRequest, InputError, ParseError, RateLimited, ServerError
from chatlane.messages import user
from chatlane.request import ChatRequest
from chatlane.response import FinishReason, Usage
from chatlane.wire.completions import (
    DIALECTS,
    CompletionPiece,
    decode_chunk,
    decode_response,
    encode_query,
    encode_request,
    endpoint_path,
    parse_dialect,
)

PROMPT = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
STOPS = ("<|eot_id|>", "<|eom_id|>")


def req(**params: Any) -> ChatRequest:
    return ChatRequest((user("Hi"),), **params)


# Dialects and paths.


def test_dialects_and_their_paths() -> None:
    assert DIALECTS == ("openai", "llama.cpp", "aleph-alpha")
    assert [endpoint_path(d) for d in DIALECTS] == ["completions", "completion", "complete"]


@pytest.mark.parametrize(
    ("name", "dialect"),
    [
        ("openai", "openai"),
        ("vllm", "openai"),
        ("llama-cpp", "llama.cpp"),
        ("Aleph_Alpha", "aleph-alpha"),
    ],
)
def test_parse_dialect_accepts_names_and_aliases(name: str, dialect: str) -> None:
    assert parse_dialect(name) == dialect


def test_unknown_dialect_is_an_input_error_listing_the_known_ones() -> None:
    with pytest.raises(InputError, match=r"unknown completion dialect 'ollama'.*'aleph-alpha'"):
        parse_dialect("ollama")


# Encoding.


def test_openai_body_carries_prompt_settings_and_stops() -> None:
    body = encode_request(
        PROMPT,
        req(max_tokens=20, temperature=0.5, top_p=0.9, top_k=7, seed=3, stop=("END",)),
        "openai",
        stop=STOPS,
        model="m",
    )
    assert body == {
        "prompt": PROMPT,
        "model": "m",
        "max_tokens": 20,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 7,
        "seed": 3,
        "stop": ["<|eot_id|>", "<|eom_id|>", "END"],
        "skip_special_tokens": False,
    }


def test_openai_without_max_tokens_asks_for_no_limit_rather_than_the_default_16() -> None:
    body = encode_request(PROMPT, req(), "openai")
    assert "max_tokens" in body
    assert body["max_tokens"] is None


def test_openai_stream_asks_for_usage() -> None:
    body = encode_request(PROMPT, req(), "openai", stream=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_llamacpp_body_uses_n_predict_and_caches_the_prompt() -> None:
    body = encode_request(PROMPT, req(max_tokens=5, top_k=1), "llama.cpp", stop=STOPS)
    assert body == {
        "prompt": PROMPT,
        "n_predict": 5,
        "top_k": 1,
        "stop": list(STOPS),
        "cache_prompt": True,
        "stream": False,
    }
    assert encode_request(PROMPT, req(), "llama.cpp", stream=True)["n_predict"] == -1


def test_llamacpp_constrains_output_to_the_response_format_schema() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    body = encode_request(PROMPT, req(response_format=schema), "llama.cpp")
    assert body["json_schema"] == schema
    any_object = encode_request(PROMPT, req(response_format={"type": "json_object"}), "llama.cpp")
    assert any_object["json_schema"] == {"type": "object"}


def test_aleph_alpha_body_has_text_items_maximum_tokens_and_raw_completion() -> None:
    body = encode_request(
        PROMPT,
        req(max_tokens=64, temperature=0.0, steering_concepts=("formal",)),
        "aleph-alpha",
        stop=STOPS,
        model="llama-3.1-8b-instruct",
        stream=True,
    )
    assert body == {
        "prompt": [{"type": "text", "data": PROMPT, "controls": []}],
        "model": "llama-3.1-8b-instruct",
        "maximum_tokens": 64,
        "temperature": 0.0,
        "stop_sequences": list(STOPS),
        "steering_concepts": ["formal"],
        "raw_completion": True,
        "stream": True,
    }


def test_aleph_alpha_body_matches_the_reference_client_for_the_fields_it_sets() -> None:
    from aleph_alpha_client import CompletionRequest, Prompt

    reference = CompletionRequest(
        prompt=Prompt.from_text(PROMPT),
        maximum_tokens=32,
        temperature=0.7,
        top_k=5,
        top_p=0.5,
        stop_sequences=list(STOPS),
        raw_completion=True,
    ).to_json()
    ours = encode_request(
        PROMPT, req(max_tokens=32, temperature=0.7, top_k=5, top_p=0.5), "aleph-alpha", stop=STOPS
    )
    for key, value in ours.items():
        assert reference[key] == value, key


def test_extra_fields_are_sent_and_override_ours() -> None:
    body = encode_request(
        PROMPT, req(extra={"logit_bias": {"128009": -100}, "cache_prompt": False}), "llama.cpp"
    )
    assert body["logit_bias"] == {"128009": -100}
    assert body["cache_prompt"] is False


def test_token_id_prompts_per_dialect() -> None:
    ids = (128000, 128006, 882)
    assert encode_request(ids, req(), "openai")["prompt"] == [128000, 128006, 882]
    assert encode_request(ids, req(), "llama.cpp")["prompt"] == [128000, 128006, 882]
    assert encode_request(ids, req(), "aleph-alpha")["prompt"] == [
        {"type": "token_ids", "data": [128000, 128006, 882], "controls": []}
    ]


def test_aleph_alpha_token_ids_item_matches_the_reference_client() -> None:
    from aleph_alpha_client import Prompt, Tokens

    reference = Prompt([Tokens([1, 2, 3], controls=[])]).to_json()
    assert encode_request([1, 2, 3], req(), "aleph-alpha")["prompt"] == reference


def test_an_extra_none_removes_a_field() -> None:
    body = encode_request(PROMPT, req(extra={"skip_special_tokens": None}), "openai")
    assert "skip_special_tokens" not in body


def test_aleph_alpha_nice_goes_in_the_query_not_the_body() -> None:
    request = req(extra={"nice": True, "hosting": "aleph-alpha"})
    body = encode_request(PROMPT, request, "aleph-alpha")
    assert "nice" not in body
    assert body["hosting"] == "aleph-alpha"
    assert encode_query(request, "aleph-alpha") == {"nice": "true"}
    assert encode_query(req(), "aleph-alpha") == {}
    assert encode_query(request, "openai") == {}


def test_stop_sequences_are_not_repeated() -> None:
    body = encode_request(PROMPT, req(stop=("<|eot_id|>", "x")), "openai", stop=STOPS)
    assert body["stop"] == ["<|eot_id|>", "<|eom_id|>", "x"]


def test_special_tokens_in_the_prompt_survive_json() -> None:
    body = encode_request(PROMPT, req(), "aleph-alpha")
    assert json.loads(json.dumps(body))["prompt"][0]["data"] == PROMPT


# Decoding whole responses.


def test_openai_response() -> None:
    pieces = decode_response(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 7,
            "model": "tiny",
            "choices": [{"text": "Hello", "index": 0, "logprobs": None, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
        },
        "openai",
    )
    assert pieces == [
        CompletionPiece("Hello", 0, FinishReason.LENGTH, id="cmpl-1", model="tiny", created=7),
        CompletionPiece(usage=Usage(9, 2, 11), id="cmpl-1", model="tiny", created=7),
    ]


def test_openai_vllm_stop_reason_names_the_stop_string_or_token() -> None:
    body = {
        "choices": [
            {"text": "a", "index": 0, "finish_reason": "stop", "stop_reason": "<|eom_id|>"},
            {"text": "b", "index": 1, "finish_reason": "stop", "stop_reason": 128008},
        ]
    }
    first, second = decode_response(body, "openai")
    assert (first.stop_sequence, first.stop_token) == ("<|eom_id|>", None)
    assert (second.choice, second.stop_sequence, second.stop_token) == (1, None, 128008)


def test_openai_response_without_finish_reason_is_incomplete() -> None:
    (piece,) = decode_response({"choices": [{"text": "x"}]}, "openai")
    assert piece.finish_reason == FinishReason.INCOMPLETE


def test_unknown_finish_reason_is_kept() -> None:
    (piece,) = decode_response({"choices": [{"text": "x", "finish_reason": "abort"}]}, "openai")
    assert piece.finish_reason == FinishReason.other("abort")
    assert not piece.finish_reason.known


def test_llamacpp_response_stopped_by_eos() -> None:
    (piece,) = decode_response(
        {
            "content": "Hi there",
            "stop": True,
            "stop_type": "eos",
            "stopping_word": "",
            "tokens_predicted": 3,
            "tokens_evaluated": 12,
            "timings": {"cache_n": 4},
            "model": "tiny.gguf",
        },
        "llama.cpp",
    )
    assert piece == CompletionPiece(
        "Hi there", 0, FinishReason.STOP, usage=Usage(12, 3, 15, 4), model="tiny.gguf"
    )


@pytest.mark.parametrize(
    ("fields", "finish", "stop"),
    [
        ({"stop_type": "word", "stopping_word": "<|eom_id|>"}, FinishReason.STOP, "<|eom_id|>"),
        ({"stop_type": "limit"}, FinishReason.LENGTH, None),
        # servers before stop_type
        ({"stopped_limit": True}, FinishReason.LENGTH, None),
        ({"stopped_word": True, "stopping_word": "END"}, FinishReason.STOP, "END"),
        ({"stopped_eos": True}, FinishReason.STOP, None),
    ],
)
def test_llamacpp_stop_kinds(
    fields: dict[str, Any], finish: FinishReason, stop: str | None
) -> None:
    (piece,) = decode_response({"content": "x", "stop": True, **fields}, "llama.cpp")
    assert (piece.finish_reason, piece.stop_sequence) == (finish, stop)


def test_aleph_alpha_response_prefers_raw_completion() -> None:
    pieces = decode_response(
        {
            "model_version": "2024-10",
            "completions": [
                {
                    "completion": "call",
                    "raw_completion": "<|python_tag|>call",
                    "finish_reason": "maximum_tokens",
                }
            ],
            "num_tokens_prompt_total": 20,
            "num_tokens_generated": 4,
        },
        "aleph-alpha",
    )
    assert pieces == [
        CompletionPiece("<|python_tag|>call", 0, FinishReason.LENGTH, model="2024-10"),
        CompletionPiece(usage=Usage(20, 4, 24), model="2024-10"),
    ]


def test_aleph_alpha_response_parses_with_the_reference_client_too() -> None:
    from aleph_alpha_client import CompletionResponse

    body = {
        "model_version": "v",
        "completions": [{"completion": "Hi", "finish_reason": "end_of_text"}],
        "num_tokens_prompt_total": 1,
        "num_tokens_generated": 1,
    }
    reference = CompletionResponse.from_json(body)
    (piece, _usage) = decode_response(body, "aleph-alpha")
    assert piece.text == reference.completions[0].completion
    assert piece.finish_reason == FinishReason.STOP


# Decoding streamed chunks.


def test_openai_chunks() -> None:
    assert decode_chunk(
        {"choices": [{"text": "He", "index": 0, "finish_reason": None}]}, "openai"
    ) == [CompletionPiece("He")]
    assert decode_chunk(
        {"choices": [{"text": "", "index": 0, "finish_reason": "stop"}]}, "openai"
    ) == [CompletionPiece("", finish_reason=FinishReason.STOP)]
    # include_usage: a last chunk with no choices
    assert decode_chunk(
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}, "openai"
    ) == [CompletionPiece(usage=Usage(1, 2, 3))]


def test_llamacpp_chunks() -> None:
    assert decode_chunk({"content": "He", "stop": False}, "llama.cpp") == [CompletionPiece("He")]
    (last,) = decode_chunk(
        {
            "content": "",
            "stop": True,
            "stop_type": "limit",
            "tokens_predicted": 2,
            "tokens_evaluated": 5,
        },
        "llama.cpp",
    )
    assert last.finish_reason == FinishReason.LENGTH
    assert last.usage == Usage(5, 2, 7)


def test_aleph_alpha_stream_items() -> None:
    chunk = {
        "type": "stream_chunk",
        "index": 0,
        "completion": "x",
        "raw_completion": "x<|eot_id|>",
        "log_probs": None,
        "completion_tokens": None,
    }
    assert decode_chunk(chunk, "aleph-alpha") == [CompletionPiece("x<|eot_id|>")]
    summary = {
        "type": "stream_summary",
        "index": 0,
        "model_version": "v",
        "finish_reason": "end_of_text",
    }
    assert decode_chunk(summary, "aleph-alpha") == [
        CompletionPiece(finish_reason=FinishReason.STOP, model="v")
    ]
    done = {"type": "completion_summary", "num_tokens_prompt_total": 3, "num_tokens_generated": 1}
    assert decode_chunk(done, "aleph-alpha") == [CompletionPiece(usage=Usage(3, 1, 4))]
    assert decode_chunk({"type": "something_new"}, "aleph-alpha") == []


def test_aleph_alpha_stream_items_read_by_the_reference_client_agree() -> None:
    from aleph_alpha_client.completion import StreamChunk, stream_item_from_json

    chunk = {"type": "stream_chunk", "index": 1, "completion": "x", "raw_completion": "x"}
    reference = stream_item_from_json(chunk)
    assert isinstance(reference, StreamChunk)
    (piece,) = decode_chunk(chunk, "aleph-alpha")
    assert (piece.choice, piece.text) == (reference.index, reference.raw_completion)


# Bad input.


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_non_object_is_a_parse_error_keeping_the_text(dialect: Any) -> None:
    with pytest.raises(ParseError, match="not a JSON object") as info:
        decode_chunk(["nope"], dialect)
    assert "nope" in (info.value.text or "")


@pytest.mark.parametrize(
    ("body", "dialect", "message"),
    [
        ({"choices": "x"}, "openai", "'choices' must be a list"),
        ({"choices": [{"text": 3}]}, "openai", r"choices\[0\]\.text must be a string"),
        ({"object": "text_completion"}, "openai", "no choices"),
        ({"stop": True}, "llama.cpp", "no 'content'"),
        ({"content": 1}, "llama.cpp", "'content' must be a string"),
        ({"model_version": "v"}, "aleph-alpha", "no 'completions' list"),
    ],
)
def test_malformed_bodies_are_parse_errors_naming_the_problem(
    body: dict[str, Any], dialect: Any, message: str
) -> None:
    with pytest.raises(ParseError, match=message) as info:
        decode_response(body, dialect)
    assert info.value.text == json.dumps(body)


def test_an_error_object_in_a_stream_is_a_server_error_with_the_body() -> None:
    chunk = {"error": {"message": "context full", "code": 500, "type": "server_error"}}
    with pytest.raises(ServerError, match="context full") as info:
        decode_chunk(chunk, "llama.cpp")
    assert info.value.status_code == 500
    assert json.loads(info.value.body) == chunk


def test_an_error_code_in_the_body_picks_the_error_class() -> None:
    with pytest.raises(RateLimited, match="slow down"):
        decode_chunk({"error": {"message": "slow down", "code": "429"}}, "openai")
    with pytest.raises(BadRequest, match="prompt too long") as info:
        decode_response({"error": {"message": "prompt too long", "code": 400}}, "aleph-alpha")
    assert info.value.status_code == 400
