"""Property: every valid OpenAI conversation the gateway accepts translates, for each
upstream protocol, into a request that the protocol's strict emulator accepts too."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatgate.config import Deployment, Provider, find_profile, load
from chatgate.errors import InvalidRequest
from chatgate.providers import anthropic, gemini, openai_responses
from chatgate.providers.base import Context, apply_profile
from chatgate.schema import decode_request
from tests.strategies import conversation
from tests.support import ThreadedSandbox

CFG = load(None, {})
KEY = "sk-prop-test-key"
PROTOCOLS: dict[str, tuple[ModuleType, str, list[str]]] = {
    # protocol: (translator, the emulator's base path, upstream models)
    "anthropic": (
        anthropic,
        "",
        [
            "claude-sonnet-4-5",
            "claude-sonnet-4-6",
            "claude-haiku-4-5-20251001",
            "claude-opus-4-6",
            "claude-opus-4-7",
        ],
    ),
    "gemini": (
        gemini,
        "",
        [
            "gemini-3-pro-preview",
            "gemini-3.1-pro-preview",
            "gemini-3-flash-preview",
            "gemini-2.5-pro",
            "gemini-2.5-flash",
        ],
    ),
    "openai_responses": (openai_responses, "/v1", ["gpt-5.3-codex", "gpt-5.1"]),
}


@pytest.fixture(scope="module")
def emulator() -> Iterator[ThreadedSandbox]:
    sb = ThreadedSandbox(api_key=KEY)
    yield sb
    sb.close()


def _check(emulator: ThreadedSandbox, protocol: str, body: dict[str, Any], data: Any) -> None:
    module, path, models = PROTOCOLS[protocol]
    model = data.draw(st.sampled_from(models))
    req = decode_request(msgspec.json.encode(body))  # the generator makes valid requests only
    dep = Deployment(provider="p", model=model, protocol=protocol)  # type: ignore[arg-type]
    profile = find_profile(CFG, model)
    ctx = Context(response_id="chatcmpl-p", created=0, public_model="pub", include_usage=False)
    prov = Provider(protocol=protocol, base_url=emulator.base_url + path, api_key=KEY)  # type: ignore[arg-type]
    try:
        req, _ = apply_profile(req, dep, profile, "pub", module.UNSUPPORTED, module.MIN_OUTPUT)
        ureq = module.build_request(req, dep, prov, ctx, profile)
    except InvalidRequest:
        return  # refused by the gateway itself, with a 400 naming the parameter
    r = httpx.post(ureq.url, content=ureq.body, headers=ureq.headers, timeout=10)
    assert r.status_code == 200, (model, r.text, ureq.body.decode())


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=conversation(), data=st.data())
def test_translated_requests_pass_strict_validation(
    emulator: ThreadedSandbox, protocol: str, body: dict[str, Any], data: Any
) -> None:
    _check(emulator, protocol, body, data)
