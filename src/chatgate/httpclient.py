"""The upstream HTTP/1.1 client: a connection pool on uvloop's transports with httptools'
response parser (the parser uvicorn and our server use), TLS from the standard library.

Why not aiohttp's client here: at thousands of calls a second its request path (URL and
header merging, payload registry, tracing hooks, redirects, cookies, a task per write) was
the largest single cost of the gateway, 30 % of the CPU per request in py-spy. A gateway
needs one thing from it: POST bytes to a vendor over a kept-alive connection and read the
answer whole or as it arrives. This does that and nothing else: one write per request,
headers as the parser reports them, the body as the bytes of each read.

What it does: a pool per origin (LIFO, so the warmest connection is reused; idle ones closed
after ``keepalive`` seconds), a cap on open connections (callers wait for a slot), HTTPS with
certificate and host name checks, content-length, chunked and read-until-close bodies, gzip
and deflate answers (we ask for none, a server may still send them), flow control on a
slow reader, and a connection never reused unless its answer was read to the end.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # buffered answer bytes before reading from the socket pauses


class ClientError(Exception):
    """The request failed on the network (not an HTTP status)."""


class ConnectError(ClientError):
    """No connection could be made (DNS, refused, TLS handshake, connect timeout)."""


class ConnectionBroken(ClientError):
    """The connection broke or the answer was malformed before it was complete."""


class Origin:
    """A URL parsed once: where to connect and what to put in the request line."""

    __slots__ = ("head", "host", "key", "port", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        standard = 443 if self.tls else 80
        self.port = parts.port or standard
        self.key = (self.tls, self.host, self.port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        authority = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != standard:
            authority += f":{self.port}"
        self.head = f"POST {target} HTTP/1.1\r\nHost: {authority}\r\n".encode("ascii")


_ORIGINS: dict[str, Origin] = {}


def origin(url: str) -> Origin:
    got = _ORIGINS.get(url)
    if got is None:
        if len(_ORIGINS) > 4096:  # bounded: URLs carry model names, a finite set in practice
            _ORIGINS.clear()
        got = _ORIGINS[url] = Origin(url)
    return got


class Response:
    """The answer to one request: ``status`` and ``headers`` (lower-case names) once
    :meth:`Pool.request` returns, then the body by :meth:`read` or :meth:`chunk`."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_conn",
        "_decoder",
        "_error",
        "_waiter",
        "complete",
        "headers",
        "keep_alive",
        "raw_headers",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.complete = False  # the whole body has arrived
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: Any = None

    # --- from the connection -----------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _feed(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                self._fail(ConnectionBroken("The answer's compressed body is corrupt."))
                return
            if not data:
                return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _done(self) -> None:
        if self._decoder is not None:
            rest = self._decoder.flush()
            if rest:
                self._buffer.append(rest)
        self.complete = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None and not self.complete:
            self._error = exc
            self._wake()

    def _headers_done(self) -> str | None:
        """Fill ``headers``; the reason the answer cannot be read, if any."""
        headers = self.headers
        for k, v in self.raw_headers:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        enc = headers.get("content-encoding", "").strip().lower()
        if enc in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self._decoder = _Deflate()
        elif enc not in ("", "identity"):
            return f"The answer's content-encoding {enc!r} is not supported."
        return None

    # --- for the caller ----------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read(self) -> bytes:
        """The whole body."""
        while not self.complete:
            if self._error is not None:
                raise self._error
            self._conn.resume()  # the whole body is wanted: no pause
            await self._wait()
        return self._take()

    async def chunk(self) -> bytes:
        """The bytes that arrived since the last call (waiting for some); b"" at the end."""
        buf = self._buffer
        while not buf:
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()
        data = self._take()
        self._conn.resume()
        return data

    def _take(self) -> bytes:
        """Everything buffered, as one bytes object; the buffer is then empty."""
        buf = self._buffer
        if not buf:
            return b""
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        self._buffered = 0
        return data


