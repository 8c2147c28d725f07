import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VerifyOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERIFY_OUTCOME_UNSPECIFIED: _ClassVar[VerifyOutcome]
    VERIFY_OUTCOME_VALID: _ClassVar[VerifyOutcome]
    VERIFY_OUTCOME_MALFORMED: _ClassVar[VerifyOutcome]
    VERIFY_OUTCOME_INVALID_SIGNATURE: _ClassVar[VerifyOutcome]
    VERIFY_OUTCOME_UNKNOWN_KEY: _ClassVar[VerifyOutcome]
    VERIFY_OUTCOME_EXPIRED: _ClassVar[VerifyOutcome]
    VERIFY_OUTCOME_NOT_YET_VALID: _ClassVar[VerifyOutcome]
    VERIFY_OUTCOME_WRONG_AUDIENCE: _ClassVar[VerifyOutcome]
    VERIFY_OUTCOME_REVOKED: _ClassVar[VerifyOutcome]
    VERIFY_OUTCOME_UNAVAILABLE: _ClassVar[VerifyOutcome]

class RevocationScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVOCATION_SCOPE_UNSPECIFIED: _ClassVar[RevocationScope]
    REVOCATION_SCOPE_APP: _ClassVar[RevocationScope]
    REVOCATION_SCOPE_USER: _ClassVar[RevocationScope]
    REVOCATION_SCOPE_TOKEN: _ClassVar[RevocationScope]

class ClientAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLIENT_ACTION_UNSPECIFIED: _ClassVar[ClientAction]
    CLIENT_ACTION_REFRESH: _ClassVar[ClientAction]
    CLIENT_ACTION_LOGOUT: _ClassVar[ClientAction]
    CLIENT_ACTION_RETRY_LATER: _ClassVar[ClientAction]

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATE_UNSPECIFIED: _ClassVar[KeyState]
    KEY_STATE_PUBLISHED: _ClassVar[KeyState]
    KEY_STATE_SIGNING: _ClassVar[KeyState]
    KEY_STATE_RETIRED: _ClassVar[KeyState]
VERIFY_OUTCOME_UNSPECIFIED: VerifyOutcome
VERIFY_OUTCOME_VALID: VerifyOutcome
VERIFY_OUTCOME_MALFORMED: VerifyOutcome
VERIFY_OUTCOME_INVALID_SIGNATURE: VerifyOutcome
VERIFY_OUTCOME_UNKNOWN_KEY: VerifyOutcome
VERIFY_OUTCOME_EXPIRED: VerifyOutcome
VERIFY_OUTCOME_NOT_YET_VALID: VerifyOutcome
VERIFY_OUTCOME_WRONG_AUDIENCE: VerifyOutcome
VERIFY_OUTCOME_REVOKED: VerifyOutcome
VERIFY_OUTCOME_UNAVAILABLE: VerifyOutcome
REVOCATION_SCOPE_UNSPECIFIED: RevocationScope
REVOCATION_SCOPE_APP: RevocationScope
REVOCATION_SCOPE_USER: RevocationScope
REVOCATION_SCOPE_TOKEN: RevocationScope
CLIENT_ACTION_UNSPECIFIED: ClientAction
CLIENT_ACTION_REFRESH: ClientAction
CLIENT_ACTION_LOGOUT: ClientAction
CLIENT_ACTION_RETRY_LATER: ClientAction
KEY_STATE_UNSPECIFIED: KeyState
KEY_STATE_PUBLISHED: KeyState
KEY_STATE_SIGNING: KeyState
KEY_STATE_RETIRED: KeyState

class IssueTokenRequest(_message.Message):
    __slots__ = ("user_id", "expires_at", "ttl", "claims")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    expires_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    claims: _struct_pb2.Struct
    def __init__(self, user_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., claims: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class IssueTokenResponse(_message.Message):
    __slots__ = ("token", "issued_at", "expires_at", "key_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    key_id: str
    def __init__(self, token: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_id: _Optional[str] = ...) -> None: ...

class VerifyTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class VerifyTokenResponse(_message.Message):
    __slots__ = ("valid", "outcome", "user_id", "issued_at", "expires_at", "claims", "dev_token", "revoked_by", "revoked_before", "valid_from", "client_action")
    VALID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    DEV_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BY_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ACTION_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    outcome: VerifyOutcome
    user_id: str
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    claims: _struct_pb2.Struct
    dev_token: bool
    revoked_by: RevocationScope
    revoked_before: _timestamp_pb2.Timestamp
    valid_from: _timestamp_pb2.Timestamp
    client_action: ClientAction
    def __init__(self, valid: _Optional[bool] = ..., outcome: _Optional[_Union[VerifyOutcome, str]] = ..., user_id: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., claims: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dev_token: _Optional[bool] = ..., revoked_by: _Optional[_Union[RevocationScope, str]] = ..., revoked_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., client_action: _Optional[_Union[ClientAction, str]] = ...) -> None: ...

class VerifyTokensRequest(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tokens: _Optional[_Iterable[str]] = ...) -> None: ...

class VerifyTokensResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[VerifyTokenResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[VerifyTokenResponse, _Mapping]]] = ...) -> None: ...

