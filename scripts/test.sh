#!/usr/bin/env bash
# Run the test suite: bash scripts/test.sh [pytest args]
# Creates .venv if needed and installs kv_app with its test extras first. The Spark tests
# need the spark extra (PySpark, a large download) and java; without them they skip:
#   KV_TEST_EXTRAS=test,spark bash scripts/test.sh    # as CI runs it
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_EXTRAS=${KV_TEST_EXTRAS:-test} source scripts/_venv.sh
ruff check .
ruff format --check .
bash scripts/vendor_assets.sh
exec python -m pytest "$@"
