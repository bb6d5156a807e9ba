"""kv_app/lean.py: the lean path answers exactly as the blueprint does. The same random
requests go to an app with it and to one without it (every request through Flask); status,
headers and body must be the same, byte for byte (a new request id aside)."""

from __future__ import annotations

import os
import re

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TRICKY
from kv_app import metrics
from kv_app.api import BodyRefused, BodyTimedOut
from kv_app.app import create_app
from kv_app.lean import request_id

KEYS = sorted(TRICKY)
MISSING = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0aff"
ALLOWED = "http://127.0.0.1:8081"
# KV_CORS_ORIGINS: off (the default), a list, any origin. Compression is on (the default,
# 1024 bytes): TRICKY's 5,000-character value and large batches are over it.
CORS = ["", f"{ALLOWED},https://b.example", "*"]
ORIGINS = [None, ALLOWED, "https://evil.example", "null", ""]
ENCODINGS = [None, "gzip", "gzip, deflate, br, zstd", "identity", "br", "*", "", "gzip;q=0"]


@pytest.fixture(scope="module")
def apps(tricky_file_once):
    """(lean, through Flask only) test clients over the same store, for each kind, and
    for each CORS setting as apps[kind, cors] (apps[kind]: CORS off)."""
    clients = {
        (kind, cors): tuple(
            create_app(
                {"DATA_PATH": "unused", "CORS_ORIGINS": cors}, store=store, lean=lean
            ).test_client()
            for lean in (True, False)
        )
        for kind, store in tricky_file_once.items()
        for cors in CORS
    }
    clients.update({kind: clients[kind, ""] for kind in tricky_file_once})
    return clients


def ids():
    key = st.sampled_from([*KEYS, MISSING])
    return st.one_of(
        key,
        key.map(str.upper),
        key.map(lambda k: k[:8] + k[8:].upper()),
        key.map(lambda k: k[:-1]),
        key.map(lambda k: k.replace("-", "_")),
        st.text(min_size=0, max_size=40).filter(lambda t: "/" not in t and "?" not in t),
        st.just("batch"),
    )


ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "text/plain",
    "text/html",
    "application/json;q=0.5, text/plain",
    "APPLICATION/JSON",
    "",
]
MATCHES = [None, "*", '"nope"', "{etag}", 'W/"{etag_bare}"']
REQUEST_IDS = [None, "given-id-1", "bad id with spaces", "x" * 200]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["dict", "compact", "snapshot"]),
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
    item=ids(),
    accept=st.sampled_from(ACCEPTS),
    match=st.sampled_from(MATCHES),
    rid=st.sampled_from(REQUEST_IDS),
    query=st.sampled_from(["", "?x=1"]),
    cors=st.sampled_from(CORS),
    origin=st.sampled_from(ORIGINS),
    encoding=st.sampled_from(ENCODINGS),
)
def test_the_lean_path_answers_as_the_blueprint(
    apps, kind, method, item, accept, match, rid, query, cors, origin, encoding
):
    lean, plain = apps[kind, cors]
    headers = given_headers(
        Accept=accept,
        Origin=origin,
        **{"X-Request-ID": rid, "Accept-Encoding": encoding},
    )
    if match is not None:
        etag_bare = plain.get(f"/items/{KEYS[0]}").headers["ETag"].strip('"')
        headers["If-None-Match"] = match.format(etag=f'"{etag_bare}"', etag_bare=etag_bare)
    answers = [
        client.open(f"/items/{item}{query}", method=method, headers=headers)
        for client in (lean, plain)
    ]
    assert_same(*answers, rid)


def given_headers(**headers: str | None) -> dict[str, str]:
    """The request's headers: those drawn, but None (not sent)."""
    return {name: value for name, value in headers.items() if value is not None}


def assert_same(first, second, rid: str | None) -> None:
    """The same status, body and headers (but for a request id the app made, and the
    Date a gzipped answer gets, which may be a second apart)."""
    assert first.status == second.status
    assert first.get_data() == second.get_data()
    assert ("Date" in first.headers) == ("Date" in second.headers)
    given = rid is not None and rid == first.headers.get("X-Request-ID")
    strip = ("Date",) if given else ("X-Request-ID", "Date")
    assert [h for h in first.headers.items() if h[0] not in strip] == [
        h for h in second.headers.items() if h[0] not in strip
    ]
    assert "X-Request-ID" in first.headers and len(first.headers["X-Request-ID"]) <= 128


def test_every_key_exactly_through_the_lean_path(apps):
    for kind, (lean, _) in apps.items():
        for key, value in TRICKY.items():
            for spelling in (key, key.upper()):
                r = lean.get(f"/items/{spelling}")
                assert r.status_code == 200, (kind, key)
                assert r.get_json() == {"id": key, "value": value}


def test_the_lean_path_counts_what_flask_counts(apps):
    """Lookups and requests by route, as the blueprint counts them."""
    lean, _ = apps["dict"]
    before = metrics.LOOKUPS.labels("found")._value.get()
    requests = metrics.REQUESTS.labels("GET", "/items/<item_id>", "200")._value.get()
    assert lean.get(f"/items/{KEYS[0]}").status_code == 200
    assert metrics.LOOKUPS.labels("found")._value.get() == before + 1
    assert metrics.REQUESTS.labels("GET", "/items/<item_id>", "200")._value.get() == requests + 1


def test_a_store_error_on_the_lean_path_is_answered_by_flask(tricky_file_once):
    """Anything the lean path cannot answer (a store that raises) goes to Flask, which
    answers in the one JSON error shape."""

    class Broken:
        def __getattr__(self, name):
            return getattr(tricky_file_once["dict"], name)

        def get(self, key, default=None):
            raise OSError("the disk is gone")

    client = create_app({"DATA_PATH": "unused"}, store=Broken()).test_client()
    r = client.get(f"/items/{KEYS[0]}")
    assert r.status_code == 500 and r.get_json()["error"] == "Internal Server Error"


