"""Delivery: deliver tasks → MIME → SMTP (pooled per mailbox) → outcome, events and retries."""
