"""What observability adds to one chat request, measured on the real objects: the
Observer's begin + end (metrics counters, the access line through logging into a file, and
optionally OpenTelemetry spans), against building the request's usage row as a yardstick.

    .venv/bin/python bench/observe_overhead.py [--n 200000] [--tracing [--sample-ratio R]]

Prints microseconds per request for each part (best of 5 runs of n).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from chatgate.api.chat import Record
from chatgate.config import from_dict
from chatgate.observe import Observer
from chatgate.observe.logs import ACCESS_LOGGER, configure
from chatgate.store import UsageRow

SCOPE = {
    "type": "http",
    "path": "/v1/chat/completions",
    "headers": [
        (b"host", b"127.0.0.1:8080"),
        (b"user-agent", b"OpenAI/Python 1.99.0"),
        (b"accept", b"application/json"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer sk-cg-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
        (b"x-stainless-lang", b"python"),
        (b"x-stainless-retry-count", b"0"),
        (b"content-length", b"312"),
    ],
}


def make_row() -> UsageRow:
    return UsageRow(
        request_id="chatcmpl-" + "ab" * 12,
        created=time.time(),
        key_id="key_0123456789abcdef",
        model="gpt-5.1",
        provider="openai",
        upstream_model="gpt-5.1",
        stream=False,
        status=200,
        error_type=None,
        prompt_tokens=25,
        completion_tokens=180,
        total_tokens=205,
        cached_tokens=0,
        reasoning_tokens=0,
        latency_ms=1.234,
        ttft_ms=None,
        upstream_request_id="req_abc",
        owner=None,
        cost_micros=1831,
    )


def make_record() -> Record:
    rec = Record()
    rec.key_id, rec.model, rec.requested = "key_0123456789abcdef", "gpt-5.1", "gpt-5.1"
    rec.provider, rec.deployment, rec.upstream_model = "openai", "openai/gpt-5.1#0", "gpt-5.1"
    rec.status, rec.attempts = 200, 1
    return rec


def best(fn: Callable[[], None], n: int) -> float:
    """Microseconds per call, best of five runs."""
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return min(runs)


def observer(raw: dict[str, Any]) -> Observer:
    cfg = from_dict(raw, {})
    configure(cfg)
    access = logging.getLogger(ACCESS_LOGGER)
    for h in access.handlers:  # the access lines into a file, as a real deployment's
        assert isinstance(h, logging.StreamHandler)
        h.setStream(open(os.devnull, "w"))  # noqa: SIM115
    return Observer(cfg)


SINK = """
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _sink() -> tuple[subprocess.Popen[str], int]:
    """An OTLP collector stand-in in a process of its own (its CPU is not ours)."""
    proc = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--tracing", action="store_true", help="also with OpenTelemetry spans")
    ap.add_argument("--sample-ratio", type=float, default=1.0, help="tracing.sample_ratio")
    # inside a running event loop, as in the gateway (the access lines are batched there)
    asyncio.run(measure(ap.parse_args()))


async def measure(args: argparse.Namespace) -> None:
    row, rec = make_row(), make_record()

    def cycle(obs: Observer) -> Callable[[], None]:
        def one() -> None:
            obs.end(row, rec, obs.begin(SCOPE, rec))

        return one

    results = {
        "usage row (yardstick)": best(make_row, args.n),
        "metrics only (access_log: false)": best(cycle(observer({"access_log": False})), args.n),
        "metrics + access line (default)": best(cycle(observer({})), args.n),
    }
    quiet = observer({"log_level": "warning"})
    results["metrics, access line below log_level"] = best(cycle(quiet), args.n)
    if args.tracing:
        # the request span only (attempt and upstream spans come on top), exported in
        # batches to a local sink: the exporter's thread takes its share of the core too
        sink, port = _sink()
        traced = {"otlp_endpoint": f"http://127.0.0.1:{port}", "sample_ratio": args.sample_ratio}
        obs = observer({"tracing": traced})
        assert obs.tracer is not None
        name = f"+ request span (tracing, sample_ratio {args.sample_ratio:g})"
        results[name] = best(cycle(obs), args.n // 4)
        obs.tracer.shutdown()
        sink.terminate()
    for name, us in results.items():
        print(f"{name:42s} {us:6.2f} us/request")


if __name__ == "__main__":
    main()
