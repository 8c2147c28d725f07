"""`make conformance`: writes conformance/vectors.json from a real server.

The server runs in this process as the test suite's does (tests/conftest.py): a fresh database on
AUTHSVC_TEST_DATABASE_URL (else an embedded PostgreSQL), the test settings (clock leeway 5 s), a clock moved by
hand. Each vector app is created with fixed keys (derived from its name, written into the file's `setup`), its
setup steps run, its WatchState messages captured; then each case's token is put to VerifyToken with the server's
clock at the case's `now`, and the answer is the case's `expect`.

    make conformance        # or: .venv/bin/python -m tests.generate_conformance [--output PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authsvc import migrations
from authsvc.clock import MICROS_PER_SECOND, Micros
from authsvc.config import Settings
from authsvc.server import new_state, start_server
from authsvc.store import Store
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from tests import conformance
from tests.conftest import TEST_KEYRING, new_database
from tests.support import FakeClock

SECOND = MICROS_PER_SECOND
T0: Micros = 1_790_000_000 * SECOND
"""2026-09-21T14:13:20Z: every vector's times are counted from here."""
NOW: Micros = T0 + 10_000 * SECOND
"""The `now` of most cases: after every setup step."""
LEEWAY = 5 * SECOND
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
# Wycheproof's SpecialCaseEs256 signatures used (each invalid for any message): too long, trailing zeros, r too
# big, an integer overflow, a buffer overflow, r = s = 0, r = 1 and s = n, r = s = n.
WYCHEPROOF_ES256_CASES = (379, 380, 381, 383, 385, 386, 393, 401)
WYCHEPROOF = Path(__file__).resolve().parent.parent.parent / "shared" / "wycheproof" / "json_web_signature_test.json"

ABOUT = (
    "Conformance vectors of the authsvc token model (shared/TOKEN_MODEL.md): each case is a token, an app and a time, "
    "and the verdict the real server's VerifyToken gave. The server, authsvc.client.LocalVerifier and the Node "
    "LocalVerifier must all give it. Written by `make conformance` (tests/generate_conformance.py); the keys are "
    "test keys, public on purpose. See conformance/README.md."
)


# Fixed test keys, derived from labels so that a regeneration reuses them.


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"authsvc conformance {label}".encode()).digest()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fixed_api_key(app: str) -> str:
    return "cf" + _seed(f"api key {app}").hex()[:18]


def fixed_secret(label: str) -> str:
    return b64(_seed(f"secret {label}"))


def fixed_kid(label: str) -> str:
    return "k" + _seed(f"kid {label}").hex()[:16]


def _pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def fixed_pem(algorithm: str, label: str) -> str:
    if algorithm == "EdDSA":
        return _pem(ed25519.Ed25519PrivateKey.from_private_bytes(_seed(f"ed25519 {label}")))
    scalar = int.from_bytes(_seed(f"p256 {label}"), "big") % (P256_ORDER - 1) + 1
    return _pem(ec.derive_private_key(scalar, ec.SECP256R1()))


# Hand-crafted tokens.

Signer = Callable[[bytes], bytes]


def segment(part: Mapping[str, Any] | list[Any] | str | bytes) -> str:
    """A token segment: a dict or list as compact JSON, a str as its UTF-8 text, bytes as they are."""
    if isinstance(part, bytes):
        return b64(part)
    if isinstance(part, str):
        return b64(part.encode("utf-8", "surrogatepass"))
    return b64(json.dumps(part, separators=(",", ":"), ensure_ascii=False).encode())


def jws(header: Mapping[str, Any] | list[Any] | str | bytes, payload: Any, signer: Signer) -> str:
    signing_input = f"{segment(header)}.{segment(payload)}"
    return f"{signing_input}.{b64(signer(signing_input.encode()))}"


def hs256(secret: str) -> Signer:
    return lambda data: hmac.new(secret.encode(), data, hashlib.sha256).digest()


def private_key(pem: str) -> Any:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def eddsa(pem: str) -> Signer:
    key = private_key(pem)
    return lambda data: key.sign(data)  # type: ignore[no-any-return]


def es256_raw(pem: str, data: bytes) -> tuple[int, int]:
    r, s = decode_dss_signature(private_key(pem).sign(data, ec.ECDSA(hashes.SHA256())))
    return r, s


def es256(pem: str) -> Signer:
    def sign(data: bytes) -> bytes:
        r, s = es256_raw(pem, data)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


def resign(token: str, signature: bytes | str) -> str:
    """The token's header and payload with another signature (bytes, or a signature segment as text)."""
    head, payload, _ = token.split(".")
    return f"{head}.{payload}.{signature if isinstance(signature, str) else b64(signature)}"


def secs(micros: Micros) -> int | float:
    """A NumericDate for a time in microseconds (fractional when it is not whole)."""
    whole, fraction = divmod(micros, SECOND)
    return whole if fraction == 0 else micros / SECOND


# The vector apps and cases.


@dataclass
class Case:
    name: str
    rule: str
    app: str
    token: str
    now: Micros


@dataclass
class VectorApp:
    name: str
    algorithm: str = "HS256"
    steps: list[dict[str, Any]] = field(default_factory=list)
    key_pair: dict[str, str] | None = None
    extra_secrets: list[str] = field(default_factory=list)
    mint_first: list[str] = field(default_factory=list)
    """Users to mint a token for right after the app is created (at T0 + 500 s), before any setup step."""
    minted_first: dict[str, str] = field(default_factory=dict)

    @property
    def api_key(self) -> str:
        return fixed_api_key(self.name)

    @property
    def secret(self) -> str:
        return fixed_secret(self.name)

    @property
    def secret_kid(self) -> str:
        return fixed_kid(f"{self.name} secret")

    def entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "api_key": self.api_key,
            "algorithm": self.algorithm,
            "hs256_secrets": [*self.extra_secrets, self.secret] if self.algorithm == "HS256" else [],
            "setup": {
                "algorithm": self.algorithm,
                "api_secret": self.secret,
                "secret_kid": self.secret_kid,
                "key_pair": self.key_pair,
                "steps": self.steps,
            },
        }


