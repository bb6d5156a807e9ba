# Sourced by serve.sh and test.sh: make .venv if missing and install kv_app into it
# (editable, pinned by constraints.txt), again only when setup.cfg or constraints.txt change.
# Usage: source scripts/_venv.sh [EXTRAS]     e.g. source scripts/_venv.sh test
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "kv_app needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
_extras=${1:+[$1]}
_stamp=".venv/.installed-$(cat setup.cfg constraints.txt | sha256sum | cut -c1-16)${1:+-$1}"
if [ ! -f "$_stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --constraint constraints.txt --editable ".$_extras"
  touch "$_stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
