"""OpenAI Responses emulator: ``POST /v1/responses`` on the sandbox app.

Same base URL, Bearer auth, error envelope, headers, queued faults (``/_sandbox/faults``) and
request log (``/_sandbox/requests``) as the Chat Completions emulator (``openai_chat``); the model
table and its reasoning rules are shared too (``_rules``), validation lives in
``_responses_rules``, the answer text in ``_reply``. Nothing is stored: ``previous_response_id``
always answers "not found".

Output items, in order: a ``reasoning`` item when the effective effort is not ``none`` (its
``summary`` is filled only when ``reasoning.summary`` is requested), then either
``function_call`` items (``tool_choice`` required / named, or auto with the tool's name in the
last user input), or a ``web_search_call`` item and a ``message`` with ``url_citation``
annotations, or a plain ``message``. After ``function_call_output`` items the message answers
with the tool results. ``max_output_tokens`` counts reasoning tokens too; running out gives
``status: "incomplete"`` with ``incomplete_details.reason: "max_output_tokens"``.

Streams are ``event: <type>`` / ``data: <json>`` frames with an increasing ``sequence_number``
and no ``[DONE]``: ``response.created``, ``response.in_progress``, then per item
``response.output_item.added`` ... ``response.output_item.done``, then ``response.completed``
(or ``response.incomplete``).

Directives in the last user message: the shared ``[sandbox:latency=MS]``,
``[sandbox:chunk_delay=MS]``, ``[sandbox:error=STATUS|quota]``, ``[sandbox:retry_after=S]``,
``[sandbox:hang]``, ``[sandbox:cut=N]`` (the connection drops after N events), plus
``[sandbox:stream_error]`` (a ``response.failed`` event mid-stream, then the stream ends) and
``[sandbox:error_event]`` (an ``error`` event mid-stream, then the stream ends).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

from ._jsonschema_gen import generate, hint_words
from ._reply import (
    count_tokens,
    json_object_text,
    rand_id,
    reply_text,
    stable_seed,
    strip_directives,
    sysrand,
    tokenize,
    tool_result_text,
)
from ._responses_rules import WEB_SEARCH_TYPES, ResponsesParams, output_text, validate
from ._rules import ApiError
from .openai_chat import (
    INVALID_JSON,
    STATE,
    Hooks,
    _check_auth,
    _error_response,
    _headers,
    _json_bytes,
    _reject_constant,
    abort,
    delay_or_hang,
    ensure_state,
    hooks_from_directives,
    hooks_from_fault,
    injected_error,
    record,
    take_fault,
)

EXTRA_DIRECTIVES = frozenset(("stream_error", "error_event"))
DELTA_EVENTS = frozenset(
    (
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
    )
)
SERVER_ERROR = (
    "An error occurred while processing your request. You can retry your request, or contact us "
    "through our help center at help.openai.com if the error persists. Please include the "
    "request ID {req_id} in your message."
)
ERROR_EVENT = {
    "type": "error",
    "code": "server_error",
    "message": "The server had an error while processing your request. Sorry about that!",
    "param": None,
}
_THOUGHTS = (
    "I should answer clearly and keep it short.",
    "A direct answer is best here.",
    "Let me restate the request before answering it.",
    "The sandbox writes this summary deterministically.",
    "A short, friendly reply will do.",
    "I will quote the question back and add a few sentences.",
)
_HEX = "0123456789abcdef"


def _hex(n: int) -> str:
    return "".join(sysrand.choices(_HEX, k=n))


class _Ids:
    """Ids shaped like the real API's: items share the response id's 18-digit prefix."""

    def __init__(self) -> None:
        self.prefix = _hex(18)
        self.response = "resp_" + self.prefix + _hex(32)

    def item(self, kind: str) -> str:
        return f"{kind}_{self.prefix}{_hex(32)}"


# --------------------------------------------------------------------------------------------
# the answer
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    items: list[dict[str, Any]] = field(default_factory=list)  # final output items
    status: str = "completed"
    reasoning_tokens: int = 0
    output_tokens: int = 0


def _user_text(item: dict[str, Any]) -> tuple[str, int]:
    content = item.get("content")
    if isinstance(content, str):
        return content, 0
    texts = [str(p.get("text", "")) for p in content or () if p.get("type") == "input_text"]
    images = sum(1 for p in content or () if p.get("type") == "input_image")
    return " ".join(texts), images


def last_user(params: ResponsesParams) -> tuple[str, int]:
    """Raw text (with directives) and image count of the last user message."""
    for item in reversed(params.items):
        if item.get("role") == "user":
            return _user_text(item)
    return "", 0


def _tool_results(params: ResponsesParams) -> list[tuple[str, str]] | None:
    """``(name, output)`` of the function_call_output items that end the input, if any."""
    items = params.items
    if not items or items[-1].get("type") != "function_call_output":
        return None
    start = len(items)
    while start > 0 and "role" not in items[start - 1]:
        start -= 1
    return [
        (params.call_names.get(str(it["call_id"]), "tool"), output_text(it))
        for it in items[start:]
        if it.get("type") == "function_call_output"
    ]


def _mentions(text: str, name: str) -> bool:
    lower = text.lower()
    variants = {name.lower(), name.lower().replace("_", " ").replace("-", " ")}
    return any(re.search(rf"(?<!\w){re.escape(v)}(?!\w)", lower) for v in variants)


def choose_tools(params: ResponsesParams, user_text: str) -> tuple[list[dict[str, Any]], bool]:
    """The function tools to call and whether to search the web, from ``tool_choice``."""
    choice = params.tool_choice
    if choice == "none" or not params.tools:
        return [], False
    functions, search_ok, mode = params.functions, params.web_search, choice
    if isinstance(choice, dict):
        kind = choice["type"]
        if kind == "function":
            return [f for f in params.functions if f["name"] == choice["name"]], False
        if kind in WEB_SEARCH_TYPES:
            return [], True
        refs = choice["tools"]
        names = {r.get("name") for r in refs if r.get("type") == "function"}
        functions = [f for f in params.functions if f["name"] in names]
        search_ok = any(r.get("type") in WEB_SEARCH_TYPES for r in refs)
        mode = choice["mode"]
    chosen = [f for f in functions if _mentions(user_text, f["name"])]
    if not chosen and mode == "required" and not search_ok:
        chosen = functions[:1]
    if chosen:
        return (chosen if params.parallel_tool_calls else chosen[:1]), False
    return [], search_ok


def summary_text(user_text: str, seed: int) -> str:
    """A reasoning summary in the real API's style: a bold title, then a short paragraph."""
    echo = "".join(tokenize(user_text)[:20]).strip()
    head = f'The user wrote "{echo}".' if echo else "The user sent an empty message."
    rng = random.Random(seed ^ 0x73756D6D)
    return "**Answering the request**\n\n" + " ".join([head, *rng.sample(_THOUGHTS, 2)])


