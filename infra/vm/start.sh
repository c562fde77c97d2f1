#!/bin/bash
# The MQTT bridge VM's boot script (infra/mqtt_vm.tf ships it in cloud-init.yaml to
# /etc/iotcore/start.sh; the systemd units beside it call it). Three commands:
#
#   start.sh fetch-tls   fetch the TLS certificate chain and key from Secret Manager into
#                        IOTCORE_TLS_DIR, replacing a file only when its content changed (ingest
#                        re-reads both within 5 s of a change, so a rotated certificate takes
#                        effect without a restart). Run before ingest starts and by
#                        iotcore-tls-refresh.timer.
#   start.sh run         start ingest (ROLE=device) in the foreground: the container image, or a
#                        local binary when IOTCORE_RUNTIME=exec (the local rehearsal in
#                        ingest/tests/api/infra_settings.rs).
#   start.sh stop        stop the container, giving ingest IOTCORE_STOP_SECONDS to drain.
#
# Everything comes from the environment: on the VM, /etc/iotcore/boot.env (EnvironmentFile= of
# the units), written by cloud-init from terraform's values; in the rehearsal, the test's fakes.
#
#   IOTCORE_PROJECT          project holding the two secrets (required for fetch-tls)
#   IOTCORE_TLS_CERT_SECRET  secret with the PEM certificate chain, leaf first (required)
#   IOTCORE_TLS_KEY_SECRET   secret with the PEM private key (required)
#   IOTCORE_TLS_DIR          where the PEM files go (/run/iotcore/tls: tmpfs, so the key is
#                            never written to a disk); ingest.env's MQTT_TLS_CERT/KEY name them
#   IOTCORE_TLS_OWNER        owner of the files, uid:gid (65532:65532, the image's non-root
#                            user); empty to leave the owner alone
#   IOTCORE_METADATA_URL     metadata server (http://metadata.google.internal/computeMetadata/v1)
#   IOTCORE_SECRETS_URL      Secret Manager API (https://secretmanager.googleapis.com/v1)
#   IOTCORE_ENV_FILE         ingest's settings, KEY=VALUE lines (/etc/iotcore/ingest.env)
#   IOTCORE_RUNTIME          docker (default) or exec
#   IOTCORE_IMAGE            the ingest image (required for docker)
#   IOTCORE_PUBLISH          host:container port pairs, e.g. "8883:8883 443:8883 8080:8080"
#   IOTCORE_STOP_SECONDS     SIGTERM to SIGKILL (90; the unit's TimeoutStopSec is above it)
#   IOTCORE_CONTAINER        container name (iotcore-ingest)
#   IOTCORE_INGEST_BIN       the ingest binary (required for exec)
set -euo pipefail

