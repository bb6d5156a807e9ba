"""Server CPU per request, in one run with alternated rounds: kv_app (this checkout, and
any other checkout named with --other NAME=DIR, put first on PYTHONPATH), a constant
Flask app and a bare WSGI callable under the same gunicorn settings (scripts/bench_baseline.py).

    python scripts/bench_cpu.py [--pairs 1000000] [--other b6af801=/tmp/wt-b6af801]

For each server: wrk with one thread at --connections connections asks random existing
ids (scripts/wrk/lookup.lua) for --duration seconds, --rounds times, alternated with
the others. CPU is utime + stime of the server's master and workers during the run
(/proc), divided by the requests answered. Prints the medians: requests/s, CPU us per
request, p50 and p99 ms, and each server's CPU per request as a ratio to the bare WSGI
app's. Needs wrk.
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
from bench import Server, data_files, wrk  # noqa: E402 (a script beside this one)

TICK = os.sysconf("SC_CLK_TCK")


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


def measure(server: Server, keys: Path, connections: int, duration: float) -> dict:
    pids = [server.proc.pid, *server.children()]
    before = cpu_seconds(pids)
    result = wrk(server.url, "lookup.lua", connections, duration, {"KEYS_FILE": str(keys)})
    used = cpu_seconds(pids) - before
    result["cpu_us"] = used / max(1, result["requests"]) * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--store", default="dict")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--other", action="append", default=[], help="NAME=DIR of a checkout")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "kv-bench")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_cpu.py needs wrk: apt-get install wrk (Debian package)")
    data, keys = data_files(args.pairs, args.data_dir)
    servers: dict[str, Server] = {}
    try:
        servers["kv_app"] = Server(data, args.workers, args.store)
        for other in args.other:
            name, _, where = other.partition("=")
            servers[name] = Server(
                data, args.workers, args.store, extra_env={"PYTHONPATH": str(Path(where))}
            )
        servers["flask constant"] = Server(None, args.workers, args.store, baseline="app")
        servers["bare wsgi"] = Server(None, args.workers, args.store, baseline="wsgi")
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, server in servers.items():
                runs[name].append(measure(server, keys, args.connections, args.duration))
    finally:
        for server in servers.values():
            server.stop()
    floor = statistics.median(r["cpu_us"] for r in runs["bare wsgi"])
    print(
        f"# {os.cpu_count()} cores; {args.pairs:,} pairs ({args.store}), {args.workers} "
        f"workers, wrk -t1 -c{args.connections}, {args.duration:g} s x {args.rounds} rounds"
    )
    print("server | req/s | CPU us/req | CPU / bare wsgi | p50 ms | p99 ms | errors")
    for name, results in runs.items():
        cpu = statistics.median(r["cpu_us"] for r in results)
        print(
            f"{name} | {statistics.median(r['rps'] for r in results):,.0f} | {cpu:.0f} | "
            f"{cpu / floor:.2f} | {statistics.median(r['p50_ms'] for r in results):.3f} | "
            f"{statistics.median(r['p99_ms'] for r in results):.2f} | "
            f"{sum(r['errors'] for r in results)}"
        )


if __name__ == "__main__":
    main()
