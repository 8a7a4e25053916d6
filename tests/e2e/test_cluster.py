"""Cluster mode, end to end (issue 8's acceptance): gateway replicas as real processes on
loopback, sharing PostgreSQL and Redis, driven through the official OpenAI SDK.

Replicas are Servers given the same database and Redis prefix on different ports; load is
spread round-robin over them, as a load balancer would. The outage tests stop a private
PostgreSQL / redis-server of their own (tests/services.py), never the shared ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.services import CLUSTER, CLUSTER_ONLY, PrivatePostgres, PrivateRedis, shared
from tests.support import Server, sandbox_url

pytestmark = pytest.mark.skipif(not CLUSTER, reason=CLUSTER_ONLY)

MODEL = "gpt-5.1"


# --- replicas ----------------------------------------------------------------------------------


def start_all(servers: list[Server]) -> list[Server]:
    """Start the replicas together (as a rollout would), or stop them all and raise."""
    with ThreadPoolExecutor(len(servers)) as pool:
        futures = [pool.submit(s.start) for s in servers]
        errors = [f.exception() for f in futures]
    if any(errors):
        stop_all(servers)
        raise next(e for e in errors if e is not None)
    return servers


def stop_all(servers: list[Server]) -> None:
    for s in servers:
        if s.proc is not None:
            s.stop()


@contextlib.contextmanager
def replicas(
    tmp_path: Path,
    n: int = 3,
    extra: dict[str, Any] | None = None,
    *,
    database_url: str | None = None,
    redis_prefix: str | None = None,
    name: str = "replica",
) -> Iterator[list[Server]]:
    """n gateways sharing one database, one Redis prefix and one master key."""
    database_url = database_url or shared.new_database()
    redis_prefix = redis_prefix or shared.new_prefix()
    master = "mk-test-" + os.urandom(8).hex()
    servers = [
        Server(
            tmp_path / f"{name}{i}",
            extra,
            database_url=database_url,
            redis_prefix=redis_prefix,
            master_key=master,
        )
        for i in range(n)
    ]
    start_all(servers)
    try:
        with logs_on_failure(servers):
            yield servers
    finally:
        stop_all(servers)


@contextlib.contextmanager
def logs_on_failure(servers: list[Server], tail: int = 4000) -> Iterator[None]:
    """Print the replicas' logs (shown with the failure report) if the block fails."""
    try:
        yield
    except BaseException:
        for s in servers:
            print(f"----- {s.workdir.name} ({s.url}) log, last {tail} characters -----")
            print(s.log()[-tail:])
        raise


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Three replicas for the tests that leave them running. They start at the same moment on
    an empty database, as a first rollout does, so they also race for its schema migration;
    a long key cache leaves only the invalidation broadcast to make revocations fast."""
    if not CLUSTER:
        pytest.skip(CLUSTER_ONLY)
    with replicas(
        tmp_path_factory.mktemp("trio"),
        extra={"key_cache_seconds": 60},
        database_url=shared.new_database(migrated=False),
    ) as reps:
        yield reps


def new_key(srv: Server, **policy: Any) -> tuple[str, str]:
    """(secret, id) of a new key with this policy, created through this replica."""
    r = srv.admin("POST", "/admin/keys", json={"name": "cluster", **policy})
    assert r.status_code == 201, r.text
    return r.json()["key"], r.json()["id"]


def client(srv: Server, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=srv.url + "/v1", max_retries=0, timeout=60)


# --- requests ------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int  # 0: no HTTP answer at all
    request_id: str | None = None
    code: str | None = None
    seconds: float = 0.0
    error: str | None = None


async def chat(c: openai.AsyncOpenAI, content: str, **kw: Any) -> Answer:
    """One non-streaming completion; refusals are answers, not exceptions."""
    t0 = time.monotonic()
    try:
        raw = await c.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": content}], **kw
        )
        raw.parse()
        return Answer(raw.status_code, raw.headers.get("x-request-id"), None, time.monotonic() - t0)
    except openai.APIStatusError as e:
        return Answer(
            e.status_code, e.response.headers.get("x-request-id"), e.code, time.monotonic() - t0
        )
    except openai.APIConnectionError as e:
        return Answer(0, None, None, time.monotonic() - t0, repr(e.__cause__ or e))


@dataclass
class Streamed:
    status: int
    request_id: str | None = None
    events: list[str] = field(default_factory=list)  # the `data:` payloads, in order
    cut: str | None = None  # how the stream broke off, if it did

    @property
    def finish_reason(self) -> str | None:
        import json

        for data in self.events:
            if data != "[DONE]":
                for choice in json.loads(data).get("choices") or []:
                    if choice.get("finish_reason"):
                        return str(choice["finish_reason"])
        return None

    @property
    def complete(self) -> bool:
        """Ended as a whole stream does: a finish_reason, no error event, then [DONE]."""
        return (
            self.status == 200
            and self.cut is None
            and bool(self.events)
            and self.events[-1] == "[DONE]"
            and self.finish_reason is not None
            and not any(e.startswith('{"error"') for e in self.events)
        )


async def stream(
    c: openai.AsyncOpenAI, content: str, on_first: Callable[[], None] | None = None, **kw: Any
) -> Streamed:
    """One streaming completion read line by line through the SDK's raw response, so that
    the closing `data: [DONE]` (which the SDK's iterator swallows) can be checked."""
    try:
        async with c.chat.completions.with_streaming_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": content}],
            stream=True,
            stream_options={"include_usage": True},
            **kw,
        ) as resp:
            out = Streamed(resp.status_code, resp.headers.get("x-request-id"))
            try:
                async for line in resp.iter_lines():
                    if line.startswith("data: "):
                        if not out.events and on_first is not None:
                            on_first()
                        out.events.append(line[len("data: ") :])
            except (httpx.HTTPError, openai.APIError) as exc:
                out.cut = repr(exc)
            return out
    except openai.APIStatusError as e:
        return Streamed(e.status_code, e.response.headers.get("x-request-id"))
    except openai.APIConnectionError as e:
        return Streamed(0, None, cut=repr(e.__cause__ or e))


