"""Credentials stay where they belong: the client's key never goes upstream, the upstream
key (or the masked form a vendor echoes back) never reaches the client or the log."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import openai
import pytest

from tests.support import Server, ThreadedSandbox

UPSTREAM_KEY = "sk-upstream-GOOD-0123456789abcdef"
WRONG_KEY = "sk-upstream-WRONG-9876543210fedcba"


@pytest.fixture(scope="module")
def vendor() -> Iterator[ThreadedSandbox]:
    sb = ThreadedSandbox(api_key=UPSTREAM_KEY)
    yield sb
    sb.close()


@pytest.fixture(scope="module")
def gw(vendor: ThreadedSandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra = {
        "sandbox": False,
        "providers": {
            "good": {"protocol": "openai", "base_url": vendor.openai_base_url,
                     "api_key": UPSTREAM_KEY},
            "bad": {"protocol": "openai", "base_url": vendor.openai_base_url,
                    "api_key": WRONG_KEY},
        },
        "models": {
            "gpt-5.1": [{"provider": "good", "model": "gpt-5.1"}],
            "broken": [{"provider": "bad", "model": "gpt-5.1"}],
        },
    }  # fmt: skip
    srv = Server(tmp_path_factory.mktemp("cred"), extra).start()
    yield srv
    srv.stop()


def test_client_key_is_replaced_by_provider_key(gw: Server, vendor: ThreadedSandbox) -> None:
    key = gw.create_key("cred")
    c = openai.OpenAI(api_key=key, base_url=gw.url + "/chat", max_retries=0)
    r = c.chat.completions.create(model="gpt-5.1", messages=[{"role": "user", "content": "hi"}])
    assert r.model == "gpt-5.1"  # the vendor answers with a dated snapshot name
    seen = vendor.requests()[-1]
    assert seen["body"]["model"] == "gpt-5.1"
    assert key not in str(seen)
    assert "max_tokens" not in seen["body"]


def test_upstream_auth_failure_leaks_nothing(gw: Server) -> None:
    key = gw.create_key("cred2")
    c = openai.OpenAI(api_key=key, base_url=gw.url + "/chat", max_retries=0)
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    assert e.value.code == "upstream_auth_failed"
    text = e.value.response.text
    for secret in (WRONG_KEY, WRONG_KEY[:8], WRONG_KEY[-4:], UPSTREAM_KEY):
        assert secret not in text
    log = gw.log()
    for secret in (WRONG_KEY, UPSTREAM_KEY, key, gw.master_key):
        assert secret not in log


def test_keys_are_stored_only_as_hashes(gw: Server) -> None:
    key = gw.create_key("hashed")
    raw = gw.stored_bytes()  # the SQLite file and its WAL, or every PostgreSQL row
    assert hashlib.sha256(key.encode()).hexdigest().encode() in raw  # the hash is there
    assert key.encode() not in raw
