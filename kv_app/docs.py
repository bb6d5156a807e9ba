"""API docs served by the app itself, offline: Swagger UI at /docs, ReDoc at /redoc,
the OpenAPI 3 spec at /openapi.json. No Flask views of the API live here."""

from __future__ import annotations

from flasgger import NO_SANITIZER, Swagger
from flask import Blueprint, Flask, Response, render_template

from kv_app import __version__

bp = Blueprint("docs", __name__)

SPEC_URL = "/openapi.json"
# ReDoc 2.x always shows a footer logo from a CDN; this keeps the page offline.
REDOC_CSP = "img-src 'self' data: blob:; connect-src 'self'"


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


TEMPLATE = {
    "info": {
        "title": "kv_app",
        "version": __version__,
        "description": "Read-only key-value server: the value of every id of a data file.",
    },
    "components": {
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
                    "status": {"type": "integer", "example": 404},
                    "error": {"type": "string", "example": "Not Found"},
                    "message": {"type": "string", "example": "no item with id 3fa85f64-..."},
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
                        "maxItems": 1000,
                        "items": {"type": "string"},
                        "example": ["3fa85f64-5717-4562-b3fc-2c963f66afa6"],
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
                "properties": {
                    "status": {"type": "string", "example": "ready"},
                    "pairs": {"type": "integer", "example": 10000},
                    "store": {"type": "string", "enum": ["dict", "compact"]},
                },
            },
        },
        "responses": {
            "BadRequest": _error("Malformed input."),
            "NotFound": _error("No item with that id."),
            "NotAcceptable": _error("The Accept header allows neither JSON nor text."),
            "TooLarge": _error("Too many ids, or a body too large."),
        },
    },
}

SWAGGER = {
    "openapi": "3.0.3",
    "title": "kv_app API",
    "uiversion": 3,
    "specs_route": "/docs/",
    "specs": [
        {
            "endpoint": "openapi",
            "route": SPEC_URL,
            "rule_filter": lambda rule: rule.endpoint.startswith("api."),
            "model_filter": lambda tag: True,
        }
    ],
    "static_url_path": "/flasgger_static",
    "headers": [],
    # Without this the page renders `let auth_config = None;` and never starts.
    "auth": {},
    "hide_top_bar": True,
    # A current Swagger UI (vendored, see scripts/vendor_assets.sh) instead of the 2020
    # one bundled with flasgger: it ignores /docs/?url=... (no spoofed specs).
    "swagger_ui_bundle_js": "/static/swagger-ui/swagger-ui-bundle.js",
    "swagger_ui_standalone_preset_js": "/static/swagger-ui/swagger-ui-standalone-preset.js",
    "swagger_ui_css": "/static/swagger-ui/swagger-ui.css",
    "favicon": "/static/swagger-ui/favicon-32x32.png",
}


@bp.get("/redoc")
def redoc() -> Response:
    """The ReDoc page for the same spec."""
    response = Response(render_template("redoc.html", spec_url=SPEC_URL))
    response.headers["Content-Security-Policy"] = REDOC_CSP
    return response


def init_docs(app: Flask) -> None:
    """Serve /docs, /redoc and /openapi.json."""
    app.config["SWAGGER"] = SWAGGER
    Swagger(app, template=TEMPLATE, sanitizer=NO_SANITIZER)
    app.register_blueprint(bp)
