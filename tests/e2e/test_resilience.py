"""Routing and resilience under injected faults: two emulated vendor regions (two sandbox
servers), scripted per request through their /_sandbox/faults queues."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support import Server, ThreadedSandbox


@pytest.fixture(scope="module")
def regions() -> Iterator[tuple[ThreadedSandbox, ThreadedSandbox]]:
    a, b = ThreadedSandbox(), ThreadedSandbox()
    yield a, b
    a.close()
    b.close()


def _config(a: ThreadedSandbox, b: ThreadedSandbox, routing: dict[str, Any]) -> dict[str, Any]:
    fast = {"connect": 1, "first_byte": 0.5, "idle": 2, "total": 20}
    return {
        "sandbox": False,
        "providers": {
            "a": {
                "protocol": "openai",
                "base_url": a.openai_base_url,
                "api_key": "sk-a",
                "timeouts": fast,
            },
            "b": {
                "protocol": "openai",
                "base_url": b.openai_base_url,
                "api_key": "sk-b",
                "timeouts": fast,
            },
        },
        "models": {
            "m": [
                {"provider": "a", "model": "gpt-5.1", "name": "a", **routing.get("a", {})},
                {"provider": "b", "model": "gpt-5.1", "name": "b", **routing.get("b", {})},
            ],
            "fb": [{"provider": "b", "model": "gpt-5.2", "name": "fb"}],
        },
        "routing": {"m": {"fallbacks": ["fb"]}},
        "retry": {"max_attempts": 4, "backoff_base": 0.05, "backoff_cap": 0.2},
        "circuit": {"failures": 5, "cooldown": 1.5},
    }


def _fault(sb: ThreadedSandbox, **spec: Any) -> None:
    r = httpx.post(sb.base_url + "/_sandbox/faults", json=spec)
    assert r.status_code == 200, r.text


def _reset(*sbs: ThreadedSandbox) -> None:
    for sb in sbs:
        httpx.delete(sb.base_url + "/_sandbox/faults")
        httpx.delete(sb.base_url + "/_sandbox/requests")


def _seen(sb: ThreadedSandbox) -> list[dict[str, Any]]:
    return sb.requests()


@pytest.fixture()
def gateway(
    regions: tuple[ThreadedSandbox, ThreadedSandbox],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[Server, str]]:
    a, b = regions
    _reset(a, b)
    extra = _config(a, b, getattr(request, "param", {}))
    srv = Server(tmp_path_factory.mktemp("res"), extra).start()
    key = srv.create_key("res")
    yield srv, key
    srv.stop()
    _reset(a, b)


def _client(srv: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=srv.url + "/v1", max_retries=0, timeout=30)


HI = [{"role": "user", "content": "hi"}]


def test_429_cools_a_deployment_and_nobody_waits(
    regions: tuple[ThreadedSandbox, ThreadedSandbox], gateway: tuple[Server, str]
) -> None:
    a, _ = regions
    srv, key = gateway
    _fault(a, model="gpt-5.1", error=429, retry_after=2, count=-1)

    async def go() -> list[tuple[int, float, str]]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:

            async def one() -> tuple[int, float, str]:
                t = time.monotonic()
                r = await c.post(
                    "/v1/chat/completions",
                    json={"model": "m", "messages": HI},
                    headers={"Authorization": f"Bearer {key}"},
                )
                return r.status_code, time.monotonic() - t, r.headers.get("x-chatgate-provider", "")

            return await asyncio.gather(*(one() for _ in range(100)))

    results = asyncio.run(go())
    assert [s for s, _, _ in results] == [200] * 100
    assert max(d for _, d, _ in results) < 1.5  # nobody waited out the 2 s retry-after
    assert {p for _, _, p in results} == {"b"}
    seen_a = [r["received"] for r in _seen(a)]
    assert seen_a, "the first requests met the 429"
    assert max(seen_a) - min(seen_a) < 1.0  # then A got nothing during its cooldown
    state = {d["deployment"]: d for d in srv.admin("GET", "/admin/deployments").json()["data"]}
    assert state["a"]["state"] == "cooling" and state["a"]["cooling_for_s"] > 0.5


@pytest.mark.parametrize("gateway", [{"a": {"priority": 0}, "b": {"priority": 1}}], indirect=True)
def test_five_500s_open_the_circuit_and_a_probe_closes_it(
    regions: tuple[ThreadedSandbox, ThreadedSandbox], gateway: tuple[Server, str]
) -> None:
    a, _ = regions
    srv, key = gateway
    c = _client(srv, key)
    _fault(a, model="gpt-5.1", error=500, count=5)
    for _ in range(5):
        raw = c.chat.completions.with_raw_response.create(model="m", messages=HI)
        assert raw.headers["x-chatgate-provider"] == "b"
        assert raw.headers["x-chatgate-attempts"] == "2"
    state = {d["deployment"]: d for d in srv.admin("GET", "/admin/deployments").json()["data"]}
    assert state["a"]["state"] == "open" and state["a"]["consecutive_failures"] == 5
    for _ in range(3):  # open: traffic goes straight to b
        raw = c.chat.completions.with_raw_response.create(model="m", messages=HI)
        assert raw.headers["x-chatgate-attempts"] == "1"
    assert len(_seen(a)) == 5
    time.sleep(1.6)  # cooldown over: one probe (the fault queue is empty: it succeeds)
    raw = c.chat.completions.with_raw_response.create(model="m", messages=HI)
    assert raw.headers["x-chatgate-provider"] == "a"
    state = {d["deployment"]: d for d in srv.admin("GET", "/admin/deployments").json()["data"]}
    assert state["a"]["state"] == "closed" and len(_seen(a)) == 6


@pytest.mark.parametrize("gateway", [{"a": {"priority": 0}, "b": {"priority": 1}}], indirect=True)
def test_hang_past_first_byte_timeout_fails_over_in_time(
    regions: tuple[ThreadedSandbox, ThreadedSandbox], gateway: tuple[Server, str]
) -> None:
    a, _ = regions
    srv, key = gateway
    c = _client(srv, key)
    c.chat.completions.create(model="m", messages=HI)  # warm connections
    _fault(a, model="gpt-5.1", hang=True, count=1)
    t = time.monotonic()
    raw = c.chat.completions.with_raw_response.create(model="m", messages=HI)
    elapsed = time.monotonic() - t
    assert raw.headers["x-chatgate-provider"] == "b"
    assert 0.5 <= elapsed < 0.5 + 0.1  # the first-byte timeout plus 100 ms


@pytest.mark.parametrize("gateway", [{"a": {"priority": 0}, "b": {"priority": 1}}], indirect=True)
def test_stream_cut_before_first_chunk_fails_over_invisibly(
    regions: tuple[ThreadedSandbox, ThreadedSandbox], gateway: tuple[Server, str]
) -> None:
    a, _ = regions
    srv, key = gateway
    _fault(a, model="gpt-5.1", cut=0, count=1)
    stream = _client(srv, key).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "Tell me a story"}], stream=True
    )
    assert stream.headers["x-chatgate-provider"] == "b"
    chunks = list(stream.parse())
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks)


@pytest.mark.parametrize("gateway", [{"a": {"priority": 0}, "b": {"priority": 1}}], indirect=True)
def test_stream_cut_after_chunks_ends_with_error_and_done(
    regions: tuple[ThreadedSandbox, ThreadedSandbox], gateway: tuple[Server, str]
) -> None:
    a, _ = regions
    srv, key = gateway
    _fault(a, model="gpt-5.1", cut=4, count=1)
    with httpx.stream(
        "POST",
        srv.url + "/v1/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "story"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ) as r:
        assert r.status_code == 200 and r.headers["x-chatgate-provider"] == "a"
        raw = b"".join(r.iter_bytes()).decode()
    events = raw.strip().split("\n\n")
    assert events[-1] == "data: [DONE]" and '"error"' in events[-2]
    _fault(a, model="gpt-5.1", cut=4, count=1)
    stream = _client(srv, key).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "story"}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_client_disconnect_cancels_the_upstream_request_at_once(
    regions: tuple[ThreadedSandbox, ThreadedSandbox], gateway: tuple[Server, str]
) -> None:
    a, b = regions
    srv, key = gateway
    with httpx.stream(
        "POST",
        srv.url + "/v1/chat/completions",
        json={
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": "long [sandbox:chunk_delay=300]"}],
        },
        headers={"Authorization": f"Bearer {key}"},
    ) as r:
        first = next(r.iter_bytes())
        assert r.status_code == 200, first
    closed = time.time()
    deadline = time.monotonic() + 2
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = [e for sb in (a, b) for e in _seen(sb) if "disconnected" in e]
        if seen:
            break
        time.sleep(0.01)
    assert seen, "the emulator never saw the gateway drop the upstream request"
    assert seen[0]["disconnected"] - closed < 0.1
    rows = srv.wait_usage(1)
    assert rows[-1]["error_type"] == "client_disconnected" and rows[-1]["status"] == 499


def test_fallback_model_answers_when_every_deployment_is_down(
    regions: tuple[ThreadedSandbox, ThreadedSandbox], gateway: tuple[Server, str]
) -> None:
    a, b = regions
    srv, key = gateway
    for sb in (a, b):
        _fault(sb, model="gpt-5.1", error=503, count=-1)
    raw = _client(srv, key).chat.completions.with_raw_response.create(model="m", messages=HI)
    r = raw.parse()
    assert r.model == "fb"  # which model answered
    assert raw.headers["x-chatgate-attempts"] == "3"
    rows = srv.wait_usage_ids({r.id})
    assert rows[r.id]["model"] == "fb" and rows[r.id]["upstream_model"] == "gpt-5.2"


def test_client_listed_fallbacks(
    regions: tuple[ThreadedSandbox, ThreadedSandbox], gateway: tuple[Server, str]
) -> None:
    _, b = regions
    srv, key = gateway
    _fault(b, model="gpt-5.2", error=500, count=-1)  # "fb" is down
    c = _client(srv, key)
    r = c.chat.completions.create(model="fb", messages=HI, extra_body={"models": ["m"]})
    assert r.model == "m"


def test_no_request_is_billed_twice_under_a_mixed_fault_run(
    regions: tuple[ThreadedSandbox, ThreadedSandbox], gateway: tuple[Server, str]
) -> None:
    a, b = regions
    srv, key = gateway
    rnd = random.Random(5)
    for sb in (a, b):
        _fault(sb, model="gpt-5.1", error=503, count=150)
        _fault(sb, model="gpt-5.1", cut=3, count=60)

    attempts: list[int] = []

    async def go() -> dict[str, int]:
        out: dict[str, int] = {}
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
            sem = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                body: dict[str, Any] = {
                    "model": "m",
                    "messages": [{"role": "user", "content": f"q{i}"}],
                }
                if rnd.random() < 0.5:
                    body["stream"] = True
                async with sem:
                    try:
                        r = await c.post(
                            "/v1/chat/completions",
                            json=body,
                            headers={"Authorization": f"Bearer {key}"},
                        )
                    except httpx.HTTPError:
                        return
                out[r.headers["x-request-id"]] = r.status_code
                attempts.append(int(r.headers.get("x-chatgate-attempts", "0")))

            await asyncio.gather(*(one(i) for i in range(1000)))
        return out

    seen = asyncio.run(go())
    assert len(seen) == 1000
    rows = srv.wait_usage_ids(set(seen), timeout=30)
    assert len(rows) == 1000  # one row per client request, never one per attempt
    for rid, status in seen.items():
        assert rows[rid]["status"] == status
    assert sum(attempts) > 1000  # retries happened...
    billed = [r for r in rows.values() if r["cost_micros"]]
    assert len(billed) <= sum(1 for s in seen.values() if s == 200)  # ...but one bill each


@pytest.mark.parametrize(
    "gateway", [{"a": {"priority": 0, "rpm": 3}, "b": {"priority": 1}}], indirect=True
)
def test_a_deployment_at_its_own_rpm_ceiling_is_skipped(
    regions: tuple[ThreadedSandbox, ThreadedSandbox], gateway: tuple[Server, str]
) -> None:
    srv, key = gateway
    c = _client(srv, key)
    served = [
        c.chat.completions.with_raw_response.create(model="m", messages=HI).headers[
            "x-chatgate-provider"
        ]
        for _ in range(8)
    ]
    assert served == ["a"] * 3 + ["b"] * 5  # a's vendor account allows 3 a minute
