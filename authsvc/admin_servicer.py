"""The gRPC handlers of authsvc.v1.AdminService: authenticate the operator, validate, call authsvc.apps, map.

Every change is made as `operator:<id>` with the caller's address, and applied to this process's state before
the answer, so the next call (to any service of this process) sees it.
"""

from __future__ import annotations

from authsvc import apps, wire
from authsvc.callers import Callers, Context
from authsvc.clock import MICROS_PER_SECOND, Clock, Micros
from authsvc.config import Settings
from authsvc.errors import InvalidArgument, NotFound
from authsvc.state import State
from authsvc.store import Store
from authsvc.tokens import HS256, App
from authsvc.v1 import admin_service_pb2 as pb
from authsvc.v1 import admin_service_pb2_grpc as pb_grpc

MAX_AUDIT_EVENTS = 1000
"""The most audit events one ListAuditEvents call returns."""
DEFAULT_AUDIT_EVENTS = 100


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Creates and changes apps, rotates and retires their keys, and reads the audit log, for operators."""

    def __init__(self, store: Store, state: State, settings: Settings, clock: Clock) -> None:
        self._store = store
        self._state = state
        self._callers = Callers(
            state, clock, round(settings.clock_leeway * MICROS_PER_SECOND), settings.operator_tokens
        )
        self._key_rotation_delay = settings.key_rotation_delay
        self._secret_overlap = settings.secret_overlap
        self._clock = clock

    async def CreateApp(self, request: pb.CreateAppRequest, context: Context) -> pb.CreateAppResponse:
        actor = self._callers.operator(context)
        app = await apps.create_app(
            self._store,
            request.name,
            algorithm=wire.algorithm_name(request.algorithm) or HS256,
            token_ttl_seconds=wire.lifetime(request.token_ttl, "token_ttl") if request.HasField("token_ttl") else None,
            max_token_lifetime_seconds=(
                wire.lifetime(request.max_token_lifetime, "max_token_lifetime")
                if request.HasField("max_token_lifetime")
                else None
            ),
            auth_checks_disabled=request.auth_checks_disabled,
            require_iat=request.require_iat,
            api_secret=request.api_secret if request.HasField("api_secret") else None,
            guest_access=request.guest_access,
            guest_token_ttl_seconds=_guest_ttl(request),
            anonymous_access=request.anonymous_access,
            actor=actor,
        )
        await self._state.catch_up()
        return pb.CreateAppResponse(app=wire.app_message(apps.view(app, self._clock())), api_secret=app.api_secret)

    async def GetApp(self, request: pb.GetAppRequest, context: Context) -> pb.GetAppResponse:
        self._callers.operator(context)
        return pb.GetAppResponse(app=wire.app_message(apps.view(await self._existing(request.api_key), self._clock())))

    async def ListApps(self, request: pb.ListAppsRequest, context: Context) -> pb.ListAppsResponse:
        self._callers.operator(context)
        now = self._clock()
        return pb.ListAppsResponse(
            apps=[wire.app_message(apps.view(app, now)) for app in await self._store.list_apps()]
        )

    async def UpdateApp(self, request: pb.UpdateAppRequest, context: Context) -> pb.UpdateAppResponse:
        actor = self._callers.operator(context)
        app = await self._existing(request.api_key)
        token_ttl: int | None | apps.Unchanged = apps.UNCHANGED
        if request.WhichOneof("token_ttl_update") == "token_ttl":
            token_ttl = wire.lifetime(request.token_ttl, "token_ttl")
        elif request.clear_token_ttl:
            token_ttl = None
        longest: int | None | apps.Unchanged = apps.UNCHANGED
        if request.WhichOneof("max_token_lifetime_update") == "max_token_lifetime":
            longest = wire.lifetime(request.max_token_lifetime, "max_token_lifetime")
        elif request.clear_max_token_lifetime:
            longest = None
        updated, version = await apps.update_app(
            self._store,
            app,
            name=request.name if request.HasField("name") else None,
            algorithm=wire.algorithm_name(request.algorithm),
            token_ttl_seconds=token_ttl,
            max_token_lifetime_seconds=longest,
            auth_checks_disabled=(request.auth_checks_disabled if request.HasField("auth_checks_disabled") else None),
            require_iat=request.require_iat if request.HasField("require_iat") else None,
            guest_access=request.guest_access if request.HasField("guest_access") else None,
            guest_token_ttl_seconds=_guest_ttl(request),
            anonymous_access=request.anonymous_access if request.HasField("anonymous_access") else None,
            actor=actor,
        )
        if version is not None:
            await self._state.catch_up(version)
        return pb.UpdateAppResponse(app=wire.app_message(apps.view(updated, self._clock())))

    async def RotateKey(self, request: pb.RotateKeyRequest, context: Context) -> pb.RotateKeyResponse:
        actor = self._callers.operator(context)
        app = await self._existing(request.api_key)
        delay = wire.seconds(request.delay) if request.HasField("delay") else self._key_rotation_delay
        key_id, signs_from, version = await apps.rotate_key(
            self._store, app, delay_seconds=delay, now=self._clock(), actor=actor
        )
        await self._state.catch_up(version)
        return pb.RotateKeyResponse(key_id=key_id, signs_from=wire.timestamp(signs_from))

    async def RetireKey(self, request: pb.RetireKeyRequest, context: Context) -> pb.RetireKeyResponse:
        actor = self._callers.operator(context)
        app = await self._existing(request.api_key)
        if not request.key_id:
            raise InvalidArgument("key_id is empty; name the key to retire", "MISSING_KEY_ID")
        version = await apps.retire_key(self._store, app, request.key_id, now=self._clock(), actor=actor)
        await self._state.catch_up(version)
        return pb.RetireKeyResponse(app=wire.app_message(apps.view(await self._current(app), self._clock())))

    async def RotateApiSecret(self, request: pb.RotateApiSecretRequest, context: Context) -> pb.RotateApiSecretResponse:
        actor = self._callers.operator(context)
        app = await self._existing(request.api_key)
        overlap = wire.seconds(request.overlap) if request.HasField("overlap") else self._secret_overlap
        key_id, secret, version = await apps.rotate_api_secret(
            self._store,
            app,
            overlap_seconds=overlap,
            actor=actor,
            new_secret=request.api_secret if request.HasField("api_secret") else None,
        )
        await self._state.catch_up(version)
        rotated = await self._current(app)
        expiries = [old.expires_at for old in rotated.secrets[1:] if old.expires_at is not None]
        return pb.RotateApiSecretResponse(
            key_id=key_id, api_secret=secret, old_secrets_expire_at=wire.timestamp(max(expiries, default=None))
        )

    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest, context: Context) -> pb.ListAuditEventsResponse:
        self._callers.operator(context)
        limit = request.limit or DEFAULT_AUDIT_EVENTS
        if not 1 <= limit <= MAX_AUDIT_EVENTS:
            raise InvalidArgument(f"limit must be 1 to {MAX_AUDIT_EVENTS} (0 means 100)", "INVALID_LIMIT")
        since: Micros | None = None
        if request.HasField("since"):
            stamp = request.since
            if not -62135596800 <= stamp.seconds <= 253402300799 or not 0 <= stamp.nanos < 1_000_000_000:
                raise InvalidArgument("since is not a valid timestamp", "INVALID_TIMESTAMP")
            since = stamp.seconds * MICROS_PER_SECOND + stamp.nanos // 1000
        events = await self._store.audit_events(
            api_key=request.api_key or None,
            action=request.action_prefix or None,
            actor=request.actor or None,
            since=since,
            limit=limit,
        )
        return pb.ListAuditEventsResponse(
            events=[
                pb.AuditEvent(
                    id=event.id,
                    at=wire.timestamp(event.at),
                    actor=event.actor,
                    action=event.action,
                    api_key=event.api_key or "",
                    peer=event.peer or "",
                    details=wire.struct(event.details),
                )
                for event in events
            ]
        )

    async def _existing(self, api_key: str) -> App:
        """The app as the database has it now (not as this process last heard)."""
        if not api_key:
            raise InvalidArgument("api_key is empty; name the app", "MISSING_API_KEY")
        app = await self._store.get_app(api_key)
        if app is None:
            raise NotFound("no app has this API key", "APP_NOT_FOUND")
        return app

    async def _current(self, app: App) -> App:
        """The app after a change this process has caught up with."""
        return self._state.app(app.api_key) or await self._existing(app.api_key)


def _guest_ttl(request: pb.CreateAppRequest | pb.UpdateAppRequest) -> int | None:
    """The request's guest token lifetime in whole seconds, or None when it names none."""
    return wire.lifetime(request.guest_token_ttl, "guest_token_ttl") if request.HasField("guest_token_ttl") else None
