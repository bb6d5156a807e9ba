#!/usr/bin/env bash
# Compare gunicorn worker classes for kv_app (the choice made in kv_app/gunicorn_conf.py):
#   bash scripts/bench_workers.sh [DATA_FILE] [SECONDS]
# For gevent, gthread (8 threads) and sync, with 2 workers: wrk (2 threads) at 1, 32 and
# 64 connections of random existing keys (1 wrk thread at 1 connection); prints req/s and
# p50/p99 latency.
# Needs wrk (apt-get install wrk) and the .venv made by scripts/test.sh or serve.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-/tmp/kv-bench/kv-1000000.data}
seconds=${2:-6}
[ -f "$data" ] || .venv/bin/python scripts/make_data.py 1000000 "$data"
keys=$(mktemp)
pid=
# Stop the server and remove the key list however the script ends.
trap 'rm -f "$keys"; [ -z "$pid" ] || kill "$pid" 2>/dev/null || true' EXIT
head -n 100000 "$data" | cut -c1-36 > "$keys"
for cls in gevent gthread sync; do
  port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  KV_DATA_PATH=$data KV_PORT=$port KV_WORKER_CLASS=$cls KV_THREADS=8 \
    .venv/bin/python -m gunicorn -c gunicorn.conf.py >/dev/null 2>&1 &
  pid=$!
  until curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.2; done
  sleep 1
  for c in 1 32 64; do
    out=$(KEYS_FILE=$keys wrk -t$((c < 2 ? 1 : 2)) -c$c -d${seconds}s --latency -s scripts/wrk/lookup.lua "http://127.0.0.1:$port")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    printf '%-8s c%-3s %9s req/s  p50 %9s  p99 %9s\n' "$cls" "$c" "$rps" "$p50" "$p99"
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
done
