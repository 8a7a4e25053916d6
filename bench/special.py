"""The memory, soak and multi-worker runs of the benchmark (see run.py for the cells).

python bench/run.py --memory          # idle RSS, then 1,000 streams held open
python bench/run.py --soak 1800       # steady load, RSS sampled every 10 s
python bench/run.py --workers         # chatgate serve --workers 2 against one worker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from run import (
    HERE,
    PY,
    ROOT,
    SMALL,
    WRK_LUA,
    chatgate_target,
    ensure_wrk,
    free_port,
    pinned,
    rss_mb,
    wait_port,
)


def _lua(key: str, body: dict[str, Any]) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA.format(key=key, body=json.dumps(body)))
    return f.name


def _rps(wrk_output: str) -> float:
    m = re.search(r"Requests/sec:\s+([\d.]+)", wrk_output)
    assert m, wrk_output
    return float(m.group(1))


async def _hold_streams(url: str, key: str, n: int, seconds: float, pid: int) -> dict[str, Any]:
    """Open n slow streams at once, keep them open, sample the gateway's RSS meanwhile."""
    body = json.dumps(
        {
            "model": "gpt-5.1",
            "stream": True,
            "messages": [{"role": "user", "content": "[slow] hold me"}],
        }
    ).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    opened = 0
    peak = 0.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def one() -> None:
            nonlocal opened
            async with s.post(url, data=body, headers=headers) as r:
                await r.content.readany()
                opened += 1
                async for _ in r.content.iter_any():
                    pass

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        held = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_mb(pid))
            held = max(held, opened)
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"streams": n, "opened": held, "rss_mb_peak": round(peak, 1)}


def memory_run(work: Path, upstream: str) -> dict[str, Any]:
    t = chatgate_target(upstream, work)
    t.start()
    assert t.pid is not None
    try:
        idle = rss_mb(t.pid)
        res = asyncio.run(_hold_streams(t.url, t.key, 1000, 15.0, t.pid))
    finally:
        t.stop()
    print(
        f"memory: idle {idle} MB; {res['opened']} of 1000 slow streams open; peak RSS "
        f"{res['rss_mb_peak']} MB"
    )
    return {"idle_rss_mb": idle, **res}


def soak_run(work: Path, upstream: str, seconds: float) -> dict[str, Any]:
    t = chatgate_target(upstream, work)
    t.start()
    assert t.pid is not None
    samples: list[tuple[int, float]] = []
    try:
        load = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                ensure_wrk(),
                "-t1",
                "-c8",
                f"-d{int(seconds)}s",
                "-s",
                _lua(t.key, {"model": "gpt-5.1", **SMALL}),
                t.url,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        start = time.monotonic()
        while load.poll() is None:
            samples.append((round(time.monotonic() - start), rss_mb(t.pid)))
            time.sleep(10)
        out = load.communicate()[0]
    finally:
        t.stop()
    warm = [r for s, r in samples if s >= seconds * 0.2] or [r for _, r in samples]
    spread = (max(warm) - min(warm)) / min(warm)
    print(
        f"soak: {seconds:.0f} s at {_rps(out):.0f} req/s; RSS after warm-up "
        f"{min(warm)}-{max(warm)} MB ({100 * spread:.1f} % spread)"
    )
    return {
        "seconds": seconds,
        "rps": _rps(out),
        "rss_samples": samples,
        "spread": round(spread, 4),
    }


def workers_run(work: Path, upstream: str, seconds: float, repeat: int = 3) -> dict[str, Any]:
    """One worker vs two, both cores shared with the load generator (nothing pinned).
    The two are measured in turn, ``repeat`` rounds, and compared by their medians: one
    pair of runs moved between 1.5x and 1.8x on this machine."""
    runs: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeat):
        for n in (1, 2):
            t = chatgate_target(upstream, work)
            assert t.argv is not None
            t.argv = [*t.argv, "--workers", str(n)]
            t.start(core=None, settle=2.0)
            try:
                res = subprocess.run(
                    [
                        ensure_wrk(),
                        "-t1",
                        "-c64",
                        f"-d{int(seconds)}s",
                        "-s",
                        _lua(t.key, {"model": "gpt-5.1", **SMALL}),
                        t.url,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            finally:
                t.stop()
            runs[n].append(_rps(res))
    out: dict[str, Any] = {
        "workers_1": statistics.median(runs[1]),
        "workers_2": statistics.median(runs[2]),
        "runs": {f"workers_{n}": r for n, r in runs.items()},
    }
    out["scaling"] = round(out["workers_2"] / out["workers_1"], 3)
    print(
        f"workers (medians of {repeat}): 1 -> {out['workers_1']:.0f} req/s, "
        f"2 -> {out['workers_2']:.0f} req/s ({out['scaling']}x); runs {out['runs']}"
    )
    return out


def run_special(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="chatgate-bench-"))
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    fake = pinned(1, [PY, str(HERE / "fake_upstream.py"), str(up_port)])
    wait_port(up_port)
    report: dict[str, Any] = {}
    try:
        if args.memory:
            report["memory"] = memory_run(work, upstream)
        if args.soak:
            report["soak"] = soak_run(work, upstream, args.soak)
        if args.workers:
            report["workers"] = workers_run(work, upstream, args.seconds, max(1, args.repeat))
    finally:
        fake.terminate()
        fake.wait(5)
    out = HERE / "results" / time.strftime("%Y%m%d-%H%M%S-special.json")
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out.relative_to(ROOT)}")
