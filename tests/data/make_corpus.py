"""Generate the deterministic .eml test corpus in tests/data/corpus/ (plus its README.md)."""

from __future__ import annotations

import base64
import quopri
import re
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"

# --------------------------------------------------------------------------------------------
# Helpers. Templates are written with "\n" and normalised to CRLF; str chunks must be ASCII so
# that any 8-bit byte in a file is put there on purpose (as a bytes chunk).
# --------------------------------------------------------------------------------------------


def crlf(data: bytes) -> bytes:
    """Normalise every line ending to CRLF."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def build(*chunks: str | bytes) -> bytes:
    """Concatenate chunks (str ones must be pure ASCII) and normalise line endings to CRLF."""
    out = [c.encode("ascii") if isinstance(c, str) else c for c in chunks]
    return crlf(b"".join(out))


def b64(data: bytes) -> str:
    """Base64 in 76-character lines, with a trailing newline."""
    return base64.encodebytes(data).decode("ascii")


def qp(text: str, charset: str = "utf-8") -> str:
    """Quoted-printable body text (soft line breaks at 76 characters)."""
    return quopri.encodestring(text.encode(charset)).decode("ascii")


def ew_b(text: str, charset: str = "UTF-8") -> str:
    """An RFC 2047 'B' encoded-word."""
    payload = base64.b64encode(text.encode(charset)).decode("ascii")
    return f"=?{charset}?B?{payload}?="


def ew_q(text: str, charset: str = "UTF-8") -> str:
    """An RFC 2047 'Q' encoded-word (safe for use in a phrase, e.g. a display name)."""
    out = []
    for byte in text.encode(charset):
        ch = chr(byte)
        if ch == " ":
            out.append("_")
        elif ch.isascii() and (ch.isalnum() or ch in "!*+-/"):
            out.append(ch)
        else:
            out.append(f"={byte:02X}")
    return f"=?{charset}?Q?{''.join(out)}?="


def pct(text: str) -> str:
    """RFC 2231 percent-encoding of UTF-8 text."""
    safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
    return "".join(ch if ch in safe else "".join(f"%{b:02X}" for b in ch.encode()) for ch in text)


def fake_pdf(title: str) -> bytes:
    """A tiny but well-formed one-page PDF (correct xref offsets), fully deterministic."""
    stream = f"BT /F1 14 Tf 72 720 Td ({title}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += str(number).encode() + b" 0 obj\n" + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 " + str(len(objects) + 1).encode() + b"\n0000000000 65535 f \n"
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += b"trailer\n<< /Size " + str(len(objects) + 1).encode() + b" /Root 1 0 R >>\n"
    out += b"startxref\n" + str(xref_at).encode() + b"\n%%EOF\n"
    return out


def fake_png(width: int, height: int, tint: int) -> bytes:
    """A valid RGB PNG; the zlib stream uses stored blocks so the bytes never depend on zlib."""
    rows = []
    for y in range(height):
        row = bytes(
            v
            for x in range(width)
            for v in ((x * 16 + tint) % 256, (y * 16) % 256, ((x + y) * 8 + tint) % 256)
        )
        rows.append(b"\x00" + row)
    raw = b"".join(rows)
    deflate = b"\x01" + struct.pack("<HH", len(raw), len(raw) ^ 0xFFFF) + raw  # one final block
    zdata = b"\x78\x01" + deflate + struct.pack(">I", zlib.adler32(raw))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zdata) + chunk(b"IEND", b"")


# A 1x1 transparent GIF (the shop's e-mail signature logo).
LOGO_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
INVOICE_PDF = fake_pdf("Invoice INV-2025-0042 - Shop Example")  # used twice: dedup test
RECEIPT_PDF = fake_pdf("Receipt R-77812 - paid by card")
RETURN_LABEL_PDF = fake_pdf("Return label RMA-5521")
RECHNUNG_PDF = fake_pdf("Rechnung 2025-03-118")
DAMAGE_PNG = fake_png(12, 12, 40)
SCREENSHOT_PNG = fake_png(16, 10, 200)

MAYA = "Maya from Shop <maya@shop.example>"
LUIS = "Luis from Shop <luis@shop.example>"
SUPPORT = "Shop Support <support@shop.example>"

# --------------------------------------------------------------------------------------------
# Well-formed messages
# --------------------------------------------------------------------------------------------


def plain_ascii() -> bytes:
    return build("""\
Return-Path: <dana.whitfield@example.com>
Received: from mail.example.com (mail.example.com [192.0.2.10])
\tby mx1.shop.example (Postfix) with ESMTPS id 4Q9XkT2bQ1z9s
\tfor <support@shop.example>; Mon, 03 Mar 2025 09:14:25 +0000 (UTC)
From: Dana Whitfield <dana.whitfield@example.com>
To: support@shop.example
Subject: Order #100234 arrived damaged
Date: Mon, 03 Mar 2025 09:14:22 +0000
Message-ID: <CAHx9f2k1q0-plain-ascii@mail.example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: 7bit

Hello,

My order #100234 (the ceramic table lamp) arrived this morning and the
base is cracked. The outer box looked fine, so I think it was packed
loosely.

Could you send a replacement? I still have all the packaging if you
need it back.

Thanks,
Dana Whitfield
14 Orchard Lane, Springfield
""")


def plain_utf8_8bit() -> bytes:
    body = (
        "Hej!\n\n"
        "Jag beställde en ryggsäck (order 100301) för 49,90 € men fick fel färg – "
        "den är grön istället för blå.\n"
        "Går det att byta? ”Snabb leverans” stod det, men det tog två veckor. 📦\n\n"
        "Tack på förhand,\n"
        "Zoë Lindqvist\n"
        "Göteborg\n"
    )
    return build(
        """\
Received: from web.example.org (web.example.org [198.51.100.23])
\tby mx1.shop.example (Postfix) with ESMTPS id 4QA0c1Lm2Zz8r
\tfor <support@shop.example>; Mon, 03 Mar 2025 11:02:51 +0100 (CET)
From: Zoe Lindqvist <zoe.lindqvist@example.org>
To: support@shop.example
Subject: Wrong colour backpack, order 100301
Date: Mon, 03 Mar 2025 11:02:47 +0100
Message-ID: <20250303110247.5f1a2b@web.example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit
User-Agent: Roundcube Webmail/1.6.5

""",
        body.encode("utf-8"),
    )


def quoted_printable() -> bytes:
    body = (
        "Bonjour l'équipe,\n\n"
        "J'ai reçu ma commande n° 100322 hier, mais la facture indique un montant "
        "de 89,00 € alors que le prix affiché sur le site était de 79,00 € (code promo "
        "PRINTEMPS=10 appliqué au panier). Pourriez-vous vérifier et me rembourser la "
        "différence ?\n\n"
        "Merci d'avance et bonne journée,\n"
        "Amélie Fournier\n"
    )
    return build(
        """\
From: Amelie Fournier <amelie.fournier@mail.example.net>
To: Shop Support <support@shop.example>
Subject: Promo code not applied on order 100322
Date: Tue, 04 Mar 2025 08:41:09 +0100
Message-ID: <a1f3c9e2-qp-8841@mail.example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable
X-Mailer: Microsoft Outlook 16.0

""",
        qp(body),
    )


def base64_text_body() -> bytes:
    body = (
        "Hi there,\n\n"
        "I'm writing from my phone so sorry for the short message. The tracking\n"
        'link for order 100355 says "label created" for 9 days now. Has it shipped?\n\n'
        "Ravi\n\n"
        "Sent from my phone\n"
    )
    return build(
        """\
From: Ravi Menon <ravi.menon@example.com>
To: support@shop.example
Subject: Tracking not updating for 100355
Date: Tue, 04 Mar 2025 19:20:33 +0530
Message-ID: <B64-7d2e11f0-0001@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8; format=flowed
Content-Transfer-Encoding: base64
X-Mailer: iPhone Mail (21D61)

