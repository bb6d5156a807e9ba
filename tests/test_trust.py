"""What is served can be trusted (issue 14): a version in use is never pruned, publishes
never overlap, a snapshot changed under a server is never served, bad roots and full
disks are one line. Against real servers where the defect lived there."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading

import pytest
import requests
from test_faults import children

from conftest import KV_APP, make_data, wait_for
from kv_app.stores import build as building
from kv_app.stores import snapshot, versions
from kv_app.stores.snapshot import SnapshotError, open_snapshot

PAIRS = 300


def tagged(tmp_path, tag: str, pairs: int = PAIRS):
    """A data file whose values all start with tag (the same keys for every tag)."""
    path = tmp_path / f"{tag}.data"
    with open(path, "w") as f:
        for key, value in make_data.pairs(pairs, seed=3):
            f.write(f"{key} {tag}:{value}\n")
    return path


def keys_of(pairs: int = PAIRS) -> list[str]:
    return [k for k, _ in make_data.pairs(pairs, seed=3)]


def kv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KV_APP, *args], capture_output=True, text=True, timeout=120)


def lookups(url: str, keys: list[str]) -> dict[int, int]:
    """Status counts of one GET per key on one session."""
    counts: dict[int, int] = {}
    with requests.Session() as session:
        for key in keys:
            status = session.get(f"{url}/items/{key}", timeout=30).status_code
            counts[status] = counts.get(status, 0) + 1
    return counts


# --- 1. A version in use is never pruned ---------------------------------------------------


def test_publish_keeps_the_version_a_running_server_serves(start_server, tmp_path):
    """Before: three publishes without a SIGHUP pruned version-1 under the server, and
    every lookup from a worker that opened it afterwards answered 500."""
    root = tmp_path / "root"
    assert kv("publish", str(tagged(tmp_path, "v1")), str(root)).returncode == 0
    server = start_server(root)
    for tag in ("v2", "v3", "v4"):
        done = kv("publish", str(tagged(tmp_path, tag)), str(root))
        assert done.returncode == 0, done.stderr
    assert "kept version-1: a running server still serves it" in done.stderr
    # keep 3 (the newest three) plus the one in use
    assert versions.versions(root) == [1, 2, 3, 4]
    # Workers started after the prune (a crash, an OOM kill) open version-1 too.
    for worker in children(server.proc.pid):
        os.kill(worker, signal.SIGKILL)
    wait_for(lambda: len(children(server.proc.pid)) == 2)
    keys = keys_of()
    assert lookups(server.url, keys) == {200: len(keys)}
    assert (
        requests.get(f"{server.url}/items/{keys[0]}", timeout=30).json()["value"].startswith("v1:")
    )
    # Once the server moved on (SIGHUP) and its old workers are gone, the next publish
    # prunes version-1.
    old = children(server.proc.pid)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: not (children(server.proc.pid) & old) and "reload done" in server.log())
    assert kv("publish", str(tagged(tmp_path, "v5")), str(root)).returncode == 0
    assert versions.versions(root) == [3, 4, 5]


def test_readyz_does_a_real_lookup_and_says_why_not(start_server, tmp_path):
    """Before: /readyz answered 200 while every lookup failed."""
    root = tmp_path / "root"
    versions.publish(tagged(tmp_path, "v1"), root)
    server = start_server(root)
    data = root / "version-1" / snapshot.DATA_FILE
    os.chmod(data, 0o644)
    with open(data, "r+b") as f:
        f.truncate(4096)
    answer = requests.get(f"{server.url}/readyz", timeout=30)
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == 503 and body["error"] == "Service Unavailable"
    assert body["message"].startswith(f"not ready: {data}: now 4,096 bytes")


# --- 2. Publishes never overlap -----------------------------------------------------------


def test_a_publish_waits_for_the_one_running_and_takes_the_next_number(tmp_path):
    """Before: two publishes started together took the same number (the loser died with
    a traceback), and a slow one could point current back at an older version."""
    root = tmp_path / "root"
    versions.publish(tagged(tmp_path, "v1"), root)
    held = threading.Event()
    release = threading.Event()

    def hold_the_lock():
        with versions.locked(root):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        held.wait(10)
        waiting = subprocess.Popen(
            [KV_APP, "publish", str(tagged(tmp_path, "v2")), str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        # It says it waits, in one line, and does nothing until the lock is free.
        line = waiting.stderr.readline()
        assert line.startswith(f"{root}: waiting for another publish or rollback (pid ")
        assert versions.versions(root) == [1]
    finally:
        release.set()
        holder.join()
    waiting.communicate(timeout=120)
    assert waiting.returncode == 0
    assert versions.versions(root) == [1, 2] and versions.current_version(root) == 2


def test_concurrent_publishes_each_take_their_own_number(tmp_path):
    root = tmp_path / "root"
    runs = [
        subprocess.Popen(
            [KV_APP, "publish", str(tagged(tmp_path, f"v{i}")), str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outcomes = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
    assert [code for code, _ in outcomes] == [0, 0, 0], outcomes
    assert versions.versions(root) == [1, 2, 3] and versions.current_version(root) == 3
    assert not any("Traceback" in err for _, err in outcomes)


def test_a_publish_removes_what_a_killed_publish_left(tmp_path):
    root = tmp_path / "root"
    versions.publish(tagged(tmp_path, "v1"), root)
    (root / ".version-2.abc123").mkdir()  # a build's temporary directory
    (root / ".version-2.abc123" / "data.mdb").write_bytes(b"half")
    (root / ".kv-app-build-xyz").mkdir()  # a build's temporary runs
    said = []
    versions.publish(tagged(tmp_path, "v2"), root, say=said.append)
    assert not (root / ".version-2.abc123").exists() and not (root / ".kv-app-build-xyz").exists()
    assert sorted(said[:2]) == [
        f"{root}: removed .kv-app-build-xyz, left by a publish that did not finish",
        f"{root}: removed .version-2.abc123, left by a publish that did not finish",
    ]


# --- 3. A snapshot changed in place ---------------------------------------------------------


def test_snapshot_files_are_written_read_only(tmp_path):
    built = tmp_path / "snap"
    building.build(tagged(tmp_path, "v1"), built)
    for name in (snapshot.DATA_FILE, snapshot.MANIFEST):
        assert (built / name).stat().st_mode & 0o222 == 0


def test_a_snapshot_copied_over_in_place_is_never_served_under_its_version(start_server, tmp_path):
    """Before: `cp` of another same-size snapshot over the served data.mdb gave the other
    data's values under the old X-Data-Version and ETag, and a HUP said "reload done"."""
    root = tmp_path / "root"
    versions.publish(tagged(tmp_path, "aa"), root)
    other = tmp_path / "other.snap"
    building.build(tagged(tmp_path, "bb"), other)  # the same keys, other values
    served = root / "version-1" / snapshot.DATA_FILE
    assert served.stat().st_size == (other / snapshot.DATA_FILE).stat().st_size
    server = start_server(root)
    keys = keys_of()
    assert lookups(server.url, keys[:20]) == {200: 20}  # both workers have it open
    shutil.copyfile(other / snapshot.DATA_FILE, served)  # root ignores the mode
    seen: dict[int, int] = {}
    with requests.Session() as session:
        for key in keys:
            answer = session.get(f"{server.url}/items/{key}", timeout=30)
            seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
            if answer.status_code == 200:
                assert answer.json()["value"].startswith("aa:")
            else:
                assert answer.status_code == 503
                assert "a snapshot must never change" in answer.json()["message"]
    assert seen == {503: len(keys)}
    # A reload refuses the same version with other files, and says so.
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in server.log())
    assert "reload done" not in server.log()
    assert "no longer servable" in server.log()
    assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 503
    assert lookups(server.url, keys[:50]) == {503: 50}


