"""The admin API (bearer master key): keys and usage. Off the hot path.

POST/GET /admin/keys, GET/PATCH/DELETE /admin/keys/{id}, POST /admin/keys/{id}/rotate,
GET /admin/usage (filters, grouping, JSON or CSV), and GET /v1/usage for a key's own usage.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import parse_qs

import msgspec
from msgspec import Meta

from ..auth import bearer
from ..errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
)
from ..store import ReportQuery, key_json
from ..store.reports import GROUPS
from .http import (
    Receive,
    Scope,
    Send,
    check_json_content_type,
    header,
    read_body,
    send_bytes,
    send_json,
)

if TYPE_CHECKING:
    from ..app import Gateway

PosInt = Annotated[int, Meta(ge=1)]


class KeyFields(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What an operator may set on a key (POST: name required; PATCH: any subset)."""

    name: Annotated[str, Meta(min_length=1, max_length=200)] | None = None
    models: list[str] | None = None
    owner: Annotated[str, Meta(max_length=200)] | None = None
    rpm: PosInt | None = None
    tpm: PosInt | None = None
    max_concurrency: PosInt | None = None
    budget_usd: Annotated[float, Meta(ge=0)] | None = None
    budget_period: Literal["total", "daily", "monthly"] | None = None
    expires: float | None = None  # epoch seconds
    enabled: bool | None = None
    metadata: dict[str, Any] | None = None


