#!/usr/bin/env bash
# Creates the secret files the compose stacks mount (docker/compose*.yaml),
# with fresh random values, unless they exist. Never commit them (this
# directory's .gitignore keeps them out). Readable by the container's
# uid 65532 (mode 0444): the files are bind-mounted read-only.
#   docker/secrets/init.sh [API_KEY_NAME]      # default key name: roomlet
set -euo pipefail
dir=${ROOMLET_SECRETS_DIR:-$(dirname "$0")}
key=${1:-roomlet}
umask 022
random() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n'; }
write() {
  if [[ -e $dir/$1 ]]; then
    echo "kept $dir/$1"
  else
    printf '%s\n' "$2" > "$dir/$1"
    chmod 0444 "$dir/$1"
    echo "wrote $dir/$1"
  fi
}
write api_keys "$key:$(random)"
write operator_token "$(random)"
# roomlet's NATS password, and the same value as the NATS server's config
# fragment (edge-configs/nats/*.conf include it as auth.conf).
if [[ ! -e $dir/nats_password ]]; then
  rm -f "$dir/nats_auth.conf"
fi
write nats_password "$(random)"
write nats_auth.conf "ROOMLET_NATS_PASSWORD: \"$(cat "$dir/nats_password")\""
write grafana_admin_password "$(random)"
echo "mint tokens with: ROOMLET_API_KEYS_FILE=$dir/api_keys roomlet token create --room R --identity I"
