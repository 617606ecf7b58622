"""RFC 5322 address syntax as regular-expression text, shared by parsing and building.

Only the plain ASCII forms: what needs no quoting and no parser. Anything else is left to
the `email` package by the callers."""

from __future__ import annotations

ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # atext, one or more
DOT_ATOM = rf"{ATOM}(?:\.{ATOM})*"
# addr-spec with a dot-atom local part and a host name of letters, digits and hyphens.
PLAIN_ADDR_SPEC = rf"{DOT_ATOM}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