class Vectors:
    """The apps and cases being written, and a server to mint tokens with."""

    def __init__(self, stub: pb_grpc.AuthServiceStub, clock: FakeClock) -> None:
        self.stub = stub
        self.clock = clock
        self.apps: dict[str, VectorApp] = {}
        self.cases: list[Case] = []

    def app(self, name: str, **options: Any) -> VectorApp:
        app = VectorApp(name, **options)
        self.apps[name] = app
        return app

    def case(self, app: VectorApp, name: str, rule: str, token: str, now: Micros = NOW) -> None:
        if not conformance.RULE_PATTERN.fullmatch(rule):
            raise ValueError(f"case {name}: rule {rule!r} names no TOKEN_MODEL step")
        self.cases.append(Case(f"{app.name}/{name}", rule, app.name, token, now))

    async def mint(self, app: VectorApp, user_id: str, at: Micros, secret: str | None = None, **fields: Any) -> str:
        """A token issued by the server (IssueToken) with its clock at `at`."""
        self.clock.set(at)
        response = await self.stub.IssueToken(
            pb.IssueTokenRequest(user_id=user_id, **fields),
            metadata=conformance.backend(app.api_key, secret or app.secret),
        )
        return str(response.token)


def claims(app: VectorApp, user_id: str = "alice", **more: Any) -> dict[str, Any]:
    """A user token's payload: `user_id`, iat a minute before NOW, exp an hour after, this app's aud; `more`
    adds or (as None) removes claims."""
    payload: dict[str, Any] = {"user_id": user_id, "iat": secs(NOW - 60 * SECOND), "exp": secs(NOW + 3600 * SECOND)}
    payload["aud"] = app.api_key
    for name, value in more.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def define_apps(v: Vectors) -> None:
    """The vector apps and their setup steps."""
    v.app(
        "hs256",
        steps=[
            # carol: revoked at a fractional second; dave: revoked, then "revoked" again earlier (R stays);
            # erin: revoked, then cleared.
            {
                "action": "revoke_users",
                "at": T0 + 1000_500_000,
                "user_ids": ["carol"],
                "revoke_before": T0 + 1000_500_000,
            },
            {
                "action": "revoke_users",
                "at": T0 + 2000 * SECOND,
                "user_ids": ["dave"],
                "revoke_before": T0 + 2000 * SECOND,
            },
            {
                "action": "revoke_users",
                "at": T0 + 2100 * SECOND,
                "user_ids": ["dave"],
                "revoke_before": T0 + 1900 * SECOND,
            },
            {
                "action": "revoke_users",
                "at": T0 + 3000 * SECOND,
                "user_ids": ["erin"],
                "revoke_before": T0 + 3000 * SECOND,
            },
            {"action": "clear_users", "at": T0 + 3100 * SECOND, "user_ids": ["erin"]},
        ],
    )
    v.app("other")
    v.app(
        "require-iat",
        steps=[
            {"action": "update", "at": T0 + 100 * SECOND, "changes": {"require_iat": True}},
            {
                "action": "revoke_users",
                "at": T0 + 1000 * SECOND,
                "user_ids": ["bob"],
                "revoke_before": T0 + 1000 * SECOND,
            },
        ],
    )
    v.app(
        "app-revoked",
        steps=[
            {"action": "revoke_app", "at": T0 + 5000_250_000, "revoke_before": T0 + 5000_250_000},
            {"action": "revoke_app", "at": T0 + 5100 * SECOND, "revoke_before": T0 + 4000 * SECOND},
        ],
    )
    v.app(
        "app-cleared",
        steps=[
            {"action": "revoke_app", "at": T0 + 5000 * SECOND, "revoke_before": T0 + 5000 * SECOND},
            {"action": "clear_app", "at": T0 + 5100 * SECOND},
        ],
    )
    v.app(
        "dev",
        steps=[
            {"action": "update", "at": T0 + 100 * SECOND, "changes": {"auth_checks_disabled": True}},
            {
                "action": "revoke_users",
                "at": T0 + 1000 * SECOND,
                "user_ids": ["mallory"],
                "revoke_before": T0 + 1000 * SECOND,
            },
        ],
    )
    rotated = v.app("rotated", mint_first=["alice"])
    rotated.steps.append(
        {
            "action": "rotate_secret",
            "at": T0 + 1000 * SECOND,
            "kid": fixed_kid("rotated secret 2"),
            "secret": fixed_secret("rotated 2"),
            "expires_at": T0 + 4600 * SECOND,
        }
    )
    rotated.extra_secrets.append(fixed_secret("rotated 2"))
    v.app(
        "max-lifetime",
        steps=[{"action": "update", "at": T0 + 100 * SECOND, "changes": {"max_token_lifetime_seconds": 3600}}],
    )
    v.app(
        "eddsa",
        algorithm="EdDSA",
        mint_first=["alice"],
        key_pair={"kid": fixed_kid("eddsa 1"), "pem": fixed_pem("EdDSA", "eddsa 1")},
        steps=[
            {
                "action": "add_key_pair",
                "at": T0 + 1000 * SECOND,
                "kid": fixed_kid("eddsa 2"),
                "pem": fixed_pem("EdDSA", "eddsa 2"),
                "signs_from": T0 + 1000 * SECOND,
            },
            {
                "action": "add_key_pair",
                "at": T0 + 1100 * SECOND,
                "kid": fixed_kid("eddsa 3"),
                "pem": fixed_pem("EdDSA", "eddsa 3"),
                "signs_from": T0 + 1100 * SECOND,
            },
            {"action": "retire_key", "at": T0 + 1200 * SECOND, "kid": fixed_kid("eddsa 1")},
        ],
    )
    wycheproof = _wycheproof_es256()
    v.app(
        "es256",
        algorithm="ES256",
        key_pair={"kid": wycheproof["kid"], "pem": wycheproof["pem"]},
        steps=[
            {
                "action": "add_key_pair",
                "at": T0 + 1000 * SECOND,
                "kid": fixed_kid("es256 2"),
                "pem": fixed_pem("ES256", "es256 2"),
                "signs_from": T0 + 1000 * SECOND,
            },
        ],
    )


def _wycheproof_group(comment: str) -> dict[str, Any]:
    groups = json.loads(WYCHEPROOF.read_text())["testGroups"]
    group: dict[str, Any] = next(g for g in groups if g["comment"] == comment)
    return group


def _wycheproof_es256() -> dict[str, str]:
    """The private key of Wycheproof's SpecialCaseEs256 group, as PEM, and its kid."""
    jwk = _wycheproof_group("SpecialCaseEs256")["private"]
    d = int.from_bytes(base64.urlsafe_b64decode(jwk["d"] + "=="), "big")
    return {"kid": jwk["kid"], "pem": _pem(ec.derive_private_key(d, ec.SECP256R1()))}


