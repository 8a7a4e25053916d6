"""Who is calling: bearer API keys (stored as SHA-256 hashes) and the master key.

Keys are looked up by hash and cached for ``key_cache_seconds``; revoking through this process
evicts at once, and a revocation made by another process (the CLI) is seen within the TTL.
"""

from __future__ import annotations

import asyncio
import hmac
import time

from .errors import AuthenticationError
from .store import KeyRecord, Store, hash_key

MASTER = KeyRecord(id="master", name="master key", models=None, created=0.0)
_MISSING = KeyRecord(id="", name="", models=(), created=0.0)  # negative-cache sentinel


def bearer(authorization: bytes | None) -> str:
    if not authorization:
        raise AuthenticationError(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="missing_api_key",
        )
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError(
            "The Authorization header must be of the form 'Bearer YOUR_KEY'.",
            code="invalid_api_key",
        )
    return token


class Authenticator:
    def __init__(self, store: Store, master_key: str | None, ttl: float = 2.0) -> None:
        self._store = store
        self._master = master_key.encode() if master_key else None
        self._ttl = ttl
        self._cache: dict[str, tuple[KeyRecord, float]] = {}

    def is_master(self, token: str) -> bool:
        return self._master is not None and hmac.compare_digest(token.encode(), self._master)

    async def authenticate(self, authorization: bytes | None) -> KeyRecord:
        token = bearer(authorization)
        if self.is_master(token):
            return MASTER
        h = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(h)
        if hit is not None and hit[1] > now:
            rec = hit[0]
        else:
            found = await asyncio.to_thread(self._store.find_key, h)
            rec = found if found is not None and found.revoked is None else _MISSING
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[h] = (rec, now + self._ttl)
        if rec is _MISSING:
            raise AuthenticationError(
                "Incorrect API key provided. You can create keys with `chatgate keys create` "
                "or POST /admin/keys.",
                code="invalid_api_key",
            )
        return rec

    def evict(self, key_id: str) -> None:
        for h, (rec, _) in list(self._cache.items()):
            if rec.id == key_id:
                del self._cache[h]
