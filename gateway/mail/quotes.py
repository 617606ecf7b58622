"""Extract the newly written text of a reply, without quoted history or signature."""

from __future__ import annotations

import re
from collections.abc import Iterator

# "On <date>, <name> wrote:" and its translations; clients wrap it over up to three lines.
_ATTRIBUTION = re.compile(
    r"^\s*(?:"
    r"On\b.{0,400}\bwrote"  # en
    r"|Le\b.{0,400}\ba\s+écrit"  # fr
    r"|Am\b.{0,400}\bschrieb\b.{0,200}"  # de ("Am …, schrieb X <x@y>:")
    r"|El\b.{0,400}\bescribió"  # es
    r"|Op\b.{0,400}\bschreef\b.{0,200}"  # nl
    r"|Il\b.{0,400}\bha\s+scritto"  # it
    r"|Em\b.{0,400}\bescreveu"  # pt
    r"|Den\b.{0,400}\bskrev\b.{0,200}"  # sv
    r")\s*:\s*$",
    re.IGNORECASE | re.DOTALL,
)
_ATTRIBUTION_START = re.compile(r"^\s*(On|Le|Am|El|Op|Il|Em|Den)\b", re.IGNORECASE)
_SEPARATORS = re.compile(
    r"^\s*(?:"
    r"-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original"
    r"|Oorspronkelijk bericht|Messaggio originale|Mensagem original)\s*-{2,}"
    r"|_{20,}"  # Outlook's horizontal rule before the quoted header block
    r"|-{5,}\s*Forwarded message\s*-{5,}"  # Gmail
    r"|Begin forwarded message:"  # Apple Mail
    r")\s*$",
    re.IGNORECASE,
)
# Outlook's quoted header block: "From: …" soon followed by "Sent: …"/"Date: …".
_FROM_LINE = re.compile(r"^\s*\*?(From|De|Von|Van|Da|Från)\s*:\*?\s", re.IGNORECASE)
_SENT_LINE = re.compile(
    r"^\s*\*?(Sent|Date|Envoyé|Gesendet|Datum|Enviado|Fecha|Verzonden|Inviato|Skickat)\s*:\*?\s",
    re.IGNORECASE,
)
_SIGNATURE = re.compile(r"^--\s?$")
# Cheap scans of the whole text for the only lines the rules above can match, so a reply costs
# two regex passes instead of several regexes per line. A cut rule's line starts (after
# whitespace) with "-", "_", "*" or the first letter of one of its words (İ and ı too, as
# IGNORECASE may fold them onto "i"): only those lines are tried with the rules. Patterns run
# on the text with a newline put in front, so every line starts after a "\n"; `[^\S\n]` is
# `\s` that stays within its line.
_CUT_CANDIDATE = re.compile(r"\n[^\S\n]*(?i:[-_*bolaeidfv\u0130\u0131])")
_SIGNATURE_LINE = re.compile(r"\n--[^\S\n]?(?=\n|\Z)")  # _SIGNATURE on every line


def _is_attribution(lines: list[str], i: int) -> bool:
    if not _ATTRIBUTION_START.match(lines[i]):
        return False
    for span in (1, 2, 3):
        joined = " ".join(line.strip() for line in lines[i : i + span])
        if _ATTRIBUTION.match(joined):
            return True
    return False


def _is_outlook_block(lines: list[str], i: int) -> bool:
    if not _FROM_LINE.match(lines[i]):
        return False
    return any(_SENT_LINE.match(line) for line in lines[i + 1 : i + 5])


def _is_cut(lines: list[str], i: int) -> bool:
    return bool(_SEPARATORS.match(lines[i])) or _is_attribution(lines, i) or _is_outlook_block(lines, i)


def _matching_lines(pattern: re.Pattern[str], text: str) -> Iterator[int]:
    """Indexes of the lines of `text` (split on "\n") that `pattern`, which starts with a
    newline, matches at, in order."""
    marked = "\n" + text
    line = pos = 0
    for found in pattern.finditer(marked):
        line += marked.count("\n", pos, found.start())
        pos = found.start()
        yield line


def _cut_index(text: str, lines: list[str]) -> int:
    """The first line where quoted history starts (`lines` is `text` split on newlines)."""
    return next((i for i in _matching_lines(_CUT_CANDIDATE, text) if _is_cut(lines, i)), len(lines))


def _drop_trailing_quote(lines: list[str]) -> list[str]:
    end = len(lines)
    while end and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith(">")):
        end -= 1
    return lines[:end]


def strip_quoted(text: str) -> str:
    """The new part of a reply; the whole text when the heuristics would leave nothing."""
    normalized = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = normalized.split("\n")
    lines = _drop_trailing_quote(lines[: _cut_index(normalized, lines)])
    signature = next(_matching_lines(_SIGNATURE_LINE, normalized), len(lines))
    lines = lines[:signature]
    result = "\n".join(map(str.rstrip, lines)).strip()
    # A misfiring heuristic must not swallow a whole reply; too much text beats none.
    return result or normalized.strip()
