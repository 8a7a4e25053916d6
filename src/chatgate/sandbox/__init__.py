"""Chatgate sandbox: a local, deterministic emulator of upstream LLM vendor APIs.

One aiohttp app speaks four wire protocols: OpenAI Chat Completions (``openai_chat``,
``POST /v1/chat/completions``), OpenAI Responses (``openai_responses``, ``POST /v1/responses``),
Anthropic Messages (``anthropic``, ``POST /v1/messages``) and Gemini (``gemini``,
``POST /v1beta/models/{model}:generateContent`` / ``:streamGenerateContent``). It is written
from the vendors' documentation and recorded payloads only and imports nothing from the
gateway, so gateway tests that run against it can catch translation bugs.

Usage::

    sandbox = await start()                      # port 0 -> a free port
    client = openai.AsyncOpenAI(base_url=sandbox.openai_base_url, api_key="sk-test")
    claude = anthropic.AsyncAnthropic(base_url=sandbox.anthropic_base_url, api_key="sk-test")
    ...
    await sandbox.close()

Test hooks: directives in the last user message (``[sandbox:latency=250]``,
``[sandbox:chunk_delay=20]``, ``[sandbox:error=429]``, ``[sandbox:hang]``, ``[sandbox:cut=3]``,
...; Anthropic adds ``[sandbox:redacted_thinking]``, ``[sandbox:refusal]`` and
``[sandbox:stream_error]``; Gemini ``[sandbox:blocked]`` and ``[sandbox:safety]``) and the
unauthenticated control endpoints ``/_sandbox/faults`` and ``/_sandbox/requests``, shared by
all protocols.
"""

from __future__ import annotations

from aiohttp import web

from . import anthropic, gemini, openai_chat, openai_responses

__all__ = ["Sandbox", "create_app", "run", "start"]


def create_app(api_key: str | None = None) -> web.Application:
    """The sandbox as an aiohttp application. With ``api_key`` set, other keys get 401."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    openai_chat.setup(app, api_key, catch_all=False)
    anthropic.setup(app, api_key)
    openai_responses.setup(app, api_key)
    gemini.setup(app, api_key)
    openai_chat.add_catch_all(app)  # last: it matches every other /v1/... URL
    return app


class Sandbox:
    """A running sandbox server (see :func:`start`)."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if ":" in shown:
            shown = f"[{shown}]"
        self.base_url = f"http://{shown}:{port}"
        self.openai_base_url = self.base_url + "/v1"
        self.anthropic_base_url = self.base_url  # the Anthropic SDK adds /v1/messages itself
        self.gemini_base_url = self.base_url  # /v1beta/models/{model}:generateContent

    @property
    def app(self) -> web.Application:
        return self._runner.app

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start(host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> Sandbox:
    """Start the sandbox on ``host:port`` (0: any free port) in the running event loop."""
    runner = web.AppRunner(create_app(api_key), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            bound = int(addr[1])
            break
    return Sandbox(runner, host, bound)


def run(host: str = "127.0.0.1", port: int = 8787, api_key: str | None = None) -> None:
    """Serve the sandbox until interrupted (``chatgate sandbox``); the caller prints a banner."""
    web.run_app(
        create_app(api_key),
        host=host,
        port=port,
        print=None,
        access_log=None,
        shutdown_timeout=1.0,
    )
