"""Which PostgreSQL authsvc talks to: the configured URL, or an embedded server in the data dir."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from authsvc.config import Settings
from authsvc.errors import ConfigError

log = logging.getLogger(__name__)


def describe(url: str) -> str:
    """The URL without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


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
