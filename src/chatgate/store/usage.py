"""Usage rows and how a batch of them is written: exactly once, with the rollups.

A batch is inserted with "do nothing on a request id already there" and each rollup (daily
and hourly, :data:`ROLLUPS`) is upserted with the aggregates of the rows *actually
inserted*, in the same transaction. So a
batch replayed after an ambiguous failure (committed, but the answer was lost) neither
duplicates a row nor counts it twice.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from operator import add
from typing import Any

from msgspec import Struct
from msgspec.structs import astuple

from .tables import DAILY_DIMS, DAILY_SUMS, LATENCY_BOUNDS_MS, LATENCY_COLUMNS, ROLLUP_DIMS, usage

HOUR = 3600
DAY = 86400


class UsageRow(Struct):
    request_id: str
    created: float
    key_id: str | None
    model: str | None
    provider: str | None
    upstream_model: str | None
    stream: bool
    status: int
    error_type: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    latency_ms: float
    ttft_ms: float | None
    upstream_request_id: str | None
    owner: str | None = None
    cost_micros: int | None = None


FIELDS: tuple[str, ...] = UsageRow.__struct_fields__
assert set(FIELDS) == set(usage.c.keys()), "UsageRow and the usage table must agree"
DAILY_COLUMNS = (*DAILY_DIMS, *DAILY_SUMS)
HOURLY_COLUMNS = ("hour", *ROLLUP_DIMS, *DAILY_SUMS)
_DIMS = 1 + len(ROLLUP_DIMS)  # a rollup row's period and dimensions, before its sums
_SUMS = 11  # the rollup's sums before the latency histogram
_HISTOGRAM = (0,) * len(LATENCY_COLUMNS)
assert DAILY_SUMS[_SUMS:] == LATENCY_COLUMNS, "the histogram comes last in the rollup"


def unique(rows: Iterable[UsageRow]) -> list[UsageRow]:
    """The batch without repeated request ids (the first one wins, as the database would)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        if r.request_id not in seen:
            seen.add(r.request_id)
            out.append(r)
    return out


