"""The `authsvc` command line: serve, migrate, and manage apps."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from authsvc import apps, migrations
from authsvc.audit import cli_actor
from authsvc.config import Settings, parse_duration
from authsvc.database import database_url
from authsvc.errors import AuthsvcError, ConfigError
from authsvc.logs import configure_logging
from authsvc.server import open_store, serve
from authsvc.store import Store, create_pool

log = logging.getLogger("authsvc")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"authsvc: error: {message} (see 'authsvc --help')\n")


def _ttl(text: str) -> int:
    try:
        seconds = parse_duration(text)
    except AuthsvcError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    if seconds < 1:
        raise argparse.ArgumentTypeError("the token lifetime must be at least 1s")
    return int(seconds)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="authsvc", description="A gRPC token service for chat backends.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve_cmd = commands.add_parser("serve", help="run the gRPC server")
    serve_cmd.add_argument("--host", help="listen address (AUTHSVC_HOST, default 0.0.0.0)")
    serve_cmd.add_argument("--port", type=int, help="gRPC port (AUTHSVC_PORT, default 50051)")
    serve_cmd.add_argument("--http-port", type=int, help="HTTP port of /metrics (AUTHSVC_HTTP_PORT, default 8080)")
    serve_cmd.add_argument(
        "--workers", type=int, help="server processes sharing the port (AUTHSVC_WORKERS, default one per core)"
    )

    commands.add_parser("migrate", help="apply pending database migrations and exit")

    apps_cmd = commands.add_parser("apps", help="create, list and show apps")
    apps_sub = apps_cmd.add_subparsers(dest="apps_command", required=True, parser_class=_Parser)
    create = apps_sub.add_parser("create", help="create an app and print its credentials as JSON")
    create.add_argument("name")
    create.add_argument("--algorithm", default="HS256", choices=apps.ALGORITHMS)
    create.add_argument("--token-ttl", type=_ttl, help="default token lifetime, e.g. 1h (default: never expire)")
    create.add_argument("--disable-auth-checks", action="store_true", help="development only: accept dev tokens")
    create.add_argument("--require-iat", action="store_true", help="reject tokens without iat")
    create.add_argument(
        "--max-token-lifetime",
        type=_ttl,
        help="tokens must carry exp at most this far past iat, e.g. 24h; older revocations are pruned",
    )
    create.add_argument(
        "--format",
        choices=("json", "env"),
        default="json",
        help="json (default), or env: shell 'export API_KEY=... API_SECRET=...' lines for eval",
    )
    apps_sub.add_parser("list", help="list apps as JSON (without secrets)")
    show = apps_sub.add_parser("show", help="show one app as JSON (without its secret)")
    show.add_argument("api_key")
    return parser


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


async def _with_store(settings: Settings, url: str, work: Callable[[Store], Awaitable[int]]) -> int:
    pool, store = await open_store(url, settings)
    try:
        return await work(store)
    finally:
        await pool.close()


async def _apps_command(args: argparse.Namespace, store: Store) -> int:
    if args.apps_command == "create":
        app = await apps.create_app(
            store,
            args.name,
            algorithm=args.algorithm,
            token_ttl_seconds=args.token_ttl,
            auth_checks_disabled=args.disable_auth_checks,
            require_iat=args.require_iat,
            max_token_lifetime_seconds=args.max_token_lifetime,
            actor=cli_actor(),
        )
        if args.format == "env":
            print(f"export API_KEY={shlex.quote(app.api_key)}")
            print(f"export API_SECRET={shlex.quote(app.api_secret)}")
        else:
            _print_json(apps.describe(app, with_secret=True))
    elif args.apps_command == "list":
        _print_json([apps.describe(app) for app in await store.list_apps()])
    else:
        found = await store.get_app(args.api_key)
        if found is None:
            print(f"authsvc: no app has API key {args.api_key!r}", file=sys.stderr)
            return 1
        _print_json(apps.describe(found))
    return 0


async def _migrate(url: str, settings: Settings) -> int:
    pool = await create_pool(url, max_size=1, command_timeout=settings.database_timeout)
    try:
        async with pool.acquire() as conn:
            applied = await migrations.apply(conn)
    finally:
        await pool.close()
    print(f"applied {', '.join(applied)}" if applied else "database is up to date")
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            http_port=getattr(args, "http_port", None),
            workers=getattr(args, "workers", None),
        )
        if settings.workers < 0:
            raise ConfigError("--workers must be at least 1")
        if args.command == "serve":
            configure_logging(settings.log_level)
            serve(settings)
            return 0
        logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        with database_url(settings) as url:
            if args.command == "migrate":
                return asyncio.run(_migrate(url, settings))
            return asyncio.run(_with_store(settings, url, lambda store: _apps_command(args, store)))
    except AuthsvcError as exc:
        print(f"authsvc: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main() -> NoReturn:
    """Entry point of the `authsvc` console script."""
    sys.exit(run())
