"""
The route table: every URL the HTTP server answers, in one list.

The server dispatches on it (`twistedmail.http.app`) and the OpenAPI
document is generated from it (`twistedmail.http.openapi`), so the
documented contract is exactly what runs.
"""

from __future__ import annotations

from twistedmail.http import auth, content, events, mailboxes, messages, openapi, pages, send
from twistedmail.http.routing import Param, Route
from twistedmail.http.search import SEARCH_PARAMS

_MB = "/api/mailboxes/{mailbox}"
_MSG = _MB + "/messages/{uid}"

_AUTH_ERRORS = {401: "Not logged in.", 404: "No such mailbox or message."}


def routes() -> tuple[Route, ...]:
    """Every route, in match order (the first whose template fits wins)."""
    return (
        # --- Page and service ---
        Route("GET", "/", pages.index, "The web mail page.", "page", auth=False,
              produces="text/html", documented=False),
        Route("GET", "/app.js", pages.script, "The page's script.", "page", auth=False,
              produces="text/javascript", documented=False),
        Route("GET", "/app.css", pages.style, "The page's style sheet.", "page", auth=False,
              produces="text/css", documented=False),
        Route("GET", "/healthz", pages.healthz, "200 when every service is up, else 503.",
              "service", auth=False, responses={503: "A service is down."}),
        Route("GET", "/api/openapi.json", openapi.document, "This API's OpenAPI 3.1 document.",
              "service", auth=False),
        # --- Session ---
        Route("POST", "/api/session", auth.create_session,
              "Log in; answers a token and sets an HttpOnly SameSite=Strict cookie.",
              "session", auth=False, body="Login",
              responses={201: "Logged in.", 400: "A field is missing.",
                         401: "Wrong address or password.", 429: "Too many failed logins."}),
        Route("GET", "/api/session", auth.get_session,
              "Who is logged in and which From addresses are theirs.", "session",
              responses={401: "Not logged in."}),
        Route("DELETE", "/api/session", auth.delete_session, "Log out.", "session",
              responses={204: "Logged out.", 401: "Not logged in."}),
        # --- Mailboxes ---
        Route("GET", "/api/mailboxes", mailboxes.list_mailboxes,
              "Every mailbox with special use and counters.", "mailboxes",
              responses={401: "Not logged in."}),
        Route("POST", "/api/mailboxes", mailboxes.create_mailbox, "Create a mailbox.",
              "mailboxes", body="NewMailbox",
              responses={201: "Created.", 400: "Invalid name.", 409: "It exists."}),
        Route("PATCH", _MB, mailboxes.update_mailbox,
              "Rename a mailbox (and its children) and/or (un)subscribe it.",
              "mailboxes", body="UpdateMailbox",
              responses={400: "Invalid name.", 404: "No such mailbox.", 409: "Target exists."}),
        Route("DELETE", _MB, mailboxes.delete_mailbox, "Delete a mailbox and its messages.",
              "mailboxes",
              responses={204: "Deleted.", 403: "INBOX cannot be deleted.",
                         404: "No such mailbox.", 409: "It has children."}),
        # --- Messages ---
        Route("GET", _MB + "/messages", messages.list_messages,
              "List (paged, sorted by arrival date) and search a mailbox's messages.",
              "messages", query=messages.LIST_PARAMS + SEARCH_PARAMS,
              responses={400: "A bad parameter (named).", 404: "No such mailbox."}),
        Route("GET", _MSG, messages.get_message,
              "One message parsed: headers, text, sanitised HTML, attachments.", "messages",
              query=(Param("images", "boolean", "Keep remote images in the HTML."),),
              responses=_AUTH_ERRORS),
        Route("PATCH", _MSG, messages.update_message,
              "Set or clear flags, and/or move to another mailbox.", "messages",
              body="UpdateMessage", responses={**_AUTH_ERRORS, 400: "A bad field (named)."}),
        Route("DELETE", _MSG, messages.delete_message,
              "Move to Trash, or delete for good (permanent=true, or when in Trash).",
              "messages", query=(Param("permanent", "boolean", "Delete for good."),),
              responses=_AUTH_ERRORS),
        Route("GET", _MSG + "/raw", content.raw_message, "The message exactly as stored.",
              "messages", produces="message/rfc822", responses=_AUTH_ERRORS),
        Route("GET", _MSG + "/html", content.html_body,
              "The sanitised HTML body as a sandboxed page (for an iframe).", "messages",
              query=(Param("images", "boolean", "Allow remote images."),),
              produces="text/html", responses=_AUTH_ERRORS),
        Route("GET", _MSG + "/attachments/{n}", content.attachment,
              "Download one attachment (index from 0).", "messages",
              produces="application/octet-stream", responses=_AUTH_ERRORS),
        # --- Sending and push ---
        Route("POST", "/api/messages", send.send_message,
              "Send a message (JSON, or multipart/form-data with attachments); "
              "a copy goes to Sent.", "messages", body="SendMessage",
              responses={201: "Accepted for delivery.", 400: "A bad field (named).",
                         403: "From is not one of your addresses.", 413: "Too large."}),
        Route("GET", "/api/events", events.event_stream,
              "Server-Sent Events: new messages, flag changes, expunges, mailbox changes.",
              "events", produces="text/event-stream", responses={401: "Not logged in."}),
    )  # fmt: skip
