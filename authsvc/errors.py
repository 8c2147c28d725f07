"""Errors of authsvc: one root type, each subclass knowing its gRPC status code and reason.

    AuthsvcError                      the root; never raised itself
    ├── InvalidArgument               the request is wrong: fix it and retry
    ├── Unauthenticated               the app credential is missing or wrong
    ├── PermissionDenied              the credential is valid but not for this call or app
    ├── NotFound                      the app (or another named thing) does not exist
    ├── ResourceExhausted             the caller takes more than the server will hold for it: back off
    ├── Unavailable                   the database is needed and down: retry with backoff
    └── ConfigError                   a setting is wrong; raised at start-up, not over gRPC

The token core and the servicers raise these; one interceptor (authsvc.interceptors) maps them to a gRPC
status carrying a google.rpc.ErrorInfo with the reason and the domain "authsvc". Each names its status by
the name of a grpc.StatusCode, so this module (and the token core that raises its errors) needs no grpc.
Messages are meant for people and never contain a secret or a whole token.
"""

from __future__ import annotations

DOMAIN = "authsvc"


class AuthsvcError(Exception):
    """Root of every error authsvc raises on purpose."""

    status: str = "INTERNAL"
    """The name of the grpc.StatusCode a client sees."""
    default_reason: str = "INTERNAL"

    def __init__(self, message: str, reason: str | None = None, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = metadata


class InvalidArgument(AuthsvcError):
    """The request is malformed or asks for something not allowed; the caller must change it."""

    status = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"


class Unauthenticated(AuthsvcError):
    """The app credential (x-api-key, authorization) is missing or does not check out."""

    status = "UNAUTHENTICATED"
    default_reason = "INVALID_CREDENTIAL"


class FailedPrecondition(AuthsvcError):
    """The request is well-formed but the thing it names cannot be acted on in its present state; the message
    says what to do instead."""

    status = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class PermissionDenied(AuthsvcError):
    """The credential is genuine but belongs to another app, or is a user token."""

    status = "PERMISSION_DENIED"
    default_reason = "PERMISSION_DENIED"


class NotFound(AuthsvcError):
    """The named app does not exist."""

    status = "NOT_FOUND"
    default_reason = "APP_NOT_FOUND"


class ResourceExhausted(AuthsvcError):
    """The caller would make the server hold more than its bound (a watcher too slow for its stream)."""

    status = "RESOURCE_EXHAUSTED"
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(AuthsvcError):
    """The database is needed and cannot be reached; nothing was acknowledged. Retry with backoff: a write cut off
    at its commit may have been applied, and every write authsvc retries is idempotent."""

    status = "UNAVAILABLE"
    default_reason = "DATABASE_UNAVAILABLE"


class ConfigError(AuthsvcError):
    """A setting or command-line value is invalid; the message says which and why."""

    default_reason = "INVALID_SETTING"
