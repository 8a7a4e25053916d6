"""The HTTP/1.1 server: httptools' parser on uvloop, speaking ASGI 3 to the app.

Why not uvicorn: measured on the chat hot path (bench/run.py, py-spy), uvicorn's request cycle
wrote every answer in two system calls (status line and headers, then the body), validated
each header the app produced with two regular expressions and needed a second task per
request to learn of a disconnect. Here a buffered start is written together with the first
body part, headers the gateway itself built are trusted, and a disconnect calls back into
the request (the ``chatgate.on_disconnect`` extension) instead of waking a watcher task.
Everything else is plain ASGI, so the app runs on any ASGI server as well.

What it does: keep-alive with an idle timeout, pipelining (one request answered at a time,
reading paused meanwhile), ``Expect: 100-continue``, chunked request and response bodies,
answers given before the request body has arrived (the rest of a small body is skipped and
the connection kept; a large or unsized one gets ``connection: close`` and a lingering close,
so the client reads the answer instead of a reset),
flow control in both directions, limits on the request line and headers, a timeout for
slow headers, proxy headers from trusted addresses, the ASGI lifespan, and a graceful
shutdown: stop accepting, answer ``/ready`` with 503, let requests and streams in flight
finish within the grace period, close idle connections, then run the app's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

log = logging.getLogger("chatgate.server")

MAX_URL = 8 * 1024
MAX_HEADERS = 64 * 1024
HEADER_TIMEOUT = 30.0  # seconds for a request's line and headers to arrive
BODY_HIGH_WATER = 256 * 1024  # buffered request body before reading pauses
# An answer sent before its request body has arrived (a 401 checked on the headers, a 413 on
# the declared length): up to this much of the body still to come is read and dropped so the
# connection serves the next request; more, or a chunked body, closes the connection.
SKIP_BODY_MAX = 64 * 1024
# Closing a socket with unread data in it sends a reset, which can destroy the answer before
# the client has read it. A connection closed while the client may still be sending shuts its
# own side first and drops what arrives, for at most this long, before it closes.
LINGER_SECONDS = 2.0
ASGI = {"version": "3.0", "spec_version": "2.4"}


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


STATUS_LINES = {s.value: _status_line(s.value) for s in HTTPStatus}


def _plain(status: int, text: str, close: bool = True) -> bytes:
    body = text.encode()
    return b"".join(
        [
            STATUS_LINES.get(status) or _status_line(status),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n" if close else b"",
            b"\r\n",
            body,
        ]
    )


class ServerState:
    """What every connection of one server shares."""

    def __init__(
        self,
        app: Any,
        *,
        keep_alive: float,
        proxy_headers: bool,
        trusted: frozenset[str],
    ) -> None:
        self.app = app
        self.keep_alive = keep_alive
        self.proxy_headers = proxy_headers
        self.trusted = trusted
        self.connections: set[HttpProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.draining = False
        self.idle = asyncio.Event()  # set when no request is in flight


class HttpProtocol(asyncio.Protocol):
    __slots__ = (
        "_cycle",
        "_header_bytes",
        "_headers",
        "_lingering",
        "_loop",
        "_parser",
        "_parsing",
        "_pipeline",
        "_read_paused",
        "_timer",
        "_timer_idle",
        "_too_large",
        "_transport",
        "_url",
        "_write_paused",
        "_write_waiter",
        "client",
        "closed",
        "server",
        "state",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self._loop = asyncio.get_event_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._cycle: Cycle | None = None  # the request being answered
        self._parsing: Cycle | None = None  # the request whose body is arriving
        self._pipeline: deque[Cycle] = deque()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._too_large = 0  # 414 or 431 once a limit is passed
        self._timer: asyncio.TimerHandle | None = None
        self._timer_idle = False
        self._read_paused = False
        self._write_paused = False
        self._write_waiter: asyncio.Future[None] | None = None
        self._lingering = False
        self.closed = False
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None

    # --- connection events -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        self.state.connections.add(self)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.server = (str(local[0]), int(local[1])) if isinstance(local, tuple) else None
        self._arm(self.state.keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        self._disarm()
        for cycle in (self._cycle, self._parsing, *self._pipeline):
            if cycle is not None:
                cycle.disconnected()
        self._pipeline.clear()
        w = self._write_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def eof_received(self) -> bool | None:
        return None  # close: a half-closed client gets nothing more (as uvicorn); this also
        # ends a lingering close once the client has read the answer and closed its side

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # closing: what the client still sends is dropped
        if self._timer_idle:  # an idle keep-alive connection speaks again
            self._disarm()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade is optional for a server (RFC 9110 7.8): answer the request as plain
            # HTTP/1.1, then close, since the parser reads nothing after an upgrade
            if self._parsing is not None and self._cycle is not None:
                self._parsing.keep_alive = False
                self._parsing.complete = True
                self._parsing.wake()
                self._pause_reading()
            else:
                self._reject(400, "Invalid HTTP request.")
        except httptools.HttpParserError:
            self._reject(400, "Invalid HTTP request.")
        if self._too_large and not self.closed:
            self._reject(self._too_large, "Request line or headers too large.")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        w = self._write_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            self._write_waiter = self._loop.create_future()
            await self._write_waiter
            self._write_waiter = None

    # --- parser callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._parsing = None
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._arm(HEADER_TIMEOUT, idle=False)

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL:
            self._too_large = 414

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADERS:
            self._too_large = 431
            return
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._disarm()
        if self._too_large:
            return
        parser = self._parser
        parsed = httptools.parse_url(self._url)
        raw_path = parsed.path
        path = raw_path.decode("ascii", "replace")
        if "%" in path:
            path = unquote(path)
        headers = self._headers
        client = self.client
        scheme = "http"
        if self.state.proxy_headers and client is not None and client[0] in self.state.trusted:
            client, scheme = _forwarded(headers, client, scheme)
        method = parser.get_method().decode("ascii")
        cycle = Cycle(self, method, parser.should_keep_alive())
        cycle.scope = {
            "type": "http",
            "asgi": ASGI,
            "http_version": parser.get_http_version(),
            "server": self.server,
            "client": client,
            "scheme": scheme,
            "method": method,
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "headers": headers,
            "extensions": {"chatgate.on_disconnect": cycle.on_disconnect},
        }
        for k, v in headers:
            if k == b"content-length":
                with contextlib.suppress(ValueError):
                    cycle.length = int(v)
            elif k == b"expect" and v.lower() == b"100-continue":
                cycle.expect_100 = True
        self._parsing = cycle
        if self._cycle is None:
            self._start(cycle)
        else:  # pipelined: answer in order; read no further meanwhile
            self._pipeline.append(cycle)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self._parsing
        if cycle is None:
            return
        cycle.received += len(body)
        if cycle.finished_body or cycle.responded:
            return  # answered already: the rest of the body is skipped
        cycle.body.append(body)
        cycle.buffered += len(body)
        cycle.wake()
        if cycle.buffered > BODY_HIGH_WATER:
            self._pause_reading()

    def on_message_complete(self) -> None:
        cycle = self._parsing
        if cycle is not None:
            cycle.complete = True
            if cycle.responded and self._cycle is None:
                self._arm(self.state.keep_alive)  # the skipped body is done: idle again
            else:
                cycle.wake()

    # --- requests ----------------------------------------------------------------------

    def _start(self, cycle: Cycle) -> None:
        self._cycle = cycle
        state = self.state
        state.idle.clear()
        task = self._loop.create_task(cycle.run(state.app))
        state.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        tasks = self.state.tasks
        tasks.discard(task)
        if not tasks:
            self.state.idle.set()

    def response_done(self, cycle: Cycle) -> None:
        """The answer of ``cycle`` has been written in full."""
        transport = self._transport
        if self.closed or transport is None:
            return
        if not cycle.keep_alive or self.state.draining:
            if cycle.complete:
                transport.close()
                self.closed = True
            else:
                self._linger()
            return
        self._cycle = None
        if not cycle.complete:
            # answered before the rest of a small body came: the parser knows its length and
            # skips it, then the connection serves the next request (within keep_alive)
            self._resume_reading()
            self._arm(self.state.keep_alive, idle=False)
            return
        if self._pipeline:
            self._start(self._pipeline.popleft())
            if not self._pipeline:
                self._resume_reading()
        else:
            self._resume_reading()
            self._arm(self.state.keep_alive)

    def body_consumed(self) -> None:
        if self._read_paused and not self._pipeline:
            self._resume_reading()

    def write(self, data: bytes) -> None:
        if not self.closed and self._transport is not None:
            self._transport.write(data)

    def abort(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.close()
            self.closed = True

    def close_if_idle(self) -> None:
        """Shutdown: close a connection with no request in flight now; the others close
        after their answer (``connection: close``)."""
        if self._cycle is None:
            self.abort()

    # --- helpers -----------------------------------------------------------------------

    def _reject(self, status: int, text: str) -> None:
        if self._cycle is None or self._cycle.responded:
            self.write(_plain(status, text))
            self._linger()
        else:
            self.abort()

    def _linger(self) -> None:
        """Close without a reset: send what is written and our FIN, drop what the client
        still sends until it closes its side (``eof_received``) or LINGER_SECONDS pass."""
        transport = self._transport
        if transport is None or self.closed or self._lingering:
            return
        self._lingering = True
        self._cycle = None
        self._pipeline.clear()
        try:
            transport.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            self.abort()
            return
        self._resume_reading()
        self._arm(LINGER_SECONDS, idle=False)

    def _pause_reading(self) -> None:
        if not self._read_paused and self._transport is not None and not self.closed:
            self._read_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._read_paused and self._transport is not None and not self.closed:
            self._read_paused = False
            self._transport.resume_reading()

    def _arm(self, seconds: float, idle: bool = True) -> None:
        self._disarm()
        self._timer = self._loop.call_later(seconds, self._timeout)
        self._timer_idle = idle

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timeout(self) -> None:
        self._timer = None
        if self._cycle is None:  # idle keep-alive, or headers too slow: close quietly
            self.abort()


def _forwarded(
    headers: list[tuple[bytes, bytes]], client: tuple[str, int], scheme: str
) -> tuple[tuple[str, int], str]:
    for k, v in headers:
        if k == b"x-forwarded-for":
            first = v.split(b",")[0].strip().decode("latin-1")
            if first:
                client = (first, 0)
        elif k == b"x-forwarded-proto":
            proto = v.split(b",")[0].strip().decode("latin-1").lower()
            if proto in ("http", "https"):
                scheme = proto
    return client, scheme


class Cycle:
    """One request and its answer."""

    __slots__ = (
        "_callbacks",
        "_end",
        "_gone",
        "_waiter",
        "body",
        "buffered",
        "chunked",
        "complete",
        "expect_100",
        "finished_body",
        "head",
        "keep_alive",
        "length",
        "method",
        "proto",
        "received",
        "responded",
        "scope",
        "started",
    )

    def __init__(self, proto: HttpProtocol, method: str, keep_alive: bool) -> None:
        self.proto = proto
        self.method = method
        self.keep_alive = keep_alive
        self.scope: dict[str, Any] = {}
        self.body: list[bytes] = []
        self.buffered = 0
        self.length = -1  # the declared content-length (-1: none, or chunked)
        self.received = 0  # body bytes arrived so far
        self.complete = False  # the whole request body has arrived
        self.finished_body = False  # the app has been given the last body part
        self.expect_100 = False
        self.started: tuple[int, list[tuple[bytes, bytes]]] | None = None  # response start
        self.head = False  # the status line and headers are written
        self.chunked = False
        self.responded = False  # the whole answer is written
        self._callbacks: list[Callable[[], Any]] = []
        self._gone = False
        self._waiter: asyncio.Future[None] | None = None
        self._end: asyncio.Future[None] | None = None

    # --- events from the connection ----------------------------------------------------

    def wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def disconnected(self) -> None:
        if self._gone:
            return
        self._gone = True
        self.wake()
        end = self._end
        if end is not None and not end.done():
            end.set_result(None)
        if not self.responded:
            callbacks, self._callbacks = self._callbacks, []
            for cb in callbacks:
                try:
                    cb()
                except Exception:
                    log.exception("disconnect callback failed")

    def on_disconnect(self, callback: Callable[[], Any]) -> None:
        """Extension ``chatgate.on_disconnect``: call ``callback`` if the client goes away
        before the answer is complete (at once if it already has)."""
        if self._gone:
            callback()
        else:
            self._callbacks.append(callback)

    # --- the ASGI side -----------------------------------------------------------------

    async def run(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            self.proto.abort()
            raise
        except BaseException:
            log.exception("unhandled error in the app")
            if not self.head:
                self.proto.write(_plain(500, "Internal Server Error"))
            self.proto.abort()
            return
        if not self.responded:
            if not self.head:
                self.proto.write(_plain(500, "Internal Server Error"))
                log.error("the app returned without answering %s", self.scope.get("path"))
            self.proto.abort()  # an unfinished answer: the client must not wait for more

    async def receive(self) -> dict[str, Any]:
        if self._gone:
            return {"type": "http.disconnect"}
        if self.finished_body:
            # nothing more will come: wait until the client leaves or the answer is done
            if self._end is None:
                self._end = self.proto._loop.create_future()
            if not self.responded:
                await self._end
            return {"type": "http.disconnect"}
        if self.expect_100:
            self.expect_100 = False
            if not self.complete and not self.body:
                self.proto.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not self.body and not self.complete and not self._gone:
            self._waiter = self.proto._loop.create_future()
            await self._waiter
            self._waiter = None
        if self._gone:
            return {"type": "http.disconnect"}
        chunks, self.body = self.body, []
        self.buffered = 0
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        more = not self.complete
        if not more:
            self.finished_body = True
        self.proto.body_consumed()
        return {"type": "http.request", "body": data, "more_body": more}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if self.started is None or self.responded:
                raise RuntimeError("http.response.body out of order")
            if self._gone:
                return
            body: bytes = message.get("body", b"")
            more: bool = message.get("more_body", False)
            out: list[bytes] = []
            if not self.head:
                out.append(self._head(len(body), more))
            if self.method == "HEAD":
                pass
            elif self.chunked:
                if body:
                    out += (b"%x\r\n" % len(body), body, b"\r\n")
                if not more:
                    out.append(b"0\r\n\r\n")
            elif body:
                out.append(body)
            if out:
                self.proto.write(out[0] if len(out) == 1 else b"".join(out))
            if not more:
                self._finish()
            else:
                await self.proto.drain()
        elif kind == "http.response.start":
            if self.started is not None:
                raise RuntimeError("http.response.start sent twice")
            self.started = (int(message["status"]), list(message.get("headers", ())))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _head(self, length: int, more: bool) -> bytes:
        assert self.started is not None
        status, headers = self.started
        self.head = True
        out = [STATUS_LINES.get(status) or _status_line(status)]
        has_length = False
        keep_alive = self.keep_alive and not self.proto.state.draining
        for name, value in headers:
            n = name.lower()
            if n == b"content-length":
                has_length = True
            elif n == b"transfer-encoding":
                if value.lower() == b"chunked":
                    self.chunked = True
                    has_length = True
            elif n == b"connection" and b"close" in value.lower():
                keep_alive = False
            out += (name, b": ", value, b"\r\n")
        # answered before the request body is in: skip a small rest, close on a large one
        if (
            keep_alive
            and not self.complete
            and (self.length < 0 or self.length - self.received > SKIP_BODY_MAX)
        ):
            keep_alive = False
        if not has_length and status >= 200 and status not in (204, 304):
            if more:
                self.chunked = True
                out.append(b"transfer-encoding: chunked\r\n")
            else:
                out.append(b"content-length: %d\r\n" % length)
        if not keep_alive:
            self.keep_alive = False
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def _finish(self) -> None:
        self.responded = True
        self._callbacks = []
        end = self._end
        if end is not None and not end.done():
            end.set_result(None)
        self.proto.response_done(self)


class Lifespan:
    """Drives the app's ASGI lifespan: startup before serving, shutdown after."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._events: dict[str, asyncio.Event] = {}
        self.failure: str | None = None
        self._task: asyncio.Task[None] | None = None

    def _event(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())

    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind.endswith(".failed"):
            self.failure = str(message.get("message") or kind)
        self._event(kind.rsplit(".", 1)[0]).set()

    async def _run(self) -> None:
        try:
            await self.app(
                {"type": "lifespan", "asgi": ASGI, "state": {}}, self._receive, self._send
            )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("lifespan failed")
            self.failure = self.failure or repr(exc)
        finally:
            for name in ("lifespan.startup", "lifespan.shutdown"):
                self._event(name).set()

    async def startup(self) -> bool:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._event("lifespan.startup").wait()
        return self.failure is None

    async def shutdown(self) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._event("lifespan.shutdown").wait()
        with contextlib.suppress(BaseException):
            await self._task


