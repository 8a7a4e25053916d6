from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Server


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
