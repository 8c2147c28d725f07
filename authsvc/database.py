"""The database of a process: which PostgreSQL (the configured URL, or an embedded server in the data dir), why
connecting failed, the key-encryption keys, the schema (migrated or checked) and the store opened over it."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg

from authsvc import migrations
from authsvc.config import Settings
from authsvc.errors import ConfigError
from authsvc.sealing import Keyring, generated_keyring, keyring_from

if TYPE_CHECKING:
    from authsvc.store import Store

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


def _pgserver() -> Any:
    """The pgserver module, needed only without a database URL: the extra `embedded`, never in the image."""
    # Importing it asks platformdirs for XDG_RUNTIME_DIR, which containers and CI rarely set; the fallback is fine.
    # (Set here, where every path to pgserver passes: keyring_for imports it before database_url runs.)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        import pgserver
    except ImportError:
        raise ConfigError(
            "AUTHSVC_DATABASE_URL is not set and the embedded PostgreSQL is not installed: set "
            "AUTHSVC_DATABASE_URL, or pip install 'authsvc[embedded]' for a development database"
        ) from None
    return pgserver


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
    pgserver = _pgserver()

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


def keyring_for(settings: Settings, *, warn: bool = True) -> Keyring:
    """The key-encryption keys from the settings; for the embedded database only, one kept in the data dir.

    With an external database and no key configured, authsvc refuses to start: it would otherwise have to
    keep secrets in plain text, or make a key that other replicas cannot know. Using the data dir's key is
    warned about unless `warn` is false (the CLI), and always when the key is made.
    """
    keyring = keyring_from(settings.kek, settings.kek_file)
    if keyring is not None:
        return keyring
    if settings.database_url:
        raise ConfigError(
            "no key-encryption key: set AUTHSVC_KEK or AUTHSVC_KEK_FILE (base64 of 32 random bytes; "
            "'authsvc keys new-kek' prints one). API secrets and private keys are sealed with it."
        )
    _pgserver()  # no key made for an embedded database that cannot start
    keyring, created = generated_keyring(settings.data_dir)
    log.log(
        logging.WARNING if warn or created else logging.INFO,
        "no key-encryption key configured: %s %s for the embedded database; set AUTHSVC_KEK_FILE in production",
        "generated" if created else "using",
        settings.data_dir / "kek",
    )
    return keyring


async def apply_migrations(url: str, settings: Settings) -> list[str]:
    """Applies the migrations the database at `url` lacks; returns their versions (none: it was up to date)."""
    from authsvc.store import create_pool  # here: authsvc.store imports this module (connect_error)

    pool = await create_pool(url, max_size=1, command_timeout=settings.database_timeout)
    try:
        async with pool.acquire() as conn:
            return await migrations.apply(conn)
    finally:
        await pool.close()


async def open_store(url: str, settings: Settings, keyring: Keyring, *, migrate: bool) -> tuple[asyncpg.Pool, Store]:
    """A pool on the database at `url` and the store over it. First the schema: brought up to date (`migrate`),
    else checked (ConfigError when this release's migrations are not all applied)."""
    from authsvc.store import Store, create_pool  # here: authsvc.store imports this module (connect_error)

    pool = await create_pool(url, max_size=settings.database_pool_size, command_timeout=settings.database_timeout)
    try:
        async with pool.acquire() as conn:
            if migrate:
                await migrations.apply(conn)
            else:
                await migrations.require_applied(conn)
        store = Store(pool, keyring, timeout=settings.database_timeout)
        if sealed := await store.reseal(only_plain=True):
            log.info("sealed %d keys carried over in plain text", sealed)
    except BaseException:  # a signal during start-up cancels it too
        pool.terminate()
        raise
    return pool, store
