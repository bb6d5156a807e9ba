#!/usr/bin/env python3
"""Soak test (not a pytest test): the real server under 64 connections for 60 s.

    python scripts/soak.py [--pairs 100000] [--seconds 60] [--connections 64] [--store dict]

Requests random existing ids and random missing ids (20 %) with wrk (Debian package
`wrk`), checks every answer in Lua (scripts/wrk/soak.lua), and reports requests, errors,
wrong answers and p99 latency. Exit status 1 if any request failed or was wrong.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_data  # noqa: E402
from bench import ROOT, Server  # noqa: E402

from kv_app.stores import STORES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", default="dict", choices=tuple(STORES))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("soak.py needs wrk: apt-get install wrk (Debian package)")

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "soak.data"
        make_data.write(args.pairs, str(data), seed=42)
        server = Server(data, args.workers, args.store)
        try:
            cmd = [
                "wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--timeout", "5s",
                "-s", str(ROOT / "scripts" / "wrk" / "soak.lua"), server.url,
            ]  # fmt: skip
            env = {**os.environ, "PAIRS_FILE": str(data)}
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        finally:
            server.stop()
    print(out)
    found = dict(re.findall(r"(\w+)=(\d+)", out.split("SOAK", 1)[1]))
    failed = int(found["wrong"]) + int(found["bad_status"]) + int(found["socket_errors"])
    print(
        f"soak: {args.seconds} s, {args.connections} connections, {args.workers} workers, "
        f"store={args.store}, {args.pairs:,} pairs: {int(found['requests']):,} requests, "
        f"{int(found['requests']) / args.seconds:,.0f} req/s, errors "
        f"{int(found['bad_status']) + int(found['socket_errors'])}, wrong answers {found['wrong']}, "
        f"p50 {int(found['p50_us']) / 1000:.2f} ms, p99 {int(found['p99_us']) / 1000:.2f} ms"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
