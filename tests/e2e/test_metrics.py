"""GET /metrics against the real server: it parses with Prometheus' own text parser, only the
master key or the scrape token may read it, and after a mixed load (four models over the
openai, openai_responses, anthropic and gemini protocols, streams and not, upstream errors,
mid-stream errors, 4xx validation errors, rate-limit refusals, a fallback) its counters agree
exactly with the usage table."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from chatgate.config import load
from tests.support import Server, sandbox_url

SCRAPE_TOKEN = "scrape-token-0123456789abcdef"
MODELS = ["gpt-5.1", "gpt-5.3-codex", "claude-sonnet-4-6", "gemini-2.5-flash"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(
        tmp_path_factory.mktemp("metrics"),
        {
            "metrics": {"token": SCRAPE_TOKEN},
            "retry": {"max_attempts": 2, "backoff_base": 0.01, "backoff_cap": 0.05},
            "routing": {"gpt-5.2": {"fallbacks": ["gpt-5.1"]}},
        },
    ).start()
    yield s
    s.stop()


def scrape(srv: Server, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(srv.url + "/metrics", headers=headers, timeout=10)


def parse(text: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def total(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


def _chat(model: str, text: str, stream: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 60,
        **extra,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


async def _load(srv: Server, key: str, limited: str) -> list[tuple[int, str, int, str]]:
    """(status, request id, attempts, requested model) of each request of a mixed load."""
    cases: list[tuple[str | None, bytes | dict[str, Any], bool]] = []
    for m in MODELS:
        cases += [
            (key, _chat(m, f"Say hello to {m}"), False),
            (key, _chat(m, f"Tell a story about {m}", stream=True), True),
            (key, _chat(m, "fail please [sandbox:error=500]"), False),
            (key, _chat(m, "Tell a long story, cut [sandbox:cut=3]", stream=True), True),
        ]
    cases += [
        (key, _chat("claude-sonnet-4-6", "too hot", temperature=1.7), False),  # 400
        (key, _chat("no-such-model-7f3a", "who am I"), False),  # 404, model "unknown"
        (key, b'{"model": "gpt-5.1", "messages": [', False),  # malformed JSON: 400
        (None, _chat("gpt-5.1", "no key"), False),  # 401
        (key, _chat("gpt-5.2", "fall back to gpt-5.1"), False),  # 503 -> fallback answers
    ]
    cases += [(limited, _chat("gpt-5.1", f"limited {i}"), False) for i in range(5)]  # rpm 3

    async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:

        async def one(auth: str | None, body: bytes | dict[str, Any], stream: bool) -> Any:
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["Authorization"] = f"Bearer {auth}"
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            model = "" if isinstance(body, bytes) else body["model"]
            async with client.stream(
                "POST", "/v1/chat/completions", content=data, headers=headers
            ) as r:
                await r.aread()
                attempts = int(r.headers.get("x-chatgate-attempts", "0"))
                return r.status_code, r.headers["x-request-id"], attempts, model

        # the limited key's five requests go together: exactly three fit its rpm
        return list(await asyncio.gather(*(one(*c) for c in cases)))


def _label(model: str | None, known: set[str]) -> str:
    if model is None:
        return "none"
    return model if model in known else "unknown"


def test_metrics_agree_with_the_usage_table_after_a_mixed_load(srv: Server) -> None:
    key = srv.create_key("mixed")
    r = srv.admin("POST", "/admin/keys", json={"name": "rpm3", "rpm": 3})
    limited = r.json()["key"]
    # the first call to gpt-5.2 fails upstream; its fallback gpt-5.1 answers
    faults = {"model": "gpt-5.2", "error": 503, "count": 1}
    assert httpx.post(sandbox_url(srv) + "/_sandbox/faults", json=faults).status_code == 200

    results = asyncio.run(_load(srv, key, limited))
    statuses = Counter(status for status, *_ in results)
    assert statuses[429] == 2 and statuses[400] == 2 and statuses[404] == 1
    assert statuses[401] == 1 and statuses[500] >= 4, statuses
    ids = {rid for _, rid, _, _ in results}
    assert len(srv.wait_usage_ids(ids)) == len(ids)
    rows = srv.usage_rows()
    assert len(rows) == len(results)  # (nothing else ran on this gateway)

    resp = scrape(srv, srv.master_key)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=")
    m = parse(resp.text)
    known = set(load(srv.config_path, env={}).models)

    # requests by model, provider, status and stream: exactly the rows
    want = Counter(
        (
            _label(r["model"], known),
            r["provider"] or "none",
            str(r["status"]),
            str(bool(r["stream"])).lower(),
        )
        for r in rows
    )
    got: Counter[tuple[str, ...]] = Counter()
    for s in m["chatgate_requests_total"]:
        lb = s.labels
        got[(lb["model"], lb["provider"], lb["status"], lb["stream"])] += int(s.value)
    assert got == want
    assert ("unknown", "none", "404", "false") in got  # the made-up name is not a label
    assert "no-such-model-7f3a" not in resp.text
    assert ("none", "none", "400", "false") in got  # the malformed body named no model

    # tokens and cost: the sums of the rows, to the token and the micro-dollar
    prompt = sum(r["prompt_tokens"] or 0 for r in rows)
    completion = sum(r["completion_tokens"] or 0 for r in rows)
    assert prompt > 0 and completion > 0
    assert total(m, "chatgate_tokens_total", direction="prompt") == prompt
    assert total(m, "chatgate_tokens_total", direction="completion") == completion
    micros = sum(r["cost_micros"] or 0 for r in rows)
    assert micros > 0
    assert round(total(m, "chatgate_cost_usd_total") * 1e6) == micros
    for model in MODELS:  # per model too
        mine = [r for r in rows if r["model"] == model]
        assert total(m, "chatgate_tokens_total", model=model, direction="prompt") == sum(
            r["prompt_tokens"] or 0 for r in mine
        )
        assert round(total(m, "chatgate_cost_usd_total", model=model) * 1e6) == sum(
            r["cost_micros"] or 0 for r in mine
        )

    # latency and time to first token histograms: one observation per row (with a ttft)
    assert total(m, "chatgate_request_duration_seconds_count") == len(rows)
    assert total(m, "chatgate_request_duration_seconds_bucket", le="+Inf") == len(rows)
    assert total(m, "chatgate_request_duration_seconds_sum") == pytest.approx(
        sum(r["latency_ms"] for r in rows) / 1000, rel=1e-6
    )
    with_ttft = [r for r in rows if r["ttft_ms"] is not None]
    assert with_ttft
    assert total(m, "chatgate_time_to_first_token_seconds_count") == len(with_ttft)
    buckets = [s for s in m["chatgate_request_duration_seconds_bucket"]]
    assert {s.labels["le"] for s in buckets} >= {"0.1", "1.0", "60.0", "+Inf"}

    # attempts, retries, fallbacks and refusals
    attempts = sum(a for _, _, a, _ in results)
    assert total(m, "chatgate_upstream_attempts_total") == attempts
    retried = Counter()
    for _, _, a, model in results:
        if a > 1:
            retried[model] += a - 1
    for model, n in retried.items():
        assert total(m, "chatgate_retries_total", model=model) == n
    assert total(m, "chatgate_retries_total") == sum(retried.values())
    assert total(m, "chatgate_upstream_attempts_total", model="gpt-5.2", status="503") == 1
    assert total(m, "chatgate_fallbacks_total", model="gpt-5.2", fallback="gpt-5.1") == 1
    refused = [r for r in rows if r["status"] == 429]
    assert all(r["error_type"] == "rate_limit_exceeded" for r in refused)
    assert total(m, "chatgate_limit_refusals_total", scope="key", reason="rpm") == len(refused)

    # state read at scrape time
    deployments = {(s.labels["model"], s.labels["deployment"]) for s in m["chatgate_circuit_state"]}
    assert {model for model, _ in deployments} == known  # every catalog model's deployment
    assert all(s.value == 0 for s in m["chatgate_circuit_state"])  # all closed
    assert total(m, "chatgate_in_flight_requests") == 0
    assert total(m, "chatgate_in_flight_streams") == 0
    assert total(m, "chatgate_usage_writer_pending") == 0
    assert total(m, "chatgate_usage_rows_written_total") == len(rows)
    assert total(m, "chatgate_build_info") == 1

    # no secret, no key id: bounded labels only
    for secret in (key, limited, srv.master_key, SCRAPE_TOKEN):
        assert secret not in resp.text
    key_ids = [k["id"] for k in srv.admin("GET", "/admin/keys").json()["data"]]
    assert len(key_ids) == 2
    assert not any(k in resp.text for k in key_ids)


def test_in_flight_gauges_count_open_streams(srv: Server) -> None:
    key = srv.create_key("slow")
    body = _chat("gpt-5.1", "Tell me a long story [sandbox:chunk_delay=300]", stream=True)

    async def go() -> tuple[float, float, float]:
        async with (
            httpx.AsyncClient(base_url=srv.url, timeout=60) as client,
            client.stream(
                "POST",
                "/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            ) as r,
        ):
            # the stream has started; the iterator stays referenced (an abandoned one is
            # finalized by a task that closes the connection, racing the scrape below)
            chunks = r.aiter_bytes()
            await chunks.__anext__()
            m = parse(
                (
                    await client.get(
                        "/metrics", headers={"Authorization": f"Bearer {srv.master_key}"}
                    )
                ).text
            )
            await chunks.aclose()
            return (
                total(m, "chatgate_in_flight_requests"),
                total(m, "chatgate_in_flight_streams"),
                total(m, "chatgate_deployment_in_flight", model="gpt-5.1"),
            )

    assert asyncio.run(go()) == (1, 1, 1)
    deadline = time.monotonic() + 5  # the gateway notices the client left, and ends it
    while True:
        m = parse(scrape(srv, SCRAPE_TOKEN).text)
        if total(m, "chatgate_in_flight_streams") == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert total(m, "chatgate_in_flight_streams") == 0
    assert total(m, "chatgate_in_flight_requests") == 0


def test_metrics_need_the_master_key_or_the_scrape_token(srv: Server) -> None:
    key = srv.create_key("not-for-metrics")
    assert scrape(srv).status_code == 401
    assert scrape(srv, key).status_code == 401  # a chat key is not enough
    assert scrape(srv, "wrong-token-0123456789").status_code == 401
    r = scrape(srv, SCRAPE_TOKEN)
    assert r.status_code == 200
    assert "chatgate_requests" in r.text
    err = scrape(srv).json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert httpx.post(srv.url + "/metrics").status_code == 405


def test_public_and_disabled_metrics(tmp_path: Path) -> None:
    public = Server(tmp_path / "public", {"metrics": {"public": True}}).start()
    try:
        r = scrape(public)
        assert r.status_code == 200
        parse(r.text)
    finally:
        public.stop()
    off = Server(tmp_path / "off", {"metrics": {"enabled": False}}).start()
    try:
        assert scrape(off, off.master_key).status_code == 404
    finally:
        off.stop()
