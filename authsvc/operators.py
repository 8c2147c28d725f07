"""Operator tokens: the credentials of the AdminService, kept in memory only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from authsvc.errors import ConfigError, PermissionDenied, Unauthenticated

OperatorHashes = tuple[tuple[str, str], ...]
"""Configured operators: (id, SHA-256 hex of the token) pairs."""

OPERATOR_ID_PATTERN = re.compile(r"[A-Za-z0-9@._-]{1,64}")
"""What an operator id may be: 1 to 64 letters, digits, `@`, `.`, `_` and `-`."""

MIN_TOKEN_LENGTH = 32
_TOKEN_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: it travels in a header


def hash_token(token: str) -> str:
    """The SHA-256 hex of an operator token: what settings keep instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(operator_id: str) -> str:
    """A fresh `ID:TOKEN` line for the operator tokens file."""
    _check_id(operator_id, "the operator id")
    return f"{operator_id}:{secrets.token_urlsafe(32)}"


def _check_id(operator_id: str, where: str) -> None:
    if not OPERATOR_ID_PATTERN.fullmatch(operator_id):
        raise ConfigError(f"{where} must be 1 to 64 letters, digits, '@', '.', '_' or '-'")


def _parse_entry(entry: str, where: str) -> tuple[str, str]:
    # Messages name where the entry is, never its text: it holds a token.
    operator_id, colon, token = entry.strip().partition(":")
    if not colon or not token:
        raise ConfigError(f"{where} is not 'ID:TOKEN'")
    _check_id(operator_id, f"the id in {where}")
    if not _TOKEN_PATTERN.fullmatch(token) or "," in token:
        raise ConfigError(f"the token of operator {operator_id!r} has spaces, commas or non-ASCII characters")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"the token of operator {operator_id!r} is {len(token)} characters; at least {MIN_TOKEN_LENGTH} random"
            " ones are needed ('authsvc operators new-token ID' makes one)"
        )
    return operator_id, hash_token(token)


def parse_operator_tokens(text: str | None, file: Path | None) -> OperatorHashes:
    """Operators from AUTHSVC_OPERATOR_TOKENS (comma-separated `id:token`) and AUTHSVC_OPERATOR_TOKENS_FILE
    (one `id:token` per line, `#` comments), hashed at once. Raises ConfigError for a malformed entry, a short
    token, or an id or token given twice."""
    parsed: list[tuple[str, str]] = []
    if text:
        for number, entry in enumerate(text.split(","), 1):
            if entry.strip():
                parsed.append(_parse_entry(entry, f"entry {number} of AUTHSVC_OPERATOR_TOKENS"))
    if file is not None:
        try:
            lines = file.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read AUTHSVC_OPERATOR_TOKENS_FILE {file}: {exc.strerror}") from None
        for number, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                parsed.append(_parse_entry(line, f"line {number} of AUTHSVC_OPERATOR_TOKENS_FILE"))
    ids = [operator_id for operator_id, _ in parsed]
    if duplicated := sorted({i for i in ids if ids.count(i) > 1}):
        raise ConfigError(f"operator id(s) given twice: {', '.join(duplicated)}")
    if len({digest for _, digest in parsed}) != len(parsed):
        raise ConfigError("two operators share a token; give each its own")
    return tuple(parsed)


def require_configured(operators: OperatorHashes) -> None:
    """Raises PermissionDenied (ADMIN_DISABLED) when no operator is configured: the admin API is off."""
    if not operators:
        raise PermissionDenied(
            "the admin API is disabled: no operator token is configured; set AUTHSVC_OPERATOR_TOKENS or "
            "AUTHSVC_OPERATOR_TOKENS_FILE ('authsvc operators new-token ID' makes a token) and restart",
            "ADMIN_DISABLED",
        )


def authenticate(token: str, operators: OperatorHashes) -> str:
    """The id of the operator whose token `token` is; Unauthenticated (INVALID_CREDENTIAL) when it matches none."""
    require_configured(operators)
    digest = hash_token(token)
    found: str | None = None
    # Compare with every hash, each in constant time, without stopping at a match.
    for operator_id, expected in operators:
        if hmac.compare_digest(digest, expected) and found is None:
            found = operator_id
    if found is None:
        raise Unauthenticated(
            "the credential is not an operator token (an app's API secret or server token is not one)",
            "INVALID_CREDENTIAL",
        )
    return found
