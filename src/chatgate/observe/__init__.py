"""Seeing what the gateway does: Prometheus metrics (:mod:`.metrics`), the access log and the
process log's format (:mod:`.logs`), and optional OpenTelemetry traces (:mod:`.tracing`).

One :class:`Observer` per gateway. A chat request calls :meth:`Observer.begin` when it
starts and :meth:`Observer.end` with its usage row when it ends; that is all the request
path pays for (about a microsecond and a half with tracing off, see the README).
"""

from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING, Any

from ..api.http import Scope, Send, header, send_bytes
from ..auth import bearer
from ..errors import AuthenticationError, NotFound, PermissionDenied
from .logs import AccessLog, configure, wants_prompts
from .metrics import Metrics
from .tracing import Tracer, TracingUnavailable, incoming, traceparent_from, valid_traceparent

if TYPE_CHECKING:
    from ..api.chat import Record
    from ..app import Gateway
    from ..config import Config
    from ..store import UsageRow

__all__ = [
    "Metrics",
    "Observer",
    "TracingUnavailable",
    "configure",
    "handle_metrics",
    "wants_prompts",
]


class Observer:
    def __init__(self, cfg: Config) -> None:
        self.metrics = Metrics(frozenset(cfg.models))
        self.access: AccessLog | None = AccessLog() if cfg.access_log else None
        # imports OpenTelemetry (raising TracingUnavailable without it) only when configured
        self.tracer: Tracer | None = Tracer(cfg.tracing) if cfg.tracing is not None else None
        self.live: set[Record] = set()  # requests in flight (streams: those committed)

    def begin(self, scope: Scope, rec: Record) -> Any:
        """A chat request starts; what it returns goes back to :meth:`end`."""
        self.live.add(rec)
        if self.tracer is not None:
            return self.tracer.begin(scope)
        tp = traceparent_from(scope)
        if tp is not None and valid_traceparent(tp):
            incoming.set(tp.decode("ascii"))  # passed on to the upstream unchanged
        return None

    def end(self, row: UsageRow, rec: Record, state: Any) -> None:
        """A chat request ended with this usage row."""
        self.live.discard(rec)
        self.metrics.request(row, rec)
        if self.access is not None:
            self.access.emit(row, rec)
        if state is not None and self.tracer is not None:
            self.tracer.end(state, row, rec)

    async def close(self) -> None:
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)


async def handle_metrics(gw: Gateway, scope: Scope, send: Send) -> None:
    """GET /metrics: the master key (or ``metrics.token``) as bearer, unless
    ``metrics.public``; 404 with ``metrics.enabled: false``."""
    settings = gw.cfg.metrics
    if not settings.enabled:
        raise NotFound("Metrics are disabled on this gateway.", code="unknown_url")
    if not settings.public:
        if gw.cfg.master_key is None and settings.token is None:
            raise PermissionDenied(
                "/metrics needs a bearer token: set master_key or metrics.token, or "
                "metrics.public: true.",
                code="metrics_disabled",
            )
        token = bearer(header(scope, b"authorization"))
        scrape = settings.token
        if not gw.auth.is_master(token) and not (
            scrape is not None and hmac.compare_digest(token.encode(), scrape.encode())
        ):
            raise AuthenticationError(
                "/metrics needs the master key or metrics.token as bearer.",
                code="invalid_api_key",
            )
    body, content_type = gw.obs.metrics.render(gw)
    await send_bytes(send, 200, body, content_type=(b"content-type", content_type.encode()))
