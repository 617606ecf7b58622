-- Delivery: one unsubscribe token per message (reused across retries) and one-time use.
CREATE INDEX unsubscribe_tokens_message ON unsubscribe_tokens (message_id);
ALTER TABLE unsubscribe_tokens ADD COLUMN used_at timestamptz;
