"""Anthropic Messages emulator: ``POST /v1/messages`` on the sandbox app.

The Anthropic SDK's base URL has no ``/v1``: point it (or the gateway) at ``Sandbox.base_url``
(also exposed as ``Sandbox.anthropic_base_url``). Validation lives in ``_anthropic_rules``; the
answer text, tokenizer and JSON-schema values are shared with the OpenAI emulator (``_reply``,
``_jsonschema_gen``), and so are the test hooks and the control endpoints (``openai_chat``):
queued faults (``POST /_sandbox/faults``) and the request log (``GET /_sandbox/requests``, with
``x-api-key`` masked) cover this endpoint too.

Directives in the last user turn's text: the shared ``[sandbox:latency=MS]``,
``[sandbox:chunk_delay=MS]``, ``[sandbox:error=STATUS|quota]``, ``[sandbox:retry_after=S]``,
``[sandbox:hang]``, ``[sandbox:cut=N]``, plus ``[sandbox:redacted_thinking]`` (a
``redacted_thinking`` block instead of ``thinking`` when thinking is on; Anthropic's own
``ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_...`` test string works too),
``[sandbox:refusal]`` (``stop_reason: "refusal"`` with ``stop_details``) and
``[sandbox:stream_error]`` (an ``overloaded_error`` event mid-stream, then the stream ends).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from ._anthropic_rules import (
    AnthropicError,
    MessagesParams,
    bad,
    redacted_data,
    sign_thinking,
    validate,
)
from ._jsonschema_gen import generate, hint_words
from ._reply import (
    count_tokens,
    rand_id,
    reply_text,
    stable_seed,
    strip_directives,
    tokenize,
    tool_result_text,
)
from ._rules import ApiError
from .openai_chat import (
    STATE,
    Hooks,
    SandboxState,
    abort,
    delay_or_hang,
    ensure_state,
    hooks_from_directives,
    hooks_from_fault,
    record,
    take_fault,
)

API_VERSIONS = ("2023-06-01", "2023-01-01")
MAX_BODY = 32 * 1024 * 1024
EXTRA_DIRECTIVES = frozenset(("redacted_thinking", "refusal", "stream_error"))
TOOLS_SYSTEM_TOKENS = {"auto": 346, "none": 346, "any": 313, "tool": 313}
# Anthropic's documented test string that makes the real API return redacted_thinking blocks.
REDACTED_TRIGGER = "ANTHROPIC_MAGIC_STRING_TRIGGER_REDACTED_THINKING_"
LONG_SYSTEM_CHARS = 200  # longer system prompts are reported as read from the prompt cache
ORG_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "https://chatgate.invalid/sandbox"))
REFUSAL = {
    "type": "refusal",
    "category": "cyber",
    "explanation": "This request was refused due to policy.",
}
FILLERS = (
    "This answer comes from the Chatgate sandbox.",
    "It is generated deterministically from your request.",
    "No real model was called to write it.",
    "Send the same request again and you will get the same words.",
    "Every word and punctuation mark here is counted as a token.",
    "The sandbox speaks the Anthropic Messages wire format.",
    "Streaming sends these words a few tokens at a time.",
    "Usage numbers are computed from this text.",
    "Tool use and structured JSON output are emulated as well.",
    "Latency, errors and dropped connections can be injected on demand.",
    "That should be enough to exercise the gateway.",
    "Nothing in this reply depends on the wall clock.",
    "The quick brown fox jumps over the lazy dog.",
    "Short sentences keep the token count predictable.",
    "Thinking blocks come with a signature of their own.",
    "Let me know if you need anything else.",
    "Here is a second thought on the same topic.",
    "Deterministic output makes tests easy to write.",
    "A gateway should pass this text through unchanged.",
    "Finally, a closing sentence to round things off.",
)
_RATE = {"requests": 1000, "tokens": 96000, "input-tokens": 80000, "output-tokens": 16000}


def new_request_id() -> str:
    return "req_011C" + rand_id(20)


# --------------------------------------------------------------------------------------------
# errors and headers
# --------------------------------------------------------------------------------------------


def injected_error(kind: str, model: str, retry_after: float | None) -> AnthropicError:
    """The error a hook asked for, shaped like Anthropic's."""
    if kind == "quota":
        return bad(
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
            "Billing to upgrade or purchase credits."
        )
    status = int(kind)
    headers: dict[str, str] = {}
    if retry_after is not None or status == 429:
        wait = 1.0 if retry_after is None else retry_after
        headers["retry-after"] = str(int(wait)) if float(wait).is_integer() else str(wait)
    if status == 429:
        headers["anthropic-ratelimit-requests-remaining"] = "0"
        msg = (
            "This request would exceed the rate limit for your organization (org-sandbox) of "
            f"{_RATE['requests']} requests per minute. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
            "current usage. Please reduce the number of requests or try again later."
        )
    else:
        msg = {
            400: "Invalid request (error injected by the Chatgate sandbox).",
            401: "invalid x-api-key",
            402: "Your organization's billing is not set up or has lapsed (sandbox injection).",
            403: "Your API key does not have permission to use the specified resource.",
            404: f"model: {model}",
            413: "Request exceeds the maximum allowed number of bytes.",
            500: "Internal server error",
            504: "Request timed out",
            529: "Overloaded",
        }.get(status, f"Error {status} injected by the Chatgate sandbox.")
    return AnthropicError(status, msg, headers=headers)


