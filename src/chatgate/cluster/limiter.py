"""Rate limits and budgets shared by every replica: the :class:`~chatgate.limits.Limiter`
interface on Redis, with the semantics, errors and headers of the in-memory backend.

Each admission is one Lua script (EVALSHA; one round trip), each settlement another, so the
check and the reservation are one atomic step however many replicas race. Per key, under
``{prefix}lim:{<key id>}:``:

========== ================================================ =========================
``req``    ZSET request id -> admitted at (sliding minute)  TTL 61 s
``tok``    ZSET "id:tokens" -> admitted at; ``toksum``       TTL 61 s
``conc``   ZSET request id -> lease expiry                  TTL lease + 60 s
``resv``   ZSET "id:micros" -> lease expiry; ``resvsum``     TTL lease + 60 s
``spent:<period>:<start>``  micro-USD settled in the period  until the period ends + 1 h
                                                            (``total``: 7 days after use)
========== ================================================ =========================

A replica that dies holds concurrency slots and budget reservations only until their lease
runs out (``redis_lease_seconds``; leases are not refreshed, so the lease must outlast the
longest request). A period's spend, when Redis does not have it (first use, expired, Redis
restarted), is read from the usage rows and set only if still absent, so replicas agree.

When Redis is unreachable the link's failure policy applies: ``open`` admits with a local
:class:`~chatgate.limits.MemoryLimiter` (limits per replica for the outage), ``closed``
refuses with 503. Settlements that could not reach Redis are held and replayed, and the
requests admitted locally are counted into Redis ("adopted") when it returns, so the shared
limits are exact again as soon as the link is up.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from enum import Enum
from importlib import resources
from typing import Any, TypeVar

from msgspec import Struct

from ..limits import (
    WINDOW,
    Admission,
    AsyncSpentLoader,
    MemoryLimiter,
    Period,
    Policy,
    SpentLoader,
    budget_exceeded,
    concurrency_exceeded,
    period_end,
    period_start,
    rate_headers,
    rpm_exceeded,
    tokens_never_fit,
    tpm_exceeded,
)
from .link import REDIS_ERRORS, RedisLink, limits_unavailable

log = logging.getLogger("chatgate.cluster")

TOTAL_SPENT_TTL = 7 * 86400  # a total budget's spend is re-read from the rows after a quiet week
PERIODS: tuple[Period, ...] = ("total", "daily", "monthly")
BATCH = 500  # replayed settlements / adopted admissions per pipeline

T = TypeVar("T")


class _Miss(Enum):
    DOWN = "down"
    FAILED = "failed"


def _script(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


class _Local(Struct):
    """A request admitted by the local fallback, to be counted into Redis when it returns."""

    adm: Admission
    policy: Policy
    at: float
    real_tokens: int | None = None  # set when settled


class RedisLimiter:
    def __init__(
        self,
        link: RedisLink,
        load_spent: SpentLoader | AsyncSpentLoader,
        clock: Callable[[], float] = time.time,
        *,
        lease: float = 960.0,
        namespace: str = "lim",
        fail_closed: bool | None = None,
        max_held: int = 100_000,
    ) -> None:
        self.link = link
        self._load = load_spent
        self._clock = clock
        self._lease = lease
        self._lease_int = math.ceil(lease)
        self._ns = f"{link.prefix}{namespace}:"
        self._fail_closed = link.on_failure == "closed" if fail_closed is None else fail_closed
        client = link.client
        self._admit_script = client.register_script(_script("admit.lua"))
        self._settle_script = client.register_script(_script("settle.lua"))
        self._adopt_script = client.register_script(_script("adopt.lua"))
        # the failure policy "open": this replica's own limits while Redis is away
        self._local = MemoryLimiter(load_spent, clock)
        self._in_outage = False
        self._outage: dict[str, _Local] = {}  # lease -> request admitted locally
        self._held: deque[tuple[list[str], list[str]]] = deque()  # settlements to replay
        self._max_held = max_held
        self._dropped = 0
        self._catching_up = asyncio.Lock()
        link.on_recovery(self._catch_up)

    # --- key names -------------------------------------------------------------------

    def _keys(self, key_id: str) -> list[str]:
        base = f"{self._ns}{{{key_id}}}:"  # one hash slot per key (Redis Cluster)
        return [base + k for k in ("req", "tok", "toksum", "conc", "resv", "resvsum")]

    def _spent_key(self, key_id: str, period: Period, now: float) -> str:
        return f"{self._ns}{{{key_id}}}:spent:{period}:{int(period_start(period, now))}"

    def _spent_ttl(self, period: Period, now: float) -> int:
        end = period_end(period, now)
        return TOTAL_SPENT_TTL if end is None else math.ceil(end - now) + 3600

    async def _read_spent(self, key_id: str, start: float) -> int:
        loaded = self._load(key_id, start)
        return int(await loaded if inspect.isawaitable(loaded) else loaded)

    # --- admit -----------------------------------------------------------------------

    async def _on_redis(self, call: Callable[[], Awaitable[T]]) -> T | _Miss:
        """``call()`` on Redis, after what an outage held back has been sent; a failure that
        is no outage is retried once (confirm_down). DOWN: Redis is away; FAILED: it answers
        but the call failed twice."""
        for _ in range(2):
            if not self.link.up:
                return _Miss.DOWN
            try:
                if self._held or self._outage:
                    await self._catch_up()
                return await call()
            except REDIS_ERRORS as exc:
                if await self.link.confirm_down(exc):
                    return _Miss.DOWN
        return _Miss.FAILED

    async def admit(self, key_id: str, policy: Policy, tokens: int, micros: int) -> Admission:
        got = await self._on_redis(lambda: self._admit_shared(key_id, policy, tokens, micros))
        if not isinstance(got, _Miss):
            return got
        # FAILED: refuse this one request rather than admit it against this replica's own
        # (unshared) budget view
        if got is _Miss.FAILED or self._fail_closed:
            raise limits_unavailable()
        return await self._admit_local(key_id, policy, tokens, micros)

    async def _admit_shared(
        self, key_id: str, policy: Policy, tokens: int, micros: int
    ) -> Admission:
        now = self._clock()
        lease = secrets.token_hex(8)
        budget = policy.budget_micros
        period = policy.budget_period
        micros = micros if budget is not None else 0
        keys = [*self._keys(key_id), self._spent_key(key_id, period, now)]
        args = [
            repr(now),
            lease,
            str(_limit(policy.rpm)),
            str(_limit(policy.tpm)),
            str(tokens),
            str(_limit(policy.max_concurrency)),
            str(_limit(budget)),
            str(micros),
            str(self._lease),
            str(self._spent_ttl(period, now)),
            "",
        ]
        res = _strings(await self._admit_script(keys, args))
        if res[0] == "load":  # first use of this period's spend on any replica
            args[-1] = str(await self._read_spent(key_id, period_start(period, now)))
            res = _strings(await self._admit_script(keys, args))
        kind = res[0]
        if kind == "ok":
            headers = rate_headers(
                policy,
                int(res[1]),
                float(res[2]) if res[2] else now,
                float(res[3]),
                float(res[4]) if res[4] else None,
                now,
            )
            return Admission(
                key_id=key_id,
                tokens=tokens,
                micros=micros,
                period_start=period_start(period, now) if budget is not None else 0.0,
                headers=headers,
                lease=lease,
            )
        if kind == "rpm":
            raise rpm_exceeded(policy, float(res[1]) + WINDOW - now)
        if kind == "tpm_never":
            raise tokens_never_fit(policy, tokens)
        if kind == "tpm":
            raise tpm_exceeded(policy, float(res[1]) + WINDOW - now)
        if kind == "concurrency":
            raise concurrency_exceeded(policy)
        if kind == "budget":
            raise budget_exceeded(policy, micros, int(float(res[1])), now)
        raise RuntimeError(f"admit.lua answered {res!r}")

    async def _admit_local(
        self, key_id: str, policy: Policy, tokens: int, micros: int
    ) -> Admission:
        if not self._in_outage:  # a new outage: what an earlier one loaded is stale
            self._in_outage = True
            self._local.forget_spent()
        adm = await self._local.admit(key_id, policy, tokens, micros)
        adm.lease = secrets.token_hex(8)
        adm.local = True
        if len(self._outage) >= 10_000 and len(self._outage) % 10_000 == 0:
            self._prune_outage()
        self._outage[adm.lease] = _Local(adm=adm, policy=policy, at=self._clock())
        return adm

    def _prune_outage(self) -> None:
        horizon = self._clock() - WINDOW
        for lease, entry in list(self._outage.items()):
            if entry.real_tokens is not None and entry.at <= horizon:
                del self._outage[lease]

    # --- settle ----------------------------------------------------------------------

    async def settle(self, adm: Admission, tokens: int, micros: int) -> None:
        if adm.settled:
            return
        if adm.local:
            await self._local.settle(adm, tokens, micros)
            entry = self._outage.get(adm.lease)
            if entry is not None:
                entry.real_tokens = tokens
        adm.settled = True
        now = self._clock()
        keys = [
            *self._keys(adm.key_id)[1:],
            *(self._spent_key(adm.key_id, p, now) for p in PERIODS),
        ]
        args = [adm.lease, str(adm.tokens), str(tokens), str(adm.micros), str(micros)]
        if isinstance(await self._on_redis(lambda: self._settle_script(keys, args)), _Miss):
            self._hold(keys, args)

    def _hold(self, keys: list[str], args: list[str]) -> None:
        if len(self._held) >= self._max_held:
            self._held.popleft()
            self._dropped += 1
            if self._dropped == 1:
                log.warning(
                    "more than %d settlements are waiting for Redis: dropping the oldest "
                    "(their leases expire by themselves; their spend is re-read from the "
                    "usage rows when Redis has lost it)",
                    self._max_held,
                )
        self._held.append((keys, args))

    # --- after an outage -------------------------------------------------------------

    async def flush(self) -> None:
        """Send what an outage held back (at shutdown)."""
        if self._held or self._outage:
            await self._catch_up()

    async def _catch_up(self) -> None:
        """Replay the held settlements, then count the locally admitted requests into
        Redis. Runs before the link is up again, and again if more came in meanwhile."""
        async with self._catching_up:
            while self._held:
                batch = [self._held.popleft() for _ in range(min(BATCH, len(self._held)))]
                try:
                    pipe = self.link.client.pipeline(transaction=False)
                    for keys, args in batch:
                        await self._settle_script(keys, args, client=pipe)
                    await pipe.execute()
                except BaseException:
                    self._held.extendleft(reversed(batch))
                    raise
            if self._outage:
                await self._adopt()
            self._in_outage = False

    async def _adopt(self) -> None:
        now = self._clock()
        entries = list(self._outage.values())
        for i in range(0, len(entries), BATCH):
            pipe = self.link.client.pipeline(transaction=False)
            for e in entries[i : i + BATCH]:
                p, adm = e.policy, e.adm
                running = e.real_tokens is None
                args = [
                    repr(e.at),
                    adm.lease,
                    "1" if p.rpm is not None else "0",
                    "1" if p.tpm is not None else "0",
                    str(adm.tokens if running else e.real_tokens),
                    "1" if p.max_concurrency is not None else "0",
                    str(adm.micros if running else 0),
                    repr(e.at + self._lease) if running else "0",
                    repr(now),
                    str(self._lease_int),
                ]
                await self._adopt_script(self._keys(adm.key_id), args, client=pipe)
            await pipe.execute()
        for e in entries:
            self._outage.pop(e.adm.lease, None)
        if entries:
            log.info("counted %d requests admitted during the Redis outage", len(entries))

    # --- spent -----------------------------------------------------------------------

    async def spent(self, key_id: str, policy: Policy) -> int:
        if self.link.up:
            try:
                return await self._spent_shared(key_id, policy)
            except REDIS_ERRORS as exc:
                self.link.failed(exc)
        return await self._local.spent(key_id, policy)

    async def _spent_shared(self, key_id: str, policy: Policy) -> int:
        now = self._clock()
        period = policy.budget_period
        key = self._spent_key(key_id, period, now)
        client = self.link.client
        got = await client.get(key)
        if got is None:
            loaded = await self._read_spent(key_id, period_start(period, now))
            pipe = client.pipeline(transaction=True)
            pipe.set(key, loaded, nx=True, ex=self._spent_ttl(period, now))
            pipe.get(key)
            got = (await pipe.execute())[1]
        return int(got)


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _strings(reply: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in reply]
