"""ASGI assembly: routes, lifespan (open pools, start the usage writer), and the banner.

The only place with process-wide state: one :class:`Gateway` per app, built at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any

from . import __version__
from .api.admin import handle_admin, send_report
from .api.chat import handle_chat
from .api.dashboard import handle_dashboard, handle_ui
from .api.http import Receive, Scope, Send, header, send_error, send_json
from .api.models import handle_models
from .auth import Authenticator
from .config import Config
from .errors import GatewayError, MethodNotAllowed, NotFound
from .limits import Limiter, MemoryLimiter
from .observe import Observer, handle_metrics
from .pricing import PriceTable
from .router import Router, needs_sandbox
from .store import Store
from .store.writer import UsageWriter
from .upstream import Upstream

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger("chatgate")

CHAT_PATHS = frozenset({"/chat/chat/completions", "/chat/completions", "/v1/chat/completions"})
MODEL_PREFIXES = ("/chat/models", "/v1/models", "/models")


class Gateway:
    """Everything a request needs, created once in the lifespan."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = Store(cfg.database_url)
        self.auth = Authenticator(
            self.store,
            cfg.master_key,
            cfg.key_cache_seconds,
            jwt_settings=cfg.jwt,
            failures_per_minute=cfg.auth_failures_per_minute,
        )
        self.prices = PriceTable(cfg.prices)
        self.limiter: Limiter = MemoryLimiter(self.store.spent_since)
        self.cluster: Cluster | None = None
        if cfg.redis_url:  # cluster mode: limits, circuit states and key changes shared
            from .cluster import Cluster

            self.cluster = Cluster(cfg, self.store.spent_since)
            self.limiter = self.cluster.limiter
        self.writer = UsageWriter(
            self.store,
            cfg.usage.flush_interval,
            cfg.usage.batch_size,
            max_pending=cfg.usage.max_pending,
            spool_dir=cfg.usage.spool_dir,
            spool_max_mb=cfg.usage.spool_max_mb,
        )
        # metrics, the access log and (when configured) OpenTelemetry traces
        self.obs = Observer(cfg)
        self.upstream = Upstream()
        self.upstream.tracer = self.obs.tracer
        # rebuilt in start() once the sandbox (if any) has its port
        self.router = Router(cfg, "http://127.0.0.1:1")
        self.sandbox: Any = None

    async def start(self) -> None:
        await self.store.migrate(auto=self.cfg.auto_migrate)
        if needs_sandbox(self.cfg):
            from . import sandbox

            self.sandbox = await sandbox.start("127.0.0.1", 0)
        self.router = Router(self.cfg, self.sandbox.base_url if self.sandbox else None)
        if self.cluster is not None:
            await self.cluster.start(self.auth, self.router)
        await self.upstream.start()
        self.writer.start()

    async def stop(self) -> None:
        await self.writer.close()
        log.info(
            "chatgate stopped: %d usage rows written, %d spooled to disk, %d unwritten",
            self.writer.written,
            self.writer.spooled,
            self.writer.pending,
        )
        if self.cluster is not None:
            await self.cluster.stop()
        await self.upstream.close()
        if self.sandbox is not None:
            await self.sandbox.close()
        await self.store.close()
        await self.obs.close()  # exports the last spans

    def banner(self, host: str, port: int) -> str:
        lines = [f"Chatgate {__version__} listening on http://{host}:{port}"]
        lines.append(f"  OpenAI base_url: http://{host}:{port}/chat   (or /v1)")
        lines.append(f"  database: {_redact_url(self.cfg.database_url)}")
        lines.append(
            "  admin API: "
            + (
                "enabled (master key set)"
                if self.cfg.master_key
                else "disabled (set CHATGATE_MASTER_KEY to enable)"
            )
        )
        lines.append(f"  models: {len(self.router.routes)} available")
        lines.append("  create an API key: chatgate keys create --name me")
        if self.sandbox is not None:
            sandboxed = sorted(
                {t.provider_name for ts in self.router.routes.values() for t in ts if t.sandboxed}
            )
            lines.append(
                f"  SANDBOX: providers {', '.join(sandboxed)} are served by the local emulator "
                f"at {self.sandbox.base_url} (no vendor API key set) - answers are synthetic"
            )
        for model, why in sorted(self.router.unavailable.items()):
            lines.append(f"  unavailable: {model}: {why}")
        return "\n".join(lines)


