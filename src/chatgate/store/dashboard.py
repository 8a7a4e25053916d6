"""The dashboard's queries: the overview (series over time, by model, by key, latency
percentiles), the request log (newest first, keyset paging), one request, the keys' recent
usage and spend, and each model's recent errors.

Day buckets are read from the daily rollup (``usage_daily``), hour buckets from the hourly
one (``usage_hourly``, migration 0005), their p50/p95 latency (of successful requests) from
the rollup's latency histogram: exact to a histogram bucket, and the same cost whatever the
traffic. The Models page's usage of the last 24 hours comes from the hourly rollup too (the
rows themselves only for the part of the oldest hour inside the window, and for the time of
each model's last error: index ranges). The request log and the recent errors read the usage
rows through the indexes of migration 0004.

Every function takes a SQLAlchemy ``Connection`` and runs in one transaction of
:meth:`Database.run`, off the event loop. Nothing here reads a key's secret: the keys table
is only joined for names.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from typing import Any

import msgspec
from msgspec import Struct
from sqlalchemy import (
    BigInteger,
    Connection,
    and_,
    case,
    cast,
    func,
    literal_column,
    or_,
    select,
)

from .tables import LATENCY_BOUNDS_MS, LATENCY_COLUMNS, api_keys, usage, usage_daily, usage_hourly

HOUR = 3600
DAY = 86400
TOP_MODELS = 6  # series per model on the overview chart (the rest is "other")
TOP_KEYS = 20
LOG_PAGE_MAX = 200

# the usage row as the dashboard shows it (cost in USD instead of micro-USD)
ROW_FIELDS = (
    "request_id",
    "created",
    "key_id",
    "owner",
    "model",
    "provider",
    "upstream_model",
    "stream",
    "status",
    "error_type",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "latency_ms",
    "ttft_ms",
    "upstream_request_id",
)


# --- the overview -------------------------------------------------------------------------


def overview(conn: Connection, since: float, until: float, bucket: int) -> dict[str, Any]:
    """Totals, a series per bucket (requests, errors, tokens, cost, p50/p95 latency), the
    requests of the busiest models per bucket, and the figures by model and by key.
    ``bucket`` is HOUR or DAY: the hourly or the daily rollup (``since`` is then the start
    of an hour or a UTC midnight)."""
    starts = list(range(int(since // bucket) * bucket, int(until), bucket))
    index = {t: i for i, t in enumerate(starts)}
    n = len(starts)
    names = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros", "lat")
    series: dict[str, list[float]] = {k: [0.0] * n for k in names}
    per_model: dict[str, list[int]] = {}
    models: dict[str, list[float]] = {}  # model -> [requests, errors, in, out, cost, lat]
    by_bucket, keys = _aggregates(conn, since, until, bucket)
    for (t, model), sums in by_bucket.items():
        i = index.get(t)
        if i is None:
            continue
        name = model or "(none)"  # the rollup's "" is the rows' NULL
        for k, v in zip(names, sums, strict=True):
            series[k][i] += v
        per_model.setdefault(name, [0] * n)[i] += int(sums[0])
        acc = models.setdefault(name, [0.0] * 6)
        for j, v in enumerate(sums):
            acc[j] += v
    p_series, p_total, source = latency_percentiles(conn, since, until, bucket)
    requests = int(sum(series["requests"]))
    errors = int(sum(series["errors"]))
    lat_sum = sum(series["lat"])
    totals = {
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / requests, 4) if requests else 0.0,
        "prompt_tokens": int(sum(series["prompt_tokens"])),
        "completion_tokens": int(sum(series["completion_tokens"])),
        "cost_usd": _usd(sum(series["cost_micros"])),
        "avg_latency_ms": round(lat_sum / requests, 1) if requests else None,
        "p50_ms": p_total[0],
        "p95_ms": p_total[1],
    }
    ranked = sorted(per_model, key=lambda m: (-sum(per_model[m]), m))
    model_series = [{"model": m, "requests": per_model[m]} for m in ranked[:TOP_MODELS]]
    if len(ranked) > TOP_MODELS:
        other = [0] * n
        for m in ranked[TOP_MODELS:]:
            other = [a + b for a, b in zip(other, per_model[m], strict=True)]
        model_series.append({"model": "other", "requests": other})
    by_model = [_breakdown({"model": m}, acc) for m, acc in models.items()]
    by_model.sort(key=lambda r: (-r["requests"], r["model"]))
    busiest = sorted(keys, key=lambda k: (-keys[k][0], k or ""))[:TOP_KEYS]
    names_of = key_names(conn, [k for k in busiest if k])
    by_key = [_breakdown({"key": k, "name": _key_name(k, names_of)}, keys[k]) for k in busiest]
    return {
        "since": since,
        "until": until,
        "bucket": bucket,
        "totals": totals,
        "series": {
            "t": starts,
            "requests": [int(v) for v in series["requests"]],
            "errors": [int(v) for v in series["errors"]],
            "error_rate": [
                round(e / r, 4) if r else None
                for e, r in zip(series["errors"], series["requests"], strict=True)
            ],
            "prompt_tokens": [int(v) for v in series["prompt_tokens"]],
            "completion_tokens": [int(v) for v in series["completion_tokens"]],
            "cost_usd": [_usd(v) for v in series["cost_micros"]],
            "p50_ms": [p_series.get(t, (None, None))[0] for t in starts],
            "p95_ms": [p_series.get(t, (None, None))[1] for t in starts],
        },
        "by_model_series": model_series,
        "by_model": by_model,
        "by_key": by_key,
        "keys": len(keys),
        "latency_source": source,
    }


def _usd(micros: float) -> float:
    return round(float(micros or 0) / 1e6, 6)


def _breakdown(head: dict[str, Any], acc: Sequence[float]) -> dict[str, Any]:
    requests = int(acc[0])
    return {
        **head,
        "requests": requests,
        "errors": int(acc[1]),
        "prompt_tokens": int(acc[2]),
        "completion_tokens": int(acc[3]),
        "cost_usd": _usd(acc[4]),
        "avg_latency_ms": round(acc[5] / requests, 1) if requests else None,
    }


Sums = list[float]  # requests, errors, prompt tokens, completion tokens, cost, latency sum


def _rollup(bucket: int) -> tuple[Any, Any]:
    """The rollup table of hour or day buckets, and its period column."""
    if bucket == HOUR:
        return usage_hourly, usage_hourly.c.hour
    if bucket == DAY:
        return usage_daily, usage_daily.c.day
    raise ValueError(f"no rollup of {bucket} s buckets")


def _aggregates(
    conn: Connection, since: float, until: float, bucket: int
) -> tuple[dict[tuple[int, str | None], Sums], dict[str | None, Sums]]:
    """The sums per (bucket, model) and per key: two reads of the hourly or daily rollup,
    each grouped to a few hundred rows."""
    by_bucket: dict[tuple[int, str | None], Sums] = {}
    by_key: dict[str | None, Sums] = {}
    table, period = _rollup(bucket)
    d = table.c
    ints = [d.requests, d.errors, d.prompt_tokens, d.completion_tokens, d.cost_micros]
    sums = [*(cast(func.sum(x), BigInteger) for x in ints), func.sum(d.latency_ms_sum)]
    where = and_(period >= int(since), period < until)
    q: Any = select(period, d.model, *sums).where(where).group_by(period, d.model)
    for t, model, *raw in conn.execute(q).all():
        by_bucket[int(t), model or None] = [float(v or 0) for v in raw]  # "" is NULL
    q = select(d.key_id, *sums).where(where).group_by(d.key_id)
    for key_id, *raw in conn.execute(q).all():
        by_key[key_id or None] = [float(v or 0) for v in raw]  # the rollup's "" is NULL
    return by_bucket, by_key


def key_names(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    ids = [i for i in ids if i and not i.startswith(("jwt:", "master"))]
    if not ids:
        return {}
    k = api_keys.c
    return {r[0]: r[1] for r in conn.execute(select(k.id, k.name).where(k.id.in_(ids)))}


def _key_name(key_id: str | None, names: dict[str, str]) -> str:
    if key_id is None:
        return "(no key)"
    if key_id == "master":
        return "master key"
    return names.get(key_id, key_id)


Pair = tuple[float | None, float | None]


def latency_percentiles(
    conn: Connection, since: float, until: float, bucket: int
) -> tuple[dict[int, Pair], Pair, str]:
    """p50 and p95 latency (ms) of the successful requests, per bucket and over the range,
    from the latency histogram of the hourly or daily rollup (exact to its bucket), and where
    they come from (``histogram``)."""
    table, period = _rollup(bucket)
    d = table.c
    stmt: Any = (
        select(period, *[cast(func.sum(getattr(d, name)), BigInteger) for name in LATENCY_COLUMNS])
        .where(period >= int(since), period < until, d.status < 400)
        .group_by(period)
    )
    total = [0] * len(LATENCY_COLUMNS)
    per: dict[int, Pair] = {}
    for t, *raw in conn.execute(stmt).all():
        counts = [int(v or 0) for v in raw]
        per[int(t)] = (histogram_quantile(counts, 0.5), histogram_quantile(counts, 0.95))
        total = [a + b for a, b in zip(total, counts, strict=True)]
    return per, (histogram_quantile(total, 0.5), histogram_quantile(total, 0.95)), "histogram"


def histogram_quantile(counts: Sequence[int], q: float) -> float | None:
    """The q-quantile of latencies counted per LATENCY_BOUNDS_MS bucket: found in the bucket
    that holds it (by rank, as percentile_cont ranks), placed within the bucket as if its
    values were spread evenly; the open-ended last bucket answers its lower bound."""
    n = sum(counts)
    if n == 0:
        return None
    rank = q * (n - 1)
    seen = 0
    for i, k in enumerate(counts):
        if k and rank < seen + k:
            low = float(LATENCY_BOUNDS_MS[i - 1]) if i else 0.0
            if i == len(LATENCY_BOUNDS_MS):
                return low
            high = float(LATENCY_BOUNDS_MS[i])
            at = low + (rank - seen + 0.5) / (k + 1) * (high - low)
            return min(round(at, 1), high - 0.1)
        seen += k
    return None  # not reached: rank < n


# --- the request log ----------------------------------------------------------------------


class LogQuery(Struct, forbid_unknown_fields=True):
    since: float | None = None
    until: float | None = None
    model: str | None = None
    key_id: str | None = None
    status: str | None = None  # "ok", "error", "4xx", "5xx" or a status code
    stream: bool | None = None
    cursor: str | None = None  # from the previous page's "next"
    limit: int = 50


STATUS_FILTERS = ("ok", "error", "2xx", "4xx", "5xx")


def encode_cursor(created: float, request_id: str) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([created, request_id])).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (created, request_id) a page ends at; ValueError for anything else."""
    try:
        created, request_id = msgspec.json.decode(
            base64.urlsafe_b64decode(cursor.encode()), type=tuple[float, str]
        )
    except (binascii.Error, msgspec.DecodeError, msgspec.ValidationError, UnicodeError):
        raise ValueError("invalid cursor") from None
    return created, request_id


