"""The dashboard's JSON API (/admin/dashboard/*) and its static front end (/ui) against the
real server: the master key is required, the figures agree with the usage rows, the request
log pages newest first with a keyset cursor, and no page or answer ever carries a key's
secret after the one that created (or rotated) it. The queries themselves are checked on
both engines: day buckets (the rollup) agree with hour buckets (the rows)."""

from __future__ import annotations

import gzip
import math
import re
import time
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatgate.store import Store, UsageRow
from chatgate.store import dashboard as dq
from chatgate.store.migrate import upgrade
from chatgate.store.tables import LATENCY_BOUNDS_MS, LATENCY_COLUMNS
from tests.support import Server
from tests.unit.store_backends import row, run, store_url

__all__ = ["store_url"]  # the fixture, parametrized over SQLite and PostgreSQL

ENDPOINTS = (
    "/admin/dashboard/meta",
    "/admin/dashboard/overview",
    "/admin/dashboard/overview?range=30d",
    "/admin/dashboard/keys",
    "/admin/dashboard/deployments",
    "/admin/dashboard/requests",
    "/admin/dashboard/requests/chatcmpl-nope",
)


def _chat(
    srv: Server, key: str, model: str, text: str, stream: bool = False, **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    body.update(extra)
    return httpx.post(
        srv.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


class Traffic:
    """A gateway with two keys and a mixed load: answers, streams, upstream errors, a
    refused parameter, a bad key."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        a = srv.admin("POST", "/admin/keys", json={"name": "alpha", "owner": "team-a"})
        b = srv.admin("POST", "/admin/keys", json={"name": "beta", "rpm": 100, "budget_usd": 5})
        assert a.status_code == b.status_code == 201
        self.alpha, self.alpha_id = a.json()["key"], a.json()["id"]
        self.beta, self.beta_id = b.json()["key"], b.json()["id"]
        plan = [
            (self.alpha, "gpt-5.1", "hello one", False, 200),
            (self.alpha, "gpt-5.1", "hello two", False, 200),
            (self.alpha, "gpt-5.1", "hello three", True, 200),
            (self.alpha, "claude-sonnet-4-6", "hi claude", True, 200),
            (self.alpha, "gpt-5.1", "fail [sandbox:error=500]", False, 500),
            (self.beta, "gemini-2.5-flash", "hi gemini", False, 200),
            (self.beta, "gemini-2.5-flash", "hi gemini again", True, 200),
            (self.beta, "claude-sonnet-4-6", "too hot", False, 400),
            ("sk-cg-not-a-key", "gpt-5.1", "who am i", False, 401),
        ]
        self.ids: list[str] = []
        for key, model, text, stream, status in plan:
            extra = {"temperature": 9} if status == 400 else {}
            r = _chat(srv, key, model, text, stream, **extra)
            assert r.status_code == status, r.text
            self.ids.append(r.headers["x-request-id"])
        got = srv.wait_usage_ids(set(self.ids))
        assert len(got) == len(plan)
        self.rows = sorted(got.values(), key=lambda r: r["created"])

    def get(self, path: str, key: str | None = None) -> httpx.Response:
        token = self.srv.master_key if key is None else key
        return httpx.get(
            self.srv.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    srv = Server(tmp_path_factory.mktemp("dash")).start()
    try:
        yield Traffic(srv)
    finally:
        srv.stop()


# --- access ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_dashboard_endpoint_needs_the_master_key(traffic: Traffic, path: str) -> None:
    url = traffic.srv.url + path
    r = httpx.get(url, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"
    for wrong in ("mk-wrong", traffic.alpha):  # an API key is not an admin key
        r = httpx.get(url, headers={"Authorization": f"Bearer {wrong}"}, timeout=10)
        assert r.status_code == 401, path
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["code"] == "invalid_api_key"
    r = traffic.get(path)
    if path.endswith("nope"):
        assert r.status_code == 404 and r.json()["error"]["param"] == "id"
    else:
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"  # admin data stays out of caches


def test_dashboard_api_is_read_only_and_unknown_routes_are_404(traffic: Traffic) -> None:
    auth = {"Authorization": f"Bearer {traffic.srv.master_key}"}
    r = httpx.post(traffic.srv.url + "/admin/dashboard/overview", headers=auth, timeout=10)
    assert r.status_code == 405
    r = traffic.get("/admin/dashboard/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"


# --- the static front end -----------------------------------------------------------------


def test_the_front_end_is_served_with_strict_headers(traffic: Traffic) -> None:
    url = traffic.srv.url
    r = httpx.get(url + "/ui", timeout=10)
    assert r.status_code == 308 and r.headers["location"] == "/ui/"
    page = httpx.get(url + "/ui/", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-cache"
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
    # the page names its assets with their content hash: those are cached for good
    assets = re.findall(r'"(/ui/[\w.]+)\?v=([0-9a-f]{16})"', page.text)
    assert {a for a, _ in assets} == {"/ui/app.js", "/ui/app.css", "/ui/favicon.svg"}
    types = {
        "/ui/app.js": "text/javascript; charset=utf-8",
        "/ui/app.css": "text/css; charset=utf-8",
        "/ui/favicon.svg": "image/svg+xml",
    }
    for path, version in assets:
        r = httpx.get(f"{url}{path}?v={version}", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"] == types[path]
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["content-security-policy"] == csp
        etag = r.headers["etag"]
        # revalidation: the same ETag is a 304 without a body
        again = httpx.get(url + path, headers={"If-None-Match": etag}, timeout=10)
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
    # compressed when asked for, and the same bytes once inflated
    plain = httpx.get(url + "/ui/app.js", headers={"Accept-Encoding": "identity"}, timeout=10)
    with httpx.Client() as client:
        req = client.build_request("GET", url + "/ui/app.js", headers={"Accept-Encoding": "gzip"})
        packed = client.send(req, stream=True)
        raw = b"".join(packed.iter_raw())
    assert packed.headers["content-encoding"] == "gzip"
    assert len(raw) < len(plain.content) and gzip.decompress(raw) == plain.content
    assert httpx.get(url + "/ui/nothing.js", timeout=10).status_code == 404
    assert httpx.get(url + "/ui/../pyproject.toml", timeout=10).status_code == 404
    assert httpx.post(url + "/ui/", timeout=10).status_code == 405


# --- what the pages show ------------------------------------------------------------------


def _bin(ms: float) -> int:
    return bisect_right(LATENCY_BOUNDS_MS, ms)


def _histogram_agrees(estimate: float | None, values: list[float], q: float) -> None:
    """A percentile from the rollup's histogram lies in the histogram bucket of the value
    it estimates (the one at its rank)."""
    ranked = sorted(values)
    assert estimate is not None
    assert _bin(estimate) == _bin(ranked[int(q * (len(ranked) - 1))]), (estimate, q)


def test_overview_agrees_with_the_usage_rows(traffic: Traffic) -> None:
    rows = traffic.rows
    ok = [r["latency_ms"] for r in rows if r["status"] < 400]
    expected = {
        "requests": len(rows),
        "errors": sum(r["status"] >= 400 for r in rows),
        "prompt_tokens": sum(r["prompt_tokens"] or 0 for r in rows),
        "completion_tokens": sum(r["completion_tokens"] or 0 for r in rows),
        "cost_usd": round(sum(r["cost_micros"] or 0 for r in rows) / 1e6, 6),
    }
    assert expected["errors"] == 3 and expected["cost_usd"] > 0
    per_model: dict[str, list[int]] = {}
    for r in rows:  # rows refused before their body was read have no model
        acc = per_model.setdefault(r["model"] or "(none)", [0, 0])
        acc[0] += 1
        acc[1] += r["status"] >= 400
    for rng in ("24h", "7d", "30d", "90d"):  # hour buckets, day buckets: the rollups
        d = traffic.get("/admin/dashboard/overview?range=" + rng).json()
        t = d["totals"]
        assert {k: t[k] for k in expected} == expected, rng
        assert t["error_rate"] == round(3 / len(rows), 4)
        # p50/p95 from the rollup's latency histogram, exact to its bucket
        assert d["latency_source"] == "histogram"
        _histogram_agrees(t["p50_ms"], ok, 0.5)
        _histogram_agrees(t["p95_ms"], ok, 0.95)
        s = d["series"]
        assert d["bucket"] == (3600 if rng == "24h" else 86400)
        assert len(s["t"]) == {"24h": 24, "7d": 7, "30d": 30, "90d": 90}[rng]
        assert s["t"] == sorted(s["t"]) and s["t"][-1] <= time.time()
        assert sum(s["requests"]) == len(rows) and sum(s["errors"]) == 3
        assert sum(s["prompt_tokens"]) == expected["prompt_tokens"]
        assert math.isclose(sum(s["cost_usd"]), expected["cost_usd"], abs_tol=1e-6)
        busy = [i for i, n in enumerate(s["requests"]) if n]
        assert busy and all(s["p95_ms"][i] is not None for i in busy if s["requests"][i] > 3)
        # requests by model per bucket add up to the series
        per_bucket = [sum(m["requests"][i] for m in d["by_model_series"]) for i in busy]
        assert per_bucket == [s["requests"][i] for i in busy]
        by_model = {m["model"]: [m["requests"], m["errors"]] for m in d["by_model"]}
        assert by_model == per_model
        assert by_model["gpt-5.1"] == [4, 1]
        assert by_model["gemini-2.5-flash"] == [2, 0]
        by_key = {k["name"]: k for k in d["by_key"]}
        assert by_key["alpha"]["key"] == traffic.alpha_id
        assert by_key["alpha"]["requests"] == 5 and by_key["beta"]["requests"] == 3
        assert by_key["(no key)"]["requests"] == 1 and by_key["(no key)"]["errors"] == 1
    r = traffic.get("/admin/dashboard/overview?range=1y")
    assert r.status_code == 400 and r.json()["error"]["param"] == "range"


def test_request_log_filters(traffic: Traffic) -> None:
    rows = traffic.rows

    def ids(query: str) -> list[str]:
        r = traffic.get("/admin/dashboard/requests?" + query)
        assert r.status_code == 200, r.text
        return [x["request_id"] for x in r.json()["data"]]

    newest_first = [r["request_id"] for r in reversed(rows)]
    assert ids("") == newest_first
    assert ids("since=1h") == newest_first
    assert ids(f"until={rows[0]['created']}") == []
    assert ids(f"since={rows[-1]['created']}") == [rows[-1]["request_id"]]
    assert ids("model=gpt-5.1") == [
        r["request_id"] for r in reversed(rows) if r["model"] == "gpt-5.1"
    ]
    assert ids(f"key={traffic.beta_id}") == [
        r["request_id"] for r in reversed(rows) if r["key_id"] == traffic.beta_id
    ]
    assert set(ids("status=error")) == {r["request_id"] for r in rows if r["status"] >= 400}
    assert set(ids("status=ok")) == {r["request_id"] for r in rows if r["status"] < 400}
    assert set(ids("status=4xx")) == {r["request_id"] for r in rows if r["status"] in (400, 401)}
    assert set(ids("status=500")) == {r["request_id"] for r in rows if r["status"] == 500}
    assert set(ids("stream=true")) == {r["request_id"] for r in rows if r["stream"]}
    assert set(ids("stream=false")) == {r["request_id"] for r in rows if not r["stream"]}
    assert ids(f"key={traffic.alpha_id}&model=claude-sonnet-4-6&stream=true") == [
        r["request_id"]
        for r in reversed(rows)
        if r["key_id"] == traffic.alpha_id and r["model"] == "claude-sonnet-4-6"
    ]
    for bad, param in (
        ("status=teapot", "status"),
        ("stream=maybe", "stream"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("cursor=nonsense", "cursor"),
        ("since=yesterday", "since"),
    ):
        r = traffic.get("/admin/dashboard/requests?" + bad)
        assert r.status_code == 400, bad
        assert r.json()["error"]["param"] == param


def test_request_log_pages_with_a_keyset_cursor(traffic: Traffic) -> None:
    seen: list[dict[str, Any]] = []
    cursor = ""
    pages = 0
    while True:
        r = traffic.get(f"/admin/dashboard/requests?limit=2{cursor}")
        page = r.json()
        seen += page["data"]
        pages += 1
        assert len(page["data"]) <= 2
        if page["next"] is None:
            break
        cursor = "&cursor=" + page["next"]
    assert pages == math.ceil(len(traffic.rows) / 2)
    assert [x["request_id"] for x in seen] == [r["request_id"] for r in reversed(traffic.rows)]
    keys = [(x["created"], x["request_id"]) for x in seen]
    assert keys == sorted(keys, reverse=True)
    # a filtered log pages the same way
    first = traffic.get(f"/admin/dashboard/requests?limit=1&key={traffic.alpha_id}").json()
    second = traffic.get(
        f"/admin/dashboard/requests?limit=1&key={traffic.alpha_id}&cursor={first['next']}"
    ).json()
    alpha = [r["request_id"] for r in reversed(traffic.rows) if r["key_id"] == traffic.alpha_id]
    assert [first["data"][0]["request_id"], second["data"][0]["request_id"]] == alpha[:2]


def test_request_detail_has_every_field_of_the_row(traffic: Traffic) -> None:
    for stored in traffic.rows:
        r = traffic.get("/admin/dashboard/requests/" + stored["request_id"])
        assert r.status_code == 200
        d = r.json()
        for field in dq.ROW_FIELDS:
            want = stored[field]
            if field == "stream":
                want = bool(want)
            if field in ("latency_ms", "ttft_ms") and want is not None:
                assert d[field] == pytest.approx(want, abs=0.01)
            else:
                assert d[field] == want, field
        cost = stored["cost_micros"]
        assert d["cost_usd"] == (round(cost / 1e6, 6) if cost is not None else None)
        names = {traffic.alpha_id: "alpha", traffic.beta_id: "beta", None: "(no key)"}
        assert d["key_name"] == names[stored["key_id"]]
    r = traffic.get("/admin/dashboard/requests/chatcmpl-unknown")
    assert r.status_code == 404 and r.json()["error"]["param"] == "id"


def test_keys_page_shows_policy_usage_and_spend_without_secrets(traffic: Traffic) -> None:
    data = traffic.get("/admin/dashboard/keys").json()["data"]
    keys = {k["id"]: k for k in data}
    alpha, beta = keys[traffic.alpha_id], keys[traffic.beta_id]
    assert alpha["status"] == "active" and alpha["owner"] == "team-a"
    assert alpha["requests_30d"] == 5 and beta["requests_30d"] == 3
    beta_cost = sum(r["cost_micros"] or 0 for r in traffic.rows if r["key_id"] == traffic.beta_id)
    assert beta["rpm"] == 100 and beta["budget_usd"] == 5
    assert beta["spent_usd"] == pytest.approx(beta_cost / 1e6, abs=1e-6)
    assert beta["cost_usd_30d"] == pytest.approx(beta_cost / 1e6, abs=1e-6)
    assert all("key" not in k and "key_hash" not in k for k in data)
    # a revoked key leaves the list, unless asked for
    r = traffic.srv.admin("POST", "/admin/keys", json={"name": "gone"})
    gone = r.json()["id"]
    assert traffic.srv.admin("DELETE", "/admin/keys/" + gone).status_code == 200
    assert gone not in {k["id"] for k in traffic.get("/admin/dashboard/keys").json()["data"]}
    with_revoked = traffic.get("/admin/dashboard/keys?revoked=1").json()["data"]
    assert {k["id"]: k["status"] for k in with_revoked}[gone] == "revoked"
    meta = traffic.get("/admin/dashboard/meta").json()
    assert {"id": gone, "name": "gone", "revoked": True} in meta["keys"]
    assert "gpt-5.1" in meta["models"] and meta["ranges"] == ["24h", "7d", "30d", "90d"]


def test_deployments_page_shows_health_and_recent_errors(traffic: Traffic) -> None:
    d = traffic.get("/admin/dashboard/deployments").json()
    names = {(x["model"], x["deployment"]) for x in d["deployments"]}
    assert any(m == "gpt-5.1" for m, _ in names)
    assert all(x["state"] in ("closed", "open", "half_open", "cooling") for x in d["deployments"])
    errors = {e["request_id"]: e for e in d["recent_errors"]}
    failed = [r for r in traffic.rows if r["status"] >= 400]
    assert set(errors) == {r["request_id"] for r in failed}
    assert [e["created"] for e in d["recent_errors"]] == sorted(
        (e["created"] for e in d["recent_errors"]), reverse=True
    )
    upstream = next(r for r in failed if r["status"] == 500)
    assert errors[upstream["request_id"]]["key_name"] == "alpha"
    usage = {(u["model"], u["provider"]): u for u in d["usage_24h"]}
    expected: dict[tuple[str, str], list[int]] = {}
    for r in traffic.rows:
        acc = expected.setdefault((r["model"], r["provider"]), [0, 0])
        acc[0] += 1
        acc[1] += r["status"] >= 400
    assert {k: [u["requests"], u["errors"]] for k, u in usage.items()} == expected
    assert usage[(upstream["model"], upstream["provider"])]["last_error"] == pytest.approx(
        upstream["created"]
    )


# --- secrets ------------------------------------------------------------------------------


def _secret_parts(secret: str) -> list[str]:
    """What must never be seen of a secret: the whole, and every 8 characters of what comes
    after the public prefix ("sk-cg-" and 4 characters, shown to tell keys apart)."""
    tail = secret[10:]
    return [secret, tail, *(tail[i : i + 8] for i in range(0, len(tail) - 7))]


def test_no_page_or_answer_contains_a_key_secret(tmp_path: Path) -> None:
    srv = Server(tmp_path).start()
    try:
        secrets: list[str] = []
        ids: list[str] = []
        for name, policy in (
            ("plain", {}),
            ("limited", {"rpm": 10, "tpm": 10_000_000, "max_concurrency": 2}),
            ("budget", {"budget_usd": 50, "budget_period": "daily", "models": ["gpt-5*"]}),
        ):
            r = srv.admin("POST", "/admin/keys", json={"name": name, **policy})
            assert r.status_code == 201 and r.json()["key"].startswith("sk-cg-")
            secrets.append(r.json()["key"])
            ids.append(r.json()["id"])
        r = srv.admin("POST", f"/admin/keys/{ids[0]}/rotate")
        assert r.status_code == 200
        secrets.append(r.json()["key"])  # the new one; the old one stays on the list too
        assert srv.admin("PATCH", "/admin/keys/" + ids[1], json={"rpm": 20}).status_code == 200
        request_ids = []
        for key in secrets[1:]:
            for stream in (False, True):
                r = _chat(srv, key, "gpt-5.1", "hello", stream)
                assert r.status_code == 200
                request_ids.append(r.headers["x-request-id"])
        r = _chat(srv, secrets[0], "gpt-5.1", "with the rotated-away key")
        assert r.status_code == 401
        request_ids.append(r.headers["x-request-id"])
        assert srv.admin("DELETE", "/admin/keys/" + ids[2]).status_code == 200
        srv.wait_usage_ids(set(request_ids))

        paths = [
            "/ui",
            "/ui/",
            "/ui/index.html",
            "/ui/app.js",
            "/ui/app.css",
            "/ui/favicon.svg",
            *(f"/admin/dashboard/overview?range={r}" for r in ("24h", "7d", "30d", "90d")),
            "/admin/dashboard/meta",
            "/admin/dashboard/keys",
            "/admin/dashboard/keys?revoked=1",
            "/admin/dashboard/deployments",
            "/admin/dashboard/requests",
            "/admin/dashboard/requests?status=error",
            *(f"/admin/dashboard/requests/{rid}" for rid in request_ids),
            *(f"/admin/dashboard/requests?key={i}" for i in ids),
            "/admin/keys",
            *(f"/admin/keys/{i}" for i in ids),
            "/admin/deployments",
            "/admin/usage?group_by=key,model",
        ]
        seen = 0
        for path in paths:
            r = httpx.get(
                srv.url + path,
                headers={"Authorization": f"Bearer {srv.master_key}"},
                timeout=10,
            )
            assert r.status_code in (200, 308), path
            text = r.text + "".join(f"{k}: {v}\n" for k, v in r.headers.items())
            for secret in secrets:
                for part in _secret_parts(secret):
                    assert part not in text, f"{path} shows part of a key's secret"
            seen += len(r.content)
        assert seen > 20_000  # the checks read real pages, not errors
        for secret in secrets:
            for part in _secret_parts(secret):
                assert part not in srv.log()
    finally:
        srv.stop()


# --- the queries on both engines ----------------------------------------------------------

T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC


def _rows(n: int) -> list[Any]:
    out = []
    for i in range(n):
        status = (200, 200, 200, 200, 429, 500, 200, 400)[i % 8]
        out.append(
            row(
                f"r{i:04d}",
                created=T0 + i * 1733.0,  # ~3 days, a few per hour
                key_id=("key_a", "key_b", None)[i % 3],
                model=("gpt-5.1", "claude-sonnet-4-6", "gemini-3-pro")[i % 3 if i % 7 else 0],
                status=status,
                stream=i % 2 == 0,
                prompt_tokens=10 + i % 13,
                completion_tokens=5 + i % 7,
                total_tokens=15 + i % 13 + i % 7,
                latency_ms=50.0 + (i * 37) % 400,
                cost_micros=None if i % 11 == 0 else 100 + i,
            )
        )
    return out


def test_day_buckets_from_the_rollup_agree_with_the_rows(store_url: str) -> None:
    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            rows = _rows(150)
            assert await store.insert_usage(rows) == 150
            until = T0 + 4 * dq.DAY
            daily = await store.db.run(dq.overview, T0, until, dq.DAY)
            hourly = await store.db.run(dq.overview, T0, until, dq.HOUR)
            assert len(daily["series"]["t"]) == 4 and len(hourly["series"]["t"]) == 96
            exact = {k: v for k, v in hourly["totals"].items() if k not in ("p50_ms", "p95_ms")}
            assert {k: daily["totals"][k] for k in exact} == exact
            assert daily["totals"]["requests"] == 150
            assert daily["by_model"] == hourly["by_model"]
            assert {k["key"]: k for k in daily["by_key"]} == {k["key"]: k for k in hourly["by_key"]}
            for k in ("requests", "errors", "prompt_tokens", "completion_tokens"):
                per_day = [sum(hourly["series"][k][d * 24 : d * 24 + 24]) for d in range(4)]
                assert per_day == daily["series"][k], k
            ok = [r.latency_ms for r in rows if r.status < 400]
            for totals in (hourly["totals"], daily["totals"]):
                _histogram_agrees(totals["p50_ms"], ok, 0.5)
                _histogram_agrees(totals["p95_ms"], ok, 0.95)
            assert hourly["latency_source"] == daily["latency_source"] == "histogram"
            for day in range(3):
                start = T0 + day * dq.DAY
                that = [
                    r.latency_ms
                    for r in rows
                    if r.status < 400 and start <= r.created < start + dq.DAY
                ]
                _histogram_agrees(daily["series"]["p50_ms"][day], that, 0.5)
                _histogram_agrees(daily["series"]["p95_ms"][day], that, 0.95)
            assert daily["series"]["p95_ms"][3] is None  # no rows that day
            # hour buckets: each hour's percentiles from that hour's histogram
            per_hour: dict[int, list[float]] = {}
            for r in rows:
                if r.status < 400:
                    per_hour.setdefault(int(r.created // dq.HOUR), []).append(r.latency_ms)
            for i, t in enumerate(hourly["series"]["t"]):
                that = per_hour.get(t // dq.HOUR)
                if that is None:
                    assert hourly["series"]["p50_ms"][i] is None
                    continue
                _histogram_agrees(hourly["series"]["p50_ms"][i], that, 0.5)
                _histogram_agrees(hourly["series"]["p95_ms"][i], that, 0.95)
        finally:
            await store.close()

    run(go())


def test_request_log_cursor_breaks_ties_on_the_request_id(store_url: str) -> None:
    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            # five rows in the same instant: the cursor still visits each once
            same = [row(f"t{i}", created=T0) for i in range(5)]
            await store.insert_usage([*same, row("later", created=T0 + 1)])
            seen: list[str] = []
            cursor = None
            while True:
                page = await store.db.run(dq.request_log, dq.LogQuery(limit=2, cursor=cursor))
                seen += [r["request_id"] for r in page["data"]]
                cursor = page["next"]
                if cursor is None:
                    break
            assert seen == ["later", "t4", "t3", "t2", "t1", "t0"]
        finally:
            await store.close()

    run(go())


def _histograms(conn: Any) -> dict[tuple[int, str, int], list[int]]:
    cols = ", ".join(LATENCY_COLUMNS)
    rows = conn.exec_driver_sql(f"SELECT day, model, status, {cols} FROM usage_daily").all()
    return {(int(r[0]), r[1], int(r[2])): [int(v) for v in r[3:]] for r in rows}


def _expected_histograms(rows: list[UsageRow]) -> dict[tuple[int, str, int], list[int]]:
    out: dict[tuple[int, str, int], list[int]] = {}
    for r in rows:
        key = (int(r.created // dq.DAY) * dq.DAY, r.model or "", r.status)
        counts = out.setdefault(key, [0] * len(LATENCY_COLUMNS))
        counts[_bin(r.latency_ms)] += 1
    return out


def _latency_rows() -> list[UsageRow]:
    bounds = [float(b) for b in LATENCY_BOUNDS_MS]
    latencies = [0.5, 9.99, *bounds, *(b - 0.01 for b in bounds), 299_999.0, 300_000.0, 4e6]
    return [
        row(f"h{i}", created=T0 + (i % 3) * dq.DAY, latency_ms=ms, status=(200, 429)[i % 2])
        for i, ms in enumerate(latencies)
    ]


def test_the_rollup_counts_latencies_per_bucket(store_url: str) -> None:
    """The writer counts each row in its latency bucket (a bound belongs to the bucket above
    it, the last bucket takes everything from 5 minutes up)."""
    rows = _latency_rows()

    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            assert await store.insert_usage(rows) == len(rows)
            assert await store.db.run(_histograms) == _expected_histograms(rows)
        finally:
            await store.close()

    run(go())


def _rollup(conn: Any) -> dict[tuple[Any, ...], list[float]]:
    from chatgate.store.usage import DAILY_COLUMNS

    got = conn.exec_driver_sql(f"SELECT {', '.join(DAILY_COLUMNS)} FROM usage_daily").all()
    return {tuple(r[:6]): [float(v) for v in r[6:]] for r in got}


def test_migration_0004_builds_the_histogram_from_the_rows_already_there(store_url: str) -> None:
    from sqlalchemy import insert

    from chatgate.store.tables import usage
    from chatgate.store.usage import FIELDS, daily_rows, values

    rows = [*_latency_rows(), *_rows(40)]

    def fill_0003(conn: Any) -> None:
        upgrade(conn, "0003")
        conn.execute(insert(usage), [dict(zip(FIELDS, values(r), strict=True)) for r in rows])

    async def go() -> None:
        store = Store(store_url)
        try:
            await store.db.run(fill_0003)
            assert await store.migrate() == "0003"
            got = await store.db.run(_rollup)
        finally:
            await store.close()
        want = {tuple(r[:6]): [float(v) for v in r[6:]] for r in daily_rows(rows)}
        assert set(got) == set(want)
        for k, v in want.items():
            assert got[k] == pytest.approx(v), k

    run(go())


def _hourly_rollup(conn: Any) -> dict[tuple[Any, ...], list[float]]:
    from chatgate.store.usage import HOURLY_COLUMNS

    got = conn.exec_driver_sql(f"SELECT {', '.join(HOURLY_COLUMNS)} FROM usage_hourly").all()
    return {tuple(r[:6]): [float(v) for v in r[6:]] for r in got}


def _raw_hourly(conn: Any) -> dict[tuple[Any, ...], list[float]]:
    """The hourly rollup computed by the database from the usage rows themselves."""
    bins = []
    low = None
    for bound in (*LATENCY_BOUNDS_MS, None):
        cond = [f"latency_ms >= {low}" if low is not None else "1 = 1"]
        if bound is not None:
            cond.append(f"latency_ms < {bound}")
        bins.append(f"sum(CASE WHEN {' AND '.join(cond)} THEN 1 ELSE 0 END)")
        low = bound
    sums = ", ".join(
        f"coalesce(sum({c}), 0)"
        for c in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
                  "reasoning_tokens", "cost_micros", "latency_ms", "ttft_ms")
    )  # fmt: skip
    dims = (
        "CAST(floor(created / 3600) * 3600 AS BIGINT), coalesce(key_id, ''), "
        "coalesce(owner, ''), coalesce(model, ''), coalesce(provider, ''), status"
    )
    sql = (
        f"SELECT {dims}, count(*), sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END), {sums}, "
        f"count(ttft_ms), {', '.join(bins)} FROM usage GROUP BY {dims}"
    )
    return {tuple(r[:6]): [float(v) for v in r[6:]] for r in conn.exec_driver_sql(sql).all()}


def test_the_hourly_rollup_totals_the_rows_even_after_a_replay(store_url: str) -> None:
    rows = [*_latency_rows(), *_rows(150)]

    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            for i in range(0, len(rows), 40):
                await store.insert_usage(rows[i : i + 40])
            assert await store.insert_usage(rows[20:90]) == 0  # a replayed spool file
            got = await store.db.run(_hourly_rollup)
            want = await store.db.run(_raw_hourly)
        finally:
            await store.close()
        assert set(got) == set(want)
        for k, v in want.items():
            assert got[k] == pytest.approx(v), k
        assert sum(v[0] for v in got.values()) == len(rows)

    run(go())


def test_model_health_from_the_hourly_rollup_agrees_with_the_rows(store_url: str) -> None:
    """The Models page's 24 hours: whole hours from the rollup, the part of the first hour
    from the rows, so a window starting mid-hour counts exactly the rows inside it."""
    rows = _rows(150)
    since = T0 + 20 * dq.HOUR + 1234.5  # mid-hour

    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            assert await store.insert_usage(rows) == 150
            got = await store.db.run(dq.model_health, since)
        finally:
            await store.close()
        want: dict[tuple[Any, Any], list[Any]] = {}
        for r in rows:
            if r.created < since:
                continue
            a = want.setdefault((r.model, r.provider), [0, 0, None, 0.0])
            a[0] += 1
            a[3] += r.latency_ms
            if r.status >= 400:
                a[1] += 1
                a[2] = max(a[2] or 0.0, r.created)
        assert {(g["model"], g["provider"]) for g in got} == set(want)
        for g in got:
            n, errors, last, lat = want[g["model"], g["provider"]]
            assert (g["requests"], g["errors"], g["last_error"]) == (n, errors, last)
            assert g["avg_latency_ms"] == pytest.approx(lat / n, abs=0.06)

    run(go())
