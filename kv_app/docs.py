"""API docs served by the app itself, offline: Swagger UI at /docs, ReDoc at /redoc,
the OpenAPI 3 spec at /openapi.json. No Flask views of the API live here.

flasgger builds the spec from the views' docstrings; the two pages are kv_app's own
templates over vendored bundles (kv_app/static), so nothing else is served: none of
flasgger's own static files (an old Swagger UI and jQuery) and none of its extra routes.
"""

from __future__ import annotations

import copy

from flasgger import NO_SANITIZER, Swagger
from flask import Blueprint, Flask, Response, render_template

from kv_app import __version__, keys
from kv_app.stores import STORES

bp = Blueprint("docs", __name__)

SPEC_URL = "/openapi.json"
SWAGGER = "kv_app.docs"  # the key of the app's flasgger object in app.extensions
# Swagger UI injects inline styles; its start-up script is a file (static/docs).
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)
# ReDoc 2.x always shows a footer logo from a CDN; this keeps the page offline.
REDOC_CSP = "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'"

# What each error status looks like, shown as its example in /docs and /redoc.
ERRORS = {
    "BadRequest": (400, "Malformed input.", keys.malformed("abc")),
    "NotFound": (404, "No item with that id.", f"no item with id {keys.EXAMPLE}"),
    "MethodNotAllowed": (405, "Only POST is allowed here.", "The method is not allowed."),
    "NotAcceptable": (
        406,
        "The Accept header allows neither JSON nor text.",
        "cannot answer with 'image/png': use application/json or text/plain",
    ),
    "Timeout": (
        408,
        "The request body did not arrive within 10 s; the connection is closed.",
        "request body not received within 10 s",
    ),
    "TooLarge": (413, "Too many ids, or a body too large.", "too many ids: 1001, at most 1000"),
    "Misdirected": (
        421,
        "An id of another shard (a server holding one shard of a split snapshot).",
        "1 ids of other shards: this server holds shard 0 of 2 (ids starting with one of "
        "01234567); send each id to its shard",
    ),
    "Unavailable": (
        503,
        "The data cannot be served now: its snapshot file changed under the server (never "
        "answered from the changed file), or readiness's lookup failed.",
        "not ready: /srv/kv/version-3/data.mdb: now 4,096 bytes, 624,001,024 when opened; "
        "a snapshot must never change: publish a new version (kv-app publish) and reload",
    ),
}
_NAMES = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    421: "Misdirected Request",
    503: "Service Unavailable",
}


def _error(status: int, description: str, message: str) -> dict:
    example = {"status": status, "error": _NAMES[status], "message": message}
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Error"},
                "example": example,
            }
        },
    }


TEMPLATE = {
    "info": {
        "title": "kv_app",
        "version": __version__,
        "description": "Read-only key-value server: the value of every id of a data file.",
    },
    "components": {
        "parameters": {
            "ItemId": {
                "name": "item_id",
                "in": "path",
                "required": True,
                "description": "A UUID, 8-4-4-4-12 hex digits; case does not matter.",
                "schema": {
                    "type": "string",
                    "pattern": keys.ANCHORED_PATTERN,
                    "example": keys.EXAMPLE,  # replaced by a key of the data served
                },
            }
        },
        "schemas": {
            "Item": {
                "type": "object",
                "required": ["id", "value"],
                "properties": {
                    "id": {"type": "string", "description": "The canonical (lower-case) id."},
                    "value": {"type": "string", "description": "The value, byte for byte."},
                },
            },
            "Error": {
                "type": "object",
                "required": ["status", "error", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "error": {"type": "string"},
                    "message": {"type": "string"},
                    "ids": {
                        "type": "array",
                        "items": {},
                        "description": "On a 400 from /items/batch: the malformed ids.",
                    },
                },
            },
            "BatchRequest": {
                "type": "object",
                "required": ["ids"],
                "additionalProperties": False,
                "properties": {
                    "ids": {
                        "type": "array",
                        "maxItems": 1000,  # replaced by the app's MAX_BATCH
                        "items": {"type": "string", "pattern": keys.ANCHORED_PATTERN},
                        "example": [keys.EXAMPLE],
                    }
                },
            },
            "BatchResponse": {
                "type": "object",
                "required": ["items", "missing"],
                "properties": {
                    "items": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "description": "id -> value for every id found.",
                    },
                    "missing": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "The well-formed ids that are not in the data.",
                    },
                },
            },
            "Health": {
                "type": "object",
                "properties": {"status": {"type": "string", "example": "ok"}},
            },
            "Ready": {
                "type": "object",
                "required": ["status", "store", "pairs", "version"],
                "properties": {
                    "status": {"type": "string", "example": "ready"},
                    "store": {"type": "string", "enum": list(STORES)},
                    "pairs": {"type": "integer", "example": 10000},
                    "version": {
                        "type": "string",
                        "description": "The data version, as in the X-Data-Version header.",
                    },
                },
                "additionalProperties": True,
            },
        },
        "headers": {
            name: {"description": description, "schema": {"type": "string"}}
            for name, description in (
                ("DataVersion", "The version of the data that answered (see /readyz)."),
                ("ETag", "Strong: the data version, the id and the representation."),
                (
                    "CacheControl",
                    "public, max-age=KV_CACHE_MAX_AGE (404s: KV_CACHE_MAX_AGE_MISSING).",
                ),
                ("LastModified", "When the data's source file was written."),
            )
        },
        "responses": {name: _error(*error) for name, error in ERRORS.items()},
    },
}

SWAGGER_CONFIG = {
    "openapi": "3.0.3",
    "title": "kv_app API",
    # Only the spec: the pages are kv_app's own (no flasgger static files or routes).
    "swagger_ui": False,
    "specs": [
        {
            "endpoint": "openapi",
            "route": SPEC_URL,
            "rule_filter": lambda rule: rule.endpoint.startswith("api."),
            "model_filter": lambda tag: True,
        }
    ],
    "headers": [],
}


@bp.get("/docs/")
def swagger_ui() -> Response:
    """The Swagger UI page ('Try it out' works against this server)."""
    response = Response(render_template("docs.html", spec_url=SPEC_URL))
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


@bp.get("/redoc")
def redoc() -> Response:
    """The ReDoc page for the same spec."""
    response = Response(render_template("redoc.html", spec_url=SPEC_URL))
    response.headers["Content-Security-Policy"] = REDOC_CSP
    return response


def init_docs(app: Flask) -> None:
    """Serve /docs, /redoc and /openapi.json."""
    app.config["SWAGGER"] = SWAGGER_CONFIG
    template = copy.deepcopy(TEMPLATE)  # this app's limits and example id go in its copy
    schema = template["components"]["schemas"]["BatchRequest"]["properties"]["ids"]
    schema["maxItems"] = app.config["MAX_BATCH"]
    app.extensions[SWAGGER] = Swagger(app, template=template, sanitizer=NO_SANITIZER)
    app.register_blueprint(bp)


def show_example(app: Flask, key: str | None) -> None:
    """Make key (one of the data served) the example id of 'Try it out'."""
    swagger = app.extensions[SWAGGER]
    key = key or keys.EXAMPLE
    swagger.template["components"]["parameters"]["ItemId"]["schema"]["example"] = key
    ids = swagger.template["components"]["schemas"]["BatchRequest"]["properties"]["ids"]
    ids["example"] = [key]
    swagger.apispecs.clear()  # flasgger caches the spec it built