def batch_bodies():
    """Batch bodies: good ids in any case (repeated, missing, too many), bad ids, and
    bodies that are not the batch shape at all."""
    some_ids = st.lists(ids(), max_size=6)
    return st.one_of(
        some_ids.map(lambda i: orjson.dumps({"ids": i})),
        st.lists(st.sampled_from([*KEYS, MISSING]), max_size=1001).map(
            lambda i: orjson.dumps({"ids": i})
        ),
        st.just(b'{"ids": []}'),
        st.just(b'{"ids": "' + KEYS[0].encode() + b'"}'),
        st.just(b'{"ids": [1, 2]}'),
        st.just(b'{"ids": [], "more": 1}'),
        st.just(b"[]"),
        st.just(b""),
        st.binary(max_size=40),
    )


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["dict", "compact", "snapshot"]),
    body=batch_bodies(),
    accept=st.sampled_from(ACCEPTS),
    rid=st.sampled_from(REQUEST_IDS),
    content_type=st.sampled_from(["application/json", "text/plain", None]),
    cors=st.sampled_from(CORS),
    origin=st.sampled_from(ORIGINS),
    encoding=st.sampled_from(ENCODINGS),
)
def test_the_lean_batch_answers_as_the_blueprint(
    apps, kind, body, accept, rid, content_type, cors, origin, encoding
):
    lean, plain = apps[kind, cors]
    headers = given_headers(
        Accept=accept,
        Origin=origin,
        **{"X-Request-ID": rid, "Content-Type": content_type, "Accept-Encoding": encoding},
    )
    answers = [client.post("/items/batch", data=body, headers=headers) for client in (lean, plain)]
    assert_same(*answers, rid)


class Unreadable:
    """A request body whose reading fails as the server's body reader fails."""

    def __init__(self, error: Exception):
        self.error = error

    def read(self, *args):
        raise self.error


@pytest.mark.parametrize(
    "error", [BodyTimedOut("request body not received within 10 s"), BodyRefused("busy")]
)
def test_a_batch_body_that_cannot_be_read_is_answered_by_flask(apps, error):
    """The lean path reads the body first: when that fails, Flask answers as it would
    have (408, 503), not the lean path with a 500."""
    answers = [
        client.post(
            "/items/batch",
            headers={"Content-Length": "100", "Content-Type": "application/json"},
            environ_overrides={"wsgi.input": Unreadable(error), "wsgi.input_terminated": True},
        )
        for client in apps["dict"]
    ]
    assert answers[0].status_code in (408, 503)
    assert answers[0].status == answers[1].status
    assert answers[0].get_json() == answers[1].get_json()


def test_the_lean_batch_counts_what_flask_counts(apps):
    lean, _ = apps["dict"]
    route = ("POST", "/items/batch", "200")
    before = (
        metrics.LOOKUPS.labels("found")._value.get(),
        metrics.LOOKUPS.labels("missing")._value.get(),
        metrics.REQUESTS.labels(*route)._value.get(),
    )
    r = lean.post("/items/batch", json={"ids": [KEYS[0], KEYS[1].upper(), MISSING]})
    assert r.status_code == 200 and r.get_json()["missing"] == [MISSING]
    assert (
        metrics.LOOKUPS.labels("found")._value.get(),
        metrics.LOOKUPS.labels("missing")._value.get(),
        metrics.REQUESTS.labels(*route)._value.get(),
    ) == (before[0] + 2, before[1] + 1, before[2] + 1)


def test_request_ids_made_here_are_unique_across_workers():
    """A request id the app makes is 32 hex digits, never the same twice in a process,
    nor in a forked worker (each draws its own)."""

    mine = {request_id(None) for _ in range(1000)}
    assert len(mine) == 1000 and all(re.fullmatch("[0-9a-f]{32}", i) for i in mine)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker: its ids, to the parent
        try:
            os.write(write, " ".join(request_id(None) for _ in range(1000)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        theirs = set(f.read().split())
    os.waitpid(pid, 0)
    assert len(theirs) == 1000 and not theirs & mine
    assert request_id("given-id") == "given-id"


@pytest.mark.parametrize("cors", CORS)
def test_what_the_lean_path_answers_and_what_it_hands_to_flask(tricky_file_once, cors):
    """Without Origin or Accept-Encoding (the common case) the lean path answers, CORS on
    or off, large answers too; with an Origin (CORS on) or Accept-Encoding on an answer
    that may be gzipped, Flask does."""
    app = create_app({"DATA_PATH": "unused", "CORS_ORIGINS": cors}, store=tricky_file_once["dict"])
    seen = []
    app.before_request(lambda: seen.append(1))
    client = app.test_client()
    large = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a09"
    cases = [
        ({}, KEYS[0], False),
        ({}, large, False),
        ({"Accept-Encoding": "gzip"}, KEYS[0], False),  # too small to be gzipped
        ({"Accept-Encoding": "gzip"}, large, True),
        ({"Origin": ALLOWED}, KEYS[0], bool(cors)),
    ]
    for headers, key, through_flask in cases:
        seen.clear()
        assert client.get(f"/items/{key}", headers=headers).status_code == 200
        assert bool(seen) == through_flask, (headers, key)
        seen.clear()
        r = client.post("/items/batch", json={"ids": [key]}, headers=headers)
        assert r.status_code == 200 and bool(seen) == through_flask, (headers, key)
