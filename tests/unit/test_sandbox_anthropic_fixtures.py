"""The Anthropic Messages sandbox against recorded Anthropic payloads (read from ../shared).

Nothing from ../shared is copied into the repo: the recordings are read at test time, and the
module is skipped when that directory is absent. The comparisons are structural (key sets per
block / event type, event-order grammar, usage keys, error envelopes); the recorded requests
must all be accepted by the sandbox's validation (a 400 there would mean the emulator is
stricter than the real API).
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

from chatgate.sandbox._anthropic_rules import MODELS
from tests.support import ThreadedSandbox

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURES = SHARED / "protocols" / "fixtures" / "anthropic"
if not FIXTURES.is_dir():
    pytest.skip(
        f"recorded Anthropic payloads not found at {FIXTURES} (../shared/protocols is not part "
        "of the repo); skipping the fixture comparisons",
        allow_module_level=True,
    )

KEY = "sk-ant-fixture-test-000000000000"
FALLBACK_MODEL = "claude-sonnet-4-6"  # for recorded requests whose model id is not emulated
NEWER_FIELDS = {"caller", "inference_geo"}  # present in some recordings only (newer API)
REQUESTS = sorted(p.name for p in FIXTURES.glob("*.request.json"))
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
MAKE_FILE = {
    "name": "make_file",
    "description": "Write text to a file",
    "input_schema": {
        "type": "object",
        "properties": {
            "filename": {"type": "string"},
            "lines_of_text": {"type": "array", "items": {"type": "string"}, "minItems": 3},
        },
        "required": ["filename", "lines_of_text"],
    },
}


# ---------------------------------------------------------------------------------------------
# harness
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    running = ThreadedSandbox(api_key=KEY)
    yield running
    running.close()


def post(sandbox: ThreadedSandbox, body: Any) -> tuple[int, dict[str, str], bytes]:
    async def go() -> tuple[int, dict[str, str], bytes]:
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.post(sandbox.anthropic_base_url + "/v1/messages", json=body, headers=headers) as r,
        ):
            return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()

    return asyncio.run(go())


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def parse_sse(data: bytes | str) -> list[tuple[str, dict[str, Any]]]:
    text = data.decode() if isinstance(data, bytes) else data
    out = []
    for frame in re.split(r"\n\n+", text.strip()):
        lines = frame.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: "), frame
        assert lines[1].startswith("data: "), frame
        name, payload = lines[0][7:], json.loads(lines[1][6:])
        assert payload["type"] == name
        out.append((name, payload))
    return out


def recorded_stream(name: str) -> list[tuple[str, dict[str, Any]]]:
    return parse_sse((FIXTURES / name).read_text())


def emulated(body: dict[str, Any]) -> dict[str, Any]:
    """A recorded request with the model swapped for an emulated one when needed."""
    body = copy.deepcopy(body)
    if body.get("model") not in MODELS:
        body["model"] = FALLBACK_MODEL
    return body


def ours(sandbox: ThreadedSandbox, body: dict[str, Any]) -> Any:
    status, headers, data = post(sandbox, body)
    assert status == 200, data
    if body.get("stream"):
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        return parse_sse(data)
    return json.loads(data)


def with_text(body: dict[str, Any], extra: str) -> dict[str, Any]:
    """Append ``extra`` to the last user text block (to mention a tool, add a directive)."""
    body = copy.deepcopy(body)
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        body["messages"][-1]["content"] = content + extra
    else:
        next(b for b in reversed(content) if b["type"] == "text")["text"] += extra
    return body


def collapse(seq: list[Any]) -> list[Any]:
    return [x for k, x in enumerate(seq) if k == 0 or seq[k - 1] != x]


def units(events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The event grammar: message events and one unit per block ``(type, deltas, closed)``;
    pings dropped, runs of equal deltas and of equal consecutive blocks collapsed."""
    out: list[Any] = []
    blocks: dict[int, list[Any]] = {}
    for name, data in events:
        if name == "ping":
            continue
        if name == "content_block_start":
            blocks[data["index"]] = [data["content_block"]["type"], [], False]
            out.append(blocks[data["index"]])
        elif name == "content_block_delta":
            blocks[data["index"]][1].append(data["delta"]["type"])
        elif name == "content_block_stop":
            blocks[data["index"]][2] = True
        else:
            out.append(name)
    frozen = [(u[0], tuple(collapse(u[1])), u[2]) if isinstance(u, list) else u for u in out]
    return collapse(frozen)


