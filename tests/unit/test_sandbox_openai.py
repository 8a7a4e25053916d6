"""The OpenAI Chat Completions sandbox, exercised through the official SDK and raw HTTP."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest

from chatgate.sandbox import start
from tests.support import Fetched, ThreadedSandbox, fetch

KEY = "sk-sandbox-test-0123456789abcdef"
SANDBOX_DIR = Path(__file__).resolve().parents[2] / "src" / "chatgate" / "sandbox"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City and state"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
STOCK = {
    "type": "function",
    "function": {
        "name": "get_stock_price",
        "parameters": {
            "type": "object",
            "properties": {
                "ticker": {"type": "string", "minLength": 1, "maxLength": 5},
                "exchange": {"enum": ["NASDAQ", "NYSE"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 30},
            },
            "required": ["ticker", "exchange", "days"],
            "additionalProperties": False,
        },
    },
}


# ---------------------------------------------------------------------------------------------
# harness: the sandbox runs in a background thread with its own loop
# ---------------------------------------------------------------------------------------------


Running = ThreadedSandbox


@pytest.fixture(scope="module")
def sb() -> Iterator[Running]:
    running = ThreadedSandbox(api_key=KEY)
    yield running
    running.close()


@pytest.fixture(autouse=True)
def _clean(sb: Running) -> None:
    raw(sb, "DELETE", "/_sandbox/faults")
    raw(sb, "DELETE", "/_sandbox/requests")


@pytest.fixture
def client(sb: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=sb.openai_base_url, api_key=KEY, max_retries=0, timeout=10)


class Raw(Fetched):
    def frames(self) -> list[bytes]:
        assert self.body.endswith(b"\n\n") or self.error is not None
        return [f for f in self.body.split(b"\n\n") if f]

    def chunks(self) -> list[dict[str, Any]]:
        out = []
        for frame in self.frames():
            assert frame.startswith(b"data: "), frame
            if frame != b"data: [DONE]":
                out.append(json.loads(frame[6:]))
        return out


def raw(
    sb: Running,
    method: str,
    path: str,
    body: Any = None,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    auth: str | None = KEY,
    timeout: float = 10,
) -> Raw:
    hdrs = dict(headers or {})
    if auth is not None:
        hdrs["Authorization"] = f"Bearer {auth}"
    got = fetch(sb.base_url, method, path, body, data=data, headers=hdrs, timeout=timeout)
    return Raw(*got)


def chat(sb: Running, body: dict[str, Any], **kw: Any) -> Raw:
    return raw(sb, "POST", "/v1/chat/completions", body, **kw)


def user(text: str, model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def stream_text(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in chunks
        if c["choices"] and c["choices"][0]["index"] == index
    )


# ---------------------------------------------------------------------------------------------
# plain completions
# ---------------------------------------------------------------------------------------------


def test_text_completion_via_sdk(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello sandbox, tell me a story"}]
    )
    assert re.fullmatch(r"chatcmpl-[A-Za-z0-9]{29}", r.id)
    assert r.object == "chat.completion"
    assert r.model == "gpt-4o"
    assert r.system_fingerprint and r.system_fingerprint.startswith("fp_")
    assert r.service_tier == "default"
    (choice,) = r.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.refusal is None
    assert choice.message.content.startswith('You said: "Hello sandbox, tell me a story".')
    u = r.usage
    assert u is not None
    assert 20 <= u.completion_tokens <= 75
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens >= 8
    assert u.completion_tokens_details.reasoning_tokens == 0
    assert u.prompt_tokens_details.cached_tokens == 0


def test_same_request_same_answer(sb: Running) -> None:
    a = chat(sb, user("Determinism please")).json()
    b = chat(sb, user("Determinism please")).json()
    c = chat(sb, user("Something else entirely")).json()
    assert a["choices"] == b["choices"] and a["usage"] == b["usage"]
    assert a["id"] != b["id"]
    assert c["choices"][0]["message"]["content"] != a["choices"][0]["message"]["content"]


def test_nonstream_layout_and_headers(sb: Running) -> None:
    r = chat(sb, user("Layout check"))
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert re.fullmatch(r"req_[0-9a-f]{32}", r.headers["x-request-id"])
    assert r.headers["openai-version"] == "2020-10-01"
    assert r.headers["openai-processing-ms"].isdigit()
    for name in ("limit", "remaining"):
        for kind in ("requests", "tokens"):
            assert r.headers[f"x-ratelimit-{name}-{kind}"].isdigit()
    assert re.fullmatch(r"\d+(ms|s)", r.headers["x-ratelimit-reset-requests"])
    assert r.body.startswith(b'{\n  "id": "chatcmpl-')  # pretty-printed like the real API
    body = r.json()
    keys = ["id", "object", "created", "model", "choices", "usage", "service_tier"]
    assert list(body) == [*keys, "system_fingerprint"]
    assert list(body["choices"][0]) == ["index", "message", "logprobs", "finish_reason"]
    assert list(body["choices"][0]["message"]) == ["role", "content", "refusal", "annotations"]
    assert body["choices"][0]["logprobs"] is None
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert list(body["usage"]["completion_tokens_details"]) == [
        "reasoning_tokens",
        "audio_tokens",
        "accepted_prediction_tokens",
        "rejected_prediction_tokens",
    ]
    assert abs(body["created"] - time.time()) < 5


@pytest.mark.parametrize(
    ("model", "shown"),
    [
        ("gpt-5.1", "gpt-5.1-2025-11-13"),
        ("gpt-5.2", "gpt-5.2-2025-12-11"),
        ("gpt-4.1-mini", "gpt-4.1-mini"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("gemini-2.5-flash", "gemini-2.5-flash"),
    ],
)
def test_response_model_names(sb: Running, model: str, shown: str) -> None:
    r = chat(sb, user("hi", model))
    assert r.status == 200, r.body
    assert r.json()["model"] == shown
    fp = r.json()["system_fingerprint"]
    assert (fp is None) == (not model.startswith("gpt-4"))


def test_models_list(client: openai.OpenAI, sb: Running) -> None:
    ids = {m.id for m in client.models.list()}
    expected = {
        "gpt-5.1", "gpt-5.2", "gpt-5.3", "gpt-5.3-codex", "gpt-5.4", "gemini-3-pro-preview",
        "gemini-2.5-pro", "gemini-2.5-flash", "gemini-3-flash-preview", "gemini-3.1-pro-preview",
        "claude-sonnet-4-5", "claude-opus-4-6", "claude-haiku-4-5-20251001", "claude-sonnet-4-6",
        "claude-opus-4-7", "gpt-4o", "gpt-4.1",
    }  # fmt: skip
    assert expected <= ids
    body = raw(sb, "GET", "/v1/models").json()
    assert body["object"] == "list"
    assert all(set(m) == {"id", "object", "created", "owned_by"} for m in body["data"])
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope-1")


# ---------------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------------


def test_stream_framing(sb: Running) -> None:
    req = user("Stream me something")
    r = chat(sb, {**req, "stream": True})
    assert r.status == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.body.endswith(b"\n\ndata: [DONE]\n\n")
    assert b"event:" not in r.body
    frames = r.frames()
    assert frames[-1] == b"data: [DONE]"
    assert all(f.startswith(b"data: {") for f in frames[:-1])
    assert all(b"\n" not in f for f in frames)
    chunks = r.chunks()
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    for c in chunks:
        assert list(c)[:6] == [
            "id", "object", "created", "model", "service_tier", "system_fingerprint"
        ]  # fmt: skip
        assert c["object"] == "chat.completion.chunk"
        assert "usage" not in c
        assert list(c)[-1] == "obfuscation" and isinstance(c["obfuscation"], str)
        assert list(c["choices"][0]) == ["index", "delta", "logprobs", "finish_reason"]
    first, last = chunks[0]["choices"][0], chunks[-1]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert last["delta"] == {} and last["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    middle = [c["choices"][0]["delta"] for c in chunks[1:-1]]
    assert all(list(d) == ["content"] and d["content"] for d in middle)
    full = chat(sb, req).json()["choices"][0]["message"]["content"]
    assert stream_text(chunks) == full


def test_stream_include_usage_and_no_obfuscation(sb: Running) -> None:
    req = user("Usage please")
    opts = {"include_usage": True, "include_obfuscation": False}
    chunks = chat(sb, {**req, "stream": True, "stream_options": opts}).chunks()
    assert all("obfuscation" not in c for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == chat(sb, req).json()["usage"]


def test_stream_via_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "SDK streaming"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            parts.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    assert "".join(parts).startswith('You said: "SDK streaming".')
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


def test_stream_n3_interleaves(sb: Running) -> None:
    req = user("Three variants", n=3)
    chunks = chat(sb, {**req, "stream": True, "stream_options": {"include_usage": True}}).chunks()
    indexes = [c["choices"][0]["index"] for c in chunks if c["choices"]]
    assert indexes[:9] == [0, 0, 1, 1, 2, 2, 0, 1, 2]
    finishes = [
        c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]
    ]
    assert [f["index"] for f in finishes] == [0, 1, 2]
    assert chunks[-4:-1] == [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    texts = [stream_text(chunks, i) for i in range(3)]
    assert len(set(texts)) == 3
    full = chat(sb, req).json()
    assert [c["message"]["content"] for c in full["choices"]] == texts
    assert full["usage"] == chunks[-1]["usage"]
    per_choice = sum(len(re.findall(r"\S+", t)) for t in texts)
    assert full["usage"]["completion_tokens"] >= per_choice


def test_gpt5_stream_chunks_have_no_logprobs_key(sb: Running) -> None:
    chunks = chat(sb, {**user("hello", "gpt-5.2"), "stream": True}).chunks()
    assert all(list(c["choices"][0]) == ["index", "delta", "finish_reason"] for c in chunks)
    assert chunks[0]["model"] == "gpt-5.2-2025-12-11"
    assert all(c["system_fingerprint"] is None for c in chunks)


# ---------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------


def _args(call: Any) -> Any:
    return json.loads(call.function.arguments)


def test_tool_call_when_name_mentioned(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Use get_current_weather for Boston please"}],
        tools=[WEATHER, STOCK],
    )
    (choice,) = r.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.refusal is None
    (call,) = choice.message.tool_calls
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id)
    assert call.type == "function" and call.function.name == "get_current_weather"
    jsonschema.validate(_args(call), WEATHER["function"]["parameters"])
    assert _args(call)["location"] == "Boston"
    assert r.usage.completion_tokens > 0


def test_tool_choice_variants(client: openai.OpenAI) -> None:
    def ask(text: str, **kw: Any) -> Any:
        msgs = [{"role": "user", "content": text}]
        return client.chat.completions.create(
            model="gpt-4o", messages=msgs, tools=[WEATHER, STOCK], **kw
        ).choices[0]

    assert ask("What is the weather in Boston?").finish_reason == "stop"  # no tool named
    assert ask("call get_current_weather", tool_choice="none").message.tool_calls is None
    required = ask("anything", tool_choice="required")
    assert [c.function.name for c in required.message.tool_calls] == ["get_current_weather"]
    named = ask(
        "get_current_weather for Paris",
        tool_choice={"type": "function", "function": {"name": "get_stock_price"}},
    )
    (call,) = named.message.tool_calls
    assert call.function.name == "get_stock_price"
    jsonschema.validate(_args(call), STOCK["function"]["parameters"])
    both = ask("get_current_weather and get_stock_price")
    assert [c.function.name for c in both.message.tool_calls] == [
        "get_current_weather",
        "get_stock_price",
    ]
    assert len({c.id for c in both.message.tool_calls}) == 2
    one = ask("get_current_weather and get_stock_price", parallel_tool_calls=False)
    assert len(one.message.tool_calls) == 1


def test_tool_call_streams(sb: Running, client: openai.OpenAI) -> None:
    chunks = chat(
        sb, {**user("get_current_weather in Oslo", tools=[WEATHER]), "stream": True}
    ).chunks()
    first = chunks[0]["choices"][0]["delta"]
    assert list(first) == ["role", "content", "tool_calls", "refusal"]
    assert first["content"] is None
    (start_,) = first["tool_calls"]
    assert start_["function"] == {"name": "get_current_weather", "arguments": ""}
    assert set(start_) == {"index", "id", "type", "function"}
    frags = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert all(
        set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in frags
    )
    args = json.loads("".join(f["function"]["arguments"] for f in frags))
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    # parallel calls through the SDK's accumulator
    with client.chat.completions.stream(
        model="gpt-4o",
        messages=[{"role": "user", "content": "get_current_weather then get_stock_price"}],
        tools=[WEATHER, STOCK],
    ) as s:
        final = s.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_current_weather", "get_stock_price"]
    for c, tool in zip(calls, (WEATHER, STOCK), strict=True):
        jsonschema.validate(_args(c), tool["function"]["parameters"])


def test_tool_result_followup(client: openai.OpenAI) -> None:
    msgs: list[Any] = [
        {"role": "user", "content": "get_current_weather for Boston"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": '{"location":"B"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "Sunny, 22 degrees"},
    ]
    r = client.chat.completions.create(model="gpt-4o", messages=msgs, tools=[WEATHER])
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert 'get_current_weather tool returned "Sunny, 22 degrees"' in choice.message.content


def test_tool_message_sequencing_errors(sb: Running) -> None:
    orphan = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "call_x", "content": "out"},
        ],
    }
    err = chat(sb, orphan).json()["error"]
    assert "must be a response to a preceeding message with 'tool_calls'" in err["message"]
    unanswered = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
            {"role": "user", "content": "and?"},
        ],
    }
    r = chat(sb, unanswered)
    assert r.status == 400
    assert "did not have response messages: call_1" in r.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------
# structured output, stop, budgets, reasoning, logprobs
# ---------------------------------------------------------------------------------------------

COMPLEX_SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "address": {
            "type": "object",
            "properties": {
                "street": {"type": "string", "minLength": 3},
                "zip": {"type": "string", "maxLength": 5},
                "country": {"const": "NO"},
            },
            "required": ["street", "zip", "country"],
            "additionalProperties": False,
        },
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
            },
            "required": ["name", "children"],
            "additionalProperties": False,
        },
    },
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "score": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "even": {"type": "integer", "multipleOf": 2, "minimum": 3, "maximum": 9},
        "active": {"type": "boolean"},
        "nothing": {"type": "null"},
        "role": {"enum": ["admin", "user", 3]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "uniqueItems": True},
        "home": {"$ref": "#/$defs/address"},
        "tree": {"$ref": "#/$defs/node"},
        "contact": {
            "oneOf": [
                {"type": "string", "format": "email"},
                {"type": "integer", "minimum": 1000},
            ]
        },
        "maybe": {"anyOf": [{"type": "null"}, {"type": "number", "minimum": 5, "maximum": 6}]},
        "nullable": {"type": ["string", "null"]},
        "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "boolean"}]},
        "merged": {"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}]},
    },
    "required": [
        "name", "age", "score", "even", "active", "nothing", "role", "tags", "home", "tree",
        "contact", "maybe", "nullable", "pair", "merged",
    ],
    "additionalProperties": False,
}  # fmt: skip


@pytest.mark.parametrize("text", ["Make a profile", "Another profile for Ada Lovelace", "x"])
def test_json_schema_output_is_valid(client: openai.OpenAI, text: str) -> None:
    r = client.chat.completions.create(
        model="gpt-5.1",
        messages=[{"role": "user", "content": text}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "profile", "schema": COMPLEX_SCHEMA},
        },
        n=3,
    )
    for choice in r.choices:
        value = json.loads(choice.message.content)
        jsonschema.validate(value, COMPLEX_SCHEMA)
        assert choice.finish_reason == "stop"


def test_json_object_output(sb: Running) -> None:
    r = chat(sb, user("Answer in JSON please", response_format={"type": "json_object"}))
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)
    no_word = chat(sb, user("Answer please", response_format={"type": "json_object"}))
    assert no_word.status == 400
    assert "must contain the word 'json'" in no_word.json()["error"]["message"]


def test_strict_schema_rules(sb: Running) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "s",
            "strict": True,
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    }
    err = chat(sb, user("json", response_format=fmt)).json()["error"]
    assert err["code"] == "invalid_json_schema" and err["param"] == "response_format"
    assert "'additionalProperties' is required to be supplied and to be false" in err["message"]


def test_stop_sequences(sb: Running) -> None:
    req = user("alpha beta STOP gamma delta", stop=["STOP", "zzz"])
    body = chat(sb, req).json()
    content = body["choices"][0]["message"]["content"]
    assert content == 'You said: "alpha beta '
    assert body["choices"][0]["finish_reason"] == "stop"
    chunks = chat(sb, {**req, "stream": True}).chunks()
    assert stream_text(chunks) == content
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    single = chat(sb, user("one two", stop="two")).json()
    assert single["choices"][0]["message"]["content"] == 'You said: "one '


def test_max_tokens_truncation(sb: Running) -> None:
    full = chat(sb, user("Truncate me")).json()["choices"][0]["message"]["content"]
    for field in ("max_tokens", "max_completion_tokens"):
        body = chat(sb, user("Truncate me", **{field: 5})).json()
        choice = body["choices"][0]
        assert choice["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 5
        assert full.startswith(choice["message"]["content"])
        assert choice["message"]["content"] == 'You said: "Truncate'
    tools = chat(sb, user("get_stock_price now", tools=[STOCK], max_completion_tokens=8)).json()
    choice = tools["choices"][0]
    assert choice["finish_reason"] == "length" and tools["usage"]["completion_tokens"] == 8
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])


@pytest.mark.parametrize(
    ("model", "effort", "reasoning"),
    [
        ("gpt-5.1", None, 0),
        ("gpt-5.1", "low", 16),
        ("gpt-5.2", "medium", 64),
        ("gpt-5.4", "high", 192),
        ("gpt-5.3", "xhigh", 384),
        ("gpt-5.3-codex", None, 64),
    ],
)
def test_reasoning_tokens(sb: Running, model: str, effort: str | None, reasoning: int) -> None:
    extra = {} if effort is None else {"reasoning_effort": effort}
    body = chat(sb, user("Think about it", model, **extra)).json()
    usage = body["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning
    visible = len(re.findall(r"\w+|[^\w\s]", body["choices"][0]["message"]["content"]))
    assert usage["completion_tokens"] >= reasoning + visible * 0.8
    assert usage["completion_tokens"] > reasoning


def test_reasoning_consumes_budget(sb: Running) -> None:
    req = user("Think hard", "gpt-5.3-codex", reasoning_effort="high", max_completion_tokens=100)
    body = chat(sb, req).json()
    assert body["choices"][0]["message"]["content"] == ""
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 100
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 100
    opts = {"include_usage": True}
    chunks = chat(sb, {**req, "stream": True, "stream_options": opts}).chunks()
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 100
    partial = chat(sb, {**req, "max_completion_tokens": 200}).json()
    assert partial["usage"]["completion_tokens"] <= 200
    assert partial["usage"]["completion_tokens_details"]["reasoning_tokens"] == 192


def test_logprobs(sb: Running) -> None:
    req = user("Give me logprobs", logprobs=True, top_logprobs=3)
    choice = chat(sb, req).json()["choices"][0]
    lp = choice["logprobs"]
    assert lp["refusal"] is None
    content = choice["message"]["content"]
    assert "".join(e["token"] for e in lp["content"]) == content
    for e in lp["content"]:
        assert set(e) == {"token", "logprob", "bytes", "top_logprobs"}
        assert e["logprob"] <= 0 and e["bytes"] == list(e["token"].encode())
        assert len(e["top_logprobs"]) == 3
        assert e["top_logprobs"][0]["token"] == e["token"]
        probs = [t["logprob"] for t in e["top_logprobs"]]
        assert probs == sorted(probs, reverse=True)
        assert all(set(t) == {"token", "logprob", "bytes"} for t in e["top_logprobs"])
    chunks = chat(sb, {**req, "stream": True}).chunks()
    streamed = [c["choices"][0]["logprobs"] for c in chunks[1:-1]]
    assert [s["content"][0] for s in streamed] == lp["content"]
    no_top = chat(sb, user("x", logprobs=True)).json()["choices"][0]["logprobs"]["content"]
    assert all(e["top_logprobs"] == [] for e in no_top)


def test_multimodal_and_developer_messages(sb: Running) -> None:
    body = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            },
        ],
    }
    r = chat(sb, body).json()
    assert "1 image" in r["choices"][0]["message"]["content"]
    assert r["usage"]["prompt_tokens"] > 85


# ---------------------------------------------------------------------------------------------
# validation errors
# ---------------------------------------------------------------------------------------------


def _error(r: Raw) -> dict[str, Any]:
    body = r.json()
    assert list(body) == ["error"]
    assert list(body["error"]) == ["message", "type", "param", "code"]
    return body["error"]


MSGS = [{"role": "user", "content": "hi"}]
GPT4O = {"model": "gpt-4o", "messages": MSGS}
MSG_MAX_TOKENS = (
    "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead."
)
MSG_EMPTY = (
    "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty "
    "array instead."
)
MSG_TEMP_05 = (
    "Unsupported value: 'temperature' does not support 0.5 with this model. Only the default (1) "
    "value is supported."
)
MSG_XOR = "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
MSG_TEMP_RANGE = (
    "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 "
    "instead."
)
MSG_STREAM_OPTS = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
MSG_LOGPROBS = "Unsupported parameter: 'logprobs' is not supported with this model."
MSG_TYPE = "Invalid type for 'temperature': expected a decimal, but got a string instead."


def m(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MSGS, **extra}


# (id, request body, status, param, code, exact message or None)
CASES: list[tuple[str, dict[str, Any], int, str | None, str | None, str | None]] = [
    ("missing model", {"messages": MSGS}, 400, None, None, "you must provide a model parameter"),
    ("missing messages", {"model": "gpt-4o"}, 400, "messages", "missing_required_parameter", None),
    ("empty messages", {"model": "gpt-4o", "messages": []}, 400, "messages", "empty_array",
     MSG_EMPTY),
    ("unknown field", m("gpt-4o", foo=1), 400, "foo", "unknown_parameter",
     "Unrecognized request argument supplied: foo"),
    ("unknown model", m("gpt-9"), 404, None, "model_not_found",
     "The model `gpt-9` does not exist or you do not have access to it."),
    ("gpt-5 max_tokens", m("gpt-5.1", max_tokens=10), 400, "max_tokens", "unsupported_parameter",
     MSG_MAX_TOKENS),
    ("gpt-5.1 xhigh", m("gpt-5.1", reasoning_effort="xhigh"), 400, "reasoning_effort",
     "unsupported_value", None),
    ("codex none", m("gpt-5.3-codex", reasoning_effort="none"), 400, "reasoning_effort",
     "unsupported_value", None),
    ("reasoning temperature", m("gpt-5.3-codex", temperature=0.5), 400, "temperature",
     "unsupported_value", MSG_TEMP_05),
    ("reasoning top_p", m("gpt-5.2", reasoning_effort="low", top_p=0.9), 400, "top_p",
     "unsupported_value", None),
    ("reasoning logprobs", m("gpt-5.1", reasoning_effort="low", logprobs=True), 400, "logprobs",
     "unsupported_parameter", MSG_LOGPROBS),
    ("reasoning top_logprobs", m("gpt-5.4", reasoning_effort="high", top_logprobs=2), 400,
     "top_logprobs", "unsupported_parameter", None),
    ("gpt-5 penalty", m("gpt-5.4", presence_penalty=0.1), 400, "presence_penalty",
     "unsupported_parameter", None),
    ("gpt-5 ceiling", m("gpt-5.4", max_completion_tokens=128001), 400, "max_completion_tokens",
     "integer_above_max_value", None),
    ("claude temperature", m("claude-sonnet-4-5", temperature=1.5), 400, "temperature",
     "decimal_above_max_value", None),
    ("claude temperature+top_p", m("claude-opus-4-7", temperature=0.5, top_p=0.5), 400, None, None,
     MSG_XOR),
    ("claude n", m("claude-sonnet-4-6", n=2), 400, "n", "unsupported_value", None),
    ("claude seed", m("claude-haiku-4-5-20251001", seed=1), 400, "seed", "unsupported_parameter",
     None),
    ("claude logprobs", m("claude-sonnet-4-5", logprobs=False), 400, "logprobs",
     "unsupported_parameter", None),
    ("claude ceiling", m("claude-sonnet-4-5", max_completion_tokens=64001), 400,
     "max_completion_tokens", "integer_above_max_value", None),
    ("opus ceiling", m("claude-opus-4-6", max_tokens=128001), 400, "max_tokens",
     "integer_above_max_value", None),
    ("gemini logit_bias", m("gemini-2.5-pro", logit_bias={"1": 5}), 400, "logit_bias",
     "unsupported_parameter", None),
    ("gemini ceiling", m("gemini-3-pro-preview", max_completion_tokens=65537), 400,
     "max_completion_tokens", "integer_above_max_value", None),
    ("temperature range", m("gpt-4o", temperature=2.5), 400, "temperature",
     "decimal_above_max_value", MSG_TEMP_RANGE),
    ("top_p range", m("gpt-4o", top_p=1.5), 400, "top_p", "decimal_above_max_value", None),
    ("n range", m("gpt-4o", n=0), 400, "n", "integer_below_min_value", None),
    ("n max", m("gpt-4o", n=129), 400, "n", "integer_above_max_value", None),
    ("penalty range", m("gpt-4o", frequency_penalty=-3), 400, "frequency_penalty",
     "integer_below_min_value", None),
    ("top_logprobs range", m("gpt-4o", logprobs=True, top_logprobs=21), 400, "top_logprobs",
     "integer_above_max_value", None),
    ("top_logprobs without logprobs", m("gpt-4o", top_logprobs=2), 400, "top_logprobs",
     "invalid_value", None),
    ("stop too long", m("gpt-4o", stop=list("abcde")), 400, "stop", "array_above_max_length", None),
    ("stream_options without stream", m("gpt-4o", stream_options={"include_usage": True}), 400,
     "stream_options", None, MSG_STREAM_OPTS),
    ("tool_choice without tools", m("gpt-4o", tool_choice="auto"), 400, "tool_choice", None, None),
    ("wrong type", m("gpt-4o", temperature="hot"), 400, "temperature", "invalid_type", MSG_TYPE),
    ("bad role", {"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}, 400,
     "messages[0].role", "invalid_value", None),
    ("null user content", {"model": "gpt-4o", "messages": [{"role": "user", "content": None}]},
     400, "messages[0].content", None, "Invalid value for 'content': expected a string, got null."),
    ("bad tool name", m("gpt-4o", tools=[{"type": "function", "function": {"name": "has space"}}]),
     400, "tools[0].function.name", "invalid_value", None),
    ("context window", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x " * 2**17}]},
     400, "messages", "context_length_exceeded", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "param", "code", "message"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_validation_errors(
    sb: Running,
    body: dict[str, Any],
    status: int,
    param: str | None,
    code: str | None,
    message: str | None,
) -> None:
    r = chat(sb, body)
    assert r.status == status, r.body
    assert re.fullmatch(r"req_[0-9a-f]{32}", r.headers["x-request-id"])
    err = _error(r)
    assert err["type"] == "invalid_request_error"
    assert (err["param"], err["code"]) == (param, code)
    if message is not None:
        assert err["message"] == message


@pytest.mark.parametrize(
    "body",
    [
        user("hi", "gpt-5.1", temperature=0.5),  # effort none: sampling allowed
        user("hi", "gpt-5.1", reasoning_effort="none", logprobs=True, top_logprobs=2),
        user("hi", "claude-opus-4-6", max_completion_tokens=100000, temperature=1),
        user("hi", "gemini-2.5-flash", seed=3, presence_penalty=1, n=2),
        user("hi", "gpt-5.3-codex", temperature=1, top_p=1),
    ],
)
def test_allowed_parameter_combinations(sb: Running, body: dict[str, Any]) -> None:
    r = chat(sb, body)
    assert r.status == 200, r.body


def test_invalid_json(sb: Running) -> None:
    r = chat(sb, None, data=b'{"model": "gpt-4o",')
    assert r.status == 400
    err = _error(r)
    assert err["message"].startswith("We could not parse the JSON body of your request.")
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", None, None)


def test_auth(sb: Running) -> None:
    missing = chat(sb, user("hi"), auth=None)
    assert missing.status == 401
    assert _error(missing)["message"].startswith("You didn't provide an API key.")
    wrong_key = "sk-proj-THISISTHEWRONGKEY0123456789wxyz"
    wrong = chat(sb, user("hi"), auth=wrong_key)
    assert wrong.status == 401
    err = _error(wrong)
    assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
    assert err["param"] is None
    assert wrong_key not in err["message"]
    assert err["message"] == (
        "Incorrect API key provided: sk-proj-"
        + "*" * (len(wrong_key) - 12)
        + "wxyz. You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )
    assert raw(sb, "GET", "/v1/models", auth="sk-other").status == 401


def test_any_key_when_unconfigured() -> None:
    async def go() -> tuple[int, int]:
        sandbox = await start()
        try:
            async with aiohttp.ClientSession() as s:
                url = sandbox.openai_base_url + "/chat/completions"
                hdr = {"Authorization": "Bearer whatever"}
                async with s.post(url, json=user("hi"), headers=hdr) as ok:
                    good = ok.status
                async with s.post(url, json=user("hi")) as no:
                    bad = no.status
            return good, bad
        finally:
            await sandbox.close()

    assert asyncio.run(go()) == (200, 401)


def test_unknown_url(sb: Running) -> None:
    r = raw(sb, "POST", "/v1/nothing", {})
    assert r.status == 404
    assert _error(r)["message"] == "Invalid URL (POST /v1/nothing)"


# ---------------------------------------------------------------------------------------------
# hooks: directives
# ---------------------------------------------------------------------------------------------


def test_directive_429(sb: Running, client: openai.OpenAI) -> None:
    r = chat(sb, user("[sandbox:error=429] hi"))
    assert r.status == 429
    assert r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "1000"
    err = _error(r)
    assert (err["type"], err["code"], err["param"]) == ("requests", "rate_limit_exceeded", None)
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "[sandbox:error=429]"}]
        )
    assert exc.value.code == "rate_limit_exceeded"
    quota = _error(chat(sb, user("[sandbox:error=quota] hi")))
    assert quota["code"] == "insufficient_quota"


@pytest.mark.parametrize(
    ("status", "exc_type", "message"),
    [
        (500, openai.InternalServerError, None),
        (503, openai.InternalServerError, "The server is overloaded or not ready yet."),
        (400, openai.BadRequestError, None),
        (401, openai.AuthenticationError, None),
    ],
)
def test_directive_errors(
    client: openai.OpenAI, status: int, exc_type: type[Exception], message: str | None
) -> None:
    with pytest.raises(exc_type) as exc:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": f"[sandbox:error={status}] x"}]
        )
    assert isinstance(exc.value, openai.APIStatusError)
    assert exc.value.status_code == status
    body = exc.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    if status >= 500:
        assert body["type"] == "server_error"
    if message:
        assert body["message"] == message


def test_directive_hang(sb: Running, client: openai.OpenAI) -> None:
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.4).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "[sandbox:hang] hi"}]
        )
    assert time.monotonic() - t0 < 3
    deadline = time.monotonic() + 3
    while sb.hanging and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sb.hanging == 0  # the handler noticed the client went away


def test_directive_cut_stream(sb: Running, client: openai.OpenAI) -> None:
    r = chat(sb, {**user("[sandbox:cut=3] cut me"), "stream": True})
    assert r.status == 200 and r.error is not None
    assert b"[DONE]" not in r.body
    assert len(r.frames()) == 3
    got = []
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "[sandbox:cut=4] cut me"}],
        stream=True,
    )
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            got.append(chunk)
    assert len(got) == 4


def test_directive_cut_nonstream(sb: Running, client: openai.OpenAI) -> None:
    r = chat(sb, user("[sandbox:cut=1] cut me"))
    assert r.status == 200 and r.error is not None
    assert int(r.headers["content-length"]) > len(r.body) > 0
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "[sandbox:cut=1] cut me"}]
        )


def test_directive_latency_and_chunk_delay(sb: Running) -> None:
    t0 = time.monotonic()
    r = chat(sb, user("[sandbox:latency=300] slow"))
    assert time.monotonic() - t0 >= 0.3
    content = r.json()["choices"][0]["message"]["content"]
    assert "[sandbox:" not in content and content.startswith('You said: "slow".')
    t0 = time.monotonic()
    chunks = chat(sb, {**user("[sandbox:chunk_delay=10] drip"), "stream": True}).chunks()
    assert time.monotonic() - t0 >= 0.01 * (len(chunks) - 1)
    assert stream_text(chunks).startswith('You said: "drip".')


def test_bad_directive(sb: Running) -> None:
    r = chat(sb, user("[sandbox:error=abc] hi"))
    assert r.status == 400 and "sandbox" in _error(r)["message"]


# ---------------------------------------------------------------------------------------------
# hooks: control endpoints
# ---------------------------------------------------------------------------------------------


def test_fault_errors_for_matching_model(sb: Running) -> None:
    fault = {"model": "gpt-4o", "error": 503, "count": 2, "retry_after": 1}
    listed = raw(sb, "POST", "/_sandbox/faults", fault, auth=None)
    assert listed.status == 200 and len(listed.json()["faults"]) == 1
    assert chat(sb, user("hi", "gpt-4.1")).status == 200  # other model untouched
    for _ in range(2):
        r = chat(sb, user("hi"))
        assert r.status == 503 and r.headers["retry-after"] == "1"
        assert _error(r)["type"] == "server_error"
    assert chat(sb, user("hi")).status == 200
    assert raw(sb, "GET", "/_sandbox/faults", auth=None).json() == {"faults": []}


def test_fault_hang_latency_and_clear(sb: Running, client: openai.OpenAI) -> None:
    raw(sb, "POST", "/_sandbox/faults", {"model": "*", "hang": True, "count": 1}, auth=None)
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.3).chat.completions.create(model="gpt-4o", messages=MSGS)
    raw(sb, "POST", "/_sandbox/faults", {"latency_ms": 250, "count": 1}, auth=None)
    t0 = time.monotonic()
    assert chat(sb, user("hi")).status == 200
    assert time.monotonic() - t0 >= 0.25
    t0 = time.monotonic()
    assert chat(sb, user("hi")).status == 200
    assert time.monotonic() - t0 < 0.25
    raw(sb, "POST", "/_sandbox/faults", [{"error": 500, "count": -1}], auth=None)
    assert chat(sb, user("hi")).status == 500 and chat(sb, user("hi")).status == 500
    assert raw(sb, "DELETE", "/_sandbox/faults", auth=None).json() == {"cleared": 1}
    assert chat(sb, user("hi")).status == 200
    bad = raw(sb, "POST", "/_sandbox/faults", {"error": 200}, auth=None)
    assert bad.status == 400


def test_fault_cut_stream(sb: Running) -> None:
    raw(sb, "POST", "/_sandbox/faults", {"cut": 2}, auth=None)
    r = chat(sb, {**user("hi"), "stream": True})
    assert r.error is not None and len(r.frames()) == 2


def test_request_log(sb: Running) -> None:
    body = user("log me", temperature=0.3)
    chat(sb, body, headers={"OpenAI-Organization": "org-1", "X-Trace": "abc"})
    chat(sb, None, data=b"not json")
    log = raw(sb, "GET", "/_sandbox/requests", auth=None).json()
    assert len(log) == 2
    first = log[0]
    assert set(first) == {"path", "headers", "body", "received"}
    assert first["path"] == "/v1/chat/completions"
    assert first["body"] == body
    assert first["headers"]["authorization"] == "Bearer ***"
    assert KEY not in json.dumps(log)
    assert first["headers"]["openai-organization"] == "org-1"
    assert first["headers"]["x-trace"] == "abc"
    assert all(k == k.lower() for k in first["headers"])
    assert abs(first["received"] - time.time()) < 5
    assert log[1]["body"] == "not json"
    assert raw(sb, "DELETE", "/_sandbox/requests", auth=None).json() == {"cleared": 2}
    assert raw(sb, "GET", "/_sandbox/requests", auth=None).json() == []


def test_request_log_keeps_last_100(sb: Running) -> None:
    async def burst() -> None:
        async with aiohttp.ClientSession() as s:
            for i in range(105):
                async with s.post(
                    sb.openai_base_url + "/chat/completions",
                    json=user(f"n{i}", max_completion_tokens=1),
                    headers={"Authorization": f"Bearer {KEY}"},
                ) as r:
                    await r.read()

    asyncio.run(burst())
    log = raw(sb, "GET", "/_sandbox/requests", auth=None).json()
    assert len(log) == 100
    assert log[0]["body"]["messages"][0]["content"] == "n5"


# ---------------------------------------------------------------------------------------------
# independence from the gateway
# ---------------------------------------------------------------------------------------------


def test_sandbox_imports_nothing_from_the_gateway() -> None:
    for path in SANDBOX_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name}: relative import outside the sandbox"
                mod = node.module or ""
                assert not mod.startswith("chatgate") or mod.startswith("chatgate.sandbox"), (
                    f"{path.name} imports {mod}"
                )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    name = alias.name
                    ok = not name.startswith("chatgate") or name.startswith("chatgate.sandbox")
                    assert ok, f"{path.name} imports {name}"
