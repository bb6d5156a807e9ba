"""create_app: config -> load store -> blueprint -> docs -> JSON errors."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

from kv_app import api, config, docs
from kv_app.loader import tty_progress
from kv_app.store import STORES, CompactStore, DictStore

log = logging.getLogger("kv_app")


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app and load its data: defaults, then KV_* variables, then overrides.

    Raises LoadError when the data file cannot be served and ConfigError for a bad setting.
    """
    app = Flask(__name__)
    app.config.update(config.resolve(**dict(overrides or {})))
    # Room for MAX_BATCH ids even pretty-printed; anything larger is refused (413) unread.
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BATCH"] * 64 + 1024
    path = app.config["DATA_PATH"]
    if not path:
        raise config.ConfigError("no data file: pass DATA_FILE or set KV_DATA_PATH")
    store = load_store(path, app.config["ON_ERROR"], app.config["STORE"])
    app.extensions[api.STORE] = store
    app.register_blueprint(api.bp)
    docs.init_docs(app)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)
    app.after_request(security_headers)
    return app


def load_store(path: str, on_error: str, kind: str) -> DictStore | CompactStore:
    """Load the data file into the chosen store and log one line about it."""
    if kind not in STORES:
        raise config.ConfigError(f"unknown store {kind!r}: expected one of {', '.join(STORES)}")
    store = STORES[kind].from_file(path, strict=on_error == "strict", progress=tty_progress())
    report = store.report
    if report.bom:
        log.warning("%s: ignored a UTF-8 byte-order mark at the start of the file", path)
    for problem in report.skipped[:20]:
        log.warning("skipped %s", problem.format(path))
    log.info("%s", report.summary())
    return store


def error_response(status: int, message: str, headers=None, **extra: Any) -> Response:
    """The one JSON error shape: {"status", "error", "message"} plus any extra fields."""
    body = {"status": status, "error": HTTP_STATUS_CODES.get(status, "Error"), "message": message}
    body.update(extra)
    return Response(orjson.dumps(body), status=status, headers=headers, content_type=api.JSON)


def http_error(e: HTTPException) -> Response:
    """Every HTTP error, unknown routes and 405 included, keeping status and headers."""
    # get_headers() is Content-Type plus what the error needs (Allow on a 405).
    headers = [(k, v) for k, v in e.get_headers() if k.lower() != "content-type"]
    message = e.description or e.name
    if e.code == 404 and request.url_rule is None:
        message = f"no route {request.path}"
    return error_response(e.code or 500, message, headers, **getattr(e, "extra", {}))


def unexpected_error(e: Exception) -> Response:
    """A bug: log the traceback, answer 500 without it."""
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, InternalServerError.description)


def security_headers(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
