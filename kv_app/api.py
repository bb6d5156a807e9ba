"""The items API blueprint: thin views, each with its OpenAPI docstring."""

from __future__ import annotations

import orjson
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import BadRequest, NotAcceptable, NotFound, RequestEntityTooLarge

from kv_app.store import canonical_key

bp = Blueprint("api", __name__)

STORE = "kv_store"  # the key of the loaded store in app.extensions
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
# Accept headers that mean JSON without parsing them (curl, requests, browsers' fetch).
_JSON_ACCEPTS = frozenset(("*/*", JSON))
_VARY = {"Vary": "Accept"}


def wants_text() -> bool:
    """Content negotiation for an item: JSON unless the client prefers text/plain."""
    accept = request.headers.get("Accept")
    if accept is None or accept in _JSON_ACCEPTS:
        return False
    best = request.accept_mimetypes.best_match((JSON, "text/plain"))
    if best is None:
        raise NotAcceptable(f"cannot answer with {accept!r}: use application/json or text/plain")
    return best == "text/plain"


@bp.get("/items/<item_id>")
def get_item(item_id: str) -> Response:
    """Look up the value of one id.
    ---
    tags: [items]
    parameters:
      - name: item_id
        in: path
        required: true
        description: A UUID, 8-4-4-4-12 hex digits; case does not matter.
        schema: {type: string, example: 3fa85f64-5717-4562-b3fc-2c963f66afa6}
    responses:
      200:
        description: The value, as JSON or (with `Accept text/plain`) the bare value.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Item'}
          text/plain:
            schema: {type: string}
      400: {$ref: '#/components/responses/BadRequest'}
      404: {$ref: '#/components/responses/NotFound'}
      406: {$ref: '#/components/responses/NotAcceptable'}
    """
    key = canonical_key(item_id)
    if key is None:
        raise BadRequest(
            f"malformed id {item_id!r}: expected a UUID such as 3fa85f64-5717-4562-b3fc-2c963f66afa6"
        )
    value = current_app.extensions[STORE].get(key)
    if value is None:
        raise NotFound(f"no item with id {key}")
    if wants_text():
        return Response(value, content_type=TEXT, headers=_VARY)
    return Response(orjson.dumps({"id": key, "value": value}), content_type=JSON, headers=_VARY)


class InvalidIds(BadRequest):
    """400 that names the malformed ids (an `ids` field in the error body)."""

    def __init__(self, ids: list):
        super().__init__(f"{len(ids)} malformed ids: each must be a UUID string")
        self.extra = {"ids": ids}


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
    keys = [canonical_key(i) if isinstance(i, str) else None for i in ids]
    bad = [i for i, key in zip(ids, keys, strict=True) if key is None]
    if bad:
        raise InvalidIds(bad)
    return list(dict.fromkeys(keys))


@bp.post("/items/batch")
def get_items() -> Response:
    """Look up many ids in one request.
    ---
    tags: [items]
    description: >
      At most KV_MAX_BATCH ids (1000 by default) and a body of at most 64 bytes per
      allowed id plus 1 KiB. Repeated ids are answered once; ids come back lower-case.
    requestBody:
      required: true
      content:
        application/json:
          schema: {$ref: '#/components/schemas/BatchRequest'}
    responses:
      200:
        description: The values found, and the ids that are not in the data.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/BatchResponse'}
      400: {$ref: '#/components/responses/BadRequest'}
      413: {$ref: '#/components/responses/TooLarge'}
    """
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        raise RequestEntityTooLarge(f"body over {limit:,} bytes") from None
    keys = batch_ids(body, current_app.config["MAX_BATCH"])
    values = current_app.extensions[STORE].get_many(keys)
    items, missing = {}, []
    for key, value in zip(keys, values, strict=True):
        if value is None:
            missing.append(key)
        else:
            items[key] = value
    return Response(orjson.dumps({"items": items, "missing": missing}), content_type=JSON)


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
    """Readiness: the data is loaded and served.
    ---
    tags: [health]
    responses:
      200:
        description: Ready, with the number of pairs served.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Ready'}
    """
    store = current_app.extensions[STORE]
    body = {"status": "ready", "pairs": len(store), "store": current_app.config["STORE"]}
    return Response(orjson.dumps(body), content_type=JSON)
