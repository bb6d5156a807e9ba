"""Server CPU per request, in one run with alternated rounds: kv_app (this checkout, and
any other checkout named with --other NAME=DIR, put first on PYTHONPATH) beside the
stack's floor and the machine's ceiling, then batches beside Redis MGET.

    python scripts/bench_cpu.py [--pairs 1000000] [--other b6af801=/tmp/wt-b6af801]

Lookups: wrk with one thread at --connections connections asks random existing ids
(scripts/wrk/lookup.lua) for --duration seconds, --rounds times, alternated between
kv_app, the others, a constant Flask app and a bare WSGI callable under the same gunicorn
settings (scripts/bench_baseline.py; one sending kv_app's headers and body size as
constants), kv_app on granian (when installed), and nginx
answering `return 200` (when installed). Then one connection, for the latency alone.
CPU is utime + stime of the server's processes during the run (/proc), divided by the
requests answered; the ratio column divides by the bare WSGI app's.

Batches: POST /items/batch of --batch random ids of all the data's (dict store, and a
snapshot of the same data, which fits the page cache), against Redis MGET of as many keys
(redis-benchmark, one thread, the same connections) over the same values under keys
`key:<12 digits>`, when redis-server is installed. Keys per second and server CPU per key.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import Nginx, Server, children, data_files, free_port, snapshot_of, wrk  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")

# nginx's floor for an HTTP answer on this machine: the same number of worker processes.
NGINX_CONSTANT = """
worker_processes {workers};
pid nginx.pid;
error_log stderr error;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  server {{ listen 127.0.0.1:8080; location / {{ return 200 "constant"; }} }}
}}
"""


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICK


def tree(pid: int) -> list[int]:
    """pid and every process descending from it (a master and its workers)."""
    found, parents = [pid], [pid]
    while parents:
        parents = [c for p in parents for c in children(p)]
        found += parents
    return found


def measure(server, keys: Path, connections: int, duration: float, batch: int = 0) -> dict:
    """One wrk run against a server (anything with .url and .proc): its figures and the
    server's CPU per request."""
    pids = tree(server.proc.pid)
    env = {"KEYS_FILE": str(keys), **({"BATCH": str(batch)} if batch else {})}
    before = cpu_seconds(pids)
    result = wrk(server.url, "lookup.lua", connections, duration, env)
    used = cpu_seconds(pids) - before
    result["cpu_us"] = used / max(1, result["requests"]) * 1e6
    result["keys_per_s"] = result["rps"] * max(1, batch)
    return result


class KvServe(Server):
    """`kv-app serve DATA FLAGS` of the kv_app installed here (e.g. `--server granian`),
    started and stopped as Server does gunicorn."""

    def __init__(self, data: Path, workers: int, store: str, flags: tuple[str, ...] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
        env.update(KV_STORE=store, KV_WORKERS=str(workers))
        self.log = tempfile.TemporaryFile("w+")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kv_app", "serve", str(data),
             "--host", "127.0.0.1", "--port", str(self.port), *flags],
            env=env, cwd="/", stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            self.ready_seconds = self._wait(workers)
        except BaseException:  # not up (or interrupted): stopped, not left running
            self.stop()
            raise


