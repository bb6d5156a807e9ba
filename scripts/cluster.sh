#!/usr/bin/env bash
# A local cluster on 127.0.0.1: N replicas of `kv-app serve DATA` behind nginx with
# consistent hashing on the id (deploy/nginx-replicas.conf). For trying, for the tests,
# and as the executable description of the topology.
#
#   bash scripts/cluster.sh up DATA [--replicas N] [--port P]   # front on P (8123), replicas on P+1..P+N
#   bash scripts/cluster.sh status [--port P]                   # the front (port pid front, or why it is
#                                                               # down), then a line a replica: port pid data-version
#   bash scripts/cluster.sh reload [--port P]                   # rolling: SIGHUP each replica in turn
#   bash scripts/cluster.sh switch DATA [--port P]              # all at once (blue/green): new replicas
#                                                               # for DATA, then the front switches
#                                                               # (or nothing changes: rolled back)
#   bash scripts/cluster.sh down [--port P]                     # stop everything it started, and free P
#
# DATA may be s3://BUCKET/PREFIX (kv-app publish DATA s3://...): each replica pulls it into
# a root of its own ($state/node-I); `switch s3://... [--version N]` has every replica pull
# and check version N first (none switches if one cannot: it is named), then switches
# them all at once as above.
#
# DATA is a text file or a snapshot (or a root of versions), or a split snapshot (a
# directory of shard-0 ... from `kv-app build --shards S`): then --replicas is per shard,
# and the front is deploy/nginx-shards.conf (routing by the id's first hex digit). State, logs and the rendered
# nginx.conf live in ${KV_CLUSTER_DIR:-/tmp/kv-cluster-P}. Needs nginx (Debian package).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command=${1:-}
shift || true
data="" replicas=2 port=8123 version=""
while [ $# -gt 0 ]; do
  case $1 in
    --replicas) replicas=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    -*) echo "cluster.sh: unknown option $1" >&2; exit 2 ;;
    *) data=$1; shift ;;
  esac
done
state=${KV_CLUSTER_DIR:-${TMPDIR:-/tmp}/kv-cluster-$port}
kv_app=${KV_APP:-kv-app}
command -v "$kv_app" >/dev/null || kv_app="$root/.venv/bin/kv-app"

answers() {  # answers URL: true once it answers /readyz with 200
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/readyz", timeout=1)' "$1" 2>/dev/null
}

wait_for() {  # wait_for URL SECONDS [PID]: until URL answers; fails early if PID exits
  local deadline=$((SECONDS + $2))
  until answers "$1"; do
    if [ -n "${3:-}" ] && ! alive "$3"; then
      echo "cluster.sh: $1 exited before it answered" >&2; return 1
    fi
    if [ $SECONDS -ge $deadline ]; then echo "cluster.sh: $1 did not answer in $2 s" >&2; return 1; fi
    sleep 0.1
  done
}

alive() {  # alive PID: the process runs (a zombie does not: a killed daemon's may linger)
  [ -n "$1" ] && [ -r "/proc/$1/status" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

front_pid() {  # the front's master pid, if nginx.pid names a running nginx
  local pid
  [ -e "$state/nginx.pid" ] || return 1
  pid=$(cat "$state/nginx.pid")
  alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ] && echo "$pid"
}

port_holders() {  # the nginx processes listening on the front's port: a live front's
  # master and workers, or the workers a dead master left (they keep the port)
  python3 - "$port" <<'PY'
import os, sys
port = int(sys.argv[1])
inodes = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        rows = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for row in rows:
        f = row.split()
        if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
            inodes.add(f"socket:[{f[9]}]")
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if open(f"/proc/{pid}/comm").read().strip() != "nginx":
            continue
        if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd")):
            print(pid)
    except OSError:
        pass
PY
}

stop_pids() {  # stop_pids PID...: SIGTERM, wait up to 5 s, then SIGKILL what is left
  local pid
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for pid in "$@"; do
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    ! alive "$pid" || kill -KILL "$pid" 2>/dev/null || true
  done
}

ports_of() {  # ports_of COLOR: the replicas' ports of one set (0: P+1..P+N, 1: P+N+1..P+2N)
  local n; n=$(cat "$state/replicas")
  seq $((port + 1 + $1 * n)) $((port + n + $1 * n))
}

start_set() {  # start_set COLOR DATA: start that set's replicas and wait until each answers
  local p i=0 per served pids=()
  per=$(($(cat "$state/replicas") / $(cat "$state/shards")))
  for p in $(ports_of "$1"); do
    served=$2
    [ "$(cat "$state/shards")" -eq 1 ] || served=$2/shard-$((i / per))  # R replicas a shard
    [ ! -e "$state/url" ] || served=$state/node-$i  # object storage: each its own root
    "$kv_app" serve "$served" --host 127.0.0.1 --port "$p" --pid-file "$state/replica-$p.pid" \
      >"$state/replica-$p.log" 2>&1 &
    pids+=($!)
    i=$((i + 1))
  done
  i=0
  for p in $(ports_of "$1"); do  # a replica that exits (bad data) fails it at once
    wait_for "http://127.0.0.1:$p" 120 "${pids[$i]}" || { tail -n 1 "$state/replica-$p.log" >&2; return 1; }
    i=$((i + 1))
  done
}

stop_replicas() {  # stop_replicas PIDFILE...: SIGTERM (graceful) each, wait, forget them
  local pidfile pid pids=()
  for pidfile in "$@"; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 150); do alive "$pid" || break; sleep 0.1; done
  done
  rm -f "$@"
}

