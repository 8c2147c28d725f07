"""Which PostgreSQL authsvc talks to: the configured URL, or an embedded server in the data dir."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg

from authsvc.config import Settings
from authsvc.errors import ConfigError

log = logging.getLogger(__name__)

# Query parameters of a PostgreSQL URL that carry a secret (libpq's names, which asyncpg reads too).
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def describe(url: str) -> str:
    """The URL without its password (in the user part or the query string), fit for a log line."""
    parts = original = urlsplit(url)
    if parts.password:
        user, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name in _SECRET_PARAMETERS for name, _ in query):
        masked = [(name, "***" if name in _SECRET_PARAMETERS else value) for name, value in query]
        parts = parts._replace(query=urlencode(masked, safe="/*"))
    return url if parts == original else parts.geturl()


def where(url: str) -> str:
    """The server(s) a PostgreSQL URL points at: host:port, or the unix socket's path."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    hosts = parts.netloc.rpartition("@")[2] or query.get("host") or os.environ.get("PGHOST", "")
    default_port = query.get("port") or os.environ.get("PGPORT") or "5432"
    found = []
    for host in filter(None, hosts.split(",")):
        if host.startswith("/"):  # a socket directory
            found.append(f"{host.rstrip('/')}/.s.PGSQL.{default_port}")
        elif host.startswith("[") or host.count(":") != 1:  # [IPv6]:port, or no port
            found.append(host if "]:" in host else f"{host}:{default_port}")
        else:
            found.append(host)
    return ", ".join(found) or "the default unix socket"


def connect_error(url: str, exc: BaseException) -> str:
    """Why connecting to the database at `url` failed, in one line naming where and the cause (no password)."""
    if isinstance(exc, asyncpg.PostgresError):
        cause = str(exc)  # the server's own words: "password authentication failed for user ..."
    elif isinstance(exc, TimeoutError):
        cause = "no answer in time (AUTHSVC_DATABASE_TIMEOUT)"
    elif isinstance(exc, OSError):
        # asyncio's strerror is "Connect call failed (address)"; a resolver error's errno is negative.
        cause = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
    else:
        cause = type(exc).__name__
    return f"cannot connect to the database at {where(url)} ({describe(url)}): {cause.splitlines()[0] if cause else ''}"


def _pgserver_chatter(record: logging.LogRecord) -> bool:
    # pgserver logs every command it runs, with full command lines, at INFO: demoted to DEBUG.
    if record.levelno < logging.WARNING:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)
    return True


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yields the URL of the database to use, starting (and afterwards stopping) an embedded one if needed.

    The embedded server (PyPI pgserver) keeps its data in `<data_dir>/pgdata` across restarts. Several
    processes (the server, the CLI) may hold it at once; it stops when the last one lets go.
    """
    if settings.database_url:
        log.info("using PostgreSQL at %s", describe(settings.database_url))
        yield settings.database_url
        return
    # pgserver asks platformdirs for XDG_RUNTIME_DIR, which containers rarely set; the fallback is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pgserver  # only needed without a database URL

    logging.getLogger("pgserver").addFilter(_pgserver_chatter)

    pgdata = (settings.data_dir / "pgdata").resolve()
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise ConfigError(f"cannot start the embedded PostgreSQL in {pgdata}: {exc}") from exc
    log.info("using embedded PostgreSQL in %s (set AUTHSVC_DATABASE_URL to use another)", pgdata)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
