-- Guests and anonymous users (issue 13): three app settings, each with the default an existing app keeps.
-- Touches only columns of its own, so it applies alike with or without 0007.
ALTER TABLE apps
    ADD COLUMN guest_access boolean NOT NULL DEFAULT false,
    ADD COLUMN guest_token_ttl_seconds integer NOT NULL DEFAULT 86400 CHECK (guest_token_ttl_seconds > 0),
    ADD COLUMN anonymous_access boolean NOT NULL DEFAULT false;
