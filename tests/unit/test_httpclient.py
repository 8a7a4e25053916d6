"""The upstream HTTP/1.1 client (chatgate.httpclient) against small servers of the test's own
that write exact bytes: bodies of every framing, keep-alive reuse, broken and malformed
answers, the connection cap, idle expiry, interim answers and TLS."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trustme

from chatgate.httpclient import ConnectError, ConnectionBroken, Pool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]


class Scripted:
    """A server that reads each request (head and content-length body) and lets ``handler``
    answer it; the handler returns False to close the connection."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/v1/x?q=1"

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            while True:
                try:
                    head = await r.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await r.readexactly(length)
                self.requests.append(head + body)
                if not await self.handler(r, w, body):
                    return
        finally:
            self.open -= 1
            w.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def replies(raw: bytes, keep: bool = True) -> Handler:
    """A handler that answers every request with ``raw``; ``keep=False`` closes after it."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, _: bytes) -> bool:
        w.write(raw)
        await w.drain()
        return keep

    return handler


async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter, body: bytes) -> bool:
    w.write(ok(body, b"x-thing: 1\r\n"))
    await w.drain()
    return True


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_a_kept_alive_connection_is_reused_and_the_request_is_exact() -> None:
    async def go() -> None:
        async with Scripted(echo) as srv:
            pool = Pool()
            for i in range(3):
                resp = await pool.request(srv.url, {"Authorization": "Bearer k"}, b"hi%d" % i, 5)
                assert resp.status == 200 and resp.headers["x-thing"] == "1"
                assert await resp.read() == b"hi%d" % i
                pool.release(resp)
            await pool.close()
            port = srv.url.split(":")[2].split("/")[0]
        assert srv.connections == 1
        assert srv.requests[0] == (
            b"POST /v1/x?q=1 HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nAuthorization: Bearer k\r\n"
            b"content-length: 3\r\n\r\nhi0" % port.encode()
        )

    run(go())


def test_chunked_answers_arrive_whole_however_they_are_split() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n"
        b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
    )

    async def go() -> None:
        for piece in (1, 3, 8, len(answer)):

            async def handler(r: Any, w: asyncio.StreamWriter, body: bytes, p: int = piece) -> bool:
                for i in range(0, len(answer), p):
                    w.write(answer[i : i + p])
                    await w.drain()
                    await asyncio.sleep(0)
                return True

            async with Scripted(handler) as srv:
                pool = Pool()
                resp = await pool.request(srv.url, {}, b"", 5)
                got = b""
                while chunk := await resp.chunk():
                    got += chunk
                assert got == b"hello, world" and resp.complete
                pool.release(resp)
                # and the connection serves the next request
                resp = await pool.request(srv.url, {}, b"", 5)
                assert await resp.read() == b"hello, world"
                pool.release(resp)
                await pool.close()
            assert srv.connections == 1

    run(go())


def test_a_body_without_length_ends_with_the_connection_and_is_not_reused() -> None:
    handler = replies(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it", keep=False)

    async def go() -> None:
        async with Scripted(handler) as srv:
            pool = Pool()
            for _ in range(2):
                resp = await pool.request(srv.url, {}, b"", 5)
                assert await resp.read() == b"all of it"
                pool.release(resp)
            await pool.close()
        assert srv.connections == 2

    run(go())


def test_gzip_and_deflate_answers_are_decoded() -> None:
    text = b'{"ok": true}' * 100
    bodies = {
        "gzip": gzip.compress(text),
        "deflate": zlib.compress(text),
    }
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    bodies["raw-deflate"] = raw.compress(text) + raw.flush()

    async def go() -> None:
        for name, body in bodies.items():
            enc = name.replace("raw-", "").encode()
            async with Scripted(replies(ok(body, b"content-encoding: " + enc + b"\r\n"))) as srv:
                pool = Pool()
                resp = await pool.request(srv.url, {}, b"", 5)
                assert await resp.read() == text, name
                pool.release(resp)
                await pool.close()

    run(go())


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        # an unknown encoding is an error, not garbage passed on
        (ok(b"\x00\x01", b"content-encoding: zstd\r\n"), "zstd"),
        (b"SMTP ready\r\n\r\n", "not valid HTTP"),
    ],
    ids=["unknown-encoding", "malformed"],
)
def test_an_answer_that_cannot_be_read_is_an_error(answer: bytes, problem: str) -> None:
    async def go() -> None:
        async with Scripted(replies(answer)) as srv:
            pool = Pool()
            with pytest.raises(ConnectionBroken, match=problem):
                await pool.request(srv.url, {}, b"", 5)
            await pool.close()

    run(go())


def test_a_connection_broken_mid_body_is_an_error() -> None:
    handler = replies(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part", keep=False)

    async def go() -> None:
        async with Scripted(handler) as srv:
            pool = Pool()
            resp = await pool.request(srv.url, {}, b"", 5)
            with pytest.raises(ConnectionBroken):
                await resp.read()
            pool.release(resp)
            assert pool.open_connections == 0
            await pool.close()

    run(go())


def test_nothing_listening_is_a_connect_error() -> None:
    async def go() -> None:
        srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        srv.close()
        await srv.wait_closed()
        pool = Pool()
        with pytest.raises(ConnectError):
            await pool.request(f"http://127.0.0.1:{port}/", {}, b"", 5)
        assert pool.open_connections == 0
        await pool.close()

    run(go())


def test_the_connection_cap_holds_and_every_caller_is_served() -> None:
    async def slow(r: Any, w: asyncio.StreamWriter, body: bytes) -> bool:
        await asyncio.sleep(0.05)
        return await echo(r, w, body)

    async def go() -> None:
        async with Scripted(slow) as srv:
            pool = Pool(max_connections=2)

            async def one(i: int) -> bytes:
                resp = await pool.request(srv.url, {}, b"%d" % i, 5)
                try:
                    return await resp.read()
                finally:
                    pool.release(resp)

            got = await asyncio.gather(*(one(i) for i in range(8)))
            assert got == [b"%d" % i for i in range(8)]
            assert srv.max_open <= 2
            await pool.close()

    run(go())


def test_an_answer_not_read_to_the_end_closes_its_connection() -> None:
    async def go() -> None:
        async def big(r: Any, w: asyncio.StreamWriter, _: bytes) -> bool:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345")
            await w.drain()
            await asyncio.sleep(0.2)
            w.write(b"67890")
            return True

        async with Scripted(big) as srv:
            pool = Pool()
            resp = await pool.request(srv.url, {}, b"", 5)
            pool.release(resp)  # walked away after the headers
            assert pool.open_connections == 0
            await pool.close()

    run(go())


def test_idle_connections_expire_after_keepalive() -> None:
    async def go() -> None:
        async with Scripted(echo) as srv:
            pool = Pool(keepalive=0.1)
            for _ in range(2):
                resp = await pool.request(srv.url, {}, b"x", 5)
                await resp.read()
                pool.release(resp)
                await asyncio.sleep(0.2)
            await pool.close()
        assert srv.connections == 2

    run(go())


def test_an_interim_answer_is_skipped() -> None:
    handler = replies(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done"))

    async def go() -> None:
        async with Scripted(handler) as srv:
            pool = Pool()
            resp = await pool.request(srv.url, {}, b"", 5)
            assert resp.status == 200 and await resp.read() == b"done"
            pool.release(resp)
            await pool.close()

    run(go())


def test_a_line_break_in_a_header_is_refused() -> None:
    async def go() -> None:
        pool = Pool()
        with pytest.raises(ValueError):
            await pool.request("http://127.0.0.1:9/", {"x": "a\r\nInjected: 1"}, b"", 5)
        await pool.close()

    run(go())


def test_a_large_body_streams_through_with_a_slow_reader() -> None:
    body = bytes(range(256)) * 20_000  # 5 MB: past the high-water mark many times

    handler = replies(ok(body))

    async def go() -> None:
        async with Scripted(handler) as srv:
            pool = Pool()
            resp = await pool.request(srv.url, {}, b"", 5)
            got = bytearray()
            while chunk := await resp.chunk():
                got += chunk
                await asyncio.sleep(0.001)
            assert bytes(got) == body
            pool.release(resp)
            await pool.close()

    run(go())


def test_https_checks_the_certificate() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def go() -> None:
        async with Scripted(echo, tls=server_ctx) as srv:
            pool = Pool(ssl_context=client_ctx)
            resp = await pool.request(srv.url, {}, b"secure", 5)
            assert await resp.read() == b"secure"
            pool.release(resp)
            await pool.close()
            untrusting = Pool()  # the system's CAs do not know this one
            with pytest.raises(ConnectError):
                await untrusting.request(srv.url, {}, b"x", 5)
            await untrusting.close()

    run(go())
