#!/usr/bin/env python3
"""Write a data file shaped like ../shared/data/example.data: `<uuid4> <words>` lines.

    python scripts/make_data.py 1000000 /tmp/1m.data [--seed 1]

The same N and seed always give the same file (1M pairs is about 75 MB).
"""

from __future__ import annotations

import argparse
import random
import string
import uuid


def pairs(n: int, seed: int = 0):
    """Yield n (key, value) pairs: random version-4 UUIDs and 1-10 lowercase words."""
    rng = random.Random(seed)
    letters = string.ascii_lowercase
    for _ in range(n):
        key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        words = (
            "".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(rng.randint(1, 10))
        )
        yield key, " ".join(words)


def write(n: int, path: str, seed: int = 0) -> None:
    """Write n pairs to path."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        batch = []
        for key, value in pairs(n, seed):
            batch.append(f"{key} {value}\n")
            if len(batch) == 65536:
                f.writelines(batch)
                batch.clear()
        f.writelines(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", type=int, help="number of pairs")
    parser.add_argument("path", help="file to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    write(args.n, args.path, args.seed)


if __name__ == "__main__":
    main()
