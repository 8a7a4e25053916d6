"""The admin dashboard: its static front end at /ui and the JSON it reads at
/admin/dashboard/* (master key, like the rest of /admin). Off the hot path.

GET /admin/dashboard/meta                 version, models, keys (ids and names) for filters
GET /admin/dashboard/overview?range=24h   totals and series (hour or day buckets), by model, by key
GET /admin/dashboard/keys                 every key's policy, status, recent usage and spend
GET /admin/dashboard/deployments          router snapshot, 24 h figures, recent errors
GET /admin/dashboard/requests?...         the request log, newest first, keyset cursor
GET /admin/dashboard/requests/{id}        one usage row

Keys are created, edited, rotated and revoked through /admin/keys; the front end calls those.
No answer here carries a key's secret: the usage rows hold none and keys are shown by
``key_json`` (id, name, policy, the public prefix).

The front end (src/chatgate/ui/) is three static files read once, on the first request for
them: no build step. Assets are served with an ETag (and gzip when asked for); index.html
names them with a content hash (``app.js?v=...``), so those are cached for a year and the
page itself revalidates. Every page carries a strict Content-Security-Policy (no inline
script or style), ``nosniff`` and ``frame-ancestors 'none'``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from msgspec import Struct

from .. import __version__
from ..errors import InvalidRequest, MethodNotAllowed, NotFound
from ..limits import period_start
from ..store import dashboard as q
from ..store import key_json
from .admin import _require_master, _time
from .http import Receive, Scope, Send, header, send_bytes, send_json

if TYPE_CHECKING:
    from ..app import Gateway

UI_DIR = Path(__file__).resolve().parent.parent / "ui"

# range -> (bucket width, buckets): hour buckets from the usage rows, day buckets from the
# daily rollup
RANGES = {"24h": (q.HOUR, 24), "7d": (q.DAY, 7), "30d": (q.DAY, 30), "90d": (q.DAY, 90)}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
API_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".json": b"application/json",
}
IMMUTABLE = b"public, max-age=31536000, immutable"
REVALIDATE = b"no-cache"


# --- static files -------------------------------------------------------------------------


class Asset(Struct, frozen=True):
    body: bytes
    gz: bytes | None  # gzip, when it is smaller
    etag: str  # a hash of the body
    content_type: bytes


@functools.cache
def assets() -> dict[str, Asset]:
    """The front end's files by URL path, read once (index.html names the others with their
    hash, so a browser never mixes two versions)."""
    found: dict[str, Asset] = {}
    raw = {p.name: p.read_bytes() for p in sorted(UI_DIR.iterdir()) if p.suffix in _TYPES}
    digests = {name: hashlib.sha256(body).hexdigest()[:16] for name, body in raw.items()}
    index = raw.get("index.html", b"")
    for name, digest in digests.items():
        if name != "index.html":
            index = index.replace(f'"/ui/{name}"'.encode(), f'"/ui/{name}?v={digest}"'.encode())
    raw["index.html"] = index
    digests["index.html"] = hashlib.sha256(index).hexdigest()[:16]
    for name, body in raw.items():
        packed = gzip.compress(body, 9, mtime=0)
        found["/ui/" + name] = Asset(
            body=body,
            gz=packed if len(packed) < len(body) else None,
            etag=digests[name],
            content_type=_TYPES[Path(name).suffix],
        )
    found["/ui/"] = found["/ui/index.html"]
    return found


async def handle_ui(scope: Scope, send: Send) -> None:
    """GET /ui and /ui/*: the dashboard's static files."""
    method, path = scope["method"], scope["path"]
    if method not in ("GET", "HEAD"):
        raise MethodNotAllowed(f"Method {method} is not allowed on {path}.")
    if path == "/ui":
        await send_bytes(
            send,
            308,
            b"",
            [(b"location", b"/ui/"), *PAGE_HEADERS],
            content_type=(b"content-type", b"text/plain"),
        )
        return
    asset = assets().get(path)
    if asset is None:
        raise NotFound(f"Unknown request URL: {method} {path}.", code="unknown_url")
    query = scope.get("query_string", b"")
    versioned = query == b"v=" + asset.etag.encode()
    accept = header(scope, b"accept-encoding") or b""
    use_gz = asset.gz is not None and b"gzip" in accept
    etag = f'"{asset.etag}-gz"' if use_gz else f'"{asset.etag}"'
    headers = [
        (b"etag", etag.encode()),
        (b"cache-control", IMMUTABLE if versioned else REVALIDATE),
        (b"vary", b"accept-encoding"),
        *PAGE_HEADERS,
    ]
    ct = (b"content-type", asset.content_type)
    inm = header(scope, b"if-none-match")
    if inm is not None and etag.encode() in [t.strip() for t in inm.split(b",")]:
        await send_bytes(send, 304, b"", headers, content_type=ct)
        return
    body = asset.body
    if use_gz:
        assert asset.gz is not None
        body = asset.gz
        headers.append((b"content-encoding", b"gzip"))
    await send_bytes(send, 200, body, headers, content_type=ct)  # (HEAD: the server drops it)


# --- the JSON the front end reads ---------------------------------------------------------


async def handle_dashboard(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    _require_master(gw, scope)
    method, path = scope["method"], scope["path"].rstrip("/")
    parts = path.split("/")[3:]  # after "/admin/dashboard"
    if method != "GET":
        raise MethodNotAllowed(f"Method {method} is not allowed on {path}.")
    qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    args = {k: v[-1] for k, v in qs.items() if v}
    data: Any
    if parts == ["meta"]:
        data = await _meta(gw)
    elif parts == ["overview"]:
        data = await _overview(gw, args.get("range") or "24h")
    elif parts == ["keys"]:
        data = await _keys(gw, args.get("revoked") in ("1", "true"))
    elif parts == ["deployments"]:
        data = await _deployments(gw)
    elif parts == ["requests"]:
        data = await gw.store.db.run(q.request_log, _log_query(args))
    elif len(parts) == 2 and parts[0] == "requests" and parts[1]:
        data = await gw.store.db.run(q.request_detail, parts[1])
        if data is None:
            raise NotFound(f"No request with id '{parts[1]}' (yet).", param="id")
    else:
        raise NotFound(f"Unknown admin route {path}.", code="unknown_url")
    await send_json(send, 200, data, API_HEADERS)


async def _meta(gw: Gateway) -> dict[str, Any]:
    keys = await gw.store.keys.list(include_revoked=True)
    return {
        "object": "dashboard.meta",
        "version": __version__,
        "models": list(gw.router.routes),
        "unavailable": dict(gw.router.unavailable),
        "keys": [{"id": k.id, "name": k.name, "revoked": k.revoked is not None} for k in keys],
        "ranges": list(RANGES),
    }


def _range(name: str, now: float) -> tuple[float, float, int]:
    if name not in RANGES:
        raise InvalidRequest(f"range must be one of: {', '.join(RANGES)}.", param="range")
    bucket, n = RANGES[name]
    since = (now // bucket) * bucket - (n - 1) * bucket
    return since, now, bucket


async def _overview(gw: Gateway, name: str) -> dict[str, Any]:
    since, until, bucket = _range(name, time.time())
    out = await gw.store.db.run(q.overview, since, until, bucket)
    return {"object": "dashboard.overview", "range": name, **out}


async def _keys(gw: Gateway, with_revoked: bool) -> dict[str, Any]:
    now = time.time()
    today = period_start("daily", now)
    month = period_start("monthly", now)
    keys = await gw.store.keys.list(include_revoked=with_revoked)
    usage = await gw.store.db.run(q.key_usage, today - 29 * q.DAY, today, month)
    empty = {"requests_30d": 0, "cost_usd_30d": 0.0, "spent": {}}
    data = []
    for k in keys:
        u = usage.get(k.id, empty)
        out = key_json(k)
        out["status"] = k.usable(now) or "active"
        out["requests_30d"] = u["requests_30d"]
        out["cost_usd_30d"] = u["cost_usd_30d"]
        out["spent_usd"] = u["spent"].get(k.budget_period, 0.0)
        data.append(out)
    data.sort(key=lambda k: -k["created"])
    return {"object": "list", "data": data}


async def _deployments(gw: Gateway) -> dict[str, Any]:
    now = time.time()
    health = await gw.store.db.run(q.model_health, now - q.DAY)
    errors = await gw.store.db.run(q.recent_errors, now - 7 * q.DAY, 25)
    return {
        "object": "dashboard.deployments",
        "deployments": gw.router.snapshot(),
        "usage_24h": health,
        "recent_errors": errors,
        "unavailable": [{"model": m, "reason": r} for m, r in gw.router.unavailable.items()],
    }


def _log_query(args: dict[str, str]) -> q.LogQuery:
    try:
        since = _time(args.get("since") or None)
        until = _time(args.get("until") or None)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since") from None
    status = args.get("status") or None
    if status is not None:
        try:
            q.status_condition(status)
        except ValueError:
            raise InvalidRequest(
                f"status must be a status code or one of: {', '.join(q.STATUS_FILTERS)}.",
                param="status",
            ) from None
    stream_arg = args.get("stream") or None
    if stream_arg not in (None, "true", "false"):
        raise InvalidRequest("stream must be true or false.", param="stream")
    cursor = args.get("cursor") or None
    if cursor is not None:
        try:
            q.decode_cursor(cursor)
        except ValueError:
            raise InvalidRequest("Invalid cursor.", param="cursor") from None
    limit_arg = args.get("limit") or "50"
    if not limit_arg.isdigit() or not 1 <= int(limit_arg) <= q.LOG_PAGE_MAX:
        raise InvalidRequest(f"limit must be 1 to {q.LOG_PAGE_MAX}.", param="limit")
    return q.LogQuery(
        since=since,
        until=until,
        model=args.get("model") or None,
        key_id=args.get("key") or None,
        status=status,
        stream=None if stream_arg is None else stream_arg == "true",
        cursor=cursor,
        limit=int(limit_arg),
    )
