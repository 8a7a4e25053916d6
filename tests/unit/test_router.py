"""Deployment selection and health, with an injected clock and a seeded random source."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from chatgate.config import from_dict
from chatgate.errors import RateLimited, UpstreamError
from chatgate.router import Router, context_exceeded, retryable


class Clock:
    t = 1000.0

    def __call__(self) -> float:
        return self.t


def router(deps: list[dict[str, Any]], clock: Clock, **routing: Any) -> Router:
    cfg = from_dict(
        {
            "providers": {"p": {"protocol": "openai", "base_url": "http://u/v1", "api_key": "k"}},
            "models": {"m": deps, "f": [{"provider": "p", "model": "gpt-5.2", "name": "f"}]},
            "routing": {"m": {"fallbacks": ["f"], **routing}},
            "circuit": {"failures": 3, "cooldown": 10},
        },
        {},
    )
    return Router(cfg, clock=clock, rng=random.Random(1))


def dep(name: str, **kw: Any) -> dict[str, Any]:
    return {"provider": "p", "model": "gpt-5.1", "name": name, **kw}


def names(r: Router, model: str = "m") -> list[str]:
    out = [t.name for t in r.candidates(model, set())]
    for t in r.routes[model]:
        r.release(t)
    return out


def test_priority_groups_first_then_fallbacks() -> None:
    r = router([dep("b", priority=1), dep("a", priority=0)], Clock())
    assert names(r) == ["a", "b"]
    assert r.chain("m", ["x", "f", "m"]) == ["m", "f"]  # unknown and repeated names dropped


def test_weights_shape_the_first_choice() -> None:
    r = router([dep("heavy", weight=9), dep("light", weight=1)], Clock())
    firsts = Counter(names(r)[0] for _ in range(2000))
    assert 0.85 < firsts["heavy"] / 2000 < 0.95


def test_least_busy_and_lowest_latency() -> None:
    clock = Clock()
    r = router([dep("a"), dep("b")], clock, strategy="least-busy")
    a, b = r.routes["m"]
    r.begin(a)
    assert names(r)[0] == "b"
    r = router([dep("a"), dep("b")], clock, strategy="lowest-latency")
    a, b = r.routes["m"]
    for t, ttft in ((a, 0.5), (b, 0.1)):
        r.begin(t)
        r.success(t, ttft)
    assert names(r) == ["b", "a"]


def test_circuit_opens_after_consecutive_failures_and_one_probe_closes_it() -> None:
    clock = Clock()
    r = router([dep("a", priority=0), dep("b", priority=1)], clock)
    a = r.routes["m"][0]
    boom = UpstreamError("boom", status=500)
    for _ in range(3):
        r.begin(a)
        r.failure(a, boom)
    assert a.state(clock.t) == "open" and names(r) == ["b"]
    clock.t += 10.5
    first = [t.name for t in r.candidates("m", set())]
    assert first == ["a", "b"]  # half-open: one probe handed out...
    assert names(r) == ["b"]  # ...and only one
    r.begin(a)
    r.failure(a, boom)  # the probe fails: open again for a fresh cooldown
    assert a.state(clock.t) == "open"
    clock.t += 10.5
    assert names(r)[0] == "a"
    r.begin(a)
    r.success(a, 0.1)
    assert a.state(clock.t) == "closed" and names(r) == ["a", "b"]


def test_429_cools_for_its_retry_after_and_client_errors_do_not_count() -> None:
    clock = Clock()
    r = router([dep("a", priority=0), dep("b", priority=1)], clock)
    a = r.routes["m"][0]
    r.begin(a)
    r.failure(a, RateLimited("slow", headers={"retry-after": "2"}))
    assert a.state(clock.t) == "cooling" and names(r) == ["b"]
    assert r.soonest(["m"]) == 0.0  # b is ready now
    clock.t += 2.1
    assert names(r) == ["a", "b"]
    for _ in range(5):
        r.begin(a)
        r.failure(a, UpstreamError("bad request", status=400))
    assert a.state(clock.t) == "closed"


def test_retryable_and_context_errors() -> None:
    assert retryable(UpstreamError("x", status=503))
    assert retryable(UpstreamError("x", status=504, code="upstream_timeout"))
    assert not retryable(UpstreamError("x", status=400))
    assert not retryable(RateLimited("x", code="insufficient_quota"))
    assert context_exceeded(
        UpstreamError("This model's maximum context length is 128000 tokens", status=400)
    )
    assert not context_exceeded(UpstreamError("bad temperature", status=400))
