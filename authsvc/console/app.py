"""The console's routes (Starlette): a session check, then validate → the same domain and storage calls as
AdminService and AuthService (authsvc.apps, the store, authsvc.tokens) → render a page or redirect back.

Every form that changes something is a POST carrying the session's CSRF token; a failed check answers 403 and
changes nothing. An authsvc error (a bad value, an unknown key) is shown on the page it came from, in its own
words and reason; anything else is logged and answered with a page that says only "internal error".
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authsvc import apps, operators, tokens
from authsvc.audit import Actor
from authsvc.clock import MICROS_PER_SECOND, Clock, Micros, iso
from authsvc.config import parse_duration
from authsvc.console.figures import Figures
from authsvc.console.inspector import inspect
from authsvc.console.sessions import LINK_OPERATOR, LoginLimiter, LoginLink, Session, Sessions, same_secret
from authsvc.errors import AuthsvcError, ConfigError, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from authsvc.keys import ASYMMETRIC_ALGORITHMS
from authsvc.revoking import Revocations
from authsvc.state import State
from authsvc.store import Store
from authsvc.tokens import HS256, App

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "authsvc_console"
LOGIN_COOKIE = "authsvc_console_login"
"""The login form's CSRF token (double submit): there is no session yet to hold one."""
AUDIT_PAGE = 50
ALGORITHMS = (HS256, *sorted(ASYMMETRIC_ALGORITHMS))

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
"""On every answer: no script at all, nothing from elsewhere, never framed, never cached (a secret shown once)."""

_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
}
"""The HTTP status of a domain error's gRPC status; anything else (UNAVAILABLE: the database) is 503."""
_CURSOR = re.compile(r"[0-9]{1,18}\.[0-9]{1,18}")
"""An audit page cursor, `<at>.<id>`: two numbers that fit PostgreSQL's bigint."""


@dataclass
class Console:
    """What the console's routes work with: the serving process's store and state, and the console's own parts."""

    store: Store
    state: State
    clock: Clock
    operator_tokens: operators.OperatorHashes
    leeway: Micros
    key_rotation_delay: float
    secret_overlap: float
    revocations: Revocations
    sessions: Sessions
    figures: Figures
    secure: bool
    """Served over TLS: cookies are Secure, and HSTS is sent."""
    link: LoginLink | None = None
    limiter: LoginLimiter = field(default_factory=LoginLimiter)


