"""kv_app/web.py: CORS for the origins KV_CORS_ORIGINS lists, gzip for answers of at least
KV_COMPRESS_MIN_BYTES, with an ETag per encoding; and the start-up line naming the docs.
Through Flask's test client; tests/test_browser.py calls a real server from a page on
another origin, tests/test_cache_front.py through nginx."""

from __future__ import annotations

import gzip

import pytest

from conftest import TRICKY
from kv_app import config
from kv_app.app import create_app, where_the_docs_are
from kv_app.web import cors_origins

SMALL = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a01"  # a short value: a 100-byte answer
LARGE = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a09"  # 5,000 characters
MISSING = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0aff"
ALLOWED = "http://127.0.0.1:8081"
OTHER = "https://evil.example"


def make_client(store, lean: bool = True, **settings):
    return create_app({"DATA_PATH": "unused", **settings}, store=store, lean=lean).test_client()


@pytest.fixture(scope="module")
def store(tricky_file_once):
    return tricky_file_once["dict"]


@pytest.mark.parametrize(
    "raw, origins",
    [
        ("", ()),
        (None, ()),
        ("*", ("*",)),
        (" * ", ("*",)),
        ("https://a.example", ("https://a.example",)),
        (
            "https://a.example:8443, http://127.0.0.1:8080",
            ("https://a.example:8443", "http://127.0.0.1:8080"),
        ),
        ("http://[::1]:8080,http://[::1]:8080", ("http://[::1]:8080",)),
    ],
)
def test_origins_as_a_browser_sends_them(raw, origins):
    assert cors_origins(raw) == origins


@pytest.mark.parametrize(
    "raw",
    [
        "a.example",  # no scheme
        "https://a.example/",  # a trailing slash: browsers never send one
        "https://a.example/app",
        "https://A.example",  # browsers send the host lower-case
        "ftp://a.example",
        "https://a.example:99999",
        "*, https://a.example",
        "https://*.example",
    ],
)
def test_a_bad_origin_stops_start_up(store, raw):
    with pytest.raises(config.ConfigError, match="CORS_ORIGINS"):
        make_client(store, CORS_ORIGINS=raw)


def test_the_settings_have_their_variables():
    settings = config.resolve({"KV_CORS_ORIGINS": "*", "KV_COMPRESS_MIN_BYTES": "0"})
    assert settings["CORS_ORIGINS"] == "*" and settings["COMPRESS_MIN_BYTES"] == 0
    assert config.DEFAULTS["CORS_ORIGINS"] == "" and config.DEFAULTS["COMPRESS_MIN_BYTES"] == 1024
    with pytest.raises(config.ConfigError, match="KV_COMPRESS_MIN_BYTES"):
        config.resolve({"KV_COMPRESS_MIN_BYTES": "-1"})


def preflight(client, path="/items/batch", origin=ALLOWED):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


@pytest.mark.parametrize("lean", [True, False])
def test_cors_is_off_by_default(store, lean):
    client = make_client(store, lean)
    r = client.get(f"/items/{SMALL}", headers={"Origin": ALLOWED})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    assert "Origin" not in r.headers["Vary"]
    r = preflight(client)
    assert not [h for h in r.headers.keys() if h.startswith("Access-Control")]


@pytest.mark.parametrize("lean", [True, False])
def test_an_allowed_origin_may_read_the_answers(store, lean):
    client = make_client(store, lean, CORS_ORIGINS=f"{ALLOWED},https://b.example")
    r = client.get(f"/items/{SMALL}", headers={"Origin": ALLOWED})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == {"ETag", "X-Data-Version", "X-Request-ID"}
    assert r.headers["Vary"] == "Accept, Origin"
    r = client.post("/items/batch", json={"ids": [SMALL]}, headers={"Origin": ALLOWED})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ALLOWED