""",
        b64(body.encode("utf-8")),
    )


def alternative_text_html() -> bytes:
    text = (
        "Hi Shop team,\n\n"
        "Is the Aurora desk (SKU DESK-AUR-140) available in oak? The product page\n"
        "only shows walnut, but your catalogue mentions oak too.\n\n"
        "Best,\nPriya Natarajan\n"
    )
    html = (
        '<div dir="ltr">Hi Shop team,<div><br></div>'
        "<div>Is the <b>Aurora desk</b> (SKU DESK-AUR-140) available in <i>oak</i>? "
        'The <a href="https://shop.example/p/desk-aurora">product page</a> only shows '
        "walnut, but your catalogue mentions oak too.</div><div><br></div>"
        "<div>Best,</div><div>Priya Natarajan</div></div>\n"
    )
    return build(
        """\
MIME-Version: 1.0
Date: Wed, 05 Mar 2025 10:03:17 -0800
Message-ID: <CAJr8pQ+alt-4kq9=Zb1xYf@mail.example.com>
Subject: Aurora desk in oak?
From: Priya Natarajan <priya.n@example.com>
To: support@shop.example
Content-Type: multipart/alternative; boundary="000000000000a4c1b2062f8e11d3"

--000000000000a4c1b2062f8e11d3
Content-Type: text/plain; charset="UTF-8"

""",
        text,
        """
--000000000000a4c1b2062f8e11d3
Content-Type: text/html; charset="UTF-8"

""",
        html,
        """
--000000000000a4c1b2062f8e11d3--
""",
    )


def html_only() -> bytes:
    html = (
        "<html><body>\n"
        "<h2>New contact form submission</h2>\n"
        "<table>\n"
        "<tr><td><b>Name</b></td><td>Marcus O&#39;Neill</td></tr>\n"
        "<tr><td><b>Email</b></td><td>marcus.oneill@example.org</td></tr>\n"
        "<tr><td><b>Order</b></td><td>100377</td></tr>\n"
        "<tr><td><b>Message</b></td><td>I&nbsp;would like to change the delivery address "
        "to 22 Harbour Street &amp; leave it with the concierge.</td></tr>\n"
        "</table>\n"
        "</body></html>\n"
    )
    return build(
        """\
From: Shop Contact Form <noreply@shop.example>
Reply-To: Marcus O'Neill <marcus.oneill@example.org>
To: support@shop.example
Subject: [Contact form] Change delivery address
Date: Wed, 05 Mar 2025 16:45:00 +0000
Message-ID: <contactform.1741193100.77@shop.example>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 7bit
X-Form-Id: contact-v2

""",
        html,
    )


def html_style_script() -> bytes:
    html = """\