stop_set() {  # stop_set COLOR: stop that set's replicas
  local p files=()
  for p in $(ports_of "$1"); do files+=("$state/replica-$p.pid"); done
  stop_replicas "${files[@]}"
}

render_front() {  # render_front COLOR: nginx.conf sending to that set
  local p servers="" shards per map="" upstreams="" any="" s digits
  shards=$(cat "$state/shards")
  if [ "$shards" -gt 1 ]; then  # one upstream a shard, one of them all; the map from the shard manifests
    per=$(($(cat "$state/replicas") / shards))
    for s in $(seq 0 $((shards - 1))); do
      digits=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["shard"]["digits"])' \
        "$(cat "$state/data")/shard-$s/manifest.json")
      map+="        \"~*^/items/[$digits][0-9a-f]{7}-\" kv_shard_$s;\n        ~^/shards/$s/ kv_shard_$s;\n"
      upstreams+="    upstream kv_shard_$s {\n        hash \$kv_key consistent;\n"
      for p in $(ports_of "$1" | sed -n "$((s * per + 1)),$(((s + 1) * per))p"); do
        upstreams+="        server 127.0.0.1:$p max_fails=1 fail_timeout=3s;\n"
        any+="        server 127.0.0.1:$p max_fails=1 fail_timeout=3s;\n"
      done
      upstreams+="        keepalive 32;\n    }\n"
    done
    upstreams+="    upstream kv_any {\n${any}        keepalive 32;\n    }\n"
    sed -e "s|@PORT@|$port|" -e "s|@MAP@|${map%\\n}|" -e "s|@UPSTREAMS@|${upstreams%\\n}|" \
      "$root/deploy/nginx-shards.conf" >"$state/nginx.conf.new"
    mv "$state/nginx.conf.new" "$state/nginx.conf"
    echo "$1" >"$state/color"
    return
  fi
  for p in $(ports_of "$1"); do
    servers+="        server 127.0.0.1:$p max_fails=1 fail_timeout=3s;\n"
  done
  sed -e "s|@PORT@|$port|" -e "s|@SERVERS@|${servers%\\n}|" "$root/deploy/nginx-replicas.conf" \
    >"$state/nginx.conf.new"
  mv "$state/nginx.conf.new" "$state/nginx.conf"
  echo "$1" >"$state/color"
}

