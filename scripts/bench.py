#!/usr/bin/env python3
"""Benchmark the real server (gunicorn + kv_app/gunicorn_conf.py on 127.0.0.1) with wrk.

    python scripts/bench.py                        # 10k, 1M and 10M pairs, dict store
    python scripts/bench.py --store compact --sizes 10000,1000000 --duration 5

For each data size it reports load time and peak memory; single-key GET requests/s and
p50/p99 latency at 1 and 32 connections; batch lookups (keys/s for batches of 10, 100,
1000); and total PSS of master + workers right after start and after a sustained random
load, for 1, 2 and 4 workers. In the same run it measures a constant-returning Flask app
under the same gunicorn settings (scripts/bench_baseline.py), alternating runs with it,
so every single-key figure has a ratio to the framework's own ceiling. Prints a table and writes JSON (--out).

Needs wrk (Debian package `wrk`: apt-get install wrk). Data files are generated once with
scripts/make_data.py into --data-dir and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = ROOT / "scripts" / "wrk"
sys.path.insert(0, str(ROOT / "scripts"))
import make_data  # noqa: E402

from kv_app.stores import STORES  # noqa: E402

KEYS_IN_SAMPLE = 100_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """PIDs whose parent is pid (a gunicorn master's workers)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


class Server:
    """gunicorn with kv_app's settings, for kv_app or the baseline app."""

    def __init__(
        self,
        data: Path | None,
        workers: int,
        store: str,
        baseline: bool | str = False,  # or the name of an app in bench_baseline.py
        preexec_fn=None,
        extra_env: dict | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
        env.update(
            KV_HOST="127.0.0.1", KV_PORT=str(self.port), KV_WORKERS=str(workers), KV_STORE=store
        )
        env.update(extra_env or {})
        cmd = [sys.executable, "-m", "gunicorn", "--config", "python:kv_app.gunicorn_conf"]
        if baseline:  # the app named here replaces kv_app's; settings and hooks stay
            target = baseline if isinstance(baseline, str) else "app"
            cmd += ["--chdir", str(ROOT / "scripts"), f"bench_baseline:{target}"]
        else:
            env["KV_DATA_PATH"] = str(data)
        self.log = tempfile.TemporaryFile("w+")
        self.started = time.perf_counter()
        # cwd "/": `python -m` puts the working directory first on sys.path, where a
        # checkout's kv_app would shadow the one PYTHONPATH names (extra_env).
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd="/",
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn,
        )
        try:
            self.ready_seconds = self._wait(workers)
        except BaseException:  # not up (or interrupted): stopped, not left running
            self.stop()
            raise

    def _wait(self, workers: int) -> float:
        deadline = time.monotonic() + 900
        path = "/items/x"  # any answer (400 or 200) means a worker is serving
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.output())
            try:
                urllib.request.urlopen(self.url + path, timeout=1)
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.05)
                continue
            break
        seconds = time.perf_counter() - self.started
        while len(self.children()) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the other workers finish booting
        return seconds

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def load_seconds(self) -> float | None:
        """Seconds the store took to load (a text file) or open (a snapshot)."""
        found = re.search(r"(?:loaded|opened) .* in ([\d.]+) (m?s)\b", self.output())
        if not found:
            return None
        return round(float(found.group(1)) / (1000 if found.group(2) == "ms" else 1), 6)

    def children(self) -> list[int]:
        return children(self.proc.pid)

    def pss_mb(self, kind: str = "") -> float:
        """Total proportional set size of master and workers, MB: all of it, or only
        its anonymous memory (kind="Anon") or its file pages (kind="File")."""
        total = 0
        field = f"Pss_{kind}" if kind else "Pss"
        for pid in [self.proc.pid, *self.children()]:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            total += int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))
        return total / 1024

    def master_peak_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmHWM:\s+(\d+) kB", text, re.M).group(1)) / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class Nginx:
    """nginx with a config whose upstream and listening port are rewritten; in its own
    prefix directory; stopped by PID."""

    def __init__(self, conf: str, upstream_port: int | None = None, under: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="kv-bench-nginx-", dir=under))
        if upstream_port is not None:
            conf = conf.replace("127.0.0.1:8123", f"127.0.0.1:{upstream_port}")
        conf = conf.replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{self.port}")
        if os.geteuid() == 0:  # workers as root: they write the cache in a root-owned dir
            conf = "user root;\n" + conf
        (self.dir / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(self.dir / "nginx.conf"), "-p", f"{self.dir}/", "-g", "daemon off;"]
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx ({self.dir / 'nginx.conf'}) did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, script: str, connections: int, duration: float, env: dict) -> dict:
    """Run wrk once; requests/s, p50/p99 latency (ms), errors."""
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s",
        "-s", str(WRK_DIR / script), url,
    ]  # fmt: skip
    out = subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    for pct in ("50", "99"):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()
        result[f"p{pct}_ms"] = round(float(value) * _UNIT[unit], 3)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["errors"] = int(non2xx.group(1)) if non2xx else 0
    if socket_errors:
        result["socket_errors"] = socket_errors.group(1)
    return result


