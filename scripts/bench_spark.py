"""Time, peak memory and temporary disk of the Spark build beside `kv-app build`, on the
same rows in one run.

    python scripts/bench_spark.py [PAIRS] [--work DIR] [--shards N] [--master local[2]]

A data file of PAIRS pairs (default 10M; scripts/make_data.py, kept in --work for the
next run, shared with scripts/bench_build.py), then, each in a child process whose
resident memory (its whole tree: the JVM and Spark's Python workers too) is sampled every
20 ms:
- `python -m kv_app.stores.spark DATA ROOT --master local[2]` (Spark's local directory
  in the work directory, so that its shuffle and spills count as temporary space);
- `kv-app build DATA SNAPSHOT --jobs 1`, and `--jobs 2`.
Prints one line each: seconds, peak memory MB (PSS of the process tree), snapshot MB, and
the most the output's directory held besides the snapshot (temporary runs, shuffle files,
spills) as sampled.
Needs the spark extra (pip install -e '.[spark]') and java.
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
sys.path.insert(0, str(HERE))
from bench_build import KV_APP, du, sample  # noqa: E402 (a script beside this one)


def measure(label: str, command: list[str], out: Path, made: Path, env: dict) -> str:
    """Run command, sampling its tree's PSS and out's size until made appears."""
    started = time.monotonic()
    run = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    peak, held = sample(run, out, made)
    seconds = time.monotonic() - started
    error = run.stderr.read()
    run.stderr.close()
    if run.returncode != 0:
        raise SystemExit(f"{label} failed: {error}")
    snapshot = du(made.resolve())
    return (
        f"{label:<44} {seconds:7.1f} s, peak memory {peak / 1e6:7,.1f} MB, "
        f"snapshot {snapshot / 1e6:7,.1f} MB, temporary space up to {held / 1e6:7,.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", type=int, nargs="?", default=10_000_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/kv-bench-build"))
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / f"{args.pairs}.data"
    if not data.exists():
        subprocess.run(
            [sys.executable, str(HERE / "make_data.py"), str(args.pairs), str(data)], check=True
        )
    shards = ["--shards", str(args.shards)]
    print(
        f"# {os.cpu_count()} cores; {args.pairs:,} pairs, {data.stat().st_size / 1e6:,.1f} MB "
        f"of text; {args.shards} shard(s)",
        flush=True,
    )
    out = args.work / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    runs = [
        (
            f"spark {args.master} (python -m kv_app.stores.spark)",
            [sys.executable, "-m", "kv_app.stores.spark", str(data), str(out / "root")]
            + [*shards, "--master", args.master],
            out / "root" / "current",
            {**env, "SPARK_LOCAL_DIRS": str(out / "spark-local")},
        ),
    ]
    for jobs in ("1", "2"):
        command = [KV_APP, "build", str(data), str(out / "snap"), *shards, "--jobs", jobs]
        runs.append((f"kv-app build --jobs {jobs}", command, None, env))
    for label, command, made, run_env in runs:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        (out / "spark-local").mkdir()
        print(measure(label, command, out, made or out / "snap", run_env), flush=True)
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
