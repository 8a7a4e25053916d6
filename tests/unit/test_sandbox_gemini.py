"""The Gemini API sandbox (``/v1beta/models/{model}:generateContent``), over raw HTTP."""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from chatgate.sandbox._reply import count_tokens
from tests.support import Fetched, ThreadedSandbox, fetch

KEY = "AIza-sandbox-test-0123456789abcdef"
MODELS = (
    "gemini-3-pro-preview",
    "gemini-3.1-pro-preview",
    "gemini-3-flash-preview",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
)
G3 = "gemini-3-pro-preview"
G25 = "gemini-2.5-flash"
RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{20,}")
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "parametersJsonSchema": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City and country"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
        "additionalProperties": False,
    },
}
STOCK = {  # the OpenAPI-subset form (``parameters``), upper-case types
    "name": "get_stock_price",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "ticker": {"type": "STRING", "minLength": "1", "maxLength": "5"},
            "exchange": {"type": "STRING", "enum": ["NASDAQ", "NYSE"]},
            "days": {"type": "INTEGER", "minimum": 1, "maximum": 30},
            "note": {"type": "STRING", "nullable": True},
        },
        "required": ["ticker", "exchange", "days"],
    },
}
STOCK_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "ticker": {"type": "string", "minLength": 1, "maxLength": 5},
        "exchange": {"type": "string", "enum": ["NASDAQ", "NYSE"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 30},
        "note": {"type": ["string", "null"]},
    },
    "required": ["ticker", "exchange", "days"],
    "additionalProperties": False,
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24).decode()
USAGE_ORDER = ["promptTokenCount", "candidatesTokenCount", "totalTokenCount",
               "promptTokensDetails", "thoughtsTokenCount"]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# harness: the sandbox runs in a background thread with its own loop
# ---------------------------------------------------------------------------------------------


Running = ThreadedSandbox


def _serve(api_key: str | None) -> Iterator[Running]:
    running = ThreadedSandbox(api_key=api_key)
    yield running
    running.close()


@pytest.fixture(scope="module")
def sb() -> Iterator[Running]:
    yield from _serve(KEY)


@pytest.fixture(autouse=True)
def _clean(sb: Running) -> None:
    raw(sb, "DELETE", "/_sandbox/faults", key=None)
    raw(sb, "DELETE", "/_sandbox/requests", key=None)


class Raw(Fetched):
    def frames(self) -> list[bytes]:
        """SSE frames: ``data: <json>\\r\\n\\r\\n`` each, nothing else (checked)."""
        if self.error is None:
            assert self.body.endswith(b"\r\n\r\n"), self.body[-80:]
        frames = [f for f in self.body.split(b"\r\n\r\n") if f]
        for f in frames:
            assert f.startswith(b"data: ") and b"\n" not in f, f[:120]
        return frames

    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(f[6:]) for f in self.frames()]


def raw(
    sb: Running,
    method: str,
    path: str,
    body: Any = None,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    key: str | None = KEY,
    timeout: float = 10,
) -> Raw:
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["x-goog-api-key"] = key
    got = fetch(sb.base_url, method, path, body, data=data, headers=hdrs, timeout=timeout)
    return Raw(*got)


def gen(sb: Running, body: Any, model: str = G25, **kw: Any) -> Raw:
    return raw(sb, "POST", f"/v1beta/models/{model}:generateContent", body, **kw)


def sse(sb: Running, body: Any, model: str = G25, **kw: Any) -> Raw:
    return raw(sb, "POST", f"/v1beta/models/{model}:streamGenerateContent?alt=sse", body, **kw)


def arr(sb: Running, body: Any, model: str = G25, **kw: Any) -> Raw:
    return raw(sb, "POST", f"/v1beta/models/{model}:streamGenerateContent", body, **kw)


def req(text: str = "Hello sandbox, tell me a story", **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def cfg(text: str = "Hello sandbox", **config: Any) -> dict[str, Any]:
    return req(text, generationConfig=config)


def ok(sb: Running, body: dict[str, Any], model: str = G25, **kw: Any) -> dict[str, Any]:
    r = gen(sb, body, model, **kw)
    assert r.status == 200, r.body
    assert r.headers["content-type"] == "application/json; charset=UTF-8"
    return r.json()  # type: ignore[no-any-return]


def stream(sb: Running, body: dict[str, Any], model: str = G25, **kw: Any) -> list[dict]:
    r = sse(sb, body, model, **kw)
    assert r.status == 200, r.body
    assert r.headers["content-type"] == "text/event-stream"
    assert r.error is None
    return r.chunks()


def error_of(r: Raw, array: bool = False) -> dict[str, Any]:
    body = r.json()
    if array:
        assert isinstance(body, list) and len(body) == 1
        body = body[0]
    assert set(body) == {"error"}
    err = body["error"]
    assert {"code", "message", "status"} <= set(err) <= {"code", "message", "status", "details"}
    assert err["code"] == r.status
    return err  # type: ignore[no-any-return]


def parts(body: dict[str, Any], i: int = 0) -> list[dict[str, Any]]:
    return body["candidates"][i]["content"].get("parts", [])  # type: ignore[no-any-return]


def text_of(body: dict[str, Any], i: int = 0) -> str:
    return "".join(p.get("text", "") for p in parts(body, i) if not p.get("thought"))


def joined(chunks: list[dict[str, Any]], index: int = 0, thought: bool = False) -> str:
    out = ""
    for c in chunks:
        for cand in c.get("candidates", []):
            if cand["index"] != index:
                continue
            for p in cand["content"].get("parts", []):
                if "text" in p and bool(p.get("thought")) == thought:
                    out += p["text"]
    return out


def check_usage(u: dict[str, Any]) -> None:
    extra = u.get("candidatesTokenCount", 0) + u.get("thoughtsTokenCount", 0)
    extra += u.get("toolUsePromptTokenCount", 0)
    assert u["totalTokenCount"] == u["promptTokenCount"] + extra
    assert sum(d["tokenCount"] for d in u["promptTokensDetails"]) == u["promptTokenCount"]


def tools(*decls: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"functionDeclarations": list(decls)}]


# ---------------------------------------------------------------------------------------------
# plain text
# ---------------------------------------------------------------------------------------------


def test_generate_text_shape(sb: Running) -> None:
    body = ok(sb, req(systemInstruction={"parts": [{"text": "Be brief."}]}))
    assert list(body) == ["candidates", "usageMetadata", "modelVersion", "responseId"]
    assert body["modelVersion"] == G25 and RESPONSE_ID.fullmatch(body["responseId"])
    (cand,) = body["candidates"]
    assert list(cand) == ["content", "finishReason", "index"]
    assert cand["finishReason"] == "STOP" and cand["index"] == 0
    assert cand["content"]["role"] == "model"
    assert parts(body) == [{"text": text_of(body)}]  # no signature on 2.5 without thoughts
    assert text_of(body).startswith('You said: "Hello sandbox, tell me a story".')
    u = body["usageMetadata"]
    assert list(u) == USAGE_ORDER
    assert u["candidatesTokenCount"] == count_tokens(text_of(body))
    assert u["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": u["promptTokenCount"]}]
    check_usage(u)


