-- The whole system of record. Later migrations only add to it.

CREATE TABLE operators (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workspaces (
    id           text PRIMARY KEY,
    operator_id  text NOT NULL REFERENCES operators(id),
    name         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspaces_operator ON workspaces (operator_id, created_at, id);

-- API keys are stored as SHA-256 hashes (the keys carry >= 128 random bits, so a fast hash
-- is enough); `prefix` is the public identifier used to look a key up and to revoke it.
CREATE TABLE api_keys (
    prefix        text PRIMARY KEY,
    key_hash      bytea NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('platform', 'workspace')),
    operator_id   text NOT NULL REFERENCES operators(id),
    workspace_id  text REFERENCES workspaces(id) ON DELETE CASCADE,
    name          text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    CHECK ((kind = 'platform') = (workspace_id IS NULL))
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at);

CREATE TABLE mailboxes (
    id                    text PRIMARY KEY,
    workspace_id          text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email                 text NOT NULL,
    from_name             text,
    smtp                  jsonb NOT NULL,          -- host, port, security, username (no password)
    smtp_password_enc     text,
    imap                  jsonb,                   -- host, port, security, username (no password)
    imap_password_enc     text,
    daily_cap             integer NOT NULL CHECK (daily_cap >= 0),
    status                text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    health                text NOT NULL DEFAULT 'healthy' CHECK (health IN ('healthy', 'unhealthy')),
    last_error            text,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    sent_total            bigint NOT NULL DEFAULT 0,
    bounced_total         bigint NOT NULL DEFAULT 0,
    last_used_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz
);
CREATE UNIQUE INDEX mailboxes_email ON mailboxes (workspace_id, lower(email)) WHERE deleted_at IS NULL;
CREATE INDEX mailboxes_list ON mailboxes (workspace_id, created_at, id);

CREATE TABLE identities (
    id            text PRIMARY KEY,
    workspace_id  text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    handle        text NOT NULL,
    display_name  text,
    daily_cap     integer NOT NULL CHECK (daily_cap >= 0),
    timezone      text NOT NULL DEFAULT 'UTC',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE UNIQUE INDEX identities_handle ON identities (workspace_id, lower(handle)) WHERE deleted_at IS NULL;
CREATE INDEX identities_list ON identities (workspace_id, created_at, id);

-- The identity's pool: the mailboxes it may send from.
CREATE TABLE identity_mailboxes (
    identity_id  text NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    mailbox_id   text NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    position     integer NOT NULL,
    PRIMARY KEY (identity_id, mailbox_id)
);
CREATE INDEX identity_mailboxes_mailbox ON identity_mailboxes (mailbox_id);

-- Cap accounting: one row per subject (identity or mailbox id) and day. Reservations are
-- single `INSERT … ON CONFLICT DO UPDATE … WHERE used < cap` statements.
CREATE TABLE daily_usage (
    subject_id  text NOT NULL,
    day         date NOT NULL,
    used        integer NOT NULL DEFAULT 0,
    PRIMARY KEY (subject_id, day)
);

-- Recipient affinity: each lead stays on one mailbox of an identity.
CREATE TABLE affinities (
    identity_id  text NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    lead_email   text NOT NULL,            -- lower-cased
    mailbox_id   text NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (identity_id, lead_email)
);

CREATE TABLE suppressions (
    workspace_id  text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email         text NOT NULL,           -- lower-cased
    reason        text NOT NULL CHECK (reason IN ('manual', 'unsubscribed', 'hard_bounce')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, email)
);

CREATE TABLE conversations (
    id                text PRIMARY KEY,
    workspace_id      text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    identity_id       text NOT NULL REFERENCES identities(id),
    mailbox_id        text REFERENCES mailboxes(id),
    lead_id           text NOT NULL,
    lead_email        text NOT NULL,
    lead              jsonb NOT NULL DEFAULT '{}',   -- firstName, lastName, companyName, jobTitle
    campaign_id       text,
    campaign_name     text,
    subject           text NOT NULL DEFAULT '',
    status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    ai_tag            text,
    tags              text[] NOT NULL DEFAULT '{}',
    metadata          jsonb NOT NULL DEFAULT '{}',
    unread_count      integer NOT NULL DEFAULT 0,
    last_activity_at  timestamptz NOT NULL DEFAULT now(),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_inbox ON conversations (workspace_id, last_activity_at DESC, id DESC);
CREATE INDEX conversations_lead ON conversations (identity_id, lower(lead_email), last_activity_at DESC);

CREATE TABLE messages (
    id               text PRIMARY KEY,
    conversation_id  text NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    workspace_id     text NOT NULL,
    mailbox_id       text REFERENCES mailboxes(id),
    type             text NOT NULL CHECK (type IN ('sent', 'reply', 'manual')),
    direction        text NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    rfc_message_id   text NOT NULL,
    in_reply_to      text,
    "references"     text[] NOT NULL DEFAULT '{}',
    from_email       text NOT NULL,
    from_name        text,
    to_emails        text[] NOT NULL DEFAULT '{}',
    cc_emails        text[] NOT NULL DEFAULT '{}',
    bcc_emails       text[] NOT NULL DEFAULT '{}',
    subject          text NOT NULL DEFAULT '',
    text_body        text,
    html_body        text,
    reply_text       text,
    headers          jsonb NOT NULL DEFAULT '{}',  -- custom headers of an outbound message
    unsubscribe      boolean NOT NULL DEFAULT false,
    metadata         jsonb NOT NULL DEFAULT '{}',
    sequence_step    integer,
    job_id           text,                         -- forward job this message carries out
    scheduled_reply_id text,                       -- scheduled reply this message carries out
    -- outbound delivery state
    status           text CHECK (status IN ('scheduled', 'queued', 'sending', 'sent', 'failed', 'bounced')),
    error            text,
    smtp_code        integer,
    smtp_response    text,
    attempts         integer NOT NULL DEFAULT 0,
    send_at          timestamptz,
    sending_until    timestamptz,                  -- lease of the delivery worker holding it
    sent_at          timestamptz,
    opened           boolean NOT NULL DEFAULT false,
    clicked          boolean NOT NULL DEFAULT false,
    -- inbound state
    is_from_lead     boolean NOT NULL DEFAULT false,
    is_auto_reply    boolean NOT NULL DEFAULT false,
    read             boolean NOT NULL DEFAULT true,
    received_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_conversation ON messages (conversation_id, created_at, id);
CREATE INDEX messages_rfc_id ON messages (workspace_id, rfc_message_id);
-- Inbound ingestion is exactly once per mailbox and Message-ID.
CREATE UNIQUE INDEX messages_inbound_dedupe ON messages (mailbox_id, rfc_message_id) WHERE direction = 'inbound';

CREATE TABLE attachments (
    id              text PRIMARY KEY,
    workspace_id    text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    key             text NOT NULL UNIQUE,          -- inbox-attachments/<ws>/<random>/<name>
    filename        text NOT NULL,
    content_type    text NOT NULL,
    size            bigint NOT NULL,
    message_id      text REFERENCES messages(id) ON DELETE SET NULL,
    conversation_id text REFERENCES conversations(id) ON DELETE CASCADE,
    position        integer,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_conversation ON attachments (conversation_id, created_at, id);
CREATE INDEX attachments_message ON attachments (message_id);

CREATE TABLE scheduled_replies (
    id               text PRIMARY KEY,
    workspace_id     text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    conversation_id  text NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    mailbox_id       text NOT NULL REFERENCES mailboxes(id),
    payload          jsonb NOT NULL,               -- body, cc, bcc, attachments
    scheduled_for    timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
    message_id       text REFERENCES messages(id),
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scheduled_replies_due ON scheduled_replies (scheduled_for) WHERE status = 'pending';
CREATE INDEX scheduled_replies_conversation ON scheduled_replies (conversation_id);

-- Transactional outbox: rows written in the same transaction as the state they announce;
-- the writer publishes and stamps published_at, the scheduler relays what was never stamped.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    exchange      text NOT NULL,                   -- logical name, prefixed at publish time
    routing_key   text NOT NULL,
    message_id    text NOT NULL,
    body          bytea NOT NULL,
    headers       jsonb NOT NULL DEFAULT '{}',
    available_at  timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_pending ON outbox (available_at) WHERE published_at IS NULL;

CREATE TABLE idempotency_keys (
    scope            text NOT NULL,                -- identity id
    key              text NOT NULL,
    request_hash     text NOT NULL,
    state            text NOT NULL CHECK (state IN ('processing', 'done')),
    response_status  integer,
    response_body    jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

CREATE TABLE jobs (
    id            text PRIMARY KEY,
    workspace_id  text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    type          text NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'active', 'completed', 'failed')),
    payload       jsonb NOT NULL DEFAULT '{}',
    result        jsonb,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Every event ever emitted (also the source for webhook fan-out and replays).
CREATE TABLE events (
    id            text PRIMARY KEY,
    workspace_id  text NOT NULL,
    type          text NOT NULL,
    data          jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_workspace ON events (workspace_id, created_at);

CREATE TABLE webhook_endpoints (
    id                    text PRIMARY KEY,
    workspace_id          text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    url                   text NOT NULL,
    events                text[] NOT NULL DEFAULT '{*}',
    description           text,
    enabled               boolean NOT NULL DEFAULT true,
    secret                text NOT NULL,
    previous_secret       text,
    previous_secret_until timestamptz,
    failing_since         timestamptz,
    disabled_reason       text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz
);
CREATE INDEX webhook_endpoints_workspace ON webhook_endpoints (workspace_id, created_at, id);

CREATE TABLE webhook_deliveries (
    id                text PRIMARY KEY,
    endpoint_id       text NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id          text NOT NULL,
    event_type        text NOT NULL,
    attempt           integer NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    response_code     integer,
    duration_ms       integer,
    response_snippet  text,
    error             text,
    next_attempt_at   timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE UNIQUE INDEX webhook_deliveries_attempt ON webhook_deliveries (endpoint_id, event_id, attempt);

-- IMAP: where each mailbox folder was read up to, and who is watching each mailbox.
CREATE TABLE imap_cursors (
    mailbox_id    text NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    folder        text NOT NULL,
    uidvalidity   bigint NOT NULL,
    last_uid      bigint NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mailbox_id, folder)
);

CREATE TABLE mailbox_leases (
    mailbox_id  text PRIMARY KEY REFERENCES mailboxes(id) ON DELETE CASCADE,
    owner       text NOT NULL,
    expires_at  timestamptz NOT NULL
);

-- Inbound mail kept for inspection: unparseable, or matching no conversation.
CREATE TABLE inbound_quarantine (
    id              text PRIMARY KEY,
    mailbox_id      text NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    folder          text NOT NULL,
    uid             bigint NOT NULL,
    rfc_message_id  text,
    reason          text NOT NULL,
    raw             bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mailbox_id, folder, uid, reason)
);

-- One-click unsubscribe tokens (RFC 8058) handed out in List-Unsubscribe.
CREATE TABLE unsubscribe_tokens (
    token            text PRIMARY KEY,
    workspace_id     text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email            text NOT NULL,
    message_id       text,
    conversation_id  text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