def data_files(n: int, data_dir: Path) -> tuple[Path, Path]:
    """The data file of n pairs and a file of up to 100k of its keys (made once)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data, keys = data_dir / f"kv-{n}.data", data_dir / f"kv-{n}.keys"
    if not data.exists():
        print(f"# writing {data} ...", flush=True)
        make_data.write(n, str(data) + ".tmp")
        os.replace(str(data) + ".tmp", data)
    if not keys.exists():
        step = max(1, n // KEYS_IN_SAMPLE)
        with open(data, encoding="utf-8") as f, open(keys, "w") as out:
            for i, line in enumerate(f):
                if i % step == 0:
                    out.write(line[:36] + "\n")
    return data, keys


def median_run(runs: list[dict]) -> dict:
    """The run with the median requests/s, plus every run's requests/s."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    return {**ordered[len(ordered) // 2], "rps_runs": [r["rps"] for r in runs]}


def single_vs_baseline(url: str, base_url: str, keys: Path, args) -> tuple[dict, dict]:
    """Single-key GETs at 1 and 32 connections, alternating kv_app and the baseline
    (args.rounds runs each, medians), so both see the same machine conditions."""
    env = {"KEYS_FILE": str(keys)}
    kv, base = {}, {}
    for c in (1, 32):
        runs: dict[str, list] = {"kv": [], "base": []}
        for _ in range(args.rounds):
            runs["kv"].append(wrk(url, "lookup.lua", c, args.duration, env))
            runs["base"].append(wrk(base_url, "lookup.lua", c, args.duration, env))
        kv[f"c{c}"], base[f"c{c}"] = median_run(runs["kv"]), median_run(runs["base"])
    return kv, base


def snapshot_of(data: Path, result: dict) -> Path:
    """Build the snapshot of a data file (once), recording build time and size."""
    from kv_app.stores import snapshot
    from kv_app.stores.build import build

    target = data.with_suffix(".snapshot")
    if not target.exists():
        print(f"# building {target} ...", flush=True)
        started = time.perf_counter()
        build(data, target)
        result["build_s"] = round(time.perf_counter() - started, 2)
    result["snapshot_mb"] = round((target / snapshot.DATA_FILE).stat().st_size / 1e6, 1)
    return target


def small_text_ready_s(args) -> float:
    """Process start to first answer over a 1,000-pair text file: the start-time reference."""
    data, _ = data_files(1000, args.data_dir)
    server = Server(data, args.workers, "dict")
    server.stop()
    return round(server.ready_seconds, 3)


