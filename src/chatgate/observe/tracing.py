"""Optional OpenTelemetry traces, exported by OTLP/HTTP, and W3C ``traceparent`` to upstreams.

With ``tracing`` configured, each chat request is a span (``chat``, kind SERVER, a child of
the client's ``traceparent`` when it sent a valid one), each upstream attempt a child span
(``chat.attempt``), and each HTTP call to the vendor a grandchild (``upstream``, kind
CLIENT) whose context goes upstream as ``traceparent``. Spans carry models, provider,
deployment, status, tokens and cost; never a secret, a prompt or an exception's text.

Without ``tracing``, a valid ``traceparent`` from the client is passed to the upstream
unchanged (and nothing else is done); an invalid one is dropped.

The OpenTelemetry packages (the ``otel`` extra) are imported only when tracing is
configured; configured without them, the gateway refuses to start and says what to install.
"""

from __future__ import annotations

import re
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .. import __version__

if TYPE_CHECKING:
    from ..api.chat import Record
    from ..api.http import Scope
    from ..config import TracingSettings
    from ..errors import GatewayError
    from ..router import Target
    from ..store import UsageRow

# The client's traceparent, handed to upstream calls when tracing is off (one per request:
# each request runs in a task of its own, with its own copy of the context).
incoming: ContextVar[str | None] = ContextVar("chatgate_traceparent", default=None)

_TRACEPARENT = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_ZERO_TRACE, _ZERO_SPAN = b"0" * 32, b"0" * 16


def valid_traceparent(value: bytes) -> bool:
    """A W3C traceparent this gateway passes on: the version-00 shape, not version ff, and
    neither id all zeros."""
    m = _TRACEPARENT.match(value)
    return (
        m is not None
        and m.group(1) != b"ff"
        and m.group(2) != _ZERO_TRACE
        and m.group(3) != _ZERO_SPAN
    )


def traceparent_from(scope: Scope) -> bytes | None:
    for k, v in scope["headers"]:
        if k == b"traceparent":
            return v  # type: ignore[no-any-return]
    return None


class TracingUnavailable(RuntimeError):
    """Tracing is configured but the OpenTelemetry packages are not installed."""


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: a collector's base URL gets ``/v1/traces``."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def require_otel() -> None:
    """Raise :class:`TracingUnavailable`, saying what to install, unless the `otel` extra
    is there."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise TracingUnavailable(
            "tracing is configured (tracing.otlp_endpoint) but the OpenTelemetry "
            f"packages are not installed ({exc.name or exc} is missing): "
            "pip install 'chatgate[otel]'"
        ) from None


class Tracer:
    def __init__(self, settings: TracingSettings) -> None:
        require_otel()
        from opentelemetry import context, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._context = context
        self._trace = trace
        self._kind = trace.SpanKind
        self._error = trace.Status(trace.StatusCode.ERROR)
        self._propagator = TraceContextTextMapPropagator()
        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": __version__}
        )
        self._provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio))
        )
        exporter = OTLPSpanExporter(
            endpoint=traces_url(settings.otlp_endpoint),
            headers=dict(settings.headers) or None,
            timeout=10,
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(
                exporter, schedule_delay_millis=max(1, int(settings.export_interval * 1000))
            )
        )
        self._tracer = self._provider.get_tracer("chatgate", __version__)

    def shutdown(self) -> None:
        """Export what is left (blocking: call it from a thread)."""
        self._provider.shutdown()

    # --- the request span ----------------------------------------------------------------

    def begin(self, scope: Scope) -> tuple[Any, Any]:
        """Start the request's span (a child of the client's valid traceparent, if any) and
        make it current for everything the request does."""
        parent = None
        tp = traceparent_from(scope)
        if tp is not None and valid_traceparent(tp):
            parent = self._propagator.extract({"traceparent": tp.decode("ascii")})
        span = self._tracer.start_span(
            "chat",
            context=parent,
            kind=self._kind.SERVER,
            attributes={"http.request.method": "POST", "url.path": str(scope["path"])},
        )
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        return span, token

    def end(self, state: tuple[Any, Any], row: UsageRow, rec: Record) -> None:
        span, token = state
        try:
            if span.is_recording():
                attrs: dict[str, Any] = {
                    "http.response.status_code": row.status,
                    "chatgate.request_id": row.request_id,
                    "chatgate.stream": row.stream,
                    "chatgate.attempts": rec.attempts,
                    "chatgate.latency_ms": round(row.latency_ms, 3),
                }
                for name, value in (
                    ("gen_ai.request.model", rec.requested),
                    ("gen_ai.response.model", row.model),
                    ("gen_ai.provider.name", row.provider),
                    ("chatgate.deployment", rec.deployment),
                    ("chatgate.upstream_model", row.upstream_model),
                    ("chatgate.key_id", row.key_id),
                    ("gen_ai.usage.input_tokens", row.prompt_tokens),
                    ("gen_ai.usage.output_tokens", row.completion_tokens),
                    ("chatgate.cost_usd", row.cost_micros / 1e6 if row.cost_micros else None),
                    ("chatgate.ttft_ms", round(row.ttft_ms, 3) if row.ttft_ms else None),
                    ("error.type", row.error_type),
                ):
                    if value is not None:
                        attrs[name] = value
                span.set_attributes(attrs)
                if row.status >= 500:
                    span.set_status(self._error)
            span.end()
        finally:
            self._context.detach(token)

    # --- an attempt, and the upstream calls inside it ------------------------------------

    async def attempt(
        self,
        work: Coroutine[Any, Any, GatewayError | None],
        t: Target,
        number: int,
    ) -> GatewayError | None:
        """Run one attempt inside its span (the upstream calls it makes are its children)."""
        attrs: dict[str, Any] = {
            "gen_ai.request.model": t.public_model,
            "gen_ai.provider.name": t.provider_name,
            "chatgate.deployment": t.name,
            "chatgate.upstream_model": t.deployment.model,
            "chatgate.protocol": t.protocol,
            "chatgate.attempt": number,
        }
        with self._tracer.start_as_current_span(
            "chat.attempt",
            kind=self._kind.INTERNAL,
            attributes=attrs,
            record_exception=False,  # an exception's text may quote anything
            set_status_on_exception=False,
        ) as span:
            err = await work
            if err is not None:
                span.set_attributes(
                    {"http.response.status_code": err.status, "error.type": err.code or err.type}
                )
                span.set_status(self._error)
            return err

    def upstream(self, url: str) -> tuple[Any, str]:
        """Start the span of one upstream HTTP call; its ``traceparent`` goes with the call."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        attrs: dict[str, Any] = {
            "http.request.method": "POST",
            "server.address": parts.hostname or "",
            "url.path": parts.path,  # never the query: some endpoints carry keys there
        }
        if parts.port:
            attrs["server.port"] = parts.port
        span = self._tracer.start_span("upstream", kind=self._kind.CLIENT, attributes=attrs)
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=self._trace.set_span_in_context(span))
        return span, carrier.get("traceparent", "")

    def upstream_status(self, span: Any, status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_status(self._error)

    def upstream_end(self, span: Any, error: str | None = None) -> None:
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(self._error)
        span.end()
