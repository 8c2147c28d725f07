"""What conformance/vectors.json holds: the vector apps (fixed test keys, setup steps) and the cases (tokens, times).

Every case names the TOKEN_MODEL step it checks and, after `->`, the verdict the rule calls for; the file records
what the server actually answered (tests/generate_conformance.py), which the generator checks against that.
Times count from T0; most cases are judged at NOW, after every setup step.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authsvc.clock import MICROS_PER_SECOND, Micros
from tests import conformance

SECOND = MICROS_PER_SECOND
T0: Micros = 1_790_000_000 * SECOND
"""2026-09-21T14:13:20Z: every time of the vectors counts from here."""
NOW: Micros = T0 + 10_000 * SECOND
"""The `now` of most cases: after every setup step."""
LEEWAY = 5 * SECOND
"""The test server's clock leeway."""
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
WYCHEPROOF = Path(
    os.environ.get("AUTHSVC_WYCHEPROOF", Path(__file__).resolve().parent.parent.parent / "shared" / "wycheproof")
)
"""Project Wycheproof's test vectors (a folder holding json_web_signature_test.json): ../shared/wycheproof beside
the repository, or AUTHSVC_WYCHEPROOF."""
# Wycheproof's SpecialCaseEs256 signatures used, each invalid for any message: too long, trailing zeros, r too
# big, an integer overflow, a buffer overflow, r = s = 0, r = 1 and s = n, r = s = n.
WYCHEPROOF_ES256_CASES = (379, 380, 381, 383, 385, 386, 393, 401)
_BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# Fixed test keys, derived from labels so that every regeneration has the same ones.


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
    """A private key of `algorithm` (EdDSA or ES256) as PKCS#8 PEM, derived from `label`."""
    if algorithm == "EdDSA":
        return _pem(ed25519.Ed25519PrivateKey.from_private_bytes(_seed(f"ed25519 {label}")))
    scalar = int.from_bytes(_seed(f"p256 {label}"), "big") % (P256_ORDER - 1) + 1
    return _pem(ec.derive_private_key(scalar, ec.SECP256R1()))


def _wycheproof_es256_group() -> dict[str, Any]:
    path = WYCHEPROOF / "json_web_signature_test.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: set AUTHSVC_WYCHEPROOF to a folder of Project Wycheproof's vectors")
    groups = json.loads(path.read_text())["testGroups"]
    group: dict[str, Any] = next(g for g in groups if g["comment"] == "SpecialCaseEs256")
    return group


def wycheproof_es256_key() -> tuple[str, str]:
    """The kid and private key (PEM) of Wycheproof's SpecialCaseEs256 group."""
    jwk = _wycheproof_es256_group()["private"]
    d = int.from_bytes(base64.urlsafe_b64decode(jwk["d"] + "=="), "big")
    return jwk["kid"], _pem(ec.derive_private_key(d, ec.SECP256R1()))


# Hand-crafted tokens.

Signer = Callable[[bytes], bytes]
Part = Mapping[str, Any] | list[Any] | str | bytes


def segment(part: Part) -> str:
    """A token part: a dict or list as compact JSON, a str as its UTF-8 text, bytes as they are."""
    if isinstance(part, bytes):
        return b64(part)
    if isinstance(part, str):
        return b64(part.encode("utf-8", "surrogatepass"))
    return b64(json.dumps(part, separators=(",", ":"), ensure_ascii=False).encode())


def jws(header: Mapping[str, Any] | list[Any], payload: Part, signer: Signer) -> str:
    """A compact JWS of `header` (as JSON) and `payload` (see segment), signed by `signer`."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    return f"{signing_input}.{b64(signer(signing_input.encode()))}"


def resign(token: str, signature: bytes | str) -> str:
    """The token's header and payload with another signature (bytes, or a signature part as text)."""
    head, payload, _ = token.split(".")
    return f"{head}.{payload}.{signature if isinstance(signature, str) else b64(signature)}"


def signing_input(token: str) -> bytes:
    return token.rsplit(".", 1)[0].encode()


def hs256(secret: str | bytes, digest: Any = hashlib.sha256) -> Signer:
    key = secret.encode() if isinstance(secret, str) else secret
    return lambda data: hmac.new(key, data, digest).digest()


def private_key(pem: str) -> Any:
    return serialization.load_pem_private_key(pem.encode(), password=None)


def eddsa(pem: str) -> Signer:
    key = private_key(pem)
    return lambda data: bytes(key.sign(data))


def es256_rs(pem: str, data: bytes) -> tuple[int, int]:
    """An ECDSA P-256 SHA-256 signature of `data` as (r, s)."""
    r, s = decode_dss_signature(private_key(pem).sign(data, ec.ECDSA(hashes.SHA256())))
    return r, s


def es256(pem: str) -> Signer:
    def sign(data: bytes) -> bytes:
        r, s = es256_rs(pem, data)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


def secs(micros: Micros) -> int | float:
    """A NumericDate for a time in microseconds (with a fraction when it is not whole)."""
    whole, fraction = divmod(micros, SECOND)
    return whole if fraction == 0 else micros / SECOND


# The vector apps.


