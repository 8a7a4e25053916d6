"""Cluster mode: what the replicas of one gateway share through Redis (``redis_url``).

- :mod:`.limiter` — rate limits, concurrency and budget reservations (atomic Lua scripts),
  for keys and for the deployments' own rpm/tpm ceilings;
- :mod:`.health` — circuit breaker and 429 cooldown states of the deployments;
- :mod:`.bus` — one pub/sub channel: key changes (auth cache invalidation), health changes;
- :mod:`.link` — the connection, short timeouts, and the failure policy while Redis is away.

Imported only when ``redis_url`` is set: a single process never loads redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from .bus import Bus
from .health import SharedHealth
from .limiter import RedisLimiter
from .link import REDIS_ERRORS, LimitsUnavailable, RedisLink

if TYPE_CHECKING:
    from ..auth import Authenticator
    from ..config import Config
    from ..limits import AsyncSpentLoader, SpentLoader
    from ..router import Router

__all__ = ["Bus", "Cluster", "LimitsUnavailable", "RedisLimiter", "RedisLink", "SharedHealth"]


class Cluster:
    """One replica's part of the cluster, built from the config at start-up."""

    def __init__(self, cfg: Config, load_spent: SpentLoader | AsyncSpentLoader) -> None:
        assert cfg.redis_url is not None
        self.link = RedisLink(cfg.redis_url, cfg.redis_prefix, cfg.redis_on_failure)
        self.limiter = RedisLimiter(self.link, load_spent, lease=cfg.redis_lease_seconds)
        # a deployment's rpm/tpm protect the vendor account, not a client's policy: while
        # Redis is away they are kept per replica whatever redis_on_failure says
        self.capacity = RedisLimiter(
            self.link,
            lambda key, start: 0,
            lease=cfg.redis_lease_seconds,
            namespace="cap",
            fail_closed=False,
        )
        self.bus = Bus(self.link)
        self.health: SharedHealth | None = None

    async def start(self, auth: Authenticator, router: Router) -> None:
        await self.link.start()
        auth.on_change = self._key_changed
        self.bus.on("key", lambda msg: auth.evict(str(msg["id"])))
        self.bus.on_connect(auth.clear)  # messages may have been missed while away
        router.capacity = self.capacity
        self.health = SharedHealth(self.link, self.bus, router)
        await self.bus.start(wait=2.0 if self.link.up else 0.0)

    async def _key_changed(self, key_id: str) -> None:
        await self.bus.publish("key", id=key_id)

    async def ready(self) -> bool:
        return await self.link.check()

    async def stop(self) -> None:
        await self.bus.close()
        if self.link.up:  # settlements still held from an outage: a last try
            with contextlib.suppress(*REDIS_ERRORS):
                await asyncio.wait_for(self.limiter.flush(), 2.0)
        await self.link.close()
