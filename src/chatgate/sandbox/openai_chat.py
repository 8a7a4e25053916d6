"""OpenAI Chat Completions emulator: HTTP layer, auth, SSE streaming and the test hooks.

Routes (see :func:`setup`): ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /v1/models/{model}``, and the unauthenticated control endpoints ``/_sandbox/faults`` and
``/_sandbox/requests``. Validation lives in ``_rules`` (with the model table), the answer itself
in ``_reply``.

Test hooks, applied in this order: a queued fault (``POST /_sandbox/faults``) matching the model,
then directives in the last user message: ``[sandbox:latency=MS]``, ``[sandbox:chunk_delay=MS]``,
``[sandbox:error=STATUS|quota]``, ``[sandbox:retry_after=S]``, ``[sandbox:hang]``,
``[sandbox:cut=N]``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._reply import (
    check_context,
    completion_body,
    last_user_text,
    parse_directives,
    plan,
    rand_id,
    stream_chunks,
    sysrand,
)
from ._rules import ApiError, ChatParams, all_models, lookup_model, validate

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (i.e. "
    "user:YOUR_KEY, with a blank username) if you're accessing the API from your browser and are "
    "prompted for a username. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
INVALID_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was "
    "not valid JSON. If you have trouble figuring out how to fix this, please contact us through "
    "our help center at help.openai.com.)"
)
QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_FAULT_KEYS = frozenset(
    ("model", "error", "count", "retry_after", "hang", "latency_ms", "chunk_delay_ms", "cut")
)


@dataclass
class SandboxState:
    api_key: str | None
    faults: list[dict[str, Any]] = field(default_factory=list)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100))
    hanging: int = 0  # requests currently held open by a hang hook
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


STATE = web.AppKey("chatgate_sandbox_state", SandboxState)


@dataclass
class Hooks:
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    error: str | None = None
    retry_after: float | None = None
    hang: bool = False
    cut: int | None = None


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def mask_key(key: str) -> str:
    """The real API echoes a wrong key with most of it starred out."""
    if len(key) >= 20:
        return key[:8] + "*" * (len(key) - 12) + key[-4:]
    return key[:3] + "*" * max(3, len(key) - 3)


def _headers(req_id: str, t0: float, prompt_tokens: int = 0) -> dict[str, str]:
    return {
        "access-control-expose-headers": "X-Request-ID",
        "openai-processing-ms": str(max(1, round((time.monotonic() - t0) * 1000))),
        "openai-version": "2020-10-01",
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-limit-tokens": "30000000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-remaining-tokens": str(30000000 - prompt_tokens),
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-reset-tokens": "0s",
        "x-request-id": req_id,
    }


def _json_bytes(obj: Any) -> bytes:
    """Non-stream bodies are pretty-printed with two spaces, like the real API."""
    return json.dumps(obj, ensure_ascii=False, indent=2).encode()


def _json_response(obj: Any, status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(
        body=_json_bytes(obj), status=status, headers=headers, content_type="application/json"
    )


def _error_response(err: ApiError, req_id: str, t0: float) -> web.Response:
    headers = _headers(req_id, t0)
    headers.update(err.headers)
    return _json_response(err.body(), err.status, headers)


def _retry_headers(seconds: float) -> dict[str, str]:
    text = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
    return {"retry-after": text, "retry-after-ms": str(round(seconds * 1000))}


def injected_error(kind: str, model: str, req_id: str, retry_after: float | None) -> ApiError:
    """The error a hook asked for, shaped like the real API's."""
    if kind == "quota":
        return ApiError(429, QUOTA, "insufficient_quota", None, "insufficient_quota")
    status = int(kind)
    retry = _retry_headers(retry_after) if retry_after is not None else {}
    if status == 429:
        wait = 1.0 if retry_after is None else retry_after
        headers = {
            **_retry_headers(wait),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{wait:g}s",
        }
        msg = (
            f"Rate limit reached for {model} in organization org-sandbox on requests per min "
            f"(RPM): Limit 500, Used 500, Requested 1. Please try again in {wait:g}s. Visit "
            "https://platform.openai.com/account/rate-limits to learn more."
        )
        return ApiError(429, msg, "requests", None, "rate_limit_exceeded", headers)
    if status == 401:
        msg = (
            f"Incorrect API key provided: {mask_key('sk-sandbox-injected-key-0000')}. You can "
            "find your API key at https://platform.openai.com/account/api-keys."
        )
        return ApiError(401, msg, code="invalid_api_key")
    if status == 403:
        msg = "Country, region, or territory not supported"
        return ApiError(403, msg, "request_forbidden", None, "unsupported_country_region_territory")
    if status == 404:
        msg = f"The model `{model}` does not exist or you do not have access to it."
        return ApiError(404, msg, code="model_not_found")
    if status == 500:
        msg = (
            "The server had an error processing your request. Sorry about that! You can retry "
            "your request, or contact us through our help center at help.openai.com if you keep "
            f"seeing this error. (Please include the request ID {req_id} in your email.)"
        )
        return ApiError(500, msg, "server_error", headers=retry)
    if status == 503:
        msg = "The server is overloaded or not ready yet."
        return ApiError(503, msg, "server_error", headers=retry)
    if status in (502, 504):  # Cloudflare-fronted errors carry an integer code
        name = "bad_gateway" if status == 502 else "gateway_timeout"
        msg = "Bad gateway." if status == 502 else "Gateway timeout."
        return ApiError(status, msg, f"cf_{name}", code=status, headers=retry)
    if status >= 500:
        return ApiError(status, "The server had an error.", "server_error", headers=retry)
    msg = f"Invalid request (status {status} injected by the Chatgate sandbox)."
    return ApiError(status, msg, headers=retry)


