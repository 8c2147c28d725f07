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

class Algorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALGORITHM_UNSPECIFIED: _ClassVar[Algorithm]
    ALGORITHM_HS256: _ClassVar[Algorithm]
    ALGORITHM_EDDSA: _ClassVar[Algorithm]
    ALGORITHM_ES256: _ClassVar[Algorithm]

class KeyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_KIND_UNSPECIFIED: _ClassVar[KeyKind]
    KEY_KIND_API_SECRET: _ClassVar[KeyKind]
    KEY_KIND_KEY_PAIR: _ClassVar[KeyKind]
ALGORITHM_UNSPECIFIED: Algorithm
ALGORITHM_HS256: Algorithm
ALGORITHM_EDDSA: Algorithm
ALGORITHM_ES256: Algorithm
KEY_KIND_UNSPECIFIED: KeyKind
KEY_KIND_API_SECRET: KeyKind
KEY_KIND_KEY_PAIR: KeyKind

class Key(_message.Message):
    __slots__ = ("key_id", "kind", "algorithm", "signs_from", "expires_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    SIGNS_FROM_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    kind: KeyKind
    algorithm: Algorithm
    signs_from: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., kind: _Optional[_Union[KeyKind, str]] = ..., algorithm: _Optional[_Union[Algorithm, str]] = ..., signs_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class App(_message.Message):
    __slots__ = ("api_key", "name", "algorithm", "key_id", "keys", "token_ttl", "max_token_lifetime", "auth_checks_disabled", "require_iat", "revoked_before", "created_at", "guest_access", "guest_token_ttl", "anonymous_access")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKEN_LIFETIME_FIELD_NUMBER: _ClassVar[int]
    AUTH_CHECKS_DISABLED_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_IAT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    GUEST_ACCESS_FIELD_NUMBER: _ClassVar[int]
    GUEST_TOKEN_TTL_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_ACCESS_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    name: str
    algorithm: Algorithm
    key_id: str
    keys: _containers.RepeatedCompositeFieldContainer[Key]
    token_ttl: _duration_pb2.Duration
    max_token_lifetime: _duration_pb2.Duration
    auth_checks_disabled: bool
    require_iat: bool
    revoked_before: _timestamp_pb2.Timestamp
    created_at: _timestamp_pb2.Timestamp
    guest_access: bool
    guest_token_ttl: _duration_pb2.Duration
    anonymous_access: bool
    def __init__(self, api_key: _Optional[str] = ..., name: _Optional[str] = ..., algorithm: _Optional[_Union[Algorithm, str]] = ..., key_id: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[Key, _Mapping]]] = ..., token_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_token_lifetime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., auth_checks_disabled: _Optional[bool] = ..., require_iat: _Optional[bool] = ..., revoked_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., guest_access: _Optional[bool] = ..., guest_token_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., anonymous_access: _Optional[bool] = ...) -> None: ...

class CreateAppRequest(_message.Message):
    __slots__ = ("name", "algorithm", "token_ttl", "max_token_lifetime", "auth_checks_disabled", "require_iat", "api_secret", "guest_access", "guest_token_ttl", "anonymous_access")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKEN_LIFETIME_FIELD_NUMBER: _ClassVar[int]
    AUTH_CHECKS_DISABLED_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_IAT_FIELD_NUMBER: _ClassVar[int]
    API_SECRET_FIELD_NUMBER: _ClassVar[int]
    GUEST_ACCESS_FIELD_NUMBER: _ClassVar[int]
    GUEST_TOKEN_TTL_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_ACCESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    algorithm: Algorithm
    token_ttl: _duration_pb2.Duration
    max_token_lifetime: _duration_pb2.Duration
    auth_checks_disabled: bool
    require_iat: bool
    api_secret: str
    guest_access: bool
    guest_token_ttl: _duration_pb2.Duration
    anonymous_access: bool
    def __init__(self, name: _Optional[str] = ..., algorithm: _Optional[_Union[Algorithm, str]] = ..., token_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_token_lifetime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., auth_checks_disabled: _Optional[bool] = ..., require_iat: _Optional[bool] = ..., api_secret: _Optional[str] = ..., guest_access: _Optional[bool] = ..., guest_token_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., anonymous_access: _Optional[bool] = ...) -> None: ...

