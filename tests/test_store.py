"""The store behaves as a read-only Mapping of canonical keys."""

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TRICKY
from kv_app import loader
from kv_app.stores import STORES, Store


@pytest.fixture
def store(tricky_file, store_kind, servable, tmp_path):
    path, expected = tricky_file
    return STORES[store_kind].open(servable(path, store_kind)), expected


def test_every_kind_follows_the_store_protocol(store):
    s, expected = store
    assert isinstance(s, Store)
    described = s.describe()
    assert described["store"] in STORES and described["pairs"] == len(expected)
    assert described["version"] == s.version and len(s.version) == 16


def test_is_a_mapping_with_every_value(store):
    s, expected = store
    assert isinstance(s, Mapping)
    assert len(s) == len(expected)
    assert dict(s) == expected
    assert set(s) == set(expected)
    assert s.describe()["pairs"] == len(expected)


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


def test_both_stores_agree_on_a_generated_file(data_file, data):
    compact = STORES["compact"].open(data_file)
    assert dict(STORES["dict"].open(data_file)) == dict(compact) == data
    assert list(compact) == sorted(data)  # iteration in key order


def test_compact_keys_sharing_their_high_half(tmp_path):
    """Keys alike in their first 64 bits (time-based UUIDs often are) are still told apart."""
    keys = [f"11111111-2222-4333-8444-{n:012x}" for n in (5, 1, 3, 0xFFFFFFFFFFFF)]
    path = tmp_path / "alike.data"
    path.write_text("".join(f"{k} value {k[-3:]}\n" for k in keys))
    s = STORES["compact"].open(path)
    for k in keys:
        assert s[k] == f"value {k[-3:]}"
    for missing in (
        "11111111-2222-4333-8444-000000000002",
        "11111111-2222-4333-8444-ffffffffffff"[:-1] + "e",
        "00000000-2222-4333-8444-000000000005",
        "ffffffff-2222-4333-8444-000000000005",
    ):
        assert missing not in s


@pytest.mark.parametrize("strict", [True, False])
def test_compact_falls_back_to_the_reference_path(tmp_path, strict):
    k1, k2 = "8a35eb59-62b3-481c-8875-1f248df4c952", "06bf4950-90ea-44d4-9df9-7fa724212196"
    path = tmp_path / "dup.data"
    path.write_text(f"{k1} first\n{k2} two\n{k1.upper()} second\n")
    if strict:
        with pytest.raises(
            loader.LoadError, match=rf"^{path}:3: duplicate key {k1} \(first on line 1\)$"
        ):
            STORES["compact"].open(path)
    else:
        s = STORES["compact"].open(path, strict=False)
        assert dict(s) == {k1: "first", k2: "two"}
        assert [p.line for p in s.report.skipped] == [3]


def test_compact_rejects_keys_the_dict_would_not_find(tricky_file):
    s = STORES["compact"].open(tricky_file[0])
    for bad in (
        " b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a01",
        "0b7e_bd2-8d4c-4b6a-9c43-2f1a1e6c0a01",
        "",
        "x" * 36,
        "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a0",
        "0b7e6bd2+8d4c+4b6a+9c43+2f1a1e6c0a01",
    ):
        assert s.get(bad) is None and bad not in s


def test_get_many_matches_get(data_file, data, store_kind, servable):
    s = STORES[store_kind].open(servable(data_file, store_kind))
    keys = list(data)[:300] + ["00000000-0000-4000-8000-000000000000"] + list(data)[-5:]
    assert s.get_many(keys) == [data.get(k) for k in keys]
    assert s.get_many([]) == []
    odd = [keys[0].upper(), "not-a-key", keys[1]]  # not canonical: answered one by one
    assert s.get_many(odd) == [data[keys[0]], None, data[keys[1]]]


def test_compact_get_many_with_keys_sharing_their_high_half(tmp_path):
    keys = [f"11111111-2222-4333-8444-{n:012x}" for n in (5, 1, 3)]
    path = tmp_path / "alike.data"
    path.write_text("".join(f"{k} v{k[-1]}\n" for k in keys))
    s = STORES["compact"].open(path)
    asked = [*keys, "11111111-2222-4333-8444-000000000002"]
    assert s.get_many(asked) == ["v5", "v1", "v3", None]


# Keys a store must not answer, though each has 36 characters or hex digits in place.
_MALFORMED = [
    "0b7e6bd2x8d4cx4b6ax9c43x2f1a1e6c0a01",  # x for each dash
    "0b7e6bd2-8d4c-4b6a-9c43x2f1a1e6c0a01",
    "0b7e6bd28-d4c-4b6a-9c43-2f1a1e6c0a01",  # a dash one column off
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a01\n",
    " 0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a0",
    "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a0é",
]


@pytest.mark.parametrize("bad", _MALFORMED)
def test_get_many_answers_no_malformed_key(store, bad):
    s, _ = store
    good = "0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a03"
    assert s.get_many([bad, good]) == [None, TRICKY[good]] == [s.get(bad), s.get(good)]


def test_get_many_keys_straddling_each_other(store):
    """35 + 37 characters: joined, they spell two good keys; neither is one."""
    s, _ = store
    asked = ["0b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a0", "10b7e6bd2-8d4c-4b6a-9c43-2f1a1e6c0a03"]
    assert s.get_many(asked) == [None, None]


_HEX = "0123456789abcdefABCDEF"
# Keys near the file's own: one of the file's keys with a few characters changed, cut or
# added, so that the fast vectorised path and its checks are what is exercised.
_near_keys = st.builds(
    lambda key, edits: _edit(key, edits),
    st.sampled_from(sorted(TRICKY)),
    st.lists(
        st.tuples(st.integers(0, 37), st.sampled_from(["-", "x", "", "é", " ", *_HEX])),
        max_size=3,
    ),
)


def _edit(key: str, edits) -> str:
    for at, char in edits:
        key = key[:at] + char + key[at + 1 :]
    return key


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.one_of(_near_keys, st.text(max_size=40)), max_size=8))
def test_get_many_is_get_for_any_keys(store_kind, tricky_file_once, keys):
    s = tricky_file_once[store_kind]
    assert s.get_many(keys) == [s.get(k) for k in keys]
