#!/usr/bin/env bash
# Serve a data file on port 8123: bash scripts/serve.sh [DATA_FILE] [kv-app serve flags]
# Creates .venv if needed and installs kv_app; without DATA_FILE serves data/sample.data.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=$(realpath -m "${1:-$root/data/sample.data}")
shift || true
cd "$root"
source scripts/_venv.sh
exec kv-app serve "$data" "$@"
