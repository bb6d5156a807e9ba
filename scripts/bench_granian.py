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
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import data_files  # noqa: E402 (scripts beside this one)
from bench_cpu import KvServe, measure  # noqa: E402

SERVERS = {
    "gunicorn (default: gevent)": (),
    "granian --threads 8 (default)": ("--server", "granian"),
    "granian --threads 1": ("--server", "granian", "--threads", "1"),
    "granian --threads 2": ("--server", "granian", "--threads", "2"),
}


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
    servers: dict[str, KvServe] = {}
    runs: dict[str, list[dict]] = {name: [] for name in SERVERS}
    try:
        for name, flags in SERVERS.items():
            servers[name] = KvServe(data, args.workers, "dict", flags)
        for round_ in range(1, args.rounds + 1):
            for name, server in servers.items():
                result = measure(server, keys, args.connections, args.duration)
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
