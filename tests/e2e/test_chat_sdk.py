"""The gateway end to end, through the official openai Python SDK, against the sandbox."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.support import Server, sandbox_url

CATALOG = [
    "gpt-5.1",
    "gpt-5.1-all",
    "gpt-5.1-thinking",
    "gpt-5.1-thinking-all",
    "gpt-5.2",
    "gpt-5.3",
    "gpt-5.3-codex",
    "gpt-5.4",
    "gemini-3-pro",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-3-flash",
    "gemini-3.1-pro",
    "claude-4.5",
    "claude-opus-4-6",
    "claude-haiku-4-5-20251001",
    "claude-sonnet-4-6",
    "claude-opus-4-7",
]


@pytest.fixture(scope="module")
def client(server: Server, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=api_key, base_url=server.url + "/chat", max_retries=0)


# the endpoint each catalog model must reach on its vendor's emulator (no fallback to
# another protocol)
ENDPOINT = {
    **dict.fromkeys(
        ["gpt-5.1", "gpt-5.1-thinking", "gpt-5.2", "gpt-5.3", "gpt-5.4"], "/v1/chat/completions"
    ),
    **dict.fromkeys(["gpt-5.1-all", "gpt-5.1-thinking-all", "gpt-5.3-codex"], "/v1/responses"),
    **dict.fromkeys(
        [
            "claude-4.5",
            "claude-opus-4-6",
            "claude-haiku-4-5-20251001",
            "claude-sonnet-4-6",
            "claude-opus-4-7",
        ],
        "/v1/messages",
    ),
    "gemini-3-pro": "/v1beta/models/gemini-3-pro-preview:generateContent",
    "gemini-2.5-pro": "/v1beta/models/gemini-2.5-pro:generateContent",
    "gemini-2.5-flash": "/v1beta/models/gemini-2.5-flash:generateContent",
    "gemini-3-flash": "/v1beta/models/gemini-3-flash-preview:generateContent",
    "gemini-3.1-pro": "/v1beta/models/gemini-3.1-pro-preview:generateContent",
}


def test_every_catalog_model_answers_over_its_own_protocol(
    server: Server, client: openai.OpenAI
) -> None:
    assert sorted(ENDPOINT) == sorted(CATALOG)
    log = sandbox_url(server) + "/_sandbox/requests"
    for model in CATALOG:
        httpx.delete(log)
        r = client.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
            ],
        )
        assert r.model == model
        assert r.id.startswith("chatcmpl-")
        assert r.object == "chat.completion"
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].message.content
        assert r.choices[0].finish_reason == "stop"
        assert r.usage is not None
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
        (seen,) = httpx.get(log).json()
        assert seen["path"] == ENDPOINT[model], model


def test_v1_base_url_works_unchanged(server: Server, api_key: str) -> None:
    c = openai.OpenAI(api_key=api_key, base_url=server.url + "/v1", max_retries=0)
    r = c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content


def test_stream_chunks_share_id_created_model_and_end_with_done(
    server: Server, api_key: str
) -> None:
    body = {
        "model": "claude-sonnet-4-6",
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "stream": True,
    }
    with httpx.stream(
        "POST",
        server.url + "/chat/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_bytes()).decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}
    assert {c["model"] for c in chunks} == {"claude-sonnet-4-6"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert all("usage" not in c for c in chunks), "usage was not asked for"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(text) > 10


def test_stream_include_usage_adds_final_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-5.1",
        messages=[{"role": "user", "content": "Tell me a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_n_choices(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "Name a colour"}], n=3
    )
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3


def test_n_choices_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-5.2", messages=[{"role": "user", "content": "Name a colour"}], n=2, stream=True
    )
    finished = {c.choices[0].index for c in stream if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


def test_tool_call_arguments_valid_against_schema(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-5.1",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    follow = client.chat.completions.create(
        model="gpt-5.1",
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"},
        ],
        tools=[WEATHER],
    )
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content


def test_stream_tool_call_arguments_arrive_in_order(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="claude-opus-4-7",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    args, name, finish = "", None, None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                name = name or tc.function.name
                args += tc.function.arguments or ""
            finish = c.finish_reason or finish
    assert name == "get_weather" and finish == "tool_calls"
    jsonschema.validate(json.loads(args), WEATHER["function"]["parameters"])


def test_response_format_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model="gemini-3-pro",
        messages=[{"role": "user", "content": "Describe a person"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), schema)


def test_documented_max_tokens_works_on_reasoning_model(client: openai.OpenAI) -> None:
    # gpt-5.1 upstream refuses max_tokens; the profile renames it to max_completion_tokens.
    r = client.chat.completions.create(
        model="gpt-5.1", messages=[{"role": "user", "content": "Tell me a story"}], max_tokens=5
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens <= 5


def test_thinking_variant_reports_reasoning_tokens(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-5.1-thinking", messages=[{"role": "user", "content": "Ball cost?"}]
    )
    assert r.usage is not None
    details = r.usage.completion_tokens_details
    assert details is not None and (details.reasoning_tokens or 0) > 0


def test_stop_sequence(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-5.2",
        messages=[{"role": "user", "content": "alpha beta gamma delta"}],
        stop=["gamma"],
    )
    assert "gamma" not in (r.choices[0].message.content or "")
    assert r.choices[0].finish_reason == "stop"


def test_profile_rejects_what_the_model_cannot_honour(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="gpt-5.1-thinking",
            messages=[{"role": "user", "content": "hi"}],
            temperature=0.2,
        )
    assert e.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="claude-sonnet-4-6",
            messages=[{"role": "user", "content": "hi"}],
            top_p=0.9,
            temperature=0.5,
        )
    assert e.value.body["param"] == "top_p"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="claude-haiku-4-5-20251001",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=100_000,
        )
    assert e.value.body["param"] == "max_tokens"  # type: ignore[index]
    # gpt-5.1 without reasoning (its default) accepts temperature
    r = client.chat.completions.create(
        model="gpt-5.1", messages=[{"role": "user", "content": "hi"}], temperature=0.2
    )
    assert r.choices[0].message.content


def test_models_list_is_openai_shaped(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert sorted(ids) == sorted(CATALOG)
    m = client.models.retrieve("gpt-5.1")
    assert m.id == "gpt-5.1" and m.object == "model"


def test_key_restricted_to_models(server: Server) -> None:
    key = server.create_key("narrow", models=["gpt-5.1"])
    c = openai.OpenAI(api_key=key, base_url=server.url + "/chat", max_retries=0)
    assert [m.id for m in c.models.list()] == ["gpt-5.1"]
    with pytest.raises(openai.PermissionDeniedError):
        c.chat.completions.create(model="gpt-5.2", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"


def test_missing_and_wrong_key_are_401(server: Server) -> None:
    c = openai.OpenAI(api_key="sk-cg-wrong", base_url=server.url + "/chat", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "invalid_api_key"
    r = httpx.post(server.url + "/chat/completions", json={})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_revoked_key_is_refused_at_once(server: Server) -> None:
    key = server.create_key("short-lived")
    c = openai.OpenAI(api_key=key, base_url=server.url + "/chat", max_retries=0)
    c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "x"}])
    listed = server.admin("GET", "/admin/keys").json()["data"]
    key_id = next(k["id"] for k in listed if k["name"] == "short-lived")
    assert all("key" not in k for k in listed), "the admin list must never return keys"
    assert server.admin("DELETE", f"/admin/keys/{key_id}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "x"}])
    assert server.admin("DELETE", f"/admin/keys/{key_id}").status_code == 404


def test_upstream_429_keeps_status_and_retry_after(server: Server, api_key: str) -> None:
    c = openai.OpenAI(api_key=api_key, base_url=server.url + "/chat", max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(
            model="gpt-5.1", messages=[{"role": "user", "content": "hi [sandbox:error=429]"}]
        )
    assert e.value.response.headers.get("retry-after")


@pytest.mark.parametrize("code", [500, 503])
def test_upstream_5xx_is_openai_error(client: openai.OpenAI, code: int) -> None:
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(
            model="gpt-5.1", messages=[{"role": "user", "content": f"hi [sandbox:error={code}]"}]
        )
    assert e.value.status_code == code
    assert set(e.value.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]


def test_upstream_hang_is_504_after_first_byte_timeout(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model="gpt-5.1", messages=[{"role": "user", "content": "hi [sandbox:hang]"}]
        )
    assert e.value.status_code == 504


def test_stream_cut_midway_raises_in_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-5.1",
        messages=[{"role": "user", "content": "Tell me a story [sandbox:cut=3]"}],
        stream=True,
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_every_request_is_recorded(server: Server, client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gemini-2.5-pro", messages=[{"role": "user", "content": "count me"}]
    )
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="gemini-2.5-pro", messages=[{"role": "user", "content": "x"}], top_p=5
        )
    bad_id = e.value.response.headers["x-request-id"]
    rows = server.wait_usage_ids({r.id, bad_id})
    row = rows[r.id]
    assert row["model"] == "gemini-2.5-pro"
    assert row["upstream_model"] == "gemini-2.5-pro"
    assert row["provider"] == "gemini"
    assert row["status"] == 200 and row["stream"] == 0
    assert row["prompt_tokens"] == r.usage.prompt_tokens  # type: ignore[union-attr]
    assert row["completion_tokens"] == r.usage.completion_tokens  # type: ignore[union-attr]
    assert row["latency_ms"] > 0
    assert rows[bad_id]["status"] == 400 and rows[bad_id]["error_type"] == "invalid_value"


def test_stream_idle_timeout_ends_stream_with_error_event(server: Server, api_key: str) -> None:
    body = {
        "model": "gpt-5.2",
        "messages": [{"role": "user", "content": "slow [sandbox:chunk_delay=3000]"}],
        "stream": True,
    }
    with httpx.stream(
        "POST",
        server.url + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=20,
    ) as r:
        assert r.status_code == 200
        raw = b"".join(r.iter_bytes()).decode()
    events = raw.strip().split("\n\n")
    assert events[-1] == "data: [DONE]"  # an error event, then the end of the stream
    err = json.loads(events[-2].removeprefix("data: "))["error"]
    assert err["code"] == "upstream_timeout" and set(err) == {"message", "type", "param", "code"}


def test_client_disconnect_mid_stream_is_recorded(server: Server, api_key: str) -> None:
    body = {
        "model": "gpt-5.4",
        "messages": [{"role": "user", "content": "long [sandbox:chunk_delay=200]"}],
        "stream": True,
    }
    with httpx.stream(
        "POST",
        server.url + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
    ) as r:
        rid = r.headers["x-request-id"]
        next(r.iter_bytes())
    row = server.wait_usage_ids({rid}).get(rid)
    assert row is not None
    assert row["status"] == 499 and row["error_type"] == "client_disconnected"
    assert row["stream"] == 1


def test_upstream_sees_the_translated_request(server: Server, client: openai.OpenAI) -> None:
    vendor = sandbox_url(server) + "/_sandbox/requests"
    httpx.delete(vendor)
    client.chat.completions.create(
        model="gpt-5.1-thinking",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=300,
        stream=True,
    ).close()
    seen = httpx.get(vendor).json()[-1]["body"]
    assert seen["model"] == "gpt-5.1"
    assert seen["reasoning_effort"] == "high"  # the -thinking deployment default
    assert seen["max_completion_tokens"] == 300 and "max_tokens" not in seen
    assert seen["stream_options"] == {"include_usage": True}
