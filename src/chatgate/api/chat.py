"""POST /chat/completions: authenticate, validate, route, translate, relay, record."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING

import msgspec

from ..errors import (
    GatewayError,
    ModelNotFound,
    NotImplementedByGateway,
    PermissionDenied,
    UpstreamError,
)
from ..limits import Admission, Policy
from ..pricing import usd
from ..providers.base import Context, StreamTranslator, UpstreamRequest, apply_profile
from ..schema import Usage, decode_request
from ..store import KeyRecord, UsageRow
from .http import ClientGone, Receive, Scope, Send, check_json_content_type, read_body, send_error

if TYPE_CHECKING:
    from ..app import Gateway
    from ..router import Target
    from ..upstream import Call

log = logging.getLogger("chatgate.chat")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
DONE = b"data: [DONE]\n\n"
_perf = time.perf_counter


class _Record:
    """The facts gathered for one request's usage row."""

    __slots__ = (
        "admission",
        "calls",
        "cost",
        "error_type",
        "frames",
        "key_id",
        "model",
        "owner",
        "provider",
        "status",
        "stream",
        "ttft",
        "upstream_model",
        "upstream_request_id",
        "usage",
    )

    def __init__(self) -> None:
        self.key_id: str | None = None
        self.model: str | None = None
        self.provider: str | None = None
        self.upstream_model: str | None = None
        self.stream = False
        self.status = 500
        self.error_type: str | None = None
        self.ttft: float | None = None
        self.usage: Usage | None = None
        self.upstream_request_id: str | None = None
        self.owner: str | None = None
        self.admission: Admission | None = None
        self.cost: int | None = None  # micro-USD
        self.frames = 0  # stream frames sent to the client
        self.calls = 1  # upstream calls (n fan-out)


async def handle_chat(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    t0 = _perf()
    created = int(time.time())
    rid = "chatcmpl-" + os.urandom(12).hex()
    rec = _Record()
    base_headers = [(b"x-request-id", rid.encode())]
    task = asyncio.current_task()
    assert task is not None
    watcher: asyncio.Task[None] | None = None
    try:
        client = scope.get("client")
        key = await gw.auth.authenticate(_auth_header(scope), client[0] if client else "")
        rec.key_id = key.id
        rec.owner = key.owner
        check_json_content_type(scope)
        body = await read_body(scope, receive, gw.cfg.max_body_bytes)
        req = decode_request(body)
        rec.model = req.model
        rec.stream = bool(req.stream)
        target = _resolve(gw, key, req.model)
        rec.provider = target.provider_name
        rec.upstream_model = target.deployment.model
        if target.module is None:
            raise NotImplementedByGateway(
                f"Model '{req.model}' is served over the '{target.protocol}' protocol, "
                "which this version of the gateway cannot translate yet.",
            )
        module = target.module
        req, dropped = apply_profile(
            req,
            target.deployment,
            target.profile,
            req.model,
            module.UNSUPPORTED,
            module.MIN_OUTPUT,
        )
        n = req.n or 1
        fan_out = n > 1 and not module.NATIVE_N
        if fan_out:
            req = msgspec.structs.replace(req, n=None)
        ctx = Context(
            response_id=rid,
            created=created,
            public_model=rec.model,
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            dropped=dropped,
        )
        ureq = module.build_request(req, target.deployment, target.provider, ctx, target.profile)
        if ctx.dropped:
            base_headers.append((b"x-chatgate-dropped-params", ",".join(ctx.dropped).encode()))
        calls = rec.calls = n if fan_out else 1
        policy = key.policy()
        if policy != UNLIMITED:
            rec.admission = await _admit(gw, key.id, policy, target, body, ureq, ctx, n, calls)
            base_headers.extend((k.encode(), v.encode()) for k, v in rec.admission.headers.items())
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, task))
        if ureq.stream:
            await _relay_stream(gw, target, ureq, ctx, rec, send, base_headers, t0, watcher, calls)
        else:
            await _relay_json(gw, target, ureq, ctx, rec, send, base_headers, watcher, calls)
    except GatewayError as err:
        rec.status = err.status
        rec.error_type = err.code or err.type
        if err.status >= 500:
            log.warning("%s %s: %s (%s)", rid, rec.model, err.code, err.message)
        if watcher is not None:
            watcher.cancel()
        await send_error(send, err, base_headers)
    except (asyncio.CancelledError, ClientGone, OSError):
        # The client went away (the watcher cancelled us): record it, answer nothing.
        if task.cancelling():
            task.uncancel()
        rec.status = 499
        rec.error_type = "client_disconnected"
    except Exception:
        log.exception("%s: unexpected error", rid)
        rec.status = 500
        rec.error_type = "internal_error"
        if watcher is not None:
            watcher.cancel()
        await send_error(
            send,
            GatewayError("The gateway hit an internal error; the request id is in the logs."),
            base_headers,
        )
    finally:
        if watcher is not None:
            watcher.cancel()
        await _settle(gw, rec)
        _record(gw, rid, rec, t0)


