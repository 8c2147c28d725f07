-- In-memory verification state: every change bumps one version and is logged, so every process can apply
-- changes in version order (LISTEN/NOTIFY wakes them; the log lets them catch up after a gap).

-- A compact key for a user inside an app: the first 8 bytes of SHA-256(user_id), as the processes compute it.
-- User ids are ASCII letters, digits, @, _ and -, so the text-to-bytea cast is their UTF-8 bytes.
ALTER TABLE user_revocations
    ADD COLUMN user_hash bigint NOT NULL
    GENERATED ALWAYS AS (('x' || substr(encode(sha256(user_id::bytea), 'hex'), 1, 16))::bit(64)::bigint) STORED;

-- Tokens must carry exp, no further than this past iat; user revocations older than it are pruned.
ALTER TABLE apps ADD COLUMN max_token_lifetime_seconds bigint CHECK (max_token_lifetime_seconds > 0);

-- One row: the version of the state. Writers take its row lock, so versions commit in order and without gaps.
CREATE TABLE state_version (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    version bigint  NOT NULL
);
INSERT INTO state_version (version) VALUES (0);

CREATE TABLE state_changes (
    version     bigint PRIMARY KEY,
    app_id      bigint      NOT NULL,
    -- 'app': reload the app row; 'revoke': set user revocations; 'clear': remove user revocations.
    kind        text        NOT NULL CHECK (kind IN ('app', 'revoke', 'clear')),
    user_hashes bigint[]    NOT NULL DEFAULT '{}',
    -- Microseconds since the epoch, parallel to user_hashes (for 'revoke').
    times       bigint[]    NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
