-- Send: an upload (conversation_id NULL) may be attached to many sent messages. Each use is a
-- new row (message_id, conversation_id, position set) pointing at the same stored file, so a
-- key is unique only among the unlinked upload rows.
ALTER TABLE attachments DROP CONSTRAINT attachments_key_key;
CREATE UNIQUE INDEX attachments_upload_key ON attachments (key) WHERE conversation_id IS NULL;
CREATE INDEX attachments_key ON attachments (key);

-- The router's reservation for one recipient, inside its one send statement: take one unit
-- of the identity's daily cap, then one of the first candidate mailbox that still has room
-- (the pinned one first, then least used today, then least recently used, then pool order),
-- stamping its last_used_at; if none has room, give the identity unit back. Each step is a
-- single INSERT … ON CONFLICT DO UPDATE … WHERE used + 1 <= cap (as gateway.db.usage.reserve),
-- so caps hold exactly under any concurrency. Returns the mailbox (NULL: cap_exceeded) and
-- the identity's use of the day afterwards.
CREATE FUNCTION mailgw_reserve_send(
    p_skip boolean, p_identity text, p_day date, p_cap integer, p_pinned text,
    p_pool text[], p_caps integer[], OUT mailbox_id text, OUT identity_used integer
) LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    cand record;
    got integer;
BEGIN
    IF NOT p_skip AND p_cap >= 1 THEN
        INSERT INTO daily_usage AS u (subject_id, day, used) VALUES (p_identity, p_day, 1)
        ON CONFLICT (subject_id, day) DO UPDATE SET used = u.used + 1 WHERE u.used + 1 <= p_cap
        RETURNING u.used INTO got;
        IF got IS NOT NULL THEN
            FOR cand IN
                SELECT c.id, c.cap FROM unnest(p_pool, p_caps) WITH ORDINALITY AS c(id, cap, pos)
                JOIN mailboxes m ON m.id = c.id
                LEFT JOIN daily_usage d ON d.subject_id = c.id AND d.day = p_day
                WHERE COALESCE(d.used, 0) < c.cap
                ORDER BY (c.id IS NOT DISTINCT FROM p_pinned) DESC, COALESCE(d.used, 0),
                         m.last_used_at NULLS FIRST, c.pos
            LOOP
                INSERT INTO daily_usage AS u (subject_id, day, used) VALUES (cand.id, p_day, 1)
                ON CONFLICT (subject_id, day) DO UPDATE SET used = u.used + 1
                WHERE u.used + 1 <= cand.cap
                RETURNING u.subject_id INTO mailbox_id;
                IF mailbox_id IS NOT NULL THEN
                    UPDATE mailboxes SET last_used_at = clock_timestamp() WHERE id = mailbox_id;
                    identity_used := got;
                    RETURN;
                END IF;
            END LOOP;
            UPDATE daily_usage SET used = used - 1 WHERE subject_id = p_identity AND day = p_day;
        END IF;
    END IF;
    identity_used := COALESCE(
        (SELECT d.used FROM daily_usage d WHERE d.subject_id = p_identity AND d.day = p_day), 0);
END $$;

-- Aborts the send statement (and so everything it wrote) when its idempotency key was
-- recorded by another command first; the router then answers the stored result.
CREATE FUNCTION mailgw_key_taken() RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'idempotency key already recorded' USING ERRCODE = 'MG001';
END $$;
