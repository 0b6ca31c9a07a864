#!/usr/bin/env bash
# Print the path of a usable Nomad binary, building it if needed.
#
#   scripts/get_nomad.sh                  the nomad agent/CLI
#   scripts/get_nomad.sh example-device   Nomad's example device plugin (fake "nomad/file/mock"
#                                         devices), for the device-scheduling tests
#
# Agent order: $NOMAD_BIN, then `nomad` on PATH (if at least $NOMAD_MIN_VERSION), then the
# cached build under $METAFLOW_NOMAD_CACHE (default ~/.cache/metaflow-nomad), then a
# fresh build of the pinned release from the Go module proxy.
#
# Why v1.6.1: it is the last Nomad release published under MPL-2.0 before the
# licence change, and the newest one the module proxy serves under that licence.
# Its `api` package is a nested module that the parent module zip leaves out, so
# the build fetches it at the release commit and points the parent at it instead
# of the `./api` replace directive.
set -euo pipefail

TARGET="${1:-nomad}"
NOMAD_VERSION="${NOMAD_VERSION:-1.6.1}"
NOMAD_COMMIT="515895c7690cdc72278018dc5dc58aca41204ccc"
NOMAD_API_PSEUDO="v0.0.0-20230721134942-515895c7690c"
NOMAD_MIN_VERSION="${NOMAD_MIN_VERSION:-1.6.0}"
CACHE="${METAFLOW_NOMAD_CACHE:-$HOME/.cache/metaflow-nomad}"

log() { printf '[get_nomad] %s\n' "$*" >&2; }
# Tell scripts/stage.sh what this run did (no-op outside a stage).
say() { [ -n "${STAGE_STATUS_FILE:-}" ] && echo "$*" >"$STAGE_STATUS_FILE"; return 0; }
found() { say "$2: $1"; echo "$1"; exit 0; }

version_ok() {
  # $1: path to a nomad binary. True if its version is >= NOMAD_MIN_VERSION.
  local v
  v=$("$1" version 2>/dev/null | sed -nE 's/^Nomad v([0-9]+\.[0-9]+\.[0-9]+).*/\1/p' | head -1)
  [ -n "$v" ] || return 1
  [ "$(printf '%s\n%s\n' "$NOMAD_MIN_VERSION" "$v" | sort -V | head -1)" = "$NOMAD_MIN_VERSION" ]
}

case "$TARGET" in
  nomad)
    OUT="$CACHE/nomad-$NOMAD_VERSION/nomad"
    PACKAGE="."
    if [ -n "${NOMAD_BIN:-}" ]; then
      if version_ok "$NOMAD_BIN"; then found "$NOMAD_BIN" "NOMAD_BIN"; fi
      log "NOMAD_BIN=$NOMAD_BIN is not a Nomad >= $NOMAD_MIN_VERSION; ignoring it"
    fi
    if command -v nomad >/dev/null 2>&1 && version_ok "$(command -v nomad)"; then
      found "$(command -v nomad)" "on PATH"
    fi
    if [ -x "$OUT" ] && version_ok "$OUT"; then found "$OUT" "cached"; fi
    ;;
  example-device)
    # The plugin directory holds only this plugin: point an agent's plugin_dir at it.
    OUT="$CACHE/nomad-$NOMAD_VERSION/device-plugins/example-fs-device"
    PACKAGE="./plugins/device/cmd/example/cmd"
    if [ -x "$OUT" ]; then found "$OUT" "cached"; fi
    ;;
  *)
    log "unknown target '$TARGET' (expected: nomad, example-device)"; exit 2
    ;;
esac

if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed, and no Nomad binary was found."
  log "Install Go 1.21 or newer (https://go.dev/doc/install, or your OS package 'golang-go' if new enough),"
  log "or set NOMAD_BIN to an existing nomad >= $NOMAD_MIN_VERSION binary."
  exit 3
fi

log "building $TARGET from Nomad v$NOMAD_VERSION via the Go module proxy (one-time, cached in $CACHE)"
start=$(date +%s)
work="$CACHE/build-$NOMAD_VERSION-$TARGET"
rm -rf "$work"
mkdir -p "$work"
src=$(cd "$work" && go mod download -json "github.com/hashicorp/nomad@v$NOMAD_VERSION" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"
go mod edit -dropreplace github.com/hashicorp/nomad/api \
  -require "github.com/hashicorp/nomad/api@$NOMAD_API_PSEUDO"
GOFLAGS=-mod=mod go mod download github.com/hashicorp/nomad/api
# CGO on: runc's nsenter (used by the executor) only builds with cgo, and it brings the exec driver.
CGO_ENABLED=1 GOFLAGS=-mod=mod go build -trimpath \
  -ldflags "-s -w -checklinkname=0 -X github.com/hashicorp/nomad/version.GitCommit=${NOMAD_COMMIT:0:8}" \
  -o "$work/out" "$PACKAGE"
mkdir -p "$(dirname "$OUT")"
mv "$work/out" "$OUT"
cd "$CACHE"
rm -rf "$work"
log "built $OUT in $(( $(date +%s) - start ))s"
say "built: $OUT (Nomad v$NOMAD_VERSION from the Go module proxy)"
echo "$OUT"
