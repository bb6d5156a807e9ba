"""Faults under load and data swaps: killed workers, SIGTERM, SIGHUP with a new file."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from conftest import ROOT, bench, make_data, wait_for
from kv_app.stores import snapshot, versions

PAIRS = 500


def children(pid: int) -> set[int]:
    return set(bench.children(pid))


def workers(server, n: int = 2) -> set[int]:
    """The server's workers, once all n have started (the first answers /readyz alone)."""
    wait_for(lambda: len(children(server.proc.pid)) == n)
    return children(server.proc.pid)


def replaced(server, old: set[int], n: int = 2) -> set[int]:
    """The server's new workers, once n are running and none of old is left."""
    wait_for(lambda: len(now := children(server.proc.pid)) == n and not now & old)
    return children(server.proc.pid)


def tcp(port: int) -> list[tuple[int, int, str, int]]:
    """TCP sockets of 127.0.0.1 with an end on port: (local port, remote port, state,
    bytes received and not yet read), from /proc/net/tcp (state 01 established, 0A
    listening)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        _, local, remote, state, queues = line.split()[:5]
        ends = int(local.split(":")[1], 16), int(remote.split(":")[1], 16)
        if port in ends:
            found.append((*ends, state, int(queues.split(":")[1], 16)))
    return found


class Stream(threading.Thread):
    """A client sending GETs for random keys back to back on one keep-alive session,
    recording (time sent, key, status, value) or (time, key, error)."""

    def __init__(self, url: str, keys: list[str], seed: int, retries: int = 0):
        super().__init__(daemon=True)
        self.url, self.keys, self.retries = url, keys, retries
        self.results: list[tuple] = []
        self.stop = threading.Event()
        self.seed = seed

    def run(self) -> None:
        import random

        rng = random.Random(self.seed)
        with requests.Session() as session:
            while not self.stop.is_set():
                key = rng.choice(self.keys)
                sent = time.monotonic()
                # retries: as HTTP clients do for an idempotent GET whose connection broke
                # before a whole answer came (reset, or a body cut short)
                for attempt in range(1 + self.retries):
                    try:
                        r = session.get(f"{self.url}/items/{key}", timeout=10)
                        self.results.append((sent, key, r.status_code, r.json().get("value")))
                        break
                    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                        if attempt == self.retries:
                            self.results.append((sent, key, None, "connection broke"))
                    except (requests.RequestException, ValueError) as e:
                        self.results.append((sent, key, None, repr(e)))
                        break


def streams(url: str, keys: list[str], n: int = 4, retries: int = 0) -> list[Stream]:
    """n streams, returned once each has had 20 answers."""
    started = [Stream(url, keys, seed, retries) for seed in range(n)]
    for s in started:
        s.start()
    wait_for(lambda: all(len(s.results) >= 20 for s in started))
    return started


def answered(started: list[Stream], more: int) -> None:
    """Return once each stream has had `more` answers (or errors) beyond those it has now."""
    counts = [len(s.results) for s in started]
    wait_for(lambda: all(len(s.results) >= n + more for s, n in zip(started, counts, strict=True)))


def finish(started: list[Stream]) -> list[tuple]:
    for s in started:
        s.stop.set()
    for s in started:
        s.join(timeout=30)
    return [r for s in started for r in s.results]


def test_sigkill_of_a_worker_loses_at_most_its_requests_in_flight(start_server, data_file, data):
    """Both first workers are killed in turn, each once the other's replacement serves:
    every stream loses at most its one request on each killed worker (a broken
    connection, never a wrong answer), and its answers at the end can only come from
    replacements."""
    server = start_server(data_file)
    first = workers(server)
    clients = streams(server.url, list(data))
    marks = []  # each stream's number of results before each kill
    for victim in sorted(first):
        marks.append([len(c.results) for c in clients])
        os.kill(victim, signal.SIGKILL)
        replaced(server, {victim})
        answered(clients, 20)
    assert not children(server.proc.pid) & first
    finish(clients)
    for n, client in enumerate(clients):
        first_kill, second_kill = marks[0][n], marks[1][n]
        failed = [i for i, r in enumerate(client.results) if r[2] != 200 or r[3] != data[r[1]]]
        assert all(client.results[i][2] is None for i in failed), failed  # no wrong answer
        assert [i for i in failed if i < first_kill] == []
        assert len([i for i in failed if first_kill <= i < second_kill]) <= 1, failed
        assert len([i for i in failed if i >= second_kill]) <= 1, failed
    assert server.stop() == 0


def test_sigterm_lets_a_request_in_flight_finish(start_server, data_file, data):
    server = start_server(data_file)
    key = next(iter(data))
    body = f'{{"ids": ["{key}"]}}'.encode()
    head = (
        f"POST /items/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        s.sendall(head + body[:5])  # the request is in flight: half its body sent
        mine = s.getsockname()[1]
        # A worker has accepted the connection and read what was sent.
        wait_for(lambda: (server.port, mine, "01", 0) in tcp(server.port))
        server.proc.send_signal(signal.SIGTERM)
        # The SIGTERM has reached master and workers: none listens any more ...
        wait_for(lambda: not [t for t in tcp(server.port) if t[2] == "0A"])
        assert server.proc.poll() is None  # ... and the server waits for us
        s.sendall(body[5:])
        response = b""
        while chunk := s.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert data[key].encode() in response
    assert server.proc.wait(timeout=60) == 0
    assert "Shutting down: Master" in server.log()


def write_version(path: Path, tag: str) -> None:
    """The same keys as data_file, each value prefixed with tag; published by rename."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for key, value in make_data.pairs(PAIRS, seed=11):
            f.write(f"{key} {tag}:{value}\n")
    os.replace(tmp, path)