def test_a_truncated_snapshot_does_not_crash_workers_in_a_loop(start_server, tmp_path):
    """Before: truncating the served data.mdb made every worker die of SIGBUS on its next
    lookup, 390 worker deaths in 40 s, with readiness green."""
    root = tmp_path / "root"
    versions.publish(tagged(tmp_path, "v1", pairs=3000), root)
    server = start_server(root)
    keys = keys_of(3000)
    assert lookups(server.url, keys[:10]) == {200: 10}
    data = root / "version-1" / snapshot.DATA_FILE
    with open(data, "r+b") as f:  # root ignores the read-only mode
        f.truncate(8192)
    counts = lookups(server.url, keys)
    assert set(counts) == {503}
    assert server.log().count("was sent SIGBUS") == 0
    assert server.proc.poll() is None
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in server.log())
    assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 503


def test_a_snapshot_damaged_with_its_size_and_time_kept_is_503_not_a_halt(start_server, tmp_path):
    """Before: a worker whose store could not be opened at fork (LMDB: MDB_INVALID) exited
    as a boot error, and gunicorn stopped the whole server for it."""
    root = tmp_path / "root"
    versions.publish(tagged(tmp_path, "v1"), root)
    server = start_server(root)
    data = root / "version-1" / snapshot.DATA_FILE
    kept = data.stat()
    with open(data, "r+b") as f:  # root ignores the read-only mode
        f.seek(16)  # the meta page's magic
        f.write(b"\0" * 8)
    os.utime(data, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    for worker in children(server.proc.pid):
        os.kill(worker, signal.SIGKILL)
    wait_for(lambda: server.log().count("cannot be read: ") >= 2)
    assert server.proc.poll() is None
    assert lookups(server.url, keys_of()[:50]) == {503: 50}
    assert requests.get(f"{server.url}/readyz", timeout=30).status_code == 503


def test_a_worker_refuses_a_snapshot_changed_before_it_started(tmp_path):
    root = tmp_path / "root"
    versions.publish(tagged(tmp_path, "v1"), root)
    store = open_snapshot(root)
    try:
        os.utime(root / "version-1" / snapshot.DATA_FILE, ns=(1, 1))
        with pytest.raises(snapshot.SnapshotChanged, match="modified at 1970-01-01"):
            store.open()
        assert "modified at" in store.problem()
        with pytest.raises(snapshot.SnapshotChanged):
            store.get(keys_of()[0])
    finally:
        store.close()


# --- 4. Bad roots, pipes, full disks --------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda r: os.symlink("current", r / "current"), "points at 'current', not at a version-N"),
        (lambda r: os.symlink("/etc", r / "current"), "points at '/etc', not at a version-N"),
        (lambda r: os.symlink("version-9", r / "current"), "points at version-9, which is not"),
        (lambda r: (r / "current").mkdir(), "not a symbolic link"),
    ],
)
def test_a_bad_current_link_is_one_line_naming_it(tmp_path, make, message):
    root = tmp_path / "root"
    root.mkdir()
    make(root)
    for attempt in (
        lambda: versions.publish(tagged(tmp_path, "v1"), root),
        lambda: versions.rollback(root),
        lambda: open_snapshot(root),
    ):
        with pytest.raises(SnapshotError, match=message) as refused:
            attempt()
        assert str(refused.value).startswith(f"{root / 'current'}: ")
    assert versions.versions(root) == []


