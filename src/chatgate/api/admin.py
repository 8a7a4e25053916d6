"""The admin API (bearer master key): keys and usage. Off the hot path."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from ..auth import bearer
from ..errors import AuthenticationError, GatewayError, InvalidRequest, NotFound, PermissionDenied
from ..store import KeyRecord
from .http import Receive, Scope, Send, check_json_content_type, header, read_body, send_json

if TYPE_CHECKING:
    from ..app import Gateway


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    models: list[str] | None = None


def key_json(rec: KeyRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "name": rec.name,
        "models": list(rec.models) if rec.models is not None else None,
        "created": int(rec.created),
        "prefix": rec.prefix,
        "revoked": int(rec.revoked) if rec.revoked is not None else None,
    }


def _require_master(gw: Gateway, scope: Scope) -> None:
    token = bearer(header(scope, b"authorization"))
    if gw.cfg.master_key is None:
        raise PermissionDenied(
            "The admin API is disabled: set master_key (CHATGATE_MASTER_KEY) to enable it.",
            code="admin_disabled",
        )
    if not gw.auth.is_master(token):
        raise AuthenticationError("The admin API needs the master key.", code="invalid_api_key")


async def handle_admin(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    _require_master(gw, scope)
    method, path = scope["method"], scope["path"].rstrip("/")
    if path == "/admin/keys" and method == "POST":
        await _create_key(gw, scope, receive, send)
    elif path == "/admin/keys" and method == "GET":
        keys = await asyncio.to_thread(gw.store.list_keys)
        await send_json(send, 200, {"object": "list", "data": [key_json(k) for k in keys]})
    elif path.startswith("/admin/keys/") and method == "DELETE":
        key_id = path.rsplit("/", 1)[1]
        if not await asyncio.to_thread(gw.store.revoke_key, key_id):
            raise NotFound(f"No active key with id '{key_id}'.", param="id")
        gw.auth.evict(key_id)
        await send_json(send, 200, {"id": key_id, "object": "api_key", "deleted": True})
    elif path == "/admin/usage" and method == "GET":
        summary = await asyncio.to_thread(gw.store.usage_summary)
        await send_json(send, 200, {"object": "list", "data": summary})
    elif path in ("/admin/keys", "/admin/usage") or path.startswith("/admin/keys/"):
        raise GatewayError(
            f"Method {method} is not allowed on {path}.",
            status=405,
            type="invalid_request_error",
            code="method_not_allowed",
        )
    else:
        raise NotFound(f"Unknown admin route {path}.", code="unknown_url")


async def _create_key(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    check_json_content_type(scope)
    body = await read_body(scope, receive, 1 << 20)
    try:
        req = msgspec.json.decode(body, type=NewKey)
    except msgspec.ValidationError as exc:
        msg, _, at = str(exc).partition(" - at `$")
        param = at.rstrip("`").lstrip(".") or None
        if "missing required field `name`" in msg:
            param = "name"
        raise InvalidRequest(f"Invalid request body: {msg}.", param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Malformed JSON body: {exc}.", code="invalid_json") from None
    if not req.name.strip():
        raise InvalidRequest("'name' must not be empty.", param="name")
    if req.models is not None:
        unknown = [m for m in req.models if m not in gw.cfg.models]
        if unknown:
            raise InvalidRequest(
                f"Unknown model(s) in 'models': {', '.join(unknown)}.", param="models"
            )
    key, rec = await asyncio.to_thread(gw.store.create_key, req.name.strip(), req.models)
    out = key_json(rec)
    out["key"] = key
    await send_json(send, 201, out)