class _SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS (and HSTS under TLS) to every answer."""

    def __init__(self, app: ASGIApp, secure: bool) -> None:
        self._app = app
        self._headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        if secure:
            self._headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in self._headers if h[0] not in names)]
            await send(message)

        await self._app(scope, receive, with_headers)


def _iso(micros: Micros | None) -> str:
    return iso(micros, "milliseconds") or ""


def _lifetime(seconds: int | float | None) -> str:
    if seconds is None:
        return "none"
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _duration(form: FormData, name: str, label: str) -> int | None:
    """A lifetime field: empty is none, else a duration such as 1h (whole seconds, more than 0)."""
    text = str(form.get(name) or "").strip()
    if not text or text.lower() == "none":
        return None
    try:
        seconds = parse_duration(text)
    except ConfigError as exc:
        raise InvalidArgument(f"{label}: {exc.message}", "INVALID_TTL") from None
    if seconds < 1 or seconds != int(seconds):
        raise InvalidArgument(f"{label} must be whole seconds, at least 1s", "INVALID_TTL")
    return int(seconds)


def _seconds(form: FormData, name: str, label: str, default: float) -> float:
    text = str(form.get(name) or "").strip()
    if not text:
        return default
    try:
        return parse_duration(text)
    except ConfigError as exc:
        raise InvalidArgument(f"{label}: {exc.message}", "INVALID_DURATION") from None


def _user_ids(form: FormData) -> list[str]:
    text = str(form.get("user_ids") or "")
    return tokens.validate_user_ids([part for part in text.replace(",", " ").split() if part])


def _peer(request: Request) -> str:
    client = request.client
    return "console" if client is None else f"console:{client.host}:{client.port}"


Handler = Callable[[Request, Session, FormData], Awaitable[Response | str]]
"""An action: returns a page, or a message to show on the page it came from."""


def build_app(console: Console) -> ASGIApp:
    """The console as an ASGI application."""
    templates = Jinja2Templates(directory=HERE / "templates")
    env = templates.env
    env.autoescape = True  # every template, whatever its name: output escaping everywhere
    env.filters["iso"] = _iso
    env.filters["lifetime"] = _lifetime

    def render(request: Request, name: str, session: Session | None, status: int = 200, **context: Any) -> Response:
        messages = session.told() if session is not None else []
        return templates.TemplateResponse(
            request,
            name,
            {"session": session, "messages": messages, "algorithms": ALGORITHMS, **context},
            status_code=status,
        )

    def back(path: str, session: Session, kind: str, message: str) -> Response:
        session.tell(kind, message)
        return RedirectResponse(path, status_code=303)

    def refuse(request: Request, status: int, message: str, session: Session | None = None) -> Response:
        return render(request, "refused.html", session, status, message=message)

    def session_of(request: Request) -> Session | None:
        return console.sessions.get(request.cookies.get(SESSION_COOKIE))

    def actor(request: Request, session: Session) -> Actor:
        return Actor(f"operator:{session.operator_id}", _peer(request))

    def page(
        handler: Callable[[Request, Session], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                return RedirectResponse("/login", status_code=303)
            try:
                return await handler(request, session)
            except AuthsvcError as exc:
                return refuse(request, _STATUS.get(exc.status, 503), f"{exc.message} ({exc.reason})", session)

        return endpoint

    def action(handler: Handler, came_from: Callable[[Request], str]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = session_of(request)
            if session is None:
                return refuse(request, 403, "You are not logged in (or your session has ended): log in again.")
            form = await request.form()
            if not same_secret(_text(form, "csrf"), session.csrf):
                return refuse(request, 403, "This form's CSRF token is missing or wrong: reload the page and retry.")
            try:
                answer = await handler(request, session, form)
            except AuthsvcError as exc:
                return back(came_from(request), session, "error", f"{exc.message} ({exc.reason})")
            return back(came_from(request), session, "ok", answer) if isinstance(answer, str) else answer

        return endpoint

    async def existing(api_key: str) -> App:
        """The app as the database has it now, as AdminService reads it before a change."""
        app = await console.store.get_app(api_key) if api_key else None
        if app is None:
            raise NotFound("no app has this API key", "APP_NOT_FOUND")
        return app

    def app_path(request: Request, tab: str = "") -> str:
        return f"/apps/{request.path_params['api_key']}{tab}"

    # -- login --

    async def login_page(request: Request, status: int = 200, message: str | None = None) -> Response:
        if session_of(request) is not None and status == 200:
            return RedirectResponse("/apps", status_code=303)
        token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
        response = render(
            request,
            "login.html",
            None,
            status,
            csrf=token,
            message=message,
            configured=bool(console.operator_tokens),
        )
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=console.secure)
        return response

    def logged_in(session_id: str) -> Response:
        response = RedirectResponse("/apps", status_code=303)
        response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="strict", secure=console.secure)
        response.delete_cookie(LOGIN_COOKIE)
        return response

    async def login(request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        wait = console.limiter.retry_after(address)
        if wait > 0:
            response = await login_page(request, 429, f"Too many failed logins: try again in {wait:.0f}s.")
            response.headers["retry-after"] = str(max(1, round(wait)))
            return response
        form = await request.form()
        cookie = request.cookies.get(LOGIN_COOKIE)
        if cookie is None or not same_secret(_text(form, "csrf"), cookie):
            return await login_page(request, 403, "The login form's CSRF token is missing or wrong: try again.")
        try:
            operator_id = operators.authenticate(_text(form, "token").strip(), console.operator_tokens)
        except (Unauthenticated, PermissionDenied) as exc:
            console.limiter.failed(address)
            log.warning("console: a failed login from %s (%s)", address, exc.reason)
            return await login_page(request, 401, "That is not an operator token.")
        session_id, _ = console.sessions.open(operator_id)
        log.info("console: operator %s logged in from %s", operator_id, address)
        return logged_in(session_id)

    async def login_link(request: Request) -> Response:
        if console.link is None or not console.link.redeem(request.query_params.get("code")):
            return await login_page(request, 403, "This login link is used up or wrong: log in with an operator token.")
        session_id, _ = console.sessions.open(LINK_OPERATOR)
        log.info("console: the one-time login link opened a session as operator %s", LINK_OPERATOR)
        return logged_in(session_id)

    async def logout(request: Request, session: Session, form: FormData) -> Response:
        console.sessions.close(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # -- apps --

    async def apps_page(request: Request, session: Session) -> Response:
        now = console.clock()
        listed = [apps.view(app, now) for app in await console.store.list_apps()]
        return render(request, "apps.html", session, apps=sorted(listed, key=lambda a: a.name.lower()))

    async def create_app(request: Request, session: Session, form: FormData) -> Response | str:
        algorithm = _text(form, "algorithm") or HS256
        if algorithm not in ALGORITHMS:
            raise InvalidArgument(f"algorithm must be one of {', '.join(ALGORITHMS)}", "INVALID_ALGORITHM")
        created = await apps.create_app(
            console.store,
            _text(form, "name"),
            algorithm=algorithm,
            token_ttl_seconds=_duration(form, "token_ttl", "token lifetime"),
            max_token_lifetime_seconds=_duration(form, "max_token_lifetime", "longest token lifetime"),
            auth_checks_disabled=form.get("auth_checks_disabled") == "on",
            require_iat=form.get("require_iat") == "on",
            actor=actor(request, session),
        )
        await console.state.catch_up()
        return render(
            request, "secret.html", session, app=apps.view(created, console.clock()), secret=created.api_secret,
            created=True,
        )  # fmt: skip

    async def app_page(request: Request, session: Session) -> Response:
        app = await existing(request.path_params["api_key"])
        return render(request, "app.html", session, app=apps.view(app, console.clock()), tab="settings")

    async def update_app(request: Request, session: Session, form: FormData) -> str:
        app = await existing(request.path_params["api_key"])
        updated, version = await apps.update_app(
            console.store,
            app,
            name=_text(form, "name") or None,
            token_ttl_seconds=_duration(form, "token_ttl", "token lifetime"),
            max_token_lifetime_seconds=_duration(form, "max_token_lifetime", "longest token lifetime"),
            auth_checks_disabled=form.get("auth_checks_disabled") == "on",
            require_iat=form.get("require_iat") == "on",
            guest_access=form.get("guest_access") == "on",
            guest_token_ttl_seconds=_duration(form, "guest_token_ttl", "guest token lifetime"),
            anonymous_access=form.get("anonymous_access") == "on",
            actor=actor(request, session),
        )
        if version is None:
            return "Nothing changed: every setting already had that value."
        await console.state.catch_up(version)
        if updated.auth_checks_disabled:
            return "Saved. Auth checks are DISABLED: this app accepts unsigned developer tokens."
        return "Saved."

    # -- keys --

    async def keys_page(request: Request, session: Session) -> Response:
        app = await existing(request.path_params["api_key"])
        published = console.state.app(app.api_key) or app
        jwks = json.dumps({"keys": published.jwks()}, indent=2)
        return render(request, "keys.html", session, app=apps.view(app, console.clock()), tab="keys", jwks=jwks)

    async def rotate_key(request: Request, session: Session, form: FormData) -> str:
        app = await existing(request.path_params["api_key"])
        delay = _seconds(form, "delay", "delay", console.key_rotation_delay)
        key_id, signs_from, version = await apps.rotate_key(
            console.store, app, delay_seconds=delay, now=console.clock(), actor=actor(request, session)
        )
        await console.state.catch_up(version)
        return f"Key {key_id} is published now and signs from {_iso(signs_from)}."

    async def retire_key(request: Request, session: Session, form: FormData) -> str:
        app = await existing(request.path_params["api_key"])
        key_id = _text(form, "key_id")
        if not key_id:
            raise InvalidArgument("key_id is empty; name the key to retire", "MISSING_KEY_ID")
        version = await apps.retire_key(console.store, app, key_id, now=console.clock(), actor=actor(request, session))
        await console.state.catch_up(version)
        return f"Key {key_id} is retired: its tokens now get UNKNOWN_KEY."

    async def rotate_secret(request: Request, session: Session, form: FormData) -> Response:
        app = await existing(request.path_params["api_key"])
        overlap = _seconds(form, "overlap", "overlap", console.secret_overlap)
        _, secret, version = await apps.rotate_api_secret(
            console.store, app, overlap_seconds=overlap, actor=actor(request, session)
        )
        await console.state.catch_up(version)
        rotated = console.state.app(app.api_key) or await existing(app.api_key)
        return render(
            request, "secret.html", session, app=apps.view(rotated, console.clock()), secret=secret, created=False,
            overlap=_lifetime(overlap),
        )  # fmt: skip

    # -- revocations --

    async def revocations_page(request: Request, session: Session) -> Response:
        app = await existing(request.path_params["api_key"])
        await console.state.catch_up()
        lookup: dict[str, Any] | None = None
        if user_id := request.query_params.get("user_id", "").strip():
            tokens.validate_user_id(user_id)
            current = console.state.app(app.api_key) or app
            user = console.state.user_revoked_before(current.id, user_id)
            whole = current.revoked_before
            effective = max((t for t in (user, whole) if t is not None), default=None)
            lookup = {"user_id": user_id, "user": user, "app": whole, "effective": effective}
        return render(
            request, "revocations.html", session, app=apps.view(app, console.clock()), tab="revocations", lookup=lookup
        )

    async def revoke_users(request: Request, session: Session, form: FormData) -> str:
        app = await existing(request.path_params["api_key"])
        user_ids = _user_ids(form)
        in_force = await console.revocations.revoke_users(app.id, user_ids, None, actor=actor(request, session))
        return f"Revoked the tokens of {', '.join(user_ids)} issued before {_iso(max(in_force.values()))}."

    async def revoke_app(request: Request, session: Session, form: FormData) -> str:
        app = await existing(request.path_params["api_key"])
        in_force = await console.revocations.revoke_app(app.id, None, actor=actor(request, session))
        return f"Revoked every token of the app issued before {_iso(in_force)}."

    async def clear_users(request: Request, session: Session, form: FormData) -> str:
        app = await existing(request.path_params["api_key"])
        user_ids = _user_ids(form)
        cleared = await console.revocations.clear_users(app.id, user_ids, actor=actor(request, session))
        return f"Cleared the revocation of {', '.join(cleared)}." if cleared else "None of them was revoked."

    async def clear_app(request: Request, session: Session, form: FormData) -> str:
        app = await existing(request.path_params["api_key"])
        had = await console.revocations.clear_app(app.id, actor=actor(request, session))
        return "Cleared the app's revocation." if had else "The app was not revoked."

    # -- inspector, audit, figures --

    async def inspect_page(request: Request, session: Session) -> Response:
        listed = sorted(console.state.apps(), key=lambda a: a.name.lower())
        return render(request, "inspect.html", session, apps=listed, result=None, chosen="")

    async def inspect_token(request: Request, session: Session, form: FormData) -> Response:
        await console.state.catch_up()
        app = console.state.app(_text(form, "api_key"))
        if app is None:
            raise NotFound("choose an app: no app has this API key", "APP_NOT_FOUND")
        token = _text(form, "token")
        if not token.strip():
            raise InvalidArgument("paste a token", "MISSING_TOKEN")
        state = console.state
        result = inspect(
            token,
            app,
            now=console.clock(),
            leeway=console.leeway,
            revoked_before=state.revoking,
            token_revoked_at=state.token_revoked_at if state.token_revocations_held else None,
        )
        listed = sorted(console.state.apps(), key=lambda a: a.name.lower())
        return render(request, "inspect.html", session, apps=listed, result=result, chosen=app.api_key)

    async def audit_page(request: Request, session: Session) -> Response:
        query = request.query_params
        filters = {name: query.get(name, "").strip() for name in ("app", "action", "actor", "since")}
        since: Micros | None = None
        if filters["since"]:
            try:
                parsed = datetime.fromisoformat(filters["since"])
            except ValueError:
                raise InvalidArgument(
                    "since must be a date and time such as 2026-11-30T09:00", "INVALID_TIMESTAMP"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            since = int(parsed.timestamp() * MICROS_PER_SECOND)
        before: tuple[Micros, int] | None = None
        if cursor := query.get("before", ""):
            # ASCII digits only (str.isdigit takes '²', which int() refuses), and few enough for PostgreSQL's bigint.
            if _CURSOR.fullmatch(cursor) is None:
                raise InvalidArgument("before is not a page cursor of this console", "INVALID_CURSOR")
            at, _, event_id = cursor.partition(".")
            before = (int(at), int(event_id))
        events = await console.store.audit_events(
            api_key=filters["app"] or None,
            action=filters["action"] or None,
            actor=filters["actor"] or None,
            since=since,
            limit=AUDIT_PAGE + 1,
            before=before,
        )
        more = len(events) > AUDIT_PAGE
        events = events[:AUDIT_PAGE]
        older = None
        if more:
            last = events[-1]
            older = urlencode({**{k: v for k, v in filters.items() if v}, "before": f"{last.at}.{last.id}"})
        return render(request, "audit.html", session, events=events, filters=filters, older=older, paged=bool(before))

    async def figures_page(request: Request, session: Session) -> Response:
        return render(request, "figures.html", session, processes=console.figures.current())

    async def home(request: Request) -> Response:
        return RedirectResponse("/apps" if session_of(request) else "/login", status_code=303)

    routes = [
        Route("/", home),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/login/link", login_link, methods=["GET"]),
        Route("/logout", action(logout, lambda r: "/login"), methods=["POST"]),
        Route("/apps", page(apps_page), methods=["GET"]),
        Route("/apps", action(create_app, lambda r: "/apps"), methods=["POST"]),
        Route("/apps/{api_key}", page(app_page), methods=["GET"]),
        Route("/apps/{api_key}/settings", action(update_app, app_path), methods=["POST"]),
        Route("/apps/{api_key}/keys", page(keys_page), methods=["GET"]),
        Route("/apps/{api_key}/keys/rotate", action(rotate_key, lambda r: app_path(r, "/keys")), methods=["POST"]),
        Route("/apps/{api_key}/keys/retire", action(retire_key, lambda r: app_path(r, "/keys")), methods=["POST"]),
        Route("/apps/{api_key}/secret/rotate", action(rotate_secret, lambda r: app_path(r, "/keys")), methods=["POST"]),
        Route("/apps/{api_key}/revocations", page(revocations_page), methods=["GET"]),
        *(
            Route(
                f"/apps/{{api_key}}/revocations/{name}",
                action(handler, lambda r: app_path(r, "/revocations")),
                methods=["POST"],
            )
            for name, handler in (
                ("revoke-users", revoke_users),
                ("revoke-app", revoke_app),
                ("clear-users", clear_users),
                ("clear-app", clear_app),
            )
        ),  # fmt: skip
        Route("/inspect", page(inspect_page), methods=["GET"]),
        Route("/inspect", action(inspect_token, lambda r: "/inspect"), methods=["POST"]),
        Route("/audit", page(audit_page), methods=["GET"]),
        Route("/figures", page(figures_page), methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return refuse(request, 404, "There is no such page.", session_of(request))

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("console: %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        return refuse(request, 500, "Internal error: the server's log has the details.", session_of(request))

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found, Exception: internal})
    return _SecurityHeaders(app, console.secure)


def _text(form: FormData | Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""
