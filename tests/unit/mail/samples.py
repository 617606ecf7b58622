"""Realistic raw messages shared by the mail unit tests."""

from __future__ import annotations


def crlf(text: str) -> bytes:
    """Encode a readable fixture as wire bytes (CRLF line endings)."""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


GMAIL_REPLY = crlf(
    """\
Return-Path: <morgan@northwind.example>
From: Morgan Lee <Morgan@NorthWind.Example>
Date: Tue, 4 Jun 2024 09:12:44 +0200
Message-ID: <CAF=abc123+XyZ@mail.gmail.com>
In-Reply-To: <tok1@acme.example>
References: <root0@acme.example>
 <tok1@acme.example>
Subject: Re: Quick question about Northwind
To: Alice Chen <alice.chen@tryacme.example>
Content-Type: multipart/alternative; boundary="000000000000a1b2c3"
MIME-Version: 1.0

--000000000000a1b2c3
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

Hi Alice,

Sounds good =E2=80=94 Thursday works for me.

--=20
Morgan Lee
VP Ops, Northwind

On Mon, Jun 3, 2024 at 3:00=E2=80=AFPM Alice Chen <alice.chen@tryacme.examp=
le>
wrote:

> Hi Morgan,
>
> Do you have 15 minutes this week?
>

--000000000000a1b2c3
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

<div dir=3D"ltr">Hi Alice,<div><br></div><div>Sounds good =E2=80=94 Thursday =
works for me.</div></div><br><div class=3D"gmail_quote"><div dir=3D"ltr" class=
=3D"gmail_attr">On Mon, Jun 3, 2024 at 3:00 PM Alice Chen wrote:<br></div><blo=
ckquote class=3D"gmail_quote">Hi Morgan,</blockquote></div>

--000000000000a1b2c3--
"""
)

OUTLOOK_REPLY = crlf(
    """\
From: =?iso-8859-1?Q?J=F6rg_M=FCller?= <joerg.mueller@contoso.example>
To: "alice.chen@tryacme.example" <alice.chen@tryacme.example>
Subject: AW: Quick question
Thread-Topic: Quick question
Thread-Index: AQHatZ1c2ZJd
Date: Tue, 4 Jun 2024 07:30:01 +0000
Message-ID: <AM0PR01MB1234ABCD@AM0PR01MB1234.eurprd01.prod.outlook.com>
References: <tok1@acme.example>
In-Reply-To: <tok1@acme.example>
Content-Language: de-DE
X-MS-Has-Attach: yes
Content-Type: multipart/mixed; boundary="_004_AM0PR01MB1234_"
MIME-Version: 1.0

--_004_AM0PR01MB1234_
Content-Type: multipart/alternative; boundary="_000_AM0PR01MB1234_"

--_000_AM0PR01MB1234_
Content-Type: text/plain; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

Hallo Alice,

gerne n=E4chste Woche.

Gr=FC=DFe
J=F6rg

________________________________
From: Alice Chen <alice.chen@tryacme.example>
Sent: Monday, June 3, 2024 3:00 PM
To: J=F6rg M=FCller <joerg.mueller@contoso.example>
Subject: Quick question

Hi J=F6rg, do you have 15 minutes?

--_000_AM0PR01MB1234_
Content-Type: text/html; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

<html><head><meta http-equiv=3D"Content-Type" content=3D"text/html; charset=3D=
iso-8859-1"></head><body><p>Hallo Alice,</p><p>gerne n=E4chste Woche.</p></bo=
dy></html>

--_000_AM0PR01MB1234_--

--_004_AM0PR01MB1234_
Content-Type: application/pdf; name="Angebot 2024.pdf"
Content-Description: Angebot 2024.pdf
Content-Disposition: attachment; filename="Angebot 2024.pdf"; size=8
Content-Transfer-Encoding: base64

JVBERi0xLjQ=

--_004_AM0PR01MB1234_--
"""
)