def _gen_json(schema: Any, rng: random.Random, hints: list[str], what: str, param: str) -> str:
    try:
        value = generate(schema, rng, hints)
    except (KeyError, IndexError, ValueError, TypeError, RecursionError) as exc:
        raise ApiError(400, f"Invalid schema for {what}: {exc}", param=param) from exc
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _encrypted() -> str:
    raw = bytes(sysrand.getrandbits(8) for _ in range(180))
    return "gAAAAAB" + base64.urlsafe_b64encode(raw).decode()


def _search(query: str) -> tuple[str, str]:
    """A deterministic (fake) source for a web search: ``(title, url)``."""
    slug = quote(re.sub(r"\W+", "-", query.lower()).strip("-") or "search")
    return (
        f"{query or 'Search'} - Example Reference",
        f"https://example.com/{slug}?utm_source=openai",
    )


def make_plan(params: ResponsesParams, ids: _Ids) -> Plan:
    """Decide the output items, the status and the token counts of the answer."""
    seed = stable_seed(
        params.model, params.items, params.instructions, params.tools, params.text_format
    )
    rng = random.Random(seed)
    raw, images = last_user(params)
    user_text = strip_directives(raw)
    budget = params.max_output_tokens
    plan = Plan()

    if params.reasoning_item:
        cost = params.reasoning_tokens
        item: dict[str, Any] = {"id": ids.item("rs"), "type": "reasoning"}
        if "reasoning.encrypted_content" in params.include:
            item["encrypted_content"] = _encrypted()
        item["summary"] = []
        plan.items.append(item)
        if budget is not None and cost >= budget:  # the budget runs out while reasoning
            plan.reasoning_tokens = plan.output_tokens = budget
            plan.status = "incomplete"
            return plan
        if params.summary is not None:
            item["summary"] = [{"type": "summary_text", "text": summary_text(user_text, seed)}]
        plan.reasoning_tokens = plan.output_tokens = cost
    left = None if budget is None else budget - plan.output_tokens

    results = _tool_results(params)
    calls, search = ([], False) if results is not None else choose_tools(params, user_text)
    if calls:
        hint_text = user_text
        for fn in calls:
            hint_text = re.sub(re.escape(fn["name"]), " ", hint_text, flags=re.I)
        hints = hint_words(hint_text)
        for fn in calls:
            schema = fn.get("parameters") or {"type": "object", "properties": {}}
            args = _gen_json(schema, rng, hints, f"function '{fn['name']}'", "tools")
            overhead = 3 + count_tokens(fn["name"])
            cost = overhead + count_tokens(args)
            status = "completed"
            if left is not None and cost > left:
                args = "".join(tokenize(args)[: max(0, left - overhead)])
                cost, status, plan.status = left, "incomplete", "incomplete"
            plan.items.append(
                {"id": ids.item("fc"), "type": "function_call", "status": status,
                 "arguments": args, "call_id": "call_" + rand_id(24), "name": fn["name"]}
            )  # fmt: skip
            plan.output_tokens += cost
            if left is not None:
                left -= cost
            if status == "incomplete":
                break
        return plan

    annotations: list[dict[str, Any]] = []
    fmt = params.text_format
    if fmt["type"] == "json_schema":
        hints = hint_words(user_text)
        what = f"response_format '{fmt['name']}'"
        text = _gen_json(fmt["schema"], rng, hints, what, "text.format.schema")
    elif fmt["type"] == "json_object":
        text = json_object_text(user_text, seed)
    elif results is not None:
        text = tool_result_text(results, seed)
    else:
        text = reply_text(user_text, seed, images=images)
    if search and fmt["type"] == "text":
        query = "".join(tokenize(user_text)[:12]).strip()
        plan.items.append(
            {"id": ids.item("ws"), "type": "web_search_call", "status": "completed",
             "action": {"type": "search", "query": query}}
        )  # fmt: skip
        title, url = _search(query)
        cite = f"[example.com]({url})"
        text += f" ({cite})"
        start = len(text) - len(cite) - 1
        annotations.append(
            {"type": "url_citation", "end_index": start + len(cite), "start_index": start,
             "title": title, "url": url}
        )  # fmt: skip
    elif search:  # structured output: the search still runs, no citation in the JSON
        query = "".join(tokenize(user_text)[:12]).strip()
        plan.items.append(
            {"id": ids.item("ws"), "type": "web_search_call", "status": "completed",
             "action": {"type": "search", "query": query}}
        )  # fmt: skip
    tokens = tokenize(text)
    status = "completed"
    if left is not None and len(tokens) > left:
        tokens, status, plan.status = tokens[:left], "incomplete", "incomplete"
        text = "".join(tokens)
        annotations = [a for a in annotations if a["end_index"] <= len(text)]
    part = {"type": "output_text", "annotations": annotations, "logprobs": [], "text": text}
    plan.items.append(
        {"id": ids.item("msg"), "type": "message", "status": status, "content": [part],
         "role": "assistant"}
    )  # fmt: skip
    plan.output_tokens += len(tokens)
    return plan


