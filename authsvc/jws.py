"""Strict parsing of compact JWS tokens, before any signature check.

Every byte of a token is treated as hostile: :func:`parse_compact` either returns a fully decoded
:class:`CompactJws` or raises :class:`MalformedToken` (a ``ValueError``), never another exception type.
It checks the shape only; which algorithms and keys are acceptable, the signature and the claims are the
verifier's business.

What is rejected:

* tokens longer than :data:`MAX_TOKEN_BYTES` (UTF-8 bytes), before any decoding;
* anything but exactly three non-empty segments separated by ``.`` (so JWE and the JSON serializations);
* segments that are not strict, canonical base64url: only ``A-Za-z0-9-_``, no padding, no whitespace,
  and no non-zero trailing bits (re-encoding the decoded bytes must give back the same text);
* header or payload that is not UTF-8, not a JSON object, or that has duplicate keys at any depth,
  ``NaN``/``Infinity`` literals, numbers that overflow to infinity, nesting deeper than :data:`MAX_JSON_DEPTH`
  or a NUL or unpaired surrogate character anywhere (escaped or not);
* a header without a string ``alg``, with a non-string ``typ``, ``kid`` or ``cty``, with ``crit`` (no
  critical extension is understood), ``b64`` (RFC 7797 unencoded payloads), ``enc`` (JWE) or a ``cty`` of
  ``JWT`` (nested tokens, compared case-insensitively, with or without ``application/``).

The header parameters ``jku``, ``x5u``, ``jwk`` and ``x5c`` are allowed but ignored: keys come only from
the app's own configuration, nothing named in a token is ever fetched or trusted.

The signature segment ``devtoken`` (a developer token, see the token model) parses like any other; it is
kept raw in :attr:`CompactJws.signature_segment` and its :attr:`CompactJws.signature` is ``b""``.
"""

import binascii
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = [
    "DEV_SIGNATURE",
    "MAX_JSON_DEPTH",
    "MAX_NUMERIC_DATE",
    "MAX_TOKEN_BYTES",
    "CompactJws",
    "LimitExceeded",
    "MalformedToken",
    "numeric_date",
    "parse_compact",
]

MAX_TOKEN_BYTES = 8192
"""The longest token accepted, in UTF-8 bytes."""

MAX_JSON_DEPTH = 32
"""The deepest nesting of JSON objects and arrays accepted in the header or payload (the top object is 1)."""

MAX_NUMERIC_DATE = 253402300799
"""The latest NumericDate accepted: 9999-12-31T23:59:59Z."""

DEV_SIGNATURE = "devtoken"
"""The literal signature segment of a developer token."""


class MalformedToken(ValueError):
    """The token is not a well-formed compact JWS; `reason` says why in a few words (never the token)."""

    reason: str

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LimitExceeded(MalformedToken):
    """The token is larger than :data:`MAX_TOKEN_BYTES` or its JSON nests deeper than :data:`MAX_JSON_DEPTH`."""