S1 = "TOKEN_MODEL step 1: "
S2 = "TOKEN_MODEL step 2: "
S3 = "TOKEN_MODEL step 3: "
S4 = "TOKEN_MODEL step 4: "
S5 = "TOKEN_MODEL step 5: "
S6 = "TOKEN_MODEL step 6: "
S7 = "TOKEN_MODEL step 7: "
APPS = "TOKEN_MODEL Apps: "
USERS = "TOKEN_MODEL User tokens: "
REVOCATION = "TOKEN_MODEL Revocation: "
DEV = "TOKEN_MODEL Development mode: "


async def hs256_cases(v: Vectors) -> None:
    app, other = v.apps["hs256"], v.apps["other"]
    sign = hs256(app.secret)
    head = {"alg": "HS256", "typ": "JWT"}
    good = jws(head, claims(app), sign)
    h, p, s = good.split(".")

    # Step 1: parsing.
    v.case(app, "two-segments", S1 + "not three parts -> MALFORMED", f"{h}.{p}")
    v.case(app, "four-segments", S1 + "not three parts -> MALFORMED", f"{good}.{s}")
    v.case(app, "five-segments-jwe", S1 + "a JWE (five parts) -> MALFORMED", f"{good}.{s}.{s}")
    v.case(app, "empty-signature-segment", S1 + "an empty part -> MALFORMED", f"{h}.{p}.")
    v.case(
        app,
        "json-serialization",
        S1 + "JWS JSON serialization -> MALFORMED",
        json.dumps({"payload": p, "protected": h, "signature": s}),
    )
    v.case(app, "standard-base64-alphabet", S1 + "'+' and '/' are not base64url -> MALFORMED", f"{h}.{p}.+/{s[2:]}")
    v.case(app, "base64-padding", S1 + "base64 padding '=' -> MALFORMED", f"{good}=")
    v.case(app, "whitespace-in-token", S1 + "a space inside a part -> MALFORMED", f"{h}.{p[:10]} {p[10:]}.{s}")
    v.case(app, "impossible-base64-length", S1 + "a part of 4n+1 characters -> MALFORMED", f"{h}.{p}A.{s}")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    noncanonical = s[:-1] + alphabet[alphabet.index(s[-1]) + 1]  # 43 characters: the last one's 2 low bits are unused
    v.case(
        app,
        "non-canonical-base64url",
        S1 + "non-zero unused bits in the last character -> MALFORMED",
        f"{h}.{p}.{noncanonical}",
    )
    v.case(app, "non-ascii-character", S1 + "a character outside base64url -> MALFORMED", f"{h}.{p}\u00e9.{s}")
    v.case(app, "payload-not-json", S1 + "payload is not JSON -> MALFORMED", jws(head, '{"user_id":"alice"', sign))
    v.case(app, "payload-not-utf8", S1 + "payload is not UTF-8 -> MALFORMED", jws(head, b'{"user_id":"\xff"}', sign))
    v.case(app, "header-not-object", S1 + "header is a JSON array -> MALFORMED", jws(["HS256"], claims(app), sign))
    v.case(app, "payload-array", S1 + "payload is a JSON array -> MALFORMED", jws(head, [claims(app)], sign))
    v.case(app, "payload-string", S1 + "payload is a JSON string -> MALFORMED", jws(head, '"alice"', sign))
    v.case(app, "payload-number", S1 + "payload is a JSON number -> MALFORMED", jws(head, "42", sign))
    v.case(
        app,
        "duplicate-claim",
        S1 + "a duplicate key in the payload -> MALFORMED",
        jws(head, '{"user_id":"alice","user_id":"mallory","iat":' + str(secs(NOW - 60 * SECOND)) + "}", sign),
    )
    v.case(app, "nan-literal", S1 + "NaN is not JSON -> MALFORMED", jws(head, '{"user_id":"alice","n":NaN}', sign))
    v.case(
        app,
        "number-overflow",
        S1 + "a number that overflows to infinity -> MALFORMED",
        jws(head, '{"user_id":"alice","n":1e400}', sign),
    )
    v.case(
        app,
        "nested-too-deep",
        S1 + "JSON nested more than 32 levels -> MALFORMED",
        jws(head, claims(app, deep=json.loads("[" * 32 + "]" * 32)), sign),
    )
    v.case(
        app,
        "nul-in-string",
        S1 + "an escaped NUL in a string -> MALFORMED",
        jws(head, '{"user_id":"alice","note":"a\\u0000b"}', sign),
    )
    v.case(
        app,
        "lone-surrogate",
        S1 + "an unpaired surrogate escape -> MALFORMED",
        jws(head, '{"user_id":"alice","note":"\\ud800"}', sign),
    )
    v.case(
        app,
        "oversized-token",
        S1 + "a token over 8192 bytes -> MALFORMED",
        jws(head, claims(app, pad="x" * 8200), sign),
    )
    v.case(app, "header-without-alg", S1 + "a header without alg -> MALFORMED", jws({"typ": "JWT"}, claims(app), sign))
    v.case(app, "alg-not-a-string", S1 + "alg that is not a string -> MALFORMED", jws({"alg": 256}, claims(app), sign))
    v.case(
        app,
        "kid-not-a-string",
        S1 + "kid that is not a string -> MALFORMED",
        jws({"alg": "HS256", "kid": 1}, claims(app), sign),
    )
    v.case(
        app,
        "crit-header",
        S1 + "a crit header (no extension understood) -> MALFORMED",
        jws({"alg": "HS256", "crit": ["exp"]}, claims(app), sign),
    )
    v.case(
        app,
        "b64-header",
        S1 + "b64 (unencoded payload) -> MALFORMED",
        jws({"alg": "HS256", "b64": False}, claims(app), sign),
    )
    v.case(
        app,
        "nested-jwt",
        S1 + "cty JWT (a nested token) -> MALFORMED",
        jws({"alg": "HS256", "cty": "JWT"}, claims(app), sign),
    )

    # Step 2: the header's alg and kid.
    v.case(
        app, "alg-none", S2 + "alg none is never allowed -> INVALID_SIGNATURE", jws({"alg": "none"}, claims(app), sign)
    )
    v.case(
        app,
        "alg-none-unsigned",
        S1 + "alg none with an empty signature part -> MALFORMED",
        jws({"alg": "none"}, claims(app), lambda data: b""),
    )
    v.case(
        app,
        "alg-lowercase",
        S2 + "alg compared exactly: 'hs256' -> INVALID_SIGNATURE",
        jws({"alg": "hs256"}, claims(app), sign),
    )
    v.case(
        app,
        "alg-hs384",
        S2 + "an HMAC alg the app does not use -> INVALID_SIGNATURE",
        jws({"alg": "HS384"}, claims(app), lambda data: hmac.new(app.secret.encode(), data, hashlib.sha384).digest()),
    )
    v.case(
        app,
        "alg-of-another-family",
        S2 + "alg ES256 on an HS256 app -> INVALID_SIGNATURE",
        jws({"alg": "ES256"}, claims(app), sign),
    )
    v.case(
        app,
        "unknown-kid",
        S2 + "a kid that names no key of this app -> UNKNOWN_KEY",
        jws({"alg": "HS256", "kid": "k0000000000000000"}, claims(app), sign),
    )
    v.case(
        app,
        "kid-of-its-secret",
        S7 + "kid naming the app's API secret -> VALID",
        jws({"alg": "HS256", "kid": app.secret_kid}, claims(app), sign),
    )

    # Step 3: the signature.
    wrong = hs256(fixed_secret("not the secret"))
    v.case(app, "wrong-secret", S3 + "signed with another secret -> INVALID_SIGNATURE", jws(head, claims(app), wrong))
    v.case(
        app,
        "wrong-secret-with-kid",
        S3 + "the app's kid, another secret -> INVALID_SIGNATURE",
        jws({"alg": "HS256", "kid": app.secret_kid}, claims(app), wrong),
    )
    tampered = f"{h}.{segment(claims(app, user_id='mallory'))}.{s}"
    v.case(app, "tampered-payload", S3 + "payload changed after signing -> INVALID_SIGNATURE", tampered)
    v.case(
        app,
        "tampered-header",
        S3 + "header changed after signing -> INVALID_SIGNATURE",
        f"{segment({'alg': 'HS256', 'typ': 'JWS'})}.{p}.{s}",
    )
    v.case(
        app,
        "truncated-signature",
        S3 + "a signature a byte short -> INVALID_SIGNATURE",
        resign(good, sign(good.rsplit(".", 1)[0].encode())[:-1]),
    )
    v.case(
        app,
        "dev-token-checks-enabled",
        DEV + "a developer token on an app with checks enabled -> INVALID_SIGNATURE",
        resign(good, "devtoken"),
    )
    other_token = await v.mint(other, "alice", NOW - 60 * SECOND, ttl=_duration(3600))
    v.case(app, "token-of-another-app", APPS + "a token minted by another app (its kid) -> UNKNOWN_KEY", other_token)
    v.case(
        app,
        "token-of-another-app-no-kid",
        APPS + "another app's secret, no kid -> INVALID_SIGNATURE",
        jws(head, claims(app), hs256(other.secret)),
    )

    # Step 4: times, audience, user.
    for name, exp, rule in (
        ("expired-long-ago", NOW - 3600 * SECOND, "exp an hour past -> EXPIRED"),
        ("expired-at-leeway", NOW - LEEWAY, "exp exactly the leeway past -> EXPIRED"),
        ("expired-fractional", NOW - LEEWAY - 500_000, "exp 5.5 s past (a fractional NumericDate) -> EXPIRED"),
        ("exp-inside-leeway", NOW - LEEWAY + 1, "exp 4.999999 s past, inside the leeway -> VALID"),
        ("exp-inside-leeway-fractional", NOW - 4_500_000, "exp 4.5 s past, inside the leeway -> VALID"),
    ):
        v.case(app, name, S4 + rule, jws(head, claims(app, exp=secs(exp), iat=secs(NOW - 7200 * SECOND)), sign))
    minted = await v.mint(app, "alice", NOW - 100 * SECOND, ttl=_duration(60))
    v.case(app, "minted-expired", S4 + "a minted token past its ttl; still says whose -> EXPIRED", minted)
    for name, more, rule in (
        ("nbf-ahead", {"nbf": secs(NOW + 6 * SECOND)}, "nbf 6 s ahead -> NOT_YET_VALID"),
        ("nbf-inside-leeway", {"nbf": secs(NOW + LEEWAY)}, "nbf exactly the leeway ahead -> VALID"),
        ("iat-ahead", {"iat": secs(NOW + 5_000_001)}, "iat 5.000001 s ahead -> NOT_YET_VALID"),
        ("iat-inside-leeway", {"iat": secs(NOW + 4 * SECOND)}, "iat 4 s ahead -> VALID"),
        (
            "nbf-and-iat-ahead",
            {"nbf": secs(NOW + 60 * SECOND), "iat": secs(NOW + 60 * SECOND)},
            "nbf and iat a minute ahead -> NOT_YET_VALID",
        ),
        (
            "expired-and-not-yet-valid",
            {"exp": secs(NOW - 60 * SECOND), "nbf": secs(NOW + 60 * SECOND)},
            "exp past and nbf ahead: EXPIRED is checked first -> EXPIRED",
        ),
        ("exp-not-a-number", {"exp": "tomorrow"}, "exp that is not a NumericDate -> MALFORMED"),
        ("iat-boolean", {"iat": True}, "iat true is not a NumericDate -> MALFORMED"),
        ("nbf-negative", {"nbf": -1}, "a negative nbf -> MALFORMED"),
        ("exp-after-year-9999", {"exp": 253402300800}, "exp after 9999-12-31 -> MALFORMED"),
        ("aud-other-string", {"aud": "someone-else"}, "aud that is not this app -> WRONG_AUDIENCE"),
        ("aud-other-app", {"aud": other.api_key}, "aud of another app -> WRONG_AUDIENCE"),
        (
            "aud-list-without-app",
            {"aud": ["someone-else", other.api_key]},
            "aud list without this app -> WRONG_AUDIENCE",
        ),
        ("aud-list-with-app", {"aud": [other.api_key, app.api_key]}, "aud list that holds this app -> VALID"),
        ("aud-empty-list", {"aud": []}, "an empty aud list -> WRONG_AUDIENCE"),
        ("aud-number", {"aud": 42}, "aud that is neither string nor list -> WRONG_AUDIENCE"),
        ("aud-absent", {"aud": None}, "no aud (the app's own by default) -> VALID"),
        (
            "expired-wrong-audience",
            {"exp": secs(NOW - 60 * SECOND), "aud": "someone-else"},
            "exp past and aud wrong: EXPIRED comes first -> EXPIRED",
        ),
        ("no-user-id", {"user_id": None}, "no user_id -> MALFORMED"),
        (
            "wrong-audience-no-user-id",
            {"user_id": None, "aud": "someone-else"},
            "aud wrong and no user_id: the audience comes first -> WRONG_AUDIENCE",
        ),
        ("user-id-empty", {"user_id": ""}, "an empty user_id -> MALFORMED"),
        ("user-id-with-space", {"user_id": "alice smith"}, "user_id with a space -> MALFORMED"),
        ("user-id-non-ascii", {"user_id": "al\u00efce"}, "user_id with a non-ASCII letter -> MALFORMED"),
        ("user-id-too-long", {"user_id": "u" * 256}, "user_id of 256 characters -> MALFORMED"),
        ("user-id-longest", {"user_id": "u" * 255}, "user_id of 255 characters -> VALID"),
        ("user-id-all-classes", {"user_id": "A-z_0@9"}, "user_id of letters, digits, '@', '_', '-' -> VALID"),
        ("user-id-number", {"user_id": 42}, "user_id that is a number -> MALFORMED"),
    ):
        v.case(
            app,
            name,
            (S4 if "aud" in name or "exp" in name or "nbf" in name or "iat" in name else USERS) + rule,
            jws(head, claims(app, **more), sign),
        )
    v.case(
        app,
        "server-token",
        USERS + "a server token (server: true, no user_id) -> MALFORMED",
        jws(head, {"server": True, "iat": secs(NOW - 60 * SECOND), "aud": app.api_key}, sign),
    )
    v.case(
        app,
        "server-claim-with-user-id",
        USERS + "a user token with a server claim -> MALFORMED",
        jws(head, claims(app, server=True), sign),
    )

    # Step 6: user revocations (carol at T0+1000.5 s, dave at T0+2000 s, erin's cleared).
    carol_r = T0 + 1000_500_000
    for name, iat, rule in (
        ("user-revoked-iat-just-before", carol_r - 1, "iat 1 us before the user's R -> REVOKED"),
        ("user-revoked-iat-ms-before", carol_r - 1000, "iat 1 ms before the user's R -> REVOKED"),
        ("user-revoked-iat-at-r", carol_r, "iat equal to the user's R -> VALID"),
        ("user-revoked-iat-just-after", carol_r + 1000, "iat 1 ms after the user's R -> VALID"),
    ):
        v.case(app, name, S6 + rule, jws(head, claims(app, "carol", iat=secs(iat)), sign))
    v.case(
        app,
        "user-revoked-no-iat",
        S6 + "no iat: user revocation does not apply -> VALID",
        jws(head, claims(app, "carol", iat=None), sign),
    )
    v.case(
        app,
        "user-revoked-minted-before",
        S6 + "minted before the user's R -> REVOKED",
        await v.mint(app, "carol", carol_r - 1000 * SECOND),
    )
    v.case(
        app,
        "user-revoked-minted-after",
        S6 + "minted after the user's R -> VALID",
        await v.mint(app, "carol", carol_r + 1),
    )
    v.case(
        app,
        "revocation-never-moves-back",
        REVOCATION + "revoked at 2000 s, again at 1900 s: R stays -> REVOKED",
        jws(head, claims(app, "dave", iat=secs(T0 + 1950 * SECOND)), sign),
    )
    v.case(
        app,
        "cleared-user-revocation",
        REVOCATION + "a cleared user revocation rejects no more -> VALID",
        jws(head, claims(app, "erin", iat=secs(T0 + 2500 * SECOND)), sign),
    )

    # Step 7: valid tokens, and what the answer says.
    v.case(app, "minted", S7 + "a token minted by the server -> VALID", await v.mint(app, "alice", NOW - 60 * SECOND))
    v.case(
        app,
        "minted-with-claims",
        S7 + "extra claims come back in the answer -> VALID",
        await v.mint(
            app,
            "alice",
            NOW - 60 * SECOND,
            ttl=_duration(3600),
            claims=_struct({"role": "moderator", "rooms": ["general", "random"], "level": 3}),
        ),
    )
    v.case(app, "hand-crafted", S7 + "a token signed with the app's secret, no kid -> VALID", good)
    v.case(
        app,
        "extra-claims",
        S7 + "nested and fractional claims come back -> VALID",
        jws(head, claims(app, role="admin", ratio=0.25, flags={"beta": True, "tags": ["a", "b"]}, nothing=[]), sign),
    )
    v.case(
        app,
        "fractional-iat",
        S7 + "a fractional iat is reported to the microsecond -> VALID",
        jws(head, claims(app, iat=secs(NOW - 59_876_543)), sign),
    )
    v.case(app, "no-exp", S7 + "no exp: the token does not expire -> VALID", jws(head, claims(app, exp=None), sign))
    v.case(
        app, "no-iat", S7 + "no iat (and no revocation that needs one) -> VALID", jws(head, claims(app, iat=None), sign)
    )


