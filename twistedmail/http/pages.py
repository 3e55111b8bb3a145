"""
The web page's three static files, and ``/healthz``.

The files are read once when the site is built (they ship inside the
package), so serving them touches no disk and no request path can name a
file: there is no directory listing and no traversal to get wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from twistedmail.http.routing import Call, Reply, json_reply

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_PAGE_HEADERS = (("Content-Security-Policy", PAGE_POLICY), ("Cache-Control", "no-cache"))


@dataclass(frozen=True)
class Pages:
    index: bytes
    script: bytes
    style: bytes

    @classmethod
    def load(cls) -> Pages:
        static = resources.files("twistedmail.http") / "static"
        return cls(
            (static / "index.html").read_bytes(),
            (static / "app.js").read_bytes(),
            (static / "app.css").read_bytes(),
        )


async def index(call: Call) -> Reply:
    return Reply(200, call.ctx.pages.index, "text/html; charset=utf-8", _PAGE_HEADERS)


async def script(call: Call) -> Reply:
    return Reply(200, call.ctx.pages.script, "text/javascript; charset=utf-8", _PAGE_HEADERS)


async def style(call: Call) -> Reply:
    return Reply(200, call.ctx.pages.style, "text/css; charset=utf-8", _PAGE_HEADERS)


async def healthz(call: Call) -> Reply:
    """200 when every service the daemon reports is up (no login needed)."""
    services = dict(call.ctx.health()) if call.ctx.health is not None else {}
    ok = all(services.values())
    return json_reply(
        {"status": "ok" if ok else "failing", "services": services}, 200 if ok else 503
    )
