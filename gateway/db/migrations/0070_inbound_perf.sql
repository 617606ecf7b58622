-- Inbound ingestion writes every reply's body three times: the message row, the event row's
-- data and the outbox row's body. At ~3 KB each these rows pass the TOAST threshold and get
-- compressed; pglz cost PostgreSQL ~6 ms per 100 replies of the batch transaction, lz4 a
-- fraction of that (it also decompresses faster). Only values written from now on use lz4;
-- older ones stay pglz and read as before. Skipped on a server built without lz4.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings
                WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
        ALTER TABLE messages ALTER COLUMN text_body SET COMPRESSION lz4,
                             ALTER COLUMN html_body SET COMPRESSION lz4,
                             ALTER COLUMN reply_text SET COMPRESSION lz4;
        ALTER TABLE events ALTER COLUMN data SET COMPRESSION lz4;
        ALTER TABLE outbox ALTER COLUMN body SET COMPRESSION lz4;
    END IF;
END;
$$;