@dataclass
class VectorApp:
    """An app of the file: its fixed keys and setup steps (conformance.rebuild's format)."""

    name: str
    algorithm: str = "HS256"
    steps: list[dict[str, Any]] = field(default_factory=list)
    key_pair: tuple[str, str] | None = None
    """The first key pair of an EdDSA or ES256 app: kid, private PEM."""
    rotated_in: list[str] = field(default_factory=list)
    """API secrets that setup steps rotate in, newest last."""
    mint_first: list[str] = field(default_factory=list)
    """Users the generator mints a token for right after the app is created, before any setup step."""
    minted_first: dict[str, str] = field(default_factory=dict)

    @property
    def api_key(self) -> str:
        return fixed_api_key(self.name)

    @property
    def secret(self) -> str:
        """The app's first API secret."""
        return fixed_secret(self.name)

    @property
    def secret_kid(self) -> str:
        return fixed_kid(f"{self.name} secret")

    @property
    def current_secret(self) -> str:
        """The API secret once every setup step ran."""
        return self.rotated_in[-1] if self.rotated_in else self.secret

    def entry(self) -> dict[str, Any]:
        """The app's entry in the file, without its streams."""
        pair = None if self.key_pair is None else {"kid": self.key_pair[0], "pem": self.key_pair[1]}
        return {
            "name": self.name,
            "api_key": self.api_key,
            "algorithm": self.algorithm,
            "hs256_secrets": [*reversed(self.rotated_in), self.secret] if self.algorithm == "HS256" else [],
            "setup": {
                "algorithm": self.algorithm,
                "api_secret": self.secret,
                "secret_kid": self.secret_kid,
                "key_pair": pair,
                "steps": self.steps,
            },
        }


def _at(seconds: float) -> Micros:
    return T0 + round(seconds * SECOND)


def _revoke(at: float, *user_ids: str, before: float | None = None) -> dict[str, Any]:
    revoke_before = _at(at if before is None else before)
    return {"action": "revoke_users", "at": _at(at), "user_ids": list(user_ids), "revoke_before": revoke_before}


def _revoke_app(at: float, before: float | None = None) -> dict[str, Any]:
    return {"action": "revoke_app", "at": _at(at), "revoke_before": _at(at if before is None else before)}


def _revoke_token(at: float, jti: str) -> dict[str, Any]:
    return {"action": "revoke_token", "at": _at(at), "jti": jti}


def _update(at: float, **changes: Any) -> dict[str, Any]:
    return {"action": "update", "at": _at(at), "changes": changes}


def _add_key_pair(at: float, algorithm: str, label: str) -> dict[str, Any]:
    return {
        "action": "add_key_pair",
        "at": _at(at),
        "kid": fixed_kid(label),
        "pem": fixed_pem(algorithm, label),
        "signs_from": _at(at),
    }


ROTATED_SECRET = fixed_secret("rotated 2")
ROTATED_KID = fixed_kid("rotated secret 2")
ROTATION_ENDS = _at(4600)


def vector_apps() -> dict[str, VectorApp]:
    """The apps of the file, by name, with their setup steps."""
    es256_kid, es256_pem = wycheproof_es256_key()
    apps = [
        # carol revoked at a fractional second; dave revoked, then again earlier (R stays); erin revoked, cleared.
        VectorApp(
            "hs256",
            steps=[
                _revoke(1000.5, "carol"),
                _revoke(2000, "dave"),
                _revoke(2100, "dave", before=1900),
                _revoke(3000, "erin"),
                {"action": "clear_users", "at": _at(3100), "user_ids": ["erin"]},
            ],
        ),
        VectorApp("other"),
        VectorApp("require-iat", steps=[_update(100, require_iat=True), _revoke(1000, "bob")]),
        VectorApp("app-revoked", steps=[_revoke_app(5000.25), _revoke_app(5100, before=4000)]),
        VectorApp("app-cleared", steps=[_revoke_app(5000), {"action": "clear_app", "at": _at(5100)}]),
        VectorApp("dev", steps=[_update(100, auth_checks_disabled=True), _revoke(1000, "mallory")]),
        VectorApp(
            "rotated",
            steps=[
                {
                    "action": "rotate_secret",
                    "at": _at(1000),
                    "kid": ROTATED_KID,
                    "secret": ROTATED_SECRET,
                    "expires_at": ROTATION_ENDS,
                }
            ],
            rotated_in=[ROTATED_SECRET],
            mint_first=["alice"],
        ),
        VectorApp("max-lifetime", steps=[_update(100, max_token_lifetime_seconds=3600)]),
        VectorApp(
            "eddsa",
            algorithm="EdDSA",
            key_pair=(fixed_kid("eddsa 1"), fixed_pem("EdDSA", "eddsa 1")),
            steps=[
                _add_key_pair(1000, "EdDSA", "eddsa 2"),
                _add_key_pair(1100, "EdDSA", "eddsa 3"),
                {"action": "retire_key", "at": _at(1200), "kid": fixed_kid("eddsa 1")},
            ],
            mint_first=["alice"],
        ),
        VectorApp(
            "es256",
            algorithm="ES256",
            key_pair=(es256_kid, es256_pem),
            steps=[_add_key_pair(1000, "ES256", "es256 2"), _revoke_token(2000, "es-phone")],
        ),
        # Tokens revoked by jti (RevokeToken): phone at 1000 s, tablet at 1100 s and cleared at 1200 s; bob revoked
        # as a user at 1300 s; the app revoked before 500 s.
        VectorApp(
            "token-revoked",
            steps=[
                _revoke_token(1000, "phone"),
                _revoke_token(1100, "tablet"),
                {"action": "clear_tokens", "at": _at(1200), "jtis": ["tablet"]},
                _revoke(1300, "bob"),
                _revoke_app(1400, before=500),
            ],
        ),
    ]
    return {app.name: app for app in apps}


# The cases.

S1, S2, S3, S4, S5, S6, S7 = (f"TOKEN_MODEL step {n}: " for n in range(1, 8))
APPS = "TOKEN_MODEL Apps: "
USERS = "TOKEN_MODEL User tokens: "
REVOCATION = "TOKEN_MODEL Revocation: "
DEV = "TOKEN_MODEL Development mode: "

Mint = Callable[..., Awaitable[str]]
"""mint(app, user_id, at, **IssueTokenRequest fields): a token the server issued with its clock at `at`."""