def _duration(seconds: int) -> Any:
    from google.protobuf import duration_pb2

    return duration_pb2.Duration(seconds=seconds)


def _struct(values: Mapping[str, Any]) -> Any:
    from google.protobuf import struct_pb2

    result = struct_pb2.Struct()
    result.update(values)
    return result


async def revocation_cases(v: Vectors) -> None:
    # require-iat: require_iat on, bob revoked at T0+1000 s.
    app = v.apps["require-iat"]
    sign, head = hs256(app.secret), {"alg": "HS256"}
    v.case(
        app,
        "no-iat-revoked-user",
        S6 + "require iat: no iat, a revoked user -> REVOKED",
        jws(head, claims(app, "bob", iat=None), sign),
    )
    v.case(
        app,
        "no-iat-any-user",
        S6 + "require iat: no iat at all is refused -> REVOKED",
        jws(head, claims(app, "alice", iat=None), sign),
    )
    v.case(
        app,
        "iat-after-revocation",
        S6 + "require iat: iat after the user's R -> VALID",
        jws(head, claims(app, "bob"), sign),
    )
    v.case(
        app,
        "iat-before-revocation",
        S6 + "require iat: iat before the user's R -> REVOKED",
        jws(head, claims(app, "bob", iat=secs(T0 + 999 * SECOND)), sign),
    )
    v.case(
        app,
        "minted",
        S7 + "require iat: a minted token carries iat -> VALID",
        await v.mint(app, "alice", NOW - 60 * SECOND),
    )

    # app-revoked: R = T0+5000.25 s, then an earlier "revocation" that leaves it.
    app = v.apps["app-revoked"]
    sign, r = hs256(app.secret), T0 + 5000_250_000
    for name, iat, rule in (
        ("iat-just-before", r - 1, "iat 1 us before the app's R -> REVOKED"),
        ("iat-at-r", r, "iat equal to the app's R -> VALID"),
        ("iat-just-after", r + 1000, "iat 1 ms after the app's R -> VALID"),
        (
            "iat-before-earlier-revocation",
            T0 + 4500 * SECOND,
            "revoked at 5000.25 s, again at 4000 s: R stays; iat 4500 s -> REVOKED",
        ),
    ):
        v.case(
            app, name, (S5 if "earlier" not in name else REVOCATION) + rule, jws(head, claims(app, iat=secs(iat)), sign)
        )
    v.case(app, "no-iat", S5 + "app revoked and no iat -> REVOKED", jws(head, claims(app, iat=None), sign))
    v.case(
        app, "minted-before", S5 + "minted before the app's R -> REVOKED", await v.mint(app, "alice", r - 60 * SECOND)
    )
    v.case(app, "minted-after", S5 + "minted after the app's R -> VALID", await v.mint(app, "alice", r + 60 * SECOND))
    v.case(
        app,
        "expired-and-revoked",
        S4 + "expired and revoked: EXPIRED comes first -> EXPIRED",
        jws(head, claims(app, iat=secs(r - 7200 * SECOND), exp=secs(r - 3600 * SECOND)), sign),
    )

    # app-cleared: revoked at T0+5000 s, then cleared.
    app = v.apps["app-cleared"]
    sign = hs256(app.secret)
    v.case(
        app,
        "iat-before-cleared",
        REVOCATION + "a cleared app revocation rejects no more -> VALID",
        jws(head, claims(app, iat=secs(T0 + 4000 * SECOND)), sign),
    )
    v.case(
        app,
        "no-iat-after-clear",
        REVOCATION + "cleared: a token without iat -> VALID",
        jws(head, claims(app, iat=None), sign),
    )


