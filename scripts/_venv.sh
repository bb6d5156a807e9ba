# Sourced by serve.sh and test.sh: make .venv if missing and install kv_app into it
# (editable, pinned by constraints.txt), again only when setup.cfg or constraints.txt change.
# Usage: VENV_EXTRAS=test source scripts/_venv.sh (several: VENV_EXTRAS=test,spark)
# (A variable, not an argument: `source` with no arguments hands the caller's own
# arguments to the sourced script, so serve.sh's flags would be read as extras.)
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "kv_app needs Python 3.11 or newer ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
_extras=${VENV_EXTRAS:+[$VENV_EXTRAS]}
_hash=$(cat setup.cfg constraints.txt | sha256sum | cut -c1-16)
_stamp=".venv/.installed-$_hash${VENV_EXTRAS:+-$VENV_EXTRAS}"
# An install with extras serves too: serve.sh after test.sh installs nothing.
if [ ! -f "$_stamp" ] && { [ -n "${VENV_EXTRAS:-}" ] || ! compgen -G ".venv/.installed-$_hash*" >/dev/null; }; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
    --constraint constraints.txt --editable ".$_extras"
  touch "$_stamp"
fi
unset _extras _hash _stamp
export PATH="$PWD/.venv/bin:$PATH"
