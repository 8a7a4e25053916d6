"""Redis for the cluster-mode unit tests: the shared server of the test suite (tests/services.py),
each test under a random key prefix deleted afterwards.

Without a Redis answering there, a test that needs it is skipped with the reason in the
embedded pass, and fails in the cluster pass (CHATGATE_TEST_BACKEND=cluster). Tests that stop
and restart Redis use the private_redis fixture (a redis-server of their own) instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from chatgate.cluster.limiter import RedisLimiter
from chatgate.cluster.link import FailurePolicy, RedisLink
from chatgate.limits import SpentLoader
from tests.services import CLUSTER, REDIS_URL, _unlink_matching, redact, shared


def shared_redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        why = (
            f"needs Redis at {redact(REDIS_URL)} (CHATGATE_TEST_REDIS), which does not "
            f"answer ({type(exc).__name__})"
        )
        if CLUSTER:
            pytest.fail(f"cluster pass: {why}; .ci/run starts it", pytrace=False)
        pytest.skip(f"{why}: start redis-server, or run the cluster pass with .ci/run")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A random key prefix on the shared Redis; its keys are deleted after the test."""
    shared_redis_url()
    prefix = shared.new_prefix()
    yield prefix
    delete_prefix(REDIS_URL, prefix)


def delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        _unlink_matching(client, prefix.replace("*", "\\*").replace("?", "\\?") + "*")
    finally:
        client.close()


def redis_limiter(
    prefix: str,
    loader: SpentLoader,
    clock: Callable[[], float],
    url: str = REDIS_URL,
    on_failure: FailurePolicy = "open",
    **kw: Any,
) -> tuple[RedisLimiter, Callable[[], Awaitable[None]]]:
    """A RedisLimiter of its own link (a replica), and how to close it (in the test's loop)."""
    link = RedisLink(url, prefix, on_failure, probe_interval=0.1)
    return RedisLimiter(link, loader, clock, **kw), link.close
