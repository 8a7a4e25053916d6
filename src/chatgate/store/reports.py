"""Usage reports: filters and grouping over usage rows, as rows for JSON, CSV or a table.

A query over whole UTC days without per-hour grouping is answered from the daily rollup
(``usage_daily``: a few rows per key and day); anything finer reads the usage rows.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Literal

from msgspec import Struct, field
from sqlalchemy import Connection, case, func, literal_column, nulls_first, select

from .tables import usage, usage_daily

DAY = 86400

Group = Literal["key", "owner", "model", "provider", "status", "day", "hour"]
GROUPS: tuple[str, ...] = ("key", "owner", "model", "provider", "status", "day", "hour")


class ReportQuery(Struct, forbid_unknown_fields=True):
    key_id: str | None = None
    owner: str | None = None
    model: str | None = None
    provider: str | None = None
    status: int | None = None
    since: float | None = None  # epoch seconds
    until: float | None = None
    group_by: list[Group] = field(default_factory=lambda: ["model"])

    def daily(self) -> bool:
        """Whether the daily rollup answers this query: whole UTC days, no hour grouping
        (and no filter on an empty name, which the rollup stores for "none")."""
        return (
            "hour" not in self.group_by
            and all(t is None or t % DAY == 0 for t in (self.since, self.until))
            and "" not in (self.key_id, self.owner, self.model, self.provider)
        )

    def run(self, conn: Connection, daily: bool | None = None) -> Report:
        """The report, from the rollup when it can answer, else from the usage rows
        (``daily`` forces one or the other, for tests that compare them)."""
        rows = self._daily(conn) if (self.daily() if daily is None else daily) else self._raw(conn)
        for r in rows:
            for k in ("requests", "errors", *_TOKENS):
                r[k] = int(r[k] or 0)
            r["cost_usd"] = round(int(r.pop("cost_micros") or 0) / 1e6, 6)
            for k in ("avg_latency_ms", "avg_ttft_ms"):
                if r[k] is not None:
                    r[k] = round(float(r[k]), 3)
            for g in ("day", "hour"):
                if g in r and r[g] is not None:
                    r[g] = int(r[g])
        if not self.group_by and rows and rows[0]["requests"] == 0:
            rows = []
        return Report(columns=[*self.group_by, *_METRICS], rows=rows)

    def _raw(self, conn: Connection) -> list[dict[str, Any]]:
        c = usage.c
        dims: list[Any] = []
        for g in self.group_by:
            if g == "key":
                dims.append(c.key_id.label("key"))
            elif g in ("day", "hour"):
                width: Any = literal_column(str(DAY if g == "day" else 3600))
                dims.append((func.floor(c.created / width) * width).label(g))
            else:
                dims.append(getattr(c, g).label(g))
        q: Any = select(
            *dims,
            func.count().label("requests"),
            func.sum(case((c.status >= 400, 1), else_=0)).label("errors"),
            *[func.coalesce(func.sum(getattr(c, t)), 0).label(t) for t in _TOKENS],
            func.coalesce(func.sum(c.cost_micros), 0).label("cost_micros"),
            func.avg(c.latency_ms).label("avg_latency_ms"),
            func.avg(c.ttft_ms).label("avg_ttft_ms"),
        )
        q = self._filter(q, c)
        if self.since is not None:
            q = q.where(c.created >= self.since)
        if self.until is not None:
            q = q.where(c.created < self.until)
        if dims:
            q = q.group_by(*dims).order_by(*[nulls_first(d) for d in dims])
        return [dict(r._mapping) for r in conn.execute(q)]

    def _daily(self, conn: Connection) -> list[dict[str, Any]]:
        c = usage_daily.c
        dims: list[Any] = []
        for g in self.group_by:
            col = c.key_id if g == "key" else getattr(c, g)
            dims.append(col.label(g))
        requests = func.sum(c.requests)
        q: Any = select(
            *dims,
            requests.label("requests"),
            func.sum(c.errors).label("errors"),
            *[func.sum(getattr(c, t)).label(t) for t in _TOKENS],
            func.sum(c.cost_micros).label("cost_micros"),
            (func.sum(c.latency_ms_sum) / func.nullif(requests, 0)).label("avg_latency_ms"),
            (func.sum(c.ttft_ms_sum) / func.nullif(func.sum(c.ttft_count), 0)).label("avg_ttft_ms"),
        )
        q = self._filter(q, c)
        if self.since is not None:
            q = q.where(c.day >= int(self.since))
        if self.until is not None:
            q = q.where(c.day < int(self.until))
        if dims:
            q = q.group_by(*dims).order_by(*dims)
        rows = [dict(r._mapping) for r in conn.execute(q)]
        for r in rows:  # the rollup's "" is the usage rows' NULL
            for g in ("key", "owner", "model", "provider"):
                if r.get(g) == "":
                    r[g] = None
        return rows

    def _filter(self, q: Any, c: Any) -> Any:
        for name in ("key_id", "owner", "model", "provider", "status"):
            value = getattr(self, name)
            if value is not None:
                q = q.where(getattr(c, name) == value)
        return q


_TOKENS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
)
_METRICS = [
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "avg_latency_ms",
    "avg_ttft_ms",
]


class Report(Struct):
    columns: list[str]
    rows: list[dict[str, Any]]

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: r.get(k) for k in self.columns})
        return buf.getvalue()
