#!/usr/bin/env bash
# Run the Docker image on port 8123, serving DATA_FILE from its directory mounted read-only:
#   bash scripts/run.sh [DATA_FILE] [docker run options...]    (default data/sample.data)
# Env: KV_IMAGE (default kv-app:latest), KV_PORT (host port, default 8123).
#
# The directory is mounted, not the file: a new version renamed over DATA_FILE on the host
# is then what the container sees, and `docker kill --signal HUP kv-app-8123` loads it. (A
# single-file mount keeps the old inode: the reload would load the old data again.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=$(realpath -s "${1:-$root/data/sample.data}")
shift || true
[ -f "$data" ] || { echo "run.sh: $data: no such file" >&2; exit 1; }
exec docker run --rm --name "kv-app-${KV_PORT:-8123}" \
  --publish "127.0.0.1:${KV_PORT:-8123}:8123" \
  --volume "$(dirname "$data"):/data:ro" \
  --env "KV_DATA_PATH=/data/$(basename "$data")" \
  --read-only --tmpfs /tmp \
  "$@" "${KV_IMAGE:-kv-app:latest}"
