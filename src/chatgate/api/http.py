"""Small ASGI helpers shared by the handlers: read a bounded body, send JSON or an error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from ..errors import GatewayError, InvalidRequest, RequestTooLarge, UnsupportedMediaType

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_CT = (b"content-type", b"application/json")
_encode = msgspec.json.encode


def header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return v  # type: ignore[no-any-return]
    return None


def check_json_content_type(scope: Scope) -> None:
    ct = header(scope, b"content-type")
    if ct is None:
        raise UnsupportedMediaType(
            "The request needs the header 'Content-Type: application/json'.",
            param=None,
        )
    media = ct.split(b";", 1)[0].strip().lower()
    if media != b"application/json" and not media.endswith(b"+json"):
        raise UnsupportedMediaType(
            f"Unsupported Content-Type '{media.decode('latin-1')}': send the body as "
            "'application/json'.",
        )


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    cl = header(scope, b"content-length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header.") from None
        if n > limit:
            raise RequestTooLarge(_too_large(limit))
    chunks: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        body = msg.get("body", b"")
        if body:
            size += len(body)
            if size > limit:
                raise RequestTooLarge(_too_large(limit))
            chunks.append(body)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> str:
    return f"The request body is larger than this gateway's limit of {limit} bytes."


class ClientGone(Exception):
    """The client disconnected before we could answer."""


class DisconnectWatch:
    """Cancels a request's task if its client goes away, until :meth:`cancel` disarms it.

    On Chatgate's own server the connection calls back (the ``chatgate.on_disconnect``
    extension): no extra task per request. On any other ASGI server a small task waits for
    ``http.disconnect`` instead."""

    __slots__ = ("_armed", "_task", "_waiter")

    def __init__(self, scope: Scope, receive: Receive, task: asyncio.Task[Any]) -> None:
        self._task = task
        self._armed = True
        self._waiter: asyncio.Task[None] | None = None
        hook = (scope.get("extensions") or {}).get("chatgate.on_disconnect")
        if hook is not None:
            hook(self._fire)
        else:
            self._waiter = asyncio.get_running_loop().create_task(self._wait(receive))

    async def _wait(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._fire()

    def _fire(self) -> None:
        if self._armed:
            self._armed = False
            self._task.cancel()

    def cancel(self) -> None:
        self._armed = False
        if self._waiter is not None:
            self._waiter.cancel()


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: tuple[bytes, bytes] = JSON_CT,
) -> None:
    h = [content_type, (b"content-length", str(len(body)).encode())]
    if headers:
        h.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": h})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send_bytes(send, status, _encode(data), headers)


async def send_error(
    send: Send, err: GatewayError, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    h = list(headers or ())
    h.extend((k.encode(), v.encode()) for k, v in err.headers.items())
    await send_bytes(send, err.status, err.body(), h)
