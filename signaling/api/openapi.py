"""The OpenAPI 3.1 document of the room API, built from the route table
(:mod:`signaling.api.routes`), and a docs page.

Both are served without authentication: they describe the API, they hold no data.
"""

from __future__ import annotations

import html
import re
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from signaling import __version__
from signaling.api.endpoints import PATH_PARAMS, Endpoint
from signaling.api.models import ErrorBody
from signaling.api.routes import ENDPOINTS

REF = "#/components/schemas/{model}"
STATUS_TEXT = {
    400: "Invalid request: bad JSON, path, query or body (the message names the field)",
    401: "Missing or invalid server token",
    404: "No such room, participant, track or call",
    409: "Conflicts with the current state (the room exists, the call has ended)",
    413: "Body larger than api_max_body_bytes",
    415: "Body is not application/json",
    429: "Rate limited; retry after Retry-After seconds",
    503: "The room API is not configured, or the shared state is unreachable",
}
DESCRIPTION = """\
Server-to-server API for the chat backend. Authenticate each request with
`Authorization: Bearer <token>`, where the token is an HS256 JWT signed with the API
secret carrying `iss` (the API key id), `aud: "switchboard-api"`, `iat` and `exp` (at most
`api_token_max_ttl` seconds apart). Client join tokens are refused. Every error answers
`{"error": {"code", "message"}}`.
"""


def _models() -> list[tuple[type[BaseModel], str]]:
    seen: list[tuple[type[BaseModel], str]] = [(ErrorBody, "serialization")]
    for ep in ENDPOINTS:
        if ep.body is not None:
            seen.append((ep.body, "validation"))
        if ep.response is not None:
            seen.append((ep.response, "serialization"))
    return list(dict.fromkeys(seen))


def _operation(ep: Endpoint, refs: dict[tuple[type[BaseModel], str], Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": PATH_PARAMS[name].json_schema()}
        for name in re.findall(r"{(\w+)}", ep.path)
    ]
    params += [
        {
            "name": q.name,
            "in": "query",
            "required": False,
            "description": q.description,
            "schema": q.adapter.json_schema(),
        }
        for q in ep.query
    ]
    error = {"application/json": {"schema": refs[(ErrorBody, "serialization")]}}
    responses: dict[str, Any] = {}
    if ep.response is None:
        responses[str(ep.status)] = {"description": "Done"}
    else:
        responses[str(ep.status)] = {
            "description": "Success",
            "content": {"application/json": {"schema": refs[(ep.response, "serialization")]}},
        }
    for status in sorted(ep.errors):
        entry: dict[str, Any] = {"description": STATUS_TEXT[status], "content": error}
        if status == 429:
            entry["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
            }
        responses[str(status)] = entry
    operation: dict[str, Any] = {
        "operationId": ep.operation_id,
        "summary": ep.summary,
        "tags": [ep.tag],
        "parameters": params,
        "responses": responses,
    }
    if ep.body is not None:
        operation["requestBody"] = {
            "required": not ep.body_optional,
            "content": {"application/json": {"schema": refs[(ep.body, "validation")]}},
        }
    return operation


def build_document() -> dict[str, Any]:
    refs, components = models_json_schema(_models(), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        paths.setdefault(ep.path, {})[ep.method.lower()] = _operation(ep, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Switchboard room API",
            "version": __version__,
            "description": DESCRIPTION,
        },
        "servers": [{"url": "/"}],
        "security": [{"serverToken": []}],
        "paths": paths,
        "components": {
            "schemas": components.get("$defs", {}),
            "securitySchemes": {
                "serverToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _docs_page(document: dict[str, Any]) -> str:
    """A self-contained page (no CDN: nodes often have no internet) listing operations."""
    rows = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            codes = ", ".join(op["responses"])
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code>"
                f"</td><td>{html.escape(op['summary'])}</td><td>{codes}</td></tr>"
            )
    schemas = orjson.dumps(document["components"]["schemas"], option=orjson.OPT_INDENT_2)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Switchboard room API</title>
<style>body{{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.4rem;
text-align:left;vertical-align:top}}pre{{background:#f6f6f6;padding:1rem;overflow:auto}}</style>
</head><body><h1>Switchboard room API</h1>
<p>{html.escape(DESCRIPTION)}</p>
<p>Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a> (OpenAPI 3.1).</p>
<table><tr><th>Method</th><th>Path</th><th>What it does</th><th>Statuses</th></tr>
{"".join(rows)}</table>
<h2>Schemas</h2><pre>{html.escape(schemas.decode())}</pre></body></html>"""


def document_routes() -> list[web.RouteDef]:
    """``/api/openapi.json`` and ``/api/docs`` (built once, served as is)."""
    document = build_document()
    body = orjson.dumps(document)
    page = _docs_page(document)

    async def openapi_json(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def docs(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    return [web.get("/api/openapi.json", openapi_json), web.get("/api/docs", docs)]