def test_sighup_switches_to_the_new_file_with_no_failed_request(
    start_server, tmp_path, text_store_kind
):
    path = tmp_path / "current.data"
    write_version(path, "old")
    keys = [k for k, _ in make_data.pairs(PAIRS, seed=11)]
    server = start_server(path, "--store", text_store_kind)
    old_workers = workers(server)
    clients = streams(server.url, keys)
    write_version(path, "new")
    switched_at = time.monotonic()
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "new:" in requests.get(f"{server.url}/items/{keys[0]}", timeout=5).text)
    # every stream has had answers from the new data, and the old workers have gone
    wait_for(lambda: all(str(c.results[-1][3]).startswith("new:") for c in clients))
    replaced(server, old_workers)
    per_client = [c.results for c in clients]
    results = finish(clients)

    assert [r for r in results if r[2] != 200] == []  # no failed request
    tags = {r[3].split(":", 1)[0] for r in results}
    assert tags == {"old", "new"}
    assert all(r[3].split(":", 1)[0] == "old" for r in results if r[0] < switched_at)
    for stream in per_client:  # each stream: old answers, then only new ones
        seen = [r[3].split(":", 1)[0] for r in stream]
        assert seen == sorted(seen, key=("old", "new").index), seen
        assert seen[-1] == "new"
    assert "Handling signal: hup" in server.log()


