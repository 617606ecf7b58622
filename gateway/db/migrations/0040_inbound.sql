-- Inbound ingestion (poller): exactly-once bookkeeping and poller liveness.

-- Every inbound message the poller has dealt with, whatever became of it (a reply, a bounce,
-- a quarantined message, a copy of our own outbound mail). Keyed by mailbox and Message-ID
-- (a synthetic `<sha256-…@mailgw.invalid>` when the message has none), so a restart, a crash
-- before the cursor checkpoint or a UIDVALIDITY resync never handles a message twice.
CREATE TABLE inbound_seen (
    mailbox_id      text NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    rfc_message_id  text NOT NULL,
    outcome         text NOT NULL,      -- reply, bounce, quarantined, own, duplicate
    message_id      text,               -- the reply message, or the bounced outbound message
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mailbox_id, rfc_message_id)
);

-- Pollers alive now: lets each poller take a fair share of the mailboxes.
CREATE TABLE poller_heartbeats (
    owner       text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);

-- UIDs restart with a new UIDVALIDITY, so (folder, uid) alone no longer names a message;
-- de-duplication of quarantined mail is done by inbound_seen instead.
ALTER TABLE inbound_quarantine DROP CONSTRAINT inbound_quarantine_mailbox_id_folder_uid_reason_key;
ALTER TABLE inbound_quarantine ADD COLUMN uidvalidity bigint NOT NULL DEFAULT 0;
ALTER TABLE inbound_quarantine ADD COLUMN detail text;
CREATE INDEX inbound_quarantine_mailbox ON inbound_quarantine (mailbox_id, created_at);