@dataclass
class Case:
    name: str
    rule: str
    app: str
    token: str
    now: Micros = NOW


def claims(app: VectorApp, user_id: Any = "alice", **more: Any) -> dict[str, Any]:
    """A user token's payload: `user_id`, iat a minute before NOW, exp an hour after, this app's aud; `more`
    adds claims or (as None) removes them, as a `user_id` of None does."""
    payload: dict[str, Any] = {"iat": secs(NOW - 60 * SECOND), "exp": secs(NOW + 3600 * SECOND), "aud": app.api_key}
    for name, value in {"user_id": user_id, **more}.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


@dataclass
class Crafter:
    """Tokens of one app, signed by default with `signer` under `header`."""

    app: VectorApp
    signer: Signer
    header: Mapping[str, Any]

    def __call__(
        self,
        user_id: Any = "alice",
        *,
        header: Mapping[str, Any] | list[Any] | None = None,
        signer: Signer | None = None,
        **more: Any,
    ) -> str:
        return jws(self.header if header is None else header, claims(self.app, user_id, **more), signer or self.signer)

    def raw(self, payload: Part) -> str:
        """A token of this payload as given (JSON text, bytes, or a value to encode), signed as usual."""
        return jws(self.header, payload, self.signer)

    def dev(self, payload: Part) -> str:
        """A developer token: the literal signature `devtoken`."""
        return f"{segment(self.header)}.{segment(payload)}.devtoken"


Row = tuple[str, str, str] | tuple[str, str, str, Micros]
"""A case of one app: name, rule, token[, now]."""


def _cases(app: VectorApp, rows: Sequence[Row]) -> list[Case]:
    return [Case(row[0], row[1], app.name, row[2], *row[3:]) for row in rows]


async def all_cases(apps: Mapping[str, VectorApp], mint: Mint) -> list[Case]:
    """Every case of the file, in order, each named `app/case`."""
    cases = [
        *await _hs256(apps["hs256"], apps["other"], mint),
        *await _revocations(apps, mint),
        *_dev(apps["dev"]),
        *await _rotated(apps["rotated"], mint),
        *await _max_lifetime(apps["max-lifetime"], mint),
        *await _eddsa(apps["eddsa"], mint),
        *await _es256(apps["es256"], mint),
        *_token_revocations(apps["token-revoked"]),
        Case(
            "minted",
            S7 + "another app's token on that app -> VALID",
            "other",
            await mint(apps["other"], "alice", NOW - 60 * SECOND),
        ),
    ]
    for case in cases:
        case.name = f"{case.app}/{case.name}"
        if not conformance.RULE_PATTERN.fullmatch(case.rule):
            raise ValueError(f"case {case.name}: rule {case.rule!r} names no TOKEN_MODEL step")
    return cases


# Not in the file while the server and the Python LocalVerifier disagree on them (reported, not fixed here): an
# integer claim beyond 2^53 (VerifyToken's Struct rounds it to a double; LocalVerifier returns it exact) and one
# beyond 2^1023 (VerifyToken returns it as a string).