EXCHANGE_OOF = crlf(
    """\
From: Sam Patel <sam@fabrikam.example>
To: <alice.chen@tryacme.example>
Subject: Automatic reply: Quick question
Thread-Topic: Quick question
Date: Tue, 4 Jun 2024 07:30:01 +0000
Message-ID: <oof-1@fabrikam.example>
In-Reply-To: <tok2@acme.example>
Auto-Submitted: auto-generated
X-Auto-Response-Suppress: All
X-MS-Exchange-Inbox-Rules-Loop: sam@fabrikam.example
Content-Type: text/plain; charset="us-ascii"
MIME-Version: 1.0

I am out of the office until June 10 with limited access to email.
"""
)

POSTFIX_DSN = crlf(
    """\
Return-Path: <>
From: MAILER-DAEMON@mx.tryacme.example (Mail Delivery System)
To: alice.chen@tryacme.example
Subject: Undelivered Mail Returned to Sender
Date: Tue, 4 Jun 2024 07:30:01 +0000 (UTC)
Message-Id: <20240604073001.5B2C1@mx.tryacme.example>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="5B2C1.1717486201/mx.tryacme.example"

This is a MIME-encapsulated message.

--5B2C1.1717486201/mx.tryacme.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.tryacme.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<nobody@northwind.example>: host mx.northwind.example[192.0.2.7] said: 550
    5.1.1 <nobody@northwind.example>: Recipient address rejected: User unknown
    (in reply to RCPT TO command)

--5B2C1.1717486201/mx.tryacme.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.tryacme.example
X-Postfix-Queue-ID: 5B2C1
X-Postfix-Sender: rfc822; alice.chen@tryacme.example
Arrival-Date: Tue,  4 Jun 2024 07:30:00 +0000 (UTC)

Final-Recipient: rfc822; nobody@northwind.example
Original-Recipient: rfc822;Nobody@northwind.example
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.northwind.example
Diagnostic-Code: smtp; 550 5.1.1 <nobody@northwind.example>: Recipient address
    rejected: User unknown

Final-Recipient: rfc822; slow@fabrikam.example
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.fabrikam.example[192.0.2.9]:25:
    Connection timed out

--5B2C1.1717486201/mx.tryacme.example
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Alice Chen <alice.chen@tryacme.example>
To: nobody@northwind.example
Subject: Quick question
Message-ID: <tok3@acme.example>
Date: Tue, 4 Jun 2024 07:29:59 +0000

--5B2C1.1717486201/mx.tryacme.example--
"""
)

EXIM_BOUNCE = crlf(
    """\
Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mx.contoso.example>
To: alice.chen@tryacme.example
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1sEXIM-0001@mx.contoso.example>
X-Failed-Recipients: ghost@contoso.example
Auto-Submitted: auto-replied
Date: Tue, 04 Jun 2024 07:30:01 +0000

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  ghost@contoso.example
    SMTP error from remote mail server after RCPT TO:<ghost@contoso.example>:
    550 5.1.1 User unknown

------ This is a copy of the message, including all the headers. ------

From: Alice Chen <alice.chen@tryacme.example>
To: ghost@contoso.example
Subject: Hello
Message-ID: <tok4@acme.example>

Hi!
"""
)

LATIN1_BOGUS = (
    b"From: =?ISO-8859-1?Q?Fran=E7ois?= <francois@exemple.example>\r\n"
    b"To: alice.chen@tryacme.example\r\n"
    b"Subject: =?ISO-8859-1?Q?R=E9union_pr=E9vue?=\r\n"
    b"Message-ID: <fr1@exemple.example>\r\n"
    b"Date: Tue, 4 Jun 2024 10:00:00 +0200\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="zz"\r\n'
    b"\r\n"
    b"--zz\r\n"
    b"Content-Type: text/plain; charset=ISO-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Bonjour, la r\xe9union est pr\xe9vue \xe0 10h.\r\n"
    b"--zz\r\n"
    b"Content-Type: text/html; charset=x-no-such-charset\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"<p>Bonjour, la r\xc3\xa9union est pr\xc3\xa9vue.</p>\r\n"
    b"--zz--\r\n"
)

MISSING_BOUNDARY = crlf(
    """\
From: lead@northwind.example
To: alice.chen@tryacme.example
Subject: broken
Message-ID: <broken@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/mixed

--frontier
Content-Type: text/plain; charset=utf-8

The body survives.
--frontier
Content-Type: image/png; name="logo.png"
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--frontier--
"""
)
