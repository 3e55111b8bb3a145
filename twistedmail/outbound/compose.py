"""
``twistedmail send``: a small mail user agent for the textbook story.

It composes an RFC 5322 / MIME message with the standard library (Date,
Message-ID, attachments with guessed types) and submits it over the
submission port (RFC 6409) with STARTTLS (RFC 3207) and AUTH (RFC 4954).
The command line is blocking by nature, so this uses ``smtplib`` rather
than our Twisted client.
"""

from __future__ import annotations

import argparse
import base64
import email.policy
import getpass
import ipaddress
import mimetypes
import os
import smtplib
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import IO, Any, Protocol

from twistedmail.interfaces import MailError


class SendError(MailError):
    """Submission failed; the text is the one line the user sees."""


class _Context(Protocol):
    args: argparse.Namespace
    stdin: IO[str]

    @property
    def config(self) -> Any: ...

    def out(self, line: str) -> None: ...


def _needs_utf8(*values: str) -> bool:
    return not all(v.isascii() for v in values)


def compose(
    *,
    sender: str,
    to: Sequence[str],
    cc: Sequence[str] = (),
    subject: str = "",
    body: str = "",
    attachments: Sequence[str] = (),
    now: datetime | None = None,
) -> bytes:
    """
    An RFC 5322 message with CRLF line ends.  Non-ASCII text is encoded
    (RFC 2047 words, quoted-printable or base64) unless an address itself
    is UTF-8, which needs SMTPUTF8 (RFC 6532) and raw UTF-8 headers.
    """
    utf8 = _needs_utf8(sender, *to, *cc)
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    msg = EmailMessage(policy=policy)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime((now or datetime.now(UTC)).astimezone())
    domain = sender.rpartition("@")[2] or "localhost"
    msg["Message-ID"] = make_msgid(domain=domain if domain.isascii() else "localhost")
    # Quoted-printable keeps the message 7-bit: no 8BITMIME needed anywhere.
    msg.set_content(body, cte=None if body.isascii() else "quoted-printable")
    for path in attachments:
        kind, encoding = mimetypes.guess_type(path)
        if kind is None or encoding is not None:
            kind = "application/octet-stream"
        maintype, _, subtype = kind.partition("/")
        with open(path, "rb") as f:
            data = f.read()
        msg.add_attachment(
            data, maintype=maintype, subtype=subtype, filename=os.path.basename(path)
        )
    return msg.as_bytes(policy=policy)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def submit(
    host: str,
    port: int,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    *,
    username: str | None = None,
    password: str | None = None,
    verify: bool = True,
    cafile: str | None = None,
    timeout: float = 60.0,
) -> dict[str, tuple[int, bytes]]:
    """
    Submit with STARTTLS (required: credentials never go in clear) and AUTH.
    Returns the refused recipients (empty when all were accepted).

    :raises SendError: the server refused the message or TLS/AUTH failed.
    """
    context = ssl.create_default_context(cafile=cafile)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    options = ["SMTPUTF8"] if _needs_utf8(sender, *recipients) else []
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as client:
            client.ehlo()
            if not client.has_extn("starttls"):
                raise SendError(f"{host}:{port} does not offer STARTTLS")
            client.starttls(context=context)
            client.ehlo()
            if username is not None:
                _login(client, username, password or "")
            return client.sendmail(sender, list(recipients), message, mail_options=options)
    except smtplib.SMTPAuthenticationError as err:
        raise SendError(f"authentication failed: {err.smtp_code} {_text(err.smtp_error)}") from err
    except smtplib.SMTPRecipientsRefused as err:
        details = "; ".join(f"{a}: {c} {_text(t)}" for a, (c, t) in err.recipients.items())
        raise SendError(f"all recipients refused: {details}") from err
    except smtplib.SMTPResponseException as err:
        raise SendError(f"server said {err.smtp_code} {_text(err.smtp_error)}") from err
    except (smtplib.SMTPException, ssl.SSLError) as err:
        raise SendError(f"submission failed: {err}") from err


