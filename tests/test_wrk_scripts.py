"""The benchmarks' load is what they say it is: scripts/wrk/zipf.lua asks the id of rank r
with probability proportional to 1 / r^s (its figures in the README depend on it)."""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


class Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
    seen: collections.Counter = collections.Counter()

    def do_GET(self):  # noqa: N802 (http.server's name)
        Counting.seen[self.path] += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("exponent", [1.0, 2.0])
def test_zipf_script_asks_rank_r_in_proportion_to_r_to_the_minus_s(tmp_path, exponent):
    ids = [f"id-{r}" for r in range(1, 6)]
    (tmp_path / "keys").write_text("".join(i + "\n" for i in ids))
    Counting.seen = collections.Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        subprocess.run(
            ["wrk", "-t1", "-c1", "-d2s", "-s", str(ROOT / "scripts" / "wrk" / "zipf.lua"),
             f"http://127.0.0.1:{server.server_address[1]}"],
            env={**os.environ, "KEYS_FILE": str(tmp_path / "keys"), "ZIPF_S": str(exponent)},
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    total = sum(Counting.seen.values())
    assert total >= 1000 and set(Counting.seen) <= {f"/items/{i}" for i in ids}
    weights = [r**-exponent for r in range(1, 6)]
    for rank, weight in enumerate(weights, 1):
        share = Counting.seen[f"/items/id-{rank}"] / total
        assert abs(share - weight / sum(weights)) < 0.03, (rank, share, Counting.seen)
