#!/usr/bin/env bash
# Measures the device agent: stripped release binary size, resident memory while idle and while
# draining a backlog, and the backlog drain rate against a real `ingest serve` (file sink) on this
# machine; beside it, a baseline of curl publishing the same events one request at a time.
#
#   device/bench/drain.sh [READINGS]        (default 50000)
#
# Needs: cargo, curl, python3. Prints the figures recorded in BENCHMARKS.md ("Device agent").
set -euo pipefail
N=${1:-50000}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
# Built apart: together, cargo would unify reqwest's features and link ingest's aws-lc-rs into
# the agent too, which the agent on its own does not have.
cargo build --release -p ingest --locked >&2
cargo build --profile device -p device --locked >&2
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
DEV="$TARGET/device/iotcore-device"
ING="$TARGET/release/ingest"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
now_ms() { date +%s%3N; }

PORT=$(free_port); ADMIN=$(free_port)
start_ingest() {
    "$ING" serve --port "$PORT" --device-host 127.0.0.1 --admin-addr "127.0.0.1:$ADMIN" --mqtt-addr off \
        --registry "sqlite:$WORK/registry.db" --sink "file:$WORK/events.jsonl" \
        --events-per-minute 100000000 >"$WORK/ingest.out" 2>"$WORK/ingest.log" &
    INGEST_PID=$!; PIDS+=("$INGEST_PID")
    until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.1; done
}
export INGEST_ADMIN_URL="http://127.0.0.1:$ADMIN" INGEST_PROJECT=bench-project INGEST_REGION=us-central1
start_ingest
"$DEV" keygen --algorithm ES256 --out "$WORK/keys" >/dev/null 2>&1
"$ING" registries create bench-reg --event-topic projects/bench-project/topics/events >/dev/null
"$ING" devices create pi-1 --registry bench-reg --public-key "$WORK/keys/public.pem" --format ES256_PEM >/dev/null
cat >"$WORK/config.toml" <<TOML
endpoint = "http://127.0.0.1:$PORT"
project = "bench-project"
registry = "bench-reg"
device = "pi-1"
private_key = "$WORK/keys/private.pem"
[spool]
dir = "$WORK/state"
[readings]
sensors = true
interval = "60s"
[config]
poll_interval = "60s"
TOML

echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "binary: $(stat -c %s "$DEV") bytes stripped release ($DEV)"

# Idle: the agent with nothing to send but its sensor reading and config poll.
"$DEV" run --config "$WORK/config.toml" 2>"$WORK/idle.log" &
IDLE=$!; PIDS+=("$IDLE")
sleep 5
echo "rss idle: $(rss_kb $IDLE) kB"
kill -TERM "$IDLE"; wait "$IDLE" || true

# Backlog: ingest down while N readings are spooled, then up again.
kill -TERM "$INGEST_PID"; wait "$INGEST_PID" || true
: >"$WORK/events.jsonl"
python3 -c "import sys; sys.stdout.write(''.join('{\"n\": %d, \"t\": 21.5}\n' % i for i in range($N)))" >"$WORK/readings.jsonl"
sed -i 's/^sensors = true/sensors = false/' "$WORK/config.toml"
"$DEV" run --config "$WORK/config.toml" --stdin <"$WORK/readings.jsonl" 2>"$WORK/spool.log" &
AGENT=$!; PIDS+=("$AGENT")
T0=$(now_ms)
until grep -q "standard input closed" "$WORK/spool.log"; do sleep 0.05; done
T1=$(now_ms)
echo "spooled: $N readings in $((T1 - T0)) ms (fsynced, group commit) = $((N * 1000 / (T1 - T0 + 1))) readings/s"
echo "rss after taking $N readings from stdin at once, service down: $(rss_kb $AGENT) kB"
kill -TERM "$AGENT"; wait "$AGENT" || true

# The outage ends: the service comes back and a fresh agent (as after a reboot) drains.
start_ingest
"$DEV" run --config "$WORK/config.toml" 2>"$WORK/drain.log" &
AGENT=$!; PIDS+=("$AGENT")
T2=$(now_ms); PEAK=0
while [ "$(lines "$WORK/events.jsonl")" -lt "$N" ]; do
    R=$(rss_kb "$AGENT"); [ "$R" -gt "$PEAK" ] && PEAK=$R
    sleep 0.1
done
T3=$(now_ms)
echo "drain: $N readings in $((T3 - T2)) ms (agent start included) = $((N * 1000 / (T3 - T2 + 1))) readings/s"
echo "rss while draining (peak of 100 ms samples): $PEAK kB"
kill -TERM "$AGENT"; wait "$AGENT" || true

# Baseline: curl, one request per event, sequential (a script's loop), same token and payload.
TOKEN=$("$DEV" token --project bench-project --private-key "$WORK/keys/private.pem")
URL="http://127.0.0.1:$PORT/v1/projects/bench-project/locations/us-central1/registries/bench-reg/devices/pi-1:publishEvent"
M=500
T4=$(now_ms)
for i in $(seq "$M"); do
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        -d '{"binary_data":"eyJuIjogMSwgInQiOiAyMS41fQ"}' "$URL"
done
T5=$(now_ms)
echo "baseline curl loop: $M events in $((T5 - T4)) ms = $((M * 1000 / (T5 - T4 + 1))) events/s"
