-- Apps (tenants) and the revocations of their tokens.

CREATE TABLE apps (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    api_key              text        NOT NULL UNIQUE,
    name                 text        NOT NULL,
    algorithm            text        NOT NULL DEFAULT 'HS256',
    api_secret           text        NOT NULL,
    key_id               text        NOT NULL,
    -- NULL: tokens issued without an explicit expiry never expire.
    token_ttl_seconds    bigint      CHECK (token_ttl_seconds > 0),
    auth_checks_disabled boolean     NOT NULL DEFAULT false,
    require_iat          boolean     NOT NULL DEFAULT false,
    -- Tokens without iat, or issued before this time, are rejected. NULL: no app-level revocation.
    revoked_before       timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_revocations (
    app_id         bigint      NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id        text        NOT NULL,
    -- Tokens of this user issued before this time are rejected.
    revoked_before timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, user_id)
);
