"""The hot-path verifier: its cache never changes a verdict, only skips repeated parsing and signatures."""

from __future__ import annotations

import dataclasses
from typing import Any

import jwt
import pytest
from google.protobuf import struct_pb2

from authsvc import tokens
from authsvc.clock import MICROS_PER_SECOND as S
from authsvc.tokens import App, Outcome, Secret
from authsvc.verifier import Verifier
from authsvc.wire import verify_response

NOW = 1_800_000_000 * S
SECRET = "tjZbH3pX0c9bq1D2y8oW6kLr5sVnA4eQ7uTfGmJiRhE"
APP = App(id=1, api_key="appkey123", name="chat", secrets=(Secret("k1", SECRET),))


def token(payload: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def test_cached_tokens_still_expire() -> None:
    verifier = Verifier()
    t = token({"user_id": "alice", "exp": NOW // S + 60})
    no_revocations = lambda app_id, user_id, issued_at: None  # noqa: E731
    for _ in range(2):  # a token enters the cache on its second good check
        assert verifier.verify(t, APP, now=NOW, leeway=0, revoked_before=no_revocations).valid
    assert t in verifier
    later = verifier.verify(t, APP, now=NOW + 61 * S, leeway=0, revoked_before=no_revocations)
    assert later.outcome is Outcome.EXPIRED


def test_cached_tokens_still_see_revocations() -> None:
    verifier = Verifier()
    t = token({"user_id": "alice", "iat": NOW // S})
    assert verifier.verify(t, APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: None).valid
    revoked = verifier.verify(t, APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: NOW + 1)
    assert revoked.outcome is Outcome.REVOKED
    app_revoked = dataclasses.replace(APP, revoked_before=NOW + 1)
    assert verifier.verify(t, app_revoked, now=NOW, leeway=0, revoked_before=lambda a, u, i: None).outcome is (
        Outcome.REVOKED
    )


def test_a_token_checked_for_one_app_is_checked_again_for_another() -> None:
    verifier = Verifier()
    t = token({"user_id": "alice"})
    assert verifier.verify(t, APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: None).valid
    other = App(id=2, api_key="other", name="o", secrets=(Secret("k1", "x" * 43),))
    result = verifier.verify(t, other, now=NOW, leeway=0, revoked_before=lambda a, u, i: None)
    assert result.outcome is Outcome.INVALID_SIGNATURE


def test_a_new_secret_invalidates_what_the_old_one_checked() -> None:
    verifier = Verifier()
    t = token({"user_id": "alice"})
    assert verifier.verify(t, APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: None).valid
    rotated = dataclasses.replace(APP, secrets=(Secret("k1", "n" * 43),))
    assert verifier.verify(t, rotated, now=NOW, leeway=0, revoked_before=lambda a, u, i: None).outcome is (
        Outcome.INVALID_SIGNATURE
    )


def test_a_cached_token_of_a_rotated_out_secret_fails_when_its_overlap_ends() -> None:
    verifier = Verifier()
    t = token({"user_id": "alice"}, secret="o" * 43)
    # The app as it is during the overlap: a new current secret, the old one valid for another minute.
    overlapping = App(
        id=1, api_key="appkey123", name="chat", secrets=(Secret("k2", SECRET), Secret("k1", "o" * 43, NOW + 60 * S))
    )
    for _ in range(2):  # a token enters the cache on its second good check
        assert verifier.verify(t, overlapping, now=NOW, leeway=0, revoked_before=lambda a, u, i: None).valid
    assert t in verifier
    assert verifier.verify(t, overlapping, now=NOW + 59 * S, leeway=0, revoked_before=lambda a, u, i: None).valid
    after = verifier.verify(t, overlapping, now=NOW + 60 * S, leeway=0, revoked_before=lambda a, u, i: None)
    assert after.outcome is Outcome.INVALID_SIGNATURE


def test_dev_tokens_are_not_accepted_from_cache_once_auth_checks_are_back_on() -> None:
    verifier = Verifier()
    dev_app = dataclasses.replace(APP, auth_checks_disabled=True)
    header, payload, _ = token({"user_id": "alice"}).split(".")
    dev = f"{header}.{payload}.devtoken"
    assert verifier.verify(dev, dev_app, now=NOW, leeway=0, revoked_before=lambda a, u, i: None).dev_token
    assert verifier.verify(dev, APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: None).outcome is (
        Outcome.INVALID_SIGNATURE
    )


def test_invalid_tokens_are_not_remembered_and_the_cache_is_bounded() -> None:
    verifier = Verifier(cache_size=3)
    for i in range(10):
        for _ in range(2):
            verifier.verify(token({"user_id": f"u{i}"}), APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: None)
    for _ in range(2):
        verifier.verify(token({"user_id": "x"}, "y" * 43), APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: None)
    assert len(verifier) == 3
    assert token({"user_id": "u9"}) in verifier and token({"user_id": "u6"}) not in verifier  # oldest out


def test_an_answer_is_kept_only_with_its_cached_token_and_leaves_with_it() -> None:
    verifier = Verifier(cache_size=1)
    first, second = token({"user_id": "alice"}), token({"user_id": "bob"})
    verifier.keep_answer(first, "answer")  # not cached yet: nothing is kept
    assert verifier.answer(first) is None
    for _ in range(2):
        verifier.verify(first, APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: None)
    verifier.keep_answer(first, "answer")
    assert verifier.answer(first) == "answer"
    for _ in range(2):  # pushes `first` out of the one-entry cache
        verifier.verify(second, APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: None)
    assert verifier.answer(first) is None and verifier.answer(second) is None


def test_a_token_enters_the_cache_on_its_second_good_check() -> None:
    """Tokens presented once (a stream of fresh logins) must not push out the tokens in real use."""
    verifier = Verifier(cache_size=2)
    in_use = [token({"user_id": "alice"}), token({"user_id": "bob"})]
    for t in in_use * 2:
        verifier.verify(t, APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: None)
    assert all(t in verifier for t in in_use)
    for i in range(100):  # each presented once
        verifier.verify(token({"user_id": f"once{i}"}), APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: None)
    assert all(t in verifier for t in in_use)
    assert len(verifier) == 2


def test_same_verdicts_as_the_uncached_rules() -> None:
    verifier = Verifier()
    cases = [
        token({"user_id": "alice", "iat": NOW // S - 10}),
        token({"user_id": "alice", "exp": NOW // S - 10}),
        token({"iat": NOW // S}),
        token({"user_id": "bob", "aud": "elsewhere"}),
        token({"user_id": "alice"}, "z" * 43),
        "not-a-token",
    ]
    for t in cases * 3:  # the third round is served from the cache where it can be
        cached = verifier.verify(t, APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: NOW)
        plain = Verifier(cache_size=0).verify(t, APP, now=NOW, leeway=0, revoked_before=lambda a, u, i: NOW)
        assert cached == plain


@pytest.mark.parametrize(
    "claims",
    [
        {"user_id": "alice", "iat": 1763679190.123456, "exp": 1763682790, "aud": "k", "iss": "authsvc", "jti": "j"},
        {"name": "Zoë 😀", "long": "x" * 300, "neg": -5, "zero": 0, "f": 1e-300, "t": True, "fa": False},
        {"nested": {"a": [1, "b", None, {"c": True}]}, "list": [], "none": None, "ключ": "значение"},
    ],
    ids=["registered", "scalars", "nested"],
)
def test_claims_in_the_response_match_struct_update(claims: dict[str, Any]) -> None:
    expected = struct_pb2.Struct()
    expected.update(claims)
    result = tokens.Verification(Outcome.VALID, "alice", None, None, claims)
    assert verify_response(result).claims == expected


def test_an_integer_beyond_a_double_is_kept_as_text() -> None:
    result = tokens.Verification(Outcome.VALID, "alice", None, None, {"big": 10**400})
    assert verify_response(result).claims.fields["big"].string_value == str(10**400)
