"""Snapshots: built exactly as the strict load checks a file, refused when damaged,
published as versions and rolled back, served and swapped by a real server."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from test_faults import children, finish, streams
from test_loader import BAD_LINES, K1, K3, LIMIT, OVER, huge_line_file, write

from conftest import _load_script, make_data, wait_for, write_tricky
from kv_app import cli, loader, reader
from kv_app.loader import LoadError
from kv_app.stores import build as building
from kv_app.stores import snapshot, versions
from kv_app.stores.build import build
from kv_app.stores.snapshot import SnapshotError, open_snapshot
from kv_app.stores.versions import publish, rollback


def built(tmp_path: Path, content: bytes, **kwargs):
    return build(write(tmp_path, content), tmp_path / "snap", **kwargs)


def test_a_build_serves_exactly_what_the_load_serves(tmp_path, data_file, data):
    build(data_file, tmp_path / "snap")
    store = open_snapshot(tmp_path / "snap")
    assert dict(store) == data == dict(loader.load(data_file)[0])
    assert list(store) == sorted(data)
    assert store.get_many([*list(data)[:5], K1, "nope"]) == [*list(data.values())[:5], None, None]


def test_tricky_values_and_a_last_line_without_newline(tmp_path):
    expected = write_tricky(tmp_path / "tricky.data")
    build(tmp_path / "tricky.data", tmp_path / "snap")
    assert dict(open_snapshot(tmp_path / "snap")) == expected


@pytest.mark.parametrize("chunk", [40, 64, 100, 1000])
def test_chunk_boundaries_do_not_matter(monkeypatch, tmp_path, data_file, data, chunk):
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    build(data_file, tmp_path / "snap")
    assert dict(open_snapshot(tmp_path / "snap")) == data


@pytest.mark.parametrize("content, line, reason", BAD_LINES)
def test_bad_lines_give_the_strict_load_message(tmp_path, content, line, reason):
    path = write(tmp_path, (content + f"{K3} v3\n").encode())
    with pytest.raises(LoadError) as loaded:
        loader.load(path)
    with pytest.raises(LoadError) as building:
        build(path, tmp_path / "snap")
    assert str(building.value) == str(loaded.value)
    assert not (tmp_path / "snap").exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


@pytest.mark.parametrize("content, line, reason", BAD_LINES)
def test_lenient_build_keeps_what_the_lenient_load_keeps(tmp_path, content, line, reason):
    path = write(tmp_path, (content + f"{K3} v3\n").encode())
    data, report = loader.load(path, strict=False)
    manifest = build(path, tmp_path / "snap", strict=False)
    assert dict(open_snapshot(tmp_path / "snap")) == data
    assert manifest["problems"] == report.skipped and manifest["skipped_lines"] == 1


def test_many_problems_and_a_bom(tmp_path):
    path = write(tmp_path, b"bad\n" * 25 + f"{K1} v1\n".encode())
    with pytest.raises(LoadError) as loaded:
        loader.load(path)
    with pytest.raises(LoadError) as building:
        build(path, tmp_path / "snap")
    assert str(building.value) == str(loaded.value)
    bom = write(tmp_path, loader.BOM + f"{K1} v1\n".encode(), name="bom.data")
    manifest = build(bom, tmp_path / "bom.snap")
    assert manifest["bom"] and dict(open_snapshot(tmp_path / "bom.snap")) == {K1: "v1"}


@pytest.mark.parametrize(
    "content, message",
    [(b"", "file is empty"), (b"junk\n", "no valid pairs")],
)
def test_files_that_cannot_be_served(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(LoadError, match=f"^{path}: {message}$"):
        build(path, tmp_path / "snap", strict=False)


def test_a_snapshot_is_never_overwritten(tmp_path, data_file):
    build(data_file, tmp_path / "snap")
    with pytest.raises(SnapshotError, match="already exists"):
        build(data_file, tmp_path / "snap")


def _damage(snap: Path, how: str) -> str:
    """Damage a built snapshot; return the fragment of the refusal expected."""
    data, manifest = snap / snapshot.DATA_FILE, snap / snapshot.MANIFEST
    m = json.loads(manifest.read_text())
    if how == "truncated":
        os.truncate(data, data.stat().st_size // 2)
        return "truncated or replaced?"
    if how == "garbage":
        data.write_bytes(os.urandom(data.stat().st_size))
        return "not a readable LMDB file"
    if how == "wrong-version":
        manifest.write_text(json.dumps({**m, "format_version": 99}))
        return "snapshot format version 99; this kv_app"
    if how == "foreign-manifest":
        manifest.write_text(json.dumps({"name": "something else"}))
        return "not a kv_app snapshot manifest"
    if how == "manifest-not-json":
        manifest.write_text("{")
        return "not JSON"
    if how == "no-manifest":
        manifest.unlink()
        return "not a kv_app snapshot (no manifest.json)"
    if how == "no-data":
        data.unlink()
        return "data.mdb is missing"
    if how == "wrong-count":
        manifest.write_text(json.dumps({**m, "pairs": m["pairs"] + 1}))
        return "entries, the manifest says"
    if how == "lacks-fields":
        del m["data_bytes"]
        manifest.write_text(json.dumps(m))
        return "manifest lacks data_bytes"
    raise AssertionError(how)


DAMAGES = [
    "truncated",
    "garbage",
    "wrong-version",
    "foreign-manifest",
    "manifest-not-json",
    "no-manifest",
    "no-data",
    "wrong-count",
    "lacks-fields",
]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_snapshot_is_refused_with_one_line(tmp_path, data_file, how):
    build(data_file, tmp_path / "snap")
    fragment = _damage(tmp_path / "snap", how)
    with pytest.raises(SnapshotError) as e:
        open_snapshot(tmp_path / "snap")
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_a_flipped_byte_is_found_by_a_deep_check(tmp_path, data_file):
    build(data_file, tmp_path / "snap")
    data = tmp_path / "snap" / snapshot.DATA_FILE
    raw = bytearray(data.read_bytes())
    raw[-100] ^= 0xFF
    data.write_bytes(bytes(raw))
    open_snapshot(tmp_path / "snap")  # the cheap checks cannot see it
    with pytest.raises(SnapshotError, match="sha256 differs"):
        snapshot.verify(tmp_path / "snap")


def test_a_text_file_or_an_empty_directory_is_no_snapshot(tmp_path, data_file):
    with pytest.raises(SnapshotError, match="not a snapshot directory"):
        open_snapshot(data_file)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnapshotError, match="no manifest.json"):
        open_snapshot(tmp_path / "empty")


def _tagged(tmp_path: Path, tag: str, pairs: int = 300) -> Path:
    path = tmp_path / f"{tag}.data"
    path.write_text("".join(f"{k} {tag}:{v}\n" for k, v in make_data.pairs(pairs, seed=11)))
    return path


def test_publish_keeps_versions_and_rollback_goes_back(tmp_path):
    root = tmp_path / "root"
    for n in range(1, 5):
        assert publish(_tagged(tmp_path, f"v{n}"), root, keep=3)[0] == n
        assert versions.current_version(root) == n
    assert versions.versions(root) == [2, 3, 4]  # keep=3: the current and two before
    assert next(iter(open_snapshot(root).values())).startswith("v4:")
    assert rollback(root) == 3
    assert next(iter(open_snapshot(root).values())).startswith("v3:")
    assert rollback(root, to=4) == 4
    assert os.readlink(root / "current") == "version-4"  # relative: the root can move


def test_a_version_that_fails_is_never_made_current(tmp_path):
    root = tmp_path / "root"
    publish(_tagged(tmp_path, "v1"), root)
    bad = write(tmp_path, b"broken\n", name="bad.data")
    with pytest.raises(LoadError, match="bad.data:1: no space"):
        publish(bad, root)
    assert versions.versions(root) == [1] and versions.current_version(root) == 1
    # nothing left but the root's lock file (kept: it is the lock)
    assert sorted(p.name for p in root.iterdir()) == [versions.LOCK, "current", "version-1"]


def test_rollback_skips_a_damaged_version(tmp_path):
    root = tmp_path / "root"
    for n in (1, 2, 3):
        publish(_tagged(tmp_path, f"v{n}"), root)
    _damage(root / "version-2", "truncated")
    assert rollback(root) == 1
    with pytest.raises(SnapshotError, match="cannot roll back to version 2"):
        rollback(root, to=2)
    assert versions.current_version(root) == 1


def test_commands(tmp_path, data_file):
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli.cli, [str(a) for a in args], catch_exceptions=False)

    r = run("build", data_file, tmp_path / "snap")
    assert r.exit_code == 0 and "2,000 pairs" in r.output and "built" in r.output
    r = run("check", tmp_path / "snap")
    assert r.exit_code == 0 and "OK, snapshot of 2,000 pairs" in r.output
    r = run("check", tmp_path / "snap", "--source", data_file)
    assert r.exit_code == 0 and "every byte read" in r.output
    other = _tagged(tmp_path, "other")
    r = run("check", tmp_path / "snap", "--source", other)
    assert r.exit_code == 1 and "is not the source of" in r.output
    r = run("publish", data_file, tmp_path / "root")
    assert r.exit_code == 0 and "current -> version-1" in r.output
    r = run("publish", other, tmp_path / "root", "--keep-versions", "1")
    assert r.exit_code == 0 and versions.versions(tmp_path / "root") == [2]
    r = run("rollback", tmp_path / "root")
    assert r.exit_code == 1 and "no good version before version 2" in r.output
    _damage(tmp_path / "snap", "garbage")
    r = run("check", tmp_path / "snap")
    assert r.exit_code == 1 and "not a readable LMDB file" in r.output


def test_serve_a_root_then_publish_and_reload_with_no_failed_request(start_server, tmp_path):
    root = tmp_path / "root"
    publish(_tagged(tmp_path, "old"), root)
    keys = [k for k, _ in make_data.pairs(300, seed=11)]
    server = start_server(root)
    ready = requests.get(f"{server.url}/readyz", timeout=5).json()
    assert ready["store"] == "snapshot" and ready["snapshot_version"] == 1
    old_etag = requests.get(f"{server.url}/items/{keys[0]}", timeout=5).headers["ETag"]
    clients = streams(server.url, keys)
    publish(_tagged(tmp_path, "new"), root)
    old_workers = children(server.proc.pid)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: all(str(c.results[-1][3]).startswith("new:") for c in clients))
    # every old worker gone (two workers is true before the reload too)
    wait_for(lambda: not children(server.proc.pid) & old_workers)
    per_client = [c.results for c in clients]
    results = finish(clients)
    assert [r for r in results if r[2] != 200] == []
    for stream in per_client:  # old answers, then only new ones
        seen = [r[3].split(":", 1)[0] for r in stream]
        assert seen == sorted(seen, key=("old", "new").index) and seen[-1] == "new"
    ready = requests.get(f"{server.url}/readyz", timeout=5).json()
    assert ready["snapshot_version"] == 2
    assert "opened snapshot version-2 of" in server.log()
    # every ETag changed: a client holding the old one gets the new answer, not a 304
    r = requests.get(f"{server.url}/items/{keys[0]}", headers={"If-None-Match": old_etag})
    assert r.status_code == 200 and r.headers["ETag"] != old_etag


@pytest.mark.parametrize("how", ["truncated", "garbage", "wrong-version"])
def test_a_reload_onto_a_bad_version_keeps_the_old_data(start_server, tmp_path, how):
    root = tmp_path / "root"
    publish(_tagged(tmp_path, "old"), root)
    publish(_tagged(tmp_path, "bad"), root)
    fragment = _damage(root / "version-2", how)
    versions.point_current(root, 1)
    server = start_server(root)
    key = next(k for k, _ in make_data.pairs(1, seed=11))
    versions.point_current(root, 2)  # as a careless copy would
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in server.log())
    assert fragment in server.log()
    r = requests.get(f"{server.url}/items/{key}", timeout=5)
    assert r.json()["value"].startswith("old:")
    assert server.proc.poll() is None


def test_start_with_a_damaged_snapshot_stops_with_one_line(start_server, tmp_path, data_file):
    build(data_file, tmp_path / "snap")
    _damage(tmp_path / "snap", "truncated")
    server = start_server(tmp_path / "snap", wait=False)
    assert server.proc.wait(timeout=30) == 1
    assert server.log().strip().endswith("(truncated or replaced?)")
    assert server.log().count("\n") == 1


memlimit = _load_script("memlimit")
# Looks up each sampled key alone and in batches of 1000; a value is its line number and
# 1000 "v"s, so the sample is small (the reader's own memory must stay far below the limit).
READER = """
import json, sys
from kv_app.stores.snapshot import open_snapshot
store = open_snapshot(sys.argv[1])
sample = json.load(open(sys.argv[2]))
value = lambda n: f"{n:08d}" + "v" * 1000
wrong = sum(store.get(k) != value(n) for k, n in sample)
for i in range(0, len(sample), 1000):
    part = sample[i : i + 1000]
    got = store.get_many([k for k, _ in part])
    wrong += sum(g != value(n) for g, (_, n) in zip(got, part))