def assert_same_keys(mine: dict[str, Any], recorded: dict[str, Any], what: str) -> None:
    missing = set(recorded) - set(mine) - NEWER_FIELDS
    extra = set(mine) - set(recorded) - NEWER_FIELDS
    assert not missing and not extra, f"{what}: missing {missing}, extra {extra}"


def assert_same_blocks(mine: list[dict[str, Any]], recorded: list[dict[str, Any]]) -> None:
    assert collapse([b["type"] for b in mine]) == collapse([b["type"] for b in recorded])
    by_type = {b["type"]: b for b in recorded}
    for block in mine:
        assert_same_keys(block, by_type[block["type"]], f"{block['type']} block")


def assert_same_message(mine: dict[str, Any], recorded: dict[str, Any]) -> None:
    assert_same_keys(mine, recorded, "message")
    assert mine["stop_reason"] == recorded["stop_reason"]
    assert (mine["stop_sequence"] is None) == (recorded["stop_sequence"] is None)
    assert_same_keys(mine["usage"], recorded["usage"], "usage")
    assert set(mine["usage"]["cache_creation"]) == set(recorded["usage"]["cache_creation"])
    assert_same_blocks(mine["content"], recorded["content"])
    for msg in (mine, recorded):
        assert re.fullmatch(r"msg_01[A-Za-z0-9]{22}", msg["id"])
        for block in msg["content"]:
            if block["type"] == "tool_use":
                assert re.fullmatch(r"toolu_01[A-Za-z0-9]{22}", block["id"])


def assert_same_stream(
    mine: list[tuple[str, dict[str, Any]]], recorded: list[tuple[str, dict[str, Any]]]
) -> None:
    assert units(mine) == units(recorded)
    assert mine[0][0] == "message_start" and mine[-1][0] == recorded[-1][0]
    rec_by_name: dict[str, dict[str, Any]] = {}
    rec_blocks: dict[str, dict[str, Any]] = {}
    rec_deltas: dict[str, dict[str, Any]] = {}
    for name, data in recorded:
        rec_by_name.setdefault(name, data)
        if name == "content_block_start":
            rec_blocks.setdefault(data["content_block"]["type"], data["content_block"])
        if name == "content_block_delta":
            rec_deltas.setdefault(data["delta"]["type"], data["delta"])
    for name, data in mine:
        if name not in rec_by_name:  # the hand-made refusal recording has no ping
            assert name == "ping" and data == {"type": "ping"}
            continue
        assert_same_keys(data, rec_by_name[name], f"{name} event")
        if name == "content_block_start":
            block = data["content_block"]
            assert_same_keys(block, rec_blocks[block["type"]], f"{block['type']} start block")
        if name == "content_block_delta":
            delta = data["delta"]
            assert_same_keys(delta, rec_deltas[delta["type"]], f"{delta['type']}")
    start, rec_start = mine[0][1]["message"], rec_by_name["message_start"]["message"]
    assert_same_keys(start, rec_start, "message_start.message")
    assert start["content"] == rec_start["content"] == []
    assert start["stop_reason"] is rec_start["stop_reason"] is None
    if "cache_creation" in rec_start["usage"]:  # recent recordings carry the full usage
        assert_same_keys(start["usage"], rec_start["usage"], "message_start usage")
    mine_delta = next(d for n, d in mine if n == "message_delta")
    rec_delta = rec_by_name["message_delta"]
    assert set(mine_delta["delta"]) == set(rec_delta["delta"])
    assert mine_delta["delta"]["stop_reason"] == rec_delta["delta"]["stop_reason"]
    assert set(rec_delta["usage"]) <= set(mine_delta["usage"])
    if "input_tokens" in rec_delta["usage"]:
        assert set(mine_delta["usage"]) == set(rec_delta["usage"])
    for events in (mine, recorded):  # every tool_use input starts with an empty fragment
        firsts: dict[int, str] = {}
        for name, data in events:
            if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
                firsts.setdefault(data["index"], data["delta"]["partial_json"])
        assert all(v == "" for v in firsts.values())
    for events in (mine, recorded):  # a thinking block ends with "" then its signature
        kinds = [d["delta"] for n, d in events if n == "content_block_delta"]
        sig = [k for k, d in enumerate(kinds) if d["type"] == "signature_delta"]
        for k in sig:
            assert kinds[k - 1] == {"type": "thinking_delta", "thinking": ""}