def test_sighup_with_a_bad_file_keeps_serving_the_old_data(start_server, tmp_path):
    path = tmp_path / "current.data"
    write_version(path, "old")
    keys = [k for k, _ in make_data.pairs(PAIRS, seed=11)]
    server = start_server(path)
    old_workers = workers(server)
    clients = streams(server.url, keys, n=2)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{keys[0]} fine\nbroken line\n")
    os.replace(tmp, path)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in server.log())
    answered(clients, 50)
    assert workers(server) == old_workers  # a refused reload changes nothing
    results = finish(clients)
    assert [r for r in results if r[2] != 200] == []
    assert {r[3].split(":", 1)[0] for r in results} == {"old"}
    assert f"{path}:2: key is not a UUID" in server.log()


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_front_times_out_stalled_bodies(start_server, data_file, data, tmp_path):
    """deploy/nginx.conf: complete requests pass through; a stalled body is cut off.

    nginx ends a request whose body stalls for client_body_timeout (5 s) with a 408 that
    it does not send: it just closes the connection, before anything reaches gunicorn.
    """
    server = start_server(data_file, "--access-log")
    with nginx_front("nginx.conf", server.port, tmp_path) as (url, port):
        key = next(iter(data))
        assert requests.get(f"{url}/items/{key}", timeout=5).json()["value"] == data[key]
        r = requests.get(f"{url}/items/nope", timeout=5)
        assert r.status_code == 400 and r.json()["status"] == 400
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(b'POST /items/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"ids"')
            for _ in range(20):  # others are served meanwhile
                assert requests.get(f"{url}/items/{key}", timeout=5).status_code == 200
            assert s.recv(65536) == b""  # closed by nginx (our timeout would raise)
        assert f'"method":"GET","path":"/items/{key}"' in server.log()  # the access log is on
        assert '"method":"POST"' not in server.log()  # ... and the stalled body never came


@contextmanager
def nginx_front(conf_name: str, upstream_port: int, tmp_path: Path):
    """nginx with deploy/<conf_name>, sending to the server on upstream_port: yields its
    (url, port) once it answers; stopped afterwards."""
    front = bench.Nginx((ROOT / "deploy" / conf_name).read_text(), upstream_port, tmp_path)
    try:
        yield front.url, front.port
    finally:
        front.stop()


def anon_mb(pid: int) -> float:
    """Anonymous memory resident in a process (the data it holds, shared with forked
    workers or not)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon line")


def test_a_reload_whose_read_fails_keeps_the_server_and_its_data(start_server, tmp_path):
    """Defect 3: EIO while reading (a network volume) escaped on_reload: the master died.
    /proc/self/mem at offset 0 fails every read with EIO."""
    good = tmp_path / "v1.data"
    write_version(good, "old")
    path = tmp_path / "current.data"
    path.symlink_to(good)
    keys = [k for k, _ in make_data.pairs(PAIRS, seed=11)]
    server = start_server(path)
    version = requests.get(f"{server.url}/readyz", timeout=5).json()["version"]
    path.unlink()
    path.symlink_to("/proc/self/mem")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in server.log())
    assert f"{path}: cannot read: Input/output error" in server.log()
    assert server.proc.poll() is None
    r = requests.get(f"{server.url}/items/{keys[0]}", timeout=5)
    assert r.json()["value"].startswith("old:") and r.headers["X-Data-Version"] == version


def test_a_reload_leaves_one_copy_of_the_data_in_the_master(start_server, tmp_path):
    """Defect 4: the old app sat in a reference cycle: master PSS 121 MB -> 334 MB with 1M
    pairs after one SIGHUP. Now the old store is freed as the new one is set."""
    path = tmp_path / "big.data"
    make_data.write(200_000, str(path), seed=3)
    server = start_server(path, "--workers", "1")
    before = anon_mb(server.proc.pid)
    for n in range(2):
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda n=n: server.log().count("reload done") == n + 1)
    after = anon_mb(server.proc.pid)
    assert after < before * 1.25, (before, after)


def blocked_on_a_lock(pid: int) -> bool:
    """Whether pid waits for a file lock (/proc/locks lists waiters after "->")."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1] == "->" and fields[5] == str(pid):
            return True
    return False


