"""check_lines (all lines of a chunk at once) agrees with parse_line (one line)."""

import pytest

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
