"""OpenTelemetry traces against the real server and a real OTLP/HTTP receiver run here: spans
request -> attempt -> upstream call with their attributes, the upstream call's context sent
to the vendor as traceparent (the sandbox records it), no secret or prompt in any span; with
tracing off, a client's valid traceparent passed on unchanged; without the `otel` extra, a
clear refusal to start."""

from __future__ import annotations

import gzip
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support import Server, sandbox_url

SERVER, CLIENT, INTERNAL = 2, 3, 1  # Span.SpanKind
STATUS_ERROR = 2


class Receiver:
    """An OTLP/HTTP endpoint (POST /v1/traces, protobuf) keeping what it received."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces"
                if ok:
                    receiver.add(body)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, body: bytes) -> None:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        spans = []
        for rs in req.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        {
                            "name": s.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent": s.parent_span_id.hex(),
                            "kind": s.kind,
                            "attrs": _attrs(s.attributes),
                            "status": s.status.code,
                            "resource": resource,
                            "start": s.start_time_unix_nano,
                            "end": s.end_time_unix_nano,
                        }
                    )
        with self.lock:
            self.bodies.append(body)
            self.spans.extend(spans)

    def wait(self, request_id: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The spans of one request's trace, once ``count`` of them arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                root = [
                    s for s in self.spans if s["attrs"].get("chatgate.request_id") == request_id
                ]
                trace = [s for s in self.spans if root and s["trace_id"] == root[0]["trace_id"]]
            if len(trace) >= count or time.monotonic() > deadline:
                assert len(trace) == count, trace
                return trace
            time.sleep(0.05)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Server]:
    tracing = {
        "otlp_endpoint": receiver.url,
        "service_name": "chatgate-test",
        "export_interval": 0.1,
        "headers": {"x-collector-auth": "collector-secret-0123456789"},
    }
    s = Server(tmp_path_factory.mktemp("traced"), {"tracing": tracing}).start()
    yield s
    s.stop()


def chat(
    srv: Server, key: str, text: str, stream: bool = False, headers: dict[str, str] | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"model": "gpt-5.1", "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return httpx.post(
        srv.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        timeout=30,
    )


def vendor_traceparents(srv: Server) -> list[str | None]:
    seen = httpx.get(sandbox_url(srv) + "/_sandbox/requests").json()
    return [r["headers"].get("traceparent") for r in seen]


def by_name(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def test_spans_request_attempt_upstream(traced: Server, receiver: Receiver) -> None:
    key = traced.create_key("traced")
    httpx.delete(sandbox_url(traced) + "/_sandbox/requests")
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
    marker = "narwhal-" + os.urandom(6).hex()
    r = chat(
        traced, key, f"hello {marker}", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
    )
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    row = traced.wait_usage_ids({rid})[rid]

    spans = receiver.wait(rid, 3)
    (req,) = by_name(spans, "chat")
    (attempt,) = by_name(spans, "chat.attempt")
    (call,) = by_name(spans, "upstream")
    # the client's trace continues: same trace id, the client's span is the parent
    assert req["trace_id"] == trace_id and req["parent"] == parent_id
    assert req["kind"] == SERVER and attempt["kind"] == INTERNAL and call["kind"] == CLIENT
    assert attempt["parent"] == req["span_id"] and call["parent"] == attempt["span_id"]
    assert req["start"] <= attempt["start"] <= call["start"] <= call["end"] <= req["end"]
    assert req["resource"]["service.name"] == "chatgate-test"
    a = req["attrs"]
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == "gpt-5.1"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["chatgate.deployment"] == "openai/gpt-5.1#0"
    assert a["http.response.status_code"] == 200 and a["chatgate.attempts"] == 1
    assert a["gen_ai.usage.input_tokens"] == row["prompt_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] == row["completion_tokens"] > 0
    assert round(a["chatgate.cost_usd"] * 1e6) == row["cost_micros"]
    assert attempt["attrs"]["chatgate.deployment"] == "openai/gpt-5.1#0"
    assert attempt["attrs"]["chatgate.attempt"] == 1
    assert call["attrs"]["http.response.status_code"] == 200
    assert call["attrs"]["server.address"] == "127.0.0.1"
    assert req["status"] != STATUS_ERROR
    # the vendor saw the upstream call's own context
    assert vendor_traceparents(traced) == [f"00-{trace_id}-{call['span_id']}-01"]

    with receiver.lock:
        exported = b"".join(receiver.bodies)
    for secret in (key, traced.master_key, "collector-secret-0123456789"):
        assert secret.encode() not in exported
    assert marker.encode() not in exported  # no prompt in any span


def test_stream_and_failure_spans(traced: Server, receiver: Receiver) -> None:
    key = traced.create_key("traced-2")
    httpx.delete(sandbox_url(traced) + "/_sandbox/requests")
    r = chat(traced, key, "Tell me a story", stream=True)  # no traceparent: a new trace
    assert r.status_code == 200
    spans = receiver.wait(r.headers["x-request-id"], 3)
    (req,) = by_name(spans, "chat")
    (call,) = by_name(spans, "upstream")
    assert req["parent"] == ""  # a root span
    assert req["attrs"]["chatgate.stream"] is True
    assert req["attrs"]["chatgate.ttft_ms"] > 0
    assert call["end"] <= req["end"]  # the upstream span lasts the whole stream
    (sent,) = vendor_traceparents(traced)
    assert sent is not None and sent.startswith(f"00-{req['trace_id']}-{call['span_id']}-")
    assert int(sent[-2:], 16) & 1  # sampled (a new trace also has W3C's "random" flag, 02)

    r = chat(traced, key, "break [sandbox:error=500]")
    assert r.status_code == 500
    spans = receiver.wait(r.headers["x-request-id"], 3)
    (req,) = by_name(spans, "chat")
    (attempt,) = by_name(spans, "chat.attempt")
    (call,) = by_name(spans, "upstream")
    assert req["status"] == attempt["status"] == call["status"] == STATUS_ERROR
    assert req["attrs"]["http.response.status_code"] == 500
    assert attempt["attrs"]["http.response.status_code"] == 500
    assert attempt["attrs"]["error.type"]
    assert call["attrs"]["http.response.status_code"] == 500


def test_without_tracing_a_valid_traceparent_passes_unchanged(tmp_path: Path) -> None:
    srv = Server(tmp_path).start()
    try:
        key = srv.create_key()
        httpx.delete(sandbox_url(srv) + "/_sandbox/requests")
        valid = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"
        for tp in (valid, "00-not-a-trace-01", f"00-{'0' * 32}-{os.urandom(8).hex()}-01", None):
            r = chat(srv, key, "hi", headers={"traceparent": tp} if tp else None)
            assert r.status_code == 200
        assert vendor_traceparents(srv) == [valid, None, None, None]
    finally:
        srv.stop()


def test_tracing_without_the_otel_extra_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shadow = tmp_path / "shadow" / "opentelemetry"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('opentelemetry is not installed')\n")
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shadow.parent), path])))
    srv = Server(tmp_path / "gw", {"tracing": {"otlp_endpoint": "http://127.0.0.1:4318"}})
    with pytest.raises(RuntimeError, match="exited early") as e:
        srv.start()
    assert srv.stop() == 2
    assert "pip install 'chatgate[otel]'" in str(e.value)
    assert "Traceback" not in str(e.value)
