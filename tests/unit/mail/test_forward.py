"""Tests for gateway.mail.forward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from gateway.mail.forward import FORWARD_MARKER, ChainMessage, format_forward_date, render_forward

FIRST = ChainMessage(
    from_addr="alice.chen@tryacme.example",
    from_name="Alice Chen",
    to=["morgan@northwind.example"],
    date=datetime(2024, 6, 3, 15, 0, tzinfo=UTC),
    subject="Quick question",
    text="Hi Morgan,\nDo you have 15 minutes?",
)
SECOND = ChainMessage(
    from_addr="morgan@northwind.example",
    from_name=None,
    to=["alice.chen@tryacme.example"],
    date=datetime(2024, 6, 4, 9, 5, tzinfo=UTC),
    subject="Re: Quick question",
    text=None,
    html="<html><head><style>p{}</style></head><body><p>Sure &amp; <b>Thursday</b></p>"
    "<script>alert(1)</script></body></html>",
    cc=["ops@northwind.example"],
)


def test_date_format() -> None:
    assert format_forward_date(datetime(2024, 6, 3, 15, 0)) == "Mon, 3 Jun 2024 at 15:00"
    cet = timezone(timedelta(hours=2))
    when = datetime(2024, 6, 3, 15, 0, tzinfo=UTC)
    assert format_forward_date(when, cet) == "Mon, 3 Jun 2024 at 17:00"


def test_text_version_gmail_style_chronological() -> None:
    text, _ = render_forward("FYI, see below.", None, [SECOND, FIRST])
    assert text.startswith("FYI, see below.\n\n\n" + FORWARD_MARKER)
    first = text.index("Subject: Quick question")
    second = text.index("Subject: Re: Quick question")
    assert first < second
    assert (
        f"{FORWARD_MARKER}\nFrom: Alice Chen <alice.chen@tryacme.example>\n"
        "Date: Mon, 3 Jun 2024 at 15:00\nSubject: Quick question\n"
        "To: morgan@northwind.example\n\nHi Morgan,\nDo you have 15 minutes?"
    ) in text
    assert "From: morgan@northwind.example\n" in text
    assert "Cc: ops@northwind.example" in text
    assert "Sure & Thursday" in text  # the HTML-only message was converted
    assert text.count(FORWARD_MARKER) == 2


def test_html_version_escapes_headers_and_drops_active_content() -> None:
    evil = ChainMessage(
        from_addr="x@evil.example",
        from_name="<script>Eve</script>",
        to=["a@b.example"],
        date=datetime(2024, 6, 5, 8, 0, tzinfo=UTC),
        subject="<b>bold</b> & more",
        text="1 < 2 & 3 > 2",
    )
    _, html = render_forward(None, "<p>Note</p>", [FIRST, SECOND, evil])
    assert html.startswith('<div dir="ltr"><p>Note</p></div>')
    assert "&lt;script&gt;Eve&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; more" in html
    assert "1 &lt; 2 &amp; 3 &gt; 2" in html
    assert "<script>" not in html and "<style>" not in html and "<html>" not in html
    assert "<p>Sure &amp; <b>Thursday</b></p>" in html
    assert '<strong class="gmail_sendername" dir="auto">Alice Chen</strong>' in html
    assert "&lt;alice.chen@tryacme.example&gt;" in html
    assert html.count(FORWARD_MARKER) == 3


def test_without_note_only_the_chain() -> None:
    text, html = render_forward(None, None, [FIRST])
    assert text.startswith(FORWARD_MARKER)
    assert html.startswith('<div class="gmail_quote">')


def test_note_text_is_derived_from_html_and_vice_versa() -> None:
    text, _ = render_forward(None, "<p>Hello <i>team</i></p>", [FIRST])
    assert text.startswith("Hello team\n")
    _, html = render_forward("a & b", None, [FIRST])
    assert html.startswith('<div dir="ltr"><p>a &amp; b</p></div>')


def test_mixed_naive_and_aware_dates_sort() -> None:
    naive = ChainMessage(
        from_addr="a@b.example",
        from_name=None,
        to=[],
        date=datetime(2024, 6, 1),
        subject="old",
        text="old",
    )
    text, _ = render_forward(None, None, [FIRST, naive])
    assert text.index("Subject: old") < text.index("Subject: Quick question")
