"""The real server: `kv-app serve` (gunicorn with gunicorn.conf.py) on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import EXAMPLE_DATA, KV_APP, ROOT, make_data, wait_for
from kv_app import __version__
from kv_app.client import KVClient


def fetch_all(url: str, keys: list[str]) -> dict[str, str]:
    """GET every key over HTTP (4 threads, one session each); return key -> value."""

    def fetch(part: list[str]) -> dict[str, str]:
        with requests.Session() as s:
            found = {}
            for key in part:
                r = s.get(f"{url}/items/{key}", timeout=10)
                assert r.status_code == 200, (key, r.status_code, r.text)
                assert r.headers["Content-Type"] == "application/json"
                found[key] = r.json()["value"]
            return found

    parts = [keys[i::4] for i in range(4)]
    result: dict[str, str] = {}
    with ThreadPoolExecutor(4) as pool:
        for found in pool.map(fetch, parts):
            result.update(found)
    return result


def test_every_generated_key_over_http(server, data):
    """Every key in batches, one in four through GET /items/<id> too."""
    with KVClient(server.url) as kv:
        assert kv.get_many(data) == data
    sample = list(data)[::4]
    assert fetch_all(server.url, sample) == {k: data[k] for k in sample}


@pytest.mark.skipif(
    not EXAMPLE_DATA.is_file(), reason="../shared/data/example.data is not beside the repo"
)
def test_every_key_of_the_public_example_file(start_server, store_kind, servable):
    expected = {}
    with open(EXAMPLE_DATA, encoding="utf-8") as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition(" ")
            expected[key] = value
    assert len(expected) == 10_000
    server = start_server(servable(EXAMPLE_DATA, store_kind), "--store", store_kind)
    # Every key through the batch route, one in ten through GET /items/<id> as well.
    with KVClient(server.url) as kv:
        assert kv.get_many(expected) == expected
    sample = list(expected)[::10]
    assert fetch_all(server.url, sample) == {k: expected[k] for k in sample}


def test_tricky_values_over_http(start_server, tricky_file, store_kind, servable):
    path, expected = tricky_file
    server = start_server(servable(path, store_kind), "--store", store_kind)
    assert fetch_all(server.url, list(expected)) == expected
    with requests.Session() as s:
        for key, value in expected.items():
            r = s.get(f"{server.url}/items/{key}", headers={"Accept": "text/plain"})
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert r.content.decode("utf-8") == value


def test_errors_over_http(server):
    r = requests.get(f"{server.url}/items/nope")
    assert r.status_code == 400 and r.json()["status"] == 400
    r = requests.get(f"{server.url}/items/00000000-0000-4000-8000-000000000000")
    assert r.status_code == 404 and r.json()["error"] == "Not Found"
    r = requests.get(f"{server.url}/nope")
    assert r.status_code == 404 and r.json()["message"] == "no route /nope"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_docs_over_http(server):
    assert requests.get(f"{server.url}/docs/").status_code == 200
    assert requests.get(f"{server.url}/redoc").status_code == 200
    assert requests.get(f"{server.url}/openapi.json").json()["openapi"] == "3.0.3"


def test_bad_data_file_stops_start_up_with_path_and_line(start_server, tmp_path):
    path = tmp_path / "bad.data"
    path.write_text("8a35eb59-62b3-481c-8875-1f248df4c952 ok\nnot a pair\n")
    server = start_server(path, wait=False)
    assert server.proc.wait(timeout=30) == 1
    err = server.log()
    assert f"kv-app: {path}:2: key is not a UUID (8-4-4-4-12 hex digits): 'not'" in err
    assert "Traceback" not in err
    assert "Booting worker" not in err  # nothing was served


@pytest.mark.parametrize("kind", ["missing", "directory", "empty"])
def test_unservable_files_stop_start_up(start_server, tmp_path, kind):
    path = {"missing": tmp_path / "nope.data", "directory": tmp_path, "empty": tmp_path / "e.data"}[
        kind
    ]
    if kind == "empty":
        path.write_bytes(b"")
    server = start_server(path, wait=False)
    assert server.proc.wait(timeout=30) == 1
    err = server.log()
    assert f"kv-app: {path}: " in err and "Traceback" not in err


def test_lenient_mode_serves_the_good_lines(start_server, tmp_path):
    path = tmp_path / "mixed.data"
    path.write_text("8a35eb59-62b3-481c-8875-1f248df4c952 ok\nnot a pair\n")
    server = start_server(path, "--on-error", "lenient")
    assert requests.get(f"{server.url}/readyz").json()["pairs"] == 1
    log = server.log()
    assert f"skipped {path}:2: key is not a UUID" in log
    assert "skipped 1 bad lines (lines 2)" in log


def test_settings_from_environment(start_server, data_file, data):
    server = start_server(data_file, env={"KV_WORKERS": "1", "KV_ACCESS_LOG": "1"})
    key = next(iter(data))
    assert requests.get(f"{server.url}/items/{key}").json()["value"] == data[key]
    # the access log is on (its line is written just after the answer is sent)
    wait_for(lambda: f'"path":"/items/{key}","query":null,"status":200' in server.log())
    assert server.log().count("Booting worker") == 1


@pytest.mark.parametrize("worker_class", ["gthread", "sync"])
def test_other_worker_classes(start_server, data_file, data, worker_class):
    server = start_server(data_file, "--worker-class", worker_class)
    key = next(iter(data))
    assert requests.get(f"{server.url}/items/{key}").json()["value"] == data[key]
    assert f"Using worker: {worker_class}" in server.log()
    assert server.stop() == 0


def test_python_dash_m_runs_the_same_command(data_file):
    out = subprocess.run(
        [sys.executable, "-m", "kv_app", "check", str(data_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == f"{data_file}: OK, 2,000 pairs\n"


def test_sigterm_exits_cleanly(start_server, data_file):
    server = start_server(data_file)
    assert server.stop() == 0


def test_sample_data_is_what_make_data_writes(tmp_path):
    path = tmp_path / "sample.data"
    make_data.write(1000, str(path), seed=0)
    assert path.read_bytes() == (ROOT / "data" / "sample.data").read_bytes()


def test_the_kv_app_command_is_installed_beside_python():
    """The servers these tests start run KV_APP: the `kv-app` entry point installed with
    the Python running the tests (not another install's on PATH)."""
    out = subprocess.run([KV_APP, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == f"kv-app, version {__version__}\n"
    interpreter = Path(KV_APP).read_text().splitlines()[0].removeprefix("#!")
    assert Path(interpreter).parent == Path(sys.executable).parent  # the same environment


@pytest.mark.parametrize("with_file", [True, False])
def test_serve_script_passes_flags_on(start_server, data_file, with_file, tmp_path):
    """Defect 11: `serve.sh my.data --port 8125` ended in a pip traceback (the sourced
    venv script took the flags as extras), `serve.sh --port 8125` in realpath."""
    server = start_server(
        data_file if with_file else None,
        "--workers",
        "1",
        serve=("bash", str(ROOT / "scripts" / "serve.sh")),
        cwd=tmp_path,
    )
    ready = requests.get(f"{server.url}/readyz", timeout=5).json()
    expected = data_file if with_file else ROOT / "data" / "sample.data"
    assert ready["path"] == str(expected)
    assert ready["pairs"] == (2000 if with_file else 1000)
    assert "Booting worker" in server.log() and server.log().count("Booting worker") == 1


def test_pid_file_names_the_master(start_server, data_file, tmp_path):
    """The README's `kill -HUP "$(cat FILE)"` (a pgrep pattern could match the user's shell)."""
    pid_file = tmp_path / "kv-app.pid"
    server = start_server(data_file, "--pid-file", str(pid_file))
    assert int(pid_file.read_text()) == server.proc.pid


def test_access_log_is_one_json_object_a_request(start_server, data_file, data):
    """time, method, path, status, bytes, duration, remote, user agent, request id (the
    client's X-Request-ID, or one made and echoed)."""
    import json

    server = start_server(data_file, "--access-log")
    key = next(iter(data))
    r = requests.get(f"{server.url}/items/{key}", headers={"X-Request-ID": "job-42.7"})
    assert r.headers["X-Request-ID"] == "job-42.7"
    made = requests.get(f"{server.url}/nope?x=1", headers={"User-Agent": 'odd "agent"\\'})
    made_id = made.headers["X-Request-ID"]
    assert len(made_id) == 32  # a new id, not the client's (it sent none)
    bad = requests.get(f"{server.url}/healthz", headers={"X-Request-ID": "x" * 500})
    assert bad.headers["X-Request-ID"] != "x" * 500  # not a sane token: replaced
    accented = requests.get(f"{server.url}/healthz", headers={"X-Request-ID": "caf\u00e9"})
    assert len(accented.headers["X-Request-ID"]) == 32  # ASCII only, as the nginx fronts

    def lines():
        return [json.loads(x) for x in server.log().splitlines() if x.startswith("{")]

    wait_for(lambda: any(x["path"] == "/healthz" for x in lines()))
    [first] = [x for x in lines() if x["path"].startswith("/items/")]
    [second] = [x for x in lines() if x["path"] == "/nope"]
    assert first["request_id"] == "job-42.7" and first["path"] == f"/items/{key}"
    assert first["method"] == "GET" and first["status"] == 200 and first["bytes"] == len(r.content)
    assert first["duration_us"] > 0 and first["remote"] == "127.0.0.1"
    assert second == {**second, "status": 404, "query": "x=1", "request_id": made_id}
    assert second["user_agent"] == 'odd "agent"\\'


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_an_answer_leaves_in_one_send(start_server, data_file, data, tmp_path, worker_class):
    """Headers and body of an answer in one send (gunicorn sends them in two)."""
    from test_faults import children

    server = start_server(data_file, "--workers", "1", "--worker-class", worker_class)
    key = next(iter(data))
    requests.get(f"{server.url}/items/{key}", timeout=10)  # the worker is up
    (worker,) = children(server.proc.pid)
    trace = tmp_path / "trace"
    strace = subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=sendto,sendmsg,write,writev", "-s", "4096"]
        + ["-o", str(trace), "-p", str(worker)],
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)  # attached
        with requests.Session() as session:
            for path in (f"/items/{key}", f"/items/{key.upper()}", "/items/nope"):
                session.get(f"{server.url}{path}", timeout=10)
        wait_for(lambda: trace.read_text().count("HTTP/1.1") >= 3, timeout=30)
    finally:
        strace.terminate()
        strace.wait(timeout=30)
    sends = [line for line in trace.read_text().splitlines() if "HTTP/1.1 " in line]
    assert len(sends) == 3, sends
    assert all("\\r\\n\\r\\n{" in line for line in sends), sends  # the body in the same send
