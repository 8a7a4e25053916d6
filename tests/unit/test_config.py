from __future__ import annotations

from pathlib import Path

import pytest

from chatgate.config import ConfigError, find_profile, load

PINNED = """
listen: {host: 127.0.0.1, port: 8080}
database_url: sqlite:///./chatgate.db
master_key: ${CHATGATE_MASTER_KEY}
providers:
  openai:    {protocol: openai,    base_url: https://api.openai.com/v1,                 api_key: ${OPENAI_API_KEY}}
  anthropic: {protocol: anthropic, base_url: https://api.anthropic.com,                 api_key: ${ANTHROPIC_API_KEY}}
  gemini:    {protocol: gemini,    base_url: https://generativelanguage.googleapis.com, api_key: ${GEMINI_API_KEY}}
models:
  gpt-5.1:
    - {provider: openai, model: gpt-5.1}
  claude-sonnet-4-6:
    - {provider: anthropic, model: claude-sonnet-4-6}
"""  # noqa: E501


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_pinned_shape_loads_with_env_interpolation(tmp_path: Path) -> None:
    env = {"CHATGATE_MASTER_KEY": "mk", "OPENAI_API_KEY": "sk-o"}
    cfg = load(write(tmp_path, PINNED), env)
    assert cfg.master_key == "mk"
    assert cfg.providers["openai"].api_key == "sk-o"
    assert cfg.providers["anthropic"].api_key is None  # unset variable -> absent
    assert list(cfg.models) == ["gpt-5.1", "claude-sonnet-4-6"]
    assert cfg.sandbox is False  # a config file never falls back to fake answers silently


def test_default_catalog_has_the_18_documented_models() -> None:
    cfg = load(None, {})
    assert len(cfg.models) == 18
    assert cfg.models["gemini-3-pro"][0].model == "gemini-3-pro-preview"
    assert cfg.models["claude-4.5"][0].model == "claude-sonnet-4-5"
    assert cfg.models["gpt-5.1-thinking"][0].params == {"reasoning_effort": "high"}
    assert cfg.models["gpt-5.3-codex"][0].protocol == "openai_responses"
    assert cfg.models["gpt-5.1-all"][0].options == {"web_search": True}
    assert cfg.sandbox == "auto"


def test_default_and_nested_variables(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, "database_url: sqlite:///${DIR:-/tmp}/x.db\n"), {})
    assert cfg.database_url == "sqlite:////tmp/x.db"
    cfg = load(write(tmp_path, "database_url: sqlite:///${DIR:-/tmp}/x.db\n"), {"DIR": "/d"})
    assert cfg.database_url == "sqlite:////d/x.db"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("listen: {port: abc}", "listen.port: Expected `int`"),
        ("listen: {port: 70000}", "listen.port: must be 1..65535"),
        ("lisen: {}", "lisen: unknown key"),
        ("providers:\n  openai: {protocol: openaii, base_url: http://x}",
         "providers.openai.protocol: Invalid enum value 'openaii'"),
        ("providers:\n  openai: {protocol: openai}", "providers.openai.base_url: required key"),
        ("providers:\n  openai: {protocol: openai, base_url: api.openai.com}",
         "providers.openai.base_url: must start with http"),
        ("models:\n  m:\n    - {provider: nope, model: x}",
         "models.m[0].provider: unknown provider"),
        ("models:\n  m:\n    - {provider: openai, model: x, params: {temprature: 1}}",
         "models.m[0].params.temprature: not a chat request parameter"),
        ("models:\n  m: []", "models.m: needs at least one deployment"),
        ("database_url: mysql://x", "database_url: expected sqlite"),
        ("database_url: sqlite:///${NOPE}/x.db", "environment variable NOPE is not set"),
        ("sandbox: maybe", "sandbox: Invalid enum value"),
        ("- a\n- b", "top level must be a mapping"),
        ("listen: [", "not valid YAML"),
    ],
)  # fmt: skip
def test_errors_name_the_bad_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text + "\n"), {})
    assert needle in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "nope.yaml", {})


def test_profiles_exact_then_pattern_and_operator_override(tmp_path: Path) -> None:
    cfg = load(None, {})
    assert find_profile(cfg, "gpt-5.3-codex").reasoning.default == "medium"  # type: ignore[union-attr]
    assert find_profile(cfg, "gpt-5.1").reasoning.default == "none"  # type: ignore[union-attr]
    assert find_profile(cfg, "claude-opus-4-7").max_output_tokens == 128000
    assert find_profile(cfg, "claude-haiku-4-5-20251001").max_output_tokens == 64000
    assert find_profile(cfg, "some-unknown-model").unsupported == []
    cfg = load(write(tmp_path, "profiles:\n  gemini-*: {max_output_tokens: 10}\n"), {})
    assert find_profile(cfg, "gemini-2.5-pro").max_output_tokens == 10
