"""Usage rows and how a batch of them is written: exactly once, with the daily rollup.

A batch is inserted with "do nothing on a request id already there" and the rollup is
upserted with the aggregates of the rows *actually inserted*, in the same transaction. So a
batch replayed after an ambiguous failure (committed, but the answer was lost) neither
duplicates a row nor counts it twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from msgspec import Struct

from .tables import DAILY_DIMS, DAILY_SUMS, usage

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


def daily_rows(rows: Iterable[UsageRow]) -> list[tuple[Any, ...]]:
    """The batch's aggregates per rollup row, in DAILY_COLUMNS order, sorted: concurrent
    writers then lock the rollup rows they share in the same order (no deadlock)."""
    acc: dict[tuple[int, str, str, str, str, int], list[Any]] = {}
    for r in rows:
        k = (
            day_of(r.created),
            r.key_id or "",
            r.owner or "",
            r.model or "",
            r.provider or "",
            r.status,
        )
        a = acc.get(k)
        if a is None:
            a = acc[k] = [0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0]
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
    return [(*k, *acc[k]) for k in sorted(acc)]


def values(row: UsageRow) -> tuple[Any, ...]:
    return tuple(getattr(row, f) for f in FIELDS)


_UPDATE = ", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in DAILY_SUMS)
_CONFLICT = f"ON CONFLICT ({', '.join(DAILY_DIMS)}) DO UPDATE SET {_UPDATE}"

# --- SQLite: one statement per row (rowcount says whether it was new), one upsert per
# rollup row; the caller holds the write lock for the whole transaction.
SQLITE_INSERT = (
    f"INSERT INTO usage ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))}) "
    "ON CONFLICT (request_id) DO NOTHING"
)
SQLITE_DAILY = (
    f"INSERT INTO usage_daily ({', '.join(DAILY_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(DAILY_COLUMNS))}) {_CONFLICT}"
)

# --- PostgreSQL: the whole batch as one array per column (asyncpg's binary arrays), one
# statement for the rows and one for the rollup.
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
_PG_DAILY_TYPES = {
    **{c: "int8" for c in DAILY_SUMS},
    "day": "int8",
    "status": "int4",
    "latency_ms_sum": "float8",
    "ttft_ms_sum": "float8",
}


def _unnest(columns: Sequence[str], types: dict[str, str]) -> str:
    return ", ".join(f"${i}::{types.get(c, 'text')}[]" for i, c in enumerate(columns, 1))


PG_INSERT = (
    f"INSERT INTO usage ({', '.join(FIELDS)}) "
    f"SELECT * FROM unnest({_unnest(FIELDS, _PG_USAGE_TYPES)}) "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)
PG_DAILY = (
    f"INSERT INTO usage_daily ({', '.join(DAILY_COLUMNS)}) "
    f"SELECT * FROM unnest({_unnest(DAILY_COLUMNS, _PG_DAILY_TYPES)}) {_CONFLICT}"
)


def columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows of tuples as one list per column (the arrays of an unnest insert)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*rows, strict=True)]