print(json.dumps({"asked": 2 * len(sample), "wrong": wrong}))
"""


@pytest.mark.skipif(not memlimit.available(), reason="no writable cgroup v1 memory controller")
def test_a_snapshot_four_times_the_memory_limit_answers_exactly(tmp_path):
    """Beyond RAM: the data is read through the page cache, which the limit reclaims;
    nothing is loaded, so nothing is OOM-killed."""
    limit = 48 << 20
    rng = random.Random(5)
    text = tmp_path / "big.data"
    expected = []
    with open(text, "w") as f:
        for n in range(200_000):
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            f.write(f"{key} {n:08d}{'v' * 1000}\n")
            if n % 8 == 0:
                expected.append((key, n))
    build(text, tmp_path / "snap")
    data = tmp_path / "snap" / snapshot.DATA_FILE
    assert data.stat().st_size > 4 * limit
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps(expected))
    memlimit.evict(data, text)
    with memlimit.MemoryLimit(limit) as cgroup:
        r = subprocess.run(
            [sys.executable, "-c", READER, str(tmp_path / "snap"), str(sample)],
            preexec_fn=cgroup.join,
            capture_output=True,
            text=True,
            timeout=120,
        )
        stats = cgroup.stats()
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"asked": 2 * len(expected), "wrong": 0}
    # the limit was reached (page cache reclaimed), and nobody was killed
    assert stats["failcnt"] > 0 and stats["oom_kill"] == 0 and stats["max_usage"] <= limit


@pytest.mark.parametrize("shards", [2, 4, 16])
def test_shards_split_by_first_digit_and_add_up_to_the_whole(tmp_path, data_file, data, shards):
    manifest = build(data_file, tmp_path / "split", shards=shards)
    assert manifest["pairs"] == len(data) and manifest["shards"] == shards
    whole = {}
    for index in range(shards):
        store = open_snapshot(tmp_path / "split" / f"shard-{index}")
        shard = store.describe()["shard"]
        assert shard["index"] == index and len(store.describe()["shard_map"]) == shards
        part = dict(store)
        assert all(key[0] in shard["digits"] for key in part)
        assert all(store.owns(k) == (k[0] in shard["digits"]) for k in list(data)[:50])
        whole.update(part)
    assert whole == data


def test_a_shard_refuses_the_ids_of_other_shards(tmp_path, data_file, data):
    from kv_app.app import create_app

    build(data_file, tmp_path / "split", shards=2)
    client = create_app({"DATA_PATH": str(tmp_path / "split" / "shard-0")}).test_client()
    mine = next(k for k in data if k[0] in "01234567")
    other = next(k for k in data if k[0] not in "01234567")
    assert client.get(f"/items/{mine}").get_json()["value"] == data[mine]
    r = client.get(f"/items/{other}")
    assert r.status_code == 421 and r.get_json()["ids"] == [other]
    r = client.post("/items/batch", json={"ids": [mine, other]})
    assert r.status_code == 421 and r.get_json()["ids"] == [other]
    assert r.get_json()["shard"] == {"index": 0, "count": 2, "digits": "01234567"}


def test_shards_count_must_split_the_digits(tmp_path, data_file):
    with pytest.raises(SnapshotError, match="--shards 3: expected one of 1, 2, 4, 8, 16"):
        build(data_file, tmp_path / "split", shards=3)


@pytest.mark.parametrize("chunk", [64, 4096, 64 * 1024 * 1024])
def test_a_value_over_the_limit_fails_the_build_as_it_fails_the_load(tmp_path, monkeypatch, chunk):
    """Whether the line is longer than a chunk or within one, the same message; lenient:
    left out as the lenient load leaves it out."""
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    path = huge_line_file(tmp_path)
    with pytest.raises(LoadError) as e:
        build(path, tmp_path / "snap", max_value_bytes=LIMIT)
    assert str(e.value) == f"{path}:2: {OVER}"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing left
    manifest = build(path, tmp_path / "snap", strict=False, max_value_bytes=LIMIT)
    assert manifest["problems"] == [loader.Problem(2, OVER)] and manifest["skipped_lines"] == 1
    assert dict(open_snapshot(tmp_path / "snap")) == {K1: "v1", K3: "v3"}


@pytest.mark.parametrize("chunk", [64, 64 * 1024 * 1024])
def test_values_of_exactly_the_limit_are_built_byte_for_byte(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    values = {K1: "é" * (LIMIT // 2), K3: "𝄞" * (LIMIT // 4)}
    path = write(tmp_path, loader.BOM + "\n".join(f"{k} {v}" for k, v in values.items()).encode())
    build(path, tmp_path / "snap", max_value_bytes=LIMIT)
    assert dict(open_snapshot(tmp_path / "snap")) == values
    with pytest.raises(
        LoadError, match=r":1: value of 1,000 bytes, over KV_MAX_VALUE_BYTES \(999\)"
    ):
        build(path, tmp_path / "snap2", max_value_bytes=LIMIT - 1)


def test_build_and_publish_take_the_limit_from_the_environment(tmp_path, monkeypatch):
    """publish passes no limit to its build: KV_MAX_VALUE_BYTES, else 4 MiB."""
    path = huge_line_file(tmp_path)
    monkeypatch.delenv("KV_MAX_VALUE_BYTES", raising=False)
    build(path, tmp_path / "snap")  # 3,000,000 bytes: under the default
    monkeypatch.setenv("KV_MAX_VALUE_BYTES", str(LIMIT))
    with pytest.raises(LoadError, match=f"^{re.escape(f'{path}:2: {OVER}')}$"):
        build(path, tmp_path / "snap2")
    root = tmp_path / "root"
    with pytest.raises(LoadError, match=f"^{re.escape(f'{path}:2: {OVER}')}$"):
        publish(path, root)
    assert versions.current_version(root) is None and versions.versions(root) == []


# --- Builds in bounded memory: runs on disk, a partition at a time (issue 15) -------------


def _with_repeats(tmp_path) -> tuple[Path, dict]:
    """2,000 generated pairs, then the same keys with other values (every key repeated,
    in other chunks and partitions), then a bad line: what a lenient load keeps."""
    pairs = list(make_data.pairs(2000, seed=7))
    text = "".join(f"{k} {v}\n" for k, v in pairs) + "".join(f"{k} again\n" for k, _ in pairs)
    path = tmp_path / "repeats.data"
    path.write_text(text + "not a pair\n")
    return path, dict(pairs)


@pytest.mark.parametrize(
    "partition_bytes, chunk",  # 4,096, 256 and 16 partitions
    [(1, 4096), (4096, 4096), (4096, reader.CHUNK_BYTES), (building.PARTITION_BYTES, 4096)],
)
def test_partitions_and_runs_do_not_change_what_is_built(
    monkeypatch, tmp_path, partition_bytes, chunk
):
    """Whatever the partitions (16 or 256) and chunks, the snapshot holds what
    the load holds, and a strict build fails with the load's message, every repeat named."""
    monkeypatch.setattr(building, "PARTITION_BYTES", partition_bytes)
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    path, kept = _with_repeats(tmp_path)
    manifest = build(path, tmp_path / "snap", strict=False)
    store = open_snapshot(tmp_path / "snap")
    assert dict(store) == kept == dict(loader.load(path, strict=False)[0])
    assert list(store) == sorted(kept) and manifest["skipped_lines"] == 2001
    with pytest.raises(LoadError) as building_error:
        build(path, tmp_path / "strict")
    with pytest.raises(LoadError) as loading_error:
        loader.load(path)
    assert str(building_error.value) == str(loading_error.value)
    assert len(building_error.value.problems) == 2001
    for shards in (2, 16):
        build(path, tmp_path / f"shards-{shards}", strict=False, shards=shards)
        whole = {}
        for index in range(shards):
            whole.update(open_snapshot(tmp_path / f"shards-{shards}" / f"shard-{index}"))
        assert whole == kept


