"""Databases for the storage tests: a SQLite file, or a fresh PostgreSQL database per test.

PostgreSQL is the shared server of the cluster pass (tests/services.py). In the default
(embedded) run a PostgreSQL test is skipped, with the reason, when that server does not
answer; in the cluster pass (``CHATGATE_TEST_BACKEND=cluster``) it fails instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chatgate.store import UsageRow
from tests.services import CLUSTER, PG_ADMIN_URL, pg_connect, redact, shared

T = TypeVar("T")
BACKENDS = ("sqlite", "postgresql")


@functools.cache
def postgres_problem() -> str | None:
    """Why the shared PostgreSQL cannot be used, or None."""
    try:
        with pg_connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        first = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {first[0] if first else ''}"
    return None


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    msg = (
        f"PostgreSQL at {redact(PG_ADMIN_URL)} (CHATGATE_TEST_POSTGRES) does not answer ({problem})"
    )
    if CLUSTER:
        pytest.fail(f"{msg}; the cluster pass needs it (.ci/run starts it)", pytrace=False)
    pytest.skip(f"{msg}; PostgreSQL storage tests skipped (they fail in the cluster pass)")


def new_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    require_postgres()
    return shared.new_database(migrated=False)


def drop(url: str) -> None:
    shared.drop_database(url)
    shared.databases.remove(url.rsplit("/", 1)[1])


@contextlib.contextmanager
def pg_database(migrated: bool = False) -> Iterator[str]:
    """A new database on the shared PostgreSQL (skipped or failed if it does not answer),
    dropped afterwards."""
    require_postgres()
    url = shared.new_database(migrated=migrated)
    try:
        yield url
    finally:
        drop(url)


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend (a new PostgreSQL database, dropped afterwards)."""
    url = new_url(request.param, tmp_path)
    yield url
    if request.param == "postgresql":
        drop(url)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """One event loop per test: asyncpg connections belong to the loop that made them."""
    return asyncio.run(coro)


def row(request_id: str, **fields: Any) -> UsageRow:
    """A usage row with plausible defaults."""
    base: dict[str, Any] = dict(
        created=1_764_547_200.0,  # 2025-12-01 00:00 UTC
        key_id="key_a",
        model="gpt-5.1",
        provider="openai",
        upstream_model="gpt-5.1",
        stream=False,
        status=200,
        error_type=None,
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        cached_tokens=0,
        reasoning_tokens=0,
        latency_ms=12.5,
        ttft_ms=None,
        upstream_request_id=None,
        owner="team",
        cost_micros=1000,
    )
    base.update(fields)
    return UsageRow(request_id=request_id, **base)
