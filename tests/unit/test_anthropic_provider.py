"""The Anthropic translator, row by row of ../shared/protocols/mapping.md (Anthropic column),
and replayed on every recorded Anthropic payload when ../shared is present."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from chatgate.config import Deployment, Profile, Provider, find_profile, load
from chatgate.errors import InvalidRequest, NotFound, RateLimited, StreamInterrupted, UpstreamError
from chatgate.providers import anthropic as a
from chatgate.providers.base import Context, apply_profile
from chatgate.schema import decode_request
from tests.support import FIXTURES

CFG = load(None, {})
PROV = Provider(protocol="anthropic", base_url="https://api.anthropic.example", api_key="sk-ant-k")
DEP = Deployment(provider="anthropic", model="claude-sonnet-4-6")
PROF = find_profile(CFG, "claude-sonnet-4-6")
U = [{"role": "user", "content": "hi"}]


def ctx(include_usage: bool = False) -> Context:
    return Context(
        response_id="chatcmpl-x",
        created=1700000000,
        public_model="claude-pub",
        include_usage=include_usage,
    )


def build(
    profile: Profile = PROF, c: Context | None = None, **kw: Any
) -> tuple[dict[str, Any], Context]:
    body = {"model": "claude-pub", "messages": U, **kw}
    req = decode_request(msgspec.json.encode(body))
    req, dropped = apply_profile(req, DEP, profile, "claude-pub", a.UNSUPPORTED)
    c = c or ctx()
    c.dropped.extend(dropped)
    u = a.build_request(req, DEP, PROV, c, profile)
    return json.loads(u.body), c


# --- request: §1 parameters ------------------------------------------------------------


def test_endpoint_and_headers() -> None:
    req = decode_request(msgspec.json.encode({"model": "m", "messages": U}))
    u = a.build_request(req, DEP, PROV, ctx(), PROF)
    assert u.url == "https://api.anthropic.example/v1/messages"
    assert u.headers["x-api-key"] == "sk-ant-k"
    assert u.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in u.headers


def test_model_and_default_max_tokens() -> None:
    body, _ = build()
    assert body["model"] == "claude-sonnet-4-6"
    assert body["max_tokens"] == PROF.default_max_tokens == 8192
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_from_either_field(field: str) -> None:
    body, _ = build(**{field: 77})
    assert body["max_tokens"] == 77


def test_temperature_above_one_is_rejected_not_clamped() -> None:
    with pytest.raises(InvalidRequest) as e:
        build(temperature=1.5)
    assert e.value.param == "temperature"
    body, _ = build(temperature=0.7)
    assert body["temperature"] == 0.7


def test_top_p_stop_user() -> None:
    body, _ = build(top_p=0.5, stop="END", user="u-1")
    assert body["top_p"] == 0.5
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-1"}
    body, _ = build(stop=["a", "b"], safety_identifier="s-1")
    assert body["stop_sequences"] == ["a", "b"] and body["metadata"] == {"user_id": "s-1"}


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"logit_bias": {"12": 3}}, "logit_bias"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"presence_penalty": -1}, "presence_penalty"),
        ({"seed": 7}, "seed"),
        ({"metadata": {"a": "b"}}, "metadata"),
        ({"store": True}, "store"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"verbosity": "low"}, "verbosity"),
        ({"prompt_cache_key": "k"}, "prompt_cache_key"),
        ({"modalities": ["text"]}, "modalities"),
        ({"web_search_options": {"a": 1}}, "web_search_options"),
    ],
)
def test_unsupported_parameters_are_400_naming_them(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        build(**kw)
    assert e.value.param == param and e.value.status == 400


def test_unsupported_but_neutral_values_are_dropped_silently() -> None:
    body, c = build(
        logprobs=False, frequency_penalty=0, presence_penalty=0, logit_bias={}, store=False
    )
    assert c.dropped == []
    assert not {"logprobs", "frequency_penalty", "store", "logit_bias"} & set(body)


def test_drop_unsupported_params_reports_them() -> None:
    dep = Deployment(provider="anthropic", model="claude-sonnet-4-6", drop_unsupported_params=True)
    req = decode_request(
        msgspec.json.encode({"model": "m", "messages": U, "seed": 3, "logprobs": True})
    )
    _, dropped = apply_profile(req, dep, PROF, "m", a.UNSUPPORTED)
    assert sorted(dropped) == ["logprobs", "seed"]


def test_n_is_fanned_out_by_the_gateway() -> None:
    assert a.NATIVE_N is False


# --- tools -----------------------------------------------------------------------------

FN = {
    "type": "function",
    "function": {
        "name": "f",
        "description": "d",
        "parameters": {"type": "object", "properties": {}},
    },
}


def test_tools_and_choice_mapping() -> None:
    bare = {"type": "function", "function": {"name": "g"}}
    body, _ = build(tools=[FN, bare])
    assert body["tools"] == [
        {"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}},
        {"name": "g", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body
    for choice, want in [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ]:
        body, _ = build(tools=[FN], tool_choice=choice)
        assert body["tool_choice"] == want


def test_parallel_tool_calls_false() -> None:
    body, _ = build(tools=[FN], parallel_tool_calls=False)
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    body, _ = build(tools=[FN], tool_choice="required", parallel_tool_calls=False)
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_custom_tools_rejected() -> None:
    with pytest.raises(InvalidRequest) as e:
        build(tools=[{"type": "custom", "custom": {"name": "c"}}])
    assert e.value.param == "tools[0].type"


# --- response_format -------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}


def test_json_schema_native_where_the_model_has_it() -> None:
    body, c = build(
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}}
    )
    closed = {**SCHEMA, "additionalProperties": False}  # Anthropic requires it on objects
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": closed}}
    assert "tools" not in body and not c.json_tool


def test_json_schema_anthropic_cannot_enforce_falls_back_to_the_tool() -> None:
    ranged = {"type": "object", "properties": {"x": {"type": "integer", "minimum": 3}}}
    body, c = build(
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": ranged}}
    )
    assert "output_config" not in body and c.json_tool
    assert body["tools"][-1]["input_schema"] == ranged  # the full schema, as given


def test_strict_tools_closed_or_reported() -> None:
    open_obj = {"type": "object", "properties": {"a": {"type": "string"}}}
    ok = {"type": "function", "function": {"name": "f", "parameters": open_obj, "strict": True}}
    body, c = build(tools=[ok])
    assert body["tools"][0]["strict"] is True
    assert body["tools"][0]["input_schema"]["additionalProperties"] is False
    ranged = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}}
    bad = {"type": "function", "function": {"name": "g", "parameters": ranged, "strict": True}}
    body, c = build(tools=[bad])
    assert "strict" not in body["tools"][0] and c.dropped == ["tools[0].function.strict"]


def test_prefill_trailing_whitespace_trimmed_and_refused_where_unsupported() -> None:
    msgs = [*U, {"role": "assistant", "content": "The answer is "}]
    body, _ = build(messages=msgs)
    assert body["messages"][-1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "The answer is"}],
    }
    with pytest.raises(InvalidRequest) as e:
        build(find_profile(CFG, "claude-opus-4-6"), messages=msgs)
    assert e.value.param == "messages[1]"


def test_json_schema_forced_tool_fallback_and_back() -> None:
    haiku = find_profile(CFG, "claude-haiku-4-5-20251001")
    assert not haiku.native_json_schema
    body, c = build(
        haiku,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}},
    )
    assert body["tools"][-1]["name"] == a.JSON_TOOL
    assert body["tools"][-1]["input_schema"] == SCHEMA
    assert body["tool_choice"] == {"type": "tool", "name": a.JSON_TOOL}
    upstream = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": a.JSON_TOOL, "input": {"x": 3}}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 6},
    }
    out, _ = a.parse_response(msgspec.json.encode(upstream), c)
    choice = json.loads(out)["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"x": 3}
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]


def test_json_schema_fallback_wraps_non_object_answers() -> None:
    haiku = find_profile(CFG, "claude-haiku-4-5-20251001")
    arr = {"type": "array", "items": {"type": "string"}}
    body, c = build(
        haiku, response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": arr}}
    )
    assert body["tools"][-1]["input_schema"]["properties"]["value"] == arr
    upstream = {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "tool_use", "id": "t", "name": a.JSON_TOOL, "input": {"value": ["a"]}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    out, _ = a.parse_response(msgspec.json.encode(upstream), c)
    assert json.loads(json.loads(out)["choices"][0]["message"]["content"]) == ["a"]


def test_json_object_uses_the_forced_tool() -> None:
    body, c = build(response_format={"type": "json_object"})
    assert body["tools"][-1]["input_schema"] == {"type": "object"} and c.json_tool


def test_text_format_is_omitted() -> None:
    body, _ = build(response_format={"type": "text"})
    assert "output_config" not in body and "tools" not in body


def test_forced_tool_fallback_conflicts_are_400() -> None:
    with pytest.raises(InvalidRequest) as e:
        build(response_format={"type": "json_object"}, tools=[FN])
    assert e.value.param == "response_format"


# --- reasoning -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("effort", "budget"),
    [("minimal", 1024), ("low", 1024), ("medium", 4096), ("high", 16384)],
)
def test_reasoning_effort_budget_table(effort: str, budget: int) -> None:
    body, _ = build(reasoning_effort=effort)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] > budget


def test_reasoning_none_sends_no_thinking() -> None:
    body, _ = build(reasoning_effort="none")
    assert "thinking" not in body


def test_reasoning_budget_fits_under_client_max_tokens() -> None:
    body, _ = build(reasoning_effort="high", max_tokens=5000)
    assert body["thinking"]["budget_tokens"] == 4999 and body["max_tokens"] == 5000
    with pytest.raises(InvalidRequest) as e:
        build(reasoning_effort="low", max_tokens=1000)
    assert e.value.param == "max_tokens"


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"temperature": 0.5}, "temperature"),
        ({"top_p": 0.5}, "top_p"),
        ({"tools": [FN], "tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_thinking_constraints(kw: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        build(reasoning_effort="medium", **kw)
    assert e.value.param == param


# --- request: §2 messages --------------------------------------------------------------


def test_system_and_developer_hoisted_and_joined() -> None:
    body, _ = build(
        messages=[
            {"role": "system", "content": "S1"},
            {"role": "developer", "content": [{"type": "text", "text": "S2"}]},
            *U,
        ]
    )
    assert body["system"] == "S1\n\nS2"
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_consecutive_same_role_turns_merge() -> None:
    body, _ = build(messages=[*U, {"role": "user", "content": "again"}])
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "again"}],
        }
    ]


def test_tool_round_trip_shapes() -> None:
    msgs = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "checking",
            "tool_calls": [
                {
                    "id": "toolu_a",
                    "type": "function",
                    "function": {"name": "f", "arguments": '{"c": 1}'},
                },
                {"id": "toolu_b", "type": "function", "function": {"name": "f", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_a", "content": "A"},
        {"role": "tool", "tool_call_id": "toolu_b", "content": [{"type": "text", "text": "B"}]},
        {"role": "user", "content": "thanks"},
    ]
    body, _ = build(messages=msgs, tools=[FN])
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "checking"},
        {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {"c": 1}},
        {"type": "tool_use", "id": "toolu_b", "name": "f", "input": {}},
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "A"},
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "B"},
        {"type": "text", "text": "thanks"},
    ]


def test_unparsable_tool_arguments_are_400() -> None:
    msgs = [
        *U,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{nope"}}
            ],
        },
        {"role": "tool", "tool_call_id": "t", "content": "x"},
    ]
    with pytest.raises(InvalidRequest) as e:
        build(messages=msgs)
    assert e.value.param == "messages[1].tool_calls[0].function.arguments"


def test_images() -> None:
    parts = [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://x.example/cat.jpg", "detail": "low"}},
    ]
    body, _ = build(messages=[{"role": "user", "content": parts}])
    assert body["messages"][0]["content"][1:] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "image", "source": {"type": "url", "url": "https://x.example/cat.jpg"}},
    ]
    bmp = [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]
    with pytest.raises(InvalidRequest) as e:
        build(messages=[{"role": "user", "content": bmp}])
    assert e.value.param == "messages[0].content[0].image_url.url"


def test_audio_rejected_pdf_becomes_document() -> None:
    audio = [{"type": "input_audio", "input_audio": {"data": "AAA=", "format": "wav"}}]
    with pytest.raises(InvalidRequest) as e:
        build(messages=[{"role": "user", "content": audio}])
    assert e.value.param == "messages[0].content[0].type"
    pdf = [{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0="}}]
    body, _ = build(messages=[{"role": "user", "content": pdf}])
    assert body["messages"][0]["content"][0]["type"] == "document"


def test_refusal_becomes_text_and_name_is_reported() -> None:
    msgs = [
        {"role": "user", "content": "x", "name": "alice"},
        {"role": "assistant", "refusal": "no"},
        *U,
    ]
    body, c = build(messages=msgs)
    assert body["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "no"}]}
    assert c.dropped == ["messages[].name"]


def test_signed_thinking_is_replayed_first() -> None:
    msgs = [
        *U,
        {
            "role": "assistant",
            "content": "ans",
            "reasoning_content": "hmm",
            "thinking_blocks": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
            ],
        },
        {"role": "user", "content": "more"},
    ]
    body, _ = build(messages=msgs)
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "ans"},
    ]


def test_function_role_rejected() -> None:
    with pytest.raises(InvalidRequest):
        build(messages=[*U, {"role": "function", "name": "f", "content": "x"}])


# --- response --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_finish_reason_table(stop: str, finish: str) -> None:
    content = [{"type": "text", "text": "t"}]
    if stop == "tool_use":
        content.append({"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}})  # type: ignore[dict-item]
    upstream = {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": content,
        "stop_reason": stop,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    out, _ = a.parse_response(msgspec.json.encode(upstream), ctx())
    assert json.loads(out)["choices"][0]["finish_reason"] == finish


def test_usage_counts_cache_reads_and_writes_in_prompt() -> None:
    u = a.usage_from(
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 100,
            "output_tokens": 7,
            "output_tokens_details": {"thinking_tokens": 3},
        }
    )
    assert (u.prompt_tokens, u.cached_tokens, u.cache_write_tokens) == (115, 100, 5)
    assert (u.completion_tokens, u.total_tokens, u.reasoning_tokens) == (7, 122, 3)
    assert u.to_openai()["prompt_tokens_details"] == {"cached_tokens": 100, "cache_write_tokens": 5}


# --- recorded payloads -----------------------------------------------------------------


def _fixture(name: str) -> Path:
    path = FIXTURES / "anthropic" / name
    if not path.exists():
        pytest.skip(f"recorded vendor payloads not present ({FIXTURES}); they live in ../shared")
    return path


# mapping.md §3.1, written out here rather than read from the module under test
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

MESSAGES = [
    "message_text.json",
    "message_thinking.json",
    "message_thinking_redacted.json",
    "message_thinking_tool_use.json",
    "message_tool_result_followup.json",
    "message_tool_use_parallel.json",
]


@pytest.mark.parametrize("name", MESSAGES)
def test_recorded_message_field_by_field(name: str) -> None:
    src = json.loads(_fixture(name).read_text())
    out, usage = a.parse_response(_fixture(name).read_bytes(), ctx())
    got = json.loads(out)
    assert got["id"] == "chatcmpl-x" and got["model"] == "claude-pub"
    assert got["object"] == "chat.completion" and got["created"] == 1700000000
    (choice,) = got["choices"]
    msg = choice["message"]
    texts = [b["text"] for b in src["content"] if b["type"] == "text"]
    assert msg["content"] == ("".join(texts) if texts else None)
    uses = [b for b in src["content"] if b["type"] == "tool_use"]
    assert [
        (t["id"], t["function"]["name"], json.loads(t["function"]["arguments"]))
        for t in msg.get("tool_calls", [])
    ] == [(b["id"], b["name"], b["input"]) for b in uses]
    thinking = [b["thinking"] for b in src["content"] if b["type"] == "thinking"]
    assert msg.get("reasoning_content") == ("".join(thinking) if thinking else None)
    signed = [b for b in src["content"] if b["type"] in ("thinking", "redacted_thinking")]
    assert len(msg.get("thinking_blocks", [])) == len(signed)
    for mine, theirs in zip(msg.get("thinking_blocks", []), signed, strict=True):
        assert mine == {k: theirs[k] for k in mine}
    assert choice["finish_reason"] == FINISH[src["stop_reason"]]
    su = src["usage"]
    prompt = su["input_tokens"] + su["cache_creation_input_tokens"] + su["cache_read_input_tokens"]
    assert got["usage"]["prompt_tokens"] == prompt == usage.prompt_tokens  # type: ignore[union-attr]
    assert got["usage"]["completion_tokens"] == su["output_tokens"]
    assert got["usage"]["total_tokens"] == prompt + su["output_tokens"]
    assert got["usage"]["prompt_tokens_details"]["cached_tokens"] == su["cache_read_input_tokens"]


def _events(name: str) -> list[bytes]:
    text = _fixture(name).read_text()
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [ln[5:].lstrip() for ln in block.split("\n") if ln.startswith("data:")]
        if data:
            out.append("\n".join(data).encode())
    return out


def _run(name: str, include_usage: bool = True) -> tuple[list[dict[str, Any]], Any]:
    tr = a.stream_translator(ctx(include_usage))
    chunks: list[dict[str, Any]] = []
    for ev in _events(name):
        out = tr.feed(ev)
        for frame in out.split(b"\n\n"):
            if frame:
                assert frame.startswith(b"data: ")
                chunks.append(json.loads(frame[6:]))
    return chunks, tr


STREAMS = [
    "stream_text.sse",
    "stream_text_sdk_basic.sse",
    "stream_thinking.sse",
    "stream_thinking_redacted.sse",
    "stream_tool_use.sse",
    "stream_refusal.sse",
    "stream_max_tokens_mid_tool.sse",
]


@pytest.mark.parametrize("name", STREAMS)
def test_recorded_stream_translates_in_order(name: str) -> None:
    events = [json.loads(e) for e in _events(name)]
    chunks, tr = _run(name)
    assert tr.done
    assert all(c["id"] == "chatcmpl-x" and c["model"] == "claude-pub" for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    body = [c for c in chunks if c["choices"]]
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"] for c in body]
    want_text = "".join(
        e["delta"]["text"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta"
    )
    assert "".join(d.get("content") or "" for d in deltas) == want_text
    want_thinking = "".join(
        e["delta"]["thinking"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "thinking_delta"
    )
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == want_thinking
    # tool calls: index = count of tool_use blocks so far; id and name in the first delta only
    starts = [
        e["content_block"]
        for e in events
        if e["type"] == "content_block_start" and e["content_block"]["type"] == "tool_use"
    ]
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    firsts = [tc for tc in calls if "id" in tc]
    assert [(tc["index"], tc["id"], tc["function"]["name"]) for tc in firsts] == [
        (k, s["id"], s["name"]) for k, s in enumerate(starts)
    ]
    for k in range(len(starts)):
        args = "".join(tc["function"]["arguments"] for tc in calls if tc["index"] == k)
        if name != "stream_max_tokens_mid_tool.sse":
            assert isinstance(json.loads(args), dict)
        else:
            assert args.startswith('{"filename": "taxes.txt')
    stop = next(e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta")
    finishes = [c["choices"][0]["finish_reason"] for c in body if c["choices"][0]["finish_reason"]]
    assert finishes == [FINISH[stop]]
    assert body[-1]["choices"][0]["finish_reason"] == FINISH[stop]
    # usage: message_start input + the last (cumulative) message_delta output
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] is not None
    start_usage = next(e["message"]["usage"] for e in events if e["type"] == "message_start")
    last_out = [e["usage"]["output_tokens"] for e in events if e["type"] == "message_delta"][-1]
    assert usage_chunk["usage"]["prompt_tokens"] == start_usage["input_tokens"] + start_usage.get(
        "cache_creation_input_tokens", 0
    ) + start_usage.get("cache_read_input_tokens", 0)
    assert usage_chunk["usage"]["completion_tokens"] == last_out


def test_recorded_stream_without_usage_request_has_no_usage_chunk() -> None:
    chunks, tr = _run("stream_text.sse", include_usage=False)
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)
    assert tr.usage is not None and tr.usage.completion_tokens > 0


def test_recorded_thinking_stream_keeps_signature() -> None:
    chunks, _ = _run("stream_thinking.sse")
    blocks = [
        b
        for c in chunks
        if c["choices"]
        for b in c["choices"][0]["delta"].get("thinking_blocks", [])
    ]
    assert blocks and blocks[0]["type"] == "thinking" and blocks[0]["signature"]
    chunks, _ = _run("stream_thinking_redacted.sse")
    blocks = [
        b
        for c in chunks
        if c["choices"]
        for b in c["choices"][0]["delta"].get("thinking_blocks", [])
    ]
    assert blocks and blocks[0]["type"] == "redacted_thinking" and blocks[0]["data"]


def test_recorded_refusal_stream_sets_refusal() -> None:
    chunks, _ = _run("stream_refusal.sse")
    refusal = "".join(c["choices"][0]["delta"].get("refusal") or "" for c in chunks if c["choices"])
    assert "refused" in refusal


def test_recorded_stream_error_event_raises() -> None:
    tr = a.stream_translator(ctx())
    with pytest.raises(StreamInterrupted) as e:
        for ev in _events("stream_error_overloaded.sse"):
            tr.feed(ev)
    assert e.value.code == "overloaded"
    assert set(json.loads(e.value.body())["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("name", "status", "cls", "out_status"),
    [
        ("error_400_invalid_request.json", 400, InvalidRequest, 400),
        ("error_404_not_found.json", 404, NotFound, 404),
        ("error_529_overloaded.json", 529, UpstreamError, 503),
    ],
)
def test_recorded_errors(name: str, status: int, cls: type, out_status: int) -> None:
    raw = _fixture(name).read_bytes()
    err = a.parse_error(status, {}, raw, None)
    assert isinstance(err, cls) and err.status == out_status
    assert err.message == json.loads(raw)["error"]["message"]


@pytest.mark.parametrize(
    ("status", "etype", "out_status", "code"),
    [
        (401, "authentication_error", 502, "upstream_auth_failed"),
        (403, "permission_error", 502, "upstream_auth_failed"),
        (402, "billing_error", 429, "insufficient_quota"),
        (413, "request_too_large", 413, "request_too_large"),
        (429, "rate_limit_error", 429, "rate_limit_exceeded"),
        (500, "api_error", 500, "api_error"),
        (504, "timeout_error", 504, "timeout_error"),
    ],
)
def test_error_table(status: int, etype: str, out_status: int, code: str) -> None:
    body = {"type": "error", "error": {"type": etype, "message": "m sk-ant-k"}}
    headers = {"retry-after": "3", "anthropic-ratelimit-requests-remaining": "0", "x-other": "1"}
    err = a.parse_error(status, headers, msgspec.json.encode(body), "sk-ant-k")
    assert err.status == out_status and err.code == code
    assert "sk-ant-k" not in err.body().decode()
    if status == 429:
        assert isinstance(err, RateLimited)
        assert err.headers == {"retry-after": "3"}  # what the client sees
        assert err.upstream_headers == {"anthropic-ratelimit-requests-remaining": "0"}


def test_thinking_dropped_and_reported_when_the_tool_turn_is_unsigned() -> None:
    msgs = [
        *U,
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"},
    ]
    body, c = build(messages=msgs, tools=[FN], reasoning_effort="low")
    assert "thinking" not in body and c.dropped == ["reasoning_effort"]
    signed = [
        *U,
        {
            "role": "assistant",
            "thinking_blocks": [{"type": "thinking", "thinking": "t", "signature": "s"}],
            "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "ok"},
    ]
    body, c = build(messages=signed, tools=[FN], reasoning_effort="low")
    assert body["thinking"]["type"] == "enabled" and c.dropped == []
