#!/usr/bin/env bash
# Run the Docker image on port 8123 with a data file mounted read-only:
#   bash scripts/run.sh [DATA_FILE] [docker run options...]    (default data/sample.data)
# Env: KV_IMAGE (default kv-app:latest), KV_PORT (host port, default 8123).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=$(realpath "${1:-$root/data/sample.data}")
shift || true
[ -f "$data" ] || { echo "run.sh: $data: no such file" >&2; exit 1; }
exec docker run --rm --name "kv-app-${KV_PORT:-8123}" \
  --publish "127.0.0.1:${KV_PORT:-8123}:8123" \
  --volume "$data:/data/data.file:ro" \
  --read-only --tmpfs /tmp \
  "$@" "${KV_IMAGE:-kv-app:latest}"