async def dev_cases(v: Vectors) -> None:
    app = v.apps["dev"]
    sign, head = hs256(app.secret), {"alg": "HS256"}

    def dev(payload: Any, header: Mapping[str, Any] = head) -> str:
        return f"{segment(header)}.{segment(payload)}.devtoken"

    v.case(app, "dev-token", DEV + "checks disabled: a developer token -> VALID (dev_token)", dev(claims(app)))
    v.case(
        app,
        "dev-token-minimal",
        DEV + "checks disabled: a developer token with user_id only -> VALID",
        dev({"user_id": "alice"}),
    )
    v.case(
        app,
        "dev-token-expired",
        DEV + "expiry still applies to developer tokens -> EXPIRED",
        dev(claims(app, iat=secs(NOW - 7200 * SECOND), exp=secs(NOW - 3600 * SECOND))),
    )
    v.case(
        app,
        "dev-token-revoked-user",
        DEV + "revocation still applies to developer tokens -> REVOKED",
        dev(claims(app, "mallory", iat=secs(T0 + 500 * SECOND))),
    )
    v.case(app, "dev-token-no-user-id", DEV + "a developer token without user_id -> MALFORMED", dev({"iat": secs(NOW)}))
    v.case(
        app,
        "dev-token-wrong-audience",
        DEV + "a developer token for another app -> WRONG_AUDIENCE",
        dev(claims(app, aud="someone-else")),
    )
    v.case(
        app,
        "dev-token-bad-json",
        DEV + "a developer token must still parse -> MALFORMED",
        f"{segment(head)}.{segment('{user_id')}.devtoken",
    )
    v.case(
        app,
        "signed-token",
        DEV + "checks disabled: a properly signed token -> VALID (not dev_token)",
        jws(head, claims(app), sign),
    )
    v.case(
        app,
        "wrong-secret",
        DEV + "checks disabled: a wrong signature is still refused -> INVALID_SIGNATURE",
        jws(head, claims(app), hs256(fixed_secret("not the secret"))),
    )