up() {
  [ -n "$data" ] || { echo "usage: cluster.sh up DATA [--replicas N] [--port P]" >&2; exit 2; }
  command -v nginx >/dev/null || { echo "cluster.sh: nginx is not installed (apt-get install nginx)" >&2; exit 1; }
  ! front_pid >/dev/null || { echo "cluster.sh: a cluster on port $port is up ($state)" >&2; exit 1; }
  if [ -e "$state/nginx.pid" ] || compgen -G "$state/replica-*.pid" >/dev/null; then
    # The front's master is gone (killed, crashed): what is left of that cluster (its
    # replicas, nginx workers still holding the port) is stopped and it starts afresh.
    echo "cluster.sh: the front on port $port was down: stopping what was left of it first" >&2
    down >/dev/null
  fi
  mkdir -p "$state"
  rm -f "$state/url"
  if [[ $data == s3://* ]]; then  # each replica pulls the bucket's current version first
    echo "$data" >"$state/url"
    for i in $(seq 0 $((replicas - 1))); do
      "$kv_app" pull "$data" "$state/node-$i" >/dev/null 2>"$state/pull.err" ||
        { echo "cluster.sh: up: replica $((port + 1 + i)) cannot pull: $(tail -n 1 "$state/pull.err")" >&2; exit 1; }
    done
  else
    data=$(realpath "$data")
  fi
  echo "$data" >"$state/data"
  shards=1
  if [ -d "$data/shard-0" ]; then shards=$(ls -d "$data"/shard-* | wc -l); fi
  echo "$shards" >"$state/shards"
  echo $((replicas * shards)) >"$state/replicas"
  start_set 0 "$data" || { down >/dev/null; exit 1; }
  render_front 0
  if ! nginx -p "$state/" -c "$state/nginx.conf" -g "daemon on;" 2>>"$state/nginx.log" ||
    ! wait_for "http://127.0.0.1:$port" 30; then
    echo "cluster.sh: the front did not start: $(tail -n 1 "$state/nginx.log")" >&2
    down >/dev/null
    exit 1
  fi
  echo "front http://127.0.0.1:$port -> $shards shard(s) x $replicas replicas on ports" \
    "$((port + 1))-$((port + replicas * shards)) ($state)"
}

reload() {  # rolling: one replica at a time, each waiting for its own reload to end
  local color p log before
  color=$(cat "$state/color")
  for p in $(ports_of "$color"); do
    log="$state/replica-$p.log"
    master=$(cat "$state/replica-$p.pid")
    old_workers=$(pgrep -P "$master" || true)
    before=$(grep -c -E "reload (done|refused|failed|abandoned)" "$log" || true)
    kill -HUP "$master"
    for _ in $(seq 600); do
      [ "$(grep -c -E "reload (done|refused|failed|abandoned)" "$log" || true)" -gt "$before" ] && break
      sleep 0.1
    done
    for w in $old_workers; do  # done when its old workers have finished and gone
      for _ in $(seq 300); do kill -0 "$w" 2>/dev/null || break; sleep 0.1; done
    done
    if tail -n 50 "$log" | grep -q -E "reload (refused|failed|abandoned)"; then
      echo "cluster.sh: replica $p refused the reload (the rest were not asked):" >&2
      grep -E "reload (refused|failed|abandoned)" "$log" | tail -n 1 >&2
      exit 1
    fi
  done
  status
}

serves_set() {  # serves_set COLOR SECONDS: true once the front answers from that set
  python3 - "http://127.0.0.1:$port/readyz" "$2" $(ports_of "$1") <<'PY'
import sys, time, urllib.request
url, wait, ports = sys.argv[1], float(sys.argv[2]), set(sys.argv[3:])
deadline = time.monotonic() + wait
while True:
    try:  # X-KV-Replica: the replicas tried, the one that answered last
        with urllib.request.urlopen(url, timeout=1) as r:
            if r.headers.get("X-KV-Replica", "").split(", ")[-1].rsplit(":", 1)[-1] in ports:
                sys.exit(0)
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.1)
PY
}

switch() {  # blue/green: the other set serves DATA, then the front moves to it at once
  [ -n "$data" ] || { echo "usage: cluster.sh switch DATA [--port P]" >&2; exit 2; }
  local old new
  [ "$(cat "$state/shards")" -eq 1 ] || { echo "cluster.sh: switch: not for a split snapshot yet (use reload)" >&2; exit 1; }
  # The front first: with its master gone nothing can move it (run down, then up).
  front_pid >/dev/null || {
    echo "cluster.sh: switch: the front on port $port is down (its master is gone); nothing was changed: run down, then up" >&2
    exit 1
  }
  old=$(cat "$state/color")
  new=$((1 - old))
  if [ -e "$state/url" ]; then stage_all; else data=$(realpath "$data"); fi
  start_set "$new" "$data" || {
    stop_set "$new"; unstage_all
    echo "cluster.sh: switch: the new set did not start; nothing was changed" >&2; exit 1
  }
  render_front "$new"
  # A graceful reload: new nginx workers send to the new set; the old ones finish what
  # they have in flight, on the old set, then exit. Done once the front answers from the
  # new set (KV_CLUSTER_RELOAD_WAIT, 10 s); otherwise back to the old set.
  if ! nginx -p "$state/" -c "$state/nginx.conf" -s reload 2>>"$state/nginx.log" ||
    ! serves_set "$new" "${KV_CLUSTER_RELOAD_WAIT:-10}"; then
    render_front "$old"
    nginx -p "$state/" -c "$state/nginx.conf" -s reload 2>>"$state/nginx.log" || true
    stop_set "$new"
    unstage_all
    echo "cluster.sh: switch: the front did not move to the new set; rolled back: the old set serves ($(tail -n 1 "$state/nginx.log"))" >&2
    exit 1
  fi
  sleep 1  # nginx has no "reload finished" signal; its old workers drain their requests
  stop_set "$old"
  rm -f "$state"/node-*.before
  status
}

stage_all() {  # object storage: every replica's root pulls and checks version N (the
  # bucket's current when the first pulls, or --version) without switching; if one
  # cannot, it is named and none switches. Then each root's current moves to N (the new
  # set opens it); the version each had is kept for unstage_all.
  local url i n out
  url=$(cat "$state/url")
  [ "$data" = "$url" ] || { echo "cluster.sh: switch: this cluster follows $url" >&2; exit 1; }
  n=$(cat "$state/replicas")
  for i in $(seq 0 $((n - 1))); do
    if ! out=$("$kv_app" pull "$url" "$state/node-$i" ${version:+--version "$version"} --stage 2>"$state/pull.err"); then
      out=$(tail -n 1 "$state/pull.err")
      echo "cluster.sh: switch: replica $(ports_of "$old" | sed -n "$((i + 1))p") cannot take" \
        "${version:+version-$version }(${out#Error: }); no replica switched" >&2
      exit 1
    fi
    [ -n "$version" ] || version=$(sed -n 's/^[^ ]*: version-\([0-9]*\):.*/\1/p' <<<"$out")
  done
  for i in $(seq 0 $((n - 1))); do
    readlink "$state/node-$i/current" | sed 's/^version-//' >"$state/node-$i.before"
    "$kv_app" pull "$url" "$state/node-$i" --version "$version" >/dev/null
  done
}

unstage_all() {  # a switch that did not happen: each root's current back where it was
  local f
  for f in "$state"/node-*.before; do
    [ -e "$f" ] || continue
    "$kv_app" rollback "${f%.before}" --to "$(cat "$f")" >/dev/null || true
    rm -f "$f"
  done
}

status() {
  local pid holders
  if pid=$(front_pid); then
    echo "$port $pid front"
  else
    holders=$(port_holders | tr '\n' ' ')
    echo "$port - front down${holders:+: its master is gone, nginx ${holders% } still hold the port (down frees it)}"
  fi
  for pidfile in "$state"/replica-*.pid; do
    [ -e "$pidfile" ] || continue
    p=${pidfile##*/replica-}; p=${p%.pid}
    version=$(python3 -c 'import json, sys, urllib.request
try: print(json.load(urllib.request.urlopen(sys.argv[1], timeout=2))["version"])
except Exception: print("down")' "http://127.0.0.1:$p/readyz")
    echo "$p $(cat "$pidfile" 2>/dev/null || echo -) $version"
  done
}

down() {  # the front (gracefully), whatever nginx still holds its port, then the replicas
  local pid
  if pid=$(front_pid); then
    kill -QUIT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  fi
  # A master that died (or did not quit in 10 s) leaves workers that keep the port and
  # answer 502 once the replicas are gone.
  # shellcheck disable=SC2046
  stop_pids $(port_holders)
  stop_replicas "$state"/replica-*.pid
  rm -f "$state/nginx.pid"
  echo "stopped the cluster on port $port"
}

case $command in
  up) up ;;
  status) status ;;
  reload) reload ;;
  switch) switch ;;
  down) down ;;
  *) echo "usage: cluster.sh up DATA [--replicas N] [--port P] | status | reload | switch DATA [--version N] | down  [--port P]" >&2; exit 2 ;;
esac
