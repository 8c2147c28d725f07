"""Settings: the one object that reads `AUTHSVC_*` environment variables and command-line overrides."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from authsvc.errors import ConfigError
from authsvc.operators import OperatorHashes, parse_operator_tokens

Parser = Callable[[str, str], Any]
"""How a setting's text becomes its value: (the text, the variable's name for messages) → value, or ConfigError."""

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90s`, `15m`, `1h30m`, `7d` or a bare number of seconds."""
    value = text.strip()
    if not value:
        raise ConfigError("empty duration; use e.g. 30s, 15m, 1h or 7d")
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(value) or pos == 0:
            raise ConfigError(f"invalid duration {text!r}; use e.g. 30s, 15m, 1h30m or 7d") from None
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ConfigError(f"invalid duration {text!r}; it must be a finite, non-negative time")
    return seconds


def _port(text: str, name: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a port number, not {text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name} must be between 0 and 65535, not {port}")
    return port


def _whole(text: str, name: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {text!r}") from None
    if value < least:
        raise ConfigError(f"{name} must be at least {least}, not {value}")
    return value


def _positive_int(text: str, name: str) -> int:
    return _whole(text, name, 1)


def _count(text: str, name: str) -> int:
    """A whole number of 0 or more."""
    return _whole(text, name, 0)


def _duration(text: str, name: str) -> float:
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc.message}") from None


def _positive_duration(text: str, name: str) -> float:
    seconds = _duration(text, name)
    if seconds <= 0:
        raise ConfigError(f"{name} must be longer than 0, not {text!r}")
    return seconds


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _bool(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        raise ConfigError(f"{name} must be true or false, not {text!r}")
    return value in _TRUE


def _text(text: str, name: str) -> str:
    return text


def _path(text: str, name: str) -> Path:
    return Path(text)


def _choice(*choices: str) -> Parser:
    def parse(text: str, name: str) -> str:
        if text not in choices:
            raise ConfigError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, not {text!r}")
        return text

    return parse


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(text: str, name: str) -> str:
    level = text.strip().upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"{name} must be one of {', '.join(_LOG_LEVELS)}, not {text!r}")
    return level


def _setting(default: Any, parse: Parser) -> Any:
    """A field of Settings read from its environment variable with `parse` (the settings table's one row)."""
    return field(default=default, metadata={"parse": parse})


@dataclass(frozen=True)
class Settings:
    """Every setting of authsvc, one row each: its type, its default and its parser (which holds its range).
    Environment variable: `AUTHSVC_` + the field name in upper case."""

    database_url: str | None = _setting(None, _text)
    """PostgreSQL URL; unset starts an embedded PostgreSQL in data_dir."""
    kek: str | None = _setting(None, _text)
    """Key-encryption keys (base64 of 32 bytes), comma-separated: the first seals, all open."""
    kek_file: Path | None = _setting(None, _path)
    """A file of key-encryption keys, one per line (a mounted Kubernetes Secret); read after AUTHSVC_KEK."""
    data_dir: Path = _setting(Path(".authsvc"), _path)
    """Where the embedded PostgreSQL keeps its data."""
    host: str = _setting("0.0.0.0", _text)
    """Address the gRPC server listens on."""
    port: int = _setting(50051, _port)
    """gRPC port; 0 picks a free one."""
    http_port: int = _setting(8080, _port)
    """HTTP port of /metrics; 0 picks a free one."""
    issuer: str = _setting("authsvc", _text)
    """The `iss` claim of minted tokens."""
    clock_leeway: float = _setting(5.0, _duration)
    """Seconds of clock skew tolerated for exp, nbf, iat and revocation times."""
    log_level: str = _setting("INFO", _log_level)
    """DEBUG, INFO, WARNING or ERROR."""
    access_log_rate: int = _setting(100, _count)
    """Access lines of successful calls written per second and process at most (the calls past it are counted
    in one line); every failed call's line is always written. 0: none."""
    database_pool_size: int = _setting(10, _positive_int)
    """Most connections one process holds to PostgreSQL."""
    database_timeout: float = _setting(5.0, _positive_duration)
    """Seconds to wait for a database connection or query before answering UNAVAILABLE."""
    drain_timeout: float = _setting(10.0, _duration)
    """After SIGTERM, seconds the server keeps serving (health NOT_SERVING) until its callers go quiet."""
    shutdown_grace: float = _setting(20.0, _duration)
    """Seconds calls in flight may take to finish once the drain ends and new calls are refused."""
    max_staleness: float = _setting(30.0, _positive_duration)
    """Seconds VerifyToken keeps answering from memory without reaching the database; then UNAVAILABLE."""
    state_check_interval: float = _setting(2.0, _positive_duration)
    """Seconds between checks that the in-memory state is current (the safety net behind NOTIFY)."""
    workers: int = _setting(0, _positive_int)
    """Server processes sharing the gRPC port; 0 means one per CPU core."""
    event_loop: str = _setting("auto", _choice("auto", "asyncio", "uvloop"))
    """asyncio, uvloop (measured faster under load, docs/performance.md), or auto: uvloop when installed."""
    verify_cache_size: int = _setting(10_000, _count)
    """Tokens remembered after their signature checked out (expiry and revocation are still checked); 0: off."""
    operator_tokens: OperatorHashes = ()
    """AdminService operators as (id, SHA-256 hex of the token) pairs, from AUTHSVC_OPERATOR_TOKENS (`id:token`,
    comma-separated) and AUTHSVC_OPERATOR_TOKENS_FILE (one per line); the tokens themselves are not kept."""
    key_rotation_delay: float = _setting(600.0, _duration)
    """Seconds a rotated-in key pair is published before it signs, unless the rotation says otherwise."""
    secret_overlap: float = _setting(86400.0, _duration)
    """Seconds a rotated-out API secret keeps working, unless the rotation says otherwise."""
    tls_cert_file: Path | None = _setting(None, _path)
    """PEM certificate (chain, the server's first) of the gRPC port; with tls_key_file, the port speaks TLS."""
    tls_key_file: Path | None = _setting(None, _path)
    """PEM private key of tls_cert_file, unencrypted."""
    tls_client_ca_file: Path | None = _setting(None, _path)
    """PEM CA bundle; when set, clients must present a certificate signed by it (mutual TLS)."""
    migrate: bool = _setting(True, _bool)
    """Whether serve and the CLI bring the schema up to date; false: they refuse a database that lacks a
    migration (`authsvc migrate` then applies it), so their database role needs no DDL rights."""
    max_connection_age: float = _setting(300.0, _duration)
    """Seconds a client connection may live before the server asks the client to reconnect (GOAWAY), so that
    clients rebalance onto new replicas; 0: forever."""
    max_connection_age_grace: float = _setting(30.0, _duration)
    """Seconds calls in flight on a connection past its age may take before it is closed."""
    keepalive_time: float = _setting(60.0, _positive_duration)
    """Seconds between the server's keepalive pings on a connection with calls in flight."""
    keepalive_timeout: float = _setting(20.0, _positive_duration)
    """Seconds the server waits for a ping's answer before closing the connection as dead."""
    watch_heartbeat: float = _setting(2.0, _positive_duration)
    """Seconds between heartbeats on each WatchState stream; a local verifier counts its lag from the last
    message it got, so its max_lag must be well above this (and above state_check_interval)."""
    watch_buffer: int = _setting(1024, _positive_int)
    """Messages a WatchState stream may have waiting to be sent; a watcher that lets more pile up is cut off
    (RESOURCE_EXHAUSTED, reason WATCHER_TOO_SLOW) and resumes from its version."""
    console_port: int | None = _setting(None, _port)
    """Port of the operator console (authsvc.console); unset: no console. 0 picks a free one."""
    console_host: str = _setting("127.0.0.1", _text)
    """Address the operator console listens on; loopback unless TLS (or console_allow_plaintext) is set."""
    console_tls_cert_file: Path | None = _setting(None, _path)
    """PEM certificate (chain) of the console; with console_tls_key_file, the console speaks HTTPS."""
    console_tls_key_file: Path | None = _setting(None, _path)
    """PEM private key of console_tls_cert_file, unencrypted."""
    console_allow_plaintext: bool = _setting(False, _bool)
    """Lets the console listen without TLS on an address that is not loopback (behind a TLS-terminating proxy)."""
    console_idle_timeout: float = _setting(900.0, _positive_duration)
    """Seconds a console session may go unused before it ends."""
    console_login_link: bool = _setting(False, _bool)
    """Print a one-time login URL at start (`make run` does): it opens one session as operator `local`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from `AUTHSVC_*` variables, then `overrides` (command-line flags) where not None."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}

        def get(name: str) -> str | None:
            value = env.get(f"AUTHSVC_{name.upper()}")
            return value if value not in (None, "") else None

        for setting in fields(cls):
            parse: Parser | None = setting.metadata.get("parse")
            if parse is not None and (text := get(setting.name)) is not None:
                values[setting.name] = parse(text, f"AUTHSVC_{setting.name.upper()}")
        # The one setting read from two variables: tokens inline and a file of them.
        tokens, tokens_file = get("operator_tokens"), get("operator_tokens_file")
        if tokens is not None or tokens_file is not None:
            values["operator_tokens"] = parse_operator_tokens(tokens, Path(tokens_file) if tokens_file else None)
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if not 0 <= settings.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, not {settings.port}")
        if not 0 <= settings.http_port <= 65535:
            raise ConfigError(f"HTTP port must be between 0 and 65535, not {settings.http_port}")
        if settings.state_check_interval >= settings.max_staleness:
            # Between two checks nothing else proves the state current, so it would fail closed every time.
            raise ConfigError(
                f"AUTHSVC_STATE_CHECK_INTERVAL ({settings.state_check_interval:g}s) must be shorter than "
                f"AUTHSVC_MAX_STALENESS ({settings.max_staleness:g}s)"
            )
        settings.check_tls()
        settings.check_console()
        return settings

    def check_tls(self) -> None:
        """Fails unless the TLS files are set together: certificate and key both or neither, a client CA only
        with them. (Their contents are checked by authsvc.tls when the server starts.)"""
        if self.tls_cert_file is not None and self.tls_key_file is None:
            raise ConfigError("AUTHSVC_TLS_CERT_FILE is set but AUTHSVC_TLS_KEY_FILE is not: TLS needs both")
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ConfigError("AUTHSVC_TLS_KEY_FILE is set but AUTHSVC_TLS_CERT_FILE is not: TLS needs both")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError(
                "AUTHSVC_TLS_CLIENT_CA_FILE needs AUTHSVC_TLS_CERT_FILE and AUTHSVC_TLS_KEY_FILE: "
                "mutual TLS is TLS with client certificates"
            )

    def check_console(self) -> None:
        """Fails when the console's settings cannot be safe: its port shared with gRPC or /metrics and JWKS (the
        port client pods reach), half a TLS pair, plaintext or a login link on an address that is not loopback."""
        if self.console_port is None:
            return
        if self.console_port and self.console_port in (self.port, self.http_port):
            raise ConfigError(
                f"AUTHSVC_CONSOLE_PORT ({self.console_port}) must differ from the gRPC and HTTP (/metrics, JWKS) ports"
            )
        if (self.console_tls_cert_file is None) != (self.console_tls_key_file is None):
            raise ConfigError("AUTHSVC_CONSOLE_TLS_CERT_FILE and AUTHSVC_CONSOLE_TLS_KEY_FILE go together: set both")
        if is_loopback(self.console_host):
            return
        if self.console_login_link:
            raise ConfigError(
                f"AUTHSVC_CONSOLE_LOGIN_LINK is for a console on loopback only, not on {self.console_host}"
            )
        if self.console_tls_cert_file is None and not self.console_allow_plaintext:
            raise ConfigError(
                f"the console would listen on {self.console_host} without TLS: set AUTHSVC_CONSOLE_TLS_CERT_FILE and "
                "AUTHSVC_CONSOLE_TLS_KEY_FILE, or AUTHSVC_CONSOLE_ALLOW_PLAINTEXT=true behind a TLS proxy"
            )

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some settings replaced."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1): reachable from this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# Read by authsvc but not settings of its own: the tests' database.
_OTHER_VARIABLES = frozenset({"AUTHSVC_TEST_DATABASE_URL"})


def variable_names() -> frozenset[str]:
    """Every `AUTHSVC_*` environment variable authsvc reads."""
    names = {f"AUTHSVC_{f.name.upper()}" for f in fields(Settings)} | {"AUTHSVC_OPERATOR_TOKENS_FILE"}
    return frozenset(names) | _OTHER_VARIABLES


def unknown_variables(environ: Mapping[str, str] | None = None) -> str | None:
    """A one-line warning naming the `AUTHSVC_*` variables authsvc does not know (misspelled ones, mostly) and
    the known name closest to each, or None when there are none."""
    env = os.environ if environ is None else environ
    known = variable_names()
    unknown = sorted(name for name in env if name.startswith("AUTHSVC_") and name not in known)
    if not unknown:
        return None
    named = []
    for name in unknown:
        # Compared without the prefix they all share, which would make any two look alike.
        close = difflib.get_close_matches(name.removeprefix("AUTHSVC_"), [k.removeprefix("AUTHSVC_") for k in known], 1)
        named.append(f"{name} (did you mean AUTHSVC_{close[0]}?)" if close else name)
    return f"ignoring unknown setting{'s' if len(unknown) > 1 else ''}: {', '.join(named)}"
