#!/usr/bin/env bash
# Run one set-up stage quietly: one line with its name, its time and whether it was
# cached; its whole output goes to a log under the cache directory, shown if it fails.
#
#   scripts/stage.sh LABEL COMMAND [ARGS...]
#
# A stage's command says what it did by writing one short line (e.g. "cached: <path>")
# to the file named by $STAGE_STATUS_FILE; without one the line says "done".
set -uo pipefail

label="$1"; shift
CACHE="${METAFLOW_NOMAD_CACHE:-$HOME/.cache/metaflow-nomad}"
mkdir -p "$CACHE/logs"
log="$CACHE/logs/setup-$label.log"
status_file=$(mktemp)
trap 'rm -f "$status_file"' EXIT

start=$(date +%s%N)
STAGE_STATUS_FILE="$status_file" "$@" >"$log" 2>&1
rc=$?
elapsed=$(( ($(date +%s%N) - start) / 100000000 ))   # tenths of a second
seconds="$(( elapsed / 10 )).$(( elapsed % 10 ))"

if [ "$rc" -ne 0 ]; then
  printf 'set-up  %-14s failed after %s s (exit %d); its output, from %s:\n' \
    "$label" "$seconds" "$rc" "$log" >&2
  tail -n 100 "$log" >&2
  exit "$rc"
fi
state=$(head -n 1 "$status_file")
printf 'set-up  %-14s %6s s  %s\n' "$label" "$seconds" "${state:-done}"
