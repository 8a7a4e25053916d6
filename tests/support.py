"""Test support: run the real gateway as a subprocess on a free loopback port.

In the embedded pass (the default) each gateway has its own SQLite file; in the cluster pass
(``CHATGATE_TEST_BACKEND=cluster``, see tests/services.py) its own fresh PostgreSQL database and
a random prefix on the shared Redis. Replicas of one cluster are Servers given the same
``database_url`` and ``redis_prefix``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.services import CLUSTER, REDIS_URL, free_port, pg_connect, shared

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "protocols" / "fixtures"
# a 1x1 PNG as a data URL: an image part every vendor accepts
PNG_1PX = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


class Server:
    """A `chatgate serve` subprocess with its own config and database: a SQLite file, or in
    the cluster pass a fresh PostgreSQL database and a random Redis prefix. Pass
    ``database_url``/``redis_prefix`` (and ``master_key``) to make replicas of one cluster;
    ``extra`` (top-level config keys) wins over everything."""

    def __init__(
        self,
        workdir: Path,
        extra: dict[str, Any] | None = None,
        args: tuple[str, ...] = (),
        *,
        database_url: str | None = None,
        redis_prefix: str | None = None,
        master_key: str | None = None,
    ) -> None:
        self.args = args
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.master_key = master_key or "mk-test-" + os.urandom(8).hex()
        self.db_path = workdir / "chatgate.db"
        if database_url is None:
            database_url = shared.new_database() if CLUSTER else f"sqlite:///{self.db_path}"
        cfg: dict[str, Any] = {
            "listen": {"host": "127.0.0.1", "port": self.port},
            "database_url": database_url,
            "master_key": "${TEST_MASTER_KEY}",
            "sandbox": True,
            "usage": {"flush_interval": 0.05},
            # faults injected per request (prompt directives) must not open circuits or
            # multiply attempts in tests about other things; the routing tests set their own
            "retry": {"max_attempts": 1},
            "circuit": {"failures": 1_000_000},
        }
        if CLUSTER or redis_prefix is not None:
            cfg["redis_url"] = REDIS_URL
            cfg["redis_prefix"] = redis_prefix or shared.new_prefix()
        cfg.update(extra or {})
        self.config = cfg
        self.database_url: str = cfg["database_url"]
        self.redis_prefix: str | None = cfg.get("redis_prefix")
        self.config_path = workdir / "chatgate.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg))
        self.log_path = workdir / "server.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Server:
        env = dict(os.environ, TEST_MASTER_KEY=self.master_key)
        for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
            env.pop(k, None)
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatgate",
                "serve",
                "--config",
                str(self.config_path),
                *self.args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    # --- helpers -----------------------------------------------------------------------

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.master_key}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kw)

    def create_key(self, name: str = "test", models: list[str] | None = None) -> str:
        r = self.admin("POST", "/admin/keys", json={"name": name, "models": models})
        assert r.status_code == 201, r.text
        return str(r.json()["key"])

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of a query on the gateway's database (SQLite or PostgreSQL), as dicts.
        Placeholders are ``?`` for both (translated to ``%s`` for PostgreSQL)."""
        if self.database_url.startswith("sqlite"):
            path = self.database_url.split("///", 1)[1]
            con = sqlite3.connect(path)
            con.row_factory = sqlite3.Row
            try:
                return [dict(r) for r in con.execute(sql, params)]
            finally:
                con.close()
        from psycopg.rows import dict_row

        with pg_connect(self.database_url, row_factory=dict_row) as con:
            return list(con.execute(sql.replace("?", "%s"), params))  # type: ignore[arg-type]

    def usage_rows(self) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM usage ORDER BY created")

    def stored_bytes(self) -> bytes:
        """Everything the database holds, as bytes (to check what is never stored): the
        SQLite file and its WAL, or every row of every PostgreSQL table as text."""
        if self.database_url.startswith("sqlite"):
            path = Path(self.database_url.split("///", 1)[1])
            wal = Path(str(path) + "-wal")
            return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
        tables = self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
        out = []
        for t in tables:
            name = t["table_name"]
            out += [str(r["row"]) for r in self.query(f'SELECT t::text AS row FROM "{name}" t')]
        return "\n".join(out).encode()

    def wait_usage_ids(self, ids: set[str], timeout: float = 10.0) -> dict[str, dict[str, Any]]:
        """Wait until the rows of these request ids are written; return them by id."""
        deadline = time.monotonic() + timeout
        while True:
            rows = {r["request_id"]: r for r in self.usage_rows() if r["request_id"] in ids}
            if len(rows) == len(ids) or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def wait_usage(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        rows = self.usage_rows()
        while len(rows) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            rows = self.usage_rows()
        return rows


class ThreadedSandbox:
    """The vendor emulators on their own event loop in a background thread (test side)."""

    def __init__(self, api_key: str | None = None) -> None:
        import asyncio
        import threading

        from chatgate import sandbox

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.sandbox = self.run(sandbox.start(api_key=api_key), timeout=10)
        self.base_url: str = self.sandbox.base_url
        self.openai_base_url: str = self.sandbox.openai_base_url
        self.anthropic_base_url: str = self.sandbox.anthropic_base_url
        self.gemini_base_url: str = self.sandbox.gemini_base_url

    def run(self, coro: Any, timeout: float = 15) -> Any:
        """Run a coroutine on the sandbox's loop and wait for its result."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def hanging(self) -> int:
        from chatgate.sandbox.openai_chat import STATE

        return int(self.sandbox.app[STATE].hanging)

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.base_url + "/_sandbox/requests").json())

    def close(self) -> None:
        self.run(self.sandbox.close(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class Fetched:
    """A raw HTTP exchange with the sandbox: status, lower-cased headers, the body as it
    came, and the error that cut it short (if one did)."""

    def __init__(
        self, status: int, headers: dict[str, str], body: bytes, error: BaseException | None
    ) -> None:
        self.status, self.headers, self.body, self.error = status, headers, body, error

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def fetch(
    base_url: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes, BaseException | None]:
    """One request with aiohttp, reading the body piece by piece so that a connection cut
    mid-body is reported rather than raised."""
    import asyncio
    import json

    import aiohttp

    async def go() -> tuple[int, dict[str, str], bytes, BaseException | None]:
        hdrs = dict(headers or {})
        payload = data if data is not None else (None if body is None else json.dumps(body))
        if payload is not None:
            hdrs.setdefault("Content-Type", "application/json")
        t = aiohttp.ClientTimeout(total=timeout)
        async with (
            aiohttp.ClientSession(timeout=t) as s,
            s.request(method, base_url + path, data=payload, headers=hdrs) as r,
        ):
            got = bytearray()
            err: BaseException | None = None
            try:
                async for piece in r.content.iter_any():
                    got += piece
            except aiohttp.ClientError as exc:
                err = exc
            return r.status, {k.lower(): v for k, v in r.headers.items()}, bytes(got), err

    return asyncio.run(go())


def sandbox_url(server: Server) -> str:
    """The in-process sandbox's URL, as the gateway's banner announced it."""
    import re

    m = re.search(r"local emulator at (http://127\.0\.0\.1:\d+)", server.log())
    assert m, server.log()
    return m.group(1)
