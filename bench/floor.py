"""The floor reference: an aiohttp pass-through with a bearer-key check and nothing else
(no parsing, no translation, no metering). What a Python proxy costs at least.

    python bench/floor.py PORT UPSTREAM_URL KEY
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web


def make_app(upstream: str, key: str) -> web.Application:
    app = web.Application()
    expected = f"Bearer {key}"

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024))

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.read()
        async with app["session"].post(
            upstream + "/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": "Bearer up"},
        ) as r:
            if b'"stream":true' not in body and b'"stream": true' not in body:
                return web.Response(body=await r.read(), content_type="application/json")
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            async for chunk in r.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app.router.add_post("/v1/chat/completions", handle)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


if __name__ == "__main__":
    port, upstream, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    uvloop.install()
    web.run_app(make_app(upstream, key), host="127.0.0.1", port=port, access_log=None, print=None)