<html>
<head>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<style type="text/css">
p.MsoNormal, li.MsoNormal { margin:0cm; font-size:11.0pt; font-family:"Calibri",sans-serif; }
.hidden-preheader { display:none !important; color:#ffffff; }
@media only screen and (max-width: 480px) { .wrapper { width:100% !important; } }
</style>
<script type="text/javascript">
  document.write("<img src='https://tracker.example.net/p.gif?u=" + escape(location) + "'>");
  window.onload = function () { alert("STYLE_SCRIPT_MARKER should never be indexed"); };
</script>
</head>
<body onload="init()">
<span class="hidden-preheader">preheader text</span>
<div class="wrapper">
<p class="MsoNormal">Hello,</p>
<p class="MsoNormal">The voucher code <b>GIFT-2025-XYZ</b> from my gift card is rejected at
checkout with &quot;invalid code&quot;. Can you check it please?</p>
<p class="MsoNormal">Kind regards,<br>Helen Baptiste</p>
<!-- [if mso]><p>conditional comment text</p><![endif] -->
</div>
</body>
</html>
"""
    return build(
        """\
From: Helen Baptiste <helen.baptiste@example.net>
To: "support@shop.example" <support@shop.example>
Subject: Gift card code rejected
Date: Thu, 06 Mar 2025 09:12:40 +0000
Message-ID: <DB7PR02MB4-style-script-5521@example.net>
MIME-Version: 1.0
Content-Type: text/html; charset="utf-8"
Content-Transfer-Encoding: 7bit
X-MS-Has-Attach:
X-MS-TNEF-Correlator:

""",
        html,
    )


def mixed_pdf_attachment() -> bytes:
    return build(
        """\
From: Tom Becker <tom.becker@example.com>
To: support@shop.example
Subject: Invoice shows wrong VAT number
Date: Thu, 06 Mar 2025 14:30:02 +0100
Message-ID: <5e8c1a40-pdf-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="------------mixedPDF01ab"
User-Agent: Mozilla Thunderbird

This is a multi-part message in MIME format.
--------------mixedPDF01ab
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: 7bit

Hello,

the attached invoice INV-2025-0042 has our old VAT number on it
(DE123456789). Could you reissue it with DE987654321?

Thanks,
Tom Becker
Becker Werkstatt GmbH

--------------mixedPDF01ab
Content-Type: application/pdf; name="INV-2025-0042.pdf"
Content-Disposition: attachment; filename="INV-2025-0042.pdf"
Content-Transfer-Encoding: base64

""",
        b64(INVOICE_PDF),
        """
--------------mixedPDF01ab--
""",
    )


def mixed_two_attachments() -> bytes:
    return build(
        """\
From: Grace Owusu <grace.owusu@mail.example.net>
To: support@shop.example
Subject: Broken kettle - photo and receipt attached
Date: Fri, 07 Mar 2025 08:05:55 +0000
Message-ID: <two-att-20250307080555.GO41@mail.example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=_two_attachments_7f3e"

--=_two_attachments_7f3e
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hi,

The kettle I bought (order 100390) stopped heating after a week. I have
attached a photo of the error light and the card receipt.

Grace

--=_two_attachments_7f3e
Content-Type: image/png; name="kettle.png"
Content-Disposition: attachment; filename="kettle.png"
Content-Transfer-Encoding: base64

""",
        b64(DAMAGE_PNG),
        """
--=_two_attachments_7f3e
Content-Type: application/pdf; name="receipt-R-77812.pdf"
Content-Disposition: attachment; filename="receipt-R-77812.pdf"
Content-Transfer-Encoding: base64

""",
        b64(RECEIPT_PDF),
        """
--=_two_attachments_7f3e--
""",
    )


def mixed_same_pdf_dedup() -> bytes:
    return build(
        """\
From: Tom Becker <tom.becker@example.com>
To: billing@shop.example
Cc: support@shop.example
Subject: Re: Invoice shows wrong VAT number (copy for accounts)
Date: Mon, 10 Mar 2025 09:00:12 +0100
Message-ID: <5e8c1a40-pdf-2-copy@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="------------dedupPDF02cd"

This is a multi-part message in MIME format.
--------------dedupPDF02cd
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 7bit

Forwarding the same invoice to accounts as requested on the phone.

Tom

--------------dedupPDF02cd
Content-Type: application/pdf; name="invoice-copy.pdf"
Content-Disposition: attachment; filename="invoice-copy.pdf"
Content-Transfer-Encoding: base64

""",
        b64(INVOICE_PDF),
        """
--------------dedupPDF02cd--
""",
    )


def related_inline_images() -> bytes:
    text = (
        "Hi Noah,\n\n"
        "Thanks for the screenshot. The error you see is because the card was\n"
        "declined by the bank. I have attached a return label in case you would\n"
        "rather send the item back.\n\n"
        "Maya\nShop Support\n"
    )
    html = (
        "<html><body>\n"
        "<p>Hi Noah,</p>\n"
        "<p>Thanks for the screenshot:</p>\n"
        '<p><img src="cid:screenshot-1.20250307@shop.example" alt="your screenshot"></p>\n'
        "<p>The error you see is because the card was declined by the bank. I have attached "
        "a return label in case you would rather send the item back.</p>\n"
        '<p>Maya<br><img src="cid:logo@shop.example" alt="Shop" width="1" height="1"></p>\n'
        "</body></html>\n"
    )
    return build(
        """\
From: """,
        MAYA,
        """
To: Noah Fischer <noah.fischer@example.org>
Subject: Re: Payment error at checkout [Ticket #4410]
Date: Fri, 07 Mar 2025 15:22:09 +0000
Message-ID: <ticket-4410-r1.20250307152209@shop.example>
In-Reply-To: <noah-payment-err-0307@example.org>
References: <noah-payment-err-0307@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1_mixed_4410"

--b1_mixed_4410
Content-Type: multipart/alternative; boundary="b2_alt_4410"

--b2_alt_4410
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

""",
        text,
        """
--b2_alt_4410
Content-Type: multipart/related; type="text/html"; boundary="b3_rel_4410"

--b3_rel_4410
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 7bit

""",
        html,
        """
--b3_rel_4410
Content-Type: image/png; name="screenshot.png"
Content-ID: <screenshot-1.20250307@shop.example>
Content-Disposition: inline; filename="screenshot.png"
Content-Transfer-Encoding: base64

""",
        b64(SCREENSHOT_PNG),
        """
--b3_rel_4410
Content-Type: image/gif; name="logo.gif"
Content-ID: <logo@shop.example>
Content-Disposition: inline; filename="logo.gif"
Content-Transfer-Encoding: base64

""",
        b64(LOGO_GIF),
        """
--b3_rel_4410--

--b2_alt_4410--

--b1_mixed_4410
Content-Type: application/pdf; name="return-label-RMA-5521.pdf"
Content-Disposition: attachment; filename="return-label-RMA-5521.pdf"
Content-Transfer-Encoding: base64

""",
        b64(RETURN_LABEL_PDF),
        """
--b1_mixed_4410--
""",
    )


def charset_iso_8859_1() -> bytes:
    body = (
        "Guten Tag,\n\n"
        "ich möchte meine Bestellung Nr. 100398 stornieren. Die Größe der Jacke ist\n"
        "leider falsch (XL statt L). Bitte erstatten Sie den Betrag über 89,95 EUR.\n\n"
        "Mit freundlichen Grüßen\n"
        "Jürgen Weiß\n"
    )
    return build(
        "From: ",
        ew_q("Jürgen Weiß", "ISO-8859-1"),
        """ <juergen.weiss@example.net>
To: support@shop.example
Subject: """,
        ew_q("Stornierung Bestellung 100398 - Größe falsch", "ISO-8859-1"),
        """
Date: Mon, 10 Mar 2025 07:55:31 +0100
Message-ID: <latin1.100398.0755@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: 8bit

""",
        body.encode("iso-8859-1"),
    )


def charset_windows_1252() -> bytes:
    body = (
        "Hi \u2013 I\u2019ve been charged \u20ac129.99 twice for order 100412\u2026\n"
        "My bank statement shows both \u201cSHOP EXAMPLE\u201d lines on 08/03.\n"
        "Please refund the duplicate \u2022 I\u2019m happy to send a screenshot.\n\n"
        "Cheers,\nS\u00e9amus Byrne\n"
    )
    return build(
        """\
From: Seamus Byrne <seamus.byrne@example.com>
To: support@shop.example
Subject: """,
        ew_q("Double charge \u2013 order 100412", "windows-1252"),
        """
Date: Mon, 10 Mar 2025 12:18:44 +0000
Message-ID: <cp1252-100412-a9@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="windows-1252"
Content-Transfer-Encoding: 8bit
X-Mailer: Microsoft Outlook Express 6.00.2900.5512

""",
        body.encode("windows-1252"),
    )


def charset_iso_2022_jp() -> bytes:
    lines = [
        "サポートご担当者様",
        "",
        "お世話になっております。山田です。",
        "注文番号100455の商品がまだ届いていません。",
        "配送状況を確認していただけますでしょうか。",
        "",
        "よろしくお願いいたします。",
        "山田太郎",
    ]
    body = b"\n".join(line.encode("iso-2022-jp") for line in lines) + b"\n"
    return build(
        "From: ",
        ew_b("山田太郎", "ISO-2022-JP"),
        """ <taro.yamada@jp.example.net>
To: support@shop.example
Subject: """,
        ew_b("注文の配送について", "ISO-2022-JP"),
        """
Date: Tue, 11 Mar 2025 10:31:05 +0900
Message-ID: <20250311103105.2022jp.4455@jp.example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=ISO-2022-JP
Content-Transfer-Encoding: 7bit

""",
        body,
    )


def charset_koi8_r() -> bytes:
    body = (
        "Здравствуйте!\n\n"
        "Я хотел бы вернуть чайник из заказа 100463. Он не включается.\n"
        "Подскажите, пожалуйста, куда его отправить?\n\n"
        "С уважением,\n"
        "Дмитрий Соколов\n"
    )
    return build(
        "From: ",
        ew_b("Дмитрий Соколов", "KOI8-R"),
        """ <d.sokolov@ru.example.org>
To: support@shop.example
Subject: """,
        ew_b("Возврат товара, заказ 100463", "KOI8-R"),
        """
Date: Tue, 11 Mar 2025 13:47:20 +0300
Message-ID: <koi8r-100463-1347@ru.example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=koi8-r
Content-Transfer-Encoding: 8bit

""",
        body.encode("koi8-r"),
    )


def charset_shift_jis() -> bytes:
    body = (
        "ショップご担当者様\n\n"
        "先日購入したコーヒーメーカー（注文番号100470）の保証書が\n"
        "同梱されていませんでした。再発行は可能でしょうか。\n\n"
        "鈴木花子\n"
    )
    return build(
        "From: ",
        ew_b("鈴木花子", "Shift_JIS"),
        """ <hanako.suzuki@example.com>
To: support@shop.example
Subject: """,
        ew_b("保証書について", "Shift_JIS"),
        """
Date: Wed, 12 Mar 2025 09:03:58 +0900
Message-ID: <sjis.100470.0903@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="Shift_JIS"
Content-Transfer-Encoding: 8bit

""",
        body.encode("shift_jis"),
    )


def charset_gb2312() -> bytes:
    body = (
        "您好，\n\n"
        "我上周购买的蓝牙耳机（订单号：100488）左耳没有声音，\n"
        "请问可以换货吗？\n\n"
        "谢谢！\n"
        "李明\n"
    )
    return build(
        "From: ",
        ew_b("李明", "GB2312"),
        """ <li.ming@cn.example.net>
To: support@shop.example
Subject: """,
        ew_b("耳机换货申请", "GB2312"),
        """
Date: Wed, 12 Mar 2025 15:26:11 +0800
Message-ID: <gb2312-100488-1526@cn.example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset="gb2312"
Content-Transfer-Encoding: base64

""",
        b64(body.encode("gb2312")),
    )


def rfc2047_b_encoding() -> bytes:
    body = (
        "Olá,\n\n"
        "O cupão que recebi por e-mail não funciona na aplicação.\n\n"
        "Obrigado,\nJoão Gonçalves\n"
    )
    return build(
        "From: ",
        ew_b("João Gonçalves"),
        """ <joao.goncalves@example.org>
To: """,
        ew_b("Suporte da Loja"),
        """ <support@shop.example>
Subject: """,
        ew_b("Cupão não funciona na aplicação"),
        """
Date: Thu, 13 Mar 2025 11:11:11 +0000
Message-ID: <rfc2047-b-joao-1111@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8
Content-Transfer-Encoding: 8bit

""",
        body.encode("utf-8"),
    )


def rfc2047_q_encoding() -> bytes:
    return build(
        "From: ",
        ew_q("Müller, Jürgen"),
        """ <j.mueller@mail.example.net>
Cc: """,
        ew_q("Émilie Dubois", "ISO-8859-1"),
        """ <emilie.dubois@example.com>
To: support@shop.example
Subject: """,
        ew_q("Rückfrage zur Lieferung – Paket beschädigt"),
        """
Date: Thu, 13 Mar 2025 16:40:02 +0100
Message-ID: <rfc2047-q-mueller-1640@mail.example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hello,

the parcel for order 100495 arrived with a torn corner. The contents
seem fine but I wanted to let you know. Emilie (in Cc) signed for it.

Regards,
J. Mueller
""",
    )


def rfc2231_filenames() -> bytes:
    name1 = "Rechnung März 2025.pdf"
    name2 = "Lieferschein für Bestellung 100502 – Kopie (gescannt).txt"
    enc2 = pct(name2)
    half = len(enc2) // 2
    while enc2[half - 1] == "%" or enc2[half - 2] == "%":  # don't split a %XX escape
        half += 1
    scan_text = "Lieferschein 100502\n1x Wasserkocher WK-200\n1x Entkalker 500 ml\n"
    return build(
        """\
From: Katrin Vogel <katrin.vogel@example.com>
To: support@shop.example
Subject: Rechnung und Lieferschein (RFC 2231 filenames)
Date: Fri, 14 Mar 2025 10:20:00 +0100
Message-ID: <rfc2231-vogel-100502@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="rfc2231-boundary-55aa"

--rfc2231-boundary-55aa
Content-Type: text/plain; charset=us-ascii

Hallo, anbei Rechnung und Lieferschein. Der Wasserkocher fehlt im Paket.
Katrin

--rfc2231-boundary-55aa
Content-Type: application/pdf; name*=UTF-8''""",
        pct(name1),
        """
Content-Disposition: attachment; filename*=UTF-8''""",
        pct(name1),
        """
Content-Transfer-Encoding: base64

""",
        b64(RECHNUNG_PDF),
        """
--rfc2231-boundary-55aa
Content-Type: text/plain; charset=utf-8
Content-Disposition: attachment;
 filename*0*=UTF-8''""",
        enc2[:half],
        """;
 filename*1*=""",
        enc2[half:],
        """
Content-Transfer-Encoding: 7bit

""",
        scan_text,
        """
--rfc2231-boundary-55aa--
""",
    )


def thread_1_initial() -> bytes:
    return build("""\
From: Olivia Grant <olivia.grant@example.org>
To: support@shop.example
Subject: Blender lid missing (order 100510)
Date: Mon, 17 Mar 2025 08:02:14 -0400
Message-ID: <thread-a-1.olivia.20250317@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hi,

My blender (order 100510) arrived today without the lid. Everything else
is in the box. Can you send a lid separately?

Olivia
""")


def thread_2_agent_reply() -> bytes:
    return build(
        "From: ",
        MAYA,
        """
To: Olivia Grant <olivia.grant@example.org>
Subject: Re: Blender lid missing (order 100510) [Ticket #4471]
Date: Mon, 17 Mar 2025 14:30:40 +0000
Message-ID: <ticket-4471-r1.20250317143040@shop.example>
In-Reply-To: <thread-a-1.olivia.20250317@example.org>
References: <thread-a-1.olivia.20250317@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit
X-Helpdesk-Ticket: 4471

Hi Olivia,

Sorry about that! I've sent a replacement lid today, it should arrive
within 3 working days. No need to return anything.

Best,
Maya
Shop Support

On Mon, 17 Mar 2025 at 08:02, Olivia Grant <olivia.grant@example.org> wrote:
> Hi,
>
> My blender (order 100510) arrived today without the lid. Everything else
> is in the box. Can you send a lid separately?
>
> Olivia
""",
    )


def thread_3_customer_followup() -> bytes:
    return build("""\
From: Olivia Grant <olivia.grant@example.org>
To: Maya from Shop <maya@shop.example>
Subject: Re: Blender lid missing (order 100510) [Ticket #4471]
Date: Thu, 20 Mar 2025 18:11:03 -0400
Message-ID: <thread-a-3.olivia.20250320@example.org>
In-Reply-To: <ticket-4471-r1.20250317143040@shop.example>
References: <thread-a-1.olivia.20250317@example.org>
 <ticket-4471-r1.20250317143040@shop.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

The lid arrived today and fits perfectly. Thank you Maya!

Olivia

> Hi Olivia,
>
> Sorry about that! I've sent a replacement lid today, it should arrive
> within 3 working days. No need to return anything.
""")


def thread_orphan_reply() -> bytes:
    return build(
        """\
From: Victor Almeida <victor.almeida@mail.example.net>
To: """,
        LUIS,
        """
Subject: Re: Re: Warranty claim for robot vacuum [Ticket #3902]
Date: Fri, 21 Mar 2025 09:45:27 +0000
Message-ID: <orphan-reply-victor-0945@mail.example.net>
In-Reply-To: <ticket-3902-r4.20250219101500@shop.example>
References: <victor-warranty-0211@mail.example.net>
 <ticket-3902-r1.20250212090000@shop.example>
 <victor-warranty-0214@mail.example.net>
 <ticket-3902-r4.20250219101500@shop.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hi Luis,

Following up on this: the repair centre still has not contacted me and it
has been a month. Can you escalate, please?

Victor
""",
    )


def forwarded_rfc822() -> bytes:
    inner = """\
From: Shop Orders <orders@shop.example>
To: Ben Carter <ben.carter@example.com>
Subject: Your order #100520 has shipped
Date: Sat, 15 Mar 2025 06:00:03 +0000
Message-ID: <order-100520-shipped.20250315060003@notify.shop.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

Hi Ben,

Good news: your order #100520 has shipped with ParcelCo.
Tracking number: PC-00918273645

Shop Example
"""
    return build(
        """\
From: Ben Carter <ben.carter@example.com>
To: support@shop.example
Subject: Fwd: Your order #100520 has shipped
Date: Mon, 24 Mar 2025 12:00:41 +0000
Message-ID: <fwd-rfc822-ben-1200@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="fwd-outer-7c21"

--fwd-outer-7c21
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hi, see the shipping notice below. The tracking number does not work on
the ParcelCo website. Can you check?

Ben

--fwd-outer-7c21
Content-Type: message/rfc822
Content-Disposition: attachment; filename="Your order 100520 has shipped.eml"

""",
        inner,
        """
--fwd-outer-7c21--
""",
    )


def auto_reply_out_of_office() -> bytes:
    return build(
        """\
From: Ingrid Sorensen <ingrid.sorensen@example.org>
To: """,
        MAYA,
        """
Subject: Automatic reply: Re: Replacement part for order 100531 [Ticket #4502]
Date: Tue, 25 Mar 2025 10:02:10 +0100
Message-ID: <ooo-ingrid-20250325100210@example.org>
In-Reply-To: <ticket-4502-r1.20250325090001@shop.example>
References: <ticket-4502-r1.20250325090001@shop.example>
Auto-Submitted: auto-replied
X-Auto-Response-Suppress: All
X-Autoreply: yes
Precedence: auto_reply
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

I am out of the office until 7 April with limited access to e-mail.
Your message will not be forwarded.

Ingrid Sorensen
""",
    )


def bounce_delivery_status() -> bytes:
    return build("""\
Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@mx1.shop.example>
To: maya@shop.example
Subject: Undelivered Mail Returned to Sender
Date: Tue, 25 Mar 2025 11:15:03 +0000 (UTC)
Message-ID: <20250325111503.9A1B2C0042@mx1.shop.example>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="9A1B2C0042.1742901303/mx1.shop.example"

This is a MIME-encapsulated message.

--9A1B2C0042.1742901303/mx1.shop.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx1.shop.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<kevin.lau@mail.example.invalid>: Host or domain name not found. Name service
    error for name=mail.example.invalid type=MX: Host not found, try again

--9A1B2C0042.1742901303/mx1.shop.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx1.shop.example
X-Postfix-Queue-ID: 9A1B2C0042
X-Postfix-Sender: rfc822; maya@shop.example
Arrival-Date: Tue, 25 Mar 2025 11:14:58 +0000 (UTC)

Final-Recipient: rfc822; kevin.lau@mail.example.invalid
Original-Recipient: rfc822;kevin.lau@mail.example.invalid
Action: failed
Status: 5.4.4
Diagnostic-Code: X-Postfix; Host or domain name not found. Name service error
    for name=mail.example.invalid type=MX: Host not found, try again

--9A1B2C0042.1742901303/mx1.shop.example
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

From: Maya from Shop <maya@shop.example>
To: Kevin Lau <kevin.lau@mail.example.invalid>
Subject: Re: Refund status [Ticket #4490]
Date: Tue, 25 Mar 2025 11:14:57 +0000
Message-ID: <ticket-4490-r2.20250325111457@shop.example>

--9A1B2C0042.1742901303/mx1.shop.example--
""")


def calendar_invite() -> bytes:
    ics = """\
BEGIN:VCALENDAR
PRODID:-//Shop Example//Helpdesk 3.2//EN
VERSION:2.0
CALSCALE:GREGORIAN
METHOD:REQUEST
BEGIN:VEVENT
DTSTART:20250402T140000Z
DTEND:20250402T143000Z
DTSTAMP:20250326T090000Z
ORGANIZER;CN=Luis from Shop:mailto:luis@shop.example
UID:call-4515-20250402@shop.example
ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=
 TRUE;CN=Hannah Kim:mailto:hannah.kim@example.com
SUMMARY:Video call: setting up your smart thermostat (Ticket #4515)
DESCRIPTION:Join at https://meet.shop.example/call-4515\\nWe will walk throu
 gh the wiring together.
LOCATION:https://meet.shop.example/call-4515
SEQUENCE:0
STATUS:CONFIRMED
END:VEVENT
END:VCALENDAR
"""
    return build(
        "From: ",
        LUIS,
        """
To: Hannah Kim <hannah.kim@example.com>
Subject: Invitation: Video call: setting up your smart thermostat @ Wed 2 Apr 2025 14:00 UTC
Date: Wed, 26 Mar 2025 09:00:00 +0000
Message-ID: <invite-4515.20250326090000@shop.example>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="cal-alt-4515"

--cal-alt-4515
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 7bit

You have been invited to a video call with Shop Support.
When: Wed 2 Apr 2025, 14:00-14:30 UTC
Join: https://meet.shop.example/call-4515

--cal-alt-4515
Content-Type: text/calendar; charset=utf-8; method=REQUEST
Content-Transfer-Encoding: 7bit

""",
        ics,
        """
--cal-alt-4515--
""",
    )


def long_folded_headers() -> bytes:
    refs = [f"<ticket-3001-r{i}.2025010{i % 9 + 1}0800@shop.example>" for i in range(1, 25)]
    references = "References: " + "\n ".join(refs)
    to_addrs = [f"Team Member {i:02d} <member{i:02d}@example.com>" for i in range(1, 21)]
    to_line = "To: " + ",\n\t".join(to_addrs)
    subject = (
        "Subject: Re: Re: Re: Fwd: Re: Question about the bulk order for our office\n"
        " (40 chairs, 12 desks, 3 whiteboards) and the delivery window that was agreed\n"
        " on the phone last week, plus the invoice address change we requested\n"
        " [Ticket #3001]"
    )
    long_x = "X-Long-Unfolded-Header: " + " ".join(f"token{i:03d}" for i in range(120))
    return build(
        """\
From: Facilities Desk <facilities@office.example.com>
""",
        to_line,
        "\nCc: ",
        SUPPORT,
        "\n",
        subject,
        """
Date: Thu, 27 Mar 2025 13:05:00 +0000
Message-ID: <long-headers-3001-r25@office.example.com>
""",
        "In-Reply-To: ",
        refs[-1],
        "\n",
        references,
        "\n",
        long_x,
        """
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Please confirm the new invoice address: Office Example Ltd, 5 Dock Road.
""",
    )


def long_body_line() -> bytes:
    entries = ",".join(
        f'{{"ts":"2025-03-27T10:{i // 60:02d}:{i % 60:02d}Z","event":"sync",'
        f'"ok":{str(i % 7 != 0).lower()}}}'
        for i in range(60)
    )
    line = "[" + entries + "]"
    assert len(line) > 3000, len(line)
    return build(
        """\
From: Jonas Petersen <jonas.petersen@example.net>
To: support@shop.example
Subject: App sync log (one very long line)
Date: Thu, 27 Mar 2025 10:30:00 +0100
Message-ID: <long-body-line-jonas-1030@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hi, the app keeps failing to sync. Here is the log it shows me:

""",
        line,
        """

Jonas
""",
    )


def multiple_recipients_cc() -> bytes:
    return build(
        """\
From: Ahmed Karim <ahmed.karim@example.com>
Sender: Office Assistant <assistant@example.com>
Reply-To: Ahmed Karim <ahmed.karim@example.com>, accounts@example.com
To: support@shop.example, "Luis from Shop" <luis@shop.example>
Cc: "Karim, Layla" <layla.karim@example.com>, billing@shop.example
Bcc: archive@example.com
Subject: Company account: add a second delivery address
Date: 28 Mar 2025 08:20:44 -0000
Message-ID: <multi-rcpt-karim-0820@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hello,

please add our warehouse (Unit 4, Riverside Park) as a second delivery
address on company account C-2207. Replies to both me and accounts, please.

Ahmed Karim
""",
    )


def undisclosed_recipients_group() -> bytes:
    return build(
        """\
From: Shop Status <status@shop.example>
To: undisclosed-recipients:;
Subject: Planned maintenance: order tracking unavailable Sunday 02:00-04:00 UTC
Date: Fri, 28 Mar 2025 17:00:00 +0000
Message-ID: <maintenance-notice-20250328@status.shop.example>
Auto-Submitted: auto-generated
Precedence: bulk
List-Unsubscribe: <mailto:unsubscribe@shop.example?subject=unsubscribe>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Order tracking will be unavailable on Sunday 30 March between 02:00 and
04:00 UTC while we upgrade our systems. Orders are not affected.
""",
    )


def image_attachment_only() -> bytes:
    return build(
        """\
From: Lucas Moreau <lucas.moreau@example.org>
To: support@shop.example
Subject: photo
Date: Sat, 29 Mar 2025 21:14:09 +0100
Message-ID: <img-only-moreau-2114@example.org>
MIME-Version: 1.0
Content-Type: image/png; name="IMG_2041.png"
Content-Disposition: attachment; filename="IMG_2041.png"
Content-Transfer-Encoding: base64

""",
        b64(fake_png(8, 8, 90)),
    )


def rfc2047_multiline_emoji_subject() -> bytes:
    subject_1 = ew_b("Bestellung 100560 🎁 Geschenkverpackung – ")
    subject_2 = ew_b("bitte mit Karte „Alles Gute“ 🎂")
    body = "Könnt ihr eine Karte beilegen? Text: „Alles Gute zum Geburtstag, Oma!“ 🎂\n"
    return build(
        "From: ",
        ew_b("Lena Schröder 🌷"),
        """ <lena.schroeder@mail.example.net>
To: support@shop.example
Subject: """,
        subject_1,
        "\n ",
        subject_2,
        """
Date: Sun, 30 Mar 2025 12:00:00 +0200
Message-ID: <emoji-subject-lena-1200@mail.example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

""",
        qp(body),
    )


def format_flowed_signature() -> bytes:
    sp = " "  # trailing spaces are significant in format=flowed; keep them explicit
    body = (
        f"Hi Maya,{sp}\n"
        "\n"
        f"thanks, the replacement charger works. One more thing: the invoice{sp}\n"
        f"still lists the old charger, could you update it so my employer{sp}\n"
        "reimburses the right item?\n"
        "\n"
        f"> I've sent a replacement charger today, it should arrive within 3{sp}\n"
        "> working days.\n"
        "\n"
        "-- \n"
        "Erik Nilsson\n"
        "Sent with Thunderbird\n"
    )
    return build(
        """\
From: Erik Nilsson <erik.nilsson@example.net>
To: Maya from Shop <maya@shop.example>
Subject: Re: Replacement charger [Ticket #4530]
Date: Mon, 31 Mar 2025 07:45:12 +0200
Message-ID: <flowed-erik-0745@example.net>
In-Reply-To: <ticket-4530-r1.20250328120000@shop.example>
References: <ticket-4530-r1.20250328120000@shop.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=UTF-8; format=flowed; delsp=no
Content-Transfer-Encoding: 7bit
User-Agent: Mozilla Thunderbird

""",
        body,
    )


def auto_generated_payment_notice() -> bytes:
    return build(
        """\
From: PayGate Notifications <no-reply@payments.example.com>
To: support@shop.example
Subject: [PayGate] Chargeback opened for payment pay_8HJ21K (EUR 64.50)
Date: Mon, 31 Mar 2025 02:13:00 +0000
Message-ID: <chargeback.pay_8HJ21K.1743387180@payments.example.com>
Auto-Submitted: auto-generated
X-Auto-Response-Suppress: OOF, AutoReply
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="pg-alt-8HJ21K"

--pg-alt-8HJ21K
Content-Type: text/plain; charset=us-ascii

A chargeback was opened for payment pay_8HJ21K (order 100566).
Reason: product not received. Respond before 14 April 2025.

--pg-alt-8HJ21K
Content-Type: text/html; charset=us-ascii
Content-Transfer-Encoding: quoted-printable

<p>A chargeback was opened for payment <b>pay_8HJ21K</b> (order 100566).</p>=
<p>Reason: <i>product not received</i>. Respond before <b>14 April 2025</b>=
.</p>

--pg-alt-8HJ21K--
""",
    )


def dup_message_id_redelivery_of_01() -> bytes:
    # Same Message-ID as 01-plain-ascii.eml: a second delivery via a backup MX with extra
    # trace headers (different bytes, same logical message).
    return build("""\
Return-Path: <dana.whitfield@example.com>
Received: from mx-backup.shop.example (mx-backup.shop.example [203.0.113.5])
\tby mx1.shop.example (Postfix) with ESMTPS id 4Q9YQ81Pm7z9t
\tfor <support@shop.example>; Mon, 03 Mar 2025 09:31:02 +0000 (UTC)
Received: from mail.example.com (mail.example.com [192.0.2.10])
\tby mx-backup.shop.example (Postfix) with ESMTPS id 1A2B3C
\tfor <support@shop.example>; Mon, 03 Mar 2025 09:14:26 +0000 (UTC)
From: Dana Whitfield <dana.whitfield@example.com>
To: support@shop.example
Subject: Order #100234 arrived damaged
Date: Mon, 03 Mar 2025 09:14:22 +0000
Message-ID: <CAHx9f2k1q0-plain-ascii@mail.example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: 7bit

Hello,

My order #100234 (the ceramic table lamp) arrived this morning and the
base is cracked. The outer box looked fine, so I think it was packed
loosely.

Could you send a replacement? I still have all the packaging if you
need it back.

Thanks,
Dana Whitfield
14 Orchard Lane, Springfield
""")


# --------------------------------------------------------------------------------------------
# Malformed messages
# --------------------------------------------------------------------------------------------


def missing_message_id() -> bytes:
    return build("""\
From: Carla Ruiz <carla.ruiz@example.com>
To: support@shop.example
Subject: No Message-ID on this one
Date: Tue, 01 Apr 2025 09:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Hi, my discount code SPRING10 was not applied to order 100571.
Carla
""")


def missing_date() -> bytes:
    return build("""\
From: Peter Novak <peter.novak@example.org>
To: support@shop.example
Subject: Question about delivery times (no Date header)
Message-ID: <no-date-novak-100575@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Do you deliver to the Czech Republic, and how long does it take?
Peter
""")


def missing_from() -> bytes:
    return build("""\
To: support@shop.example
Subject: Where is my refund? (no From header)
Date: Tue, 01 Apr 2025 10:30:00 +0000
Message-ID: <no-from-header-1030@mail.example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

I returned order 100580 two weeks ago and still have no refund.
""")


def unparseable_date() -> bytes:
    return build("""\
From: Sam Taylor <sam.taylor@example.com>
To: support@shop.example
Subject: Parcel left at wrong door
Date: yesterday at noon
Message-ID: <bad-date-taylor-100584@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

The courier left my parcel (order 100584) at number 41 instead of 14.
Sam
""")


def unknown_charset() -> bytes:
    body = "Bonjour, la facture n\u00b0 100590 est illisible. Merci \u00e0 vous.\n"
    return build(
        """\
From: Luc Girard <luc.girard@example.net>
To: support@shop.example
Subject: Facture illisible
Date: Tue, 01 Apr 2025 14:15:00 +0200
Message-ID: <unknown-charset-girard-1415@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset="x-unknown-9"
Content-Transfer-Encoding: 8bit

""",
        body.encode("iso-8859-1"),
    )


def raw_8bit_header_bytes() -> bytes:
    return build(
        "From: ",
        "Björn Åkesson".encode("iso-8859-1"),
        """ <bjorn.akesson@example.org>
To: support@shop.example
Subject: """,
        "Beställning 100595 – fel storlek, återbetalning?".encode("windows-1252"),
        """
Date: Wed, 02 Apr 2025 08:08:08 +0200
Message-ID: <raw8bit-header-akesson-0808@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: 8bit

""",
        "Hej, jag fick fel storlek. Kan jag få återbetalning?\nBjörn\n".encode("iso-8859-1"),
    )


def invalid_utf8_body() -> bytes:
    return build(
        """\
From: Mia Hoffmann <mia.hoffmann@example.com>
To: support@shop.example
Subject: Invalid UTF-8 in a body declared utf-8
Date: Wed, 02 Apr 2025 11:20:00 +0200
Message-ID: <bad-utf8-hoffmann-1120@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

""",
        b"Hallo, die Gr\xf6\xdfe passt nicht (latin-1 bytes in a utf-8 body).\n",
        b"Overlong: \xc0\xaf  lone continuation: \x80\xbf  truncated: \xe2\x82\n",
        b"Invalid lead bytes: \xfe\xff  surrogate: \xed\xa0\x80  ok: \xc3\xa4\n",
        b"Mia\n",
    )


def broken_base64() -> bytes:
    good = b64(b"Please find the return form attached. Order 100603.\n")
    return build(
        """\
From: Oscar Lindgren <oscar.lindgren@mail.example.net>
To: support@shop.example
Subject: Return form (broken base64)
Date: Wed, 02 Apr 2025 15:00:00 +0000
Message-ID: <broken-b64-lindgren-1500@mail.example.net>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="bad-b64-boundary"

--bad-b64-boundary
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

""",
        good[:20],
        "!!$$**",
        good[20:40],
        " \u00a7 ".encode("latin-1"),
        good[40:],
        """
--bad-b64-boundary
Content-Type: application/pdf; name="return-form.pdf"
Content-Disposition: attachment; filename="return-form.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJeLjz9MKMSAwIG9iago8PCAvVHlwZSAvQ2F0YWxvZyA+Pgplbm
RvYmoKdHJhaWxlcgo8PCAvUm9vdCAxIDAgUiA+PgolJUVPRgo=a
QUJD=RA==
==
--bad-b64-boundary--
""",
    )


def missing_closing_boundary() -> bytes:
    truncated = b64(fake_pdf("Warranty card WC-100611"))[:400]
    return build(
        """\
From: Fatima Zahra <fatima.zahra@example.org>
To: support@shop.example
Subject: Warranty card (message truncated, no closing boundary)
Date: Thu, 03 Apr 2025 09:40:00 +0000
Message-ID: <no-close-boundary-zahra-0940@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="never-closed-611"

--never-closed-611
Content-Type: text/plain; charset=us-ascii

Attached is my warranty card for order 100611.

--never-closed-611
Content-Type: application/pdf; name="warranty.pdf"
Content-Disposition: attachment; filename="warranty.pdf"
Content-Transfer-Encoding: base64

""",
        truncated,
    )


def multipart_no_boundary_param() -> bytes:
    return build("""\
From: George Mills <george.mills@example.com>
To: support@shop.example
Subject: Multipart without boundary parameter
Date: Thu, 03 Apr 2025 11:00:00 +0100
Message-ID: <no-boundary-param-mills-1100@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative

--unannounced-boundary
Content-Type: text/plain; charset=us-ascii

Can I collect order 100615 from your warehouse instead?

--unannounced-boundary
Content-Type: text/html; charset=us-ascii

<p>Can I collect order 100615 from your warehouse instead?</p>

--unannounced-boundary--
""")


def garbage_content_type() -> bytes:
    return build("""\
From: Nina Petrova <nina.petrova@example.net>
To: support@shop.example
Subject: Garbage Content-Type header
Date: Thu, 03 Apr 2025 16:20:00 +0000
Message-ID: <garbage-ctype-petrova-1620@example.net>
MIME-Version: 1.0
Content-Type: }}{{ ;;; ==text//html/// charset=="; boundary
Content-Transfer-Encoding: 7bit

My order 100620 shows as delivered but I have not received it.
Nina
""")


def dup_message_id_headers() -> bytes:
    return build("""\
From: Arjun Shah <arjun.shah@example.com>
To: support@shop.example
Subject: Two Message-ID headers in one message
Date: Fri, 04 Apr 2025 08:30:00 +0530
Message-ID: <dup-header-first-shah-0830@example.com>
Message-ID: <dup-header-second-shah-0830@relay.example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Hi, please cancel the gift wrapping on order 100626.
Arjun
""")


def garbled_from() -> bytes:
    return build("""\
From: <<<@@>>>
To: support@shop.example
Subject: Garbled From address
Date: Fri, 04 Apr 2025 10:10:10 +0000
Message-ID: <garbled-from-1010@broken.example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Is the SKU LAMP-CER-02 back in stock?
""")


def address_no_domain() -> bytes:
    return build("""\
From: Walter Brooks <walter>
Reply-To: walter.brooks@
To: support, "Shop Support" <support@>
Cc: @example.com
Subject: Addresses without a domain
Date: Fri, 04 Apr 2025 12:00:00 +0000
Message-ID: <no-domain-brooks-1200@localhost.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

This was sent from a misconfigured office scanner-to-mail gateway.
""")


def empty_body() -> bytes:
    return build("""\
From: Yuki Tanaka <yuki.tanaka@example.org>
To: support@shop.example
Subject: (empty body)
Date: Fri, 04 Apr 2025 18:45:00 +0900
Message-ID: <empty-body-tanaka-1845@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

""")


def headers_only_no_blank_line() -> bytes:
    return build("""\
From: Robert King <robert.king@example.com>
To: support@shop.example
Subject: Headers only, no blank line, no body
Date: Sat, 05 Apr 2025 07:00:00 +0000
Message-ID: <headers-only-king-0700@example.com>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
""")


def header_line_without_colon() -> bytes:
    return build("""\
From: Elena Rossi <elena.rossi@example.net>
To: support@shop.example
This line is not a header at all
Subject: Header block with a line that has no colon
Date: Sat, 05 Apr 2025 09:30:00 +0200
Message-ID: <no-colon-rossi-0930@example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

The espresso machine from order 100640 leaks water from the bottom.
Elena
""")


def nul_bytes_in_body() -> bytes:
    return build(
        """\
From: Kofi Mensah <kofi.mensah@mail.example.net>
To: support@shop.example
Subject: NUL bytes in the body
Date: Sat, 05 Apr 2025 13:13:13 +0000
Message-ID: <nul-bytes-mensah-1313@mail.example.net>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

""",
        b"Order 100645 \x00\x00 pasted from a spreadsheet:\n",
        b"SKU\x00QTY\x00PRICE\nMUG-01\x002\x0012.50\n\x00\x00\x00\x00\n",
        b"Kofi\n",
    )


def random_binary() -> bytes:
    # Fixed "random-looking" bytes: no header structure, no line breaks. Not CRLF-normalised.
    return bytes.fromhex(
        "8f1be2007c93ff4a10d6b3e8c05f2a9917fe0064a3b8c4d2e1f00baa55cc3e7f"
        "9d02e4b6718cfa0b33d1e6058a7fc2194ed7b0f3669e21c8"
    )


def zero_byte_file() -> bytes:
    return b""


# --------------------------------------------------------------------------------------------
# The corpus: (slug, malformed?, what it exercises, builder). Files are numbered in this order.
# --------------------------------------------------------------------------------------------

Builder = Callable[[], bytes]

MESSAGES: list[tuple[str, bool, str, Builder]] = [
    ("plain-ascii", False, "Plain text, us-ascii, 7bit, with Received trace headers", plain_ascii),
    (
        "plain-utf8-8bit",
        False,
        "Plain UTF-8 body sent as 8bit (accents, euro sign, emoji)",
        plain_utf8_8bit,
    ),
    (
        "quoted-printable",
        False,
        "UTF-8 body in quoted-printable with soft line breaks and =3D",
        quoted_printable,
    ),
    ("base64-text-body", False, "text/plain body in base64 (phone mail client)", base64_text_body),
    (
        "alternative-text-html",
        False,
        "multipart/alternative: text/plain + text/html",
        alternative_text_html,
    ),
    (
        "html-only",
        False,
        "Single text/html part, no plain alternative (web contact form)",
        html_only,
    ),
    (
        "html-style-script",
        False,
        "HTML with `<style>`, `<script>`, onload, conditional comment: none of it to be indexed",
        html_style_script,
    ),
    (
        "mixed-pdf-attachment",
        False,
        "multipart/mixed with a base64 PDF attachment",
        mixed_pdf_attachment,
    ),
    (
        "mixed-two-attachments",
        False,
        "multipart/mixed with a PNG and a PDF attachment",
        mixed_two_attachments,
    ),
    (
        "mixed-same-pdf-as-08-dedup",
        False,
        "Attachment with byte-identical PDF to 08 under another filename (content-addressed dedup)",
        mixed_same_pdf_dedup,
    ),
    (
        "mixed-alternative-related-inline-images",
        False,
        "mixed > alternative > related: html with cid: inline PNG and GIF, plus a PDF attachment",
        related_inline_images,
    ),
    (
        "charset-iso-8859-1",
        False,
        "8bit ISO-8859-1 body; Q-encoded ISO-8859-1 From and Subject",
        charset_iso_8859_1,
    ),
    (
        "charset-windows-1252",
        False,
        "8bit windows-1252 body (0x80-0x9F: euro, smart quotes, dashes); Q-encoded Subject",
        charset_windows_1252,
    ),
    (
        "charset-iso-2022-jp",
        False,
        "7bit ISO-2022-JP body; B-encoded ISO-2022-JP headers",
        charset_iso_2022_jp,
    ),
    ("charset-koi8-r", False, "8bit KOI8-R Russian body; B-encoded KOI8-R headers", charset_koi8_r),
    (
        "charset-shift-jis",
        False,
        "8bit Shift_JIS Japanese body; B-encoded Shift_JIS headers",
        charset_shift_jis,
    ),
    (
        "charset-gb2312",
        False,
        "GB2312 Chinese body in base64; B-encoded GB2312 headers",
        charset_gb2312,
    ),
    (
        "rfc2047-b-encoded-headers",
        False,
        "RFC 2047 B encoding in From, To and Subject (UTF-8)",
        rfc2047_b_encoding,
    ),
    (
        "rfc2047-q-encoded-headers",
        False,
        "RFC 2047 Q encoding: display name with comma, ISO-8859-1 Cc, UTF-8 Subject",
        rfc2047_q_encoding,
    ),
    (
        "rfc2231-encoded-filenames",
        False,
        "RFC 2231 `filename*=UTF-8''...` and a continued `filename*0*`/`filename*1*` parameter",
        rfc2231_filenames,
    ),
    (
        "thread-1-customer-initial",
        False,
        "Thread start: customer message, no In-Reply-To",
        thread_1_initial,
    ),
    (
        "thread-2-agent-reply",
        False,
        "Agent reply from shop.example with In-Reply-To + References to thread-1",
        thread_2_agent_reply,
    ),
    (
        "thread-3-customer-followup",
        False,
        "Customer reply to thread-2; References chain of 2 (folded)",
        thread_3_customer_followup,
    ),
    (
        "thread-orphan-reply-parent-missing",
        False,
        "Reply whose In-Reply-To/References point at messages not in the corpus",
        thread_orphan_reply,
    ),
    (
        "forwarded-message-rfc822",
        False,
        "Forward with the original attached as message/rfc822 (inner Message-ID is distinct)",
        forwarded_rfc822,
    ),
    (
        "auto-reply-out-of-office",
        False,
        "Out-of-office: Auto-Submitted: auto-replied, X-Autoreply, Precedence",
        auto_reply_out_of_office,
    ),
    (
        "bounce-delivery-status",
        False,
        "Bounce: multipart/report; report-type=delivery-status with text/rfc822-headers",
        bounce_delivery_status,
    ),
    (
        "calendar-invite",
        False,
        "Calendar invite: text/calendar; method=REQUEST in alternative",
        calendar_invite,
    ),
    (
        "long-folded-headers",
        False,
        "Long folded To, Subject and References (24 ids); one 1000+ char unfolded header",
        long_folded_headers,
    ),
    (
        "long-body-line-3000-chars",
        False,
        "A body line longer than 3000 characters (no break)",
        long_body_line,
    ),
    (
        "multiple-recipients-cc-reply-to",
        False,
        "Several To/Cc addresses, quoted names with commas, Sender, Reply-To list, Bcc, "
        "obsolete Date without weekday",
        multiple_recipients_cc,
    ),
    (
        "undisclosed-recipients-group",
        False,
        "Group syntax `undisclosed-recipients:;`, Auto-Submitted: auto-generated, bulk",
        undisclosed_recipients_group,
    ),
    (
        "image-attachment-only",
        False,
        "Non-multipart message whose only part is a PNG attachment",
        image_attachment_only,
    ),
    (
        "rfc2047-multiline-emoji-subject",
        False,
        "Subject of two B encoded-words folded over two lines, emoji (4-byte UTF-8) in From",
        rfc2047_multiline_emoji_subject,
    ),
    (
        "format-flowed-signature",
        False,
        "format=flowed with trailing-space soft breaks, quoted reply and '-- ' signature",
        format_flowed_signature,
    ),
    (
        "auto-generated-payment-notice",
        False,
        "Machine notification (auto-generated) with QP html alternative",
        auto_generated_payment_notice,
    ),
    (
        "dup-message-id-redelivery-of-01",
        False,
        "Intentional repeat of 01's Message-ID: same message redelivered via a backup MX",
        dup_message_id_redelivery_of_01,
    ),
    ("malformed-missing-message-id", True, "No Message-ID header", missing_message_id),
    ("malformed-missing-date", True, "No Date header", missing_date),
    ("malformed-missing-from", True, "No From header", missing_from),
    ("malformed-unparseable-date", True, "`Date: yesterday at noon`", unparseable_date),
    (
        "malformed-unknown-charset",
        True,
        '`charset="x-unknown-9"` with 8-bit body bytes',
        unknown_charset,
    ),
    (
        "malformed-raw-8bit-header-bytes",
        True,
        "Unencoded latin-1 / windows-1252 bytes in From and Subject",
        raw_8bit_header_bytes,
    ),
    (
        "malformed-invalid-utf8-body",
        True,
        "Body declared utf-8 with invalid sequences (latin-1, overlong, truncated, surrogate)",
        invalid_utf8_body,
    ),
    (
        "malformed-broken-base64",
        True,
        "base64 parts with invalid characters, stray '=' and bad padding",
        broken_base64,
    ),
    (
        "malformed-missing-closing-boundary",
        True,
        "multipart/mixed truncated inside a base64 attachment, no closing boundary",
        missing_closing_boundary,
    ),
    (
        "malformed-multipart-no-boundary-param",
        True,
        "`Content-Type: multipart/alternative` without a boundary parameter",
        multipart_no_boundary_param,
    ),
    (
        "malformed-garbage-content-type",
        True,
        "Content-Type header value is garbage",
        garbage_content_type,
    ),
    (
        "malformed-dup-message-id-headers",
        True,
        "Two Message-ID headers with different values in one message",
        dup_message_id_headers,
    ),
    ("malformed-garbled-from", True, "`From: <<<@@>>>`", garbled_from),
    (
        "malformed-address-no-domain",
        True,
        "From/To/Reply-To/Cc with no domain or no local part "
        "(reading Reply-To raises IndexError in CPython 3.11's header parser)",
        address_no_domain,
    ),
    ("malformed-empty-body", True, "Headers and blank line, then nothing", empty_body),
    (
        "malformed-headers-only-no-blank-line",
        True,
        "Header block only: no blank line, no body",
        headers_only_no_blank_line,
    ),
    (
        "malformed-header-line-without-colon",
        True,
        "A line with no colon in the middle of the header block",
        header_line_without_colon,
    ),
    (
        "malformed-nul-bytes-in-body",
        True,
        "NUL (0x00) bytes in an 8bit text body",
        nul_bytes_in_body,
    ),
    (
        "malformed-random-binary",
        True,
        "56 bytes of binary noise, no header structure at all",
        random_binary,
    ),
    ("malformed-zero-byte-file", True, "Empty file (0 bytes)", zero_byte_file),
]

MESSAGE_ID_RE = re.compile(rb"^message-id:[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)


def header_block(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end < 0 else data[:end]


def render_readme(names: list[tuple[str, bool, str]]) -> str:
    lines = [
        "# Email test corpus",
        "",
        "Generated by `tests/data/make_corpus.py` (stdlib only, deterministic): do not edit the",
        "`.eml` files by hand; change the script and run it again:",
        "",
        "```sh",
        ".venv/bin/python tests/data/make_corpus.py",
        "```",
        "",
        "Files are raw RFC 5322 bytes with CRLF line endings; the malformed ones break the",
        "rules on purpose. Support-side addresses are at `shop.example`; customers use other",
        "reserved example domains. Every Message-ID is unique except in files whose name says",
        "`dup-message-id`.",
        "",
        "| File | Malformed | Exercises |",
        "| --- | --- | --- |",
    ]
    for name, malformed, description in names:
        cell = description.replace("|", "\\|")
        lines.append(f"| `{name}` | {'yes' if malformed else ''} | {cell} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    CORPUS_DIR.mkdir(parents=True, exist_ok=True)
    for old in CORPUS_DIR.glob("*.eml"):
        old.unlink()

    seen_bytes: dict[bytes, str] = {}
    seen_ids: dict[bytes, str] = {}
    written: list[tuple[str, bool, str]] = []
    for number, (slug, malformed, description, builder) in enumerate(MESSAGES, start=1):
        name = f"{number:02d}-{slug}.eml"
        data = builder()
        assert data not in seen_bytes, f"{name} has the same bytes as {seen_bytes.get(data)}"
        seen_bytes[data] = name
        assert len(data) < 100_000, f"{name} is {len(data)} bytes"
        assert b"\n" not in data.replace(b"\r\n", b""), f"{name} has a bare LF"
        for mid in MESSAGE_ID_RE.findall(header_block(data)):
            mid = mid.strip()
            if mid in seen_ids and "dup-message-id" not in slug:
                raise AssertionError(f"{name} repeats Message-ID {mid!r} of {seen_ids[mid]}")
            seen_ids.setdefault(mid, name)
        (CORPUS_DIR / name).write_bytes(data)
        written.append((name, malformed, description))

    (CORPUS_DIR / "README.md").write_bytes(render_readme(written).encode("utf-8"))
    print(f"wrote {len(written)} messages to {CORPUS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
