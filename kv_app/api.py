"""The items API blueprint: thin views, each with its OpenAPI docstring."""

from __future__ import annotations

import hashlib
from datetime import datetime

import orjson
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import (
    BadRequest,
    ClientDisconnected,
    MisdirectedRequest,
    NotAcceptable,
    NotFound,
    RequestEntityTooLarge,
    RequestTimeout,
    ServiceUnavailable,
)
from werkzeug.http import http_date
from werkzeug.routing import BaseConverter

from kv_app import metrics
from kv_app.keys import canonical_key, canonical_keys, malformed, shortened

bp = Blueprint("api", __name__)

STORE = "kv_store"  # the key of the served store in app.extensions
HTTP = "kv_http"  # the key of the served data's caching headers in app.extensions
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
# Accept headers that mean JSON without parsing them (curl, requests, browsers' fetch).
JSON_ACCEPTS = frozenset(("*/*", JSON))  # Accept values that mean JSON outright


# The most characters of values one batch answer holds: 1000 ids of values at the
# KV_MAX_VALUE_BYTES limit (4 MiB) would otherwise be a 4 GB answer built in one worker.
MAX_ANSWER_CHARS = 64 << 20


def body_limit(max_batch: int) -> int:
    """The largest batch body read: room for max_batch ids even pretty-printed."""
    return max_batch * 64 + 1024


def body_left_unread(
    method: str, path: str, length: int | None, chunked: bool, max_batch: int
) -> bool:
    """Will the app leave some of this request's body unread? Only the batch route reads
    a body, and only up to body_limit; a chunked body may go past it."""
    if not chunked and not length:
        return False
    if method == "POST" and path == "/items/batch":
        return chunked or length > body_limit(max_batch)
    return True


class ItemIdConverter(BaseConverter):
    """Any path segment but "batch": /items/batch is the batch route and only that, so
    GET /items/batch is a 405 and OPTIONS /items/batch allows POST alone."""

    regex = r"(?!batch/?$)[^/]+"


@bp.record_once
def _register_converter(state) -> None:
    state.app.url_map.converters["item_id"] = ItemIdConverter


def store():
    return current_app.extensions[STORE]


def wants_text(*, text_allowed: bool = True) -> bool:
    """Content negotiation: JSON unless the client prefers text/plain (where allowed)."""
    accept = request.headers.get("Accept")
    if accept is None or accept in JSON_ACCEPTS:
        return False
    offered = (JSON, "text/plain") if text_allowed else (JSON,)
    best = request.accept_mimetypes.best_match(offered)
    if best is None:
        raise NotAcceptable(f"cannot answer with {accept!r}: use {' or '.join(offered)}")
    return best == "text/plain"


def caching(store, settings) -> dict[str, str]:
    """The caching headers of a store's answers, computed once per store (set_store): the
    data is immutable per version, so its version names every answer."""
    modified = store.describe().get("modified")  # of the data's source file
    missing = settings["CACHE_MAX_AGE_MISSING"]
    return {
        "version": store.version,
        "Last-Modified": http_date(datetime.fromisoformat(modified) if modified else None),
        "found": f"public, max-age={settings['CACHE_MAX_AGE']}",
        "missing": f"public, max-age={missing}" if missing else "no-store",
    }


def data_headers(etag: str | None = None) -> dict[str, str]:
    """An item or batch answer says which data answered it, that it depends on Accept,
    and how long it may be cached."""
    http = current_app.extensions[HTTP]
    headers = {"Vary": "Accept", "X-Data-Version": http["version"]}
    if etag is not None:
        headers.update(
            {"ETag": etag, "Cache-Control": http["found"], "Last-Modified": http["Last-Modified"]}
        )
    return headers


@bp.after_request
def error_data_headers(response: Response) -> Response:
    """The same headers on the errors of those routes (a 404 or 406 too); a 404 may be
    cached for less time than an answer, or not at all."""
    if response.status_code >= 400 and request.endpoint in ("api.get_item", "api.get_items"):
        response.headers.update(data_headers())
        if response.status_code == 404:
            response.headers["Cache-Control"] = current_app.extensions[HTTP]["missing"]
    return response


def _not_modified(etag: str) -> bool:
    """Does the client already hold this answer (If-None-Match, weak comparison)?"""
    return "If-None-Match" in request.headers and request.if_none_match.contains_weak(
        etag.strip('"')
    )


