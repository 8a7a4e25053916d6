"""Failed authentications from one address are slowed down past a threshold."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from chatgate.auth import Authenticator
from chatgate.errors import AuthenticationError
from chatgate.store import Store


def test_failed_auth_bursts_from_one_address_slow_down(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    asyncio.run(store.migrate())
    auth = Authenticator(store, "mk", failures_per_minute=3)

    async def attempt(client: str) -> float:
        t = time.perf_counter()
        with pytest.raises(AuthenticationError):
            await auth.authenticate(b"Bearer sk-cg-guess", client)
        return time.perf_counter() - t

    async def go() -> tuple[list[float], float]:
        slow = [await attempt("10.0.0.9") for _ in range(8)]
        other = await attempt("10.0.0.10")
        return slow, other

    slow, other = asyncio.run(go())
    assert max(slow[:3]) < 0.05  # within the allowance: answered at once
    assert slow[3] >= 0.05 and slow[7] >= 0.25  # then each failure waits longer
    assert other < 0.05  # another address is not affected


def test_valid_key_and_master_key(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    asyncio.run(store.migrate())
    key, rec = asyncio.run(store.keys.create("k", owner="team"))
    auth = Authenticator(store, "mk")
    got = asyncio.run(auth.authenticate(f"Bearer {key}".encode()))
    assert got.id == rec.id and got.owner == "team"
    assert asyncio.run(auth.authenticate(b"Bearer mk")).id == "master"
    assert asyncio.run(store.keys.find(key)) is None  # stored by hash only
