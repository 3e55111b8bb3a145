"""
Dovecot as the oracle for FETCH: its imap binary run pre-authenticated on
stdio against a one-message Maildir, so our bytes can be compared with a real
server's for the same message.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

DOVECOT_IMAP = "/usr/lib/dovecot/imap"


def dovecot_fetch(raw: bytes, items: bytes) -> bytes:
    """What Dovecot's imap binary (pre-authenticated, on stdio) answers to FETCH 1 (items)."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="twistedmail-dovecot-"))
    try:
        work.chmod(0o777)
        mail = work / "mail"
        for sub in ("cur", "new", "tmp"):
            (mail / sub).mkdir(parents=True)
        (mail / "cur" / "1.test:2,S").write_bytes(raw)
        root = os.geteuid() == 0
        uid, gid = (65534, 65534) if root else (os.getuid(), os.getgid())
        if root:
            for path in [mail, *mail.rglob("*")]:
                os.chown(path, uid, gid)
        conf = work / "dovecot.conf"
        conf.write_text(
            f"mail_location = maildir:{mail}\nlog_path = {work}/log\nssl = no\n"
            f"mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n"
        )
        commands = b"a EXAMINE INBOX\r\nb FETCH 1 (" + items + b")\r\nc LOGOUT\r\n"
        env = {"USER": "nobody" if root else os.environ.get("USER", "test"), "HOME": str(work)}
        out = subprocess.run(
            [DOVECOT_IMAP, "-c", str(conf)],
            input=commands,
            capture_output=True,
            env=env,
            timeout=30,
        ).stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
    start = out.index(b"* 1 FETCH (") + len(b"* 1 FETCH (")
    return out[start : out.index(b")\r\nb OK")]


needs_dovecot = pytest.mark.skipif(
    not os.access(DOVECOT_IMAP, os.X_OK), reason="Dovecot (dovecot-imapd) is not installed"
)
