-- Every change of state, written in the same transaction as the change: who, what, when, from where.
CREATE TABLE audit_events (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    -- The credential's id (e.g. operator:alice, api_secret:<api key>, cli:root), never a secret.
    actor   text        NOT NULL,
    action  text        NOT NULL,
    app_id  bigint      REFERENCES apps (id) ON DELETE SET NULL,
    api_key text,
    -- The caller's address as gRPC saw it, when the change came over the network.
    peer    text,
    details jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_newest ON audit_events (at DESC, id DESC);
CREATE INDEX audit_events_app ON audit_events (api_key, at DESC);
