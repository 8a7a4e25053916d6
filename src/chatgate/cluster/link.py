"""One process's connection to Redis, and what it knows of Redis being reachable.

Redis calls use short timeouts: a Redis that does not answer must cost a request a fraction of
a second once, not every time. The first failure marks the link *down* (one WARNING); from
then on callers do not touch Redis at all but use their fallback (the failure policy), while
a background probe pings Redis every half second. When it answers again the recovery
callbacks run (replaying what was held back, re-reading shared state) and the link is *up*
again (one INFO).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Literal
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..errors import GatewayError

log = logging.getLogger("chatgate.cluster")

TIMEOUT = 0.5  # seconds: connect and socket timeout of every Redis call
# A failed call is an outage only if a ping on a separate connection with this much time
# also fails: a burst that outruns the short timeout (a busy event loop, a pool filling up)
# must not switch a replica to its own limits, where budgets are not shared.
CONFIRM_TIMEOUT = 2.0
POOL_SIZE = 64  # connections per process; a burst past it waits for one (POOL_WAIT)
POOL_WAIT = 1.0
PROBE_INTERVAL = 0.5  # seconds between pings while Redis is down

# What makes Redis "unreachable" for us. A Redis that answers with an error (a full memory,
# a read-only replica) cannot hold our counters either, so every RedisError counts.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)

FailurePolicy = Literal["open", "closed"]


class LimitsUnavailable(GatewayError):
    """``redis_on_failure: closed`` while Redis is unreachable: a key with limits is refused."""

    status = 503
    type = "service_unavailable"
    code = "limits_unavailable"


def limits_unavailable() -> LimitsUnavailable:
    return LimitsUnavailable(
        "Rate limits and budgets are unavailable right now (the gateway cannot reach its "
        "shared limit store), so requests of keys with limits are refused; try again shortly.",
        headers={"retry-after": "1"},
    )


def where(url: str) -> str:
    """host:port (or the socket path) of a Redis URL: never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


def make_client(
    url: str, *, retries: int = 1, timeout: float | None = TIMEOUT, pool_size: int = POOL_SIZE
) -> Redis:
    """A client that fails fast: one retry on a dropped connection (a pooled socket that
    Redis closed while idle, or a restart), none on a timeout (the command may have run).
    Its pool is bounded and waits for a free connection (redis-py's default pool refuses
    past 100 at once, which a burst of requests reaches)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=POOL_WAIT,
        socket_timeout=timeout,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
    )
    return Redis.from_pool(pool)


class RedisLink:
    def __init__(
        self,
        url: str,
        prefix: str,
        on_failure: FailurePolicy = "open",
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.on_failure: FailurePolicy = on_failure
        self.where = where(url)
        self.client = make_client(url)
        self._prober = make_client(url, timeout=CONFIRM_TIMEOUT, pool_size=2)
        self.up = True  # until the first failure (start() checks)
        self._probe_interval = probe_interval
        self._recovery: list[Callable[[], Awaitable[None]]] = []
        self._probe: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def on_recovery(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` after an outage, before the link counts as up again (a Redis
        error in it keeps the link down; the next probe runs it again)."""
        self._recovery.append(callback)

    async def start(self) -> None:
        try:
            await self.client.ping()
        except REDIS_ERRORS as exc:
            self.failed(exc)
        else:
            log.info("cluster mode: Redis at %s (prefix %r)", self.where, self.prefix)

    async def confirm_down(self, exc: BaseException) -> bool:
        """A call failed with ``exc``: is Redis really unreachable? Only a failed ping on a
        connection of its own says so (then the failure policy takes over); otherwise the
        caller retries its call once."""
        if not self.up:
            return True
        try:
            await asyncio.wait_for(self._prober.ping(), CONFIRM_TIMEOUT)
        except REDIS_ERRORS:
            self.failed(exc)
            return True
        log.debug("a Redis call failed (%s) but Redis answers: retrying it", type(exc).__name__)
        return False

    def failed(self, exc: BaseException) -> None:
        """A Redis call failed: switch to the failure policy (logged once per outage)."""
        if self._closed or not self.up:
            return
        self.up = False
        then = (
            "limits and budgets are enforced by each replica on its own until it returns"
            if self.on_failure == "open"
            else "requests of keys with limits or budgets get 503 until it returns"
        )
        log.warning(
            "Redis at %s is unreachable (%s: %s): %s (redis_on_failure: %s)",
            self.where,
            type(exc).__name__,
            exc,
            then,
            self.on_failure,
        )
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._probe_interval)
            try:
                await self.client.ping()
                for callback in self._recovery:
                    await callback()
            except REDIS_ERRORS as exc:
                log.debug("Redis still unreachable: %s: %s", type(exc).__name__, exc)
                continue
            except Exception:
                log.exception("recovery after a Redis outage failed; retrying")
                continue
            self.up = True
            log.info("Redis at %s is reachable again: limits are shared again", self.where)
            return

    async def check(self) -> bool:
        """Is Redis reachable now (for /ready)? A failed ping marks the link down."""
        if not self.up:
            return False
        try:
            await self.client.ping()
        except REDIS_ERRORS as exc:
            self.failed(exc)
        return self.up

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Fire and forget (the request path never waits for Redis to hear of something)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for task in (self._probe, *self._tasks):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        with contextlib.suppress(*REDIS_ERRORS):
            await self.client.aclose()
        with contextlib.suppress(*REDIS_ERRORS):
            await self._prober.aclose()
