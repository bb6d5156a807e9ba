"""KVClient against a real server."""

import pytest
import requests

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