metadata_url=${IOTCORE_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}
secrets_url=${IOTCORE_SECRETS_URL:-https://secretmanager.googleapis.com/v1}
tls_dir=${IOTCORE_TLS_DIR:-/run/iotcore/tls}
tls_owner=${IOTCORE_TLS_OWNER-65532:65532}
env_file=${IOTCORE_ENV_FILE:-/etc/iotcore/ingest.env}
runtime=${IOTCORE_RUNTIME:-docker}
container=${IOTCORE_CONTAINER:-iotcore-ingest}
stop_seconds=${IOTCORE_STOP_SECONDS:-90}

say() { printf 'iotcore-start: %s\n' "$*" >&2; }
die() {
  say "$*"
  exit 1
}

# json_string FIELD: the first "FIELD": "value" of the JSON on stdin. The two answers read here
# (the token and a secret's payload) hold base64 and token characters, never an escaped quote,
# and the VM image has no JSON tool.
json_string() {
  tr -d '\n' | sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p'
}

# An OAuth token of the VM's service account, from the metadata server.
access_token() {
  local answer token
  answer=$(curl --silent --show-error --fail --retry 5 --retry-connrefused --max-time 10 \
    -H 'Metadata-Flavor: Google' "$metadata_url/instance/service-accounts/default/token") ||
    die "no access token from the metadata server ($metadata_url)"
  token=$(printf '%s' "$answer" | json_string access_token)
  [ -n "$token" ] || die "the metadata server's token answer has no access_token"
  printf '%s' "$token"
}

# fetch_secret TOKEN SECRET TARGET MODE: the secret's latest version into TARGET, atomically,
# only when it differs from what TARGET holds. Prints "changed" or "unchanged".
fetch_secret() {
  local token=$1 secret=$2 target=$3 mode=$4 answer data tmp
  answer=$(curl --silent --show-error --fail --retry 5 --retry-connrefused --max-time 20 \
    -H "Authorization: Bearer $token" \
    "$secrets_url/projects/$IOTCORE_PROJECT/secrets/$secret/versions/latest:access") ||
    die "cannot read the latest version of secret $secret (does it have one? gcloud secrets versions add $secret --data-file=…)"
  data=$(printf '%s' "$answer" | json_string data)
  [ -n "$data" ] || die "secret $secret: the answer carries no payload"
  tmp=$(mktemp "$tls_dir/.$(basename "$target").XXXXXX")
  # Secret Manager answers standard base64; a payload that does not decode is not written.
  if ! printf '%s' "$data" | base64 -d >"$tmp" 2>/dev/null; then
    rm -f "$tmp"
    die "secret $secret: the payload is not base64"
  fi
  if ! grep -q -- '-----BEGIN ' "$tmp"; then
    rm -f "$tmp"
    die "secret $secret does not hold PEM (add the PEM file itself as the version)"
  fi
  if [ -f "$target" ] && [ "$(sha256sum <"$tmp")" = "$(sha256sum <"$target")" ]; then
    rm -f "$tmp"
    echo unchanged
    return
  fi
  chmod "$mode" "$tmp"
  if [ -n "$tls_owner" ]; then
    chown "$tls_owner" "$tmp"
  fi
  mv -f "$tmp" "$target"
  echo changed
}

fetch_tls() {
  : "${IOTCORE_PROJECT:?IOTCORE_PROJECT is not set}"
  : "${IOTCORE_TLS_CERT_SECRET:?IOTCORE_TLS_CERT_SECRET is not set}"
  : "${IOTCORE_TLS_KEY_SECRET:?IOTCORE_TLS_KEY_SECRET is not set}"
  local token key cert
  (umask 077 && mkdir -p "$tls_dir")
  chmod 0755 "$tls_dir"
  token=$(access_token)
  # The key first: between the two renames ingest may see a new key with the old certificate,
  # which does not load, so it keeps serving the old pair until both are in place.
  key=$(fetch_secret "$token" "$IOTCORE_TLS_KEY_SECRET" "$tls_dir/key.pem" 0400)
  cert=$(fetch_secret "$token" "$IOTCORE_TLS_CERT_SECRET" "$tls_dir/cert.pem" 0444)
  say "TLS certificate $cert, key $key (in $tls_dir)"
}

# Reads IOTCORE_ENV_FILE into the array `settings`: KEY=VALUE lines, blank lines and # comments
# skipped, values taken literally (as docker run --env-file takes them).
load_settings() {
  local line
  settings=()
  [ -r "$env_file" ] || die "cannot read ingest's settings $env_file"
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      '' | '#'*) ;;
      [A-Za-z_]*=*) settings+=("$line") ;;
      *) die "$env_file: not KEY=VALUE: $line" ;;
    esac
  done <"$env_file"
}

run() {
  [ -f "$tls_dir/cert.pem" ] && [ -f "$tls_dir/key.pem" ] ||
    die "no TLS certificate in $tls_dir: run 'start.sh fetch-tls' first"
  case "$runtime" in
    exec)
      : "${IOTCORE_INGEST_BIN:?IOTCORE_INGEST_BIN is not set}"
      load_settings
      # Only ingest's settings, as in the container: nothing of this shell's environment.
      exec env -i PATH=/usr/bin:/bin "${settings[@]}" "$IOTCORE_INGEST_BIN" serve
      ;;
    docker)
      : "${IOTCORE_IMAGE:?IOTCORE_IMAGE is not set}"
      load_settings # only to refuse a malformed file before docker reads it
      local publish=() pair
      for pair in ${IOTCORE_PUBLISH:-8883:8883 443:8883 8080:8080}; do
        publish+=(--publish "$pair")
      done
      # Artifact Registry with the VM's service account (docker-credential-gcr ships with COS).
      docker-credential-gcr configure-docker --registries "${IOTCORE_IMAGE%%/*}" >/dev/null
      docker pull --quiet "$IOTCORE_IMAGE" >/dev/null
      docker rm --force "$container" >/dev/null 2>&1 || true
      # Port publishing keeps the client's address (DNAT): the per-address limit and the logs
      # see the device. The TLS directory is mounted at the same path, read-only.
      exec docker run --rm --name "$container" \
        --env-file "$env_file" \
        "${publish[@]}" \
        --volume "$tls_dir:$tls_dir:ro" \
        --read-only --tmpfs /tmp \
        --cap-drop ALL --security-opt no-new-privileges \
        --ulimit nofile=1048576:1048576 \
        --stop-timeout "$stop_seconds" \
        "$IOTCORE_IMAGE" serve
      ;;
    *) die "IOTCORE_RUNTIME must be docker or exec, not '$runtime'" ;;
  esac
}

stop() {
  case "$runtime" in
    docker) docker stop --time "$stop_seconds" "$container" >/dev/null 2>&1 || true ;;
    *) ;; # exec: the process gets systemd's SIGTERM itself
  esac
}

case "${1:-}" in
  fetch-tls) fetch_tls ;;
  run) run ;;
  stop) stop ;;
  *) die "usage: start.sh fetch-tls|run|stop" ;;
esac