UNLIMITED = Policy()
DEFAULT_MAX_OUTPUT = 32_768  # reserved for a model with no known output ceiling
IMAGE_TOKENS = 2_000  # a bound on what one image costs in prompt tokens


async def _admit(
    gw: Gateway,
    key_id: str,
    policy: Policy,
    target: Target,
    body: bytes,
    ureq: UpstreamRequest,
    ctx: Context,
    n: int,
    calls: int,
) -> Admission:
    """Reserve the request's worst case: an upper bound on its prompt (every byte of the
    request could be a token; images at a fixed bound) and its whole output allowance."""
    prompt = len(ureq.body) + IMAGE_TOKENS * (body.count(b'"image_url"') + body.count(b'"file"'))
    max_out = ctx.max_output or target.profile.max_output_tokens or DEFAULT_MAX_OUTPUT
    tokens = prompt * calls + max_out * n
    micros = 0
    if policy.budget_micros is not None:
        worst = gw.prices.worst_case_micros(target.deployment.model, prompt * calls, max_out * n)
        if worst is None:
            raise PermissionDenied(
                f"This key has a budget, and model '{target.public_model}' has no price "
                "configured, so its cost cannot be bounded.",
                param="model",
                code="price_unknown",
            )
        micros = worst
    return await gw.limiter.admit(key_id, policy, tokens, micros)


async def _settle(gw: Gateway, rec: _Record) -> None:
    """Price what happened and release the reservation. A stream ended before any output
    is free; a partial one is charged from the upstream's own usage, or else from the
    deltas actually delivered (never from the reservation)."""
    usage = rec.usage
    if rec.upstream_model is not None and usage is not None:
        rec.cost = gw.prices.cost_micros(rec.upstream_model, usage)
    elif rec.upstream_model is not None and rec.stream and rec.status in (200, 499):
        rec.cost = 0
    if rec.stream and rec.error_type is not None and rec.frames <= rec.calls:
        rec.cost = 0  # the stream ended before any output (at most the role chunks)
    if rec.admission is not None:
        tokens = usage.total_tokens if usage is not None else 0
        await gw.limiter.settle(rec.admission, tokens, rec.cost or 0)


def _auth_header(scope: Scope) -> bytes | None:
    for k, v in scope["headers"]:
        if k == b"authorization":
            return v  # type: ignore[no-any-return]
    return None


def _resolve(gw: Gateway, key: KeyRecord, model: str) -> Target:
    target = gw.router.pick(model)
    if target is None:
        if model in gw.router.unavailable:
            raise UpstreamError(
                f"Model '{model}' has no usable deployment: {gw.router.unavailable[model]}.",
                status=503,
                code="model_unavailable",
            )
        raise ModelNotFound(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
        )
    if not key.allows(model):
        raise PermissionDenied(
            f"This API key is not allowed to use the model `{model}`.", param="model"
        )
    return target


