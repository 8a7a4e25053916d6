"""The Gemini translator, row by row of mapping.md (Gemini column), and replayed on every
recorded Gemini payload when ../shared is present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chatgate.config import Deployment, Provider, find_profile, load
from chatgate.errors import InvalidRequest, NotFound, RateLimited, StreamInterrupted, UpstreamError
from chatgate.providers import gemini as g
from chatgate.providers.base import Context, apply_profile
from chatgate.schema import decode_request
from tests.support import FIXTURES

CFG = load(None, {})
PROV = Provider(protocol="gemini", base_url="https://gl.example/", api_key="AIza-secret-key")
U = [{"role": "user", "content": "hi"}]


def ctx(include_usage: bool = False) -> Context:
    return Context(
        response_id="chatcmpl-0123456789abcdef",
        created=1700000000,
        public_model="gem-pub",
        include_usage=include_usage,
    )


def build(
    model: str = "gemini-2.5-flash", dep: Deployment | None = None, **kw: Any
) -> tuple[dict[str, Any], Context, str]:
    body = {"model": "gem-pub", "messages": U, **kw}
    req = decode_request(msgspec.json.encode(body))
    dep = dep or Deployment(provider="gemini", model=model)
    profile = find_profile(CFG, model)
    req, dropped = apply_profile(req, dep, profile, "gem-pub", g.UNSUPPORTED)
    c = ctx()
    c.dropped.extend(dropped)
    u = g.build_request(req, dep, PROV, c, profile)
    assert u.headers["x-goog-api-key"] == "AIza-secret-key"
    return json.loads(u.body), c, u.url


def test_urls_for_both_modes() -> None:
    _, _, url = build()
    assert url == "https://gl.example/v1beta/models/gemini-2.5-flash:generateContent"
    _, _, url = build(stream=True)
    assert url == "https://gl.example/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def test_roles_system_and_merging() -> None:
    body, _, _ = build(
        messages=[
            {"role": "system", "content": "S"},
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "developer", "content": "D"},
            {"role": "user", "content": "e"},
        ]
    )
    assert body["systemInstruction"] == {"parts": [{"text": "S\n\nD"}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}]},
        {"role": "user", "parts": [{"text": "e"}]},
    ]


def test_images_inline_and_file_uri() -> None:
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://x.example/a.JPG?sig=1"}},
    ]
    body, _, _ = build(messages=[{"role": "user", "content": parts}])
    assert body["contents"][0]["parts"][1:] == [
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.example/a.JPG?sig=1"}},
    ]
    bad = [{"type": "image_url", "image_url": {"url": "https://x.example/image"}}]
    with pytest.raises(InvalidRequest) as e:
        build(messages=[{"role": "user", "content": bad}])
    assert e.value.param == "messages[0].content[0].image_url.url"


def test_tool_round_trip_with_signature_in_the_id() -> None:
    call_id = "call_abc_0_0" + g.SIG + "c2lnbmF0dXJl"
    msgs = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"c":"x"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "t", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp": 3}'},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
    ]
    body, _, _ = build(messages=msgs)
    assert body["contents"][1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "w", "args": {"c": "x"}}, "thoughtSignature": "c2lnbmF0dXJl"},
            {"functionCall": {"name": "t", "args": {}}},
        ],
    }
    assert body["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "w", "response": {"temp": 3}}},
            {"functionResponse": {"name": "t", "response": {"output": "noon"}}},
        ],
    }


def test_tools_and_tool_choice() -> None:
    fn = {
        "type": "function",
        "function": {
            "name": "w",
            "description": "d",
            "parameters": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {"c": {"type": "string"}},
                "additionalProperties": False,
            },
        },
    }
    body, _, _ = build(tools=[fn])
    (decl,) = body["tools"][0]["functionDeclarations"]
    assert decl == {
        "name": "w",
        "description": "d",
        "parametersJsonSchema": {
            "type": "object",
            "properties": {"c": {"type": "string"}},
            "additionalProperties": False,
        },
    }
    for choice, want in [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "w"}},
            {"mode": "ANY", "allowedFunctionNames": ["w"]},
        ),
    ]:
        body, _, _ = build(tools=[fn], tool_choice=choice)
        assert body["toolConfig"] == {"functionCallingConfig": want}
    _, c, _ = build(tools=[fn], parallel_tool_calls=False)
    assert c.dropped == ["parallel_tool_calls"]
    bad = {"type": "function", "function": {"name": "1st"}}
    with pytest.raises(InvalidRequest) as e:
        build(tools=[bad])
    assert e.value.param == "tools[0].function.name"


def test_generation_config() -> None:
    body, _, _ = build(
        temperature=1.5,
        top_p=0.9,
        max_tokens=100,
        stop=["x"],
        n=2,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logprobs=True,
        top_logprobs=3,
    )
    gen = body["generationConfig"]
    assert {k: v for k, v in gen.items() if k != "thinkingConfig"} == {
        "temperature": 1.5,
        "topP": 0.9,
        "maxOutputTokens": 100,
        "stopSequences": ["x"],
        "candidateCount": 2,
        "seed": 3,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "responseLogprobs": True,
        "logprobs": 3,
    }


def test_response_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body, _, _ = build(
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    )
    assert body["generationConfig"]["responseMimeType"] == "application/json"
    assert body["generationConfig"]["responseJsonSchema"] == schema
    body, _, _ = build(response_format={"type": "json_object"})
    assert body["generationConfig"]["responseMimeType"] == "application/json"


@pytest.mark.parametrize(
    ("model", "effort", "want"),
    [
        ("gemini-3-pro-preview", "low", {"includeThoughts": True, "thinkingLevel": "low"}),
        ("gemini-3-pro-preview", "high", {"includeThoughts": True, "thinkingLevel": "high"}),
        (
            "gemini-3-flash-preview",
            "minimal",
            {"includeThoughts": True, "thinkingLevel": "minimal"},
        ),
        ("gemini-2.5-pro", "high", {"includeThoughts": True, "thinkingBudget": 32768}),
        ("gemini-2.5-flash", "low", {"includeThoughts": True, "thinkingBudget": 1024}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-2.5-flash", None, {"includeThoughts": True}),
    ],
)
def test_thinking_config(model: str, effort: str | None, want: dict[str, Any]) -> None:
    kw = {"reasoning_effort": effort} if effort else {}
    body, _, _ = build(model, **kw)
    assert body["generationConfig"]["thinkingConfig"] == want


@pytest.mark.parametrize(
    ("model", "effort"), [("gemini-3-pro-preview", "none"), ("gemini-2.5-pro", "none")]
)
def test_thinking_cannot_be_turned_off_everywhere(model: str, effort: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        build(model, reasoning_effort=effort)
    assert e.value.param == "reasoning_effort"


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"metadata": {"a": "b"}}, "metadata"),
        ({"store": True}, "store"),
        ({"service_tier": "flex"}, "service_tier"),
    ],
)
def test_unsupported(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        build(**kw)
    assert e.value.param == param


def test_user_dropped_silently_and_web_search_option() -> None:
    dep = Deployment(provider="gemini", model="gemini-2.5-flash", options={"web_search": True})
    body, c, _ = build(dep=dep, user="u1")
    assert c.dropped == [] and "u1" not in json.dumps(body)
    assert {"googleSearch": {}} in body["tools"]


# --- responses -------------------------------------------------------------------------


def _resp(parts: list[dict[str, Any]], finish: str = "STOP", **extra: Any) -> bytes:
    return msgspec.json.encode(
        {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": 10,
                "candidatesTokenCount": 5,
                "thoughtsTokenCount": 7,
                "cachedContentTokenCount": 4,
                "totalTokenCount": 22,
            },
            **extra,
        }
    )


def test_parse_text_thoughts_and_usage() -> None:
    out, usage = g.parse_response(
        _resp([{"text": "plan", "thought": True}, {"text": "Hi", "thoughtSignature": "x"}]), ctx()
    )
    data = json.loads(out)
    msg = data["choices"][0]["message"]
    assert msg["content"] == "Hi" and msg["reasoning_content"] == "plan"
    assert data["usage"]["completion_tokens"] == 12 and data["usage"]["prompt_tokens"] == 10
    assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == 7
    assert data["usage"]["prompt_tokens_details"]["cached_tokens"] == 4
    assert usage is not None and usage.total_tokens == 22


@pytest.mark.parametrize(
    ("finish", "calls", "want"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"),
        ("SPII", False, "content_filter"),
        ("OTHER", False, "stop"),
    ],
)
def test_finish_reasons(finish: str, calls: bool, want: str) -> None:
    parts = [{"functionCall": {"name": "f", "args": {}}}] if calls else [{"text": "t"}]
    out, _ = g.parse_response(_resp(parts, finish), ctx())
    assert json.loads(out)["choices"][0]["finish_reason"] == want


def test_prompt_block_is_a_clear_error() -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    with pytest.raises(InvalidRequest) as e:
        g.parse_response(msgspec.json.encode(body), ctx())
    assert e.value.code == "content_filter" and "SAFETY" in e.value.message


def test_tool_call_ids_stable_and_carry_signature() -> None:
    parts = [
        {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": "SIG1"},
        {"functionCall": {"name": "b", "args": {}}},
    ]
    out1, _ = g.parse_response(_resp(parts), ctx())
    out2, _ = g.parse_response(_resp(parts), ctx())
    calls = json.loads(out1)["choices"][0]["message"]["tool_calls"]
    assert calls == json.loads(out2)["choices"][0]["message"]["tool_calls"]
    assert len({c["id"] for c in calls}) == 2
    assert (
        g.split_call_id(calls[0]["id"])[1] == "SIG1" and g.split_call_id(calls[1]["id"])[1] is None
    )
    assert json.loads(calls[0]["function"]["arguments"]) == {"x": 1}


def test_stream_function_calls_each_get_their_index_and_usage_from_last_chunk() -> None:
    tr = g.stream_translator(ctx(include_usage=True))
    c1 = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "a", "args": {"q": 1}}, "thoughtSignature": "S"},
                        {"functionCall": {"name": "b", "args": {}}},
                    ],
                },
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 9},
    }
    c2 = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": ""}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 4, "totalTokenCount": 15},
    }
    frames = tr.feed(msgspec.json.encode(c1)) + tr.feed(msgspec.json.encode(c2)) + tr.close()
    chunks = [json.loads(f[6:]) for f in frames.split(b"\n\n") if f]
    calls = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert [(tc["index"], tc["function"]["name"]) for tc in calls] == [(0, "a"), (1, "b")]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert (
        chunks[-1]["usage"]["prompt_tokens"] == 11 and chunks[-1]["usage"]["completion_tokens"] == 4
    )


def test_stream_cut_before_finish_raises() -> None:
    tr = g.stream_translator(ctx())
    tr.feed(
        msgspec.json.encode({"candidates": [{"content": {"parts": [{"text": "a"}]}, "index": 0}]})
    )
    with pytest.raises(StreamInterrupted):
        tr.close()


def test_signature_alone_does_not_make_reasoning() -> None:
    tr = g.stream_translator(ctx())
    out = tr.feed(
        msgspec.json.encode(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": "answer", "thoughtSignature": "zz"}]},
                        "index": 0,
                    }
                ]
            }
        )
    )
    deltas = [json.loads(f[6:])["choices"][0]["delta"] for f in out.split(b"\n\n") if f]
    assert deltas[-1] == {"content": "answer"}


# --- recorded payloads -----------------------------------------------------------------


def _fixture(name: str) -> Path:
    path = FIXTURES / "gemini" / name
    if not path.exists():
        pytest.skip(f"recorded vendor payloads not present ({FIXTURES}); they live in ../shared")
    return path


FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}


@pytest.mark.parametrize(
    "name",
    [
        "generate_max_tokens.json",
        "generate_max_tokens_thinking_empty.json",
        "generate_safety_block.json",
        "generate_text.json",
        "generate_text_thoughts_usage.json",
        "generate_thinking.json",
        "generate_tool_call.json",
        "generate_tool_call_no_thinking.json",
    ],
)
def test_recorded_generate_field_by_field(name: str) -> None:
    src = json.loads(_fixture(name).read_text())
    out, usage = g.parse_response(_fixture(name).read_bytes(), ctx())
    got = json.loads(out)
    assert got["model"] == "gem-pub" and got["id"] == "chatcmpl-0123456789abcdef"
    (cand,) = src["candidates"]
    (choice,) = got["choices"]
    parts = (cand.get("content") or {}).get("parts") or []
    text = "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))
    thoughts = "".join(p["text"] for p in parts if p.get("thought"))
    calls = [p for p in parts if "functionCall" in p]
    assert choice["message"]["content"] == (text or None)
    assert choice["message"].get("reasoning_content") == (thoughts or None)
    got_calls = choice["message"].get("tool_calls", [])
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got_calls] == [
        (p["functionCall"]["name"], p["functionCall"].get("args", {})) for p in calls
    ]
    for c, p in zip(got_calls, calls, strict=True):
        assert g.split_call_id(c["id"])[1] == p.get("thoughtSignature")
    want = "tool_calls" if calls else FINISH[cand["finishReason"]]
    assert choice["finish_reason"] == want
    um = src["usageMetadata"]
    assert got["usage"]["prompt_tokens"] == um["promptTokenCount"]
    assert got["usage"]["completion_tokens"] == um.get("candidatesTokenCount", 0) + um.get(
        "thoughtsTokenCount", 0
    )
    assert got["usage"]["total_tokens"] == um["totalTokenCount"] == usage.total_tokens  # type: ignore[union-attr]


def _events(name: str) -> list[bytes]:
    text = _fixture(name).read_text().replace("\r\n", "\n")
    return [b[5:].strip().encode() for b in text.split("\n\n") if b.startswith("data:")]


@pytest.mark.parametrize(
    "name",
    [
        "stream_text.sse",
        "stream_text_long.sse",
        "stream_thinking.sse",
        "stream_tool_call_gemini25_raw.sse",
        "stream_tool_call_gemini3.sse",
        "stream_after_function_response.sse",
    ],
)
def test_recorded_streams(name: str) -> None:
    events = [json.loads(e) for e in _events(name)]
    tr = g.stream_translator(ctx(include_usage=True))
    frames = b"".join(tr.feed(e) for e in _events(name)) + tr.close()
    chunks = [json.loads(f[6:]) for f in frames.split(b"\n\n") if f]
    body = [c for c in chunks if c["choices"]]
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    parts = [
        p
        for e in events
        for c in e.get("candidates", [])
        for p in (c.get("content") or {}).get("parts", [])
    ]
    deltas = [c["choices"][0]["delta"] for c in body]
    assert "".join(d.get("content") or "" for d in deltas) == "".join(
        p.get("text", "") for p in parts if not p.get("thought")
    )
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "".join(
        p.get("text", "") for p in parts if p.get("thought")
    )
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert [tc["index"] for tc in calls] == list(
        range(len([p for p in parts if "functionCall" in p]))
    )
    for tc in calls:
        assert isinstance(json.loads(tc["function"]["arguments"]), dict)
    finishes = [c["choices"][0]["finish_reason"] for c in body if c["choices"][0]["finish_reason"]]
    assert finishes == ["tool_calls" if calls else "stop"]
    last = events[-1]["usageMetadata"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == last["promptTokenCount"]
    assert chunks[-1]["usage"]["total_tokens"] == last["totalTokenCount"]


def test_recorded_errors() -> None:
    err = g.parse_error(429, {}, _fixture("error_429_resource_exhausted.json").read_bytes(), None)
    assert isinstance(err, RateLimited) and err.headers == {"retry-after": "26"}
    err = g.parse_error(400, {}, _fixture("error_400_api_key_invalid.json").read_bytes(), None)
    assert err.status == 502 and err.code == "upstream_auth_failed"


@pytest.mark.parametrize(
    ("status", "gstatus", "cls", "out"),
    [
        (400, "INVALID_ARGUMENT", InvalidRequest, 400),
        (403, "PERMISSION_DENIED", UpstreamError, 502),
        (404, "NOT_FOUND", NotFound, 404),
        (429, "RESOURCE_EXHAUSTED", RateLimited, 429),
        (500, "INTERNAL", UpstreamError, 500),
        (503, "UNAVAILABLE", UpstreamError, 503),
        (504, "DEADLINE_EXCEEDED", UpstreamError, 504),
    ],
)
def test_error_table(status: int, gstatus: str, cls: type, out: int) -> None:
    body = {"error": {"code": status, "message": "m AIza-secret-key", "status": gstatus}}
    err = g.parse_error(status, {}, msgspec.json.encode(body), "AIza-secret-key")
    assert isinstance(err, cls) and err.status == out
    assert "AIza-secret-key" not in err.body().decode()


def test_gemini3_function_calls_without_a_signature_get_the_documented_stand_in() -> None:
    msgs = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "toolu_from_claude",
                    "type": "function",
                    "function": {"name": "w", "arguments": "{}"},
                },
                {"id": "toolu_2", "type": "function", "function": {"name": "t", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_from_claude", "content": "x"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "y"},
    ]
    body, _, _ = build("gemini-3-pro-preview", messages=msgs)
    parts = body["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == g.NO_SIGNATURE and "thoughtSignature" not in parts[1]
    body, _, _ = build("gemini-2.5-flash", messages=msgs)
    assert "thoughtSignature" not in body["contents"][1]["parts"][0]