@pytest.mark.parametrize("lean", [True, False])
def test_other_origins_get_no_cors_headers_and_every_answer_varies(store, lean):
    """Vary: Origin on every answer, with or without the header: a shared cache must
    not serve an answer made for one origin (or none) to another."""
    client = make_client(store, lean, CORS_ORIGINS=ALLOWED)
    for headers in ({"Origin": OTHER}, {}):
        r = client.get(f"/items/{SMALL}", headers=headers)
        assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
        assert r.headers["Vary"] == "Accept, Origin"
    assert "Access-Control-Allow-Origin" not in preflight(client, origin=OTHER).headers


def test_the_batch_preflight(store):
    """What a browser sends before a fetch() POST of JSON from another origin."""
    client = make_client(store, CORS_ORIGINS=ALLOWED)
    r = preflight(client)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Headers"].lower() == "content-type"
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in r.headers


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("GET", f"/items/{MISSING}", None, 404),
        ("GET", "/items/nope", None, 400),
        ("GET", "/no/such/route", None, 404),
        ("GET", "/items/batch", None, 405),
        ("POST", "/items/batch", b'{"ids": [1]}', 400),
        ("POST", "/items/batch", b"x" * 70000, 413),
    ],
)
def test_errors_carry_the_cors_headers(store, method, path, body, status):
    """A page on another origin can read why its request failed."""
    client = make_client(store, CORS_ORIGINS=ALLOWED)
    r = client.open(
        path,
        method=method,
        data=body,
        headers={"Origin": ALLOWED, "Content-Type": "application/json"},
    )
    assert r.status_code == status and r.get_json()["status"] == status
    assert r.headers["Access-Control-Allow-Origin"] == ALLOWED


def test_a_crash_carries_the_cors_headers(store):
    class Broken:
        def __getattr__(self, name):
            return getattr(store, name)

        def get(self, key, default=None):
            raise OSError("the disk is gone")

    client = make_client(Broken(), CORS_ORIGINS=ALLOWED)
    r = client.get(f"/items/{SMALL}", headers={"Origin": ALLOWED})
    assert r.status_code == 500 and r.headers["Access-Control-Allow-Origin"] == ALLOWED


@pytest.mark.parametrize("lean", [True, False])
def test_any_origin_is_one_answer_for_all(store, lean):
    """With *, the same headers whatever the Origin (no Vary: Origin: cacheable once)."""
    client = make_client(store, lean, CORS_ORIGINS="*")
    for headers in ({"Origin": OTHER}, {"Origin": ALLOWED}, {}):
        r = client.get(f"/items/{SMALL}", headers=headers)
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers["Vary"] == "Accept"
    assert preflight(client, origin=OTHER).headers["Access-Control-Allow-Origin"] == "*"


def test_large_answers_are_gzipped_for_clients_that_accept_it(store):
    client = make_client(store)
    plain = client.get(f"/items/{LARGE}")
    zipped = client.get(f"/items/{LARGE}", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.get_data()) == plain.get_data()
    assert int(zipped.headers["Content-Length"]) == len(zipped.get_data()) < 200
    for r in (plain, zipped):
        assert r.headers["Vary"] == "Accept, Accept-Encoding"
    # Another representation, another strong ETag.
    assert zipped.headers["ETag"] == plain.headers["ETag"][:-1] + ':gzip"'
    text = client.get(
        f"/items/{LARGE}", headers={"Accept-Encoding": "gzip", "Accept": "text/plain"}
    )
    assert text.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(text.get_data()).decode() == TRICKY[LARGE]
    assert text.headers["ETag"].endswith('-t:gzip"')
    batch = client.post(
        "/items/batch", json={"ids": sorted(TRICKY)}, headers={"Accept-Encoding": "gzip, br"}
    )
    assert batch.headers["Content-Encoding"] == "gzip"
    assert (
        gzip.decompress(batch.get_data())
        == client.post("/items/batch", json={"ids": sorted(TRICKY)}).get_data()
    )


