"""Usage rows are written in batches off the request path and flushed on shutdown.

The request handler only appends to a list (no await, no I/O). A background task moves
whatever has accumulated to the database in one transaction, in a worker thread. If a write
fails, the batch is kept and retried, so a database hiccup delays rows but loses none.
"""

from __future__ import annotations

import asyncio
import logging

from . import Store, UsageRow

log = logging.getLogger("chatgate.usage")


class UsageWriter:
    def __init__(self, store: Store, interval: float = 0.2, batch_size: int = 500) -> None:
        self._store = store
        self._interval = interval
        self._batch = batch_size
        self._pending: list[UsageRow] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0

    def record(self, row: UsageRow) -> None:
        self._pending.append(row)
        if len(self._pending) >= self._batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self._flush_once()

    async def _flush_once(self) -> bool:
        if not self._pending:
            return True
        batch, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self._store.insert_usage, batch)
        except Exception:
            log.exception("usage write of %d rows failed; will retry", len(batch))
            self._pending[:0] = batch
            return False
        self.written += len(batch)
        return True

    async def close(self, attempts: int = 20) -> None:
        """Stop the loop and write everything still pending (retrying a failing database
        a few times before giving up loudly)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for i in range(attempts):
            if await self._flush_once() and not self._pending:
                return
            await asyncio.sleep(min(0.05 * 2**i, 1.0))
        log.error("usage writer closed with %d rows unwritten", len(self._pending))
