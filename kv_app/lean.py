"""The lean path: a WSGI layer in front of Flask (as Flask documents for middleware) that
answers the hot cases of `GET /items/<id>` and `POST /items/batch` itself, with headers
computed once per data version, and hands every other request to the app unchanged.

It answers only what it can answer exactly as the blueprint would, asking for JSON (no
Accept, `*/*` or application/json): a GET or HEAD of an id (either case) that is there,
without If-None-Match; a batch with a Content-Length within the limit, whose ids are all
this store's and whose answer is a 200. With CORS on, only requests without Origin (what
flask-cors adds to those is constant); an answer that may be gzipped (kv_app/web.py) only
for a client that sends no Accept-Encoding. Anything else (a missing or malformed id, text, a
conditional request, another shard's id, a bad body, a store that cannot answer, any
other route) goes to Flask, which stays the documented route and the source of the spec;
a batch's body, once read, is handed on as it was read. tests/test_lean.py sends the same
random requests to both and compares status, headers and body.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import time
from dataclasses import dataclass

import orjson

from kv_app import api, metrics
from kv_app.keys import KEY_LEN, canonical_key
from kv_app.stores import StoreUnavailable
from kv_app.web import Web

_PREFIX = "/items/"
_JSON_ACCEPTS = api.JSON_ACCEPTS | {None}  # or no Accept at all
_ROUTE = "/items/<item_id:item_id>"  # the blueprint's rules, for the metrics' label
_BATCH = "/items/batch"
# A client's X-Request-ID is echoed when it is a sane token (deploy/nginx-cache.conf: the
# same), else a new one is made.
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:@/+=-]{1,128}")
SERVED = "kv_served"  # the key of the Served in app.extensions


@dataclass(frozen=True)
class Served:
    """What is served, read whole by the lean path: the store, its version, and the
    headers of a found item's answer besides its ETag (computed once per store)."""

    store: object
    version: str
    found_headers: tuple[tuple[str, str], ...]
    metrics: bool
    sharded: bool  # holds one shard of the keys: each id's owner is checked
    web: Web  # what CORS and compression add
    large_vary: tuple[str, str]  # the Vary of an answer that may be gzipped
    cors: tuple[tuple[str, str], ...]  # what CORS adds to an answer without Origin


class _Ids:
    """New request ids: 32 hex digits, like a uuid4's, but made without a system call or
    an object each (uuid4 was about 2 us of the 8 of a lookup's app time): 16 random to
    this process, then a count. Each worker draws its own after the fork."""

    def __init__(self):
        self.prefix = os.urandom(8).hex()
        self.count = itertools.count()


_ids = _Ids()


def _draw_after_fork() -> None:
    global _ids
    _ids = _Ids()


os.register_at_fork(after_in_child=_draw_after_fork)


def request_id(given: str | None) -> str:
    """The request's id: the client's when it is a sane token, else a new one."""
    if given and REQUEST_ID.fullmatch(given):
        return given
    return f"{_ids.prefix}{next(_ids.count):016x}"


class LeanPath:
    """app.wsgi_app, wrapped: see the module's docstring."""

    def __init__(self, app, wsgi_app):
        self.app = app
        self.wsgi_app = wsgi_app  # Flask's own

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        answer = None
        if environ.get("HTTP_ACCEPT") in _JSON_ACCEPTS and not (
            "HTTP_ORIGIN" in environ and self.app.extensions[SERVED].web.origins
        ):
            if (
                (method == "GET" or method == "HEAD")
                and len(path) == len(_PREFIX) + KEY_LEN
                and path.startswith(_PREFIX)
                and "HTTP_IF_NONE_MATCH" not in environ
            ):
                try:
                    answer = self.answer(environ, path[len(_PREFIX) :], method == "HEAD")
                except Exception:  # a bug, a store error: Flask answers it in the error shape
                    answer = None
            elif method == "POST" and path == _BATCH:
                answer = self.batch(environ)
        if answer is not None:
            headers, body = answer
            start_response("200 OK", headers)
            return body
        return self.wsgi_app(environ, start_response)

    def batch(self, environ):
        """(headers, body) of a batch's 200 answer, or None: Flask answers, reading the
        body as it was read here."""
        length = environ.get("CONTENT_LENGTH") or ""
        if (
            not length.isdigit()
            or "HTTP_TRANSFER_ENCODING" in environ
            or int(length) > self.app.config["MAX_CONTENT_LENGTH"]
        ):
            return None
        started = time.perf_counter()
        try:
            body = environ["wsgi.input"].read(int(length))
        except Exception as e:  # a body timeout, too many bodies, a lost client
            environ["wsgi.input"] = _Failing(e)
            return None
        try:
            answer = self.batch_answer(environ, body, started)
        except Exception:  # a bad body, too large an answer, a store error
            answer = None
        if answer is None:
            environ["wsgi.input"] = io.BytesIO(body)
        return answer

    def batch_answer(self, environ, body: bytes, started: float):
        keys = api.batch_ids(body, self.app.config["MAX_BATCH"])
        served = self.app.extensions[SERVED]
        store = served.store
        if served.sharded and not all(map(store.owns, keys)):
            return None
        found_body, found = api.batch_body(keys, store.get_many(keys))
        headers = _headers(environ, served, api.batch_etag(served.version, keys), found_body)
        if headers is None:
            return None
        if served.metrics:
            metrics.batch(len(keys))
            metrics.lookups(found, len(keys) - found)
            metrics.counted("POST", _BATCH, 200, started)
        return headers, [found_body]

    def answer(self, environ, item_id: str, head: bool):
        """(headers, body) of the item's 200 answer, or None: Flask answers."""
        started = time.perf_counter()
        key = canonical_key(item_id)
        if key is None:
            return None
        served = self.app.extensions[SERVED]
        store = served.store
        try:
            if not store.owns(key):
                return None
            value = store.get(key)
        except StoreUnavailable:
            return None
        if value is None:
            return None
        body = orjson.dumps({"id": key, "value": value})
        headers = _headers(environ, served, f'"{served.version}-{key}-j"', body)
        if headers is None:
            return None
        if served.metrics:
            metrics.lookups(1, 0)
            metrics.counted(environ["REQUEST_METHOD"], _ROUTE, 200, started)
        return headers, [] if head else [body]


def _headers(environ, served: Served, etag: str, body: bytes) -> list[tuple[str, str]] | None:
    """A found answer's headers, as Flask orders them: those the view gives, Flask's own,
    then after_request's; the request's id is set for the access log. None for an answer
    that may be gzipped, to a client that sends Accept-Encoding: Flask answers it."""
    vary, version, cache, modified, nosniff = served.found_headers
    min_bytes = served.web.min_bytes
    if min_bytes and len(body) >= min_bytes:
        if "HTTP_ACCEPT_ENCODING" in environ:
            return None
        vary = served.large_vary
    rid = environ["kv.request_id"] = request_id(environ.get("HTTP_X_REQUEST_ID"))
    return [
        vary,
        version,
        ("ETag", etag),
        cache,
        modified,
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        nosniff,
        ("X-Request-ID", rid),
        *served.cors,
    ]


class _Failing:
    """A request body whose reading failed on the lean path: Flask's read fails the same
    way, and answers as it would have (408, 503, ...)."""

    def __init__(self, error: Exception):
        self.error = error

    def read(self, *args):
        raise self.error

    readline = read