class CreateAppResponse(_message.Message):
    __slots__ = ("app", "api_secret")
    APP_FIELD_NUMBER: _ClassVar[int]
    API_SECRET_FIELD_NUMBER: _ClassVar[int]
    app: App
    api_secret: str
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ..., api_secret: _Optional[str] = ...) -> None: ...

class GetAppRequest(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    def __init__(self, api_key: _Optional[str] = ...) -> None: ...

class GetAppResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class ListAppsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAppsResponse(_message.Message):
    __slots__ = ("apps",)
    APPS_FIELD_NUMBER: _ClassVar[int]
    apps: _containers.RepeatedCompositeFieldContainer[App]
    def __init__(self, apps: _Optional[_Iterable[_Union[App, _Mapping]]] = ...) -> None: ...

class UpdateAppRequest(_message.Message):
    __slots__ = ("api_key", "name", "token_ttl", "clear_token_ttl", "max_token_lifetime", "clear_max_token_lifetime", "auth_checks_disabled", "require_iat", "algorithm", "guest_access", "guest_token_ttl", "anonymous_access")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TTL_FIELD_NUMBER: _ClassVar[int]
    CLEAR_TOKEN_TTL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKEN_LIFETIME_FIELD_NUMBER: _ClassVar[int]
    CLEAR_MAX_TOKEN_LIFETIME_FIELD_NUMBER: _ClassVar[int]
    AUTH_CHECKS_DISABLED_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_IAT_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    GUEST_ACCESS_FIELD_NUMBER: _ClassVar[int]
    GUEST_TOKEN_TTL_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_ACCESS_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    name: str
    token_ttl: _duration_pb2.Duration
    clear_token_ttl: bool
    max_token_lifetime: _duration_pb2.Duration
    clear_max_token_lifetime: bool
    auth_checks_disabled: bool
    require_iat: bool
    algorithm: Algorithm
    guest_access: bool
    guest_token_ttl: _duration_pb2.Duration
    anonymous_access: bool
    def __init__(self, api_key: _Optional[str] = ..., name: _Optional[str] = ..., token_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., clear_token_ttl: _Optional[bool] = ..., max_token_lifetime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., clear_max_token_lifetime: _Optional[bool] = ..., auth_checks_disabled: _Optional[bool] = ..., require_iat: _Optional[bool] = ..., algorithm: _Optional[_Union[Algorithm, str]] = ..., guest_access: _Optional[bool] = ..., guest_token_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., anonymous_access: _Optional[bool] = ...) -> None: ...

class UpdateAppResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ("api_key", "delay")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    delay: _duration_pb2.Duration
    def __init__(self, api_key: _Optional[str] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ("key_id", "signs_from")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNS_FROM_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    signs_from: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., signs_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RetireKeyRequest(_message.Message):
    __slots__ = ("api_key", "key_id")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    key_id: str
    def __init__(self, api_key: _Optional[str] = ..., key_id: _Optional[str] = ...) -> None: ...

class RetireKeyResponse(_message.Message):
    __slots__ = ("app",)
    APP_FIELD_NUMBER: _ClassVar[int]
    app: App
    def __init__(self, app: _Optional[_Union[App, _Mapping]] = ...) -> None: ...

class RotateApiSecretRequest(_message.Message):
    __slots__ = ("api_key", "overlap", "api_secret")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    API_SECRET_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    overlap: _duration_pb2.Duration
    api_secret: str
    def __init__(self, api_key: _Optional[str] = ..., overlap: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., api_secret: _Optional[str] = ...) -> None: ...

class RotateApiSecretResponse(_message.Message):
    __slots__ = ("key_id", "api_secret", "old_secrets_expire_at")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    API_SECRET_FIELD_NUMBER: _ClassVar[int]
    OLD_SECRETS_EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    api_secret: str
    old_secrets_expire_at: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., api_secret: _Optional[str] = ..., old_secrets_expire_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("api_key", "action_prefix", "actor", "since", "limit")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    ACTION_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    action_prefix: str
    actor: str
    since: _timestamp_pb2.Timestamp
    limit: int
    def __init__(self, api_key: _Optional[str] = ..., action_prefix: _Optional[str] = ..., actor: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("id", "at", "actor", "action", "api_key", "peer", "details")
    ID_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    id: int
    at: _timestamp_pb2.Timestamp
    actor: str
    action: str
    api_key: str
    peer: str
    details: _struct_pb2.Struct
    def __init__(self, id: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., api_key: _Optional[str] = ..., peer: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ...) -> None: ...