# --------------------------------------------------------------------------------------------
# bodies and events
# --------------------------------------------------------------------------------------------


def _usage(params: ResponsesParams, plan: Plan) -> dict[str, Any]:
    return {
        "input_tokens": params.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": plan.output_tokens,
        "output_tokens_details": {"reasoning_tokens": plan.reasoning_tokens},
        "total_tokens": params.input_tokens + plan.output_tokens,
    }


def response_body(
    params: ResponsesParams,
    rid: str,
    created: int,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    completed_at: int | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``response`` object in the documented shape (key order as the API sends it)."""
    summary = "detailed" if params.summary == "auto" else params.summary
    tier = params.service_tier
    if status != "in_progress" and tier == "auto":
        tier = "default"
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": completed_at,
        "error": error,
        "frequency_penalty": 0.0,
        "incomplete_details": incomplete,
        "instructions": params.instructions,
        "max_output_tokens": params.max_output_tokens,
        "max_tool_calls": params.max_tool_calls,
        "model": params.spec.snapshot or params.model,
        "output": output,
        "parallel_tool_calls": params.parallel_tool_calls,
        "presence_penalty": 0.0,
        "previous_response_id": None,
        "prompt_cache_key": params.prompt_cache_key,
        "prompt_cache_retention": params.prompt_cache_retention,
        "reasoning": {"effort": params.effort, "summary": summary},
        "safety_identifier": params.safety_identifier,
        "service_tier": tier,
        "store": params.store,
        "temperature": params.temperature,
        "text": {"format": params.text_format, "verbosity": params.verbosity},
        "tool_choice": params.tool_choice,
        "tools": params.tools,
        "top_logprobs": params.top_logprobs,
        "top_p": params.top_p,
        "truncation": params.truncation,
        "usage": usage,
        "user": params.user,
        "metadata": params.metadata,
    }


def final_body(
    params: ResponsesParams,
    plan: Plan,
    rid: str,
    created: int,
    completed_at: int,
    billing: bool = False,
) -> dict[str, Any]:
    """The finished response; non-stream bodies also carry ``billing`` (recorded payloads)."""
    done = completed_at if plan.status == "completed" else None
    body = response_body(
        params, rid, created, status=plan.status, output=plan.items,
        usage=_usage(params, plan), completed_at=done,
    )  # fmt: skip
    if not billing:
        return body
    items = list(body.items())
    at = list(body).index("completed_at")  # recorded order: ..., background, billing, ...
    return dict([*items[:at], ("billing", {"payer": "developer"}), *items[at:]])


def _item_events(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of one output item, from ``output_item.added`` to ``output_item.done``."""
    kind, iid = item["type"], item["id"]
    at: dict[str, Any] = {"item_id": iid, "output_index": index}
    start: dict[str, Any]
    if kind == "reasoning":
        start = {**item, "summary": []}
    elif kind == "message":
        start = {"id": iid, "type": "message", "status": "in_progress", "content": [],
                 "role": "assistant"}  # fmt: skip
    elif kind == "function_call":
        start = {**item, "status": "in_progress", "arguments": ""}
    else:
        start = {"id": iid, "type": kind, "status": "in_progress", "action": {"type": "search"}}
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": index, "item": start}
    ]
    if kind == "reasoning":
        for k, part in enumerate(item["summary"]):
            at_k = {**at, "summary_index": k}
            blank = {"type": "summary_text", "text": ""}
            events.append({"type": "response.reasoning_summary_part.added", **at_k, "part": blank})
            events.extend(
                {"type": "response.reasoning_summary_text.delta", **at_k, "delta": tok}
                for tok in tokenize(part["text"])
            )
            events.append({"type": "response.reasoning_summary_text.done", **at_k,
                           "text": part["text"]})  # fmt: skip
            events.append({"type": "response.reasoning_summary_part.done", **at_k, "part": part})
    elif kind == "message":
        for c, part in enumerate(item["content"]):
            at_c = {**at, "content_index": c}
            empty: dict[str, Any] = {"type": "output_text", "annotations": [], "logprobs": [],
                                     "text": ""}  # fmt: skip
            events.append({"type": "response.content_part.added", **at_c, "part": empty})
            events.extend(
                {"type": "response.output_text.delta", **at_c, "delta": tok, "logprobs": []}
                for tok in tokenize(part["text"])
            )
            events.extend(
                {"type": "response.output_text.annotation.added", **at_c,
                 "annotation_index": a, "annotation": ann}
                for a, ann in enumerate(part["annotations"])
            )  # fmt: skip
            events.append({"type": "response.output_text.done", **at_c, "text": part["text"],
                           "logprobs": []})  # fmt: skip
            events.append({"type": "response.content_part.done", **at_c, "part": part})
    elif kind == "function_call":
        events.extend(
            {"type": "response.function_call_arguments.delta", **at, "delta": tok}
            for tok in tokenize(item["arguments"])
        )
        events.append({"type": "response.function_call_arguments.done", **at,
                       "arguments": item["arguments"]})  # fmt: skip
    else:
        for phase in ("in_progress", "searching", "completed"):
            events.append({"type": f"response.web_search_call.{phase}", "output_index": index,
                           "item_id": iid})  # fmt: skip
    events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    return events


