"""Usage reports: filters and grouping over usage rows, as rows for JSON, CSV or a table."""

from __future__ import annotations

import csv
import io
from typing import Any, Literal

from msgspec import Struct, field
from sqlalchemy import Engine, case, func, select

from .tables import usage

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

    def run(self, engine: Engine) -> Report:
        c = usage.c
        dims: list[Any] = []
        for g in self.group_by:
            if g == "key":
                dims.append(c.key_id.label("key"))
            elif g in ("day", "hour"):
                width = 86400 if g == "day" else 3600
                dims.append((func.floor(c.created / width) * width).label(g))
            else:
                dims.append(getattr(c, g).label(g))
        q = select(
            *dims,
            func.count().label("requests"),
            func.sum(case((c.status >= 400, 1), else_=0)).label("errors"),
            func.coalesce(func.sum(c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(c.total_tokens), 0).label("total_tokens"),
            func.coalesce(func.sum(c.cached_tokens), 0).label("cached_tokens"),
            func.coalesce(func.sum(c.reasoning_tokens), 0).label("reasoning_tokens"),
            func.coalesce(func.sum(c.cost_micros), 0).label("cost_micros"),
            func.avg(c.latency_ms).label("avg_latency_ms"),
            func.avg(c.ttft_ms).label("avg_ttft_ms"),
        )
        for name, col in (
            ("key_id", c.key_id),
            ("owner", c.owner),
            ("model", c.model),
            ("provider", c.provider),
            ("status", c.status),
        ):
            value = getattr(self, name)
            if value is not None:
                q = q.where(col == value)
        if self.since is not None:
            q = q.where(c.created >= self.since)
        if self.until is not None:
            q = q.where(c.created < self.until)
        if dims:
            q = q.group_by(*dims).order_by(*dims)
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for r in rows:
            r["cost_usd"] = round(r.pop("cost_micros") / 1e6, 6)
            for k in ("avg_latency_ms", "avg_ttft_ms"):
                if r[k] is not None:
                    r[k] = round(float(r[k]), 3)
            for g in ("day", "hour"):
                if g in r and r[g] is not None:
                    r[g] = int(r[g])
        if not dims and rows and rows[0]["requests"] == 0:
            rows = []
        return Report(columns=[*self.group_by, *_METRICS], rows=rows)


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