async def _watch_disconnect(receive: Receive, task: asyncio.Task[None]) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            task.cancel()
            return


async def _call_json(
    gw: Gateway, target: Target, ureq: UpstreamRequest, ctx: Context, rec: _Record
) -> tuple[bytes, Usage | None]:
    module = target.module
    assert module is not None
    async with gw.upstream.send(ureq, target.provider.timeouts) as call:
        rec.upstream_request_id = rec.upstream_request_id or _upstream_id(call.headers)
        body = await call.read()
    if call.status != 200:
        raise module.parse_error(call.status, call.headers, body, target.provider.api_key)
    out: bytes
    usage: Usage | None
    out, usage = module.parse_response(body, ctx)
    return out, usage


def _upstream_id(headers: dict[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id")


async def _relay_json(
    gw: Gateway,
    target: Target,
    ureq: UpstreamRequest,
    ctx: Context,
    rec: _Record,
    send: Send,
    headers: list[tuple[bytes, bytes]],
    watcher: asyncio.Task[None],
    calls: int,
) -> None:
    if calls == 1:
        out, rec.usage = await _call_json(gw, target, ureq, ctx, rec)
    else:
        # A TaskGroup cancels the sibling calls as soon as one fails.
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(_call_json(gw, target, ureq, ctx, rec)) for _ in range(calls)
                ]
        except BaseExceptionGroup as group:
            raise group.exceptions[0] from None
        out, rec.usage = _merge([t.result() for t in tasks])
    rec.status = 200
    if rec.usage is not None:
        rec.cost = gw.prices.cost_micros(target.deployment.model, rec.usage)
        if rec.cost is not None:
            headers = [*headers, (b"x-chatgate-cost-usd", usd(rec.cost).encode())]
    watcher.cancel()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(out)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": out})


def _merge(results: list[tuple[bytes, Usage | None]]) -> tuple[bytes, Usage | None]:
    """n single-choice completions (fan-out) -> one completion with n choices, usage summed."""
    first = msgspec.json.decode(results[0][0])
    choices = []
    total = Usage()
    for i, (out, usage) in enumerate(results):
        choice = msgspec.json.decode(out)["choices"][0]
        choice["index"] = i
        choices.append(choice)
        if usage is not None:
            total = total.plus(usage)
    first["choices"] = choices
    first["usage"] = total.to_openai()
    return msgspec.json.encode(first), total


async def _relay_stream(
    gw: Gateway,
    target: Target,
    ureq: UpstreamRequest,
    ctx: Context,
    rec: _Record,
    send: Send,
    headers: list[tuple[bytes, bytes]],
    t0: float,
    watcher: asyncio.Task[None],
    calls: int,
) -> None:
    module = target.module
    assert module is not None
    # Open every upstream call first: an error before any byte is a plain HTTP error.
    async with contextlib.AsyncExitStack() as stack:
        opened = []
        for _ in range(calls):
            call = await stack.enter_async_context(gw.upstream.send(ureq, target.provider.timeouts))
            rec.upstream_request_id = rec.upstream_request_id or _upstream_id(call.headers)
            if call.status != 200:
                body = await call.read()
                raise module.parse_error(call.status, call.headers, body, target.provider.api_key)
            opened.append(call)
        if calls == 1:
            translators = [module.stream_translator(ctx)]
        else:  # fan-out: choice i comes from call i; one usage chunk at the end
            translators = [
                module.stream_translator(
                    msgspec.structs.replace(ctx, choice_index=i, usage_chunk=False)
                )
                for i in range(calls)
            ]
        await send(
            {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]}
        )
        rec.status = 200
        try:
            if calls == 1:
                await _pump(opened[0], translators[0], send, rec, t0)
            else:
                await _pump_many(opened, translators, send, rec, t0)
        except GatewayError as err:
            # Headers are gone: report in-band, as OpenAI does, and end without [DONE].
            rec.usage = _sum_usage(translators, partial=True)
            if rec.usage is None and rec.frames > calls:
                # no usage from the upstream: count what was delivered (one token a delta)
                rec.usage = Usage(
                    completion_tokens=rec.frames - calls, total_tokens=rec.frames - calls
                )
            rec.error_type = err.code or err.type
            log.warning("%s stream failed: %s", ctx.response_id, err.message)
            watcher.cancel()
            await send({"type": "http.response.body", "body": b"data: " + err.body() + b"\n\n"})
            return
        rec.usage = _sum_usage(translators)
        tail = DONE
        if calls > 1 and ctx.include_usage and rec.usage is not None:
            chunk = {
                "id": ctx.response_id,
                "object": "chat.completion.chunk",
                "created": ctx.created,
                "model": ctx.public_model,
                "choices": [],
                "usage": rec.usage.to_openai(),
            }
            tail = b"data: " + msgspec.json.encode(chunk) + b"\n\n" + DONE
        watcher.cancel()
        await send({"type": "http.response.body", "body": tail})