def _decode_fields(body: bytes) -> tuple[KeyFields, set[str]]:
    try:
        raw = msgspec.json.decode(body)
        fields = msgspec.convert(raw, KeyFields)
    except msgspec.ValidationError as exc:
        msg, _, at = str(exc).partition(" - at `$")
        param = at.rstrip("`").lstrip(".") or None
        unknown = "unknown field `"
        if unknown in msg:
            param = msg.split(unknown, 1)[1].split("`", 1)[0]
        raise InvalidRequest(f"Invalid request body: {msg}.", param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"Malformed JSON body: {exc}.", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return fields, set(raw)  # the keys the caller sent (null clears a PATCHed field)


def _store_values(gw: Gateway, fields: KeyFields, sent: set[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in sent:
        value = getattr(fields, name)
        if name == "budget_usd":
            values["budget_micros"] = round(value * 1e6) if value is not None else None
        elif name == "models" and value is not None:
            for m in value:
                if not any(c in m for c in "*?[") and m not in gw.cfg.models:
                    raise InvalidRequest(f"Unknown model in 'models': {m}.", param="models")
            values["models"] = value
        elif name == "enabled" and value is None:
            values["enabled"] = True
        elif name == "budget_period" and value is None:
            values["budget_period"] = "total"
        else:
            values[name] = value
    return values


def _require_master(gw: Gateway, scope: Scope) -> None:
    token = bearer(header(scope, b"authorization"))
    if gw.cfg.master_key is None:
        raise PermissionDenied(
            "The admin API is disabled: set master_key (CHATGATE_MASTER_KEY) to enable it.",
            code="admin_disabled",
        )
    if not gw.auth.is_master(token):
        raise AuthenticationError("The admin API needs the master key.", code="invalid_api_key")


def _method_not_allowed(method: str, path: str) -> GatewayError:
    return MethodNotAllowed(f"Method {method} is not allowed on {path}.")


async def handle_admin(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    _require_master(gw, scope)
    method, path = scope["method"], scope["path"].rstrip("/")
    parts = path.split("/")[2:]  # after "/admin"
    if parts == ["keys"]:
        if method == "POST":
            return await _create_key(gw, scope, receive, send)
        if method == "GET":
            keys = await gw.store.keys.list()
            return await send_json(
                send, 200, {"object": "list", "data": [key_json(k) for k in keys]}
            )
        raise _method_not_allowed(method, path)
    if len(parts) in (2, 3) and parts[0] == "keys":
        key_id = parts[1]
        if len(parts) == 3:
            if parts[2] != "rotate":
                raise NotFound(f"Unknown admin route {path}.", code="unknown_url")
            if method != "POST":
                raise _method_not_allowed(method, path)
            rotated = await gw.store.keys.rotate(key_id)
            if rotated is None:
                raise NotFound(f"No active key with id '{key_id}'.", param="id")
            await gw.auth.changed(key_id)
            return await send_json(send, 200, {**key_json(rotated[1]), "key": rotated[0]})
        if method == "GET":
            rec = await gw.store.keys.get(key_id)
            if rec is None:
                raise NotFound(f"No key with id '{key_id}'.", param="id")
            out = key_json(rec)
            if rec.budget_micros is not None:  # what the running budget counts as spent
                out["spent_usd"] = await gw.limiter.spent(rec.id, rec.policy()) / 1e6
            return await send_json(send, 200, out)
        if method == "PATCH":
            check_json_content_type(scope)
            fields, sent = _decode_fields(await read_body(scope, receive, 1 << 20))
            if "name" in sent and not fields.name:
                raise InvalidRequest("'name' must not be empty.", param="name")
            values = _store_values(gw, fields, sent)
            rec = await gw.store.keys.update(key_id, values)
            if rec is None:
                raise NotFound(f"No active key with id '{key_id}'.", param="id")
            await gw.auth.changed(key_id)
            return await send_json(send, 200, key_json(rec))
        if method == "DELETE":
            if not await gw.store.keys.revoke(key_id):
                raise NotFound(f"No active key with id '{key_id}'.", param="id")
            await gw.auth.changed(key_id)
            return await send_json(send, 200, {"id": key_id, "object": "api_key", "deleted": True})
        raise _method_not_allowed(method, path)
    if parts == ["deployments"]:
        if method != "GET":
            raise _method_not_allowed(method, path)
        return await send_json(send, 200, {"object": "list", "data": gw.router.snapshot()})
    if parts == ["usage"]:
        if method != "GET":
            raise _method_not_allowed(method, path)
        return await send_report(gw, scope, send, None)
    raise NotFound(f"Unknown admin route {path}.", code="unknown_url")


async def _create_key(gw: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    check_json_content_type(scope)
    fields, sent = _decode_fields(await read_body(scope, receive, 1 << 20))
    if not fields.name or not fields.name.strip():
        raise InvalidRequest("'name' is required and must not be empty.", param="name")
    values = _store_values(gw, fields, sent)
    name = values.pop("name").strip()
    key, rec = await gw.store.keys.create(name, **values)
    await send_json(send, 201, {**key_json(rec), "key": key})


def report_query(scope: Scope, key_id: str | None) -> tuple[ReportQuery, str]:
    """Filters and grouping from the query string; a key's own report is pinned to it."""
    qs = parse_qs(scope.get("query_string", b"").decode("latin-1"))

    def one(name: str) -> str | None:
        values = qs.get(name)
        return values[-1] if values else None

    group = [g for v in qs.get("group_by", []) for g in v.split(",") if g]
    for g in group:
        if g not in GROUPS:
            raise InvalidRequest(
                f"Unknown group_by '{g}' (one of: {', '.join(GROUPS)}).", param="group_by"
            )
    fmt = one("format") or "json"
    if fmt not in ("json", "csv"):
        raise InvalidRequest("format must be json or csv.", param="format")
    try:
        status_text = one("status")
        status = int(status_text) if status_text else None
        since = _time(one("since"))
        until = _time(one("until"))
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since") from None
    query = ReportQuery(
        key_id=key_id if key_id is not None else one("key"),
        owner=one("owner") if key_id is None else None,
        model=one("model"),
        provider=one("provider"),
        status=status,
        since=since,
        until=until,
        group_by=group or ["model"],
    )
    return query, fmt


def _time(text: str | None) -> float | None:
    """Epoch seconds, or a duration back from now like 24h / 7d / 15m."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"Invalid time '{text}': use epoch seconds or e.g. 24h, 7d.") from None


async def send_report(gw: Gateway, scope: Scope, send: Send, key_id: str | None) -> None:
    query, fmt = report_query(scope, key_id)
    report = await gw.store.report(query)
    if fmt == "csv":
        await send_bytes(
            send, 200, report.csv().encode(), content_type=(b"content-type", b"text/csv")
        )
    else:
        await send_json(
            send, 200, {"object": "list", "group_by": query.group_by, "data": report.rows}
        )
