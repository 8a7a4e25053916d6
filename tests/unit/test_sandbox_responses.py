"""The OpenAI Responses sandbox (``POST /v1/responses``): the official SDK where it can speak to
it, raw HTTP for bytes, headers and error envelopes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatgate.sandbox._reply import count_tokens
from chatgate.sandbox._responses_rules import validate
from chatgate.sandbox._rules import ApiError
from chatgate.sandbox.openai_responses import _Ids, make_plan, stream_events
from tests.support import Fetched, ThreadedSandbox, fetch

KEY = "sk-responses-sandbox-test-0123456789abcdef"
RESP_ID = re.compile(r"resp_[0-9a-f]{50}")
CALL_ID = re.compile(r"call_[A-Za-z0-9]{24}")
REQ_ID = re.compile(r"req_[0-9a-f]{32}")
RESPONSE_KEYS = [
    "id", "object", "created_at", "status", "background", "completed_at", "error",
    "frequency_penalty", "incomplete_details", "instructions", "max_output_tokens",
    "max_tool_calls", "model", "output", "parallel_tool_calls", "presence_penalty",
    "previous_response_id", "prompt_cache_key", "prompt_cache_retention", "reasoning",
    "safety_identifier", "service_tier", "store", "temperature", "text", "tool_choice", "tools",
    "top_logprobs", "top_p", "truncation", "usage", "user", "metadata",
]  # fmt: skip
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City and country"},
            "unit": {"type": ["string", "null"], "enum": ["celsius", "fahrenheit", None]},
        },
        "required": ["location", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
STOCK = {
    "type": "function",
    "name": "get_stock_price",
    "parameters": {
        "type": "object",
        "properties": {
            "ticker": {"type": "string", "minLength": 1, "maxLength": 5},
            "days": {"type": "integer", "minimum": 1, "maximum": 30},
        },
        "required": ["ticker"],
    },
}
DELTAS = {
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_summary_text.delta",
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
    raw(sb, "DELETE", "/_sandbox/faults", auth=None)
    raw(sb, "DELETE", "/_sandbox/requests", auth=None)


@pytest.fixture
def client(sb: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=sb.openai_base_url, api_key=KEY, max_retries=0, timeout=10)


class Raw(Fetched):
    def frames(self) -> list[bytes]:
        assert self.body.endswith(b"\n\n") or self.error is not None
        return [f for f in self.body.split(b"\n\n") if f]

    def events(self) -> list[dict[str, Any]]:
        """Event payloads; checks the ``event:``/``data:`` framing of every frame."""
        out = []
        for frame in self.frames():
            lines = frame.split(b"\n")
            assert len(lines) == 2, frame
            assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), frame
            data = json.loads(lines[1][6:])
            assert data["type"] == lines[0][7:].decode()
            out.append(data)
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


def post(sb: Running, body: Any, **kw: Any) -> Raw:
    return raw(sb, "POST", "/v1/responses", body, **kw)


def req(
    prompt: str = "Hello sandbox, tell me a story", model: str = "gpt-5.4", **extra: Any
) -> dict:
    return {"model": model, "input": prompt, **extra}


def ok(sb: Running, body: dict[str, Any]) -> dict[str, Any]:
    r = post(sb, body)
    assert r.status == 200, r.body
    return r.json()  # type: ignore[no-any-return]


def stream(sb: Running, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = post(sb, {**body, "stream": True})
    assert r.status == 200, r.body
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.error is None
    return r.events()


def error_of(r: Raw) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


def kinds(response: dict[str, Any]) -> list[str]:
    return [item["type"] for item in response["output"]]


def message_text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


def grammar(events: list[dict[str, Any]]) -> list[str]:
    """Event types with consecutive identical deltas collapsed."""
    out: list[str] = []
    for ev in events:
        if not (out and out[-1] == ev["type"] and ev["type"] in DELTAS):
            out.append(ev["type"])
    return out


# ---------------------------------------------------------------------------------------------
# plain text
# ---------------------------------------------------------------------------------------------


def test_text_via_sdk(client: openai.OpenAI) -> None:
    r = client.responses.create(model="gpt-5.4", input="Hello there, sandbox!")
    assert r.object == "response" and r.status == "completed"
    assert RESP_ID.fullmatch(r.id)
    assert r.model == "gpt-5.4-2026-03-05"
    assert r.output_text.startswith('You said: "Hello there, sandbox!".')
    assert [o.type for o in r.output] == ["message"]  # effort none: no reasoning item
    assert r.reasoning is not None and r.reasoning.effort == "none"
    assert r.usage is not None
    assert r.usage.output_tokens == count_tokens(r.output_text)
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.output_tokens_details.reasoning_tokens == 0


def test_nonstream_layout_and_headers(sb: Running) -> None:
    r = post(sb, req(instructions="Be brief.", metadata={"k": "v"}, user="u-1"))
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/json")
    assert REQ_ID.fullmatch(r.headers["x-request-id"])
    assert r.body.startswith(b'{\n  "id": "resp_')  # pretty-printed like the real API
    body = r.json()
    keys = [k for k in body if k != "billing"]
    assert keys == RESPONSE_KEYS
    assert body["billing"] == {"payer": "developer"}
    assert (body["object"], body["status"], body["error"]) == ("response", "completed", None)
    assert body["incomplete_details"] is None and body["previous_response_id"] is None
    assert body["instructions"] == "Be brief." and body["metadata"] == {"k": "v"}
    assert body["user"] == "u-1" and body["service_tier"] == "default"
    assert body["completed_at"] >= body["created_at"]
    assert body["text"] == {"format": {"type": "text"}, "verbosity": "medium"}
    assert (body["tool_choice"], body["tools"], body["truncation"]) == ("auto", [], "disabled")
    assert (body["temperature"], body["top_p"], body["store"]) == (1.0, 1.0, True)
    (msg,) = body["output"]
    assert re.fullmatch(r"msg_[0-9a-f]{50}", msg["id"])
    assert msg["id"][4:22] == body["id"][5:23]  # items share the response id's prefix
    assert list(msg) == ["id", "type", "status", "content", "role"]
    assert (msg["status"], msg["role"]) == ("completed", "assistant")
    assert msg["content"][0] == {
        "type": "output_text",
        "annotations": [],
        "logprobs": [],
        "text": msg["content"][0]["text"],
    }
    usage = body["usage"]
    assert list(usage) == [
        "input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details",
        "total_tokens",
    ]  # fmt: skip
    assert usage["input_tokens_details"] == {"cached_tokens": 0}


def test_same_request_same_answer(sb: Running) -> None:
    a, b = ok(sb, req("determinism please")), ok(sb, req("determinism please"))
    assert message_text(a) == message_text(b) and a["id"] != b["id"]
    assert message_text(ok(sb, req("something else"))) != message_text(a)


@pytest.mark.parametrize(
    ("model", "shown"),
    [
        ("gpt-5.1", "gpt-5.1-2025-11-13"),
        ("gpt-5.2", "gpt-5.2-2025-12-11"),
        ("gpt-5.3", "gpt-5.3-2026-02-05"),
        ("gpt-5.3-codex", "gpt-5.3-codex-2026-02-05"),
        ("gpt-5.4", "gpt-5.4-2026-03-05"),
        ("gpt-4o-mini", "gpt-4o-mini"),
    ],
)
def test_response_model_names(sb: Running, model: str, shown: str) -> None:
    assert ok(sb, req(model=model))["model"] == shown


def test_input_items_and_instructions(sb: Running) -> None:
    items = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "input_text", "text": "Answer in English."}]},
        {"role": "user", "content": "First question"},
        {
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "First answer", "annotations": []},
                {"type": "refusal", "refusal": "no"},
            ],
        },
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Look at"},
                {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
                {"type": "input_image", "file_id": "file-abc"},
                {"type": "input_file", "file_id": "file-def"},
                {"type": "input_text", "text": "these"},
            ],
        },
    ]
    body = ok(sb, {"model": "gpt-5.4", "input": items, "instructions": "Be kind."})
    text = message_text(body)
    assert text.startswith('You said: "Look at these". I can see 2 images in your message.')
    plain = ok(sb, req("Look at these"))
    assert body["usage"]["input_tokens"] > plain["usage"]["input_tokens"] + 800


# ---------------------------------------------------------------------------------------------
# reasoning
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "effort", "shown", "tokens"),
    [
        ("gpt-5.4", None, "none", 0),
        ("gpt-5.3-codex", None, "medium", 64),
        ("gpt-5.1", "low", "low", 16),
        ("gpt-5.2", "xhigh", "xhigh", 384),
        ("gpt-5.4", "high", "high", 192),
        ("gpt-4o", None, None, 0),
    ],
)
def test_reasoning_items(
    sb: Running, model: str, effort: str | None, shown: str | None, tokens: int
) -> None:
    extra = {"reasoning": {"effort": effort}} if effort else {}
    body = ok(sb, req(model=model, **extra))
    assert body["reasoning"] == {"effort": shown, "summary": None}
    assert body["usage"]["output_tokens_details"]["reasoning_tokens"] == tokens
    if tokens:
        assert kinds(body) == ["reasoning", "message"]
        rs = body["output"][0]
        assert list(rs) == ["id", "type", "summary"] and rs["summary"] == []
        assert re.fullmatch(r"rs_[0-9a-f]{50}", rs["id"])
        text_tokens = count_tokens(message_text(body))
        assert body["usage"]["output_tokens"] == tokens + text_tokens
    else:
        assert kinds(body) == ["message"]


@pytest.mark.parametrize(("summary", "echo"), [("auto", "detailed"), ("concise", "concise")])
def test_reasoning_summary(sb: Running, summary: str, echo: str) -> None:
    body = ok(
        sb,
        req(
            "Why is the sky blue?",
            "gpt-5.3-codex",
            reasoning={"summary": summary},
            include=["reasoning.encrypted_content"],
        ),
    )
    assert body["reasoning"] == {"effort": "medium", "summary": echo}
    rs = body["output"][0]
    assert list(rs) == ["id", "type", "encrypted_content", "summary"]
    assert rs["encrypted_content"].startswith("gAAAAAB")
    (part,) = rs["summary"]
    assert part["type"] == "summary_text"
    assert part["text"].startswith("**") and "Why is the sky blue?" in part["text"]


# ---------------------------------------------------------------------------------------------
# function calling
# ---------------------------------------------------------------------------------------------


def test_function_call_when_mentioned(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="gpt-5.4",
        input="Use get_weather for Paris please",
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert r.status == "completed"
    (call,) = r.output
    assert call.type == "function_call"
    assert call.name == "get_weather" and call.status == "completed"
    assert CALL_ID.fullmatch(call.call_id)
    assert re.fullmatch(r"fc_[0-9a-f]{50}", call.id or "")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    assert r.tools[0].type == "function" and r.tools[0].strict is True


def test_function_call_item_layout(sb: Running) -> None:
    body = ok(sb, req("call get_stock_price for ACME", tools=[STOCK], tool_choice="required"))
    (call,) = body["output"]
    assert list(call) == ["id", "type", "status", "arguments", "call_id", "name"]
    args = json.loads(call["arguments"])
    jsonschema.validate(args, STOCK["parameters"])
    tool = body["tools"][0]
    assert list(tool) == ["type", "description", "name", "parameters", "strict"]
    assert tool["strict"] is False  # unset and not strict-compatible: echoed false
    weather = ok(sb, req("get_weather in Rome", tools=[{**WEATHER, "strict": None}]))["tools"]
    assert weather[0]["strict"] is True  # unset but strict-compatible: echoed true
    overhead = 3 + count_tokens("get_stock_price")
    assert body["usage"]["output_tokens"] == overhead + count_tokens(call["arguments"])


def test_tool_choice_variants(sb: Running) -> None:
    both = [WEATHER, STOCK]
    forced = ok(sb, req("hello there", tools=both, tool_choice="required"))
    assert [c["name"] for c in forced["output"]] == ["get_weather"]
    named = {"type": "function", "name": "get_stock_price"}
    body = ok(sb, req("hello there", tools=both, tool_choice=named))
    assert [c["name"] for c in body["output"]] == ["get_stock_price"]
    assert body["tool_choice"] == named
    assert kinds(ok(sb, req("get_weather please", tools=both, tool_choice="none"))) == ["message"]
    assert kinds(ok(sb, req("just chatting", tools=both))) == ["message"]
    text = "get_weather in Oslo and get stock price of ACME"
    parallel = ok(sb, req(text, tools=both))
    assert [c["name"] for c in parallel["output"]] == ["get_weather", "get_stock_price"]
    single = ok(sb, req(text, tools=both, parallel_tool_calls=False))
    assert [c["name"] for c in single["output"]] == ["get_weather"]
    assert single["parallel_tool_calls"] is False
    allowed = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "function", "name": "get_stock_price"}],
    }
    body = ok(sb, req("anything", tools=both, tool_choice=allowed))
    assert [c["name"] for c in body["output"]] == ["get_stock_price"]


def test_function_call_output_followup(sb: Running, client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="gpt-5.4",
        input=[{"role": "user", "content": "What's the get_weather in Paris?"}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    call = first.output[0]
    assert call.type == "function_call"
    follow = [
        {"role": "user", "content": "What's the get_weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "22C and sunny"},
    ]  # fmt: skip
    second = client.responses.create(
        model="gpt-5.4",
        input=follow,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert [o.type for o in second.output] == ["message"]
    assert second.output_text.startswith('The get_weather tool returned "22C and sunny".')
    # the reasoning and function_call items of a previous turn may be replayed as input
    replay = [
        follow[0],
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "x"}]},
        follow[1],
        {**follow[2], "output": [{"type": "input_text", "text": "windy"}]},
    ]
    body = ok(sb, req(model="gpt-5.4", input=replay, tools=[WEATHER]))
    assert message_text(body).startswith('The get_weather tool returned "windy".')


# ---------------------------------------------------------------------------------------------
# web search, structured output
# ---------------------------------------------------------------------------------------------


def test_web_search(sb: Running) -> None:
    body = ok(sb, req("latest news about the Mars rover", tools=[{"type": "web_search"}]))
    assert kinds(body) == ["web_search_call", "message"]
    ws = body["output"][0]
    assert re.fullmatch(r"ws_[0-9a-f]{50}", ws["id"])
    assert ws["status"] == "completed"
    assert ws["action"] == {"type": "search", "query": "latest news about the Mars rover"}
    part = body["output"][1]["content"][0]
    (ann,) = part["annotations"]
    assert list(ann) == ["type", "end_index", "start_index", "title", "url"]
    assert ann["type"] == "url_citation" and ann["url"].startswith("https://")
    assert part["text"][ann["start_index"] : ann["end_index"]] == f"[example.com]({ann['url']})"
    assert body["tools"][0]["type"] == "web_search"
    preview = ok(sb, req("hello", tools=[{"type": "web_search_preview"}]))
    assert kinds(preview) == ["web_search_call", "message"]
    assert kinds(ok(sb, req("hi", tools=[{"type": "web_search"}], tool_choice="none"))) == [
        "message"
    ]


@pytest.mark.parametrize("text", ["Extract: Ada Lovelace, 36, London", "nothing useful"])
def test_json_schema_output_is_valid(client: openai.OpenAI, text: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"type": "string"}},
            "city": {"type": ["string", "null"]},
        },
        "required": ["name", "age", "tags", "city"],
        "additionalProperties": False,
    }
    r = client.responses.create(
        model="gpt-5.4",
        input=text,
        text={"format": {"type": "json_schema", "name": "person", "schema": schema,
                         "strict": True}},
    )  # fmt: skip
    jsonschema.validate(json.loads(r.output_text), schema)
    assert r.text is not None and r.text.format is not None
    assert r.text.format.type == "json_schema"


def test_json_object_output(sb: Running) -> None:
    body = ok(sb, req("Reply in json please", text={"format": {"type": "json_object"}}))
    assert isinstance(json.loads(message_text(body)), dict)
    assert body["text"]["format"] == {"type": "json_object"}


# ---------------------------------------------------------------------------------------------
# max_output_tokens
# ---------------------------------------------------------------------------------------------


def test_max_output_tokens_truncates_text(sb: Running) -> None:
    body = ok(sb, req("a long story please", "gpt-4o", max_output_tokens=16))
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["completed_at"] is None and body["max_output_tokens"] == 16
    (msg,) = body["output"]
    assert msg["status"] == "incomplete"
    assert count_tokens(message_text(body)) == 16 == body["usage"]["output_tokens"]


def test_reasoning_consumes_the_budget(sb: Running) -> None:
    body = ok(sb, req("hi", "gpt-5.3-codex", max_output_tokens=16))  # medium: 64 reasoning
    assert body["status"] == "incomplete"
    assert kinds(body) == ["reasoning"]
    usage = body["usage"]
    assert usage["output_tokens"] == usage["output_tokens_details"]["reasoning_tokens"] == 16
    body = ok(sb, req("hi", "gpt-5.3-codex", max_output_tokens=70))
    assert body["status"] == "incomplete" and kinds(body) == ["reasoning", "message"]
    assert count_tokens(message_text(body)) == 6
    assert body["output"][1]["status"] == "incomplete"


def test_max_output_tokens_inside_function_arguments(sb: Running) -> None:
    big = {
        "type": "function",
        "name": "make_file",
        "parameters": {
            "type": "object",
            "properties": {"lines": {"type": "array", "items": {"type": "string"},
                                     "minItems": 8}},
            "required": ["lines"],
        },
    }  # fmt: skip
    body = ok(sb, req("hi", tools=[big], tool_choice="required", max_output_tokens=16))
    (call,) = body["output"]
    assert body["status"] == "incomplete" and call["status"] == "incomplete"
    assert body["usage"]["output_tokens"] == 16
    with pytest.raises(json.JSONDecodeError):
        json.loads(call["arguments"])


# ---------------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------------


def _check_sequence(events: list[dict[str, Any]]) -> None:
    assert [ev["sequence_number"] for ev in events] == list(range(len(events)))
    assert all(list(ev)[:2] == ["type", "sequence_number"] for ev in events)


def test_text_stream_framing_and_grammar(sb: Running) -> None:
    r = post(sb, {**req("Stream me a story"), "stream": True})
    assert r.status == 200 and r.error is None
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert b"[DONE]" not in r.body
    events = r.events()
    _check_sequence(events)
    assert grammar(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["usage"] is None and created["completed_at"] is None
    assert created["service_tier"] == "auto"
    added = events[2]
    assert added["item"] == {
        "id": added["item"]["id"], "type": "message", "status": "in_progress", "content": [],
        "role": "assistant",
    }  # fmt: skip
    deltas = [ev for ev in events if ev["type"] == "response.output_text.delta"]
    for ev in deltas:
        assert list(ev) == [
            "type", "sequence_number", "item_id", "output_index", "content_index", "delta",
            "logprobs", "obfuscation",
        ]  # fmt: skip
        assert (ev["item_id"], ev["output_index"], ev["content_index"]) == (
            added["item"]["id"], 0, 0,
        )  # fmt: skip
    text = "".join(ev["delta"] for ev in deltas)
    done = next(ev for ev in events if ev["type"] == "response.output_text.done")
    assert done["text"] == text
    final = events[-1]["response"]
    assert final["status"] == "completed" and message_text(final) == text
    assert list(final) == RESPONSE_KEYS  # no billing in streams (recorded)
    assert final["id"] == created["id"] and final["service_tier"] == "default"
    assert final["usage"]["output_tokens"] == count_tokens(text)
    nonstream = ok(sb, req("Stream me a story"))
    assert message_text(nonstream) == text


def test_reasoning_summary_stream(sb: Running) -> None:
    events = stream(sb, req("Think first", "gpt-5.4", reasoning={"effort": "low",
                                                                  "summary": "auto"}))  # fmt: skip
    _check_sequence(events)
    assert grammar(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    summary = "".join(
        ev["delta"] for ev in events if ev["type"] == "response.reasoning_summary_text.delta"
    )
    part_done = next(ev for ev in events if ev["type"] == "response.reasoning_summary_part.done")
    assert part_done["part"] == {"type": "summary_text", "text": summary}
    assert part_done["summary_index"] == 0 and part_done["output_index"] == 0
    assert events[2]["item"]["summary"] == []
    final = events[-1]["response"]
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": summary}]
    assert final["output"][1]["id"] == events[-3]["item_id"]


def test_reasoning_without_summary_stream(sb: Running) -> None:
    events = stream(sb, req("hi", "gpt-5.3-codex"))
    assert grammar(events)[2:4] == ["response.output_item.added", "response.output_item.done"]
    assert events[2]["item"]["type"] == "reasoning"


def test_function_call_stream(sb: Running) -> None:
    events = stream(sb, req("get_weather in Lima and get_stock_price for ACME",
                            tools=[WEATHER, STOCK]))  # fmt: skip
    _check_sequence(events)
    per_item = [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert grammar(events) == [
        "response.created", "response.in_progress", *per_item, *per_item, "response.completed",
    ]  # fmt: skip
    final = events[-1]["response"]
    for index, item in enumerate(final["output"]):
        added = next(
            ev for ev in events
            if ev["type"] == "response.output_item.added" and ev["output_index"] == index
        )  # fmt: skip
        assert added["item"] == {**item, "status": "in_progress", "arguments": ""}
        args = "".join(
            ev["delta"]
            for ev in events
            if ev["type"] == "response.function_call_arguments.delta"
            and ev["output_index"] == index
        )
        assert args == item["arguments"]
        done = next(
            ev for ev in events
            if ev["type"] == "response.function_call_arguments.done"
            and ev["output_index"] == index
        )  # fmt: skip
        assert list(done) == ["type", "sequence_number", "item_id", "output_index", "arguments"]
        assert done["arguments"] == args and done["item_id"] == item["id"]


def test_web_search_stream(sb: Running) -> None:
    events = stream(sb, req("search the news", tools=[{"type": "web_search"}]))
    assert grammar(events)[2:8] == [
        "response.output_item.added",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.output_item.done",
        "response.output_item.added",
    ]
    assert "response.output_text.annotation.added" in grammar(events)
    ann = next(ev for ev in events if ev["type"] == "response.output_text.annotation.added")
    assert ann["annotation_index"] == 0 and ann["annotation"]["type"] == "url_citation"


def test_incomplete_stream(sb: Running) -> None:
    events = stream(sb, req("long please", "gpt-4o", max_output_tokens=16))
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    done = next(ev for ev in events if ev["type"] == "response.output_item.done")
    assert done["item"]["status"] == "incomplete"


def test_stream_without_obfuscation(sb: Running) -> None:
    events = stream(sb, req("plain", stream_options={"include_obfuscation": False}))
    assert not any("obfuscation" in ev for ev in events)


def test_stream_via_sdk(client: openai.OpenAI) -> None:
    got = list(client.responses.create(model="gpt-5.4", input="SDK stream", stream=True))
    assert got[0].type == "response.created" and got[-1].type == "response.completed"
    text = "".join(ev.delta for ev in got if ev.type == "response.output_text.delta")
    assert text.startswith('You said: "SDK stream".')
    with client.responses.stream(
        model="gpt-5.4",
        input="get_weather for Kyiv",
        tools=[WEATHER],  # type: ignore[list-item]
    ) as s:
        for _ in s:
            pass
        final = s.get_final_response()
    (call,) = final.output
    assert call.type == "function_call" and json.loads(call.arguments)["location"]


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------

IMG = {"type": "input_image", "image_url": {"url": "https://example.com/a.png"}}
FC_ITEM = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
FC_OUT = {"type": "function_call_output", "call_id": "call_1", "output": "ok"}
NESTED = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
LAX = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


def m(model: str = "gpt-5.4", **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": "hi", **extra}


def at(*items: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-5.4", "input": list(items), **extra}


U = {"role": "user", "content": "hi"}
ITEM_TYPES = (
    "'code_interpreter_call', 'computer_call', 'computer_call_output', 'custom_tool_call', "
    "'custom_tool_call_output', 'file_search_call', 'function_call', 'function_call_output', "
    "'image_generation_call', 'item_reference', 'local_shell_call', 'local_shell_call_output', "
    "'mcp_approval_request', 'mcp_approval_response', 'mcp_call', 'mcp_list_tools', 'message', "
    "'reasoning', and 'web_search_call'"
)
PARTS = (
    "'input_text', 'input_image', 'output_text', 'refusal', 'input_file', "
    "'computer_screenshot', and 'summary_text'"
)
EFFORTS = "'none', 'minimal', 'low', 'medium', 'high', 'xhigh', and 'max'"

# (body, status, param, code, message) -- type is invalid_request_error throughout
CASES: list[tuple[str, Any, int, str | None, str | None, str]] = [
    ("no model", {"input": "hi"}, 400, "model", "missing_required_parameter",
     "Missing required parameter: 'model'."),
    ("no input", {"model": "gpt-5.4"}, 400, "input", "missing_required_parameter",
     "Missing required parameter: 'input'."),
    ("unknown key", m(zzz=1), 400, "zzz", "unknown_parameter", "Unknown parameter: 'zzz'."),
    ("chat messages", {**m(), "messages": [U]}, 400, "messages", "unknown_parameter",
     "Unknown parameter: 'messages'."),
    ("model type", m(model=7), 400, "model", "invalid_type",
     "Invalid type for 'model': expected a string, but got an integer instead."),
    ("input type", m(input={"a": 1}), 400, "input", "invalid_type",
     "Invalid type for 'input': expected one of a string or array of input items, but got an "
     "object instead."),
    ("temperature type", m(temperature="hot"), 400, "temperature", "invalid_type",
     "Invalid type for 'temperature': expected a decimal, but got a string instead."),
    ("stream type", m(stream="yes"), 400, "stream", "invalid_type",
     "Invalid type for 'stream': expected a boolean, but got a string instead."),
    ("empty input", m(input=[]), 400, None, "missing_required_parameter",
     "One of \"input\" or \"previous_response_id\" or 'prompt' or 'conversation' must be "
     "provided."),
    ("item primitive", at(7), 400, "input[0]", "invalid_type",
     "Invalid type for 'input[0]': expected an input item, but got an integer instead."),
    ("item empty", at({}), 400, "input[0]", "invalid_value",
     "Invalid value: ''. Supported values are: 'assistant', 'system', 'developer', and 'user'."),
    ("role unknown", at({"role": "tool", "content": "x"}), 400, "input[0]", "invalid_value",
     "Invalid value: 'tool'. Supported values are: 'assistant', 'system', 'developer', and "
     "'user'."),
    ("item type unknown", at({"type": "bogus"}), 400, "input[0]", "invalid_value",
     f"Invalid value: 'bogus'. Supported values are: {ITEM_TYPES}."),
    ("no content", at({"role": "user"}), 400, "input[0].content", "missing_required_parameter",
     "Missing required parameter: 'input[0].content'."),
    ("item unknown member", at({**U, "bogus": 1}), 400, "input[0].bogus", "unknown_parameter",
     "Unknown parameter: 'input[0].bogus'."),
    ("chat text part", at({"role": "user", "content": [{"type": "text", "text": "x"}]}), 400,
     "input[0].content[0].type", "invalid_value",
     f"Invalid value: 'text'. Supported values are: {PARTS}."),
    ("chat image part", at({"role": "user", "content": [{"type": "image_url"}]}), 400,
     "input[0].content[0].type", "invalid_value",
     f"Invalid value: 'image_url'. Supported values are: {PARTS}."),
    ("assistant input_text",
     at({"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}, U), 400,
     "input[0].content[0]", "invalid_value",
     "Invalid value: 'input_text'. Supported values are: 'output_text' and 'refusal'."),
    ("user output_text", at({"role": "user", "content": [{"type": "output_text", "text": "x"}]}),
     400, "input[0].content[0]", "invalid_value",
     "Invalid value: 'output_text'. Supported values are: 'input_text', 'input_image', and "
     "'input_file'."),
    ("input_text without text", at({"role": "user", "content": [{"type": "input_text"}]}), 400,
     "input[0].content[0].text", "missing_required_parameter",
     "Missing required parameter: 'input[0].content[0].text'."),
    ("image_url object", at({"role": "user", "content": [IMG]}), 400,
     "input[0].content[0].image_url", "invalid_type",
     "Invalid type for 'input[0].content[0].image_url': expected a string, but got an object "
     "instead."),
    ("parsed_arguments", at(U, {**FC_ITEM, "parsed_arguments": {}}, FC_OUT), 400,
     "input[1].parsed_arguments", "unknown_parameter",
     "Unknown parameter: 'input[1].parsed_arguments'."),
    ("function_call without name", at(U, {k: v for k, v in FC_ITEM.items() if k != "name"}),
     400, "input[1].name", "missing_required_parameter",
     "Missing required parameter: 'input[1].name'."),
    ("orphan output", at(U, FC_OUT), 400, "input", None,
     "No tool call found for function call output with call_id call_1."),
    ("unanswered call", at(U, FC_ITEM), 400, "input", None,
     "No tool output found for function call call_1."),
    ("nested chat tool", m(tools=[NESTED]), 400, "tools[0].name", "missing_required_parameter",
     "Missing required parameter: 'tools[0].name'."),
    ("tool without type", m(tools=[{"name": "f"}]), 400, "tools[0].type",
     "missing_required_parameter", "Missing required parameter: 'tools[0].type'."),
    ("tool unknown member", m(tools=[{**STOCK, "bogus": 1}]), 400, "tools[0].bogus",
     "unknown_parameter", "Unknown parameter: 'tools[0].bogus'."),
    ("tool name pattern", m(tools=[{**STOCK, "name": "get stock"}]), 400, "tools[0].name",
     "invalid_value",
     "Invalid 'tools[0].name': string does not match pattern. Expected a string that matches "
     "the pattern '^[a-zA-Z0-9_-]+$'."),
    ("tool parameters not object", m(tools=[{**STOCK, "parameters": {"type": "array"}}]), 400,
     "tools[0].parameters", "invalid_function_parameters",
     "Invalid schema for function 'get_stock_price': schema must be a JSON Schema of 'type: "
     "\"object\"', got 'type: \"array\"'."),
    ("strict additionalProperties", m(tools=[{**STOCK, "strict": True}]), 400,
     "tools[0].parameters", "invalid_function_parameters",
     "Invalid schema for function 'get_stock_price': In context=(), 'additionalProperties' is "
     "required to be supplied and to be false."),
    ("strict required",
     m(tools=[{**STOCK, "strict": True,
               "parameters": {**STOCK["parameters"], "additionalProperties": False}}]),
     400, "tools[0].parameters", "invalid_function_parameters",
     "Invalid schema for function 'get_stock_price': In context=(), 'required' is required to "
     "be supplied and to be an array including every key in properties. Missing 'days'."),
    ("tool_choice unknown function",
     m(tools=[STOCK], tool_choice={"type": "function", "name": "nope"}), 400, "tool_choice",
     None, "Tool choice 'nope' not found in 'tools' parameter."),
    ("tool_choice chat style",
     m(tools=[STOCK], tool_choice={"type": "function", "function": {"name": "get_stock_price"}}),
     400, "tool_choice.name", "missing_required_parameter",
     "Missing required parameter: 'tool_choice.name'."),
    ("tool_choice bad string", m(tools=[STOCK], tool_choice="any"), 400, "tool_choice",
     "invalid_value",
     "Invalid value: 'any'. Supported values are: 'none', 'auto', and 'required'."),
    ("web_search choice without tool", m(tools=[STOCK], tool_choice={"type": "web_search"}),
     400, "tool_choice", None, "Tool choice 'web_search' not found in 'tools' parameter."),
    ("text unknown member", m(text={"zzz": 1}), 400, "text.zzz", "unknown_parameter",
     "Unknown parameter: 'text.zzz'."),
    ("text format type", m(text={"format": {"type": "bogus"}}), 400, "text.format.type",
     "invalid_value",
     "Invalid value: 'bogus'. Supported values are: 'json_object', 'text', and 'json_schema'."),
    ("json_schema chat style",
     m(text={"format": {"type": "json_schema", "json_schema": {"name": "x", "schema": LAX}}}),
     400, "text.format.name", "missing_required_parameter",
     "Missing required parameter: 'text.format.name'."),
    ("json_schema without schema", m(text={"format": {"type": "json_schema", "name": "x"}}), 400,
     "text.format.schema", "missing_required_parameter",
     "Missing required parameter: 'text.format.schema'."),
    ("json_schema strict",
     m(text={"format": {"type": "json_schema", "name": "x", "schema": LAX, "strict": True}}),
     400, "text.format.schema", "invalid_json_schema",
     "Invalid schema for response_format 'x': In context=(), 'additionalProperties' is "
     "required to be supplied and to be false."),
    ("verbosity", m(text={"verbosity": "bogus"}), 400, "text.verbosity", "invalid_value",
     "Invalid value: 'bogus'. Supported values are: 'low', 'medium', and 'high'."),
    ("json_object without json", m(text={"format": {"type": "json_object"}}), 400, "input",
     None,
     "Response input messages must contain the word 'json' in some form to use 'text.format' "
     "of type 'json_object'."),
    ("json word only in instructions",
     m(instructions="Answer in JSON", text={"format": {"type": "json_object"}}), 400, "input",
     None,
     "Response input messages must contain the word 'json' in some form to use 'text.format' "
     "of type 'json_object'."),
    ("reasoning effort unknown", m(reasoning={"effort": "bogus"}), 400, "reasoning.effort",
     "invalid_value", f"Invalid value: 'bogus'. Supported values are: {EFFORTS}."),
    ("reasoning unknown member", m(reasoning={"generate_summary": "auto"}), 400,
     "reasoning.generate_summary", "unknown_parameter",
     "Unknown parameter: 'reasoning.generate_summary'."),
    ("reasoning summary", m(reasoning={"summary": "bogus"}), 400, "reasoning.summary",
     "invalid_value",
     "Invalid value: 'bogus'. Supported values are: 'concise', 'detailed', and 'auto'."),
    ("minimal on gpt-5.1", m("gpt-5.1", reasoning={"effort": "minimal"}), 400,
     "reasoning.effort", "unsupported_value",
     "Unsupported value: 'reasoning.effort' does not support 'minimal' with this model. "
     "Supported values are: 'none', 'low', 'medium', and 'high'."),
    ("none on codex", m("gpt-5.3-codex", reasoning={"effort": "none"}), 400, "reasoning.effort",
     "unsupported_value",
     "Unsupported value: 'reasoning.effort' does not support 'none' with this model. "
     "Supported values are: 'low', 'medium', 'high', and 'xhigh'."),
    ("effort on gpt-4o", m("gpt-4o", reasoning={"effort": "low"}), 400, "reasoning.effort",
     "unsupported_parameter",
     "Unsupported parameter: 'reasoning.effort' is not supported with this model."),
    ("temperature on codex", m("gpt-5.3-codex", temperature=0.5), 400, "temperature", None,
     "Unsupported parameter: 'temperature' is not supported with this model."),
    ("top_p while reasoning", m(top_p=0.5, reasoning={"effort": "high"}), 400, "top_p", None,
     "Unsupported parameter: 'top_p' is not supported with this model."),
    ("temperature range", m("gpt-4o", temperature=2.5), 400, "temperature",
     "decimal_above_max_value",
     "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 2.5 "
     "instead."),
    ("max_output_tokens minimum", m(max_output_tokens=15), 400, "max_output_tokens",
     "integer_below_min_value",
     "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got "
     "15 instead."),
    ("max_output_tokens ceiling", m("gpt-4o", max_output_tokens=20000), 400,
     "max_output_tokens", "integer_above_max_value",
     "Invalid 'max_output_tokens': integer above maximum value. Expected a value <= 16384, but "
     "got 20000 instead."),
    ("previous_response_id", m(previous_response_id="resp_abc"), 400, "previous_response_id",
     "previous_response_not_found", "Previous response with id 'resp_abc' not found."),
    ("unknown model", m("gpt-9"), 400, "model", "model_not_found",
     "The requested model 'gpt-9' does not exist."),
    ("not an OpenAI model", m("claude-sonnet-4-6"), 400, "model", "model_not_found",
     "The requested model 'claude-sonnet-4-6' does not exist."),
    ("truncation", m(truncation="bogus"), 400, "truncation", "invalid_value",
     "Invalid value: 'bogus'. Supported values are: 'auto' and 'disabled'."),
    ("service_tier", m(service_tier="scale"), 400, "service_tier", "invalid_value",
     "Invalid value: 'scale'. Supported values are: 'auto', 'default', 'flex', and 'priority'."),
    ("include", m(include=["bogus"]), 400, "include[0]", "invalid_value",
     "Invalid value: 'bogus'. Supported values are: 'file_search_call.results', "
     "'web_search_call.results', 'web_search_call.action.sources', "
     "'message.input_image.image_url', 'computer_call_output.output.image_url', "
     "'code_interpreter_call.outputs', 'reasoning.encrypted_content', and "
     "'message.output_text.logprobs'."),
    ("metadata size", m(metadata={f"k{i}": "v" for i in range(17)}), 400, "metadata",
     "object_above_max_properties",
     "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, "
     "but got an object with 17 properties instead."),
    ("metadata value", m(metadata={"k": 1}), 400, "metadata.k", "invalid_type",
     "Invalid type for 'metadata.k': expected a string, but got an integer instead."),
    ("stream_options without stream", m(stream_options={"include_obfuscation": False}), 400,
     "stream_options", None,
     "The 'stream_options' parameter is only allowed when 'stream' is enabled."),
    ("chat stream_options", m(stream=True, stream_options={"include_usage": True}), 400,
     "stream_options.include_usage", "unknown_parameter",
     "Unknown parameter: 'stream_options.include_usage'."),
    ("conversation", m(conversation="conv_1"), 404, None, None,
     "Conversation with id 'conv_1' not found."),
]  # fmt: skip
CHAT_ONLY = ("max_tokens", "max_completion_tokens", "stop", "n", "response_format", "seed",
             "presence_penalty", "frequency_penalty", "logit_bias", "stream_options_x",
             "reasoning_effort", "functions", "logprobs")  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "param", "code", "message"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_validation_errors(
    sb: Running, body: Any, status: int, param: str | None, code: str | None, message: str
) -> None:
    r = post(sb, body)
    assert r.status == status, r.body
    err = error_of(r)
    assert err == {
        "message": message, "type": "invalid_request_error", "param": param, "code": code,
    }  # fmt: skip


@pytest.mark.parametrize("param", CHAT_ONLY)
def test_chat_only_parameters_are_unknown(sb: Running, param: str) -> None:
    r = post(sb, m(**{param: 1}))
    assert r.status == 400
    assert error_of(r) == {
        "message": f"Unknown parameter: '{param}'.", "type": "invalid_request_error",
        "param": param, "code": "unknown_parameter",
    }  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        m(temperature=0.5, top_p=0.9),  # effort none: sampling allowed
        m("gpt-5.3-codex", temperature=1, top_p=1),
        m("gpt-4o", temperature=0.2, top_p=0.5, top_logprobs=3),
        m(truncation="auto", service_tier="flex", store=False, safety_identifier="s",
          prompt_cache_key="k", prompt_cache_retention="24h", max_tool_calls=2),
        m(include=["reasoning.encrypted_content"], parallel_tool_calls=False),
        m(tools=[STOCK], tool_choice="auto"),
        m(tools=[{"type": "function", "name": "f"}]),  # no parameters: accepted
        m(input=[{"type": "message", "role": "user", "content": "hi", "id": "msg_1",
                  "status": "completed"}]),
        m(stream=True, stream_options={"include_obfuscation": True}),
    ],
)  # fmt: skip
def test_allowed_parameter_combinations(sb: Running, body: dict[str, Any]) -> None:
    r = post(sb, body)
    assert r.status == 200, r.body


def test_echoed_request_fields(sb: Running) -> None:
    body = ok(sb, m(temperature=0.5, service_tier="flex", store=False, truncation="auto",
                    prompt_cache_key="k", safety_identifier="s", max_tool_calls=2))  # fmt: skip
    assert (body["temperature"], body["service_tier"], body["store"]) == (0.5, "flex", False)
    assert (body["truncation"], body["prompt_cache_key"]) == ("auto", "k")
    assert (body["safety_identifier"], body["max_tool_calls"]) == ("s", 2)


def test_context_window(sb: Running) -> None:
    r = post(sb, m("gpt-4o", input="word " * 130000))
    assert r.status == 400
    assert error_of(r) == {
        "message": "Your input exceeds the context window of this model. Please adjust your "
        "input and try again.",
        "type": "invalid_request_error",
        "param": "input",
        "code": "context_length_exceeded",
    }


def test_invalid_json(sb: Running) -> None:
    r = post(sb, None, data=b'{"model": "gpt-5.4",')
    assert r.status == 400
    err = error_of(r)
    assert err["message"].startswith("We could not parse the JSON body of your request.")


def test_auth(sb: Running, client: openai.OpenAI) -> None:
    missing = post(sb, m(), auth=None)
    assert missing.status == 401
    assert error_of(missing)["message"].startswith("You didn't provide an API key.")
    wrong_key = "sk-proj-THISISTHEWRONGKEY0123456789wxyz"
    err = error_of(post(sb, m(), auth=wrong_key))
    assert err["code"] == "invalid_api_key" and wrong_key not in err["message"]
    assert err["message"].startswith("Incorrect API key provided: sk-proj-****")
    with pytest.raises(openai.AuthenticationError):
        client.with_options(api_key="sk-nope").responses.create(model="gpt-5.4", input="hi")


def test_other_urls_under_responses(sb: Running) -> None:
    r = raw(sb, "GET", "/v1/responses/resp_123")
    assert r.status == 404
    assert error_of(r)["message"] == "Invalid URL (GET /v1/responses/resp_123)"
    assert post(sb, req()).status == 200  # chat emulator still answers next to it
    chat = raw(sb, "POST", "/v1/chat/completions",
               {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert chat.status == 200


def test_sdk_maps_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(
            model="gpt-5.4",
            input="hi",
            tools=[NESTED],  # type: ignore[list-item]
        )
    assert exc.value.code == "missing_required_parameter"
    assert exc.value.param == "tools[0].name"


# ---------------------------------------------------------------------------------------------
# hooks: directives
# ---------------------------------------------------------------------------------------------


def test_directive_429(sb: Running, client: openai.OpenAI) -> None:
    r = post(sb, req("[sandbox:error=429] hi"))
    assert r.status == 429
    assert r.headers["retry-after"] == "1" and r.headers["retry-after-ms"] == "1000"
    err = error_of(r)
    assert (err["type"], err["code"]) == ("requests", "rate_limit_exceeded")
    assert "gpt-5.4" in err["message"]
    with pytest.raises(openai.RateLimitError):
        client.responses.create(
            model="gpt-5.4", input="[sandbox:error=429] [sandbox:retry_after=2]"
        )


@pytest.mark.parametrize(
    ("status", "exc_type"),
    [(500, openai.InternalServerError), (503, openai.InternalServerError),
     (400, openai.BadRequestError)],
)  # fmt: skip
def test_directive_errors(client: openai.OpenAI, status: int, exc_type: type[Exception]) -> None:
    with pytest.raises(exc_type) as exc:
        client.responses.create(model="gpt-5.4", input=f"[sandbox:error={status}] x")
    assert isinstance(exc.value, openai.APIStatusError)
    assert exc.value.status_code == status
    body = exc.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}


def test_directive_in_item_input(sb: Running) -> None:
    r = post(sb, at({"role": "user", "content": [{"type": "input_text",
                                                  "text": "[sandbox:error=503]"}]}))  # fmt: skip
    assert r.status == 503


def test_directive_hang(sb: Running, client: openai.OpenAI) -> None:
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.4).responses.create(model="gpt-5.4", input="[sandbox:hang]")
    deadline = time.monotonic() + 3
    while sb.hanging and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sb.hanging == 0


def test_directive_cut(sb: Running, client: openai.OpenAI) -> None:
    r = post(sb, {**req("[sandbox:cut=3] cut me"), "stream": True})
    assert r.status == 200 and r.error is not None
    assert len(r.frames()) == 3
    nonstream = post(sb, req("[sandbox:cut=1] cut me"))
    assert nonstream.error is not None
    assert int(nonstream.headers["content-length"]) > len(nonstream.body) > 0
    got = []
    with pytest.raises(openai.APIConnectionError):
        for ev in client.responses.create(
            model="gpt-5.4", input="[sandbox:cut=4] cut me", stream=True
        ):
            got.append(ev)
    assert len(got) == 4


def test_directive_latency_and_chunk_delay(sb: Running) -> None:
    t0 = time.monotonic()
    body = ok(sb, req("[sandbox:latency=300] slow"))
    assert time.monotonic() - t0 >= 0.3
    assert message_text(body).startswith('You said: "slow".')
    t0 = time.monotonic()
    events = stream(sb, req("[sandbox:chunk_delay=5] drip"))
    assert time.monotonic() - t0 >= 0.005 * (len(events) - 1)


def test_directive_stream_error(sb: Running) -> None:
    events = stream(sb, req("[sandbox:stream_error] fail me"))
    _check_sequence(events)
    assert events[-1]["type"] == "response.failed"
    assert [ev["type"] for ev in events].count("response.output_text.delta") == 2
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["usage"] is None
    assert failed["error"]["code"] == "server_error"
    assert failed["error"]["message"].startswith("An error occurred while processing")
    assert failed["id"] == events[0]["response"]["id"]
    assert not any(ev["type"] == "response.completed" for ev in events)
    # the non-stream request ignores the stream-only directive
    assert ok(sb, req("[sandbox:stream_error] fail me"))["status"] == "completed"


def test_directive_error_event(sb: Running, client: openai.OpenAI) -> None:
    events = stream(sb, req("[sandbox:error_event] fail me", "gpt-5.4"))
    last = events[-1]
    assert last == {
        "type": "error", "sequence_number": len(events) - 1, "code": "server_error",
        "message": last["message"], "param": None,
    }  # fmt: skip
    got = list(client.responses.create(model="gpt-5.4", input="[sandbox:error_event]",
                                       stream=True))  # fmt: skip
    assert got[-1].type == "error"


def test_bad_directive(sb: Running) -> None:
    r = post(sb, req("[sandbox:explode] hi"))
    assert r.status == 400 and "sandbox" in error_of(r)["message"]


# ---------------------------------------------------------------------------------------------
# hooks: faults and the request log
# ---------------------------------------------------------------------------------------------


def test_fault_errors_for_matching_model(sb: Running) -> None:
    raw(sb, "POST", "/_sandbox/faults", {"model": "gpt-5.2", "error": 500, "count": 1}, auth=None)
    assert post(sb, req(model="gpt-5.4")).status == 200
    r = post(sb, req(model="gpt-5.2"))
    assert r.status == 500 and error_of(r)["type"] == "server_error"
    assert post(sb, req(model="gpt-5.2")).status == 200


def test_fault_before_validation_and_cut(sb: Running) -> None:
    raw(sb, "POST", "/_sandbox/faults", {"error": 503, "count": 1}, auth=None)
    assert post(sb, {"model": "gpt-5.4", "bogus": 1, "input": "x"}).status == 503
    raw(sb, "POST", "/_sandbox/faults", {"cut": 2}, auth=None)
    r = post(sb, {**req(), "stream": True})
    assert r.error is not None and len(r.frames()) == 2


def test_request_log(sb: Running) -> None:
    body = req("log me", tools=[STOCK])
    post(sb, body, headers={"X-Trace": "abc"})
    log = raw(sb, "GET", "/_sandbox/requests", auth=None).json()
    assert len(log) == 1
    assert log[0]["body"] == body
    assert log[0]["headers"]["authorization"] == "Bearer ***"
    assert log[0]["headers"]["x-trace"] == "abc"
    assert KEY not in json.dumps(log)


# ---------------------------------------------------------------------------------------------
# robustness: arbitrary bodies get a 4xx envelope, never a crash
# ---------------------------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.floats(-3, 3) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8,
)  # fmt: skip
_FIELDS = st.sampled_from(
    ["input", "tools", "tool_choice", "text", "reasoning", "include", "metadata",
     "max_output_tokens", "temperature", "stream_options", "instructions", "truncation"]
)  # fmt: skip
_PIECES = st.sampled_from(
    [U, FC_ITEM, FC_OUT, IMG, WEATHER, STOCK, NESTED, {"type": "web_search"}, "json", [], {}]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(["gpt-5.4", "gpt-5.3-codex", "gpt-4o", "nope"]),
    fields=st.dictionaries(_FIELDS, _JSON | _PIECES | st.lists(_PIECES, max_size=3), max_size=4),
)
def test_arbitrary_bodies_never_crash(model: str, fields: dict[str, Any]) -> None:
    body = {"model": model, "input": "hi json", **fields}
    try:
        params = validate(body)
    except ApiError as err:
        assert 400 <= err.status < 500
        assert set(err.body()["error"]) == {"message", "type", "param", "code"}
        return
    try:
        plan = make_plan(params, _Ids())
    except ApiError as err:  # a schema the generator cannot satisfy
        assert err.status == 400
        return
    events = stream_events(params, plan, "resp_x", 0, 0)
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
