"""Schema migrations on SQLite and PostgreSQL: the upgrade path from the first schema keeps
the data (and backfills the daily and hourly rollups), replicas starting together migrate once,
``auto_migrate: false`` refuses an old schema, and `chatgate db` shows and upgrades it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, inspect, text

from chatgate.cli import main
from chatgate.config import from_dict
from chatgate.store import REVISIONS, SCHEMA_HEAD, ReportQuery, SchemaError, Store
from chatgate.store.db import _sqlite_pragmas
from chatgate.store.migrate import upgrade
from tests.unit.store_backends import row, run, store_url

__all__ = ["store_url"]  # the fixture, parametrized over SQLite and PostgreSQL

T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC

# rows as the first schema (0001) stored them: no owner, no cost
_OLD_USAGE = (
    "INSERT INTO usage (request_id, created, key_id, model, provider, upstream_model, stream, "
    "status, error_type, prompt_tokens, completion_tokens, total_tokens, cached_tokens, "
    "reasoning_tokens, latency_ms, ttft_ms, upstream_request_id) VALUES "
    "(:id, :created, :key, 'gpt-5.1', 'openai', 'gpt-5.1', :stream, :status, NULL, 10, 5, 15, "
    "0, NULL, :latency, :ttft, NULL)"
)


def _fill_first_schema(conn: Connection) -> None:
    upgrade(conn, "0001")
    conn.execute(
        text(
            "INSERT INTO api_keys (id, name, key_hash, key_prefix, models, created) "
            "VALUES ('key_old', 'old', 'h', 'sk-cg-xx', :models, 1.0)"
        ),
        {"models": '["gpt-5.1"]'},
    )
    for i in range(10):
        conn.execute(
            text(_OLD_USAGE),
            {
                "id": f"old{i}",
                "created": T0 + i * 20_000,  # spread over three days
                "key": "key_old" if i % 2 else None,
                "stream": i % 3 == 0,
                "status": 200 if i < 8 else 500,
                "latency": 100.0 + i,
                "ttft": 5.0 if i % 3 == 0 else None,
            },
        )


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def test_upgrade_from_the_first_schema_keeps_the_data(store_url: str) -> None:
    async def go() -> None:
        store = Store(store_url)
        try:
            await store.db.run(_fill_first_schema)
            assert await store.schema_version() == "0001"
            assert "usage_daily" not in await store.db.run(_tables)
            assert await store.migrate() == "0001"
            assert await store.schema_version() == SCHEMA_HEAD
            assert {"api_keys", "usage", "usage_daily", "usage_hourly"} <= await store.db.run(
                _tables
            )
            rec = await store.keys.get("key_old")
            assert rec is not None and rec.enabled and rec.budget_period == "total"
            assert rec.models == ("gpt-5.1",)
            assert await store.count_usage() == 10
            # the rollup was backfilled from the old rows: both report paths agree
            for q in (ReportQuery(group_by=["day", "key", "status"]), ReportQuery(group_by=[])):
                daily = (await store.db.run(q.run, True)).rows
                raw = (await store.db.run(q.run, False)).rows
                assert daily and len(daily) == len(raw)
                for d, r in zip(daily, raw, strict=True):
                    for k in ("avg_latency_ms", "avg_ttft_ms"):
                        assert d.pop(k) == pytest.approx(r.pop(k), abs=0.002)
                    assert d == r
            hourly = await store.db.run(_rollup_totals, "usage_hourly")
            assert hourly == await store.db.run(_rollup_totals, "usage_daily")
            assert hourly[:2] == (10, 2)
            # new rows go on top of the backfill
            assert await store.insert_usage([row("new1", key_id="key_old", cost_micros=5)]) == 1
            assert await store.spent_since("key_old", 0) == 5
            assert (await store.db.run(_rollup_totals, "usage_hourly"))[0] == 11
            assert await store.migrate() == SCHEMA_HEAD  # up to date: nothing to do
        finally:
            await store.close()

    run(go())


def _rollup_totals(conn: Connection, table: str) -> tuple[Any, ...]:
    got = conn.execute(
        text(
            "SELECT sum(requests), sum(errors), sum(prompt_tokens), sum(cost_micros), "
            f"sum(ttft_count), sum(lat_lt_150) FROM {table}"
        )
    ).one()
    return tuple(int(v or 0) for v in got)


def _hourly_rollup(conn: Connection) -> dict[tuple[Any, ...], list[float]]:
    from chatgate.store.usage import HOURLY_COLUMNS

    got = conn.exec_driver_sql(f"SELECT {', '.join(HOURLY_COLUMNS)} FROM usage_hourly").all()
    return {tuple(r[:6]): [float(v) for v in r[6:]] for r in got}


def test_upgrade_from_0004_keeps_the_rows_and_backfills_the_hourly_rollup(
    store_url: str,
) -> None:
    import random

    from sqlalchemy import insert

    from chatgate.store.tables import usage, usage_daily
    from chatgate.store.usage import DAILY_COLUMNS, FIELDS, daily_rows, hourly_rows, values

    rnd = random.Random(5)
    rows = [
        row(
            f"m{i}",
            created=T0 + rnd.uniform(0, 3 * 86400),
            key_id=rnd.choice(["key_a", None]),
            model=rnd.choice(["gpt-5.1", None]),
            status=rnd.choice([200, 200, 429, 500]),
            latency_ms=rnd.lognormvariate(6, 1.2),
            ttft_ms=rnd.choice([None, 12.5]),
            cost_micros=rnd.choice([None, rnd.randint(0, 900)]),
        )
        for i in range(80)
    ]

    def fill_0004(conn: Connection) -> None:  # as a 0004 writer left it: rows and daily rollup
        upgrade(conn, "0004")
        conn.execute(insert(usage), [dict(zip(FIELDS, values(r), strict=True)) for r in rows])
        daily = [dict(zip(DAILY_COLUMNS, r, strict=True)) for r in daily_rows(rows)]
        conn.execute(insert(usage_daily), daily)

    async def go() -> None:
        store = Store(store_url)
        try:
            await store.db.run(fill_0004)
            before = await store.db.run(_rollup_totals, "usage_daily")
            assert "usage_hourly" not in await store.db.run(_tables)
            assert await store.migrate() == "0004"
            assert await store.schema_version() == SCHEMA_HEAD
            assert await store.count_usage() == len(rows)
            assert await store.db.run(_rollup_totals, "usage_daily") == before
            assert await store.db.run(_rollup_totals, "usage_hourly") == before
            got = await store.db.run(_hourly_rollup)
            want = {tuple(r[:6]): [float(v) for v in r[6:]] for r in hourly_rows(rows)}
            assert set(got) == set(want)
            for k, v in want.items():
                assert got[k] == pytest.approx(v), k
            # the writer goes on from the backfill, a replay counting nothing
            more = [row("m-new", created=T0 + 10, cost_micros=7), rows[0]]
            assert await store.insert_usage(more) == 1
            assert await store.insert_usage(more) == 0
            after = await store.db.run(_rollup_totals, "usage_hourly")
            assert after == await store.db.run(_rollup_totals, "usage_daily")
            assert after[0] == len(rows) + 1 and after[3] == before[3] + 7
        finally:
            await store.close()

    run(go())


def test_replicas_starting_together_migrate_once(store_url: str) -> None:
    """Four stores (four connections) upgrade the same empty database at the same time: on
    PostgreSQL the advisory lock serialises them, SQLite's write lock does the same."""

    async def go() -> None:
        stores = [Store(store_url) for _ in range(4)]
        try:
            before = await asyncio.gather(*(s.migrate() for s in stores))
            # one found it empty and upgraded it; the others waited, then found it current
            assert sorted(map(str, before)) == [SCHEMA_HEAD] * 3 + ["None"]
            assert [await s.schema_version() for s in stores] == [SCHEMA_HEAD] * 4
            assert await stores[0].insert_usage([row("r1")]) == 1
        finally:
            for s in stores:
                await s.close()

    run(go())


