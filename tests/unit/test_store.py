"""The store on both engines: keys, usage inserts (exactly once, with the daily and hourly
rollups),
spend, and reports from the rollup and from the rows agreeing."""

from __future__ import annotations

import random
from bisect import bisect_right
from pathlib import Path
from typing import Any

import pytest

from chatgate.store import REVISIONS, SCHEMA_HEAD, ReportQuery, Store, StoreError
from chatgate.store.tables import LATENCY_BOUNDS_MS, LATENCY_COLUMNS, usage_daily, usage_hourly
from tests.unit.store_backends import row, run, store_url

__all__ = ["store_url"]  # the fixture, parametrized over SQLite and PostgreSQL

DAY = 86400
T0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC


def test_revisions_match_the_migrations() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from chatgate.store.migrate import script_location

    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    script = ScriptDirectory.from_config(cfg)
    assert script.get_current_head() == SCHEMA_HEAD
    order = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert tuple(order) == REVISIONS


def test_unsupported_database_url_names_the_supported_ones() -> None:
    with pytest.raises(StoreError, match=r"mysql.*sqlite:///PATH or postgresql://"):
        Store("mysql://root@localhost/db")


async def _daily(store: Store, table: Any = usage_daily) -> list[dict[str, object]]:
    def q(conn: object) -> list[dict[str, object]]:
        from sqlalchemy import select

        rows = conn.execute(select(table).order_by(*table.primary_key))  # type: ignore[attr-defined]
        return [dict(r._mapping) for r in rows]

    return await store.db.run(q)


async def _hourly(store: Store) -> list[dict[str, object]]:
    return await _daily(store, usage_hourly)


def test_insert_usage_round_trip(store_url: str) -> None:
    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            r = row("r1", stream=True, ttft_ms=3.5, cost_micros=7, reasoning_tokens=None)
            assert await store.insert_usage([r]) == 1
            assert await store.spent_since("key_a", 0) == 7
            assert await store.count_usage() == 1
            (got,) = await _daily(store)
            assert got["day"] == T0 and got["requests"] == 1 and got["cost_micros"] == 7
            assert got["ttft_count"] == 1 and got["ttft_ms_sum"] == 3.5
            assert got["reasoning_tokens"] == 0
            (hour,) = await _hourly(store)
            assert hour["hour"] == T0 and {k: v for k, v in hour.items() if k != "hour"} == {
                k: v for k, v in got.items() if k != "day"
            }
        finally:
            await store.close()

    run(go())


def test_a_replayed_batch_adds_nothing(store_url: str) -> None:
    """Exactly once: rows already there (a replay after an ambiguous commit) and repeats
    inside one batch are skipped, in the rows and in the rollup."""

    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            first = [row(f"r{i}", cost_micros=100) for i in range(5)]
            assert await store.insert_usage(first) == 5
            again = [*first[2:], row("r5", cost_micros=100), row("r5", cost_micros=999)]
            assert await store.insert_usage(again) == 1
            assert await store.count_usage() == 6
            (daily,) = await _daily(store)
            assert daily["requests"] == 6 and daily["cost_micros"] == 600
            (hourly,) = await _hourly(store)
            assert hourly["requests"] == 6 and hourly["cost_micros"] == 600
            assert await store.spent_since("key_a", T0) == 600
        finally:
            await store.close()

    run(go())


def test_null_dimensions_share_one_rollup_row_and_read_back_as_null(store_url: str) -> None:
    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            rows = [
                row(f"n{i}", key_id=None, owner=None, model=None, provider=None, status=401)
                for i in range(3)
            ]
            assert await store.insert_usage(rows) == 3
            assert await store.insert_usage([row("n9", key_id=None, owner=None, model=None,
                                                 provider=None, status=401)]) == 1  # fmt: skip
            (daily,) = await _daily(store)
            assert daily["requests"] == 4 and daily["errors"] == 4 and daily["key_id"] == ""
            (hourly,) = await _hourly(store)
            assert hourly["requests"] == 4 and hourly["key_id"] == "" and hourly["model"] == ""
            q = ReportQuery(group_by=["key", "owner", "model", "provider", "status"])
            (rep,) = (await store.report(q)).rows
            assert rep["key"] is None and rep["model"] is None and rep["requests"] == 4
        finally:
            await store.close()

    run(go())