def status_condition(status: str) -> Any:
    """The SQL condition of a status filter; ValueError for an unknown one."""
    c = usage.c.status
    if status == "ok":
        return c < 400
    if status == "error":
        return c >= 400
    if len(status) == 3 and status[0] in "12345" and status[1:] == "xx":
        base = int(status[0]) * 100
        return and_(c >= base, c < base + 100)
    if status.isdigit() and len(status) == 3:
        return c == int(status)
    raise ValueError(f"unknown status filter '{status}'")


def request_log(conn: Connection, q: LogQuery) -> dict[str, Any]:
    """One page of usage rows, newest first; ``next`` is the cursor of the page after."""
    c = usage.c
    stmt: Any = select(*[getattr(c, f) for f in ROW_FIELDS], c.cost_micros, api_keys.c.name)
    stmt = stmt.select_from(usage.outerjoin(api_keys, api_keys.c.id == c.key_id))
    if q.since is not None:
        stmt = stmt.where(c.created >= q.since)
    if q.until is not None:
        stmt = stmt.where(c.created < q.until)
    if q.model is not None:
        stmt = stmt.where(c.model == q.model)
    if q.key_id is not None:
        stmt = stmt.where(c.key_id == q.key_id)
    if q.status is not None:
        stmt = stmt.where(status_condition(q.status))
    if q.stream is not None:
        stmt = stmt.where(c.stream == q.stream)
    if q.cursor is not None:
        created, rid = decode_cursor(q.cursor)
        # "created <= x" first: the index range; the OR only breaks ties within it
        stmt = stmt.where(c.created <= created, or_(c.created < created, c.request_id < rid))
    limit = max(1, min(q.limit, LOG_PAGE_MAX))
    stmt = stmt.order_by(c.created.desc(), c.request_id.desc()).limit(limit + 1)
    rows = [_row(r) for r in conn.execute(stmt).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(rows[-1]["created"], rows[-1]["request_id"]) if more else None
    return {"object": "list", "data": rows, "next": nxt}


def _row(r: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(ROW_FIELDS, r, strict=False))
    cost, name = r[len(ROW_FIELDS)], r[len(ROW_FIELDS) + 1]
    out["stream"] = bool(out["stream"])
    out["cost_usd"] = round(cost / 1e6, 6) if cost is not None else None
    out["key_name"] = name or _key_name(out["key_id"], {})
    for k in ("latency_ms", "ttft_ms"):
        if out[k] is not None:
            out[k] = round(float(out[k]), 2)
    return out


def request_detail(conn: Connection, request_id: str) -> dict[str, Any] | None:
    c = usage.c
    stmt: Any = select(*[getattr(c, f) for f in ROW_FIELDS], c.cost_micros, api_keys.c.name)
    stmt = stmt.select_from(usage.outerjoin(api_keys, api_keys.c.id == c.key_id))
    row = conn.execute(stmt.where(c.request_id == request_id)).first()
    return _row(row) if row is not None else None


def recent_errors(conn: Connection, since: float, limit: int = 25) -> list[dict[str, Any]]:
    """The newest failed requests (newest first)."""
    c = usage.c
    stmt: Any = select(*[getattr(c, f) for f in ROW_FIELDS], c.cost_micros, api_keys.c.name)
    stmt = stmt.select_from(usage.outerjoin(api_keys, api_keys.c.id == c.key_id))
    stmt = stmt.where(c.created >= since, c.status >= 400)
    stmt = stmt.order_by(c.created.desc()).limit(limit)
    return [_row(r) for r in conn.execute(stmt).all()]


def model_health(conn: Connection, since: float) -> list[dict[str, Any]]:
    """Requests, errors, the last error and latency per (model, provider) since ``since``:
    the whole hours from the hourly rollup, the part of the hour ``since`` falls in from the
    usage rows (an index range of at most an hour), the last errors from the usage rows of
    failed requests (the index on (created, status))."""
    c, h = usage.c, usage_hourly.c
    edge = math.ceil(since / HOUR) * HOUR  # the first whole hour
    acc: dict[tuple[str | None, str | None], list[float]] = {}  # requests, errors, latency
    q: Any = (
        select(
            h.model,
            h.provider,
            cast(func.sum(h.requests), BigInteger),
            cast(func.sum(h.errors), BigInteger),
            func.sum(h.latency_ms_sum),
        )
        .where(h.hour >= edge)
        .group_by(h.model, h.provider)
    )
    for model, provider, *raw in conn.execute(q).all():  # the rollup's "" is NULL
        acc[model or None, provider or None] = [float(v or 0) for v in raw]
    if edge > since:
        q = (
            select(
                c.model,
                c.provider,
                func.count(),
                func.sum(case((c.status >= 400, 1), else_=0)),
                func.sum(c.latency_ms),
            )
            .where(c.created >= since, c.created < edge)
            .group_by(c.model, c.provider)
        )
        for model, provider, *raw in conn.execute(q).all():
            a = acc.setdefault((model, provider), [0.0, 0.0, 0.0])
            for i, v in enumerate(raw):
                a[i] += float(v or 0)
    # grouped by expressions, not the columns: SQLite would otherwise walk the whole
    # (model, created) index for the grouping instead of the range of (created, status)
    # (a literal, not a bound parameter: PostgreSQL must see the GROUP BY expressions as the
    # selected ones)
    empty: Any = literal_column("''")
    by_model, by_provider = func.coalesce(c.model, empty), func.coalesce(c.provider, empty)
    q = (
        select(by_model, by_provider, func.max(c.created))
        .where(c.created >= since, c.status >= 400)
        .group_by(by_model, by_provider)
    )
    last = {(m or None, p or None): float(t) for m, p, t in conn.execute(q).all()}
    out = []
    for (model, provider), (requests, errors, latency) in acc.items():
        if not requests:
            continue
        out.append(
            {
                "model": model,
                "provider": provider,
                "requests": int(requests),
                "errors": int(errors),
                "last_error": last.get((model, provider)),
                "avg_latency_ms": round(latency / requests, 1),
            }
        )
    out.sort(key=lambda r: (r["model"] or "", r["provider"] or ""))
    return out


# --- keys ---------------------------------------------------------------------------------


def key_usage(
    conn: Connection, since: float, today: float, month: float
) -> dict[str, dict[str, Any]]:
    """Per key, from the rollup: requests and cost since ``since`` (a UTC midnight), and
    the spend of each budget period (total, today, this month) as the budget counts it
    (without the reservations of requests in flight)."""
    d = usage_daily.c
    stmt: Any = select(
        d.key_id,
        func.sum(case((d.day >= int(since), d.requests), else_=0)),
        func.sum(case((d.day >= int(since), d.cost_micros), else_=0)),
        func.sum(d.cost_micros),
        func.sum(case((d.day >= int(today), d.cost_micros), else_=0)),
        func.sum(case((d.day >= int(month), d.cost_micros), else_=0)),
    ).group_by(d.key_id)
    out = {}
    for key_id, requests, cost, total, daily, monthly in conn.execute(stmt).all():
        if not key_id:
            continue
        out[key_id] = {
            "requests_30d": int(requests or 0),
            "cost_usd_30d": _usd(cost),
            "spent": {"total": _usd(total), "daily": _usd(daily), "monthly": _usd(monthly)},
        }
    return out
