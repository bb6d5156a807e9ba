"""deploy/nginx-cache.conf: what makes a cache entry (skipped where nginx is not
installed). Its other tests (HITs, staleness, request ids) are in test_faults.py."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter

import orjson
import pytest
import requests
from test_faults import nginx_front

from conftest import wait_for

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


def spellings(key: str) -> list[str]:
    """Other ways to write one id: upper-case, mixed case, a hex digit percent-encoded."""
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(key))
    first = key[0]  # a digit or a letter: %3x or %6x either way
    return [key.upper(), mixed, f"%{ord(first):02X}{key[1:]}", f"%{ord(first):02x}{key[1:]}"]


def test_one_cache_entry_per_id_whatever_its_spelling_or_query(
    start_server, data_file, data, tmp_path
):
    """Issue 14, item 14: every `?x=N` or other spelling of an id was a new cache entry
    (300 of 300 misses), so junk could flush the cache. The key is now the canonical id;
    the query string is ignored (kv_app's answer does not depend on it)."""
    server = start_server(data_file)
    key, value = next(iter(data.items()))
    with nginx_front("nginx-cache.conf", server.port, tmp_path) as (url, _):

        def status(path: str, **headers) -> str:
            """The cache status of an answer, which must be the id's value."""
            r = requests.get(f"{url}{path}", headers=headers, timeout=5)
            got = r.text if headers else r.json()
            assert r.status_code == 200 and got == (
                value if headers else {"id": key, "value": value}
            )
            return r.headers["X-Cache-Status"]

        assert status(f"/items/{key}?x=0") == "MISS"
        # nginx stores an answer once it has it whole: the next may come before that.
        wait_for(lambda: status(f"/items/{key}?x=1") == "HIT")
        statuses = Counter(status(f"/items/{key}?x={n}") for n in range(2, 300))
        assert statuses == {"HIT": 298}
        for spelling in spellings(key):
            r = requests.get(f"{url}/items/{spelling}?junk", timeout=5)
            assert r.status_code == 200 and r.json() == {"id": key, "value": value}, spelling
            assert r.headers["X-Cache-Status"] == "HIT", spelling
        # The representation still counts (Vary: Accept): text is its own entry.
        text = requests.get(
            f"{url}/items/{key.upper()}", headers={"Accept": "text/plain"}, timeout=5
        )
        assert text.text == value and text.headers["X-Cache-Status"] == "MISS"
        wait_for(lambda: status(f"/items/{key}", Accept="text/plain") == "HIT")


def test_what_is_no_id_is_never_cached(start_server, data_file, tmp_path):
    """Paths that are no id (malformed, other routes) pass through uncached, so they
    cannot take room in the cache either."""
    server = start_server(data_file)
    with nginx_front("nginx-cache.conf", server.port, tmp_path) as (url, _):
        for _ in range(2):
            r = requests.get(f"{url}/items/not-an-id", timeout=5)
            assert r.status_code == 400
            assert r.headers["X-Cache-Status"] in ("BYPASS", "MISS")
            r = requests.get(f"{url}/readyz", timeout=5)
            assert r.status_code == 200 and r.headers["X-Cache-Status"] != "HIT"


@pytest.mark.parametrize("conf", ["nginx.conf", "nginx-cache.conf"])
def test_gzip_passes_through_the_front_per_client(start_server, tricky_file, tmp_path, conf):
    """kv_app gzips (KV_COMPRESS_MIN_BYTES); the fronts pass Accept-Encoding and the
    gzipped answer through, and the cache keeps the encodings apart (Vary): a client
    that did not ask for gzip never gets it, one that did gets it from the cache, and
    If-None-Match with either ETag is answered 304 through the front."""
    path, pairs = tricky_file
    server = start_server(path)
    key = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a09"  # 5,000 characters: over 1024 bytes
    gz, identity = {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "identity"}
    with nginx_front(conf, server.port, tmp_path) as (url, _):

        def get(headers, stream=False):
            return requests.get(f"{url}/items/{key}", headers=headers, timeout=5, stream=stream)

        for _ in range(3):  # the first fills the cache (nginx-cache.conf); then HITs
            for headers in (gz, identity):
                r = get(headers, stream=True)
                raw = r.raw.read(decode_content=False)
                assert r.status_code == 200 and "Accept-Encoding" in r.headers["Vary"]
                if headers is gz:
                    assert r.headers["Content-Encoding"] == "gzip"
                    assert r.headers["ETag"].endswith(':gzip"')
                    assert gzip.decompress(raw) == orjson.dumps({"id": key, "value": pairs[key]})
                else:
                    assert "Content-Encoding" not in r.headers
                    assert not r.headers["ETag"].endswith(':gzip"')
                    assert orjson.loads(raw) == {"id": key, "value": pairs[key]}
        if conf == "nginx-cache.conf":
            assert get(gz).headers["X-Cache-Status"] == "HIT"
            assert get(identity).headers["X-Cache-Status"] == "HIT"
        for headers in (gz, identity):
            etag = get(headers).headers["ETag"]
            r = get({**headers, "If-None-Match": etag})
            assert r.status_code == 304 and r.content == b"", (headers, etag)
        small = requests.get(f"{url}/items/{next(iter(pairs))}", headers=gz, timeout=5)
        assert small.status_code == 200 and "Content-Encoding" not in small.headers