# ---------------------------------------------------------------------------------------------
# recorded requests are accepted
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in REQUESTS if not n.startswith("error_")])
def test_recorded_requests_are_accepted(sandbox: ThreadedSandbox, name: str) -> None:
    body = emulated(load(name))
    status, _, data = post(sandbox, body)
    assert status == 200, f"{name}: the emulator rejects a request the real API accepted: {data!r}"
    if body.get("stream"):
        assert parse_sse(data)[-1][0] == "message_stop"


def test_recorded_error_requests_get_the_recorded_errors(sandbox: ThreadedSandbox) -> None:
    status, _, data = post(sandbox, load("error_400_invalid_request.request.json"))
    recorded = load("error_400_invalid_request.json")
    assert status == 400
    mine = json.loads(data)
    assert set(mine) == set(recorded)
    assert mine["error"] == {"type": recorded["error"]["type"],
                             "message": recorded["error"]["message"]}  # fmt: skip
    # recorded on /v1/messages/count_tokens, which needs no max_tokens
    body = {**load("error_404_not_found.request.json"), "max_tokens": 16}
    status, _, data = post(sandbox, body)
    recorded = load("error_404_not_found.json")
    assert status == 404
    mine = json.loads(data)
    assert set(mine) == set(recorded) and mine["error"] == {
        "type": recorded["error"]["type"],
        "message": recorded["error"]["message"],
    }
    assert re.fullmatch(r"req_011C[A-Za-z0-9]{20}", recorded["request_id"])
    assert re.fullmatch(r"req_011C[A-Za-z0-9]{20}", mine["request_id"])


def test_overloaded_error_matches_the_docs(sandbox: ThreadedSandbox) -> None:
    recorded = load("error_529_overloaded.json")
    body = {"model": FALLBACK_MODEL, "max_tokens": 64,
            "messages": [{"role": "user", "content": "[sandbox:error=529] hi"}]}  # fmt: skip
    status, _, data = post(sandbox, body)
    mine = json.loads(data)
    assert status == 529
    assert mine["error"] == recorded["error"]
    assert set(mine) == set(recorded) | {"request_id"}  # real responses add request_id


def test_replaying_recorded_assistant_turns_is_accepted(sandbox: ThreadedSandbox) -> None:
    # thinking (with a real signature) + text + tool_use, answered by a tool_result
    request = emulated(load("message_thinking_tool_use.request.json"))
    answer = load("message_thinking_tool_use.json")
    call = answer["content"][-1]
    request["messages"] += [
        {"role": "assistant", "content": answer["content"]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call["id"], "content": "France"}]},
    ]  # fmt: skip
    body = ours(sandbox, request)
    assert body["stop_reason"] == "end_turn" and '"France"' in body["content"][-1]["text"]
    # redacted_thinking + text, then another user turn
    request = emulated(load("message_thinking_redacted.request.json"))
    request["messages"] += [
        {"role": "assistant", "content": load("message_thinking_redacted.json")["content"]},
        {"role": "user", "content": "Thanks. What is 2+2?"},
    ]
    assert ours(sandbox, request)["stop_reason"] == "end_turn"


# ---------------------------------------------------------------------------------------------
# non-streaming responses
# ---------------------------------------------------------------------------------------------

