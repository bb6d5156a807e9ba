"""granian beside gunicorn: server CPU per GET /items/<id>, in one run with alternated rounds.

    python scripts/bench_granian.py [--pairs 1000000] [--rounds 5] [--duration 5]

Starts `kv-app serve` (this checkout) with the default gunicorn and with --server granian
at --threads 8 (the default), 1 and 2, each on a free port of 127.0.0.1. For each: wrk with
one thread at --connections connections asks random existing ids (scripts/wrk/lookup.lua)
for --duration seconds, --rounds times, alternated with the others. CPU is utime + stime
of the server's whole process tree during the run (/proc), over the requests answered.
Prints each round, then the medians and the ratios to gunicorn. Needs wrk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import children, data_files, free_port, wrk  # noqa: E402 (scripts beside this one)
from bench_cpu import cpu_seconds, tree  # noqa: E402

KV_APP = str(Path(sys.executable).with_name("kv-app"))
SERVERS = {
    "gunicorn (default: gevent)": (),
    "granian --threads 8 (default)": ("--server", "granian"),
    "granian --threads 1": ("--server", "granian", "--threads", "1"),
    "granian --threads 2": ("--server", "granian", "--threads", "2"),
}


class Server:
    """`kv-app serve DATA FLAGS` on a free port, in its own process group."""

    def __init__(self, data: Path, workers: int, flags: tuple[str, ...]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = tempfile.TemporaryFile("w+")
        command = [KV_APP, "serve", str(data), "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--workers", str(workers), *flags],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        try:
            self._wait(workers)
        except BaseException:
            self.stop()
            raise

    def _wait(self, workers: int) -> None:
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError("server exited:\n" + self.log.read())
            try:
                urllib.request.urlopen(self.url + "/readyz", timeout=2)
                if len(children(self.proc.pid)) >= workers:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in 300 s")
            time.sleep(0.1)
        time.sleep(1)  # the other workers finish booting

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever the master left
        except ProcessLookupError:
            pass
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "kv-bench")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_granian.py needs wrk: apt-get install wrk (Debian package)")
    data, keys = data_files(args.pairs, args.data_dir)
    servers: dict[str, Server] = {}
    runs: dict[str, list[dict]] = {name: [] for name in SERVERS}
    try:
        for name, flags in SERVERS.items():
            servers[name] = Server(data, args.workers, flags)
        for round_ in range(1, args.rounds + 1):
            for name, server in servers.items():
                pids = tree(server.proc.pid)
                before = cpu_seconds(pids)
                env = {"KEYS_FILE": str(keys)}
                result = wrk(server.url, "lookup.lua", args.connections, args.duration, env)
                result["cpu_us"] = (cpu_seconds(pids) - before) / max(1, result["requests"]) * 1e6
                runs[name].append(result)
                print(
                    f"round {round_} {name}: {result['rps']:,.0f} req/s, "
                    f"{result['cpu_us']:.1f} us CPU/GET, p99 {result['p99_ms']} ms",
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.stop()
    first = next(iter(runs.values()))
    base_cpu = statistics.median(r["cpu_us"] for r in first)
    base_rps = statistics.median(r["rps"] for r in first)
    print(
        f"# {os.cpu_count()} cores; {args.pairs:,} pairs (dict), {args.workers} workers, "
        f"wrk -t1 -c{args.connections}, {args.duration} s x {args.rounds} rounds alternated; "
        "medians"
    )
    print("server | req/s | x gunicorn | CPU us/GET | x gunicorn | p50 ms | p99 ms | errors")
    for name, results in runs.items():
        cpu = statistics.median(r["cpu_us"] for r in results)
        rps = statistics.median(r["rps"] for r in results)
        print(
            f"{name} | {rps:,.0f} | {rps / base_rps:.2f} | {cpu:.0f} | {cpu / base_cpu:.2f} | "
            f"{statistics.median(r['p50_ms'] for r in results):.3f} | "
            f"{statistics.median(r['p99_ms'] for r in results):.2f} | "
            f"{sum(r['errors'] for r in results)}"
        )


if __name__ == "__main__":
    main()
