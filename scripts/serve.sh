#!/usr/bin/env bash
# Serve a data file on port 8123: bash scripts/serve.sh [DATA_FILE] [kv-app serve flags]
# Creates .venv if needed and installs kv_app; without DATA_FILE serves data/sample.data.
#   bash scripts/serve.sh my.data --port 8125 --workers 4
#   bash scripts/serve.sh --port 8125
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=$root/data/sample.data
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  data=$(realpath -m -- "$1")
  shift
fi
cd "$root"
source scripts/_venv.sh
exec kv-app serve "$data" "$@"
