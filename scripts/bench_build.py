"""Time, peak memory and disk of `kv-app build` at a given size, measured from outside.

    python scripts/bench_build.py 1000000 [10000000 ...] [--work DIR] [-- BUILD FLAGS]
    python scripts/bench_build.py 10000000 --variant "--jobs 1" --variant "--jobs 2"

For each size: a data file of that many pairs (scripts/make_data.py, kept in --work for
the next run), then `kv-app build` in a child process whose memory is sampled every
200 ms: the sum of the proportional set size (PSS) of the build and its processes, so
pages that forked processes share count once (reading it walks the processes' page
tables: sampled more often, it slowed a 10M build by 10 %). Prints one line a size (and variant: the variants of a
size run one after the other, so they compare in one run): pairs, text MB, seconds, peak
memory MB, snapshot MB, and the most the build's directory held besides the snapshot (its
temporary runs) as sampled.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KV_APP = str(Path(sys.executable).with_name("kv-app"))


def tree_pss(pid: int) -> int:
    """Proportional set size of pid and every descendant: shared pages count once."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return total


def sample(proc: subprocess.Popen, out: Path, made: Path) -> tuple[int, int]:
    """Until proc ends: (its tree's peak PSS, the most out held before made appeared)."""
    peak = held = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss(proc.pid))
        if not made.exists():
            held = max(held, du(out))
        time.sleep(0.2)
    return peak, held


def du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def measure(pairs: int, work: Path, flags: list[str]) -> str:
    data = work / f"{pairs}.data"
    if not data.exists():
        subprocess.run(
            [sys.executable, str(HERE / "make_data.py"), str(pairs), str(data)], check=True
        )
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    target = out / "snap"
    started = time.monotonic()
    build = subprocess.Popen(
        [KV_APP, "build", str(data), str(target), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak, held = sample(build, out, target)
    seconds = time.monotonic() - started
    if build.returncode != 0:
        raise SystemExit(f"build failed: {build.stderr.read()}")
    build.stderr.close()
    snapshot = du(target)
    shutil.rmtree(out)
    return (
        f"{pairs:>12,} pairs, {data.stat().st_size / 1e6:>9,.1f} MB text: {seconds:7.1f} s, "
        f"peak memory {peak / 1e6:7,.1f} MB, snapshot {snapshot / 1e6:9,.1f} MB, "
        f"temporary space up to {held / 1e6:9,.1f} MB {' '.join(flags)}".rstrip()
    )


def main() -> None:
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=int, nargs="+")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kv-bench-build"))
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="build flags to compare (repeat): each size is built once with each",
    )
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    variants = [v.split() + flags for v in args.variant] or [flags]
    print(f"# {os.cpu_count()} cores; kv-app build {' '.join(flags)}".rstrip(), flush=True)
    for pairs in args.pairs:
        for variant in variants:
            print(measure(pairs, args.work, variant), flush=True)


if __name__ == "__main__":
    main()
