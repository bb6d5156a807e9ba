"""Peak memory of loading a text file into each kind of store that loads one, per pair
and per byte of the file: the figures behind StoreKind.per_pair/per_byte (kv_app/stores),
which the server uses to refuse a load that cannot fit under its memory limit.

    python scripts/bench_memory.py [--pairs 300000]

Each load runs in a fresh process (peak RSS from getrusage less the RSS before the load),
on two generated files: short values (about 10 bytes) and long ones (about 300 bytes).
Two files give two equations: peak = per_pair * pairs + per_byte * file bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import uuid

from kv_app.stores import STORES

_CHILD = """
import gc, json, os, resource, sys
from kv_app.stores import STORES
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
kind, path = sys.argv[1], sys.argv[2]
STORES[kind].cls()  # imports (numpy ...) are not the load
gc.collect()
before = rss()
store = STORES[kind].open(path)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"pairs": len(store), "peak": peak - before}))
"""


def write(path: str, pairs: int, value_bytes: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(pairs):
            key = uuid.UUID(int=rng.getrandbits(128), version=4)
            f.write(f"{key} {'x' * rng.randint(value_bytes // 2, value_bytes * 3 // 2)}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=300_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as where:
        files = {}
        for name, value_bytes in (("short", 10), ("long", 300)):
            files[name] = os.path.join(where, f"{name}.data")
            write(files[name], args.pairs, value_bytes, seed=1)
        for kind in (k for k, v in STORES.items() if v.loads_text):
            rows = []
            for name, path in files.items():
                out = subprocess.run(
                    [sys.executable, "-c", _CHILD, kind, path],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                got = json.loads(out)
                size = os.path.getsize(path)
                rows.append((got["pairs"], size, got["peak"]))
                print(
                    f"{kind:8} {name:5} values: {got['pairs']:,} pairs, {size / 1e6:,.1f} MB "
                    f"file, peak {got['peak'] / 1e6:,.1f} MB = {got['peak'] / got['pairs']:.0f} "
                    "B/pair"
                )
            (n1, b1, p1), (n2, b2, p2) = rows
            per_byte = (p2 / n2 - p1 / n1) / (b2 / n2 - b1 / n1)
            per_pair = p1 / n1 - per_byte * b1 / n1
            declared = STORES[kind]
            print(
                f"{kind:8} fit: {per_pair:.0f} B/pair + {per_byte:.2f} B/file byte "
                f"(declared: {declared.per_pair} + {declared.per_byte})"
            )


if __name__ == "__main__":
    main()