async def _hs256(app: VectorApp, other: VectorApp, mint: Mint) -> list[Case]:
    token = Crafter(app, hs256(app.secret), {"alg": "HS256", "typ": "JWT"})
    good = token()
    h, p, s = good.split(".")
    p_4n1 = p + "A" * ((1 - len(p)) % 4)  # a length no base64 text has
    noncanonical = s[:-1] + _BASE64URL[_BASE64URL.index(s[-1]) + 1]  # 43 characters: 2 unused bits in the last
    wrong = hs256(fixed_secret("not the secret"))
    carol_r = _at(1000.5)
    old = secs(NOW - 7200 * SECOND)
    rows: list[Row] = [
        # Step 1: parsing.
        ("two-parts", S1 + "not three parts -> MALFORMED", f"{h}.{p}"),
        ("four-parts", S1 + "not three parts -> MALFORMED", f"{good}.{s}"),
        ("five-parts-jwe", S1 + "a JWE (five parts) -> MALFORMED", f"{good}.{s}.{s}"),
        ("empty-signature-part", S1 + "an empty part -> MALFORMED", f"{h}.{p}."),
        ("json-serialization", S1 + "the JWS JSON serialization -> MALFORMED",
         json.dumps({"payload": p, "signature": s})),
        ("standard-base64-alphabet", S1 + "'+' and '/' are not base64url -> MALFORMED", f"{h}.{p}.+/{s[2:]}"),
        ("base64-padding", S1 + "base64 padding '=' -> MALFORMED", f"{good}="),
        ("space-in-token", S1 + "a space inside a part -> MALFORMED", f"{h}.{p[:10]} {p[10:]}.{s}"),
        ("impossible-base64-length", S1 + "a part of 4n+1 characters -> MALFORMED", f"{h}.{p_4n1}.{s}"),
        ("non-canonical-base64url", S1 + "non-zero unused bits at the end -> MALFORMED", f"{h}.{p}.{noncanonical}"),
        ("non-ascii-character", S1 + "a character outside base64url -> MALFORMED", f"{h}.{p}\u00e9.{s}"),
        ("payload-not-json", S1 + "payload is not JSON -> MALFORMED", token.raw('{"user_id":"alice"')),
        ("payload-not-utf8", S1 + "payload is not UTF-8 -> MALFORMED", token.raw(b'{"user_id":"\xff"}')),
        ("header-not-object", S1 + "header is a JSON array -> MALFORMED", token(header=["HS256"])),
        ("payload-array", S1 + "payload is a JSON array -> MALFORMED", token.raw([claims(app)])),
        ("payload-string", S1 + "payload is a JSON string -> MALFORMED", token.raw('"alice"')),
        (
            "duplicate-claim",
            S1 + "a key twice in the payload -> MALFORMED",
            token.raw('{"user_id":"alice","user_id":"mallory"}'),
        ),
        ("nan-literal", S1 + "NaN is not JSON -> MALFORMED", token.raw('{"user_id":"alice","n":NaN}')),
        ("number-overflow", S1 + "a number beyond a double -> MALFORMED",
         token.raw('{"user_id":"a","n":1e400}')),
        ("nested-too-deep", S1 + "JSON nested over 32 levels -> MALFORMED",
         token(deep=json.loads("[" * 32 + "]" * 32))),
        ("nul-in-string", S1 + "an escaped NUL -> MALFORMED",
         token.raw('{"user_id":"alice","x":"a\\u0000"}')),
        ("lone-surrogate", S1 + "an unpaired surrogate -> MALFORMED",
         token.raw('{"user_id":"a","x":"\\ud800"}')),
        ("oversized-token", S1 + "a token over 8192 bytes -> MALFORMED", token(pad="x" * 8200)),
        ("header-without-alg", S1 + "a header without alg -> MALFORMED", token(header={"typ": "JWT"})),
        ("alg-not-a-string", S1 + "alg that is not a string -> MALFORMED", token(header={"alg": 256})),
        ("kid-not-a-string", S1 + "kid that is not a string -> MALFORMED", token(header={"alg": "HS256", "kid": 1})),
        ("crit-header", S1 + "crit (no extension is understood) -> MALFORMED",
         token(header={"alg": "HS256", "crit": ["exp"]})),
        ("b64-header", S1 + "b64 (an unencoded payload) -> MALFORMED", token(header={"alg": "HS256", "b64": False})),
        ("nested-jwt", S1 + "cty JWT (a nested token) -> MALFORMED", token(header={"alg": "HS256", "cty": "JWT"})),
        ("enc-header", S1 + "enc (a JWE header) -> MALFORMED", token(header={"alg": "HS256", "enc": "A128GCM"})),
        ("typ-not-a-string", S1 + "typ that is not a string -> MALFORMED", token(header={"alg": "HS256", "typ": 1})),
        ("utf8-bom", S1 + "payload JSON after a byte-order mark -> MALFORMED",
         token.raw('\ufeff{"user_id":"alice"}')),
        ("json-whitespace", S7 + "whitespace around the payload's JSON is JSON -> VALID",
         token.raw(' {"user_id": "alice"}\n')),
        ("alg-none-unsigned", S1 + "alg none, empty signature part -> MALFORMED",
         token(header={"alg": "none"}, signer=lambda _: b"")),
        # Step 2: alg and kid.
        ("alg-none", S2 + "alg none is never allowed -> INVALID_SIGNATURE", token(header={"alg": "none"})),
        ("alg-lowercase", S2 + "alg is compared exactly: 'hs256' -> INVALID_SIGNATURE", token(header={"alg": "hs256"})),
        ("alg-hs384", S2 + "an HMAC alg the app does not use -> INVALID_SIGNATURE",
         token(header={"alg": "HS384"}, signer=hs256(app.secret, hashlib.sha384))),
        ("alg-of-another-family", S2 + "alg ES256 on an HS256 app -> INVALID_SIGNATURE",
         token(header={"alg": "ES256"})),
        ("unknown-kid", S2 + "a kid of no key of the app -> UNKNOWN_KEY", token(header={"alg": "HS256", "kid": "k0"})),
        ("kid-of-its-secret", S7 + "kid naming the app's API secret -> VALID",
         token(header={"alg": "HS256", "kid": app.secret_kid})),
        # Step 3: the signature.
        ("wrong-secret", S3 + "signed with another secret -> INVALID_SIGNATURE", token(signer=wrong)),
        ("wrong-secret-with-kid", S3 + "the app's kid, another secret -> INVALID_SIGNATURE",
         token(header={"alg": "HS256", "kid": app.secret_kid}, signer=wrong)),
        ("tampered-payload", S3 + "payload changed after signing -> INVALID_SIGNATURE",
         f"{h}.{segment(claims(app, 'mallory'))}.{s}"),
        ("tampered-header", S3 + "header changed after signing -> INVALID_SIGNATURE",
         f"{segment({'alg': 'HS256'})}.{p}.{s}"),
        ("truncated-signature", S3 + "a signature a byte short -> INVALID_SIGNATURE",
         resign(good, token.signer(signing_input(good))[:-1])),
        ("dev-token-checks-enabled", DEV + "developer token, checks enabled -> INVALID_SIGNATURE",
         resign(good, "devtoken")),
        ("token-of-another-app", APPS + "minted by another app (its kid) -> UNKNOWN_KEY",
         await mint(other, "alice", NOW - 60 * SECOND)),
        ("another-apps-secret", APPS + "another app's secret, no kid -> INVALID_SIGNATURE",
         token(signer=hs256(other.secret))),
        # Step 4: times.
        ("expired-long-ago", S4 + "exp an hour past -> EXPIRED", token(iat=old, exp=secs(NOW - 3600 * SECOND))),
        ("expired-at-leeway", S4 + "exp exactly the leeway past -> EXPIRED", token(iat=old, exp=secs(NOW - LEEWAY))),
        ("expired-fractional", S4 + "exp 5.5 s past (a fraction) -> EXPIRED",
         token(iat=old, exp=secs(NOW - 5_500_000))),
        ("exp-inside-leeway", S4 + "exp 4.999999 s past, inside the leeway -> VALID",
         token(iat=old, exp=secs(NOW - LEEWAY + 1))),
        ("exp-inside-leeway-fractional", S4 + "exp 4.5 s past -> VALID", token(iat=old, exp=secs(NOW - 4_500_000))),
        ("minted-expired", S4 + "minted, past its ttl; still says whose -> EXPIRED",
         await mint(app, "alice", NOW - 100 * SECOND, ttl=_duration(60))),
        ("nbf-ahead", S4 + "nbf 6 s ahead -> NOT_YET_VALID", token(nbf=secs(NOW + 6 * SECOND))),
        ("nbf-inside-leeway", S4 + "nbf exactly the leeway ahead -> VALID", token(nbf=secs(NOW + LEEWAY))),
        ("iat-ahead", S4 + "iat 5.000001 s ahead -> NOT_YET_VALID", token(iat=secs(NOW + LEEWAY + 1))),
        ("iat-inside-leeway", S4 + "iat 4 s ahead -> VALID", token(iat=secs(NOW + 4 * SECOND))),
        ("nbf-and-iat-ahead", S4 + "nbf and iat a minute ahead -> NOT_YET_VALID",
         token(nbf=secs(NOW + 60 * SECOND), iat=secs(NOW + 60 * SECOND))),
        ("expired-and-not-yet-valid", S4 + "exp past and nbf ahead: exp first -> EXPIRED",
         token(exp=secs(NOW - 60 * SECOND), nbf=secs(NOW + 60 * SECOND))),
        ("exp-not-a-number", S4 + "exp that is not a NumericDate -> MALFORMED", token(exp="tomorrow")),
        ("iat-boolean", S4 + "iat true is not a NumericDate -> MALFORMED", token(iat=True)),
        ("nbf-negative", S4 + "a negative nbf -> MALFORMED", token(nbf=-1)),
        ("exp-after-year-9999", S4 + "exp after 9999-12-31 -> MALFORMED", token(exp=253402300800)),
        # Step 4: audience.
        ("aud-other", S4 + "aud that is not this app -> WRONG_AUDIENCE", token(aud="someone-else")),
        ("aud-other-app", S4 + "aud of another app -> WRONG_AUDIENCE", token(aud=other.api_key)),
        ("aud-list-without-app", S4 + "aud list without this app -> WRONG_AUDIENCE", token(aud=["x", other.api_key])),
        ("aud-list-with-app", S4 + "aud list that holds this app -> VALID", token(aud=[other.api_key, app.api_key])),
        ("aud-empty-list", S4 + "an empty aud list -> WRONG_AUDIENCE", token(aud=[])),
        ("aud-number", S4 + "aud neither string nor list -> WRONG_AUDIENCE", token(aud=42)),
        ("aud-absent", S4 + "no aud (the app's own) -> VALID", token(aud=None)),
        ("expired-wrong-audience", S4 + "exp past and aud wrong: exp first -> EXPIRED",
         token(exp=secs(NOW - 60 * SECOND), aud="someone-else")),
        ("wrong-audience-no-user-id", S4 + "aud wrong and no user_id: aud first -> WRONG_AUDIENCE",
         token(user_id=None, aud="someone-else")),
        # Step 4: the user.
        ("no-user-id", S4 + "no user_id -> MALFORMED", token(user_id=None)),
        ("user-id-empty", USERS + "an empty user_id -> MALFORMED", token("")),
        ("user-id-with-space", USERS + "user_id with a space -> MALFORMED", token("alice smith")),
        ("user-id-non-ascii", USERS + "user_id with a non-ASCII letter -> MALFORMED", token("al\u00efce")),
        ("user-id-too-long", USERS + "user_id of 256 characters -> MALFORMED", token("u" * 256)),
        ("user-id-longest", USERS + "user_id of 255 characters -> VALID", token("u" * 255)),
        ("user-id-every-class", USERS + "letters, digits, '@', '_', '-' -> VALID", token("A-z_0@9")),
        ("user-id-number", USERS + "user_id that is a number -> MALFORMED", token(user_id=42)),
        ("server-token", USERS + "a server token (server: true, no user_id) -> MALFORMED",
         token(user_id=None, server=True)),
        ("server-claim-with-user-id", USERS + "a user token with a server claim -> MALFORMED", token(server=True)),
        # Step 6: user revocations (carol at T0 + 1000.5 s, dave at T0 + 2000 s, erin's cleared).
        ("user-revoked-iat-just-before", S6 + "iat 1 us before the user's R -> REVOKED",
         token("carol", iat=secs(carol_r - 1))),
        ("user-revoked-iat-at-r", S6 + "iat equal to the user's R -> VALID", token("carol", iat=secs(carol_r))),
        ("user-revoked-iat-just-after", S6 + "iat 1 ms after the user's R -> VALID",
         token("carol", iat=secs(carol_r + 1000))),
        ("user-revoked-no-iat", S6 + "no iat: user revocation does not apply -> VALID", token("carol", iat=None)),
        ("user-revoked-minted-before", S6 + "minted before the user's R -> REVOKED",
         await mint(app, "carol", carol_r - 1000 * SECOND)),
        ("user-revoked-minted-after", S6 + "minted after the user's R -> VALID", await mint(app, "carol", carol_r + 1)),
        ("revocation-never-moves-back", REVOCATION + "R 2000 s, then 1900 s: R stays; iat 1950 s -> REVOKED",
         token("dave", iat=secs(_at(1950)))),
        ("cleared-user-revocation", REVOCATION + "a cleared user revocation -> VALID",
         token("erin", iat=secs(_at(2500)))),
        # Step 7: valid tokens, and what the answer says of them.
        ("minted", S7 + "a token minted by the server -> VALID", await mint(app, "alice", NOW - 60 * SECOND)),
        ("minted-with-claims", S7 + "extra claims come back in the answer -> VALID",
         await mint(app, "alice", NOW - 60 * SECOND, ttl=_duration(3600),
                    claims=_struct({"role": "moderator", "rooms": ["general", "random"], "level": 3}))),
        ("hand-crafted", S7 + "signed with the app's secret, no kid -> VALID", good),
        ("extra-claims", S7 + "nested and fractional claims come back -> VALID",
         token(role="admin", ratio=0.25, flags={"beta": True, "tags": ["a", "b"]}, nothing=[])),
        ("fractional-iat", S7 + "a fractional iat, to the microsecond -> VALID", token(iat=secs(NOW - 59_876_543))),
        ("sub-microsecond-iat", S7 + "iat finer than a microsecond is rounded -> VALID",
         token.raw(f'{{"user_id":"alice","iat":{NOW // SECOND - 60}.1234567}}')),
        ("null-claim", S7 + "a null claim comes back as null -> VALID",
         token.raw('{"user_id":"alice","note":null}')),
        ("no-exp", S7 + "no exp: the token does not expire -> VALID", token(exp=None)),
        ("no-iat", S7 + "no iat, and no revocation needs one -> VALID", token(iat=None)),
    ]  # fmt: skip
    return _cases(app, rows)


