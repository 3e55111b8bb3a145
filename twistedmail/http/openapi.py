"""
The OpenAPI 3.1 document, generated from the route table the server uses.

Paths, methods, parameters and statuses come from the `Route` records
themselves, so nothing documented can be missing from the server and
nothing served can be left out (except the page's own static files).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twistedmail.http.routing import Call, Reply, Route, json_reply

_STRINGS = {"type": "array", "items": {"type": "string"}}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "The bad field, for 400."},
                },
            }
        },
    },
    "Login": {
        "type": "object",
        "required": ["address", "password"],
        "properties": {"address": {"type": "string"}, "password": {"type": "string"}},
    },
    "NewMailbox": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "description": "Full name, '/' between levels."},
            "special_use": {
                "type": "string",
                "enum": ["sent", "drafts", "trash", "junk", "archive", "all", "flagged"],
            },
        },
    },
    "UpdateMailbox": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "The new full name."},
            "subscribed": {"type": "boolean"},
        },
    },
    "UpdateMessage": {
        "type": "object",
        "properties": {
            "flags": {**_STRINGS, "description": "Replace all flags."},
            "add_flags": _STRINGS,
            "remove_flags": _STRINGS,
            "seen": {"type": "boolean"},
            "flagged": {"type": "boolean"},
            "answered": {"type": "boolean"},
            "draft": {"type": "boolean"},
            "mailbox": {"type": "string", "description": "Move the message there."},
        },
    },
    "SendMessage": {
        "type": "object",
        "required": ["from", "to"],
        "properties": {
            "from": {"type": "string", "description": "One of the caller's own addresses."},
            "to": _STRINGS,
            "cc": _STRINGS,
            "bcc": _STRINGS,
            "subject": {"type": "string"},
            "text": {"type": "string"},
            "html": {"type": "string"},
            "in_reply_to": {"type": "string", "description": "Message-ID replied to."},
            "references": {"type": "string"},
            "attachments": {
                "type": "array",
                "description": "multipart/form-data only: file fields named 'attachments'.",
                "items": {"type": "string", "format": "binary"},
            },
        },
    },
}

_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}, {"cookie": []}]


def build(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.documented:
            paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "twistedmail HTTP API",
            "version": "1",
            "description": "Read, manage and send mail. Errors are "
            '{"error": {"code", "message", "field"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "twistedmail_session"},
            },
        },
    }


def _operation(route: Route) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": segment[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for segment in route.segments
        if segment.startswith("{")
    ]
    parameters += [
        {
            "name": p.name,
            "in": "query",
            "required": p.required,
            "description": p.description,
            "schema": {"type": p.kind},
        }
        for p in route.query
    ]
    success = next((s for s in (201, 204) if s in route.responses), 200)
    responses: dict[str, Any] = {}
    for status in sorted({success, *route.responses}):
        text = route.responses.get(status, "Success.")
        if status >= 400:
            responses[str(status)] = {
                "description": text,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        elif status == 204:
            responses[str(status)] = {"description": text}
        else:
            responses[str(status)] = {"description": text, "content": {route.produces: {}}}
    operation: dict[str, Any] = {
        "operationId": f"{route.method.lower()}_{route.handler.__name__}",
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": parameters,
        "responses": responses,
        "security": _SECURITY if route.auth else [],
    }
    if route.body is not None:
        ref = {"$ref": f"#/components/schemas/{route.body}"}
        body_content: dict[str, Any] = {"application/json": {"schema": ref}}
        if route.body == "SendMessage":
            body_content["multipart/form-data"] = {"schema": ref}
        operation["requestBody"] = {"required": True, "content": body_content}
    return operation


async def document(call: Call) -> Reply:
    return json_reply(build(call.ctx.routes))
