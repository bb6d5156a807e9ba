"""KVClient against a real server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests

from kv_app.client import KVClient, KVError, KVPartial, KVUnavailable

MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def kv(server):
    with KVClient(server.url) as client:
        yield client


def test_get_index_and_contains(kv, data):
    for key in list(data)[:50]:
        assert kv.get(key) == data[key]
        assert kv[key.upper()] == data[key]
        assert key in kv


def test_missing(kv):
    assert kv.get(MISSING) is None
    assert kv.get(MISSING, "default") == "default"
    assert MISSING not in kv
    with pytest.raises(KeyError):
        kv[MISSING]


def test_malformed_key_is_a_value_error(kv):
    with pytest.raises(ValueError, match="malformed id 'nope'"):
        kv.get("nope")
    assert "nope" not in kv


def test_ready(kv, store_kind):
    ready = kv.ready()
    assert ready["status"] == "ready" and ready["pairs"] == 2000 and ready["store"] == store_kind


def test_unreachable():
    with (
        KVClient("http://127.0.0.1:9", timeout=1) as kv,
        pytest.raises(KVError, match="cannot reach"),
    ):
        kv.get(MISSING)


def test_get_many_splits_into_batches(server, data):
    keys = list(data)
    with KVClient(server.url, batch_size=300) as kv:
        assert kv.get_many([k.upper() for k in keys] + [MISSING]) == data


def test_get_many_names_malformed_keys(kv):
    with pytest.raises(ValueError, match="2 malformed ids: each must be a UUID string: 'a', 'b'"):
        kv.get_many(["a", MISSING, "b"])


# Keys a user found that reached other routes or leaked other errors (defect 6).
HOSTILE_KEYS = ["../healthz", "../readyz", "x?y", "a/b", "%2e%2e/healthz", "", " " + MISSING]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_keys_are_checked_as_the_server_checks_them(kv, key):
    with pytest.raises(ValueError, match="malformed id"):
        kv.get(key)
    with pytest.raises(ValueError, match="malformed id"):
        kv[key]
    with pytest.raises(ValueError, match="1 malformed ids"):
        kv.get_many([MISSING, key])
    assert key not in kv


@pytest.mark.parametrize("key", [None, 42, b"bytes", ["list"]])
def test_keys_of_other_types(kv, key):
    with pytest.raises(ValueError):
        kv.get(key)
    assert key not in kv


def test_uuid_objects_are_keys(kv, data):
    """Before: "malformed id UUID('...')"."""
    import uuid

    k1, k2 = list(data)[:2]
    assert kv.get(uuid.UUID(k1)) == data[k1]
    assert kv[uuid.UUID(k1)] == data[k1]
    assert uuid.UUID(k1) in kv and uuid.UUID(MISSING) not in kv
    assert kv.get_many([uuid.UUID(k1), k2.upper(), uuid.UUID(MISSING)]) == {
        k1: data[k1],
        k2: data[k2],
    }


def test_a_client_is_not_iterable():
    """Before: list(kv) called kv[0] and raised "malformed id 0"."""
    kv = KVClient("http://127.0.0.1:9")
    with pytest.raises(TypeError, match="KVClient is not iterable: .* use get_many"):
        list(kv)
    with pytest.raises(TypeError, match="not iterable"):
        for _ in kv:
            pass


@pytest.mark.parametrize(
    "given, url",
    [
        ("127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("localhost:8123/", "http://localhost:8123"),
        ("https://kv.example:8443/", "https://kv.example:8443"),
        ("HTTP://127.0.0.1:8123", "HTTP://127.0.0.1:8123"),
    ],
)
def test_a_url_without_a_scheme_is_http(given, url):
    assert KVClient(given).base_url == url


def test_a_url_of_another_scheme_is_refused():
    with pytest.raises(ValueError, match="ftp://h:1: a kv_app server's URL starts with http://"):
        KVClient("ftp://h:1")


def test_a_url_without_a_scheme_reaches_the_server(server, data):
    key = next(iter(data))
    with KVClient(server.url.removeprefix("http://")) as kv:
        assert kv.get(key) == data[key]


def test_an_answer_that_is_not_kv_app_is_a_kv_error(server):
    """A proxy's HTML page or a foreign JSON answer: KVError, not KeyError or JSONDecodeError."""

    class Foreign:
        def request(self, method, url, **kwargs):
            response = requests.Response()
            response.status_code = 200
            response._content = b"<html>login</html>" if "batch" in url else b'{"x": 1}'
            return response

        def close(self):
            pass

    with KVClient(server.url, session=Foreign()) as kv:
        with pytest.raises(KVError, match="unexpected answer"):
            kv.get(MISSING)
        with pytest.raises(KVError, match="not JSON"):
            kv.get_many([MISSING])


class Recording(requests.Session):
    """A session that remembers the status of every answer."""

    def __init__(self):
        super().__init__()
        self.statuses: list[int] = []

    def request(self, *args, **kwargs):
        response = super().request(*args, **kwargs)
        self.statuses.append(response.status_code)
        return response


def test_etags_make_an_unchanged_value_a_304(server, data):
    key = next(iter(data))
    session = Recording()
    with KVClient(server.url, session=session, etags=True) as kv:
        assert kv.get(key) == data[key]
        assert kv.get(key) == data[key]
        assert kv[key.upper()] == data[key]
    assert session.statuses == [200, 304, 304]


class Flaky(threading.Thread):
    """An HTTP server answering 503 `failures` times, then kv_app's answer for any id."""

    def __init__(self, failures: int):
        super().__init__(daemon=True)
        self.failures, self.hits = failures, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits += 1
                if outer.hits <= outer.failures:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"id": self.path[7:], "value": "v"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def run(self):
        self.httpd.serve_forever()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_503_is_retried_with_backoff():
    with Flaky(failures=2) as flaky, KVClient(flaky.url, retries=2, backoff=0.01) as kv:
        assert kv.get(MISSING) == "v"
        assert flaky.hits == 3


def test_unavailable_is_not_not_found():
    with Flaky(failures=100) as flaky, KVClient(flaky.url, retries=2, backoff=0.01) as kv:
        with pytest.raises(KVUnavailable, match="HTTP 503"):
            kv.get(MISSING)
        assert flaky.hits == 3
    with KVClient("http://127.0.0.1:9", retries=1, backoff=0.01) as kv:
        with pytest.raises(KVUnavailable, match="cannot reach"):
            kv.get(MISSING)


class LosesOneBatch(requests.Session):
    """A session whose second batch POST never reaches the server (a shard or a proxy
    down for it alone)."""

    def __init__(self):
        super().__init__()
        self.posts = 0

    def request(self, method, url, **kwargs):
        if method == "POST":
            self.posts += 1
            if self.posts == 2:
                raise requests.ConnectionError("refused")
        return super().request(method, url, **kwargs)


def test_get_many_keeps_what_answered_and_names_what_did_not(server, data):
    """One batch unavailable: the others' values are kept, that batch's ids named
    (KVPartial, a KVUnavailable), lower-case and in the order asked."""
    keys = list(data)[:90]
    with KVClient(server.url, session=LosesOneBatch(), batch_size=30) as kv:
        with pytest.raises(KVPartial, match="30 of 90 ids could not be looked up") as caught:
            kv.get_many([k.upper() for k in keys])
    assert caught.value.unavailable == keys[30:60]
    assert caught.value.items == {k: data[k] for k in keys[:30] + keys[60:]}
    assert isinstance(caught.value, KVUnavailable)
