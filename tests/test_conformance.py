"""The conformance vectors (conformance/vectors.json) on the real server and on the Python LocalVerifier.

The server run rebuilds the file's apps in the session's database (fixed keys, the setup steps at their times),
sets the server's clock to each case's `now` and calls VerifyToken over gRPC through the generated stub. The local
run feeds each app's captured WatchState messages (both streams) into a fresh authsvc.client.LocalVerifier. Every
field of each case's `expect` must match; a failure lists each case that differs, with expected and got.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from authsvc.state import State
from authsvc.store import Store
from authsvc.tokens import App
from authsvc.v1 import auth_service_pb2 as pb
from tests import conformance
from tests.support import FakeClock

if TYPE_CHECKING:
    from authsvc.v1.auth_service_pb2_grpc import AuthServiceAsyncStub

VECTORS = conformance.load()
APPS = {app["name"]: app for app in VECTORS["apps"]}
CASES = VECTORS["cases"]


def cases_of(app: str) -> list[dict[str, Any]]:
    return [case for case in CASES if case["app"] == app]


@pytest.fixture(scope="module")
async def rebuilt(
    store: Store, state: State, stub: AuthServiceAsyncStub, session_clock: FakeClock
) -> AsyncIterator[dict[str, App]]:
    """The file's apps, created in the session's database with their setup steps run."""
    server = conformance.Server(store, state, stub, session_clock.set)
    try:
        yield {name: await conformance.rebuild(server, spec) for name, spec in APPS.items()}
    finally:
        session_clock.reset()


@pytest.mark.parametrize("app", APPS)
async def test_the_server_gives_each_cases_verdict(
    app: str, rebuilt: dict[str, App], stub: AuthServiceAsyncStub, clock: FakeClock
) -> None:
    problems = []
    for case in cases_of(app):
        clock.set(case["now"])
        response = await stub.VerifyToken(
            pb.VerifyTokenRequest(token=case["token"]), metadata=(("x-api-key", rebuilt[app].api_key),)
        )
        problem = conformance.mismatch(case, "server", conformance.expectation(response))
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stream", ["changes", "snapshot"])
@pytest.mark.parametrize("app", APPS)
def test_the_python_local_verifier_gives_each_cases_verdict(app: str, stream: str) -> None:
    cases = cases_of(app)
    verdicts = conformance.local_verdicts(APPS[app], stream, cases)
    problems = [
        problem
        for case, got in zip(cases, verdicts, strict=True)
        if (problem := conformance.mismatch(case, f"python LocalVerifier ({stream} stream)", got))
    ]
    assert not problems, "\n".join(problems)


def test_the_comparison_names_the_case_the_implementation_and_each_field_that_differs() -> None:
    case = next(case for case in CASES if case["expect"]["outcome"] == "VALID" and case["expect"]["issued_at"])
    assert conformance.mismatch(case, "server", dict(case["expect"])) is None
    got = {**case["expect"], "outcome": "REVOKED", "dev_token": not case["expect"]["dev_token"]}
    message = conformance.mismatch(case, "node", got)
    assert message is not None
    assert message.startswith(f"{case['name']} [node] at now={case['now']}: ")
    assert 'outcome: expected "VALID", got "REVOKED"' in message
    assert "dev_token: expected" in message
    assert "claims" not in message
    # JSON tells true from 1 and "1" from 1: so does the comparison.
    claims = case["expect"]["claims"]
    name = next(iter(claims))
    assert conformance.mismatch(case, "node", {**case["expect"], "claims": {**claims, name: True}}) is not None
    assert conformance.mismatch(case, "node", {**case["expect"], "issued_at": None}) is not None


def test_the_file_covers_every_outcome_and_every_step_of_the_token_model() -> None:
    outcomes = Counter(case["expect"]["outcome"] for case in CASES)
    assert set(outcomes) == set(conformance.OUTCOMES), f"outcomes covered: {dict(outcomes)}"
    for case in CASES:
        assert conformance.RULE_PATTERN.fullmatch(case["rule"]), f"{case['name']}: rule names no TOKEN_MODEL step"
        # The recorded answer is the one the rule calls for: an answer edited by hand, or a rule misread, shows.
        assert conformance.called_for(case["rule"]) == case["expect"]["outcome"], case["name"]
        assert case["app"] in APPS, f"{case['name']}: no app {case['app']!r}"
        assert set(case["expect"]) == {
            "outcome",
            "user_id",
            "issued_at",
            "expires_at",
            "dev_token",
            "claims",
            "revoked_by",
            "revoked_before",
            "valid_from",
            "client_action",
        }
        # Every verdict but VALID says what the client should do; a REVOKED one, which revocation decided.
        assert (case["expect"]["client_action"] is None) == (case["expect"]["outcome"] == "VALID"), case["name"]
        assert (case["expect"]["revoked_by"] is not None) == (case["expect"]["outcome"] == "REVOKED"), case["name"]
    scopes = {case["expect"]["revoked_by"] for case in CASES}
    assert scopes >= {"APP", "USER", "TOKEN"}, f"revocation scopes covered: {scopes}"
    named = {match.group(1) for case in CASES if (match := conformance.RULE_PATTERN.fullmatch(case["rule"]))}
    assert named == set(conformance.RULES), f"not named by any case: {sorted(set(conformance.RULES) - named)}"
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names)), "case names are unique"
    for spec in APPS.values():
        for stream in ("changes", "snapshot"):
            messages = conformance.decode_stream(spec["streams"][stream])
            assert messages and messages[0].WhichOneof("event") == "snapshot", f"{spec['name']}: {stream}"
        assert len(spec["streams"]["changes"]) > len(spec["setup"]["steps"]), f"{spec['name']}: a change per step"