def _redact_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


class App:
    """The ASGI application."""

    def __init__(self, cfg: Config, on_ready: Any = None) -> None:
        self.cfg = cfg
        self.gw: Gateway | None = None
        self._on_ready = on_ready
        self.draining = False  # shutting down: /ready says so, so balancers stop sending

    def drain(self) -> None:
        self.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    self.gw = Gateway(self.cfg)
                    await self.gw.start()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                if self._on_ready is not None:
                    self._on_ready(self.gw)
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self.gw is not None:
                    await self.gw.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gw
        assert gw is not None
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path in CHAT_PATHS:
                if method != "POST":
                    raise _method(method, path)
                await handle_chat(gw, scope, receive, send)
            elif path.startswith(MODEL_PREFIXES):
                if method != "GET":
                    raise _method(method, path)
                await handle_models(gw, scope, receive, send)
            elif path in ("/v1/usage", "/chat/usage"):
                if method != "GET":
                    raise _method(method, path)
                key = await gw.auth.authenticate(header(scope, b"authorization"), _client(scope))
                await send_report(gw, scope, send, key.id)
            elif path == "/health":
                await send_json(send, 200, {"status": "ok"})
            elif path == "/ready":
                await self._ready(gw, send)
            elif path == "/metrics":
                if method != "GET":
                    raise _method(method, path)
                await handle_metrics(gw, scope, send)
            elif path.startswith("/admin/dashboard/"):
                await handle_dashboard(gw, scope, receive, send)
            elif path.startswith("/admin/"):
                await handle_admin(gw, scope, receive, send)
            elif path == "/ui" or path.startswith("/ui/"):
                await handle_ui(scope, send)
            else:
                raise NotFound(f"Unknown request URL: {method} {path}.", code="unknown_url")
        except GatewayError as err:
            await send_error(send, err)
        except Exception:  # a bug must still answer in the OpenAI error shape
            log.exception("unhandled error on %s %s", method, path)
            with contextlib.suppress(Exception):  # unless the answer had already started
                await send_error(send, GatewayError("The gateway hit an internal error."))

    async def _ready(self, gw: Gateway, send: Send) -> None:
        if self.draining:
            await send_json(send, 503, {"status": "draining"})
            return
        database = "ok"
        try:
            await asyncio.wait_for(gw.store.ping(), 5)
        except Exception as exc:
            # Every replica shares the database: were they all to leave the load balancer
            # when it fails, nothing would serve. Usage goes to the spool meanwhile, so a
            # replica stays ready while its spool has room.
            log.warning("readiness check: database unreachable (%s)", type(exc).__name__)
            database = "unreachable"
            if not gw.writer.can_spool():
                await send_json(
                    send,
                    503,
                    {"status": "unavailable", "database": database, "usage": "spool full"},
                )
                return
        body = {"status": "ready", "database": database}
        if database != "ok":
            body["usage"] = "spooling"
        if gw.cluster is not None:
            # Redis is shared too: while it is down every replica serves under the failure
            # policy ("closed" refuses only keys with limits), so it stays ready and says so
            body["redis"] = "ok" if await gw.cluster.ready() else "down"
            if body["redis"] == "down":
                body["redis_on_failure"] = self.cfg.redis_on_failure
        await send_json(send, 200, body)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def _method(method: str, path: str) -> GatewayError:
    return MethodNotAllowed(f"Method {method} is not allowed on {path}.")


def print_banner(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
