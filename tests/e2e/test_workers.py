"""`chatgate serve --workers N`: several processes on one port, one database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.support import Server


def test_two_workers_share_the_port_and_the_usage_table(tmp_path: Path) -> None:
    srv = Server(tmp_path, args=("--workers", "2")).start()
    try:
        key = srv.create_key("w")

        async def go() -> list[int]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=30) as c:

                async def one(i: int) -> int:
                    r = await c.post(
                        "/v1/chat/completions",
                        json={
                            "model": "gpt-5.1",
                            "messages": [{"role": "user", "content": f"{i}"}],
                        },
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    return r.status_code

                return await asyncio.gather(*(one(i) for i in range(200)))

        assert asyncio.run(go()) == [200] * 200
        assert srv.log().count("[worker ") == 2
    finally:
        srv.stop()
    assert len(srv.usage_rows()) == 200  # both workers flushed on shutdown
