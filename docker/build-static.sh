#!/usr/bin/env bash
# Builds the fully static `roomlet` binary (glibc linked statically,
# static-pie) with `cargo auditable`, so the dependency list is embedded
# and `rust-audit-info` / `cargo audit bin` can read it back, then strips it
# and lays out a minimal Docker build context for docker/Dockerfile.local.
#
#   docker/build-static.sh            # -> target/static/context/{roomlet,ca-certificates.crt}
#   ROOMLET_STATIC_TARGET_DIR=DIR docker/build-static.sh
#
# Also used by docker/Dockerfile (the from-source build) so both images get
# the same binary. The explicit --target keeps build scripts and
# proc-macros dynamic (crt-static only applies to the target artifacts);
# host/crates/runtime/build.rs removes RUSTFLAGS and the auditable wrapper before building
# the wasm32-wasip2 guests. The separate target dir keeps these flags from
# invalidating the ordinary debug/release builds.
set -euo pipefail
cd "$(dirname "$0")/.."

triple=x86_64-unknown-linux-gnu
target_dir=${ROOMLET_STATIC_TARGET_DIR:-target/static}
context=${ROOMLET_STATIC_CONTEXT:-$target_dir/context}
ca_bundle=${ROOMLET_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if ! cargo auditable --version >/dev/null 2>&1; then
  echo "cargo-auditable is missing: cargo install cargo-auditable --locked" >&2
  exit 1
fi

# Size settings for this build only: docker/static-profile.toml (an absolute
# path: cargo-auditable re-runs `cargo metadata` from another directory).
export RUSTFLAGS="-C target-feature=+crt-static"

cargo auditable build --config "$PWD/docker/static-profile.toml" --release --locked \
  --target "$triple" -p roomlet --target-dir "$target_dir"

bin="$target_dir/$triple/release/roomlet"
mkdir -p "$context"
cp "$bin" "$context/roomlet.tmp"
strip --strip-all "$context/roomlet.tmp"
mv "$context/roomlet.tmp" "$context/roomlet"
cp "$ca_bundle" "$context/ca-certificates.crt"
# An empty data/ becomes the image's /data, owned by the runtime user.
mkdir -p "$context/data"

if ldd "$context/roomlet" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'; then
  :
else
  echo "error: $context/roomlet is dynamically linked:" >&2
  ldd "$context/roomlet" >&2
  exit 1
fi
printf 'static roomlet: %s bytes unstripped, %s bytes stripped (%s)\n' \
  "$(stat -c %s "$bin")" "$(stat -c %s "$context/roomlet")" "$context/roomlet"