def bench_size(n: int, args) -> dict:
    data, keys = data_files(n, args.data_dir)
    result: dict = {"pairs": n, "file_mb": round(data.stat().st_size / 1e6, 1)}
    if args.store == "snapshot":
        data = snapshot_of(data, result)
        result["small_text_ready_s"] = small_text_ready_s(args)

    server = Server(data, args.workers, args.store)
    baseline = None
    try:
        # The framework's ceiling: the constant-returning app under the same settings.
        baseline = Server(None, args.workers, args.store, baseline=True)
        result["load_s"] = server.load_seconds()
        result["ready_s"] = round(server.ready_seconds, 3)
        result["master_peak_mb"] = round(server.master_peak_mb(), 1)
        result["single"], result["baseline"] = single_vs_baseline(
            server.url, baseline.url, keys, args
        )
        result["batch"] = {}
        for size in (10, 100, 1000):
            r = wrk(
                server.url,
                "lookup.lua",
                4,
                args.duration,
                {"KEYS_FILE": str(keys), "BATCH": str(size)},
            )
            r["keys_per_s"] = round(r["rps"] * size)
            result["batch"][str(size)] = r
    finally:  # every server started is stopped, however the run ends
        server.stop()
        if baseline is not None:
            baseline.stop()

    if not args.skip_memory:
        result["memory"] = {}
        for workers in (1, 2, 4):
            server = Server(data, workers, args.store)
            try:
                before = [server.pss_mb(kind) for kind in ("", "Anon", "File")]
                r = wrk(
                    server.url, "lookup.lua", 8, args.memory_duration,
                    {"KEYS_FILE": str(keys), "BATCH": "1000"},
                )  # fmt: skip
                after = [server.pss_mb(kind) for kind in ("", "Anon", "File")]
            finally:
                server.stop()
            result["memory"][str(workers)] = {
                "pss_start_mb": round(before[0], 1),
                "pss_after_mb": round(after[0], 1),
                "anon_start_mb": round(before[1], 1),
                "anon_after_mb": round(after[1], 1),
                "file_start_mb": round(before[2], 1),
                "file_after_mb": round(after[2], 1),
                "lookups_per_worker": r["requests"] * 1000 // workers,
            }
    if args.limit_mb:
        result["limited"] = under_limit(data, keys, args)
    return result


def under_limit(data: Path, keys: Path, args) -> dict:
    """The server inside a memory cgroup of --limit-mb, its files evicted from the page
    cache first: random single-key GETs at 1 connection, then the cgroup's counters."""
    import memlimit

    from kv_app.stores import snapshot

    files = [data / snapshot.DATA_FILE] if data.is_dir() else [data]
    memlimit.evict(*files)
    with memlimit.MemoryLimit(args.limit_mb << 20, name="kv-bench") as limit:
        server = Server(data, args.workers, args.store, preexec_fn=limit.join)
        try:
            r = wrk(server.url, "lookup.lua", 1, args.limit_duration, {"KEYS_FILE": str(keys)})
            r["ready_s"] = round(server.ready_seconds, 3)
        finally:
            server.stop()
        return {**r, **limit.stats(), "limit_mb": args.limit_mb}


