"""Chatgate's benchmark: direct-to-upstream (the limit), an aiohttp pass-through (the floor
for a Python proxy), Chatgate, and LiteLLM's proxy, measured in one run on pinned cores.

    make bench                       # or: .venv/bin/python bench/run.py [--quick] [--repeat N]

Targets run on core 0; the fake upstream and the load generators on core 1. Non-streaming
cells use wrk (installed with apt-get when missing); streaming cells an async client that
records time to first byte. Ratios inside one run are the figures that count: this machine
is noisy. Results go to bench/results/<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
KEY = "sk-bench-floor-key"
CLK = os.sysconf("SC_CLK_TCK")
SMALL = {"messages": [{"role": "user", "content": "Say hello to the benchmark."}], "max_tokens": 64}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def pinned(core: int, argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["taskset", "-c", str(core), *argv], **kw)


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its (reaped and live) children."""
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLK
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for k in kids:
        out.append(int(k))
        out.extend(_children(int(k)))
    return out


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return round(total, 1)


# --- load generators ---------------------------------------------------------------------

WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = [==[{body}]==]
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed: apt-get install wrk")
    return found


def wrk(url: str, key: str, body: dict[str, Any], conns: int, seconds: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA.format(key=key, body=json.dumps(body)))
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            ensure_wrk(),
            "-t1",
            f"-c{conns}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            f.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M)}
    return {
        "rps": rps,
        "requests": total,
        "errors": errors,
        "p50_ms": lat.get("50", 0.0),
        "p99_ms": lat.get("99", 0.0),
    }


def _ms(text: str) -> float:
    n = float(re.sub(r"[a-z]+$", "", text))
    return (
        n / 1000
        if text.endswith("us")
        else n * 1000
        if text.endswith("s") and not text.endswith("ms")
        else n
    )