async def round_robin(servers: list[Server], key: str, n: int, concurrency: int) -> list[Answer]:
    """n completions, request i to replica i % len(servers), at most `concurrency` at once."""
    clients = [client(s, key) for s in servers]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Answer:
        async with sem:
            return await chat(clients[i % len(clients)], f"request {i}")

    try:
        return list(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        for c in clients:
            await c.close()


# --- a: rate limits ------------------------------------------------------------------------------


def test_three_replicas_started_together_on_an_empty_database_share_one_schema(
    trio: list[Server],
) -> None:
    with logs_on_failure(trio):
        assert len(trio[0].query("SELECT version_num FROM alembic_version")) == 1
        key, _ = new_key(trio[1])

        async def go() -> list[int]:
            out = []
            for s in trio:
                async with client(s, key) as c:
                    out.append((await chat(c, "hi")).status)
            return out

        assert asyncio.run(go()) == [200, 200, 200]


def test_rpm_limit_holds_globally_across_three_replicas(trio: list[Server]) -> None:
    rpm, sent = 200, 300
    with logs_on_failure(trio):
        reps = trio
        key, _ = new_key(reps[0], rpm=rpm)
        t0 = time.monotonic()
        answers = asyncio.run(round_robin(reps, key, sent, concurrency=30))
        elapsed = time.monotonic() - t0
        assert elapsed < 50, f"the burst took {elapsed:.0f} s: it must fit in the rpm window"
        statuses = Counter(a.status for a in answers)
        ok, limited = statuses[200], statuses[429]
        assert ok + limited == sent, statuses
        assert {a.code for a in answers if a.status == 429} == {"rate_limit_exceeded"}
        # within 1 %; limits kept per replica would let all of them through
        assert abs(ok - rpm) <= rpm // 100, f"{ok} of {sent} passed a {rpm} rpm limit"
        served = Counter(i % 3 for i, a in enumerate(answers) if a.status == 200)
        assert len(served) == 3, f"every replica must have served part of the limit: {served}"


def test_workers_on_one_machine_share_the_limits(tmp_path: Path) -> None:
    srv = Server(tmp_path, args=("--workers", "2")).start()
    try:
        key, _ = new_key(srv, rpm=20)

        async def go() -> list[int]:
            # a fresh connection per request, so the kernel spreads them over the workers
            async def one(i: int) -> int:
                async with client(srv, key) as c:
                    return (await chat(c, f"w {i}")).status

            return list(await asyncio.gather(*(one(i) for i in range(40))))

        statuses = Counter(asyncio.run(go()))
    finally:
        srv.stop()
    assert statuses == {200: 20, 429: 20}


# --- b: budgets ----------------------------------------------------------------------------------


async def _budget_burst(servers: list[Server], key: str, n: int) -> list[tuple[int, str | None]]:
    clients = [client(s, key) for s in servers]

    async def one(i: int) -> tuple[int, str | None]:
        c = clients[i % len(clients)]
        if i % 2:
            s = await stream(c, f"tell me about {i}", max_tokens=40)
            assert s.status != 200 or s.complete, s
            return s.status, s.request_id
        a = await chat(c, f"tell me about {i}", max_tokens=40)
        if a.status == 429:
            assert a.code == "insufficient_quota", a
        return a.status, a.request_id

    try:
        return list(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        for c in clients:
            await c.close()


def test_budget_race_of_300_requests_over_three_replicas_never_overspends(
    trio: list[Server],
) -> None:
    # one answer costs about 500 micro-USD: a 0.02 USD budget covers a few dozen
    with logs_on_failure(trio):
        reps = trio
        key, key_id = new_key(reps[0], budget_usd=0.02)
        vendors = [sandbox_url(s) + "/_sandbox/requests" for s in reps]
        for v in vendors:
            httpx.delete(v)
        results = asyncio.run(_budget_burst(reps, key, 300))
        ok = [rid for status, rid in results if status == 200]
        refused = [rid for status, rid in results if status == 429]
        assert len(ok) + len(refused) == 300, Counter(status for status, _ in results)
        assert len(ok) >= 25, f"only {len(ok)} requests were let through"
        # refused requests were refused before any upstream call, on every replica
        assert sum(len(httpx.get(v).json()) for v in vendors) == len(ok)
        ids = {rid for rid in ok + refused if rid}
        assert len(ids) == 300
        rows = reps[0].wait_usage_ids(ids, timeout=30)
        assert len(rows) == 300, f"{300 - len(rows)} usage rows missing"
        spent = sum(rows[r]["cost_micros"] or 0 for r in ok)
        assert 0 < spent <= 20_000, f"spent {spent} micro-USD of a 20000 budget"
        assert all(rows[r]["cost_micros"] in (0, None) for r in refused)
        for s in reps:  # every replica reports the same spend, equal to the rows
            info = s.admin("GET", f"/admin/keys/{key_id}").json()
            assert round(info["spent_usd"] * 1e6) == spent, (s.url, info)


# --- c: key invalidation -------------------------------------------------------------------------


async def _seconds_until_refused(servers: list[Server], key: str, limit: float) -> list[float]:
    """For each replica, seconds until it answers this key with 401 (inf: not within limit)."""
    t0 = time.monotonic()

    async def poll(srv: Server) -> float:
        async with client(srv, key) as c:
            while time.monotonic() - t0 < limit:
                if (await chat(c, "still there?")).status == 401:
                    return time.monotonic() - t0
                await asyncio.sleep(0.02)
        return float("inf")

    return list(await asyncio.gather(*(poll(s) for s in servers)))


def test_key_revoked_through_one_replica_is_refused_by_all_within_a_second(
    trio: list[Server],
) -> None:
    # the key cache lasts 60 s: only the invalidation broadcast can make the refusal this fast
    with logs_on_failure(trio):
        reps = trio
        revoked, revoked_id = new_key(reps[0])
        disabled, disabled_id = new_key(reps[0])

        async def warm() -> list[int]:
            out = []
            for s in reps:
                for k in (revoked, disabled):
                    async with client(s, k) as c:
                        out.append((await chat(c, "hello")).status)
            return out

        assert asyncio.run(warm()) == [200] * 6  # every replica has both keys cached

        r = reps[0].admin("DELETE", f"/admin/keys/{revoked_id}")
        assert r.status_code in (200, 204), r.text
        waited = asyncio.run(_seconds_until_refused(reps[1:], revoked, limit=5.0))
        assert all(w <= 1.0 for w in waited), f"revocation reached replicas 2, 3 after {waited} s"

        # a change through another replica travels the same way
        r = reps[2].admin("PATCH", f"/admin/keys/{disabled_id}", json={"enabled": False})
        assert r.status_code == 200, r.text
        waited = asyncio.run(_seconds_until_refused(reps[:2], disabled, limit=5.0))
        assert all(w <= 1.0 for w in waited), f"disabling reached replicas 1, 2 after {waited} s"


# --- d: PostgreSQL outage ------------------------------------------------------------------------


def test_postgres_down_for_10_s_during_1000_requests_loses_no_usage_row(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    pg = private_postgres
    total, rate = 1000, 70.0  # requests, per second: a run of about 14 s
    with replicas(tmp_path, 2, database_url=pg.url) as reps:
        key, _ = new_key(reps[0])
        clients = [client(s, key) for s in reps]
        outage: dict[str, float] = {}

        async def kill_postgres_for_10_s(t0: float) -> None:
            await asyncio.sleep(2.0)
            await asyncio.to_thread(pg.stop)  # immediate: connections cut mid-flight
            outage["down"] = time.monotonic() - t0
            await asyncio.sleep(10.0)
            await asyncio.to_thread(pg.start)
            outage["up"] = time.monotonic() - t0

        async def run() -> list[Answer]:
            t0 = time.monotonic()
            killer = asyncio.create_task(kill_postgres_for_10_s(t0))
            tasks = []
            for i in range(total):  # paced, so the outage falls in the middle of the run
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                tasks.append(
                    asyncio.create_task(chat(clients[i % 2], f"row {i} [sandbox:latency=50]"))
                )
            answers = await asyncio.gather(*tasks)
            await killer
            for c in clients:
                await c.close()
            outage["end"] = time.monotonic() - t0
            return list(answers)

        answers = asyncio.run(run())
        failed = Counter((a.status, a.code or a.error) for a in answers if a.status != 200)
        assert not failed, f"requests failed while PostgreSQL was down: {failed} ({outage})"
        assert outage["down"] < outage["end"] - 10, f"the run ended before the outage: {outage}"
        slowest = max(a.seconds for a in answers)
        assert slowest < 3.0, f"a request took {slowest:.1f} s: the outage slowed requests down"
        ids = {a.request_id for a in answers}
        assert None not in ids and len(ids) == total

        def counts() -> tuple[int, int, set[str]]:
            rows = reps[0].query("SELECT request_id FROM usage")
            got = [r["request_id"] for r in rows]
            return len(got), len(set(got)), set(got)

        deadline = time.monotonic() + 60
        n, distinct, got = counts()
        while n < total and time.monotonic() < deadline:  # the spool is replayed
            time.sleep(0.25)
            n, distinct, got = counts()
        assert got == ids, f"{len(ids - got)} usage rows missing after PostgreSQL came back"
        assert n == distinct == total, f"{n} rows for {distinct} request ids"
    n, distinct, got = counts()  # the replicas' shutdown replays nothing twice
    assert n == distinct == total and got == ids


# --- e: Redis outage -----------------------------------------------------------------------------


def test_redis_down_for_10_s_serving_continues_under_the_policy_and_limits_recover(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    redis = private_redis
    database_url = shared.new_database()
    master = "mk-test-" + os.urandom(8).hex()

    def gateway(name: str, policy: str, prefix: str) -> Server:
        extra = {"redis_url": redis.url, "redis_on_failure": policy}
        return Server(
            tmp_path / name,
            extra,
            database_url=database_url,
            redis_prefix=prefix,
            master_key=master,
        )

    open_prefix, closed_prefix = shared.new_prefix(), shared.new_prefix()
    open_pair = [gateway("open0", "open", open_prefix), gateway("open1", "open", open_prefix)]
    closed = gateway("closed", "closed", closed_prefix)
    start_all([*open_pair, closed])
    try:
        with logs_on_failure([*open_pair, closed]):
            admin = open_pair[0]

            def exact_burst(rpm: int = 5, sent: int = 8) -> int:
                """Successes of a concurrent burst over the open pair with a fresh rpm key:
                exactly `rpm` when the limit is shared, up to `sent` when each replica counts
                alone."""
                key, _ = new_key(admin, rpm=rpm)
                return sum(
                    a.status == 200 for a in asyncio.run(round_robin(open_pair, key, sent, sent))
                )

            assert exact_burst() == 5, "the pair must share its limits through Redis"
            limited_open, _ = new_key(admin, rpm=100_000)
            limited_closed, _ = new_key(admin, rpm=100_000)
            unlimited, _ = new_key(admin)

            async def probe() -> tuple[list[Answer], Answer, Answer]:
                async with (
                    client(open_pair[0], limited_open) as a0,
                    client(open_pair[1], limited_open) as a1,
                    client(closed, limited_closed) as b_limited,
                    client(closed, unlimited) as b_free,
                ):
                    got = await asyncio.gather(
                        chat(a0, "open"),
                        chat(a1, "open"),
                        chat(b_limited, "closed"),
                        chat(b_free, "free"),
                    )
                return [got[0], got[1]], got[2], got[3]

            logged = len(admin.log())
            redis.stop()
            down_at = time.monotonic()
            seen_open: Counter[int] = Counter()
            seen_closed: Counter[tuple[int, str | None]] = Counter()
            seen_free: Counter[int] = Counter()
            while time.monotonic() - down_at < 10:
                opens, limited, free = asyncio.run(probe())
                seen_open.update(a.status for a in opens)
                seen_closed[(limited.status, limited.code)] += 1
                seen_free[free.status] += 1
                time.sleep(0.3)
            redis.start()
            up_at = time.monotonic()

            assert set(seen_open) == {200}, f"fail-open replicas refused requests: {seen_open}"
            assert {status for status, _ in seen_closed} == {503}, (
                f"fail-closed replica, limited key: {seen_closed}"
            )
            assert all(code for _, code in seen_closed), f"not OpenAI-format errors: {seen_closed}"
            assert set(seen_free) == {200}, f"fail-closed replica, key without limits: {seen_free}"
            outage_log = admin.log()[logged:]
            assert re.search(
                r"(?i)redis.*(unreachable|unavailable|down|error|fail|lost)", outage_log
            ), "the outage must be logged clearly"

            # back: limits exact again within seconds, by themselves
            recovered = None
            while time.monotonic() - up_at < 10:
                if exact_burst() == 5:
                    recovered = time.monotonic() - up_at
                    break
                time.sleep(0.5)
            assert recovered is not None, "limits still per replica 10 s after Redis came back"
            assert exact_burst() == 5 and exact_burst() == 5, "limits not exact after recovery"

            async def closed_again() -> int:
                async with client(closed, limited_closed) as c:
                    return (await chat(c, "back")).status

            deadline = time.monotonic() + 10
            while asyncio.run(closed_again()) != 200:
                assert time.monotonic() < deadline, "fail-closed replica still refusing after Redis"
                time.sleep(0.3)
    finally:
        stop_all([*open_pair, closed])


# --- f: rolling restart --------------------------------------------------------------------------


def test_sigterm_to_one_replica_cuts_no_stream_and_loses_no_usage_row(tmp_path: Path) -> None:
    streams = 30
    with replicas(tmp_path) as reps:
        key, _ = new_key(reps[0])
        victim = reps[1]
        assert victim.proc is not None

        async def run() -> tuple[list[Streamed], Answer, float]:
            clients = [client(s, key) for s in reps]
            started = 0
            all_started = asyncio.Event()

            def on_first() -> None:
                nonlocal started
                started += 1
                if started == streams:
                    all_started.set()

            # 20-60 chunks 80 ms apart: every stream lasts a few seconds
            tasks = [
                asyncio.create_task(
                    stream(clients[i % 3], f"story {i} [sandbox:chunk_delay=80]", on_first)
                )
                for i in range(streams)
            ]
            await asyncio.wait_for(all_started.wait(), 30)
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            await asyncio.sleep(0.5)
            # a draining replica takes no new work (a refused connection, or a 503)
            async with client(victim, key) as c:
                late = await chat(c, "too late")
            results = await asyncio.gather(*tasks)
            for c in clients:
                await c.close()
            return list(results), late, signalled

        results, late, signalled = asyncio.run(run())
        cut = [(i, r.status, r.cut, r.events[-2:]) for i, r in enumerate(results) if not r.complete]
        assert not cut, f"streams cut by the SIGTERM to replica 2: {cut}"
        assert late.status in (0, 503), f"the draining replica answered a new request: {late}"
        try:  # wait for it: Server.stop() would signal it a second time
            code = victim.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pytest.fail(f"replica 2 still running 40 s after SIGTERM:\n{victim.log()}")
        exited = time.monotonic() - signalled
        victim.stop()
        assert code in (0, -signal.SIGTERM), victim.log()
        assert exited < 30, f"replica 2 took {exited:.0f} s to exit"
        ids = {r.request_id for r in results}
        assert None not in ids and len(ids) == streams
        rows = reps[0].wait_usage_ids({i for i in ids if i}, timeout=20)
        assert len(rows) == streams, f"{streams - len(rows)} streams have no usage row"
        assert all(r["status"] == 200 and r["stream"] for r in rows.values())
        assert all((r["completion_tokens"] or 0) > 0 for r in rows.values())
