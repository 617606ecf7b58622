-- Webhooks: the exact body delivered for each event, kept once per event so every attempt
-- (automatic retry, crash recovery, manual replay) sends the same bytes as the first.
CREATE TABLE webhook_payloads (
    event_id      text PRIMARY KEY,
    workspace_id  text NOT NULL,
    event_type    text NOT NULL,
    body          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_payloads_created ON webhook_payloads (created_at);