@bp.get("/items/<item_id:item_id>")
def get_item(item_id: str) -> Response:
    """Look up the value of one id.
    ---
    tags: [items]
    parameters:
      - $ref: '#/components/parameters/ItemId'
    responses:
      200:
        description: The value, as JSON or (with `Accept text/plain`) the bare value.
        headers:
          X-Data-Version: {$ref: '#/components/headers/DataVersion'}
          ETag: {$ref: '#/components/headers/ETag'}
          Cache-Control: {$ref: '#/components/headers/CacheControl'}
          Last-Modified: {$ref: '#/components/headers/LastModified'}
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Item'}
          text/plain:
            schema: {type: string}
      304:
        description: Not modified (If-None-Match matched the ETag); no body.
      400: {$ref: '#/components/responses/BadRequest'}
      404: {$ref: '#/components/responses/NotFound'}
      406: {$ref: '#/components/responses/NotAcceptable'}
      421: {$ref: '#/components/responses/Misdirected'}
      503: {$ref: '#/components/responses/Unavailable'}
    """
    key = canonical_key(item_id)
    if key is None:
        raise BadRequest(malformed(item_id))
    text = wants_text()
    served = store()  # once, as in the batch view
    if not served.owns(key):
        raise Misdirected([key])
    value = served.get(key)
    metrics.lookups(value is not None, value is None)
    if value is None:
        raise NotFound(f"no item with id {key}")
    # Strong: the version, the key and the representation name the bytes exactly.
    etag = f'"{current_app.extensions[HTTP]["version"]}-{key}-{"t" if text else "j"}"'
    if _not_modified(etag):
        return Response(status=304, headers=data_headers(etag))
    if text:
        return Response(value, content_type=TEXT, headers=data_headers(etag))
    body = orjson.dumps({"id": key, "value": value})
    return Response(body, content_type=JSON, headers=data_headers(etag))


class Misdirected(MisdirectedRequest):
    """421: ids of another shard (this server holds one shard of a split snapshot)."""

    def __init__(self, ids: list[str]):
        shard = store().describe()["shard"]
        super().__init__(
            f"{len(ids)} ids of other shards: this server holds shard {shard['index']} of "
            f"{shard['count']} (ids starting with one of {shard['digits']}); send each id "
            "to its shard (the front's /shards/<n>/ routes, or KVClient.get_many)"
        )
        self.extra = {"ids": ids, "shard": shard}


class BodyTimedOut(TimeoutError):
    """Raised by the server's body reader (kv_app/bodies.py): the body did not
    arrive within its deadline."""


class BodyRefused(ConnectionError):
    """Raised by the server's body reader: too many bodies are being received already."""


class BodyTimeout(RequestTimeout):
    """408: the body did not arrive in time; the connection is closed after the answer."""

    def get_headers(self, *args, **kwargs):
        return [*super().get_headers(*args, **kwargs), ("Connection", "close")]


class Busy(ServiceUnavailable):
    """503: this worker receives as many bodies as it may at once; retry in a second."""

    def get_headers(self, *args, **kwargs):
        headers = super().get_headers(*args, **kwargs)
        return [*headers, ("Connection", "close"), ("Retry-After", "1")]


class InvalidIds(BadRequest):
    """400 that names the malformed ids (an `ids` field in the error body)."""

    def __init__(self, ids: list):
        super().__init__(f"{len(ids)} malformed ids: each must be a UUID string")
        self.extra = {"ids": [_shown(i) for i in ids]}


def _shown(value: object) -> object:
    """A malformed id as the error names it: a string cut short, a number or null as it
    is, an array or object by its kind (it may be nested hundreds deep)."""
    if isinstance(value, list):
        return "(an array)"
    if isinstance(value, dict):
        return "(an object)"
    return shortened(value)


