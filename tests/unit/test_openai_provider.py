"""The OpenAI Chat translator: pure functions, checked on hand-written payloads built from the
documented format and, when ../shared is present, on recorded vendor payloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chatgate.config import Deployment, Profile, Provider
from chatgate.errors import InvalidRequest, NotFound, RateLimited, StreamInterrupted, UpstreamError
from chatgate.providers import openai as p
from chatgate.providers.base import Context
from chatgate.schema import decode_request
from tests.support import FIXTURES

PROF = Profile()
PROV = Provider(protocol="openai", base_url="https://api.example/v1/", api_key="sk-up-secret-1")
DEP = Deployment(provider="openai", model="gpt-5.1")


def ctx(include_usage: bool = False) -> Context:
    return Context(
        response_id="chatcmpl-abc", created=1700000000, public_model="pub",
        include_usage=include_usage,
    )  # fmt: skip


def req(**kw: Any) -> Any:
    body = {"model": "pub", "messages": [{"role": "user", "content": "hi"}], **kw}
    return decode_request(msgspec.json.encode(body))


def test_build_request_maps_model_and_forces_usage_when_streaming() -> None:
    u = p.build_request(req(stream=True, temperature=0.5), DEP, PROV, ctx(), PROF)
    assert u.url == "https://api.example/v1/chat/completions"
    assert u.headers["Authorization"] == "Bearer sk-up-secret-1"
    body = json.loads(u.body)
    assert body["model"] == "gpt-5.1"
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.5
    assert set(body) == {"model", "messages", "stream", "stream_options", "temperature"}


def test_build_request_keeps_obfuscation_choice() -> None:
    r = req(stream=True, stream_options={"include_obfuscation": False})
    body = json.loads(p.build_request(r, DEP, PROV, ctx(), PROF).body)
    assert body["stream_options"] == {"include_usage": True, "include_obfuscation": False}


def test_build_request_non_stream_has_no_stream_options() -> None:
    body = json.loads(p.build_request(req(), DEP, PROV, ctx(), PROF).body)
    assert "stream_options" not in body and "stream" not in body


def test_parse_response_rewrites_id_model_created_and_keeps_the_rest() -> None:
    upstream = {
        "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": "gpt-5.1-2025",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "yo",
                                             "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10,
                  "prompt_tokens_details": {"cached_tokens": 1},
                  "completion_tokens_details": {"reasoning_tokens": 4}},
        "service_tier": "default", "system_fingerprint": None,
    }  # fmt: skip
    out, usage = p.parse_response(msgspec.json.encode(upstream), ctx())
    data = json.loads(out)
    assert data["id"] == "chatcmpl-abc" and data["model"] == "pub" and data["created"] == 1700000000
    assert data["choices"] == upstream["choices"]
    assert data["service_tier"] == "default"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 7, 10)
    assert (usage.cached_tokens, usage.reasoning_tokens) == (1, 4)


def test_parse_response_rejects_garbage() -> None:
    with pytest.raises(UpstreamError):
        p.parse_response(b"<html>", ctx())
    with pytest.raises(UpstreamError):
        p.parse_response(b'{"foo": 1}', ctx())


def _chunk(**kw: Any) -> bytes:
    base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-5.1-2025", "choices": []}  # fmt: skip
    base.update(kw)
    return msgspec.json.encode(base)


def test_stream_drops_usage_chunk_the_client_did_not_ask_for() -> None:
    tr = p.stream_translator(ctx(include_usage=False))
    first = tr.feed(
        _chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                         "finish_reason": None}], usage=None)
    )  # fmt: skip
    assert first.startswith(b"data: ") and first.endswith(b"\n\n")
    c = json.loads(first[6:])
    assert c["id"] == "chatcmpl-abc" and c["model"] == "pub" and "usage" not in c
    last = tr.feed(_chunk(usage={"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}))
    assert last == b""
    assert tr.usage is not None and tr.usage.total_tokens == 5
    assert tr.feed(b"[DONE]") == b"" and tr.done


def test_stream_keeps_usage_chunk_when_asked() -> None:
    tr = p.stream_translator(ctx(include_usage=True))
    out = tr.feed(_chunk(usage={"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}))
    assert json.loads(out[6:])["usage"]["total_tokens"] == 5


def test_stream_error_event_raises() -> None:
    tr = p.stream_translator(ctx())
    with pytest.raises(StreamInterrupted) as e:
        tr.feed(b'{"error": {"message": "boom sk-abcdefghijkl", "type": "server_error"}}')
    assert "sk-abcdefghijkl" not in e.value.message


@pytest.mark.parametrize(
    ("status", "cls", "code"),
    [(400, InvalidRequest, "unsupported_parameter"), (404, NotFound, "model_not_found"),
     (429, RateLimited, "rate_limit_exceeded"), (500, UpstreamError, "upstream_error"),
     (503, UpstreamError, "upstream_error")],
)  # fmt: skip
def test_parse_error_keeps_meaningful_status(status: int, cls: type, code: str) -> None:
    body = {"error": {"message": "m", "type": "t", "param": None,
                      "code": code if status < 500 else None}}  # fmt: skip
    err = p.parse_error(status, {"retry-after": "2"}, msgspec.json.encode(body), "k")
    assert isinstance(err, cls) and err.status == status and err.code == code
    if status == 429:
        assert err.headers == {"retry-after": "2"}


def test_parse_error_401_hides_upstream_key() -> None:
    body = b'{"error": {"message": "Incorrect API key provided: sk-up-s***et-1.", "code": "invalid_api_key"}}'  # noqa: E501
    err = p.parse_error(401, {}, body, "sk-up-secret-1")
    assert err.status == 502 and err.code == "upstream_auth_failed"
    assert "sk-" not in err.body().decode()


# --- recorded payloads (../shared/protocols/fixtures/openai) ---------------------------


def _shared(name: str) -> Path:
    path = FIXTURES / "openai" / name
    if not path.exists():
        pytest.skip(f"recorded vendor payloads not present ({FIXTURES}); they live in ../shared")
    return path


def _sse_data(text: str) -> list[bytes]:
    return [e[6:].encode() for e in text.split("\n\n") if e.startswith("data: ")]


@pytest.mark.parametrize(
    "name",
    ["stream_text.sse", "stream_tool_call.sse", "stream_parallel_tool_calls.sse",
     "stream_n3.sse", "stream_finish_length.sse", "stream_text_include_usage.sse"],
)  # fmt: skip
def test_recorded_streams_relay_chunk_for_chunk(name: str) -> None:
    events = _sse_data(_shared(name).read_text())
    for include_usage in (False, True):
        tr = p.stream_translator(ctx(include_usage))
        out = [tr.feed(e) for e in events]
        assert tr.done
        for raw, got in zip(events, out, strict=True):
            if raw == b"[DONE]":
                assert got == b""
                continue
            src = json.loads(raw)
            if not got:
                assert not include_usage and src["choices"] == [] and src.get("usage")
                continue
            dst = json.loads(got[6:])
            assert dst["id"] == "chatcmpl-abc" and dst["model"] == "pub"
            assert dst["choices"] == src["choices"]
            assert ("usage" in dst) == (include_usage and "usage" in src)


@pytest.mark.parametrize(
    "name", ["chat_text.json", "chat_tool_call.json", "chat_parallel_tool_calls.json",
             "chat_reasoning.json", "chat_json_object.json"],
)  # fmt: skip
def test_recorded_responses_keep_choices_and_usage(name: str) -> None:
    raw = _shared(name).read_bytes()
    out, usage = p.parse_response(raw, ctx())
    src, dst = json.loads(raw), json.loads(out)
    assert dst["choices"] == src["choices"]
    assert usage is not None and usage.total_tokens == src["usage"]["total_tokens"]


@pytest.mark.parametrize(
    ("name", "status"),
    [("error_400_unsupported_parameter.json", 400), ("error_400_unsupported_value.json", 400),
     ("error_400_empty_messages.json", 400), ("error_404_model_not_found.json", 404),
     ("error_429_insufficient_quota.json", 429), ("error_429_tokens_too_large.json", 429)],
)  # fmt: skip
def test_recorded_errors_map_to_same_status_and_param(name: str, status: int) -> None:
    raw = _shared(name).read_bytes()
    err = p.parse_error(status, {}, raw, None)
    src = json.loads(raw)["error"]
    assert err.status == status
    assert err.param == src.get("param") and err.code == src.get("code")
