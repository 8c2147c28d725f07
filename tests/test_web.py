"""authsvc.web in a chat backend: a FastAPI app and a plain ASGI app, served by uvicorn on an ephemeral port,
called with httpx, verifying against the session's real authsvc server (docs/web.md is the contract).

Each backend has a session table (cookie `session` → user id), a protected route `/messages` answering the user
of the token, an open `/healthz`, and the token provider at `/auth/token`.
"""

import asyncio
import base64
import json
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from starlette.requests import Request as StarletteRequest

from authsvc.client import AuthClient, LocalVerifier, Role, Verification, VerifyOutcome
from authsvc.config import Settings
from authsvc.server import RunningServer, start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.tokens import App
from authsvc.web import asgi, contract
from authsvc.web.asgi import BearerAuthMiddleware, TokenProvider
from authsvc.web.contract import TokenVerifier
from authsvc.web.fastapi import BearerAuth, mount_token_provider, use_authsvc_errors
from tests import test_node_client as node
from tests.conftest import NewApp
from tests.processes import clean_env
from tests.support import FakeClock
from tests.test_watch import eventually

ROOT = Path(__file__).resolve().parent.parent
NODE_CLIENT = ROOT / "clients" / "node"
REALM = "chat"
TOKEN_PATH = "/auth/token"
JSON = {"content-type": "application/json"}
WAIT = 10.0


@dataclass
class Sessions:
    """The backend's own sessions: cookie value → user id; counts how often the token provider asked."""

    users: dict[str, str] = field(default_factory=dict)
    asked: int = 0

    def identify(self, request: Any) -> str | None:
        self.asked += 1
        return self.users.get(request.cookies.get("session", ""))

    async def identify_async(self, request: StarletteRequest) -> str | None:
        await asyncio.sleep(0)
        return self.identify(request)


def room_claims(request: Any, user_id: str) -> dict[str, Any]:
    return {"room": "general", "name": user_id.upper()}


def fastapi_backend(
    verifier: TokenVerifier, client: AuthClient, sessions: Sessions, *, allow_anonymous: bool = False
) -> FastAPI:
    app = FastAPI()
    use_authsvc_errors(app)
    user = BearerAuth(verifier, realm=REALM, allow_anonymous=allow_anonymous)

    @app.get("/messages")
    async def messages(auth: Annotated[Verification, Depends(user)]) -> dict[str, Any]:
        return {"user": auth.user_id, "room": auth.claims.get("room")}

    @app.get("/whoami")
    async def whoami(auth: Annotated[Verification, Depends(user)]) -> dict[str, Any]:
        return {"user": auth.user_id, "role": auth.role.name, "outcome": auth.outcome.name}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    mount_token_provider(
        app, TOKEN_PATH, client=client, identify=sessions.identify_async, ttl=timedelta(minutes=1), claims=room_claims
    )
    return app


