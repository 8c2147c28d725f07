"""The operator commands of the `authsvc` command line, in real processes against the test database."""

from __future__ import annotations

import asyncio
import getpass
import json
import secrets
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from authsvc.config import Settings
from authsvc.operators import hash_token
from authsvc.sealing import new_kek_text, parse_kek
from authsvc.state import State
from authsvc.v1 import auth_service_pb2 as pb
from tests.processes import TEST_KEK, authsvc, clean_env

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return clean_env(AUTHSVC_DATABASE_URL=database_url)


def create(env: dict[str, str], *args: str) -> dict[str, Any]:
    created: dict[str, Any] = ok(authsvc("apps", "create", "cli admin", *args, env=env))
    return created


def test_apps_create_imports_a_strong_secret_and_refuses_a_weak_one(env: dict[str, str], tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    strong = secrets.token_urlsafe(40)
    secret_file.write_text(strong + "\n")
    assert create(env, "--api-secret-file", str(secret_file))["api_secret"] == strong
    secret_file.write_text("hunter2hunter2\n")
    weak = authsvc("apps", "create", "weak", "--api-secret-file", str(secret_file), env=env)
    one_line_error(weak, "the API secret is 14 characters")
    assert "hunter2" not in weak.stderr
    missing = authsvc("apps", "create", "x", "--api-secret-file", str(tmp_path / "none"), env=env)
    one_line_error(missing, "cannot read the API secret file")


async def test_apps_update_changes_settings_in_force_once_the_server_catches_up(
    env: dict[str, str], state: State, stub: AuthServiceAsyncStub
) -> None:
    async def run(*args: str) -> Any:
        return ok(await asyncio.to_thread(authsvc, *args, env=env))

    app = await run("apps", "create", "cli admin", "--token-ttl", "1h")
    api_key = app["api_key"]
    updated = await run(
        "apps", "update", api_key, "--name", "renamed", "--token-ttl", "2h", "--max-token-lifetime", "1d",
        "--disable-auth-checks", "--require-iat",
    )  # fmt: skip
    assert (updated["name"], updated["token_ttl_seconds"], updated["max_token_lifetime_seconds"]) == (
        "renamed",
        7200,
        86400,
    )
    assert updated["auth_checks_disabled"] and updated["require_iat"]
    await state.catch_up()  # what the NOTIFY of the change makes every server do
    issued = await stub.IssueToken(
        pb.IssueTokenRequest(user_id="alice"),
        metadata=(("x-api-key", api_key), ("authorization", f"Bearer {app['api_secret']}")),
    )
    assert issued.expires_at.seconds - issued.issued_at.seconds == 7200

    cleared = await run(
        "apps", "update", api_key, "--token-ttl", "none", "--max-token-lifetime", "none",
        "--enable-auth-checks", "--no-require-iat",
    )  # fmt: skip
    assert cleared["token_ttl_seconds"] is None and cleared["max_token_lifetime_seconds"] is None
    assert not cleared["auth_checks_disabled"] and not cleared["require_iat"]

    eddsa = await run("apps", "update", api_key, "--algorithm", "EdDSA")
    assert eddsa["algorithm"] == "EdDSA" and "public_key" in eddsa
    assert [key["kind"] for key in eddsa["keys"]] == ["api_secret", "key_pair"]

    audit = await run("audit", "list", "--app", api_key, "--action", "app.updated")
    assert [event["actor"] for event in audit] == [f"cli:{getpass.getuser()}"] * 3
    assert set(audit[2]["details"]["changed"]) == {
        "name",
        "token_ttl_seconds",
        "max_token_lifetime_seconds",
        "auth_checks_disabled",
        "require_iat",
    }
    assert audit[0]["peer"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["apps", "update", "nosuchapp", "--name", "x"], "no app has API key 'nosuchapp'"),
        (["apps", "update", "API_KEY"], "nothing to change"),
        (["apps", "update", "API_KEY", "--token-ttl", "soon"], "invalid duration"),
        (["apps", "update", "API_KEY", "--require-iat", "--no-require-iat"], "not allowed with argument"),
        (["apps", "update", "API_KEY", "--token-ttl", "2d", "--max-token-lifetime", "1d"], "exceeds the maximum"),
        (["keys", "rotate", "API_KEY"], "rotate the API secret instead"),
        (["keys", "retire", "API_KEY", "KEY_ID"], "this is the current API secret"),
        (["keys", "retire", "API_KEY", "knosuchkey"], "no live key 'knosuchkey'"),
        (["audit", "list", "--limit", "1001"], "the limit must be 1 to 1000"),
        (["audit", "list", "--since", "yesterday"], "invalid time"),
        (["operators", "new-token", "no spaces"], "the operator id must be"),
    ],
    ids=[
        "unknown-app", "no-change", "bad-ttl", "conflicting-flags", "ttl-over-max", "rotate-hs256",
        "retire-current-secret", "retire-unknown", "limit", "since", "operator-id",
    ],
)  # fmt: skip
def test_operator_commands_fail_with_one_line(env: dict[str, str], args: list[str], message: str) -> None:
    app = create(env)
    substituted = [app["api_key"] if arg == "API_KEY" else app["key_id"] if arg == "KEY_ID" else arg for arg in args]
    one_line_error(authsvc(*substituted, env=env), message)


