"""KVClient against a real server."""

import pytest

from kv_app.client import KVClient, KVError

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
    with pytest.raises(ValueError):
        "nope" in kv  # noqa: B015


def test_ready(kv, store_kind):
    assert kv.ready() == {"status": "ready", "pairs": 2000, "store": store_kind}


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