NONSTREAM = [
    ("message_text.json", "message_text.request.json", ""),
    ("message_thinking.json", "message_thinking.request.json", ""),
    ("message_thinking_redacted.json", "message_thinking_redacted.request.json", ""),
    ("message_thinking_tool_use.json", "message_thinking_tool_use.request.json",
     " Use get_user_country."),
    ("message_tool_use_parallel.json", "message_tool_use_parallel.request.json",
     " Use retrieve_entity_info."),
    ("message_tool_result_followup.json", "message_tool_result_followup.request.json", ""),
]  # fmt: skip


@pytest.mark.parametrize(("response", "request_name", "extra"), NONSTREAM)
def test_nonstream_shapes_match_recordings(
    sandbox: ThreadedSandbox, response: str, request_name: str, extra: str
) -> None:
    body = emulated(load(request_name))
    if extra:  # the sandbox calls a tool only when the user names it
        body = with_text(body, extra)
    assert_same_message(ours(sandbox, body), load(response))


# ---------------------------------------------------------------------------------------------
# streams
# ---------------------------------------------------------------------------------------------


def _user(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": FALLBACK_MODEL, "max_tokens": 4096, "stream": True,
            "messages": [{"role": "user", "content": text}], **extra}  # fmt: skip


STREAMS = [
    ("stream_text.sse", lambda: load("stream_text.request.json")),
    ("stream_text_sdk_basic.sse", lambda: _user("Say hello")),
    ("stream_thinking.sse", lambda: emulated(load("stream_thinking.request.json"))),
    ("stream_thinking_redacted.sse",
     lambda: emulated(load("stream_thinking_redacted.request.json"))),
    ("stream_tool_use.sse", lambda: _user("What's the weather in Paris? Use get_weather.",
                                          tools=[WEATHER])),
    ("stream_refusal.sse", lambda: _user("[sandbox:refusal] something harmful")),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "make"), STREAMS, ids=[s[0] for s in STREAMS])
def test_streams_match_recordings(sandbox: ThreadedSandbox, fixture: str, make: Any) -> None:
    recorded = recorded_stream(fixture)
    mine = ours(sandbox, make())
    assert_same_stream(mine, recorded)
    assert ("ping", {"type": "ping"}) in mine[:3]


def test_max_tokens_inside_tool_input_matches_recording(sandbox: ThreadedSandbox) -> None:
    recorded = recorded_stream("stream_max_tokens_mid_tool.sse")
    body = _user("Write a tax guide with make_file.", tools=[MAKE_FILE])
    full = ours(sandbox, {**body, "stream": False})["usage"]["output_tokens"]
    mine = ours(sandbox, {**body, "max_tokens": full - 4})
    assert_same_stream(mine, recorded)
    assert units(mine)[-3:] == [("tool_use", ("input_json_delta",), False), "message_delta",
                                "message_stop"]  # fmt: skip


def test_stream_error_frame_matches_the_docs(sandbox: ThreadedSandbox) -> None:
    recorded = (FIXTURES / "stream_error_overloaded.sse").read_bytes().strip()
    status, _, data = post(sandbox, _user("[sandbox:stream_error] go"))
    assert status == 200
    assert data.endswith(recorded + b"\n\n")
    assert b"message_stop" not in data


def test_headers_match_recording(sandbox: ThreadedSandbox) -> None:
    recorded = load("headers_ratelimit_example.json")["headers"]
    status, headers, _ = post(sandbox, emulated(load("message_text.request.json")))
    assert status == 200
    names = {h for h in recorded if h.startswith("anthropic-ratelimit-")}
    assert names == {h for h in headers if h.startswith("anthropic-ratelimit-")}
    for name in names:
        pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" if name.endswith("-reset") else r"\d+"
        assert re.fullmatch(pattern, recorded[name]) and re.fullmatch(pattern, headers[name])
    for name in ("request-id", "anthropic-organization-id", "content-type"):
        assert name in headers
    assert re.fullmatch(r"req_011C[A-Za-z0-9]{20}", recorded["request-id"])
    assert re.fullmatch(r"req_011C[A-Za-z0-9]{20}", headers["request-id"])
    assert headers["content-type"].split(";")[0] == recorded["content-type"]
