"""The HTTP API through Flask's test client: every status and content type."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from kv_app import api
from kv_app.app import create_app
from kv_app.stores import STORES

KEY = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a05"
MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def tricky_client(tricky_file, store_kind, servable):
    path, expected = tricky_file
    served = servable(path, store_kind)
    return create_app({"DATA_PATH": str(served), "STORE": store_kind}).test_client(), expected


def test_every_tricky_value_as_json_and_text(tricky_client):
    client, expected = tricky_client
    for key, value in expected.items():
        r = client.get(f"/items/{key}")
        assert r.status_code == 200
        assert r.content_type == "application/json"
        assert r.get_json() == {"id": key, "value": value}
        r = client.get(f"/items/{key}", headers={"Accept": "text/plain"})
        assert r.status_code == 200
        assert r.content_type == "text/plain; charset=utf-8"
        assert r.get_data(as_text=True) == value


def test_every_generated_key(client, data):
    for key, value in data.items():
        assert client.get(f"/items/{key}").get_json()["value"] == value


def test_upper_case_id_answers_with_canonical_id(tricky_client):
    client, expected = tricky_client
    r = client.get(f"/items/{KEY.upper()}")
    assert r.get_json() == {"id": KEY, "value": expected[KEY]}


def test_response_headers(tricky_client):
    client, _ = tricky_client
    r = client.get(f"/items/{KEY}")
    assert r.headers["Vary"] == "Accept"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert int(r.headers["Content-Length"]) == len(r.data)


def test_head_has_headers_and_no_body(tricky_client):
    client, _ = tricky_client
    get = client.get(f"/items/{KEY}")
    head = client.head(f"/items/{KEY}")
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert head.content_type == get.content_type
    assert client.head(f"/items/{MISSING}").status_code == 404
    assert client.head("/items/nope").status_code == 400


@pytest.mark.parametrize(
    "accept, content_type",
    [
        ("application/json", "application/json"),
        ("*/*", "application/json"),
        ("text/plain", "text/plain; charset=utf-8"),
        ("text/*", "text/plain; charset=utf-8"),
        ("text/plain;q=0.5, application/json", "application/json"),
        ("application/json;q=0.1, text/plain", "text/plain; charset=utf-8"),
        ("text/html, */*;q=0.8", "application/json"),
    ],
)
def test_content_negotiation(tricky_client, accept, content_type):
    client, _ = tricky_client
    r = client.get(f"/items/{KEY}", headers={"Accept": accept})
    assert r.status_code == 200 and r.content_type == content_type


def test_health_and_readiness(client, data, data_file, store_kind):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    sha256 = hashlib.sha256(data_file.read_bytes()).hexdigest()
    common = {"status": "ready", "pairs": len(data), "store": store_kind, "sha256": sha256}
    assert ready.items() >= common.items() and ready["version"] == sha256[:16]
    if store_kind == "snapshot":
        assert ready["source"] == data_file.name and ready["bytes"] > 0
        return
    assert ready == {
        "status": "ready",
        "pairs": len(data),
        "store": store_kind,
        "version": sha256[:16],
        "path": str(data_file),
        "bytes": data_file.stat().st_size,
        "sha256": sha256,
        "modified": ready["modified"],
        "loaded_at": ready["loaded_at"],
        "load_seconds": ready["load_seconds"],
        "skipped_lines": 0,
    }
    modified = datetime.fromtimestamp(data_file.stat().st_mtime, UTC)
    assert ready["modified"] == modified.isoformat(timespec="seconds")


def test_item_answers_name_the_data_version(client, data):
    version = client.get("/readyz").get_json()["version"]
    key = next(iter(data))
    for r in (
        client.get(f"/items/{key}"),
        client.get("/items/00000000-0000-4000-8000-000000000000"),
        client.post("/items/batch", json={"ids": [key]}),
    ):
        assert r.headers["X-Data-Version"] == version


def assert_error(r, status: int, fragment: str = ""):
    """The one JSON error shape."""
    assert r.status_code == status
    assert r.content_type == "application/json"
    body = json.loads(r.data)
    assert set(body) >= {"status", "error", "message"}
    assert body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    assert fragment in body["message"]
    assert b"<" not in r.data and b"Traceback" not in r.data
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    return body


@pytest.mark.parametrize(
    "method, path, headers, status, fragment",
    [
        ("GET", f"/items/{MISSING}", {}, 404, f"no item with id {MISSING}"),
        ("GET", "/items/not-a-uuid", {}, 400, "malformed id 'not-a-uuid'"),
        ("GET", f"/items/{MISSING[:-1]}", {}, 400, "malformed id"),
        ("GET", f"/items/{{{MISSING}}}", {}, 400, "malformed id"),
        ("GET", f"/items/urn:uuid:{MISSING}", {}, 400, "malformed id"),
        ("GET", f"/items/{MISSING.replace('-', '')}", {}, 400, "malformed id"),
        ("GET", "/items/", {}, 404, "no route /items/"),
        ("GET", f"/items/{KEY}/extra", {}, 404, "no route"),
        ("GET", "/nope", {}, 404, "no route /nope"),
        ("GET", "/items/KNOWN", {"Accept": "image/png"}, 406, "application/json or text/plain"),
        ("POST", f"/items/{KEY}", {}, 405, "not allowed"),
        ("DELETE", f"/items/{KEY}", {}, 405, "not allowed"),
        ("PUT", "/healthz", {}, 405, "not allowed"),
    ],
)
def test_error_shape(client, data, method, path, headers, status, fragment):
    path = path.replace("KNOWN", next(iter(data)))
    r = client.open(path, method=method, headers=headers)
    assert_error(r, status, fragment)


def test_405_keeps_allow_header(client):
    r = client.post(f"/items/{KEY}")
    assert set(r.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_unexpected_error_is_a_json_500_without_traceback(data_file, caplog):
    app = create_app({"DATA_PATH": str(data_file)})

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    r = app.test_client().get("/boom")
    body = assert_error(r, 500)
    assert "secret detail" not in body["message"]
    assert "secret detail" in caplog.text  # logged for the operator


def post_batch(client, body, **kwargs):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return client.post("/items/batch", data=body, content_type="application/json", **kwargs)


def test_batch_returns_found_and_missing(client, data):
    keys = list(data)[:3]
    body = {"ids": [keys[0], keys[1].upper(), MISSING, keys[0], keys[2], MISSING.upper()]}
    r = post_batch(client, body)
    assert r.status_code == 200 and r.content_type == "application/json"
    assert r.get_json() == {"items": {k: data[k] for k in keys}, "missing": [MISSING]}


def test_batch_of_every_key(client, data):
    keys = list(data)
    for i in range(0, len(keys), 1000):
        part = keys[i : i + 1000]
        assert post_batch(client, {"ids": part}).get_json()["items"] == {k: data[k] for k in part}


def test_a_batch_answer_too_large_is_refused(tricky_client, monkeypatch):
    """Before: 1000 ids of 4 MiB values were answered with one 4 GB body, built in one
    worker. The TRICKY values hold 5,000 + 137 characters."""
    client, expected = tricky_client
    monkeypatch.setattr(api, "MAX_ANSWER_CHARS", 5000)
    r = post_batch(client, {"ids": list(expected)})
    assert r.status_code == 413
    assert r.get_json()["message"] == (
        f"the answer would hold {sum(map(len, expected.values())):,} characters of values, "
        "over the 5,000 one answer may hold: ask for fewer ids per request"
    )
    few = [k for k, v in expected.items() if len(v) < 100]
    assert post_batch(client, {"ids": few}).get_json()["items"] == {k: expected[k] for k in few}


def test_batch_tricky_values(tricky_client):
    client, expected = tricky_client
    assert post_batch(client, {"ids": list(expected)}).get_json()["items"] == expected


def test_empty_batch(client):
    assert post_batch(client, {"ids": []}).get_json() == {"items": {}, "missing": []}


def test_batch_any_content_type(client, data):
    key = next(iter(data))
    r = client.post("/items/batch", data=json.dumps({"ids": [key]}))  # curl -d's form type
    assert r.get_json()["items"] == {key: data[key]}


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"", 400, "body is not JSON"),
        (b"not json", 400, "body is not JSON"),
        (b'{"ids": [', 400, "body is not JSON"),
        (b"\xff\xfe", 400, "body is not JSON"),
        ([MISSING], 400, 'one field, "ids"'),
        ({"keys": [MISSING]}, 400, 'one field, "ids"'),
        ({"ids": [MISSING], "extra": 1}, 400, 'one field, "ids"'),
        ({"ids": MISSING}, 400, '"ids" must be a list'),
        ({"ids": None}, 400, '"ids" must be a list'),
        ({"ids": [MISSING, "nope", 7, None, ["x"]]}, 400, "4 malformed ids"),
        ({"ids": [MISSING] * 1001}, 413, "too many ids: 1001, at most 1000"),
        (b'{"ids": "' + b"a" * 70_000 + b'"}', 413, "body over 65,024 bytes"),
    ],
)
def test_batch_errors(client, body, status, fragment):
    assert_error(post_batch(client, body), status, fragment)


def test_batch_error_names_the_malformed_ids(client):
    r = post_batch(client, {"ids": [MISSING, "nope", 7, None]})
    assert r.get_json()["ids"] == ["nope", 7, None]


def test_batch_limit_is_a_setting(data_file):
    client = create_app({"DATA_PATH": str(data_file), "MAX_BATCH": 2}).test_client()
    assert post_batch(client, {"ids": [MISSING] * 2}).status_code == 200
    assert_error(post_batch(client, {"ids": [MISSING] * 3}), 413, "at most 2")


def test_the_batch_route_allows_post_alone(client):
    """A fuzzer found OPTIONS /items/batch advertising GET (the item route matched)."""
    r = client.get("/items/batch")
    assert_error(r, 405)
    assert set(r.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    assert set(client.options("/items/batch").headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    assert_error(client.get("/items/batches"), 400, "malformed id 'batches'")


def test_batch_honours_accept_like_get(client, data):
    r = client.get(f"/items/{next(iter(data))}", headers={"Accept": "image/png"})
    assert_error(r, 406)
    assert r.headers["Vary"] == "Accept"  # a cache must not reuse it for other Accepts
    r = client.post("/items/batch", json={"ids": []}, headers={"Accept": "image/png"})
    assert_error(r, 406, "use application/json")
    assert r.headers["Vary"] == "Accept"
    r = client.post("/items/batch", json={"ids": []}, headers={"Accept": "text/plain"})
    assert_error(r, 406)
    r = client.post("/items/batch", json={"ids": []}, headers={"Accept": "application/*"})
    assert r.status_code == 200


def test_item_answers_can_be_cached_and_revalidated(client, data):
    key = next(iter(data))
    r = client.get(f"/items/{key}")
    etag = r.headers["ETag"]
    assert etag.startswith('"') and r.headers["X-Data-Version"] in etag and key in etag
    assert r.headers["Cache-Control"] == "public, max-age=60"
    assert r.headers["Last-Modified"].endswith(" GMT")
    again = client.get(f"/items/{key}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert client.get(f"/items/{key}", headers={"If-None-Match": '"other"'}).status_code == 200
    text = client.get(f"/items/{key}", headers={"Accept": "text/plain"})
    assert text.headers["ETag"] != etag  # another representation, another tag
    missing = client.get(f"/items/{MISSING}")
    assert missing.headers["Cache-Control"] == "public, max-age=5" and "ETag" not in missing.headers
    batch = client.post("/items/batch", json={"ids": [key]})
    assert batch.headers["ETag"] != etag and batch.headers["Cache-Control"] == "public, max-age=60"


def test_cache_lifetimes_are_settings(data_file, data):
    app = create_app(
        {"DATA_PATH": str(data_file), "CACHE_MAX_AGE": 3600, "CACHE_MAX_AGE_MISSING": 0}
    )
    c = app.test_client()
    assert c.get(f"/items/{next(iter(data))}").headers["Cache-Control"] == "public, max-age=3600"
    assert c.get(f"/items/{MISSING}").headers["Cache-Control"] == "no-store"


def test_another_data_version_changes_every_etag(tmp_path, data_file, data):
    key = next(iter(data))
    other = tmp_path / "other.data"
    other.write_text(f"{key} another value\n")
    first = create_app({"DATA_PATH": str(data_file)}).test_client().get(f"/items/{key}")
    second = create_app({"DATA_PATH": str(other)}).test_client().get(f"/items/{key}")
    assert first.headers["ETag"] != second.headers["ETag"]


def test_an_app_over_a_store_made_in_code():
    """Before: create_app(store=DictStore({...})) failed with KeyError: 'version' (the
    store had no file, so no version)."""
    from kv_app.stores.dict import DictStore

    store = DictStore({KEY: "made in code"})
    client = create_app({"DATA_PATH": "unused"}, store=store).test_client()
    r = client.get(f"/items/{KEY}")
    assert r.status_code == 200 and r.get_json() == {"id": KEY, "value": "made in code"}
    assert r.headers["X-Data-Version"] == store.version and len(store.version) == 16
    ready = client.get("/readyz").get_json()
    assert ready == {"status": "ready", "store": "dict", "pairs": 1, "version": store.version}
    assert DictStore({KEY: "other"}).version != store.version


@pytest.mark.parametrize("kind", [k for k in STORES if STORES[k].maker])
def test_the_registry_makes_a_store_from_pairs(kind):
    """STORES[kind].from_pairs: any in-memory kind over pairs made in code, keys in either
    case; the same pairs give the same version whatever the kind; bad keys are refused."""
    pairs = {KEY.upper(): "upper-case key", "06bf4950-90ea-44d4-9df9-7fa724212196": "é"}
    store = STORES[kind].from_pairs(pairs)
    client = create_app({"DATA_PATH": "unused"}, store=store).test_client()
    assert client.get(f"/items/{KEY}").get_json()["value"] == "upper-case key"
    assert client.get("/readyz").get_json()["store"] == kind
    assert store.version == STORES["dict"].from_pairs(pairs).version
    with pytest.raises(ValueError, match="malformed id 'nope'"):
        STORES[kind].from_pairs({"nope": "x"})