async def _revocations(apps: Mapping[str, VectorApp], mint: Mint) -> list[Case]:
    # require-iat: the setting on, bob revoked at T0 + 1000 s.
    app = apps["require-iat"]
    token = Crafter(app, hs256(app.secret), {"alg": "HS256"})
    cases = _cases(app, [
        ("no-iat-revoked-user", S6 + "require iat: no iat, a revoked user -> REVOKED", token("bob", iat=None)),
        ("no-iat-any-user", S6 + "require iat: no iat at all -> REVOKED", token("alice", iat=None)),
        ("iat-after-revocation", S6 + "require iat: iat after the user's R -> VALID", token("bob")),
        ("iat-before-revocation", S6 + "require iat: iat before the user's R -> REVOKED",
         token("bob", iat=secs(_at(999)))),
        ("minted", S7 + "require iat: minted tokens carry iat -> VALID", await mint(app, "alice", NOW - 60 * SECOND)),
    ])  # fmt: skip

    # app-revoked: R = T0 + 5000.25 s, then an earlier revocation that leaves it there.
    app = apps["app-revoked"]
    token, r = Crafter(app, hs256(app.secret), {"alg": "HS256"}), _at(5000.25)
    cases += _cases(app, [
        ("iat-just-before", S5 + "iat 1 us before the app's R -> REVOKED", token(iat=secs(r - 1))),
        ("iat-at-r", S5 + "iat equal to the app's R -> VALID", token(iat=secs(r))),
        ("iat-just-after", S5 + "iat 1 ms after the app's R -> VALID", token(iat=secs(r + 1000))),
        ("no-iat", S5 + "app revoked, no iat -> REVOKED", token(iat=None)),
        ("iat-before-earlier-revocation", REVOCATION + "R 5000.25 s, then 4000 s: R stays; iat 4500 s -> REVOKED",
         token(iat=secs(_at(4500)))),
        ("minted-before", S5 + "minted before the app's R -> REVOKED", await mint(app, "alice", r - 60 * SECOND)),
        ("minted-after", S5 + "minted after the app's R -> VALID", await mint(app, "alice", r + 60 * SECOND)),
        ("expired-and-revoked", S4 + "expired and revoked: exp first -> EXPIRED",
         token(iat=secs(r - 7200 * SECOND), exp=secs(r - 3600 * SECOND))),
    ])  # fmt: skip

    # app-cleared: revoked at T0 + 5000 s, then cleared.
    app = apps["app-cleared"]
    token = Crafter(app, hs256(app.secret), {"alg": "HS256"})
    cases += _cases(app, [
        ("iat-before-cleared", REVOCATION + "a cleared app revocation -> VALID", token(iat=secs(_at(4000)))),
        ("no-iat-after-clear", REVOCATION + "cleared: a token without iat -> VALID", token(iat=None)),
    ])  # fmt: skip
    return cases


