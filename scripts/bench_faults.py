"""gevent or gthread for a snapshot larger than memory: lookups that fault pages in from
disk, in one run with alternated rounds.

    python scripts/bench_faults.py [--pairs 10000000] [--ratio 4] [--connections 32]

A page fault blocks the whole process that takes it: with gevent that is every
connection of the worker; with gthread only the thread. The server runs in a cgroup v1
memory cgroup (scripts/memlimit.py) whose limit is the snapshot's size divided by --ratio,
with the snapshot's pages evicted from the page cache first; wrk at --connections asks
random ids (scripts/wrk/lookup.lua) for --duration seconds, per worker class, --rounds
times, alternated. Prints requests/s, p50 and p99 ms, errors, and the cgroup's counters.
Needs root, the cgroup v1 memory controller and wrk.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import memlimit  # noqa: E402 (scripts beside this one)
from bench import Server, data_files, snapshot_of, wrk  # noqa: E402

CLASSES = {"gevent": {}, "gthread": {"KV_THREADS": "32"}}


def one_round(snapshot: Path, keys: Path, worker_class: str, limit_bytes: int, args) -> dict:
    from kv_app.stores.snapshot import DATA_FILE

    memlimit.evict(snapshot / DATA_FILE)
    with memlimit.MemoryLimit(limit_bytes, name="kv-bench-faults") as limit:
        env = {"KV_WORKER_CLASS": worker_class, **CLASSES[worker_class]}
        server = Server(snapshot, args.workers, "snapshot", preexec_fn=limit.join, extra_env=env)
        try:
            result = wrk(server.url, "lookup.lua", args.connections, args.duration,
                         {"KEYS_FILE": str(keys)})  # fmt: skip
        finally:
            server.stop()
        return {**result, **limit.stats()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000_000)
    parser.add_argument("--ratio", type=float, default=4.0, help="snapshot size / limit")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10, help="seconds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "kv-bench")
    args = parser.parse_args()
    if shutil.which("wrk") is None or not memlimit.available():
        sys.exit("bench_faults.py needs wrk and a writable cgroup v1 memory controller (root)")
    from kv_app.stores.snapshot import DATA_FILE

    data, keys = data_files(args.pairs, args.data_dir)
    snapshot = snapshot_of(data, {})
    size = (snapshot / DATA_FILE).stat().st_size
    limit_bytes = int(size / args.ratio)
    runs: dict[str, list[dict]] = {name: [] for name in CLASSES}
    for _ in range(args.rounds):
        for name in CLASSES:
            runs[name].append(one_round(snapshot, keys, name, limit_bytes, args))
    print(
        f"# snapshot of {args.pairs:,} pairs: {size / 1e6:,.0f} MB; memory limit "
        f"{limit_bytes / 1e6:,.0f} MB (1/{args.ratio:g}); {args.workers} workers; wrk -t1 "
        f"-c{args.connections}, {args.duration} s x {args.rounds} rounds, alternated"
    )
    print("worker class | req/s | p50 ms | p99 ms | errors | max usage MB | oom kills")
    for name, results in runs.items():
        print(
            f"{name} | {statistics.median(r['rps'] for r in results):,.0f} | "
            f"{statistics.median(r['p50_ms'] for r in results):.2f} | "
            f"{statistics.median(r['p99_ms'] for r in results):.2f} | "
            f"{sum(r['errors'] for r in results)} | "
            f"{max(r['max_usage'] for r in results) / 1e6:,.0f} | "
            f"{sum(r['oom_kill'] for r in results)}"
        )


if __name__ == "__main__":
    main()
