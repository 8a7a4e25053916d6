"""Logging: the process's log (text for humans, or one JSON object a line) and the access log,
one JSON line per chat request on the ``chatgate.access`` logger.

The access line is built from the request's usage row and record: ids, model, provider,
deployment, status, tokens, cost, latency, attempts. Never a secret (a key appears only by
id) and never a prompt, unless the key itself asks for it (``metadata.log_prompts: true``):
then the request's ``messages`` ride along in ``prompt``.

The line costs about a microsecond and a half: it is built positionally, encoded by
msgspec, and handed to :class:`AccessHandler`, which writes the lines of a quarter second
together (one write, no LogRecord, no lock per line), as nginx's ``access_log buffer=``
does. Any other handler on the logger gets ordinary LogRecords; below INFO nothing is built.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import UNSET, Struct

if TYPE_CHECKING:
    from ..api.chat import Record
    from ..config import Config
    from ..store import UsageRow

ACCESS_LOGGER = "chatgate.access"
_encode = msgspec.json.Encoder().encode


class AccessLine(Struct):
    """One access-log line; every field is always present (null when unknown), ``prompt``
    only for keys with prompt logging on."""

    ts: str
    level: str
    logger: str
    request_id: str
    key_id: str | None
    owner: str | None
    model: str | None  # the model that answered (a fallback answers under its own name)
    requested_model: str | None
    provider: str | None
    deployment: str | None
    upstream_model: str | None
    stream: bool
    status: int
    error_type: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None
    latency_ms: float
    ttft_ms: float | None
    attempts: int
    upstream_request_id: str | None
    prompt: Any = UNSET  # (UNSET: left out of the line)


_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


class _Clock:
    """ISO-8601 UTC timestamps with milliseconds; the part up to the second is formatted
    once a second, the rest comes from a table."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._prefix + _MILLIS[int((t - second) * 1000)]


_clock = _Clock()


class AccessLog:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(ACCESS_LOGGER)

    def emit(self, row: UsageRow, rec: Record) -> None:
        log = self._log
        if not log.isEnabledFor(logging.INFO):
            return
        cost = row.cost_micros
        ttft = row.ttft_ms
        line = AccessLine(  # positionally, in the field order above (keywords cost 1 us)
            _clock.iso(row.created),
            "info",
            ACCESS_LOGGER,
            row.request_id,
            row.key_id,
            row.owner,
            row.model,
            rec.requested,
            row.provider,
            rec.deployment,
            row.upstream_model,
            row.stream,
            row.status,
            row.error_type,
            row.prompt_tokens,
            row.completion_tokens,
            row.cached_tokens,
            row.reasoning_tokens,
            cost / 1e6 if cost is not None else None,
            round(row.latency_ms, 3),
            round(ttft, 3) if ttft is not None else None,
            rec.attempts,
            row.upstream_request_id,
        )
        if rec.prompt is not None:
            line.prompt = _messages(rec.prompt)
        text = _encode(line).decode()
        handlers = log.handlers
        if len(handlers) == 1 and not log.filters:
            h = handlers[0]
            if type(h) is AccessHandler and not h.filters and h.level <= logging.INFO:
                h.line(text)  # the common case: batched, no LogRecord
                return
        log.handle(log.makeRecord(ACCESS_LOGGER, logging.INFO, "", 0, text, (), None))


class AccessHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes access lines in batches: every ``interval`` seconds or
    ``max_lines`` lines, whichever comes first, and whenever anything else is logged through
    it (so the order holds) or logging shuts down. Lines come from the event loop's thread;
    a process killed outright loses at most ``interval`` seconds of them."""

    def __init__(self, stream: Any, interval: float = 0.25, max_lines: int = 256) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._interval = interval
        self._max = max_lines
        self._timer: asyncio.TimerHandle | None = None

    def line(self, text: str) -> None:
        lines = self._lines
        lines.append(text)
        if len(lines) >= self._max:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: nothing would flush later
                self.flush()
                return
            self._timer = loop.call_later(self._interval, self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        self.flush()  # the lines before it go first
        super().emit(record)

    def flush(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines = self._lines, []
            if lines:
                self.stream.write("\n".join(lines) + "\n")
        super().flush()


def _messages(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body).get("messages")
    except (msgspec.DecodeError, AttributeError):
        return None


def wants_prompts(metadata: dict[str, Any] | None) -> bool:
    """Whether a key logs its prompts: only an explicit ``metadata.log_prompts: true``."""
    return metadata is not None and metadata.get("log_prompts") is True


class JsonFormatter(logging.Formatter):
    """The process's log as one JSON object a line: ts, level, logger, message (and the
    traceback as ``exc``). Messages that already are JSON objects (the access lines) are
    written as they are."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER:
            return record.getMessage()
        out: dict[str, Any] = {
            "ts": _clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return _encode(out).decode()


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(cfg: Config) -> None:
    """The root handler (text or JSON, at ``log_level``) and the access logger (JSON lines
    on stderr, at the same level; off with ``access_log: false``)."""
    level = cfg.log_level.upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if cfg.log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python's warnings too go through the handler
    access = logging.getLogger(ACCESS_LOGGER)
    for h in list(access.handlers):
        access.removeHandler(h)
    access.propagate = False  # its lines are JSON already, whatever the root's format
    if cfg.access_log:
        line = AccessHandler(sys.stderr)
        line.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(line)
        access.setLevel(level)
    else:
        access.setLevel(logging.CRITICAL + 1)