@pytest.mark.parametrize("encoding", ["br", "identity", "gzip;q=0", "deflate", ""])
def test_no_gzip_unless_asked(store, encoding):
    r = make_client(store).get(f"/items/{LARGE}", headers={"Accept-Encoding": encoding})
    assert "Content-Encoding" not in r.headers and r.get_json()["value"] == TRICKY[LARGE]


def test_small_answers_and_errors_are_sent_as_they_are(store):
    """Under KV_COMPRESS_MIN_BYTES nothing is gzipped, and the answer does not vary on
    Accept-Encoding (a front's cache keeps one entry for it)."""
    client = make_client(store)
    for path in (f"/items/{SMALL}", f"/items/{MISSING}", "/healthz"):
        r = client.get(path, headers={"Accept-Encoding": "gzip"})
        assert "Content-Encoding" not in r.headers
        assert "Accept-Encoding" not in r.headers.get("Vary", "")


def test_compression_off(store):
    r = make_client(store, COMPRESS_MIN_BYTES=0).get(
        f"/items/{LARGE}", headers={"Accept-Encoding": "gzip"}
    )
    assert "Content-Encoding" not in r.headers and r.headers["Vary"] == "Accept"


def test_the_threshold_is_the_answer_size(store):
    size = len(make_client(store).get(f"/items/{SMALL}").get_data())
    at = make_client(store, COMPRESS_MIN_BYTES=size)
    above = make_client(store, COMPRESS_MIN_BYTES=size + 1)
    gz = {"Accept-Encoding": "gzip"}
    assert at.get(f"/items/{SMALL}", headers=gz).headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in above.get(f"/items/{SMALL}", headers=gz).headers


@pytest.mark.parametrize("lean", [True, False])
def test_if_none_match_with_either_etag(store, lean):
    """A client holding either representation is told it is current (304) when it asks
    for that one; one holding only the gzipped one, asking without gzip, gets the
    identity answer."""
    client = make_client(store, lean)
    gz = {"Accept-Encoding": "gzip"}
    identity = client.get(f"/items/{LARGE}").headers["ETag"]
    zipped = client.get(f"/items/{LARGE}", headers=gz).headers["ETag"]
    assert identity != zipped
    for held in (zipped, f"W/{zipped}", identity, f'"nope", {zipped}'):
        r = client.get(f"/items/{LARGE}", headers={**gz, "If-None-Match": held})
        assert r.status_code == 304 and r.get_data() == b"", held
    r = client.get(f"/items/{LARGE}", headers={"If-None-Match": identity})
    assert r.status_code == 304 and r.headers["ETag"] == identity
    r = client.get(f"/items/{LARGE}", headers={"If-None-Match": zipped})
    assert r.status_code == 200 and "Content-Encoding" not in r.headers
    assert r.headers["ETag"] == identity
    r = client.get(f"/items/{LARGE}", headers={**gz, "If-None-Match": '"nope"'})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"


def test_head_says_what_get_would_send(store):
    client = make_client(store)
    gz = {"Accept-Encoding": "gzip"}
    get, head = (client.open(f"/items/{LARGE}", method=m, headers=gz) for m in ("GET", "HEAD"))
    assert head.status_code == 200 and head.get_data() == b""
    assert head.headers["Content-Encoding"] == "gzip"
    assert head.headers["ETag"] == get.headers["ETag"]


@pytest.mark.parametrize(
    "host, url",
    [
        ("127.0.0.1", "http://127.0.0.1:8123"),
        ("0.0.0.0", "http://127.0.0.1:8123"),
        ("::1", "http://[::1]:8123"),
    ],
)
def test_start_up_says_where_the_docs_are(host, url):
    line = where_the_docs_are({"HOST": host, "PORT": 8123})
    assert f"{url}/docs" in line and f"{url}/redoc" in line and f"curl {url}/" in line


def test_the_server_logs_where_the_docs_are(start_server, data_file):
    server = start_server(data_file)
    assert f"API docs: {server.url}/docs (Swagger UI)" in server.log()
