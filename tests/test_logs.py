"""Structured logs: JSON lines on stdout, one access line per call with its request id, and no secrets."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from authsvc.logs import (
    AccessRecord,
    JsonFormatter,
    configure_logging,
    current_request_id,
    loggable_api_key,
    request_id,
)
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc
from tests.conftest import NewApp
from tests.processes import clean_env, serve
from tests.support import api_key_only, backend, failure

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub


def test_a_record_is_one_json_object_with_its_extra_fields_and_request_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter({"worker": 2}))
    logger = logging.getLogger("tests.logs.formatter")
    logger.addHandler(handler)
    logger.propagate = False
    token = current_request_id.set("req-1")
    try:
        logger.warning("app %s is %s", "k1", "odd", extra={"api_key": "k1", "count": 3})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed\nbadly")
    finally:
        current_request_id.reset(token)
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, "a multi-line message or traceback still makes one line"
    first, second = (json.loads(line) for line in lines)
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    del first["time"]
    assert first == {
        "level": "WARNING",
        "logger": "tests.logs.formatter",
        "message": "app k1 is odd",
        "worker": 2,
        "request_id": "req-1",
        "api_key": "k1",
        "count": 3,
    }
    assert second["level"] == "ERROR" and second["message"] == "failed\nbadly"
    assert "RuntimeError: boom" in second["exception"]


@pytest.mark.parametrize(
    ("fields", "method", "code", "api_key", "rid"),
    [
        ({"worker": 2}, "authsvc.v1.AuthService/VerifyToken", "OK", "k3x9q2m7a1b5c8d0e4f6", "req-1"),
        ({}, "grpc.health.v1.Health/Check", "OK", None, None),
        ({"worker": 1, "pod": 'a"b\\c'}, 'x/Odd "method" é\n', "INVALID_ARGUMENT", 'sha256:"x"\u2028', "r:2"),
        ({"method": "taken"}, "authsvc.v1.AuthService/IssueToken", "NOT_FOUND", "sha256:0123abcd", "r-3"),
    ],
    ids=["usual", "no-key-no-id", "needs-escaping", "field-takes-a-key"],
)
def test_an_access_line_is_the_json_object_of_any_record_with_its_fields(
    fields: dict[str, object], method: str, code: str, api_key: str | None, rid: str | None
) -> None:
    # Access lines are written by a path of their own; they must say what the generic path says of the same record.
    formatter = JsonFormatter(fields)
    access = AccessRecord(logging.INFO, method, code, 0.0123456, api_key)
    extra = {"method": method, "code": code, "duration_ms": 12.346, "api_key": api_key, "reason": None, "peer": None}
    generic = logging.LogRecord("authsvc.access", logging.INFO, "", 0, "%s %s", (method, code), None)
    generic.__dict__.update(extra, created=access.created, msecs=access.msecs)
    token = current_request_id.set(rid)
    try:
        fast, slow = formatter.format(access), formatter.format(generic)
    finally:
        current_request_id.reset(token)
    assert json.loads(fast) == json.loads(slow)
    assert list(json.loads(fast)) == list(json.loads(slow)), "the same keys in the same order"
    assert json.loads(fast)["message"] == f"{method} {code}"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-42", True),
        ("7f0c9a1e-3b2d-4c5e-9f60-1a2b3c4d5e6f", True),
        (None, False),
        ("", False),
        ("x" * 65, False),
        ("eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiYSJ9.c2ln", False),  # a token pasted into the wrong header
        ("two words", False),
    ],
)
def test_a_plain_request_id_is_kept_anything_else_replaced(sent: str | None, kept: bool) -> None:
    chosen = request_id(sent)
    if kept:
        assert chosen == sent
    else:
        assert chosen != sent and len(chosen) == 16 and int(chosen, 16) >= 0


KNOWN_KEY = "k3x9q2m7a1b5c8d0e4f6"


@pytest.mark.parametrize(
    ("sent", "logged"),
    [
        (KNOWN_KEY, KNOWN_KEY),
        (None, None),
        ("kd0e4f6k3x9q2m7a1b5c8", "sha256:309a7963"),  # the shape of a key, but no app's
        ("Zq3-_secretlooking0123456789abcdefghijklmnop", "sha256:65d75f89"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiYSJ9.c2ln", "sha256:12930052"),
    ],
)
def test_only_the_key_of_an_existing_app_is_logged_as_sent(sent: str | None, logged: str | None) -> None:
    assert loggable_api_key(sent, {KNOWN_KEY}.__contains__) == logged
    if sent is not None:
        assert loggable_api_key(sent) == "sha256:" + hashlib.sha256(sent.encode()).hexdigest()[:8]


async def test_the_request_id_comes_back_in_trailing_metadata(stub: AuthServiceAsyncStub, new_app: NewApp) -> None:
    app = await new_app()
    call = stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=(*backend(app), ("x-request-id", "r-1")))
    await call
    assert ("x-request-id", "r-1") in list(await call.trailing_metadata())
    call = stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))
    await call
    fresh = dict(await call.trailing_metadata())["x-request-id"]
    assert isinstance(fresh, str) and len(fresh) == 16
    # An error keeps both the request id and its rich status (ErrorInfo).
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.VerifyTokens(pb.VerifyTokensRequest(), metadata=(*api_key_only(app), ("x-request-id", "r-2")))
    assert ("x-request-id", "r-2") in list(failed.value.trailing_metadata() or ())
    assert failure(failed.value).reason == "INVALID_BATCH_SIZE"


async def test_serve_logs_one_json_line_per_call_and_never_a_secret(
    database_url: str, new_app: NewApp, tmp_path: Path
) -> None:
    app = await new_app("logged")
    env = clean_env(AUTHSVC_DATABASE_URL=database_url)
    async with serve(env, tmp_path, workers=1) as served:
        async with grpc.aio.insecure_channel(served.target) as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            issued = await stub.IssueToken(
                pb.IssueTokenRequest(user_id="alice"), metadata=(*backend(app), ("x-request-id", "issue-1"))
            )
            await stub.VerifyToken(
                pb.VerifyTokenRequest(token=issued.token), metadata=(*api_key_only(app), ("x-request-id", "verify-1"))
            )
            with pytest.raises(grpc.aio.AioRpcError) as bad_credential:  # a user token where a backend credential goes
                await stub.IssueToken(
                    pb.IssueTokenRequest(user_id="alice"),
                    metadata=(*backend(app, issued.token), ("x-request-id", "bad-credential")),
                )
            with pytest.raises(grpc.aio.AioRpcError) as swapped:  # the secret sent where the API key goes
                await stub.VerifyToken(
                    pb.VerifyTokenRequest(token=issued.token),
                    metadata=(("x-api-key", app.api_secret), ("x-request-id", "swapped")),
                )
        await served.wait_for(lambda records: any(r.get("request_id") == "swapped" for r in records))
    assert served.process.returncode == 0, served.output

    assert all(not record.get("not_json") for record in served.records), served.output
    access = {r["request_id"]: r for r in served.records if r.get("logger") == "authsvc.access"}
    assert set(access) == {"issue-1", "verify-1", "bad-credential", "swapped"}
    for record in access.values():
        assert record["level"] == "INFO"
        assert isinstance(record["duration_ms"], float) and record["duration_ms"] >= 0
    assert access["issue-1"] | {"duration_ms": 0, "time": ""} == {
        "time": "",
        "level": "INFO",
        "logger": "authsvc.access",
        "message": "authsvc.v1.AuthService/IssueToken OK",
        "request_id": "issue-1",
        "method": "authsvc.v1.AuthService/IssueToken",
        "code": "OK",
        "duration_ms": 0,
        "api_key": app.api_key,
        "reason": None,
        "peer": access["issue-1"]["peer"],
    }
    # The caller's address as gRPC names it (the test's channel: loopback, some port).
    assert re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", access["issue-1"]["peer"])
    # A failure's line names the ErrorInfo reason the caller got.
    assert access["bad-credential"]["reason"] == failure(bad_credential.value).reason == "USER_TOKEN_NOT_ALLOWED"
    assert access["swapped"]["reason"] == failure(swapped.value).reason == "APP_NOT_FOUND"
    assert (access["verify-1"]["method"], access["verify-1"]["code"]) == ("authsvc.v1.AuthService/VerifyToken", "OK")
    assert access["bad-credential"]["code"] == "PERMISSION_DENIED"
    assert access["bad-credential"]["api_key"] == app.api_key
    assert access["swapped"]["code"] == "NOT_FOUND"
    assert access["swapped"]["api_key"] == "sha256:" + hashlib.sha256(app.api_secret.encode()).hexdigest()[:8]

    output = served.output
    assert issued.token not in output
    for part in issued.token.split("."):
        assert part not in output, "no piece of a token is logged"
    assert app.api_secret not in output
    assert "Bearer" not in output


async def test_past_the_access_log_rate_ok_lines_are_counted_not_written_and_failures_always_are(
    database_url: str, new_app: NewApp, tmp_path: Path
) -> None:
    app = await new_app("rate-limited")
    env = clean_env(AUTHSVC_DATABASE_URL=database_url, AUTHSVC_ACCESS_LOG_RATE="0")
    async with serve(env, tmp_path, workers=1) as served:
        async with grpc.aio.insecure_channel(served.target) as channel:
            stub = auth_service_pb2_grpc.AuthServiceStub(channel)
            token = (await stub.IssueToken(pb.IssueTokenRequest(user_id="alice"), metadata=backend(app))).token
            for n in range(20):
                await stub.VerifyToken(
                    pb.VerifyTokenRequest(token=token), metadata=(*api_key_only(app), ("x-request-id", f"ok-{n}"))
                )
            for n in range(3):
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.VerifyTokens(
                        pb.VerifyTokensRequest(), metadata=(*api_key_only(app), ("x-request-id", f"bad-{n}"))
                    )
            # The calls past the rate are reported once their second is over, with the next call after it.
            await asyncio.sleep(1.1)
            await stub.VerifyToken(pb.VerifyTokenRequest(token=token), metadata=api_key_only(app))

        def reported(records: list[dict[str, object]]) -> int:
            return sum(int(str(r.get("not_logged", 0))) for r in records if r.get("logger") == "authsvc.access")

        await served.wait_for(lambda records: reported(records) >= 21)
    access = [r for r in served.records if r.get("logger") == "authsvc.access" and "code" in r]
    assert sorted(r["request_id"] for r in access) == ["bad-0", "bad-1", "bad-2"]
    assert all(r["code"] == "INVALID_ARGUMENT" for r in access)
    assert reported(served.records) == 21  # IssueToken and the 20 VerifyToken; the last call is not reported yet


def test_configuring_logging_again_ends_the_previous_handlers_flushing_thread() -> None:
    import threading

    def flushers() -> int:
        return sum(thread.name == "authsvc-log-flush" and thread.is_alive() for thread in threading.enumerate())

    root = logging.getLogger()
    kept_handlers, kept_level = list(root.handlers), root.level
    try:
        configure_logging("INFO", io.StringIO())
        before = flushers()
        for _ in range(5):
            configure_logging("INFO", io.StringIO())
        for thread in threading.enumerate():  # the closed ones end at their next wake-up at the latest
            if thread.name == "authsvc-log-flush" and thread is not threading.current_thread():
                thread.join(timeout=0.05)
        assert flushers() <= before
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in kept_handlers:
            root.addHandler(handler)
        root.setLevel(kept_level)