def test_key_lifecycle(store_url: str) -> None:
    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            key, rec = await store.keys.create(
                "ci", models=["gpt-5*"], owner="t", budget_micros=5, metadata={"a": [1]}
            )
            from chatgate.store import hash_key

            assert (await store.keys.find(hash_key(key))) == rec
            assert rec.models == ("gpt-5*",) and rec.metadata == {"a": [1]} and rec.enabled
            changed = await store.keys.update(rec.id, {"rpm": 60, "enabled": False})
            assert changed is not None and changed.rpm == 60 and not changed.enabled
            rotated = await store.keys.rotate(rec.id)
            assert rotated is not None and await store.keys.find(hash_key(key)) is None
            assert (await store.keys.find(hash_key(rotated[0]))) is not None
            assert [k.id for k in await store.keys.list()] == [rec.id]
            assert await store.keys.revoke(rec.id) and not await store.keys.revoke(rec.id)
            assert await store.keys.list() == []
            assert len(await store.keys.list(include_revoked=True)) == 1
            assert await store.keys.update(rec.id, {"rpm": 1}) is None  # revoked: final
            assert await store.keys.get("key_nope") is None
        finally:
            await store.close()

    run(go())


def _random_rows(n: int, seed: int = 7) -> list:  # type: ignore[type-arg]
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        stream = rnd.random() < 0.5
        status = rnd.choice([200, 200, 200, 429, 500])
        out.append(
            row(
                f"x{i}",
                created=T0 + rnd.uniform(-3 * DAY, 4 * DAY),
                key_id=rnd.choice(["key_a", "key_b", None]),
                owner=rnd.choice(["t1", "t2", None]),
                model=rnd.choice(["gpt-5.1", "claude-4.5"]),
                provider=rnd.choice(["openai", "anthropic", None]),
                status=status,
                prompt_tokens=rnd.randint(0, 2000) if status == 200 else None,
                completion_tokens=rnd.randint(0, 900) if status == 200 else None,
                total_tokens=rnd.randint(0, 2900) if status == 200 else None,
                reasoning_tokens=rnd.choice([None, rnd.randint(0, 99)]),
                cached_tokens=rnd.choice([None, 0, 64]),
                stream=stream,
                ttft_ms=rnd.uniform(5, 90) if stream else None,
                latency_ms=rnd.uniform(10, 900),
                cost_micros=rnd.choice([None, rnd.randint(0, 50_000)]),
            )
        )
    return out


QUERIES = [
    ReportQuery(group_by=[]),
    ReportQuery(group_by=["model"]),
    ReportQuery(group_by=["key", "day"]),
    ReportQuery(group_by=["owner", "provider", "status"]),
    ReportQuery(group_by=["day"], since=T0 - DAY, until=T0 + 2 * DAY),
    ReportQuery(group_by=["model"], key_id="key_b", status=200),
    ReportQuery(group_by=["provider"], owner="t1", model="gpt-5.1", since=T0),
]


def test_rollup_and_rows_give_the_same_reports(store_url: str) -> None:
    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            rows = _random_rows(600)
            for i in range(0, len(rows), 150):  # several batches: the rollup accumulates
                await store.insert_usage(rows[i : i + 150])
            await store.insert_usage(rows[:100])  # and a replay changes nothing
            for q in QUERIES:
                assert q.daily()
                daily = (await store.db.run(q.run, True)).rows
                raw = (await store.db.run(q.run, False)).rows
                assert len(daily) == len(raw) and daily, q
                for d, r in zip(daily, raw, strict=True):
                    for k in ("avg_latency_ms", "avg_ttft_ms"):
                        assert d.pop(k) == pytest.approx(r.pop(k), abs=0.002), (q, k)
                    assert d == r, q
            total = sum(r.cost_micros or 0 for r in rows if r.key_id == "key_a")
            assert await store.spent_since("key_a", 0) == total
            since = sum(r.cost_micros or 0 for r in rows if r.key_id == "key_a" and r.created >= T0)
            assert await store.spent_since("key_a", T0) == since
            part = sum(
                r.cost_micros or 0 for r in rows if r.key_id == "key_a" and r.created >= T0 + 3600
            )
            assert await store.spent_since("key_a", T0 + 3600) == part  # not a whole day
        finally:
            await store.close()

    run(go())