def test_rotate_secret_rotate_and_retire_keys_and_show_never_prints_a_secret(
    env: dict[str, str], tmp_path: Path
) -> None:
    app = create(env, "--algorithm", "ES256")
    api_key, first_secret = app["api_key"], app["api_secret"]
    rotated = ok(authsvc("apps", "rotate-secret", api_key, "--overlap", "1h", env=env))
    assert rotated["api_key"] == api_key and rotated["api_secret"] != first_secret
    assert rotated["old_secrets_expire_at"]
    secret_file = tmp_path / "secret"
    imported_secret = secrets.token_urlsafe(40)
    secret_file.write_text(imported_secret)
    imported = ok(authsvc("apps", "rotate-secret", api_key, "--api-secret-file", str(secret_file), env=env))
    assert imported["api_secret"] == imported_secret

    key = ok(authsvc("keys", "rotate", api_key, "--delay", "0s", env=env))
    shown = ok(authsvc("apps", "show", api_key, env=env))
    pairs = [k["key_id"] for k in shown["keys"] if k["kind"] == "key_pair"]
    assert pairs == [key["key_id"], app["key_id"]]
    assert [k["key_id"] for k in shown["keys"] if k["kind"] == "api_secret"] == [
        imported["key_id"],
        rotated["key_id"],
        app["keys"][0]["key_id"],
    ]
    retired = ok(authsvc("keys", "retire", api_key, app["key_id"], env=env))
    assert app["key_id"] not in [k["key_id"] for k in retired["keys"]]

    audit = ok(authsvc("audit", "list", "--app", api_key, "--limit", "3", env=env))
    assert [event["action"] for event in audit] == ["key.retired", "key.rotated", "api_secret.rotated"]
    assert ok(authsvc("audit", "list", "--app", api_key, "--action", "key.", "--limit", "1", env=env))[0][
        "details"
    ] == {"key_id": app["key_id"]}
    since = ok(authsvc("audit", "list", "--app", api_key, "--since", audit[1]["at"], env=env))
    assert [event["action"] for event in since] == ["key.retired", "key.rotated"]

    outputs = [
        authsvc("apps", "show", api_key, env=env).stdout,
        authsvc("apps", "list", env=env).stdout,
        authsvc("audit", "list", "--app", api_key, env=env).stdout,
    ]
    for output in outputs:
        assert api_key in output
        for secret in (first_secret, rotated["api_secret"], imported_secret):
            assert secret not in output
        assert "PRIVATE KEY" not in output


