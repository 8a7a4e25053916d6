"""The limiter interface, run against both backends — in memory, and Redis (the shared one at
127.0.0.1:6379 under a random prefix; skipped with a reason when it is not running, a failure
in the cluster pass): exact rpm/tpm over sliding minutes, exact concurrency, budgets that
never overspend, UTC period rollover. Time is an injected clock, passed into the Redis
scripts too."""

from __future__ import annotations

import asyncio
import calendar
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from chatgate.errors import RateLimited
from chatgate.limits import (
    BudgetExceeded,
    Limiter,
    MemoryLimiter,
    Policy,
    SpentLoader,
    go_duration,
    period_end,
    period_start,
)
from tests.redis_fixtures import redis_limiter, redis_prefix

__all__ = ["redis_prefix"]  # a fixture

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


class Clock:
    def __init__(self, t: float = 1_764_547_200.0) -> None:  # 2025-12-01T00:00:00Z
        self.t = t

    def __call__(self) -> float:
        return self.t


LimiterFactory = Callable[[Clock, dict[str, int]], Limiter]


def usage_rows(clock: Clock, spent: dict[str, int]) -> SpentLoader:
    """What the usage rows say: ``spent`` was used just before the test's start (so a period
    beginning later has spent nothing yet)."""
    at = clock.t - 1

    def since(key: str, start: float) -> int:
        return spent.get(key, 0) if start <= at else 0

    return since


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    """One event loop per test (a Redis connection belongs to the loop that opened it)."""
    with asyncio.Runner() as runner:
        yield runner.run


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest, run: Run[Any]) -> Iterator[LimiterFactory]:
    closing: list[Callable[[], Awaitable[None]]] = []

    def factory(clock: Clock, spent: dict[str, int]) -> Limiter:
        if request.param == "memory":
            return MemoryLimiter(usage_rows(clock, spent), clock=clock)
        prefix: str = request.getfixturevalue("redis_prefix")
        lim, close = redis_limiter(prefix, usage_rows(clock, spent), clock)
        closing.append(close)
        return lim

    yield factory
    for close in closing:
        run(close())


def test_rpm_is_exact_over_every_sliding_minute(make: LimiterFactory, run: Run[Any]) -> None:
    clock = Clock()
    lim = make(clock, {})
    policy = Policy(rpm=50)
    rnd = random.Random(7)
    admitted: list[float] = []

    async def go() -> None:
        for _ in range(3000):  # ~17 attempts a second for three minutes
            clock.t += rnd.expovariate(17)
            try:
                adm = await lim.admit("k", policy, 1, 0)
            except RateLimited as e:
                assert e.code == "rate_limit_exceeded" and int(e.headers["retry-after"]) >= 1
                continue
            admitted.append(clock.t)
            await lim.settle(adm, 1, 0)

    run(go())
    # no 60-second window holds more than rpm admissions, and the limit is used (>= 99%)
    j = 0
    worst = 0
    for i, t in enumerate(admitted):
        while admitted[j] <= t - 60:
            j += 1
        worst = max(worst, i - j + 1)
    assert worst == 50
    minutes = (admitted[-1] - admitted[0]) / 60
    assert len(admitted) >= 0.99 * 50 * minutes


def test_tpm_counts_estimates_then_real_usage(make: LimiterFactory, run: Run[Any]) -> None:
    clock = Clock()
    lim = make(clock, {})
    policy = Policy(tpm=1000)

    async def go() -> None:
        a = await lim.admit("k", policy, 600, 0)
        assert a.headers["x-ratelimit-remaining-tokens"] == "400"
        with pytest.raises(RateLimited) as e:
            await lim.admit("k", policy, 500, 0)
        assert e.value.type == "tokens"
        await lim.settle(a, 100, 0)  # it used far less than its estimate
        b = await lim.admit("k", policy, 500, 0)
        assert b.headers["x-ratelimit-remaining-tokens"] == "400"
        with pytest.raises(RateLimited):
            await lim.admit("k", policy, 1001, 0)  # can never fit
        clock.t += 61
        c = await lim.admit("k", policy, 1000, 0)
        assert c.headers["x-ratelimit-remaining-tokens"] == "0"

    run(go())


def test_tpm_holds_within_one_percent_under_concurrent_load(
    make: LimiterFactory, run: Run[Any]
) -> None:
    clock = Clock()
    lim = make(clock, {})
    policy = Policy(tpm=20_000)
    rnd = random.Random(3)
    used: list[tuple[float, int]] = []

    async def one() -> None:
        est = rnd.randint(50, 800)
        try:
            adm = await lim.admit("k", policy, est, 0)
        except RateLimited:
            return
        await asyncio.sleep(0)
        real = rnd.randint(10, est)
        used.append((clock.t, real))
        await lim.settle(adm, real, 0)

    async def go() -> None:
        for _ in range(1800):
            clock.t += 0.1
            await asyncio.gather(*(one() for _ in range(3)))

    run(go())
    j, total, worst = 0, 0, 0
    for t, n in used:
        total += n
        while used[j][0] <= t - 60:
            total -= used[j][1]
            j += 1
        worst = max(worst, total)
    assert worst <= 20_000 * 1.01


