"""API keys: stored as SHA-256 hashes with their policy; the secret is shown once."""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from msgspec import Struct
from sqlalchemy import Connection, insert, select, update

from ..limits import Period, Policy
from .db import Database
from .tables import api_keys

KEY_PREFIX = "sk-cg-"
# Policy fields an operator may set at creation or with PATCH.
EDITABLE = (
    "name",
    "models",
    "owner",
    "rpm",
    "tpm",
    "max_concurrency",
    "budget_micros",
    "budget_period",
    "expires",
    "enabled",
    "metadata",
)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyRecord(Struct, frozen=True):
    id: str
    name: str
    models: tuple[str, ...] | None = None  # names or glob patterns; None = every model
    created: float = 0.0
    revoked: float | None = None
    prefix: str = ""
    owner: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    budget_micros: int | None = None
    budget_period: Period = "total"
    expires: float | None = None
    enabled: bool = True
    metadata: dict[str, Any] | None = None

    def allows(self, model: str) -> bool:
        if self.models is None:
            return True
        return any(m == model or fnmatch.fnmatchcase(model, m) for m in self.models)

    def policy(self) -> Policy:
        return Policy(
            rpm=self.rpm,
            tpm=self.tpm,
            max_concurrency=self.max_concurrency,
            budget_micros=self.budget_micros,
            budget_period=self.budget_period,
        )

    def usable(self, now: float) -> str | None:
        """Why the key cannot be used now, or None."""
        if self.revoked is not None:
            return "revoked"
        if not self.enabled:
            return "disabled"
        if self.expires is not None and self.expires <= now:
            return "expired"
        return None


def _record(m: Any) -> KeyRecord:
    models = m["models"]
    return KeyRecord(
        id=m["id"],
        name=m["name"],
        models=tuple(models) if models is not None else None,
        created=m["created"],
        revoked=m["revoked"],
        prefix=m["key_prefix"],
        owner=m["owner"],
        rpm=m["rpm"],
        tpm=m["tpm"],
        max_concurrency=m["max_concurrency"],
        budget_micros=m["budget_micros"],
        budget_period=m["budget_period"] or "total",
        expires=m["expires"],
        enabled=bool(m["enabled"]),
        metadata=m["metadata"],
    )


def _values(fields: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in fields.items() if k in EDITABLE}
    if out.get("models") is not None:
        out["models"] = list(out["models"])
    return out


def _get(conn: Connection, key_id: str) -> KeyRecord | None:
    row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
    return _record(row._mapping) if row is not None else None


def _find(conn: Connection, key_hash: str) -> KeyRecord | None:
    row = conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash)).first()
    return _record(row._mapping) if row is not None else None


def _list(conn: Connection, include_revoked: bool) -> list[KeyRecord]:
    q = select(api_keys).order_by(api_keys.c.created)
    if not include_revoked:
        q = q.where(api_keys.c.revoked.is_(None))
    return [_record(r._mapping) for r in conn.execute(q)]


def _create(conn: Connection, values: dict[str, Any]) -> KeyRecord:
    conn.execute(insert(api_keys).values(**values))
    rec = _get(conn, values["id"])
    assert rec is not None
    return rec


def _update(conn: Connection, key_id: str, values: dict[str, Any]) -> KeyRecord | None:
    """Change an active key; None when there is no such key (or it is revoked)."""
    res = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked.is_(None))
        .values(**values)
    )
    return _get(conn, key_id) if res.rowcount else None


class KeyStore:
    """Keys in the database; each method is one transaction, off the event loop."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, **policy: Any) -> tuple[str, KeyRecord]:
        key = new_secret()
        values = {
            **_values({**policy, "name": name}),
            "id": "key_" + secrets.token_hex(8),
            "key_hash": hash_key(key),
            "key_prefix": key[:10],
            "created": time.time(),
            "revoked": None,
        }
        return key, await self._db.run(_create, values)

    async def find(self, key_hash: str) -> KeyRecord | None:
        return await self._db.run(_find, key_hash)

    async def get(self, key_id: str) -> KeyRecord | None:
        return await self._db.run(_get, key_id)

    async def list(self, include_revoked: bool = False) -> list[KeyRecord]:
        return await self._db.run(_list, include_revoked)

    async def update(self, key_id: str, fields: Mapping[str, Any]) -> KeyRecord | None:
        return await self._db.run(_update, key_id, _values(fields))

    async def rotate(self, key_id: str) -> tuple[str, KeyRecord] | None:
        """A new secret for the same key (same id, policy and spend); the old one stops."""
        key = new_secret()
        rec = await self._db.run(
            _update, key_id, {"key_hash": hash_key(key), "key_prefix": key[:10]}
        )
        return (key, rec) if rec is not None else None

    async def revoke(self, key_id: str) -> bool:
        return await self._db.run(_update, key_id, {"revoked": time.time()}) is not None


def key_json(rec: KeyRecord) -> dict[str, Any]:
    """The admin view of a key: its policy, never its secret."""
    out = msgspec.to_builtins(rec)
    out["models"] = list(rec.models) if rec.models is not None else None
    out["budget_usd"] = rec.budget_micros / 1e6 if rec.budget_micros is not None else None
    del out["budget_micros"]
    out["created"] = int(rec.created)
    out["object"] = "api_key"
    return out  # type: ignore[no-any-return]
