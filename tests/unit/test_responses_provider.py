"""The OpenAI Responses translator (gpt-5.3-codex, the "-all" variants). Payloads here are
written from the documented Responses API shapes (platform.openai.com API reference:
"Create a model response", "Streaming events"), not recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chatgate.config import Deployment, Provider, find_profile, load
from chatgate.errors import InvalidRequest, StreamInterrupted, UpstreamError
from chatgate.providers import openai_responses as r
from chatgate.providers.base import Context, apply_profile
from chatgate.schema import decode_request

CFG = load(None, {})
PROV = Provider(protocol="openai", base_url="https://api.example/v1", api_key="sk-up")
DEP = Deployment(provider="openai", model="gpt-5.3-codex", protocol="openai_responses")
U = [{"role": "user", "content": "hi"}]


def ctx(include_usage: bool = False) -> Context:
    return Context(
        response_id="chatcmpl-r",
        created=1700000000,
        public_model="codex",
        include_usage=include_usage,
    )


def build(dep: Deployment = DEP, **kw: Any) -> tuple[dict[str, Any], Context]:
    body = {"model": "codex", "messages": U, **kw}
    req = decode_request(msgspec.json.encode(body))
    profile = find_profile(CFG, dep.model)
    req, dropped = apply_profile(req, dep, profile, "codex", r.UNSUPPORTED, r.MIN_OUTPUT)
    c = ctx()
    c.dropped.extend(dropped)
    u = r.build_request(req, dep, PROV, c, profile)
    assert u.url == "https://api.example/v1/responses"
    assert u.headers["Authorization"] == "Bearer sk-up"
    return json.loads(u.body), c


def test_minimal_request() -> None:
    body, _ = build()
    assert body == {
        "model": "gpt-5.3-codex",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "store": False,
        "reasoning": {"summary": "auto"},  # codex reasons by default: ask for summaries
    }


def test_messages_to_items() -> None:
    msgs = [
        {"role": "system", "content": "S"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"a":1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]
    body, _ = build(messages=msgs)
    assert "instructions" not in body
    assert body["input"] == [
        {"role": "system", "content": [{"type": "input_text", "text": "S"}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x/a.png", "detail": "auto"},
            ],
        },
        {"role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a":1}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
    ]


def test_parameters() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body, _ = build(
        max_tokens=50,
        reasoning_effort="high",
        user="u",
        metadata={"k": "v"},
        store=True,
        tools=[{"type": "function", "function": {"name": "f", "parameters": schema}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
        parallel_tool_calls=False,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "n", "schema": schema, "strict": True},
        },
        verbosity="low",
    )
    assert body["max_output_tokens"] == 50
    assert body["reasoning"] == {"effort": "high", "summary": "auto"}
    assert body["user"] == "u" and body["metadata"] == {"k": "v"} and body["store"] is True
    assert body["tools"] == [
        {"type": "function", "name": "f", "parameters": schema, "strict": False}
    ]
    assert body["tool_choice"] == {"type": "function", "name": "f"}
    assert body["parallel_tool_calls"] is False
    assert body["text"] == {
        "format": {"type": "json_schema", "name": "n", "schema": schema, "strict": True},
        "verbosity": "low",
    }


def test_all_variant_adds_hosted_web_search() -> None:
    dep = Deployment(
        provider="openai",
        model="gpt-5.1",
        protocol="openai_responses",
        options={"web_search": True},
    )
    body, _ = build(dep)
    assert body["tools"] == [{"type": "web_search"}]


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"seed": 1}, "seed"),
        ({"presence_penalty": 1}, "presence_penalty"),
        ({"logit_bias": {"1": 1}}, "logit_bias"),
    ],
)
def test_unsupported(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        build(**kw)
    assert e.value.param == param


def test_n_fans_out() -> None:
    assert r.NATIVE_N is False


RESP = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "completed",
    "model": "gpt-5.3-codex",
    "error": None,
    "incomplete_details": None,
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}]},
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
        },
    ],
    "usage": {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 12},
        "total_tokens": 30,
    },
}


def test_parse_message_reasoning_usage() -> None:
    out, usage = r.parse_response(msgspec.json.encode(RESP), ctx())
    data = json.loads(out)
    (choice,) = data["choices"]
    assert choice["message"]["content"] == "Hello"
    assert choice["message"]["reasoning_content"] == "think"
    assert choice["finish_reason"] == "stop"
    assert data["usage"]["prompt_tokens"] == 10 and data["usage"]["completion_tokens"] == 20
    assert data["usage"]["prompt_tokens_details"]["cached_tokens"] == 4
    assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == 12
    assert usage is not None and usage.total_tokens == 30


def test_parse_function_calls_and_incomplete() -> None:
    resp = dict(
        RESP,
        output=[
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_9",
                "name": "f",
                "arguments": '{"a":1}',
                "status": "completed",
            }
        ],
    )
    out, _ = r.parse_response(msgspec.json.encode(resp), ctx())
    choice = json.loads(out)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    inc = dict(RESP, status="incomplete", incomplete_details={"reason": "max_output_tokens"})
    out, _ = r.parse_response(msgspec.json.encode(inc), ctx())
    assert json.loads(out)["choices"][0]["finish_reason"] == "length"
    inc = dict(RESP, status="incomplete", incomplete_details={"reason": "content_filter"})
    out, _ = r.parse_response(msgspec.json.encode(inc), ctx())
    assert json.loads(out)["choices"][0]["finish_reason"] == "content_filter"


def test_parse_failed() -> None:
    failed = dict(RESP, status="failed", error={"code": "server_error", "message": "boom"})
    with pytest.raises(UpstreamError) as e:
        r.parse_response(msgspec.json.encode(failed), ctx())
    assert e.value.code == "server_error"


def _ev(**kw: Any) -> bytes:
    return msgspec.json.encode(kw)


def test_stream_events_to_chunks() -> None:
    tr = r.stream_translator(ctx(include_usage=True))
    events = [
        _ev(
            type="response.created",
            sequence_number=0,
            response=dict(RESP, status="in_progress", output=[]),
        ),
        _ev(type="response.in_progress", sequence_number=1, response={}),
        _ev(
            type="response.output_item.added",
            sequence_number=2,
            output_index=0,
            item={"type": "reasoning", "id": "rs_1", "summary": []},
        ),
        _ev(
            type="response.reasoning_summary_text.delta",
            sequence_number=3,
            item_id="rs_1",
            output_index=0,
            summary_index=0,
            delta="thi",
        ),
        _ev(
            type="response.reasoning_summary_text.delta",
            sequence_number=4,
            item_id="rs_1",
            output_index=0,
            summary_index=0,
            delta="nk",
        ),
        _ev(
            type="response.output_item.added",
            sequence_number=5,
            output_index=1,
            item={"type": "message", "id": "msg_1", "role": "assistant", "content": []},
        ),
        _ev(
            type="response.output_text.delta",
            sequence_number=6,
            item_id="msg_1",
            output_index=1,
            content_index=0,
            delta="Hel",
        ),
        _ev(
            type="response.output_text.delta",
            sequence_number=7,
            item_id="msg_1",
            output_index=1,
            content_index=0,
            delta="lo",
        ),
        _ev(
            type="response.output_item.added",
            sequence_number=8,
            output_index=2,
            item={
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "f",
                "arguments": "",
            },
        ),
        _ev(
            type="response.function_call_arguments.delta",
            sequence_number=9,
            item_id="fc_1",
            output_index=2,
            delta='{"a":',
        ),
        _ev(
            type="response.function_call_arguments.delta",
            sequence_number=10,
            item_id="fc_1",
            output_index=2,
            delta="1}",
        ),
        _ev(type="response.completed", sequence_number=11, response=RESP),
    ]
    frames = b"".join(tr.feed(e) for e in events) + tr.close()
    chunks = [json.loads(f[6:]) for f in frames.split(b"\n\n") if f]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "think"
    assert "".join(d.get("content") or "" for d in deltas) == "Hello"
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0]["id"] == "call_1" and calls[0]["function"]["name"] == "f"
    assert "".join(tc["function"]["arguments"] for tc in calls) == '{"a":1}'
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 30


@pytest.mark.parametrize(
    "event",
    [
        {
            "type": "response.failed",
            "response": dict(RESP, status="failed", error={"code": "server_error", "message": "x"}),
        },
        {"type": "error", "code": "rate_limit_exceeded", "message": "slow down"},
    ],
)
def test_stream_failures(event: dict[str, Any]) -> None:
    tr = r.stream_translator(ctx())
    with pytest.raises(StreamInterrupted):
        tr.feed(msgspec.json.encode(event))


def test_stream_without_completion_is_interrupted() -> None:
    tr = r.stream_translator(ctx())
    tr.feed(_ev(type="response.created", response={}))
    with pytest.raises(StreamInterrupted):
        tr.close()


def test_stop_is_applied_by_the_gateway_non_stream() -> None:
    body, c = build(stop=["ll", "zz"])
    assert "stop" not in body and c.stop == ["ll", "zz"]
    out, _ = r.parse_response(msgspec.json.encode(RESP), c)
    choice = json.loads(out)["choices"][0]
    assert choice["message"]["content"] == "He" and choice["finish_reason"] == "stop"


def test_stop_is_applied_by_the_gateway_stream_across_deltas() -> None:
    _, c = build(stop="lo w")
    c.include_usage = True
    tr = r.stream_translator(c)
    deltas = ["Hel", "lo", " w", "orld", "!"]
    events = [_ev(type="response.created", response={})]
    events += [
        _ev(type="response.output_text.delta", output_index=0, content_index=0, delta=d)
        for d in deltas
    ]
    events.append(_ev(type="response.completed", response=RESP))
    frames = b"".join(tr.feed(e) for e in events) + tr.close()
    chunks = [json.loads(f[6:]) for f in frames.split(b"\n\n") if f]
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    assert text == "Hel"
    assert [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"]][-1] == "stop"
    assert chunks[-1]["usage"]["total_tokens"] == 30  # usage still counted


def test_stop_scanner_releases_false_starts() -> None:
    from chatgate.providers.base import StopScanner

    sc = StopScanner(["abc"])
    assert sc.push("xa") == "x"
    assert sc.push("b") == ""
    assert sc.push("d") == "abd"
    assert sc.push("ab") == ""
    assert sc.flush() == "ab" and not sc.hit


def test_max_output_below_the_responses_minimum_is_a_400() -> None:
    with pytest.raises(InvalidRequest) as e:
        build(max_tokens=15)
    assert e.value.param == "max_tokens" and e.value.code == "integer_below_min_value"
    body, _ = build(max_tokens=16)
    assert body["max_output_tokens"] == 16


def test_json_object_needs_the_word_json_as_openai_says() -> None:
    with pytest.raises(InvalidRequest) as e:
        build(response_format={"type": "json_object"})
    assert e.value.param == "response_format"
    sys_msg = [{"role": "system", "content": "Answer in JSON."}, *U]
    body, _ = build(messages=sys_msg, response_format={"type": "json_object"})
    assert body["text"] == {"format": {"type": "json_object"}}


# --- the repository's own Responses fixtures (tests/fixtures/openai_responses) ---------

OWN = Path(__file__).parents[1] / "fixtures" / "openai_responses"


@pytest.mark.parametrize(
    "name",
    [
        "response_text.json",
        "response_function_call.json",
        "response_reasoning.json",
        "response_incomplete.json",
    ],
)
def test_fixture_responses_field_by_field(name: str) -> None:
    src = json.loads((OWN / name).read_text())
    out, usage = r.parse_response((OWN / name).read_bytes(), ctx())
    (choice,) = json.loads(out)["choices"]
    msg = choice["message"]
    texts = [
        p["text"]
        for it in src["output"]
        if it["type"] == "message"
        for p in it["content"]
        if p["type"] == "output_text"
    ]
    assert msg["content"] == ("".join(texts) if texts else None)
    calls = [it for it in src["output"] if it["type"] == "function_call"]
    assert [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in msg.get("tool_calls", [])
    ] == [(c["call_id"], c["name"], c["arguments"]) for c in calls]
    summaries = [
        s["text"]
        for it in src["output"]
        if it["type"] == "reasoning"
        for s in it.get("summary", [])
    ]
    assert msg.get("reasoning_content") == ("\n\n".join(summaries) if summaries else None)
    if src["status"] == "incomplete":
        assert choice["finish_reason"] == "length"
    else:
        assert choice["finish_reason"] == ("tool_calls" if calls else "stop")
    u = src["usage"]
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        u["input_tokens"],
        u["output_tokens"],
        u["total_tokens"],
    )
    assert usage.cached_tokens == u["input_tokens_details"]["cached_tokens"]
    assert usage.reasoning_tokens == u["output_tokens_details"]["reasoning_tokens"]


def _own_events(name: str) -> list[bytes]:
    text = (OWN / name).read_text()
    return [
        line[6:].encode()
        for block in text.split("\n\n")
        for line in block.split("\n")
        if line.startswith("data: ")
    ]


@pytest.mark.parametrize("name", ["stream_text.sse", "stream_function_call.sse"])
def test_fixture_streams_translate_in_order(name: str) -> None:
    events = [json.loads(e) for e in _own_events(name)]
    tr = r.stream_translator(ctx(include_usage=True))
    frames = b"".join(tr.feed(e) for e in _own_events(name)) + tr.close()
    chunks = [json.loads(f[6:]) for f in frames.split(b"\n\n") if f]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    want = {
        t: "".join(e["delta"] for e in events if e["type"] == t)
        for t in (
            "response.output_text.delta",
            "response.reasoning_summary_text.delta",
            "response.function_call_arguments.delta",
        )
    }
    assert "".join(d.get("content") or "" for d in deltas) == want["response.output_text.delta"]
    assert (
        "".join(d.get("reasoning_content") or "" for d in deltas)
        == want["response.reasoning_summary_text.delta"]
    )
    args = "".join(tc["function"]["arguments"] for d in deltas for tc in d.get("tool_calls", []))
    assert args == want["response.function_call_arguments.delta"]
    final = next(e for e in events if e["type"] == "response.completed")["response"]
    assert chunks[-1]["usage"]["total_tokens"] == final["usage"]["total_tokens"]
    has_call = any(it["type"] == "function_call" for it in final["output"])
    assert chunks[-2]["choices"][0]["finish_reason"] == ("tool_calls" if has_call else "stop")
