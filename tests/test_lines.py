"""check_lines (all lines of a chunk at once) agrees with parse_line (one line)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kv_app.lines import check_lines, parse_line

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
