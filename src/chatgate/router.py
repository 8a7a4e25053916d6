"""Which upstream deployment serves a request, and what the gateway learns from each attempt.

Knows deployments and their health, not wire formats: each target carries the provider
module that translates for it. Selection: the lowest priority group that has a healthy
deployment with capacity; within it, weighted random (default), least busy, or lowest latency
(EWMA of time to first token). A deployment's circuit opens after consecutive failures and
lets one probe through after a cooldown; a 429 cools it for its retry-after.

In cluster mode these verdicts are shared: when this replica opens or closes a circuit or
cools a deployment it tells ``on_health`` (which publishes it), and what other replicas
decided arrives through :meth:`Router.apply_shared`. Both stay off the request's path: the
router itself never waits for the network.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from msgspec import Struct

from .config import Config, Deployment, Profile, Provider, Route, Timeouts, find_profile
from .errors import GatewayError
from .limits import Limiter, MemoryLimiter, Policy
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
# Upstream outcomes worth another attempt (elsewhere, or later).
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class Health:
    """What the router knows of one deployment (mutable; one per deployment per process)."""

    __slots__ = (
        "cooled_until",
        "errors",
        "ewma_ttft",
        "failures",
        "in_flight",
        "open_until",
        "probing",
        "successes",
        "total_failures",
    )

    def __init__(self) -> None:
        self.in_flight = 0
        self.ewma_ttft: float | None = None
        self.failures = 0  # consecutive
        self.open_until = 0.0  # circuit open (cooldown) until this time
        self.probing = False  # half-open: one probe request is out
        self.cooled_until = 0.0  # after a 429: until its retry-after
        self.successes = 0
        self.total_failures = 0
        # failed attempts by HTTP status (499: abandoned by the client), for /metrics
        self.errors: dict[int, int] = {}


class Target(Struct):
    public_model: str
    name: str
    provider_name: str
    provider: Provider
    deployment: Deployment
    protocol: str
    module: ModuleType
    profile: Profile
    sandboxed: bool
    timeouts: Timeouts
    health: Health

    def state(self, now: float) -> str:
        h = self.health
        if h.open_until > now:
            return "open"
        if h.open_until and h.failures:
            return "half_open"
        if h.cooled_until > now:
            return "cooling"
        return "closed"


def uses_sandbox(cfg: Config, provider: Provider) -> bool:
    return cfg.sandbox is True or (cfg.sandbox == "auto" and not provider.api_key)


def needs_sandbox(cfg: Config) -> bool:
    return any(uses_sandbox(cfg, p) for p in cfg.providers.values())


def retryable(err: GatewayError) -> bool:
    if err.code in ("upstream_timeout", "upstream_unavailable", "overloaded"):
        return True
    return err.status in RETRYABLE and err.code != "insufficient_quota"


def context_exceeded(err: GatewayError) -> bool:
    text = f"{err.code} {err.message}".lower()
    return err.status == 400 and (
        ("context" in text and ("length" in text or "window" in text))
        or "too long" in text
        or "too many tokens" in text
    )


class Router:
    def __init__(
        self,
        cfg: Config,
        sandbox_url: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.routes: dict[str, list[Target]] = {}
        self.unavailable: dict[str, str] = {}
        self.policies: dict[str, Route] = cfg.routing
        self._circuit = cfg.circuit
        self._clock = clock
        self._wall = wall  # shared states carry wall-clock times (monotonic is per machine)
        self._rng = rng or random.Random()
        # cluster mode: (target, "open" | "closed" | "cooling", until as wall-clock time)
        self.on_health: Callable[[Target, str, float], None] | None = None
        # each deployment's own rpm/tpm (cluster mode: a Redis limiter shared by replicas)
        self.capacity: Limiter = MemoryLimiter(lambda key, start: 0, clock=time.time)
        for public, deps in cfg.models.items():
            targets: list[Target] = []
            reasons: list[str] = []
            for i, dep in enumerate(deps):
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
                if dep.headers:
                    prov = Provider(
                        protocol=prov.protocol,
                        base_url=prov.base_url,
                        api_key=prov.api_key,
                        headers={**prov.headers, **dep.headers},
                        timeouts=prov.timeouts,
                        max_connections=prov.max_connections,
                    )
                targets.append(
                    Target(
                        public_model=public,
                        name=dep.name or f"{dep.provider}/{dep.model}#{i}",
                        provider_name=dep.provider,
                        provider=prov,
                        deployment=dep,
                        protocol=protocol,
                        module=MODULES[protocol],
                        profile=find_profile(cfg, dep.model),
                        sandboxed=sandboxed,
                        timeouts=dep.timeouts or prov.timeouts,
                        health=Health(),
                    )
                )
            if targets:
                self.routes[public] = targets
            else:
                self.unavailable[public] = "; ".join(reasons) or "no deployment"

    # --- selection ---------------------------------------------------------------------

    def chain(self, model: str, extra: list[str] | None = None) -> list[str]:
        """The model, its configured fallbacks, then the client's own (known ones only)."""
        out = [model]
        route = self.policies.get(model)
        for m in [*(route.fallbacks if route else ()), *(extra or ())]:
            if m not in out and m in self.routes:
                out.append(m)
        return out

    def candidates(self, model: str, tried: set[str]) -> Iterator[Target]:
        """Deployments of ``model`` in the order to try them: priority groups lowest first;
        within a group by the model's strategy. Open circuits, cooling deployments and
        deployments at their own rpm/tpm ceiling are skipped; a circuit whose cooldown is
        over lets exactly one probe through."""
        routes = self.routes.get(model, ())
        if len(routes) == 1:  # the common case, without sorting or random draws
            t = routes[0]
            if t.name not in tried and self._available(t):
                yield t
            return
        targets = [t for t in routes if t.name not in tried]
        strategy = self.policies[model].strategy if model in self.policies else "weighted"
        for priority in sorted({t.deployment.priority for t in targets}):
            group = [t for t in targets if t.deployment.priority == priority]
            for t in self._order(group, strategy):
                if self._available(t):
                    yield t

    def _order(self, group: list[Target], strategy: str) -> list[Target]:
        if strategy == "least-busy":
            return sorted(group, key=lambda t: (t.health.in_flight, self._rng.random()))
        if strategy == "lowest-latency":
            return sorted(
                group,
                key=lambda t: (t.health.ewma_ttft is not None, t.health.ewma_ttft or 0.0),
            )
        # weighted random order without replacement (Efraimidis-Spirakis keys)
        return sorted(
            group,
            key=lambda t: -(self._rng.random() ** (1.0 / max(t.deployment.weight, 1e-9))),
        )

    def _available(self, t: Target) -> bool:
        h, now = t.health, self._clock()
        if h.cooled_until > now or h.open_until > now:
            return False
        if h.open_until:  # cooldown over: half-open, one probe at a time
            if h.probing:
                return False
            h.probing = True
        return True

    # --- what happened -----------------------------------------------------------------

    def begin(self, t: Target) -> None:
        t.health.in_flight += 1

    def release(self, t: Target) -> None:
        """A candidate handed out but not attempted: give back its probe slot."""
        t.health.probing = False

    def soonest(self, chain: list[str]) -> float | None:
        """Seconds until the first deployment of these models can be tried again."""
        now = self._clock()
        waits = [
            max(t.health.cooled_until, t.health.open_until) - now
            for m in chain
            for t in self.routes.get(m, ())
        ]
        return max(0.0, min(waits)) if waits else None

    def context_fallbacks(self, model: str, chain: list[str]) -> list[str]:
        route = self.policies.get(model)
        return [
            m
            for m in (route.context_fallbacks if route else ())
            if m not in chain and m in self.routes
        ]

    def success(self, t: Target, ttft: float | None) -> None:
        h = t.health
        if h.open_until:  # the probe answered: the circuit closes, here and elsewhere
            self._share(t, "closed", 0.0)
        h.in_flight -= 1
        h.failures = 0
        h.open_until = 0.0
        h.probing = False
        h.successes += 1
        if ttft is not None:
            h.ewma_ttft = ttft if h.ewma_ttft is None else 0.8 * h.ewma_ttft + 0.2 * ttft

    def failure(self, t: Target, err: GatewayError | None) -> None:
        """An attempt failed (err None: abandoned by the client, which says nothing about
        the deployment's health)."""
        h = t.health
        h.in_flight -= 1
        h.probing = False
        status = err.status if err is not None else 499
        h.errors[status] = h.errors.get(status, 0) + 1
        if err is None:
            return
        now = self._clock()
        if err.status == 429 and err.code != "insufficient_quota":
            after = _retry_after(err.headers) or 1.0
            h.cooled_until = max(h.cooled_until, now + after)
            self._share(t, "cooling", h.cooled_until)
            return
        if not retryable(err):
            return  # the request's fault, not the deployment's
        h.failures += 1
        h.total_failures += 1
        if h.failures >= self._circuit.failures or h.open_until:
            h.open_until = now + self._circuit.cooldown  # (re)open: fresh cooldown
            self._share(t, "open", h.open_until)

    def _share(self, t: Target, state: str, until: float) -> None:
        if self.on_health is not None:
            self.on_health(t, state, self._wall() + (until - self._clock()) if until else 0.0)

    def apply_shared(self, model: str, name: str, state: str, until: float) -> bool:
        """What another replica decided about a deployment (``until``: wall-clock time).
        Only ever makes this replica more careful, except a "closed" after a good probe."""
        t = next((t for t in self.routes.get(model, ()) if t.name == name), None)
        if t is None:
            return False
        h = t.health
        now = self._clock()
        local = now + (until - self._wall())
        if state == "closed":
            if h.open_until:
                h.open_until = 0.0
                h.failures = 0
            return True
        if local <= now:  # already over
            return False
        if state == "cooling":
            h.cooled_until = max(h.cooled_until, local)
        elif state == "open":
            h.open_until = max(h.open_until, local)
            h.failures = max(h.failures, self._circuit.failures)
        else:
            return False
        return True

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._clock()
        out = []
        for model, targets in self.routes.items():
            for t in targets:
                h = t.health
                out.append(
                    {
                        "model": model,
                        "deployment": t.name,
                        "provider": t.provider_name,
                        "upstream_model": t.deployment.model,
                        "protocol": t.protocol,
                        "priority": t.deployment.priority,
                        "weight": t.deployment.weight,
                        "state": t.state(now),
                        "in_flight": h.in_flight,
                        "consecutive_failures": h.failures,
                        "failures": h.total_failures,
                        "successes": h.successes,
                        "open_for_s": round(max(0.0, h.open_until - now), 3),
                        "cooling_for_s": round(max(0.0, h.cooled_until - now), 3),
                        "ewma_ttft_ms": round(h.ewma_ttft * 1000, 3) if h.ewma_ttft else None,
                    }
                )
        return out

    def capacity_policy(self, t: Target) -> Policy | None:
        d = t.deployment
        return Policy(rpm=d.rpm, tpm=d.tpm) if d.rpm or d.tpm else None


def _retry_after(headers: dict[str, str]) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    s = headers.get("retry-after")
    if s:
        try:
            return float(s)
        except ValueError:
            return None
    return None
