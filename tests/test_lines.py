"""check_lines (all lines of a chunk at once) agrees with parse_line (one line)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kv_app.lines import check_lines, oversize_reason, parse_line

K = "8a35eb59-62b3-481c-8875-1f248df4c952"

GOOD = [f"{K} value", f"{K.upper()} value", f"{K} ", f"{K} tab\there", f"{K} caf\u00e9 \u2603"]
BAD = [
    "",
    f"{K}",
    f"{K}\tvalue",
    f"{K[:-1]} value",
    f"{K}0 value",
    f"{K.replace('-', '')} value",
    f"{{{K}}} value",
    f"{K[:-1]}g value",
    f"{K} value\r",
    f"{K} va\x00lue",
    f"{K[:8]}_{K[9:]} value",
]


@pytest.mark.parametrize("line", GOOD)
def test_good_lines(line):
    raw = line.encode() + b"\n"
    key, value, reason = parse_line(raw)
    assert reason is None and key == K and value == line[37:]
    starts, ends, upper = check_lines(raw * 3)
    assert starts.tolist() == [0, len(raw), 2 * len(raw)]
    assert ends.tolist() == [len(raw) - 1, 2 * len(raw) - 1, 3 * len(raw) - 1]
    assert upper == (line != line.lower() and line[:36] != K)


@pytest.mark.parametrize("line", BAD)
def test_bad_lines(line):
    raw = line.encode() + b"\n"
    assert parse_line(raw)[2] is not None
    good = f"{K} fine\n".encode()
    assert check_lines(good + raw + good) is None


# Keys near good ones: a good key with a few characters changed, cut or added.
_near_key = st.builds(
    lambda key, edits: _edit(key, edits),
    st.sampled_from([K, K.upper(), "00000000-0000-4000-8000-000000000000"]),
    st.lists(
        st.tuples(
            st.integers(0, 37),
            st.sampled_from(["-", "", "x", "g", "G", " ", "\t", "é", "0", "F", "{", "\x00"]),
        ),
        max_size=2,
    ),
)
_line = st.builds(
    lambda key, sep, value: f"{key}{sep}{value}",
    _near_key,
    st.sampled_from([" ", " ", " ", "\t", "", "  "]),
    st.text(alphabet=st.sampled_from("ab \t\r\x00é☃{}-"), max_size=6),
)


def _edit(key: str, edits) -> str:
    for at, char in edits:
        key = key[:at] + char + key[at + 1 :]
    return key


@settings(max_examples=500, deadline=None)
@given(st.lists(_line, min_size=1, max_size=6))
def test_check_lines_agrees_with_parse_line(lines):
    """The vectorised check (the loader's fast path) and the one-line reference parser
    (its reference path) accept exactly the same lines."""
    raw = [line.encode("utf-8") + b"\n" for line in lines]
    checked = check_lines(b"".join(raw))
    all_good = all(parse_line(r)[2] is None for r in raw)
    assert (checked is not None) == all_good, [parse_line(r)[2] for r in raw]
    if checked is not None:
        starts, ends, upper = checked
        offsets = [sum(map(len, raw[:i])) for i in range(len(raw))]
        assert starts.tolist() == offsets
        assert ends.tolist() == [o + len(r) - 1 for o, r in zip(offsets, raw, strict=True)]
        assert upper == any(r[:36] != r[:36].lower() for r in raw)


@pytest.mark.parametrize("max_value_bytes", [0, 1, 5, 1000])
def test_a_value_up_to_the_limit_is_good_and_one_byte_more_is_not(max_value_bytes):
    """The limit counts the value's bytes of UTF-8 (a "é" is two), not the line's."""
    at_limit = "é" * (max_value_bytes // 2) + "v" * (max_value_bytes % 2)
    for value, good in ((at_limit, True), (at_limit + "v", False)):
        raw = f"{K} {value}\n".encode()
        key, parsed, reason = parse_line(raw, max_value_bytes)
        if good:
            assert (key, parsed, reason) == (K, value, None)
        else:
            limit = f"{max_value_bytes:,}"
            expected = f"value of {len(value.encode()):,} bytes, over KV_MAX_VALUE_BYTES ({limit})"
            assert reason == expected
        assert (check_lines(raw * 2, max_value_bytes) is not None) == good
        assert parse_line(raw)[2] is None and check_lines(raw) is not None  # no limit


def test_a_line_over_the_limit_is_named_by_its_key_when_that_is_bad():
    reason = parse_line(b"x" * 100 + b"\n", 10)[2]
    assert reason == f"key is not a UUID (8-4-4-4-12 hex digits): {'x' * 37!r}"
    assert parse_line(f"{K}\t{'v' * 20}\n".encode(), 10)[2].startswith("key is not a UUID")
    # Over the limit counts before the rest (a CR, a NUL, bad UTF-8 in the value) ...
    assert parse_line(f"{K} {'v' * 20}\r\n".encode(), 10)[2].startswith("value of 21 bytes")
    # ... and from the head and length alone, as a reader of a huge line gives them.
    assert oversize_reason(f"{K.upper()} v".encode(), 3_000_000_000, 4) == (
        "value of 3,000,000,000 bytes, over KV_MAX_VALUE_BYTES (4)"
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, min_size=1, max_size=6), st.integers(0, 8))
def test_check_lines_agrees_with_parse_line_under_a_value_limit(lines, max_value_bytes):
    raw = [line.encode("utf-8") + b"\n" for line in lines]
    checked = check_lines(b"".join(raw), max_value_bytes)
    all_good = all(parse_line(r, max_value_bytes)[2] is None for r in raw)
    assert (checked is not None) == all_good, [parse_line(r, max_value_bytes)[2] for r in raw]
