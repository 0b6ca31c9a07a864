#!/usr/bin/env bash
# Create the project's venv and install the project (editable, with the test extras),
# unless it is already installed from the current packaging files.
#
#   scripts/setup_venv.sh PYTHON VENV
set -euo pipefail

PYTHON="$1"
VENV="$2"
say() { [ -n "${STAGE_STATUS_FILE:-}" ] && echo "$*" >"$STAGE_STATUS_FILE"; return 0; }

stamp="$VENV/.installed"
up_to_date=1
for file in pyproject.toml; do
  [ -e "$stamp" ] && [ "$stamp" -nt "$file" ] || up_to_date=0
done
if [ "$up_to_date" = 1 ]; then
  say "cached: $VENV ($("$VENV/bin/python" --version 2>&1))"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test]'
touch "$stamp"
say "installed: $VENV ($("$VENV/bin/python" --version 2>&1), metaflow $("$VENV/bin/python" -c 'import metaflow; print(metaflow.__version__)' 2>/dev/null))"
