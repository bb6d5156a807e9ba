"""The benchmarks' load is what they say it is: scripts/wrk/zipf.lua asks the id of rank r
with probability proportional to 1 / r^s (its figures in the README depend on it)."""

from __future__ import annotations

import collections
import math
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from conftest import free_port, run_in_group, wait_for

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")

# Requests counted before the shares are compared: a count, not a duration, so a slow
# machine takes longer rather than measuring less.
ENOUGH = 5000


class Counting(BaseHTTPRequestHandler):
    """Counts the paths asked; sets `enough` at ENOUGH requests."""

    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
    seen: collections.Counter = collections.Counter()
    enough = threading.Event()
    lock = threading.Lock()

    def do_GET(self):  # noqa: N802 (http.server's name)
        with Counting.lock:
            Counting.seen[self.path] += 1
            if Counting.seen.total() >= ENOUGH:
                Counting.enough.set()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("exponent", [1.0, 2.0])
def test_zipf_script_asks_rank_r_in_proportion_to_r_to_the_minus_s(tmp_path, exponent):
    ids = [f"id-{r}" for r in range(1, 6)]
    (tmp_path / "keys").write_text("".join(i + "\n" for i in ids))
    Counting.seen, Counting.enough = collections.Counter(), threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # wrk runs until stopped (-d is only a bound): the test stops it after ENOUGH.
        wrk = subprocess.Popen(
            ["wrk", "-t1", "-c1", "-d600s", "-s", str(ROOT / "scripts" / "wrk" / "zipf.lua"),
             f"http://127.0.0.1:{server.server_address[1]}"],
            env={**os.environ, "KEYS_FILE": str(tmp_path / "keys"), "ZIPF_S": str(exponent)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            wait_for(lambda: Counting.enough.is_set() or wrk.poll() is not None, timeout=300)
        finally:
            wrk.terminate()
            output = wrk.communicate()[0]
    finally:
        server.shutdown()
        server.server_close()
    assert Counting.enough.is_set(), output  # wrk did not stop on its own
    with Counting.lock:
        seen = dict(Counting.seen)
    total = sum(seen.values())
    assert set(seen) <= {f"/items/{i}" for i in ids}, seen
    weights = [r**-exponent for r in range(1, 6)]
    for rank, weight in enumerate(weights, 1):
        p = weight / sum(weights)
        share = seen.get(f"/items/id-{rank}", 0) / total
        # Five standard deviations of a share of `total` draws: a wrong exponent or rank
        # order is off by far more; a right script fails about once in a million runs.
        assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / total), (rank, share, p, seen)


@pytest.mark.parametrize(
    "app, body", [("app", "constant"), ("wsgi", "constant"), ("wsgi_answer", '{"id":')]
)
def test_the_benchmarks_baseline_apps_serve_under_kv_apps_hooks(tmp_path, app, body):
    """scripts/bench.py and bench_cpu.py measure a constant Flask app and a bare WSGI
    callable under kv_app's gunicorn settings and hooks. Before: every worker failed to
    boot (post_fork looked for kv_app's store, then for a Flask app's extensions)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    env.update(KV_HOST="127.0.0.1", KV_PORT=str(port), KV_WORKERS="1")
    log = tmp_path / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "python:kv_app.gunicorn_conf"]
            + ["--chdir", str(ROOT / "scripts"), f"bench_baseline:{app}"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def answers() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/items/x", timeout=5).ok
            except requests.ConnectionError:
                return False

        wait_for(answers, timeout=60)
        assert requests.get(f"http://127.0.0.1:{port}/items/x", timeout=5).text.startswith(body)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_cpu_benchmark_runs_and_prints_its_table(tmp_path):
    """scripts/bench_cpu.py, briefly, as a user runs it: every server it starts answers
    (none with errors), and all are stopped when it ends. (It once could not start its
    own baselines: a hook looked for kv_app's store in any app.)"""
    # Its own process group, with every server it starts: all are killed if it hangs.
    bench = run_in_group(
        [sys.executable, str(ROOT / "scripts" / "bench_cpu.py"), "--pairs", "2000",
         "--duration", "1", "--rounds", "1", "--connections", "4", "--batch", "100",
         "--data-dir", str(tmp_path)],
        timeout=300, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out = bench.stdout
    assert bench.returncode == 0, out
    rows = {
        line.split(" | ")[0]: line.split(" | ")
        for line in out.splitlines()
        if " | " in line and not line.startswith("server")
    }
    expected = ["kv_app", "flask constant", "bare wsgi", "kv_app dict", "kv_app snapshot"]
    expected += ["nginx return 200"] if shutil.which("nginx") else []
    expected += ["redis MGET"] if shutil.which("redis-server") else []
    assert set(expected) <= set(rows), out
    assert all(row[-1] == "0" for row in rows.values()), out  # no errors