def _token_revocations(app: VectorApp) -> list[Case]:
    token = Crafter(app, hs256(app.secret), {"alg": "HS256"})
    before_user_r, before_app_r = secs(_at(1200)), secs(_at(400))
    return _cases(app, [
        ("revoked-jti", REVOCATION + "a token whose jti was revoked -> REVOKED", token(jti="phone")),
        ("revoked-jti-another-user", REVOCATION + "the jti decides, whatever the user -> REVOKED",
         token("carol", jti="phone")),
        ("revoked-jti-no-iat", S5 + "a revoked jti, no iat: the app's revocation decides first -> REVOKED",
         token(jti="phone", iat=None)),
        ("other-jti", REVOCATION + "another jti of the same user -> VALID", token(jti="laptop")),
        ("cleared-jti", REVOCATION + "a jti revoked, then cleared -> VALID", token(jti="tablet")),
        ("no-jti", REVOCATION + "no jti at all -> VALID", token()),
        ("jti-not-a-string", REVOCATION + "a jti that is no string names no token revocation -> VALID",
         token(jti=1000)),
        ("jti-case", REVOCATION + "jtis are case-sensitive -> VALID", token(jti="PHONE")),
        ("user-before-token", S6 + "the user's revocation decides before the token's -> REVOKED",
         token("bob", jti="phone", iat=before_user_r)),
        ("app-before-user", S5 + "the app's revocation decides before the user's -> REVOKED",
         token("bob", jti="phone", iat=before_app_r)),
        ("user-only", S6 + "iat before the user's R, another jti -> REVOKED", token("bob", jti="x", iat=before_user_r)),
        ("expired-and-jti-revoked", S4 + "expired and its jti revoked: exp first -> EXPIRED",
         token(jti="phone", iat=secs(NOW - 7200 * SECOND), exp=secs(NOW - 3600 * SECOND))),
        ("not-yet-valid-and-jti-revoked", S4 + "nbf ahead and its jti revoked: the times first -> NOT_YET_VALID",
         token(jti="phone", nbf=secs(NOW + 600 * SECOND))),
        ("not-yet-valid-iat-and-nbf", S4 + "iat and nbf both ahead: valid from the later -> NOT_YET_VALID",
         token(iat=secs(NOW + 300 * SECOND), nbf=secs(NOW + 600 * SECOND))),
    ])  # fmt: skip