async def rotation_cases(v: Vectors) -> None:
    # rotated: secret 1 rotated out at T0+1000 s with an overlap to T0+4600 s; secret 2 current.
    app = v.apps["rotated"]
    old, new = app.secret, fixed_secret("rotated 2")
    old_kid, new_kid = app.secret_kid, fixed_kid("rotated secret 2")
    payload = claims(app, iat=secs(T0 + 900 * SECOND), exp=secs(T0 + 20_000 * SECOND))
    old_token = jws({"alg": "HS256", "kid": old_kid}, payload, hs256(old))
    old_no_kid = jws({"alg": "HS256"}, payload, hs256(old))
    end = T0 + 4600 * SECOND
    v.case(
        app,
        "old-secret-in-overlap",
        APPS + "the rotated-out secret inside its overlap -> VALID",
        old_token,
        T0 + 2000 * SECOND,
    )
    v.case(
        app,
        "old-secret-last-microsecond",
        APPS + "the rotated-out secret 1 us before the overlap ends -> VALID",
        old_token,
        end - 1,
    )
    v.case(
        app,
        "old-secret-overlap-over",
        APPS + "the rotated-out secret once its overlap is over (its kid) -> UNKNOWN_KEY",
        old_token,
        end,
    )
    v.case(
        app,
        "old-secret-no-kid-in-overlap",
        APPS + "rotated-out secret, no kid, inside the overlap -> VALID",
        old_no_kid,
        T0 + 2000 * SECOND,
    )
    v.case(
        app,
        "old-secret-no-kid-overlap-over",
        S3 + "rotated-out secret, no kid, after the overlap -> INVALID_SIGNATURE",
        old_no_kid,
        end + SECOND,
    )
    minted_old = app.minted_first["alice"]
    v.case(
        app,
        "minted-before-rotation",
        APPS + "minted before the rotation, in the overlap -> VALID",
        minted_old,
        T0 + 3000 * SECOND,
    )
    v.case(
        app,
        "minted-before-rotation-later",
        APPS + "minted before the rotation, after the overlap -> UNKNOWN_KEY",
        minted_old,
        T0 + 5000 * SECOND,
    )
    v.case(
        app,
        "new-secret",
        S7 + "the new secret, its kid -> VALID",
        jws({"alg": "HS256", "kid": new_kid}, payload, hs256(new)),
        T0 + 5000 * SECOND,
    )
    v.case(
        app,
        "new-secret-no-kid",
        S7 + "the new secret, no kid -> VALID",
        jws({"alg": "HS256"}, payload, hs256(new)),
        T0 + 2000 * SECOND,
    )
    v.case(
        app,
        "new-secret-old-kid",
        S3 + "the new secret under the old secret's kid -> INVALID_SIGNATURE",
        jws({"alg": "HS256", "kid": old_kid}, payload, hs256(new)),
        T0 + 2000 * SECOND,
    )
    v.case(
        app,
        "minted-after-rotation",
        S7 + "minted after the rotation (the new secret) -> VALID",
        await v.mint(app, "alice", T0 + 1500 * SECOND, secret=new),
        T0 + 5000 * SECOND,
    )

    # max-lifetime: tokens must not live longer than 3600 s.
    app = v.apps["max-lifetime"]
    sign, head = hs256(app.secret), {"alg": "HS256"}
    iat = NOW - 60 * SECOND
    v.case(
        app,
        "lifetime-at-max",
        S4 + "exp - iat = the app's max lifetime -> VALID",
        jws(head, claims(app, iat=secs(iat), exp=secs(iat + 3600 * SECOND)), sign),
    )
    v.case(
        app,
        "lifetime-beyond-max",
        S4 + "exp - iat beyond the app's max lifetime -> MALFORMED",
        jws(head, claims(app, iat=secs(iat), exp=secs(iat + 3600 * SECOND + 1)), sign),
    )
    v.case(
        app, "no-exp", S4 + "no exp on an app with a max lifetime -> MALFORMED", jws(head, claims(app, exp=None), sign)
    )
    v.case(
        app,
        "no-iat",
        S4 + "exp but no iat: the lifetime cannot be measured -> VALID",
        jws(head, claims(app, iat=None), sign),
    )
    v.case(
        app,
        "expired-beyond-max",
        S4 + "expired and too long-lived: EXPIRED comes first -> EXPIRED",
        jws(head, claims(app, iat=secs(NOW - 9000 * SECOND), exp=secs(NOW - 60 * SECOND)), sign),
    )
    v.case(
        app,
        "minted",
        S7 + "a minted token gets the max lifetime as exp -> VALID",
        await v.mint(app, "alice", NOW - 60 * SECOND),
    )