class Server:
    """``await Server(app, host, port).serve()``: runs until SIGTERM/SIGINT or
    :meth:`stop`, then shuts down gracefully. Returns the process exit code."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        grace: float = 30.0,
        keep_alive: float = 5.0,
        proxy_headers: bool = False,
        trusted: frozenset[str] = frozenset({"127.0.0.1", "::1"}),
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        backlog: int = 2048,
        on_draining: Callable[[], Any] | None = None,
    ) -> None:
        self.app = app
        self.host, self.port = host, port
        self.grace = grace
        self.reuse_port = reuse_port
        self.sock = sock  # a listening socket inherited from `--workers`' supervisor
        self.backlog = backlog
        self.on_draining = on_draining
        self._keep_alive, self._proxy, self._trusted = keep_alive, proxy_headers, trusted
        self.state: ServerState | None = None
        self._stop: asyncio.Event | None = None
        self.started = False

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop.set)
        lifespan = Lifespan(self.app)
        if not await lifespan.startup():
            log.error("start-up failed: %s", lifespan.failure)
            await lifespan.shutdown()
            return 3
        state = self.state = ServerState(
            self.app, keep_alive=self._keep_alive, proxy_headers=self._proxy, trusted=self._trusted
        )
        state.idle.set()
        try:
            if self.sock is not None:
                server = await loop.create_server(
                    lambda: HttpProtocol(state), sock=self.sock, backlog=self.backlog
                )
            else:
                server = await loop.create_server(
                    lambda: HttpProtocol(state),
                    host=self.host,
                    port=self.port,
                    reuse_address=True,
                    reuse_port=self.reuse_port or None,
                    backlog=self.backlog,
                )
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", self.host, self.port, exc.strerror or exc)
            await lifespan.shutdown()
            return 1
        for sock in server.sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.started = True
        await self._stop.wait()
        await self._drain(server)
        await lifespan.shutdown()
        return 0

    async def _drain(self, server: asyncio.Server) -> None:
        state = self.state
        assert state is not None
        log.info("shutting down: %d requests in flight", len(state.tasks))
        state.draining = True
        if self.on_draining is not None:
            self.on_draining()
        server.close()  # no new connections; the ones open stay
        for conn in list(state.connections):
            conn.close_if_idle()
        try:
            await asyncio.wait_for(state.idle.wait(), self.grace)
        except TimeoutError:
            log.warning(
                "grace period of %.0f s over: cancelling %d requests", self.grace, len(state.tasks)
            )
            for task in list(state.tasks):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.idle.wait(), 5)
        for conn in list(state.connections):
            conn.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (``MALLOC_ARENA_MAX``). Each thread that allocates (the
    database's worker threads here) otherwise gets an arena of its own that keeps what it
    once held: under steady load the RSS crept up for a quarter of an hour (97 -> 104 MB);
    with two arenas it is flat after the first minute. No-op off glibc or when the operator
    set MALLOC_ARENA_MAX."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):  # musl and friends have no mallopt: nothing to do
        pass


def run(server: Server) -> int:
    """Run the server on uvloop (when installed) in this thread."""
    limit_malloc_arenas()
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        runner = asyncio.run
    return int(runner(server.serve()))


def workers_supervise(argv: list[str], n: int, grace: float, host: str, port: int) -> int:
    """Run ``n`` worker processes (each ``argv --fd N``) that accept from one listening socket
    bound here, restart one that dies, and pass SIGTERM/SIGINT on to all.

    One shared accept queue rather than SO_REUSEPORT: the kernel hashes connections over
    SO_REUSEPORT sockets without regard to how busy each worker is, and with a few
    keep-alive clients one worker got most of them (1.5x the throughput of one worker, not
    1.7x); from one queue an idle worker takes the next connection."""
    import subprocess
    import time

    try:
        listener = socket.create_server((host, port), backlog=2048)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", host, port, exc.strerror or exc)
        return 1
    listener.set_inheritable(True)
    fd = listener.fileno()
    procs: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def spawn(slot: int) -> None:
        env = dict(os.environ, CHATGATE_WORKER=str(slot))
        procs[slot] = subprocess.Popen(
            [sys.executable, *argv, "--fd", str(fd)], env=env, pass_fds=(fd,)
        )

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        with contextlib.suppress(OSError):
            listener.close()  # no new connections queue up here while the workers drain
        for p in procs.values():
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for slot in range(n):
        spawn(slot)
    started = time.monotonic()
    while not stopping:
        time.sleep(0.2)
        for slot, p in list(procs.items()):
            code = p.poll()
            if code is None or stopping:
                continue
            if time.monotonic() - started < 5 and code != 0:
                # failing at start-up (bad config, port taken): stop everything, don't spin
                on_signal(signal.SIGTERM, None)
                stopping = True
                break
            log.warning("worker %d exited with %s; restarting it", p.pid, code)
            spawn(slot)
    deadline = time.monotonic() + grace + 10
    codes = []
    for p in procs.values():
        try:
            codes.append(p.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return max((c for c in codes if c > 0), default=0)
