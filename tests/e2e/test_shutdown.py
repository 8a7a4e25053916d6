"""SIGTERM: streams in flight finish whole, new connections are refused,
every usage row is written, and the process exits 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import openai

from tests.support import Server


def test_sigterm_lets_streams_finish_and_refuses_new_work(tmp_path: Path) -> None:
    srv = Server(tmp_path, {"shutdown_grace_seconds": 20}).start()
    key = srv.create_key("drain")
    client = openai.OpenAI(base_url=srv.url + "/chat", api_key=key, max_retries=0)
    results: dict[int, tuple[str | None, int, bool]] = {}

    def stream(i: int) -> None:
        chunks = 0
        finish = None
        s = client.chat.completions.create(
            model="gpt-5.1",
            messages=[{"role": "user", "content": f"stream {i} [sandbox:chunk_delay=150]"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = False
        for chunk in s:
            chunks += 1
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            usage = usage or chunk.usage is not None
        results[i] = (finish, chunks, usage)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # every stream has started
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        httpx.get(srv.url + "/health", timeout=1)
        raise AssertionError("a new connection was accepted while draining")
    except httpx.ConnectError:
        pass
    for t in threads:
        t.join(30)
    assert srv.stop() == 0, srv.log()
    assert sorted(results) == list(range(8)), srv.log()
    for finish, chunks, usage in results.values():
        assert finish == "stop" and chunks > 3 and usage  # whole streams, not cut ones
    rows = srv.usage_rows()
    streamed = [r for r in rows if r["stream"]]
    assert len(streamed) == 8 and all(r["status"] == 200 for r in streamed)
