"""The access log against the real server: one JSON line per chat request with the usage
row's facts, never a key secret (created, used, rotated, through the admin API or the CLI),
never a prompt unless the key asks for it; the process log as JSON lines; both switchable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server

ACCESS_FIELDS = {
    "ts",
    "level",
    "logger",
    "request_id",
    "key_id",
    "owner",
    "model",
    "requested_model",
    "provider",
    "deployment",
    "upstream_model",
    "stream",
    "status",
    "error_type",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "attempts",
    "upstream_request_id",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("logs")).start()
    yield s
    s.stop()


def chat(
    srv: Server, key: str, text: str, stream: bool = False, model: str = "gpt-5.1"
) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    with httpx.Client(timeout=30) as c:
        r = c.post(
            srv.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        )
    return r


def access_lines(srv: Server) -> list[dict[str, Any]]:
    out = []
    for line in srv.log().splitlines():
        if line.startswith("{") and '"chatgate.access"' in line:
            out.append(json.loads(line))
    return out


def access_line(srv: Server, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The access line of one request (written just after its answer went out)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [x for x in access_lines(srv) if x["request_id"] == request_id]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, request_id
            return found[0]
        time.sleep(0.05)


def cli(srv: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TEST_MASTER_KEY=srv.master_key)
    return subprocess.run(
        [sys.executable, "-m", "chatgate", *args, "--config", str(srv.config_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=srv.workdir,
        timeout=60,
        check=True,
    )


def test_access_line_has_the_usage_rows_facts(srv: Server) -> None:
    r = srv.admin("POST", "/admin/keys", json={"name": "facts", "owner": "team-a"})
    key, key_id = r.json()["key"], r.json()["id"]
    plain = chat(srv, key, "Say hello")
    streamed = chat(srv, key, "Tell me a story", stream=True)
    assert plain.status_code == streamed.status_code == 200
    rows = srv.wait_usage_ids({plain.headers["x-request-id"], streamed.headers["x-request-id"]})

    line = access_line(srv, plain.headers["x-request-id"])
    row = rows[plain.headers["x-request-id"]]
    assert set(line) == ACCESS_FIELDS  # no prompt: this key did not ask for it
    assert line["level"] == "info" and line["logger"] == "chatgate.access"
    assert line["ts"].endswith("Z") and line["ts"][:4].isdigit()
    assert line["key_id"] == key_id and line["owner"] == "team-a"
    assert line["model"] == line["requested_model"] == "gpt-5.1"
    assert line["provider"] == "openai" and line["deployment"] == "openai/gpt-5.1#0"
    assert line["upstream_model"] == row["upstream_model"]
    assert line["status"] == 200 and line["error_type"] is None and line["stream"] is False
    assert line["prompt_tokens"] == row["prompt_tokens"] > 0
    assert line["completion_tokens"] == row["completion_tokens"] > 0
    assert round(line["cost_usd"] * 1e6) == row["cost_micros"] > 0
    assert line["latency_ms"] == pytest.approx(row["latency_ms"], abs=0.01)
    assert line["ttft_ms"] is None
    assert line["attempts"] == 1

    line = access_line(srv, streamed.headers["x-request-id"])
    assert line["stream"] is True and line["status"] == 200
    assert line["ttft_ms"] is not None and 0 < line["ttft_ms"] <= line["latency_ms"]

    failed = chat(srv, key, "break [sandbox:error=503]")
    assert failed.status_code == 503
    line = access_line(srv, failed.headers["x-request-id"])
    assert line["status"] == 503 and line["error_type"]
    missing = chat(srv, key, "who", model="no-such-model")
    line = access_line(srv, missing.headers["x-request-id"])
    assert line["status"] == 404 and line["error_type"] == "model_not_found"


def test_no_secret_ever_reaches_the_log(srv: Server) -> None:
    issued = [srv.master_key]
    r = srv.admin("POST", "/admin/keys", json={"name": "secret-a"})
    a, a_id = r.json()["key"], r.json()["id"]
    issued.append(a)
    assert chat(srv, a, "hello").status_code == 200
    assert chat(srv, a, "hello stream", stream=True).status_code == 200
    rotated = srv.admin("POST", f"/admin/keys/{a_id}/rotate").json()["key"]
    issued.append(rotated)
    assert chat(srv, rotated, "after rotation").status_code == 200
    assert chat(srv, a, "the old secret").status_code == 401
    created = cli(srv, "keys", "create", "--name", "from-cli").stdout.strip()
    issued.append(created)
    assert chat(srv, created, "from the cli key").status_code == 200
    wrong = "sk-cg-" + os.urandom(16).hex()  # never issued: not even a wrong key is logged
    issued.append(wrong)
    assert chat(srv, wrong, "guess").status_code == 401
    assert chat(srv, rotated, "failing upstream [sandbox:error=500]").status_code == 500
    last = chat(srv, rotated, "a long story, then cut [sandbox:cut=3]", stream=True)
    assert last.status_code == 200
    access_line(srv, last.headers["x-request-id"])  # (the last line is out)
    log = srv.log()
    assert log.count('"chatgate.access"') >= 8
    for secret in issued:
        assert secret not in log
        assert secret[6:20] not in log  # nor a piece of one


def test_prompts_are_logged_only_for_keys_that_ask(srv: Server) -> None:
    r = srv.admin("POST", "/admin/keys", json={"name": "quiet"})
    key, key_id = r.json()["key"], r.json()["id"]
    quiet = "zebra-" + os.urandom(6).hex()
    plain = chat(srv, key, f"remember {quiet}")
    assert "prompt" not in access_line(srv, plain.headers["x-request-id"])
    assert quiet not in srv.log()

    # switched on through the admin API (metadata.log_prompts), for this key only
    r = srv.admin("PATCH", f"/admin/keys/{key_id}", json={"metadata": {"log_prompts": True}})
    assert r.status_code == 200, r.text
    loud = "okapi-" + os.urandom(6).hex()
    on = chat(srv, key, f"remember {loud}", stream=True)
    line = access_line(srv, on.headers["x-request-id"])
    assert line["prompt"] == [{"role": "user", "content": f"remember {loud}"}]
    other = srv.create_key("other")
    hidden = "lemur-" + os.urandom(6).hex()
    chat(srv, other, f"remember {hidden}")
    srv.admin("PATCH", f"/admin/keys/{key_id}", json={"metadata": {"log_prompts": "yes"}})
    vague = "tapir-" + os.urandom(6).hex()  # only an explicit true switches it on
    line = access_line(srv, chat(srv, key, f"remember {vague}").headers["x-request-id"])
    assert "prompt" not in line

    # and through the CLI: keys create --log-prompts, keys update --no-log-prompts
    out = cli(srv, "keys", "create", "--name", "cli-loud", "--log-prompts")
    cli_key = out.stdout.strip()
    said = "quokka-" + os.urandom(6).hex()
    line = access_line(srv, chat(srv, cli_key, f"remember {said}").headers["x-request-id"])
    assert said in json.dumps(line["prompt"])
    cli_id = line["key_id"]
    assert srv.admin("GET", f"/admin/keys/{cli_id}").json()["metadata"] == {"log_prompts": True}
    srv.admin(
        "PATCH", f"/admin/keys/{cli_id}", json={"metadata": {"team": "x", "log_prompts": True}}
    )
    cli(srv, "keys", "update", cli_id, "--no-log-prompts")
    assert srv.admin("GET", f"/admin/keys/{cli_id}").json()["metadata"] == {"team": "x"}

    time.sleep(0.3)
    log = srv.log()
    assert hidden not in log and vague not in log
    assert log.count(loud) == 1 and log.count(said) == 1  # in the access line, nowhere else


def test_json_process_log(tmp_path: Path) -> None:
    srv = Server(tmp_path, {"log_format": "json"}).start()
    try:
        key = srv.create_key()
        r = chat(srv, key, "hello")
        assert r.status_code == 200
        chat(srv, key, "broken [sandbox:error=500]")  # a WARNING line too
        access_line(srv, r.headers["x-request-id"])
    finally:
        assert srv.stop() == 0
    lines = [line for line in srv.log().splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(p, dict) and {"ts", "level", "logger"} <= set(p) for p in parsed)
    assert any("listening on" in p.get("message", "") for p in parsed)  # the banner
    assert any(p["logger"] == "chatgate.access" for p in parsed)
    assert any(p["level"] == "warning" for p in parsed)


def test_access_log_switched_off_or_below_the_level(tmp_path: Path) -> None:
    for extra in ({"access_log": False}, {"log_level": "warning"}):
        srv = Server(tmp_path / next(iter(extra)), extra).start()
        try:
            key = srv.create_key()
            r = chat(srv, key, "hello")
            assert r.status_code == 200
            srv.wait_usage_ids({r.headers["x-request-id"]})
            time.sleep(0.2)
            assert "chatgate.access" not in srv.log()
        finally:
            srv.stop()
