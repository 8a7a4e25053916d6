"""How fast the dashboard answers with 100,000 usage rows, on SQLite and on PostgreSQL.

    .venv/bin/python bench/dashboard.py                      # both engines, 100k rows
    .venv/bin/python bench/dashboard.py --backend sqlite --rows 100000 --repeat 15

For each engine and each spread of the rows, a fresh database is filled through the
Store's own insert path (batches in time order, as the usage writer writes them, with the
daily rollup), a gateway is started on it, and every call the dashboard's pages make is
timed: median, p95 and max of ``--repeat`` sequential requests after one warm-up. The budget
is 300 ms per call. By default each engine runs twice: the rows spread over 30 days, then
all of them in the last 24 hours (``--spread 30,1``), the worst case for the hour buckets
and the Models page. The exit status is 1 when any call's p95, in any run, is over budget.
A table is printed and the figures are saved as bench/results/<time>-dashboard.json.
PostgreSQL is the server at ``--pg`` (default: the test suite's, 127.0.0.1:5432); the
benchmark creates its own database there and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from chatgate.store import Store, UsageRow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

BUDGET_MS = 300.0
MASTER = "mk-bench-dashboard"
PG_ADMIN = os.environ.get("CHATGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

# (model, provider, input $/M, output $/M, share of the traffic, median latency ms)
MODELS = [
    ("gpt-5.1", "openai", 1.25, 10.0, 0.32, 1400),
    ("claude-sonnet-4-6", "anthropic", 3.0, 15.0, 0.24, 1900),
    ("gemini-2.5-flash", "gemini", 0.3, 2.5, 0.18, 700),
    ("gpt-5.3-codex", "openai", 1.25, 10.0, 0.1, 2600),
    ("claude-opus-4-6", "anthropic", 5.0, 25.0, 0.06, 3200),
    ("gemini-3-pro", "gemini", 2.0, 12.0, 0.06, 2200),
    ("gpt-5.1-thinking", "openai", 1.25, 10.0, 0.04, 9000),
]
# (status, error type, share)
OUTCOMES = [
    (200, None, 0.945),
    (429, "rate_limit_exceeded", 0.02),
    (500, "upstream_error", 0.008),
    (502, "upstream_unavailable", 0.004),
    (504, "upstream_timeout", 0.003),
    (400, "invalid_value", 0.01),
    (401, "invalid_api_key", 0.005),
    (499, "client_disconnected", 0.005),
]


def make_rows(n: int, days: float, key_ids: list[str], now: float) -> list[UsageRow]:
    """Plausible traffic: a daily rhythm, a few busy keys, mostly successes, streams with a
    time to first token, token counts and costs that vary like real ones."""
    rnd = random.Random(20261201)
    key_weights = [1 / (i + 1) for i in range(len(key_ids))]  # a few keys do most
    owners = {k: ("platform", "research", "support", None)[i % 4] for i, k in enumerate(key_ids)}
    rows = []
    while len(rows) < n:
        age = rnd.random() * days * 86400
        created = now - age
        hour = time.gmtime(created).tm_hour
        if rnd.random() > 0.35 + 0.65 * (1 if 8 <= hour <= 20 else 0.3):
            continue  # quieter at night
        model, provider, p_in, p_out, _, median = rnd.choices(MODELS, [m[4] for m in MODELS])[0]
        status, error, _ = rnd.choices(OUTCOMES, [o[2] for o in OUTCOMES])[0]
        key = rnd.choices(key_ids, key_weights)[0] if status != 401 else None
        stream = rnd.random() < 0.6
        ok = status < 400
        prompt = int(rnd.lognormvariate(6.5, 1.0)) if status not in (400, 401) else None
        completion = int(rnd.lognormvariate(5.5, 0.9)) if ok else None
        latency = rnd.lognormvariate(0, 0.5) * median if ok else rnd.uniform(2, 400)
        cost = None
        if prompt is not None and completion is not None:
            cost = round(prompt * p_in + completion * p_out)  # micro-USD: $/M * tokens
        rows.append(
            UsageRow(
                request_id="chatcmpl-" + rnd.randbytes(12).hex(),
                created=created,
                key_id=key,
                model=model if status != 401 else None,
                provider=provider if status not in (400, 401) else None,
                upstream_model=model if ok else None,
                stream=stream,
                status=status,
                error_type=error,
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=(prompt or 0) + (completion or 0) if prompt is not None else None,
                cached_tokens=int(prompt * rnd.random() * 0.3) if prompt else None,
                reasoning_tokens=int(completion * 0.5) if completion and "thinking" in model else 0,
                latency_ms=latency,
                ttft_ms=latency * rnd.uniform(0.05, 0.4) if stream and ok else None,
                upstream_request_id=None,
                owner=owners[key] if key else None,
                cost_micros=cost,
            )
        )
    return rows


async def fill(url: str, n: int, days: float) -> dict[str, Any]:
    store = Store(url)
    try:
        await store.migrate()
        key_ids = []
        for i in range(25):
            policy: dict[str, Any] = {"rpm": 600} if i % 3 == 0 else {}
            if i % 4 == 0:
                policy.update(budget_micros=50_000_000, budget_period="monthly")
            _, rec = await store.keys.create(f"bench-key-{i:02d}", **policy)
            key_ids.append(rec.id)
        rows = make_rows(n, days, key_ids, time.time())
        rows.sort(key=lambda r: r.created)  # the writer inserts rows as requests finish
        t0 = time.perf_counter()
        written = 0
        for i in range(0, len(rows), 5000):
            written += await store.insert_usage(rows[i : i + 5000])
        elapsed = time.perf_counter() - t0
        assert written == n == await store.count_usage()
        return {"rows": written, "insert_s": round(elapsed, 2), "key_ids": key_ids}
    finally:
        await store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gateway:
    def __init__(self, url: str, work: Path) -> None:
        self.port = free_port()
        cfg = {
            "listen": {"host": "127.0.0.1", "port": self.port},
            "database_url": url,
            "master_key": MASTER,
            "sandbox": True,
            "log_level": "warning",
        }
        path = work / "chatgate.yaml"
        path.write_text(yaml.safe_dump(cfg))
        self.log = open(work / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatgate", "serve", "--config", str(path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the gateway did not start: " + (work / "server.log").read_text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def time_calls(gw: Gateway, key_ids: list[str], repeat: int) -> list[dict[str, Any]]:
    admin = {"Authorization": f"Bearer {MASTER}"}
    out = []
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        first = client.get("/admin/dashboard/requests?since=24h&limit=50", headers=admin).json()
        rid = first["data"][0]["request_id"] if first["data"] else "chatcmpl-none"
        deep = client.get("/admin/dashboard/requests?limit=200", headers=admin).json()
        for _ in range(9):  # the 11th page of 200
            if deep["next"] is None:
                break
            deep = client.get(
                f"/admin/dashboard/requests?limit=200&cursor={deep['next']}", headers=admin
            ).json()
        calls = [
            ("page", "/ui/", {}),
            ("page", "/ui/app.js", {"Accept-Encoding": "gzip"}),
            ("page", "/ui/app.css", {"Accept-Encoding": "gzip"}),
            ("sign-in", "/admin/dashboard/meta", admin),
            *(
                ("overview", f"/admin/dashboard/overview?range={r}", admin)
                for r in ("24h", "7d", "30d", "90d")
            ),
            ("keys", "/admin/dashboard/keys", admin),
            ("models", "/admin/dashboard/deployments", admin),
            ("requests", "/admin/dashboard/requests?since=24h&limit=50", admin),
            ("requests", "/admin/dashboard/requests?since=30d&model=gemini-3-pro&limit=50", admin),
            ("requests", f"/admin/dashboard/requests?key={key_ids[7]}&limit=50", admin),
            ("requests", "/admin/dashboard/requests?since=7d&status=error&limit=50", admin),
            ("requests", "/admin/dashboard/requests?status=5xx&stream=true&limit=50", admin),
            ("requests", f"/admin/dashboard/requests?limit=50&cursor={first['next']}", admin),
            ("requests", f"/admin/dashboard/requests?limit=50&cursor={deep['next']}", admin),
            ("detail", f"/admin/dashboard/requests/{rid}", admin),
            ("playground", "/v1/models", admin),
        ]
        for page, path, headers in calls:
            r = client.get(path, headers=headers)
            assert r.status_code == 200, (path, r.status_code, r.text[:200])
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = client.get(path, headers=headers)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200
            times.sort()
            out.append(
                {
                    "page": page,
                    "call": path.split("cursor=")[0] + ("cursor=…" if "cursor=" in path else ""),
                    "median_ms": round(statistics.median(times), 2),
                    "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2),
                    "max_ms": round(times[-1], 2),
                    "bytes": len(r.content),
                    "wire_bytes": int(r.headers.get("content-length", len(r.content))),
                }
            )
    return out


def new_pg_database() -> tuple[str, str]:
    import psycopg

    name = f"cg_bench_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, name


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_one(backend: str, rows: int, days: float, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cg-dash-") as tmp:
        work = Path(tmp)
        pg_name = None
        if backend == "sqlite":
            url = f"sqlite:///{work / 'chatgate.db'}"
        else:
            url, pg_name = new_pg_database()
        try:
            filled = asyncio.run(fill(url, rows, days))
            if pg_name is not None:  # fresh statistics, as autovacuum would have by now
                import psycopg

                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE")
            gw = Gateway(url, work)
            try:
                calls = time_calls(gw, filled["key_ids"], repeat)
            finally:
                gw.stop()
        finally:
            if pg_name is not None:
                drop_pg_database(pg_name)
    return {
        "backend": backend,
        "rows": filled["rows"],
        "spread_days": days,
        "insert_s": filled["insert_s"],
        "calls": calls,
    }


def print_table(run: dict[str, Any]) -> None:
    print(
        f"\n{run['backend']}: {run['rows']:,} usage rows over {run['spread_days']:g} day(s) "
        f"(filled in {run['insert_s']} s)"
    )
    print(f"  {'page':<11} {'call':<62} {'median':>8} {'p95':>8} {'max':>8} {'wire B':>8}")
    for c in run["calls"]:
        flag = "" if c["p95_ms"] < BUDGET_MS else "  OVER BUDGET"
        print(
            f"  {c['page']:<11} {c['call'][:62]:<62} {c['median_ms']:>8.1f} {c['p95_ms']:>8.1f}"
            f" {c['max_ms']:>8.1f} {c['wire_bytes']:>8}{flag}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--spread", default="30,1", help="days the rows are spread over, per run")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    runs = []
    for backend in backends:
        for days in (float(d) for d in args.spread.split(",")):
            run = run_one(backend, args.rows, days, args.repeat)
            print_table(run)
            runs.append(run)
    print()
    for r in runs:
        w = max(c["p95_ms"] for c in r["calls"])
        over = [c["call"] for c in r["calls"] if c["p95_ms"] >= BUDGET_MS]
        note = f"  OVER BUDGET: {', '.join(over)}" if over else ""
        print(
            f"slowest p95, {r['backend']}, rows over {r['spread_days']:g} day(s): {w:.1f} ms{note}"
        )
    worst = max(c["p95_ms"] for r in runs for c in r["calls"])
    verdict = "within" if worst < BUDGET_MS else "OVER"
    print(f"slowest p95 of all runs: {worst:.1f} ms ({verdict} {BUDGET_MS:.0f} ms)")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = results / f"{stamp}-dashboard.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "dashboard",
                "time": stamp,
                "machine": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                },
                "budget_ms": BUDGET_MS,
                "repeat": args.repeat,
                "runs": runs,
                "slowest_p95_ms": worst,
            },
            indent=2,
        )
    )
    print(f"saved {out.relative_to(ROOT)}")
    sys.exit(0 if worst < BUDGET_MS else 1)


if __name__ == "__main__":
    main()
