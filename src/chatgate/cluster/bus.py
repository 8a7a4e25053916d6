"""One pub/sub channel (``{prefix}events``) that tells every replica what changed elsewhere:
a key updated, rotated or revoked (drop it from the auth cache), a deployment's circuit
opened or closed or a 429 cooldown (apply it to the local router).

Pub/sub delivers only to those listening at the time, so the subscriber treats every
(re)connection as "I may have missed something": its ``on_connect`` callbacks run after each
subscription (the auth cache is cleared; deployment states are re-read from their keys).
It reconnects by itself, every half second while Redis is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from .link import PROBE_INTERVAL, REDIS_ERRORS, RedisLink, make_client

log = logging.getLogger("chatgate.cluster")

Handler = Callable[[dict[str, Any]], None]


def channel(prefix: str) -> str:
    return f"{prefix}events"


def encode(kind: str, origin: str, **fields: Any) -> bytes:
    return msgspec.json.encode({"kind": kind, "from": origin, **fields})


class Bus:
    def __init__(self, link: RedisLink, reconnect_interval: float = PROBE_INTERVAL) -> None:
        self.link = link
        self.channel = channel(link.prefix)
        self.origin = os.urandom(6).hex()  # this process: its own messages are skipped
        # its own connection, without retries: a reconnection must be seen, not papered over
        self._client = make_client(link.url, retries=0, timeout=None, pool_size=2)
        self._handlers: dict[str, Handler] = {}
        self._on_connect: list[Callable[[], Awaitable[None] | None]] = []
        self._task: asyncio.Task[None] | None = None
        self._interval = reconnect_interval
        self.connected = asyncio.Event()
        self.received = 0
        self._closing = False

    def on(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    def on_connect(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        self._on_connect.append(callback)

    async def publish(self, kind: str, **fields: Any) -> bool:
        """Tell the other replicas; False if Redis could not be reached (logged)."""
        try:
            await self.link.client.publish(self.channel, encode(kind, self.origin, **fields))
        except REDIS_ERRORS as exc:
            self.link.failed(exc)
            log.warning("could not tell the other replicas (%s): %s", kind, type(exc).__name__)
            return False
        return True

    async def start(self, wait: float = 2.0) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen())
        with contextlib.suppress(asyncio.TimeoutError):  # Redis down: serve, keep trying
            await asyncio.wait_for(self.connected.wait(), wait)

    async def _listen(self) -> None:
        while not self._closing:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                for callback in self._on_connect:
                    got = callback()
                    if got is not None:
                        await got
                self.connected.set()
                while not self._closing:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._dispatch(msg["data"])
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as exc:
                if self.connected.is_set():
                    log.debug("pub/sub connection lost: %s: %s", type(exc).__name__, exc)
                    self.link.failed(exc)
                self.connected.clear()
            except Exception:
                log.exception("pub/sub listener failed; reconnecting")
                self.connected.clear()
            finally:
                with contextlib.suppress(*REDIS_ERRORS, RuntimeError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
            if not self._closing:
                await asyncio.sleep(self._interval)

    def _dispatch(self, data: bytes) -> None:
        try:
            msg = msgspec.json.decode(data)
            if not isinstance(msg, dict) or msg.get("from") == self.origin:
                return
            handler = self._handlers.get(str(msg.get("kind")))
            if handler is not None:
                self.received += 1
                handler(msg)
        except Exception:  # a malformed message must not stop the listener
            log.exception("could not apply a pub/sub message")

    async def close(self) -> None:
        # Not by cancellation alone: on Python 3.11 a cancel() that lands as one of redis-py's
        # read timeouts expires is swallowed; the flag ends the loop within a second anyway.
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2.0)
        with contextlib.suppress(*REDIS_ERRORS):
            await self._client.aclose()


def publish_sync(url: str, prefix: str, kind: str, **fields: Any) -> bool:
    """For the CLI (no event loop, no subscriber): one message, then done."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        client.publish(channel(prefix), encode(kind, "cli", **fields))
    except redis.RedisError:
        return False
    finally:
        client.close()
    return True
