"""The Anthropic Messages sandbox (``POST /v1/messages``), exercised over raw HTTP."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import jsonschema
import pytest

from chatgate.sandbox import start
from chatgate.sandbox._anthropic_rules import sign_thinking
from chatgate.sandbox._reply import count_tokens
from tests.support import Fetched, ThreadedSandbox, fetch

KEY = "sk-ant-sandbox-test-0123456789abcdef"
MODELS = (
    "claude-sonnet-4-5",
    "claude-opus-4-6",
    "claude-haiku-4-5-20251001",
    "claude-sonnet-4-6",
    "claude-opus-4-7",
)
MODEL = "claude-sonnet-4-6"
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City and state"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}
STOCK = {
    "name": "get_stock_price",
    "input_schema": {
        "type": "object",
        "properties": {
            "ticker": {"type": "string", "minLength": 1, "maxLength": 5},
            "exchange": {"enum": ["NASDAQ", "NYSE"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 30},
        },
        "required": ["ticker", "exchange", "days"],
        "additionalProperties": False,
    },
}
MSG_ID = re.compile(r"msg_01[A-Za-z0-9]{22}")
TOOL_ID = re.compile(r"toolu_01[A-Za-z0-9]{22}")
REQ_ID = re.compile(r"req_011C[A-Za-z0-9]{20}")
USAGE_KEYS = {
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation",
    "output_tokens",
    "service_tier",
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24).decode()


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
    raw(sb, "DELETE", "/_sandbox/faults", auth=None)
    raw(sb, "DELETE", "/_sandbox/requests", auth=None)


class Raw(Fetched):
    def frames(self) -> list[bytes]:
        assert self.body.endswith(b"\n\n") or self.error is not None
        return [f for f in self.body.split(b"\n\n") if f]

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """``(event, data)`` pairs; checks the ``event:``/``data:`` framing of every frame."""
        out = []
        for frame in self.frames():
            lines = frame.split(b"\n")
            assert len(lines) == 2, frame
            assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), frame
            name, data = lines[0][7:].decode(), json.loads(lines[1][6:])
            assert data["type"] == name
            out.append((name, data))
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
    version: str | None = "2023-06-01",
    timeout: float = 10,
) -> Raw:
    hdrs = dict(headers or {})
    if auth is not None:
        hdrs["x-api-key"] = auth
        if version is not None:
            hdrs["anthropic-version"] = version
    got = fetch(sb.base_url, method, path, body, data=data, headers=hdrs, timeout=timeout)
    return Raw(*got)


def msgs(sb: Running, body: Any, **kw: Any) -> Raw:
    return raw(sb, "POST", "/v1/messages", body, **kw)


def req(text: str = "Hello sandbox, tell me a story", model: str = MODEL, **extra: Any) -> dict:
    return {
        "model": model,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def ok(sb: Running, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    r = msgs(sb, body, **kw)
    assert r.status == 200, r.body
    return r.json()  # type: ignore[no-any-return]


def stream(sb: Running, body: dict[str, Any], **kw: Any) -> list[tuple[str, dict[str, Any]]]:
    r = msgs(sb, {**body, "stream": True}, **kw)
    assert r.status == 200, r.body
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.error is None
    return r.events()


def error_of(r: Raw) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"type", "error", "request_id"}
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert REQ_ID.fullmatch(body["request_id"])
    assert r.headers["request-id"] == body["request_id"]
    return body["error"]  # type: ignore[no-any-return]


def grammar(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Event names with block / delta types, consecutive identical deltas collapsed."""
    out: list[str] = []
    for name, data in events:
        if name == "content_block_start":
            tok = f"start:{data['content_block']['type']}"
        elif name == "content_block_delta":
            tok = f"delta:{data['delta']['type']}"
        else:
            tok = name
        if not (out and out[-1] == tok and tok.startswith("delta:")):
            out.append(tok)
    return out


