"""One database behind one small interface, for SQLite and PostgreSQL alike.

Every query is a plain function of a SQLAlchemy ``Connection`` (written once, for both
engines) that :meth:`Database.run` runs in one transaction without blocking the event loop:

- SQLite: the blocking driver in a worker thread. Measured against aiosqlite (SQLAlchemy's
  async adapter) on a key lookup: 310 us and 335 us of CPU per lookup in a thread, against
  520-990 us and 495-870 us through aiosqlite, whose every cursor call is a thread hop.
- PostgreSQL: asyncpg through SQLAlchemy's AsyncEngine (``run_sync``), and asyncpg itself
  for the usage batches: one ``unnest`` insert of the whole batch's arrays.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlalchemy import Engine, create_engine, event

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

from . import usage as u

T = TypeVar("T")
log = logging.getLogger("chatgate.store")

# PostgreSQL connection settings: fail fast when the server is gone (the usage writer then
# spools), never hang a caller for long.
PG_CONNECT_TIMEOUT = 5.0
PG_COMMAND_TIMEOUT = 30.0
PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 5


class StoreError(Exception):
    """The database cannot be used as configured (message safe to show: no secrets)."""


class Database:
    """Runs functions of a SQLAlchemy connection, each in one transaction."""

    dialect: ClassVar[str]

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def insert_usage(self, rows: Sequence[u.UsageRow]) -> int:
        """Insert the rows not already there and add them to the rollups, in one transaction;
        return how many were new."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def refused_rows(self, exc: BaseException) -> bool:
        """Whether the database refused the rows themselves (a value it cannot store) rather
        than being unreachable: retrying such rows would fail forever."""
        raise NotImplementedError


# How long a SQLite connection waits for another one's lock before it gives up
BUSY_SECONDS = 10


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
        # Readers never wait for the (one) writer. Switching a new file to WAL needs an
        # exclusive lock, and SQLite answers "database is locked" at once, without its busy
        # handler, while another connection (another replica starting) holds it or is
        # switching: wait and retry, the mode is persistent once one of them has set it.
        deadline = time.monotonic() + BUSY_SECONDS
        while True:
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Few connections: SQLite has one writer at a time and key lookups are cached, while
        # every pooled connection grows its own page cache as the file grows (a 30-minute
        # soak crept up 10 MB with SQLAlchemy's default 5 + 10)
        self.engine: Engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_SECONDS},
            pool_size=2,
            max_overflow=2,
        )
        event.listen(self.engine, "connect", _sqlite_pragmas)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self._call, fn, args)

    async def insert_usage(self, rows: Sequence[u.UsageRow]) -> int:
        return await asyncio.to_thread(self._insert_usage, rows)

    def _insert_usage(self, rows: Sequence[u.UsageRow]) -> int:
        """Straight through the driver: at thousands of rows a second even SQLAlchemy
        Core's per-row cost shows. One insert per row ("do nothing" on a request id already
        there: its rowcount says whether the row is new); the first one takes the write
        lock for the whole transaction. (An executemany of the rows after one look-up of the
        ids already there measured no faster: the B-trees are the cost, not the calls.)"""
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            new = []
            for row in rows:
                cur.execute(u.SQLITE_INSERT, u.values(row))
                if cur.rowcount == 1:
                    new.append(row)
            if new:
                for rollup, agg in u.rollups(new):
                    cur.executemany(rollup.sqlite, agg)
            cur.close()
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()
        return len(new)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.dispose)

    def refused_rows(self, exc: BaseException) -> bool:
        import sqlite3

        return isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError)


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str) -> None:
        # imported here: the async extension (and greenlet) cost SQLite users 8 MB for nothing
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_pre_ping=True,  # a connection from before a database restart is replaced
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_MAX_OVERFLOW,
            pool_timeout=PG_CONNECT_TIMEOUT,
            connect_args={"timeout": PG_CONNECT_TIMEOUT, "command_timeout": PG_COMMAND_TIMEOUT},
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn, *args)

    async def insert_usage(self, rows: Sequence[u.UsageRow]) -> int:
        if not rows:
            return 0
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            apg = raw.driver_connection  # the asyncpg connection, checked out of the pool
            assert apg is not None
            async with apg.transaction():
                got = await apg.fetch(
                    u.PG_INSERT, *u.columns([u.values(r) for r in rows], len(u.FIELDS))
                )
                if got:
                    ids = {r[0] for r in got}
                    arrays = []  # both rollups in one statement, in the order of rollups()
                    for rollup, agg in u.rollups(r for r in rows if r.request_id in ids):
                        arrays += u.columns(agg, len(rollup.columns))
                    await apg.execute(u.PG_ROLLUPS, *arrays)
        return len(got)

    async def close(self) -> None:
        await self.engine.dispose()

    def refused_rows(self, exc: BaseException) -> bool:
        from asyncpg.exceptions import (  # type: ignore[import-untyped]
            DataError,
            IntegrityConstraintViolationError,
        )

        return isinstance(exc, DataError | IntegrityConstraintViolationError)


def open_database(url: str) -> Database:
    """SQLite (``sqlite:///PATH``) or PostgreSQL (``postgresql://user@host:port/db``)."""
    if url.startswith("sqlite"):
        return SQLiteDatabase(url)
    for prefix in ("postgresql://", "postgres://", "postgresql+asyncpg://"):
        if url.startswith(prefix):
            return PostgresDatabase("postgresql+asyncpg://" + url[len(prefix) :])
    scheme = url.split("://", 1)[0]
    raise StoreError(
        f"database_url: unsupported scheme '{scheme}': use sqlite:///PATH or "
        "postgresql://USER@HOST:PORT/DB (the async driver asyncpg is built in)"
    )


def describe_error(exc: BaseException) -> str:
    """An exception in one line for the logs: the driver's reason, never SQL parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {text}"[:300] if text else type(orig).__name__
