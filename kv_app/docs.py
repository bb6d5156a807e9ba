"""API docs served by the app itself, offline: Swagger UI at /docs, ReDoc at /redoc,
the OpenAPI 3 spec at /openapi.json, and GET / (the routes as JSON; a browser is sent to
/docs). No Flask views of the API live here.

flasgger builds the spec from the views' docstrings; the two pages are kv_app's own
templates over vendored bundles (kv_app/static), so nothing else is served: none of
flasgger's own static files (an old Swagger UI and jQuery) and none of its extra routes.
"""

from __future__ import annotations

import copy
import re

import orjson
from flasgger import NO_SANITIZER, Swagger
from flask import Blueprint, Flask, Response, current_app, render_template, request

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
# ReDoc: as strict, but for what ReDoc 2 needs beyond Swagger UI: its search runs in a web
# worker made from a blob: URL (worker-src), and its footer logo, from a CDN, is blocked
# (img-src) so the page stays offline. Its start-up script is a file, as on /docs.
REDOC_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src blob:; connect-src 'self'; frame-ancestors 'none'"
)
# The tags in the order the pages show them: the lookups first, health last.
TAGS = [
    {"name": "items", "description": "Look up values by id: one, or many in one request."},
    {"name": "health", "description": "Liveness and readiness, for load balancers."},
]
HOW_TO = (
    "Read-only key-value server: the value of every id of a data file.\n\n"
    "Ask for one id with `GET /items/{id}` (JSON, or the bare value with "
    "`Accept: text/plain`), or for up to KV_MAX_BATCH ids in one `POST /items/batch` "
    'with a body `{"ids": [...]}`; every error is JSON with a status and a message. '
    "Example: `curl http://HOST:PORT/items/{id}`. Here, open a route and press "
    "'Try it out', then 'Execute': the example id is one of the data served."
)

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
        "description": HOW_TO,
    },
    "tags": TAGS,
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


@bp.get("/")
def index() -> Response:
    """Where to start: the routes (JSON), or the API docs for a browser."""
    if _wants_html():
        # A bare redirect: a browser follows it, and there is no HTML page to show.
        return Response(status=302, headers={"Location": "/docs", "Vary": "Accept"})
    body = {
        "name": "kv_app",
        "version": __version__,
        "docs": {"swagger_ui": "/docs", "redoc": "/redoc", "openapi": SPEC_URL},
        "routes": routes(current_app),
    }
    return Response(orjson.dumps(body), content_type="application/json", headers={"Vary": "Accept"})


def routes(app: Flask) -> list[dict[str, str]]:
    """Each route of the API and of these docs: method, path (as in the spec), summary."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] in ("api", "docs") and rule.endpoint != "docs.index":
            summary = (app.view_functions[rule.endpoint].__doc__ or "").strip().splitlines()
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                if path == "/docs/":  # the same page as /docs
                    continue
                found.append({"method": method, "path": path, "summary": summary[0]})
    return found


def _wants_html() -> bool:
    """Does the client (a browser) rank HTML above JSON? curl's */* does not."""
    accept = request.accept_mimetypes
    return accept["text/html"] > accept["application/json"]


# Both spellings serve the page: no redirect, whose HTML body `curl /docs` would show.
@bp.get("/docs")
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