def asgi_backend(
    verifier: TokenVerifier, client: AuthClient, sessions: Sessions, *, allow_anonymous: bool = False
) -> asgi.ASGIApp:
    provider = TokenProvider(client, sessions.identify, ttl=timedelta(minutes=1), claims=room_claims)

    async def app(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["path"] == TOKEN_PATH:
            await provider(scope, receive, send)
            return
        if scope["path"] == "/healthz":
            body: dict[str, Any] = {"status": "ok"}
        elif scope["path"] == "/whoami":
            who: Verification = scope["state"]["authsvc"]
            body = {"user": who.user_id, "role": who.role.name, "outcome": who.outcome.name}
        else:
            auth: Verification = scope["state"]["authsvc"]
            body = {"user": auth.user_id, "room": auth.claims.get("room")}
        encoded = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": encoded})

    return BearerAuthMiddleware(
        app, verifier=verifier, realm=REALM, exclude={"/healthz", TOKEN_PATH}, allow_anonymous=allow_anonymous
    )


Backend = Callable[..., Any]
BACKENDS: dict[str, Backend] = {"fastapi": fastapi_backend, "asgi": asgi_backend}


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serves `app` with uvicorn on an ephemeral loopback port, in this event loop; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(WAIT):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class CountingLocal:
    """The backend's LocalVerifier, counting its verify calls (True for the empty token); it keeps no token."""

    def __init__(self, verifier: LocalVerifier, calls: list[bool]) -> None:
        self.verifier, self.calls = verifier, calls

    def verify(self, token: str) -> Verification:
        self.calls.append(token == "")
        return self.verifier.verify(token)


class CountingClient:
    """The backend's AuthClient, counting its VerifyToken calls (True for the empty token); it keeps no token."""

    def __init__(self, client: AuthClient, calls: list[bool]) -> None:
        self.client, self.calls = client, calls

    async def verify_token(self, token: str) -> Verification:
        self.calls.append(token == "")
        return await self.client.verify_token(token)


@dataclass
class Chat:
    """A running backend and what a test needs around it; `verify_calls` has one entry per verification the
    backend asked of its verifier (True when it verified the empty token)."""

    url: str
    app: App
    sessions: Sessions
    client: AuthClient
    verifier: TokenVerifier
    http: httpx.AsyncClient
    verify_calls: list[bool] = field(default_factory=list)


@asynccontextmanager
async def running_backend(
    kind: str,
    verifier_kind: str,
    server: RunningServer,
    app: App,
    clock: FakeClock,
    *,
    allow_anonymous: bool = False,
    **verifier_options: Any,
) -> AsyncIterator[Chat]:
    target = f"127.0.0.1:{server.port}"
    sessions = Sessions({"s-alice": "alice", "s-bob": "bob", "s-broken": "not a user id!"})
    client = AuthClient(target, app.api_key, app.api_secret)
    verifier: TokenVerifier
    if verifier_kind == "local":
        local = LocalVerifier(
            target, app.api_key, app.api_secret, hs256_secret=app.api_secret, clock=clock, metrics=False,
            **verifier_options,
        )  # fmt: skip
        await local.start()
        verifier = local
    else:
        verifier = client
    calls: list[bool] = []
    counting = CountingLocal(verifier, calls) if isinstance(verifier, LocalVerifier) else CountingClient(client, calls)
    backend = BACKENDS[kind](counting, client, sessions, allow_anonymous=allow_anonymous)
    try:
        async with serve(backend) as url, httpx.AsyncClient(base_url=url) as http:
            yield Chat(url, app, sessions, client, verifier, http, calls)
    finally:
        if isinstance(verifier, LocalVerifier):
            await verifier.close()
        await client.close()


@pytest.fixture(params=[("fastapi", "local"), ("fastapi", "rpc"), ("asgi", "local"), ("asgi", "rpc")], ids="-".join)
async def chat(
    request: pytest.FixtureRequest, server: RunningServer, new_app: NewApp, clock: FakeClock
) -> AsyncIterator[Chat]:
    """A backend (FastAPI or plain ASGI) verifying with a LocalVerifier or with AuthClient (VerifyToken)."""
    kind, verifier_kind = request.param
    async with running_backend(kind, verifier_kind, server, await new_app("web"), clock) as running:
        yield running


@pytest.fixture(params=["fastapi", "asgi"])
async def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


class LoggedOut(Exception):
    """The reference client was told to log out."""


@dataclass
class ChatClient:
    """The client docs/web.md describes: it sends its token, and on `action: refresh` fetches a fresh one from the
    token provider and retries once; on `logout` it stops."""

    http: httpx.AsyncClient
    session: str
    token: str | None = None
    refreshed: int = 0

    async def fetch_token(self) -> None:
        answer = await self.http.post(TOKEN_PATH, json={}, headers=cookie(self.session))
        assert answer.status_code == 200, answer.text
        self.token = answer.json()["token"]

    async def get(self, path: str) -> httpx.Response:
        if self.token is None:
            await self.fetch_token()
        answer = await self.http.get(path, headers={"authorization": f"Bearer {self.token}"})
        if answer.status_code == 401 and answer.json()["action"] == "refresh":
            await self.fetch_token()
            self.refreshed += 1
            answer = await self.http.get(path, headers={"authorization": f"Bearer {self.token}"})
        if answer.status_code == 401 and answer.json()["action"] == "logout":
            raise LoggedOut(answer.json()["outcome"])
        return answer


def cookie(session: str) -> dict[str, str]:
    """The Cookie header of a browser signed in to the backend."""
    return {"cookie": f"session={session}"}


def challenge(answer: httpx.Response) -> dict[str, str]:
    """The parameters of the response's `WWW-Authenticate: Bearer ...`."""
    value = answer.headers["www-authenticate"]
    assert value.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


def jwt_payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return payload


def assert_refused(answer: httpx.Response, status: int, error: str, action: str, outcome: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == {"error", "error_description", "outcome", "action"}
    assert (body["error"], body["action"], body["outcome"]) == (error, action, outcome)


# The refresh flow, and logging out.


async def test_a_client_refreshes_on_expired_and_retries_successfully(chat: Chat, clock: FakeClock) -> None:
    clock.freeze()
    alice = ChatClient(chat.http, "s-alice")
    first = await alice.get("/messages")
    assert first.status_code == 200 and first.json() == {"user": "alice", "room": "general"}
    expired_token = alice.token
    assert expired_token is not None

    clock.advance(2 * 60 * 1_000_000)  # past the minute's ttl and the 5 s leeway
    answer = await chat.http.get("/messages", headers={"authorization": f"Bearer {expired_token}"})
    assert_refused(answer, 401, "invalid_token", "refresh", "EXPIRED")
    assert challenge(answer) == {
        "realm": REALM,
        "error": "invalid_token",
        "error_description": "EXPIRED: " + contract.DESCRIPTIONS[VerifyOutcome.EXPIRED],
    }

    asked = chat.sessions.asked
    again = await alice.get("/messages")
    assert again.status_code == 200 and again.json()["user"] == "alice"
    assert alice.refreshed == 1 and chat.sessions.asked == asked + 1
    assert alice.token != expired_token


async def test_a_client_whose_token_is_revoked_is_told_to_log_out_and_stops(chat: Chat) -> None:
    bob = ChatClient(chat.http, "s-bob")
    assert (await bob.get("/messages")).json()["user"] == "bob"
    token = bob.token
    assert token is not None
    await chat.client.revoke_users(["bob"])
    if isinstance(chat.verifier, LocalVerifier):
        local = chat.verifier
        await eventually(lambda: local.verify(token).outcome is VerifyOutcome.REVOKED)

    asked = chat.sessions.asked
    with pytest.raises(LoggedOut, match="REVOKED"):
        await bob.get("/messages")
    assert chat.sessions.asked == asked and bob.refreshed == 0, "no refresh after REVOKED"
    answer = await chat.http.get("/messages", headers={"authorization": f"Bearer {token}"})
    assert_refused(answer, 401, "invalid_token", "logout", "REVOKED")
    assert challenge(answer)["error_description"].startswith("REVOKED: ")
    assert token not in answer.text and token not in str(answer.headers)


@pytest.mark.parametrize(
    ("mangle", "outcome"),
    [
        (lambda token: token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), "INVALID_SIGNATURE"),
        (lambda token: "not-a-jwt", "MALFORMED"),
    ],
)
async def test_a_token_that_does_not_verify_means_log_out(
    chat: Chat, mangle: Callable[[str], str], outcome: str
) -> None:
    issued = await chat.client.issue_token("alice")
    bad = mangle(issued.token)
    answer = await chat.http.get("/messages", headers={"authorization": f"Bearer {bad}"})
    assert_refused(answer, 401, "invalid_token", "logout", outcome)
    assert challenge(answer)["error_description"].startswith(f"{outcome}: ")
    assert bad not in answer.text and bad not in str(answer.headers)


async def test_a_token_not_valid_yet_means_retry_later_and_a_revoked_device_logs_out(chat: Chat) -> None:
    ahead = jwt.encode({"user_id": "alice", "nbf": int(time.time()) + 600}, chat.app.api_secret, "HS256")
    answer = await chat.http.get("/messages", headers={"authorization": f"Bearer {ahead}"})
    assert_refused(answer, 401, "invalid_token", "retry_later", "NOT_YET_VALID")
    assert (
        challenge(answer)["error_description"]
        == "NOT_YET_VALID: the token is not valid yet; retry later with the same token"
    )
    token = (await chat.client.issue_token("alice")).token
    await chat.client.revoke_token(token)
    if isinstance(chat.verifier, LocalVerifier):
        local = chat.verifier
        await eventually(lambda: local.verify(token).outcome is VerifyOutcome.REVOKED)
    answer = await chat.http.get("/messages", headers={"authorization": f"Bearer {token}"})
    assert_refused(answer, 401, "invalid_token", "logout", "REVOKED")


async def test_a_token_of_another_app_means_log_out(chat: Chat, new_app: NewApp, server: RunningServer) -> None:
    other = await new_app("other")
    async with AuthClient(f"127.0.0.1:{server.port}", other.api_key, other.api_secret) as client:
        token = (await client.issue_token("alice")).token
    answer = await chat.http.get("/messages", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 401 and answer.json()["action"] == "logout"
    assert answer.json()["outcome"] in ("INVALID_SIGNATURE", "WRONG_AUDIENCE", "UNKNOWN_KEY")


# Missing and malformed headers; open paths.


async def test_no_bearer_token_is_a_401_without_an_error_code(chat: Chat) -> None:
    for headers in ({}, {"authorization": "Basic YWxpY2U6c2VjcmV0"}):
        answer = await chat.http.get("/messages", headers=headers)
        assert_refused(answer, 401, "missing_token", "authenticate")
        assert answer.headers["www-authenticate"] == f'Bearer realm="{REALM}"'


async def test_without_allow_anonymous_no_bearer_token_calls_no_verifier(chat: Chat) -> None:
    for headers in ({}, {"authorization": "Basic YWxpY2U6c2VjcmV0"}):
        assert_refused(await chat.http.get("/whoami", headers=headers), 401, "missing_token", "authenticate")
    assert chat.verify_calls == [], "no VerifyToken (nor local verify) for a request without a bearer token"


# Anonymous users (allow_anonymous): a request without bearer credentials is verified as the empty token.

VERIFIERS = [("fastapi", "local"), ("fastapi", "rpc"), ("asgi", "local"), ("asgi", "rpc")]


@pytest.mark.parametrize(("kind", "verifier_kind"), VERIFIERS, ids=["-".join(kinds) for kinds in VERIFIERS])
async def test_allow_anonymous_admits_anonymous_users_of_an_app_that_allows_them(
    kind: str, verifier_kind: str, server: RunningServer, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app("web-anonymous", anonymous_access=True)
    async with running_backend(kind, verifier_kind, server, app, clock, allow_anonymous=True) as chat:
        for headers in ({}, {"authorization": "Basic YWxpY2U6c2VjcmV0"}):
            answer = await chat.http.get("/whoami", headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"user": None, "role": "ANONYMOUS", "outcome": "VALID"}
        assert chat.verify_calls == [True, True], "each verified as the empty token"

        # A user's token still names its user; a token that fails is refused for itself, never made anonymous.
        token = (await chat.client.issue_token("alice")).token
        answer = await chat.http.get("/whoami", headers={"authorization": f"Bearer {token}"})
        assert answer.json() == {"user": "alice", "role": "USER", "outcome": "VALID"}
        answer = await chat.http.get("/whoami", headers={"authorization": "Bearer not-a-jwt"})
        assert_refused(answer, 401, "invalid_token", "logout", "MALFORMED")
        clock.freeze()
        short = (await chat.client.issue_token("alice", ttl=timedelta(minutes=1))).token
        clock.advance(2 * 60 * 1_000_000)
        answer = await chat.http.get("/whoami", headers={"authorization": f"Bearer {short}"})
        assert_refused(answer, 401, "invalid_token", "refresh", "EXPIRED")
        # A malformed header is still the client's bug.
        for value in ("Bearer", "Bearer one two"):
            answer = await chat.http.get("/whoami", headers={"authorization": value})
            assert_refused(answer, 400, "invalid_request", "fix_request")
        answer = await chat.http.get("/whoami", headers=[("authorization", "Bearer a"), ("authorization", "Bearer b")])
        assert_refused(answer, 400, "invalid_request", "fix_request")
        assert chat.verify_calls == [True, True, False, False, False], "the 400s verify nothing"


@pytest.mark.parametrize(("kind", "verifier_kind"), VERIFIERS, ids=["-".join(kinds) for kinds in VERIFIERS])
async def test_allow_anonymous_for_an_app_without_anonymous_access_is_the_usual_401(
    kind: str, verifier_kind: str, server: RunningServer, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app("web-anonymous-off")
    async with running_backend(kind, verifier_kind, server, app, clock, allow_anonymous=True) as chat:
        for headers in ({}, {"authorization": "Basic YWxpY2U6c2VjcmV0"}):
            answer = await chat.http.get("/whoami", headers=headers)
            assert_refused(answer, 401, "missing_token", "authenticate")
            assert answer.headers["www-authenticate"] == f'Bearer realm="{REALM}"'
        assert chat.verify_calls == [True, True], "asked, and authsvc said ANONYMOUS_DISABLED"


@pytest.mark.parametrize(("kind", "verifier_kind"), VERIFIERS, ids=["-".join(kinds) for kinds in VERIFIERS])
async def test_without_allow_anonymous_an_app_allowing_anonymous_users_still_needs_a_token(
    kind: str, verifier_kind: str, server: RunningServer, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app("web-anonymous-opt-out", anonymous_access=True)
    async with running_backend(kind, verifier_kind, server, app, clock) as chat:
        answer = await chat.http.get("/whoami")
        assert_refused(answer, 401, "missing_token", "authenticate")
        assert answer.headers["www-authenticate"] == f'Bearer realm="{REALM}"'
        assert chat.verify_calls == []


async def test_allow_anonymous_fails_closed_when_authsvc_cannot_answer(
    backend_kind: str, server: RunningServer, new_app: NewApp
) -> None:
    app = await new_app("web-anonymous-down", anonymous_access=True)
    sessions = Sessions()
    down = AuthClient(f"127.0.0.1:{closed_port()}", app.api_key, app.api_secret, timeout=1.0, retry_backoff=0.01)
    backend = BACKENDS[backend_kind](down, down, sessions, allow_anonymous=True)
    async with down, serve(backend) as url, httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/whoami")
        assert_refused(answer, 503, "temporarily_unavailable", "retry")
        assert answer.headers["retry-after"] == str(contract.DEFAULT_RETRY_AFTER)

    wrong = AuthClient(f"127.0.0.1:{server.port}", "no-such-api-key", app.api_secret)
    backend = BACKENDS[backend_kind](wrong, wrong, sessions, allow_anonymous=True)
    async with wrong, serve(backend) as url, httpx.AsyncClient() as http:
        assert_refused(await http.get(f"{url}/whoami"), 500, "server_error", "retry")


async def test_allow_anonymous_with_a_local_verifier_past_its_max_lag_answers_503(
    backend_kind: str, store: Store, state: State, settings: Settings, clock: FakeClock, new_app: NewApp
) -> None:
    app = await new_app("web-anonymous-lag", anonymous_access=True)
    own = await start_server(store, state, settings.with_overrides(watch_heartbeat=0.1), clock)
    try:
        async with running_backend(backend_kind, "local", own, app, clock, allow_anonymous=True, max_lag=0.5) as chat:
            assert (await chat.http.get("/whoami")).json()["role"] == "ANONYMOUS"
            await own.stop(None)
            local = chat.verifier
            assert isinstance(local, LocalVerifier)
            await eventually(lambda: local.lag > 0.5)
            answer = await chat.http.get("/whoami")
            assert_refused(answer, 503, "temporarily_unavailable", "retry", "UNAVAILABLE")
            assert answer.headers["retry-after"] == str(contract.DEFAULT_RETRY_AFTER)
    finally:
        await own.stop(None)


@pytest.mark.parametrize(
    "headers",
    [
        [("authorization", "Bearer")],
        [("authorization", "Bearer <token>")],
        [("authorization", "Bearer one two")],
        [("authorization", "Bearer a,b")],
        [("authorization", "Bearer a"), ("authorization", "Bearer b")],
    ],
    ids=["no-token", "bad-characters", "two-tokens", "comma", "two-headers"],
)
async def test_a_malformed_authorization_header_is_a_400_invalid_request(
    chat: Chat, headers: list[tuple[str, str]]
) -> None:
    answer = await chat.http.get("/messages", headers=headers)
    assert_refused(answer, 400, "invalid_request", "fix_request")
    params = challenge(answer)
    assert params["realm"] == REALM and params["error"] == "invalid_request" and params["error_description"]


async def test_excluded_paths_need_no_token_and_the_scheme_is_case_insensitive(chat: Chat) -> None:
    assert (await chat.http.get("/healthz")).json() == {"status": "ok"}
    token = (await chat.client.issue_token("alice")).token
    answer = await chat.http.get("/messages", headers={"authorization": f"bearer {token}"})
    assert answer.status_code == 200 and answer.json()["user"] == "alice"


# When the verifier cannot vouch: fail closed.


async def test_a_local_verifier_past_its_max_lag_answers_503_with_retry_after(
    backend_kind: str,
    store: Store,
    state: State,
    settings: Settings,
    clock: FakeClock,
    new_app: NewApp,
) -> None:
    app = await new_app("web-lag")
    own = await start_server(store, state, settings.with_overrides(watch_heartbeat=0.1), clock)
    try:
        async with running_backend(backend_kind, "local", own, app, clock, max_lag=0.5) as chat:
            token = (await chat.client.issue_token("alice")).token
            headers = {"authorization": f"Bearer {token}"}
            assert (await chat.http.get("/messages", headers=headers)).status_code == 200
            await own.stop(None)
            local = chat.verifier
            assert isinstance(local, LocalVerifier)
            await eventually(lambda: local.lag > 0.5)
            answer = await chat.http.get("/messages", headers=headers)
            assert_refused(answer, 503, "temporarily_unavailable", "retry", "UNAVAILABLE")
            assert answer.headers["retry-after"] == str(contract.DEFAULT_RETRY_AFTER)
            assert "www-authenticate" not in answer.headers
    finally:
        await own.stop(None)


async def test_authsvc_out_of_reach_answers_503_and_a_wrong_configuration_500(
    backend_kind: str, server: RunningServer, new_app: NewApp
) -> None:
    app = await new_app("web-down")
    async with AuthClient(f"127.0.0.1:{server.port}", app.api_key, app.api_secret) as issuer:
        token = (await issuer.issue_token("alice")).token
    headers = {"authorization": f"Bearer {token}"}
    sessions = Sessions({"s-alice": "alice"})

    down = AuthClient(f"127.0.0.1:{closed_port()}", app.api_key, app.api_secret, timeout=1.0, retry_backoff=0.01)
    async with down, serve(BACKENDS[backend_kind](down, down, sessions)) as url, httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/messages", headers=headers)
        assert_refused(answer, 503, "temporarily_unavailable", "retry")
        assert answer.headers["retry-after"] == str(contract.DEFAULT_RETRY_AFTER)

    wrong = AuthClient(f"127.0.0.1:{server.port}", "no-such-api-key", app.api_secret)
    async with wrong, serve(BACKENDS[backend_kind](wrong, wrong, sessions)) as url, httpx.AsyncClient() as http:
        answer = await http.get(f"{url}/messages", headers=headers)
        assert_refused(answer, 500, "server_error", "retry")
        assert "no-such-api-key" not in answer.text and "Traceback" not in answer.text


# The token provider.


async def test_the_token_provider_issues_a_token_for_the_session_user(chat: Chat) -> None:
    answer = await chat.http.post(TOKEN_PATH, json={}, headers=cookie("s-alice"))
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == {"token", "expires_at"}
    payload = jwt_payload(body["token"])
    assert payload["user_id"] == "alice" and payload["room"] == "general" and payload["name"] == "ALICE"
    assert payload["exp"] - payload["iat"] == pytest.approx(60, abs=0.01)  # the provider's ttl
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["expires_at"])
    expires_at = datetime.fromisoformat(body["expires_at"])
    assert abs(expires_at - datetime.fromtimestamp(payload["exp"], UTC)) < timedelta(milliseconds=1)


async def test_the_token_provider_refuses_what_it_must(chat: Chat) -> None:
    http, alice = chat.http, cookie("s-alice")
    asked = chat.sessions.asked

    got = await http.get(TOKEN_PATH, headers=alice)
    assert_refused(got, 405, "method_not_allowed", "fix_request")
    assert got.headers["allow"] == "POST"
    not_json = [
        await http.post(TOKEN_PATH, content=b"{}", headers={**alice, "content-type": "text/plain"}),
        await http.post(TOKEN_PATH, data={"a": "b"}, headers=alice),  # what an HTML form sends
        await http.post(TOKEN_PATH, headers=alice),  # no body, no Content-Type
    ]
    for answer in not_json:
        assert_refused(answer, 415, "unsupported_media_type", "fix_request")
    foreign = await http.post(TOKEN_PATH, json={}, headers={**alice, "origin": "https://evil.example"})
    assert_refused(foreign, 403, "forbidden_origin", "fix_request")
    assert chat.sessions.asked == asked, "a refused request never reaches identify"

    same_origin = await http.post(TOKEN_PATH, json={}, headers={**alice, "origin": chat.url})
    assert same_origin.status_code == 200

    nobody = await http.post(TOKEN_PATH, json={}, headers=cookie("s-unknown"))
    assert_refused(nobody, 401, "no_session", "authenticate")
    assert (await http.post(TOKEN_PATH, json={})).status_code == 401

    broken = await http.post(TOKEN_PATH, json={}, headers=cookie("s-broken"))  # authsvc refuses the user id
    assert_refused(broken, 500, "server_error", "retry")
    assert broken.json()["error_description"] == "the backend could not issue a token"


async def test_the_token_provider_allows_the_configured_origins(server: RunningServer, new_app: NewApp) -> None:
    app = await new_app("web-origins")
    sessions = Sessions({"s-alice": "alice"})
    async with AuthClient(f"127.0.0.1:{server.port}", app.api_key, app.api_secret) as client:
        provider = TokenProvider(client, sessions.identify, allowed_origins={"https://chat.example"})
        async with serve(provider) as url, httpx.AsyncClient(base_url=url) as http:
            for origin, status in (("https://chat.example", 200), ("https://chat.example.evil", 403), ("null", 403)):
                answer = await http.post("/", json={}, headers={**cookie("s-alice"), "origin": origin})
                assert answer.status_code == status, origin


async def test_the_token_provider_answers_503_when_authsvc_is_out_of_reach(backend_kind: str, new_app: NewApp) -> None:
    app = await new_app("web-provider-down")
    sessions = Sessions({"s-alice": "alice"})
    down = AuthClient(f"127.0.0.1:{closed_port()}", app.api_key, app.api_secret, timeout=1.0)
    async with down, serve(BACKENDS[backend_kind](down, down, sessions)) as url, httpx.AsyncClient() as http:
        answer = await http.post(f"{url}{TOKEN_PATH}", json={}, headers=cookie("s-alice"))
        assert_refused(answer, 503, "temporarily_unavailable", "retry")
        assert answer.headers["retry-after"] == str(contract.DEFAULT_RETRY_AFTER)


# The FastAPI dependency behind the middleware, and WebSocket handshakes.


async def test_the_dependency_takes_the_verdict_of_the_middleware(
    server: RunningServer, new_app: NewApp, clock: FakeClock
) -> None:
    app = await new_app("web-both")
    seen: list[Verification] = []

    class Counting:
        """An AuthClient that counts its VerifyToken calls."""

        def __init__(self, client: AuthClient) -> None:
            self.client = client

        async def verify_token(self, token: str) -> Verification:
            verdict = await self.client.verify_token(token)
            seen.append(verdict)
            return verdict

    async with AuthClient(f"127.0.0.1:{server.port}", app.api_key, app.api_secret) as client:
        counting = Counting(client)
        api = FastAPI()
        api.add_middleware(BearerAuthMiddleware, verifier=counting, realm=REALM)

        @api.get("/me")
        async def me(auth: Annotated[Verification, Depends(BearerAuth(counting))]) -> dict[str, Any]:
            return {"user": auth.user_id}

        token = (await client.issue_token("carol")).token
        async with serve(api) as url, httpx.AsyncClient(base_url=url) as http:
            answer = await http.get("/me", headers={"authorization": f"Bearer {token}"})
            assert answer.json() == {"user": "carol"}
            assert len(seen) == 1, "verified once, by the middleware"
            refused = await http.get("/me")
            assert refused.status_code == 401 and refused.json()["error"] == "missing_token"


async def test_the_middleware_refuses_a_websocket_handshake_without_a_valid_token(
    server: RunningServer, new_app: NewApp
) -> None:
    # Driven through the ASGI interface itself: uvicorn here has no WebSocket library to serve it.
    app = await new_app("web-socket")
    client = AuthClient(f"127.0.0.1:{server.port}", app.api_key, app.api_secret)
    reached: list[str] = []

    async def ws_app(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        reached.append(scope["state"]["authsvc"].user_id)
        await send({"type": "websocket.accept"})

    middleware = BearerAuthMiddleware(ws_app, verifier=client, realm=REALM)
    token = (await client.issue_token("alice")).token

    async def handshake(headers: list[tuple[bytes, bytes]], extensions: dict[str, Any]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: asgi.Message) -> None:
            sent.append(dict(message))

        scope = {"type": "websocket", "path": "/ws", "headers": headers, "extensions": extensions}
        await middleware(scope, receive, send)
        return sent

    assert await handshake([], {}) == [{"type": "websocket.close", "code": 1008}]
    denied = await handshake([], {"websocket.http.response": {}})
    assert denied[0]["type"] == "websocket.http.response.start" and denied[0]["status"] == 401
    assert json.loads(denied[1]["body"])["error"] == "missing_token"
    assert await handshake([(b"authorization", f"Bearer {token}".encode())], {}) == [{"type": "websocket.accept"}]
    assert reached == ["alice"]
    await client.close()


async def test_allow_anonymous_admits_an_anonymous_websocket_handshake_only_where_the_app_allows_it(
    server: RunningServer, new_app: NewApp
) -> None:
    # A chat's public room: a watcher without a token opens the socket when the app admits anonymous users.
    reached: list[tuple[str | None, Role]] = []

    async def ws_app(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        verification = scope["state"]["authsvc"]
        reached.append((verification.user_id, verification.role))
        await send({"type": "websocket.accept"})

    async def handshake(middleware: BearerAuthMiddleware, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: asgi.Message) -> None:
            sent.append(dict(message))

        await middleware({"type": "websocket", "path": "/ws", "headers": headers, "extensions": {}}, receive, send)
        return sent

    open_app, closed_app = await new_app("ws-open", anonymous_access=True), await new_app("ws-closed")
    for app, admitted in ((open_app, True), (closed_app, False)):
        async with AuthClient(f"127.0.0.1:{server.port}", app.api_key, app.api_secret) as client:
            middleware = BearerAuthMiddleware(ws_app, verifier=client, realm=REALM, allow_anonymous=True)
            expected = {"type": "websocket.accept"} if admitted else {"type": "websocket.close", "code": 1008}
            assert await handshake(middleware, []) == [expected]
            # A token that fails is refused, never let in as anonymous.
            bad = await handshake(middleware, [(b"authorization", b"Bearer not.a.token")])
            assert bad == [{"type": "websocket.close", "code": 1008}]
    assert reached == [(None, Role.ANONYMOUS)]


# The contract's words, as docs/web.md prints them (clients/node/middleware.js is checked against the same table).


def documented_descriptions() -> dict[str, str]:
    doc = (ROOT / "docs" / "web.md").read_text()
    rows = re.findall(r"^\| `([A-Z_]+)` \| [^|]+ \| `([^`]+)` \|$", doc, flags=re.M)
    return dict(rows)


def test_the_descriptions_are_the_documented_ones() -> None:
    documented = documented_descriptions()
    assert documented, "docs/web.md has the table of outcomes"
    for outcome, description in contract.DESCRIPTIONS.items():
        assert documented[outcome.name] == f"{outcome.name}: {description}"


def test_set_up_mistakes_fail_at_once() -> None:
    async def app(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        pass

    with pytest.raises(TypeError, match="LocalVerifier or an AuthClient"):
        BearerAuthMiddleware(app, verifier=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="realm"):
        BearerAuth(LocalVerifier("127.0.0.1:1", "key", "secret", metrics=False), realm='a"b')


# The README's examples, as printed: run as their own processes (uvicorn, node) against the session's authsvc.


def readme_example(language: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Checking tokens in your web backend", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"the section has one {language} example"
    return str(blocks[0])


@asynccontextmanager
async def example_process(*command: str, cwd: Path, env: dict[str, str], port: int) -> AsyncIterator[str]:
    """Runs an example server until the test is done with it; yields its URL once it answers."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60), httpx.AsyncClient() as http:
            while True:
                if process.returncode is not None:
                    _, err = await process.communicate()
                    raise AssertionError(f"the example exited: {err.decode()}")
                try:
                    await http.get(f"{url}/messages")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        _, err = await process.communicate()
        print(err.decode()[-3000:])  # the example's own log, shown when the test fails


async def check_example(url: str) -> None:
    """What the README says of both examples: a token for the demo session, then the user of that token."""
    async with httpx.AsyncClient(base_url=url) as http:
        provided = await http.post(TOKEN_PATH, json={}, headers=cookie("demo-session"))
        assert provided.status_code == 200, provided.text
        token = provided.json()["token"]
        answer = await http.get("/messages", headers={"authorization": f"Bearer {token}"})
        assert answer.json() == {"user": "alice"}
        assert_refused(await http.get("/messages"), 401, "missing_token", "authenticate")
        assert_refused(await http.post(TOKEN_PATH, json={}), 401, "no_session", "authenticate")


async def test_readme_fastapi_example_works_as_printed(server: RunningServer, new_app: NewApp, tmp_path: Path) -> None:
    app = await new_app("web-readme-py")
    example = readme_example("python").replace("localhost:50051", f"localhost:{server.port}")
    (tmp_path / "example.py").write_text(example)
    port = closed_port()
    env = clean_env(API_KEY=app.api_key, API_SECRET=app.api_secret)
    command = (sys.executable, "-m", "uvicorn", "example:app", "--port", str(port), "--log-level", "warning")
    async with example_process(*command, cwd=tmp_path, env=env, port=port) as url:
        await check_example(url)


async def test_readme_express_example_works_as_printed(server: RunningServer, new_app: NewApp, tmp_path: Path) -> None:
    modules = await node.install_node_modules()
    app = await new_app("web-readme-js")
    port = closed_port()
    example = readme_example("js").replace('require("@authsvc/client")', f"require({str(NODE_CLIENT)!r})")
    example = example.replace("localhost:50051", f"localhost:{server.port}").replace("listen(3000)", f"listen({port})")
    (tmp_path / "example.js").write_text(example)
    env = node.base_env()
    env.update(API_KEY=app.api_key, API_SECRET=app.api_secret, NODE_PATH=str(modules))
    async with example_process(*node.node_tool("node"), "example.js", cwd=tmp_path, env=env, port=port) as url:
        await check_example(url)
