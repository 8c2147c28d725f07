"""The `authsvc` command line: serve, migrate, and manage apps, keys and operators (as the AdminService does)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from authsvc import apps, operators, tokens
from authsvc.audit import cli_actor
from authsvc.clock import MICROS_PER_SECOND, Micros, from_datetime, iso, system_clock
from authsvc.config import Settings, parse_duration, unknown_variables
from authsvc.database import apply_migrations, database_url, keyring_for, open_store
from authsvc.errors import AuthsvcError, ConfigError, NotFound
from authsvc.logs import configure_logging
from authsvc.sealing import new_kek_text
from authsvc.store import Store
from authsvc.tokens import App
from authsvc.verifier import Verifier

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


def _ttl_or_none(text: str) -> int | None:
    return None if text.strip().lower() == "none" else _ttl(text)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except AuthsvcError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid worker count {text!r}; give 1 or more") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--workers must be at least 1, not {value}")
    return value


def _since(text: str) -> Micros:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}; use ISO 8601, e.g. 2025-01-31T12:00:00Z") from None
    return from_datetime(value if value.tzinfo is not None else value.replace(tzinfo=UTC))


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid limit {text!r}; give 1 to 1000") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"the limit must be 1 to 1000, not {value}")
    return value


def _claims(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--claims is not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('--claims must be a JSON object, e.g. \'{"room": "lobby"}\'')
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="authsvc", description="A gRPC token service for chat backends.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve_cmd = commands.add_parser("serve", help="run the gRPC server")
    serve_cmd.add_argument("--host", help="listen address (AUTHSVC_HOST, default 0.0.0.0)")
    serve_cmd.add_argument("--port", type=int, help="gRPC port (AUTHSVC_PORT, default 50051)")
    serve_cmd.add_argument("--http-port", type=int, help="HTTP port of /metrics (AUTHSVC_HTTP_PORT, default 8080)")
    serve_cmd.add_argument(
        "--workers", type=_workers, help="server processes sharing the port (AUTHSVC_WORKERS, default one per core)"
    )
    serve_cmd.add_argument(
        "--no-migrate",
        action="store_true",
        help="never change the schema; refuse a database that lacks a migration (AUTHSVC_MIGRATE=false)",
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
    create.add_argument("--api-secret-file", type=Path, help="import the API secret in this file (32+ random chars)")
    create.add_argument("--guest-access", action="store_true", help="let IssueGuestToken mint guest tokens")
    create.add_argument("--guest-token-ttl", type=_ttl, help="lifetime of guest tokens, e.g. 2h (default 24h)")
    create.add_argument("--anonymous-access", action="store_true", help="an empty token verifies as anonymous")
    create.add_argument(
        "--format",
        choices=("json", "env"),
        default="json",
        help="json (default), or env: shell 'export API_KEY=... API_SECRET=...' lines for eval",
    )
    apps_sub.add_parser("list", help="list apps as JSON (without secrets)")
    show = apps_sub.add_parser("show", help="show one app as JSON (without its secret)")
    show.add_argument("api_key")
    update = apps_sub.add_parser("update", help="change an app's settings; prints the app as JSON")
    update.add_argument("api_key")
    update.add_argument("--name")
    update.add_argument("--token-ttl", type=_ttl_or_none, default=apps.UNCHANGED, help="e.g. 1h, or none")
    update.add_argument("--max-token-lifetime", type=_ttl_or_none, default=apps.UNCHANGED, help="e.g. 24h, or none")
    checks = update.add_mutually_exclusive_group()
    checks.add_argument("--disable-auth-checks", dest="auth_checks_disabled", action="store_const", const=True)
    checks.add_argument("--enable-auth-checks", dest="auth_checks_disabled", action="store_const", const=False)
    iat = update.add_mutually_exclusive_group()
    iat.add_argument("--require-iat", dest="require_iat", action="store_const", const=True)
    iat.add_argument("--no-require-iat", dest="require_iat", action="store_const", const=False)
    guests = update.add_mutually_exclusive_group()
    guests.add_argument("--guest-access", dest="guest_access", action="store_const", const=True)
    guests.add_argument("--no-guest-access", dest="guest_access", action="store_const", const=False)
    update.add_argument("--guest-token-ttl", type=_ttl, help="lifetime of guest tokens, e.g. 2h")
    anonymous = update.add_mutually_exclusive_group()
    anonymous.add_argument("--anonymous-access", dest="anonymous_access", action="store_const", const=True)
    anonymous.add_argument("--no-anonymous-access", dest="anonymous_access", action="store_const", const=False)
    update.add_argument(
        "--algorithm",
        choices=apps.ALGORITHMS,
        help="EdDSA/ES256 get a new key pair; old-algorithm tokens stop verifying",
    )
    rotate_secret = apps_sub.add_parser("rotate-secret", help="give an app a new API secret; prints it (once)")
    rotate_secret.add_argument("api_key")
    rotate_secret.add_argument("--overlap", type=_duration, help="how long old secrets keep working (default 24h)")
    rotate_secret.add_argument("--api-secret-file", type=Path, help="import the new secret from this file")

    keys_cmd = commands.add_parser("keys", help="rotate, retire and re-encrypt keys")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    rotate = keys_sub.add_parser("rotate", help="publish a new key pair (EdDSA/ES256); it signs after a delay")
    rotate.add_argument("api_key")
    rotate.add_argument("--delay", type=_duration, help="before the new key signs (default 10m)")
    retire = keys_sub.add_parser("retire", help="stop a key verifying")
    retire.add_argument("api_key")
    retire.add_argument("key_id")
    keys_sub.add_parser("reencrypt", help="re-seal every key under the first KEK; prints how many were re-sealed")
    keys_sub.add_parser("new-kek", help="print a fresh key-encryption key (base64)")

    tokens_cmd = commands.add_parser("tokens", help="issue and verify tokens by hand, for development")
    tokens_sub = tokens_cmd.add_subparsers(dest="tokens_command", required=True, parser_class=_Parser)
    issue = tokens_sub.add_parser("issue", help="mint a user token and print it (audited)")
    issue.add_argument("api_key", metavar="API_KEY")
    issue.add_argument("user_id", metavar="USER_ID")
    issue.add_argument("--ttl", type=_ttl, help="lifetime, e.g. 1h (default: the app's token lifetime)")
    issue.add_argument("--claims", type=_claims, help='extra claims as a JSON object, e.g. \'{"room": "lobby"}\'')
    verify = tokens_sub.add_parser("verify", help="verify a token as VerifyToken would; prints the verdict as JSON")
    verify.add_argument("api_key", metavar="API_KEY")
    verify.add_argument("token", metavar="TOKEN")

    audit_cmd = commands.add_parser("audit", help="read the audit log")
    audit_sub = audit_cmd.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    audit_list = audit_sub.add_parser("list", help="recorded changes as JSON, newest first")
    audit_list.add_argument("--app", help="only changes of this API key")
    audit_list.add_argument("--action", help="only actions starting with this, e.g. key.")
    audit_list.add_argument("--actor", help="only changes by this actor, e.g. operator:alice")
    audit_list.add_argument("--since", type=_since, help="only changes at or after this ISO 8601 time")
    audit_list.add_argument("--limit", type=_limit, default=100, help="at most this many (1 to 1000, default 100)")

    operators_cmd = commands.add_parser("operators", help="operator tokens of the AdminService")
    operators_sub = operators_cmd.add_subparsers(dest="operators_command", required=True, parser_class=_Parser)
    new_token = operators_sub.add_parser("new-token", help="print a fresh 'ID:TOKEN' line for the tokens file")
    new_token.add_argument("operator_id", metavar="ID")
    return parser


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


async def _with_store(settings: Settings, url: str, work: Callable[[Store], Awaitable[int]]) -> int:
    pool, store = await open_store(url, settings, keyring_for(settings, warn=False), migrate=settings.migrate)
    try:
        return await work(store)
    finally:
        await pool.close()


def _read_secret(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the API secret file {path}: {getattr(exc, 'strerror', None) or exc}") from None


async def _existing(store: Store, api_key: str) -> App:
    app = await store.get_app(api_key)
    if app is None:
        raise NotFound(f"no app has API key {api_key!r}")
    return app


async def _store_command(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    if args.command == "apps":
        return await _apps_command(args, store, settings)
    if args.command == "keys":
        return await _keys_command(args, store, settings)
    if args.command == "tokens":
        return await _tokens_command(args, store, settings)
    events = await store.audit_events(
        api_key=args.app, action=args.action, actor=args.actor, since=args.since, limit=args.limit
    )
    _print_json(
        [
            {
                "id": event.id,
                "at": iso(event.at),
                "actor": event.actor,
                "action": event.action,
                "api_key": event.api_key,
                "peer": event.peer,
                "details": event.details,
            }
            for event in events
        ]
    )
    return 0


async def _tokens_command(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    app = await _existing(store, args.api_key)
    now = system_clock()
    if args.tokens_command == "issue":
        actor = cli_actor()
        jti = secrets.token_urlsafe(16)
        issued = tokens.issue(
            app,
            args.user_id,
            now=now,
            issuer=settings.issuer,
            jti=jti,
            ttl=None if args.ttl is None else args.ttl * MICROS_PER_SECOND,
            claims=args.claims,
        )
        await store.record_audit(
            actor,
            "token.issued",
            app.id,
            {"user_id": args.user_id, "jti": jti, "key_id": issued.key_id, "expires_at": iso(issued.expires_at)},
        )
        print(issued.token)
        return 0
    parsed = tokens.parse(args.token)
    user_id = parsed.payload.get("user_id") if parsed is not None else None
    revoked = await store.user_revoked_before(app.id, user_id) if isinstance(user_id, str) and user_id else None
    token_id = parsed.payload.get("jti") if parsed is not None else None
    token_revoked = await store.token_revoked_at(app.id, token_id) if isinstance(token_id, str) and token_id else None
    result = Verifier(0).verify(
        args.token,
        app,
        now=now,
        leeway=round(settings.clock_leeway * MICROS_PER_SECOND),
        revoked_before=lambda _app, _user, _iat: revoked,
        token_revoked_at=lambda _app, _jti: token_revoked,
    )
    action = result.client_action
    _print_json(
        {
            "valid": result.valid,
            "outcome": result.outcome.name,
            "role": result.role.name,
            "user_id": result.user_id or None,
            "issued_at": iso(result.issued_at),
            "expires_at": iso(result.expires_at),
            "claims": dict(result.claims),
            "dev_token": result.dev_token,
            "revoked_by": None if result.revoked_by is None else result.revoked_by.name,
            "revoked_before": iso(result.revoked_before),
            "valid_from": iso(result.valid_from),
            "client_action": None if action is None else action.name,
        }
    )
    return 0


async def _keys_command(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    if args.keys_command == "reencrypt":
        _print_json({"resealed": await store.reseal(actor=cli_actor())})
        return 0
    app = await _existing(store, args.api_key)
    if args.keys_command == "rotate":
        delay = settings.key_rotation_delay if args.delay is None else args.delay
        key_id, signs_from, _ = await apps.rotate_key(
            store, app, delay_seconds=delay, now=system_clock(), actor=cli_actor()
        )
        _print_json({"api_key": app.api_key, "key_id": key_id, "signs_from": iso(signs_from)})
    else:
        await apps.retire_key(store, app, args.key_id, now=system_clock(), actor=cli_actor())
        _print_json(apps.describe(await _existing(store, app.api_key)))
    return 0


async def _apps_command(args: argparse.Namespace, store: Store, settings: Settings) -> int:
    if args.apps_command == "create":
        app = await apps.create_app(
            store,
            args.name,
            algorithm=args.algorithm,
            token_ttl_seconds=args.token_ttl,
            auth_checks_disabled=args.disable_auth_checks,
            require_iat=args.require_iat,
            max_token_lifetime_seconds=args.max_token_lifetime,
            api_secret=_read_secret(args.api_secret_file),
            guest_access=args.guest_access,
            guest_token_ttl_seconds=args.guest_token_ttl,
            anonymous_access=args.anonymous_access,
            actor=cli_actor(),
        )
        if args.format == "env":
            print(f"export API_KEY={shlex.quote(app.api_key)}")
            print(f"export API_SECRET={shlex.quote(app.api_secret)}")
        else:
            _print_json(apps.describe(app, with_secret=True))
    elif args.apps_command == "list":
        _print_json([apps.describe(app) for app in await store.list_apps()])
    elif args.apps_command == "update":
        updated, _ = await apps.update_app(
            store,
            await _existing(store, args.api_key),
            name=args.name,
            algorithm=args.algorithm,
            token_ttl_seconds=args.token_ttl,
            max_token_lifetime_seconds=args.max_token_lifetime,
            auth_checks_disabled=args.auth_checks_disabled,
            require_iat=args.require_iat,
            guest_access=args.guest_access,
            guest_token_ttl_seconds=args.guest_token_ttl,
            anonymous_access=args.anonymous_access,
            actor=cli_actor(),
        )
        _print_json(apps.describe(updated))
    elif args.apps_command == "rotate-secret":
        app = await _existing(store, args.api_key)
        key_id, secret, _ = await apps.rotate_api_secret(
            store,
            app,
            overlap_seconds=settings.secret_overlap if args.overlap is None else args.overlap,
            actor=cli_actor(),
            new_secret=_read_secret(args.api_secret_file),
        )
        rotated = await _existing(store, app.api_key)
        expiries = [old.expires_at for old in rotated.secrets[1:] if old.expires_at is not None]
        _print_json(
            {
                "api_key": app.api_key,
                "key_id": key_id,
                "api_secret": secret,
                "old_secrets_expire_at": iso(max(expiries, default=None)),
            }
        )
    else:
        found = await store.get_app(args.api_key)
        if found is None:
            print(f"authsvc: no app has API key {args.api_key!r}", file=sys.stderr)
            return 1
        _print_json(apps.describe(found))
    return 0


async def _migrate(url: str, settings: Settings) -> int:
    applied = await apply_migrations(url, settings)
    print(f"applied {', '.join(applied)}" if applied else "database is up to date")
    return 0


def _serve(settings: Settings) -> int:
    # Imported here: the other commands reach the database alone, without loading the server (a third of their
    # start-up time).
    from authsvc.server import Interrupted
    from authsvc.workers import serve

    try:
        serve(settings)
    except Interrupted as exc:  # a stop signal during start-up
        return exc.exit_code
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        # Before the settings: these need none, and a bad operator token setting is what new-token helps fix.
        if args.command == "operators":
            print(operators.new_token(args.operator_id))
            return 0
        if args.command == "keys" and args.keys_command == "new-kek":
            print(new_kek_text())
            return 0
        settings = Settings.from_env(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            http_port=getattr(args, "http_port", None),
            workers=getattr(args, "workers", None),
            migrate=False if getattr(args, "no_migrate", False) else None,
        )
        if args.command == "serve":
            configure_logging(settings.log_level, ok_line_rate=settings.access_log_rate)
        else:
            logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if unknown := unknown_variables():
            log.warning("%s", unknown)
        if args.command == "serve":
            return _serve(settings)
        with database_url(settings) as url:
            if args.command == "migrate":
                return asyncio.run(_migrate(url, settings))
            return asyncio.run(_with_store(settings, url, lambda store: _store_command(args, store, settings)))
    except AuthsvcError as exc:
        print(f"authsvc: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`authsvc tokens verify ... | head`): no traceback; stdout is closed so that
        # Python's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def main() -> NoReturn:
    """Entry point of the `authsvc` console script."""
    sys.exit(run())
