"""Tests of authsvc.jws: the strict compact JWS parser that runs before any signature check."""

import base64
import hashlib
import hmac
import json
import random
import string
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from authsvc.jws import (
    MAX_JSON_DEPTH,
    MAX_NUMERIC_DATE,
    MAX_TOKEN_BYTES,
    CompactJws,
    MalformedToken,
    numeric_date,
    parse_compact,
)

HMAC_KEY = "an-app-api-secret-of-at-least-32-bytes"
SIG = "c2lnbmF0dXJl"  # base64url of b"signature", canonical
PAYLOAD = {"user_id": "alice", "iat": 1700000000}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def token(header: Any = None, payload: Any = None, sig: str = SIG) -> str:
    """A token whose header and payload are the JSON of the given objects (defaults: HS256, PAYLOAD)."""
    return ".".join(
        (
            segment({"alg": "HS256"} if header is None else header),
            segment(PAYLOAD if payload is None else payload),
            sig,
        )
    )


def raw_token(header: str | bytes = '{"alg":"HS256"}', payload: str | bytes = '{"user_id":"alice"}') -> str:
    """A token whose header and payload are exactly the given JSON text (or bytes)."""
    parts = [p.encode() if isinstance(p, str) else p for p in (header, payload)]
    return f"{b64(parts[0])}.{b64(parts[1])}.{SIG}"


def reject(tok: Any) -> MalformedToken:
    with pytest.raises(MalformedToken) as info:
        parse_compact(tok)
    reason = info.value.reason
    assert reason and str(info.value) == reason
    if isinstance(tok, str):
        for part in tok.split("."):
            assert len(part) < 8 or part not in reason, "a reason must not echo the token"
    return info.value