def _ratelimit_headers(input_tokens: int = 0, max_tokens: int = 0) -> dict[str, str]:
    now = datetime.now(UTC).replace(microsecond=0)
    soon = (now + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    used = {
        "requests": 1,
        "tokens": input_tokens + max_tokens,
        "input-tokens": input_tokens,
        "output-tokens": max_tokens,
    }
    headers: dict[str, str] = {}
    for name, limit in _RATE.items():
        left = max(0, limit - used[name])
        if name != "requests":
            left = max(0, round(left, -3))  # token counts are rounded to the nearest thousand
        headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
        headers[f"anthropic-ratelimit-{name}-remaining"] = str(left)
        headers[f"anthropic-ratelimit-{name}-reset"] = soon
    return headers


def _headers(req_id: str, input_tokens: int = 0, max_tokens: int = 0) -> dict[str, str]:
    return {
        **_ratelimit_headers(input_tokens, max_tokens),
        "request-id": req_id,
        "anthropic-organization-id": ORG_ID,
    }


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def error_response(err: AnthropicError, req_id: str) -> web.Response:
    headers = _headers(req_id)
    headers.update(err.headers)
    return web.Response(
        body=_compact(err.body(req_id)),
        status=err.status,
        headers=headers,
        content_type="application/json",
    )


def _check_auth(request: web.Request, state: SandboxState) -> None:
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    if not key:
        raise AnthropicError(401, "x-api-key header is required")
    if state.api_key is not None and not hmac.compare_digest(key.encode(), state.api_key.encode()):
        raise AnthropicError(401, "invalid x-api-key")


def _check_version(request: web.Request) -> None:
    version = request.headers.get("anthropic-version")
    if version is None:
        raise bad("anthropic-version: header is required")
    if version.strip() not in API_VERSIONS:
        raise bad(f"anthropic-version: invalid version '{version}'")


# --------------------------------------------------------------------------------------------
# the answer
# --------------------------------------------------------------------------------------------


@dataclass
class BlockPlan:
    block: dict[str, Any]  # the content block as a non-streaming response shows it
    pieces: list[str] = field(default_factory=list)  # streamed fragments (text/thinking/json)
    tokens: int = 0
    open: bool = False  # cut by max_tokens inside tool input: no content_block_stop (recorded)


@dataclass
class Plan:
    blocks: list[BlockPlan]
    stop_reason: str
    stop_sequence: str | None = None
    stop_details: dict[str, Any] | None = None

    @property
    def output_tokens(self) -> int:
        return sum(b.tokens for b in self.blocks)


def _text_of(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(b["text"] for b in blocks if b["type"] == "text")


def last_user(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return next(m for m in reversed(messages) if m["role"] == "user")


def _tool_results(params: MessagesParams) -> list[tuple[str, str]] | None:
    msgs = params.messages
    k = msgs.index(last_user(msgs))
    results = [b for b in msgs[k]["content"] if b["type"] == "tool_result"]
    if not results:
        return None
    names = {}
    if k > 0:
        names = {b["id"]: b["name"] for b in msgs[k - 1]["content"] if b["type"] == "tool_use"}
    out = []
    for b in results:
        content = b.get("content")
        text = content if isinstance(content, str) else _text_of(content or [])
        out.append((names.get(b["tool_use_id"], "tool"), text))
    return out


def _mentions(text: str, name: str) -> bool:
    lower = text.lower()
    variants = {name.lower(), name.lower().replace("_", " ").replace("-", " ")}
    return any(re.search(rf"(?<!\w){re.escape(v)}(?!\w)", lower) for v in variants)


def _tools_to_call(params: MessagesParams, user_text: str) -> list[dict[str, Any]]:
    choice = params.tool_choice or {"type": "auto"}
    if not params.tools or choice["type"] == "none":
        return []
    if choice["type"] == "tool":
        return [t for t in params.tools if t["name"] == choice["name"]]
    chosen = [t for t in params.tools if _mentions(user_text, t["name"])]
    if choice["type"] == "any" and not chosen:
        chosen = params.tools[:1]
    return chosen[:1] if choice.get("disable_parallel_tool_use") else chosen


def _pieces(tokens: list[str], rng: random.Random) -> list[str]:
    """Group tokens into stream fragments: the first is one token, then 1-4 tokens each."""
    out: list[str] = []
    k = 0
    while k < len(tokens):
        n = 1 if not out else rng.randint(1, 4)
        out.append("".join(tokens[k : k + n]))
        k += n
    return out


_THOUGHTS = (
    "I should answer clearly and keep it short.",
    "Nothing here needs a tool, so a direct answer is best.",
    "Let me restate the request before answering it.",
    "The sandbox writes this reasoning deterministically.",
    "A short, friendly reply will do.",
    "I will quote the question back and add a few sentences.",
)


def _thinking_text(user_text: str, seed: int) -> str:
    echo = "".join(tokenize(user_text)[:20]).strip()
    head = f'The user wrote "{echo}".' if echo else "The user sent an empty message."
    rng = random.Random(seed ^ 0x7468696E6B)
    return " ".join([head, *rng.sample(_THOUGHTS, 3)])


def _gen_json(schema: dict[str, Any], rng: random.Random, hints: list[str], what: str) -> str:
    try:
        value = generate(schema, rng, hints)
    except (KeyError, IndexError, ValueError, TypeError, RecursionError) as exc:
        raise bad(f"{what}: unsupported JSON schema: {exc}") from exc
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def make_plan(params: MessagesParams, directives: dict[str, str]) -> Plan:
    """Decide the content blocks, stop reason and token counts of the answer."""
    if "refusal" in directives:
        return Plan([BlockPlan({"type": "text", "text": ""})], "refusal", None, dict(REFUSAL))
    seed = stable_seed(
        params.model.id, params.messages, params.system, params.tools, params.output_schema
    )
    rng = random.Random(seed)
    user = last_user(params.messages)
    user_text = strip_directives(_text_of(user["content"]))
    images = sum(1 for b in user["content"] if b["type"] == "image")
    left = params.max_tokens
    blocks: list[BlockPlan] = []

    if params.thinking is not None:
        if "redacted_thinking" in directives or REDACTED_TRIGGER in user_text:
            data = redacted_data(seed)
            cost = min(left - 1, len(data) // 8)
            blocks.append(BlockPlan({"type": "redacted_thinking", "data": data}, tokens=cost))
        else:
            toks = tokenize(_thinking_text(user_text, seed))[: params.thinking["budget"]]
            toks = toks[: left - 1]
            text = "".join(toks)
            shown = "" if params.thinking["display"] == "omitted" else text
            block = {"type": "thinking", "thinking": shown, "signature": sign_thinking(shown)}
            pieces = _pieces(tokenize(shown), rng)
            blocks.append(BlockPlan(block, pieces, len(toks)))
        left -= blocks[-1].tokens

    results = _tool_results(params)
    calls = [] if results is not None else _tools_to_call(params, user_text)
    if calls:
        return _plan_tool_calls(params, calls, user_text, blocks, left, rng)

    if params.output_schema is not None:
        hints = hint_words(user_text)
        text = _gen_json(params.output_schema, rng, hints, "output_config.format.schema")
    elif results is not None:
        text = tool_result_text(results, seed, fillers=FILLERS)
    else:
        text = reply_text(user_text, seed, images=images, fillers=FILLERS)
    stop_reason, stop_seq = "end_turn", None
    hits = [(text.find(s), s) for s in params.stop_sequences if s in text]
    if hits:
        pos, stop_seq = min(hits)
        text, stop_reason = text[:pos], "stop_sequence"
    toks = tokenize(text)
    if len(toks) > left:
        toks, stop_reason, stop_seq = toks[:left], "max_tokens", None
    if toks or not blocks:
        block = {"type": "text", "text": "".join(toks)}
        blocks.append(BlockPlan(block, _pieces(toks, rng), len(toks)))
    return Plan(blocks, stop_reason, stop_seq)


def _plan_tool_calls(
    params: MessagesParams,
    calls: list[dict[str, Any]],
    user_text: str,
    blocks: list[BlockPlan],
    left: int,
    rng: random.Random,
) -> Plan:
    forced = params.tool_choice is not None and params.tool_choice["type"] in ("any", "tool")
    if not forced:  # with tool_choice auto the model usually says what it is about to do
        names = ", ".join(t["name"] for t in calls)
        toks = tokenize(f"I'll use the {names} tool{'s' if len(calls) > 1 else ''} for this.")
        if len(toks) > left:
            toks = toks[:left]
            blocks.append(BlockPlan({"type": "text", "text": "".join(toks)}, [*toks], len(toks)))
            return Plan(blocks, "max_tokens")
        blocks.append(
            BlockPlan({"type": "text", "text": "".join(toks)}, _pieces(toks, rng), len(toks))
        )
        left -= len(toks)
    hint_text = user_text
    for tool in calls:
        hint_text = re.sub(re.escape(tool["name"]), " ", hint_text, flags=re.I)
    hints = hint_words(hint_text)
    for tool in calls:
        what = f"tools.{params.tools.index(tool)}.custom.input_schema"
        args = _gen_json(tool["input_schema"], rng, hints, what)
        block = {
            "type": "tool_use",
            "id": "toolu_01" + rand_id(22),
            "name": tool["name"],
            "input": json.loads(args),
            "caller": {"type": "direct"},
        }
        toks = tokenize(args)
        cost = 3 + count_tokens(tool["name"]) + len(toks)
        if cost > left:  # max_tokens inside the tool input
            keep = max(0, left - 3 - count_tokens(tool["name"]))
            block["input"] = {}
            pieces = ["", *_pieces(toks[:keep], rng)]
            blocks.append(BlockPlan(block, pieces, left, open=True))
            return Plan(blocks, "max_tokens")
        blocks.append(BlockPlan(block, ["", *_pieces(toks, rng)], cost))
        left -= cost
    return Plan(blocks, "tool_use")


# --------------------------------------------------------------------------------------------
# usage, bodies and events
# --------------------------------------------------------------------------------------------


def _block_tokens(block: dict[str, Any]) -> int:
    kind = block["type"]
    if kind == "text":
        return count_tokens(block["text"])
    if kind == "image":
        return 1600
    if kind == "document":
        return 2000
    if kind == "tool_use":
        return 3 + count_tokens(block["name"]) + count_tokens(json.dumps(block["input"]))
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return 3 + sum(_block_tokens(b) for b in content)
        return 3 + count_tokens(content or "")
    if kind == "thinking":
        return count_tokens(block["thinking"])
    return 40  # redacted_thinking


def input_usage(params: MessagesParams) -> tuple[int, int]:
    """``(input_tokens, cache_read_input_tokens)`` for the request."""
    total = 3 + count_tokens(params.system)
    for msg in params.messages:
        total += 3 + sum(_block_tokens(b) for b in msg["content"])
    if params.tools:
        total += TOOLS_SYSTEM_TOKENS[(params.tool_choice or {"type": "auto"})["type"]]
        total += sum(count_tokens(json.dumps(t, sort_keys=True)) for t in params.tools)
    if params.output_schema is not None:
        total += 50 + count_tokens(json.dumps(params.output_schema, sort_keys=True))
    cached = count_tokens(params.system) if len(params.system) > LONG_SYSTEM_CHARS else 0
    return total - cached, cached


def _usage(params: MessagesParams, output_tokens: int) -> dict[str, Any]:
    fresh, cached = input_usage(params)
    return {
        "input_tokens": fresh,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def message_body(params: MessagesParams, plan: Plan, msg_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": params.model.snapshot,
        "content": [b.block for b in plan.blocks],
        "stop_reason": plan.stop_reason,
        "stop_sequence": plan.stop_sequence,
    }
    if plan.stop_details is not None:
        body["stop_details"] = plan.stop_details
    body["usage"] = _usage(params, plan.output_tokens)
    return body


def _start_block(block: dict[str, Any]) -> dict[str, Any]:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": ""}
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if kind == "tool_use":
        return {**{k: v for k, v in block.items() if k != "input"}, "input": {}}
    return dict(block)  # redacted_thinking arrives whole


def _deltas(b: BlockPlan) -> list[dict[str, Any]]:
    kind = b.block["type"]
    if kind == "text":
        return [{"type": "text_delta", "text": p} for p in b.pieces]
    if kind == "tool_use":
        return [{"type": "input_json_delta", "partial_json": p} for p in b.pieces]
    if kind == "thinking":
        out = [{"type": "thinking_delta", "thinking": p} for p in b.pieces]
        out.append({"type": "thinking_delta", "thinking": ""})
        out.append({"type": "signature_delta", "signature": b.block["signature"]})
        return out
    return []


def stream_events(params: MessagesParams, plan: Plan, msg_id: str) -> list[tuple[str, Any]]:
    """Every ``(event name, payload)`` of the SSE stream, in the recorded order."""
    message = {**message_body(params, plan, msg_id), "content": [], "stop_reason": None}
    message.pop("stop_details", None)
    message["usage"] = _usage(params, 1)
    events: list[tuple[str, Any]] = [
        ("message_start", {"type": "message_start", "message": message})
    ]
    ping = ("ping", {"type": "ping"})
    for i, b in enumerate(plan.blocks):
        start = {"type": "content_block_start", "index": i, "content_block": _start_block(b.block)}
        events.append(("content_block_start", start))
        if i == 0:
            events.append(ping)
        for d in _deltas(b):
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
            )
        if not b.open:
            events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    if not plan.blocks:
        events.append(ping)
    delta: dict[str, Any] = {"stop_reason": plan.stop_reason, "stop_sequence": plan.stop_sequence}
    if plan.stop_details is not None:
        delta["stop_details"] = plan.stop_details
    usage = _usage(params, plan.output_tokens)
    final_usage = {k: usage[k] for k in ("input_tokens", "cache_creation_input_tokens",
                                         "cache_read_input_tokens", "output_tokens")}  # fmt: skip
    events.append(
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage})
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def frame(name: str, payload: Any) -> bytes:
    # ping and error frames are sent with spaces after the separators (recorded / documented)
    data = json.dumps(payload).encode() if name in ("ping", "error") else _compact(payload)
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


STREAM_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def _with_stream_error(events: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Cut the stream after the second delta (or the last event before message_delta)."""
    deltas = [k for k, (name, _) in enumerate(events) if name == "content_block_delta"]
    if len(deltas) >= 2:
        end = deltas[1] + 1
    else:
        end = next(k for k, (name, _) in enumerate(events) if name == "message_delta")
    return [*events[:end], ("error", STREAM_ERROR)]


# --------------------------------------------------------------------------------------------
# the handler
# --------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def _directives(params: MessagesParams, hooks: Hooks) -> dict[str, str]:
    raw = _text_of(last_user(params.messages)["content"])
    try:
        return hooks_from_directives(raw, hooks, EXTRA_DIRECTIVES)
    except ApiError as exc:
        raise bad(exc.message) from exc


async def messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    req_id = new_request_id()
    raw = await request.read()
    try:
        body: Any = json.loads(raw, parse_constant=_reject_constant)
        parsed = True
    except (ValueError, RecursionError):
        body, parsed = raw.decode("utf-8", "replace"), False
    record(request, state, body)
    try:
        _check_auth(request, state)
        _check_version(request)
        if len(raw) > MAX_BODY:
            raise AnthropicError(413, "Request exceeds the maximum allowed number of bytes.")
        if not parsed:
            raise bad("There was an error parsing the body of your request: invalid JSON.")
        model = body.get("model") if isinstance(body, dict) else None
        fault = take_fault(state, model)
        hooks = hooks_from_fault(fault)
        if fault is not None and (hooks.error is not None or hooks.hang):
            if not await delay_or_hang(request, state, hooks):  # before validation: an outage
                return web.Response(status=499)
            if hooks.error is not None:
                raise injected_error(hooks.error, str(model), hooks.retry_after)
        params = validate(body)
        fresh, cached = input_usage(params)
        if fresh + cached > params.model.context_window:
            limit = params.model.context_window
            raise bad(f"prompt is too long: {fresh + cached} tokens > {limit} maximum")
        directives = _directives(params, hooks)
        if not await delay_or_hang(request, state, hooks):
            return web.Response(status=499)
        if hooks.error is not None:
            raise injected_error(hooks.error, params.model.id, hooks.retry_after)
        plan = make_plan(params, directives)
    except AnthropicError as err:
        return error_response(err, req_id)
    msg_id = "msg_01" + rand_id(22)
    headers = _headers(req_id, fresh + cached, params.max_tokens)
    if params.stream:
        events = stream_events(params, plan, msg_id)
        if "stream_error" in directives:
            events = _with_stream_error(events)
        return await _send_stream(request, events, headers, hooks)
    data = _compact(message_body(params, plan, msg_id))
    if hooks.cut is None:
        return web.Response(body=data, headers=headers, content_type="application/json")
    resp = web.StreamResponse(headers=headers)
    resp.content_type = "application/json"
    resp.content_length = len(data)
    await resp.prepare(request)
    await resp.write(data[: len(data) // 2])
    abort(request)
    return resp


async def _send_stream(
    request: web.Request, events: list[tuple[str, Any]], headers: dict[str, str], hooks: Hooks
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={**headers, "cache-control": "no-cache"})
    resp.content_type = "text/event-stream"
    resp.charset = "utf-8"
    await resp.prepare(request)
    delay = hooks.chunk_delay_ms / 1000
    try:
        for k, (name, payload) in enumerate(events):
            if hooks.cut is not None and k >= hooks.cut:
                break
            if k and delay:
                await asyncio.sleep(delay)
            await resp.write(frame(name, payload))
        if hooks.cut is not None:  # the connection drops after `cut` events
            abort(request)
            return resp
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away mid-stream
    return resp


async def not_found(request: web.Request) -> web.Response:
    return error_response(AnthropicError(404, "Not Found"), new_request_id())


def setup(app: web.Application, api_key: str | None = None) -> None:
    """Install ``POST /v1/messages`` on ``app`` (sharing the sandbox state and hooks).

    Call before any catch-all ``/v1/...`` route is registered (see ``create_app``).
    """
    ensure_state(app, api_key)
    app.router.add_post("/v1/messages", messages)
    app.router.add_route("*", "/v1/messages/{tail:.*}", not_found)
