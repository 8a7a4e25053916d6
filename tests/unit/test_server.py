"""The HTTP/1.1 server (chatgate.server) on a real socket, with a small ASGI app of the test's
own: keep-alive, pipelining, bodies, limits, disconnects, lifespan and graceful shutdown."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chatgate.server import Server


class EchoApp:
    """Answers POST /echo with the body, GET /slow after a delay, GET /stream in parts."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.fail_startup = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    if self.fail_startup:
                        await send({"type": "lifespan.startup.failed", "message": "no"})
                        return
                    self.events.append("startup")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    self.events.append("shutdown")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/echo":
            body = b""
            while True:
                msg = await receive()
                body += msg.get("body", b"")
                if not msg.get("more_body"):
                    break
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
        elif path == "/slow":
            try:
                await asyncio.sleep(float(scope["query_string"] or b"0.5"))
            except asyncio.CancelledError:
                self.events.append("cancelled")
                raise
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"slow done"})
        elif path == "/watch":
            task = asyncio.current_task()
            assert task is not None
            scope["extensions"]["chatgate.on_disconnect"](
                lambda: self.events.append("disconnected")
            )
            await asyncio.sleep(5)
        elif path == "/stream":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            for i in range(3):
                await send(
                    {"type": "http.response.body", "body": b"part%d;" % i, "more_body": True}
                )
                await asyncio.sleep(0.05)
            await send({"type": "http.response.body", "body": b""})
        elif path == "/early":  # answers on the headers alone, as a 401 or a 413 does
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no"})
        elif path == "/boom":
            raise RuntimeError("a bug")
        else:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": scope["path"].encode()})


