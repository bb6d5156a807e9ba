#!/usr/bin/env bash
# Build the Docker images, tagged as the manifests in deploy/k8s name them:
#   bash scripts/build.sh [TAG]                  the server, TAG default kv-app:VERSION (the
#                                                package's version) and kv-app:latest
#   bash scripts/build.sh data DATA_FILE [TAG]   the data image: a snapshot of DATA_FILE at
#                                                /snapshot, kv-app-data:TAG (default 1)
# DRY_RUN=1 prints the commands instead of running them (tests/test_k8s.py reads them).
set -euo pipefail
if [ "${1:-}" = data ] && [ -n "${2:-}" ]; then
  data_file=$(realpath -s "$2")  # before the cd: relative to where it was given
fi
cd "$(dirname "$0")/.."
APP_IMAGE=kv-app
DATA_IMAGE=kv-app-data
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' kv_app/__init__.py)
run() { if [ -n "${DRY_RUN:-}" ]; then echo "$*"; else "$@"; fi; }

if [ "${1:-}" = data ]; then
  : "${data_file:?usage: bash scripts/build.sh data DATA_FILE [TAG]}"
  tag=${3:-1}
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  cp deploy/k8s/data-image/Dockerfile "$context/"
  if [ -z "${DRY_RUN:-}" ]; then
    VENV_EXTRAS= source scripts/_venv.sh
  fi
  run python -m kv_app build "$data_file" "$context/snapshot"
  run docker build --tag "$DATA_IMAGE:$tag" "$context"
else
  if [ -n "${1:-}" ]; then
    run docker build --tag "$1" .
  else
    run docker build --tag "$APP_IMAGE:$version" --tag "$APP_IMAGE:latest" .
  fi
fi