def sized_token(size: int) -> str:
    """A well-formed token of exactly `size` bytes, grown with a filler claim and the signature length."""
    filler = 0
    while True:
        head = f"{segment({'alg': 'HS256'})}.{segment({'user_id': 'alice', 'x': 'y' * filler})}."
        sig_len = size - len(head)
        if sig_len % 4 != 1:
            break
        filler += 1
    return head + b64(b"\x00" * (sig_len * 3 // 4))


# --- well-formed tokens -----------------------------------------------------------------------------------


def test_pyjwt_hs256_token_parses_and_its_signing_input_verifies() -> None:
    tok = jwt.encode({"user_id": "alice", "iat": 1700000000, "exp": 1700003600}, HMAC_KEY, algorithm="HS256")
    jws = parse_compact(tok)
    assert isinstance(jws, CompactJws)
    assert jws.header == {"alg": "HS256", "typ": "JWT"}
    assert jws.payload == {"user_id": "alice", "iat": 1700000000, "exp": 1700003600}
    assert jws.signing_input == tok.rsplit(".", 1)[0].encode("ascii")
    assert jws.signature_segment == tok.rsplit(".", 1)[1]
    assert jws.signature == hmac.new(HMAC_KEY.encode(), jws.signing_input, hashlib.sha256).digest()


def test_pyjwt_es256_and_eddsa_tokens_with_kid_parse() -> None:
    for key, alg in (
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ):
        tok = jwt.encode(
            {"user_id": "bob", "extra": {"a": [1, 2.5, None, True]}},
            key,
            algorithm=alg,
            headers={"kid": "k1"},
        )
        jws = parse_compact(tok)
        assert jws.header["alg"] == alg and jws.header["kid"] == "k1"
        assert jws.payload == {"user_id": "bob", "extra": {"a": [1, 2.5, None, True]}}
        assert len(jws.signature) == 64


def test_hand_built_token_parses() -> None:
    jws = parse_compact(token({"alg": "HS256", "typ": "JWT"}, {"user_id": "alice", "iat": 1700000000.25}))
    assert jws.header == {"alg": "HS256", "typ": "JWT"}
    assert jws.payload == {"user_id": "alice", "iat": 1700000000.25}
    assert jws.signature == b"signature"
    assert jws.signature_segment == SIG


def test_developer_token_keeps_raw_signature_segment_and_empty_signature() -> None:
    jws = parse_compact(token(sig="devtoken"))
    assert jws.signature_segment == "devtoken"
    assert jws.signature == b""
    assert jws.payload == PAYLOAD


def test_key_and_certificate_url_headers_are_accepted_and_left_alone() -> None:
    header = {
        "alg": "ES256",
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "jwk": {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        "x5c": ["MIIB"],
        "cty": "text/plain",
    }
    assert parse_compact(token(header)).header == header


def test_json_whitespace_unicode_and_surrogate_pairs_are_accepted() -> None:
    payload = ' \n{ "user_id" : "alice", "name": "J\\u00f6rg \\ud83d\\ude00 \u00e9t\u00e9", "n": [ 1 , -0.5e3 ] }\t'
    jws = parse_compact(raw_token(payload=payload.encode("utf-8")))
    assert jws.payload == {"user_id": "alice", "name": "J\u00f6rg \U0001f600 \u00e9t\u00e9", "n": [1, -500.0]}


def test_nesting_at_the_depth_limit_is_accepted() -> None:
    payload = '{"a":' * (MAX_JSON_DEPTH - 1) + "{}" + "}" * (MAX_JSON_DEPTH - 1)
    assert parse_compact(raw_token(payload=payload)).payload["a"]["a"] is not None


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '[[[{{{"\\\\"\\"' * 40
    jws = parse_compact(token(payload={"user_id": "alice", "note": text}))
    assert jws.payload["note"] == text


def test_token_of_exactly_max_bytes_is_accepted() -> None:
    tok = sized_token(MAX_TOKEN_BYTES)
    assert len(tok) == MAX_TOKEN_BYTES
    assert parse_compact(tok).payload["user_id"] == "alice"


def test_returned_header_is_a_private_copy() -> None:
    tok = token({"alg": "HS256", "kid": "k1"})
    parse_compact(tok).header["alg"] = "none"
    assert parse_compact(tok).header == {"alg": "HS256", "kid": "k1"}
    nested = token({"alg": "ES256", "jwk": {"kty": "EC"}})
    parse_compact(nested).header["jwk"]["kty"] = "oct"
    assert parse_compact(nested).header["jwk"] == {"kty": "EC"}


def test_malformed_token_is_a_value_error_with_a_reason() -> None:
    err = MalformedToken("too short")
    assert isinstance(err, ValueError)
    assert err.reason == "too short" and str(err) == "too short"


# --- size and shape -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tok", "reason"),
    [
        pytest.param(sized_token(MAX_TOKEN_BYTES + 1), "too large", id="one-byte-over"),
        pytest.param("a" * 10_000_000, "too large", id="ten-megabytes"),
        # Fewer characters than the limit but more UTF-8 bytes.
        pytest.param("\u00e9" * (MAX_TOKEN_BYTES // 2 + 1), "too large", id="multibyte-over-in-bytes"),
        pytest.param("\ud800" * (MAX_TOKEN_BYTES // 2), "too large", id="lone-surrogates-over-in-bytes"),
    ],
)
def test_oversized_token_is_rejected_before_decoding(tok: str, reason: str) -> None:
    assert reason in reject(tok).reason


class _Tripwire(str):
    """A string that fails the test if the parser looks at its characters."""

    def isascii(self) -> bool:
        raise AssertionError("characters inspected")

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        raise AssertionError("characters inspected")


def test_oversized_token_is_refused_on_its_length_alone() -> None:
    assert "too large" in reject(_Tripwire("\u00e9" * (MAX_TOKEN_BYTES + 1))).reason


@pytest.mark.parametrize(
    ("tok", "reason"),
    [
        pytest.param("", "got 1", id="empty"),
        pytest.param(segment({"alg": "HS256"}), "got 1", id="one-segment"),
        pytest.param(f"{segment({'alg': 'HS256'})}.{segment(PAYLOAD)}", "got 2", id="two-segments"),
        pytest.param(token() + ".c2ln", "got 4", id="four-segments"),
        pytest.param(token() + ".", "got 4", id="trailing-dot"),
        pytest.param(
            f"{segment({'alg': 'RSA-OAEP', 'enc': 'A256GCM'})}.a2V5.aXZpdg.Y2lwaGVy.dGFn",
            "JWE",
            id="jwe-five",
        ),
        pytest.param(
            json.dumps({"payload": segment(PAYLOAD), "protected": segment({"alg": "HS256"}), "signature": SIG}),
            "JSON serialization",
            id="flattened-json-serialization",
        ),
        pytest.param(
            json.dumps({"payload": segment(PAYLOAD), "signatures": [{"protected": "e30", "signature": SIG}]}),
            "JSON serialization",
            id="general-json-serialization",
        ),
        pytest.param(f".{segment(PAYLOAD)}.{SIG}", "header segment is empty", id="empty-header"),
        pytest.param(f"{segment({'alg': 'HS256'})}..{SIG}", "payload segment is empty", id="empty-payload"),
        pytest.param(f"{segment({'alg': 'none'})}.{segment(PAYLOAD)}.", "signature segment is empty", id="unsecured"),
        pytest.param("..", "header segment is empty", id="only-dots"),
    ],
)
def test_wrong_number_or_empty_segments_are_rejected(tok: str, reason: str) -> None:
    assert reason in reject(tok).reason


def test_non_string_token_is_rejected() -> None:
    not_a_string: Any = token().encode()
    assert "not a string" in reject(not_a_string).reason


# --- base64url ----------------------------------------------------------------------------------------------

_H = segment({"alg": "HS256"})
_P = segment(PAYLOAD)


@pytest.mark.parametrize(
    ("tok", "reason"),
    [
        pytest.param(f"{_H}=.{_P}.{SIG}", "padding", id="padded-header"),
        pytest.param(f"{_H}.{_P}.{b64(b'sig')}==", "padding", id="padded-signature"),
        pytest.param(f"{_H}.{_P}.{b64(b'si')}=", "padding", id="padded-signature-one"),
        pytest.param(f"{_H}.{_P} .{SIG}", "outside base64url", id="space"),
        pytest.param(f"{_H}.{_P[:8]}\n{_P[8:]}.{SIG}", "outside base64url", id="newline-inside"),
        pytest.param(f"{_H}.{_P}.{SIG}\n", "outside base64url", id="trailing-newline"),
        pytest.param(f"\t{_H}.{_P}.{SIG}", "outside base64url", id="leading-tab"),
        pytest.param(f"{_H}.{_P}.{SIG}\x00", "outside base64url", id="trailing-nul"),
        pytest.param(f"{_H}.{_P}.ab+/cd", "outside base64url", id="standard-alphabet"),
        pytest.param(f"{_H}.{_P}.ab%2Bcd", "outside base64url", id="percent-encoded"),
        pytest.param(f"{_H}.{_P}.\uff21\uff22\uff23\uff24", "outside base64url", id="fullwidth-letters"),
        pytest.param(f"{_H}.{_P}.\u0663\u0664\u0665\u0666", "outside base64url", id="arabic-indic-digits"),
        pytest.param(f"{_H}.{_P}.\u212a\u212a\u212a\u212a", "outside base64url", id="kelvin-sign"),
        pytest.param(f"{_H}.{_P}.abcde", "impossible base64url length", id="length-1-mod-4"),
        pytest.param(f"{_H}x.{_P}.{SIG}", "impossible base64url length", id="header-length-1-mod-4"),
        # "e30" is "{}"; "e31" decodes to the same bytes with a non-zero unused bit.
        pytest.param(f"e31.{_P}.{SIG}", "not canonical", id="header-trailing-bits"),
        # "c2ln" is "sig"; "c2lnbg" is "sign" and "c2lnbh" the same bytes with non-zero unused bits.
        pytest.param(f"{_H}.{_P}.c2lnbh", "not canonical", id="signature-trailing-bits-4-unused"),
        pytest.param(f"{_H}.{_P}.c2lnbmF0dXJlB", "impossible", id="signature-extra-char"),
        pytest.param(f"{_H}.{_P}.c2lnbmF0dXJlBB", "not canonical", id="signature-trailing-bits-2"),
        pytest.param(f"{_H}.{_P}.c2lnbmF0dXJlAAB", "not canonical", id="signature-trailing-bits-3"),
    ],
)
def test_non_strict_base64url_is_rejected(tok: str, reason: str) -> None:
    assert reason in reject(tok).reason


@pytest.mark.parametrize("length", [2, 3, 6, 7])
def test_canonical_check_agrees_with_reencoding_for_every_last_character(length: int) -> None:
    alphabet = string.ascii_letters + string.digits + "-_"
    for last in alphabet:
        sig = "A" * (length - 1) + last
        canonical = b64(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))) == sig
        tok = token(sig=sig)
        if canonical:
            assert parse_compact(tok).signature_segment == sig
        else:
            assert "not canonical" in reject(tok).reason


# --- header and payload JSON --------------------------------------------------------------------------------

_DEEP_ARRAYS = '{"a":' + "[" * 2900 + "]" * 2900 + "}"
_DEEP_OBJECTS = '{"":' * 1200 + "1" + "}" * 1200


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(b'{"user_id":"\xff"}', "not UTF-8", id="invalid-utf8"),
        pytest.param(b'{"user_id":"\xc0\xaf"}', "not UTF-8", id="overlong-utf8"),
        pytest.param(b'{"user_id":"\xed\xa0\x80"}', "not UTF-8", id="utf8-encoded-surrogate"),
        pytest.param(b'{"user_id":"\xe2\x82"}', "not UTF-8", id="truncated-utf8"),
        pytest.param(b'{"user_id":"a\x00b"}', "NUL", id="raw-nul-in-string"),
        pytest.param(b'{"user_id":"alice"}\x00', "NUL", id="raw-nul-after-object"),
        pytest.param('{"user_id":"a\\u0000b"}', "NUL", id="escaped-nul-in-value"),
        pytest.param('{"user_id":"alice","x\\u0000":1}', "NUL", id="escaped-nul-in-key"),
        pytest.param('{"user_id":"alice","x":["\\u0000"]}', "NUL", id="escaped-nul-in-array"),
        pytest.param('{"user_id":"\\ud800"}', "surrogate", id="lone-high-surrogate"),
        pytest.param('{"user_id":"\\ude00\\ud83d"}', "surrogate", id="reversed-surrogate-pair"),
        pytest.param("[]", "not a JSON object", id="array"),
        pytest.param('["user_id","alice"]', "not a JSON object", id="array-of-strings"),
        pytest.param('"alice"', "not a JSON object", id="string"),
        pytest.param("1700000000", "not a JSON object", id="number"),
        pytest.param("null", "not a JSON object", id="null"),
        pytest.param("true", "not a JSON object", id="true"),
        pytest.param(" ", "not valid JSON", id="whitespace-only"),
        pytest.param('{"user_id":"alice","user_id":"admin"}', "duplicate key", id="duplicate-key"),
        pytest.param('{"user_id":"alice","user_\\u0069d":"admin"}', "duplicate key", id="duplicate-key-escaped"),
        pytest.param('{"user_id":"alice","x":{"a":1,"a":2}}', "duplicate key", id="duplicate-key-nested"),
        pytest.param('{"user_id":"alice","x":[{"a":1,"a":2}]}', "duplicate key", id="duplicate-key-in-array"),
        # A colon inside a string makes up for the one a duplicate key saves: the count still says "look closer".
        pytest.param('{"user_id":"a:b","user_id":"admin"}', "duplicate key", id="duplicate-key-colon-in-string"),
        pytest.param('{"iss":"https://a","iss":"https://b"}', "duplicate key", id="duplicate-key-colons-in-values"),
        pytest.param('{"user_id":"alice","exp":NaN}', "non-finite", id="nan"),
        pytest.param('{"user_id":"alice","exp":Infinity}', "non-finite", id="infinity"),
        pytest.param('{"user_id":"alice","iat":-Infinity}', "non-finite", id="minus-infinity"),
        pytest.param('{"user_id":"alice","exp":1e400}', "out of range", id="float-overflow"),
        pytest.param('{"user_id":"alice","exp":-1e400}', "out of range", id="negative-float-overflow"),
        pytest.param('{"user_id":"alice","x":[1e400]}', "out of range", id="float-overflow-in-array"),
        pytest.param('{"user_id":"alice","x":{"y":1e400}}', "out of range", id="float-overflow-nested"),
        pytest.param('{"user_id":"alice","exp":1' + "0" * 400 + ".5}", "out of range", id="float-overflow-digits"),
        pytest.param('{"user_id":"alice","x":' + "[" * 32 + "]" * 32 + "}", "nested too deeply", id="depth-33"),
        pytest.param(_DEEP_ARRAYS, "nested too deeply", id="depth-2900-arrays"),
        pytest.param(_DEEP_OBJECTS, "nested too deeply", id="depth-1200-objects"),
        pytest.param('{"a":' + "[" * 4000, "nested too deeply", id="unclosed-depth-4000"),
        pytest.param('{"user_id":"alice"}x', "not valid JSON", id="trailing-garbage"),
        pytest.param('{"user_id":"alice"}{}', "not valid JSON", id="two-objects"),
        pytest.param('{"user_id":"alice"} }', "not valid JSON", id="extra-brace-after-space"),
        pytest.param('\ufeff{"user_id":"alice"}', "not valid JSON", id="byte-order-mark"),
        pytest.param("{'user_id':'alice'}", "not valid JSON", id="single-quotes"),
        pytest.param('{"user_id":"alice",}', "not valid JSON", id="trailing-comma"),
        pytest.param('{"user_id":"alice"', "not valid JSON", id="unterminated-object"),
        pytest.param('{"user_id":"ali\nce"}', "not valid JSON", id="raw-control-character"),
        pytest.param('{"user_id":"\\x41"}', "not valid JSON", id="invalid-escape"),
        pytest.param('{"n":01}', "not valid JSON", id="leading-zero"),
    ],
)
def test_malformed_payload_json_is_rejected(payload: str | bytes, reason: str) -> None:
    assert reason in reject(raw_token(payload=payload)).reason
    assert reason in reject(raw_token(header=payload, payload='{"user_id":"alice"}')).reason


def test_depth_check_of_many_unterminated_strings_is_rejected() -> None:
    # Enough brackets to trigger the exact depth scan, then ~2900 quotes that each open a string that never
    # closes (a scanner that rescans from each quote turns quadratic here; bench it, don't time it in a test).
    tok = raw_token(payload='{"a":' + "[" * 33 + '\\"' * 2900)
    assert len(tok) <= MAX_TOKEN_BYTES
    assert "nested too deeply" in reject(tok).reason


def test_malformed_json_reason_names_the_segment() -> None:
    assert reject(raw_token(payload="[]")).reason.startswith("payload ")
    assert reject(raw_token(header="[]")).reason.startswith("header ")


def test_huge_integer_never_escapes_as_another_error() -> None:
    # Over sys.get_int_max_str_digits() json raises ValueError; with the limit lifted the int parses and
    # numeric_date must still refuse it without an OverflowError from float().
    tok = raw_token(payload='{"user_id":"alice","exp":' + "9" * 5000 + "}")
    try:
        jws = parse_compact(tok)
    except MalformedToken as exc:
        assert "not valid JSON" in exc.reason
        return
    with pytest.raises(MalformedToken):
        numeric_date(jws.payload, "exp")


# --- header parameters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param({}, "alg missing", id="no-alg"),
        pytest.param({"typ": "JWT"}, "alg missing", id="only-typ"),
        pytest.param({"alg": None}, "alg missing or not a string", id="alg-null"),
        pytest.param({"alg": 256}, "alg missing or not a string", id="alg-number"),
        pytest.param({"alg": ["HS256"]}, "alg missing or not a string", id="alg-list"),
        pytest.param({"alg": {"name": "HS256"}}, "alg missing or not a string", id="alg-object"),
        pytest.param({"alg": True}, "alg missing or not a string", id="alg-bool"),
        pytest.param({"alg": "HS256", "typ": 1}, "typ is not a string", id="typ-number"),
        pytest.param({"alg": "HS256", "typ": None}, "typ is not a string", id="typ-null"),
        pytest.param({"alg": "HS256", "kid": 7}, "kid is not a string", id="kid-number"),
        pytest.param({"alg": "HS256", "kid": ["k1"]}, "kid is not a string", id="kid-list"),
        pytest.param({"alg": "HS256", "kid": None}, "kid is not a string", id="kid-null"),
        pytest.param({"alg": "HS256", "cty": ["JWT"]}, "cty is not a string", id="cty-list"),
        pytest.param({"alg": "HS256", "crit": ["exp"], "exp": 1}, "crit", id="crit-list"),
        pytest.param({"alg": "HS256", "crit": []}, "crit", id="crit-empty-list"),
        pytest.param({"alg": "HS256", "crit": None}, "crit", id="crit-null"),
        pytest.param({"alg": "HS256", "crit": "b64"}, "crit", id="crit-string"),
        pytest.param({"alg": "HS256", "b64": False}, "b64", id="b64-false"),
        pytest.param({"alg": "HS256", "b64": True}, "b64", id="b64-true"),
        pytest.param({"alg": "dir", "enc": "A256GCM"}, "JWE", id="enc"),
        pytest.param({"alg": "HS256", "cty": "JWT"}, "nested JWT", id="cty-jwt"),
        pytest.param({"alg": "HS256", "cty": "jwt"}, "nested JWT", id="cty-jwt-lower"),
        pytest.param({"alg": "HS256", "cty": "jWt"}, "nested JWT", id="cty-jwt-mixed"),
        pytest.param({"alg": "HS256", "cty": "application/JWT"}, "nested JWT", id="cty-application-jwt"),
        pytest.param({"alg": "HS256", "cty": "Application/jwt"}, "nested JWT", id="cty-application-jwt-mixed"),
    ],
)
def test_unsupported_or_ill_typed_header_is_rejected(header: dict[str, Any], reason: str) -> None:
    assert reason in reject(token(header)).reason