def batch_ids(body: bytes, limit: int) -> list[str]:
    """The canonical ids of a batch request body, in order, without repeats."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body is not JSON: {e}") from None
    if not isinstance(payload, dict) or set(payload) != {"ids"}:
        raise BadRequest('body must be a JSON object with one field, "ids"')
    ids = payload["ids"]
    if not isinstance(ids, list):
        raise BadRequest('"ids" must be a list of UUID strings')
    if len(ids) > limit:
        raise RequestEntityTooLarge(f"too many ids: {len(ids)}, at most {limit} per request")
    keys = canonical_keys(ids)
    if keys is None:  # some are not keys: name them
        raise InvalidIds([i for i in ids if canonical_key(i) is None])
    return list(dict.fromkeys(keys))


@bp.post("/items/batch")
def get_items() -> Response:
    """Look up many ids in one request.
    ---
    tags: [items]
    description: >
      At most KV_MAX_BATCH ids (1000 by default) and a body of at most 64 bytes per
      allowed id plus 1 KiB. Repeated ids are answered once; ids come back lower-case.
      A body larger than that is not read: the answer is 413 and the connection closes.
      An answer holds at most 64 Mi characters of values (413: ask for fewer ids).
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: '#/components/schemas/BatchRequest'}
    responses:
      200:
        description: The values found, and the ids that are not in the data.
        headers:
          X-Data-Version: {$ref: '#/components/headers/DataVersion'}
        content:
          application/json:
            schema: {$ref: '#/components/schemas/BatchResponse'}
      400: {$ref: '#/components/responses/BadRequest'}
      406: {$ref: '#/components/responses/NotAcceptable'}
      408: {$ref: '#/components/responses/Timeout'}
      413: {$ref: '#/components/responses/TooLarge'}
      421: {$ref: '#/components/responses/Misdirected'}
      503: {$ref: '#/components/responses/Unavailable'}
    """
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        raise RequestEntityTooLarge(f"body over {limit:,} bytes") from None
    except ClientDisconnected as e:  # werkzeug's word for any error reading the body
        if isinstance(e.__context__, BodyTimedOut):
            raise BodyTimeout(str(e.__context__)) from None
        if isinstance(e.__context__, BodyRefused):
            raise Busy(str(e.__context__)) from None
        raise
    wants_text(text_allowed=False)
    keys = batch_ids(body, current_app.config["MAX_BATCH"])
    served = store()  # once, not once per id
    foreign = [key for key in keys if not served.owns(key)]
    if foreign:
        raise Misdirected(foreign)
    values = served.get_many(keys)
    body, found = batch_body(keys, values)
    metrics.batch(len(keys))
    metrics.lookups(found, len(keys) - found)
    etag = batch_etag(current_app.extensions[HTTP]["version"], keys)
    return Response(body, content_type=JSON, headers=data_headers(etag))


def batch_body(keys: list[str], values: list[str | None]) -> tuple[bytes, int]:
    """The JSON answer to a batch (the values found, the ids missing) and how many were
    found; 413 when it would hold more than MAX_ANSWER_CHARS characters of values."""
    items = {key: value for key, value in zip(keys, values, strict=True) if value is not None}
    size = sum(map(len, items.values()))
    if size > MAX_ANSWER_CHARS:
        raise RequestEntityTooLarge(
            f"the answer would hold {size:,} characters of values, over the "
            f"{MAX_ANSWER_CHARS:,} one answer may hold: ask for fewer ids per request"
        )
    missing = [key for key in keys if key not in items] if len(items) < len(keys) else []
    return orjson.dumps({"items": items, "missing": missing}), len(items)


def batch_etag(version: str, keys: list[str]) -> str:
    """A batch answer's ETag: the data's version and the ids asked, in order."""
    asked = hashlib.blake2b("\n".join(keys).encode(), digest_size=8).hexdigest()
    return f'"{version}-batch-{asked}"'


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers.
    ---
    tags: [health]
    responses:
      200:
        description: Alive.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Health'}
    """
    return Response(b'{"status":"ok"}', content_type=JSON)


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the data is loaded and served, and which data it is.
    ---
    tags: [health]
    description: >
      Answered by the worker that takes the request, after one real lookup through its
      store and (a snapshot) a check that the data file is still the one opened.
    responses:
      200:
        description: >
          Ready: the store, the number of pairs, and the identity of the data (version,
          path, bytes, sha256, modified, loaded_at ...).
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Ready'}
      503: {$ref: '#/components/responses/Unavailable'}
    """
    served = store()
    problem = served.problem()
    if problem:
        raise ServiceUnavailable(f"not ready: {problem}")
    body = {"status": "ready", **served.describe()}
    return Response(orjson.dumps(body), content_type=JSON)
