"""The Gemini API sandbox against recorded Gemini payloads (read from ../shared).

Nothing from ../shared is copied into the repo: the recordings are read at test time, and the
module is skipped when that directory is absent. The comparisons are structural (key sets per
candidate / part / usage, chunk grammar, SSE framing and JSON style, error envelopes); every
recorded request must be accepted by the sandbox's validation (a 400 there would mean the
emulator is stricter than the real API).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatgate.sandbox._gemini_rules import MODELS
from tests.support import ThreadedSandbox

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "protocols" / "fixtures" / "gemini"
if not FIXTURES.is_dir():
    pytest.skip(
        f"recorded Gemini payloads not found at {FIXTURES} (../shared/protocols is not part of "
        "the repo); skipping the fixture comparisons",
        allow_module_level=True,
    )

KEY = "AIza-fixture-test-000000000000"
FALLBACK_MODEL = "gemini-2.5-flash"  # for recordings made with a model that is not emulated
NEWER_USAGE = {"serviceTier"}  # only in the newest recordings
OLDER_USAGE = {"candidatesTokensDetails"}  # only in the gemini-2.0 recordings
REQUESTS = sorted(p.name for p in FIXTURES.glob("*.request.json"))


# ---------------------------------------------------------------------------------------------
# harness
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    running = ThreadedSandbox(api_key=KEY)
    yield running
    running.close()


def post(
    sb: ThreadedSandbox, model: str, body: Any, method: str = "generateContent", key: str = KEY
) -> tuple[int, dict[str, str], bytes]:
    async def go() -> tuple[int, dict[str, str], bytes]:
        url = f"{sb.gemini_base_url}/v1beta/models/{model}:{method}"
        async with (
            aiohttp.ClientSession() as s,
            s.post(url, data=json.dumps(body), headers={"x-goog-api-key": key}) as r,
        ):
            return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()

    return asyncio.run(go())


def generate(sb: ThreadedSandbox, model: str, body: Any) -> dict[str, Any]:
    status, _, data = post(sb, model, body)
    assert status == 200, data
    return json.loads(data)  # type: ignore[no-any-return]


def sse_frames(data: bytes) -> list[bytes]:
    sep = b"\r\n\r\n" if b"\r\n\r\n" in data else b"\n\n"
    assert data.endswith(sep)
    frames = [f for f in data.split(sep) if f]
    assert all(f.startswith(b"data: ") for f in frames)
    return frames


def stream(sb: ThreadedSandbox, model: str, body: Any) -> tuple[list[bytes], list[dict[str, Any]]]:
    status, headers, data = post(sb, model, body, "streamGenerateContent?alt=sse")
    assert status == 200, data
    assert headers["content-type"] == "text/event-stream"
    frames = sse_frames(data)
    return frames, [json.loads(f[6:]) for f in frames]


def recorded(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def recorded_stream(name: str) -> tuple[bytes, list[dict[str, Any]]]:
    data = (FIXTURES / name).read_bytes()
    return data, [json.loads(f[6:]) for f in sse_frames(data)]


def model_of(request_name: str) -> str:
    """The model a recorded request was made with (from its response), if emulated."""
    stem = request_name.removesuffix(".request.json")
    for suffix in (".json", ".sse"):
        path = FIXTURES / (stem + suffix)
        if path.exists():
            text = path.read_text()
            m = re.search(r'"modelVersion":\s*"([^"]+)"', text)
            if m and m.group(1) in MODELS:
                return m.group(1)
    return FALLBACK_MODEL


def with_text(body: dict[str, Any], extra: str) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["contents"][-1]["parts"][0]["text"] += extra
    return out


def forced(body: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(body), "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}


def part_keys(body: dict[str, Any]) -> list[set[str]]:
    return [set(p) for c in body.get("candidates", []) for p in c["content"].get("parts", [])]


def usage_keys(body: dict[str, Any]) -> set[str]:
    return set(body["usageMetadata"]) - NEWER_USAGE - OLDER_USAGE


def check_usage(u: dict[str, Any]) -> None:
    total = u["promptTokenCount"] + u.get("candidatesTokenCount", 0)
    total += u.get("thoughtsTokenCount", 0) + u.get("toolUsePromptTokenCount", 0)
    assert u["totalTokenCount"] == total


def grammar(chunks: list[dict[str, Any]]) -> list[str]:
    """One token per chunk: its part kinds (+sig for a signature) and +finish; text runs merged."""
    out: list[str] = []
    for c in chunks:
        (cand,) = c["candidates"]
        kinds = []
        for p in cand["content"].get("parts", []):
            kind = "call" if "functionCall" in p else "thought" if p.get("thought") else "text"
            if kind == "text" and p["text"] == "":
                kind = "empty"
            kinds.append(kind + ("+sig" if "thoughtSignature" in p else ""))
        tok = ",".join(kinds) + ("+finish" if "finishReason" in cand else "")
        if not (out and out[-1] == tok and tok in ("text", "thought")):
            out.append(tok)
    return out


# ---------------------------------------------------------------------------------------------
# every recorded request is accepted
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUESTS)
def test_recorded_requests_are_accepted(sandbox: ThreadedSandbox, name: str) -> None:
    body = recorded(name)
    model = model_of(name)
    for method in ("generateContent", "streamGenerateContent?alt=sse", "streamGenerateContent"):
        status, _, data = post(sandbox, model, body, method)
        assert status == 200, (model, method, data[:500])
    for other in MODELS:  # and by every emulated model, except where the rules differ on purpose
        status, _, data = post(sandbox, other, body)
        problem = "" if status == 200 else json.loads(data)["error"]["message"]
        allowed = (
            "thinking budget" in problem  # thinking_budget 0 on a model that cannot turn it off
            or "Budget 0 is invalid" in problem
        )
        assert status == 200 or allowed, (other, problem)


def test_recorded_signature_is_required_on_gemini3(sandbox: ThreadedSandbox) -> None:
    body = recorded("stream_after_function_response.request.json")
    assert generate(sandbox, "gemini-3-pro-preview", body)
    del body["contents"][1]["parts"][0]["thoughtSignature"]
    status, _, data = post(sandbox, "gemini-3-pro-preview", body)
    assert status == 400
    assert (
        "function call `default_api:get_country` , position 2"
        in json.loads(data)["error"]["message"]
    )


# ---------------------------------------------------------------------------------------------
# non-streaming responses
# ---------------------------------------------------------------------------------------------


def test_text_response_shape(sandbox: ThreadedSandbox) -> None:
    rec = recorded("generate_text_thoughts_usage.json")
    got = generate(sandbox, "gemini-2.5-flash", {"contents": [{"parts": [{"text": "Hi"}]}]})
    assert list(got) == list(rec)
    assert set(got["candidates"][0]) == set(rec["candidates"][0])
    assert got["candidates"][0]["content"].keys() == rec["candidates"][0]["content"].keys()
    assert part_keys(got) == part_keys(rec) == [{"text"}]
    assert list(got["usageMetadata"]) == list(rec["usageMetadata"])
    for body in (rec, got):
        check_usage(body["usageMetadata"])
    assert got["modelVersion"] == rec["modelVersion"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", got["responseId"])
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", rec["responseId"])


def test_thinking_response_shape(sandbox: ThreadedSandbox) -> None:
    rec = recorded("generate_thinking.json")
    got = generate(sandbox, "gemini-3-pro-preview", recorded("generate_thinking.request.json"))
    assert part_keys(got) == part_keys(rec) == [{"text", "thought"}, {"text", "thoughtSignature"}]
    assert set(got["candidates"][0]) == set(rec["candidates"][0])
    assert usage_keys(got) == usage_keys(rec)
    check_usage(got["usageMetadata"])


def test_tool_call_response_shape(sandbox: ThreadedSandbox) -> None:
    rec = recorded("generate_tool_call.json")
    got = generate(sandbox, "gemini-2.5-pro", forced(recorded("generate_tool_call.request.json")))
    for body in (rec, got):
        (cand,) = body["candidates"]
        assert set(cand) == {"content", "finishReason", "finishMessage", "index"}
        assert cand["finishReason"] == "STOP"
        assert cand["finishMessage"] == "Model generated function call(s)."
        (part,) = cand["content"]["parts"]
        assert set(part) == {"functionCall", "thoughtSignature"}
        assert set(part["functionCall"]) == {"name", "args"}  # no id
        assert part["functionCall"]["name"] == "get_capital"
        assert set(part["functionCall"]["args"]) == {"country"}
    assert usage_keys(got) == usage_keys(rec)


def test_tool_call_without_thinking_shape(sandbox: ThreadedSandbox) -> None:
    rec = recorded("generate_tool_call_no_thinking.json")
    body = recorded("generate_tool_call_no_thinking.request.json")
    body["generationConfig"] = {"thinkingConfig": {"thinkingBudget": 0}}
    got = generate(sandbox, "gemini-2.5-flash", body)
    assert part_keys(got) == part_keys(rec) == [{"functionCall"}]
    name = got["candidates"][0]["content"]["parts"][0]["functionCall"]["name"]
    assert name == rec["candidates"][0]["content"]["parts"][0]["functionCall"]["name"]


def test_max_tokens_shape(sandbox: ThreadedSandbox) -> None:
    rec = recorded("generate_max_tokens.json")
    got = generate(sandbox, "gemini-2.5-flash", recorded("generate_max_tokens.request.json"))
    for body in (rec, got):
        (cand,) = body["candidates"]
        assert cand["finishReason"] == "MAX_TOKENS"
        assert body["usageMetadata"]["candidatesTokenCount"] == 5
        assert "thoughtsTokenCount" not in body["usageMetadata"]  # thinking_budget 0
    assert part_keys(got) == part_keys(rec)
    assert usage_keys(got) == usage_keys(rec)


def test_max_tokens_thinking_empty_shape(sandbox: ThreadedSandbox) -> None:
    rec = recorded("generate_max_tokens_thinking_empty.json")
    body = recorded("generate_max_tokens_thinking_empty.request.json")
    got = generate(sandbox, "gemini-2.5-pro", body)
    for b in (rec, got):
        (cand,) = b["candidates"]
        assert cand == {"content": {"role": "model"}, "finishReason": "MAX_TOKENS", "index": 0}
        check_usage(b["usageMetadata"])
    assert usage_keys(got) == usage_keys(rec)
    assert "candidatesTokenCount" not in got["usageMetadata"]


def test_safety_block_shape(sandbox: ThreadedSandbox) -> None:
    rec = recorded("generate_safety_block.json")
    body = with_text(recorded("generate_safety_block.request.json"), " [sandbox:safety]")
    got = generate(sandbox, "gemini-2.5-flash", body)
    (rc,), (gc,) = rec["candidates"], got["candidates"]
    assert rc["content"] == gc["content"] == {}
    assert rc["finishReason"] == gc["finishReason"] == "SAFETY"
    assert set(gc) - set(rc) <= {"index"}  # the 1.5-era recording has no index
    rated = {k for r in rc["safetyRatings"] for k in r}
    assert {k for r in gc["safetyRatings"] for k in r} <= rated
    assert {r["category"] for r in gc["safetyRatings"]} == {
        r["category"] for r in rc["safetyRatings"]
    }
    assert usage_keys(got) == usage_keys(rec)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_invalid_key_matches_recording(sandbox: ThreadedSandbox) -> None:
    rec = recorded("error_400_api_key_invalid.json")  # recorded from the array (non-SSE) stream
    status, _, data = post(sandbox, "gemini-2.5-flash", {"contents": []},
                           "streamGenerateContent", key="AIza-wrong")  # fmt: skip
    assert status == 400 and json.loads(data) == rec
    status, _, data = post(sandbox, "gemini-2.5-flash", {"contents": []}, key="AIza-wrong")
    assert status == 400 and json.loads(data) == rec[0]
    status, _, data = post(sandbox, "gemini-2.5-flash", {"contents": []},
                           "streamGenerateContent?alt=sse", key="AIza-wrong")  # fmt: skip
    assert status == 400 and json.loads(data) == rec[0]


def test_resource_exhausted_matches_recording(sandbox: ThreadedSandbox) -> None:
    rec = recorded("error_429_resource_exhausted.json")["error"]
    body = {"contents": [{"parts": [{"text": "[sandbox:error=429] [sandbox:retry_after=26]"}]}]}
    status, headers, data = post(sandbox, "gemini-2.5-flash", body)
    got = json.loads(data)["error"]
    assert status == 429 and "retry-after" not in headers
    assert list(got) == list(rec)
    assert (got["code"], got["status"], got["message"]) == (rec["code"], rec["status"],
                                                            rec["message"])  # fmt: skip
    assert [d["@type"] for d in got["details"]] == [d["@type"] for d in rec["details"]]
    for g, r in zip(got["details"], rec["details"], strict=True):
        assert set(g) == set(r)
    gv, rv = got["details"][0]["violations"][0], rec["details"][0]["violations"][0]
    assert set(gv) == set(rv) and set(gv["quotaDimensions"]) == set(rv["quotaDimensions"])
    assert got["details"][2]["retryDelay"] == rec["details"][2]["retryDelay"] == "26s"


# ---------------------------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------------------------


CRLF_STREAMS = sorted(
    p.name for p in FIXTURES.glob("*.sse") if b"\r\n\r\n" in p.read_bytes()
)  # the ones recorded byte for byte


@pytest.mark.parametrize("name", CRLF_STREAMS)
def test_stream_framing_and_json_style(sandbox: ThreadedSandbox, name: str) -> None:
    data, _ = recorded_stream(name)
    frames, _ = stream(sandbox, "gemini-2.5-flash", {"contents": [{"parts": [{"text": "x"}]}]})
    for frame in [*sse_frames(data), *frames]:
        payload = frame[6:]
        assert payload == json.dumps(json.loads(payload), ensure_ascii=False,
                                     separators=(",", ": ")).encode()  # fmt: skip


def check_stream_rules(chunks: list[dict[str, Any]]) -> None:
    """What holds in every recorded stream (modern models)."""
    assert len({c["responseId"] for c in chunks}) == 1
    assert len({c["modelVersion"] for c in chunks}) == 1
    for c in chunks:
        assert set(c) == {"candidates", "usageMetadata", "modelVersion", "responseId"}
        check_usage(c["usageMetadata"])
    finishes = ["finishReason" in c["candidates"][0] for c in chunks]
    assert finishes == [False] * (len(chunks) - 1) + [True]
    seen = [c["usageMetadata"].get("candidatesTokenCount", 0) for c in chunks]
    assert seen == sorted(seen)


STREAM_CASES = [
    # (recording, request, model, body transform)
    ("stream_text.sse", "stream_text.request.json", "gemini-2.5-flash", None),
    ("stream_thinking.sse", "stream_thinking.request.json", "gemini-2.5-pro", None),
    ("stream_tool_call_gemini3.sse", "stream_tool_call_gemini3.request.json",
     "gemini-3-pro-preview", None),
    ("stream_tool_call_gemini25_raw.sse", "stream_tool_call_gemini25_raw.request.json",
     "gemini-2.5-flash", forced),
    ("stream_after_function_response.sse", "stream_after_function_response.request.json",
     "gemini-3-pro-preview", None),
]  # fmt: skip


@pytest.mark.parametrize(("rec_name", "req_name", "model", "transform"), STREAM_CASES)
def test_stream_grammar(
    sandbox: ThreadedSandbox, rec_name: str, req_name: str, model: str, transform: Any
) -> None:
    _, rec = recorded_stream(rec_name)
    body = recorded(req_name)
    if transform is not None:
        body = transform(body)
    _, got = stream(sandbox, model, body)
    check_stream_rules(rec)
    check_stream_rules(got)
    expected = copy.deepcopy(rec)
    if rec_name == "stream_after_function_response.sse":
        # the recording skipped thinking after the function response; the sandbox always thinks
        # on Gemini 3, so its first answer part carries a signature
        expected[0]["candidates"][0]["content"]["parts"][0]["thoughtSignature"] = "sig"
    assert grammar(got) == grammar(expected)
    assert usage_keys(got[-1]) - {"thoughtsTokenCount"} == usage_keys(rec[-1]) - {
        "thoughtsTokenCount"
    }
    for chunks in (rec, got):
        assert all(set(c["candidates"][0]) <= {"content", "finishReason", "index",
                                                "finishMessage"} for c in chunks)  # fmt: skip


def test_early_chunks_lack_candidates_tokens(sandbox: ThreadedSandbox) -> None:
    _, rec = recorded_stream("stream_text.sse")
    assert "candidatesTokenCount" not in rec[0]["usageMetadata"]
    _, got = stream(sandbox, "gemini-2.5-flash", recorded("stream_text.request.json"))
    assert "candidatesTokenCount" not in got[0]["usageMetadata"]
    assert "candidatesTokenCount" in got[-1]["usageMetadata"]


def test_thoughts_count_constant_after_thinking(sandbox: ThreadedSandbox) -> None:
    _, rec = recorded_stream("stream_text_long.sse")
    long_text = "Write a long story " + "about many things " * 30
    _, got = stream(sandbox, "gemini-2.5-flash", {"contents": [{"parts": [{"text": long_text}]}]})
    for chunks in (rec, got):
        assert len({c["usageMetadata"]["thoughtsTokenCount"] for c in chunks}) == 1
        check_stream_rules(chunks)