def test_concurrency_cap_is_exact(make: LimiterFactory, run: Run[Any]) -> None:
    lim = make(Clock(), {})
    policy = Policy(max_concurrency=3)

    async def go() -> None:
        held = [await lim.admit("k", policy, 1, 0) for _ in range(3)]
        with pytest.raises(RateLimited) as e:
            await lim.admit("k", policy, 1, 0)
        assert e.value.code == "concurrency_limit_exceeded"
        await lim.settle(held[0], 1, 0)
        await lim.settle(held[0], 1, 0)  # settling twice must not free two slots
        held[0] = await lim.admit("k", policy, 1, 0)
        with pytest.raises(RateLimited):
            await lim.admit("k", policy, 1, 0)
        assert await lim.admit("other", policy, 1, 0)  # per key

    run(go())


def test_budget_never_overspent_by_racing_requests(make: LimiterFactory, run: Run[Any]) -> None:
    lim = make(Clock(), {"k": 100})
    policy = Policy(budget_micros=10_000)
    rnd = random.Random(11)

    async def one() -> int:
        worst = rnd.randint(200, 900)
        try:
            adm = await lim.admit("k", policy, 10, worst)
        except BudgetExceeded as e:
            assert e.status == 429 and e.code == "insufficient_quota"
            return 0
        await asyncio.sleep(rnd.random() / 1000)
        real = rnd.randint(0, worst)
        await lim.settle(adm, 10, real)
        return real

    async def go() -> int:
        return sum(await asyncio.gather(*(one() for _ in range(300))))

    total = run(go())
    spent = run(lim.spent("k", policy))
    assert spent == 100 + total <= 10_000


def test_budget_period_rolls_over_at_utc_boundaries(make: LimiterFactory, run: Run[Any]) -> None:
    start = calendar.timegm((2026, 1, 31, 23, 59, 0))
    clock = Clock(start)
    lim = make(clock, {"d": 900, "m": 900})
    daily = Policy(budget_micros=1000, budget_period="daily")
    monthly = Policy(budget_micros=1000, budget_period="monthly")

    async def go() -> None:
        for key, policy in (("d", daily), ("m", monthly)):
            with pytest.raises(BudgetExceeded) as e:
                await lim.admit(key, policy, 1, 200)
            assert int(e.value.headers["retry-after"]) == 61  # until 00:00 UTC
        clock.t = calendar.timegm((2026, 2, 1, 0, 0, 0))  # midnight and a new month
        for key, policy in (("d", daily), ("m", monthly)):
            adm = await lim.admit(key, policy, 1, 200)
            await lim.settle(adm, 1, 150)
            assert await lim.spent(key, policy) == 150
        clock.t = calendar.timegm((2026, 2, 2, 0, 0, 1))  # next day, same month
        assert await lim.spent("d", daily) == 0
        assert await lim.spent("m", monthly) == 150

    run(go())


def test_total_budget_has_no_retry_after(make: LimiterFactory, run: Run[Any]) -> None:
    lim = make(Clock(), {"k": 1000})
    with pytest.raises(BudgetExceeded) as e:
        run(lim.admit("k", Policy(budget_micros=1000), 1, 1))
    assert "retry-after" not in e.value.headers


def test_period_helpers() -> None:
    t = calendar.timegm((2026, 12, 31, 15, 0, 0))
    assert period_start("daily", t) == calendar.timegm((2026, 12, 31, 0, 0, 0))
    assert period_end("monthly", t) == calendar.timegm((2027, 1, 1, 0, 0, 0))
    assert period_start("total", t) == 0 and period_end("total", t) is None
    assert [go_duration(x) for x in (0.12, 1.0, 360.0)] == ["120ms", "1s", "6m0s"]


def test_window_matches_a_naive_model_through_compaction() -> None:
    """The flat-array window (expiry by head index, bulk compaction) keeps exactly the
    entries of the last minute, with the right total, as a plain list would."""
    import random

    from chatgate.limits import WINDOW, _Window

    rnd = random.Random(7)
    w, model = _Window(), []
    now = 0.0
    for _ in range(20_000):
        now += rnd.random() * 0.02
        if rnd.random() < 0.02:
            now += rnd.random() * 90  # a pause: everything may expire at once
        w.expire(now - WINDOW)
        model = [(t, a) for t, a in model if t > now - WINDOW]
        amount = float(rnd.randint(1, 500))
        w.add(now, amount)
        model.append((now, amount))
        if rnd.random() < 0.1 and model:
            old = model[rnd.randrange(len(model))][1]
            w.adjust(old, old + 1)
            i = max(i for i, (_, a) in enumerate(model) if a == old)
            model[i] = (model[i][0], old + 1)
        assert len(w) == len(model)
        assert w.first() == model[0][0]
        assert abs(w.total - sum(a for _, a in model)) < 1e-6
        assert len(w.times) <= len(model) + 4096  # compacted, not growing without bound