def with_a_pipe(tmp_path, command: str) -> subprocess.CompletedProcess:
    """Run `kv-app COMMAND` in bash, where {pipe} in it is a pipe giving a data file."""
    pipe = f"<(cat {tagged(tmp_path, 'v1')})"
    return subprocess.run(
        f"{KV_APP} {command.format(pipe=pipe)}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_pipe_as_input_is_one_line(tmp_path):
    result = with_a_pipe(tmp_path, f"publish {{pipe}} {tmp_path / 'root'}")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "not a regular file (a pipe or a device): a build reads it in pieces, in parallel; "
        "write it to a file first"
    )
    assert "Traceback" not in result.stderr


def test_serving_a_pipe_is_one_line(tmp_path):
    """Before: `kv-app serve <(cat data)` stopped with "cannot read: Illegal seek"."""
    result = with_a_pipe(tmp_path, "serve {pipe} --port 1")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "not a regular file (a pipe or a device): serve a file, which a reload can read again"
        )
    )


def test_a_root_that_is_a_file(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(SnapshotError, match=f"^{afile}: not a directory$"):
        versions.publish(tagged(tmp_path, "v1"), afile)


@pytest.fixture
def tmpfs(tmp_path):
    """A small file system of its own (root only), unmounted after the test."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_read_only_root_is_one_line(tmpfs, tmp_path):
    (tmpfs / "root").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(SnapshotError) as refused:
        versions.publish(tagged(tmp_path, "v1"), tmpfs / "root")
    assert (
        str(refused.value)
        == f"{tmpfs / 'root' / versions.LOCK}: cannot write: Read-only file system"
    )
    with pytest.raises(SnapshotError) as refused:
        versions.publish(tagged(tmp_path, "v1"), tmpfs / "new-root")
    assert str(refused.value) == f"{tmpfs / 'new-root'}: cannot write: Read-only file system"


def test_a_full_disk_is_said_before_the_build(tmpfs, tmp_path):
    """Before: a traceback ending in `lmdb.Error: mdb_txn_commit: Input/output error`."""
    with pytest.raises(SnapshotError) as refused:
        versions.publish(tagged(tmp_path, "v1", pairs=20_000), tmpfs / "root")
    assert re.fullmatch(
        rf"{tmpfs / 'root'}: [\d.]+ MB free, this build needs about [\d.]+ MB there for the "
        r"snapshot and its temporary runs \(each about the size of the text; --tmp-dir puts "
        r"the runs elsewhere\)",
        str(refused.value),
    )
    assert versions.versions(tmpfs / "root") == []
    # With the runs elsewhere, the snapshot alone fits.
    versions.publish(tagged(tmp_path, "v1", pairs=5_000), tmpfs / "root", tmp_dir=tmp_path)
    assert versions.versions(tmpfs / "root") == [1]


@pytest.mark.parametrize("fills", ["the snapshot", "its temporary runs"])
def test_a_disk_that_fills_during_the_build_is_one_line(tmpfs, tmp_path, monkeypatch, fills):
    monkeypatch.setattr(building, "SPACE_PER_TEXT_BYTE", 0.0)  # let it start
    monkeypatch.setattr(building, "RUNS_PER_TEXT_BYTE", 0.0)
    runs = tmpfs if fills == "its temporary runs" else tmp_path  # room for them or not
    with pytest.raises(SnapshotError) as refused:
        versions.publish(tagged(tmp_path, "v1", pairs=20_000), tmpfs / "root", tmp_dir=runs)
    where = runs if fills == "its temporary runs" else tmpfs / "root"
    assert str(refused.value) == (
        f"{where}: no space left on device while writing {fills} (nothing kept)"
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".kv-app-build-")] == []
    assert sorted(p.name for p in (tmpfs / "root").iterdir()) == [versions.LOCK]


def test_a_sharded_version_in_use_is_never_pruned(tmp_path, data_file, data):
    """A version made of shards, one of them open (served) by path: publish keeps it.
    Before: only version-N/data.mdb was looked at, and a sharded version has none."""
    root = tmp_path / "root"

    def sharded(target):
        return building.build(data_file, target, shards=2)

    versions.publish_with(root, sharded, keep=1)
    served = open_snapshot(root / "version-1" / "shard-1")
    served.open()  # a server holds its lease
    said = []
    versions.publish_with(root, sharded, keep=1, say=said.append)
    assert (root / "version-1").is_dir()
    assert f"{root}: kept version-1: a running server still serves it" in said
    key = next(k for k in data if served.owns(k))
    assert served.get(key) == data[key]
    served.close()
    versions.publish_with(root, sharded, keep=1)
    assert versions.versions(root) == [3]
