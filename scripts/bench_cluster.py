#!/usr/bin/env python3
"""What the nginx front costs: 1, 2 and 4 replicas (scripts/cluster.sh) through the front
and called directly, in one run, on this machine.

    python scripts/bench_cluster.py [--pairs 1000000] [--duration 5]

For each replica count: single-key GETs of random existing ids at 1 connection (p50, p99)
and at 32 connections (requests/s, p99), through the front and straight to the replicas
(32 connections split over them, one wrk per replica, requests/s added up). Every process
shares the same 2 cores, so requests/s cannot grow with replicas here: read the ratio and
the latency the front adds. Needs nginx and wrk. Data: a snapshot of --pairs generated
pairs (built once into --data-dir, as bench.py does).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ROOT, data_files, free_port, snapshot_of, wrk  # noqa: E402


def cluster(*args: str, env: dict) -> str:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "cluster.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout


def measure(replicas: int, data: Path, keys: Path, args) -> dict:
    port = free_port()
    while any(_busy(p) for p in range(port, port + replicas + 1)):
        port = free_port()
    state = Path(tempfile.mkdtemp(prefix="kv-bench-cluster-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    env["KV_CLUSTER_DIR"] = str(state)
    cluster("up", str(data), "--replicas", str(replicas), "--port", str(port), env=env)
    front = f"http://127.0.0.1:{port}"
    direct = [f"http://127.0.0.1:{port + i}" for i in range(1, replicas + 1)]
    lua = {"KEYS_FILE": str(keys)}
    try:
        result = {"replicas": replicas}
        result["front_c1"] = wrk(front, "lookup.lua", 1, args.duration, lua)
        result["direct_c1"] = wrk(direct[0], "lookup.lua", 1, args.duration, lua)
        result["front_c32"] = wrk(front, "lookup.lua", 32, args.duration, lua)
        per = max(1, 32 // replicas)
        with ThreadPoolExecutor(replicas) as pool:
            runs = list(
                pool.map(lambda url: wrk(url, "lookup.lua", per, args.duration, lua), direct)
            )
        result["direct_c32"] = {
            "rps": round(sum(r["rps"] for r in runs), 1),
            "p99_ms": max(r["p99_ms"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
        }
    finally:
        cluster("down", "--port", str(port), env=env)
    return result


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "kv-bench")
    args = parser.parse_args()
    data, keys = data_files(args.pairs, args.data_dir)
    snapshot = snapshot_of(data, {})
    print(
        f"# {os.cpu_count()} cores; snapshot of {args.pairs:,} pairs; {args.duration} s per wrk run"
    )
    print("replicas | front c1 p50 ms | direct c1 p50 ms | added ms | front c1 p99 | direct c1 p99 | "
          "front c32 req/s | direct c32 req/s | ratio | front c32 p99 ms | direct c32 p99 ms | errors")  # fmt: skip
    for replicas in (1, 2, 4):
        r = measure(replicas, snapshot, keys, args)
        f1, d1, f32, d32 = r["front_c1"], r["direct_c1"], r["front_c32"], r["direct_c32"]
        errors = f1["errors"] + d1["errors"] + f32["errors"] + d32["errors"]
        print(f"{replicas} | {f1['p50_ms']} | {d1['p50_ms']} | {f1['p50_ms'] - d1['p50_ms']:.3f} | "
              f"{f1['p99_ms']} | {d1['p99_ms']} | {f32['rps']:,.0f} | {d32['rps']:,.0f} | "
              f"{f32['rps'] / d32['rps']:.2f} | {f32['p99_ms']} | {d32['p99_ms']} | {errors}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
