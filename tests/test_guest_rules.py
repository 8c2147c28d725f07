"""Guests, anonymous users and roles on the pure domain functions (tokens, verifier, ratelimit), exact times."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import jwt
import pytest

from authsvc import tokens
from authsvc.clock import MICROS_PER_SECOND as S
from authsvc.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from authsvc.ratelimit import GuestLimits, RateLimiter, caller_address
from authsvc.tokens import App, Outcome, Role, Secret
from authsvc.verifier import Verifier

NOW = 1_800_000_000 * S
LEEWAY = 5 * S
SECRET = "tjZbH3pX0c9bq1D2y8oW6kLr5sVnA4eQ7uTfGmJiRhE"
APP = App(id=1, api_key="appkey123", name="chat", secrets=(Secret("k1", SECRET),))
GUESTS = replace(APP, guest_access=True, guest_token_ttl_seconds=3600)


def check(token: str, app: App = APP, now: int = NOW, user_revoked_before: int | None = None) -> tokens.Verification:
    return Verifier(cache_size=0).verify(
        token, app, now=now, leeway=LEEWAY, revoked_before=lambda app_id, user_id, issued_at: user_revoked_before
    )


def guest(app: App = GUESTS, user_id: str = "", name: str = "", now: int = NOW) -> tokens.IssuedToken:
    return tokens.issue_guest(app, user_id, name, now=now, issuer="authsvc", jti="j1", random_id="r4nd0m")


def vendor_token(payload: dict[str, Any]) -> str:
    return jwt.encode(payload, SECRET, algorithm="HS256")


class TestGuestTokens:
    def test_refused_when_the_app_does_not_allow_guests(self) -> None:
        with pytest.raises(FailedPrecondition) as info:
            guest(APP)
        assert info.value.reason == "GUEST_ACCESS_DISABLED" and info.value.status == "FAILED_PRECONDITION"

    def test_requested_id_is_put_in_the_guest_namespace(self) -> None:
        issued = guest(user_id="bob", name="Bob the Builder")
        assert issued.user_id == "guest-bob"
        claims = jwt.decode(issued.token, options={"verify_signature": False})
        assert claims["user_id"] == "guest-bob" and claims["role"] == "guest" and claims["name"] == "Bob the Builder"
        result = check(issued.token, GUESTS)
        assert result.outcome is Outcome.VALID and result.role is Role.GUEST and result.user_id == "guest-bob"

    def test_no_requested_id_takes_the_random_one_and_no_name_claim(self) -> None:
        issued = guest()
        assert issued.user_id == "guest-r4nd0m"
        assert "name" not in jwt.decode(issued.token, options={"verify_signature": False})

    def test_lives_the_guest_token_ttl_or_the_shorter_maximum_lifetime(self) -> None:
        assert guest().expires_at == NOW + 3600 * S
        assert guest(replace(GUESTS, max_token_lifetime_seconds=600)).expires_at == NOW + 600 * S
        # the app's default token lifetime is for users: it does not stretch a guest's
        assert guest(replace(GUESTS, token_ttl_seconds=7 * 86400)).expires_at == NOW + 3600 * S

    @pytest.mark.parametrize(
        ("user_id", "name", "reason"),
        [
            ("bob!", "", "INVALID_USER_ID"),
            ("b" * 250, "", "INVALID_USER_ID"),
            ("bob", "x" * 256, "INVALID_GUEST_NAME"),
            ("bob", "line\nbreak", "INVALID_GUEST_NAME"),
        ],
        ids=["bad-character", "too-long-with-prefix", "long-name", "control-character"],
    )
    def test_bad_requests_are_typed_errors(self, user_id: str, name: str, reason: str) -> None:
        with pytest.raises(InvalidArgument) as info:
            guest(user_id=user_id, name=name)
        assert info.value.reason == reason

    def test_longest_requested_id_fits(self) -> None:
        assert len(guest(user_id="b" * 249).user_id) == 255

    def test_issue_token_refuses_the_guest_namespace(self) -> None:
        with pytest.raises(InvalidArgument) as info:
            tokens.issue(APP, "guest-bob", now=NOW, issuer="authsvc", jti="j1")
        assert info.value.reason == "RESERVED_USER_ID"
        # only the exact prefix is reserved: ids are compared exactly, so these are never a guest's
        for user_id in ("Guest-bob", "guestbob", "guest_bob", "bob-guest-"):
            assert check(tokens.issue(APP, user_id, now=NOW, issuer="authsvc", jti="j1").token).role is Role.USER

    def test_a_guest_token_never_outlives_the_guest_token_ttl(self) -> None:
        issued = guest()
        assert check(issued.token, GUESTS, now=NOW + 3600 * S + LEEWAY - 1).outcome is Outcome.VALID
        assert check(issued.token, GUESTS, now=NOW + 3600 * S + LEEWAY).outcome is Outcome.EXPIRED
        # lowering the setting bounds the tokens already out: it counts from their iat
        shorter = replace(GUESTS, guest_token_ttl_seconds=60)
        result = check(issued.token, shorter, now=NOW + 61 * S + LEEWAY)
        assert result.outcome is Outcome.EXPIRED and result.expires_at == NOW + 60 * S
        # a guest token minted elsewhere with a longer exp, or none, expires at iat + the guest token ttl
        for payload in (
            {"user_id": "guest-x", "iat": NOW // S},
            {"user_id": "guest-x", "iat": NOW // S, "exp": NOW // S + 10**7},
        ):
            assert check(vendor_token(payload), GUESTS, now=NOW + 3599 * S).outcome is Outcome.VALID
            assert check(vendor_token(payload), GUESTS, now=NOW + 3600 * S + LEEWAY).outcome is Outcome.EXPIRED

    def test_a_guest_token_without_iat_is_malformed(self) -> None:
        result = check(vendor_token({"user_id": "guest-x"}), GUESTS)
        assert result.outcome is Outcome.MALFORMED and result.role is Role.GUEST

    def test_guest_tokens_verify_whatever_guest_access_says_now(self) -> None:
        # switching guests off stops new guest tokens; revoke to end the ones out
        assert check(guest().token, APP).outcome is Outcome.VALID

    def test_user_revocation_of_a_guest(self) -> None:
        result = check(guest().token, GUESTS, user_revoked_before=NOW + 1)
        assert result.outcome is Outcome.REVOKED and result.role is Role.GUEST


class TestAnonymous:
    def test_empty_token_is_anonymous_disabled_by_default(self) -> None:
        result = check("")
        assert result.outcome is Outcome.ANONYMOUS_DISABLED and not result.valid
        assert result.role is Role.UNSPECIFIED and result.user_id == ""

    def test_empty_token_is_valid_anonymous_when_allowed(self) -> None:
        result = check("", replace(APP, anonymous_access=True))
        assert result.valid and result.role is Role.ANONYMOUS and result.user_id == "" and not result.claims

    @pytest.mark.parametrize("token", [" ", ".", "..", "abc"])
    def test_a_non_empty_malformed_token_stays_malformed(self, token: str) -> None:
        assert check(token, replace(APP, anonymous_access=True)).outcome is Outcome.MALFORMED

    def test_a_user_token_is_a_user(self) -> None:
        result = check(vendor_token({"user_id": "alice"}), replace(APP, anonymous_access=True))
        assert result.valid and result.role is Role.USER

    def test_the_cache_never_answers_an_empty_token(self) -> None:
        verifier = Verifier(cache_size=10)
        allowed = replace(APP, anonymous_access=True)
        for app, outcome in ((allowed, Outcome.VALID), (APP, Outcome.ANONYMOUS_DISABLED)) * 2:
            result = verifier.verify("", app, now=NOW, leeway=LEEWAY, revoked_before=lambda a, u, i: None)
            assert result.outcome is outcome
        assert "" not in verifier


class TestRateLimits:
    def test_a_bucket_passes_its_burst_then_spaces_calls(self) -> None:
        limiter = RateLimiter(60)  # one a second, bursts of 60
        assert all(limiter.take("a", NOW) == 0 for _ in range(60))
        assert limiter.take("a", NOW) == S  # the next one in a second
        assert limiter.take("b", NOW) == 0  # keys are separate
        assert limiter.take("a", NOW + S) == 0
        assert limiter.take("a", NOW + S) > 0

    def test_zero_is_no_limit(self) -> None:
        limiter = RateLimiter(0)
        assert all(limiter.take("a", NOW) == 0 for _ in range(10_000))

    def test_full_buckets_are_forgotten_past_max_keys(self) -> None:
        limiter = RateLimiter(60, max_keys=3)
        for key in "abc":
            limiter.take(key, NOW)
        limiter.take("d", NOW + 10 * S)  # a, b and c refilled since: forgotten
        assert len(limiter._empty_at) == 1

    def test_guest_limits_name_the_scope_and_the_wait(self) -> None:
        limits = GuestLimits(per_app=3, per_address=2)
        limits.admit("app", "ipv4:10.0.0.1:4000", NOW)
        limits.admit("app", "ipv4:10.0.0.1:4001", NOW)  # another port, the same address
        with pytest.raises(ResourceExhausted) as info:
            limits.admit("app", "ipv4:10.0.0.1:4002", NOW)
        assert info.value.reason == "GUEST_RATE_LIMITED" and "address" in info.value.message
        assert info.value.retry_after == pytest.approx(30.0)
        limits.admit("app", "ipv6:[::1]:5000", NOW)
        with pytest.raises(ResourceExhausted) as info:
            limits.admit("app", "ipv4:10.0.0.2:4000", NOW)
        assert "app" in info.value.message and info.value.retry_after == pytest.approx(20.0)

    @pytest.mark.parametrize(
        ("peer", "address"),
        [("ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"), ("ipv6:[::1]:51234", "ipv6:[::1]"), ("unix:/tmp/s", "unix:/tmp/s")],
    )
    def test_caller_address_drops_the_port(self, peer: str, address: str) -> None:
        assert caller_address(peer) == address