class Redis:
    """redis-server on a free port of 127.0.0.1, no persistence, holding n values of a
    data file under keys `key:<12 digits>` (redis-benchmark's __rand_int__)."""

    def __init__(self, data: Path, n: int):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="kv-bench-redis-")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            self._load(data, n)
        except BaseException:
            self.stop()
            raise

    def _load(self, data: Path, n: int) -> None:
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        with open(data, "rb") as f, tempfile.TemporaryFile() as resp:
            for i, line in enumerate(f):  # the protocol itself, for redis-cli --pipe
                value = line[37:].rstrip(b"\n")
                key = b"key:%012d" % i
                resp.write(
                    b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                    % (len(key), key, len(value), value)
                )
            resp.seek(0)
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "--pipe"],
                stdin=resp, stdout=subprocess.DEVNULL, check=True,
            )  # fmt: skip
        if int(self.cli("DBSIZE")) != n:
            raise RuntimeError("redis-server did not take every pair")

    def cli(self, *command: str) -> str:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), *command], capture_output=True, text=True
        )
        return done.stdout.strip()

    def mget(self, batch: int, n: int, connections: int, duration: float) -> dict:
        """redis-benchmark of MGET of `batch` random keys for about `duration` seconds."""
        command = ["MGET", *["key:__rand_int__"] * batch]

        def run(requests: int) -> tuple[dict, float]:
            started = time.perf_counter()
            out = subprocess.run(
                ["redis-benchmark", "-p", str(self.port), "-c", str(connections),
                 "--threads", "1", "-n", str(requests), "-r", str(n), "--csv", *command],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            row = next(csv.DictReader(io.StringIO(out)))
            return row, time.perf_counter() - started

        _, took = run(200)  # calibration: about `duration` seconds of requests next
        requests = max(200, int(200 * duration / max(took, 1e-3)))
        before = cpu_seconds([self.proc.pid])
        row, _ = run(requests)
        used = cpu_seconds([self.proc.pid]) - before
        rps = float(row["rps"])
        return {
            "rps": rps,
            "keys_per_s": rps * batch,
            "cpu_us": used / requests * 1e6,
            "p50_ms": float(row["p50_latency_ms"]),
            "p99_ms": float(row["p99_latency_ms"]),
            "errors": 0,
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def median(results: list[dict], field: str) -> float:
    return statistics.median(r[field] for r in results)


def lookups(args, data: Path, keys: Path) -> None:
    """GET /items/<id>: every server at --connections, then kv_app's at 1 connection."""
    servers: dict = {}
    try:
        servers["kv_app"] = Server(data, args.workers, args.store)
        for other in args.other:
            name, _, where = other.partition("=")
            servers[name] = Server(
                data, args.workers, args.store, extra_env={"PYTHONPATH": str(Path(where))}
            )
        if args.granian:
            servers["kv_app on granian"] = KvServe(
                data, args.workers, args.store, ("--server", "granian")
            )
        servers["flask constant"] = Server(None, args.workers, args.store, baseline="app")
        servers["bare wsgi"] = Server(None, args.workers, args.store, baseline="wsgi")
        servers["bare wsgi, kv_app's headers"] = Server(
            None, args.workers, args.store, baseline="wsgi_answer"
        )
        if shutil.which("nginx"):
            servers["nginx return 200"] = Nginx(NGINX_CONSTANT.format(workers=args.workers))
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        single: dict[str, list[dict]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, server in servers.items():
                runs[name].append(measure(server, keys, args.connections, args.duration))
                single[name].append(measure(server, keys, 1, max(1, args.duration // 2)))
    finally:  # every server started is stopped, however the run ends
        for server in servers.values():
            server.stop()
    floor = median(runs["bare wsgi"], "cpu_us")
    print(
        f"# GET /items/<id>: {args.pairs:,} pairs ({args.store}), {args.workers} workers, "
        f"wrk -t1 -c{args.connections} (and -c1), {args.duration:g} s x {args.rounds} rounds"
    )
    print("server | req/s | CPU us/req | CPU / bare wsgi | p50 ms | p99 ms | c1 p50 ms | errors")
    for name, results in runs.items():
        cpu = median(results, "cpu_us")
        print(
            f"{name} | {median(results, 'rps'):,.0f} | {cpu:.0f} | {cpu / floor:.2f} | "
            f"{median(results, 'p50_ms'):.3f} | {median(results, 'p99_ms'):.2f} | "
            f"{median(single[name], 'p50_ms'):.3f} | "
            f"{sum(r['errors'] for r in results + single[name])}"
        )


def every_key(data: Path) -> Path:
    """A file of every key of the data file (made once): batches draw from all of them,
    as redis-benchmark draws from every key of Redis's copy."""
    keys = data.with_suffix(".allkeys")
    if not keys.exists():
        with open(data, "rb") as f, open(f"{keys}.tmp", "wb") as out:
            out.writelines(line[:36] + b"\n" for line in f)
        os.replace(f"{keys}.tmp", keys)
    return keys


def batches(args, data: Path) -> None:
    """POST /items/batch of --batch ids (dict, snapshot) beside Redis MGET."""
    keys = every_key(data)
    servers: dict = {}
    try:
        servers["kv_app dict"] = Server(data, args.workers, "dict")
        servers["kv_app snapshot"] = Server(snapshot_of(data, {}), args.workers, "snapshot")
        if shutil.which("redis-server") and shutil.which("redis-benchmark"):
            servers["redis MGET"] = Redis(data, args.pairs)
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, server in servers.items():
                if isinstance(server, Redis):
                    r = server.mget(args.batch, args.pairs, args.connections, args.duration)
                else:
                    r = measure(server, keys, args.connections, args.duration, args.batch)
                runs[name].append(r)
    finally:
        for server in servers.values():
            server.stop()
    print(
        f"# batches of {args.batch} random ids, {args.connections} connections, "
        f"{args.duration:g} s x {args.rounds} rounds"
    )
    redis = runs.get("redis MGET")
    print("server | keys/s | x Redis | CPU us/key | p50 ms | p99 ms | errors")
    for name, results in runs.items():
        keys_per_s = median(results, "keys_per_s")
        vs = f"{keys_per_s / median(redis, 'keys_per_s'):.2f}" if redis else "-"
        print(
            f"{name} | {keys_per_s:,.0f} | {vs} | {median(results, 'cpu_us') / args.batch:.2f} | "
            f"{median(results, 'p50_ms'):.2f} | {median(results, 'p99_ms'):.2f} | "
            f"{sum(r['errors'] for r in results)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--store", default="dict", help="kv_app's store for the lookups")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5, help="seconds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000, help="ids per batch (0: none)")
    parser.add_argument(
        "--only-batches", action="store_true", help="skip the GET servers, measure batches"
    )
    parser.add_argument("--other", action="append", default=[], help="NAME=DIR of a checkout")
    parser.add_argument(
        "--granian", action="store_true", help="also kv_app on granian (kv-app[granian])"
    )
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "kv-bench")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_cpu.py needs wrk: apt-get install wrk (Debian package)")
    data, keys = data_files(args.pairs, args.data_dir)
    print(f"# {os.cpu_count()} cores; medians of alternated rounds")
    if not args.only_batches:
        lookups(args, data, keys)
    if args.batch:
        batches(args, data)


if __name__ == "__main__":
    main()