def stream_events(
    params: ResponsesParams, plan: Plan, rid: str, created: int, completed_at: int
) -> list[dict[str, Any]]:
    """Every event of the stream, in order (sequence numbers are added by :func:`numbered`)."""
    start = response_body(params, rid, created, status="in_progress", output=[], usage=None)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": start},
    ]
    for index, item in enumerate(plan.items):
        events.extend(_item_events(index, item))
    final = final_body(params, plan, rid, created, completed_at)
    kind = "response.completed" if plan.status == "completed" else "response.incomplete"
    events.append({"type": kind, "response": final})
    return events


def _cut_point(events: list[dict[str, Any]]) -> int:
    """Where a mid-stream failure strikes: after the second delta, else before the end."""
    deltas = [k for k, ev in enumerate(events) if ev["type"] in DELTA_EVENTS]
    return deltas[1] + 1 if len(deltas) >= 2 else len(events) - 1


def with_failure(
    params: ResponsesParams, events: list[dict[str, Any]], kind: str, req_id: str
) -> list[dict[str, Any]]:
    """Cut the stream mid-way and end it with ``response.failed`` or an ``error`` event."""
    kept = events[: _cut_point(events)]
    if kind == "error_event":
        return [*kept, dict(ERROR_EVENT)]
    done = [ev["item"] for ev in kept if ev["type"] == "response.output_item.done"]
    start = events[0]["response"]
    error = {"code": "server_error", "message": SERVER_ERROR.format(req_id=req_id)}
    failed = response_body(
        params, start["id"], start["created_at"], status="failed", output=done, usage=None,
        error=error,
    )  # fmt: skip
    failed["service_tier"] = start["service_tier"]
    return [*kept, {"type": "response.failed", "response": failed}]


