"""The Responses sandbox against the repository's own Responses fixtures
(``tests/fixtures/openai_responses``, provenance in its ``SOURCES.md``).

The comparisons are structural: key sets (and their order) of the response object, of every
output item, content part and usage block; the event-order grammar of streams and the key set of
every event type; error envelopes exactly. The fixtures' requests must all be accepted by the
sandbox (a 400 would mean the emulator is stricter than the real API). Ids, texts and token
counts are never compared.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import ThreadedSandbox

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openai_responses"
KEY = "sk-responses-fixture-test-0000000000"
# Keys the emulated (2026) models send that the older recordings predate; `billing` is sent on
# non-stream bodies only.
NEWER_FIELDS = {"completed_at", "frequency_penalty", "presence_penalty", "prompt_cache_retention"}
MODEL_MAP = {"gpt-5": "gpt-5.4"}  # recorded model ids the table does not carry
DELTAS = {
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_summary_text.delta",
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    running = ThreadedSandbox(api_key=KEY)
    yield running
    running.close()


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def sse(name: str) -> list[dict[str, Any]]:
    return parse_sse((FIXTURES / name).read_bytes())


def parse_sse(body: bytes) -> list[dict[str, Any]]:
    out = []
    for frame in body.split(b"\n\n"):
        if not frame.strip():
            continue
        event, data = frame.split(b"\n")
        assert event.startswith(b"event: ") and data.startswith(b"data: "), frame
        payload = json.loads(data[6:])
        assert payload["type"] == event[7:].decode()
        out.append(payload)
    return out


def adapt(request: dict[str, Any]) -> dict[str, Any]:
    return {**request, "model": MODEL_MAP.get(request["model"], request["model"])}


def post(sandbox: ThreadedSandbox, body: Any) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        hdrs = {"Authorization": f"Bearer {KEY}"}
        async with (
            aiohttp.ClientSession() as s,
            s.post(sandbox.openai_base_url + "/responses", json=body, headers=hdrs) as r,
        ):
            return r.status, await r.read()

    return asyncio.run(go())


def emulate(sandbox: ThreadedSandbox, request: dict[str, Any]) -> dict[str, Any]:
    status, body = post(sandbox, adapt(request))
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def emulate_stream(sandbox: ThreadedSandbox, request: dict[str, Any]) -> list[dict[str, Any]]:
    status, body = post(sandbox, {**adapt(request), "stream": True})
    assert status == 200, body
    return parse_sse(body)


# ---------------------------------------------------------------------------------------------
# structural comparison
# ---------------------------------------------------------------------------------------------


def same_keys(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    extra = set(ours) - set(theirs) - NEWER_FIELDS - {"billing"}
    assert not extra, f"{where}: keys the vendor payload does not have: {sorted(extra)}"
    absent = set(theirs) - set(ours)
    assert not absent, f"{where}: vendor keys the emulator does not send: {sorted(absent)}"
    common = [k for k in theirs if k in ours]
    assert [k for k in ours if k in theirs] == common, f"{where}: key order differs"


def same_item(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    assert ours["type"] == theirs["type"], where
    same_keys(ours, theirs, f"{where} ({ours['type']})")
    for key in ("content", "summary"):
        for k, (a, b) in enumerate(zip(ours.get(key) or (), theirs.get(key) or (), strict=False)):
            same_keys(a, b, f"{where}.{key}[{k}]")


def same_response(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    same_keys(ours, theirs, where)
    assert ours["object"] == theirs["object"] == "response"
    assert ours["status"] == theirs["status"], where
    assert ours["incomplete_details"] == theirs["incomplete_details"], where
    assert [i["type"] for i in ours["output"]] == [i["type"] for i in theirs["output"]], where
    for k, (a, b) in enumerate(zip(ours["output"], theirs["output"], strict=True)):
        same_item(a, b, f"{where}.output[{k}]")
    for key in ("reasoning", "text"):
        same_keys(ours[key], theirs[key], f"{where}.{key}")
    for k, (a, b) in enumerate(zip(ours["tools"], theirs["tools"], strict=True)):
        same_keys(a, b, f"{where}.tools[{k}]")
    if theirs["usage"] is None:
        assert ours["usage"] is None, where
    else:
        same_keys(ours["usage"], theirs["usage"], f"{where}.usage")
        for key in ("input_tokens_details", "output_tokens_details"):
            same_keys(ours["usage"][key], theirs["usage"][key], f"{where}.usage.{key}")


def grammar(events: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for ev in events:
        if not (out and out[-1] == ev["type"] and ev["type"] in DELTAS):
            out.append(ev["type"])
    return out


def _kind(event: dict[str, Any]) -> tuple[str, str]:
    """Event type and, for item events, the item type (a reasoning item vs. a function call)."""
    return event["type"], (event.get("item") or {}).get("type", "")


def same_stream(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert grammar(ours) == grammar(theirs)
    for events in (ours, theirs):
        assert [ev["sequence_number"] for ev in events] == list(range(len(events)))
    first_of: dict[tuple[str, str], dict[str, Any]] = {}
    for ev in theirs:
        first_of.setdefault(_kind(ev), ev)
    for ev in ours:
        ref = first_of[_kind(ev)]
        assert set(ev) == set(ref), ev["type"]
        assert list(ev) == [k for k in ref if k in ev], f"{ev['type']}: key order differs"
        if "response" in ev:
            same_response(ev["response"], ref["response"], ev["type"])
        if "item" in ev:
            same_item(ev["item"], ref["item"], ev["type"])
        if "part" in ev:
            same_keys(ev["part"], ref["part"], f"{ev['type']}.part")


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["response_text", "response_function_call", "response_reasoning", "response_incomplete"]
)
def test_nonstream_fixture(sandbox: ThreadedSandbox, name: str) -> None:
    ours = emulate(sandbox, load(f"{name}.request.json"))
    same_response(ours, load(f"{name}.json"), name)


def test_fixture_requests_are_accepted(sandbox: ThreadedSandbox) -> None:
    for path in sorted(FIXTURES.glob("*.request.json")):
        if path.name.startswith("error_"):
            continue
        request = adapt(json.loads(path.read_text()))
        status, body = post(sandbox, request)
        assert status == 200, (path.name, body)


def test_text_stream_fixture(sandbox: ThreadedSandbox) -> None:
    theirs = sse("stream_text.sse")
    # the recorded turn answered a function_call_output without a reasoning item: replay that
    # turn with effort none (the emulator adds a reasoning item whenever the model reasons)
    request = {**load("response_reasoning.request.json"), "reasoning": {"effort": "none"}}
    same_stream(emulate_stream(sandbox, request), theirs)


def test_function_call_stream_fixture(sandbox: ThreadedSandbox) -> None:
    theirs = sse("stream_function_call.sse")
    request = load("stream_function_call.request.json")
    same_stream(emulate_stream(sandbox, request), theirs)


def test_stream_fixtures_are_self_consistent() -> None:
    """The trimmed fixtures still add up: deltas concatenate to the done texts and arguments."""
    for name in ("stream_text.sse", "stream_function_call.sse"):
        events = sse(name)
        final = events[-1]["response"]
        for index, item in enumerate(final["output"]):
            pieces = "".join(
                ev["delta"] for ev in events if ev["type"] in DELTAS and ev["output_index"] == index
            )
            if item["type"] == "message":
                assert pieces == item["content"][0]["text"]
            elif item["type"] == "function_call":
                assert pieces == item["arguments"]
            else:
                assert pieces == "".join(s["text"] for s in item["summary"])


def test_error_fixture(sandbox: ThreadedSandbox) -> None:
    status, body = post(sandbox, load("error_400_missing_tool_name.request.json"))
    assert status == 400
    assert json.loads(body) == load("error_400_missing_tool_name.json")


def test_sources_list_every_fixture() -> None:
    sources = (FIXTURES / "SOURCES.md").read_text()
    for path in FIXTURES.iterdir():
        if path.name != "SOURCES.md":
            assert f"`{path.name}`" in sources, path.name
