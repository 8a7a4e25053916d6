"""The observe package's pure parts: counting a request into bounded label sets, refusal
reasons, the access line, the JSON log format, traceparent validation, and the settings."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
from typing import Any

import pytest

from chatgate.api.chat import Record
from chatgate.config import ConfigError, from_dict
from chatgate.limits import (
    Policy,
    budget_exceeded,
    concurrency_exceeded,
    rpm_exceeded,
    tokens_never_fit,
    tpm_exceeded,
)
from chatgate.observe.logs import (
    ACCESS_LOGGER,
    AccessHandler,
    AccessLog,
    JsonFormatter,
    wants_prompts,
)
from chatgate.observe.metrics import LATENCY_BUCKETS, TTFT_BUCKETS, Metrics, refusal_reason
from chatgate.observe.tracing import traces_url, valid_traceparent
from chatgate.store import UsageRow


def row(**kw: Any) -> UsageRow:
    values: dict[str, Any] = {
        "request_id": "chatcmpl-1",
        "created": 1764563850.25,
        "key_id": "key_1",
        "model": "gpt-5.1",
        "provider": "openai",
        "upstream_model": "gpt-5.1",
        "stream": False,
        "status": 200,
        "error_type": None,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "total_tokens": 30,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "latency_ms": 300.0,
        "ttft_ms": None,
        "upstream_request_id": "req_9",
        "owner": "team",
        "cost_micros": 1234,
    }
    values.update(kw)
    return UsageRow(**values)


def record(**kw: Any) -> Record:
    rec = Record()
    rec.requested = "gpt-5.1"
    rec.deployment = "openai/gpt-5.1#0"
    rec.attempts = 1
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def test_a_request_adds_to_one_series_per_label_set() -> None:
    m = Metrics(frozenset({"gpt-5.1", "claude-4.5"}))
    m.request(row(), record())
    m.request(row(prompt_tokens=5, cost_micros=None, latency_ms=2.0), record())
    m.request(row(status=500, prompt_tokens=None, completion_tokens=None), record())
    assert len(m.series) == 2
    s = m.series[("gpt-5.1", "openai", "openai/gpt-5.1#0", 200, False)]
    assert (s.requests, s.prompt_tokens, s.completion_tokens, s.cost_micros) == (2, 15, 40, 1234)
    assert s.latency[LATENCY_BUCKETS.index(0.5)] == 1  # 0.3 s: in the le=0.5 bucket
    assert s.latency[LATENCY_BUCKETS.index(0.005)] == 1  # 2 ms
    assert s.latency_sum == pytest.approx(0.302)
    assert sum(s.ttft) == 0


def test_labels_stay_bounded() -> None:
    m = Metrics(frozenset({"gpt-5.1"}))
    for i in range(100):  # made-up model names all count as "unknown"
        m.request(row(model=f"made-up-{i}", provider=None, status=404), record(deployment=None))
    m.request(row(model=None, provider=None, status=400), record(deployment=None))
    assert set(m.series) == {
        ("unknown", None, None, 404, False),
        ("none", None, None, 400, False),
    }
    assert m.series[("unknown", None, None, 404, False)].requests == 100


def test_ttft_is_observed_for_streams() -> None:
    m = Metrics(frozenset({"gpt-5.1"}))
    m.request(row(stream=True, ttft_ms=80.0, latency_ms=900.0), record())
    m.request(row(stream=True, ttft_ms=120_000.0, latency_ms=130_000.0), record())
    s = m.series[("gpt-5.1", "openai", "openai/gpt-5.1#0", 200, True)]
    assert s.ttft[TTFT_BUCKETS.index(0.1)] == 1
    assert s.ttft[len(TTFT_BUCKETS)] == 1  # past the last bound: +Inf
    assert s.ttft_sum == pytest.approx(120.08)


def test_retries_and_fallbacks_by_requested_model() -> None:
    m = Metrics(frozenset({"gpt-5.1", "gpt-5.2"}))
    m.request(row(model="gpt-5.1"), record(requested="gpt-5.2", attempts=3))
    m.request(row(model="gpt-5.2"), record(requested="gpt-5.2", attempts=2))
    m.request(row(model="gpt-5.2"), record(requested="gpt-5.2", attempts=1))
    assert m.retries == {"gpt-5.2": 3}
    assert m.fallbacks == {("gpt-5.2", "gpt-5.1"): 1}


def test_refusal_reasons_from_the_limiters_own_errors() -> None:
    p = Policy(rpm=1, tpm=10, max_concurrency=1, budget_micros=5)
    assert refusal_reason(rpm_exceeded(p, 1.0)) == "rpm"
    assert refusal_reason(tpm_exceeded(p, 1.0)) == "tpm"
    assert refusal_reason(tokens_never_fit(p, 100)) == "tpm"
    assert refusal_reason(concurrency_exceeded(p)) == "concurrency"
    assert refusal_reason(budget_exceeded(p, 10, 5, 0.0)) == "budget"
    m = Metrics(frozenset())
    m.refused("key", rpm_exceeded(p, 1.0))
    m.refused("key", rpm_exceeded(p, 1.0))
    m.refused("deployment", tpm_exceeded(p, 1.0))
    assert m.refusals == {("key", "rpm"): 2, ("deployment", "tpm"): 1}


_loggers = itertools.count()


def _capture() -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    log = logging.getLogger(f"{ACCESS_LOGGER}.test{next(_loggers)}")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    return log, out


def test_access_line() -> None:
    log, out = _capture()
    AccessLog(log).emit(row(stream=True, ttft_ms=12.3456), record(attempts=2))
    line = json.loads(out.getvalue())
    assert line["ts"] == "2025-12-01T04:37:30.250Z"
    assert line["key_id"] == "key_1" and line["model"] == "gpt-5.1"
    assert line["deployment"] == "openai/gpt-5.1#0" and line["attempts"] == 2
    assert line["cost_usd"] == 0.001234 and line["ttft_ms"] == 12.346
    assert "prompt" not in line


def test_access_line_with_prompt_and_below_level() -> None:
    log, out = _capture()
    body = b'{"model": "gpt-5.1", "messages": [{"role": "user", "content": "hi"}]}'
    AccessLog(log).emit(row(), record(prompt=body))
    assert json.loads(out.getvalue())["prompt"] == [{"role": "user", "content": "hi"}]
    log.setLevel(logging.WARNING)
    AccessLog(log).emit(row(), record())
    assert out.getvalue().count("\n") == 1


def test_access_handler_batches_lines_in_order() -> None:
    out = io.StringIO()
    log = logging.getLogger(f"{ACCESS_LOGGER}.test{next(_loggers)}")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = AccessHandler(out, interval=0.05, max_lines=3)
    log.addHandler(handler)
    access = AccessLog(log)
    access.emit(row(request_id="a"), record())  # no event loop: written at once
    assert out.getvalue().count("\n") == 1

    async def in_loop() -> list[int]:
        seen = []
        access.emit(row(request_id="b"), record())
        access.emit(row(request_id="c"), record())
        seen.append(out.getvalue().count("\n"))  # held back
        log.warning("an ordinary record")  # flushes b and c before itself
        seen.append(out.getvalue().count("\n"))
        access.emit(row(request_id="d"), record())
        seen.append(out.getvalue().count("\n"))
        await asyncio.sleep(0.1)  # the interval passed
        seen.append(out.getvalue().count("\n"))
        for i in range(3):  # max_lines: written without waiting
            access.emit(row(request_id=f"e{i}"), record())
        seen.append(out.getvalue().count("\n"))
        return seen

    assert asyncio.run(in_loop()) == [1, 4, 4, 5, 8]
    lines = out.getvalue().splitlines()
    assert [json.loads(x)["request_id"] for x in lines[:3]] == ["a", "b", "c"]
    assert lines[3] == "an ordinary record"
    assert json.loads(lines[4])["request_id"] == "d"


def test_only_an_explicit_true_logs_prompts() -> None:
    assert wants_prompts({"log_prompts": True})
    for meta in (None, {}, {"log_prompts": "true"}, {"log_prompts": 1}, {"log_prompts": False}):
        assert not wants_prompts(meta)


def test_json_formatter() -> None:
    fmt = JsonFormatter()
    rec = logging.LogRecord("chatgate.chat", logging.WARNING, "", 0, "a %s", ("b",), None)
    out = json.loads(fmt.format(rec))
    assert out["level"] == "warning" and out["logger"] == "chatgate.chat"
    assert out["message"] == "a b" and out["ts"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, "", 0, "failed", None, sys.exc_info())
    assert "ValueError: boom" in json.loads(fmt.format(rec))["exc"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),
        (b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
        (b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        (b"00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        (b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y", False),
        (b"garbage", False),
    ],
)
def test_traceparent_validation(value: bytes, ok: bool) -> None:
    assert valid_traceparent(value) is ok


def test_traces_url() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("https://c/v1/traces") == "https://c/v1/traces"


def test_settings() -> None:
    cfg = from_dict({}, {})
    assert cfg.metrics.enabled and not cfg.metrics.public and cfg.metrics.token is None
    assert cfg.tracing is None and cfg.access_log and cfg.log_format == "text"
    cfg = from_dict({"tracing": {"otlp_endpoint": "http://c:4318"}, "log_format": "json"}, {})
    assert cfg.tracing is not None and cfg.tracing.sample_ratio == 1.0
    assert cfg.tracing.service_name == "chatgate"
    for bad, where in (
        ({"tracing": {"otlp_endpoint": "c:4318"}}, "tracing.otlp_endpoint"),
        ({"tracing": {"otlp_endpoint": "http://c", "sample_ratio": 2}}, "tracing.sample_ratio"),
        ({"tracing": {}}, "tracing.otlp_endpoint"),
        ({"metrics": {"token": "short"}}, "metrics.token"),
        ({"metrics": {"auth": "none"}}, "metrics.auth"),
        ({"log_format": "xml"}, "log_format"),
    ):
        with pytest.raises(ConfigError, match=where):
            from_dict(bad, {})
