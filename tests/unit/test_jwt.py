"""Bearer JWTs: HS256 with a secret, RS256/ES256 against a JWKS, keys generated here."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from chatgate.auth import JWTVerifier
from chatgate.config import JWTSettings
from chatgate.errors import AuthenticationError

SECRET = "s3cret-for-tests-only-0123456789abcdef"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    data = json.loads(algo.to_jwk(private.public_key()))
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


JWKS = {"keys": [_jwk(RSA_KEY, "rsa-1", "RS256"), _jwk(EC_KEY, "ec-1", "ES256")]}
SETTINGS = JWTSettings(secret=SECRET, jwks=JWKS, issuer="https://idp.example", audience="chatgate")


def claims(**kw: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "sub": "team-a/alice",
        "iss": "https://idp.example",
        "aud": "chatgate",
        "exp": now + 300,
        "nbf": now - 10,
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def verify(token: str) -> Any:
    return JWTVerifier(SETTINGS).verify(token)


def test_hs256_valid_maps_claims_to_policy() -> None:
    token = jwt.encode(
        claims(
            models=["gpt-5*"],
            rpm=10,
            tpm=5000,
            budget_usd=2.5,
            budget_period="daily",
            owner="team-a",
            max_concurrency=4,
        ),
        SECRET,
        algorithm="HS256",
    )
    rec = verify(token)
    assert rec.id == "jwt:team-a/alice" and rec.owner == "team-a"
    assert rec.allows("gpt-5.1") and not rec.allows("claude-4.5")
    p = rec.policy()
    assert (p.rpm, p.tpm, p.max_concurrency, p.budget_micros, p.budget_period) == (
        10,
        5000,
        4,
        2_500_000,
        "daily",
    )


@pytest.mark.parametrize(
    ("key", "kid", "alg"), [(RSA_KEY, "rsa-1", "RS256"), (EC_KEY, "ec-1", "ES256")]
)
def test_jwks_signed_tokens(key: Any, kid: str, alg: str) -> None:
    token = jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid})
    assert verify(token).id == "jwt:team-a/alice"


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (
            lambda: jwt.encode(claims(exp=int(time.time()) - 3600), SECRET, algorithm="HS256"),
            "expired_jwt",
        ),
        (
            lambda: jwt.encode(claims(), "not-the-secret-0123456789abcdefghij", algorithm="HS256"),
            "invalid_jwt",
        ),
        (lambda: jwt.encode(claims(aud="someone-else"), SECRET, algorithm="HS256"), "invalid_jwt"),
        (
            lambda: jwt.encode(claims(iss="https://evil.example"), SECRET, algorithm="HS256"),
            "invalid_jwt",
        ),
        (
            lambda: jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256"),
            "invalid_jwt",
        ),
        (
            lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "nope"}),
            "invalid_jwt",
        ),
        (
            lambda: jwt.encode(claims(), OTHER_RSA, algorithm="RS256", headers={"kid": "rsa-1"}),
            "invalid_jwt",
        ),
        (
            lambda: jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"}),
            "invalid_jwt",
        ),
        (lambda: jwt.encode(claims(exp=None), SECRET, algorithm="HS256"), "invalid_jwt"),
        (lambda: jwt.encode(claims(sub=None), SECRET, algorithm="HS256"), "invalid_jwt"),
        (lambda: jwt.encode(claims(), None, algorithm="none"), "invalid_jwt"),
        (lambda: "eyJhbGciOiJIUzI1NiJ9.not-json.sig", "invalid_jwt"),
    ],
    ids=[
        "expired",
        "wrong-signature",
        "wrong-audience",
        "wrong-issuer",
        "not-yet-valid",
        "unknown-kid",
        "wrong-key-for-kid",
        "alg-mismatch-for-kid",
        "no-exp",
        "no-sub",
        "alg-none",
        "garbage",
    ],
)
def test_bad_tokens_are_401(make: Any, code: str) -> None:
    with pytest.raises(AuthenticationError) as e:
        verify(make())
    assert e.value.status == 401 and e.value.code == code


def test_alg_none_crafted_by_hand_is_refused() -> None:
    import base64

    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    with pytest.raises(AuthenticationError):
        verify(token)


def test_hs256_refused_when_only_a_jwks_is_configured() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    with pytest.raises(AuthenticationError):
        JWTVerifier(JWTSettings(jwks=JWKS, audience="chatgate")).verify(token)
