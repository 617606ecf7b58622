"""Inbound mail: IMAP watching, leases, and ingestion (parse → thread → persist → events)."""
