"""Deployment health shared by the replicas: an open circuit or a 429 cooldown decided by one
replica is applied by all of them.

Each state is a Redis key that expires with the state (``{prefix}health:<model>:<deployment>:
open|cooling``, value: until when, wall-clock), so a replica starting, or reconnecting after
an outage, reads what is current; a message on the bus tells the running ones at once.
Publishing is fire and forget: the request that tripped the circuit does not wait for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..router import Router, Target
from .bus import Bus, encode
from .link import REDIS_ERRORS, RedisLink

log = logging.getLogger("chatgate.cluster")

STATES = ("open", "cooling")


class SharedHealth:
    def __init__(
        self, link: RedisLink, bus: Bus, router: Router, wall: Callable[[], float] = time.time
    ) -> None:
        self.link = link
        self.bus = bus
        self.router = router
        self._wall = wall
        router.on_health = self._changed
        bus.on("health", self._received)
        bus.on_connect(self.load)

    def key(self, model: str, deployment: str, state: str) -> str:
        return f"{self.link.prefix}health:{model}:{deployment}:{state}"

    def _changed(self, t: Target, state: str, until: float) -> None:
        if self.link.up:
            self.link.spawn(self._publish(t.public_model, t.name, state, until))

    async def _publish(self, model: str, deployment: str, state: str, until: float) -> None:
        pipe = self.link.client.pipeline(transaction=False)
        if state == "closed":
            pipe.delete(self.key(model, deployment, "open"))
        else:
            ms = int((until - self._wall()) * 1000)
            if ms <= 0:
                return
            pipe.set(self.key(model, deployment, state), repr(until), px=ms)
        pipe.publish(
            self.bus.channel,
            encode(
                "health",
                self.bus.origin,
                model=model,
                deployment=deployment,
                state=state,
                until=until,
            ),
        )
        try:
            await pipe.execute()
        except REDIS_ERRORS as exc:
            self.link.failed(exc)

    def _received(self, msg: dict[str, Any]) -> None:
        self.router.apply_shared(
            str(msg["model"]), str(msg["deployment"]), str(msg["state"]), float(msg["until"])
        )

    async def load(self) -> None:
        """Apply the states other replicas have set (start-up, and after each reconnect)."""
        names = [
            (t.public_model, t.name, state)
            for targets in self.router.routes.values()
            for t in targets
            for state in STATES
        ]
        if not names:
            return
        values = await self.link.client.mget([self.key(*n) for n in names])
        applied = 0
        for (model, deployment, state), value in zip(names, values, strict=True):
            if value is not None:
                applied += self.router.apply_shared(model, deployment, state, float(value))
        if applied:
            log.info("applied %d deployment states shared by other replicas", applied)
