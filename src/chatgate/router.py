"""Which upstream deployment serves a public model name.

Knows deployments and providers, not wire formats: each target carries the provider module
that translates for it. Later: priorities, weights, retries, fallbacks, circuit breaking.
"""

from __future__ import annotations

from types import ModuleType

from msgspec import Struct

from .config import Config, Deployment, Profile, Provider, find_profile
from .providers import anthropic, gemini, openai_responses
from .providers import openai as openai_chat

# The upstream protocols this build can translate.
MODULES: dict[str, ModuleType] = {
    "openai": openai_chat,
    "openai_responses": openai_responses,
    "anthropic": anthropic,
    "gemini": gemini,
}
# The sandbox emulates every protocol on one port; each emulator's base URL follows its
# vendor SDK's convention (OpenAI's includes /v1, Anthropic's and Google's do not).
SANDBOX_PROTOCOLS = {"openai": "/v1", "openai_responses": "/v1", "anthropic": "", "gemini": ""}


class Target(Struct):
    public_model: str
    provider_name: str
    provider: Provider
    deployment: Deployment
    protocol: str
    module: ModuleType | None  # None: protocol not implemented in this build
    profile: Profile
    sandboxed: bool


def uses_sandbox(cfg: Config, provider: Provider) -> bool:
    return cfg.sandbox is True or (cfg.sandbox == "auto" and not provider.api_key)


def needs_sandbox(cfg: Config) -> bool:
    return any(uses_sandbox(cfg, p) for p in cfg.providers.values())


class Router:
    def __init__(self, cfg: Config, sandbox_url: str | None = None) -> None:
        self.routes: dict[str, list[Target]] = {}
        self.unavailable: dict[str, str] = {}
        self._rr: dict[str, int] = {}
        for public, deps in cfg.models.items():
            targets: list[Target] = []
            reasons: list[str] = []
            for dep in deps:
                prov = cfg.providers[dep.provider]
                protocol = dep.protocol or prov.protocol
                sandboxed = uses_sandbox(cfg, prov)
                if sandboxed:
                    assert sandbox_url is not None
                    prov = Provider(
                        protocol=prov.protocol,
                        base_url=sandbox_url + SANDBOX_PROTOCOLS[protocol],
                        api_key="sk-sandbox",
                        timeouts=prov.timeouts,
                    )
                elif not prov.api_key:
                    reasons.append(f"provider '{dep.provider}' has no api_key")
                    continue
                targets.append(
                    Target(
                        public_model=public,
                        provider_name=dep.provider,
                        provider=prov,
                        deployment=dep,
                        protocol=protocol,
                        module=MODULES.get(protocol),
                        profile=find_profile(cfg, dep.model),
                        sandboxed=sandboxed,
                    )
                )
            if targets:
                self.routes[public] = targets
            else:
                self.unavailable[public] = "; ".join(reasons) or "no deployment"

    def pick(self, model: str) -> Target | None:
        targets = self.routes.get(model)
        if not targets:
            return None
        if len(targets) == 1:
            return targets[0]
        i = self._rr.get(model, 0)
        self._rr[model] = i + 1
        return targets[i % len(targets)]