def test_sigterm_during_a_reload_that_hangs_stops_the_server(start_server, tmp_path):
    """A reload whose read never returns (a hung mount in life; here the new snapshot's
    data file, on which the test holds an exclusive lock that the master's shared lease
    waits for) must not hold a shutdown: the load is abandoned and the server stops
    gracefully. (A FIFO served this before; a pipe is now refused at once.)"""
    root = tmp_path / "root"
    old, new = tmp_path / "old.data", tmp_path / "new.data"
    write_version(old, "old")
    write_version(new, "new")
    versions.publish(old, root)
    server = start_server(root)
    versions.publish(new, root)
    with open(root / "current" / snapshot.DATA_FILE, "rb") as data:
        fcntl.flock(data, fcntl.LOCK_EX)
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: blocked_on_a_lock(server.proc.pid))
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0  # a held shutdown would hang: not a timing
    assert "reload abandoned: SIGTERM arrived" in server.log()
    assert "Shutting down: Master" in server.log()


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_cache_front_serves_hot_ids_and_bounds_staleness(start_server, tmp_path):
    """deploy/nginx-cache.conf: a second GET is a cache HIT; after a data switch the old
    answer is served at most KV_CACHE_MAX_AGE seconds; a 404 is not cached with 0."""
    path = tmp_path / "current.data"
    write_version(path, "old")
    key = next(k for k, _ in make_data.pairs(PAIRS, seed=11))
    server = start_server(path, env={"KV_CACHE_MAX_AGE": "3", "KV_CACHE_MAX_AGE_MISSING": "0"})
    old_workers = workers(server)
    with nginx_front("nginx-cache.conf", server.port, tmp_path) as (url, port):
        first = requests.get(f"{url}/items/{key}", timeout=5)
        assert first.headers["X-Cache-Status"] == "MISS"
        # nginx stores an answer once it has it whole, which on a busy machine can be
        # after the client has it: the next GETs are HITs once it is stored.
        wait_for(
            lambda: requests.get(f"{url}/items/{key}", timeout=5).headers["X-Cache-Status"] == "HIT"
        )
        assert requests.get(f"{url}/items/{key}", timeout=5).text == first.text
        missing = "00000000-0000-4000-8000-000000000000"
        for _ in range(2):  # no-store: never a HIT
            r = requests.get(f"{url}/items/{missing}", timeout=5)
            assert r.status_code == 404 and r.headers["X-Cache-Status"] != "HIT"
        write_version(path, "new")
        server.proc.send_signal(signal.SIGHUP)
        # Old workers answer on nginx's kept-alive connections while they drain; the last
        # old answer was cached before the last of them exited. nginx keeps an answer
        # max-age (3 s) counted in whole seconds: 3 + 1 s later it has expired. (Waiting
        # longer, on a slow machine, can only make the old answer older.)
        replaced(server, old_workers)
        time.sleep(3 + 1)
        assert "new:" in requests.get(f"{url}/items/{key}", timeout=5).text


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_cache_front_answers_each_request_with_its_own_request_id(start_server, tmp_path):
    """A cached answer kept the X-Request-ID of the request that filled the cache: every
    HIT echoed a stranger's id (or an id the client never sent). The front now sets the
    id itself: the client's when sane, nginx's $request_id otherwise."""
    path = tmp_path / "current.data"
    write_version(path, "v")
    key = next(k for k, _ in make_data.pairs(PAIRS, seed=11))
    server = start_server(path, env={"KV_ACCESS_LOG": "1"})
    with nginx_front("nginx-cache.conf", server.port, tmp_path) as (url, port):
        first = requests.get(f"{url}/items/{key}", headers={"X-Request-ID": "first-1"}, timeout=5)
        assert first.headers["X-Request-ID"] == "first-1"
        wait_for(lambda: '"request_id":"first-1"' in server.log())  # kv_app logs the same id
        hit = requests.get(f"{url}/items/{key}", headers={"X-Request-ID": "second-2"}, timeout=5)
        assert hit.headers["X-Cache-Status"] == "HIT"
        assert hit.headers["X-Request-ID"] == "second-2"
        made = [requests.get(f"{url}/items/{key}", timeout=5).headers for _ in range(2)]
        assert all(h["X-Cache-Status"] == "HIT" for h in made)
        ids = [h["X-Request-ID"] for h in made]
        assert ids[0] != ids[1] and "first-1" not in ids and all(len(i) == 32 for i in ids)
        for hostile in ("x" * 129, "a b", "é"):
            got = requests.get(f"{url}/items/{key}", headers={"X-Request-ID": hostile}, timeout=5)
            assert re.fullmatch("[0-9a-f]{32}", got.headers["X-Request-ID"])  # replaced
