"""Claude through the gateway: the official openai SDK in front, the strict Anthropic
emulator behind (it refuses what the real Messages API refuses)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.support import PNG_1PX, Server, sandbox_url

SONNET = "claude-sonnet-4-6"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["tz"],
        },
    },
}


@pytest.fixture(scope="module")
def client(server: Server, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=api_key, base_url=server.url + "/chat", max_retries=0)


@pytest.fixture()
def upstream(server: Server) -> Any:
    """What the Anthropic emulator received (the last request first cleared)."""
    url = sandbox_url(server) + "/_sandbox/requests"
    httpx.delete(url)

    def last() -> dict[str, Any]:
        seen = [r for r in httpx.get(url).json() if r["body"].get("max_tokens") is not None]
        assert seen, "no Anthropic request reached the emulator"
        return seen[-1]  # type: ignore[no-any-return]

    return last


def test_plain_chat_goes_over_the_messages_api(client: openai.OpenAI, upstream: Any) -> None:
    r = client.chat.completions.create(
        model=SONNET, messages=[{"role": "user", "content": "Hello Claude"}]
    )
    assert r.model == SONNET and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.content and r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.total_tokens > 0
    seen = upstream()
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    assert seen["headers"]["x-api-key"] != ""
    assert seen["body"]["model"] == "claude-sonnet-4-6"
    assert seen["body"]["max_tokens"] == 8192  # required upstream: the profile default


def test_multi_turn_with_system_prompt_and_cached_tokens(
    client: openai.OpenAI, upstream: Any
) -> None:
    system = "You are a meticulous assistant. " * 12  # long enough to be "cached"
    r = client.chat.completions.create(
        model="claude-opus-4-6",
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me about tea."},
            {"role": "user", "content": "Briefly."},
        ],
    )
    assert r.choices[0].message.content
    body = upstream()["body"]
    assert body["system"] == system
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    usage = r.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (
        usage.prompt_tokens_details.cached_tokens and usage.prompt_tokens_details.cached_tokens > 0
    )
    assert usage.prompt_tokens > usage.prompt_tokens_details.cached_tokens


def test_streaming_text(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=SONNET,
            messages=[{"role": "user", "content": "Tell me a story"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 10
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.total_tokens > 0
    assert {c.id for c in chunks} == {chunks[0].id}


def test_streaming_parallel_tool_calls_accumulate_in_order(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=SONNET,
        messages=[{"role": "user", "content": "Use get_weather for Paris and get_time too"}],
        tools=[WEATHER, TIME],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                if tc.id:
                    assert not slot["id"], "id only in the first delta"
                    slot["id"], slot["name"] = tc.id, tc.function.name or ""
                slot["args"] += tc.function.arguments or ""
            finish = c.finish_reason or finish
    assert finish == "tool_calls"
    assert sorted(calls) == [0, 1]
    by_name = {v["name"]: json.loads(v["args"]) for v in calls.values()}
    jsonschema.validate(by_name["get_weather"], WEATHER["function"]["parameters"])
    jsonschema.validate(by_name["get_time"], TIME["function"]["parameters"])


def test_full_tool_round_trip(client: openai.OpenAI, upstream: Any) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Rome?"}]
    r = client.chat.completions.create(
        model=SONNET, messages=messages, tools=[WEATHER], tool_choice="required"
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.tool_calls
    call = msg.tool_calls[0]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    messages.append(msg)
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "21 C, clear"})
    r2 = client.chat.completions.create(model=SONNET, messages=messages, tools=[WEATHER])
    assert r2.choices[0].finish_reason == "stop"
    assert "21 C" in (r2.choices[0].message.content or "")
    turns = upstream()["body"]["messages"]
    assert turns[1]["content"][-1]["type"] == "tool_use"
    assert turns[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": call.id,
        "content": "21 C, clear",
    }


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("model", [SONNET, "claude-haiku-4-5-20251001"])
def test_json_schema_output_validates(client: openai.OpenAI, upstream: Any, model: str) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "A big city, as JSON"}],
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": SCHEMA}},
    )
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), SCHEMA)
    body = upstream()["body"]
    if model == SONNET:
        assert body["output_config"]["format"]["schema"] == SCHEMA
    else:  # no native structured outputs: forced tool, answer returned as content
        assert body["tool_choice"] == {"type": "tool", "name": "json_output"}


def test_image_parts(client: openai.OpenAI, upstream: Any) -> None:
    r = client.chat.completions.create(
        model=SONNET,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these images?"},
                    {"type": "image_url", "image_url": {"url": PNG_1PX}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content
    blocks = upstream()["body"]["messages"][0]["content"]
    assert (
        blocks[1]["source"]["type"] == "base64" and blocks[1]["source"]["media_type"] == "image/png"
    )
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}


def test_thinking_returns_reasoning_content_both_modes(
    client: openai.OpenAI, upstream: Any
) -> None:
    r = client.chat.completions.create(
        model="claude-opus-4-7",
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        reasoning_effort="medium",
    )
    extra = r.choices[0].message.model_extra or {}
    assert extra.get("reasoning_content")
    assert extra["thinking_blocks"][0]["signature"]
    assert upstream()["body"]["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    reasoning = ""
    for chunk in client.chat.completions.create(
        model="claude-opus-4-7",
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        reasoning_effort="low",
        stream=True,
    ):
        if chunk.choices:
            reasoning += (chunk.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
    assert reasoning


def test_thinking_tool_conversation_replays_signed_blocks(
    client: openai.OpenAI, upstream: Any
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Use get_weather for Oslo"}]
    r = client.chat.completions.create(
        model=SONNET, messages=messages, tools=[WEATHER], reasoning_effort="low"
    )
    msg = r.choices[0].message
    assert msg.tool_calls and (msg.model_extra or {}).get("thinking_blocks")
    messages.append(msg)  # the SDK object, extension fields included, as users do
    messages.append({"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "-3 C"})
    r2 = client.chat.completions.create(
        model=SONNET, messages=messages, tools=[WEATHER], reasoning_effort="low"
    )
    assert r2.choices[0].message.content
    assistant = upstream()["body"]["messages"][1]["content"]
    assert assistant[0]["type"] == "thinking" and assistant[0]["signature"]


def test_n3_fans_out_and_sums_usage(client: openai.OpenAI) -> None:
    one = client.chat.completions.create(
        model=SONNET, messages=[{"role": "user", "content": "Name a fruit"}]
    )
    r = client.chat.completions.create(
        model=SONNET, messages=[{"role": "user", "content": "Name a fruit"}], n=3
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content for c in r.choices)
    assert r.usage is not None and one.usage is not None
    assert r.usage.completion_tokens == 3 * one.usage.completion_tokens


def test_n2_stream_interleaves_choices(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=SONNET,
            messages=[{"role": "user", "content": "Name a fruit"}],
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    finished = sorted(
        c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason
    )
    assert finished == [0, 1]
    assert [c for c in chunks if not c.choices] == [chunks[-1]]
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens > 0


def test_stop_sequence(client: openai.OpenAI, upstream: Any) -> None:
    r = client.chat.completions.create(
        model=SONNET,
        messages=[{"role": "user", "content": "alpha beta gamma delta"}],
        stop="gamma",
    )
    assert "gamma" not in (r.choices[0].message.content or "")
    assert r.choices[0].finish_reason == "stop"
    assert upstream()["body"]["stop_sequences"] == ["gamma"]


@pytest.mark.parametrize(
    ("directive", "exc", "status"),
    [
        ("error=400", openai.BadRequestError, 400),
        ("error=401", openai.APIStatusError, 502),
        ("error=403", openai.APIStatusError, 502),
        ("error=404", openai.NotFoundError, 404),
        ("error=413", openai.APIStatusError, 413),
        ("error=429", openai.RateLimitError, 429),
        ("error=402", openai.RateLimitError, 429),
        ("error=500", openai.InternalServerError, 500),
        ("error=529", openai.InternalServerError, 503),
    ],
)
def test_each_error_class(
    client: openai.OpenAI, directive: str, exc: type[openai.APIStatusError], status: int
) -> None:
    with pytest.raises(exc) as e:
        client.chat.completions.create(
            model=SONNET, messages=[{"role": "user", "content": f"hi [sandbox:{directive}]"}]
        )
    assert e.value.status_code == status
    body = e.value.response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    if status == 429 and directive == "error=429":
        assert e.value.response.headers.get("retry-after")


def test_mid_stream_error_event_ends_the_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=SONNET,
        messages=[{"role": "user", "content": "Tell me a story [sandbox:stream_error]"}],
        stream=True,
    )
    with pytest.raises(openai.APIError) as e:
        for _ in stream:
            pass
    assert "Overloaded" in str(e.value)


def test_fan_out_fails_as_one_when_a_call_fails(server: Server, client: openai.OpenAI) -> None:
    faults = sandbox_url(server) + "/_sandbox/faults"
    httpx.post(faults, json={"model": "claude-sonnet-4-6", "error": 529, "count": 1})
    try:
        with pytest.raises(openai.InternalServerError) as e:
            client.chat.completions.create(
                model=SONNET, messages=[{"role": "user", "content": "Name a fruit"}], n=3
            )
        assert e.value.status_code == 503
    finally:
        httpx.delete(faults)
