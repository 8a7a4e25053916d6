"""The pooled HTTP client to the vendors (:mod:`.httpclient`, one pool per process),
an SSE reader, and the four timeouts (connect, first byte, idle between chunks, total)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .config import Timeouts
from .errors import StreamInterrupted, UpstreamTimeout, UpstreamUnavailable
from .httpclient import ClientError, ConnectError, Pool, Response
from .observe.tracing import incoming
from .providers.base import UpstreamRequest

if TYPE_CHECKING:
    from .observe.tracing import Tracer

USER_AGENT = "chatgate/0.1"


class Upstream:
    def __init__(self, max_connections: int = 1024) -> None:
        self._max = max_connections
        self._pool: Pool | None = None
        # with tracing on, each call is a span whose context goes upstream as traceparent;
        # without, the client's own valid traceparent is passed on unchanged
        self.tracer: Tracer | None = None

    async def start(self) -> None:
        self._pool = Pool(max_connections=self._max, keepalive=60.0)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def send(self, ureq: UpstreamRequest, timeouts: Timeouts) -> Call:
        assert self._pool is not None, "Upstream.start() was not awaited"
        return Call(self._pool, ureq, timeouts, self.tracer)


class Call:
    """One upstream call: ``async with upstream.send(...) as call`` gives the status and
    headers once the first byte arrived; then ``await call.read()`` or ``call.batches()``."""

    def __init__(
        self,
        pool: Pool,
        ureq: UpstreamRequest,
        timeouts: Timeouts,
        tracer: Tracer | None = None,
    ) -> None:
        self._pool = pool
        self._ureq = ureq
        self._t = timeouts
        self._tracer = tracer
        self._span: Any = None
        self._resp: Response | None = None
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
                self._resp = await self._pool.request(
                    self._ureq.url, headers, self._ureq.body, t.connect
                )
        except TimeoutError:
            self._end_span("upstream_timeout")
            raise UpstreamTimeout(
                "The upstream provider did not answer in time.", code="upstream_timeout"
            ) from None
        except ConnectError:
            self._end_span("upstream_unavailable")
            raise UpstreamUnavailable("The upstream provider could not be reached.") from None
        except (ClientError, OSError, ValueError) as exc:
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
        self.headers = self._resp.headers
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        resp = self._resp
        if resp is not None:
            self._pool.release(resp)  # reused only if the answer was read to the end
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
        except (ClientError, OSError):
            raise UpstreamUnavailable(
                "The upstream connection broke before the response was complete."
            ) from None

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """Yield the SSE events of each network read together, as lists of data payloads
        (``data:`` lines joined by newlines): the relay then answers a read with one write."""
        assert self._resp is not None
        resp = self._resp
        loop = asyncio.get_running_loop()
        idle, deadline = self._t.idle, self._deadline
        rest = b""
        data: list[bytes] = []
        while True:
            # The timeout wraps only the read: the consumer's own awaits between two reads
            # (writing to a slow client) must not count as upstream idleness.
            try:
                async with asyncio.timeout_at(min(loop.time() + idle, deadline)):
                    chunk = await resp.chunk()
            except TimeoutError:
                raise StreamInterrupted(
                    "The upstream stream stalled.", code="upstream_timeout", status=504
                ) from None
            except (ClientError, OSError):
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
