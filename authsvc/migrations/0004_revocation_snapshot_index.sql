-- Lets a process load every user revocation with one index-only scan, already in (app, hash) order:
-- a million revocations load in a fraction of a second instead of seconds of sorting.
CREATE INDEX user_revocations_snapshot ON user_revocations (app_id, user_hash) INCLUDE (revoked_before);
