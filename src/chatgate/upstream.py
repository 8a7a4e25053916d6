"""The pooled HTTP client to the vendors: one aiohttp session per process, keep-alive,
an SSE reader, and the four timeouts (connect, first byte, idle between chunks, total)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from .config import Timeouts
from .errors import StreamInterrupted, UpstreamTimeout, UpstreamUnavailable
from .observe.tracing import incoming
from .providers.base import UpstreamRequest

if TYPE_CHECKING:
    from .observe.tracing import Tracer

USER_AGENT = "chatgate/0.1"


class Upstream:
    def __init__(self, max_connections: int = 1024) -> None:
        self._max = max_connections
        self._session: aiohttp.ClientSession | None = None
        # with tracing on, each call is a span whose context goes upstream as traceparent;
        # without, the client's own valid traceparent is passed on unchanged
        self.tracer: Tracer | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
        )
        # No session-wide headers, skip list or cookies: aiohttp merges each of them into
        # every request (a sixth of the client's CPU per call); each call carries its own
        # User-Agent instead, and vendors set no cookies a gateway should replay.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, ureq: UpstreamRequest, timeouts: Timeouts) -> Call:
        assert self._session is not None, "Upstream.start() was not awaited"
        return Call(self._session, ureq, timeouts, self.tracer)


_URLS: dict[str, URL] = {}  # parsed once: a deployment's few URLs are reused by every call
_TIMEOUTS: dict[float, aiohttp.ClientTimeout] = {}


def _url(url: str) -> URL:
    got = _URLS.get(url)
    if got is None:
        if len(_URLS) > 4096:  # bounded: URLs carry model names, a finite set in practice
            _URLS.clear()
        got = _URLS[url] = URL(url)
    return got


def _timeout(connect: float) -> aiohttp.ClientTimeout:
    got = _TIMEOUTS.get(connect)
    if got is None:
        got = _TIMEOUTS[connect] = aiohttp.ClientTimeout(
            total=None, connect=connect, sock_connect=connect
        )
    return got


class Call:
    """One upstream call: ``async with upstream.send(...) as call`` gives the status and
    headers once the first byte arrived; then ``await call.read()`` or ``call.batches()``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        ureq: UpstreamRequest,
        timeouts: Timeouts,
        tracer: Tracer | None = None,
    ) -> None:
        self._session = session
        self._ureq = ureq
        self._t = timeouts
        self._tracer = tracer
        self._span: Any = None
        self._resp: aiohttp.ClientResponse | None = None
        self._deadline = 0.0
        self.status = 0
        self.headers: dict[str, str] = {}

    async def __aenter__(self) -> Call:
        loop = asyncio.get_running_loop()
        t = self._t
        self._deadline = loop.time() + t.total
        headers = self._ureq.headers
        if not any(k.lower() == "user-agent" for k in headers):  # a configured one wins
            headers["User-Agent"] = USER_AGENT
        tracer = self._tracer
        if tracer is not None:
            self._span, traceparent = tracer.upstream(self._ureq.url)
            headers = {**headers, "traceparent": traceparent}
        else:
            passed = incoming.get()
            if passed is not None:
                headers = {**headers, "traceparent": passed}
        try:
            async with asyncio.timeout(min(t.first_byte, t.total)):
                self._resp = await self._session.post(
                    _url(self._ureq.url),
                    data=self._ureq.body,
                    headers=headers,
                    timeout=_timeout(t.connect),
                )
        except TimeoutError:
            self._end_span("upstream_timeout")
            raise UpstreamTimeout(
                "The upstream provider did not answer in time.", code="upstream_timeout"
            ) from None
        except aiohttp.ClientConnectorError:
            self._end_span("upstream_unavailable")
            raise UpstreamUnavailable("The upstream provider could not be reached.") from None
        except (aiohttp.ClientError, OSError) as exc:
            self._end_span("upstream_unavailable")
            raise UpstreamUnavailable(
                f"The connection to the upstream provider failed ({type(exc).__name__})."
            ) from None
        except BaseException:  # cancelled
            self._end_span("cancelled")
            raise
        self.status = self._resp.status
        if tracer is not None and self._span is not None:
            tracer.upstream_status(self._span, self.status)
        self.headers = {k.lower(): v for k, v in self._resp.headers.items()}
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        resp = self._resp
        if resp is not None:
            if et is None and resp.content.at_eof():
                resp.release()
            else:
                resp.close()  # an unfinished body: drop the connection, don't reuse it
        if self._span is not None:
            self._end_span(None if et is None else getattr(ev, "code", None) or et.__name__)

    def _end_span(self, error: str | None) -> None:
        span, self._span = self._span, None
        if span is not None and self._tracer is not None:
            self._tracer.upstream_end(span, error)

    async def read(self) -> bytes:
        assert self._resp is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(0.0, self._deadline - loop.time())):
                return await self._resp.read()
        except TimeoutError:
            raise UpstreamTimeout("The upstream provider did not finish in time.") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailable(
                "The upstream connection broke before the response was complete."
            ) from None

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """Yield the SSE events of each network read together, as lists of data payloads
        (``data:`` lines joined by newlines): the relay then answers a read with one write."""
        assert self._resp is not None
        content = self._resp.content
        loop = asyncio.get_running_loop()
        idle, deadline = self._t.idle, self._deadline
        rest = b""
        data: list[bytes] = []
        while True:
            # The timeout wraps only the read: the consumer's own awaits between two reads
            # (writing to a slow client) must not count as upstream idleness.
            try:
                async with asyncio.timeout_at(min(loop.time() + idle, deadline)):
                    chunk = await content.readany()
            except TimeoutError:
                raise StreamInterrupted(
                    "The upstream stream stalled.", code="upstream_timeout", status=504
                ) from None
            except (aiohttp.ClientError, OSError):
                raise StreamInterrupted("The upstream stream broke off.") from None
            if not chunk:
                break
            *lines, rest = (rest + chunk).split(b"\n")
            events: list[bytes] = []
            for line in lines:
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not line:
                    if data:
                        events.append(data[0] if len(data) == 1 else b"\n".join(data))
                        data = []
                elif line.startswith(b"data:"):
                    v = line[5:]
                    data.append(v[1:] if v.startswith(b" ") else v)
                # "event:", "id:", "retry:" and ":" comments carry nothing needed here
            if events:
                yield events
        if rest.startswith(b"data:"):
            v = rest[5:].rstrip(b"\r")
            data.append(v[1:] if v.startswith(b" ") else v)
        if data:
            yield [b"\n".join(data)]
