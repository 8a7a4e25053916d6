"""The usage writer when the database is down or slow: rows go to a bounded on-disk spool
(never blocking the request path), are replayed exactly once when the database is back, and
a crash between a batch's commit and its spool file's deletion adds nothing on replay.

"Down" is a real PostgreSQL behind a TCP relay the test cuts (connections reset, new ones
refused), a port nothing listens on, or a private PostgreSQL server killed and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from sqlalchemy import func, select

from chatgate.store import Store
from chatgate.store.spool import Spool
from chatgate.store.tables import usage_daily
from chatgate.store.writer import UsageWriter
from tests.services import free_port
from tests.unit.store_backends import pg_database, row, run, store_url

__all__ = ["store_url"]  # the fixture, parametrized over SQLite and PostgreSQL

DOWN_URL = "postgresql://postgres@127.0.0.1:9/nothing"  # discard port: connection refused


async def until(check: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


async def rollup_requests(store: Store) -> int:
    def q(conn: Any) -> int:
        return int(
            conn.execute(select(func.coalesce(func.sum(usage_daily.c.requests), 0))).scalar()
        )

    return await store.db.run(q)


class Relay:
    """A TCP relay to PostgreSQL that the test can cut (resets every connection and refuses
    new ones, as a dead server does) or stall (holds every byte, as a hung one does)."""

    def __init__(self) -> None:
        self.target = ("127.0.0.1", 5432)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()
        self.stalled = False

    def via(self, url: str) -> str:
        """The database URL through this relay (which then relays to that server)."""
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{netloc}127.0.0.1:{self.port}"))

    async def up(self) -> None:
        self.stalled = False
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.conns):
            w.transport.abort()
        self.conns.clear()
        await self.server.wait_closed()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.conns |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    while self.stalled:
                        await asyncio.sleep(0.05)
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        with contextlib.suppress(asyncio.CancelledError):  # the test's loop is ending
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.conns -= {writer, up_writer}


# --- the spool on its own ---------------------------------------------------------------


def test_spool_files_are_whole_ordered_and_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=4096)
    first = spool.write([row("a"), row("b")])
    second = spool.write([row("c")])
    assert first and second and spool.files() == [first, second]
    assert not list((tmp_path / "s").glob(".*.tmp"))
    with spool.claim(first) as rows:
        assert rows is not None and [r.request_id for r in rows] == ["a", "b"]
        with spool.claim(first) as again:
            assert again is None  # held: another process skips it
    while spool.write([row(f"x{i}") for i in range(5)]) is not None:
        pass
    assert spool.size() <= 4096  # full: the write that did not fit was refused
    spool.remove(first)
    assert first not in spool.files()


def test_spool_write_is_durable_and_clean_removes_only_stale_temporaries(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    stale, fresh = tmp_path / ".old.spool.tmp", tmp_path / ".new.spool.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    spool.clean()
    assert not stale.exists() and fresh.exists()
    assert spool.files() == []  # temporaries are never replayed


# --- the writer against a database that is down, slow, or back ---------------------------


def test_rows_go_to_disk_while_the_database_is_down_and_requests_never_wait(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        store = Store(DOWN_URL)
        w = UsageWriter(store, interval=0.02, batch_size=20, spool_dir=tmp_path / "spool")
        w.start()
        t = time.perf_counter()
        for i in range(200):
            w.record(row(f"r{i}"))
        assert time.perf_counter() - t < 0.05  # an append each: no I/O on the request path
        await until(lambda: w.spooled == 200 and w.pending == 0, what="rows spooled")
        assert not w.healthy and w.written == 0
        for i in range(200, 230):  # while it stays down, new rows follow them to disk
            w.record(row(f"r{i}"))
        await until(lambda: w.spooled == 230, what="later rows spooled")
        await w.close(deadline=1)
        await store.close()
        rows = []
        for path in w.spool.files():
            with w.spool.claim(path) as batch:
                assert batch is not None
                rows += [r.request_id for r in batch]
        assert sorted(rows) == sorted(f"r{i}" for i in range(230))

    run(go())


def test_memory_and_spool_are_bounded_and_the_excess_is_counted(tmp_path: Path) -> None:
    async def go() -> None:
        store = Store(DOWN_URL)
        w = UsageWriter(
            store,
            interval=0.02,
            batch_size=10,
            max_pending=30,
            spool_dir=tmp_path / "spool",
            spool_max_mb=4096 / 2**20,  # a few batches
        )
        w.start()
        for i in range(300):
            w.record(row(f"r{i}"))
            if i % 50 == 0:
                await asyncio.sleep(0.05)
        await until(lambda: w.dropped > 0 and w.pending <= 30, what="bounded")
        assert w.spool.size() <= 4096 and not w.can_spool()
        assert w.spooled + w.pending + w.dropped == 300  # every row accounted for
        await w.close(deadline=0.5)
        await store.close()

    run(go())


def test_spool_is_replayed_exactly_once_when_the_database_returns(tmp_path: Path) -> None:
    relay = Relay()

    async def go(via: str, spool_dir: Path) -> None:
        await relay.up()
        store = Store(via)
        await store.migrate()
        w = UsageWriter(store, interval=0.02, batch_size=25, spool_dir=spool_dir)
        w.start()
        for i in range(50):
            w.record(row(f"r{i}"))
        await until(lambda: w.written == 50, what="first rows written")
        await relay.cut()  # the database "dies"
        for i in range(50, 250):
            w.record(row(f"r{i}"))
            if i % 40 == 0:
                await asyncio.sleep(0.02)
        await until(lambda: w.spooled >= 200 and w.pending == 0, what="rows spooled")
        assert not w.healthy and w.spool.files()
        await relay.up()  # it is back
        await until(lambda: w.written == 250 and not w.spool.files(), 30, "replay")
        assert w.healthy
        await w.close()
        assert await store.count_usage() == 250
        assert await rollup_requests(store) == 250
        await store.close()

    with pg_database() as url:
        run(go(relay.via(url), tmp_path / "spool"))


def test_a_slow_database_does_not_hold_rows_in_memory_past_max_pending(tmp_path: Path) -> None:
    """The database hangs mid-write: the write times out and is spooled (its commit is
    unknown, the replay is exactly-once), and meanwhile the rows past max_pending go to
    disk beside the write in flight."""
    relay = Relay()

    async def go(via: str) -> None:
        await relay.up()
        store = Store(via)
        await store.migrate()
        w = UsageWriter(
            store,
            interval=0.02,
            batch_size=20,
            max_pending=60,
            spool_dir=tmp_path / "spool",
            write_timeout=1.5,
        )
        w.start()
        w.record(row("warm"))
        await until(lambda: w.written == 1, what="first write")
        relay.stalled = True  # every byte held: the next write hangs
        peak = 0
        for i in range(400):
            w.record(row(f"r{i}"))
            peak = max(peak, w.pending)
            if i % 20 == 0:
                await asyncio.sleep(0.01)
        await until(lambda: w.pending <= 60, what="overflow spilled")
        assert w.spooled > 0
        await until(lambda: not w.healthy, what="the hung write timed out")
        relay.stalled = False
        await relay.cut()  # the hung connections are dead; new ones work
        await relay.up()
        await until(lambda: w.written == 401 and not w.spool.files(), 30, "replay")
        await w.close()
        assert await store.count_usage() == 401 and await rollup_requests(store) == 401
        await store.close()

    with pg_database(migrated=True) as url:
        run(go(relay.via(url)))


def test_a_crash_between_commit_and_spool_deletion_adds_nothing_on_replay(
    store_url: str, tmp_path: Path
) -> None:
    """A batch committed whose spool file survived (the process died in between) is replayed
    on the next start: the rows and the rollup stay as they were; new rows are added."""

    async def go() -> None:
        store = Store(store_url)
        await store.migrate()
        committed = [row(f"c{i}", cost_micros=10) for i in range(30)]
        assert await store.insert_usage(committed) == 30
        spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
        assert spool.write(committed)  # the file the crash left behind
        assert spool.write([row(f"n{i}", cost_micros=10) for i in range(5)])
        w = UsageWriter(store, interval=0.02, spool_dir=tmp_path / "spool")
        w.start()  # a replica replays its spool directory on start
        await until(lambda: not spool.files(), what="replay")
        await w.close()
        assert w.written == 5
        assert await store.count_usage() == 35
        assert await rollup_requests(store) == 35
        assert await store.spent_since("key_a", 0) == 350
        await store.close()

    run(go())


def test_shutdown_while_the_database_is_down_spools_and_the_next_start_replays(
    store_url: str, tmp_path: Path
) -> None:
    async def go() -> None:
        down = Store(DOWN_URL)
        w = UsageWriter(down, interval=5.0, spool_dir=tmp_path / "spool")  # no tick before close
        w.start()
        for i in range(40):
            w.record(row(f"r{i}"))
        await w.close(deadline=1)
        await down.close()
        assert w.pending == 0 and w.spooled == 40 and w.spool.files()

        store = Store(store_url)
        await store.migrate()
        w2 = UsageWriter(store, interval=0.02, spool_dir=tmp_path / "spool")
        w2.start()
        await until(lambda: not w2.spool.files(), what="replay on start")
        await w2.close()
        assert await store.count_usage() == 40 and await rollup_requests(store) == 40
        await store.close()

    run(go())


def test_an_unreadable_spool_file_is_moved_aside_not_retried(
    tmp_path: Path, store_url: str
) -> None:
    async def go() -> None:
        store = Store(store_url)
        await store.migrate()
        spool_dir = tmp_path / "spool"
        spool_dir.mkdir()
        (spool_dir / "00000000000000000001-1-00000001.spool").write_bytes(b"\x93not msgpack")
        good = Spool(spool_dir, 1 << 20).write([row("ok")])
        assert good
        w = UsageWriter(store, interval=0.02, spool_dir=spool_dir)
        w.start()
        await until(lambda: not w.spool.files(), what="replay")
        await w.close()
        assert [p.suffix for p in spool_dir.iterdir()] == [".bad"]
        assert await store.count_usage() == 1
        await store.close()

    run(go())


def test_a_killed_postgresql_loses_no_usage_row(private_postgres: Any, tmp_path: Path) -> None:
    """A private PostgreSQL server is killed (immediate shutdown) mid-run and restarted."""

    async def go() -> None:
        store = Store(private_postgres.url)
        await store.migrate()
        w = UsageWriter(store, interval=0.02, batch_size=50, spool_dir=tmp_path / "spool")
        w.start()
        for i in range(300):
            w.record(row(f"r{i}"))
            if i == 100:
                await until(lambda: w.written == 101, what="written before the kill")
                await asyncio.to_thread(private_postgres.stop, "immediate")
            if i % 25 == 0:
                await asyncio.sleep(0.01)
        await until(lambda: w.pending == 0 and not w.healthy, what="spooled")
        await asyncio.to_thread(private_postgres.start)
        await until(lambda: w.written == 300 and not w.spool.files(), 30, "replay")
        await w.close()
        assert await store.count_usage() == 300 and await rollup_requests(store) == 300
        await store.close()

    run(go())


def test_a_row_the_database_refuses_is_kept_aside_and_the_rest_written(
    store_url: str, tmp_path: Path
) -> None:
    """A value the database cannot store must not block the writer (a retry would fail
    forever, and every later row would wait behind it)."""

    async def go() -> None:
        store = Store(store_url)
        await store.migrate()
        w = UsageWriter(store, interval=0.02, batch_size=10, spool_dir=tmp_path / "spool")
        w.start()
        for i in range(10):
            w.record(row(f"r{i}", status=None if i == 3 else 200))  # NOT NULL violated
        await until(lambda: w.written == 9, what="the good rows")
        w.record(row("after"))
        await until(lambda: w.written == 10, what="later rows")
        assert w.healthy and not w.spool.files()
        (bad,) = (tmp_path / "spool").glob("*.bad")
        kept = msgspec.msgpack.decode(bad.read_bytes())  # as written, the bad value too
        assert [r["request_id"] for r in kept["rows"]] == ["r3"]
        await w.close()
        assert await store.count_usage() == 10 and await rollup_requests(store) == 10
        await store.close()

    run(go())


def test_keys_seen_before_keep_working_while_the_database_is_down() -> None:
    """Requests keep being served through an outage: a key looked up before keeps its last
    answer; an unseen key cannot be checked and gets a 503, not a 401 or a 500."""
    from chatgate.auth import Authenticator
    from chatgate.errors import GatewayError

    relay = Relay()

    async def go(via: str) -> None:
        await relay.up()
        store = Store(via)
        key, rec = await store.keys.create("k")
        auth = Authenticator(store, None, ttl=0.05)
        assert (await auth.authenticate(f"Bearer {key}".encode())).id == rec.id
        await relay.cut()
        await asyncio.sleep(0.1)  # the cached answer is out of date: the store is asked
        assert (await auth.authenticate(f"Bearer {key}".encode())).id == rec.id
        try:
            await auth.authenticate(b"Bearer sk-cg-never-seen")
            raise AssertionError("an unseen key was let in")
        except GatewayError as err:
            assert (err.status, err.code) == (503, "key_store_unavailable")
        await store.close()

    with pg_database(migrated=True) as url:
        run(go(relay.via(url)))


def test_ready_while_the_database_is_down_depends_on_the_spool(tmp_path: Path) -> None:
    """Every replica shares the database: while it is down a replica stays ready as long as
    its usage can go to the spool, and says so; with the spool full it is not ready."""
    from chatgate.app import App, Gateway
    from chatgate.config import from_dict

    usage = {"spool_dir": str(tmp_path / "s"), "spool_max_mb": 0.004, "batch_size": 10}
    cfg = from_dict({"database_url": DOWN_URL, "usage": {**usage, "flush_interval": 0.02}}, {})

    async def go() -> None:
        app = App(cfg)
        gw = app.gw = Gateway(cfg)  # not started: only the store and the writer matter here

        async def ready() -> tuple[int, Any]:
            sent: list[dict[str, Any]] = []

            async def send(msg: dict[str, Any]) -> None:
                sent.append(msg)

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            scope = {"type": "http", "path": "/ready", "method": "GET", "headers": []}
            await app(scope, receive, send)
            body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
            return sent[0]["status"], msgspec.json.decode(body)

        status, body = await ready()
        assert status == 200, body
        assert body == {"status": "ready", "database": "unreachable", "usage": "spooling"}
        gw.writer.start()
        for i in range(200):
            gw.writer.record(row(f"r{i}"))
        await until(lambda: not gw.writer.can_spool(), what="the spool full")
        status, body = await ready()
        assert status == 503 and body["usage"] == "spool full", body
        await gw.writer.close(deadline=0.1)
        await gw.store.close()

    run(go())


def test_shutdown_while_a_write_hangs_spools_within_the_deadline(tmp_path: Path) -> None:
    relay = Relay()

    async def go(via: str) -> None:
        await relay.up()
        store = Store(via)
        w = UsageWriter(store, interval=0.02, batch_size=20, spool_dir=tmp_path / "spool")
        w.start()
        w.record(row("warm"))
        await until(lambda: w.written == 1, what="first write")
        relay.stalled = True  # the database hangs (the write timeout is 30 s)
        for i in range(100):
            w.record(row(f"r{i}"))
        await asyncio.sleep(0.3)  # a write is in flight, stuck
        t = time.monotonic()
        await w.close(deadline=1.0)
        # the deadline, then SQLAlchemy's graceful close of the cancelled connection (2 s)
        assert time.monotonic() - t < 4.5
        assert w.pending == 0 and w.spooled >= 100
        relay.stalled = False
        await relay.cut()
        await relay.up()
        await store.close()
        store = Store(via)
        w2 = UsageWriter(store, interval=0.02, spool_dir=tmp_path / "spool")
        w2.start()
        await until(lambda: not w2.spool.files(), 30, "replay")
        await w2.close()
        assert await store.count_usage() == 101 and await rollup_requests(store) == 101
        await store.close()

    with pg_database(migrated=True) as url:
        run(go(relay.via(url)))
