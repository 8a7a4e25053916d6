"""Keys with limits against the real server: budgets never overspent under a concurrent
burst, refusals before any upstream call, costs that add up to the cent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support import Server, sandbox_url


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("budget")).start()
    yield s
    s.stop()


def _key(srv: Server, **policy: Any) -> tuple[str, str]:
    r = srv.admin("POST", "/admin/keys", json={"name": "limited", **policy})
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["id"]


async def _burst(url: str, key: str, n: int) -> list[tuple[int, str]]:
    body = {"model": "gpt-5.1", "max_tokens": 40}
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(i: int) -> tuple[int, str]:
            payload = {**body, "messages": [{"role": "user", "content": f"tell me about {i}"}]}
            headers = {"Authorization": f"Bearer {key}"}
            if i % 2:
                payload["stream"] = True
                async with client.stream(
                    "POST", "/v1/chat/completions", json=payload, headers=headers
                ) as r:
                    await r.aread()
                    return r.status_code, r.headers["x-request-id"]
            r = await client.post("/v1/chat/completions", json=payload, headers=headers)
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "insufficient_quota"
            return r.status_code, r.headers["x-request-id"]

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_budget_holds_under_300_concurrent_requests(srv: Server) -> None:
    # one answer here costs about 500 micro-USD: a 0.02 USD budget covers about 40
    key, key_id = _key(srv, budget_usd=0.02)
    vendor = sandbox_url(srv) + "/_sandbox/requests"
    httpx.delete(vendor)
    results = asyncio.run(_burst(srv.url, key, 300))
    ok = [rid for status, rid in results if status == 200]
    refused = [rid for status, rid in results if status == 429]
    assert len(ok) + len(refused) == 300
    assert 25 <= len(ok) <= 60, len(ok)
    # every refused request was refused before reaching the upstream
    assert len(httpx.get(vendor).json()) == len(ok)
    rows = srv.wait_usage_ids(set(ok) | set(refused))
    assert len(rows) == 300
    spent = sum(rows[r]["cost_micros"] for r in ok)
    assert all(rows[r]["cost_micros"] in (0, None) for r in refused)
    assert 0 < spent <= 20_000
    info = srv.admin("GET", f"/admin/keys/{key_id}").json()
    assert round(info["spent_usd"] * 1e6) == spent  # the key's spend = its rows, to the micro
    report = srv.admin("GET", f"/admin/usage?key={key_id}&group_by=key").json()["data"]
    assert report[0]["cost_usd"] == pytest.approx(spent / 1e6, abs=1e-9)


def test_cost_header_and_rate_limit_headers(srv: Server) -> None:
    key, _ = _key(srv, rpm=100, tpm=1_000_000)
    c = openai.OpenAI(api_key=key, base_url=srv.url + "/chat", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}]
    )
    h = raw.headers
    assert float(h["x-chatgate-cost-usd"]) > 0
    assert h["x-ratelimit-limit-requests"] == "100"
    assert h["x-ratelimit-remaining-requests"] == "99"
    assert h["x-ratelimit-limit-tokens"] == "1000000"
    assert h["x-ratelimit-reset-requests"].endswith(("s", "ms"))


def test_rpm_refusal_has_retry_after(srv: Server) -> None:
    key, _ = _key(srv, rpm=2)
    c = openai.OpenAI(api_key=key, base_url=srv.url + "/chat", max_retries=0)
    for _ in range(2):
        c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "rate_limit_exceeded"
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 60


def test_concurrency_cap_is_exact_end_to_end(srv: Server) -> None:
    key, _ = _key(srv, max_concurrency=3)

    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as client:

            async def one() -> int:
                r = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "gpt-5.1",
                        "messages": [{"role": "user", "content": "slow [sandbox:latency=400]"}],
                    },
                    headers={"Authorization": f"Bearer {key}"},
                )
                return r.status_code

            return await asyncio.gather(*(one() for _ in range(10)))

    statuses = asyncio.run(go())
    assert statuses.count(200) == 3 and statuses.count(429) == 7


def test_model_patterns_expiry_disable_and_rotate(srv: Server) -> None:
    key, key_id = _key(srv, models=["gpt-5*"])
    c = openai.OpenAI(api_key=key, base_url=srv.url + "/chat", max_retries=0)
    assert {m.id for m in c.models.list()} == {
        "gpt-5.1",
        "gpt-5.1-all",
        "gpt-5.1-thinking",
        "gpt-5.1-thinking-all",
        "gpt-5.2",
        "gpt-5.3",
        "gpt-5.3-codex",
        "gpt-5.4",
    }
    with pytest.raises(openai.PermissionDeniedError):
        c.chat.completions.create(model="gemini-3-pro", messages=[{"role": "user", "content": "x"}])
    r = srv.admin("PATCH", f"/admin/keys/{key_id}", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "api_key_disabled"
    srv.admin("PATCH", f"/admin/keys/{key_id}", json={"enabled": True})
    rotated = srv.admin("POST", f"/admin/keys/{key_id}/rotate").json()
    assert rotated["id"] == key_id and rotated["key"] != key
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "x"}])
    c2 = openai.OpenAI(api_key=rotated["key"], base_url=srv.url + "/chat", max_retries=0)
    assert c2.chat.completions.create(
        model="gpt-5.1", messages=[{"role": "user", "content": "x"}]
    ).choices
    srv.admin("PATCH", f"/admin/keys/{key_id}", json={"expires": 1})
    with pytest.raises(openai.AuthenticationError) as e:
        c2.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "api_key_expired"


def test_a_key_reads_its_own_usage_only(srv: Server) -> None:
    key, key_id = _key(srv)
    other, _ = _key(srv)
    for k in (key, other):
        openai.OpenAI(api_key=k, base_url=srv.url + "/v1", max_retries=0).chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}]
        )
    srv.wait_usage(1)
    import time

    time.sleep(0.3)
    r = httpx.get(srv.url + "/v1/usage?group_by=key", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert [row["key"] for row in r.json()["data"]] == [key_id]
    csv = httpx.get(
        srv.url + "/admin/usage?group_by=model,key&format=csv",
        headers={"Authorization": f"Bearer {srv.master_key}"},
    )
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("model,key,requests,errors")
    # admin routes refuse ordinary keys
    r = httpx.get(srv.url + "/admin/keys", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401


def test_secrets_never_in_admin_listings(srv: Server) -> None:
    key, _ = _key(srv)
    listing = srv.admin("GET", "/admin/keys").text
    assert key not in listing and key[10:] not in listing
    assert "key_hash" not in listing


def test_jwt_bearer_end_to_end(tmp_path: Path) -> None:
    import time

    import jwt

    secret = "e2e-jwt-secret-0123456789abcdef0123"
    s = Server(tmp_path, {"jwt": {"secret": secret, "audience": "chatgate"}}).start()
    try:
        now = int(time.time())
        token = jwt.encode(
            {
                "sub": "svc-reports",
                "aud": "chatgate",
                "exp": now + 60,
                "models": ["gemini-*"],
                "owner": "analytics",
                "rpm": 5,
            },
            secret,
            algorithm="HS256",
        )
        c = openai.OpenAI(api_key=token, base_url=s.url + "/chat", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "5"
        with pytest.raises(openai.PermissionDeniedError):
            c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "x"}])
        expired = jwt.encode({"sub": "x", "aud": "chatgate", "exp": now - 600}, secret)
        with pytest.raises(openai.AuthenticationError) as e:
            openai.OpenAI(api_key=expired, base_url=s.url + "/chat", max_retries=0).models.list()
        assert e.value.code == "expired_jwt"
        rows = s.wait_usage_ids({raw.headers["x-request-id"]})
        row = rows[raw.headers["x-request-id"]]
        assert row["key_id"] == "jwt:svc-reports" and row["owner"] == "analytics"
        assert row["cost_micros"] > 0
    finally:
        s.stop()


@pytest.mark.parametrize(
    ("model", "cut", "charged"),
    [("gpt-5.1", 1, False), ("gpt-5.1", 8, True), ("claude-sonnet-4-6", 6, True)],
)
def test_cut_streams_are_charged_only_for_what_happened(
    srv: Server, model: str, cut: int, charged: bool
) -> None:
    key, _ = _key(srv, budget_usd=5)
    with httpx.stream(
        "POST",
        srv.url + "/v1/chat/completions",
        json={"model": model, "stream": True,
              "messages": [{"role": "user", "content": f"story [sandbox:cut={cut}]"}]},
        headers={"Authorization": f"Bearer {key}"},
    ) as r:  # fmt: skip
        rid = r.headers["x-request-id"]
        body = b"".join(r.iter_bytes())
    assert b'"error"' in body and body.endswith(b"data: [DONE]\n\n")  # error event, then end
    row = srv.wait_usage_ids({rid})[rid]
    assert row["error_type"] is not None
    if not charged:
        assert row["cost_micros"] == 0  # nothing but the role chunk reached the client
    else:
        assert row["cost_micros"] > 0
        assert row["completion_tokens"] > 0