def test_header_rules_apply_to_the_header_only() -> None:
    payload = {"user_id": "alice", "crit": ["x"], "b64": False, "enc": "A256GCM", "cty": "JWT", "alg": 1}
    assert parse_compact(token(payload=payload)).payload == payload


# --- numeric_date -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0, 0.0, id="zero"),
        pytest.param(1700000000, 1700000000.0, id="int"),
        pytest.param(1700000000.125, 1700000000.125, id="fraction"),
        pytest.param(MAX_NUMERIC_DATE, float(MAX_NUMERIC_DATE), id="end-of-9999"),
    ],
)
def test_numeric_date_returns_a_float(value: float, expected: float) -> None:
    result = numeric_date({"exp": value}, "exp")
    assert type(result) is float and result == expected


def test_numeric_date_of_an_absent_claim_is_none() -> None:
    assert numeric_date({"iat": 1}, "exp") is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(None, id="null"),
        pytest.param("1700000000", id="string"),
        pytest.param([1700000000], id="list"),
        pytest.param({"t": 1}, id="object"),
        pytest.param(-1, id="negative"),
        pytest.param(-0.5, id="negative-fraction"),
        pytest.param(MAX_NUMERIC_DATE + 1, id="after-9999"),
        pytest.param(MAX_NUMERIC_DATE + 0.5, id="after-9999-fraction"),
        pytest.param(10**400, id="huge-int"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinity"),
        pytest.param(float("-inf"), id="minus-infinity"),
    ],
)
def test_numeric_date_rejects_anything_but_a_number_in_range(value: Any) -> None:
    with pytest.raises(MalformedToken) as info:
        numeric_date({"exp": value}, "exp")
    assert "exp" in info.value.reason


