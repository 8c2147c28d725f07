"""The token model's rules, tested on the pure domain functions with exact times."""

from __future__ import annotations

import base64
import hashlib
import hmac as hmac_module
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from authsvc import credentials, tokens
from authsvc.clock import MICROS_PER_SECOND as S
from authsvc.errors import InvalidArgument, PermissionDenied, Unauthenticated
from authsvc.tokens import App, Outcome, Secret
from authsvc.verifier import Verifier
from tests.support import newest_kid

NOW = 1_800_000_000 * S
LEEWAY = 5 * S
SECRET = "tjZbH3pX0c9bq1D2y8oW6kLr5sVnA4eQ7uTfGmJiRhE"
APP = App(id=1, api_key="appkey123", name="chat", secrets=(Secret("k1", SECRET),))


def vendor_token(payload: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    """A token minted the way a chat vendor's server SDK does: PyJWT, HS256, signed with the API secret."""
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def check(token: str, app: App = APP, now: int = NOW, user_revoked_before: int | None = None) -> tokens.Verification:
    """The production pipeline (authsvc.verifier), without its cache: every call runs every step."""
    return Verifier(cache_size=0).verify(
        token, app, now=now, leeway=LEEWAY, revoked_before=lambda app_id, user_id, issued_at: user_revoked_before
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: str) -> str:
    return ".".join((b64(json.dumps(header).encode()), b64(json.dumps(payload).encode()), signature))


def issue(app: App = APP, user_id: str = "alice", now: int = NOW, **options: Any) -> tokens.IssuedToken:
    return tokens.issue(app, user_id, now=now, issuer="authsvc", jti="j1", **options)


class TestIssue:
    def test_issued_token_carries_the_registered_claims_and_verifies(self) -> None:
        issued = issue(ttl=3600 * S)
        claims = jwt.decode(
            issued.token,
            SECRET,
            algorithms=["HS256"],
            audience=APP.api_key,
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims["user_id"] == "alice"
        assert claims["iat"] == NOW // S
        assert claims["exp"] == NOW // S + 3600
        assert claims["aud"] == APP.api_key and claims["iss"] == "authsvc" and claims["jti"] == "j1"
        assert jwt.get_unverified_header(issued.token)["kid"] == newest_kid(APP) == issued.key_id
        result = check(issued.token)
        assert result.outcome is Outcome.VALID
        assert (result.user_id, result.issued_at, result.expires_at) == ("alice", NOW, NOW + 3600 * S)

    def test_iat_keeps_microseconds(self) -> None:
        issued = issue(now=NOW + 123_456)
        assert jwt.decode(issued.token, options={"verify_signature": False})["iat"] == pytest.approx(
            (NOW + 123_456) / S
        )
        assert check(issued.token).issued_at == NOW + 123_456

    def test_without_expiry_the_app_default_lifetime_applies(self) -> None:
        app = App(id=1, api_key="appkey123", name="chat", secrets=(Secret("k1", SECRET),), token_ttl_seconds=60)
        assert issue(app).expires_at == NOW + 60 * S

    def test_an_app_without_default_lifetime_issues_tokens_that_never_expire(self) -> None:
        issued = issue()
        assert issued.expires_at is None
        assert "exp" not in jwt.decode(issued.token, options={"verify_signature": False})

    def test_explicit_expiry_overrides_the_default(self) -> None:
        assert issue(expires_at=NOW + 10 * S).expires_at == NOW + 10 * S

    @pytest.mark.parametrize("user_id", ["", "a" * 256, "bob smith", "ëve", "a/b", "x\x00", "a.b"])
    def test_bad_user_ids_are_refused(self, user_id: str) -> None:
        with pytest.raises(InvalidArgument) as info:
            issue(user_id=user_id)
        assert info.value.reason == "INVALID_USER_ID"

    @pytest.mark.parametrize("user_id", ["a", "a" * 255, "alice@example-chat_1", "0", "-_@"])
    def test_good_user_ids_are_accepted(self, user_id: str) -> None:
        assert check(issue(user_id=user_id).token).user_id == user_id

    @pytest.mark.parametrize("claim", sorted(tokens.RESERVED_CLAIMS))
    def test_extra_claims_cannot_replace_registered_ones(self, claim: str) -> None:
        with pytest.raises(InvalidArgument) as info:
            issue(claims={claim: "x"})
        assert info.value.reason == "RESERVED_CLAIM"

    def test_extra_claims_are_carried(self) -> None:
        result = check(issue(claims={"role": "admin", "channels": ["a", "b"]}).token)
        assert result.claims["role"] == "admin" and result.claims["channels"] == ["a", "b"]

    def test_claims_over_the_size_limit_are_refused(self) -> None:
        with pytest.raises(InvalidArgument) as info:
            issue(claims={"blob": "x" * tokens.MAX_CLAIMS_BYTES})
        assert info.value.reason == "CLAIMS_TOO_LARGE"

    @pytest.mark.parametrize("expires_at", [NOW, NOW - 1])
    def test_expiry_in_the_past_is_refused(self, expires_at: int) -> None:
        with pytest.raises(InvalidArgument) as info:
            issue(expires_at=expires_at)
        assert info.value.reason == "EXPIRY_IN_PAST"

    @pytest.mark.parametrize("ttl", [0, -S])
    def test_non_positive_ttl_is_refused(self, ttl: int) -> None:
        with pytest.raises(InvalidArgument) as info:
            issue(ttl=ttl)
        assert info.value.reason == "INVALID_TTL"


class TestVerifyOutcomes:
    def test_vendor_token_without_iat_and_exp_is_valid(self) -> None:
        result = check(vendor_token({"user_id": "alice"}))
        assert result.outcome is Outcome.VALID and result.issued_at is None and result.expires_at is None

    def test_vendor_token_with_iat_and_exp_is_valid(self) -> None:
        result = check(vendor_token({"user_id": "alice", "iat": NOW // S, "exp": NOW // S + 60}))
        assert result.outcome is Outcome.VALID and result.expires_at == NOW + 60 * S

    @pytest.mark.parametrize(
        "token",
        [" ", "abc", "a.b", "a.b.c.d", "a.b.c.d.e", "!!!.???.###", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln"],
        ids=["blank", "one-part", "two-parts", "four-parts", "jwe-shaped", "not-base64", "payload-not-json"],
    )
    def test_malformed(self, token: str) -> None:
        assert check(token).outcome is Outcome.MALFORMED

    def test_no_user_id_is_malformed(self) -> None:
        assert check(vendor_token({"iat": NOW // S})).outcome is Outcome.MALFORMED

    def test_server_token_is_not_a_user(self) -> None:
        assert check(vendor_token({"server": True})).outcome is Outcome.MALFORMED
        assert check(vendor_token({"server": True, "user_id": "alice"})).outcome is Outcome.MALFORMED

    def test_wrong_secret_is_invalid_signature(self) -> None:
        token = vendor_token({"user_id": "alice"}, secret="another-secret-of-another-app-0123456789")
        assert check(token).outcome is Outcome.INVALID_SIGNATURE

    def test_tampered_payload_is_invalid_signature(self) -> None:
        header, _, signature = vendor_token({"user_id": "alice"}).split(".")
        forged = b64(json.dumps({"user_id": "admin"}).encode())
        assert check(f"{header}.{forged}.{signature}").outcome is Outcome.INVALID_SIGNATURE

    @pytest.mark.parametrize("alg", ["none", "None", "NONE", "hs256", "HS384", "HS512", "RS256", "ES256"])
    def test_algorithms_outside_the_allow_list_are_invalid_signature(self, alg: str) -> None:
        token = unsigned({"alg": alg, "typ": "JWT"}, {"user_id": "alice"}, b64(b"sig"))
        assert check(token).outcome is Outcome.INVALID_SIGNATURE

    def test_alg_none_with_empty_signature_is_rejected(self) -> None:
        token = unsigned({"alg": "none"}, {"user_id": "alice"}, "")
        assert check(token).outcome in (Outcome.MALFORMED, Outcome.INVALID_SIGNATURE)
        assert not check(token).valid

    def test_kid_of_another_key_is_unknown_key(self) -> None:
        assert check(vendor_token({"user_id": "alice"}, kid="k-other")).outcome is Outcome.UNKNOWN_KEY

    def test_kid_of_the_app_key_is_accepted(self) -> None:
        assert check(vendor_token({"user_id": "alice"}, kid="k1")).outcome is Outcome.VALID

    def test_expired_beyond_leeway(self) -> None:
        token = vendor_token({"user_id": "alice", "exp": NOW // S - 6})
        assert check(token).outcome is Outcome.EXPIRED

    def test_expired_within_leeway_is_still_valid(self) -> None:
        assert check(vendor_token({"user_id": "alice", "exp": NOW // S - 4})).outcome is Outcome.VALID

    def test_expired_names_the_user_so_the_client_can_refresh(self) -> None:
        result = check(vendor_token({"user_id": "alice", "exp": NOW // S - 60}))
        assert result.outcome is Outcome.EXPIRED and result.user_id == "alice"

    @pytest.mark.parametrize("claim", ["nbf", "iat"])
    def test_future_nbf_or_iat_is_not_yet_valid(self, claim: str) -> None:
        assert check(vendor_token({"user_id": "alice", claim: NOW // S + 6})).outcome is Outcome.NOT_YET_VALID
        assert check(vendor_token({"user_id": "alice", claim: NOW // S + 4})).outcome is Outcome.VALID

    @pytest.mark.parametrize("aud", ["otherapp", ["otherapp"], 5])
    def test_audience_of_another_app_is_wrong_audience(self, aud: Any) -> None:
        assert check(vendor_token({"user_id": "alice", "aud": aud})).outcome is Outcome.WRONG_AUDIENCE

    def test_audience_list_naming_the_app_is_accepted(self) -> None:
        assert check(vendor_token({"user_id": "alice", "aud": ["x", APP.api_key]})).outcome is Outcome.VALID

    @pytest.mark.parametrize("claim", ["iat", "exp", "nbf"])
    @pytest.mark.parametrize("value", ["1800000000", True, False, None, [1], {"s": 1}])
    def test_time_claims_must_be_numbers(self, claim: str, value: Any) -> None:
        assert check(vendor_token({"user_id": "alice", claim: value})).outcome is Outcome.MALFORMED

    @pytest.mark.parametrize("claim", ["iat", "exp", "nbf"])
    def test_time_claims_range_is_the_epoch_to_the_end_of_9999(self, claim: str) -> None:
        for value in (-1, 253402300800, 10**30, -(10**30), 253402300799.5):
            assert check(vendor_token({"user_id": "alice", claim: value})).outcome is Outcome.MALFORMED, value
        for value in (0, 0.5, 253402300799):
            assert check(vendor_token({"user_id": "alice", claim: value})).outcome is not Outcome.MALFORMED, value

    def test_expired_is_checked_before_revocation(self) -> None:
        token = vendor_token({"user_id": "alice", "iat": NOW // S - 100, "exp": NOW // S - 60})
        assert check(token, user_revoked_before=NOW).outcome is Outcome.EXPIRED

    def test_signature_is_checked_before_expiry(self) -> None:
        token = vendor_token({"user_id": "alice", "exp": NOW // S - 60}, secret="x" * 40)
        assert check(token).outcome is Outcome.INVALID_SIGNATURE

    def test_token_of_one_app_never_verifies_for_another(self) -> None:
        other = App(
            id=2, api_key="other", name="o", secrets=(Secret("k1", "another-secret-of-another-app-0123456789"),)
        )
        token = issue(app=other).token
        assert check(token).outcome is Outcome.INVALID_SIGNATURE
        # Even with the same secret, the audience pins the token to its app.
        twin = App(id=3, api_key="twin", name="t", secrets=(Secret("k1", SECRET),))
        assert check(issue(app=twin).token).outcome is Outcome.WRONG_AUDIENCE


class TestRevocation:
    def test_user_revocation_rejects_tokens_issued_before(self) -> None:
        token = vendor_token({"user_id": "alice", "iat": NOW // S - 10})
        assert check(token, user_revoked_before=NOW).outcome is Outcome.REVOKED

    def test_user_revocation_spares_tokens_issued_after(self) -> None:
        token = vendor_token({"user_id": "alice", "iat": NOW // S})
        assert check(token, user_revoked_before=NOW - 10 * S).outcome is Outcome.VALID

    def test_millisecond_precision_on_both_sides(self) -> None:
        revoked_at = NOW - 2 * S
        before = issue(now=revoked_at - 3_000).token
        after = issue(now=revoked_at + 3_000).token
        assert check(before, user_revoked_before=revoked_at).outcome is Outcome.REVOKED
        assert check(after, user_revoked_before=revoked_at).outcome is Outcome.VALID

    def test_token_issued_at_the_revocation_instant_is_valid(self) -> None:
        assert check(issue(now=NOW).token, user_revoked_before=NOW).outcome is Outcome.VALID

    def test_token_without_iat_is_not_affected_by_user_revocation(self) -> None:
        assert check(vendor_token({"user_id": "alice"}), user_revoked_before=NOW).outcome is Outcome.VALID

    def test_require_iat_rejects_tokens_without_iat(self) -> None:
        app = App(id=1, api_key="appkey123", name="c", secrets=(Secret("k1", SECRET),), require_iat=True)
        token = vendor_token({"user_id": "alice"})
        assert check(token, app, user_revoked_before=NOW).outcome is Outcome.REVOKED
        assert check(token, app).outcome is Outcome.REVOKED
        assert check(vendor_token({"user_id": "alice", "iat": NOW // S}), app).outcome is Outcome.VALID

    def test_app_revocation_rejects_older_tokens_and_tokens_without_iat(self) -> None:
        app = App(id=1, api_key="appkey123", name="c", secrets=(Secret("k1", SECRET),), revoked_before=NOW - S)
        assert check(issue(now=NOW - 2 * S).token, app).outcome is Outcome.REVOKED
        assert check(vendor_token({"user_id": "alice"}), app).outcome is Outcome.REVOKED
        assert check(issue(now=NOW).token, app).outcome is Outcome.VALID

    def test_revocation_time_defaults_to_now_and_refuses_the_future(self) -> None:
        assert tokens.revocation_time(None, now=NOW, leeway=LEEWAY) == NOW
        assert tokens.revocation_time(NOW - S, now=NOW, leeway=LEEWAY) == NOW - S
        assert tokens.revocation_time(NOW + LEEWAY, now=NOW, leeway=LEEWAY) == NOW + LEEWAY
        with pytest.raises(InvalidArgument) as info:
            tokens.revocation_time(NOW + LEEWAY + 1, now=NOW, leeway=LEEWAY)
        assert info.value.reason == "REVOCATION_IN_FUTURE"

    def test_user_id_lists(self) -> None:
        assert tokens.validate_user_ids(["a", "b", "a"]) == ["a", "b"]
        for ids, reason in (
            ([], "NO_USER_IDS"),
            ([f"u{i}" for i in range(1001)], "TOO_MANY_USER_IDS"),
            (["ok", ""], "INVALID_USER_ID"),
        ):
            with pytest.raises(InvalidArgument) as info:
                tokens.validate_user_ids(ids)
            assert info.value.reason == reason


class TestDeveloperTokens:
    DEV = App(id=1, api_key="appkey123", name="c", secrets=(Secret("k1", SECRET),), auth_checks_disabled=True)

    def dev_token(self, payload: dict[str, Any]) -> str:
        return unsigned({"alg": "HS256", "typ": "JWT"}, payload, "devtoken")

    def test_accepted_when_auth_checks_are_disabled(self) -> None:
        result = check(self.dev_token({"user_id": "alice"}), self.DEV)
        assert result.outcome is Outcome.VALID and result.dev_token and result.user_id == "alice"

    def test_rejected_when_auth_checks_are_on(self) -> None:
        assert check(self.dev_token({"user_id": "alice"})).outcome is Outcome.INVALID_SIGNATURE

    def test_expiry_and_revocation_still_apply(self) -> None:
        expired = self.dev_token({"user_id": "alice", "exp": NOW // S - 60})
        assert check(expired, self.DEV).outcome is Outcome.EXPIRED
        old = self.dev_token({"user_id": "alice", "iat": NOW // S - 60})
        assert check(old, self.DEV, user_revoked_before=NOW).outcome is Outcome.REVOKED

    def test_signed_tokens_still_verify_in_development_mode(self) -> None:
        result = check(issue(self.DEV).token, self.DEV)
        assert result.outcome is Outcome.VALID and not result.dev_token


class TestBackendCredentials:
    def authenticate(self, credential: str, now: int = NOW) -> credentials.CredentialKind:
        return credentials.authenticate_backend(credential, APP, now=now, leeway=LEEWAY)

    def test_api_secret(self) -> None:
        assert self.authenticate(SECRET) is credentials.CredentialKind.API_SECRET

    def test_server_token(self) -> None:
        assert self.authenticate(vendor_token({"server": True})) is credentials.CredentialKind.SERVER_TOKEN

    @pytest.mark.parametrize(
        "credential",
        ["", "wrong", SECRET[:-1], SECRET + "x", vendor_token({"server": True}, secret="x" * 40)],
        ids=["empty", "garbage", "secret-prefix", "secret-plus", "server-token-other-secret"],
    )
    def test_wrong_credentials_are_unauthenticated(self, credential: str) -> None:
        with pytest.raises(Unauthenticated):
            self.authenticate(credential)

    def test_user_token_is_permission_denied(self) -> None:
        with pytest.raises(PermissionDenied) as info:
            self.authenticate(issue().token)
        assert info.value.reason == "USER_TOKEN_NOT_ALLOWED"

    def test_expired_server_token_is_unauthenticated(self) -> None:
        with pytest.raises(Unauthenticated) as info:
            self.authenticate(vendor_token({"server": True, "exp": NOW // S - 60}))
        assert info.value.reason == "CREDENTIAL_EXPIRED"

    @pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
    def test_server_token_with_another_algorithm_is_unauthenticated(self) -> None:
        token = jwt.encode({"server": True}, SECRET, algorithm="HS512")
        with pytest.raises(Unauthenticated):
            self.authenticate(token)

    def test_belongs_to_tells_the_owner_of_a_credential(self) -> None:
        assert credentials.belongs_to(SECRET, APP, now=NOW)
        assert credentials.belongs_to(vendor_token({"server": True}), APP, now=NOW)
        assert not credentials.belongs_to("x" * 43, APP, now=NOW)


class TestMaximumLifetime:
    APP = App(id=1, api_key="appkey123", name="c", secrets=(Secret("k1", SECRET),), max_token_lifetime_seconds=3600)

    def test_issue_caps_lifetime_and_defaults_to_it(self) -> None:
        assert issue(self.APP).expires_at == NOW + 3600 * S
        assert issue(self.APP, ttl=60 * S).expires_at == NOW + 60 * S
        with pytest.raises(InvalidArgument) as info:
            issue(self.APP, ttl=3601 * S)
        assert info.value.reason == "LIFETIME_TOO_LONG"

    def test_tokens_without_exp_or_living_too_long_are_refused(self) -> None:
        assert check(vendor_token({"user_id": "alice"}), self.APP).outcome is Outcome.MALFORMED
        too_long = vendor_token({"user_id": "alice", "iat": NOW // S, "exp": NOW // S + 3601})
        assert check(too_long, self.APP).outcome is Outcome.MALFORMED
        fine = vendor_token({"user_id": "alice", "iat": NOW // S, "exp": NOW // S + 3600})
        assert check(fine, self.APP).outcome is Outcome.VALID


def test_user_hash_is_stable_and_matches_postgresql() -> None:
    # The value PostgreSQL computes for 'alice' in user_revocations.user_hash (see migration 0002).
    assert tokens.user_hash("alice") == 3159282601090220207


class TestHostileHeaders:
    """Header tricks played on JWT libraries: each fails cleanly, as an outcome, never as an error."""

    @pytest.mark.parametrize(
        "kid",
        ["", "k" * 5000, "../../../../etc/passwd", "/dev/null", "' OR '1'='1", "k1; DROP TABLE apps;--", "k1\u0000"],
        ids=["empty", "huge", "path", "device", "sql-quote", "sql-statement", "nul"],
    )
    def test_odd_kid_values_are_unknown_keys(self, kid: str) -> None:
        result = check(vendor_token({"user_id": "alice"}, kid=kid))
        assert result.outcome in (Outcome.UNKNOWN_KEY, Outcome.MALFORMED)
        assert not result.valid

    def test_an_embedded_jwk_is_never_trusted(self) -> None:
        attacker = ed25519.Ed25519PrivateKey.generate()
        public = jwt.algorithms.OKPAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
        token = jwt.encode({"user_id": "admin"}, attacker, algorithm="EdDSA", headers={"jwk": public})
        assert check(token).outcome is Outcome.INVALID_SIGNATURE

    @pytest.mark.parametrize("header", ["jku", "x5u"])
    def test_key_urls_are_ignored_not_fetched(self, header: str) -> None:
        # Signed with the app's secret, so it verifies; the URL (which nothing serves) is never fetched.
        token = vendor_token({"user_id": "alice"}, **{header: "http://127.0.0.1:9/keys.json"})
        assert check(token).outcome is Outcome.VALID
        forged = vendor_token({"user_id": "alice"}, secret="x" * 43, **{header: "http://127.0.0.1:9/keys.json"})
        assert check(forged).outcome is Outcome.INVALID_SIGNATURE

    def test_unknown_crit_is_rejected(self) -> None:
        token = vendor_token({"user_id": "alice"}, crit=["exp"], exp=1)
        assert check(token).outcome is Outcome.MALFORMED

    def test_nested_and_unencoded_payload_tokens_are_rejected(self) -> None:
        assert check(vendor_token({"user_id": "alice"}, cty="JWT")).outcome is Outcome.MALFORMED
        assert check(vendor_token({"user_id": "alice"}, b64=False)).outcome is Outcome.MALFORMED

    def test_time_claims_out_of_range_are_malformed(self) -> None:
        for value in (-1, 10**12, 1e300):
            assert check(vendor_token({"user_id": "alice", "exp": value})).outcome is Outcome.MALFORMED
        raw = unsigned({"alg": "HS256"}, {"user_id": "alice"}, "x").split(".")
        payload = b64(b'{"user_id":"alice","exp":1e400}')
        signing_input = f"{raw[0]}.{payload}".encode()
        signature = b64(hmac_module.new(SECRET.encode(), signing_input, hashlib.sha256).digest())
        assert check(f"{raw[0]}.{payload}.{signature}").outcome is Outcome.MALFORMED

    def test_duplicate_claims_are_malformed(self) -> None:
        header = b64(b'{"alg":"HS256"}')
        payload = b64(b'{"user_id":"alice","user_id":"admin"}')
        signature = b64(hmac_module.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest())
        assert check(f"{header}.{payload}.{signature}").outcome is Outcome.MALFORMED


@pytest.mark.parametrize("length", [0, 1, 32, 43, 63, 64, 65, 200])
def test_secret_hmac_matches_the_standard_library(length: int) -> None:
    key = bytes(range(256))[:length].decode("latin-1")
    secret = tokens.Secret("k", key)
    for message in (b"", b"a", b"header.payload" * 20):
        expected = hmac_module.digest(key.encode(), message, "sha256")
        assert secret.signed(message, expected)
        assert not secret.signed(message, expected[:-1] + bytes([expected[-1] ^ 1]))
