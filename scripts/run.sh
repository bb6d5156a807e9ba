#!/usr/bin/env bash
# Run the Docker image on port 8123, serving DATA_FILE from its directory mounted read-only,
# or a snapshot (or a root of snapshot versions) mounted read-only at /data:
#   bash scripts/run.sh [DATA_FILE|SNAPSHOT_DIR|ROOT] [docker run options...]
#   (default data/sample.data)
# Env: KV_IMAGE (default kv-app:latest), KV_PORT (host port, default 8123).
#
# The directory is mounted, not the file: a new version renamed over DATA_FILE on the host
# is then what the container sees, and `docker kill --signal HUP kv-app-8123` loads it. (A
# single-file mount keeps the old inode: the reload would load the old data again.)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=$(realpath -s "${1:-$root/data/sample.data}")
shift || true
if [ -d "$data" ]; then  # a snapshot, or a root whose relative `current` link resolves inside
  mount=$data inside=/data
elif [ -f "$data" ]; then
  mount=$(dirname "$data") inside=/data/$(basename "$data")
else
  echo "run.sh: $data: no such file or directory" >&2
  exit 1
fi
exec docker run --rm --name "kv-app-${KV_PORT:-8123}" \
  --publish "127.0.0.1:${KV_PORT:-8123}:8123" \
  --volume "$mount:/data:ro" \
  --env "KV_DATA_PATH=$inside" \
  --read-only --tmpfs /tmp \
  "$@" "${KV_IMAGE:-kv-app:latest}"
