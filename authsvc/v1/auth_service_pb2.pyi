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
VERIFY_OUTCOME_UNSPECIFIED: VerifyOutcome
VERIFY_OUTCOME_VALID: VerifyOutcome
VERIFY_OUTCOME_MALFORMED: VerifyOutcome
VERIFY_OUTCOME_INVALID_SIGNATURE: VerifyOutcome
VERIFY_OUTCOME_UNKNOWN_KEY: VerifyOutcome
VERIFY_OUTCOME_EXPIRED: VerifyOutcome
VERIFY_OUTCOME_NOT_YET_VALID: VerifyOutcome
VERIFY_OUTCOME_WRONG_AUDIENCE: VerifyOutcome
VERIFY_OUTCOME_REVOKED: VerifyOutcome

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
    __slots__ = ("valid", "outcome", "user_id", "issued_at", "expires_at", "claims", "dev_token")
    VALID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    DEV_TOKEN_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    outcome: VerifyOutcome
    user_id: str
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    claims: _struct_pb2.Struct
    dev_token: bool
    def __init__(self, valid: _Optional[bool] = ..., outcome: _Optional[_Union[VerifyOutcome, str]] = ..., user_id: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., claims: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dev_token: _Optional[bool] = ...) -> None: ...

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

class UserIds(_message.Message):
    __slots__ = ("user_ids",)
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ClearRevocationRequest(_message.Message):
    __slots__ = ("users", "app")
    USERS_FIELD_NUMBER: _ClassVar[int]
    APP_FIELD_NUMBER: _ClassVar[int]
    users: UserIds
    app: bool
    def __init__(self, users: _Optional[_Union[UserIds, _Mapping]] = ..., app: _Optional[bool] = ...) -> None: ...

class ClearRevocationResponse(_message.Message):
    __slots__ = ("cleared_user_ids", "app_cleared")
    CLEARED_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    APP_CLEARED_FIELD_NUMBER: _ClassVar[int]
    cleared_user_ids: _containers.RepeatedScalarFieldContainer[str]
    app_cleared: bool
    def __init__(self, cleared_user_ids: _Optional[_Iterable[str]] = ..., app_cleared: _Optional[bool] = ...) -> None: ...

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
