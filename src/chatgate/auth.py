"""Who is calling: API keys (stored as SHA-256 hashes), JWTs, and the master key.

Keys are looked up by hash and cached for ``key_cache_seconds``; a change through this
process's admin API evicts at once, one made by another process (the CLI) is seen within
the TTL — or at once in cluster mode, where every change is announced to all replicas
(``on_change``) and each evicts the key when told. JWTs are verified locally (HS256 secret
or a JWKS for RS256/ES256): no database hit.
Failed authentications from one address are slowed down once they pass a threshold.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import JWTSettings
from .errors import AuthenticationError, GatewayError
from .limits import Period
from .store import KeyRecord, Store, hash_key

MASTER = KeyRecord(id="master", name="master key", models=None, created=0.0)
_MISSING = KeyRecord(id="", name="", models=(), created=0.0)  # negative-cache sentinel
_PERIODS: tuple[Period, ...] = ("total", "daily", "monthly")


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


def _bad_key() -> AuthenticationError:
    return AuthenticationError(
        "Incorrect API key provided. You can create keys with `chatgate keys create` "
        "or POST /admin/keys.",
        code="invalid_api_key",
    )


class JWTVerifier:
    """Verifies bearer JWTs and maps their claims to a key policy."""

    def __init__(self, cfg: JWTSettings) -> None:
        import jwt  # only where JWTs are configured: PyJWT and cryptography are ~9 MB

        self._jwt = jwt
        self._cfg = cfg
        self._keys: dict[str, Any] = {}
        jwks = cfg.jwks
        if cfg.jwks_file:
            jwks = json.loads(Path(cfg.jwks_file).read_text())
        for jwk in (jwks or {}).get("keys", []):
            parsed = jwt.PyJWK(jwk)
            self._keys[jwk.get("kid", "")] = parsed

    def verify(self, token: str) -> KeyRecord:
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationError("Malformed JWT.", code="invalid_jwt") from None
        alg = header.get("alg")
        if alg == "HS256" and self._cfg.secret:
            key: Any = self._cfg.secret
        elif alg in ("RS256", "ES256") and self._keys:
            jwk = self._keys.get(header.get("kid", ""))
            if jwk is None or jwk.algorithm_name != alg:
                raise AuthenticationError(
                    "The JWT is signed with a key this gateway does not know (kid).",
                    code="invalid_jwt",
                )
            key = jwk.key
        else:
            raise AuthenticationError(
                f"JWTs signed with '{alg}' are not accepted here.", code="invalid_jwt"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._cfg.audience,
                issuer=self._cfg.issuer,
                leeway=self._cfg.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("The JWT has expired.", code="expired_jwt") from None
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"The JWT is not valid: {exc}.", code="invalid_jwt") from None
        return _claims_record(claims)


def _claims_record(claims: dict[str, Any]) -> KeyRecord:
    def num(name: str) -> int | None:
        v = claims.get(name)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    models = claims.get("models")
    budget = claims.get("budget_usd")
    period = claims.get("budget_period", "total")
    return KeyRecord(
        id=f"jwt:{claims['sub']}"[:32],
        name=str(claims.get("name") or claims["sub"]),
        models=tuple(str(m) for m in models) if isinstance(models, list) else None,
        owner=str(claims["owner"]) if claims.get("owner") else None,
        rpm=num("rpm"),
        tpm=num("tpm"),
        max_concurrency=num("max_concurrency"),
        budget_micros=round(float(budget) * 1e6) if isinstance(budget, (int, float)) else None,
        budget_period=period if period in _PERIODS else "total",
    )


class Authenticator:
    def __init__(
        self,
        store: Store,
        master_key: str | None,
        ttl: float = 2.0,
        jwt_settings: JWTSettings | None = None,
        failures_per_minute: int = 20,
    ) -> None:
        self._store = store
        self._master = master_key.encode() if master_key else None
        self._ttl = ttl
        self._cache: dict[str, tuple[KeyRecord, float]] = {}
        self._jwt = JWTVerifier(jwt_settings) if jwt_settings else None
        self._failures: dict[str, deque[float]] = {}
        self._failures_allowed = failures_per_minute
        # cluster mode: tell the other replicas that a key changed (they evict it)
        self.on_change: Callable[[str], Awaitable[None]] | None = None
        self._generation = 0  # bumped by each eviction

    def is_master(self, token: str) -> bool:
        return self._master is not None and hmac.compare_digest(token.encode(), self._master)

    async def authenticate(self, authorization: bytes | None, client: str = "") -> KeyRecord:
        try:
            return await self._authenticate(authorization)
        except AuthenticationError:
            await self._failed(client)
            raise

    async def _authenticate(self, authorization: bytes | None) -> KeyRecord:
        token = bearer(authorization)
        if self.is_master(token):
            return MASTER
        if self._jwt is not None and token.count(".") == 2 and token.startswith("eyJ"):
            return self._jwt.verify(token)
        h = hash_key(token)  # the lookup is by hash: no secret is ever compared as text
        now = time.monotonic()
        hit = self._cache.get(h)
        if hit is not None and hit[1] > now:
            rec = hit[0]
        else:
            generation = self._generation
            try:
                found = await self._store.keys.find(h)
            except Exception:
                # the database does not answer: a key seen before keeps its last answer
                # (evicted on change, so never a revoked one); an unseen one cannot be checked
                if hit is None:
                    raise GatewayError(
                        "The API key store is unavailable; try again shortly.",
                        status=503,
                        code="key_store_unavailable",
                    ) from None
                found = hit[0] if hit[0] is not _MISSING else None
            rec = found if found is not None else _MISSING
            if len(self._cache) > 100_000:
                self._cache.clear()
            if generation == self._generation:  # no eviction while we looked: still current
                self._cache[h] = (rec, now + self._ttl)
        if rec is _MISSING:
            raise _bad_key()
        why = rec.usable(time.time())
        if why is not None:
            raise AuthenticationError(f"This API key is {why}.", code=f"api_key_{why}")
        return rec

    async def _failed(self, client: str) -> None:
        """Past the allowed failures per minute from one address, each further failure
        is answered a little later (up to 2 s): guessing keys gets slow."""
        now = time.monotonic()
        seen = self._failures.get(client)
        if seen is None:
            if len(self._failures) > 50_000:
                self._failures.clear()
            seen = self._failures[client] = deque()
        while seen and seen[0] <= now - 60:
            seen.popleft()
        seen.append(now)
        excess = len(seen) - self._failures_allowed
        if excess > 0:
            await asyncio.sleep(min(2.0, 0.05 * excess))

    def evict(self, key_id: str) -> None:
        self._generation += 1
        for h, (rec, _) in list(self._cache.items()):
            if rec.id == key_id:
                del self._cache[h]

    async def changed(self, key_id: str) -> None:
        """A key was updated, rotated or revoked here: forget it, on every replica."""
        self.evict(key_id)
        if self.on_change is not None:
            await self.on_change(key_id)

    def clear(self) -> None:
        self._generation += 1
        self._cache.clear()
