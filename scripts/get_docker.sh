#!/usr/bin/env bash
# Make real Docker tasks possible on a machine with no container registry.
#
#   scripts/get_docker.sh engine   ensure dockerd (Debian's docker.io) and debootstrap are
#                                  installed; prints the dockerd path
#   scripts/get_docker.sh image    ensure a cached Python 3.11 + Metaflow rootfs tarball;
#                                  prints its path (for `docker import`)
#   scripts/get_docker.sh registry ensure Debian's docker-registry (Docker's distribution
#                                  registry 2.x) is installed; prints its path
#
# The engine and the registry are never started here: tests start a private dockerd and a
# private registry of their own (metaflow_nomad/testing/docker_engine.py, registry.py). On a
# host run by systemd, the docker-registry package enables its own service on port 5000; the
# tests neither use nor need it. Docker Hub is not reachable, so the image is
# built from Debian's packages with debootstrap, plus a venv at /opt/venv holding Metaflow
# (the version installed in the project's .venv), its runtime dependencies and uv (for
# --environment=uv; on /opt/venv/bin, which is first on the image's PATH). The
# metaflow-nomad code itself is not in the image: the code package brings it.
# The tarball is cached under $METAFLOW_NOMAD_CACHE/docker (default ~/.cache/metaflow-nomad),
# keyed on what goes into it, so later runs take well under a second.
set -euo pipefail

TARGET="${1:-}"
CACHE="${METAFLOW_NOMAD_CACHE:-$HOME/.cache/metaflow-nomad}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST_PYTHON="${HOST_PYTHON:-$REPO_ROOT/.venv/bin/python}"
SUITE="bookworm"                                  # Debian 12: Python 3.11, like the host
DEBIAN_PACKAGES="python3,python3-venv,ca-certificates"
PIP_PACKAGES="boto3 requests uv"                  # plus metaflow==<host version>; uv for --environment=uv
IMAGE_REVISION=3                                  # bump when the recipe below changes

log() { printf '[get_docker] %s\n' "$*" >&2; }
# Tell scripts/stage.sh what this run did (no-op outside a stage).
say() { [ -n "${STAGE_STATUS_FILE:-}" ] && echo "$*" >"$STAGE_STATUS_FILE"; return 0; }
INSTALLED=""
say_installed() {
  if [ -n "$INSTALLED" ]; then say "installed $INSTALLED: $(command -v "$1")"; else say "present: $(command -v "$1")"; fi
}

install_packages() {
  # $@: Debian packages to install if their command is missing ("command:package" pairs).
  local want=() pair
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null 2>&1 || want+=("${pair#*:}"); done
  [ ${#want[@]} -eq 0 ] && return 0
  INSTALLED="${want[*]}"
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing ${want[*]} from Debian's packages (one-time)"
    apt-get update -qq >&2 || log "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >&2 \
      || log "apt-get install ${want[*]} failed"
  fi
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 && continue
    log "missing: the '${pair%%:*}' command (Debian package ${pair#*:})"
    missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "install as root on Debian/Ubuntu with:"
    log "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    exit 3
  fi
}

apt_mirror() {
  # The Debian mirror apt already uses for $SUITE (one-line .list and deb822 .sources files).
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                       if ($(i + 1) == s) { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
      { uri = ""; ok = 0; deb = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split($i, u, /[ \t]+/); uri = u[2] }
          if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb = 1
          if ($i ~ /^Suites:/ && (" " $i " ") ~ ("[ \t]" s "[ \t]")) ok = 1
          if ($i ~ /^Enabled:[ \t]*no/) ok = 0 }
        if (uri != "" && ok && deb) { print uri; exit } }' "$f"
  done
}

case "$TARGET" in
  engine)
    install_packages dockerd:docker.io debootstrap:debootstrap
    say_installed dockerd
    command -v dockerd
    exit 0
    ;;
  registry)
    install_packages docker-registry:docker-registry
    say_installed docker-registry
    command -v docker-registry
    exit 0
    ;;
  image) ;;
  *) log "unknown target '$TARGET' (expected: engine, image, registry)"; exit 2 ;;
esac

