"""The HTTP API through Flask's test client: every status and content type."""

from __future__ import annotations

import json

import pytest

from kv_app.app import create_app

KEY = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a05"
MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def tricky_client(tricky_file, store_kind):
    path, expected = tricky_file
    return create_app({"DATA_PATH": str(path), "STORE": store_kind}).test_client(), expected


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


def test_health_and_readiness(client, data, store_kind):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {
        "status": "ready",
        "pairs": len(data),
        "store": store_kind,
    }


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