async def _stream_load(
    url: str, key: str, body: dict[str, Any], conns: int, seconds: float
) -> dict[str, float]:
    ttfb: list[float] = []
    done = 0
    errors = 0
    payload = json.dumps({**body, "stream": True}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    stop = time.monotonic() + seconds
    conn = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < stop:
                t = time.perf_counter()
                async with s.post(url, data=payload, headers=headers) as r:
                    first = True
                    async for _ in r.content.iter_any():
                        if first:
                            ttfb.append(time.perf_counter() - t)
                            first = False
                    if r.status == 200:
                        done += 1
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(conns)))
    ttfb.sort()
    return {
        "rps": done / seconds,
        "requests": done,
        "errors": errors,
        "p50_ms": ttfb[len(ttfb) // 2] * 1000 if ttfb else 0.0,
        "p99_ms": ttfb[int(len(ttfb) * 0.99)] * 1000 if ttfb else 0.0,
    }


def stream_load(
    url: str, key: str, body: dict[str, Any], conns: int, seconds: float
) -> dict[str, float]:
    code = (
        f"import asyncio, json, sys; sys.path.insert(0, {str(HERE)!r}); import run; "
        "print(json.dumps(asyncio.run(run._stream_load(*json.loads(sys.argv[1])))))"
    )
    out = subprocess.run(
        ["taskset", "-c", "1", PY, "-c", code, json.dumps([url, key, body, conns, seconds])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- targets -----------------------------------------------------------------------------


class Target:
    def __init__(
        self,
        name: str,
        argv: list[str] | None,
        url: str,
        key: str,
        port: int,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.argv, self.url, self.key, self.port = name, argv, url, key, port
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, core: int | None = 0, settle: float = 1.0) -> None:
        """Start the target pinned to ``core`` (None: free to use every core), then give it
        ``settle`` seconds after its port opens."""
        if self.argv is None:
            return
        kw: dict[str, Any] = {
            "env": self.env,
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.DEVNULL,
            "start_new_session": True,
        }
        self.proc = (
            subprocess.Popen(self.argv, **kw) if core is None else pinned(core, self.argv, **kw)
        )
        wait_port(self.port)
        time.sleep(settle)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def chatgate_target(upstream: str, work: Path) -> Target:
    port = free_port()
    cfg = {
        "listen": {"host": "127.0.0.1", "port": port},
        "database_url": f"sqlite:///{work / 'bench.db'}",
        "providers": {
            "openai": {"protocol": "openai", "base_url": upstream + "/v1", "api_key": "k"},
            "anthropic": {"protocol": "anthropic", "base_url": upstream, "api_key": "k"},
            "gemini": {"protocol": "gemini", "base_url": upstream, "api_key": "k"},
        },
        "models": {
            "gpt-5.1": [{"provider": "openai", "model": "gpt-5.1"}],
            "claude-sonnet-4-6": [{"provider": "anthropic", "model": "claude-sonnet-4-6"}],
            "gemini-2.5-flash": [{"provider": "gemini", "model": "gemini-2.5-flash"}],
        },
        "log_level": "warning",
    }
    path = work / "chatgate.json"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    env = dict(os.environ)
    created = subprocess.run(
        [
            PY,
            "-m",
            "chatgate",
            "keys",
            "create",
            "--name",
            "bench",
            "--rpm",
            "100000000",
            "--tpm",
            "1000000000000",
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=work,
    )
    key = created.stdout.strip().splitlines()[0]
    argv = [PY, "-m", "chatgate", "serve", "--config", str(path)]
    return Target("chatgate", argv, f"http://127.0.0.1:{port}/v1/chat/completions", key, port, env)


def litellm_target(upstream: str, work: Path) -> Target | None:
    venv = Path(os.environ.get("LITELLM_VENV", HERE / ".venv-litellm"))
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        return None
    port = free_port()
    cfg = work / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: gpt-5.1\n"
        "    litellm_params:\n"
        f"      model: openai/gpt-5.1\n      api_base: {upstream}/v1\n      api_key: k\n"
        "litellm_settings:\n  set_verbose: false\n  turn_off_message_logging: true\n"
        "general_settings:\n  master_key: sk-litellm-bench\n"
    )
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    argv = [str(exe), "--config", str(cfg), "--port", str(port), "--num_workers", "1"]
    return Target(
        "litellm",
        argv,
        f"http://127.0.0.1:{port}/v1/chat/completions",
        "sk-litellm-bench",
        port,
        env,
    )


# --- the run -----------------------------------------------------------------------------


def measure(
    t: Target, kind: str, body: dict[str, Any], conns: int, seconds: float
) -> dict[str, Any]:
    before = cpu_seconds(t.pid) if t.pid else 0.0
    if kind == "stream":
        res = stream_load(t.url, t.key, body, conns, seconds)
    else:
        res = wrk(t.url, t.key, body, conns, seconds)
    if t.pid:
        used = cpu_seconds(t.pid) - before
        res["cpu_ms_per_req"] = round(1000 * used / max(1, res["requests"]), 3)
        res["peak_rss_mb"] = rss_mb(t.pid, "VmHWM")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each cell")
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell; medians reported")
    ap.add_argument("--quick", action="store_true", help="2 s cells, one run, fewer cells")
    ap.add_argument("--memory", action="store_true", help="idle RSS and 1,000 open streams")
    ap.add_argument("--soak", type=float, metavar="SECONDS", help="steady load, RSS every 10 s")
    ap.add_argument("--workers", action="store_true", help="--workers 2 against one worker")
    args = ap.parse_args()
    if args.memory or args.soak or args.workers:
        from special import run_special

        return run_special(args)
    seconds, repeat = (2.0, 1) if args.quick else (args.seconds, args.repeat)
    work = Path(tempfile.mkdtemp(prefix="chatgate-bench-"))
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    fake = pinned(1, [PY, str(HERE / "fake_upstream.py"), str(up_port)])
    wait_port(up_port)
    floor_port = free_port()
    targets = [
        Target("direct", None, upstream + "/v1/chat/completions", KEY, up_port),
        Target(
            "floor",
            [PY, str(HERE / "floor.py"), str(floor_port), upstream, KEY],
            f"http://127.0.0.1:{floor_port}/v1/chat/completions",
            KEY,
            floor_port,
        ),
        chatgate_target(upstream, work),
    ]
    lite = litellm_target(upstream, work)
    if lite is not None:
        targets.append(lite)
    big = {"messages": [{"role": "user", "content": "x" * 100_000}], "max_tokens": 64}
    tools = {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_words",
                    "description": "Returns the words asked for.",
                    "parameters": {
                        "type": "object",
                        "properties": {"words": {"type": "string"}},
                        "required": ["words"],
                    },
                },
            }
        ]
    }
    protocols = [
        ("openai", "gpt-5.1", ["*"]),  # the pass-through: every target
        ("anthropic", "claude-sonnet-4-6", ["chatgate"]),  # translated: Chatgate only
        ("gemini", "gemini-2.5-flash", ["chatgate"]),
    ]
    cells: list[tuple[str, str, dict[str, Any], int, list[str]]] = []
    # (cell name, kind, body, concurrency, targets): non-stream and stream x c=1, 16, 64 x
    # protocol, then a 100 KB prompt and a tool-call stream
    for kind in ("json", "stream"):
        for conns in (1, 16, 64):
            for proto, model, only in protocols:
                name = f"{proto}{' stream' if kind == 'stream' else ''} c={conns}"
                cells.append((name, kind, {"model": model, **SMALL}, conns, only))
    cells.append(
        (
            "openai 100KB c=16",
            "json",
            {"model": "gpt-5.1", **big},
            16,
            ["direct", "floor", "chatgate"],
        )
    )
    for proto, model, only in protocols:
        body = {"model": model, **SMALL, **tools}
        cells.append((f"{proto} tool stream c=16", "stream", body, 16, only))
    if args.quick:
        cells = [c for c in cells if c[3] != 64 and "100KB" not in c[0]]
    results: dict[str, dict[str, Any]] = {}
    idle: dict[str, float] = {}
    try:
        for t in targets:
            t.start()
            if t.pid:
                idle[t.name] = rss_mb(t.pid)
            wrk(t.url, t.key, {"model": "gpt-5.1", **SMALL}, 4, 1)  # warm-up, not recorded
            try:
                for name, kind, body, conns, only in cells:
                    if "*" not in only and t.name not in only:
                        continue
                    runs = [measure(t, kind, body, conns, seconds) for _ in range(repeat)]
                    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    results.setdefault(name, {})[t.name] = med
                    print(
                        f"{t.name:9} {name:24} {med['rps']:9.1f}/s p50 {med['p50_ms']:7.2f} ms"
                        f" cpu/req {med.get('cpu_ms_per_req', 0):6.3f} ms"
                        f" errors {int(med['errors'])}",
                        flush=True,
                    )
            finally:
                t.stop()
    finally:
        fake.terminate()
        fake.wait(5)
    report = summarise(results, idle)
    out = HERE / "results" / time.strftime("%Y%m%d-%H%M%S.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "seconds": seconds,
                "repeat": repeat,
                "idle_rss_mb": idle,
                "cells": results,
                "summary": report,
            },
            indent=2,
        )
    )
    print(f"\nresults: {out.relative_to(ROOT)}")


