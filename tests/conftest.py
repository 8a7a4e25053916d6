from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import (
    BACKEND,
    CLUSTER,
    PG_ADMIN_URL,
    REDIS_URL,
    ServiceUnavailable,
    private_postgres,
    private_redis,
    redact,
    shared,
)
from tests.support import Server

__all__ = ["private_postgres", "private_redis"]  # fixtures of tests/services.py, for every test


def pytest_report_header() -> str:
    if CLUSTER:
        return (
            f"chatgate test backend: cluster (PostgreSQL {redact(PG_ADMIN_URL)}, "
            f"Redis {redact(REDIS_URL)})"
        )
    return f"chatgate test backend: {BACKEND} (SQLite, in-memory limits)"


def pytest_sessionstart(session: pytest.Session) -> None:
    """In the cluster pass a missing PostgreSQL or Redis stops the run with one clear message
    (never a skip); what dead earlier runs left behind is swept first."""
    if not CLUSTER:
        return
    try:
        shared.check()
    except ServiceUnavailable as exc:
        pytest.exit(f"chatgate cluster tests: {exc}", returncode=3)
    shared.sweep_stale()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if CLUSTER:
        shared.cleanup()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One gateway for the read-mostly e2e tests: sandbox vendors, short timeouts."""
    extra = {
        "providers": {
            "openai": {
                "protocol": "openai",
                "base_url": "https://api.openai.com/v1",
                "timeouts": {"connect": 2, "first_byte": 2, "idle": 2, "total": 10},
            },
            "anthropic": {"protocol": "anthropic", "base_url": "https://api.anthropic.com"},
            "gemini": {
                "protocol": "gemini",
                "base_url": "https://generativelanguage.googleapis.com",
            },
        },
    }
    srv = Server(tmp_path_factory.mktemp("gw"), extra).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def api_key(server: Server) -> str:
    return server.create_key("e2e")