# --- fuzzing ------------------------------------------------------------------------------------------------

_ALPHABET = string.ascii_letters + string.digits + "-_"
_NOISE = _ALPHABET + ".=+/ \t\n\x00{}[]\"':,\\" + "\u00e9\u212a\uff21\u0663\ud800\U0001f600"
_JSON_BITS = ["{", "}", "[", "]", '"', ":", ",", '"alg"', '"crit"', "1e400", "NaN", "-", "0", "1.5", "null"]
_JSON_BITS += ["\\u0000", "\\ud800", "\\", " ", "\x00", "\u00e9", '"a"', "9" * 50]
_HEADER_KEYS = ["alg", "typ", "kid", "cty", "crit", "b64", "enc", "jku", "jwk", "x5c", "a", "\u00e9", "\x00"]
_STRINGS = ["HS256", "JWT", "jwt", "devtoken", "", "\x00", "\ud800", "\U0001f600", "[[{", "\\", '"']


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 5 else 4)
    if kind == 0:
        return rng.choice([0, -1, 1700000000, 2**63, 10**30, True, False, None])
    if kind == 1:
        return rng.choice([0.5, -0.0, 1e308, 1e-320, float("nan"), float("inf")])
    if kind in (2, 3):
        return rng.choice(_STRINGS)
    if kind == 4:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(_HEADER_KEYS): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _random_json_segment(rng: random.Random) -> str:
    obj = _random_json(rng, 1) if rng.random() < 0.1 else {"alg": "HS256"}
    if isinstance(obj, dict):
        obj.update({rng.choice(_HEADER_KEYS): _random_json(rng, 1) for _ in range(rng.randrange(3))})
    text = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
    for _ in range(rng.randrange(3)):  # a few textual mutations, to reach the decoder's error paths
        i = rng.randrange(len(text) + 1)
        text = text[:i] + rng.choice(_JSON_BITS) + text[i + rng.randrange(2) :]
    return b64(text.encode("utf-8", "surrogatepass"))