def _expected_rollup(rows: list[Any], width: int) -> dict[tuple[Any, ...], list[float]]:
    """The rollup computed here from the rows themselves, independently of the writer."""
    out: dict[tuple[Any, ...], list[float]] = {}
    for r in {r.request_id: r for r in reversed(rows)}.values():  # the first of an id wins
        k = (int(r.created // width) * width, r.key_id or "", r.owner or "", r.model or "",
             r.provider or "", r.status)  # fmt: skip
        a = out.setdefault(k, [0.0] * (11 + len(LATENCY_COLUMNS)))
        sums = [1, r.status >= 400, r.prompt_tokens, r.completion_tokens, r.total_tokens,
                r.cached_tokens, r.reasoning_tokens, r.cost_micros, r.latency_ms, r.ttft_ms,
                r.ttft_ms is not None]  # fmt: skip
        for i, v in enumerate(sums):
            a[i] += float(v or 0)
        a[11 + bisect_right(LATENCY_BOUNDS_MS, r.latency_ms)] += 1
    return out


def test_both_rollups_total_the_rows_even_after_a_replay(store_url: str) -> None:
    """The daily and hourly rollups hold exactly the sums of the rows inserted: batches
    accumulate, repeats within a batch and replays of batches (and of single rows) count once."""
    rows = _random_rows(700, seed=11)

    async def go() -> None:
        store = Store(store_url)
        try:
            await store.migrate()
            for i in range(0, len(rows), 120):
                batch = rows[i : i + 120]
                await store.insert_usage([*batch, *batch[:5]])  # repeats inside the batch
            assert await store.insert_usage(rows[100:400]) == 0  # a replay
            assert await store.insert_usage(rows[-1:]) == 0
            assert await store.count_usage() == len(rows)
            for table, period, width in ((usage_daily, "day", DAY), (usage_hourly, "hour", 3600)):
                got = {
                    (r[period], r["key_id"], r["owner"], r["model"], r["provider"], r["status"]): [
                        float(r[c]) for c in r if c not in (period, *DIMS)
                    ]
                    for r in await _daily(store, table)
                }
                want = _expected_rollup(rows, width)
                assert set(got) == set(want), table.name
                for k, v in want.items():
                    assert got[k] == pytest.approx(v), (table.name, k)
                assert sum(v[0] for v in got.values()) == len(rows)
        finally:
            await store.close()

    run(go())


DIMS = ("key_id", "owner", "model", "provider", "status")


def test_queries_the_rollup_cannot_answer_read_the_rows() -> None:
    assert not ReportQuery(group_by=["hour"]).daily()
    assert not ReportQuery(since=T0 + 1).daily()
    assert not ReportQuery(until=T0 + 3600).daily()
    assert not ReportQuery(key_id="").daily()
    assert ReportQuery(group_by=["day", "key"], since=T0, until=T0 + DAY).daily()


def test_hour_grouping_from_the_rows(tmp_path: Path) -> None:
    async def go() -> None:
        store = Store(f"sqlite:///{tmp_path / 'h.db'}")
        try:
            await store.migrate()
            await store.insert_usage(
                [row("a", created=T0 + 10), row("b", created=T0 + 3700), row("c", created=T0)]
            )
            rep = await store.report(ReportQuery(group_by=["hour"], since=T0 + 5))
            assert [(r["hour"], r["requests"]) for r in rep.rows] == [(T0, 1), (T0 + 3600, 1)]
        finally:
            await store.close()

    run(go())