def _dev(app: VectorApp) -> list[Case]:
    token = Crafter(app, hs256(app.secret), {"alg": "HS256"})
    return _cases(app, [
        ("dev-token", DEV + "checks disabled: a developer token -> VALID", token.dev(claims(app))),
        ("dev-token-minimal", DEV + "a developer token of user_id only -> VALID", token.dev({"user_id": "alice"})),
        ("dev-token-expired", DEV + "expiry applies to developer tokens -> EXPIRED",
         token.dev(claims(app, iat=secs(NOW - 7200 * SECOND), exp=secs(NOW - 3600 * SECOND)))),
        ("dev-token-revoked-user", DEV + "revocation applies to developer tokens -> REVOKED",
         token.dev(claims(app, "mallory", iat=secs(_at(500))))),
        ("dev-token-no-user-id", DEV + "a developer token without user_id -> MALFORMED", token.dev({"iat": secs(NOW)})),
        ("dev-token-wrong-audience", DEV + "another app's developer token -> WRONG_AUDIENCE",
         token.dev(claims(app, aud="someone-else"))),
        ("dev-token-bad-json", DEV + "a developer token must parse -> MALFORMED",
         f"{segment(token.header)}.{segment('{')}.devtoken"),
        ("signed-token", DEV + "checks disabled: a signed token, not dev_token -> VALID", token()),
        ("wrong-secret", DEV + "checks disabled: a wrong signature -> INVALID_SIGNATURE",
         token(signer=hs256(fixed_secret("not the secret")))),
    ])  # fmt: skip


async def _rotated(app: VectorApp, mint: Mint) -> list[Case]:
    # The first secret rotated out at T0 + 1000 s with an overlap to T0 + 4600 s; the rotated-in one current.
    old = Crafter(app, hs256(app.secret), {"alg": "HS256", "kid": app.secret_kid})
    new = Crafter(app, hs256(ROTATED_SECRET), {"alg": "HS256", "kid": ROTATED_KID})
    times: dict[str, Any] = {"iat": secs(_at(900)), "exp": secs(_at(20_000))}
    unnamed = {"alg": "HS256"}
    during, after, end = _at(2000), _at(5000), ROTATION_ENDS
    minted_old = app.minted_first["alice"]
    return _cases(app, [
        ("old-secret-in-overlap", APPS + "the rotated-out secret in its overlap -> VALID", old(**times), during),
        ("old-secret-last-microsecond", APPS + "1 us before the overlap ends -> VALID", old(**times), end - 1),
        ("old-secret-overlap-over", APPS + "once the overlap is over (its kid) -> UNKNOWN_KEY", old(**times), end),
        ("old-secret-no-kid-in-overlap", APPS + "the old secret, no kid, in the overlap -> VALID",
         old(header=unnamed, **times), during),
        ("old-secret-no-kid-overlap-over", S3 + "the old secret, no kid, after the overlap -> INVALID_SIGNATURE",
         old(header=unnamed, **times), end + SECOND),
        ("minted-before-rotation", APPS + "minted before the rotation, in the overlap -> VALID", minted_old, _at(3000)),
        ("minted-before-rotation-later", APPS + "minted before the rotation, after the overlap -> UNKNOWN_KEY",
         minted_old, after),
        ("new-secret", S7 + "the new secret, its kid -> VALID", new(**times), after),
        ("new-secret-no-kid", S7 + "the new secret, no kid -> VALID", new(header=unnamed, **times), during),
        ("new-secret-old-kid", S3 + "the new secret under the old kid -> INVALID_SIGNATURE",
         new(header=old.header, **times), during),
        ("minted-after-rotation", S7 + "minted after the rotation -> VALID",
         await mint(app, "alice", _at(1500), secret=ROTATED_SECRET), after),
    ])  # fmt: skip


async def _max_lifetime(app: VectorApp, mint: Mint) -> list[Case]:
    # Tokens may live at most 3600 s.
    token, iat = Crafter(app, hs256(app.secret), {"alg": "HS256"}), NOW - 60 * SECOND
    return _cases(app, [
        ("lifetime-at-max", S4 + "exp - iat = the max lifetime -> VALID",
         token(iat=secs(iat), exp=secs(iat + 3600 * SECOND))),
        ("lifetime-beyond-max", S4 + "exp - iat 1 us over the max lifetime -> MALFORMED",
         token(iat=secs(iat), exp=secs(iat + 3600 * SECOND + 1))),
        ("no-exp", S4 + "no exp, with a max lifetime -> MALFORMED", token(exp=None)),
        ("no-iat", S4 + "exp but no iat: nothing to measure -> VALID", token(iat=None)),
        ("expired-beyond-max", S4 + "expired and too long-lived: exp first -> EXPIRED",
         token(iat=secs(NOW - 9000 * SECOND), exp=secs(NOW - 60 * SECOND))),
        ("minted", S7 + "minted: the max lifetime is its exp -> VALID", await mint(app, "alice", NOW - 60 * SECOND)),
    ])  # fmt: skip


