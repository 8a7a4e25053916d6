"""The `chatgate` command: serve, keys, usage, models, sandbox, config."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import click

from . import __version__
from .config import Config, ConfigError, load

CONFIG_HELP = "YAML config file (default: $CHATGATE_CONFIG, else built-in defaults)."


def _config(path: str | None) -> Config:
    path = path or os.environ.get("CHATGATE_CONFIG") or None
    try:
        return load(path)
    except ConfigError as exc:
        click.echo(f"chatgate: config error: {exc}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chatgate")
def main() -> None:
    """Chatgate: one OpenAI-compatible endpoint in front of many model vendors.

    Start with `chatgate serve`, create a key with `chatgate keys create --name me`, then
    point any OpenAI SDK at http://HOST:PORT/chat with that key.
    """


@main.command()
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
@click.option("--host", help="Override listen.host.")
@click.option("--port", type=int, help="Override listen.port.")
def serve(config_path: str | None, host: str | None, port: int | None) -> None:
    """Run the gateway (uvicorn + uvloop + httptools, one process)."""
    import uvicorn

    from .app import App, print_banner

    cfg = _config(config_path)
    host = host or cfg.listen.host
    port = port if port is not None else cfg.listen.port
    logging.basicConfig(
        level=cfg.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = App(cfg, on_ready=lambda gw: print_banner(gw.banner(host, port)))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning" if cfg.log_level != "debug" else "debug",
            timeout_graceful_shutdown=30,
            server_header=False,
            date_header=False,
        )
    )
    server.run()
    if not server.started:
        sys.exit(1)


def _store(config_path: str | None) -> Any:
    from .store import Store

    store = Store(_config(config_path).database_url)
    store.migrate()
    return store


@main.group()
def keys() -> None:
    """Create, list and revoke API keys (stored only as SHA-256 hashes)."""


@keys.command("create")
@click.option("--name", required=True, help="A label for the key (who or what uses it).")
@click.option(
    "--models", default=None, help="Comma-separated models the key may use (default: all)."
)
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
def keys_create(name: str, models: str | None, config_path: str | None) -> None:
    """Create a key and print it once: it cannot be shown again."""
    cfg = _config(config_path)
    allowed = [m.strip() for m in models.split(",") if m.strip()] if models else None
    if allowed is not None:
        unknown = [m for m in allowed if m not in cfg.models]
        if unknown:
            raise click.BadParameter(
                f"unknown model(s): {', '.join(unknown)}", param_hint="--models"
            )
    from .store import Store

    store = Store(cfg.database_url)
    store.migrate()
    key, rec = store.create_key(name, allowed)
    click.echo(key)
    click.echo(
        f"created {rec.id} '{rec.name}' for "
        f"{', '.join(rec.models) if rec.models is not None else 'all models'} "
        "(store the key now: it is not shown again)",
        err=True,
    )


@keys.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked keys.")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
def keys_list(show_all: bool, config_path: str | None) -> None:
    """List keys (id, name, prefix, models; never the key itself)."""
    rows = _store(config_path).list_keys(include_revoked=show_all)
    table = [
        [
            r.id,
            r.name,
            r.prefix + "…",
            ",".join(r.models) if r.models is not None else "*",
            _when(r.created),
            _when(r.revoked) if r.revoked else "",
        ]
        for r in rows
    ]
    _table(["id", "name", "prefix", "models", "created", "revoked"], table)


@keys.command("revoke")
@click.argument("key_id")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
def keys_revoke(key_id: str, config_path: str | None) -> None:
    """Revoke a key by id (a running gateway refuses it within key_cache_seconds)."""
    if not _store(config_path).revoke_key(key_id):
        click.echo(f"no active key with id {key_id}", err=True)
        sys.exit(1)
    click.echo(f"revoked {key_id}")


@main.command()
@click.option("--since", default=None, help="Only the last DURATION, e.g. 15m, 24h, 7d.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
def usage(since: str | None, as_json: bool, config_path: str | None) -> None:
    """Per-model usage summary: requests, errors, tokens, latency."""
    start = time.time() - _duration(since) if since else None
    rows = _store(config_path).usage_summary(start)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [
        [
            r["model"] or "(none)",
            r["requests"],
            r["errors"],
            r["prompt_tokens"],
            r["completion_tokens"],
            r["total_tokens"],
            f"{r['avg_latency_ms']:.1f}" if r["avg_latency_ms"] is not None else "",
            f"{r['avg_ttft_ms']:.1f}" if r["avg_ttft_ms"] is not None else "",
        ]
        for r in rows
    ]
    _table(
        [
            "model",
            "requests",
            "errors",
            "prompt_tok",
            "completion_tok",
            "total_tok",
            "avg_ms",
            "avg_ttft_ms",
        ],
        table,
    )


@main.command()
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
def models(config_path: str | None) -> None:
    """List the configured models and their deployments."""
    cfg = _config(config_path)
    rows = [
        [
            name,
            d.provider,
            d.model,
            d.protocol or cfg.providers[d.provider].protocol,
            json.dumps(d.params) if d.params else "",
        ]
        for name, deps in cfg.models.items()
        for d in deps
    ]
    _table(["model", "provider", "upstream model", "protocol", "params"], rows)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9100, show_default=True, type=int)
@click.option("--api-key", default=None, help="Accept only this bearer key (default: any).")
def sandbox(host: str, port: int, api_key: str | None) -> None:
    """Run the local vendor emulators on their own (OpenAI Chat at /v1)."""
    from . import sandbox as sb

    click.echo(f"sandbox: OpenAI Chat emulator at http://{host}:{port}/v1", err=True)
    sb.run(host, port, api_key=api_key)


@main.command("check-config")
@click.option("--config", "config_path", metavar="PATH", help=CONFIG_HELP)
def check_config(config_path: str | None) -> None:
    """Validate a config file and summarise it (exit 2 on errors)."""
    cfg = _config(config_path)
    click.echo(
        f"ok: {len(cfg.providers)} providers, {len(cfg.models)} models, "
        f"sandbox={cfg.sandbox}, database={cfg.database_url.split(':', 1)[0]}"
    )


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise click.BadParameter("use a number and a unit s/m/h/d, e.g. 24h") from None


def _table(headers: list[str], rows: list[list[Any]]) -> None:
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, r in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))
    if not rows:
        click.echo("(none)")