def test_keys_rotate_defaults_to_the_configured_delay(env: dict[str, str]) -> None:
    app = create(env, "--algorithm", "EdDSA")
    key = ok(authsvc("keys", "rotate", app["api_key"], env={**env, "AUTHSVC_KEY_ROTATION_DELAY": "7d"}))
    shown = ok(authsvc("apps", "show", app["api_key"], env=env))
    assert shown["keys"][1]["key_id"] == key["key_id"] and shown["keys"][1]["signs_from"] == key["signs_from"]


def test_new_token_and_new_kek_print_fresh_values_that_the_settings_accept() -> None:
    first = authsvc("operators", "new-token", "alice", env=clean_env())
    second = authsvc("operators", "new-token", "alice", env=clean_env())
    assert first.returncode == 0 and first.stdout != second.stdout
    line = first.stdout.strip()
    operator_id, _, token = line.partition(":")
    assert operator_id == "alice" and len(token) >= 43
    assert Settings.from_env({"AUTHSVC_OPERATOR_TOKENS": line}).operator_tokens == (("alice", hash_token(token)),)
    # It works even when the configured tokens are broken: it is how one makes a good one.
    broken = authsvc("operators", "new-token", "bob", env=clean_env(AUTHSVC_OPERATOR_TOKENS="bob:short"))
    assert broken.returncode == 0 and broken.stdout.startswith("bob:")
    kek = authsvc("keys", "new-kek", env=clean_env())
    assert kek.returncode == 0 and len(parse_kek(kek.stdout)) == 32


def test_reencrypt_under_a_new_first_kek_lets_the_new_kek_alone_open_everything(fresh_database: str) -> None:
    old_env = clean_env(AUTHSVC_DATABASE_URL=fresh_database)
    hs256 = ok(authsvc("apps", "create", "hs", env=old_env))
    eddsa = ok(authsvc("apps", "create", "ed", "--algorithm", "EdDSA", env=old_env))
    new_kek = new_kek_text()
    new_only = clean_env(AUTHSVC_DATABASE_URL=fresh_database, AUTHSVC_KEK=new_kek)
    one_line_error(authsvc("apps", "show", hs256["api_key"], env=new_only), "cannot open the keys of app")

    both = clean_env(AUTHSVC_DATABASE_URL=fresh_database, AUTHSVC_KEK=f"{new_kek},{TEST_KEK}")
    assert ok(authsvc("keys", "reencrypt", env=both)) == {"resealed": 3}  # two secrets and a key pair
    assert ok(authsvc("keys", "reencrypt", env=both)) == {"resealed": 0}

    for app in (hs256, eddsa):
        shown = ok(authsvc("apps", "show", app["api_key"], env=new_only))
        assert shown["keys"] == app["keys"] and app["api_secret"] not in json.dumps(shown)
    assert len(ok(authsvc("apps", "list", env=new_only))) == 2
    one_line_error(authsvc("apps", "list", env=old_env), "cannot open the keys of app")
    (event,) = ok(authsvc("audit", "list", "--action", "keys.", env=new_only))
    assert event["actor"] == f"cli:{getpass.getuser()}" and event["details"]["keys"] == 3


def test_during_a_rotation_delay_apps_show_names_the_key_that_signs_as_get_app_does(env: dict[str, str]) -> None:
    app = create(env, "--algorithm", "EdDSA")
    rotated = ok(authsvc("keys", "rotate", app["api_key"], "--delay", "1h", env=env))
    shown = ok(authsvc("apps", "show", app["api_key"], env=env))
    # The new pair is published (listed first, newest first) but signs only in an hour: the old one signs now.
    assert [k["key_id"] for k in shown["keys"] if k["kind"] == "key_pair"] == [rotated["key_id"], app["key_id"]]
    assert shown["key_id"] == app["key_id"]
    assert shown["public_key"] == app["public_key"]
