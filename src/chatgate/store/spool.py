"""A bounded on-disk spool of usage batches, for while the database cannot take them.

One file per batch, msgpack-encoded, written to a temporary name, fsynced and renamed: a
file that exists is whole. Files sort oldest first by name and are replayed in that order; a
file is deleted only after its batch is committed (the insert is exactly-once, so a replay
after a crash between the commit and the deletion adds nothing). Several processes may share
the directory (``serve --workers N``): a file being replayed is held with ``flock`` and the
others skip it.

Blocking file I/O: the writer calls these methods in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from .usage import UsageRow

log = logging.getLogger("chatgate.usage")

SUFFIX = ".spool"
_STALE_TMP = 300.0  # seconds: a temporary file this old was left by a crash


class SpoolBatch(msgspec.Struct):
    version: int
    rows: list[UsageRow]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(SpoolBatch)


class SpoolCorrupt(Exception):
    """A spool file that cannot be decoded (it is moved aside, never retried)."""


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self._seq = 0
        self._lock = threading.Lock()  # room check and write together (spills may overlap)

    def _ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def files(self) -> list[Path]:
        """The spooled batches, oldest first."""
        try:
            names = sorted(e.name for e in os.scandir(self.dir) if e.name.endswith(SUFFIX))
        except FileNotFoundError:
            return []
        return [self.dir / n for n in names]

    def size(self) -> int:
        """Bytes in the spool (every process's files)."""
        total = 0
        try:
            for e in os.scandir(self.dir):
                with contextlib.suppress(FileNotFoundError):
                    total += e.stat().st_size
        except FileNotFoundError:
            return 0
        return total

    def write(self, rows: Sequence[UsageRow], suffix: str = SUFFIX) -> Path | None:
        """Put a batch on disk durably; None when the spool has no room for it. Another
        ``suffix`` keeps rows aside, never replayed (``.bad``: rows the database refused)."""
        data = _encoder.encode(SpoolBatch(version=1, rows=list(rows)))
        self._ensure()
        with self._lock:
            if self.size() + len(data) > self.max_bytes:
                return None
            self._seq += 1
            stem = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:08d}"
            return self._write(data, stem + suffix)

    def _write(self, data: bytes, name: str) -> Path:
        tmp = self.dir / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.dir / name
        os.rename(tmp, final)
        self._sync_dir()
        return final

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[list[UsageRow] | None]:
        """The batch of a spool file, held against other processes until the block ends;
        None when another process holds it or it is already gone."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            if os.fstat(fd).st_nlink == 0:  # replayed and deleted while we waited
                yield None
                return
            with open(fd, "rb", closefd=False) as f:
                data = f.read()
            try:
                batch = _decoder.decode(data)
            except msgspec.DecodeError as exc:
                raise SpoolCorrupt(f"{path.name}: {exc}") from None
            yield batch.rows
        finally:
            os.close(fd)

    def remove(self, path: Path) -> None:
        """Delete a replayed batch (after its commit)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sync_dir()

    def quarantine(self, path: Path) -> Path:
        bad = path.with_suffix(".bad")
        with contextlib.suppress(FileNotFoundError):
            path.rename(bad)
        return bad

    def clean(self) -> None:
        """Remove temporary files a crashed process left half-written (their rows were
        never acknowledged as spooled: they died with that process's memory)."""
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        now = time.time()
        for e in entries:
            if e.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if now - e.stat().st_mtime > _STALE_TMP:
                        os.unlink(e.path)
