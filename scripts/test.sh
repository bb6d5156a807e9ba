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
# The docs site, --strict: a broken link or anchor, a missing snippet or a page left out
# of the nav fails here. Not -q: mkdocs then drops the warnings --strict counts. Its output
# is shown only when it fails.
_site=$(mktemp -d)
if ! _out=$(NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$_site" 2>&1); then
  echo "$_out" >&2
  rm -rf "$_site"
  echo "mkdocs build --strict failed (see above)" >&2
  exit 1
fi
rm -rf "$_site"
bash scripts/vendor_assets.sh
exec python -m pytest "$@"