class Running:
    def __init__(self, app: EchoApp, **kw: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = Server(app, "127.0.0.1", self.port, **kw)
        self.loop = asyncio.new_event_loop()
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 5
        while not self.server.started and self.code is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        self.code = self.loop.run_until_complete(self.server.serve())

    def stop(self) -> int | None:
        self.loop.call_soon_threadsafe(self.server.stop)
        self.thread.join(10)
        return self.code

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        return s


@pytest.fixture
def app() -> EchoApp:
    return EchoApp()


@pytest.fixture
def srv(app: EchoApp) -> Iterator[Running]:
    r = Running(app, keep_alive=1.0, grace=2.0)
    yield r
    r.stop()


def read_response(s: socket.socket, buf: bytearray) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One HTTP/1.1 response off the socket (content-length or chunked)."""
    while b"\r\n\r\n" not in buf:
        got = s.recv(65536)
        if not got:
            raise ConnectionError("closed before the headers")
        buf += got
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines[1:])}
    del buf[:]
    buf += rest
    if b"content-length" in headers:
        n = int(headers[b"content-length"])
        while len(buf) < n:
            buf += s.recv(65536)
        body = bytes(buf[:n])
        del buf[:n]
        return lines[0], headers, body
    assert headers.get(b"transfer-encoding") == b"chunked"
    body = b""
    while True:
        while b"\r\n" not in buf:
            buf += s.recv(65536)
        size_line, _, _ = bytes(buf).partition(b"\r\n")
        size = int(size_line, 16)
        need = len(size_line) + 2 + size + 2
        while len(buf) < need:
            buf += s.recv(65536)
        body += bytes(buf[len(size_line) + 2 : len(size_line) + 2 + size])
        del buf[:need]
        if size == 0:
            return lines[0], headers, body


def closed(s: socket.socket, timeout: float = 3.0) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def test_keep_alive_serves_several_requests_on_one_connection(srv: Running) -> None:
    with srv.connect() as s:
        buf = bytearray()
        for i in range(3):
            body = b"hello %d" % i
            s.sendall(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            status, headers, got = read_response(s, buf)
            assert status == b"HTTP/1.1 200 OK"
            assert got == body
            assert headers[b"content-length"] == str(len(body)).encode()
            assert b"connection" not in headers


def test_pipelined_requests_are_answered_in_order(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(
            b"GET /slow?0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        buf = bytearray()
        assert read_response(s, buf)[2] == b"slow done"
        assert read_response(s, buf)[2] == b"hi"
        status, _, body = read_response(s, buf)
        assert status == b"HTTP/1.1 404 Not Found" and body == b"/nope"


def test_an_answer_before_a_small_body_keeps_the_connection(srv: Running) -> None:
    # the headers alone are answered (a bad key); the body follows, then the next request:
    # the body is skipped, not parsed as a request, and the connection is not dropped under
    # the client (which would lose whatever request it sends next on it)
    with srv.connect() as s:
        buf = bytearray()
        s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        status, headers, body = read_response(s, buf)
        assert status == b"HTTP/1.1 401 Unauthorized" and body == b"no"
        assert b"connection" not in headers
        s.sendall(b"hello")
        time.sleep(0.05)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        status, _, body = read_response(s, buf)
        assert status == b"HTTP/1.1 200 OK" and body == b"ok"
        # and all in one go: answer, skipped body and next request
        s.sendall(
            b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        )
        assert read_response(s, buf)[2] == b"no"
        assert read_response(s, buf)[2] == b"hi"


def test_an_answer_before_a_large_body_closes_without_a_reset(srv: Running) -> None:
    # a 10 MB body declared and refused on the headers: the answer says connection: close,
    # and what the client still sends does not turn the close into a reset (which would
    # throw the answer away before the client read it)
    with srv.connect() as s:
        s.sendall(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        time.sleep(0.1)  # the server has answered and closed its side by now
        for _ in range(8):
            s.sendall(b"x" * 65536)
        buf = bytearray()
        status, headers, body = read_response(s, buf)
        assert status == b"HTTP/1.1 401 Unauthorized" and body == b"no"
        assert headers[b"connection"] == b"close"
        s.shutdown(socket.SHUT_WR)
        assert closed(s), "expected an orderly close, not a reset"


def test_an_unsized_body_answered_early_closes_the_connection(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(
            b"POST /early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        buf = bytearray()
        _, headers, body = read_response(s, buf)
        assert body == b"no" and headers[b"connection"] == b"close"
        s.sendall(b"3\r\ndef\r\n0\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        assert closed(s)


def test_chunked_request_body_and_expect_continue(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        s.settimeout(5)
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        status, _, body = read_response(s, bytearray())
        assert status == b"HTTP/1.1 200 OK" and body == b"hello world"


def test_a_large_body_arrives_whole(srv: Running) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: reading pauses and resumes on the way
    with srv.connect() as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
        )
        assert read_response(s, bytearray())[2] == payload


def test_streamed_answer_is_chunked(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        _status, headers, body = read_response(s, bytearray())
        assert headers[b"transfer-encoding"] == b"chunked"
        assert body == b"part0;part1;part2;"


def test_http_1_0_closes_after_the_answer(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"POST /echo HTTP/1.0\r\nContent-Length: 1\r\n\r\nx")
        _, headers, body = read_response(s, bytearray())
        assert body == b"x" and headers[b"connection"] == b"close"
        assert closed(s)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n", b"431"),
    ],
)
def test_bad_requests_get_a_status_and_a_closed_connection(
    srv: Running, request_bytes: bytes, status: bytes
) -> None:
    with srv.connect() as s:
        s.sendall(request_bytes)
        got = read_response(s, bytearray())
        assert got[0].split(b" ")[1] == status
        assert closed(s)


def test_an_upgrade_is_ignored_and_the_connection_closed(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(
            b"GET /x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        status, headers, body = read_response(s, bytearray())
        assert status == b"HTTP/1.1 404 Not Found" and body == b"/x"
        assert headers[b"connection"] == b"close"
        assert closed(s)


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(s, bytearray())
        t0 = time.monotonic()
        assert closed(s, 5)
        assert 0.5 < time.monotonic() - t0 < 3


def test_slow_headers_do_not_hold_a_connection_forever(app: EchoApp) -> None:
    import chatgate.server as server_mod

    old = server_mod.HEADER_TIMEOUT
    server_mod.HEADER_TIMEOUT = 0.5
    r = Running(app, keep_alive=30.0)
    try:
        with r.connect() as s:
            s.sendall(b"GET / HTTP/1.1\r\n")
            for _ in range(3):  # trickling bytes must not reset the header timer
                time.sleep(0.2)
                s.sendall(b"X-A: b\r\n")
            assert closed(s, 3)
    finally:
        server_mod.HEADER_TIMEOUT = old
        r.stop()


def test_the_app_hears_of_a_disconnect_at_once(srv: Running, app: EchoApp) -> None:
    s = srv.connect()
    s.sendall(b"GET /watch HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    s.close()
    deadline = time.monotonic() + 2
    while "disconnected" not in app.events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "disconnected" in app.events


def test_an_app_error_is_a_500_not_a_hang(srv: Running) -> None:
    with srv.connect() as s:
        s.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(s, bytearray())
        assert status == b"HTTP/1.1 500 Internal Server Error"
        assert b"a bug" not in body  # no internals to the client
        assert closed(s)


def test_graceful_shutdown_finishes_requests_in_flight(app: EchoApp) -> None:
    drained: list[bool] = []
    r = Running(app, keep_alive=30.0, grace=5.0, on_draining=lambda: drained.append(True))
    busy = r.connect()
    idle = r.connect()
    busy.sendall(b"GET /slow?0.6 HTTP/1.1\r\nHost: x\r\n\r\n")
    idle.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    read_response(idle, bytearray())
    time.sleep(0.1)
    stopper = threading.Thread(target=r.stop)
    stopper.start()
    time.sleep(0.2)
    # not accepting any more; the idle keep-alive connection is closed
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", r.port), timeout=1).close()
    assert closed(idle)
    _status, headers, body = read_response(busy, bytearray())
    assert body == b"slow done" and headers[b"connection"] == b"close"
    stopper.join(10)
    assert r.code == 0
    assert drained == [True]  # the app was told first (its /ready answers 503)
    assert app.events == ["startup", "shutdown"]


def test_requests_beyond_the_grace_period_are_cancelled(app: EchoApp) -> None:
    r = Running(app, grace=0.3)
    s = r.connect()
    s.sendall(b"GET /slow?30 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.1)
    t0 = time.monotonic()
    assert r.stop() == 0
    assert time.monotonic() - t0 < 5
    assert app.events == ["startup", "cancelled", "shutdown"]
    s.close()


def test_failed_startup_exits_non_zero_without_listening(app: EchoApp) -> None:
    app.fail_startup = True
    r = Running(app)
    r.thread.join(5)
    assert r.code == 3
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", r.port), timeout=1).close()


def test_a_taken_port_is_an_error(app: EchoApp, srv: Running) -> None:
    other = Server(app, "127.0.0.1", srv.port)
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(other.serve()) == 1
    finally:
        loop.close()