@dataclass(slots=True)  # not frozen: that costs a microsecond a token on the hot path; treat it as read-only
class CompactJws:
    """A compact JWS split into its decoded parts, not yet verified."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes
    signature_segment: str


_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# One translation of the ASCII token to the standard base64 alphabet (bytes.translate is several times faster
# than str.translate) also checks the base64url alphabet: every other byte but the dots becomes `*`, which no
# segment may then hold. A regular expression over the token cost more than the translation and decoding.
_TO_STANDARD = bytes(byte if byte in _B64URL_ALPHABET + b"." else ord("*") for byte in range(256)).translate(
    bytes.maketrans(b"-_", b"+/")
)
# An int: `bytes in bytes` first tries the operand as an int and raises (and clears) a TypeError, 2k instructions.
_NOT_B64URL = ord("*")
# The last character of a segment whose length is 2 or 3 mod 4 carries 4 or 2 unused bits, which must be
# zero for the encoding to be canonical; these are the characters whose low bits are zero.
_CANONICAL_LAST_2 = frozenset(b"AQgw")
_CANONICAL_LAST_3 = frozenset(b"AEIMQUYcgkosw048")
# a2b_base64 skips urlsafe_b64decode's detours.
_PADDING = (b"", b"", b"==", b"=")
_BAD_STRING_CHAR_RE = re.compile("[\x00\ud800-\udfff]")
# A JSON string literal, to ignore brackets inside strings when measuring depth. The closing quote is
# optional so that unterminated strings cost linear, not quadratic, time; json fails at such a string anyway,
# before any bracket after it.
_JSON_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_BRACKET_RE = re.compile(r"[\[\]{}]")
# Header values that a shallow copy fully separates from the cached header.
_SCALARS = frozenset((str, int, float, bool, type(None)))
# Longer header segments are parsed every time: they are unusual, and the cache's memory stays small.
_MAX_CACHED_HEADER_SEGMENT = 512


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise MalformedToken("has a duplicate key")
    return obj


def _reject_constant(_name: str) -> NoReturn:
    raise MalformedToken("has a non-finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise MalformedToken("has a number out of range")
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs, parse_constant=_reject_constant, parse_float=_finite_float)
# The same without the two Python hooks called per object and per float (half the cost of a payload's parse):
# its result is taken only when it provably equals _DECODER's (see _decode_plain_object).
_PLAIN_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_PLAIN_SCAN: Callable[[str, int], tuple[Any, int]] = _PLAIN_DECODER.scan_once  # type: ignore[attr-defined]
_ABSENT = object()
_INFINITY = float("inf")
_MINUS_INFINITY = float("-inf")


def _decode_plain_object(text: str) -> dict[str, Any] | None:
    """`text` (an object in braces) decoded without the hooks, when that is certainly what _DECODER gives; else
    None, and _DECODER decides (its answer or its error). Equal when: every `:` outside strings follows a key, so
    a top object with as many keys as the text has colons has no duplicate key and no nested object has keys; no
    `[` means no array; and no value is infinite (a float that overflowed, which _DECODER refuses)."""
    try:
        # The C scanner itself: raw_decode's Python frame and whitespace match cost more than the scan of a payload.
        value, end = _PLAIN_SCAN(text, 0)
    except (ValueError, RecursionError, StopIteration):  # StopIteration: not JSON at some index
        return None
    if (
        end != len(text)
        or type(value) is not dict
        or "[" in text
        or text.count(":") != len(value)
        or _INFINITY in value.values()
        or _MINUS_INFINITY in value.values()
    ):
        return None
    return value


def _decode_segment(segment: str, name: str) -> bytes:
    return _decode_standard(segment.encode("ascii").translate(_TO_STANDARD), 0, len(segment), name)


def _decode_standard(text: bytes, start: int, end: int, name: str) -> bytes:
    """The bytes of the base64url segment text[start:end], `text` already translated to the standard alphabet."""
    chunk = text[start:end]
    if not chunk or _NOT_B64URL in chunk:  # parse_compact refused these already, with the reason; defence in depth
        raise MalformedToken(f"{name} segment is empty or has a character outside base64url")
    rem = (end - start) % 4
    if rem == 1:
        raise MalformedToken(f"{name} segment has an impossible base64url length")
    if (rem == 2 and text[end - 1] not in _CANONICAL_LAST_2) or (rem == 3 and text[end - 1] not in _CANONICAL_LAST_3):
        raise MalformedToken(f"{name} segment is not canonical base64url")
    try:
        return binascii.a2b_base64(chunk + _PADDING[rem])
    except ValueError as exc:  # not expected after the checks above; defence in depth
        raise MalformedToken(f"{name} segment is not base64url") from exc


def _json_depth(text: str) -> int:
    depth = deepest = 0
    for bracket in _BRACKET_RE.findall(_JSON_STRING_RE.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _has_bad_string(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _BAD_STRING_CHAR_RE.search(item):
                return True
        elif isinstance(item, dict):
            for key, child in item.items():
                if _BAD_STRING_CHAR_RE.search(key):
                    return True
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _decode_json_object(raw: bytes, name: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedToken(f"{name} is not UTF-8") from exc
    if "\x00" in text:
        raise MalformedToken(f"{name} contains NUL")
    # Fewer brackets than the limit cannot nest deeper than it: the exact (slow) count is for the rare rest,
    # and it runs before json so that a deep token never reaches json's recursion.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _json_depth(text) > MAX_JSON_DEPTH:
        raise LimitExceeded(f"{name} JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    try:
        # raw_decode skips decode()'s whitespace handling; tokens rarely have whitespace around the object.
        if text.startswith("{") and text.endswith("}"):
            plain = _decode_plain_object(text)
            if plain is not None:
                value = plain
            else:
                value, end = _DECODER.raw_decode(text)
                if end != len(text):
                    raise MalformedToken("is not valid JSON")
        else:
            value = _DECODER.decode(text)
    except MalformedToken as exc:
        raise MalformedToken(f"{name} {exc.reason}") from None
    except RecursionError:
        raise LimitExceeded(f"{name} JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:  # JSONDecodeError, and int() beyond sys.get_int_max_str_digits()
        raise MalformedToken(f"{name} is not valid JSON") from exc
    if type(value) is not dict:
        raise MalformedToken(f"{name} is not a JSON object")
    # Only an escape can put NUL or a lone surrogate in a decoded string: valid UTF-8 text has neither.
    if "\\u" in text and _has_bad_string(value):
        raise MalformedToken(f"{name} contains NUL or an unpaired surrogate")
    return value


def _check_header(header: dict[str, Any]) -> None:
    if type(header.get("alg")) is not str:
        raise MalformedToken("header alg missing or not a string")
    for param in ("typ", "kid", "cty"):
        if param in header and type(header[param]) is not str:
            raise MalformedToken(f"header {param} is not a string")
    for param, why in (("crit", "is not supported"), ("b64", "is not supported"), ("enc", "means JWE")):
        if param in header:
            raise MalformedToken(f"header {param} {why}")
    cty = header.get("cty")
    if cty is not None:
        cty = cty.lower()
        if cty == "jwt" or cty == "application/jwt":
            raise MalformedToken("nested JWT is not supported")


def _parse_header(segment: str) -> dict[str, Any]:
    header = _decode_json_object(_decode_segment(segment, "header"), "header")
    _check_header(header)
    return header


@functools.lru_cache(maxsize=256)
def _cached_header(segment: str) -> tuple[dict[str, Any], bool]:
    header = _parse_header(segment)
    return header, all(type(value) in _SCALARS for value in header.values())


def _header(segment: str) -> dict[str, Any]:
    # Most tokens an app sees share a handful of headers, so their decoding is cached; callers get a copy.
    if len(segment) <= _MAX_CACHED_HEADER_SEGMENT:
        header, flat = _cached_header(segment)
        if flat:
            return header.copy()
    return _parse_header(segment)


def _diagnose(token: str) -> MalformedToken:
    """Say why a token that failed the fast shape check is malformed."""
    if token.lstrip().startswith("{"):
        return MalformedToken("JWS JSON serialization is not supported")
    segments = token.split(".")
    if len(segments) == 5:
        return MalformedToken("JWE is not supported")
    if len(segments) != 3:
        return MalformedToken(f"expected 3 segments, got {len(segments)}")
    for name, segment in zip(("header", "payload", "signature"), segments, strict=True):
        if not segment:
            return MalformedToken(f"{name} segment is empty")
        if not _B64URL_RE.fullmatch(segment):
            if "=" in segment:
                return MalformedToken(f"{name} segment has base64 padding")
            return MalformedToken(f"{name} segment has a character outside base64url")
    return MalformedToken("not a compact JWS")  # unreachable if parse_compact and the checks above agree


def parse_compact(token: str) -> CompactJws:
    """Split and decode a compact JWS, rejecting anything not strictly well-formed with MalformedToken."""
    if not isinstance(token, str):
        raise MalformedToken("token is not a string")
    # len() first: a huge string is refused without looking at its characters.
    if len(token) > MAX_TOKEN_BYTES or (
        not token.isascii() and len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES
    ):
        raise LimitExceeded(f"token too large (more than {MAX_TOKEN_BYTES} bytes)")
    segments = token.split(".")
    if len(segments) != 3 or not token.isascii():
        raise _diagnose(token)
    header_segment, payload_segment, signature_segment = segments
    # One encode and one translation serve the alphabet check and the decoding of both remaining segments.
    raw = token.encode("ascii")
    standard = raw.translate(_TO_STANDARD)
    if _NOT_B64URL in standard or not (header_segment and payload_segment and signature_segment):
        raise _diagnose(token)

    header = _header(header_segment)
    payload_start = len(header_segment) + 1
    payload_end = payload_start + len(payload_segment)
    payload = _decode_json_object(_decode_standard(standard, payload_start, payload_end, "payload"), "payload")
    if signature_segment == DEV_SIGNATURE:
        signature = b""
    else:
        signature = _decode_standard(standard, payload_end + 1, len(raw), "signature")
    # (Positional arguments: header, payload, signing_input, signature, signature_segment.)
    return CompactJws(header, payload, raw[:payload_end], signature, signature_segment)


def numeric_date(payload: Mapping[str, Any], claim: str) -> float | None:
    """The claim as a NumericDate in seconds, None if absent; MalformedToken unless a number in range."""
    value = payload.get(claim, _ABSENT)
    if value is _ABSENT:
        return None
    # bool is an int subclass but no date; ints are range-checked before float(), which a huge one overflows.
    kind = type(value)
    if kind is not int and kind is not float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise MalformedToken(f"{claim} is not a number")
    # The chained comparison is False for NaN too.
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise MalformedToken(f"{claim} is out of range")
    return float(value)
