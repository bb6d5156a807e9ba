#!/usr/bin/env bash
# Re-fetch the vendored Swagger UI and ReDoc bundles with npm and verify them.
#   bash scripts/vendor_assets.sh          # verify kv_app/static against scripts/assets.sha256
#   bash scripts/vendor_assets.sh fetch    # download the pinned versions with npm, copy, verify
# Pinned: swagger-ui-dist 5.35.0 (current Swagger UI, ignores ?url=), redoc 2.5.4
# (2.x standalone bundle; 3.x is an ES module with telemetry on by default).
set -euo pipefail
cd "$(dirname "$0")/.."
SWAGGER_UI=swagger-ui-dist@5.35.0
REDOC=redoc@2.5.4
static=kv_app/static

if [ "${1:-verify}" = fetch ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$SWAGGER_UI" "$REDOC" >/dev/null)
  mkdir -p "$tmp/s" "$tmp/r"
  tar xzf "$tmp"/swagger-ui-dist-*.tgz -C "$tmp/s"
  tar xzf "$tmp"/redoc-*.tgz -C "$tmp/r"
  cp "$tmp"/s/package/{swagger-ui-bundle.js,swagger-ui-standalone-preset.js,swagger-ui.css,favicon-32x32.png,LICENSE,NOTICE} "$static/swagger-ui/"
  cp "$tmp"/r/package/bundles/{redoc.standalone.js,redoc.standalone.js.LICENSE.txt} "$tmp"/r/package/LICENSE "$static/redoc/"
fi
(cd "$static" && sha256sum --check --quiet ../../scripts/assets.sha256) && echo "vendored assets OK"
