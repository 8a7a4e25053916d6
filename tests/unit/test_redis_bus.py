"""What replicas tell each other over pub/sub, through the real wiring (Cluster.start with an
Authenticator and a Router each, one database): a key changed through one replica is refused
by all of them at once, also after the subscriber had to reconnect; a circuit opened, a
deployment cooled after a 429, a circuit closed by a good probe on one replica is applied by
the others, and a replica starting later reads the current states."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from chatgate.app import App, Gateway
from chatgate.auth import Authenticator
from chatgate.cli import main
from chatgate.cluster import Cluster
from chatgate.config import Config, from_dict
from chatgate.errors import AuthenticationError, RateLimited, UpstreamError
from chatgate.router import Router, Target
from chatgate.store import Store
from tests.redis_fixtures import redis_prefix, shared_redis_url
from tests.services import PrivateRedis

__all__ = ["redis_prefix"]  # a fixture


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chatgate.db'}"  # what is shared here is Redis, not this


def config(redis_url: str, prefix: str) -> Config:
    return from_dict(
        {
            "providers": {"p": {"protocol": "openai", "base_url": "http://u/v1", "api_key": "k"}},
            "models": {
                "m": [
                    {"provider": "p", "model": "gpt-5.1", "name": "a"},
                    {"provider": "p", "model": "gpt-5.1", "name": "b", "priority": 1},
                ]
            },
            "circuit": {"failures": 2, "cooldown": 30},
            "redis_url": redis_url,
            "redis_prefix": prefix,
        },
        {},
    )


class Replica:
    def __init__(self, cfg: Config, store: Store) -> None:
        self.auth = Authenticator(store, None, ttl=300.0)  # the cache alone would hold 5 min
        self.router = Router(cfg, rng=random.Random(1))
        self.cluster = Cluster(cfg, store.spent_since)

    async def start(self) -> Replica:
        await self.cluster.start(self.auth, self.router)
        return self

    def target(self, name: str) -> Target:
        return next(t for t in self.router.routes["m"] if t.name == name)

    def state(self, name: str) -> str:
        return self.target(name).state(time.monotonic())


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float) -> float:
    """Seconds until check() holds; fails after ``within``."""
    t0 = time.monotonic()
    while True:
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < within, f"not within {within} s"
        await asyncio.sleep(0.005)


def refused(auth: Authenticator, bearer: bytes) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            await auth.authenticate(bearer)
        except AuthenticationError as e:
            return e.code == "api_key_revoked"
        return False

    return check


async def cluster_of(
    n: int, cfg: Config, database_url: str, body: Callable[[Store, list[Replica]], Awaitable[Any]]
) -> Any:
    store = Store(database_url)
    await store.migrate()
    replicas = [await Replica(cfg, store).start() for _ in range(n)]
    try:
        return await body(store, replicas)
    finally:
        for r in replicas:
            await r.cluster.stop()
        await store.close()


def test_a_key_revoked_through_one_replica_is_refused_by_all_within_a_second(
    redis_prefix: str, database_url: str
) -> None:
    cfg = config(shared_redis_url(), redis_prefix)

    async def body(store: Store, replicas: list[Replica]) -> list[float]:
        key, rec = await store.keys.create("k")
        other, other_rec = await store.keys.create("other")
        for k in (key, other):
            for r in replicas:
                await r.auth.authenticate(f"Bearer {k}".encode())  # cached everywhere
        # revoked in the database without telling anyone: the caches keep answering
        assert await store.keys.revoke(other_rec.id)
        for r in replicas:
            await r.auth.authenticate(f"Bearer {other}".encode())
        # revoked through replica 0: every replica refuses it
        assert await store.keys.revoke(rec.id)
        await replicas[0].auth.changed(rec.id)
        bearer = f"Bearer {key}".encode()
        return [await eventually(refused(r.auth, bearer), within=1.0) for r in replicas]

    delays = asyncio.run(cluster_of(3, cfg, database_url, body))
    assert max(delays) < 1.0


def test_the_auth_cache_is_cleared_when_the_subscriber_reconnects(
    private_redis: PrivateRedis, database_url: str
) -> None:
    """A change announced while Redis was away is missed; reconnecting clears the cache."""
    cfg = config(private_redis.url, "cgt-bus:")

    async def body(store: Store, replicas: list[Replica]) -> float:
        a, b = replicas
        key, rec = await store.keys.create("k")
        bearer = f"Bearer {key}".encode()
        await b.auth.authenticate(bearer)
        private_redis.stop()
        assert await store.keys.revoke(rec.id)
        await a.auth.changed(rec.id)  # cannot be published: Redis is down
        await b.auth.authenticate(bearer)  # B has not heard
        private_redis.start()
        return await eventually(refused(b.auth, bearer), within=3.0)

    try:
        asyncio.run(cluster_of(2, cfg, database_url, body))
    finally:
        private_redis.stop()


def test_a_key_revoked_with_the_cli_is_refused_by_running_replicas_at_once(
    redis_prefix: str, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'chatgate.db'}"
    cfg = config(shared_redis_url(), redis_prefix)
    cfg.database_url = database_url
    path = tmp_path / "chatgate.yaml"
    path.write_text(
        f"database_url: {database_url}\nredis_url: {cfg.redis_url}\n"
        f"redis_prefix: '{redis_prefix}'\n"
    )

    async def body(store: Store, replicas: list[Replica]) -> float:
        (r,) = replicas
        key, rec = await store.keys.create("k")
        bearer = f"Bearer {key}".encode()
        await r.auth.authenticate(bearer)
        cli = await asyncio.to_thread(
            CliRunner().invoke, main, ["keys", "revoke", rec.id, "--config", str(path)]
        )
        assert cli.exit_code == 0, cli.output
        return await eventually(refused(r.auth, bearer), within=1.0)

    asyncio.run(cluster_of(1, cfg, database_url, body))


def test_circuit_and_cooldown_states_are_shared_and_read_at_start(
    redis_prefix: str, database_url: str
) -> None:
    cfg = config(shared_redis_url(), redis_prefix)
    boom = UpstreamError("boom", status=500)

    async def body(store: Store, replicas: list[Replica]) -> None:
        a, b = replicas
        for _ in range(2):
            a.router.begin(a.target("a"))
            a.router.failure(a.target("a"), boom)
        assert a.state("a") == "open"
        await eventually(lambda: b.state("a") == "open", within=1.0)
        assert [t.name for t in b.router.candidates("m", set())] == ["b"]

        b.router.begin(b.target("b"))
        b.router.failure(b.target("b"), RateLimited("slow", headers={"retry-after": "20"}))
        await eventually(lambda: a.state("b") == "cooling", within=1.0)
        assert 19 < a.target("b").health.cooled_until - time.monotonic() <= 20

        late = await Replica(cfg, store).start()  # a replica starting now reads them
        try:
            assert late.state("a") == "open" and late.state("b") == "cooling"
            assert 29 < late.target("a").health.open_until - time.monotonic() <= 30
            # a good probe on A closes the circuit everywhere
            a.router.begin(a.target("a"))
            a.router.success(a.target("a"), 0.1)
            for r in (b, late):
                await eventually(lambda r=r: r.state("a") == "closed", within=1.0)
        finally:
            await late.cluster.stop()
        client = redis.Redis.from_url(cfg.redis_url or "")
        try:
            keys = sorted(k.decode() for k in client.scan_iter(match=redis_prefix + "health:*"))
            assert keys == [f"{redis_prefix}health:m:b:cooling"]  # "open" deleted on close
            assert 0 < client.pttl(keys[0]) <= 20_000
        finally:
            client.close()

    asyncio.run(cluster_of(2, cfg, database_url, body))


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_ready_says_whether_redis_is_up(
    policy: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """GET /ready of a real gateway (App + Gateway wiring): Redis ok, then down — still 200,
    naming the failure policy (Redis is shared: failing readiness would empty the load
    balancer) — then ok again by itself."""
    cfg = from_dict(
        {
            "providers": {"p": {"protocol": "openai", "base_url": "http://u/v1", "api_key": "k"}},
            "models": {"m": [{"provider": "p", "model": "gpt-5.1"}]},
            "database_url": f"sqlite:///{tmp_path / 'chatgate.db'}",
            "usage": {"spool_dir": str(tmp_path / "spool")},
            "redis_url": private_redis.url,
            "redis_prefix": "cgt-ready:",
            "redis_on_failure": policy,
        },
        {},
    )
    app = App(cfg)

    async def ready() -> tuple[int, dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        scope = {"type": "http", "method": "GET", "path": "/ready", "headers": []}
        await app(scope, receive, send)
        return sent[0]["status"], json.loads(sent[1]["body"])

    async def go() -> list[tuple[int, dict[str, Any]]]:
        app.gw = Gateway(cfg)
        await app.gw.start()
        try:
            seen = [await ready()]
            private_redis.stop()
            seen.append(await ready())
            private_redis.start()
            await eventually(app.gw.cluster.ready, within=3.0)  # type: ignore[union-attr]
            seen.append(await ready())
            return seen
        finally:
            await app.gw.stop()

    try:
        up, down, back = asyncio.run(go())
    finally:
        private_redis.stop()
    assert up == (200, {"status": "ready", "database": "ok", "redis": "ok"})
    assert down == (
        200,
        {"status": "ready", "database": "ok", "redis": "down", "redis_on_failure": policy},
    )
    assert back == up