async def asymmetric_cases(v: Vectors) -> None:
    # eddsa: key 1 retired; keys 2 and 3 live (3 the newest).
    app = v.apps["eddsa"]
    pems = {n: fixed_pem("EdDSA", f"eddsa {n}") for n in (1, 2, 3)}
    kids = {n: fixed_kid(f"eddsa {n}") for n in (1, 2, 3)}

    def signed(n: int, kid: int | None = None, alg: str = "EdDSA", **more: Any) -> str:
        header: dict[str, Any] = {"alg": alg}
        if kid is not None:
            header["kid"] = kids[kid]
        return jws(header, claims(app, **more), eddsa(pems[n]))

    v.case(app, "newest-key", S7 + "signed with the newest key pair -> VALID", signed(3, 3))
    v.case(app, "older-key-still-verifies", APPS + "an older key pair verifies after a rotation -> VALID", signed(2, 2))
    v.case(app, "retired-key", S2 + "the kid of a retired key pair -> UNKNOWN_KEY", signed(1, 1))
    v.case(app, "retired-key-no-kid", S3 + "a retired key's signature, no kid -> INVALID_SIGNATURE", signed(1))
    v.case(app, "no-kid", S7 + "no kid: any live key pair may have signed -> VALID", signed(2))
    v.case(app, "kid-of-another-key", S3 + "signed with key 2 under key 3's kid -> INVALID_SIGNATURE", signed(2, 3))
    v.case(
        app,
        "unknown-kid",
        S2 + "a kid that names no key -> UNKNOWN_KEY",
        jws({"alg": "EdDSA", "kid": "nope"}, claims(app), eddsa(pems[3])),
    )
    v.case(
        app,
        "kid-of-api-secret",
        S2 + "the API secret's kid on an EdDSA app -> UNKNOWN_KEY",
        jws({"alg": "EdDSA", "kid": app.secret_kid}, claims(app), eddsa(pems[3])),
    )
    v.case(
        app,
        "alg-spelled-ed25519",
        S2 + "alg 'Ed25519' is not the app's 'EdDSA' -> INVALID_SIGNATURE",
        signed(3, 3, "Ed25519"),
    )
    v.case(
        app,
        "alg-hs256-api-secret",
        S2 + "HS256 with the API secret on an EdDSA app -> INVALID_SIGNATURE",
        jws({"alg": "HS256"}, claims(app), hs256(app.secret)),
    )
    public = private_key(pems[3]).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    v.case(
        app,
        "alg-confusion-public-key-as-hmac",
        S2 + "HS256 keyed with the public key -> INVALID_SIGNATURE",
        jws(
            {"alg": "HS256", "kid": kids[3]}, claims(app), lambda data: hmac.new(public, data, hashlib.sha256).digest()
        ),
    )
    good = signed(3, 3)
    v.case(
        app,
        "tampered-payload",
        S3 + "payload changed after signing -> INVALID_SIGNATURE",
        f"{good.split('.')[0]}.{segment(claims(app, user_id='mallory'))}.{good.split('.')[2]}",
    )
    v.case(app, "minted", S7 + "a token minted by the server -> VALID", await v.mint(app, "alice", NOW - 60 * SECOND))
    v.case(
        app,
        "minted-with-retired-key",
        S2 + "minted before its key pair was retired -> UNKNOWN_KEY",
        app.minted_first["alice"],
    )
    v.case(
        app,
        "expired",
        S4 + "an EdDSA token past its exp -> EXPIRED",
        signed(3, 3, exp=secs(NOW - 60 * SECOND), iat=secs(NOW - 120 * SECOND)),
    )

    # es256: Wycheproof's SpecialCaseEs256 key (its kid) and a second key pair.
    app = v.apps["es256"]
    group = _wycheproof_group("SpecialCaseEs256")
    pem, kid = app.key_pair["pem"] if app.key_pair else "", group["private"]["kid"]
    pem2, kid2 = fixed_pem("ES256", "es256 2"), fixed_kid("es256 2")
    head = {"alg": "ES256", "kid": kid}
    good = jws(head, claims(app), es256(pem))
    signing_input = good.rsplit(".", 1)[0].encode()
    v.case(app, "valid", S7 + "an ES256 token, r || s -> VALID", good)
    v.case(
        app,
        "second-key",
        S7 + "signed with the second key pair -> VALID",
        jws({"alg": "ES256", "kid": kid2}, claims(app), es256(pem2)),
    )
    v.case(app, "minted", S7 + "a token minted by the server -> VALID", await v.mint(app, "alice", NOW - 60 * SECOND))
    r, s = es256_raw(pem, signing_input)
    v.case(
        app,
        "der-signature",
        S3 + "a DER-encoded ECDSA signature, not r || s -> INVALID_SIGNATURE",
        resign(good, private_key(pem).sign(signing_input, ec.ECDSA(hashes.SHA256()))),
    )
    v.case(
        app,
        "high-s",
        S3 + "s replaced by n - s (ECDSA malleability; JWS does not ask for low s) -> VALID",
        resign(good, r.to_bytes(32, "big") + (P256_ORDER - s).to_bytes(32, "big")),
    )
    v.case(
        app,
        "alg-es384",
        S2 + "alg ES384 on an ES256 app -> INVALID_SIGNATURE",
        jws({"alg": "ES384", "kid": kid}, claims(app), es256(pem)),
    )
    v.case(
        app,
        "alg-eddsa",
        S2 + "alg EdDSA on an ES256 app -> INVALID_SIGNATURE",
        jws({"alg": "EdDSA", "kid": kid}, claims(app), es256(pem)),
    )
    for test in group["tests"]:
        if test["tcId"] not in WYCHEPROOF_ES256_CASES:
            continue
        signature = test["jws"].split(".")[2]
        v.case(
            app,
            f"wycheproof-{test['tcId']}-{test['comment']}",
            S3 + f"Wycheproof tcId {test['tcId']} ({test['comment']}) signature -> INVALID_SIGNATURE",
            resign(good, signature),
        )
    valid = next(t for t in group["tests"] if t["result"] == "valid")["jws"]
    v.case(
        app,
        "wycheproof-378-payload-not-json",
        S1 + "Wycheproof tcId 378, a good signature over 'foo' -> MALFORMED",
        valid,
    )


