"""The same end-to-end matrix for every upstream protocol: the official openai SDK in front,
each vendor's strict emulator behind (Anthropic Messages, Gemini, OpenAI Responses)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.support import PNG_1PX, Server

MODELS = ["claude-sonnet-4-6", "gemini-3-pro", "gemini-2.5-flash", "gpt-5.3-codex"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
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
            "additionalProperties": False,
        },
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}

pytestmark = pytest.mark.parametrize("model", MODELS)


@pytest.fixture(scope="module")
def client(server: Server, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=api_key, base_url=server.url + "/chat", max_retries=0)


def _extra(obj: Any) -> dict[str, Any]:
    return obj.model_extra or {}


def test_plain(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    assert r.model == model and r.object == "chat.completion"
    assert r.choices[0].message.content and r.choices[0].finish_reason == "stop"
    assert (
        r.usage is not None
        and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    )


def test_multi_turn_with_system(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Tell me about tea"},
        ],
    )
    assert r.choices[0].message.content


def test_streaming(client: openai.OpenAI, model: str) -> None:
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Tell me a story"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id} and {c.model for c in chunks} == {model}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > 10
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.total_tokens > 0


def test_streaming_parallel_tool_calls(client: openai.OpenAI, model: str) -> None:
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Use get_weather for Paris and get_time too"}],
        tools=[WEATHER, TIME],
        stream=True,
    ):
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                if tc.id:
                    slot["id"], slot["name"] = tc.id, tc.function.name or ""
                slot["args"] += tc.function.arguments or ""
            finish = c.finish_reason or finish
    assert finish == "tool_calls" and sorted(calls) == [0, 1]
    assert all(v["id"] for v in calls.values())
    by_name = {v["name"]: json.loads(v["args"]) for v in calls.values()}
    jsonschema.validate(by_name["get_weather"], WEATHER["function"]["parameters"])
    jsonschema.validate(by_name["get_time"], TIME["function"]["parameters"])


def test_tool_round_trip(client: openai.OpenAI, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Rome?"}]
    r = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER], tool_choice="required"
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls" and msg.tool_calls
    call = msg.tool_calls[0]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    messages += [msg, {"role": "tool", "tool_call_id": call.id, "content": "21 C, clear"}]
    r2 = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert r2.choices[0].finish_reason == "stop"
    assert "21 C" in (r2.choices[0].message.content or "")


def test_json_schema(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "A big city, as JSON"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
        },
    )
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), SCHEMA)


def test_image(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": PNG_1PX}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content


def test_reasoning_both_modes(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
        reasoning_effort="low",
    )
    assert _extra(r.choices[0].message).get("reasoning_content")
    assert r.usage is not None
    if not model.startswith("claude"):  # Anthropic does not count thinking tokens apart
        assert r.usage.completion_tokens_details is not None
        assert (r.usage.completion_tokens_details.reasoning_tokens or 0) > 0
    reasoning = "".join(
        _extra(c.choices[0].delta).get("reasoning_content") or ""
        for c in client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Why is the sky blue?"}],
            reasoning_effort="low",
            stream=True,
        )
        if c.choices
    )
    assert reasoning


def test_n3(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a fruit"}], n=3
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content for c in r.choices)


def test_stop(client: openai.OpenAI, model: str) -> None:
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "alpha beta gamma delta"}],
        stop=["gamma"],
    )
    assert "gamma" not in (r.choices[0].message.content or "")
    assert r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("status", "exc", "client_status"),
    [
        (400, openai.BadRequestError, 400),
        (403, openai.APIStatusError, 502),
        (404, openai.NotFoundError, 404),
        (429, openai.RateLimitError, 429),
        (500, openai.InternalServerError, 500),
        (503, openai.InternalServerError, 503),
    ],
)
def test_error_classes(
    client: openai.OpenAI,
    model: str,
    status: int,
    exc: type[openai.APIStatusError],
    client_status: int,
) -> None:
    with pytest.raises(exc) as e:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"hi [sandbox:error={status}]"}]
        )
    assert e.value.status_code == client_status
    assert set(e.value.response.json()["error"]) == {"message", "type", "param", "code"}
    if status == 429:
        assert e.value.response.headers.get("retry-after")


def test_mid_stream_error(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Tell me a story [sandbox:stream_error]"}],
        stream=True,
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