def test_sqlite_connections_opening_a_new_file_together_all_get_wal(tmp_path: Path) -> None:
    """Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is
    locked" at once (no busy handler) to a connection that meets another one switching: seen
    about once in ten rounds of four. Every connection must wait its turn instead."""
    failures: list[BaseException] = []

    def open_one(path: Path) -> None:
        try:
            conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
            try:
                _sqlite_pragmas(conn, None)
                assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            finally:
                conn.close()
        except BaseException as exc:  # collected, reported below
            failures.append(exc)

    for i in range(60):
        path = tmp_path / f"new-{i}.db"
        threads = [threading.Thread(target=open_one, args=(path,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def test_without_auto_migrate_an_old_schema_is_refused(store_url: str) -> None:
    async def go() -> None:
        store = Store(store_url)
        try:
            with pytest.raises(SchemaError, match=r"empty.*`chatgate db upgrade`"):
                await store.migrate(auto=False)
            await store.db.run(upgrade, "0002")
            with pytest.raises(SchemaError, match=r"at revision 0002.*`chatgate db upgrade`"):
                await store.migrate(auto=False)
            assert await store.schema_version() == "0002"  # untouched
            await store.migrate()
            assert await store.migrate(auto=False) == SCHEMA_HEAD
        finally:
            await store.close()

    run(go())


def test_a_newer_schema_than_this_version_knows_is_refused(store_url: str) -> None:
    def bump(conn: Connection) -> None:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            await store.db.run(bump)
            with pytest.raises(SchemaError, match="9999, newer than this chatgate knows"):
                await store.migrate()
        finally:
            await store.close()

    run(go())


def test_gateway_refuses_to_start_on_an_old_schema_without_auto_migrate(store_url: str) -> None:
    from chatgate.app import Gateway

    cfg = from_dict({"database_url": store_url, "auto_migrate": False}, {})

    async def go() -> None:
        gw = Gateway(cfg)
        try:
            with pytest.raises(SchemaError, match="`chatgate db upgrade`"):
                await gw.start()
        finally:
            await gw.store.close()

    run(go())


def test_db_current_and_upgrade_commands(store_url: str, tmp_path: Any) -> None:
    cfg = tmp_path / "chatgate.yaml"
    cfg.write_text(f"database_url: {store_url}\nauto_migrate: false\n")
    cli = CliRunner()
    r = cli.invoke(main, ["db", "current", "--config", str(cfg)])
    assert r.exit_code == 0 and r.output.startswith("none (head is"), r.output
    r = cli.invoke(main, ["keys", "list", "--config", str(cfg)])  # auto_migrate: false
    assert r.exit_code == 2 and "chatgate db upgrade" in r.output, r.output
    r = cli.invoke(main, ["db", "upgrade", "--config", str(cfg)])
    assert r.exit_code == 0 and f"upgraded from empty to {SCHEMA_HEAD}" in r.output, r.output
    r = cli.invoke(main, ["db", "current", "--config", str(cfg)])
    assert r.output.strip() == f"{SCHEMA_HEAD} (head)"
    r = cli.invoke(main, ["db", "upgrade", "--config", str(cfg)])
    assert r.exit_code == 0 and "current" in r.output
    r = cli.invoke(main, ["keys", "list", "--config", str(cfg)])
    assert r.exit_code == 0 and "(none)" in r.output


def test_an_unreachable_database_is_one_line_from_the_cli(tmp_path: Any) -> None:
    cfg = tmp_path / "chatgate.yaml"
    cfg.write_text("database_url: postgresql://postgres@127.0.0.1:9/nothing\n")
    r = CliRunner().invoke(main, ["db", "current", "--config", str(cfg)])
    assert r.exit_code == 1 and r.output.startswith("chatgate: the database is unavailable")
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_revisions_are_ordered() -> None:
    assert list(REVISIONS) == sorted(REVISIONS) and REVISIONS[-1] == SCHEMA_HEAD
