#!/usr/bin/env python3
"""What metrics and the JSON access log cost per request, measured in one run.

    python scripts/bench_overhead.py [--pairs 100000] [--duration 5] [--rounds 3]

Three configurations of the same server (dict store, 2 gevent workers), their runs
alternating so that all see the same machine: metrics off and access log off (KV_METRICS=0),
metrics on (the default), metrics and access log on (KV_ACCESS_LOG=1, lines to a file).
Single-key GETs at 1 connection (p50) and 32 connections (requests/s); medians of the
rounds; cost per request = the difference in CPU time a request takes on these 2 cores.
Needs wrk.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Server, data_files, wrk  # noqa: E402

CONFIGS = {
    "bare": {"KV_METRICS": "0"},
    "metrics": {},
    "metrics+log": {"KV_ACCESS_LOG": "1"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "kv-bench")
    args = parser.parse_args()
    data, keys = data_files(args.pairs, args.data_dir)
    servers = {name: Server(data, 2, "dict", extra_env=env) for name, env in CONFIGS.items()}
    runs: dict[str, dict[str, list]] = {name: {"c1": [], "c32": []} for name in CONFIGS}
    try:
        for _ in range(args.rounds):
            for name, server in servers.items():
                for c in (1, 32):
                    r = wrk(server.url, "lookup.lua", c, args.duration, {"KEYS_FILE": str(keys)})
                    runs[name][f"c{c}"].append(r)
    finally:
        for server in servers.values():
            server.stop()

    def median(values):
        return sorted(values)[len(values) // 2]

    cores = os.cpu_count()
    print(
        f"# {cores} cores; {args.pairs:,} pairs; {args.rounds} rounds of {args.duration} s, alternating"
    )
    print("config | c1 p50 ms | c32 req/s | CPU us/request | cost vs bare us")  # fmt: skip
    bare = None
    for name in CONFIGS:
        p50 = median([r["p50_ms"] for r in runs[name]["c1"]])
        rps = median([r["rps"] for r in runs[name]["c32"]])
        cpu_us = cores / rps * 1e6
        bare = cpu_us if bare is None else bare
        print(f"{name} | {p50} | {rps:,.0f} | {cpu_us:.0f} | {cpu_us - bare:+.0f}")


if __name__ == "__main__":
    main()
