"""Table-driven: each invalid request gets the right status, error.type and error.param,
before any upstream call (the sandbox must not see any of them)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import Server, sandbox_url

U = [{"role": "user", "content": "hi"}]
M = "gpt-5.1"
IRE = "invalid_request_error"


def req(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": M, "messages": U}
    body.update(kw)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()
FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

CASES: list[tuple[str, dict[str, Any], int, str, str | None]] = [
    ("missing model", req(model=_DROP), 400, IRE, "model"),
    ("model not a string", req(model=5), 400, IRE, "model"),
    ("empty model", req(model=""), 400, IRE, "model"),
    ("missing messages", req(messages=_DROP), 400, IRE, "messages"),
    ("messages not a list", req(messages="hi"), 400, IRE, "messages"),
    ("empty messages", req(messages=[]), 400, IRE, "messages"),
    ("unknown role", req(messages=[{"role": "robot", "content": "x"}]), 400, IRE,
     "messages[0].role"),
    ("missing role", req(messages=[{"content": "x"}]), 400, IRE, "messages[0].role"),
    ("user without content", req(messages=[{"role": "user"}]), 400, IRE, "messages[0].content"),
    ("content wrong type", req(messages=[{"role": "user", "content": 5}]), 400, IRE,
     "messages[0].content"),
    ("unknown content part", req(messages=[{"role": "user", "content": [{"type": "video"}]}]),
     400, IRE, "messages[0].content[0].type"),
    ("text part without text", req(messages=[{"role": "user", "content": [{"type": "text"}]}]),
     400, IRE, "messages[0].content[0].text"),
    ("bad image url", req(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]), 400, IRE,
     "messages[0].content[0].image_url.url"),
    ("bad image detail", req(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "ultra"}}]}]),
     400, IRE, "messages[0].content[0].image_url.detail"),
    ("image in system message", req(messages=[{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, *U]), 400, IRE,
     "messages[0].content[0].type"),
    ("tool message without id", req(messages=[*U, {"role": "tool", "content": "x"}]), 400, IRE,
     "messages[1].tool_call_id"),
    ("tool message without call", req(messages=[*U, {"role": "tool", "content": "x",
                                                     "tool_call_id": "call_1"}]), 400, IRE,
     "messages[1].tool_call_id"),
    ("assistant without content", req(messages=[*U, {"role": "assistant"}, *U]), 400, IRE,
     "messages[1].content"),
    ("unknown message field", req(messages=[{"role": "user", "content": "x", "mood": 1}]), 400,
     IRE, "messages[0].mood"),
    ("unknown top-level field", req(temprature=1), 400, IRE, "temprature"),
    ("temperature too high", req(temperature=2.5), 400, IRE, "temperature"),
    ("temperature negative", req(temperature=-0.1), 400, IRE, "temperature"),
    ("temperature string", req(temperature="hot"), 400, IRE, "temperature"),
    ("top_p above 1", req(top_p=1.5), 400, IRE, "top_p"),
    ("frequency_penalty low", req(frequency_penalty=-3), 400, IRE, "frequency_penalty"),
    ("presence_penalty high", req(presence_penalty=2.5), 400, IRE, "presence_penalty"),
    ("max_tokens zero", req(max_tokens=0), 400, IRE, "max_tokens"),
    ("max_tokens float", req(max_tokens=1.5), 400, IRE, "max_tokens"),
    ("max_completion_tokens negative", req(max_completion_tokens=-1), 400, IRE,
     "max_completion_tokens"),
    ("both max token params", req(max_tokens=5, max_completion_tokens=5), 400, IRE,
     "max_tokens"),
    ("n zero", req(n=0), 400, IRE, "n"),
    ("n too large", req(n=129), 400, IRE, "n"),
    ("stop too many", req(stop=["a", "b", "c", "d", "e"]), 400, IRE, "stop"),
    ("stop wrong type", req(stop=5), 400, IRE, "stop"),
    ("stop empty list", req(stop=[]), 400, IRE, "stop"),
    ("seed not int", req(seed="x"), 400, IRE, "seed"),
    ("user not string", req(user=5), 400, IRE, "user"),
    ("stream not bool", req(stream="yes"), 400, IRE, "stream"),
    ("stream_options without stream", req(stream_options={"include_usage": True}), 400, IRE,
     "stream_options"),
    ("stream_options unknown key", req(stream=True, stream_options={"x": 1}), 400, IRE,
     "stream_options.x"),
    ("logprobs not bool", req(logprobs="yes"), 400, IRE, "logprobs"),
    ("top_logprobs too high", req(logprobs=True, top_logprobs=21), 400, IRE, "top_logprobs"),
    ("top_logprobs without logprobs", req(top_logprobs=2), 400, IRE, "top_logprobs"),
    ("logit_bias out of range", req(logit_bias={"50256": 101}), 400, IRE, "logit_bias"),
    ("logit_bias non-token key", req(logit_bias={"hello": 1}), 400, IRE, "logit_bias"),
    ("tools not a list", req(tools={}), 400, IRE, "tools"),
    ("tool unknown type", req(tools=[{"type": "magic"}]), 400, IRE, "tools[0].type"),
    ("tool without function", req(tools=[{"type": "function"}]), 400, IRE, "tools[0].function"),
    ("tool bad name", req(tools=[{"type": "function", "function": {"name": "a b"}}]), 400, IRE,
     "tools[0].function.name"),
    ("tool parameters not object schema", req(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "string"}}}]), 400, IRE,
     "tools[0].function.parameters"),
    ("tool_choice bad string", req(tools=[FN], tool_choice="sometimes"), 400, IRE,
     "tool_choice"),
    ("tool_choice unknown function", req(tools=[FN], tool_choice={
        "type": "function", "function": {"name": "g"}}), 400, IRE, "tool_choice.function.name"),
    ("tool_choice without tools", req(tool_choice="required"), 400, IRE, "tool_choice"),
    ("parallel_tool_calls not bool", req(parallel_tool_calls="yes"), 400, IRE,
     "parallel_tool_calls"),
    ("response_format unknown type", req(response_format={"type": "xml"}), 400, IRE,
     "response_format.type"),
    ("json_schema without name", req(response_format={"type": "json_schema",
                                                       "json_schema": {"schema": {}}}), 400, IRE,
     "response_format.json_schema.name"),
    ("reasoning_effort unknown", req(reasoning_effort="extreme"), 400, IRE, "reasoning_effort"),
    ("metadata non-string value", req(metadata={"a": 1}), 400, IRE, "metadata"),
    ("service_tier unknown", req(service_tier="gold"), 400, IRE, "service_tier"),
    ("developer message content wrong", req(messages=[{"role": "developer", "content": None}]),
     400, IRE, "messages[0].content"),
    # model-profile rules, checked before any upstream call
    ("gpt-5.1 presence_penalty", req(presence_penalty=0.5), 400, IRE, "presence_penalty"),
    ("gpt-5.1 effort unsupported", req(reasoning_effort="xhigh"), 400, IRE, "reasoning_effort"),
    ("thinking top_p", req(model="gpt-5.1-thinking", top_p=0.5), 400, IRE, "top_p"),
    ("thinking logprobs", req(model="gpt-5.1-thinking", logprobs=True), 400, IRE, "logprobs"),
    ("gpt max_completion_tokens ceiling", req(max_completion_tokens=200_000), 400, IRE,
     "max_completion_tokens"),
    ("claude temperature above 1", req(model="claude-opus-4-7", temperature=1.5), 400, IRE,
     "temperature"),
    ("claude logprobs", req(model="claude-4.5", logprobs=True), 400, IRE, "logprobs"),
    ("claude seed", req(model="claude-4.5", seed=1), 400, IRE, "seed"),
    ("gemini logit_bias", req(model="gemini-2.5-flash", logit_bias={"1": 5}), 400, IRE,
     "logit_bias"),
    ("gemini max_tokens ceiling", req(model="gemini-3-pro", max_tokens=70_000), 400, IRE,
     "max_tokens"),
    # model and routing
    ("unknown model", req(model="gpt-9"), 404, IRE, "model"),
]  # fmt: skip


def test_table_has_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


@pytest.fixture(scope="module")
def post(server: Server, api_key: str) -> Any:
    client = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    )

    def _post(body: Any, **kw: Any) -> httpx.Response:
        return client.post("/chat/chat/completions", json=body, **kw)

    _post.client = client  # type: ignore[attr-defined]
    return _post


@pytest.mark.parametrize(
    ("body", "status", "etype", "param"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_invalid_request(post: Any, body: Any, status: int, etype: str, param: str | None) -> None:
    r = post(body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == etype
    assert err["param"] == param, err
    assert err["message"]
    assert r.headers["x-request-id"].startswith("chatcmpl-")
    if status == 404:
        assert err["code"] == "model_not_found"


def test_malformed_json_is_400(post: Any) -> None:
    r = post.client.post(
        "/chat/completions",
        content=b'{"model": "gpt-5.1", ',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_non_object_body_is_400(post: Any) -> None:
    r = post([1, 2])
    assert r.status_code == 400 and r.json()["error"]["type"] == IRE


def test_wrong_content_type_is_415(post: Any) -> None:
    r = post.client.post(
        "/chat/completions", content=b"model=gpt-5.1", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 415
    assert r.json()["error"]["type"] == IRE


def test_body_over_limit_is_413(server: Server, post: Any) -> None:
    big = "x" * (20 * 1024 * 1024 + 10)
    r = post(req(messages=[{"role": "user", "content": big}]))
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_wrong_method_and_unknown_path(server: Server, post: Any) -> None:
    r = post.client.get("/chat/completions")
    assert r.status_code == 405 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = post.client.post("/nope", json={})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"


def test_health_and_ready(server: Server) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    r = httpx.get(server.url + "/ready")
    assert r.status_code == 200 and r.json()["database"] == "ok"


def test_invalid_requests_never_reach_the_upstream(server: Server, post: Any) -> None:
    vendor = sandbox_url(server) + "/_sandbox/requests"
    httpx.delete(vendor)
    for _name, body, status, _etype, _param in CASES:
        assert post(body).status_code == status
    assert httpx.get(vendor).json() == []