def test_same_request_same_answer_new_ids(sb: Running) -> None:
    a, b = ok(sb, req()), ok(sb, req())
    assert a["candidates"] == b["candidates"] and a["usageMetadata"] == b["usageMetadata"]
    assert a["responseId"] != b["responseId"]
    assert text_of(ok(sb, req("something else"))) != text_of(a)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_answers_and_thinks(sb: Running, model: str) -> None:
    body = ok(sb, req(), model)
    assert body["modelVersion"] == model
    u = body["usageMetadata"]
    assert u["thoughtsTokenCount"] > 0
    check_usage(u)
    first = parts(body)[0]
    if model.startswith("gemini-3"):
        assert base64.b64decode(first["thoughtSignature"])  # Gemini 3 signs the first part
    else:
        assert "thoughtSignature" not in first


def test_api_key_in_query_and_snake_case_request(sb: Running) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "snake case please"}]}],
        "system_instruction": {"parts": [{"text": "S"}]},
        "generation_config": {"max_output_tokens": 400, "stop_sequences": ["zzz"],
                              "thinking_config": {"thinking_budget": 0}},
        "tools": [{"function_declarations": [{"name": "f", "parameters_json_schema": {}}]}],
        "tool_config": {"function_calling_config": {"mode": "AUTO"}},
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }  # fmt: skip
    r = raw(sb, "POST", f"/v1beta/models/{G25}:generateContent?key={KEY}", body, key=None)
    assert r.status == 200, r.body
    assert "thoughtsTokenCount" not in r.json()["usageMetadata"]


def test_image_input(sb: Running) -> None:
    body = req("What is in this picture?")
    body["contents"][0]["parts"].append({"inlineData": {"mimeType": "image/png", "data": PNG}})
    out = ok(sb, body)
    assert "I can see 1 image" in text_of(out)
    details = out["usageMetadata"]["promptTokensDetails"]
    assert details[0]["modality"] == "TEXT" and details[1] == {"modality": "IMAGE",
                                                                "tokenCount": 258}  # fmt: skip
    check_usage(out["usageMetadata"])


def test_multi_turn_and_model_prefill(sb: Running) -> None:
    body = {"contents": [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "answer"}]},
        {"parts": [{"text": "second"}]},  # role defaults to user
        {"role": "user", "parts": [{"text": "third"}]},  # consecutive user turns are fine
    ]}  # fmt: skip
    assert text_of(ok(sb, body)).startswith('You said: "third".')


# ---------------------------------------------------------------------------------------------
# generation config
# ---------------------------------------------------------------------------------------------


def test_max_output_tokens_truncates(sb: Running) -> None:
    body = ok(sb, cfg(maxOutputTokens=5, thinkingConfig={"thinkingBudget": 0}))
    cand = body["candidates"][0]
    assert cand["finishReason"] == "MAX_TOKENS"
    assert body["usageMetadata"]["candidatesTokenCount"] == 5 == count_tokens(text_of(body))


