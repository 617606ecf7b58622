-- Inbox: a forward job becomes `active` when a delivery worker first takes its message
-- (status `sending`); delivery then finishes it as `completed` or `failed`.
CREATE FUNCTION inbox_job_active() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs SET status = 'active', updated_at = now()
     WHERE id = NEW.job_id AND status = 'pending';
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_job_active
    AFTER UPDATE OF status ON messages
    FOR EACH ROW
    WHEN (NEW.job_id IS NOT NULL AND NEW.status = 'sending' AND OLD.status IS DISTINCT FROM 'sending')
    EXECUTE FUNCTION inbox_job_active();

-- Commands dedupe on their message_id (kept in the payload): look-ups by conversation.
CREATE INDEX scheduled_replies_command ON scheduled_replies (conversation_id, (payload->>'commandId'))
    WHERE payload ? 'commandId';
CREATE INDEX jobs_command ON jobs ((payload->>'conversationId'), (payload->>'commandId'))
    WHERE payload ? 'commandId';