class RevokeUserRequest(_message.Message):
    __slots__ = ("user_ids", "revoke_before")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    REVOKE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    revoke_before: _timestamp_pb2.Timestamp
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ..., revoke_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UserRevocation(_message.Message):
    __slots__ = ("user_id", "revoked_before")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    revoked_before: _timestamp_pb2.Timestamp
    def __init__(self, user_id: _Optional[str] = ..., revoked_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RevokeUserResponse(_message.Message):
    __slots__ = ("revocations",)
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    revocations: _containers.RepeatedCompositeFieldContainer[UserRevocation]
    def __init__(self, revocations: _Optional[_Iterable[_Union[UserRevocation, _Mapping]]] = ...) -> None: ...

class RevokeAppRequest(_message.Message):
    __slots__ = ("revoke_before",)
    REVOKE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    revoke_before: _timestamp_pb2.Timestamp
    def __init__(self, revoke_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RevokeAppResponse(_message.Message):
    __slots__ = ("revoked_before",)
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    revoked_before: _timestamp_pb2.Timestamp
    def __init__(self, revoked_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token", "jti")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    token: str
    jti: str
    def __init__(self, token: _Optional[str] = ..., jti: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("revoked_before", "jti", "expires_at")
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    revoked_before: _timestamp_pb2.Timestamp
    jti: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, revoked_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., jti: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UserIds(_message.Message):
    __slots__ = ("user_ids",)
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ClearRevocationRequest(_message.Message):
    __slots__ = ("users", "app", "tokens")
    USERS_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    users: UserIds
    app: bool
    tokens: TokenIds
    def __init__(self, users: _Optional[_Union[UserIds, _Mapping]] = ..., app: _Optional[bool] = ..., tokens: _Optional[_Union[TokenIds, _Mapping]] = ...) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("jtis",)
    JTIS_FIELD_NUMBER: _ClassVar[int]
    jtis: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, jtis: _Optional[_Iterable[str]] = ...) -> None: ...

class ClearRevocationResponse(_message.Message):
    __slots__ = ("cleared_user_ids", "app_cleared", "cleared_jtis")
    CLEARED_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    APP_CLEARED_FIELD_NUMBER: _ClassVar[int]
    CLEARED_JTIS_FIELD_NUMBER: _ClassVar[int]
    cleared_user_ids: _containers.RepeatedScalarFieldContainer[str]
    app_cleared: bool
    cleared_jtis: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cleared_user_ids: _Optional[_Iterable[str]] = ..., app_cleared: _Optional[bool] = ..., cleared_jtis: _Optional[_Iterable[str]] = ...) -> None: ...

class GetJwksRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Jwk(_message.Message):
    __slots__ = ("kty", "crv", "x", "y", "kid", "alg", "use")
    KTY_FIELD_NUMBER: _ClassVar[int]
    CRV_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    ALG_FIELD_NUMBER: _ClassVar[int]
    USE_FIELD_NUMBER: _ClassVar[int]
    kty: str
    crv: str
    x: str
    y: str
    kid: str
    alg: str
    use: str
    def __init__(self, kty: _Optional[str] = ..., crv: _Optional[str] = ..., x: _Optional[str] = ..., y: _Optional[str] = ..., kid: _Optional[str] = ..., alg: _Optional[str] = ..., use: _Optional[str] = ...) -> None: ...

class GetJwksResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Jwk]
    def __init__(self, keys: _Optional[_Iterable[_Union[Jwk, _Mapping]]] = ...) -> None: ...

class WatchStateRequest(_message.Message):
    __slots__ = ("from_version",)
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    from_version: int
    def __init__(self, from_version: _Optional[int] = ...) -> None: ...

class WatchStateResponse(_message.Message):
    __slots__ = ("version", "staleness", "snapshot", "change", "heartbeat")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STALENESS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    version: int
    staleness: _duration_pb2.Duration
    snapshot: SnapshotChunk
    change: StateChange
    heartbeat: Heartbeat
    def __init__(self, version: _Optional[int] = ..., staleness: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotChunk, _Mapping]] = ..., change: _Optional[_Union[StateChange, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("app", "fresh", "user_hashes", "revoked_before", "last", "token_revocations")
    APP_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    USER_HASHES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    TOKEN_REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    app: AppState
    fresh: bool
    user_hashes: _containers.RepeatedScalarFieldContainer[int]
    revoked_before: _containers.RepeatedScalarFieldContainer[int]
    last: bool
    token_revocations: TokenRevocations
    def __init__(self, app: _Optional[_Union[AppState, _Mapping]] = ..., fresh: _Optional[bool] = ..., user_hashes: _Optional[_Iterable[int]] = ..., revoked_before: _Optional[_Iterable[int]] = ..., last: _Optional[bool] = ..., token_revocations: _Optional[_Union[TokenRevocations, _Mapping]] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("app", "revoked", "cleared", "tokens_revoked", "tokens_cleared")
    APP_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_REVOKED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_CLEARED_FIELD_NUMBER: _ClassVar[int]
    app: AppState
    revoked: UserRevocations
    cleared: UserRevocations
    tokens_revoked: TokenRevocations
    tokens_cleared: TokenRevocations
    def __init__(self, app: _Optional[_Union[AppState, _Mapping]] = ..., revoked: _Optional[_Union[UserRevocations, _Mapping]] = ..., cleared: _Optional[_Union[UserRevocations, _Mapping]] = ..., tokens_revoked: _Optional[_Union[TokenRevocations, _Mapping]] = ..., tokens_cleared: _Optional[_Union[TokenRevocations, _Mapping]] = ...) -> None: ...

class TokenRevocations(_message.Message):
    __slots__ = ("jtis", "revoked_before")
    JTIS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    jtis: _containers.RepeatedScalarFieldContainer[str]
    revoked_before: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, jtis: _Optional[_Iterable[str]] = ..., revoked_before: _Optional[_Iterable[int]] = ...) -> None: ...

class UserRevocations(_message.Message):
    __slots__ = ("user_hashes", "revoked_before", "user_ids")
    USER_HASHES_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    user_hashes: _containers.RepeatedScalarFieldContainer[int]
    revoked_before: _containers.RepeatedScalarFieldContainer[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_hashes: _Optional[_Iterable[int]] = ..., revoked_before: _Optional[_Iterable[int]] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("interval",)
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    interval: _duration_pb2.Duration
    def __init__(self, interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class AppState(_message.Message):
    __slots__ = ("api_key", "algorithm", "auth_checks_disabled", "require_iat", "revoked_before", "max_token_lifetime", "clock_leeway", "issuer", "public_keys", "secrets")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    AUTH_CHECKS_DISABLED_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_IAT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKEN_LIFETIME_FIELD_NUMBER: _ClassVar[int]
    CLOCK_LEEWAY_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEYS_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    algorithm: str
    auth_checks_disabled: bool
    require_iat: bool
    revoked_before: _timestamp_pb2.Timestamp
    max_token_lifetime: _duration_pb2.Duration
    clock_leeway: _duration_pb2.Duration
    issuer: str
    public_keys: _containers.RepeatedCompositeFieldContainer[PublicKey]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretFingerprint]
    def __init__(self, api_key: _Optional[str] = ..., algorithm: _Optional[str] = ..., auth_checks_disabled: _Optional[bool] = ..., require_iat: _Optional[bool] = ..., revoked_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_token_lifetime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., clock_leeway: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., issuer: _Optional[str] = ..., public_keys: _Optional[_Iterable[_Union[PublicKey, _Mapping]]] = ..., secrets: _Optional[_Iterable[_Union[SecretFingerprint, _Mapping]]] = ...) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("jwk", "state", "signs_from")
    JWK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SIGNS_FROM_FIELD_NUMBER: _ClassVar[int]
    jwk: Jwk
    state: KeyState
    signs_from: _timestamp_pb2.Timestamp
    def __init__(self, jwk: _Optional[_Union[Jwk, _Mapping]] = ..., state: _Optional[_Union[KeyState, str]] = ..., signs_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SecretFingerprint(_message.Message):
    __slots__ = ("kid", "fingerprint", "expires_at")
    KID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    kid: str
    fingerprint: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, kid: _Optional[str] = ..., fingerprint: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