@pytest.mark.parametrize("jobs", [2, 3])
def test_a_parallel_build_is_the_same_build(monkeypatch, tmp_path, jobs):
    """jobs processes check and partition pieces of the text, then sort partitions: the
    same data file, problems (numbered from the file's first line) and messages as one
    process. Lines that begin with a byte-order mark past the first are bad, wherever
    the pieces start."""
    monkeypatch.setattr(reader, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(building, "PIECE_BYTES", 8192)
    path, kept = _with_repeats(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    for at in range(100, len(lines), 700):
        lines.insert(at, loader.BOM + f"{K1} bom\n".encode())
    path.write_bytes(b"".join(lines))
    one = build(path, tmp_path / "one", strict=False, jobs=1)
    many = build(path, tmp_path / f"jobs-{jobs}", strict=False, jobs=jobs)
    for field in ("data_sha256", "pairs", "problems", "source"):
        assert many[field] == one[field]
    assert dict(open_snapshot(tmp_path / f"jobs-{jobs}")) == kept
    assert all(
        "key is not a UUID" in p.reason for p in one["problems"] if b"bom" in lines[p.line - 1]
    )
    errors = []
    for n in (1, jobs):
        with pytest.raises(LoadError) as e:
            build(path, tmp_path / f"strict-{n}", jobs=n)
        errors.append(str(e.value))
    assert errors[0] == errors[1] == str(pytest.raises(LoadError, loader.load, path).value)
    many = build(path, tmp_path / f"shards-{jobs}", strict=False, jobs=jobs, shards=4)
    assert many["pairs"] == len(kept) and not list(tmp_path.glob(".kv-app-build-*"))


@pytest.mark.parametrize("owner, step", [("module", "_scan"), ("_Partitions", "records")])
def test_a_build_process_killed_is_one_line_and_leaves_nothing(monkeypatch, tmp_path, owner, step):
    """A scanning or sorting process of a parallel build dies (the OOM killer, SIGKILL):
    the build stops with one line, no snapshot, no runs, no process left."""
    monkeypatch.setattr(reader, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(building, "PIECE_BYTES", 8192)
    path, _ = _with_repeats(tmp_path)
    parent = os.getpid()
    where = building if owner == "module" else getattr(building, owner)
    original = getattr(where, step)

    def dies(*args, **kwargs):  # in a scanning or a sorting process
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    monkeypatch.setattr(where, step, dies)
    with pytest.raises(SnapshotError, match="a build process died"):
        build(path, tmp_path / "snap", strict=False, jobs=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_parallel_build_reads_the_file_it_opened(monkeypatch, tmp_path, data_file, data):
    """A new file renamed over the path during a parallel build (publish by rename): the
    processes read the file the build opened, not the new one."""
    monkeypatch.setattr(reader, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(building, "PIECE_BYTES", 8192)
    path = write(tmp_path, data_file.read_bytes())
    pieces = building._pieces

    def renamed(*args):
        write(tmp_path, f"{K1} new\n".encode(), name="new.data").rename(path)
        return pieces(*args)

    monkeypatch.setattr(building, "_pieces", renamed)
    manifest = build(path, tmp_path / "snap", jobs=2)
    assert dict(open_snapshot(tmp_path / "snap")) == data
    assert manifest["source"]["sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()


def test_partitions_follow_the_text_and_the_open_file_limit(monkeypatch):
    """16, 256 or 4,096 partitions of about PARTITION_BYTES; 4,096 only where the
    open-file limit can be raised to their 8,192 files."""
    gib = 1 << 30
    assert [building._partition_bits(n) for n in (gib // 4, 4 * gib, 64 * gib)] == [4, 8, 12]
    assert building._partition_bits(1 << 20) == 4
    monkeypatch.setattr(building.resource, "getrlimit", lambda which: (1024, 4096))
    assert building._partition_bits(64 * gib) == 8


def test_a_build_says_where_its_runs_go_and_leaves_none(monkeypatch, tmp_path, data_file):
    monkeypatch.setattr(building, "SAY_SPACE_FROM", 0)
    runs = tmp_path / "runs"
    said = []
    build(data_file, tmp_path / "snap", tmp_dir=runs, say=said.append)
    size = data_file.stat().st_size / 1e6
    assert re.fullmatch(
        rf"building: temporary runs of about {size:,.0f} MB in {runs}/\.kv-app-build-\w+, "
        "removed at the end",
        said[0],
    )
    assert list(runs.iterdir()) == []
    bad = write(tmp_path, b"broken\n", name="bad.data")
    with pytest.raises(LoadError):
        build(bad, tmp_path / "bad.snap", tmp_dir=runs)
    assert list(runs.iterdir()) == [] and not (tmp_path / "bad.snap").exists()


def test_build_and_publish_take_the_tmp_dir_flag(tmp_path, data_file, monkeypatch):
    monkeypatch.setattr(building, "SAY_SPACE_FROM", 0)
    runs = tmp_path / "runs"
    r = CliRunner().invoke(
        cli.cli, ["build", str(data_file), str(tmp_path / "snap"), "--tmp-dir", str(runs)]
    )
    assert r.exit_code == 0 and f"in {runs}/.kv-app-build-" in r.stderr
    r = CliRunner(env={"KV_TMP_DIR": str(runs)}).invoke(
        cli.cli, ["publish", str(data_file), str(tmp_path / "root")]
    )
    assert r.exit_code == 0 and f"in {runs}/.kv-app-build-" in r.stderr
    assert list(runs.iterdir()) == []


def test_each_thread_reads_with_its_own_transaction(tmp_path, data_file, data):
    """LMDB: a transaction belongs to one thread. With the gthread worker a worker's
    threads look up at once: each gets its own read transaction (before: one for all)."""
    import threading

    build(data_file, tmp_path / "snap")
    store = open_snapshot(tmp_path / "snap")
    keys = list(data)
    seen, answers = {}, {}
    together = threading.Barrier(4)  # all alive at once: no thread id is reused

    def look(n: int) -> None:
        seen[n] = store._reader()
        answers[n] = store.get_many(keys[n::4]) == [data[k] for k in keys[n::4]]
        together.wait(timeout=30)

    threads = [threading.Thread(target=look, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(answers.values()) and len(answers) == 4
    assert len({id(txn) for txn in seen.values()}) == 4
    assert store._reader() is store._reader()  # one per thread, kept
    store.close()