def summarise(results: dict[str, dict[str, Any]], idle: dict[str, float]) -> dict[str, Any]:
    print(
        "\ncell                      target      rps   xdirect  xfloor  xlitellm  +p50ms  cpu/req"
    )
    summary: dict[str, Any] = {}
    for cell, by in results.items():
        d, f, lite = by.get("direct"), by.get("floor"), by.get("litellm")
        for name, r in by.items():
            row = {
                "rps": round(r["rps"], 1),
                "x_direct": round(r["rps"] / d["rps"], 3) if d else None,
                "x_floor": round(r["rps"] / f["rps"], 3) if f else None,
                "x_litellm": round(r["rps"] / lite["rps"], 1) if lite and lite["rps"] else None,
                "added_p50_ms": round(r["p50_ms"] - d["p50_ms"], 3) if d else None,
                "cpu_ms_per_req": r.get("cpu_ms_per_req"),
            }
            proto = cell.split(" ", 1)[0]
            same = results.get(cell.replace(proto, "openai", 1), {}).get(name)
            if proto != "openai" and same and same["rps"]:
                row["x_openai_cell"] = round(r["rps"] / same["rps"], 3)  # translation's cost
            summary.setdefault(cell, {})[name] = row
            print(
                f"{cell:25} {name:9} {row['rps']:8.1f} {_f(row['x_direct'])} {_f(row['x_floor'])}"
                f" {_f(row['x_litellm'])} {_f(row['added_p50_ms'])} {_f(row['cpu_ms_per_req'])}"
                + (f"  ({row['x_openai_cell']}x the OpenAI cell)" if "x_openai_cell" in row else "")
            )
    print("idle RSS (MB):", idle)
    return summary


def _f(v: float | None) -> str:
    return f"{v:8.3f}" if v is not None else "       -"


if __name__ == "__main__":
    main()
