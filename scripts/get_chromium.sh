#!/usr/bin/env bash
# Debian's headless Chromium, for the tests that look at our cards in a real browser.
set -euo pipefail
say() { [ -n "${STAGE_STATUS_FILE:-}" ] && echo "$*" >"$STAGE_STATUS_FILE"; return 0; }
if command -v chromium >/dev/null 2>&1; then
    say "present: $(command -v chromium)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium
say "installed chromium: $(command -v chromium)"
