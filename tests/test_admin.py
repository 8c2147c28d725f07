"""The operator API (authsvc.v1.AdminService) on a real server: credentials, every RPC, its audit record, and
that each change is in force on the AuthService of the same process when the call returns."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import jwt
import pytest
from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message

from authsvc.clock import MICROS_PER_SECOND
from authsvc.config import Settings
from authsvc.errors import ConfigError
from authsvc.operators import hash_token, parse_operator_tokens
from authsvc.server import RunningServer, start_server
from authsvc.state import State
from authsvc.store import Store
from authsvc.tokens import App
from authsvc.v1 import admin_service_pb2 as admin_pb
from authsvc.v1 import admin_service_pb2_grpc, auth_service_pb2_grpc
from authsvc.v1 import auth_service_pb2 as pb
from tests.conftest import NewApp
from tests.processes import clean_env
from tests.support import FakeClock, api_key_only, backend, expect_failure, newest_kid

if TYPE_CHECKING:
    from authsvc.v1.admin_service_pb2_grpc import AdminServiceAsyncStub
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

ALICE = secrets.token_urlsafe(32)
BOB = secrets.token_urlsafe(32)
KEY_ROTATION_DELAY = 300
SECRET_OVERLAP = 3600
PEER = re.compile(r"ipv4:127\.0\.0\.1:\d+")
SECOND = MICROS_PER_SECOND
ROOT = Path(__file__).resolve().parent.parent


def operator(token: str = ALICE) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
async def admin_server(
    store: Store, state: State, settings: Settings, session_clock: FakeClock
) -> AsyncIterator[RunningServer]:
    """A server with two operators, alice and bob, and its own rotation defaults."""
    configured = dataclasses.replace(
        settings,
        operator_tokens=(("alice", hash_token(ALICE)), ("bob", hash_token(BOB))),
        key_rotation_delay=KEY_ROTATION_DELAY,
        secret_overlap=SECRET_OVERLAP,
    )
    running = await start_server(store, state, configured, session_clock)
    yield running
    await running.stop(None)


@pytest.fixture(scope="module")
async def admin_channel(admin_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{admin_server.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def admin(admin_channel: grpc.aio.Channel) -> AdminServiceAsyncStub:
    """The AdminService of the server with operators."""
    return admin_service_pb2_grpc.AdminServiceStub(admin_channel)


@pytest.fixture(scope="module")
def auth(admin_channel: grpc.aio.Channel) -> AuthServiceAsyncStub:
    """The AuthService of the same server process."""
    return auth_service_pb2_grpc.AuthServiceStub(admin_channel)


async def issue(auth: AuthServiceAsyncStub, app: App, credential: str | None = None) -> pb.IssueTokenResponse:
    response: pb.IssueTokenResponse = await auth.IssueToken(
        pb.IssueTokenRequest(user_id="alice"), metadata=backend(app, credential)
    )
    return response


async def outcome(auth: AuthServiceAsyncStub, app: App, token: str) -> int:
    response = await auth.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=api_key_only(app))
    return int(response.outcome)


async def events(admin: AdminServiceAsyncStub, app: App | str, **filters: Any) -> list[admin_pb.AuditEvent]:
    api_key = app if isinstance(app, str) else app.api_key
    response = await admin.ListAuditEvents(
        admin_pb.ListAuditEventsRequest(api_key=api_key, **filters), metadata=operator()
    )
    return list(response.events)


def details(event: admin_pb.AuditEvent) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(event.details)
    return result


def assert_audited(event: admin_pb.AuditEvent, action: str, actor: str = "operator:alice") -> None:
    assert (event.action, event.actor) == (action, actor)
    assert PEER.fullmatch(event.peer), event.peer


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def dev_token(user_id: str = "alice") -> str:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps({'user_id': user_id}).encode())}.devtoken"


def seconds(value: int | float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMicroseconds(round(value * SECOND))
    return duration


def micros(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.ToMicroseconds()


# -- operator tokens in the settings --


def test_operator_tokens_are_kept_only_as_hashes(tmp_path: Path) -> None:
    first, second, third = (secrets.token_urlsafe(32) for _ in range(3))
    tokens_file = tmp_path / "operators"
    tokens_file.write_text(f"# on-call\nbob:{second}\n\n  carol:{third}  \n")
    settings = Settings.from_env(
        {"AUTHSVC_OPERATOR_TOKENS": f"alice:{first},", "AUTHSVC_OPERATOR_TOKENS_FILE": str(tokens_file)}
    )
    assert settings.operator_tokens == (
        ("alice", hash_token(first)),
        ("bob", hash_token(second)),
        ("carol", hash_token(third)),
    )
    assert not any(token in repr(settings) for token in (first, second, third))
    assert Settings.from_env({}).operator_tokens == ()


@pytest.mark.parametrize(
    ("text", "file_text", "message"),
    [
        ("alice:" + "x" * 31, None, "31 characters; at least 32"),
        ("alice", None, "entry 1 of AUTHSVC_OPERATOR_TOKENS is not 'ID:TOKEN'"),
        (":" + "x" * 40, None, "the id in entry 1"),
        ("al ice:" + "x" * 40, None, "the id in entry 1"),
        ("alice:" + "x" * 20 + " " + "x" * 20, None, "spaces"),
        (None, "# ok\nalice:" + "y" * 40 + "\nbob " + "z" * 40 + "\n", "line 3 of AUTHSVC_OPERATOR_TOKENS_FILE"),
        ("alice:" + "x" * 40, "alice:" + "y" * 40, "given twice: alice"),
        ("alice:" + "x" * 40, "bob:" + "x" * 40, "share a token"),
    ],
    ids=["short", "no-colon", "no-id", "bad-id", "space", "bad-line", "duplicate-id", "shared-token"],
)
def test_bad_operator_tokens_are_config_errors_that_do_not_echo_tokens(
    tmp_path: Path, text: str | None, file_text: str | None, message: str
) -> None:
    path = None
    if file_text is not None:
        path = tmp_path / "operators"
        path.write_text(file_text)
    with pytest.raises(ConfigError) as raised:
        parse_operator_tokens(text, path)
    assert message in raised.value.message
    assert "x" * 20 not in raised.value.message and "y" * 20 not in raised.value.message


def test_rotation_defaults_come_from_the_settings() -> None:
    assert (Settings().key_rotation_delay, Settings().secret_overlap) == (600.0, 86400.0)
    configured = Settings.from_env({"AUTHSVC_KEY_ROTATION_DELAY": "1m", "AUTHSVC_SECRET_OVERLAP": "2h"})
    assert (configured.key_rotation_delay, configured.secret_overlap) == (60.0, 7200.0)


# -- credentials --

_CALLS: list[tuple[str, Message]] = [
    ("CreateApp", admin_pb.CreateAppRequest(name="x")),
    ("GetApp", admin_pb.GetAppRequest(api_key="x")),
    ("ListApps", admin_pb.ListAppsRequest()),
    ("UpdateApp", admin_pb.UpdateAppRequest(api_key="x", name="y")),
    ("RotateKey", admin_pb.RotateKeyRequest(api_key="x")),
    ("RetireKey", admin_pb.RetireKeyRequest(api_key="x", key_id="k")),
    ("RotateApiSecret", admin_pb.RotateApiSecretRequest(api_key="x")),
    ("ListAuditEvents", admin_pb.ListAuditEventsRequest()),
]
_CALL_IDS = [name for name, _ in _CALLS]


def call(stub: AdminServiceAsyncStub, name: str) -> Callable[..., Awaitable[Any]]:
    method: Callable[..., Awaitable[Any]] = getattr(stub, name)
    return method


@pytest.mark.parametrize(("name", "request_message"), _CALLS, ids=_CALL_IDS)
@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "MISSING_CREDENTIAL"),
        ((("authorization", "Bearer "),), "MISSING_CREDENTIAL"),
        ((("authorization", f"Bearer {ALICE}x"),), "INVALID_CREDENTIAL"),
        ((("authorization", f"Basic {ALICE}"),), "INVALID_CREDENTIAL"),
        ((("authorization", ALICE),), "INVALID_CREDENTIAL"),
    ],
    ids=["missing", "empty", "wrong", "not-bearer", "no-scheme"],
)
async def test_every_call_needs_an_operator_token(
    admin: AdminServiceAsyncStub, name: str, request_message: Message, metadata: Any, reason: str
) -> None:
    failed = await expect_failure(call(admin, name)(request_message, metadata=metadata))
    assert (failed.code, failed.reason, failed.domain) == (grpc.StatusCode.UNAUTHENTICATED, reason, "authsvc")
    assert ALICE not in failed.message


@pytest.mark.parametrize(("name", "request_message"), _CALLS, ids=_CALL_IDS)
async def test_without_operator_tokens_the_admin_api_is_disabled(
    channel: grpc.aio.Channel, name: str, request_message: Message
) -> None:
    disabled = admin_service_pb2_grpc.AdminServiceStub(channel)  # the session server: no operator configured
    for metadata in ((), operator()):
        failed = await expect_failure(call(disabled, name)(request_message, metadata=metadata))
        assert (failed.code, failed.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_DISABLED")
        assert "AUTHSVC_OPERATOR_TOKENS" in failed.message


async def test_an_api_secret_or_server_token_is_not_an_operator_credential(
    admin: AdminServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app()
    server_token = jwt.encode({"server": True}, app.api_secret, algorithm="HS256")
    for credential in (app.api_secret, server_token):
        failed = await expect_failure(
            admin.GetApp(admin_pb.GetAppRequest(api_key=app.api_key), metadata=backend(app, credential))
        )
        assert (failed.code, failed.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIAL")
        assert "not an operator token" in failed.message


async def test_an_unknown_app_is_not_found(admin: AdminServiceAsyncStub) -> None:
    for name, template in _CALLS:
        if name in ("CreateApp", "ListApps", "ListAuditEvents"):
            continue
        request_message = type(template)()
        request_message.CopyFrom(template)
        request_message.api_key = "nosuchapp"  # type: ignore[attr-defined]
        failed = await expect_failure(call(admin, name)(request_message, metadata=operator()))
        assert (failed.code, failed.reason) == (grpc.StatusCode.NOT_FOUND, "APP_NOT_FOUND"), name


# -- CreateApp, GetApp, ListApps --


async def test_create_get_and_list_an_app_without_ever_showing_a_secret_again(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub
) -> None:
    created = await admin.CreateApp(
        admin_pb.CreateAppRequest(
            name="support chat",
            algorithm=admin_pb.ALGORITHM_EDDSA,
            token_ttl=seconds(3600),
            max_token_lifetime=seconds(86400),
            require_iat=True,
        ),
        metadata=operator(),
    )
    app, secret = created.app, created.api_secret
    assert len(secret) >= 43
    assert (app.name, app.algorithm, app.require_iat, app.auth_checks_disabled) == (
        "support chat",
        admin_pb.ALGORITHM_EDDSA,
        True,
        False,
    )
    assert (app.token_ttl.seconds, app.max_token_lifetime.seconds) == (3600, 86400)
    assert not app.HasField("revoked_before") and app.HasField("created_at")
    kinds = [(key.kind, key.algorithm) for key in app.keys]
    assert kinds == [
        (admin_pb.KEY_KIND_API_SECRET, admin_pb.ALGORITHM_HS256),
        (admin_pb.KEY_KIND_KEY_PAIR, admin_pb.ALGORITHM_EDDSA),
    ]
    assert app.key_id == app.keys[1].key_id
    # In force at once on this process: the secret authenticates and the key pair signs.
    issued = await auth.IssueToken(
        pb.IssueTokenRequest(user_id="alice"),
        metadata=(("x-api-key", app.api_key), ("authorization", f"Bearer {secret}")),
    )
    header = jwt.get_unverified_header(issued.token)
    assert (header["alg"], header["kid"]) == ("EdDSA", app.key_id)

    got = await admin.GetApp(admin_pb.GetAppRequest(api_key=app.api_key), metadata=operator(BOB))
    assert got.app == app
    listed = await admin.ListApps(admin_pb.ListAppsRequest(), metadata=operator())
    assert [a for a in listed.apps if a.api_key == app.api_key] == [app]
    for reply in (got, listed):
        text = reply.SerializeToString()
        assert secret.encode() not in text and b"PRIVATE KEY" not in text

    (event,) = await events(admin, app.api_key)
    assert_audited(event, "app.created")
    assert details(event) == {
        "name": "support chat",
        "algorithm": "EdDSA",
        "guest_access": False,
        "guest_token_ttl_seconds": 86400,
        "anonymous_access": False,
    }


@pytest.mark.parametrize(
    ("request_message", "reason"),
    [
        (admin_pb.CreateAppRequest(name=" "), "INVALID_APP_NAME"),
        (admin_pb.CreateAppRequest(name="x", algorithm=99), "INVALID_ALGORITHM"),  # type: ignore[arg-type]
        (admin_pb.CreateAppRequest(name="x", token_ttl=seconds(1.5)), "INVALID_TTL"),
        (admin_pb.CreateAppRequest(name="x", token_ttl=seconds(0)), "INVALID_TTL"),
        (admin_pb.CreateAppRequest(name="x", token_ttl=seconds(7200), max_token_lifetime=seconds(3600)), "INVALID_TTL"),
        (admin_pb.CreateAppRequest(name="x", api_secret="s3cr3t"), "WEAK_SECRET"),
        (admin_pb.CreateAppRequest(name="x", api_secret="password" * 5), "WEAK_SECRET"),
        (admin_pb.CreateAppRequest(name="x", api_secret="abcd" * 12), "WEAK_SECRET"),
    ],
    ids=["blank-name", "algorithm", "fraction", "zero-ttl", "ttl-over-max", "short", "well-known", "low-entropy"],
)
async def test_create_app_refuses_bad_input(
    admin: AdminServiceAsyncStub, request_message: admin_pb.CreateAppRequest, reason: str
) -> None:
    failed = await expect_failure(admin.CreateApp(request_message, metadata=operator()))
    assert (failed.code, failed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    if request_message.HasField("api_secret"):
        assert request_message.api_secret not in failed.message


async def test_an_imported_secret_verifies_the_vendor_tokens_minted_with_it(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub
) -> None:
    vendor_secret = secrets.token_urlsafe(40)
    created = await admin.CreateApp(
        admin_pb.CreateAppRequest(name="imported", api_secret=vendor_secret), metadata=operator()
    )
    assert created.api_secret == vendor_secret
    app = created.app
    vendor_token = jwt.encode({"user_id": "alice"}, vendor_secret, algorithm="HS256")
    response = await auth.VerifyToken(pb.VerifyTokenRequest(token=vendor_token), metadata=(("x-api-key", app.api_key),))
    assert response.outcome == pb.VERIFY_OUTCOME_VALID and response.user_id == "alice"
    await auth.IssueToken(
        pb.IssueTokenRequest(user_id="bob"),
        metadata=(("x-api-key", app.api_key), ("authorization", f"Bearer {vendor_secret}")),
    )


# -- UpdateApp --


async def test_enabling_development_mode_lets_a_developer_token_verify_at_once(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app()
    assert await outcome(auth, app, dev_token()) == pb.VERIFY_OUTCOME_INVALID_SIGNATURE
    updated = await admin.UpdateApp(
        admin_pb.UpdateAppRequest(api_key=app.api_key, auth_checks_disabled=True), metadata=operator()
    )
    assert updated.app.auth_checks_disabled
    response = await auth.VerifyToken(pb.VerifyTokenRequest(token=dev_token()), metadata=api_key_only(app))
    assert response.valid and response.dev_token
    await admin.UpdateApp(
        admin_pb.UpdateAppRequest(api_key=app.api_key, auth_checks_disabled=False), metadata=operator(BOB)
    )
    assert await outcome(auth, app, dev_token()) == pb.VERIFY_OUTCOME_INVALID_SIGNATURE
    disabled, enabled = (await events(admin, app))[:2][::-1]
    assert_audited(disabled, "app.updated")
    assert_audited(enabled, "app.updated", actor="operator:bob")
    assert details(disabled) == {"changed": {"auth_checks_disabled": True}}
    assert details(enabled) == {"changed": {"auth_checks_disabled": False}}


async def test_changing_the_token_lifetimes_changes_issued_tokens_at_once(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app(token_ttl_seconds=3600)

    async def lifetime() -> int | None:
        issued = await issue(auth, app)
        if not issued.HasField("expires_at"):
            return None
        return (micros(issued.expires_at) - micros(issued.issued_at)) // SECOND

    async def update(**fields: Any) -> admin_pb.App:
        response = await admin.UpdateApp(admin_pb.UpdateAppRequest(api_key=app.api_key, **fields), metadata=operator())
        return response.app

    assert await lifetime() == 3600
    assert (await update(token_ttl=seconds(120))).token_ttl.seconds == 120
    assert await lifetime() == 120
    cleared = await update(clear_token_ttl=True)
    assert not cleared.HasField("token_ttl")
    assert await lifetime() is None
    assert (await update(max_token_lifetime=seconds(600))).max_token_lifetime.seconds == 600
    assert await lifetime() == 600  # the maximum caps tokens that would never expire
    failed = await expect_failure(update(token_ttl=seconds(601)))
    assert (failed.code, failed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TTL")
    both = await update(token_ttl=seconds(60), clear_max_token_lifetime=True)
    assert both.token_ttl.seconds == 60 and not both.HasField("max_token_lifetime")
    assert await lifetime() == 60
    changed = [details(event)["changed"] for event in await events(admin, app, action_prefix="app.updated")]
    assert changed == [
        {"token_ttl_seconds": 60, "max_token_lifetime_seconds": None},
        {"max_token_lifetime_seconds": 600},
        {"token_ttl_seconds": None},
        {"token_ttl_seconds": 120},
    ]


async def test_name_and_require_iat_change_and_a_no_op_records_nothing(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app("before")
    without_iat = jwt.encode({"user_id": "alice"}, app.api_secret, algorithm="HS256")
    assert await outcome(auth, app, without_iat) == pb.VERIFY_OUTCOME_VALID
    updated = await admin.UpdateApp(
        admin_pb.UpdateAppRequest(api_key=app.api_key, name=" after ", require_iat=True), metadata=operator()
    )
    assert (updated.app.name, updated.app.require_iat) == ("after", True)
    assert await outcome(auth, app, without_iat) == pb.VERIFY_OUTCOME_REVOKED
    recorded = len(await events(admin, app))
    same = await admin.UpdateApp(
        admin_pb.UpdateAppRequest(api_key=app.api_key, name="after", require_iat=True), metadata=operator()
    )
    assert same.app == updated.app
    assert len(await events(admin, app)) == recorded
    nothing = await expect_failure(admin.UpdateApp(admin_pb.UpdateAppRequest(api_key=app.api_key), metadata=operator()))
    assert (nothing.code, nothing.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NO_CHANGES")
    blank = await expect_failure(
        admin.UpdateApp(admin_pb.UpdateAppRequest(api_key=app.api_key, name=""), metadata=operator())
    )
    assert blank.reason == "INVALID_APP_NAME"


async def test_changing_the_algorithm_signs_with_the_new_one_and_old_tokens_stop_verifying(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app()
    hs256 = (await issue(auth, app)).token

    async def change(algorithm: admin_pb.Algorithm) -> admin_pb.App:
        response = await admin.UpdateApp(
            admin_pb.UpdateAppRequest(api_key=app.api_key, algorithm=algorithm), metadata=operator()
        )
        return response.app

    eddsa_app = await change(admin_pb.ALGORITHM_EDDSA)
    pairs = [key for key in eddsa_app.keys if key.kind == admin_pb.KEY_KIND_KEY_PAIR]
    assert [key.algorithm for key in pairs] == [admin_pb.ALGORITHM_EDDSA] and eddsa_app.key_id == pairs[0].key_id
    eddsa = (await issue(auth, app)).token
    assert jwt.get_unverified_header(eddsa)["kid"] == eddsa_app.key_id
    assert await outcome(auth, app, eddsa) == pb.VERIFY_OUTCOME_VALID
    assert await outcome(auth, app, hs256) == pb.VERIFY_OUTCOME_INVALID_SIGNATURE

    es256_app = await change(admin_pb.ALGORITHM_ES256)
    assert [(k.algorithm, k.kind) for k in es256_app.keys][1:] == [
        (admin_pb.ALGORITHM_ES256, admin_pb.KEY_KIND_KEY_PAIR)
    ]
    es256 = (await issue(auth, app)).token
    assert jwt.get_unverified_header(es256)["alg"] == "ES256"
    assert await outcome(auth, app, es256) == pb.VERIFY_OUTCOME_VALID
    assert await outcome(auth, app, eddsa) == pb.VERIFY_OUTCOME_INVALID_SIGNATURE
    jwks = await auth.GetJwks(pb.GetJwksRequest(), metadata=api_key_only(app))
    assert [key.kid for key in jwks.keys] == [es256_app.key_id]

    back = await change(admin_pb.ALGORITHM_HS256)
    assert [key.kind for key in back.keys] == [admin_pb.KEY_KIND_API_SECRET] and back.key_id == newest_kid(app)
    assert await outcome(auth, app, (await issue(auth, app)).token) == pb.VERIFY_OUTCOME_VALID
    assert await outcome(auth, app, hs256) == pb.VERIFY_OUTCOME_VALID
    assert await outcome(auth, app, es256) == pb.VERIFY_OUTCOME_INVALID_SIGNATURE

    to_hs256, to_es256, to_eddsa = await events(admin, app, action_prefix="app.updated")
    assert_audited(to_eddsa, "app.updated")
    assert details(to_eddsa) == {
        "changed": {"algorithm": "EdDSA"},
        "key_id": eddsa_app.key_id,
        "retired_key_ids": [],
    }
    assert details(to_es256)["retired_key_ids"] == [eddsa_app.key_id]
    assert details(to_hs256) == {"changed": {"algorithm": "HS256"}, "retired_key_ids": [es256_app.key_id]}


# -- RotateApiSecret --


async def test_rotating_the_api_secret_keeps_the_old_one_working_during_the_overlap(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    now = clock.freeze()
    app = await new_app()
    old_token = (await issue(auth, app)).token
    old_vendor_token = jwt.encode({"user_id": "alice"}, app.api_secret, algorithm="HS256")

    rotated = await admin.RotateApiSecret(
        admin_pb.RotateApiSecretRequest(api_key=app.api_key, overlap=seconds(60)), metadata=operator()
    )
    assert rotated.api_secret != app.api_secret and len(rotated.api_secret) >= 43
    assert rotated.key_id != newest_kid(app)
    expires = micros(rotated.old_secrets_expire_at)
    assert now + 60 * SECOND <= expires < now + 3600 * SECOND  # the database's now plus the overlap

    # During the overlap: both secrets authenticate, new tokens carry the new kid, old tokens verify.
    for credential in (app.api_secret, rotated.api_secret):
        new_token = (await issue(auth, app, credential)).token
        assert jwt.get_unverified_header(new_token)["kid"] == rotated.key_id
        assert await outcome(auth, app, new_token) == pb.VERIFY_OUTCOME_VALID
    assert await outcome(auth, app, old_token) == pb.VERIFY_OUTCOME_VALID
    assert await outcome(auth, app, old_vendor_token) == pb.VERIFY_OUTCOME_VALID
    shown = (await admin.GetApp(admin_pb.GetAppRequest(api_key=app.api_key), metadata=operator())).app
    assert [(key.key_id, micros(key.expires_at) if key.HasField("expires_at") else None) for key in shown.keys] == [
        (rotated.key_id, None),
        (newest_kid(app), expires),
    ]
    assert shown.key_id == rotated.key_id

    # After it: the old secret and the tokens it signed fail; the new ones keep working.
    clock.set(expires + SECOND)
    failed = await expect_failure(issue(auth, app))
    assert (failed.code, failed.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIAL")
    assert await outcome(auth, app, old_token) == pb.VERIFY_OUTCOME_UNKNOWN_KEY
    assert await outcome(auth, app, old_vendor_token) == pb.VERIFY_OUTCOME_INVALID_SIGNATURE
    assert await outcome(auth, app, new_token) == pb.VERIFY_OUTCOME_VALID
    await issue(auth, app, rotated.api_secret)

    (event,) = await events(admin, app, action_prefix="api_secret.")
    assert_audited(event, "api_secret.rotated")
    assert details(event) == {"key_id": rotated.key_id, "overlap_seconds": 60.0}
    assert rotated.api_secret not in json.dumps(details(event))


async def test_rotating_the_api_secret_defaults_to_the_configured_overlap_and_can_import(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    now = clock.freeze()
    app = await new_app()
    rotated = await admin.RotateApiSecret(admin_pb.RotateApiSecretRequest(api_key=app.api_key), metadata=operator())
    assert now + SECRET_OVERLAP * SECOND <= micros(rotated.old_secrets_expire_at) < now + 2 * SECRET_OVERLAP * SECOND

    weak = await expect_failure(
        admin.RotateApiSecret(
            admin_pb.RotateApiSecretRequest(api_key=app.api_key, api_secret="changeme" * 5), metadata=operator()
        )
    )
    assert (weak.code, weak.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "WEAK_SECRET")
    vendor_secret = secrets.token_urlsafe(33)
    imported = await admin.RotateApiSecret(
        admin_pb.RotateApiSecretRequest(api_key=app.api_key, api_secret=vendor_secret, overlap=seconds(0)),
        metadata=operator(),
    )
    assert imported.api_secret == vendor_secret
    vendor_token = jwt.encode({"user_id": "alice"}, vendor_secret, algorithm="HS256")
    assert await outcome(auth, app, vendor_token) == pb.VERIFY_OUTCOME_VALID
    await issue(auth, app, vendor_secret)
    # A zero overlap ends the older secrets at once (as of the database's clock).
    clock.set(micros(imported.old_secrets_expire_at))
    failed = await expect_failure(issue(auth, app, rotated.api_secret))
    assert failed.reason == "INVALID_CREDENTIAL"
    negative = await expect_failure(
        admin.RotateApiSecret(
            admin_pb.RotateApiSecretRequest(api_key=app.api_key, overlap=seconds(-1)), metadata=operator()
        )
    )
    assert negative.reason == "INVALID_OVERLAP"


# -- RotateKey, RetireKey --


async def test_rotating_a_key_publishes_it_at_once_and_signs_with_it_after_the_delay(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    now = clock.freeze()
    app = await new_app(algorithm="EdDSA")
    old_token = (await issue(auth, app)).token

    rotated = await admin.RotateKey(
        admin_pb.RotateKeyRequest(api_key=app.api_key, delay=seconds(600)), metadata=operator()
    )
    assert micros(rotated.signs_from) == now + 600 * SECOND
    shown = (await admin.GetApp(admin_pb.GetAppRequest(api_key=app.api_key), metadata=operator())).app
    pairs = [(key.key_id, micros(key.signs_from)) for key in shown.keys if key.kind == admin_pb.KEY_KIND_KEY_PAIR]
    assert pairs[0] == (rotated.key_id, now + 600 * SECOND) and [kid for kid, _ in pairs] == [
        rotated.key_id,
        newest_kid(app),
    ]
    assert shown.key_id == newest_kid(app)  # the old key still signs
    jwks = await auth.GetJwks(pb.GetJwksRequest(), metadata=api_key_only(app))
    assert {key.kid for key in jwks.keys} == {rotated.key_id, newest_kid(app)}

    before = (await issue(auth, app)).token
    assert jwt.get_unverified_header(before)["kid"] == newest_kid(app)
    clock.advance(600 * SECOND)
    after = (await issue(auth, app)).token
    assert jwt.get_unverified_header(after)["kid"] == rotated.key_id
    for token in (old_token, before, after):
        assert await outcome(auth, app, token) == pb.VERIFY_OUTCOME_VALID

    (event,) = await events(admin, app, action_prefix="key.")
    assert_audited(event, "key.rotated")
    assert details(event)["key_id"] == rotated.key_id

    default = await admin.RotateKey(admin_pb.RotateKeyRequest(api_key=app.api_key), metadata=operator())
    assert micros(default.signs_from) == clock() + KEY_ROTATION_DELAY * SECOND


async def test_rotate_key_refuses_an_hs256_app_and_a_negative_delay(
    admin: AdminServiceAsyncStub, new_app: NewApp
) -> None:
    hs256 = await new_app()
    failed = await expect_failure(
        admin.RotateKey(admin_pb.RotateKeyRequest(api_key=hs256.api_key), metadata=operator())
    )
    assert (failed.code, failed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NOT_AN_ASYMMETRIC_APP")
    eddsa = await new_app(algorithm="EdDSA")
    negative = await expect_failure(
        admin.RotateKey(admin_pb.RotateKeyRequest(api_key=eddsa.api_key, delay=seconds(-5)), metadata=operator())
    )
    assert negative.reason == "INVALID_DELAY"


async def test_retiring_a_key_makes_its_tokens_unknown_and_keys_in_use_cannot_be_retired(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub, new_app: NewApp, clock: FakeClock
) -> None:
    clock.freeze()
    app = await new_app(algorithm="ES256")

    async def retire(key_id: str) -> admin_pb.App:
        response = await admin.RetireKey(
            admin_pb.RetireKeyRequest(api_key=app.api_key, key_id=key_id), metadata=operator()
        )
        return response.app

    only = await expect_failure(retire(newest_kid(app)))
    assert (only.code, only.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "KEY_IN_USE")
    current_secret = await expect_failure(retire(app.secrets[0].key_id))
    assert current_secret.reason == "KEY_IN_USE"
    unknown = await expect_failure(retire("knosuchkey"))
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.NOT_FOUND, "KEY_NOT_FOUND")

    old_token = (await issue(auth, app)).token
    pending = await admin.RotateKey(
        admin_pb.RotateKeyRequest(api_key=app.api_key, delay=seconds(60)), metadata=operator()
    )
    still_only = await expect_failure(retire(newest_kid(app)))  # the new key does not sign yet
    assert still_only.reason == "KEY_IN_USE"
    clock.advance(60 * SECOND)
    new_token = (await issue(auth, app)).token
    remaining = await retire(newest_kid(app))
    assert [key.key_id for key in remaining.keys] == [app.secrets[0].key_id, pending.key_id]
    assert await outcome(auth, app, old_token) == pb.VERIFY_OUTCOME_UNKNOWN_KEY
    assert await outcome(auth, app, new_token) == pb.VERIFY_OUTCOME_VALID
    again = await expect_failure(retire(newest_kid(app)))
    assert again.reason == "KEY_NOT_FOUND"

    (event,) = await events(admin, app, action_prefix="key.retired")
    assert_audited(event, "key.retired")
    assert details(event) == {"key_id": newest_kid(app)}


async def test_retiring_a_rotated_out_api_secret_ends_it_before_its_overlap(
    admin: AdminServiceAsyncStub, auth: AuthServiceAsyncStub, new_app: NewApp
) -> None:
    app = await new_app()
    old_token = (await issue(auth, app)).token
    rotated = await admin.RotateApiSecret(admin_pb.RotateApiSecretRequest(api_key=app.api_key), metadata=operator())
    await issue(auth, app)  # the old secret is in its overlap
    await admin.RetireKey(admin_pb.RetireKeyRequest(api_key=app.api_key, key_id=newest_kid(app)), metadata=operator())
    failed = await expect_failure(issue(auth, app))
    assert failed.reason == "INVALID_CREDENTIAL"
    assert await outcome(auth, app, old_token) == pb.VERIFY_OUTCOME_UNKNOWN_KEY
    await issue(auth, app, rotated.api_secret)


# -- ListAuditEvents --


async def test_audit_events_are_listed_newest_first_with_filters(admin: AdminServiceAsyncStub, new_app: NewApp) -> None:
    created = await admin.CreateApp(
        admin_pb.CreateAppRequest(name="audited", algorithm=admin_pb.ALGORITHM_EDDSA), metadata=operator()
    )
    api_key = created.app.api_key
    await admin.UpdateApp(admin_pb.UpdateAppRequest(api_key=api_key, name="renamed"), metadata=operator(BOB))
    rotated = await admin.RotateKey(admin_pb.RotateKeyRequest(api_key=api_key, delay=seconds(0)), metadata=operator())
    await admin.RetireKey(admin_pb.RetireKeyRequest(api_key=api_key, key_id=created.app.key_id), metadata=operator())
    await admin.RotateApiSecret(admin_pb.RotateApiSecretRequest(api_key=api_key), metadata=operator(BOB))
    other = await new_app()  # another app's changes stay out of this app's list

    listed = await events(admin, api_key)
    assert [event.action for event in listed] == [
        "api_secret.rotated",
        "key.retired",
        "key.rotated",
        "app.updated",
        "app.created",
    ]
    assert [event.id for event in listed] == sorted((event.id for event in listed), reverse=True)
    assert [micros(event.at) for event in listed] == sorted((micros(event.at) for event in listed), reverse=True)
    assert all(event.api_key == api_key and PEER.fullmatch(event.peer) for event in listed)
    assert [event.actor for event in listed] == [
        "operator:bob",
        "operator:alice",
        "operator:alice",
        "operator:bob",
        "operator:alice",
    ]
    assert details(listed[2])["key_id"] == rotated.key_id

    assert [e.action for e in await events(admin, api_key, action_prefix="key.")] == ["key.retired", "key.rotated"]
    assert [e.action for e in await events(admin, api_key, actor="operator:bob")] == [
        "api_secret.rotated",
        "app.updated",
    ]
    assert [e.id for e in await events(admin, api_key, limit=2)] == [listed[0].id, listed[1].id]
    since = await events(admin, api_key, since=listed[2].at)
    assert [e.id for e in since] == [e.id for e in listed if micros(e.at) >= micros(listed[2].at)]
    assert listed[2].id in [e.id for e in since] and listed[4].id not in [e.id for e in since]
    assert [e.action for e in await events(admin, other.api_key)] == ["app.created"]
    assert (await events(admin, other.api_key))[0].actor == "system"
    assert (await events(admin, api_key, action_prefix="app_")) == []  # a prefix, not a LIKE pattern

    everyone = await admin.ListAuditEvents(admin_pb.ListAuditEventsRequest(limit=1000), metadata=operator())
    assert len(everyone.events) <= 1000 and everyone.events[0].id >= listed[0].id
    for limit in (1001, -1):
        failed = await expect_failure(
            admin.ListAuditEvents(admin_pb.ListAuditEventsRequest(limit=limit), metadata=operator())
        )
        assert (failed.code, failed.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_LIMIT")
    bad_since = await expect_failure(
        admin.ListAuditEvents(
            admin_pb.ListAuditEventsRequest(since=timestamp_pb2.Timestamp(seconds=-(10**12))), metadata=operator()
        )
    )
    assert bad_since.reason == "INVALID_TIMESTAMP"


# -- the README's example --


async def test_readme_operator_example_works_as_printed(
    admin_server: RunningServer, new_app: NewApp, tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Operators", 1)[1].split("\n## ", 1)[0]
    setup, calls = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert ".venv/bin/authsvc operators new-token alice >> ~/.config/authsvc/operator-tokens.txt" in setup
    tokens = tmp_path / ".config" / "authsvc" / "operator-tokens.txt"  # the example's file, under HOME
    tokens.parent.mkdir(parents=True)
    tokens.write_text(f"# operators\nalice:{ALICE}\n")
    shim = tmp_path / "grpcurl"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "grpcurl_shim.py"}" "$@"\n')
    shim.chmod(0o755)
    app = await new_app()
    env = clean_env(PATH=f"{tmp_path}:{os.environ['PATH']}", API_KEY=app.api_key, HOME=str(tmp_path))
    script = "set -euo pipefail\n" + calls.replace("localhost:50051", f"localhost:{admin_server.port}")
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert '"token_ttl": "7200s"' in out.decode() and '"action": "app.updated"' in out.decode()
    assert '"actor": "operator:alice"' in out.decode()
