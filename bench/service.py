"""authsvc as the bench runs it: the environment of its processes, `authsvc serve` on a free port (and the baseline
beside it), and the CLI calls that set a database up (migrate, apps create)."""

from __future__ import annotations

import importlib.util
import socket
import sys
from dataclasses import dataclass, fields

from authsvc.config import Settings
from authsvc.sealing import new_kek_text
from bench.servers import AUTHSVC, ServerProcess, clean_env, json_object_with, run_command

LOG_LEVEL = "WARNING"
HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None
BENCH_LOOP = "uvloop" if HAS_UVLOOP else "asyncio"
"""The event loop every bench server is told to run (the service's default `auto` picks the same)."""

Metadata = tuple[tuple[str, str], ...]


@dataclass
class AppCredentials:
    api_key: str
    api_secret: str

    @property
    def verify_md(self) -> Metadata:
        """What VerifyToken and VerifyTokens need: the app's API key."""
        return (("x-api-key", self.api_key),)

    @property
    def credential_md(self) -> Metadata:
        """What IssueToken and RevokeUser need: the API key and the API secret."""
        return (*self.verify_md, ("authorization", f"Bearer {self.api_secret}"))


class AppNotCreated(RuntimeError):
    """`authsvc apps create` failed; `said` is the last line it wrote."""

    def __init__(self, message: str, said: str) -> None:
        super().__init__(message)
        self.said = said


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


BENCH_KEK = new_kek_text()
"""One key-encryption key for every authsvc process of this run (they share the bench database)."""


def authsvc_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of every authsvc process the bench starts."""
    env = clean_env(
        AUTHSVC_DATABASE_URL=database_url,
        AUTHSVC_WORKERS="1",
        AUTHSVC_LOG_LEVEL=LOG_LEVEL,
        AUTHSVC_SHUTDOWN_GRACE="2s",
        AUTHSVC_KEK=BENCH_KEK,
    )
    # Side ports (a metrics endpoint, say) must not collide when two servers run at once.
    for f in fields(Settings):
        if f.name.endswith("_port") and f.name != "port":
            env[f"AUTHSVC_{f.name.upper()}"] = str(free_port())
    env.update(extra)
    return env


def authsvc_server(name: str, database_url: str, **extra: str) -> ServerProcess:
    argv = [*AUTHSVC, "serve", "--host", "127.0.0.1", "--port", "0"]
    loop_field = loop_setting()
    if loop_field is not None:  # say it: the loop measured must not depend on a default
        extra = {f"AUTHSVC_{loop_field.upper()}": BENCH_LOOP, **extra}
    return ServerProcess(name, argv, authsvc_env(database_url, **extra))


async def authsvc_cli(database_url: str, *args: str) -> tuple[int, str, str]:
    return await run_command([*AUTHSVC, *args], authsvc_env(database_url))


async def create_app(database_url: str, name: str, *extra: str) -> AppCredentials:
    code, out, err = await authsvc_cli(database_url, "apps", "create", name, *extra, "--format", "json")
    created = json_object_with(out, "api_secret") if code == 0 else None
    if created is None:
        said = (err.strip() or out.strip()).splitlines()[-1] if (err.strip() or out.strip()) else f"exit {code}"
        raise AppNotCreated(f"authsvc apps create {name} {' '.join(extra)} failed ({code}): {err.strip() or out}", said)
    return AppCredentials(created["api_key"], created["api_secret"])


async def migrate(database_url: str) -> None:
    code, out, err = await authsvc_cli(database_url, "migrate")
    if code != 0:
        raise RuntimeError(f"authsvc migrate failed ({code}): {err.strip() or out}")


def loop_setting() -> str | None:
    """The name of the server's event-loop setting, when this build has one."""
    return next((f.name for f in fields(Settings) if "loop" in f.name), None)


def uvloop_status() -> tuple[str | None, str]:
    """(settings field, reason): the server's event-loop option when uvloop can be tried, else why not."""
    loop_field = loop_setting()
    if loop_field is None:
        return None, (
            "uvloop: not measured — authsvc.config.Settings has no event-loop option (no AUTHSVC_EVENT_LOOP or "
            f"similar) in this build; uvloop is {'importable' if HAS_UVLOOP else 'not installed'} in .venv"
        )
    if not HAS_UVLOOP:
        return None, f"uvloop: not measured — the server has `{loop_field}` but uvloop is not installed in .venv"
    return loop_field, ""


def baseline_server(database_url: str) -> ServerProcess:
    """The baseline (bench/baseline_server.py) on a free loopback port, reading the apps of `database_url`."""
    argv = [sys.executable, "-m", "bench.baseline_server", "--database-url", database_url, "--port", "0"]
    return ServerProcess("baseline", argv, clean_env(AUTHSVC_KEK=BENCH_KEK))
