"""GET /models: the OpenAI list format, only the models the caller's key may use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from .http import Receive, Scope, Send, header, send_json

if TYPE_CHECKING:
    from ..app import Gateway

CREATED = 1764547200  # 2025-12-01: a fixed date, so listings are stable


def _entry(gw: Gateway, name: str) -> dict[str, Any]:
    targets = gw.router.routes[name]
    return {"id": name, "object": "model", "created": CREATED, "owned_by": targets[0].provider_name}


async def handle_models(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    client = scope.get("client")
    key = await gw.auth.authenticate(header(scope, b"authorization"), client[0] if client else "")
    path: str = scope["path"].rstrip("/")
    tail = path.split("/models", 1)[1].lstrip("/")
    if tail:
        if tail not in gw.router.routes or not key.allows(tail):
            raise NotFound(
                f"The model `{tail}` does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        await send_json(send, 200, _entry(gw, tail))
        return
    data = [_entry(gw, m) for m in gw.router.routes if key.allows(m)]
    await send_json(send, 200, {"object": "list", "data": data})