def day_of(created: float) -> int:
    return int(created // DAY) * DAY


def rollup_rows(rows: Iterable[UsageRow], width: int = DAY) -> list[tuple[Any, ...]]:
    """The batch's aggregates per rollup row of periods ``width`` seconds long (DAY, HOUR),
    in rollup column order (period, dimensions, sums), sorted: concurrent writers then lock
    the rollup rows they share in the same order (no deadlock)."""
    acc: dict[tuple[int, str, str, str, str, int], list[Any]] = {}
    for r in rows:
        k = (
            int(r.created // width) * width,
            r.key_id or "",
            r.owner or "",
            r.model or "",
            r.provider or "",
            r.status,
        )
        a = acc.get(k)
        if a is None:
            a = acc[k] = [0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0, *_HISTOGRAM]
        a[0] += 1
        a[1] += r.status >= 400
        a[2] += r.prompt_tokens or 0
        a[3] += r.completion_tokens or 0
        a[4] += r.total_tokens or 0
        a[5] += r.cached_tokens or 0
        a[6] += r.reasoning_tokens or 0
        a[7] += r.cost_micros or 0
        a[8] += r.latency_ms
        if r.ttft_ms is not None:
            a[9] += r.ttft_ms
            a[10] += 1
        a[_SUMS + bisect_right(LATENCY_BOUNDS_MS, r.latency_ms)] += 1
    return [(*k, *acc[k]) for k in sorted(acc)]


def daily_rows(rows: Iterable[UsageRow]) -> list[tuple[Any, ...]]:
    """The daily rollup's rows of a batch, in DAILY_COLUMNS order."""
    return rollup_rows(rows, DAY)


def hourly_rows(rows: Iterable[UsageRow]) -> list[tuple[Any, ...]]:
    """The hourly rollup's rows of a batch, in HOURLY_COLUMNS order."""
    return rollup_rows(rows, HOUR)


def values(row: UsageRow) -> tuple[Any, ...]:
    """The row's values in FIELDS (column) order: msgspec's own, in C."""
    return astuple(row)


class Rollup(Struct, frozen=True):
    """One rollup table and the statements that upsert a batch's aggregates into it."""

    table: str
    width: int  # seconds per period
    columns: tuple[str, ...]
    sqlite: str  # one upsert per rollup row (executemany)
    postgresql: str  # the whole batch as one array per column, its $n numbered as in PG_ROLLUPS


# --- SQLite: one statement per row (rowcount says whether it was new), one upsert per
# rollup row; the caller holds the write lock for the whole transaction.
SQLITE_INSERT = (
    f"INSERT INTO usage ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))}) "
    "ON CONFLICT (request_id) DO NOTHING"
)

# --- PostgreSQL: the whole batch as one array per column (asyncpg's binary arrays), one
# statement for the rows and one per rollup.
_PG_USAGE_TYPES = {
    "created": "float8",
    "stream": "bool",
    "status": "int4",
    "prompt_tokens": "int4",
    "completion_tokens": "int4",
    "total_tokens": "int4",
    "cached_tokens": "int4",
    "reasoning_tokens": "int4",
    "latency_ms": "float8",
    "ttft_ms": "float8",
    "cost_micros": "int8",
}
_PG_ROLLUP_TYPES = {
    **{c: "int8" for c in DAILY_SUMS},
    "day": "int8",
    "hour": "int8",
    "status": "int4",
    "latency_ms_sum": "float8",
    "ttft_ms_sum": "float8",
}


def _unnest(columns: Sequence[str], types: dict[str, str], first: int = 1) -> str:
    return ", ".join(f"${i}::{types.get(c, 'text')}[]" for i, c in enumerate(columns, first))


PG_INSERT = (
    f"INSERT INTO usage ({', '.join(FIELDS)}) "
    f"SELECT * FROM unnest({_unnest(FIELDS, _PG_USAGE_TYPES)}) "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)


def _rollup(table: str, period: str, width: int, first: int = 1) -> Rollup:
    cols = (period, *ROLLUP_DIMS, *DAILY_SUMS)
    update = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in DAILY_SUMS)
    conflict = f"ON CONFLICT ({period}, {', '.join(ROLLUP_DIMS)}) DO UPDATE SET {update}"
    head = f"INSERT INTO {table} ({', '.join(cols)})"
    return Rollup(
        table=table,
        width=width,
        columns=cols,
        sqlite=f"{head} VALUES ({', '.join('?' * len(cols))}) {conflict}",
        postgresql=f"{head} SELECT * FROM unnest({_unnest(cols, _PG_ROLLUP_TYPES, first)}) "
        + conflict,
    )


DAILY = _rollup("usage_daily", "day", DAY)
HOURLY = _rollup("usage_hourly", "hour", HOUR, first=len(DAILY_COLUMNS) + 1)
assert DAILY.columns == DAILY_COLUMNS and HOURLY.columns == HOURLY_COLUMNS
# PostgreSQL: both rollups in one statement (one round trip; measured 8 % more rows/s than
# two): the daily upsert as a data-modifying CTE, its arrays first, then the hourly ones
PG_ROLLUPS = f"WITH daily AS ({DAILY.postgresql}) {HOURLY.postgresql}"


def rollups(rows: Iterable[UsageRow]) -> list[tuple[Rollup, list[tuple[Any, ...]]]]:
    """Every rollup the writer keeps, with its rows for a batch, in the order they are
    written: the batch is aggregated once, per hour, and the days are folded from the hours
    (a day is a whole number of hours)."""
    hourly = rollup_rows(rows, HOUR)
    if not hourly or hourly[0][0] == hourly[-1][0]:  # one hour (the usual batch): its day
        day = int(hourly[0][0] // DAY) * DAY if hourly else 0
        return [(DAILY, [(day, *r[1:]) for r in hourly]), (HOURLY, hourly)]
    days: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in hourly:
        k = (int(r[0] // DAY) * DAY, *r[1:_DIMS])
        a = days.get(k)
        days[k] = r[_DIMS:] if a is None else tuple(map(add, a, r[_DIMS:]))
    daily = [(*k, *days[k]) for k in sorted(days)]
    return [(DAILY, daily), (HOURLY, hourly)]


def columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of tuples as one list per column (the arrays of an unnest insert)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*rows, strict=True)]
