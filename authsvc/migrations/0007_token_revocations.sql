-- One token (one device) revoked by its jti (RevokeToken): never by the token's bytes, since an ECDSA signature
-- has a second valid encoding. Kept until the token's exp (plus the clock leeway), then pruned; NULL: kept.
CREATE TABLE token_revocations (
    app_id         bigint      NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    jti            text        NOT NULL,
    -- When the token was revoked: its REVOKED answers name this time.
    revoked_before timestamptz NOT NULL,
    expires_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, jti)
);
CREATE INDEX token_revocations_expiry ON token_revocations (expires_at) WHERE expires_at IS NOT NULL;

-- Token revocations travel through the change log like user revocations, by jti ('times' holds the revocation
-- times for 'revoke_tokens').
ALTER TABLE state_changes ADD COLUMN jtis text[] NOT NULL DEFAULT '{}';
ALTER TABLE state_changes DROP CONSTRAINT IF EXISTS state_changes_kind_check;
ALTER TABLE state_changes ADD CONSTRAINT state_changes_kind_check
    CHECK (kind IN ('app', 'revoke', 'clear', 'revoke_tokens', 'clear_tokens'));
