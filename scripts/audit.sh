#!/usr/bin/env bash
# Check every pinned dependency (constraints.txt) for known vulnerabilities with pip-audit.
#   bash scripts/audit.sh
# Needs the PyPI JSON API (or OSV) to be reachable: --strict makes a dependency that could
# not be audited an error instead of a silent skip.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-audit/bin/pip-audit ] || { python3 -m venv .venv-audit && .venv-audit/bin/pip install --quiet pip-audit==2.10.1; }
exec .venv-audit/bin/pip-audit --strict --requirement constraints.txt --progress-spinner off "$@"
