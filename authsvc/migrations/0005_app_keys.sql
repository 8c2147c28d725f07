-- Every key of an app in one table, sealed at rest: API secrets (which authenticate the backend and sign HS256
-- tokens) and EdDSA/ES256 key pairs. Several may be live at once, for rotation without logouts.
CREATE TABLE app_keys (
    app_id     bigint      NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    key_id     text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('secret', 'key_pair')),
    algorithm  text        NOT NULL,
    -- AES-256-GCM under a key-encryption key, bound to the app's API key and key_id (authsvc/sealing.py).
    -- Rows carried over from before this migration hold 'plain:<value>' until the next start seals them.
    sealed     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- A rotated-in key pair is published at once but signs only from here.
    signs_from timestamptz NOT NULL DEFAULT now(),
    -- A rotated-out API secret stays valid until here (the overlap window).
    expires_at timestamptz,
    -- A retired key verifies nothing any more.
    retired_at timestamptz,
    PRIMARY KEY (app_id, key_id)
);

INSERT INTO app_keys (app_id, key_id, kind, algorithm, sealed, created_at, signs_from)
SELECT id, key_id, 'secret', 'HS256', 'plain:' || api_secret, created_at, created_at
FROM apps WHERE private_key IS NULL;

INSERT INTO app_keys (app_id, key_id, kind, algorithm, sealed, created_at, signs_from)
SELECT id, key_id, 'key_pair', algorithm, 'plain:' || private_key, created_at, created_at
FROM apps WHERE private_key IS NOT NULL;

INSERT INTO app_keys (app_id, key_id, kind, algorithm, sealed, created_at, signs_from)
SELECT id, 's' || key_id, 'secret', 'HS256', 'plain:' || api_secret, created_at, created_at
FROM apps WHERE private_key IS NOT NULL;

ALTER TABLE apps DROP COLUMN api_secret, DROP COLUMN private_key, DROP COLUMN key_id;
