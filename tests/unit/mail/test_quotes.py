"""Tests for gateway.mail.quotes."""

from __future__ import annotations

import pytest

from gateway.mail.parse import parse_inbound
from gateway.mail.quotes import strip_quoted
from tests.unit.mail import samples


def test_gmail_reply_fixture() -> None:
    text = parse_inbound(samples.GMAIL_REPLY).text
    assert strip_quoted(text) == "Hi Alice,\n\nSounds good — Thursday works for me."


def test_outlook_reply_fixture() -> None:
    text = parse_inbound(samples.OUTLOOK_REPLY).text
    assert strip_quoted(text) == "Hallo Alice,\n\ngerne nächste Woche.\n\nGrüße\nJörg"


@pytest.mark.parametrize(
    "history",
    [
        "On Mon, Jun 3, 2024 at 3:00 PM Alice <a@x.example> wrote:\n> old",
        "On Mon, Jun 3, 2024 at 3:00 PM Alice Chen <\na@x.example> wrote:\n> old",
        "On 3 Jun 2024, at 15:00,\nAlice Chen <a@x.example>\nwrote:\n\n> old",
        "Le lun. 3 juin 2024 à 15:00, Alice <a@x.example> a écrit :\n> vieux",
        "Am Mo., 3. Juni 2024 um 15:00 Uhr schrieb Alice <a@x.example>:\n> alt",
        "El lun, 3 jun 2024 a las 15:00, Alice (<a@x.example>) escribió:\n> viejo",
        "Op ma 3 jun. 2024 om 15:00 schreef Alice <a@x.example>:\n> oud",
        "-----Original Message-----\nFrom: Alice\nSent: Monday\n\nold",
        "----- Ursprüngliche Nachricht -----\nVon: Alice\n\nalt",
        "________________________________\nFrom: Alice\nSent: Monday\nold",
        "From: Alice Chen <a@x.example>\nSent: Monday, June 3, 2024 3:00 PM\nTo: Bob\nold",
        "*From:* Alice <a@x.example>\n*Sent:* Monday\n*To:* Bob\n\nold",
        "Von: Alice <a@x.example>\nGesendet: Montag, 3. Juni 2024 15:00\nold",
        "De : Alice <a@x.example>\nEnvoyé : lundi 3 juin 2024 15:00\nold",
        "---------- Forwarded message ---------\nFrom: Alice\n\nold",
        "Begin forwarded message:\n\nFrom: Alice\nold",
        "> just a trailing quote\n> more",
    ],
)
def test_history_is_cut(history: str) -> None:
    assert strip_quoted(f"Thanks, sounds good!\n\n{history}\n") == "Thanks, sounds good!"


def test_signature_is_dropped() -> None:
    assert strip_quoted("Yes please.\n\n-- \nMorgan Lee\nVP Ops") == "Yes please."
    assert strip_quoted("Yes please.\n--\nMorgan") == "Yes please."


def test_inline_quotes_in_the_middle_are_kept() -> None:
    text = "> Can you do Thursday?\nYes.\n> And Friday?\nNo.\n\n> old tail"
    assert strip_quoted(text) == "> Can you do Thursday?\nYes.\n> And Friday?\nNo."


def test_prose_mentioning_wrote_is_kept() -> None:
    text = "On Monday John wrote: the report is late.\nPlease check."
    assert strip_quoted(text) == text
    text = "From: the team\nWe are happy to help."
    assert strip_quoted(text) == text


def test_nothing_left_falls_back_to_whole_text() -> None:
    text = "On Mon, Jun 3, 2024 Alice wrote:\n> only a quote"
    assert strip_quoted(text) == text
    assert strip_quoted("  ") == ""


def test_crlf_and_trimming() -> None:
    assert strip_quoted("  Hi!\r\n\r\nOn Mon, Alice wrote:\r\n> x\r\n") == "Hi!"
