"""The gRPC handlers of authsvc.v1.AuthService: validate the request, call the domain, map the result.

Errors are raised as authsvc.errors types; authsvc.interceptors turns them into statuses.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import AsyncIterator

from authsvc import tokens, wire
from authsvc.callers import Callers, Context
from authsvc.clock import MICROS_PER_SECOND, Clock, Micros
from authsvc.config import Settings
from authsvc.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from authsvc.metrics import Metrics
from authsvc.ratelimit import GuestLimits
from authsvc.revoking import Revocations
from authsvc.state import State
from authsvc.store import Store
from authsvc.v1 import auth_service_pb2 as pb
from authsvc.v1 import auth_service_pb2_grpc as pb_grpc
from authsvc.verifier import Verifier
from authsvc.watch import WatchHub

# Enum members' .name is a descriptor call; the hot path looks it up in a plain dict.
_OUTCOME_NAMES = {outcome: outcome.name for outcome in tokens.Outcome}
_VALID = tokens.Outcome.VALID


class AuthServicer(pb_grpc.AuthServiceServicer):
    """Issues, verifies and revokes the user tokens of the app named by `x-api-key`."""

    def __init__(
        self,
        store: Store,
        state: State,
        settings: Settings,
        clock: Clock,
        metrics: Metrics,
        watch: WatchHub | None = None,
    ) -> None:
        self._store = store
        self._watch = watch
        self._state = state
        self._verifier = Verifier(settings.verify_cache_size)
        self._outcome_counts = metrics.outcome_counts
        self._count_guest_token = metrics.count_guest_token
        self._guest_limits = GuestLimits(settings.guest_rate_per_app, settings.guest_rate_per_address)
        self._settings = settings
        self._clock = clock
        self._leeway = round(settings.clock_leeway * MICROS_PER_SECOND)
        self._callers = Callers(state, clock, self._leeway, settings.operator_tokens)
        self._revocations = Revocations(store, state, clock, self._leeway, metrics.count_revocation)

    async def IssueToken(self, request: pb.IssueTokenRequest, context: Context) -> pb.IssueTokenResponse:
        self._state.check_fresh()  # a stale state may still hold a retired key or a rotated-out secret
        app, actor = await self._callers.backend(context)
        now = self._clock()
        expiry = request.WhichOneof("expiry")
        ttl: Micros | None = None
        expires_at: Micros | None = None
        if expiry == "ttl":
            ttl = request.ttl.ToMicroseconds()
        elif expiry == "expires_at":
            expires_at = wire.micros(request.expires_at, "expires_at")
        issued = tokens.issue(
            app,
            request.user_id,
            now=now,
            issuer=self._settings.issuer,
            jti=secrets.token_urlsafe(16),
            expires_at=expires_at,
            ttl=ttl,
            claims=wire.plain_claims(request.claims) if request.HasField("claims") else None,
        )
        return pb.IssueTokenResponse(
            token=issued.token,
            issued_at=wire.timestamp(issued.issued_at),
            expires_at=wire.timestamp(issued.expires_at),
            key_id=issued.key_id,
        )

    async def IssueGuestToken(self, request: pb.IssueGuestTokenRequest, context: Context) -> pb.IssueGuestTokenResponse:
        self._state.check_fresh()
        app = await self._callers.app(context)  # only x-api-key: a chat client calls it
        now = self._clock()
        try:
            tokens.check_guest_access(app)  # refused before it counts against the rate limits
            self._guest_limits.admit(app.api_key, context.peer(), now)
            issued = tokens.issue_guest(
                app,
                request.user_id,
                request.name,
                now=now,
                issuer=self._settings.issuer,
                jti=secrets.token_urlsafe(16),
                random_id=secrets.token_urlsafe(16),
            )
        except FailedPrecondition:
            self._count_guest_token("disabled")
            raise
        except ResourceExhausted:
            self._count_guest_token("rate_limited")
            raise
        except InvalidArgument:
            self._count_guest_token("invalid")
            raise
        self._count_guest_token("issued")
        return pb.IssueGuestTokenResponse(
            token=issued.token,
            user_id=issued.user_id,
            issued_at=wire.timestamp(issued.issued_at),
            expires_at=wire.timestamp(issued.expires_at),
            key_id=issued.key_id,
        )

    async def VerifyToken(self, request: pb.VerifyTokenRequest, context: Context) -> pb.VerifyTokenResponse:
        self._state.check_fresh()
        app = await self._callers.app(context)
        token = request.token  # read once: every read of a protobuf string field makes a new str
        result = self._verifier.verify(
            token,
            app,
            now=self._clock(),
            leeway=self._leeway,
            revoked_before=self._state.revoking,
            token_revoked_at=self._state.token_revoked_at if self._state.token_revocations_held else None,
        )
        self._outcome_counts[_OUTCOME_NAMES[result.outcome]] += 1
        return self._response(token, result)

    async def VerifyTokens(self, request: pb.VerifyTokensRequest, context: Context) -> pb.VerifyTokensResponse:
        self._state.check_fresh()
        app = await self._callers.app(context)
        if not 1 <= len(request.tokens) <= tokens.MAX_BATCH_TOKENS:
            raise InvalidArgument(
                f"tokens has {len(request.tokens)} entries; send 1 to {tokens.MAX_BATCH_TOKENS}", "INVALID_BATCH_SIZE"
            )
        now = self._clock()
        verify, revoked_before, respond = self._verifier.verify, self._state.revoking, self._response
        state, leeway = self._state, self._leeway
        token_revoked_at = state.token_revoked_at if state.token_revocations_held else None
        responses = []
        outcomes: Counter[str] = Counter()
        for token in request.tokens:
            result = verify(
                token, app, now=now, leeway=leeway, revoked_before=revoked_before, token_revoked_at=token_revoked_at
            )
            outcomes[_OUTCOME_NAMES[result.outcome]] += 1
            responses.append(respond(token, result))
        for outcome, n in outcomes.items():
            self._outcome_counts[outcome] += n
        return pb.VerifyTokensResponse(results=responses)

    async def RevokeUser(self, request: pb.RevokeUserRequest, context: Context) -> pb.RevokeUserResponse:
        app, actor = await self._callers.backend(context)
        user_ids = tokens.validate_user_ids(list(request.user_ids))
        in_force = await self._revocations.revoke_users(app.id, user_ids, _revoke_before(request), actor=actor)
        return pb.RevokeUserResponse(
            revocations=[
                pb.UserRevocation(user_id=user_id, revoked_before=wire.timestamp(in_force[user_id]))
                for user_id in user_ids
            ]
        )

    async def RevokeApp(self, request: pb.RevokeAppRequest, context: Context) -> pb.RevokeAppResponse:
        app, actor = await self._callers.backend(context)
        in_force = await self._revocations.revoke_app(app.id, _revoke_before(request), actor=actor)
        return pb.RevokeAppResponse(revoked_before=wire.timestamp(in_force))

    async def RevokeToken(self, request: pb.RevokeTokenRequest, context: Context) -> pb.RevokeTokenResponse:
        app, actor = await self._callers.backend(context)
        target = request.WhichOneof("target")
        expires_at: Micros | None = None
        if target == "token":
            verdict = self._verifier.verify(
                request.token, app, now=self._clock(), leeway=self._leeway, revoked_before=self._state.revoking
            )
            jti, expires_at = tokens.revocable_jti(verdict)
        elif target == "jti":
            jti = tokens.validate_jti(request.jti)
        else:
            raise InvalidArgument("say which token to revoke: token or jti", "NO_REVOCATION_TARGET")
        revoked_at, until = await self._revocations.revoke_token(app.id, jti, expires_at, actor=actor)
        return pb.RevokeTokenResponse(
            revoked_before=wire.timestamp(revoked_at), jti=jti, expires_at=wire.timestamp(until)
        )

    async def ClearRevocation(self, request: pb.ClearRevocationRequest, context: Context) -> pb.ClearRevocationResponse:
        app, actor = await self._callers.backend(context)
        target = request.WhichOneof("target")
        if target == "users":
            user_ids = tokens.validate_user_ids(list(request.users.user_ids))
            cleared = await self._revocations.clear_users(app.id, user_ids, actor=actor)
            return pb.ClearRevocationResponse(cleared_user_ids=cleared)
        if target == "app" and request.app:
            had = await self._revocations.clear_app(app.id, actor=actor)
            return pb.ClearRevocationResponse(app_cleared=had)
        if target == "tokens":
            jtis = tokens.validate_jtis(list(request.tokens.jtis))
            cleared_jtis = await self._revocations.clear_tokens(app.id, jtis, actor=actor)
            return pb.ClearRevocationResponse(cleared_jtis=cleared_jtis)
        raise InvalidArgument(
            "say what to clear: users {user_ids: [...]}, tokens {jtis: [...]} or app: true", "NO_REVOCATION_TARGET"
        )

    def _response(self, token: str, result: tokens.Verification) -> pb.VerifyTokenResponse:
        """The answer for a verdict (just reached). A VALID one is the same every time for a token, so a token
        the verifier keeps (one presented again) keeps its message too; a token seen once (most fresh tokens) is
        not worth the bookkeeping."""
        if result.outcome is not _VALID:
            return wire.verify_response(result)
        response: pb.VerifyTokenResponse | None = self._verifier.answer(token)
        if response is None:
            response = wire.verify_response(result)
            self._verifier.keep_answer(token, response)
        return response

    async def GetJwks(self, request: pb.GetJwksRequest, context: Context) -> pb.GetJwksResponse:
        self._state.check_fresh()  # a stale state may still publish a retired key
        app = await self._callers.app(context)
        return pb.GetJwksResponse(keys=[pb.Jwk(**jwk) for jwk in app.jwks()])

    async def WatchState(self, request: pb.WatchStateRequest, context: Context) -> AsyncIterator[pb.WatchStateResponse]:
        app, _ = await self._callers.backend(context)
        if self._watch is None:
            self._watch = WatchHub(self._state, self._store, self._settings, self._clock)
        from_version = request.from_version if request.HasField("from_version") else None
        if from_version is not None and from_version < 0:
            raise InvalidArgument(
                "from_version is negative; send the version of the last message applied", "INVALID_VERSION"
            )
        async for message in self._watch.watch(app, from_version):
            yield message


def _revoke_before(request: pb.RevokeUserRequest | pb.RevokeAppRequest) -> Micros | None:
    """The time a revocation request asks for, None when it asks for none (now)."""
    return wire.micros(request.revoke_before, "revoke_before") if request.HasField("revoke_before") else None
