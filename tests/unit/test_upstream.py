"""The SSE reader: events split across network reads at any byte are put back together."""

from __future__ import annotations

import asyncio

from aiohttp import web

from chatgate.config import Timeouts
from chatgate.providers.base import UpstreamRequest
from chatgate.upstream import Upstream

STREAM = (
    b'event: message_start\ndata: {"a": 1}\n\n'
    b'data: {"b":\ndata: 2}\n\n'  # one event over two data lines
    b": a comment\n\n"
    b'data: {"c": "x\\ny"}\r\n\r\n'  # CRLF framing
    b"data: [DONE]\n\n"
)


async def _serve(piece: int) -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(0, len(STREAM), piece):  # split at every possible place
            await resp.write(STREAM[i : i + piece])
            await asyncio.sleep(0.001)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/s", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/s"


async def _read(piece: int) -> list[bytes]:
    runner, url = await _serve(piece)
    up = Upstream()
    await up.start()
    try:
        req = UpstreamRequest(url=url, headers={}, body=b"{}", stream=True)
        async with up.send(req, Timeouts()) as call:
            events: list[bytes] = []
            async for batch in call.batches():
                events.extend(batch)
        return events
    finally:
        await up.close()
        await runner.cleanup()


def test_events_survive_any_split() -> None:
    want = [b'{"a": 1}', b'{"b":\n2}', b'{"c": "x\\ny"}', b"[DONE]"]
    for piece in (1, 2, 3, 7, 13, len(STREAM)):
        assert asyncio.run(_read(piece)) == want, piece
