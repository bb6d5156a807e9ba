"""deploy/nginx-cache.conf: what makes a cache entry (skipped where nginx is not
installed). Its other tests (HITs, staleness, request ids) are in test_faults.py."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
import requests
from test_faults import nginx_front

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
        statuses = Counter()
        for n in range(300):
            r = requests.get(f"{url}/items/{key}?x={n}", timeout=5)
            assert r.status_code == 200 and r.json() == {"id": key, "value": value}
            statuses[r.headers["X-Cache-Status"]] += 1
        assert statuses == {"MISS": 1, "HIT": 299}
        for spelling in spellings(key):
            r = requests.get(f"{url}/items/{spelling}?junk", timeout=5)
            assert r.status_code == 200 and r.json() == {"id": key, "value": value}, spelling
            assert r.headers["X-Cache-Status"] == "HIT", spelling
        # The representation still counts (Vary: Accept): text is its own entry.
        text = [
            requests.get(f"{url}/items/{s}", headers={"Accept": "text/plain"}, timeout=5)
            for s in (key.upper(), key)
        ]
        assert [t.text for t in text] == [value, value]
        assert [t.headers["X-Cache-Status"] for t in text] == ["MISS", "HIT"]


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