async def other_cases(v: Vectors) -> None:
    app = v.apps["other"]
    v.case(
        app, "minted", S7 + "another app's token on that app -> VALID", await v.mint(app, "alice", NOW - 60 * SECOND)
    )


# Running the server and recording.


@contextlib.asynccontextmanager
async def postgres_url() -> AsyncIterator[str]:
    """AUTHSVC_TEST_DATABASE_URL, else an embedded PostgreSQL for this run."""
    url = os.environ.get("AUTHSVC_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import pgserver

    server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="authsvc-pg-")), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


async def _capture(
    stub: pb_grpc.AuthServiceStub, api_key: str, secret: str
) -> tuple[grpc.aio.UnaryStreamCall[Any, Any], list[str], Callable[[int], Any]]:
    """A WatchState stream of the app, the messages read so far (base64), and `upto(version)` that reads
    every snapshot and change message up to that state version (heartbeats are left out)."""
    call = stub.WatchState(pb.WatchStateRequest(), metadata=conformance.backend(api_key, secret))
    messages: list[str] = []

    async def upto(version: int) -> None:
        async with asyncio.timeout(conformance.WAIT):
            while True:
                message = await call.read()
                if not isinstance(message, pb.WatchStateResponse):
                    raise RuntimeError("the WatchState stream ended")
                kind = message.WhichOneof("event")
                if kind == "heartbeat":
                    continue
                messages.append(base64.b64encode(message.SerializeToString()).decode())
                if message.version >= version and (kind != "snapshot" or message.snapshot.last):
                    return

    return call, messages, upto


async def generate(output: Path) -> int:
    clock = FakeClock()
    clock.set(T0)
    settings = Settings(host="127.0.0.1", port=0, http_port=0, issuer="authsvc-test", clock_leeway=LEEWAY / SECOND)
    async with postgres_url() as server_url, new_database(server_url, "authsvc_conformance") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrations.apply(conn)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=5)
        store = Store(pool, TEST_KEYRING)
        state = new_state(store, url, settings)
        await state.start()
        running = await start_server(store, state, settings, clock)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                return await _record(output, store, state, pb_grpc.AuthServiceStub(channel), clock)
        finally:
            await running.stop(None)
            await state.stop()
            await pool.close()


async def _record(output: Path, store: Store, state: Any, stub: pb_grpc.AuthServiceStub, clock: FakeClock) -> int:
    vectors = Vectors(stub, clock)
    define_apps(vectors)
    server = conformance.Server(store, state, stub, clock.set)  # type: ignore[arg-type]
    entries = []
    for app in vectors.apps.values():
        entry = app.entry()
        clock.set(T0)
        changes: dict[str, Any] = {}

        async def after_step(version: int, app: VectorApp = app, changes: dict[str, Any] = changes) -> None:
            if not changes:
                changes["call"], changes["messages"], changes["upto"] = await _capture(stub, app.api_key, app.secret)
                for user_id in app.mint_first:
                    app.minted_first[user_id] = await vectors.mint(app, user_id, T0 + 500 * SECOND)
            await changes["upto"](version)

        await conformance.rebuild(server, entry, after_step)
        changes["call"].cancel()
        call, snapshot, upto = await _capture(stub, app.api_key, (app.extra_secrets or [app.secret])[0])
        await upto(state.version)
        call.cancel()
        entry["streams"] = {"changes": changes["messages"], "snapshot": snapshot}
        entries.append(entry)

    await hs256_cases(vectors)
    await revocation_cases(vectors)
    await dev_cases(vectors)
    await rotation_cases(vectors)
    await asymmetric_cases(vectors)
    await other_cases(vectors)

    cases = []
    for case in vectors.cases:
        clock.set(case.now)
        response = await stub.VerifyToken(
            pb.VerifyTokenRequest(token=case.token), metadata=(("x-api-key", vectors.apps[case.app].api_key),)
        )
        cases.append(
            {
                "name": case.name,
                "rule": case.rule,
                "app": case.app,
                "token": case.token,
                "now": case.now,
                "expect": conformance.expectation(response),
            }
        )
    names = [case["name"] for case in cases]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"duplicate case names: {duplicates}")
    document = {"format": conformance.FORMAT, "about": ABOUT, "apps": entries, "cases": cases}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    # The local verifier, on both streams: a disagreement is worth knowing before the tests say it.
    disagreements = 0
    by_app = {entry["name"]: entry for entry in entries}
    for name, entry in by_app.items():
        app_cases = [case for case in cases if case["app"] == name]
        for stream in ("changes", "snapshot"):
            for case, got in zip(app_cases, conformance.local_verdicts(entry, stream, app_cases), strict=True):
                problem = conformance.mismatch(case, f"python-local/{stream}", got)
                if problem:
                    disagreements += 1
                    print(f"warning: {problem}", file=sys.stderr)
    outcomes = sorted({case["expect"]["outcome"] for case in cases})
    print(f"wrote {output}: {len(entries)} apps, {len(cases)} cases; outcomes {', '.join(outcomes)}")
    return 1 if disagreements else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=conformance.VECTORS)
    args = parser.parse_args()
    sys.exit(asyncio.run(generate(args.output)))


if __name__ == "__main__":
    main()