if [ ! -x "$HOST_PYTHON" ]; then HOST_PYTHON="$(command -v python3)"; fi
METAFLOW_VERSION=$("$HOST_PYTHON" -c 'import importlib.metadata as m; print(m.version("metaflow"))' 2>/dev/null) \
  || { log "metaflow is not installed for $HOST_PYTHON (run 'make setup')"; exit 3; }
KEY_TEXT="$SUITE $DEBIAN_PACKAGES metaflow==$METAFLOW_VERSION $PIP_PACKAGES rev$IMAGE_REVISION"
KEY="mf$METAFLOW_VERSION-$(printf '%s' "$KEY_TEXT" | sha256sum | cut -c1-12)"
OUT="$CACHE/docker/python311-rootfs-$KEY.tar"
if [ -s "$OUT" ]; then say "cached: $OUT"; echo "$OUT"; exit 0; fi

mkdir -p "$CACHE/docker"
exec 9>"$CACHE/docker/.build.lock"
flock 9                                  # one build at a time; the winner's result is reused
if [ -s "$OUT" ]; then say "cached: $OUT"; echo "$OUT"; exit 0; fi
install_packages debootstrap:debootstrap

MIRROR=$(apt_mirror | head -1)
[ -n "$MIRROR" ] || { log "no Debian $SUITE mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR"; exit 3; }
# debootstrap downloads with wget, which honours http_proxy: use apt's proxy if it has one.
eval "$(apt-config shell APT_HTTP_PROXY Acquire::http::Proxy APT_HTTPS_PROXY Acquire::https::Proxy)"
[ -n "${APT_HTTP_PROXY:-}" ] && export http_proxy="$APT_HTTP_PROXY"
[ -n "${APT_HTTPS_PROXY:-}" ] && export https_proxy="$APT_HTTPS_PROXY"

remove_build_dir() {
  # debootstrap mounts proc/sys (and maybe /dev) in the target; never delete through a mount.
  awk -v w="$1/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r \
    | while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$1"
}
for stale in "$CACHE"/docker/build.*; do        # left by a killed build (we hold the lock)
  [ -d "$stale" ] && remove_build_dir "$stale"
done
WORK=$(mktemp -d "$CACHE/docker/build.XXXXXX")
trap 'remove_build_dir "$WORK"' EXIT
ROOT="$WORK/rootfs"
start=$(date +%s)
log "building the image rootfs: Debian $SUITE from $MIRROR + metaflow==$METAFLOW_VERSION (one-time)"
debootstrap --variant=minbase --include="$DEBIAN_PACKAGES" "$SUITE" "$ROOT" "$MIRROR" >&2 \
  || { log "debootstrap failed; see $ROOT/debootstrap/debootstrap.log"; tail -20 "$ROOT/debootstrap/debootstrap.log" >&2 || true; exit 4; }
log "debootstrap done after $(( $(date +%s) - start ))s; installing the venv"

# pip in the chroot must not see the host's environment (its CA variables would point at
# the rootfs's own bundle). A copy of the host bundle is used for the install only.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/tmp/host-ca.crt"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PIP_CERT=/tmp/host-ca.crt \
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 ${http_proxy:+http_proxy=$http_proxy} \
  ${https_proxy:+https_proxy=$https_proxy} chroot "$ROOT" /bin/sh -ec "
    python3 -m venv /opt/venv
    /opt/venv/bin/pip install -q --no-cache-dir metaflow==$METAFLOW_VERSION $PIP_PACKAGES" >&2
rm -f "$ROOT/tmp/host-ca.crt"
# debootstrap copied the build host's resolver and name; docker provides both at run time.
: >"$ROOT/etc/resolv.conf"
echo localhost >"$ROOT/etc/hostname"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/debootstrap

tar --numeric-owner -C "$ROOT" -cf "$WORK/rootfs.tar" .
mv "$WORK/rootfs.tar" "$OUT"
# Earlier recipes for the same Metaflow version are superseded.
find "$CACHE/docker" -maxdepth 1 -name "python311-rootfs-mf$METAFLOW_VERSION-*.tar" ! -path "$OUT" -delete
log "built $OUT ($(du -m "$OUT" | cut -f1) MB) in $(( $(date +%s) - start ))s"
say "built: $OUT (Debian $SUITE, metaflow==$METAFLOW_VERSION)"
echo "$OUT"
