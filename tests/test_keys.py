"""What a key is: one definition for the lines check, the stores, the views, the client."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kv_app.keys import EXAMPLE, canonical_key, canonical_keys, key_bytes, malformed


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
        ("8a35eb59x62b3x481cx8875x1f248df4c952", None),
        ("８a35eb59-62b3-481c-8875-1f248df4c952", None),  # a full-width digit
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_canonical_key(text, expected):
    assert canonical_key(text) == expected


def test_key_bytes_are_the_uuid_bytes():
    import uuid

    assert key_bytes(EXAMPLE) == uuid.UUID(EXAMPLE).bytes


def test_malformed_message_names_the_key_and_shortens_it():
    assert malformed("abc") == f"malformed id 'abc': expected a UUID such as {EXAMPLE}"
    assert "..." in malformed("a" * 100) and len(malformed("a" * 100)) < 150


K = "8a35eb59-62b3-481c-8875-1f248df4c952"


@pytest.mark.parametrize(
    "texts, expected",
    [
        ([], []),
        ([K, K.upper()], [K, K]),
        ([K, "nope"], None),
        ([K, None], None),
        ([f"{K}\n{K}"], None),  # one text with a newline is not two keys
        ([f"{K}\n{K}", ""], None),
        ([K + "\n"], None),
        ([""], None),
    ],
)
def test_canonical_keys_all_or_nothing(texts, expected):
    assert canonical_keys(texts) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from([K, K.upper(), K[:-1], K + "\n"]), st.text(max_size=40))))
def test_canonical_keys_is_canonical_key_for_each(texts):
    one_by_one = [canonical_key(t) for t in texts]
    expected = one_by_one if None not in one_by_one else None
    assert canonical_keys(texts) == expected
