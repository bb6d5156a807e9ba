"""create_app: config -> store -> blueprint -> docs -> JSON errors. Opening the store and
building the app are apart: a store can be opened, or swapped (set_store), on its own."""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Mapping
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable
from werkzeug.http import HTTP_STATUS_CODES

from kv_app import api, config, docs, lean, memory, metrics, processes, web
from kv_app.lean import SERVED, LeanPath, Served
from kv_app.loader import LoadError, tty_progress
from kv_app.stores import STORES, Store, StoreUnavailable

log = logging.getLogger("kv_app")


def create_app(
    overrides: Mapping[str, Any] | None = None, store: Store | None = None, *, lean: bool = True
) -> Flask:
    """The app over store, or over the store its settings name: defaults, then KV_*
    variables, then overrides. lean=False leaves out the lean path (kv_app/lean.py): every
    request goes through Flask.

    Raises LoadError when the data cannot be served and ConfigError for a bad setting.
    """
    settings = config.resolve(**dict(overrides or {}))
    if store is None:
        store = open_store(settings)
    app = Flask(__name__)
    app.config.update(settings)
    # Room for MAX_BATCH ids even pretty-printed; anything larger is refused (413) unread.
    app.config["MAX_CONTENT_LENGTH"] = api.body_limit(settings["MAX_BATCH"])
    app.register_blueprint(api.bp)
    docs.init_docs(app)
    web.init_web(app)  # CORS and gzip, whose headers the lean path needs (Served)
    set_store(app, store)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(StoreUnavailable, store_unavailable)
    app.register_error_handler(Exception, unexpected_error)
    app.before_request(request_id)
    app.after_request(security_headers)
    metrics.init_metrics(app)
    if lean:
        app.wsgi_app = LeanPath(app, app.wsgi_app)
    return app


# Where the Docker image (Dockerfile) expects the data to be mounted.
DOCKER_DATA = "/data"


def _unmounted(path: str) -> bool:
    """Is path under /data while /data is not there (`docker run` of the image without a
    mount: it said only "/data/data.file: no such file")?"""
    inside = os.path.abspath(path) + "/"
    return inside.startswith(DOCKER_DATA + "/") and not os.path.isdir(DOCKER_DATA)


def open_store(settings: Mapping[str, Any]) -> Store:
    """Load the data the settings name into their kind of store; log one line about it."""
    path = settings["DATA_PATH"]
    if not path:
        raise config.ConfigError("no data file: pass DATA_FILE or set KV_DATA_PATH")
    if not os.path.exists(path) and _unmounted(path):
        raise LoadError(
            f"{path}: no such file, and nothing is mounted at {DOCKER_DATA}: mount the "
            f'data\'s directory there (docker run -v "$PWD/data:{DOCKER_DATA}:ro" -e '
            f"KV_DATA_PATH={DOCKER_DATA}/my.data ...) or set KV_DATA_PATH"
        )
    # A directory is a snapshot (or a root of snapshot versions), whatever KV_STORE says.
    kind = STORES["snapshot" if os.path.isdir(path) else settings["STORE"]]
    if kind.loads_text and _special(path):
        raise LoadError(
            f"{path}: not a regular file (a pipe or a device): serve a file, which a "
            "reload can read again"
        )
    memory.check_room(kind.name, kind.per_pair, kind.per_byte, path)
    store = kind.open(
        path,
        strict=settings["ON_ERROR"] == "strict",
        progress=tty_progress(),
        max_value_bytes=settings["MAX_VALUE_BYTES"],
    )
    for warning in store.warnings():
        log.warning("%s", warning)
    log.info("%s store: %s", kind.name, store.summary())
    return store


def _special(path: str) -> bool:
    """Is path there and something other than a regular file (a pipe, a device)?"""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # the load names the problem


def set_store(app: Flask, store: Store) -> None:
    """Serve store from now on (the one reference the app holds: the old one is freed)."""
    app.extensions[api.STORE] = store
    http = app.extensions[api.HTTP] = api.caching(store, app.config)
    served_web = app.extensions[web.WEB]
    app.extensions[SERVED] = Served(
        store,
        http["version"],
        (
            ("Vary", served_web.vary(compressible=False)),
            ("X-Data-Version", http["version"]),
            ("Cache-Control", http["found"]),
            ("Last-Modified", http["Last-Modified"]),
            ("X-Content-Type-Options", "nosniff"),
        ),
        app.config["METRICS"],
        bool(store.describe().get("shard")),
        served_web,
        ("Vary", served_web.vary(compressible=True)),
        served_web.cors_headers(),
    )
    docs.show_example(app, store.example_key())
    metrics.set_data(store)


def app_from_environ() -> Flask:
    """The app from KV_* variables, for gunicorn; logs where the docs are. A setting or
    data file that cannot be served stops start-up with one line on stderr and exit
    status 1."""
    try:
        app = create_app()
    except (LoadError, config.ConfigError) as e:
        print(f"kv-app: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except MemoryError:
        print("kv-app: out of memory while loading the data", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    log.info("%s", where_the_docs_are(app.config))
    return app


def where_the_docs_are(settings: Mapping[str, Any]) -> str:
    """The start-up line that says where to start: the docs' and the routes' URLs."""
    url = processes.url(settings["HOST"], settings["PORT"])
    return f"API docs: {url}/docs (Swagger UI), {url}/redoc (ReDoc); routes: curl {url}/"


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


def store_unavailable(e: StoreUnavailable) -> Response:
    """The data can no longer be served (a snapshot changed under the server): 503, said
    once in the log per worker, never an answer from the changed data."""
    if not getattr(store_unavailable, "logged", False):
        log.error("not serving: %s", e)
        store_unavailable.logged = True
    return http_error(ServiceUnavailable(str(e)))


def unexpected_error(e: Exception) -> Response:
    """A bug: log the traceback, answer 500 without it."""
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, InternalServerError.description)


def request_id() -> None:
    """The request's id: the client's X-Request-ID when it is a sane token, else a new
    one; echoed in the answer and written in the access log."""
    request.environ["kv.request_id"] = lean.request_id(request.headers.get("X-Request-ID"))


def security_headers(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    rid = request.environ.get("kv.request_id")
    if rid:
        response.headers["X-Request-ID"] = rid
    return response