def check_error_kind(value: Any) -> str:
    text = str(value).strip()
    if text == "quota" or (text.isdigit() and 400 <= int(text) <= 599):
        return text
    raise ValueError(f"error must be an HTTP status 400..599 or 'quota', got {value!r}")


def hooks_from_directives(
    text: str, hooks: Hooks, extra: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Apply the shared directives in ``text`` to ``hooks``; return the ``extra`` ones found.

    Any other ``[sandbox:...]`` marker raises a 400 :class:`ApiError` naming the directive.
    """
    found: dict[str, str] = {}
    for key, val in parse_directives(text).items():
        try:
            if key in extra:
                found[key] = val
            elif key == "latency":
                hooks.latency_ms += float(val)
            elif key == "chunk_delay":
                hooks.chunk_delay_ms = float(val)
            elif key == "error":
                hooks.error = check_error_kind(val)
            elif key == "retry_after":
                hooks.retry_after = float(val)
            elif key == "hang":
                hooks.hang = True
            elif key == "cut":
                hooks.cut = int(val)
            else:
                raise ValueError("unknown directive")
        except ValueError as exc:
            raise ApiError(
                400, f"Invalid sandbox directive [sandbox:{key}={val}]: {exc}", code="sandbox"
            ) from exc
    return found


def hooks_from_fault(fault: dict[str, Any] | None) -> Hooks:
    """The hooks a queued fault asks for (no fault: no hooks)."""
    if fault is None:
        return Hooks()
    return Hooks(
        latency_ms=fault["latency_ms"],
        chunk_delay_ms=fault["chunk_delay_ms"],
        error=fault["error"],
        retry_after=fault["retry_after"],
        hang=fault["hang"],
        cut=fault["cut"],
    )


def take_fault(state: SandboxState, model: Any) -> dict[str, Any] | None:
    for fault in state.faults:
        if fault["model"] in ("*", model):
            if fault["count"] > 0:
                fault["count"] -= 1
                if fault["count"] == 0:
                    state.faults.remove(fault)
            return fault
    return None


async def wait(request: web.Request, state: SandboxState, seconds: float | None) -> bool:
    """Sleep ``seconds`` (None: forever); False if the client went away or the server stops."""
    deadline = None if seconds is None else time.monotonic() + seconds
    while not state.stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
        if left <= 0:
            return True
        try:
            await asyncio.wait_for(state.stopping.wait(), left)
        except TimeoutError:
            pass
    return False


# --------------------------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------------------------


def _check_auth(request: web.Request, state: SandboxState) -> None:
    auth = request.headers.get("Authorization", "")
    scheme, _, key = auth.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, MISSING_KEY)
    if state.api_key is not None and not hmac.compare_digest(key.encode(), state.api_key.encode()):
        raise ApiError(
            401,
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            code="invalid_api_key",
        )


def record(request: web.Request, state: SandboxState, body: Any) -> None:
    headers = {k.lower(): v for k, v in request.headers.items()}
    if "authorization" in headers:
        headers["authorization"] = "Bearer ***"
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        if name in headers:
            headers[name] = "***"
    entry: dict[str, Any] = {
        "path": request.path,
        "headers": headers,
        "body": body,
        "received": time.time(),
    }
    state.requests.append(entry)
    # Note when the client (the gateway) drops the connection before the answer is done:
    # tests check that an abandoned request is cancelled upstream at once.
    task = asyncio.get_running_loop().create_task(_watch_close(request, request.task, entry))
    _WATCHERS.add(task)
    task.add_done_callback(_WATCHERS.discard)


_WATCHERS: set[asyncio.Task[None]] = set()


async def _watch_close(request: web.Request, handler: Any, entry: dict[str, Any]) -> None:
    while not handler.done():
        transport = request.transport
        if transport is None or transport.is_closing():
            if not handler.done():
                entry["disconnected"] = time.time()
            return
        await asyncio.sleep(0.01)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    t0 = time.monotonic()
    req_id = "req_" + "".join(sysrand.choices("0123456789abcdef", k=32))
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
            # before validation, like an outage
            early = await _apply_hooks(request, state, hooks, str(model), req_id, t0)
            return early or web.Response(status=499)
        params = validate(body)
        check_context(params)
        hooks_from_directives(last_user_text(params.messages), hooks)
        early = await _apply_hooks(request, state, hooks, params.model, req_id, t0)
        if early is not None:
            return early
        plans = plan(params, body)
    except ApiError as err:
        return _error_response(err, req_id, t0)
    cid = "chatcmpl-" + rand_id(29)
    created = int(time.time())
    headers = _headers(req_id, t0, params.prompt_tokens)
    if params.stream:
        chunks = stream_chunks(params, plans, cid, created)
        return await _send_stream(request, params, chunks, headers, hooks)
    data = _json_bytes(completion_body(params, plans, cid, created))
    if hooks.cut is None:
        return web.Response(body=data, headers=headers, content_type="application/json")
    resp = web.StreamResponse(headers=headers)
    resp.content_type = "application/json"
    resp.content_length = len(data)
    await resp.prepare(request)
    await resp.write(data[: len(data) // 2])
    abort(request)
    return resp


async def _apply_hooks(
    request: web.Request, state: SandboxState, hooks: Hooks, model: str, req_id: str, t0: float
) -> web.Response | None:
    """Latency, hang and injected errors; returns a response to send instead, or None."""
    if not await delay_or_hang(request, state, hooks):
        return web.Response(status=499)  # nobody is listening any more
    if hooks.error is not None:
        raise injected_error(hooks.error, model, req_id, hooks.retry_after)
    return None


async def delay_or_hang(request: web.Request, state: SandboxState, hooks: Hooks) -> bool:
    """Apply the latency and hang hooks; False when the caller should give up (client gone)."""
    if hooks.latency_ms > 0 and not await wait(request, state, hooks.latency_ms / 1000):
        return False
    if hooks.hang:
        state.hanging += 1
        try:
            await wait(request, state, None)
        finally:
            state.hanging -= 1
        return False
    return True


def abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _send_stream(
    request: web.Request,
    params: ChatParams,
    chunks: list[dict[str, Any]],
    headers: dict[str, str],
    hooks: Hooks,
) -> web.StreamResponse:
    resp = web.StreamResponse(headers=headers)
    resp.content_type = "text/event-stream"
    resp.charset = "utf-8"
    await resp.prepare(request)
    delay = hooks.chunk_delay_ms / 1000
    try:
        for k, chunk in enumerate(chunks):
            if hooks.cut is not None and k >= hooks.cut:
                break
            if k and delay:
                await asyncio.sleep(delay)
            if params.include_obfuscation:
                chunk = {**chunk, "obfuscation": rand_id(sysrand.randint(0, 16))}
            payload = json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))
            await resp.write(b"data: " + payload.encode() + b"\n\n")
        if hooks.cut is not None:
            abort(request)
            return resp
        if delay:
            await asyncio.sleep(delay)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away mid-stream
    return resp


async def list_models(request: web.Request) -> web.Response:
    t0 = time.monotonic()
    req_id = "req_" + "".join(sysrand.choices("0123456789abcdef", k=32))
    try:
        _check_auth(request, request.app[STATE])
    except ApiError as err:
        return _error_response(err, req_id, t0)
    data = [
        {"id": s.id, "object": "model", "created": s.created, "owned_by": s.owned_by}
        for s in all_models()
    ]
    return _json_response({"object": "list", "data": data}, 200, _headers(req_id, t0))


async def get_model(request: web.Request) -> web.Response:
    t0 = time.monotonic()
    req_id = "req_" + "".join(sysrand.choices("0123456789abcdef", k=32))
    model = request.match_info["model"]
    try:
        _check_auth(request, request.app[STATE])
        spec = lookup_model(model)
        if spec is None:
            raise ApiError(
                404, f"The model '{model}' does not exist", param="model", code="model_not_found"
            )
    except ApiError as err:
        return _error_response(err, req_id, t0)
    obj = {"id": spec.id, "object": "model", "created": spec.created, "owned_by": spec.owned_by}
    return _json_response(obj, 200, _headers(req_id, t0))


async def invalid_url(request: web.Request) -> web.Response:
    err = ApiError(404, f"Invalid URL ({request.method} {request.path})")
    return _error_response(err, "req_" + rand_id(32).lower(), time.monotonic())


# --------------------------------------------------------------------------------------------
# control endpoints (no auth)
# --------------------------------------------------------------------------------------------


def _fault(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise ValueError("a fault must be a JSON object")
    unknown = set(spec) - _FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys: {sorted(unknown)}")
    count = spec.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count == 0 or count < -1:
        raise ValueError("count must be a positive integer, or -1 for every request")
    error = spec.get("error")
    cut = spec.get("cut")
    return {
        "model": str(spec.get("model") or "*"),
        "error": None if error is None else check_error_kind(error),
        "count": count,
        "retry_after": None if spec.get("retry_after") is None else float(spec["retry_after"]),
        "hang": bool(spec.get("hang", False)),
        "latency_ms": float(spec.get("latency_ms") or 0),
        "chunk_delay_ms": float(spec.get("chunk_delay_ms") or 0),
        "cut": None if cut is None else int(cut),
    }


async def post_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        data = json.loads(await request.read())
        new = [_fault(f) for f in (data if isinstance(data, list) else [data])]
    except (ValueError, TypeError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    state.faults.extend(new)
    return web.json_response({"faults": state.faults})


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": request.app[STATE].faults})


async def delete_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cleared = len(state.faults)
    state.faults.clear()
    return web.json_response({"cleared": cleared})


async def get_requests(request: web.Request) -> web.Response:
    return web.json_response(list(request.app[STATE].requests))


async def delete_requests(request: web.Request) -> web.Response:
    state = request.app[STATE]
    cleared = len(state.requests)
    state.requests.clear()
    return web.json_response({"cleared": cleared})


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].stopping.set()


def ensure_state(app: web.Application, api_key: str | None = None) -> SandboxState:
    """The app's shared :class:`SandboxState` (faults, request log), created on first use."""
    if STATE not in app:
        app[STATE] = SandboxState(api_key)
        app.on_shutdown.append(_on_shutdown)
    return app[STATE]


def add_catch_all(app: web.Application) -> None:
    """OpenAI-style 404 for every other ``/v1/...`` URL; register it after all real routes."""
    app.router.add_route("*", "/v1/{tail:.*}", invalid_url)


def setup(app: web.Application, api_key: str | None = None, *, catch_all: bool = True) -> None:
    """Install the Chat Completions emulator and the control endpoints on ``app``.

    With ``catch_all=False`` the ``/v1/...`` 404 route is left out so that other emulators can
    add their routes first (then call :func:`add_catch_all`).
    """
    ensure_state(app, api_key)
    r = app.router
    r.add_post("/v1/chat/completions", chat_completions)
    r.add_get("/v1/models", list_models)
    r.add_get("/v1/models/{model}", get_model)
    r.add_post("/_sandbox/faults", post_faults)
    r.add_get("/_sandbox/faults", get_faults)
    r.add_delete("/_sandbox/faults", delete_faults)
    r.add_get("/_sandbox/requests", get_requests)
    r.add_delete("/_sandbox/requests", delete_requests)
    if catch_all:
        add_catch_all(app)