async def _eddsa(app: VectorApp, mint: Mint) -> list[Case]:
    # Key 1 retired; keys 2 and 3 live, 3 the newest.
    pems = {n: fixed_pem("EdDSA", f"eddsa {n}") for n in (1, 2, 3)}
    kids = {n: fixed_kid(f"eddsa {n}") for n in (1, 2, 3)}
    key = {n: Crafter(app, eddsa(pems[n]), {"alg": "EdDSA", "kid": kids[n]}) for n in (1, 2, 3)}
    unnamed = {"alg": "EdDSA"}
    public = private_key(pems[3]).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    good = key[3]()
    h, _, s = good.split(".")
    return _cases(app, [
        ("newest-key", S7 + "signed with the newest key pair -> VALID", good),
        ("older-key", APPS + "an older key pair still verifies -> VALID", key[2]()),
        ("retired-key", S2 + "the kid of a retired key pair -> UNKNOWN_KEY", key[1]()),
        ("retired-key-no-kid", S3 + "a retired key's signature, no kid -> INVALID_SIGNATURE", key[1](header=unnamed)),
        ("minted-with-retired-key", S2 + "minted before its key was retired -> UNKNOWN_KEY", app.minted_first["alice"]),
        ("no-kid", S7 + "no kid: any live key may have signed -> VALID", key[2](header=unnamed)),
        ("kid-of-another-key", S3 + "key 2's signature under key 3's kid -> INVALID_SIGNATURE",
         key[2](header=key[3].header)),
        ("unknown-kid", S2 + "a kid of no key -> UNKNOWN_KEY", key[3](header={"alg": "EdDSA", "kid": "nope"})),
        ("kid-of-api-secret", S2 + "the API secret's kid, EdDSA -> UNKNOWN_KEY",
         key[3](header={"alg": "EdDSA", "kid": app.secret_kid})),
        ("alg-ed25519", S2 + "alg 'Ed25519' is not 'EdDSA' -> INVALID_SIGNATURE",
         key[3](header={"alg": "Ed25519", "kid": kids[3]})),
        ("alg-hs256-api-secret", S2 + "HS256 with the API secret -> INVALID_SIGNATURE",
         key[3](header={"alg": "HS256"}, signer=hs256(app.secret))),
        ("alg-confusion", S2 + "HS256 keyed with the public key -> INVALID_SIGNATURE",
         key[3](header={"alg": "HS256", "kid": kids[3]}, signer=hs256(public))),
        ("tampered-payload", S3 + "payload changed after signing -> INVALID_SIGNATURE",
         f"{h}.{segment(claims(app, 'mallory'))}.{s}"),
        ("minted", S7 + "a token minted by the server -> VALID", await mint(app, "alice", NOW - 60 * SECOND)),
        ("expired", S4 + "an EdDSA token past its exp -> EXPIRED",
         key[3](iat=secs(NOW - 7200 * SECOND), exp=secs(NOW - 60 * SECOND))),
    ])  # fmt: skip


async def _es256(app: VectorApp, mint: Mint) -> list[Case]:
    # The first key pair is Wycheproof's SpecialCaseEs256 key (its kid); a second one rotated in.
    assert app.key_pair is not None
    kid, pem = app.key_pair
    token = Crafter(app, es256(pem), {"alg": "ES256", "kid": kid})
    second = Crafter(app, es256(fixed_pem("ES256", "es256 2")), {"alg": "ES256", "kid": fixed_kid("es256 2")})
    good = token()
    r, s = es256_rs(pem, signing_input(good))
    der = private_key(pem).sign(signing_input(good), ec.ECDSA(hashes.SHA256()))
    revoked_jti = token(jti="es-phone")
    rj_sj = base64.urlsafe_b64decode(revoked_jti.rsplit(".", 1)[1] + "==")
    rj, sj = int.from_bytes(rj_sj[:32], "big"), int.from_bytes(rj_sj[32:], "big")
    rows: list[Row] = [
        ("valid", S7 + "an ES256 token, r || s -> VALID", good),
        ("second-key", S7 + "signed with the second key pair -> VALID", second()),
        ("minted", S7 + "a token minted by the server -> VALID", await mint(app, "alice", NOW - 60 * SECOND)),
        ("der-signature", S3 + "a DER-encoded signature, not r || s -> INVALID_SIGNATURE", resign(good, der)),
        ("high-s", S3 + "s replaced by n - s (JWS does not ask for low s) -> VALID",
         resign(good, r.to_bytes(32, "big") + (P256_ORDER - s).to_bytes(32, "big"))),
        ("revoked-jti", REVOCATION + "its jti revoked (RevokeToken) -> REVOKED", revoked_jti),
        ("revoked-jti-high-s", REVOCATION + "the same token with s replaced by n - s: keyed on jti -> REVOKED",
         resign(revoked_jti, rj.to_bytes(32, "big") + (P256_ORDER - sj).to_bytes(32, "big"))),
        ("alg-es384", S2 + "alg ES384 on an ES256 app -> INVALID_SIGNATURE",
         token(header={"alg": "ES384", "kid": kid})),
        ("alg-eddsa", S2 + "alg EdDSA on an ES256 app -> INVALID_SIGNATURE",
         token(header={"alg": "EdDSA", "kid": kid})),
    ]  # fmt: skip
    group = _wycheproof_es256_group()
    for test in group["tests"]:
        if test["tcId"] in WYCHEPROOF_ES256_CASES:
            rule = S3 + f"Wycheproof tcId {test['tcId']} ({test['comment']}) -> INVALID_SIGNATURE"
            rows.append((f"wycheproof-{test['tcId']}-{test['comment']}", rule, resign(good, test["jws"].split(".")[2])))
    valid = next(test for test in group["tests"] if test["result"] == "valid")
    rows.append(
        ("wycheproof-378-payload-foo", S1 + "Wycheproof tcId 378: payload 'foo' is no JSON -> MALFORMED", valid["jws"])
    )
    return _cases(app, rows)


def _duration(seconds: int) -> Any:
    from google.protobuf import duration_pb2

    return duration_pb2.Duration(seconds=seconds)


def _struct(values: Mapping[str, Any]) -> Any:
    from google.protobuf import struct_pb2

    result = struct_pb2.Struct()
    result.update(values)
    return result