class _Deflate:
    """``deflate`` is zlib-wrapped by the standard and raw in some servers: try both."""

    def __init__(self) -> None:
        self._d: Any = None
        self._first = b""

    def decompress(self, data: bytes) -> bytes:
        if self._d is None:
            self._first += data
            if len(self._first) < 2:
                return b""
            wrapped = (self._first[0] & 0x0F) == 8 and (
                self._first[0] << 8 | self._first[1]
            ) % 31 == 0
            self._d = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._first = self._first, b""
        out: bytes = self._d.decompress(data)
        return out

    def flush(self) -> bytes:
        if self._d is None:
            return b""
        out: bytes = self._d.flush()
        return out


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_parser",
        "_paused",
        "closed",
        "counted",
        "idle_since",
        "key",
        "pool",
        "resp",
        "transport",
    )

    def __init__(self, pool: Pool, key: tuple[bool, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.resp: Response | None = None
        self.closed = False
        self._paused = False
        self.idle_since = 0.0
        self.counted = False  # holds one of the pool's slots (given back exactly once)

    # --- transport events --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:  # nothing was asked: a server speaking out of turn is not reused
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            resp._fail(ConnectionBroken("The server switched protocols."))
            self.close()
        except httptools.HttpParserError as exc:
            resp._fail(ConnectionBroken(f"The answer is not valid HTTP/1.1 ({exc})."))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # the server is done: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._lost(self)
        resp = self.resp
        if resp is not None and not resp.complete:
            if resp.status and not resp.keep_alive and _until_close(resp.headers):
                resp._done()  # no length, not chunked: the body ends with the connection
            else:
                resp._fail(ConnectionBroken("The connection closed before the answer ended."))

    # --- parser callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.resp is not None:
            self.resp.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        resp = self.resp
        if resp is None:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103): the real one follows
            resp.raw_headers.clear()
            return
        resp.status = status
        resp.keep_alive = self._parser.should_keep_alive()
        problem = resp._headers_done()
        if problem is not None:
            resp.status = 0
            resp._fail(ConnectionBroken(problem))
            self.close()
            return
        resp._wake()

    def on_body(self, body: bytes) -> None:
        if self.resp is not None:
            self.resp._feed(body)

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is not None and resp.status:
            resp._done()

    # --- flow control ------------------------------------------------------------------

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()  # no lingering: a half-read answer is thrown away
        self.pool._lost(self)  # its slot is free now, not when the loss is reported


def _until_close(headers: dict[str, str]) -> bool:
    return (
        "content-length" not in headers
        and "chunked" not in headers.get("transfer-encoding", "").lower()
    )


class Pool:
    """Pooled connections to any number of origins."""

    def __init__(
        self,
        max_connections: int = 1024,
        keepalive: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max = max_connections
        self._keepalive = keepalive
        self._idle: dict[tuple[bool, str, int], list[_Connection]] = {}
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl = ssl_context  # default: the system's CAs, certificate and host name checked
        self._next_sweep = 0.0
        self._closing = False

    @property
    def open_connections(self) -> int:
        return self._open

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def request(
        self, url: str, headers: dict[str, str], body: bytes, connect_timeout: float
    ) -> Response:
        """POST ``body`` to ``url``; returns once the status and headers have arrived.
        Cancelling it (a timeout) closes the connection."""
        o = origin(url)
        lines = [o.head]
        for k, v in headers.items():
            if "\r" in v or "\n" in v or "\r" in k or "\n" in k or ":" in k:
                raise ValueError(f"header {k!r} contains a line break or colon")
            lines.append(f"{k}: {v}\r\n".encode("latin-1"))
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        lines.append(body)
        payload = b"".join(lines)
        conn = await self._acquire(o, connect_timeout)
        resp = conn.resp = Response(conn)
        try:
            assert conn.transport is not None
            conn.transport.write(payload)
            while not resp.status:
                if resp._error is not None:
                    raise resp._error
                await resp._wait()
        except BaseException:
            conn.close()
            raise
        return resp

    def release(self, resp: Response) -> None:
        """The caller is done with ``resp``: its connection goes back to the pool if the
        answer was read to the end and the server keeps it open, else it is closed."""
        conn = resp._conn
        if conn.resp is not resp:
            return
        conn.resp = None
        if conn.closed or not resp.complete or not resp.keep_alive or self._closing:
            conn.close()
            return
        conn.resume()
        loop = asyncio.get_running_loop()
        now = loop.time()
        conn.idle_since = now
        self._idle.setdefault(conn.key, []).append(conn)
        self._wake_one()  # a caller waiting at the cap may take it
        if now >= self._next_sweep:
            self._next_sweep = now + min(10.0, self._keepalive)
            self._sweep(now)

    def _evict_one(self) -> bool:
        """At the cap: close the longest idle connection (to any origin) to make room."""
        oldest: list[_Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest[0].idle_since):
                oldest = idle
        if oldest is None:
            return False
        oldest.pop(0).close()
        return self._open < self._max

    def _sweep(self, now: float) -> None:
        for idle in self._idle.values():
            while idle and (idle[0].closed or now - idle[0].idle_since > self._keepalive):
                idle.pop(0).close()

    async def _acquire(self, o: Origin, connect_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        while True:
            idle = self._idle.get(o.key)
            if idle:
                now = loop.time()
                while idle:
                    conn = idle.pop()  # the most recently used: the warmest
                    if not conn.closed and now - conn.idle_since < self._keepalive:
                        return conn
                    conn.close()
            if self._open < self._max or self._evict_one():
                break
            # at the cap: wait for a connection to come back to the pool or to close
            w = loop.create_future()
            self._waiters.append(w)
            try:
                await w
            except BaseException:
                if w.done() and not w.cancelled():
                    self._wake_one()  # woken and cancelled at once: pass the turn on
                raise
        conn = _Connection(self, o.key)
        conn.counted = True
        self._open += 1
        try:
            async with asyncio.timeout(connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    o.host,
                    o.port,
                    ssl=self._context() if o.tls else None,
                    server_hostname=o.host if o.tls else None,
                )
        except BaseException as exc:
            conn.close()  # gives its slot back, once
            if isinstance(exc, TimeoutError):
                raise ConnectError("Connecting timed out.") from None
            if isinstance(exc, OSError | ssl.SSLError):
                raise ConnectError(f"Connecting failed ({type(exc).__name__}).") from None
            raise
        if conn.closed:  # lost at once
            raise ConnectError("The connection closed as it opened.")
        return conn

    def _lost(self, conn: _Connection) -> None:
        if conn.counted:
            conn.counted = False
            self._slot_freed()

    def _slot_freed(self) -> None:
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    async def close(self) -> None:
        self._closing = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports report their loss
