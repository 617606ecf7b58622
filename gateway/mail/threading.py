"""Subjects and Message-ID threading headers for replies and forwards (RFC 5322 §3.6.4)."""

from __future__ import annotations

import re
import secrets

# Reply prefixes in the languages mail clients commonly localise them to, each with an
# optional counter ("Re[2]:", "Re(2):", "Re^2:") and tolerant of "Re :" (French spacing).
_COUNTER = r"(?:\[\d+\]|\(\d+\)|\^\d+)?"
_REPLY_PREFIXES = re.compile(rf"^(?:\s*(?:re|aw|sv|antw|odp|vs)\s*{_COUNTER}\s*:)+\s*", re.IGNORECASE)
_FORWARD_PREFIXES = re.compile(rf"^(?:\s*(?:fwd|fw)\s*{_COUNTER}\s*:)+\s*", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_BRACKETED = re.compile(r"<([^<>]*)>")

# Long threads would otherwise grow References without bound; RFC 5322 suggests trimming
# while keeping the thread root (first) and the most recent ancestors (last).
MAX_REFERENCES = 20


def _clean_subject(subject: str) -> str:
    # Collapsing whitespace also removes CR/LF, which could never go into a header anyway.
    return _WHITESPACE.sub(" ", subject).strip()


def reply_subject(subject: str) -> str:
    """Return the subject with exactly one leading "Re: " (never "Re: Re: ")."""
    rest = _REPLY_PREFIXES.sub("", _clean_subject(subject), count=1)
    return f"Re: {rest}".rstrip()


def forward_subject(subject: str) -> str:
    """Return the subject with exactly one leading "Fwd: "."""
    rest = _FORWARD_PREFIXES.sub("", _clean_subject(subject), count=1)
    return f"Fwd: {rest}".rstrip()


def normalize_msgid(s: str) -> str:
    """Return the Message-ID in canonical "<local@domain>" form; ValueError when empty."""
    found = _BRACKETED.search(s)
    core = found.group(1) if found else s
    core = _WHITESPACE.sub("", core).strip("<>")
    if not core:
        raise ValueError("empty Message-ID")
    return f"<{core}>"


def parse_msgid_list(value: str | None) -> list[str]:
    """Extract the Message-IDs of an In-Reply-To/References value, tolerating garbage."""
    if not value:
        return []
    ids: list[str] = []
    for inner in _BRACKETED.findall(value):
        core = _WHITESPACE.sub("", inner)
        if core:
            ids.append(f"<{core}>")
    if not ids:
        # Some broken mailers omit the angle brackets; accept bare tokens that look like ids.
        for token in re.split(r"[\s,;]+", value):
            token = token.strip("\"'()<>")
            if "@" in token:
                ids.append(f"<{token}>")
    return _dedupe(ids)


def _dedupe(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for msgid in ids:
        if msgid not in seen:
            seen.add(msgid)
            out.append(msgid)
    return out


def references_for_reply(
    parent_message_id: str,
    parent_references: list[str],
    parent_in_reply_to: list[str] | None = None,
) -> list[str]:
    """References for a reply: the parent's References (else its In-Reply-To) + the parent."""
    ancestors = parent_references or parent_in_reply_to or []
    ids: list[str] = []
    for raw in [*ancestors, parent_message_id]:
        try:
            ids.append(normalize_msgid(raw))
        except ValueError:
            continue  # an empty id from a sloppy parent is dropped, not propagated
    ids = _dedupe(ids)
    if len(ids) > MAX_REFERENCES:
        ids = [ids[0], *ids[-(MAX_REFERENCES - 1) :]]
    return ids


def new_message_id(domain: str) -> str:
    """Return a fresh "<token@domain>" Message-ID with 144 random bits."""
    host = domain.strip().strip(".").lower()
    if "@" in host:
        host = host.rsplit("@", 1)[1]
    if not host or _WHITESPACE.search(host) or any(c in host for c in "<>[]"):
        raise ValueError(f"invalid Message-ID domain: {domain!r}")
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        # Message-IDs must be ASCII; an internationalised domain goes in its A-label form.
        host = host.encode("idna").decode("ascii")
    return f"<{secrets.token_urlsafe(18)}@{host}>"
