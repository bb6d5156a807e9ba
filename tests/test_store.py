"""The store behaves as a read-only Mapping of canonical keys."""

from collections.abc import Mapping

import pytest

from kv_app.store import DictStore, canonical_key


@pytest.fixture
def store(tricky_file):
    path, expected = tricky_file
    return DictStore.from_file(path), expected


def test_is_a_mapping_with_every_value(store):
    s, expected = store
    assert isinstance(s, Mapping)
    assert len(s) == len(expected)
    assert dict(s) == expected
    assert set(s) == set(expected)
    assert s.report.pairs == len(expected)


def test_lookups_ignore_case(store):
    s, expected = store
    key, value = next(iter(expected.items()))
    assert s[key.upper()] == value
    assert s.get(key.upper()) == value
    assert key.upper() in s


def test_missing_keys(store):
    s, _ = store
    missing = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(KeyError):
        s[missing]
    with pytest.raises(KeyError):
        s[missing.upper().replace("0", "A")]
    assert s.get(missing) is None
    assert s.get(missing, "d") == "d"
    assert missing not in s
    assert 42 not in s


def test_empty_value_is_a_value_not_a_miss(store):
    s, _ = store
    key = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a02"
    assert s[key] == "" and s.get(key, "default") == "" and key in s


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8A35EB59-62B3-481C-8875-1F248DF4C952", "8a35eb59-62b3-481c-8875-1f248df4c952"),
        ("8a35eb59-62b3-481c-8875-1f248df4c952", "8a35eb59-62b3-481c-8875-1f248df4c952"),
        ("8a35eb5962b3481c88751f248df4c952", None),
        ("{8a35eb59-62b3-481c-8875-1f248df4c952}", None),
        ("urn:uuid:8a35eb59-62b3-481c-8875-1f248df4c952", None),
        ("8a35eb59-62b3-481c-8875-1f248df4c95g", None),
        ("8a35eb59-62b3-481c-8875-1f248df4c952\n", None),
        ("", None),
    ],
)
def test_canonical_key(text, expected):
    assert canonical_key(text) == expected