def test_thoughts_consume_max_output_tokens(sb: Running) -> None:
    body = ok(sb, cfg(maxOutputTokens=5), "gemini-2.5-pro")
    cand = body["candidates"][0]
    assert cand == {"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}
    u = body["usageMetadata"]
    assert u["thoughtsTokenCount"] == 5 and "candidatesTokenCount" not in u
    check_usage(u)


def test_stop_sequences(sb: Running) -> None:
    full = text_of(ok(sb, cfg("stop here")))
    body = ok(sb, cfg("stop here", stopSequences=["zzz", "here"]))
    assert body["candidates"][0]["finishReason"] == "STOP"
    assert text_of(body) == full[: full.index("here")] == 'You said: "stop '
    chunks = stream(sb, cfg("stop here", stopSequences=["zzz", "here"]))
    assert joined(chunks) == text_of(body)


def test_candidate_count(sb: Running) -> None:
    body = ok(sb, cfg(candidateCount=3))
    assert [c["index"] for c in body["candidates"]] == [0, 1, 2]
    texts = {text_of(body, i) for i in range(3)}
    assert len(texts) == 3
    u = body["usageMetadata"]
    assert u["candidatesTokenCount"] == sum(count_tokens(t) for t in texts)
    check_usage(u)
    chunks = stream(sb, cfg(candidateCount=3))
    assert [joined(chunks, i) for i in range(3)] == [text_of(body, i) for i in range(3)]
    assert chunks[-1]["usageMetadata"] == u


def test_logprobs(sb: Running) -> None:
    body = ok(sb, cfg(responseLogprobs=True, logprobs=3))
    cand = body["candidates"][0]
    result = cand["logprobsResult"]
    chosen = result["chosenCandidates"]
    assert "".join(c["token"] for c in chosen) == text_of(body)
    assert all(set(c) == {"token", "logProbability"} for c in chosen)
    assert len(result["topCandidates"]) == len(chosen)
    for top, pick in zip(result["topCandidates"], chosen, strict=True):
        probs = [c["logProbability"] for c in top["candidates"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert pick["token"] in [c["token"] for c in top["candidates"]]
    avg = sum(c["logProbability"] for c in chosen) / len(chosen)
    assert cand["avgLogprobs"] == pytest.approx(avg)
    plain = ok(sb, cfg(responseLogprobs=True))["candidates"][0]["logprobsResult"]
    assert set(plain) == {"chosenCandidates"}
    assert "logprobsResult" not in ok(sb, cfg())["candidates"][0]


SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 2},
    {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
    {"$defs": {"p": {"type": "object", "properties": {"x": {"type": "boolean"}},
                     "required": ["x"]}},
     "type": "object", "properties": {"p": {"$ref": "#/$defs/p"}}, "required": ["p"]},
]  # fmt: skip


@pytest.mark.parametrize("schema", SCHEMAS)
def test_response_json_schema(sb: Running, schema: dict[str, Any]) -> None:
    body = ok(sb, cfg("Give me data", responseMimeType="application/json",
                      responseJsonSchema=schema))  # fmt: skip
    jsonschema.validate(json.loads(text_of(body)), schema)


def test_response_schema_openapi_subset(sb: Running) -> None:
    body = ok(sb, cfg("Quote for Acme", responseMimeType="application/json",
                      responseSchema=STOCK["parameters"]), G3)  # fmt: skip
    jsonschema.validate(json.loads(text_of(body)), STOCK_JSON_SCHEMA)


def test_json_mode_and_enum_mode(sb: Running) -> None:
    body = ok(sb, cfg("json please", responseMimeType="application/json"))
    assert isinstance(json.loads(text_of(body)), dict)
    schema = {"type": "STRING", "enum": ["positive", "negative", "neutral"]}
    body = ok(sb, cfg("This is positive!", responseMimeType="text/x.enum", responseSchema=schema))
    assert text_of(body) == "positive"


def test_thinking_levels_and_budgets(sb: Running) -> None:
    def thoughts(model: str, **tc: Any) -> int:
        u = ok(sb, cfg(thinkingConfig=tc), model)["usageMetadata"]
        return int(u.get("thoughtsTokenCount", 0))

    assert thoughts(G3, thinkingLevel="low") < thoughts(G3, thinkingLevel="HIGH")
    flash = "gemini-3-flash-preview"
    assert 0 < thoughts(flash, thinkingLevel="minimal") < thoughts(flash, thinkingLevel="medium")
    assert thoughts("gemini-2.5-pro", thinkingBudget=128) == 128
    assert thoughts("gemini-2.5-pro", thinkingBudget=-1) > 0
    assert thoughts(G25, thinkingBudget=0) == 0


def test_include_thoughts(sb: Running) -> None:
    for model in (G3, "gemini-2.5-pro"):
        body = ok(sb, cfg("How do I cross the street?", thinkingConfig={"includeThoughts": True}),
                  model)  # fmt: skip
        first, second = parts(body)
        assert set(first) == {"text", "thought"} and first["thought"] is True
        assert set(second) == {"text", "thoughtSignature"}
        assert "How do I cross the street?" in first["text"]
        check_usage(body["usageMetadata"])


# ---------------------------------------------------------------------------------------------
# function calling
# ---------------------------------------------------------------------------------------------


def calls_of(body: dict[str, Any], i: int = 0) -> list[dict[str, Any]]:
    return [p for p in parts(body, i) if "functionCall" in p]


def test_function_call_when_named(sb: Running) -> None:
    body = ok(sb, req("Use get_weather for Paris, France", tools=tools(WEATHER)))
    cand = body["candidates"][0]
    assert cand["finishReason"] == "STOP"
    assert cand["finishMessage"] == "Model generated function call(s)."  # Gemini 2.5
    assert list(cand) == ["content", "finishReason", "index", "finishMessage"]
    (call,) = parts(body)
    assert set(call) == {"functionCall", "thoughtSignature"}
    assert set(call["functionCall"]) == {"name", "args"}  # no id from the Gemini API
    assert call["functionCall"]["name"] == "get_weather"
    jsonschema.validate(call["functionCall"]["args"], WEATHER["parametersJsonSchema"])
    check_usage(body["usageMetadata"])


def test_function_call_gemini3(sb: Running) -> None:
    body = ok(sb, req("What is the weather? Call the tool", tools=tools(WEATHER)), G3)
    cand = body["candidates"][0]
    assert list(cand) == ["content", "finishReason", "index"]  # no finishMessage on Gemini 3
    (call,) = parts(body)
    assert call["functionCall"]["name"] == "get_weather" and call["thoughtSignature"]


def test_no_call_unless_asked(sb: Running) -> None:
    body = ok(sb, req("What is the weather in Paris?", tools=tools(WEATHER)))
    assert not calls_of(body) and text_of(body)
    none = {"functionCallingConfig": {"mode": "NONE"}}
    body = ok(sb, req("Use get_weather", tools=tools(WEATHER), toolConfig=none))
    assert not calls_of(body)


def test_mode_any_and_allowed_names(sb: Running) -> None:
    any_mode = {"functionCallingConfig": {"mode": "ANY"}}
    body = ok(sb, req("hello", tools=tools(WEATHER, STOCK), toolConfig=any_mode))
    assert [c["functionCall"]["name"] for c in calls_of(body)] == ["get_weather"]
    only = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_stock_price"]}}
    body = ok(sb, req("hello get_weather", tools=tools(WEATHER, STOCK), toolConfig=only))
    (call,) = calls_of(body)
    assert call["functionCall"]["name"] == "get_stock_price"
    jsonschema.validate(call["functionCall"]["args"], STOCK_JSON_SCHEMA)


def test_parallel_calls_only_first_signed(sb: Running) -> None:
    body = ok(sb, req("Call get_weather and get_stock_price", tools=tools(WEATHER, STOCK)), G3)
    first, second = calls_of(body)
    assert [first["functionCall"]["name"], second["functionCall"]["name"]] == [
        "get_weather", "get_stock_price"]  # fmt: skip
    assert "thoughtSignature" in first and "thoughtSignature" not in second


def test_no_signature_without_thinking(sb: Running) -> None:
    body = req("Use get_weather", tools=tools(WEATHER),
               generationConfig={"thinkingConfig": {"thinkingBudget": 0}})  # fmt: skip
    (call,) = calls_of(ok(sb, body))
    assert set(call) == {"functionCall"}


def _round_trip(sb: Running, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    first = req("Use get_weather for Paris", tools=tools(WEATHER))
    out = ok(sb, first, model)
    model_turn = out["candidates"][0]["content"]
    follow = copy.deepcopy(first)
    follow["contents"] += [
        model_turn,
        {"role": "user", "parts": [{"functionResponse": {
            "name": "get_weather", "response": {"temperature": 21, "sky": "clear"}}}]},
    ]  # fmt: skip
    return follow, model_turn


@pytest.mark.parametrize("model", [G3, "gemini-2.5-pro"])
def test_function_response_round_trip(sb: Running, model: str) -> None:
    follow, _ = _round_trip(sb, model)
    body = ok(sb, follow, model)
    assert not calls_of(body)
    assert 'The get_weather tool returned "{"sky": "clear", "temperature": 21}"' in text_of(body)
    chunks = stream(sb, follow, model)
    assert joined(chunks) == text_of(body)


def test_tampered_signature_is_corrupted(sb: Running) -> None:
    follow, _ = _round_trip(sb, G3)
    follow["contents"][1]["parts"][0]["functionCall"]["args"]["location"] = "Elsewhere"
    r = gen(sb, follow, G3)
    assert r.status == 400 and error_of(r)["message"] == "Corrupted thought signature."
    # also on 2.5 (a sandbox signature is checked wherever it is found)
    follow, _ = _round_trip(sb, G25)
    follow["contents"][1]["parts"][0]["functionCall"]["name"] = "get_weather2"
    follow["tools"][0]["functionDeclarations"].append({**WEATHER, "name": "get_weather2"})
    follow["contents"][2]["parts"][0]["functionResponse"]["name"] = "get_weather2"
    assert gen(sb, follow, G25).status == 400


def test_url_safe_and_foreign_signatures_accepted(sb: Running) -> None:
    follow, turn = _round_trip(sb, G3)
    sig = turn["parts"][0]["thoughtSignature"]
    follow["contents"][1]["parts"][0]["thoughtSignature"] = (
        sig.replace("+", "-").replace("/", "_").rstrip("=")
    )  # the google-genai SDK re-encodes signatures URL-safe
    assert gen(sb, follow, G3).status == 200
    for foreign in ("skip_thought_signature_validator", base64.b64encode(b"real" * 20).decode()):
        follow["contents"][1]["parts"][0]["thoughtSignature"] = foreign
        assert gen(sb, follow, G3).status == 200


def test_gemini3_requires_signatures_in_current_turn_only(sb: Running) -> None:
    follow, _ = _round_trip(sb, G3)
    del follow["contents"][1]["parts"][0]["thoughtSignature"]
    r = gen(sb, follow, G3)
    assert r.status == 400
    msg = error_of(r)["message"]
    assert msg.startswith("Function call is missing a thought_signature in functionCall parts.")
    assert "function call `default_api:get_weather` , position 2." in msg
    assert gen(sb, follow, "gemini-2.5-pro").status == 200  # 2.5 does not insist
    # an earlier turn (before the last user text) needs none
    follow["contents"] += [
        {"role": "model", "parts": [{"text": "It is sunny."}]},
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]
    assert gen(sb, follow, G3).status == 200


def test_google_search_grounding(sb: Running) -> None:
    body = ok(sb, req("Who won the race yesterday?", tools=[{"googleSearch": {}}]), G3)
    meta = body["candidates"][0]["groundingMetadata"]
    assert meta["webSearchQueries"] == ["Who won the race yesterday?"]
    assert meta["groundingChunks"][0]["web"]["uri"].startswith("https://")
    u = body["usageMetadata"]
    assert u["toolUsePromptTokenCount"] > 0
    check_usage(u)
    chunks = stream(sb, req("Who won the race yesterday?", tools=[{"googleSearch": {}}]), G3)
    assert chunks[-1]["candidates"][0]["groundingMetadata"] == meta
    assert all("groundingMetadata" not in c["candidates"][0] for c in chunks[:-1])


# ---------------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------------


def test_sse_framing_and_usage(sb: Running) -> None:
    body = req("Stream this please")
    r = sse(sb, body)
    assert r.status == 200 and r.headers["content-type"] == "text/event-stream"
    assert b"[DONE]" not in r.body and b"event:" not in r.body
    # chunk JSON is written like the recorded streams: ": " after keys, "," alone between items
    first = r.frames()[0][6:]
    assert first == json.dumps(json.loads(first), ensure_ascii=False,
                               separators=(",", ": ")).encode()  # fmt: skip
    chunks = r.chunks()
    assert len(chunks) >= 3
    full = ok(sb, body)
    ids = {c["responseId"] for c in chunks}
    assert len(ids) == 1 and {c["modelVersion"] for c in chunks} == {G25}
    for c in chunks:
        assert list(c) == ["candidates", "usageMetadata", "modelVersion", "responseId"]
        check_usage(c["usageMetadata"])
    assert "candidatesTokenCount" not in chunks[0]["usageMetadata"]  # early chunks lack it
    counts = [c["usageMetadata"].get("candidatesTokenCount", 0) for c in chunks]
    assert counts == sorted(counts)  # cumulative
    assert [("finishReason" in c["candidates"][0]) for c in chunks] == [False] * (
        len(chunks) - 1) + [True]  # fmt: skip
    assert chunks[-1]["usageMetadata"] == full["usageMetadata"]  # the last chunk is authoritative
    assert joined(chunks) == text_of(full)
    assert all(len(c["candidates"][0]["content"]["parts"]) == 1 for c in chunks)  # new parts only


def test_gemini3_stream_ends_with_empty_text(sb: Running) -> None:
    chunks = stream(sb, req("hi there"), G3)
    last = chunks[-1]["candidates"][0]
    assert last["content"]["parts"] == [{"text": ""}] and last["finishReason"] == "STOP"
    assert "thoughtSignature" in chunks[0]["candidates"][0]["content"]["parts"][0]
    assert all("thoughtSignature" not in p for c in chunks[1:]
               for p in c["candidates"][0]["content"]["parts"])  # fmt: skip


def test_stream_thoughts_first(sb: Running) -> None:
    body = cfg("How do I cross the street?", thinkingConfig={"includeThoughts": True})
    chunks = stream(sb, body, "gemini-2.5-pro")
    kinds = ["thought" if c["candidates"][0]["content"]["parts"][0].get("thought") else "text"
             for c in chunks]  # fmt: skip
    n = kinds.count("thought")
    assert n >= 1 and kinds == ["thought"] * n + ["text"] * (len(kinds) - n)
    thoughts = [c["usageMetadata"]["thoughtsTokenCount"] for c in chunks]
    assert thoughts[:n] == sorted(thoughts[:n]) and len(set(thoughts[n - 1 :])) == 1
    assert all("candidatesTokenCount" not in c["usageMetadata"] for c in chunks[:n])
    assert "thoughtSignature" in chunks[n]["candidates"][0]["content"]["parts"][0]
    full = ok(sb, body, "gemini-2.5-pro")
    assert joined(chunks, thought=True) == parts(full)[0]["text"]
    assert joined(chunks) == text_of(full)


def test_stream_function_calls(sb: Running) -> None:
    body = req("Use get_weather", tools=tools(WEATHER))
    (chunk,) = stream(sb, body, G25)  # 2.5: one chunk, call + finish together
    cand = chunk["candidates"][0]
    assert cand["finishReason"] == "STOP" and cand["finishMessage"].startswith("Model generated")
    assert set(cand["content"]["parts"][0]) == {"functionCall", "thoughtSignature"}
    first, last = stream(sb, body, G3)  # Gemini 3: the call, then an empty text + finish
    assert "finishReason" not in first["candidates"][0]
    assert set(first["candidates"][0]["content"]["parts"][0]) == {"functionCall",
                                                                   "thoughtSignature"}  # fmt: skip
    assert last["candidates"][0]["content"]["parts"] == [{"text": ""}]
    assert last["usageMetadata"] == ok(sb, body, G3)["usageMetadata"]


def test_stream_thinking_exhausted(sb: Running) -> None:
    (chunk,) = stream(sb, cfg(maxOutputTokens=3), "gemini-2.5-pro")
    assert chunk["candidates"][0] == {"content": {"role": "model"}, "finishReason": "MAX_TOKENS",
                                      "index": 0}  # fmt: skip


def test_stream_without_alt_is_a_json_array(sb: Running) -> None:
    r = arr(sb, req("array please"))
    assert r.status == 200 and r.headers["content-type"] == "application/json; charset=UTF-8"
    assert r.body.startswith(b"[{\n") and r.body.endswith(b"\n]")
    chunks = r.json()
    assert [c["candidates"] for c in chunks] == [c["candidates"] for c in
                                                 stream(sb, req("array please"))]  # fmt: skip


def test_stream_logprobs(sb: Running) -> None:
    chunks = stream(sb, cfg(responseLogprobs=True))
    tokens = [
        t["token"]
        for c in chunks
        for t in c["candidates"][0].get("logprobsResult", {}).get("chosenCandidates", [])
    ]
    assert "".join(tokens) == joined(chunks)
    assert "avgLogprobs" in chunks[-1]["candidates"][0]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def C(*turns: tuple[str, list[dict[str, Any]]], **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": r, "parts": p} for r, p in turns], **extra}


def T(text: str) -> dict[str, Any]:
    return {"text": text}


def FC(name: str = "get_weather", sig: str | None = None, **args: Any) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
    if sig is not None:
        part["thoughtSignature"] = sig
    return part


def FR(name: str = "get_weather", **resp: Any) -> dict[str, Any]:
    return {"functionResponse": {"name": name, "response": resp or {"ok": True}}}


SIG = base64.b64encode(b"signature-from-elsewhere").decode()
TW = tools(WEATHER)
U = ("user", [T("hi")])
BAD_REQUESTS: list[tuple[str, Any, str, int, str]] = [
    # syntax (proto JSON)
    ("unknown top-level", {**req(), "foo": 1}, G25, 400,
     'Invalid JSON payload received. Unknown name "foo": Cannot find field.'),
    ("unknown in config", cfg(foo=1), G25, 400,
     "Unknown name \"foo\" at 'generation_config': Cannot find field."),
    ("unknown in part", C(("user", [{"text": "x", "bogus": 1}])), G25, 400,
     "Unknown name \"bogus\" at 'contents[0].parts[0]'"),
    ("unknown in call", C(U, ("model", [{"functionCall": {"name": "f", "arg": {}}}])), G25, 400,
     "Unknown name \"arg\" at 'contents[1].parts[0].function_call'"),
    ("additionalProperties in parameters",
     req(tools=tools({"name": "f", "parameters": {"type": "OBJECT",
                                                   "additionalProperties": False}})), G25, 400,
     "Unknown name \"additionalProperties\" at 'tools[0].function_declarations[0].parameters'"),
    ("const in a property", req(tools=tools({"name": "f", "parameters": {
        "type": "OBJECT", "properties": {"a": {"type": "STRING"}, "b": {"const": 1}}}})), G25, 400,
     "at 'tools[0].function_declarations[0].parameters.properties[1].value'"),
    ("string temperature", cfg(temperature="hot"), G25, 400,
     "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\""),
    ("fractional int", cfg(maxOutputTokens=1.5), G25, 400,
     "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), 1.5"),
    ("bool as string", cfg(responseLogprobs="yes"), G25, 400, "(TYPE_BOOL)"),
    ("list for a message", {**req(), "systemInstruction": [{"text": "x"}]}, G25, 400,
     'Unknown name "systemInstruction": Proto field is not repeating, cannot start list.'),
    ("contents not a list", {"contents": "hi"}, G25, 400,
     "Invalid value at 'contents' (type.googleapis.com/google.ai.generativelanguage.v1beta"
     ".Content), \"hi\""),
    ("root not an object", [req()], G25, 400, "Root element must be a message."),
    ("bad enum", req(toolConfig={"functionCallingConfig": {"mode": "SOMETIMES"}}, tools=TW), G25,
     400, "Invalid value at 'tool_config.function_calling_config.mode'"),
    ("bad safety category", req(safetySettings=[{"category": "X", "threshold": "OFF"}]), G25,
     400, "Invalid value at 'safety_settings[0].category'"),
    ("two data fields", C(("user", [{"text": "a", "inlineData": {"mimeType": "image/png",
                                                                 "data": PNG}}])), G25, 400,
     "Invalid value at 'contents[0].parts[0]' (oneof), oneof field 'data' is already set. "
     "Cannot set 'inlineData'"),
    ("bad base64", C(("user", [{"inlineData": {"mimeType": "image/png", "data": "%%%"}}])), G25,
     400, "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), Base64 "
     "decoding failed for \"%%%\""),
    ("bad signature base64", C(U, ("model", [{"text": "b", "thoughtSignature": "??"}]),
                               ("user", [T("c")])), G25, 400,
     "'contents[1].parts[0].thought_signature' (TYPE_BYTES)"),
    # contents
    ("no contents", {}, G25, 400, "* GenerateContentRequest.contents: contents is not specified"),
    ("empty contents", {"contents": []}, G25, 400, "contents is not specified"),
    ("assistant role", C(("assistant", [T("x")])), G25, 400,
     "Please use a valid role: user, model."),
    ("system role", C(("system", [T("x")])), G25, 400, "Please use a valid role: user, model."),
    ("empty parts", C(("user", [])), G25, 400,
     "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty."),
    ("part without data", C(("user", [{}])), G25, 400,
     "contents[0].parts[0].data: required oneof field 'data' must have one initialized field"),
    ("thought flag only", C(("user", [{"thought": True}])), G25, 400, "required oneof field"),
    ("unsupported mime", C(("user", [{"inlineData": {"mimeType": "application/zip",
                                                     "data": PNG}}])), G25, 400,
     "Unsupported MIME type: application/zip"),
    ("file without uri", C(("user", [{"fileData": {"mimeType": "image/png"}}])), G25, 400,
     "contents[0].parts[0].file_data.file_uri"),
    ("empty system", {**req(), "systemInstruction": {"parts": []}}, G25, 400,
     "system_instruction.parts: contents.parts must not be empty."),
    # function calls and responses
    ("call in a user turn", C(("user", [FC()])), G25, 400,
     "contents[0].parts[0].function_call: a function call is only allowed in a turn with role"),
    ("response in a model turn", C(U, ("model", [FR()])), G25, 400,
     "contents[1].parts[0].function_response: a function response is only allowed"),
    ("empty call name", C(U, ("model", [FC("")])), G25, 400,
     "contents[1].parts[0].function_call.name: Name cannot be empty."),
    ("bad call name", C(U, ("model", [FC("1x")])), G25, 400, "Invalid function name."),
    ("response without response", C(U, ("model", [FC()]), ("user", [
        {"functionResponse": {"name": "get_weather"}}])), G25, 400, "response is required"),
    ("response without call", C(U, ("model", [T("x")]), ("user", [FR()])), G25, 400,
     "Please ensure that function response turn comes immediately after a function call turn."),
    ("response first", C(("user", [FR()])), G25, 400, "comes immediately after a function call"),
    ("count mismatch", C(U, ("model", [FC(), FC("g")]), ("user", [FR()])), G25, 400,
     "Please ensure that the number of function response parts is equal to the number of "
     "function call parts of the function call turn."),
    ("name mismatch", C(U, ("model", [FC()]), ("user", [FR("other")])), G25, 400,
     "contents[2].parts[0].function_response.name: function response 'other' does not answer"),
    ("order mismatch", C(U, ("model", [FC(), FC("g")]), ("user", [FR("g"), FR()])), G25, 400,
     "does not answer the function call 'get_weather'"),
    ("call first", C(("model", [FC()])), G25, 400,
     "Please ensure that function call turn comes immediately after a user turn or after a "
     "function response turn."),
    ("call after model", C(U, ("model", [T("x")]), ("model", [FC()])), G25, 400,
     "function call turn comes immediately after a user turn"),
    ("missing signature g3", C(U, ("model", [FC()])), G3, 400,
     "Function call is missing a thought_signature in functionCall parts. This is required for "
     "tools to work correctly, and missing thought_signature may lead to degraded model "
     "performance. Additional data, function call `default_api:get_weather` , position 2."),
    ("missing signature later step", C(U, ("model", [FC(sig=SIG)]), ("user", [FR()]),
                                       ("model", [T("thinking"), FC()])), "gemini-3-flash-preview",
     400, "position 4."),
    # tools and tool config
    ("bad declared name", req(tools=tools({"name": "1bad"})), G25, 400,
     "* GenerateContentRequest.tools[0].function_declarations[0].name: Invalid function name."),
    ("long declared name", req(tools=tools({"name": "f" * 129})), G25, 400,
     "Invalid function name."),
    ("duplicate declaration", req(tools=tools(WEATHER, WEATHER)), G25, 400,
     "Duplicate function declaration found: get_weather"),
    ("both parameter forms", req(tools=tools({"name": "f", "parameters": {"type": "OBJECT"},
                                              "parametersJsonSchema": {}})), G25, 400,
     "parameters_json_schema and parameters cannot both be set"),
    ("required not defined", req(tools=tools({"name": "f", "parameters": {
        "type": "OBJECT", "properties": {}, "required": ["a"]}})), G25, 400,
     "function_declarations[0].parameters.required[0]: property is not defined"),
    ("empty tool", req(tools=[{}]), G25, 400, "tools[0]"),
    ("search retrieval", req(tools=[{"googleSearchRetrieval": {}}]), G25, 400,
     "google_search_retrieval is not supported"),
    ("allowed names with AUTO", req(tools=TW, toolConfig={"functionCallingConfig": {
        "mode": "AUTO", "allowedFunctionNames": ["get_weather"]}}), G25, 400,
     "allowed_function_names should only be set when the mode is ANY"),
    ("undeclared allowed name", req(tools=TW, toolConfig={"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["nope"]}}), G25, 400,
     "allowed_function_names[0]: function 'nope' is not declared"),
    ("ANY without tools", req(toolConfig={"functionCallingConfig": {"mode": "ANY"}}), G25, 400,
     "Function calling config is set without function_declarations."),
    # generation config
    ("temperature", cfg(temperature=2.5), G25, 400,
     "generation_config.temperature: temperature must be in the range [0, 2]"),
    ("top_p", cfg(topP=1.5), G25, 400, "generation_config.top_p"),
    ("top_k", cfg(topK=0), G25, 400, "generation_config.top_k"),
    ("candidates 9", cfg(candidateCount=9), G25, 400, "candidate_count must be in the range"),
    ("candidates 0", cfg(candidateCount=0), G25, 400, "candidate_count"),
    ("max tokens 0", cfg(maxOutputTokens=0), G25, 400, "max_output_tokens"),
    ("max tokens huge", cfg(maxOutputTokens=70000), G25, 400, "[1, 65536]"),
    ("six stops", cfg(stopSequences=list("abcdef")), G25, 400,
     "the number of stop_sequences must not exceed 5"),
    ("presence penalty", cfg(presencePenalty=3), G25, 400, "presence_penalty"),
    ("frequency penalty", cfg(frequencyPenalty=-2.5), G25, 400, "frequency_penalty"),
    ("logprobs alone", cfg(logprobs=3), G25, 400,
     "logprobs can only be set when response_logprobs is true"),
    ("logprobs 21", cfg(responseLogprobs=True, logprobs=21), G25, 400, "logprobs must be in"),
    ("mime", cfg(responseMimeType="text/html"), G25, 400, "allowed mimetypes are"),
    ("schema without json", cfg(responseSchema={"type": "STRING"}), G25, 400,
     "response_mime_type must be application/json or text/x.enum"),
    ("json schema with enum mime", cfg(responseMimeType="text/x.enum",
                                       responseSchema={"type": "STRING", "enum": ["a"]},
                                       responseJsonSchema={}), G25, 400, "cannot both be set"),
    ("json schema without json", cfg(responseJsonSchema={"type": "object"}), G25, 400,
     "response_mime_type must be application/json when response_json_schema is set"),
    ("enum mime without schema", cfg(responseMimeType="text/x.enum"), G25, 400,
     "response_schema is required with text/x.enum"),
    ("image output", cfg(responseModalities=["TEXT", "IMAGE"]), G25, 400,
     "The requested combination of response modalities (TEXT, IMAGE) is not supported"),
    ("json mime with functions on 2.5", req(tools=TW, generationConfig={
        "responseMimeType": "application/json"}), "gemini-2.5-pro", 400,
     "Function calling with a response mime type: 'application/json' is unsupported"),
    # thinking
    ("budget and level", cfg(thinkingConfig={"thinkingBudget": 1024, "thinkingLevel": "low"}),
     G3, 400, "You can only set only one of thinking budget and thinking level."),
    ("level on 2.5", cfg(thinkingConfig={"thinkingLevel": "low"}), G25, 400,
     "Thinking level is not supported for this model."),
    ("medium on 3 pro", cfg(thinkingConfig={"thinkingLevel": "medium"}), G3, 400,
     "Thinking level MEDIUM is not supported for this model. Please retry with other thinking "
     "level."),
    ("minimal on 3.1 pro", cfg(thinkingConfig={"thinkingLevel": "minimal"}),
     "gemini-3.1-pro-preview", 400, "Thinking level MINIMAL is not supported"),
    ("unknown level", cfg(thinkingConfig={"thinkingLevel": "extreme"}), G3, 400,
     "Invalid value at 'generation_config.thinking_config.thinking_level'"),
    ("budget 0 on 2.5 pro", cfg(thinkingConfig={"thinkingBudget": 0}), "gemini-2.5-pro", 400,
     "Budget 0 is invalid. This model only works in thinking mode."),
    ("budget 0 on 3 pro", cfg(thinkingConfig={"thinkingBudget": 0}), G3, 400, "Budget 0"),
    ("small budget on 2.5 pro", cfg(thinkingConfig={"thinkingBudget": 50}), "gemini-2.5-pro",
     400, "The thinking budget (50) is invalid."),
    ("big budget on 2.5 flash", cfg(thinkingConfig={"thinkingBudget": 30000}), G25, 400,
     "The thinking budget (30000) is invalid."),
    # other
    ("cached content", {**req(), "cachedContent": "cachedContents/abc"}, G25, 403,
     "CachedContent not found (or permission denied)"),
    ("cached content name", {**req(), "cachedContent": "abc"}, G25, 400, "cached_content"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "model", "status", "message"),
    [c[1:] for c in BAD_REQUESTS],
    ids=[c[0] for c in BAD_REQUESTS],
)
def test_validation_errors(sb: Running, body: Any, model: str, status: int, message: str) -> None:
    r = gen(sb, body, model)
    assert r.status == status, r.body
    err = error_of(r)
    assert err["status"] == {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED"}[status]
    assert message in err["message"], err["message"]
    if err["message"].startswith("* "):
        assert err["message"].endswith("\n")


ACCEPTED: list[tuple[str, Any, str]] = [
    ("lower-case schema types", req(tools=tools({"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}}})), G25),
    ("numbers in strings", cfg(temperature="0.5", maxOutputTokens="100"), G25),
    ("nulls are unset", {**req(), "tools": None, "generationConfig": {"temperature": None}}, G25),
    ("level upper case", cfg(thinkingConfig={"thinkingLevel": "LOW"}), G3),
    ("medium on 3.1 pro", cfg(thinkingConfig={"thinkingLevel": "medium"}),
     "gemini-3.1-pro-preview"),
    ("minimal on 3 flash", cfg(thinkingConfig={"thinkingLevel": "MINIMAL"}),
     "gemini-3-flash-preview"),
    ("dynamic budget on 2.5 pro", cfg(thinkingConfig={"thinkingBudget": -1}), "gemini-2.5-pro"),
    ("budget on gemini 3", cfg(thinkingConfig={"thinkingBudget": 2048}), G3),
    ("penalties on gemini 3", cfg(presencePenalty=0.5, frequencyPenalty=-0.5, seed=7, topK=40),
     G3),
    ("json mime with functions on 3", req(tools=TW, generationConfig={
        "responseMimeType": "application/json"}), G3),
    ("x.enum", cfg(responseMimeType="text/x.enum",
                   responseSchema={"type": "STRING", "enum": ["a", "b"]}), G25),
    ("text modality", cfg(responseModalities=["TEXT"]), G25),
    ("media parts", C(("user", [T("look"), {"fileData": {"fileUri": "https://x.test/a.pdf",
                                                         "mimeType": "application/pdf"}},
                                {"inlineData": {"mimeType": "audio/wav", "data": PNG}},
                                {"fileData": {"fileUri": "gs://b/v.mp4", "mimeType": "video/mp4"},
                                 "videoMetadata": {"startOffset": "1s", "fps": 2}}])), G25),
    ("code execution parts", C(U, ("model", [{"executableCode": {"language": "PYTHON",
                                                                 "code": "print(1)"}},
                                             {"codeExecutionResult": {"outcome": "OUTCOME_OK",
                                                                      "output": "1"}}]),
                               ("user", [T("and?")]), tools=[{"codeExecution": {}}]), G25),
    ("thought parts in history", C(U, ("model", [{"text": "hmm", "thought": True},
                                                 {"text": "hello", "thoughtSignature": SIG}]),
                                   ("user", [T("more")])), G3),
    ("call with documented dummy signature",
     C(U, ("model", [FC(sig="skip_thought_signature_validator")]), ("user", [FR()]), tools=TW),
     G3),
    ("parallel calls, first signed",
     C(U, ("model", [FC(sig=SIG), FC("g")]), ("user", [FR(), FR("g")])), G3),
    ("responses matched by id", {"contents": [
        {"role": "user", "parts": [T("x")]},
        {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}, "id": "1"}},
                                    {"functionCall": {"name": "b", "args": {}, "id": "2"}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "b", "id": "2", "response": {}}},
                                   {"functionResponse": {"name": "a", "id": "1",
                                                         "response": {}}}]}]}, G25),
    ("responses then text in one turn", C(U, ("model", [FC()]), ("user", [FR(), T("now?")])), G25),
    ("function names with dots", req(tools=tools({"name": "ns.tool:v1-x"})), G25),
    ("search and functions", req(tools=[{"googleSearch": {}}, *TW]), G3),
    ("validated mode", req(tools=TW, toolConfig={"functionCallingConfig": {"mode": "VALIDATED"}}),
     G25),
    ("empty text part", C(("user", [T(""), T("x")])), G25),
]  # fmt: skip


@pytest.mark.parametrize(("body", "model"), [c[1:] for c in ACCEPTED],
                         ids=[c[0] for c in ACCEPTED])  # fmt: skip
def test_accepted_requests(sb: Running, body: dict[str, Any], model: str) -> None:
    r = gen(sb, body, model)
    assert r.status == 200, r.body


def test_unknown_model_and_urls(sb: Running) -> None:
    r = gen(sb, req(), "gemini-1.0-pro")
    assert r.status == 404
    err = error_of(r)
    assert err["status"] == "NOT_FOUND"
    assert err["message"].startswith(
        "models/gemini-1.0-pro is not found for API version v1beta, or is not supported for "
        "generateContent."
    )
    r = arr(sb, req(), "gpt-4o")
    assert r.status == 404 and error_of(r, array=True)["status"] == "NOT_FOUND"
    r = raw(sb, "POST", f"/v1beta/models/{G25}:embedText", req())
    assert r.status == 404 and error_of(r)["status"] == "NOT_FOUND"
    assert raw(sb, "GET", "/v1beta/nothing").status == 404


def test_invalid_json_and_payload_limits(sb: Running) -> None:
    r = gen(sb, None, data=b"{not json")
    assert r.status == 400
    assert error_of(r)["message"].startswith("Invalid JSON payload received.")
    r = gen(sb, None, data=b"x" * (20 * 1024 * 1024 + 1))
    assert r.status == 400 and "Request payload size exceeds the limit" in error_of(r)["message"]
    r = gen(sb, req("a " * 1_100_000))
    assert r.status == 400
    assert "exceeds the maximum number of tokens allowed (1048576)" in error_of(r)["message"]


# ---------------------------------------------------------------------------------------------
# auth
# ---------------------------------------------------------------------------------------------


def test_missing_key(sb: Running) -> None:
    for r, array in ((gen(sb, req(), key=None), False), (arr(sb, req(), key=None), True)):
        assert r.status == 403
        err = error_of(r, array)
        assert err["status"] == "PERMISSION_DENIED"
        assert err["message"].startswith("Method doesn't allow unregistered callers")


def test_wrong_key(sb: Running) -> None:
    cases = ((gen, False), (sse, False), (arr, True))
    for call, array in cases:
        r = call(sb, req(), key="AIza-wrong")
        assert r.status == 400
        err = error_of(r, array)
        assert err["status"] == "INVALID_ARGUMENT"
        assert err["message"] == "API key not valid. Please pass a valid API key."
        info = err["details"][0]
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
        assert info["reason"] == "API_KEY_INVALID"
    r = raw(sb, "POST", f"/v1beta/models/{G25}:generateContent?key=wrong", req(), key=None)
    assert r.status == 400
    # the header wins over the query parameter
    r = raw(sb, "POST", f"/v1beta/models/{G25}:generateContent?key=wrong", req())
    assert r.status == 200


def test_any_key_when_unconfigured() -> None:
    for running in _serve(None):
        assert gen(running, req(), key="anything").status == 200
        assert gen(running, req(), key=None).status == 403


def test_models_listing(sb: Running) -> None:
    r = raw(sb, "GET", "/v1beta/models")
    assert r.status == 200
    names = [m["name"] for m in r.json()["models"]]
    assert names == [f"models/{m}" for m in MODELS]
    r = raw(sb, "GET", f"/v1beta/models/{G3}")
    assert r.json()["name"] == f"models/{G3}"
    assert raw(sb, "GET", "/v1beta/models/nope").status == 404
    assert raw(sb, "GET", "/v1beta/models", key=None).status == 403


# ---------------------------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "gstatus"),
    [("400", 400, "INVALID_ARGUMENT"), ("401", 401, "UNAUTHENTICATED"),
     ("403", 403, "PERMISSION_DENIED"), ("404", 404, "NOT_FOUND"),
     ("429", 429, "RESOURCE_EXHAUSTED"), ("500", 500, "INTERNAL"), ("503", 503, "UNAVAILABLE"),
     ("504", 504, "DEADLINE_EXCEEDED"), ("quota", 429, "RESOURCE_EXHAUSTED")],
)  # fmt: skip
def test_directive_errors(sb: Running, kind: str, status: int, gstatus: str) -> None:
    r = gen(sb, req(f"[sandbox:error={kind}] hi"))
    assert r.status == status
    err = error_of(r)
    assert err["status"] == gstatus
    assert "retry-after" not in r.headers
    if status == 503:
        assert err["message"] == "The model is overloaded. Please try again later."
    if status == 404:
        assert err["message"].startswith(f"models/{G25} is not found")
    if status == 429:
        types = [d["@type"].rsplit(".", 1)[1] for d in err["details"]]
        assert types == ["QuotaFailure", "Help", "RetryInfo"]
        assert err["details"][2]["retryDelay"] == "1s"
        quota = err["details"][0]["violations"][0]["quotaValue"]
        assert (quota == "0") == (kind == "quota")
    r = arr(sb, req(f"[sandbox:error={kind}] hi"))
    assert r.status == status and error_of(r, array=True)["status"] == gstatus


def test_directive_retry_after(sb: Running) -> None:
    r = gen(sb, req("[sandbox:error=429] [sandbox:retry_after=26] hi"))
    assert error_of(r)["details"][2]["retryDelay"] == "26s"


def test_directive_blocked(sb: Running) -> None:
    body = ok(sb, req("[sandbox:blocked] something bad"))
    assert list(body) == ["promptFeedback", "usageMetadata", "modelVersion", "responseId"]
    assert body["promptFeedback"]["blockReason"] == "SAFETY"
    assert all({"category", "probability"} <= set(r)
               for r in body["promptFeedback"]["safetyRatings"])  # fmt: skip
    assert set(body["usageMetadata"]) == {"promptTokenCount", "totalTokenCount",
                                          "promptTokensDetails"}  # fmt: skip
    (chunk,) = stream(sb, req("[sandbox:blocked] something bad"))
    assert "candidates" not in chunk and chunk["promptFeedback"]["blockReason"] == "SAFETY"


def test_directive_safety(sb: Running) -> None:
    body = ok(sb, req("[sandbox:safety] something bad"))
    (cand,) = body["candidates"]
    assert cand["content"] == {} and cand["finishReason"] == "SAFETY"
    assert any(r.get("blocked") for r in cand["safetyRatings"])
    assert "candidatesTokenCount" not in body["usageMetadata"]
    (chunk,) = stream(sb, req("[sandbox:safety] something bad"))
    assert chunk["candidates"][0] == cand


def test_directive_stream_error(sb: Running) -> None:
    r = sse(sb, req("[sandbox:stream_error] go"))
    assert r.status == 200 and r.error is None
    *data, last = r.chunks()
    assert len(data) == 2 and all("candidates" in c for c in data)
    assert r.frames()[-1] == (b'data: {"error": {"code": 503,"message": "The model is overloaded.'
                              b' Please try again later.","status": "UNAVAILABLE"}}')  # fmt: skip
    assert last == {"error": {"code": 503, "message": "The model is overloaded. Please try again "
                              "later.", "status": "UNAVAILABLE"}}  # fmt: skip
    body = arr(sb, req("[sandbox:stream_error] go")).json()
    assert body[-1] == last and len(body) == 3
    ok(sb, req("[sandbox:stream_error] go"))  # no effect without streaming


def test_directive_cut(sb: Running) -> None:
    r = sse(sb, req("[sandbox:cut=2] cut me"))
    assert r.status == 200 and r.error is not None and len(r.frames()) == 2
    r = arr(sb, req("[sandbox:cut=1] cut me"))
    assert r.error is not None and r.body.startswith(b"[{") and not r.body.endswith(b"]")
    r = gen(sb, req("[sandbox:cut=1] cut me"))
    assert r.status == 200 and r.error is not None
    assert int(r.headers["content-length"]) > len(r.body) > 0


def test_directive_hang(sb: Running) -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        gen(sb, req("[sandbox:hang] hi"), timeout=0.4)
    assert time.monotonic() - t0 < 3
    deadline = time.monotonic() + 3
    while sb.hanging and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sb.hanging == 0


def test_directive_latency_and_chunk_delay(sb: Running) -> None:
    t0 = time.monotonic()
    assert text_of(ok(sb, req("[sandbox:latency=300] slow"))).startswith('You said: "slow".')
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    chunks = stream(sb, req("[sandbox:chunk_delay=20] drip"))
    assert time.monotonic() - t0 >= 0.02 * (len(chunks) - 1)


def test_bad_directive(sb: Running) -> None:
    for text in ("[sandbox:bogus] hi", "[sandbox:error=abc] hi"):
        r = gen(sb, req(text))
        assert r.status == 400
        err = error_of(r)
        assert err["status"] == "INVALID_ARGUMENT" and "sandbox" in err["message"]


def test_directives_only_in_last_user_turn(sb: Running) -> None:
    body = C(("user", [T("[sandbox:error=500] earlier")]), ("model", [T("ok")]),
             ("user", [T("now")]))  # fmt: skip
    assert gen(sb, body).status == 200


def test_faults(sb: Running) -> None:
    fault = {"model": G25, "error": 503, "count": 2}
    assert raw(sb, "POST", "/_sandbox/faults", fault, key=None).status == 200
    assert gen(sb, req(), G3).status == 200  # another model is untouched
    for _ in range(2):
        r = gen(sb, req())
        assert r.status == 503 and error_of(r)["status"] == "UNAVAILABLE"
    assert gen(sb, req()).status == 200
    raw(sb, "POST", "/_sandbox/faults", [{"error": 429, "retry_after": 3}], key=None)
    r = arr(sb, {"contents": []})  # faults fire before validation, like outages
    assert r.status == 429 and error_of(r, array=True)["details"][2]["retryDelay"] == "3s"
    raw(sb, "POST", "/_sandbox/faults", {"hang": True}, key=None)
    with pytest.raises(TimeoutError):
        gen(sb, req(), timeout=0.3)
    raw(sb, "POST", "/_sandbox/faults", {"latency_ms": 250}, key=None)
    t0 = time.monotonic()
    assert gen(sb, req()).status == 200
    assert time.monotonic() - t0 >= 0.25
    raw(sb, "POST", "/_sandbox/faults", {"cut": 1}, key=None)
    r = sse(sb, req())
    assert r.error is not None and len(r.frames()) == 1


def test_request_log_masks_the_key(sb: Running) -> None:
    body = req("log me")
    gen(sb, body, headers={"X-Trace": "abc"})
    gen(sb, None, data=b"not json")
    raw(sb, "POST", f"/v1beta/models/{G25}:generateContent?key={KEY}", body, key=None)
    log = raw(sb, "GET", "/_sandbox/requests", key=None).json()
    assert len(log) == 3
    assert log[0]["body"] == body
    assert log[0]["headers"]["x-goog-api-key"] == "***"
    assert log[0]["headers"]["x-trace"] == "abc"
    assert log[1]["body"] == "not json"
    assert KEY not in json.dumps(log)