def numbered(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every event its ``sequence_number`` (right after ``type``, as the API sends it)."""
    return [
        {"type": ev["type"], "sequence_number": k, **{a: b for a, b in ev.items() if a != "type"}}
        for k, ev in enumerate(events)
    ]


def frame(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


# --------------------------------------------------------------------------------------------
# the handler
# --------------------------------------------------------------------------------------------


async def responses(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    t0 = time.monotonic()
    req_id = "req_" + _hex(32)
    raw = await request.read()
    try:
        body: Any = json.loads(raw, parse_constant=_reject_constant)
        parsed = True
    except (ValueError, RecursionError):
        body, parsed = raw.decode("utf-8", "replace"), False
    record(request, state, body)
    try:
        _check_auth(request, state)
        if not parsed:
            raise ApiError(400, INVALID_JSON)
        model = body.get("model") if isinstance(body, dict) else None
        fault = take_fault(state, model)
        hooks = hooks_from_fault(fault)
        if fault is not None and (hooks.error is not None or hooks.hang):
            if not await delay_or_hang(request, state, hooks):  # before validation: an outage
                return web.Response(status=499)
            if hooks.error is not None:
                raise injected_error(hooks.error, str(model), req_id, hooks.retry_after)
        params = validate(body)
        directives = hooks_from_directives(last_user(params)[0], hooks, EXTRA_DIRECTIVES)
        if not await delay_or_hang(request, state, hooks):
            return web.Response(status=499)
        if hooks.error is not None:
            raise injected_error(hooks.error, params.model, req_id, hooks.retry_after)
        ids = _Ids()
        plan = make_plan(params, ids)
    except ApiError as err:
        return _error_response(err, req_id, t0)
    created = int(time.time())
    headers = _headers(req_id, t0, params.input_tokens)
    if params.stream:
        events = stream_events(params, plan, ids.response, created, int(time.time()))
        for kind in ("stream_error", "error_event"):
            if kind in directives:
                events = with_failure(params, events, kind, req_id)
                break
        return await _send_stream(request, params, numbered(events), headers, hooks)
    data = _json_bytes(final_body(params, plan, ids.response, created, int(time.time()), True))
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
    request: web.Request,
    params: ResponsesParams,
    events: list[dict[str, Any]],
    headers: dict[str, str],
    hooks: Hooks,
) -> web.StreamResponse:
    resp = web.StreamResponse(headers=headers)
    resp.content_type = "text/event-stream"
    resp.charset = "utf-8"
    await resp.prepare(request)
    delay = hooks.chunk_delay_ms / 1000
    try:
        for k, event in enumerate(events):
            if hooks.cut is not None and k >= hooks.cut:
                break
            if k and delay:
                await asyncio.sleep(delay)
            if params.obfuscation and event["type"] in DELTA_EVENTS:
                event = {**event, "obfuscation": rand_id(sysrand.randint(0, 16))}
            await resp.write(frame(event))
        if hooks.cut is not None:  # the connection drops after `cut` events
            abort(request)
            return resp
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away mid-stream
    return resp


def setup(app: web.Application, api_key: str | None = None) -> None:
    """Install ``POST /v1/responses`` on ``app`` (sharing the sandbox state and hooks).

    Call before the catch-all ``/v1/...`` route is registered (see ``create_app``).
    """
    ensure_state(app, api_key)
    app.router.add_post("/v1/responses", responses)
