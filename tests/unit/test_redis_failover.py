"""Redis goes away and comes back, with a redis-server of the test's own (stopping it disturbs
nobody): under ``redis_on_failure: open`` requests keep being admitted with local limits
(one WARNING, not one per request), under ``closed`` they get a 503 in the OpenAI shape;
when Redis returns the limiter switches back by itself (one INFO) and the shared limits are
exact again at once: what the outage held back is replayed, what was admitted locally is
counted, and a spend Redis lost is read again from the usage rows."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import redis

from chatgate.cluster.limiter import RedisLimiter
from chatgate.cluster.link import LimitsUnavailable
from chatgate.errors import RateLimited
from chatgate.limits import Admission, BudgetExceeded, Policy
from tests.redis_fixtures import redis_limiter
from tests.services import PrivateRedis

NOW = 1_764_547_200.0


class Clock:
    t = NOW

    def __call__(self) -> float:
        return self.t


class UsageRows:
    """The usage rows as the database has them: what settled requests cost."""

    def __init__(self) -> None:
        self.cost: dict[str, int] = {}

    def __call__(self, key: str, start: float) -> int:
        return self.cost.get(key, 0)

    async def settle(self, lim: RedisLimiter, adm: Admission, micros: int) -> None:
        await lim.settle(adm, 1, micros)
        self.cost[adm.key_id] = self.cost.get(adm.key_id, 0) + micros


async def until_up(lim: RedisLimiter, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while not lim.link.up:
        assert time.monotonic() - t0 < timeout, "the limiter did not switch back to Redis"
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "chatgate.cluster" and r.levelno == level
    ]


def test_open_policy_serves_with_local_limits_and_is_exact_again_after_a_restart(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatgate.cluster")
    clock, rows = Clock(), UsageRows()
    lim, close = redis_limiter("cgt-failover:", rows, clock, url=private_redis.url)
    conc = Policy(max_concurrency=2)
    budget = Policy(budget_micros=1000)

    async def go() -> None:
        a_c = await lim.admit("c", conc, 1, 0)
        a_m = await lim.admit("m", budget, 1, 300)
        private_redis.stop()

        # the first call finds Redis gone (within its short timeouts), the rest go local
        t0 = time.perf_counter()
        await rows.settle(lim, a_m, 100)
        assert time.perf_counter() - t0 < 1.0 and not lim.link.up
        await lim.settle(a_c, 1, 0)
        t0 = time.perf_counter()
        b_c = [await lim.admit("c", conc, 1, 0), await lim.admit("c", conc, 1, 0)]
        for _ in range(50):  # this replica's own limits hold meanwhile, without waiting
            with pytest.raises(RateLimited):
                await lim.admit("c", conc, 1, 0)
        assert time.perf_counter() - t0 < 0.2
        b_m = await lim.admit("m", budget, 1, 300)  # the local budget: 100 spent so far
        await rows.settle(lim, b_m, 250)
        b_m2 = await lim.admit("m", budget, 1, 400)
        with pytest.raises(BudgetExceeded):  # 350 spent + 400 held + 300 > 1000
            await lim.admit("m", budget, 1, 300)

        private_redis.start()  # a new, empty Redis on the same port
        assert await until_up(lim) < 3.0

        # exact again: the two local requests still running hold both slots in Redis
        with pytest.raises(RateLimited):
            await lim.admit("c", conc, 1, 0)
        await lim.settle(b_c[0], 1, 0)
        await lim.admit("c", conc, 1, 0)
        with pytest.raises(RateLimited):
            await lim.admit("c", conc, 1, 0)
        # the spend Redis lost is read from the rows (350), the local reservation (400) counts
        with pytest.raises(BudgetExceeded):
            await lim.admit("m", budget, 1, 300)
        last = await lim.admit("m", budget, 1, 250)
        await rows.settle(lim, b_m2, 100)
        await rows.settle(lim, last, 0)
        assert await lim.spent("m", budget) == 450 == rows("m", 0)

    try:
        asyncio.run(_closing(go(), close))
    finally:
        private_redis.stop()
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "unreachable" in warnings[0]
    assert "redis_on_failure: open" in warnings[0]
    back = [m for m in records(caplog, logging.INFO) if "reachable again" in m]
    assert len(back) == 1


def test_settlements_held_during_an_outage_are_replayed(private_redis: PrivateRedis) -> None:
    """Redis stops answering but keeps its data (paused): what settled meanwhile reaches it
    when it answers again — the slot is freed, the cost is added to the period's spend."""
    clock = Clock()
    lim, close = redis_limiter("cgt-replay:", lambda key, start: 0, clock, url=private_redis.url)
    conc = Policy(max_concurrency=1)
    budget = Policy(budget_micros=1000)
    admin = redis.Redis(port=private_redis.port)

    async def go() -> None:
        slot = await lim.admit("c", conc, 1, 0)
        held = await lim.admit("m", budget, 1, 500)
        admin.execute_command("CLIENT", "PAUSE", "3500", "ALL")  # past CONFIRM_TIMEOUT
        await lim.settle(slot, 1, 0)  # times out: held back
        assert not lim.link.up
        await lim.settle(held, 1, 400)
        await until_up(lim)
        await lim.admit("c", conc, 1, 0)  # the freed slot
        with pytest.raises(RateLimited):
            await lim.admit("c", conc, 1, 0)
        assert await lim.spent("m", budget) == 400  # replayed (the rows say 0)

    try:
        asyncio.run(_closing(go(), close))
    finally:
        admin.close()