def _login(client: smtplib.SMTP, username: str, password: str) -> None:
    """
    AUTH, with UTF-8 credentials where needed: smtplib encodes its AUTH
    responses as ASCII (UnicodeEncodeError on "crêpe"), while PLAIN carries
    UTF-8 (RFC 4616 §2), so a non-ASCII login is sent as PLAIN here.
    """
    if username.isascii() and password.isascii():
        client.login(username, password)
        return
    offered = client.esmtp_features.get("auth", "").upper().split()
    if "PLAIN" not in offered:
        raise SendError("the server offers no AUTH PLAIN for a non-ASCII user name or password")
    token = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode()).decode()
    code, reply = client.docmd("AUTH", "PLAIN " + token)
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, reply)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _submission_address(endpoint: str | None) -> tuple[str, int]:
    """Where our own submission listener is, from its endpoint string."""
    host, port = "127.0.0.1", 587
    if not endpoint:
        return host, port
    parts = endpoint.split(":")
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq and key.isdigit():
            port = int(key)
        elif key == "port" and value.isdigit():
            port = int(value)
        elif key == "interface" and value not in ("", "0.0.0.0", "::"):
            host = value
    return host, port


def _server(ctx: _Context) -> tuple[str, int]:
    given: str | None = ctx.args.server
    if given:
        host, sep, port = given.rpartition(":")
        if not sep or not port.isdigit():
            raise SendError(f"--server wants HOST:PORT, not {given!r}")
        return host.strip("[]"), int(port)
    return _submission_address(ctx.config.listeners.submission)


def send_command(ctx: _Context) -> int:
    args = ctx.args
    password = None
    if args.user is not None:
        if args.password_stdin:
            line = ctx.stdin.readline()
            password = line.rstrip("\n").removesuffix("\r")
        else:
            try:
                password = getpass.getpass(f"Password for {args.user}: ")
            except EOFError:
                raise SendError("no password (use --password-stdin)") from None
    body = ctx.stdin.read()
    message = compose(
        sender=args.sender,
        to=args.to,
        cc=args.cc or (),
        subject=args.subject or "",
        body=body,
        attachments=args.attach or (),
    )
    host, port = _server(ctx)
    recipients = [*args.to, *(args.cc or ()), *(args.bcc or ())]
    refused = submit(
        host,
        port,
        args.sender,
        recipients,
        message,
        username=args.user,
        password=password,
        verify=not (args.insecure or _is_loopback(host)),
        cafile=args.tls_ca,
    )
    for address, (code, text) in refused.items():
        ctx.out(f"Refused {address}: {code} {_text(text)}")
    accepted = len(recipients) - len(refused)
    ctx.out(f"Sent to {accepted} of {len(recipients)} recipient(s) via {host}:{port}.")
    return 1 if refused else 0


def register_send(subparsers: Any) -> None:
    """Add ``send`` to the admin command."""
    help_text = "compose a message (body on standard input) and submit it"
    parser = subparsers.add_parser("send", help=help_text, description=help_text)
    parser.set_defaults(handler=send_command)
    parser.add_argument("--from", dest="sender", required=True, metavar="ADDRESS")
    parser.add_argument("--to", action="append", required=True, metavar="ADDRESS")
    parser.add_argument("--cc", action="append", metavar="ADDRESS")
    parser.add_argument("--bcc", action="append", metavar="ADDRESS")
    parser.add_argument("--subject")
    parser.add_argument("--attach", action="append", metavar="FILE")
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="submission server (default: this configuration's submission listener)",
    )
    parser.add_argument("--user", help="AUTH user name (asks for the password)")
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input; the body follows",
    )
    parser.add_argument("--tls-ca", metavar="FILE", help="CA certificate(s) to verify the server")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (never needed for loopback)",
    )
