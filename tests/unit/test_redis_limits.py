"""Two RedisLimiters on one prefix are two replicas of one gateway: together they hold a key's
rpm, concurrency and budget exactly; a replica that dies frees its slots and reservations
when their leases run out; nothing is kept in Redis without an expiry."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from chatgate.errors import RateLimited
from chatgate.limits import Admission, BudgetExceeded, Policy
from tests.redis_fixtures import redis_limiter, redis_prefix
from tests.services import REDIS_URL

__all__ = ["redis_prefix"]  # a fixture

NOW = 1_764_547_200.0  # 2025-12-01T00:00:00Z


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def run_closing(coro: Awaitable[Any], *closers: Callable[[], Awaitable[None]]) -> Any:
    async def main() -> Any:
        try:
            return await coro
        finally:
            for close in closers:
                await close()

    return asyncio.run(main())


def test_two_replicas_share_one_rpm_window(redis_prefix: str) -> None:
    clock = Clock()
    a, close_a = redis_limiter(redis_prefix, lambda k, s: 0, clock)
    b, close_b = redis_limiter(redis_prefix, lambda k, s: 0, clock)
    policy = Policy(rpm=30)

    async def go() -> list[str]:
        got: list[str] = []
        for i in range(90):  # three attempts a second for 30 s, alternating replicas
            clock.t += 1 / 3
            lim = (a, b)[i % 2]
            try:
                adm = await lim.admit("k", policy, 1, 0)
            except RateLimited:
                got.append("refused")
                continue
            await lim.settle(adm, 1, 0)
            got.append("ab"[i % 2])
        return got

    got = run_closing(go(), close_a, close_b)
    assert got.count("a") + got.count("b") == 30  # the minute's 30, not 30 per replica
    assert got.count("a") == 15 and got.count("b") == 15
    assert got[30:] == ["refused"] * 60


def test_two_replicas_share_one_concurrency_cap(redis_prefix: str) -> None:
    clock = Clock()
    a, close_a = redis_limiter(redis_prefix, lambda k, s: 0, clock)
    b, close_b = redis_limiter(redis_prefix, lambda k, s: 0, clock)
    policy = Policy(max_concurrency=3)

    async def go() -> None:
        held = [await a.admit("k", policy, 1, 0), await a.admit("k", policy, 1, 0)]
        held.append(await b.admit("k", policy, 1, 0))
        for lim in (a, b):
            with pytest.raises(RateLimited) as e:
                await lim.admit("k", policy, 1, 0)
            assert e.value.code == "concurrency_limit_exceeded"
        await a.settle(held[0], 1, 0)
        await a.settle(held[0], 1, 0)  # twice: still one slot
        held[0] = await b.admit("k", policy, 1, 0)  # the slot A freed, taken through B
        with pytest.raises(RateLimited):
            await a.admit("k", policy, 1, 0)

    run_closing(go(), close_a, close_b)


def test_budget_race_across_replicas_never_reserves_past_the_budget(
    redis_prefix: str,
) -> None:
    """300 requests at once over two replicas: whatever they reserve together stays within
    the budget at every moment, and the settled spend is exactly what they cost."""
    clock = Clock()
    a, close_a = redis_limiter(redis_prefix, lambda k, s: 500, clock)
    b, close_b = redis_limiter(redis_prefix, lambda k, s: 500, clock)
    policy = Policy(budget_micros=50_000)
    rnd = random.Random(5)
    in_flight = [0]  # micro-USD reserved right now (by this test's count)
    worst_seen = [0]
    spent_by = [500]
    outcomes: list[str] = []

    async def one(i: int) -> None:
        lim = (a, b)[i % 2]
        worst = rnd.randint(300, 1200)
        try:
            adm = await lim.admit("k", policy, 10, worst)
        except BudgetExceeded:
            outcomes.append("refused")
            return
        outcomes.append("admitted")
        in_flight[0] += worst
        worst_seen[0] = max(worst_seen[0], spent_by[0] + in_flight[0])
        await asyncio.sleep(rnd.random() / 200)
        real = rnd.randint(0, worst)
        in_flight[0] -= worst
        spent_by[0] += real
        await lim.settle(adm, 10, real)

    async def go() -> tuple[int, int]:
        await asyncio.gather(*(one(i) for i in range(300)))
        return await a.spent("k", policy), await b.spent("k", policy)

    spent_a, spent_b = run_closing(go(), close_a, close_b)
    assert spent_a == spent_b == spent_by[0] <= 50_000
    assert worst_seen[0] <= 50_000  # reservations never went past the budget
    # both outcomes happened: the race was real (~66 worst cases fit the budget at once)
    assert outcomes.count("admitted") > 50 and outcomes.count("refused") > 50


def test_a_dead_replicas_slots_and_reservations_expire_with_their_lease(
    redis_prefix: str,
) -> None:
    clock = Clock()
    policy = Policy(max_concurrency=2, budget_micros=1000)
    dead, close_dead = redis_limiter(redis_prefix, lambda k, s: 0, clock, lease=120)
    live, close_live = redis_limiter(redis_prefix, lambda k, s: 0, clock, lease=120)

    async def go() -> None:
        await dead.admit("k", policy, 1, 400)
        await dead.admit("k", policy, 1, 400)
        await close_dead()  # the replica dies: it never settles
        with pytest.raises(RateLimited) as e:
            await live.admit("k", policy, 1, 100)
        assert e.value.code == "concurrency_limit_exceeded"
        clock.t += 119  # within the lease: still held
        with pytest.raises(RateLimited):
            await live.admit("k", policy, 1, 100)
        clock.t += 2  # past it: both slots and both reservations are free again
        held = [await live.admit("k", policy, 1, 500), await live.admit("k", policy, 1, 500)]
        for adm in held:
            await live.settle(adm, 1, 0)
        assert await live.spent("k", policy) == 0

    run_closing(go(), close_live)


def test_the_period_spend_is_read_once_and_shared(redis_prefix: str) -> None:
    """The first replica to need a period's spend reads it from the usage rows; the others
    use what it stored (even when their own read would differ, as it may while rows are
    still being written)."""
    clock = Clock()
    reads: list[str] = []

    def rows(name: str, value: int) -> Callable[[str, float], int]:
        def since(key: str, start: float) -> int:
            reads.append(name)
            return value

        return since

    a, close_a = redis_limiter(redis_prefix, rows("a", 700), clock)
    b, close_b = redis_limiter(redis_prefix, rows("b", 100), clock)
    policy = Policy(budget_micros=1000, budget_period="daily")

    async def go() -> None:
        await a.admit("k", policy, 1, 200)
        with pytest.raises(BudgetExceeded):  # B sees A's 700 (+200 reserved), not its 100
            await b.admit("k", policy, 1, 200)
        assert await b.spent("k", policy) == 700

    run_closing(go(), close_a, close_b)
    assert reads == ["a"]


def test_every_key_in_redis_expires(redis_prefix: str) -> None:
    clock = Clock()
    lim, close = redis_limiter(redis_prefix, lambda k, s: 0, clock)
    policies = [
        Policy(rpm=10, tpm=1000, max_concurrency=5, budget_micros=10**6),
        Policy(budget_micros=10**6, budget_period="monthly"),
        Policy(budget_micros=10**6, budget_period="daily"),
    ]

    async def go() -> None:
        for i, policy in enumerate(policies):
            adm = await lim.admit(f"k{i}", policy, 100, 1000)
            await lim.settle(adm, 50, 500)
            await lim.admit(f"k{i}", policy, 100, 1000)  # one left in flight

    run_closing(go(), close)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=redis_prefix + "*"))
        assert len(keys) >= 9
        ttls = {k.decode(): client.ttl(k) for k in keys}
    finally:
        client.close()
    assert all(t > 0 for t in ttls.values()), ttls
    assert all(t <= 32 * 86400 for t in ttls.values()), ttls  # a month at most


def test_deployment_capacity_is_shared_and_settles_to_real_tokens(redis_prefix: str) -> None:
    """The router's per-deployment rpm/tpm (its own namespace) across two replicas."""
    clock = Clock()
    a, close_a = redis_limiter(redis_prefix, lambda k, s: 0, clock, namespace="cap")
    b, close_b = redis_limiter(redis_prefix, lambda k, s: 0, clock, namespace="cap")
    policy = Policy(tpm=1000)

    async def go() -> None:
        first: Admission = await a.admit("openai/gpt-5.1#0", policy, 800, 0)
        with pytest.raises(RateLimited):
            await b.admit("openai/gpt-5.1#0", policy, 300, 0)
        await a.settle(first, 200, 0)  # it used 200 of its 800
        second = await b.admit("openai/gpt-5.1#0", policy, 800, 0)
        assert second.headers["x-ratelimit-remaining-tokens"] == "0"

    run_closing(go(), close_a, close_b)
