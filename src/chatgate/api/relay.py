"""One upstream attempt: send the translated request and relay the answer (JSON, or SSE
chunk by chunk). Until a stream's first frame reaches the client an attempt may fail with a
GatewayError and the caller tries elsewhere; after that, failures are reported in-band."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Struct

from ..errors import GatewayError, StreamInterrupted
from ..providers.base import Context, StreamTranslator, UpstreamRequest
from ..schema import Usage
from .http import DisconnectWatch, Send

if TYPE_CHECKING:
    from ..app import Gateway
    from ..router import Target
    from ..upstream import Call
    from .chat import Record

log = logging.getLogger("chatgate.chat")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
DONE = b"data: [DONE]\n\n"
_perf = time.perf_counter


class Plan(Struct):
    """A request translated for one deployment."""

    target: Target
    ctx: Context
    ureq: UpstreamRequest
    calls: int  # upstream calls (n fan-out)
    n: int


def upstream_id(headers: dict[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id")


async def _call_json(gw: Gateway, plan: Plan, rec: Record) -> tuple[bytes, Usage | None]:
    t = plan.target
    async with gw.upstream.send(plan.ureq, t.timeouts) as call:
        rec.upstream_request_id = rec.upstream_request_id or upstream_id(call.headers)
        body = await call.read()
    if call.status != 200:
        raise t.module.parse_error(call.status, call.headers, body, t.provider.api_key)
    out: bytes
    usage: Usage | None
    out, usage = t.module.parse_response(body, plan.ctx)
    return out, usage


async def json_attempt(gw: Gateway, plan: Plan, rec: Record) -> bytes:
    """The response body of one attempt (fan-out: n calls merged); raises GatewayError."""
    if plan.calls == 1:
        out, rec.usage = await _call_json(gw, plan, rec)
        return out
    try:  # a TaskGroup cancels the sibling calls as soon as one fails
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_call_json(gw, plan, rec)) for _ in range(plan.calls)]
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    out, rec.usage = merge([t.result() for t in tasks])
    return out


def merge(results: list[tuple[bytes, Usage | None]]) -> tuple[bytes, Usage | None]:
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


async def stream_attempt(
    gw: Gateway,
    plan: Plan,
    rec: Record,
    send: Send,
    headers: list[tuple[bytes, bytes]],
    t0: float,
    watcher: DisconnectWatch,
) -> None:
    """Relay one streamed attempt. Raises GatewayError only while nothing has been sent to
    the client (the caller may then fail over); once committed, errors end the stream with
    an OpenAI-style error event and [DONE]."""
    t, ctx = plan.target, plan.ctx
    async with contextlib.AsyncExitStack() as stack:
        opened: list[Call] = []
        for _ in range(plan.calls):
            call = await stack.enter_async_context(gw.upstream.send(plan.ureq, t.timeouts))
            rec.upstream_request_id = rec.upstream_request_id or upstream_id(call.headers)
            if call.status != 200:
                body = await call.read()
                raise t.module.parse_error(call.status, call.headers, body, t.provider.api_key)
            opened.append(call)
        if plan.calls == 1:
            translators: list[StreamTranslator] = [t.module.stream_translator(ctx)]
        else:  # fan-out: choice i comes from call i; one usage chunk at the end
            translators = [
                t.module.stream_translator(
                    msgspec.structs.replace(ctx, choice_index=i, usage_chunk=False)
                )
                for i in range(plan.calls)
            ]
        start = {"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]}
        leftover: list[bytes] = []
        first = b""
        if plan.calls == 1:
            events = opened[0].batches()  # one reader for the whole stream (partial lines)
            first, leftover = await _first_frame(events, translators[0])  # may fail over
        await send(start)
        rec.status = 200
        rec.committed = True
        try:
            if first:
                rec.ttft = _perf() - t0
                rec.frames += first.count(b"data: ")
                await send({"type": "http.response.body", "body": first, "more_body": True})
            if plan.calls == 1:
                if not translators[0].done:
                    await _pump(events, translators[0], send, rec, t0, leftover)
            else:
                await _pump_many(opened, translators, send, rec, t0)
        except GatewayError as err:
            # Headers are gone: report in-band, as OpenAI does, then end the stream.
            rec.usage = _sum_usage(translators, partial=True)
            if rec.usage is None and rec.frames > plan.calls:
                # no usage from the upstream: count what was delivered (one token a delta)
                delivered = rec.frames - plan.calls
                rec.usage = Usage(completion_tokens=delivered, total_tokens=delivered)
            rec.error_type = err.code or err.type
            rec.stream_error = err
            log.warning("%s stream failed: %s", ctx.response_id, err.message)
            watcher.cancel()
            await send(
                {"type": "http.response.body", "body": b"data: " + err.body() + b"\n\n" + DONE}
            )
            return
        rec.usage = _sum_usage(translators)
        tail = DONE
        if plan.calls > 1 and ctx.include_usage and rec.usage is not None:
            chunk: dict[str, Any] = {
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


def _feed(tr: StreamTranslator, batch: list[bytes]) -> tuple[bytes, GatewayError | None]:
    """Translate the events of one upstream read into the frames of one client write, and
    the error that ended them, if one did (the frames before it still go out first)."""
    out: list[bytes] = []
    for data in batch:
        try:
            out.append(tr.feed(data))
        except GatewayError as err:
            return b"".join(out), err
        if tr.done:
            break
    return b"".join(out), None


async def _first_frame(
    events: AsyncIterator[list[bytes]], tr: StreamTranslator
) -> tuple[bytes, list[bytes]]:
    """Read until the translator has something for the client (nothing is sent yet).
    Returns that first output at once — the rest of the read (``leftover``) is translated
    after it has gone out, so the time to first byte does not wait for a whole batch."""
    async for batch in events:
        for i, data in enumerate(batch):
            out = tr.feed(data)  # an error here: nothing sent yet, the caller may fail over
            if out or tr.done:
                return out, batch[i + 1 :]
    return tr.close(), []  # ended before any output: raises StreamInterrupted


async def _pump(
    events: AsyncIterator[list[bytes]],
    tr: StreamTranslator,
    send: Send,
    rec: Record,
    t0: float,
    leftover: list[bytes],
) -> None:
    async def batches() -> AsyncIterator[list[bytes]]:
        if leftover:  # the rest of the read that carried the first chunk
            yield leftover
        async for batch in events:
            yield batch

    async for batch in batches():
        out, err = _feed(tr, batch)
        if out:
            if rec.ttft is None:
                rec.ttft = _perf() - t0
            rec.frames += out.count(b"data: ")
            await send({"type": "http.response.body", "body": out, "more_body": True})
        if err is not None:
            raise err
        if tr.done:
            return
    out = tr.close()  # the body ended: a protocol without a terminator finishes here
    if out:
        await send({"type": "http.response.body", "body": out, "more_body": True})


async def _pump_many(
    calls: list[Call], translators: list[StreamTranslator], send: Send, rec: Record, t0: float
) -> None:
    """Interleave n upstream streams into one client stream, as OpenAI does for n > 1."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()

    async def reader(call: Call, tr: StreamTranslator) -> None:
        try:
            async for batch in call.batches():
                out, err = _feed(tr, batch)
                if out:
                    queue.put_nowait(out)
                if err is not None:
                    raise err
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
                rec.frames += item.count(b"data: ")
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


__all__ = ["DONE", "Plan", "StreamInterrupted", "json_attempt", "stream_attempt"]
