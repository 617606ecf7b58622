"""strip_quoted scans the text once for candidate lines: it must cut exactly where trying every
rule on every line (the straightforward reading of the rules) cuts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mail import quotes


def _reference(text: str) -> str:
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = normalized.split("\n")
    cut = next((i for i in range(len(lines)) if quotes._is_cut(lines, i)), len(lines))
    lines = quotes._drop_trailing_quote(lines[:cut])
    for i, line in enumerate(lines):
        if quotes._SIGNATURE.match(line):
            lines = lines[:i]
            break
    result = "\n".join(line.rstrip() for line in lines).strip()
    return result or normalized.strip()


_LINES = [
    "Thanks, see you then.", "", "  ", "> quoted", ">", "-- ", "--", "--\t", "---", " -- ",
    "On Mon, 1 Jan 2024, Alice <a@x.example> wrote:", "On Mon, Alice", "wrote:", "on tuesday we",
    "Le lun. 1 janv. 2024, Alice a écrit :", "Am 01.01.2024 schrieb Alice <a@x>:",
    "El lun, Alice escribió:", "Op ma, Alice schreef:", "Il giorno lun, Alice ha scritto:",
    "Em seg, Alice escreveu:", "Den mån, Alice skrev:", "-----Original Message-----",
    "-- Ursprüngliche Nachricht --", "_" * 25, "_" * 5, "---------- Forwarded message ---------",
    "Begin forwarded message:", "BEGIN FORWARDED MESSAGE:", "From: Alice <a@x.example>",
    "*From:* Alice", "Sent: Monday", "Date: Mon, 1 Jan", "Von: Alice", "Gesendet: Montag",
    "Från: Alice", "Skickat: måndag", "De : Alice", "Envoyé : lundi", "\u0130n the morning",
    "\u0131t", "\u212a", "\u017fent: x", "\tOn Monday Bob wrote:", "\x0bOn Mon, X wrote:",
    "\u00a0From: x", "Da: x", "Inviato: y", "Van: x", "Verzonden: y", "Em:", "on\u2028wrote:",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_LINES), st.text(max_size=30)), max_size=25),
       st.sampled_from(["\n", "\r\n", "\r"]))
def test_scan_matches_the_rules_line_by_line(lines: list[str], newline: str) -> None:
    text = newline.join(lines)
    assert quotes.strip_quoted(text) == _reference(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_scan_matches_on_arbitrary_text(text: str) -> None:
    assert quotes.strip_quoted(text) == _reference(text)
