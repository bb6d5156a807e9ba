#!/usr/bin/env python3
"""HTTP caching: a Zipf workload against kv_app, through the caching front, and against
nginx returning a constant (the ceiling), in one run on this machine.

    python scripts/bench_cache.py [--pairs 1000000] [--exponent 1.0] [--duration 5] [--rounds 3]

Ids are drawn from a Zipf distribution over every id of the data (scripts/wrk/zipf.lua: the
id of rank r is asked with probability proportional to 1 / r^exponent). Three targets:
kv_app alone (gunicorn, --workers, --store), the same server behind deploy/nginx-cache.conf
as shipped, and an nginx that answers every request with one real answer's body (what
nginx and wrk cost on these cores without any lookup: the ceiling). The front first serves
one run on an empty cache (reported apart) and --warm seconds of the same load; then the
targets alternate for --rounds runs of single-key GETs at 1 connection (p50) and
--connections (requests/s, p99); medians.
The share of requests the cache answered is counted, not assumed: 1 - requests that
reached kv_app (its /metrics) / requests wrk made. Needs nginx and wrk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ROOT, Nginx, Server, data_files, median_run, wrk  # noqa: E402

from kv_app.stores import STORES  # noqa: E402

CONSTANT_CONF = """
worker_processes auto;
pid nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:8080;
        location / {
            default_type application/json;
            return 200 '%s';
        }
    }
}
"""


def all_keys(data: Path) -> Path:
    """Every id of the data file, in its order (one a line), written once."""
    keys = data.with_suffix(".allkeys")
    if not keys.exists():
        with open(data, encoding="utf-8") as f, open(str(keys) + ".tmp", "w") as out:
            for line in f:
                out.write(line[:36] + "\n")
        os.replace(str(keys) + ".tmp", keys)
    return keys


def upstream_requests(server: Server) -> int:
    """Requests kv_app has answered (its kv_http_requests_total, summed; /metrics itself
    is not counted)."""
    text = urllib.request.urlopen(server.url + "/metrics", timeout=5).read().decode()
    found = re.findall(r"^kv_http_requests_total\{[^}]*\} ([\d.e+]+)$", text, re.M)
    return round(sum(float(x) for x in found))


def front_run(server: Server, front: Nginx, connections: int, seconds: int, env: dict) -> dict:
    before = upstream_requests(server)
    result = wrk(front.url, "zipf.lua", connections, seconds, env)
    reached = upstream_requests(server) - before
    result["hit_share"] = round(1 - reached / result["requests"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--exponent", type=float, default=1.0, help="Zipf exponent s")
    parser.add_argument("--store", default="dict", choices=tuple(STORES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--warm", type=int, default=30, help="seconds of Zipf load on the front before measuring"
    )
    parser.add_argument(
        "--max-age", type=int, default=60, help="KV_CACHE_MAX_AGE for kv_app (its default: 60)"
    )
    parser.add_argument(
        "--cache-dir",
        default="/dev/shm" if Path("/dev/shm").is_dir() else None,
        help="where the front's prefix (and so its cache) goes: tmpfs, as the README advises",
    )
    parser.add_argument(
        "--conf", type=Path, default=ROOT / "deploy" / "nginx-cache.conf", help="the front's"
    )
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "kv-bench")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"bench_cache.py needs {tool} (Debian package {tool})")
    data, _ = data_files(args.pairs, args.data_dir)
    keys = all_keys(data)
    env = {"KEYS_FILE": str(keys), "ZIPF_S": str(args.exponent)}
    if args.store == "snapshot":
        from bench import snapshot_of

        data = snapshot_of(data, {})
    server = Server(
        data, args.workers, args.store, extra_env={"KV_CACHE_MAX_AGE": str(args.max_age)}
    )
    started: list = [server]
    try:
        front = Nginx(args.conf.read_text(), server.port, args.cache_dir)
        started.append(front)
        sample = keys.open().readline().strip()
        body = urllib.request.urlopen(f"{server.url}/items/{sample}", timeout=5).read().decode()
        constant = Nginx(CONSTANT_CONF % body.rstrip("\n").replace("'", "\\'"))
        started.append(constant)
        cold = front_run(server, front, args.connections, args.duration, env)
        warm = front_run(server, front, args.connections, args.warm, env) if args.warm else None
        targets = {"direct": server, "front": front, "constant": constant}
        runs: dict[str, dict[str, list]] = {name: {"c1": [], "cN": []} for name in targets}
        for _ in range(args.rounds):
            for name, target in targets.items():
                for key, c in (("c1", 1), ("cN", args.connections)):
                    if name == "front":
                        runs[name][key].append(front_run(server, front, c, args.duration, env))
                    else:
                        runs[name][key].append(wrk(target.url, "zipf.lua", c, args.duration, env))
    finally:
        for process in reversed(started):
            process.stop()

    medians = {name: {k: median_run(v) for k, v in r.items()} for name, r in runs.items()}
    direct, ceiling = medians["direct"]["cN"]["rps"], medians["constant"]["cN"]["rps"]
    c = args.connections
    print(f"# {os.cpu_count()} cores (nginx, kv_app's {args.workers} workers and wrk share them); "
          f"{args.pairs:,} pairs, {args.store} store; Zipf s={args.exponent} over every id; "
          f"max-age {args.max_age} s; front's cache in {args.cache_dir or 'its prefix'}; "
          f"{args.rounds} rounds of {args.duration} s, alternating; medians")  # fmt: skip
    print(f"target | c1 p50 ms | c{c} req/s | c{c} p99 ms | x direct | x constant | "
          f"answered by the cache | errors")  # fmt: skip
    rows = [("direct", medians["direct"]), ("front (cold cache, first run)", {"cN": cold})]
    rows += [("front (warm)", medians["front"]), ("constant nginx", medians["constant"])]
    for name, m in rows:
        n = m["cN"]
        p50 = m["c1"]["p50_ms"] if "c1" in m else "-"
        share = f"{n['hit_share']:.1%}" if "hit_share" in n else "-"
        errors = n["errors"] + (m["c1"]["errors"] if "c1" in m else 0)
        print(f"{name} | {p50} | {n['rps']:,.0f} | {n['p99_ms']} | {n['rps'] / direct:.2f} | "
              f"{n['rps'] / ceiling:.2f} | {share} | {errors}")  # fmt: skip
    if warm:
        print(f"# then {args.warm} s of warming: {warm['requests']:,} requests, "
              f"{warm['hit_share']:.1%} answered by the cache")  # fmt: skip
    front_runs = ", ".join(f"{r:,.0f}" for r in medians["front"]["cN"]["rps_runs"])
    print(f"# front c{c} runs: {front_runs} req/s; hit shares "
          f"{', '.join(str(r['hit_share']) for r in runs['front']['cN'])}")  # fmt: skip


if __name__ == "__main__":
    main()