async def _pump(call: Call, tr: StreamTranslator, send: Send, rec: _Record, t0: float) -> None:
    async for data in call.events():
        out = tr.feed(data)
        if out:
            if rec.ttft is None:
                rec.ttft = _perf() - t0
            rec.frames += 1
            await send({"type": "http.response.body", "body": out, "more_body": True})
        if tr.done:
            return
    out = tr.close()  # the body ended: a protocol without a terminator finishes here
    if out:
        await send({"type": "http.response.body", "body": out, "more_body": True})


async def _pump_many(
    calls: list[Call], translators: list[StreamTranslator], send: Send, rec: _Record, t0: float
) -> None:
    """Interleave n upstream streams into one client stream, as OpenAI does for n > 1."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

    async def reader(call: Call, tr: StreamTranslator) -> None:
        try:
            async for data in call.events():
                out = tr.feed(data)
                if out:
                    queue.put_nowait(out)
                if tr.done:
                    break
            else:
                out = tr.close()
                if out:
                    queue.put_nowait(out)
        except BaseException as exc:  # handed to the writer below
            queue.put_nowait(exc)
            return
        queue.put_nowait(None)

    tasks = [asyncio.create_task(reader(c, t)) for c, t in zip(calls, translators, strict=True)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                if rec.ttft is None:
                    rec.ttft = _perf() - t0
                rec.frames += 1
                await send({"type": "http.response.body", "body": item, "more_body": True})
    finally:
        for t in tasks:
            t.cancel()


def _sum_usage(translators: list[StreamTranslator], partial: bool = False) -> Usage | None:
    found = (t.partial_usage() if partial else t.usage for t in translators)
    usages = [u for u in found if u is not None]
    if not usages:
        return None
    total = usages[0]
    for u in usages[1:]:
        total = total.plus(u)
    return total


def _record(gw: Gateway, rid: str, rec: _Record, t0: float) -> None:
    u = rec.usage
    gw.writer.record(
        UsageRow(
            request_id=rid,
            created=time.time(),
            key_id=rec.key_id,
            model=rec.model,
            provider=rec.provider,
            upstream_model=rec.upstream_model,
            stream=rec.stream,
            status=rec.status,
            error_type=rec.error_type,
            prompt_tokens=u.prompt_tokens if u else None,
            completion_tokens=u.completion_tokens if u else None,
            total_tokens=u.total_tokens if u else None,
            cached_tokens=u.cached_tokens if u else None,
            reasoning_tokens=u.reasoning_tokens if u else None,
            latency_ms=(_perf() - t0) * 1000.0,
            ttft_ms=rec.ttft * 1000.0 if rec.ttft is not None else None,
            upstream_request_id=rec.upstream_request_id,
            owner=rec.owner,
            cost_micros=rec.cost,
        )
    )
