"""The loader: good files exactly, every kind of bad file with its path:line reason."""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from kv_app import loader, reader
from kv_app.loader import LoadError, Problem
from kv_app.stores import STORES

K1 = "8a35eb59-62b3-481c-8875-1f248df4c952"
K2 = "06bf4950-90ea-44d4-9df9-7fa724212196"
K3 = "426f89d1-76ec-4954-814f-283063308fdb"


def write(tmp_path, content: bytes, name="d.data"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_tricky_values_come_back_exactly(tricky_file):
    path, expected = tricky_file
    data, report = loader.load(path)
    assert data == expected
    assert report.pairs == len(expected)
    assert report.bytes == path.stat().st_size
    assert report.skipped == []


def test_generated_file_fast_path_equals_the_careful_one(monkeypatch, data_file, data):
    fast, report = loader.load(data_file)
    monkeypatch.setattr(loader, "_fast", lambda checked: None)  # the careful path only
    slow, careful = loader.load(data_file)
    assert fast == slow == data
    assert careful.skipped == [] and not careful.bom
    assert report.identity.sha256 == careful.identity.sha256
    assert report.sha256 == hashlib.sha256(data_file.read_bytes()).hexdigest()


@pytest.mark.parametrize("chunk", [40, 64, 100, 1000])
def test_chunk_boundaries_do_not_matter(monkeypatch, data_file, data, chunk):
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    assert loader.load(data_file)[0] == data


def test_fast_path_is_taken_for_a_good_file(monkeypatch, data_file):
    def fail(checked, problems):
        raise AssertionError("careful path used for a good file")

    monkeypatch.setattr(loader, "_careful", fail)
    loader.load(data_file)


def test_upper_case_keys_are_stored_lower_case(tmp_path):
    path = write(tmp_path, f"{K1.upper()} v1\n{K2} v2\n".encode())
    assert loader.load(path)[0] == {K1: "v1", K2: "v2"}


def test_non_version_4_uuids_are_accepted(tmp_path):
    v1 = "c232ab00-9414-11ec-b3c8-9f6bdeced846"
    path = write(tmp_path, f"{v1} time-based\n".encode())
    assert loader.load(path)[0] == {v1: "time-based"}


def test_byte_order_mark_is_ignored_and_reported(tmp_path):
    path = write(tmp_path, loader.BOM + f"{K1} v1\n{K2} v2\n".encode())
    for strict in (True, False):
        data, report = loader.load(path, strict=strict)
        assert data == {K1: "v1", K2: "v2"}
        assert report.bom


# (content, line, reason fragment) of each kind of bad line; K3 v3 always follows.
BAD_LINES = [
    pytest.param(f"{K1} v1\r\n", 1, "line ends with CR", id="crlf"),
    pytest.param("\n", 1, "blank line", id="blank-line"),
    pytest.param(f"{K1}\tv1\n", 1, "found a tab", id="tab-separator"),
    pytest.param(f"{K1}\n", 1, "no space between key and value", id="no-separator"),
    pytest.param(f"{K1[:-1]} v1\n", 1, "key is not a UUID", id="short-uuid"),
    pytest.param(f"{K1}0 v1\n", 1, "key is not a UUID", id="long-uuid"),
    pytest.param(f"{K1.replace('-', '')} v1\n", 1, "key is not a UUID", id="no-dashes"),
    pytest.param(f"{{{K1}}} v1\n", 1, "key is not a UUID", id="braces"),
    pytest.param(f"{K1[:-1]}g v1\n", 1, "key is not a UUID", id="non-hex"),
    pytest.param(f"{K1} v1\n{K1} v1\n", 2, "duplicate key", id="duplicate-same-value"),
    pytest.param(f"{K1} v1\n{K1} other\n", 2, "duplicate key", id="duplicate-other-value"),
    pytest.param(f"{K1} v1\n{K1.upper()} v1\n", 2, "duplicate key", id="duplicate-by-case"),
    pytest.param(f"{K1} v\x001\n", 1, "NUL byte at column 39", id="nul-byte"),
]


@pytest.mark.parametrize("content, line, reason", BAD_LINES)
def test_bad_line_strict_names_path_and_line(tmp_path, content, line, reason):
    path = write(tmp_path, (content + f"{K3} v3\n").encode())
    with pytest.raises(LoadError) as e:
        loader.load(path)
    message = str(e.value)
    assert message.startswith(f"{path}:{line}: ")
    assert reason in message
    assert e.value.problems[0].line == line


@pytest.mark.parametrize("content, line, reason", BAD_LINES)
def test_bad_line_lenient_skips_it_and_keeps_the_rest(tmp_path, content, line, reason):
    path = write(tmp_path, (content + f"{K3} v3\n").encode())
    data, report = loader.load(path, strict=False)
    assert data[K3] == "v3"
    assert [p.line for p in report.skipped] == [line]
    assert reason in report.skipped[0].reason
    if "duplicate" in reason:
        assert data[K1] == "v1"  # the first value wins
    assert "skipped 1 bad lines" in report.summary()


def test_invalid_utf8(tmp_path):
    path = write(tmp_path, f"{K3} v3\n{K1} caf".encode() + b"\xe9\n")
    with pytest.raises(LoadError, match=rf"^{path}:2: invalid UTF-8 at byte 41 of the line$"):
        loader.load(path)
    data, report = loader.load(path, strict=False)
    assert data == {K3: "v3"} and report.skipped[0].line == 2


def test_strict_error_lists_many_problems_then_counts(tmp_path):
    path = write(tmp_path, b"bad\n" * 25 + f"{K1} v1\n".encode())
    with pytest.raises(LoadError) as e:
        loader.load(path)
    lines = str(e.value).splitlines()
    assert len(lines) == loader.SHOWN_PROBLEMS + 1
    assert lines[0] == f"{path}:1: no space between key and value"
    assert lines[-1] == f"{path}: ... and 5 more bad lines"
    assert len(e.value.problems) == 25


def test_a_huge_value_loads(tmp_path):
    big = "v" * (10 * 1024 * 1024)
    path = write(tmp_path, f"{K1} {big}\n{K2} small\n".encode())
    data, _ = loader.load(path)
    assert data[K1] == big and data[K2] == "small"


@pytest.mark.parametrize("strict", [True, False])
def test_empty_file(tmp_path, strict):
    path = write(tmp_path, b"")
    with pytest.raises(LoadError, match=rf"^{path}: file is empty$"):
        loader.load(path, strict=strict)


def test_file_of_only_bad_lines_lenient(tmp_path):
    path = write(tmp_path, b"junk\n\n")
    with pytest.raises(LoadError, match=rf"^{path}: no valid pairs$"):
        loader.load(path, strict=False)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.data"
    with pytest.raises(LoadError, match=rf"^{path}: no such file$"):
        loader.load(path)


def test_directory(tmp_path):
    with pytest.raises(LoadError, match=rf"^{tmp_path}: is a directory, not a data file$"):
        loader.load(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = write(tmp_path, f"{K1} v1\n".encode())
    path.chmod(0)
    with pytest.raises(LoadError, match="permission denied"):
        loader.load(path)


def test_unreadable_file_as_root(tmp_path, monkeypatch):
    """Root reads any file, so simulate the EACCES an ordinary user gets."""
    path = write(tmp_path, f"{K1} v1\n".encode())

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(LoadError, match=rf"^{path}: permission denied \(cannot read the file\)$"):
        loader.load(path)


@pytest.mark.parametrize("strict", [True, False])
def test_file_that_changes_while_loading(tmp_path, monkeypatch, data_file, strict):
    path = write(tmp_path, data_file.read_bytes())
    monkeypatch.setattr(reader, "CHUNK_BYTES", 4096)

    def append_once(done, total):
        if done <= 4096:
            with open(path, "ab") as f:
                f.write(f"{K1} appended\n".encode())

    with pytest.raises(LoadError, match="file changed while it was being loaded"):
        loader.load(path, strict=strict, progress=append_once)


def test_file_replaced_by_rename_while_loading_gives_the_old_file(
    tmp_path, monkeypatch, data_file, data
):
    path = write(tmp_path, data_file.read_bytes())
    new = write(tmp_path, f"{K1} new\n".encode(), name="new.data")
    monkeypatch.setattr(reader, "CHUNK_BYTES", 4096)

    def replace(done, total):
        if new.exists():
            os.replace(new, path)

    assert loader.load(path, progress=replace)[0] == data


def test_progress_reports_bytes(data_file):
    seen = []
    loader.load(data_file, progress=lambda done, total: seen.append((done, total)))
    size = data_file.stat().st_size
    assert seen[-1] == (size, size)


def test_tty_progress_is_off_when_not_a_terminal(capsys):
    import sys

    assert loader.tty_progress(sys.stderr) is None


def test_tty_progress_draws_a_bar():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    show = loader.tty_progress(stream, min_bytes=0)
    show(50, 100)
    show(100, 100)
    assert "[###############...............]  50%" in stream.getvalue()
    assert stream.getvalue().endswith("100%\n")


def test_check_lists_every_problem(tmp_path):
    path = write(tmp_path, f"{K1} v1\nbad\n\n{K1} again\n{K2} v2".encode())
    pairs, problems = loader.check(path)
    assert pairs == 2
    assert problems == [
        Problem(2, "no space between key and value"),
        Problem(3, "blank line"),
        Problem(4, "duplicate key 8a35eb59-62b3-481c-8875-1f248df4c952 (first on line 1)"),
    ]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(
    "kind, reason",
    [
        ("missing", "no such file"),
        ("directory", "is a directory, not a data file"),
        ("empty", "file is empty"),
        ("only-blank-lines", None),
    ],
)
def test_unusable_files_in_both_modes(tmp_path, kind, reason, strict):
    path = {"missing": tmp_path / "x.data", "directory": tmp_path}.get(kind, tmp_path / "f.data")
    if kind == "empty":
        path.write_bytes(b"")
    if kind == "only-blank-lines":
        path.write_bytes(b"\n\n")
        reason = "1: blank line" if strict else "no valid pairs"
    with pytest.raises(LoadError, match=f"^{path}:? ?{reason}"):
        loader.load(path, strict=strict)


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(
    "kind",
    ["not-version-4", "upper-case", "huge-value", "no-final-newline", "empty-value", "bom"],
)
def test_accepted_kinds_in_both_modes(tmp_path, kind, strict):
    """Files that look odd but are valid: the same pairs in strict and lenient mode."""
    key, value = {
        "not-version-4": ("c232ab00-9414-11ec-b3c8-9f6bdeced846", "v1 uuid"),
        "upper-case": (K1.upper(), "upper"),
        "huge-value": (K1, "v" * (10 * 1024 * 1024)),
        "no-final-newline": (K1, "last"),
        "empty-value": (K1, ""),
        "bom": (K1, "after a byte-order mark"),
    }[kind]
    if kind == "bom":  # the mark stands before the first line
        raw = loader.BOM + f"{key} {value}\n{K2} first\n".encode()
    else:
        end = "" if kind == "no-final-newline" else "\n"
        raw = f"{K2} first\n{key} {value}{end}".encode()
    data, report = loader.load(write(tmp_path, raw), strict=strict)
    assert data == {K2: "first", key.lower(): value}
    assert report.skipped == []
    assert report.bom == (kind == "bom")


# The value limit (KV_MAX_VALUE_BYTES), here a small one for files of a few MB.
LIMIT = 1000
OVER = f"value of 3,000,000 bytes, over KV_MAX_VALUE_BYTES ({LIMIT:,})"


def huge_line_file(tmp_path, key=K2):
    """Line 2 holds a value of 3,000,000 bytes: over LIMIT, across many chunks."""
    return write(tmp_path, f"{K1} v1\n{key} {'v' * 3_000_000}\n{K3} v3\n".encode())


def text_stores():
    return [kind for kind in STORES.values() if kind.loads_text]


@pytest.mark.parametrize("chunk", [64, 4096, 8 * 1024 * 1024])
def test_a_value_over_the_limit_stops_a_strict_load_with_path_and_line(
    tmp_path, monkeypatch, chunk
):
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    path = huge_line_file(tmp_path)
    for load in [loader.load, *(store.open for store in text_stores())]:
        with pytest.raises(LoadError) as e:
            load(path, max_value_bytes=LIMIT)
        assert str(e.value) == f"{path}:2: {OVER}"
        assert e.value.problems == (Problem(2, OVER),)


@pytest.mark.parametrize("chunk", [64, 8 * 1024 * 1024])
def test_a_value_over_the_limit_is_skipped_when_lenient(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    path = huge_line_file(tmp_path)
    data, report = loader.load(path, strict=False, max_value_bytes=LIMIT)
    assert data == {K1: "v1", K3: "v3"}
    assert report.skipped == [Problem(2, OVER)]
    assert "skipped 1 bad lines (lines 2)" in report.summary()
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # every byte read
    for store in text_stores():
        s = store.open(path, strict=False, max_value_bytes=LIMIT)
        assert dict(s) == {K1: "v1", K3: "v3"} and s.report.skipped == [Problem(2, OVER)]
    assert loader.check(path, max_value_bytes=LIMIT) == (2, [Problem(2, OVER)])


@pytest.mark.parametrize("chunk", [64, 100, 1000, 8 * 1024 * 1024])
def test_values_of_exactly_the_limit_load_byte_for_byte(tmp_path, monkeypatch, chunk):
    """At the limit, counted in bytes of UTF-8: first line after a byte-order mark,
    a middle one, the last one without its newline."""
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    values = {
        K1: "é" * (LIMIT // 2),
        K2: "x☃" + " \t" * ((LIMIT - 6) // 2) + "\r" + "v",
        K3: "𝄞" * (LIMIT // 4),
    }
    assert all(len(v.encode()) == LIMIT for v in values.values())
    text = "\n".join(f"{k} {v}" for k, v in values.items()).encode()
    for raw in (text, loader.BOM + text):
        path = write(tmp_path, raw)
        for strict in (True, False):
            data, report = loader.load(path, strict=strict, max_value_bytes=LIMIT)
            assert data == values and report.skipped == []
            for store in text_stores():
                s = store.open(path, strict=strict, max_value_bytes=LIMIT)
                assert {k: s[k] for k in values} == values and len(s) == 3
        assert loader.check(path, max_value_bytes=LIMIT) == (3, [])
        with pytest.raises(LoadError, match=rf"^{path}:1: value of 1,000 bytes, over .* \(999\)"):
            loader.load(path, max_value_bytes=LIMIT - 1)


def test_a_huge_line_with_a_bad_key_is_named_by_its_key(tmp_path):
    path = huge_line_file(tmp_path, key="x" * 40)
    with pytest.raises(LoadError, match=rf"^{path}:2: key is not a UUID .*: 'xxxxxxxx"):
        loader.load(path, max_value_bytes=LIMIT)


def test_a_huge_line_is_never_held_whole(tmp_path, monkeypatch):
    """The reader gives up on a line over the limit after about the limit and a chunk:
    it keeps only the head while it counts (and hashes) the rest. Every store, the build
    and the check read through it."""
    monkeypatch.setattr(reader, "CHUNK_BYTES", 4096)
    path = huge_line_file(tmp_path)
    max_line = 37 + LIMIT + 3
    reading = reader.Reading(digest=hashlib.sha256())
    held = []
    with reader.opened(path) as (f, _):
        for chunk in reader.chunks(f, reading, max_value_bytes=LIMIT):
            held.append(len(chunk.buf))
            assert f.tell() <= max_line + 3 * 4096 or chunk.base > 3_000_000
    assert max(held) <= max_line + 2 * 4096
    assert reading.problems == [Problem(2, OVER)]
    assert reading.digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_stores_take_the_limit_from_the_environment(tmp_path, monkeypatch):
    """create_app passes no limit: the stores read KV_MAX_VALUE_BYTES, else 4 MiB."""
    monkeypatch.delenv("KV_MAX_VALUE_BYTES", raising=False)
    default = 4 * 1024 * 1024
    at = write(tmp_path, f"{K1} {'v' * default}\n".encode(), name="at.data")
    over = write(tmp_path, f"{K1} {'v' * (default + 1)}\n".encode(), name="over.data")
    small = huge_line_file(tmp_path)
    for store in text_stores():
        assert len(store.open(at)) == 1
        with pytest.raises(LoadError, match=rf"^{over}:1: value of 4,194,305 bytes, over "):
            store.open(over)
        assert len(store.open(small, strict=False)) == 3
        monkeypatch.setenv("KV_MAX_VALUE_BYTES", str(LIMIT))
        with pytest.raises(LoadError, match=f"^{re.escape(f'{small}:2: {OVER}')}$"):
            store.open(small)
        monkeypatch.setenv("KV_MAX_VALUE_BYTES", "lots")
        with pytest.raises(LoadError, match="^KV_MAX_VALUE_BYTES='lots': expected a whole number"):
            store.open(small)
        monkeypatch.delenv("KV_MAX_VALUE_BYTES")