def streamed(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rebuild the content blocks from a stream, the way the SDK accumulates them."""
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_start":
            blocks[data["index"]] = copy.deepcopy(data["content_block"])
        elif name == "content_block_delta":
            b, d = blocks[data["index"]], data["delta"]
            if d["type"] == "text_delta":
                b["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                b["thinking"] += d["thinking"]
            elif d["type"] == "signature_delta":
                b["signature"] += d["signature"]
            elif d["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + d["partial_json"]
        elif name == "content_block_stop" and data["index"] in partial:
            blocks[data["index"]]["input"] = json.loads(partial[data["index"]] or "{}")
    return [blocks[i] for i in sorted(blocks)]


# ---------------------------------------------------------------------------------------------
# plain text
# ---------------------------------------------------------------------------------------------


def test_nonstream_text(sb: Running) -> None:
    r = msgs(sb, req())
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/json")
    assert REQ_ID.fullmatch(r.headers["request-id"])
    assert r.headers["anthropic-ratelimit-requests-remaining"] == "999"
    body = r.json()
    assert list(body) == ["id", "type", "role", "model", "content", "stop_reason",
                          "stop_sequence", "usage"]  # fmt: skip
    assert MSG_ID.fullmatch(body["id"])
    assert (body["type"], body["role"], body["model"]) == ("message", "assistant", MODEL)
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    (block,) = body["content"]
    assert set(block) == {"type", "text"} and block["type"] == "text"
    assert block["text"].startswith('You said: "Hello sandbox, tell me a story".')
    assert "OpenAI" not in block["text"]
    u = body["usage"]
    assert set(u) == USAGE_KEYS
    assert u["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    assert u["service_tier"] == "standard"
    assert u["cache_creation_input_tokens"] == u["cache_read_input_tokens"] == 0
    assert 8 <= u["input_tokens"] <= 30 and 20 <= u["output_tokens"] <= 75


def test_same_request_same_answer(sb: Running) -> None:
    a, b = ok(sb, req("determinism please")), ok(sb, req("determinism please"))
    assert a["content"] == b["content"] and a["usage"] == b["usage"] and a["id"] != b["id"]
    assert ok(sb, req("something else"))["content"] != a["content"]


def test_response_model_is_the_snapshot(sb: Running) -> None:
    shown = {m: ok(sb, req("hi", m))["model"] for m in MODELS}
    assert shown == {**{m: m for m in MODELS}, "claude-sonnet-4-5": "claude-sonnet-4-5-20250929"}


def test_stream_text_framing(sb: Running) -> None:
    r = msgs(sb, {**req("stream me"), "stream": True})
    assert r.status == 200 and r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert REQ_ID.fullmatch(r.headers["request-id"])
    assert b"[DONE]" not in r.body
    assert r.body.startswith(b"event: message_start\ndata: {")
    assert b'event: ping\ndata: {"type": "ping"}\n\n' in r.body
    events = r.events()
    assert grammar(events) == ["message_start", "start:text", "ping", "delta:text_delta",
                               "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    deltas = [d for n, d in events if n == "content_block_delta"]
    assert len(deltas) >= 5 and deltas[0]["delta"]["text"] == "You"
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["stop_sequence"] is None
    assert set(start["usage"]) == USAGE_KEYS and start["usage"]["output_tokens"] == 1
    assert events[1][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}  # fmt: skip
    assert events[-3][1] == {"type": "content_block_stop", "index": 0}
    md = events[-2][1]
    assert md["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    full = ok(sb, req("stream me"))
    assert streamed(events) == full["content"]
    assert md["usage"] == {k: full["usage"][k] for k in ("input_tokens", "output_tokens",
                           "cache_creation_input_tokens", "cache_read_input_tokens")}  # fmt: skip
    assert events[-1][1] == {"type": "message_stop"}


def test_multimodal_user_turn(sb: Running) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}
    pdf_data = base64.b64encode(b"%PDF-1.4").decode()
    pdf_source = {"type": "base64", "media_type": "application/pdf", "data": pdf_data}
    pdf = {"type": "document", "source": pdf_source}
    text = {"type": "text", "text": "What is in these?"}
    body = ok(sb, {**req(), "messages": [{"role": "user", "content": [image, url, pdf, text]}]})
    assert "I can see 2 images" in body["content"][0]["text"]
    assert body["usage"]["input_tokens"] > 3000  # images and documents are not free


def test_long_system_prompt_is_read_from_cache(sb: Running) -> None:
    short = ok(sb, req(system="Be brief."))["usage"]
    system = "You are a meticulous assistant. " * 10
    blocks = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    long = ok(sb, req(system=blocks))["usage"]
    assert short["cache_read_input_tokens"] == 0
    assert long["cache_read_input_tokens"] == count_tokens(system) >= 60
    # the whole system prompt moved from input_tokens to cache_read_input_tokens
    assert long["input_tokens"] == short["input_tokens"] - count_tokens("Be brief.")
    assert long["cache_creation_input_tokens"] == 0
    events = stream(sb, req(system=system))
    assert events[0][1]["message"]["usage"]["cache_read_input_tokens"] == count_tokens(system)
    assert events[-2][1]["usage"]["cache_read_input_tokens"] == count_tokens(system)
    assert ok(sb, req(system="x" * 200))["usage"]["cache_read_input_tokens"] == 0


# ---------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------


def test_tool_use_when_name_mentioned(sb: Running) -> None:
    body = ok(sb, req("Use get_weather for Paris please", tools=[WEATHER, STOCK]))
    assert body["stop_reason"] == "tool_use"
    text, call = body["content"]
    assert text["type"] == "text" and "get_weather" in text["text"]
    assert set(call) == {"type", "id", "name", "input", "caller"}
    assert call["type"] == "tool_use" and TOOL_ID.fullmatch(call["id"])
    assert call["name"] == "get_weather" and call["caller"] == {"type": "direct"}
    jsonschema.validate(call["input"], WEATHER["input_schema"])
    assert call["input"]["location"] == "Paris"


def test_parallel_tool_use_and_disable_parallel(sb: Running) -> None:
    text = "Call get_weather and get_stock_price for Apple"
    body = ok(sb, req(text, tools=[WEATHER, STOCK]))
    calls = [b for b in body["content"] if b["type"] == "tool_use"]
    assert [c["name"] for c in calls] == ["get_weather", "get_stock_price"]
    assert len({c["id"] for c in calls}) == 2
    for call, tool in zip(calls, (WEATHER, STOCK), strict=True):
        jsonschema.validate(call["input"], tool["input_schema"])
    one = ok(sb, req(text, tools=[WEATHER, STOCK],
                     tool_choice={"type": "auto", "disable_parallel_tool_use": True}))  # fmt: skip
    assert [b["name"] for b in one["content"] if b["type"] == "tool_use"] == ["get_weather"]


def test_tool_choice_variants(sb: Running) -> None:
    tools = [WEATHER, STOCK]
    forced = ok(sb, req("hello", tools=tools, tool_choice={"type": "any"}))
    assert [b["type"] for b in forced["content"]] == ["tool_use"]  # no preamble when forced
    assert forced["content"][0]["name"] == "get_weather" and forced["stop_reason"] == "tool_use"
    named = ok(
        sb, req("hello", tools=tools, tool_choice={"type": "tool", "name": "get_stock_price"})
    )
    (call,) = named["content"]
    assert call["name"] == "get_stock_price"
    jsonschema.validate(call["input"], STOCK["input_schema"])
    none = ok(sb, req("use get_weather", tools=tools, tool_choice={"type": "none"}))
    assert [b["type"] for b in none["content"]] == ["text"] and none["stop_reason"] == "end_turn"
    plain = ok(sb, req("no tool named here", tools=tools))
    assert plain["stop_reason"] == "end_turn"
    assert (
        plain["usage"]["input_tokens"]
        > ok(sb, req("no tool named here"))["usage"]["input_tokens"] + 300
    )  # the tool-use system prompt and the definitions are counted


def test_tool_use_stream(sb: Running) -> None:
    events = stream(sb, req("Use get_weather for Paris please", tools=[WEATHER]))
    assert grammar(events) == [
        "message_start", "start:text", "ping", "delta:text_delta", "content_block_stop",
        "start:tool_use", "delta:input_json_delta", "content_block_stop", "message_delta",
        "message_stop",
    ]  # fmt: skip
    start = next(d for n, d in events if n == "content_block_start" and d["index"] == 1)
    block = start["content_block"]
    assert list(block) == ["type", "id", "name", "caller", "input"] and block["input"] == {}
    parts = [d["delta"]["partial_json"] for n, d in events
             if n == "content_block_delta" and d["index"] == 1]  # fmt: skip
    assert parts[0] == "" and len(parts) >= 3
    args = json.loads("".join(parts))
    jsonschema.validate(args, WEATHER["input_schema"])
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    rebuilt = streamed(events)
    assert rebuilt[1]["input"] == args and TOOL_ID.fullmatch(rebuilt[1]["id"])


def _turns(sb: Running, tools: list[dict[str, Any]], text: str, **extra: Any) -> list[dict]:
    first = ok(sb, req(text, tools=tools, **extra))
    assert first["stop_reason"] == "tool_use"
    results = [
        {"type": "tool_result", "tool_use_id": b["id"], "content": f"{b['name']} says 21 degrees"}
        for b in first["content"]
        if b["type"] == "tool_use"
    ]
    return [
        {"role": "user", "content": text},
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": results},
    ]


def test_tool_result_round_trip(sb: Running) -> None:
    turns = _turns(sb, [WEATHER], "Use get_weather for Paris")
    body = ok(sb, {**req(tools=[WEATHER]), "messages": turns})
    assert body["stop_reason"] == "end_turn"
    (text,) = body["content"]
    assert text["text"].startswith('The get_weather tool returned "get_weather says 21 degrees"')
    # structured tool_result content, an error flag and a follow-up text after the results
    turns[2]["content"] = [
        {
            **turns[2]["content"][0],
            "content": [{"type": "text", "text": "sunny"}],
            "is_error": True,
        },
        {"type": "text", "text": "and thanks"},
    ]
    body = ok(sb, {**req(tools=[WEATHER]), "messages": turns})
    assert '"sunny"' in body["content"][0]["text"]
    # the recorded assistant tool_use blocks carry no `caller`: accepted as well
    turns[1]["content"] = [{k: v for k, v in b.items() if k != "caller"}
                           for b in turns[1]["content"]]  # fmt: skip
    assert msgs(sb, {**req(tools=[WEATHER]), "messages": turns}).status == 200


def test_tool_result_stream(sb: Running) -> None:
    turns = _turns(sb, [WEATHER, STOCK], "Use get_weather and get_stock_price")
    events = stream(sb, {**req(tools=[WEATHER, STOCK]), "messages": turns})
    assert grammar(events)[1:4] == ["start:text", "ping", "delta:text_delta"]
    text = streamed(events)[0]["text"]
    assert "get_weather tool returned" in text and "get_stock_price tool returned" in text


# ---------------------------------------------------------------------------------------------
# thinking
# ---------------------------------------------------------------------------------------------

THINK = {"type": "enabled", "budget_tokens": 1024}


def test_thinking_nonstream(sb: Running) -> None:
    body = ok(sb, req("How do I cross the street?", max_tokens=2048, thinking=THINK))
    thinking, text = body["content"]
    assert set(thinking) == {"type", "thinking", "signature"} and thinking["type"] == "thinking"
    assert thinking["thinking"].startswith('The user wrote "How do I cross the street?".')
    assert re.fullmatch(r"[A-Za-z0-9+/]{100,}={0,2}", thinking["signature"])
    assert thinking["signature"] == sign_thinking(thinking["thinking"])
    assert text["type"] == "text" and body["stop_reason"] == "end_turn"
    plain = ok(sb, req("How do I cross the street?", max_tokens=2048))
    assert body["usage"]["output_tokens"] > plain["usage"]["output_tokens"] + 20


def test_thinking_stream(sb: Running) -> None:
    body = req("How do I cross the street?", max_tokens=2048, thinking=THINK)
    events = stream(sb, body)
    assert grammar(events) == [
        "message_start", "start:thinking", "ping", "delta:thinking_delta",
        "delta:signature_delta", "content_block_stop", "start:text", "delta:text_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[1][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    thinking = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == 0]
    assert len(thinking) >= 4
    assert thinking[-2] == {"type": "thinking_delta", "thinking": ""}  # as recorded
    assert set(thinking[-1]) == {"type", "signature"}
    assert streamed(events) == ok(sb, body)["content"]


def test_redacted_thinking(sb: Running) -> None:
    body = req("[sandbox:redacted_thinking] secret", max_tokens=2048, thinking=THINK)
    full = ok(sb, body)
    redacted, text = full["content"]
    assert set(redacted) == {"type", "data"} and redacted["type"] == "redacted_thinking"
    base64.b64decode(redacted["data"], validate=True)
    assert "[sandbox:" not in text["text"]
    events = stream(sb, body)
    assert grammar(events) == [
        "message_start", "start:redacted_thinking", "ping", "content_block_stop", "start:text",
        "delta:text_delta", "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[1][1]["content_block"] == redacted
    # without thinking the directive changes nothing
    assert [b["type"] for b in ok(sb, req("[sandbox:redacted_thinking] x"))["content"]] == ["text"]


def test_thinking_budget_and_omitted_display(sb: Running) -> None:
    adaptive = ok(sb, req("think", max_tokens=1, thinking={"type": "adaptive"}))
    assert adaptive["stop_reason"] == "max_tokens" and adaptive["usage"]["output_tokens"] <= 1
    omitted = ok(sb, req("think", max_tokens=2048,
                         thinking={**THINK, "display": "omitted"}))  # fmt: skip
    block = omitted["content"][0]
    assert block["thinking"] == "" and block["signature"]


def test_thinking_replay_with_tool_use(sb: Running) -> None:
    turns = _turns(sb, [WEATHER], "Use get_weather for Oslo", max_tokens=4096, thinking=THINK)
    assert turns[1]["content"][0]["type"] == "thinking"
    body = {**req(tools=[WEATHER], max_tokens=4096, thinking=THINK), "messages": turns}
    assert msgs(sb, body).status == 200
    # the gateway dropped the thinking block: rejected like the real API does
    stripped = copy.deepcopy(body)
    stripped["messages"][1]["content"] = stripped["messages"][1]["content"][1:]
    r = msgs(sb, stripped)
    assert r.status == 400
    assert "a final `assistant` message must start with a thinking block" in error_of(r)["message"]
    # the gateway altered the thinking text: the signature no longer matches
    altered = copy.deepcopy(body)
    altered["messages"][1]["content"][0]["thinking"] += " (edited)"
    r = msgs(sb, altered)
    assert r.status == 400 and "Invalid `signature` in `thinking` block" in error_of(r)["message"]
    # without thinking enabled a replayed thinking block is still accepted
    assert msgs(sb, {**body, "thinking": {"type": "disabled"}}).status == 200


# ---------------------------------------------------------------------------------------------
# structured output, stop sequences, max_tokens, refusal
# ---------------------------------------------------------------------------------------------

SCHEMAS = [
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}, "qty": {"type": "number"}},
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
            },
            "status": {"enum": ["open", "closed"]},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["items", "status", "note"],
        "additionalProperties": False,
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_structured_output_is_valid(sb: Running, schema: dict[str, Any]) -> None:
    fmt = {"format": {"type": "json_schema", "schema": schema}}
    body = ok(sb, req("Extract Alice, 31 years old", output_config=fmt))
    (block,) = body["content"]
    jsonschema.validate(json.loads(block["text"]), schema)
    events = stream(sb, req("Extract Alice, 31 years old", output_config=fmt))
    assert streamed(events)[0]["text"] == block["text"]
    think = ok(sb, req("Extract Bob", max_tokens=4096, thinking=THINK, output_config=fmt))
    assert [b["type"] for b in think["content"]] == ["thinking", "text"]
    jsonschema.validate(json.loads(think["content"][1]["text"]), schema)


def test_stop_sequences(sb: Running) -> None:
    full = ok(sb, req("alpha beta gamma"))["content"][0]["text"]
    body = ok(sb, req("alpha beta gamma", stop_sequences=["zzz", "gamma"]))
    assert body["stop_reason"] == "stop_sequence" and body["stop_sequence"] == "gamma"
    assert body["content"][0]["text"] == full[: full.index("gamma")]
    events = stream(sb, req("alpha beta gamma", stop_sequences=["gamma"]))
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "gamma"}
    miss = ok(sb, req("alpha beta gamma", stop_sequences=["not-in-text"]))
    assert miss["stop_reason"] == "end_turn" and miss["stop_sequence"] is None


def test_max_tokens_truncation(sb: Running) -> None:
    body = ok(sb, req("cut me short", max_tokens=5))
    assert body["stop_reason"] == "max_tokens" and body["usage"]["output_tokens"] == 5
    assert body["content"][0]["text"] == 'You said: "cut'
    events = stream(sb, req("cut me short", max_tokens=5))
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"]["output_tokens"] == 5
    assert "content_block_stop" in grammar(events)  # text blocks are closed


def test_max_tokens_inside_tool_input(sb: Running) -> None:
    body = req("Use get_stock_price for AAPL", tools=[STOCK])
    full = ok(sb, body)["usage"]["output_tokens"]
    cut = ok(sb, {**body, "max_tokens": full - 3})
    assert cut["stop_reason"] == "max_tokens" and cut["usage"]["output_tokens"] == full - 3
    assert cut["content"][-1]["type"] == "tool_use" and cut["content"][-1]["input"] == {}
    events = stream(sb, {**body, "max_tokens": full - 3})
    # recorded behaviour: the open tool_use block gets no content_block_stop
    tail = ["content_block_stop", "start:tool_use", "delta:input_json_delta", "message_delta",
            "message_stop"]  # fmt: skip
    assert grammar(events)[-5:] == tail
    parts = "".join(d["delta"]["partial_json"] for n, d in events
                    if n == "content_block_delta" and d["index"] == 1)  # fmt: skip
    with pytest.raises(json.JSONDecodeError):
        json.loads(parts)


def test_refusal(sb: Running) -> None:
    body = ok(sb, req("[sandbox:refusal] something bad"))
    assert body["stop_reason"] == "refusal" and body["stop_sequence"] is None
    explanation = "This request was refused due to policy."
    assert body["stop_details"] == {"type": "refusal", "category": "cyber",
                                    "explanation": explanation}  # fmt: skip
    assert body["content"] == [{"type": "text", "text": ""}]
    assert body["usage"]["output_tokens"] == 0
    events = stream(sb, req("[sandbox:refusal] something bad"))
    assert grammar(events) == ["message_start", "start:text", "ping", "content_block_stop",
                               "message_delta", "message_stop"]  # fmt: skip
    assert events[-2][1]["delta"]["stop_details"] == body["stop_details"]
    assert events[-2][1]["usage"]["output_tokens"] == 0


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def M(*content: Any) -> dict[str, Any]:
    """A request with the given alternating turns (user first)."""
    turns = [{"role": ("user", "assistant")[k % 2], "content": c} for k, c in enumerate(content)]
    return {"model": MODEL, "max_tokens": 1024, "messages": turns}


def tool_use(tid: str = "toolu_01abc", name: str = "get_weather") -> dict[str, Any]:
    return {"type": "tool_use", "id": tid, "name": name, "input": {"location": "Paris"}}


def tool_result(tid: str = "toolu_01abc") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tid, "content": "sunny"}


def image(media: str = "image/png", data: str = PNG) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


B = req("hi")
T = {"type": "text", "text": "hi"}
FMT = {"format": {"type": "json_schema", "schema": SCHEMAS[0]}}
LOOSE = {"type": "object", "properties": {"a": {"type": "string"}}}
TOOL_TURNS = M("weather?", [tool_use()], [tool_result()])
INVALID: list[tuple[str, dict[str, Any], int, str, str]] = [
    # (id, body, status, error type, message substring)
    ("no-model", without(B, "model"), 400, "invalid_request_error", "model: Field required"),
    ("no-max-tokens", without(B, "max_tokens"), 400, "invalid_request_error",
     "max_tokens: Field required"),
    ("no-messages", without(B, "messages"), 400, "invalid_request_error",
     "messages: Field required"),
    ("max-tokens-0", {**B, "max_tokens": 0}, 400, "invalid_request_error",
     "max_tokens: Input should be greater than or equal to 1"),
    ("max-tokens-str", {**B, "max_tokens": "100"}, 400, "invalid_request_error",
     "max_tokens: Input should be a valid integer"),
    ("max-tokens-bool", {**B, "max_tokens": True}, 400, "invalid_request_error",
     "valid integer"),
    ("max-tokens-ceiling", {**B, "max_tokens": 64001}, 400, "invalid_request_error",
     "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens"),
    ("max-tokens-ceiling-opus", {**req("hi", "claude-opus-4-6"), "max_tokens": 128001}, 400,
     "invalid_request_error", "128001 > 128000"),
    ("unknown-model", req("hi", "claude-3-opus-latest"), 404, "not_found_error",
     "model: claude-3-opus-latest"),
    ("openai-model", req("hi", "gpt-4o"), 404, "not_found_error", "model: gpt-4o"),
    ("unknown-field", {**B, "n": 1}, 400, "invalid_request_error",
     "n: Extra inputs are not permitted"),
    ("openai-stop-field", {**B, "stop": ["x"]}, 400, "invalid_request_error",
     "stop: Extra inputs are not permitted"),
    ("body-not-object", [B], 400, "invalid_request_error", "valid dictionary"),
    ("stream-str", {**B, "stream": "yes"}, 400, "invalid_request_error",
     "stream: Input should be a valid boolean"),
    # messages
    ("messages-empty", {**B, "messages": []}, 400, "invalid_request_error",
     "at least one message is required"),
    ("messages-not-list", {**B, "messages": "hi"}, 400, "invalid_request_error",
     "messages: Input should be a valid list"),
    ("role-system", {**B, "messages": [{"role": "system", "content": "x"}]}, 400,
     "invalid_request_error", "messages.0.role: Input should be 'user' or 'assistant'"),
    ("role-tool", {**B, "messages": [{"role": "tool", "content": "x"}]}, 400,
     "invalid_request_error", "messages.0.role"),
    ("first-assistant", {**B, "messages": [{"role": "assistant", "content": "x"}]}, 400,
     "invalid_request_error", 'first message must use the "user" role'),
    ("two-users", {**B, "messages": [{"role": "user", "content": "a"},
                                     {"role": "user", "content": "b"}]}, 400,
     "invalid_request_error", 'multiple "user" roles in a row'),
    ("two-assistants", {**B, "messages": [{"role": "user", "content": "a"},
                                          {"role": "assistant", "content": "b"},
                                          {"role": "assistant", "content": "c"}]}, 400,
     "invalid_request_error", 'multiple "assistant" roles in a row'),
    ("message-extra-key", {**B, "messages": [{"role": "user", "content": "a", "name": "bob"}]},
     400, "invalid_request_error", "messages.0.name: Extra inputs are not permitted"),
    ("no-content", {**B, "messages": [{"role": "user"}]}, 400, "invalid_request_error",
     "messages.0.content: Field required"),
    ("empty-string-content", M(""), 400, "invalid_request_error",
     "messages.0: all messages must have non-empty content"),
    ("empty-list-content", M("a", [], "b"), 400, "invalid_request_error",
     "messages.1: all messages must have non-empty content except for the optional final"),
    ("null-content", M(None), 400, "invalid_request_error", "messages.0.content"),
    ("empty-text-block", M([{"type": "text", "text": ""}]), 400, "invalid_request_error",
     "messages.0.content.0.text: text content blocks must be non-empty"),
    ("whitespace-text-block", M([{"type": "text", "text": "  \n"}]), 400,
     "invalid_request_error", "text content blocks must contain non-whitespace text"),
    ("empty-assistant-text", M("a", [{"type": "text", "text": ""}], "b"), 400,
     "invalid_request_error", "messages.1.content.0.text: text content blocks must be non-empty"),
    ("block-no-type", M([{"text": "a"}]), 400, "invalid_request_error",
     "Unable to extract tag using discriminator 'type'"),
    ("openai-image-part", M([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]),
     400, "invalid_request_error", "Input tag 'image_url' found using 'type'"),
    ("text-block-extra", M([{"type": "text", "text": "a", "foo": 1}]), 400,
     "invalid_request_error", "messages.0.content.0.foo: Extra inputs are not permitted"),
    ("image-media-type", M([image("image/bmp")]), 400, "invalid_request_error",
     "media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"),
    ("image-data-uri", M([image(data="data:image/png;base64," + PNG)]), 400,
     "invalid_request_error", "invalid base64"),
    ("image-mismatch", M([image("image/jpeg")]), 400, "invalid_request_error",
     "specified using the image/jpeg media type, but the image appears to be a image/png image"),
    ("image-source-type", M([{"type": "image", "source": {"type": "file", "file_id": "f"}}]),
     400, "invalid_request_error", "Input tag 'file'"),
    ("document-not-pdf", M([{"type": "document", "source": {
        "type": "base64", "media_type": "image/png", "data": PNG}}]), 400,
     "invalid_request_error", "Input should be 'application/pdf'"),
    ("tool-use-in-user", {**M([tool_use()]), "tools": [WEATHER]}, 400, "invalid_request_error",
     "`tool_use` blocks can only be used in `assistant` messages"),
    ("tool-result-in-assistant", {**M("a", [tool_result()]), "tools": [WEATHER]}, 400,
     "invalid_request_error", "`tool_result` blocks can only be used in `user` messages"),
    ("image-in-assistant", M("a", [image()]), 400, "invalid_request_error",
     "`image` blocks can only be used in `user` messages"),
    ("thinking-in-user", M([{"type": "thinking", "thinking": "x", "signature": "abc"}]), 400,
     "invalid_request_error", "`thinking` blocks can only be used in `assistant` messages"),
    ("thinking-no-signature", M("a", [{"type": "thinking", "thinking": "x"}, T]), 400,
     "invalid_request_error", "messages.1.content.0.signature: Field required"),
    ("thinking-forged-signature", M("a", [{"type": "thinking", "thinking": "x",
                                           "signature": sign_thinking("y")}, T]), 400,
     "invalid_request_error", "Invalid `signature` in `thinking` block"),
    ("tool-blocks-without-tools", TOOL_TURNS, 400, "invalid_request_error",
     "Requests which include `tool_use` or `tool_result` blocks must define tools."),
    ("tool-use-bad-id", {**M("a", [tool_use("call.1")], [tool_result("call.1")]),
                         "tools": [WEATHER]}, 400, "invalid_request_error",
     "messages.1.content.0.id: String should match pattern '^[a-zA-Z0-9_-]+$'"),
    ("tool-use-input-string", {**M("a", [{**tool_use(), "input": '{"location": "x"}'}],
                                   [tool_result()]), "tools": [WEATHER]}, 400,
     "invalid_request_error", "messages.1.content.0.input: Input should be a valid dictionary"),
    ("tool-result-unknown-id", {**M("a", [tool_use()], [tool_result("toolu_01zzz")]),
                                "tools": [WEATHER]}, 400, "invalid_request_error",
     "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_01zzz"),
    ("tool-result-without-call", {**M("a", "b", [tool_result()]), "tools": [WEATHER]}, 400,
     "invalid_request_error", "unexpected `tool_use_id`"),
    ("tool-use-unanswered", {**M("a", [tool_use(), tool_use("toolu_01def")], [tool_result()]),
                             "tools": [WEATHER]}, 400, "invalid_request_error",
     "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: "
     "toolu_01def"),
    ("tool-use-answered-by-text", {**M("a", [tool_use()], "done?"), "tools": [WEATHER]}, 400,
     "invalid_request_error", "`tool_use` ids were found without `tool_result` blocks"),
    ("tool-result-after-text", {**M("a", [tool_use()], [T, tool_result()]),
                                "tools": [WEATHER]}, 400, "invalid_request_error",
     "messages.2.content.1: `tool_result` blocks must come before any other content"),
    ("duplicate-tool-use-ids", {**M("a", [tool_use()], [tool_result()], [tool_use()],
                                    [tool_result()]), "tools": [WEATHER]}, 400,
     "invalid_request_error", "`tool_use` ids must be unique"),
    ("prefill-trailing-space", M("a", "Sure, "), 400, "invalid_request_error",
     "final assistant content cannot end with trailing whitespace"),
    ("prefill-opus-4-6", {**M("a", "{"), "model": "claude-opus-4-6"}, 400,
     "invalid_request_error", "Prefilling assistant messages is not supported for this model."),
    # system
    ("system-int", {**B, "system": 3}, 400, "invalid_request_error",
     "system: Input should be a valid list"),
    ("system-empty-block", {**B, "system": [{"type": "text", "text": ""}]}, 400,
     "invalid_request_error", "system.0.text: text content blocks must be non-empty"),
    ("system-image-block", {**B, "system": [image()]}, 400, "invalid_request_error",
     "system.0.type: Input should be 'text'"),
    # sampling
    ("temperature-high", {**B, "temperature": 1.5}, 400, "invalid_request_error",
     "temperature: Input should be less than or equal to 1"),
    ("temperature-negative", {**B, "temperature": -0.1}, 400, "invalid_request_error",
     "temperature: Input should be greater than or equal to 0"),
    ("temperature-str", {**B, "temperature": "0.5"}, 400, "invalid_request_error",
     "temperature: Input should be a valid number"),
    ("top-p-high", {**B, "top_p": 1.2}, 400, "invalid_request_error",
     "top_p: Input should be less than or equal to 1"),
    ("top-k-negative", {**B, "top_k": -1}, 400, "invalid_request_error",
     "top_k: Input should be greater than or equal to 0"),
    ("top-k-float", {**B, "top_k": 2.5}, 400, "invalid_request_error",
     "top_k: Input should be a valid integer"),
    *[(f"temperature-and-top-p-{m}", {**req("hi", m), "temperature": 0.5, "top_p": 0.9}, 400,
       "invalid_request_error",
       "`temperature` and `top_p` cannot both be specified for this model. Please use only one.")
      for m in MODELS],
    ("stop-sequences-str", {**B, "stop_sequences": "END"}, 400, "invalid_request_error",
     "stop_sequences: Input should be a valid list"),
    ("stop-sequences-empty", {**B, "stop_sequences": ["END", ""]}, 400,
     "invalid_request_error", "stop_sequences.1: stop sequences must contain non-whitespace"),
    ("stop-sequences-int", {**B, "stop_sequences": [1]}, 400, "invalid_request_error",
     "stop_sequences.0: Input should be a valid string"),
    ("metadata-extra", {**B, "metadata": {"user_id": "u1", "session": "s"}}, 400,
     "invalid_request_error", "metadata.session: Extra inputs are not permitted"),
    ("metadata-not-object", {**B, "metadata": "u1"}, 400, "invalid_request_error",
     "metadata: Input should be a valid dictionary"),
    ("service-tier", {**B, "service_tier": "priority"}, 400, "invalid_request_error",
     "service_tier: Input should be 'auto' or 'standard_only'"),
    ("cache-control-type", {**B, "system": [{"type": "text", "text": "s",
                                             "cache_control": {"type": "forever"}}]}, 400,
     "invalid_request_error", "system.0.cache_control.type: Input should be 'ephemeral'"),
    # tools
    ("tools-not-list", {**B, "tools": WEATHER}, 400, "invalid_request_error",
     "tools: Input should be a valid list"),
    ("tool-name-space", {**B, "tools": [{**WEATHER, "name": "get weather"}]}, 400,
     "invalid_request_error", "tools.0.custom.name: String should match pattern"),
    ("tool-name-long", {**B, "tools": [{**WEATHER, "name": "x" * 129}]}, 400,
     "invalid_request_error", "tools.0.custom.name: String should match pattern"),
    ("tool-no-name", {**B, "tools": [without(WEATHER, "name")]}, 400, "invalid_request_error",
     "tools.0.custom.name: Field required"),
    ("tool-no-schema", {**B, "tools": [without(WEATHER, "input_schema")]}, 400,
     "invalid_request_error", "tools.0.custom.input_schema: Field required"),
    ("tool-schema-array", {**B, "tools": [{**WEATHER, "input_schema": {"type": "array"}}]}, 400,
     "invalid_request_error", "tools.0.custom.input_schema.type: Input should be 'object'"),
    ("tool-openai-shape", {**B, "tools": [{"type": "function", "function": {"name": "f"}}]},
     400, "invalid_request_error", "tools.0: Input tag 'function'"),
    ("tool-parameters-key", {**B, "tools": [{"name": "f", "parameters": LOOSE,
                                             "input_schema": LOOSE}]}, 400,
     "invalid_request_error", "tools.0.custom.parameters: Extra inputs are not permitted"),
    ("tool-duplicate-names", {**B, "tools": [WEATHER, WEATHER]}, 400, "invalid_request_error",
     "Tool names must be unique"),
    ("tool-strict-loose-schema", {**B, "tools": [{"name": "f", "strict": True,
                                                  "input_schema": LOOSE}]}, 400,
     "invalid_request_error", "'additionalProperties' must be explicitly set to false"),
    ("tool-strict-min-length", {**B, "tools": [{**STOCK, "strict": True}]}, 400,
     "invalid_request_error",
     "tools.0.custom.input_schema.properties.ticker: JSON schema keyword 'minLength' is not "
     "supported"),
    ("tool-choice-string", {**B, "tools": [WEATHER], "tool_choice": "auto"}, 400,
     "invalid_request_error", "tool_choice: Input should be a valid dictionary"),
    ("tool-choice-required", {**B, "tools": [WEATHER], "tool_choice": {"type": "required"}},
     400, "invalid_request_error", "tool_choice: Input tag 'required'"),
    ("tool-choice-no-name", {**B, "tools": [WEATHER], "tool_choice": {"type": "tool"}}, 400,
     "invalid_request_error", "tool_choice.tool.name: Field required"),
    ("tool-choice-unknown-name", {**B, "tools": [WEATHER],
                                  "tool_choice": {"type": "tool", "name": "nope"}}, 400,
     "invalid_request_error", "tool_choice.tool.name: Tool 'nope' not found"),
    ("tool-choice-none-parallel", {**B, "tools": [WEATHER], "tool_choice": {
        "type": "none", "disable_parallel_tool_use": True}}, 400, "invalid_request_error",
     "tool_choice.none.disable_parallel_tool_use: Extra inputs are not permitted"),
    ("tool-choice-any-without-tools", {**B, "tool_choice": {"type": "any"}}, 400,
     "invalid_request_error", "tool_choice may only be specified while providing tools"),
    ("tool-choice-parallel-str", {**B, "tools": [WEATHER], "tool_choice": {
        "type": "auto", "disable_parallel_tool_use": "yes"}}, 400, "invalid_request_error",
     "tool_choice.auto.disable_parallel_tool_use: Input should be a valid boolean"),
    # thinking
    ("thinking-budget-low", {**B, "thinking": {"type": "enabled", "budget_tokens": 1000}}, 400,
     "invalid_request_error",
     "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
    ("thinking-budget-not-below-max", {**B, "thinking": THINK}, 400, "invalid_request_error",
     "`max_tokens` must be greater than `thinking.budget_tokens`"),
    ("thinking-no-budget", {**B, "max_tokens": 4096, "thinking": {"type": "enabled"}}, 400,
     "invalid_request_error", "thinking.enabled.budget_tokens: Field required"),
    ("thinking-type", {**B, "thinking": {"type": "on"}}, 400, "invalid_request_error",
     "thinking: Input tag 'on'"),
    ("thinking-disabled-extra", {**B, "thinking": {"type": "disabled", "budget_tokens": 2000}},
     400, "invalid_request_error", "thinking.disabled.budget_tokens: Extra inputs"),
    ("thinking-temperature", {**B, "max_tokens": 4096, "thinking": THINK, "temperature": 0.5},
     400, "invalid_request_error", "`temperature` may only be set to 1 when thinking is enabled"),
    ("thinking-top-p", {**B, "max_tokens": 4096, "thinking": THINK, "top_p": 0.9}, 400,
     "invalid_request_error", "`top_p` must be greater than or equal to 0.95 or unset"),
    ("thinking-top-k", {**B, "max_tokens": 4096, "thinking": THINK, "top_k": 5}, 400,
     "invalid_request_error", "`top_k` must be unset when thinking is enabled"),
    ("thinking-tool-choice-any", {**B, "max_tokens": 4096, "thinking": THINK, "tools": [WEATHER],
                                  "tool_choice": {"type": "any"}}, 400, "invalid_request_error",
     "Thinking may not be enabled when tool_choice forces tool use."),
    ("thinking-tool-choice-tool", {**B, "max_tokens": 4096, "thinking": THINK,
                                   "tools": [WEATHER], "tool_choice": {"type": "tool",
                                                                       "name": "get_weather"}},
     400, "invalid_request_error", "Thinking may not be enabled when tool_choice forces tool use."),
    ("adaptive-thinking-sonnet-4-5", {**req("hi", "claude-sonnet-4-5"),
                                      "thinking": {"type": "adaptive"}}, 400,
     "invalid_request_error", "adaptive thinking is not supported on claude-sonnet-4-5"),
    # output_config
    ("structured-haiku", {**req("hi", "claude-haiku-4-5-20251001"), "output_config": FMT}, 400,
     "invalid_request_error",
     "output_config.format: structured outputs are not supported for this model"),
    ("structured-type", {**B, "output_config": {"format": {"type": "json_object"}}}, 400,
     "invalid_request_error", "output_config.format.type: Input should be 'json_schema'"),
    ("structured-no-schema", {**B, "output_config": {"format": {"type": "json_schema"}}}, 400,
     "invalid_request_error", "output_config.format.schema: Field required"),
    ("structured-loose-schema", {**B, "output_config": {"format": {
        "type": "json_schema", "schema": LOOSE}}}, 400, "invalid_request_error",
     "output_config.format.schema: For 'object' type, 'additionalProperties' must be explicitly "
     "set to false"),
    ("structured-additional-true", {**B, "output_config": {"format": {
        "type": "json_schema", "schema": {**SCHEMAS[0], "additionalProperties": True}}}}, 400,
     "invalid_request_error",
     "For 'object' type, 'additionalProperties: true' is not supported. Please set "
     "'additionalProperties' to false"),
    ("structured-nested-loose", {**B, "output_config": {"format": {"type": "json_schema",
        "schema": {**SCHEMAS[0], "properties": {"inner": LOOSE}}}}}, 400,
     "invalid_request_error", "output_config.format.schema.properties.inner: For 'object' type"),
    ("structured-minimum", {**B, "output_config": {"format": {"type": "json_schema", "schema": {
        **SCHEMAS[0], "properties": {"age": {"type": "integer", "minimum": 0}}}}}}, 400,
     "invalid_request_error", "JSON schema keyword 'minimum' is not supported"),
    ("structured-min-items", {**B, "output_config": {"format": {"type": "json_schema", "schema": {
        **SCHEMAS[0], "properties": {"xs": {"type": "array", "minItems": 2}}}}}}, 400,
     "invalid_request_error", "'minItems' values other than 0 or 1 are not supported"),
    ("structured-openai-shape", {**B, "output_config": {"format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMAS[0]}}}}, 400,
     "invalid_request_error", "output_config.format.json_schema: Extra inputs"),
    ("output-config-extra", {**B, "output_config": {"verbosity": "low"}}, 400,
     "invalid_request_error", "output_config.verbosity: Extra inputs are not permitted"),
    ("effort-xhigh-opus-4-6", {**req("hi", "claude-opus-4-6"),
                               "output_config": {"effort": "xhigh"}}, 400,
     "invalid_request_error",
     "This model does not support effort level 'xhigh'. Supported levels: high, low, max, "
     "medium."),
    ("effort-sonnet-4-5", {**req("hi", "claude-sonnet-4-5"), "output_config": {"effort": "low"}},
     400, "invalid_request_error", "does not support the effort parameter"),
    ("effort-minimal", {**B, "output_config": {"effort": "minimal"}}, 400,
     "invalid_request_error", "output_config.effort: Input should be"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "etype", "message"),
                         [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])  # fmt: skip
def test_validation_errors(sb: Running, body: Any, status: int, etype: str, message: str) -> None:
    r = msgs(sb, body)
    assert r.status == status, r.body
    err = error_of(r)
    assert err["type"] == etype
    assert message in err["message"], err["message"]


VALID: list[tuple[str, dict[str, Any]]] = [
    ("max-tokens-ceiling", {**B, "max_tokens": 64000}),
    ("max-tokens-ceiling-opus-4-7", {**req("hi", "claude-opus-4-7"), "max_tokens": 128000}),
    ("temperature-only", {**B, "temperature": 0}),
    ("top-p-only", {**B, "top_p": 0.5, "top_k": 40}),
    ("string-system", {**B, "system": "You are terse."}),
    ("empty-system", {**B, "system": ""}),
    ("system-blocks", {**B, "system": [{"type": "text", "text": "a"},
                                       {"type": "text", "text": "b",
                                        "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}),
    ("prefill", M("Give me JSON", "{")),
    ("empty-final-assistant", M("hi", "")),
    ("tool-turns", {**TOOL_TURNS, "tools": [WEATHER]}),
    ("tool-result-then-text", {**M("a", [tool_use()], [tool_result(), T]), "tools": [WEATHER]}),
    ("tool-result-no-content", {**M("a", [tool_use()], [{"type": "tool_result",
                                                        "tool_use_id": "toolu_01abc"}]),
                                "tools": [WEATHER]}),
    ("tool-result-image", {**M("a", [tool_use()], [{**tool_result(), "content": [image()]}]),
                           "tools": [WEATHER]}),
    ("final-assistant-tool-use", {**M("a", [T, tool_use()]), "tools": [WEATHER]}),
    ("redacted-thinking-replay", M("a", [{"type": "redacted_thinking", "data": "EmwKAhgBEgy"}, T],
                                   "b")),
    ("foreign-signature", M("a", [{"type": "thinking", "thinking": "x",
                                   "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl"},
                                  T], "b")),
    ("metadata", {**B, "metadata": {"user_id": "abc"}}),
    ("metadata-null-user", {**B, "metadata": {"user_id": None}}),
    ("service-tier", {**B, "service_tier": "standard_only"}),
    ("stream-false", {**B, "stream": False}),
    ("tool-choice-auto-no-tools", {**B, "tool_choice": {"type": "auto"}}),
    ("tool-strict", {**B, "tools": [{"name": "f", "strict": True, "input_schema": SCHEMAS[1]}]}),
    ("tool-128-name", {**B, "tools": [{**WEATHER, "name": "x" * 128}]}),
    ("thinking-temperature-1", {**B, "max_tokens": 4096, "thinking": THINK, "temperature": 1}),
    ("thinking-top-p-095", {**B, "max_tokens": 4096, "thinking": THINK, "top_p": 0.95}),
    ("thinking-tool-choice-auto", {**B, "max_tokens": 4096, "thinking": THINK,
                                   "tools": [WEATHER], "tool_choice": {"type": "auto"}}),
    ("thinking-disabled", {**B, "thinking": {"type": "disabled"}}),
    ("adaptive-sonnet-4-6", {**B, "thinking": {"type": "adaptive"}}),
    ("effort-opus-4-6-max", {**req("hi", "claude-opus-4-6"), "output_config": {"effort": "max"}}),
    ("effort-opus-4-7-xhigh", {**req("hi", "claude-opus-4-7"),
                               "output_config": {"effort": "xhigh"}}),
    *[(f"structured-{m}", {**req("hi", m), "output_config": FMT})
      for m in MODELS if "haiku" not in m],
    ("image-url", M([{"type": "image", "source": {"type": "url",
                                                  "url": "https://example.com/cat.png"}}, T])),
    ("image-unknown-bytes", M([image("image/jpeg", base64.b64encode(b"fake").decode()), T])),
    ("document-text", M([{"type": "document", "source": {
        "type": "text", "media_type": "text/plain", "data": "hello"}, "title": "t"}, T])),
    ("container-geo", {**B, "container": None, "inference_geo": "us"}),
]  # fmt: skip


@pytest.mark.parametrize("body", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_accepted_requests(sb: Running, body: dict[str, Any]) -> None:
    r = msgs(sb, body)
    assert r.status == 200, r.body


def test_context_window(sb: Running) -> None:
    r = msgs(sb, req("word " * 200_001))
    assert r.status == 400
    assert re.fullmatch(r"prompt is too long: \d+ tokens > 200000 maximum", error_of(r)["message"])


def test_invalid_json_and_headers(sb: Running) -> None:
    r = msgs(sb, None, data=b"{not json")
    assert r.status == 400 and error_of(r)["type"] == "invalid_request_error"
    r = msgs(sb, B, auth=None)
    assert r.status == 401 and error_of(r) == {
        "type": "authentication_error",
        "message": "x-api-key header is required",
    }
    r = msgs(sb, B, auth="sk-ant-wrong")
    assert r.status == 401 and error_of(r)["message"] == "invalid x-api-key"
    bearer = {"Authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}
    assert msgs(sb, B, auth=None, headers=bearer).status == 200
    r = msgs(sb, B, auth=None, headers={**bearer, "Authorization": "Bearer nope"})
    assert r.status == 401 and error_of(r)["type"] == "authentication_error"
    r = msgs(sb, B, version=None)
    assert r.status == 400 and error_of(r) == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }
    r = msgs(sb, B, version="2024-10-22")
    assert r.status == 400 and "anthropic-version" in error_of(r)["message"]
    beta = {"anthropic-beta": "prompt-caching-2024-07-31"}
    assert msgs(sb, B, headers=beta).status == 200


def test_error_headers(sb: Running) -> None:
    r = msgs(sb, without(B, "max_tokens"))
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["anthropic-ratelimit-requests-limit"] == "1000"


def test_any_key_when_unconfigured() -> None:
    async def go() -> tuple[int, int]:
        sandbox = await start()
        try:
            async with aiohttp.ClientSession() as s:
                url = sandbox.anthropic_base_url + "/v1/messages"
                hdrs = {"x-api-key": "whatever", "anthropic-version": "2023-06-01"}
                async with s.post(url, json=B, headers=hdrs) as r1:
                    await r1.read()
                async with s.post(url, json=B, headers={"anthropic-version": "2023-06-01"}) as r2:
                    await r2.read()
                return r1.status, r2.status
        finally:
            await sandbox.close()

    assert asyncio.run(go()) == (200, 401)


def test_unknown_urls(sb: Running) -> None:
    r = raw(sb, "POST", "/v1/messages/count_tokens", B)
    assert r.status == 404 and error_of(r) == {"type": "not_found_error", "message": "Not Found"}
    r = raw(sb, "GET", "/v1/nothing-here")  # the OpenAI catch-all still answers other URLs
    assert r.status == 404 and "error" in r.json() and "type" in r.json()["error"]
    openai_req = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    r = raw(
        sb, "POST", "/v1/chat/completions", openai_req, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert r.status == 200 and r.json()["object"] == "chat.completion"


# ---------------------------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------------------------


def test_directive_429(sb: Running) -> None:
    r = msgs(sb, req("[sandbox:error=429] hi"))
    assert r.status == 429 and r.headers["retry-after"] == "1"
    err = error_of(r)
    assert err["type"] == "rate_limit_error" and "rate limit" in err["message"]
    assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
    r = msgs(sb, req("[sandbox:error=429] [sandbox:retry_after=3] hi"))
    assert r.headers["retry-after"] == "3"


@pytest.mark.parametrize(
    ("kind", "status", "etype"),
    [("400", 400, "invalid_request_error"), ("401", 401, "authentication_error"),
     ("402", 402, "billing_error"), ("403", 403, "permission_error"),
     ("404", 404, "not_found_error"), ("413", 413, "request_too_large"),
     ("500", 500, "api_error"), ("503", 503, "api_error"), ("504", 504, "timeout_error"),
     ("529", 529, "overloaded_error"), ("quota", 400, "invalid_request_error")],
)  # fmt: skip
def test_directive_errors(sb: Running, kind: str, status: int, etype: str) -> None:
    r = msgs(sb, req(f"[sandbox:error={kind}] hi"))
    assert r.status == status
    err = error_of(r)
    assert err["type"] == etype
    if status == 529:
        assert err["message"] == "Overloaded"
    if status == 404:
        assert err["message"] == f"model: {MODEL}"
    if kind == "quota":
        assert "credit balance is too low" in err["message"]


def test_directive_stream_error(sb: Running) -> None:
    r = msgs(sb, {**req("[sandbox:stream_error] go"), "stream": True})
    assert r.status == 200 and r.error is None
    events = r.events()
    assert grammar(events) == ["message_start", "start:text", "ping", "delta:text_delta", "error"]
    assert len([e for e in events if e[0] == "content_block_delta"]) == 2
    assert r.frames()[-1] == (
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        b'"message": "Overloaded"}}'
    )
    ok(sb, req("[sandbox:stream_error] go"))  # no effect on non-streaming requests


def test_directive_cut(sb: Running) -> None:
    r = msgs(sb, {**req("[sandbox:cut=3] cut me"), "stream": True})
    assert r.status == 200 and r.error is not None
    assert [f.split(b"\n")[0] for f in r.frames()] == [
        b"event: message_start", b"event: content_block_start", b"event: ping"]  # fmt: skip
    r = msgs(sb, req("[sandbox:cut=1] cut me"))
    assert r.status == 200 and r.error is not None
    assert int(r.headers["content-length"]) > len(r.body) > 0


def test_directive_hang(sb: Running) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        msgs(sb, req("[sandbox:hang] hi"), timeout=0.4)
    assert time.monotonic() - t0 < 3
    deadline = time.monotonic() + 3
    while sb.hanging and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sb.hanging == 0  # the handler noticed the client went away


def test_directive_latency_and_chunk_delay(sb: Running) -> None:
    t0 = time.monotonic()
    body = ok(sb, req("[sandbox:latency=300] slow"))
    assert time.monotonic() - t0 >= 0.3
    assert body["content"][0]["text"].startswith('You said: "slow".')
    t0 = time.monotonic()
    events = stream(sb, req("[sandbox:chunk_delay=10] drip"))
    assert time.monotonic() - t0 >= 0.01 * (len(events) - 1)


def test_bad_directive(sb: Running) -> None:
    for text in ("[sandbox:bogus] hi", "[sandbox:error=abc] hi"):
        r = msgs(sb, req(text))
        assert r.status == 400
        err = error_of(r)
        assert err["type"] == "invalid_request_error" and "sandbox" in err["message"]


def test_directives_only_in_last_user_turn(sb: Running) -> None:
    body = M("[sandbox:error=500] earlier", "ok", "now")
    assert msgs(sb, body).status == 200


def test_faults_are_anthropic_shaped(sb: Running) -> None:
    fault = {"model": MODEL, "error": 529, "count": 2, "retry_after": 2}
    assert raw(sb, "POST", "/_sandbox/faults", fault, auth=None).status == 200
    assert msgs(sb, req("hi", "claude-opus-4-7")).status == 200  # other model untouched
    for _ in range(2):
        r = msgs(sb, req("hi"))
        assert r.status == 529 and r.headers["retry-after"] == "2"
        assert error_of(r) == {"type": "overloaded_error", "message": "Overloaded"}
    assert msgs(sb, req("hi")).status == 200
    raw(sb, "POST", "/_sandbox/faults", [{"error": 503}, {"error": "quota"}], auth=None)
    r = msgs(sb, without(req("hi"), "max_tokens"))  # faults fire before validation, like outages
    assert r.status == 503 and error_of(r)["type"] == "api_error"
    r = msgs(sb, req("hi"))
    assert r.status == 400 and "credit balance" in error_of(r)["message"]


def test_fault_hang_latency_and_cut(sb: Running) -> None:
    raw(sb, "POST", "/_sandbox/faults", {"hang": True}, auth=None)
    with pytest.raises(TimeoutError):
        msgs(sb, req("hi"), timeout=0.3)
    raw(sb, "POST", "/_sandbox/faults", {"latency_ms": 250}, auth=None)
    t0 = time.monotonic()
    assert msgs(sb, req("hi")).status == 200
    assert time.monotonic() - t0 >= 0.25
    raw(sb, "POST", "/_sandbox/faults", {"cut": 2}, auth=None)
    r = msgs(sb, {**req("hi"), "stream": True})
    assert r.error is not None and len(r.frames()) == 2


def test_request_log(sb: Running) -> None:
    body = req("log me", temperature=0.3)
    msgs(sb, body, headers={"anthropic-beta": "x-1", "X-Trace": "abc"})
    msgs(sb, None, data=b"not json")
    msgs(sb, B, auth=None, headers={"Authorization": f"Bearer {KEY}",
                                    "anthropic-version": "2023-06-01"})  # fmt: skip
    log = raw(sb, "GET", "/_sandbox/requests", auth=None).json()
    assert len(log) == 3
    first = log[0]
    assert first["body"] == body
    assert first["headers"]["x-api-key"] == "***"
    assert first["headers"]["anthropic-version"] == "2023-06-01"
    assert first["headers"]["anthropic-beta"] == "x-1" and first["headers"]["x-trace"] == "abc"
    assert log[1]["body"] == "not json"
    assert log[2]["headers"]["authorization"] == "Bearer ***"
    assert KEY not in json.dumps(log)