def print_table(report: dict) -> None:
    print(f"\n# {report['machine']}; store={report['store']}; workers={report['workers']};"
          f" {report['duration_s']} s per wrk run, 1 wrk thread")  # fmt: skip
    print(
        f"(base = the constant-returning Flask app; single-key figures are medians of "
        f"{report['rounds']} runs alternating with it)"
    )
    header = (
        "pairs", "load s", "peak MB", "c1 req/s", "c1 p50 ms", "c1 p99 ms", "base c1 p50",
        "c32 req/s", "base c32 req/s", "ratio", "c32 p50 ms", "c32 p99 ms", "base c32 p99",
        "b10 keys/s", "b100 keys/s", "b1000 keys/s",
    )  # fmt: skip
    print(" | ".join(header))
    for r in report["sizes"]:
        s, b, base = r["single"], r["batch"], r["baseline"]
        print(" | ".join(str(x) for x in (
            f"{r['pairs']:,}", r["load_s"], r["master_peak_mb"],
            f"{s['c1']['rps']:,.0f}", s["c1"]["p50_ms"], s["c1"]["p99_ms"], base["c1"]["p50_ms"],
            f"{s['c32']['rps']:,.0f}", f"{base['c32']['rps']:,.0f}",
            f"{s['c32']['rps'] / base['c32']['rps']:.2f}",
            s["c32"]["p50_ms"], s["c32"]["p99_ms"], base["c32"]["p99_ms"],
            f"{b['10']['keys_per_s']:,}", f"{b['100']['keys_per_s']:,}", f"{b['1000']['keys_per_s']:,}",
        )))  # fmt: skip
    if any("memory" in r for r in report["sizes"]):
        print("\npairs | workers | PSS after start MB | PSS after load MB | ratio | "
              "anon start/after MB | file start/after MB | lookups/worker")  # fmt: skip
        for r in report["sizes"]:
            for w, m in r.get("memory", {}).items():
                ratio = m["pss_after_mb"] / m["pss_start_mb"]
                print(f"{r['pairs']:,} | {w} | {m['pss_start_mb']} | {m['pss_after_mb']} | "
                      f"{ratio:.2f} | {m['anon_start_mb']}/{m['anon_after_mb']} | "
                      f"{m['file_start_mb']}/{m['file_after_mb']} | "
                      f"{m['lookups_per_worker']:,}")  # fmt: skip
    if any("build_s" in r or "snapshot_mb" in r for r in report["sizes"]):
        print("\npairs | text MB | build s | snapshot MB | open ms | ready s | "
              "ready s, 1,000-pair text file | ratio")  # fmt: skip
        for r in report["sizes"]:
            open_ms = r["load_s"] * 1000 if r["load_s"] is not None else float("nan")
            print(f"{r['pairs']:,} | {r['file_mb']} | {r.get('build_s', '(built before)')} | "
                  f"{r['snapshot_mb']} | {open_ms:.2f} | {r['ready_s']} | "
                  f"{r['small_text_ready_s']} | {r['ready_s'] / r['small_text_ready_s']:.2f}")  # fmt: skip
    if any("limited" in r for r in report["sizes"]):
        print("\npairs | limit MB | data MB | c1 req/s | c1 p50 ms | c1 p99 ms | errors | "
              "max usage MB | failcnt | oom_kill")  # fmt: skip
        for r in report["sizes"]:
            if "limited" in r:
                m = r["limited"]
                print(f"{r['pairs']:,} | {m['limit_mb']} | {r.get('snapshot_mb', r['file_mb'])} | "
                      f"{m['rps']:,.0f} | {m['p50_ms']} | {m['p99_ms']} | {m['errors']} | "
                      f"{m['max_usage'] / 2**20:.1f} | {m['failcnt']} | {m['oom_kill']}")  # fmt: skip
    errors = [
        (r["pairs"], k)
        for r in report["sizes"]
        for k, v in {**r["single"], **r["batch"]}.items()
        if v["errors"]
    ]
    print(f"\nnon-2xx responses: {errors or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="10000,1000000,10000000", help="pair counts, comma-separated"
    )
    parser.add_argument("--store", default="dict", choices=tuple(STORES))
    parser.add_argument("--workers", type=int, default=2, help="workers for the speed runs")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating kv/baseline runs")
    parser.add_argument(
        "--memory-duration", type=int, default=10, help="seconds of load per memory run"
    )
    parser.add_argument(
        "--skip-memory", action="store_true", help="skip the 1/2/4-worker memory runs"
    )
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "kv-bench")
    parser.add_argument(
        "--limit-mb",
        type=int,
        help="also serve each size inside a memory cgroup of this many MB (root, cgroup v1)",
    )
    parser.add_argument(
        "--limit-duration",
        type=int,
        default=30,
        help="seconds of random lookups under the limit (enough to touch more than it holds)",
    )
    parser.add_argument(
        "--out", type=Path, help="JSON file (default bench-results/bench-STORE.json)"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench.py needs wrk: apt-get install wrk (Debian package)")
    out = args.out or ROOT / "bench-results" / f"bench-{args.store}.json"

    report = {
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"{platform.platform()}",
        "store": args.store,
        "workers": args.workers,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "sizes": [],
    }
    for n in (int(x) for x in args.sizes.split(",")):
        print(f"# {n:,} pairs ...", flush=True)
        report["sizes"].append(bench_size(n, args))
        print(json.dumps(report["sizes"][-1]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