def _mutated(rng: random.Random, valid: str) -> str:
    chars = list(valid)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(chars))
        op = rng.randrange(3)
        if op == 0:
            chars[i] = rng.choice(_NOISE)
        elif op == 1:
            del chars[i]
        else:
            chars.insert(i, rng.choice(_NOISE))
    return "".join(chars)


def _fuzz_cases(rng: random.Random, valid: str) -> list[str]:
    cases = ["".join(rng.choice(_NOISE) for _ in range(rng.randrange(80))) for _ in range(1000)]
    cases += [_mutated(rng, valid) for _ in range(1000)]
    for _ in range(3000):  # properly encoded segments around random bytes or random, mutated JSON
        parts = [
            b64(rng.randbytes(rng.randrange(40))) if rng.random() < 0.2 else _random_json_segment(rng) for _ in range(2)
        ]
        parts.append(rng.choice([SIG, "devtoken", b64(rng.randbytes(rng.randrange(70))), ""]))
        cases.append(".".join(parts))
    return cases


def test_fuzzed_tokens_only_ever_parse_or_raise_malformed_token() -> None:
    rng = random.Random(20240229)
    valid = jwt.encode({"user_id": "alice", "iat": 1700000000}, HMAC_KEY, algorithm="HS256")
    parsed = 0
    for case in _fuzz_cases(rng, valid):
        try:
            jws = parse_compact(case)
        except MalformedToken as exc:
            assert exc.reason
            continue
        parsed += 1
        # Whatever parses is strict and canonical: re-encoding gives back the token.
        assert isinstance(jws.header["alg"], str)
        assert jws.signing_input + b"." + jws.signature_segment.encode() == case.encode()
        assert jws.signature_segment == "devtoken" or b64(jws.signature) == jws.signature_segment
    assert parsed > 10, "the fuzzer should also produce some well-formed tokens"
