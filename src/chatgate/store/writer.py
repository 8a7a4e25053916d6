"""Usage rows are written in batches off the request path, spooled to disk while the database
cannot take them, and flushed on shutdown.

The request handler only appends to a list (no await, no I/O). A background task moves what
has accumulated to the database in batches of ``batch_size`` (one multi-row insert each).
When a write fails or times out, that batch and everything pending go to the on-disk spool
(:mod:`.spool`), and so do new rows while the database stays down; the database is tried
again with a growing back-off, and once it answers the spool is replayed oldest first. The
insert is exactly-once (request ids are unique and repeated ones are skipped), so a batch
whose commit was ambiguous can be replayed safely. Memory holds at most ``max_pending`` rows:
past that they go to the spool even while the database works; if the spool is full too, the
excess is dropped and counted, loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from . import Store, UsageRow
from .db import describe_error
from .spool import Spool, SpoolCorrupt

log = logging.getLogger("chatgate.usage")

WRITE_TIMEOUT = 30.0  # seconds one batch may take before it is treated as failed (spooled)
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 5.0  # seconds between attempts while the database is down
REPLAY_SLICE = 0.5  # seconds of spool replay per writer tick, so new rows keep flowing
RESCAN = 30.0  # seconds between looks for spool files this process did not write
DEFAULT_SPOOL_DIR = "chatgate-spool"


class UsageWriter:
    def __init__(
        self,
        store: Store,
        interval: float = 0.2,
        batch_size: int = 500,
        max_pending: int = 100_000,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_mb: float = 512,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self._store = store
        self._interval = interval
        self._batch = max(1, batch_size)
        self._max_pending = max(self._batch, max_pending)
        self._timeout = write_timeout
        self.spool = Spool(Path(spool_dir or DEFAULT_SPOOL_DIR), int(spool_max_mb * 2**20))
        self._pending: list[UsageRow] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._overflow: asyncio.Task[None] | None = None
        self._closing = False
        self._db_ok = True  # until a write fails
        self._retry_at = 0.0  # monotonic time of the next attempt while the database is down
        self._backoff = BACKOFF_FIRST
        self._spool_full_logged = 0.0
        self._lost_logged = 0.0
        self._spool_refused = False
        self._spool_files = True  # there may be files (from an earlier run): look
        self._next_scan = 0.0
        self.written = 0  # rows inserted (new rows, from memory or the spool)
        self.spooled = 0  # rows put on disk
        self.replayed = 0  # rows read back from disk and committed (new or not)
        self.dropped = 0  # rows lost: memory and spool both full

    # --- the request path ----------------------------------------------------------------

    def record(self, row: UsageRow) -> None:
        pending = self._pending
        pending.append(row)
        if len(pending) >= self._batch:
            self._wake.set()
            # more than memory may hold (a slow database): the excess goes to disk now,
            # beside the write in flight
            if len(pending) > self._max_pending and self._overflow is None and self._task:
                self._overflow = asyncio.get_running_loop().create_task(self._spill_overflow())

    @property
    def pending(self) -> int:
        """Rows in memory, not yet in the database or the spool."""
        return len(self._pending)

    @property
    def healthy(self) -> bool:
        """Whether the last write reached the database."""
        return self._db_ok

    def can_spool(self) -> bool:
        """False while the spool refuses batches (full, or the disk fails)."""
        return not self._spool_refused

    # --- the background task -------------------------------------------------------------

    def start(self) -> None:
        self.spool.clean()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._tick()
            except Exception:  # a bug must not stop the writer for good
                log.exception("usage writer tick failed")

    async def _tick(self) -> None:
        now = time.monotonic()
        if not self._db_ok and now < self._retry_at:
            await self._spill()  # the database is down: rows are safer on disk
            return
        if now >= self._next_scan:  # files another worker sharing the directory left
            self._spool_files, self._next_scan = True, now + RESCAN
        if await self._write_pending() and self._spool_files:
            await self._replay(time.monotonic() + REPLAY_SLICE)

    async def _write_pending(self) -> bool:
        while self._pending:
            batch = self._pending[: self._batch]
            del self._pending[: self._batch]
            try:
                ok = await self._insert(batch)
            except BaseException:  # cancelled (a shutdown that cannot wait): rows stay ours
                self._pending[:0] = batch
                raise
            if not ok:
                self._pending[:0] = batch
                await self._spill()
                return False
        return True

    async def _insert(self, batch: list[UsageRow]) -> bool:
        try:
            new = await asyncio.wait_for(self._store.insert_usage(batch), self._timeout)
        except Exception as exc:  # includes the timeout: the outcome is unknown, replay is safe
            if self._store.db.refused_rows(exc):  # the database answered: no use retrying
                return await self._refused(batch, exc)
            self._failed(exc)
            return False
        self.written += new
        if not self._db_ok:
            log.warning("usage database is back; replaying the spool in %s", self.spool.dir)
            self._db_ok, self._backoff = True, BACKOFF_FIRST
        return True

    async def _refused(self, batch: list[UsageRow], exc: BaseException) -> bool:
        """A value the database cannot store: the rest of the batch goes in row by row, and
        the refused rows are kept aside in the spool directory (``*.bad``), never retried."""
        if len(batch) > 1:
            for one in batch:
                if not await self._insert([one]):
                    return False
            return True
        try:
            kept = await asyncio.to_thread(self.spool.write, batch, ".bad")
        except OSError:
            kept = None
        log.error(
            "usage row %s refused by the database (%s); kept in %s",
            batch[0].request_id,
            describe_error(exc),
            kept or "nowhere: the spool is full",
        )
        if kept is None:
            self.dropped += 1
        return True

    def _failed(self, exc: BaseException) -> None:
        if self._db_ok:
            log.error(
                "usage database write failed (%s); usage rows go to the spool in %s "
                "until it answers again",
                describe_error(exc),
                self.spool.dir,
            )
        else:
            log.warning("usage database still unavailable (%s)", describe_error(exc))
        self._db_ok = False
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    async def _spill(self, keep: int = 0) -> None:
        """Pending rows to the spool, in batches, until at most ``keep`` are left; what
        does not fit stays in memory up to max_pending, and beyond that is dropped (counted
        and logged). Each batch leaves the list before the write: spills may overlap."""
        pending = self._pending
        while len(pending) > keep:
            batch = pending[: min(self._batch, len(pending) - keep)]
            del pending[: len(batch)]
            try:
                path = await asyncio.to_thread(self.spool.write, batch)
            except OSError as exc:  # e.g. the disk is full or the directory not writable
                log.error("usage spool write to %s failed: %s", self.spool.dir, exc)
                path = None
            except BaseException:  # cancelled: kept in memory too (a replay adds nothing)
                pending[:0] = batch
                raise
            if path is None:
                pending[:0] = batch
                self._spool_refused = True
                self._spool_full(len(pending))
                break
            self._spool_refused = False
            self.spooled += len(batch)
            self._spool_files = True
        excess = len(pending) - self._max_pending
        if excess > 0:
            del pending[self._max_pending :]
            self.dropped += excess
            now = time.monotonic()
            if now - self._lost_logged > 10:
                self._lost_logged = now
                log.error(
                    "usage rows LOST: %d so far (the spool is full and memory holds %d)",
                    self.dropped,
                    self._max_pending,
                )

    def _spool_full(self, held: int) -> None:
        now = time.monotonic()
        if now - self._spool_full_logged > 10:
            self._spool_full_logged = now
            log.error(
                "usage spool %s is full (%g MB): %d usage rows held in memory",
                self.spool.dir,
                round(self.spool.max_bytes / 2**20, 3),
                held,
            )

    async def _spill_overflow(self) -> None:
        try:
            await self._spill(keep=self._max_pending // 2)
        except Exception:
            log.exception("usage spool write failed")
        finally:
            self._overflow = None

    async def _replay(self, deadline: float) -> None:
        """Spooled batches into the database, oldest first, until the deadline."""
        files = await asyncio.to_thread(self.spool.files)
        if not files:
            self._spool_files = False
            if self.replayed:
                log.warning("usage spool replayed: %d rows in all", self.replayed)
                self.replayed = 0
            return
        for path in files:
            if time.monotonic() > deadline:
                return
            if not await self._replay_one(path):
                return
            # keep the request path's rows moving during a long replay
            if len(self._pending) >= self._batch and not await self._write_pending():
                return

    async def _replay_one(self, path: Path) -> bool:
        claim = self.spool.claim(path)
        try:
            rows = await asyncio.to_thread(claim.__enter__)
        except SpoolCorrupt as exc:
            bad = self.spool.quarantine(path)
            log.error("usage spool file cannot be read, moved to %s: %s", bad, exc)
            return True
        try:
            if rows is None:  # another process replays it
                return True
            if not await self._insert(rows):
                return False
            await asyncio.to_thread(self.spool.remove, path)
            self._spool_refused = False
            self.replayed += len(rows)
            log.debug("replayed %d spooled usage rows from %s", len(rows), path.name)
            return True
        finally:
            await asyncio.to_thread(claim.__exit__, None, None, None)

    # --- shutdown ------------------------------------------------------------------------

    async def close(self, deadline: float = 10.0) -> None:
        """Stop the loop and write everything still pending: to the database, or to the
        spool when it does not answer. With time left, replay the spool as well."""
        self._closing = True
        self._wake.set()
        end = time.monotonic() + deadline
        hung = False
        for task in (self._task, self._overflow):
            if task is None:
                continue
            try:
                await asyncio.wait_for(asyncio.shield(task), max(0.0, end - time.monotonic()))
            except TimeoutError:  # a write that hangs: its rows go back to the list
                hung = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pending:
            if hung:  # the database hangs: straight to the spool
                await self._spill()
            else:  # one more try, whatever came before, within what is left of the deadline
                self._db_ok, self._retry_at = True, 0.0
                self._timeout = min(self._timeout, max(1.0, end - time.monotonic()))
                await self._write_pending()  # what it cannot write, it spools
        if self._db_ok and self._spool_files:
            await self._replay(end)
        if self._pending:
            log.error("usage writer closed with %d rows unwritten", len(self._pending))
