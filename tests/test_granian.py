"""`kv-app serve --server granian`: the same app and data loading on granian, against the
real server on a free port of 127.0.0.1 (skipped where granian cannot be imported)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from test_faults import PAIRS, answered, finish, replaced, streams, workers, write_version

from conftest import EXAMPLE_DATA, TRICKY, Server, make_data, wait_for, write_tricky
from kv_app import cli, granian_server

pytest.importorskip("granian")

GRANIAN = ("--server", "granian")
MISSING = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def edge_file(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """example.data (or 2,000 generated pairs where it is not beside the repo) followed
    by the tricky values (one key upper-case, the last line without a newline)."""
    where = tmp_path_factory.mktemp("granian")
    expected: dict[str, str] = {}
    if EXAMPLE_DATA.is_file():
        text = EXAMPLE_DATA.read_text(encoding="utf-8")
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            expected[key] = value
        assert len(expected) == 10_000
    else:
        text = "".join(f"{k} {v}\n" for k, v in make_data.pairs(2000, seed=7))
        expected.update(make_data.pairs(2000, seed=7))
    tricky = where / "tricky.data"
    expected.update(write_tricky(tricky))
    path = where / "edge.data"
    path.write_bytes(text.encode("utf-8") + tricky.read_bytes())
    return path, expected


@pytest.fixture(scope="module")
def granian(edge_file):
    """One granian server over edge_file, with the access log on, for the module."""
    server = Server(edge_file[0], *GRANIAN, "--access-log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def test_every_key_and_edge_value(granian, edge_file):
    """Every key through POST /items/batch, 1000 ids at a time; one in ten, and every
    tricky value, through GET /items/<id> (the lean path) as well."""
    expected = edge_file[1]
    keys = list(expected)
    found: dict[str, str] = {}
    with requests.Session() as s:
        for i in range(0, len(keys), 1000):
            r = s.post(f"{granian.url}/items/batch", json={"ids": keys[i : i + 1000]}, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["missing"] == []
            found.update(r.json()["items"])
        assert found == expected
        for key in keys[::10] + list(TRICKY) + [keys[0].upper()]:
            r = s.get(f"{granian.url}/items/{key}", timeout=10)
            assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
            assert r.json() == {"id": key.lower(), "value": expected[key.lower()]}
        r = s.get(f"{granian.url}/items/{keys[-1]}", headers={"Accept": "text/plain"})
        assert r.content.decode("utf-8") == expected[keys[-1]]  # through Flask: no newline
        r = s.head(f"{granian.url}/items/{keys[1]}")
        assert r.status_code == 200 and r.content == b"" and r.headers["X-Data-Version"]


def test_errors_have_the_json_shape(granian):
    cases = {
        "/items/nope": 400,
        f"/items/{MISSING}": 404,
        "/nope": 404,
    }
    for path, status in cases.items():
        r = requests.get(granian.url + path, timeout=10)
        assert r.status_code == status
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        body = r.json()
        assert set(body) >= {"status", "error", "message"} and body["status"] == status
    assert requests.get(f"{granian.url}/nope", timeout=10).json()["message"] == "no route /nope"
    r = requests.delete(f"{granian.url}/items/{MISSING}", timeout=10)
    assert r.status_code == 405 and r.json()["status"] == 405 and "GET" in r.headers["Allow"]


def test_metrics_count_across_workers(granian, edge_file):
    key = next(iter(edge_file[1]))
    before = _counter(granian.url, "kv_lookups_total", 'result="found"')
    for _ in range(20):  # new connections: both workers answer some
        requests.get(f"{granian.url}/items/{key}", timeout=10, headers={"Connection": "close"})
    wait_for(lambda: _counter(granian.url, "kv_lookups_total", 'result="found"') == before + 20)
    text = requests.get(f"{granian.url}/metrics", timeout=10).text
    assert f"\nkv_data_pairs {float(len(edge_file[1]))}\n" in text


def _counter(url: str, name: str, labels: str) -> float:
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.split()[-1])
    return 0.0


def test_access_log_is_json_in_gunicorns_shape(granian):
    requests.get(f"{granian.url}/items/nope?x=1", headers={"X-Request-ID": "probe-1"}, timeout=10)
    wait_for(lambda: '"request_id":"probe-1"' in granian.log())
    line = next(json.loads(x) for x in granian.log().splitlines() if '"probe-1"' in x)
    assert set(line) == {
        "time",
        "method",
        "path",
        "query",
        "status",
        "bytes",
        "duration_us",
        "remote",
        "user_agent",
        "request_id",
    }
    assert (line["method"], line["path"], line["query"], line["status"]) == (
        "GET",
        "/items/nope",
        "x=1",
        400,
    )
    assert line["bytes"] > 0 and line["duration_us"] > 0 and line["remote"].startswith("127.")


def test_start_up_says_what_granian_cannot_offer(granian):
    log = granian.log()
    assert "granian: TIMEOUT not offered" in log
    assert "Starting granian" in log


def test_sighup_switches_to_the_new_file_with_no_failed_request(start_server, tmp_path):
    path = tmp_path / "current.data"
    write_version(path, "old")
    keys = [k for k, _ in make_data.pairs(PAIRS, seed=11)]
    pid_file = tmp_path / "kv.pid"
    server = start_server(path, *GRANIAN, "--pid-file", str(pid_file))
    assert int(pid_file.read_text()) == server.proc.pid
    old_workers = workers(server)
    clients = streams(server.url, keys)
    write_version(path, "new")
    switched_at = time.monotonic()
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: all(str(c.results[-1][3]).startswith("new:") for c in clients))
    replaced(server, old_workers)
    answered(clients, 20)
    results = finish(clients)
    assert [r for r in results if r[2] != 200] == []  # no failed request
    assert {r[3].split(":", 1)[0] for r in results} == {"old", "new"}
    assert all(r[3].startswith("old:") for r in results if r[0] < switched_at)
    assert "reload done" in server.log()
    # then a bad file: refused, the same workers go on with the data they have
    current = workers(server)
    path.write_text(f"{keys[0]} fine\nbroken line\n")
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in server.log())
    assert f"{path}:2: key is not a UUID" in server.log()
    assert workers(server) == current
    assert (
        requests.get(f"{server.url}/items/{keys[0]}", timeout=10).json()["value"].startswith("new:")
    )
    assert server.stop() == 0
    assert not pid_file.exists()


def test_a_snapshot_is_opened_in_each_worker(start_server, data_file, data, servable):
    """An LMDB environment must not cross a fork: each worker opens its own."""
    server = start_server(servable(data_file, "snapshot"), *GRANIAN)
    keys = list(data)[:200]
    with requests.Session() as s:
        for key in keys:
            r = s.get(f"{server.url}/items/{key}", timeout=10, headers={"Connection": "close"})
            assert r.json()["value"] == data[key]
    assert "could not open its store" not in server.log()


def test_a_bad_data_file_stops_start_up_with_one_line(start_server, tmp_path):
    path = tmp_path / "bad.data"
    path.write_text("8a35eb59-62b3-481c-8875-1f248df4c952 ok\nnot a pair\n")
    server = start_server(path, *GRANIAN, wait=False)
    assert server.proc.wait(timeout=30) == 1
    log = server.log()
    assert f"kv-app: {path}:2: key is not a UUID (8-4-4-4-12 hex digits): 'not'" in log
    assert "Traceback" not in log
    assert "Starting granian" not in log  # nothing was served


def test_without_granian_serve_says_how_to_install_it(monkeypatch, data_file):
    monkeypatch.setattr(granian_server, "installed", lambda: False)
    monkeypatch.setattr(cli.os, "execve", lambda *a: pytest.fail("exec'd a server"))
    result = CliRunner().invoke(cli.cli, ["serve", str(data_file), *GRANIAN])
    assert result.exit_code == 1
    assert result.output == "Error: granian is not installed: pip install 'kv-app[granian]'\n"


def test_the_runner_without_granian_exits_with_one_line(data_file):
    hide = "import sys, runpy; sys.modules['granian'] = None; "
    run = hide + "runpy.run_module('kv_app.granian_server', run_name='__main__')"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    done = subprocess.run(
        [sys.executable, "-c", run],
        env={**env, "KV_DATA_PATH": str(data_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr == "kv-app: granian is not installed: pip install 'kv-app[granian]'\n"


def test_titles_and_reload_by_port_find_the_granian_master(granian, edge_file):
    """`kv-app reload --port` (and sync --port) find a granian server's main process by
    its title, as a gunicorn master's (before: "port P is not a kv-app server's")."""
    from kv_app import processes

    master = processes.master_on_port(granian.port)
    assert master.pid == granian.proc.pid
    assert processes.title(master.pid).startswith(f"kv-app master 127.0.0.1:{granian.port} ")
    done = CliRunner().invoke(cli.cli, ["reload", "--port", str(granian.port)])
    assert done.exit_code == 0, done.output
    assert f"pid {granian.proc.pid}" in done.output
    wait_for(lambda: "reload done" in granian.log(), timeout=60)
