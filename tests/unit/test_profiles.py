"""Model profiles applied in translation: rename, reject with the param named, or drop."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from chatgate.config import Deployment, find_profile, load
from chatgate.errors import InvalidRequest
from chatgate.providers.base import apply_profile
from chatgate.schema import decode_request

CFG = load(None, {})


def run(model: str, dep: Deployment | None = None, **kw: Any) -> tuple[dict[str, Any], list[str]]:
    body = {"model": "public", "messages": [{"role": "user", "content": "hi"}], **kw}
    req = decode_request(msgspec.json.encode(body))
    dep = dep or Deployment(provider="p", model=model)
    out, dropped = apply_profile(req, dep, find_profile(CFG, model), "public")
    return msgspec.to_builtins(out), dropped


def test_max_tokens_renamed_for_gpt5() -> None:
    out, _ = run("gpt-5.1", max_tokens=50)
    assert out["max_completion_tokens"] == 50 and "max_tokens" not in out


def test_max_tokens_kept_for_claude() -> None:
    out, _ = run("claude-sonnet-4-6", max_tokens=50)
    assert out["max_tokens"] == 50


def test_deployment_params_are_defaults_the_client_can_override() -> None:
    dep = Deployment(provider="p", model="gpt-5.1", params={"reasoning_effort": "high"})
    out, _ = run("gpt-5.1", dep)
    assert out["reasoning_effort"] == "high"
    out, _ = run("gpt-5.1", dep, reasoning_effort="none", temperature=0.3)
    assert out["reasoning_effort"] == "none" and out["temperature"] == 0.3


@pytest.mark.parametrize(
    ("model", "kw", "param", "code"),
    [
        ("gpt-5.1", {"reasoning_effort": "low", "temperature": 0.5}, "temperature",
         "unsupported_value"),
        ("gpt-5.3-codex", {"top_p": 0.5}, "top_p", "unsupported_value"),
        ("gpt-5.3-codex", {"logprobs": True}, "logprobs", "unsupported_value"),
        ("gpt-5.3-codex", {"reasoning_effort": "none"}, "reasoning_effort", "unsupported_value"),
        ("gpt-5.2", {"frequency_penalty": 1}, "frequency_penalty", "unsupported_parameter"),
        ("gpt-5.4", {"max_tokens": 128001}, "max_tokens", "integer_above_max_value"),
        ("claude-4-whatever", {"temperature": 1.2}, "temperature", "unsupported_value"),
        ("claude-sonnet-4-6", {"temperature": 0.2, "top_p": 0.2}, "top_p",
         "unsupported_parameter"),
        ("claude-opus-4-7", {"presence_penalty": 1}, "presence_penalty", "unsupported_parameter"),
        ("gemini-2.5-flash", {"logit_bias": {"1": 1}}, "logit_bias", "unsupported_parameter"),
    ],
)  # fmt: skip
def test_rejections_name_the_parameter(
    model: str, kw: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(InvalidRequest) as e:
        run(model, **kw)
    assert e.value.param == param and e.value.code == code and e.value.status == 400


def test_default_values_pass_on_reasoning_models() -> None:
    out, _ = run("gpt-5.3-codex", temperature=1, top_p=1, logprobs=False)
    assert out["temperature"] == 1


def test_drop_unsupported_reports_what_was_dropped() -> None:
    dep = Deployment(provider="p", model="claude-sonnet-4-6", drop_unsupported_params=True)
    out, dropped = run(
        "claude-sonnet-4-6", dep, temperature=0.2, top_p=0.3, seed=4, presence_penalty=1
    )
    assert sorted(dropped) == ["presence_penalty", "seed", "top_p"]
    assert "top_p" not in out and "seed" not in out and out["temperature"] == 0.2


def test_unknown_model_has_no_restrictions() -> None:
    out, dropped = run("my-local-llama", temperature=1.9, presence_penalty=1, max_tokens=10**6)
    assert dropped == [] and out["max_tokens"] == 10**6