def test_closed_policy_refuses_limited_keys_with_503_until_redis_returns(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatgate.cluster")
    clock = Clock()
    lim, close = redis_limiter(
        "cgt-closed:", lambda key, start: 0, clock, url=private_redis.url, on_failure="closed"
    )
    policy = Policy(rpm=100)

    async def go() -> None:
        await lim.admit("k", policy, 1, 0)
        private_redis.stop()
        for _ in range(20):
            with pytest.raises(LimitsUnavailable) as e:
                await lim.admit("k", policy, 1, 0)
        err = e.value
        assert err.status == 503 and err.headers == {"retry-after": "1"}
        body = json.loads(err.body())["error"]
        assert body["type"] == "service_unavailable" and body["code"] == "limits_unavailable"
        assert "limits" in body["message"] and "127.0.0.1" not in body["message"]
        private_redis.start()
        await until_up(lim)
        adm = await lim.admit("k", policy, 1, 0)
        assert adm.headers["x-ratelimit-remaining-requests"] == "99"  # (a new Redis is empty)

    try:
        asyncio.run(_closing(go(), close))
    finally:
        private_redis.stop()
    warnings = records(caplog, logging.WARNING)
    assert len(warnings) == 1 and "redis_on_failure: closed" in warnings[0]


async def _closing(coro: object, close: object) -> None:
    try:
        await coro  # type: ignore[misc]
    finally:
        await close()  # type: ignore[operator]


def test_a_slow_redis_is_no_outage_budgets_stay_shared(private_redis: PrivateRedis) -> None:
    """A call that outruns the short timeout while Redis still answers (a busy moment, not an
    outage) is retried, not handed to this replica's own limits, where a budget is not
    shared: the link stays up and the reservation is seen by another replica."""
    clock = Clock()
    a, close_a = redis_limiter("cgt-slow:", lambda key, start: 0, clock, url=private_redis.url)
    b, close_b = redis_limiter("cgt-slow:", lambda key, start: 0, clock, url=private_redis.url)
    budget = Policy(budget_micros=1000)
    admin = redis.Redis(port=private_redis.port)

    async def go() -> None:
        await b.admit("s", budget, 1, 0)  # b's connection is up before the pause
        admin.execute_command("CLIENT", "PAUSE", "1000", "ALL")  # > TIMEOUT, < CONFIRM
        adm = await a.admit("s", budget, 1, 600)
        assert a.link.up, "a slow call must not switch to local limits"
        with pytest.raises(BudgetExceeded):  # b sees a's reservation: one shared budget
            await b.admit("s", budget, 1, 600)
        await a.settle(adm, 1, 500)
        assert await b.spent("s", budget) == 500

    async def both() -> None:
        try:
            await go()
        finally:
            await close_b()

    try:
        asyncio.run(_closing(both(), close_a))
    finally:
        admin.close()


def test_a_redis_that_answers_but_refuses_writes_refuses_the_request_not_the_budget(
    private_redis: PrivateRedis,
) -> None:
    """Redis answers pings but refuses the admit script (full memory): that is no outage, so
    under ``open`` the request is not admitted against this replica's own budget view (which
    another replica does not see) but refused with a 503, and the link stays up. Redis keeps a
    script whole under a full memory (it refuses only a script's first write), so settling an
    earlier request still works, and the spend is exact once it takes writes again."""
    clock = Clock()
    lim, close = redis_limiter("cgt-oom:", lambda key, start: 0, clock, url=private_redis.url)
    budget = Policy(budget_micros=1000)
    admin = redis.Redis(port=private_redis.port)

    async def go() -> None:
        adm = await lim.admit("o", budget, 1, 300)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        try:
            for _ in range(3):
                with pytest.raises(LimitsUnavailable) as e:
                    await lim.admit("o", budget, 1, 300)
                assert e.value.status == 503
            assert lim.link.up, "a Redis that answers is no outage"
            await lim.settle(adm, 1, 200)
        finally:
            admin.config_set("maxmemory", "0")
        assert await lim.spent("o", budget) == 200
        nxt = await lim.admit("o", budget, 1, 500)
        with pytest.raises(BudgetExceeded):  # 200 spent + 500 reserved + 500 > 1000
            await lim.admit("o", budget, 1, 500)
        await lim.settle(nxt, 1, 500)
        assert await lim.spent("o", budget) == 700

    try:
        asyncio.run(_closing(go(), close))
    finally:
        admin.close()
