#!/usr/bin/env bash
# Build the Docker image: bash scripts/build.sh [TAG]   (default tag kv-app:latest)
set -euo pipefail
cd "$(dirname "$0")/.."
docker build --tag "${1:-kv-app:latest}" .
