"""Prometheus metrics: counted in plain ints on the request path, exposed at scrape time.

A request adds to one :class:`Series` (found by its label tuple in a dict) when it ends: no
lock, no prometheus_client object, no allocation after the first request of a label set.
Everything else is read when Prometheus scrapes: deployment health and upstream attempts
from the router, the usage writer's queue from the writer, in-flight requests from the live
set. ``prometheus_client`` itself is imported at the first scrape, with a registry of our
own (never the global one), and renders the text format.

Labels are bounded: ``model`` is a configured model name, or ``unknown`` for a name the
client made up (``none`` when the request never named one); ``provider`` and ``deployment``
come from the config; ``status`` is an HTTP status. Key ids are left out: the key table
can be large, and per-key figures live in the usage table (``/admin/usage``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import GatewayError

if TYPE_CHECKING:
    from ..api.chat import Record
    from ..app import Gateway
    from ..store import UsageRow

# Whole requests: errors answer in milliseconds, long answers take minutes.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
# Time to first token: from tens of milliseconds to a reasoning model's minute of thought.
TTFT_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
CIRCUIT_STATES = {"closed": 0, "cooling": 0, "half_open": 1, "open": 2}
NONE = "none"
UNKNOWN = "unknown"


class Series:
    """What the requests of one label set added up to (model, provider, deployment,
    status, stream)."""

    __slots__ = (
        "completion_tokens",
        "cost_micros",
        "latency",
        "latency_sum",
        "prompt_tokens",
        "requests",
        "ttft",
        "ttft_sum",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_micros = 0
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, not cumulative
        self.latency_sum = 0.0
        self.ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0


SeriesKey = tuple[str, str | None, str | None, int, bool]


def refusal_reason(err: GatewayError) -> str:
    """rpm | tpm | concurrency | budget | unavailable (limits could not be checked)."""
    code = err.code
    if code == "insufficient_quota":
        return "budget"
    if code == "concurrency_limit_exceeded":
        return "concurrency"
    if code == "rate_limit_exceeded":
        return "tpm" if err.type == "tokens" else "rpm"
    if code == "limits_unavailable":
        return "unavailable"
    return "other"


class Metrics:
    """The counters. :meth:`request` runs once per chat request; the rest is rare."""

    def __init__(self, models: frozenset[str]) -> None:
        self._known = models
        self.series: dict[SeriesKey, Series] = {}
        self.retries: dict[str, int] = {}
        self.fallbacks: dict[tuple[str, str], int] = {}
        self.refusals: dict[tuple[str, str], int] = {}
        self._registry: Any = None
        self._collector: _Collector | None = None

    def model_label(self, model: str | None) -> str:
        if model is None:
            return NONE
        return model if model in self._known else UNKNOWN

    def request(self, row: UsageRow, rec: Record) -> None:
        """Count one finished request, from the same values as its usage row."""
        name = row.model
        model = name if name is not None and name in self._known else self.model_label(name)
        key = (model, row.provider, rec.deployment, row.status, row.stream)
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = Series()
        s.requests += 1
        if row.prompt_tokens:
            s.prompt_tokens += row.prompt_tokens
        if row.completion_tokens:
            s.completion_tokens += row.completion_tokens
        if row.cost_micros:
            s.cost_micros += row.cost_micros
        seconds = row.latency_ms * 0.001
        s.latency[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        s.latency_sum += seconds
        if row.ttft_ms is not None:
            seconds = row.ttft_ms * 0.001
            s.ttft[bisect_left(TTFT_BUCKETS, seconds)] += 1
            s.ttft_sum += seconds
        if rec.attempts > 1 or (rec.requested is not None and rec.requested != row.model):
            self._rerouted(rec, model)

    def _rerouted(self, rec: Record, served: str) -> None:
        requested = self.model_label(rec.requested)
        if rec.attempts > 1:
            self.retries[requested] = self.retries.get(requested, 0) + rec.attempts - 1
        if requested != served:
            pair = (requested, served)
            self.fallbacks[pair] = self.fallbacks.get(pair, 0) + 1

    def refused(self, scope: str, err: GatewayError) -> None:
        """A limit refused a request: ``scope`` key (the caller's policy) or deployment
        (a deployment's own rpm/tpm; the request may still be served elsewhere)."""
        pair = (scope, refusal_reason(err))
        self.refusals[pair] = self.refusals.get(pair, 0) + 1

    # --- the scrape ----------------------------------------------------------------------

    def render(self, gw: Gateway) -> tuple[bytes, str]:
        """The exposition (Prometheus text format) and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if self._collector is None:
            from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector

            registry = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=registry)
            GCCollector(registry=registry)
            self._registry = registry
            self._collector = _Collector(self)
            registry.register(self._collector)
        self._collector.gw = gw
        return generate_latest(self._registry), CONTENT_TYPE_LATEST


class _Collector:
    """Builds the metric families from the counters and the gateway's state at scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.gw: Gateway | None = None

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        m, gw = self.metrics, self.gw
        assert gw is not None
        dep = ["model", "provider", "deployment"]

        info = InfoMetricFamily("chatgate_build", "The running Chatgate version.")
        info.add_metric([], {"version": __version__})
        yield info

        requests = CounterMetricFamily(
            "chatgate_requests",
            "Chat requests answered, by model, provider, deployment, HTTP status and stream.",
            labels=[*dep, "status", "stream"],
        )
        tokens = CounterMetricFamily(
            "chatgate_tokens",
            "Tokens of answered requests (as billed), by direction: prompt or completion.",
            labels=[*dep, "direction"],
        )
        cost = CounterMetricFamily(
            "chatgate_cost_usd", "Cost of answered requests in US dollars.", labels=dep
        )
        latency: dict[tuple[str, str, str, str], list[Any]] = {}
        ttft: dict[tuple[str, str, str], list[Any]] = {}
        by_dep: dict[tuple[str, str, str], list[int]] = {}
        for (model, provider, deployment, status, stream), s in list(m.series.items()):
            labels = (model, provider or NONE, deployment or NONE)
            requests.add_metric([*labels, str(status), _bool(stream)], s.requests)
            sums = by_dep.setdefault(labels, [0, 0, 0])
            sums[0] += s.prompt_tokens
            sums[1] += s.completion_tokens
            sums[2] += s.cost_micros
            _merge(latency, (*labels, _bool(stream)), s.latency, s.latency_sum)
            if any(s.ttft):
                _merge(ttft, labels, s.ttft, s.ttft_sum)
        for labels, (prompt, completion, micros) in by_dep.items():
            tokens.add_metric([*labels, "prompt"], prompt)
            tokens.add_metric([*labels, "completion"], completion)
            cost.add_metric(list(labels), micros / 1e6)
        yield requests
        yield tokens
        yield cost
        yield _histogram(
            HistogramMetricFamily(
                "chatgate_request_duration_seconds",
                "Time from receiving a chat request to its last byte.",
                labels=[*dep, "stream"],
            ),
            latency,
            LATENCY_BUCKETS,
        )
        yield _histogram(
            HistogramMetricFamily(
                "chatgate_time_to_first_token_seconds",
                "Time from receiving a streamed request to its first content chunk.",
                labels=dep,
            ),
            ttft,
            TTFT_BUCKETS,
        )

        attempts = CounterMetricFamily(
            "chatgate_upstream_attempts",
            "Upstream attempts by outcome: 200, the error's HTTP status, or 499 when the "
            "client went away first.",
            labels=[*dep, "status"],
        )
        circuit = GaugeMetricFamily(
            "chatgate_circuit_state",
            "A deployment's circuit breaker: 0 closed, 1 half-open, 2 open.",
            labels=dep,
        )
        cooling = GaugeMetricFamily(
            "chatgate_deployment_cooldown_seconds",
            "Seconds left of a deployment's cooldown after an upstream 429.",
            labels=dep,
        )
        busy = GaugeMetricFamily(
            "chatgate_deployment_in_flight", "Upstream attempts in flight.", labels=dep
        )
        now = time.monotonic()  # the router's clock
        for model, targets in gw.router.routes.items():
            for t in targets:
                h = t.health
                names = [model, t.provider_name, t.name]
                attempts.add_metric([*names, "200"], h.successes)
                for status, n in sorted(h.errors.items()):
                    attempts.add_metric([*names, str(status)], n)
                circuit.add_metric(names, CIRCUIT_STATES.get(t.state(now), 0))
                cooling.add_metric(names, max(0.0, h.cooled_until - now))
                busy.add_metric(names, h.in_flight)
        yield attempts
        yield circuit
        yield cooling
        yield busy

        retries = CounterMetricFamily(
            "chatgate_retries",
            "Upstream attempts after a request's first (another deployment, a fallback "
            "model, or the same one again after a backoff), by requested model.",
            labels=["model"],
        )
        for model, n in m.retries.items():
            retries.add_metric([model], n)
        yield retries
        fallbacks = CounterMetricFamily(
            "chatgate_fallbacks",
            "Requests that ended on a fallback model instead of the one requested.",
            labels=["model", "fallback"],
        )
        for (model, fallback), n in m.fallbacks.items():
            fallbacks.add_metric([model, fallback], n)
        yield fallbacks
        refusals = CounterMetricFamily(
            "chatgate_limit_refusals",
            "Requests refused by a limit: scope key (the caller's policy; answered 429) or "
            "deployment (its own rpm/tpm; tried elsewhere), reason rpm, tpm, concurrency, "
            "budget or unavailable.",
            labels=["scope", "reason"],
        )
        for (scope, reason), n in m.refusals.items():
            refusals.add_metric([scope, reason], n)
        yield refusals

        live = list(gw.obs.live)
        yield GaugeMetricFamily(
            "chatgate_in_flight_requests", "Chat requests being served.", value=len(live)
        )
        yield GaugeMetricFamily(
            "chatgate_in_flight_streams",
            "Streamed answers whose response has started and not ended.",
            value=sum(1 for r in live if r.committed),
        )

        w = gw.writer
        yield GaugeMetricFamily(
            "chatgate_usage_writer_pending",
            "Usage rows in memory waiting for the database (or the spool).",
            value=w.pending,
        )
        yield GaugeMetricFamily(
            "chatgate_usage_spool_bytes",
            "Bytes of usage rows waiting in the on-disk spool (all processes sharing it).",
            value=w.spool.size(),
        )
        for name, value, doc in (
            ("written", w.written, "Usage rows inserted into the database."),
            ("spooled", w.spooled, "Usage rows written to the on-disk spool."),
            ("dropped", w.dropped, "Usage rows lost: memory and spool both full."),
        ):
            yield CounterMetricFamily(f"chatgate_usage_rows_{name}", doc, value=value)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _merge(into: dict[Any, list[Any]], labels: Any, counts: list[int], total: float) -> None:
    got = into.get(labels)
    if got is None:
        into[labels] = [list(counts), total]
    else:
        got[0] = [a + b for a, b in zip(got[0], counts, strict=True)]
        got[1] += total


def _histogram(family: Any, series: dict[Any, list[Any]], bounds: tuple[float, ...]) -> Any:
    edges = [repr(float(b)) for b in bounds] + ["+Inf"]  # as Go prints them: 0.005, 1.0
    for labels, (counts, total) in series.items():
        running, buckets = 0, []
        for edge, n in zip(edges, counts, strict=True):
            running += n
            buckets.append((edge, running))
        family.add_metric(list(labels), buckets, total)
    return family
