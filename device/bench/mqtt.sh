#!/usr/bin/env bash
# Measures the device agent over MQTT (issue #15) beside the IoT Core guide's Python client, in one
# run against one real `ingest serve` (MQTT over TLS with its own CA, file sink):
#   - the agent: stripped release binary size; resident memory idle (connected, nothing to send);
#     an N-reading backlog, spooled while ingest was down, drained by a fresh agent: peak memory,
#     drain rate and the process's CPU time, first with ingest's per-connection MQTT limit raised
#     (--mqtt-messages-per-second 1000000, and the agent's mqtt.messages_per_second with it), then at
#     their default (100/s, IoT Core's);
#   - the Python client (device/bench/python_mqtt_client.py: paho-mqtt 1.x + PyJWT, QoS 1, waiting
#     for each PUBACK as Google's sample did) sending the same readings, as the same device, to the
#     same ingest: N with the limit raised (as fast as its PUBACKs come back), then
#     READINGS_AT_DEFAULT_LIMIT paced at 100 a second as the agent paces itself: resident memory
#     idle and peak, rate, CPU time;
#   - a table of both side by side with the ratios agent / Python.
# CPU time is utime + stime of the whole process from /proc/PID/stat (start, connect and token
# included, for both); peak memory is VmHWM from /proc/PID/status, read before the process ends.
#
#   device/bench/mqtt.sh [READINGS] [READINGS_AT_DEFAULT_LIMIT]    (defaults 20000 and READINGS)
#
# On a checkout others build in, CARGO_TARGET_DIR=/some/dir/of/your/own keeps their builds from
# replacing the binaries under this script (see the copy below).
#
# Needs: cargo, curl, python3 (and scripts/python-env's venv: paho-mqtt 1.6, PyJWT).
set -euo pipefail
N=${1:-20000}
N_DEFAULT=${2:-$N}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
# Built apart, as drain.sh does: together, cargo would unify reqwest's features and link ingest's
# aws-lc-rs into the agent too, which the agent on its own does not have. The agent with the
# `device` profile it ships with (Cargo.toml), the service with `release`.
cargo build --release -p ingest --locked >&2
cargo build --profile device -p device --locked >&2
PY=$(scripts/python-env)
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
WORK=$(mktemp -d /tmp/iotcore-bench-mqtt.XXXXXX)
PIDS=()
# Copied at once, so that another build in the same target directory cannot replace them under
# this script (give it a CARGO_TARGET_DIR of its own on a shared checkout); an agent with aws-lc-rs
# linked in (built together with ingest) is refused.
cp "$TARGET/device/iotcore-device" "$TARGET/release/ingest" "$WORK/"
DEV="$WORK/iotcore-device"
ING="$WORK/ingest"
# (AWS-LC names itself in strings of its own; rustls's messages only mention the `aws-lc-rs` feature.)
if grep -qa 'AWS-LC' "$DEV"; then
    echo "$TARGET/device/iotcore-device has aws-lc-rs linked in (built together with ingest); run again" >&2
    rm -rf "$WORK"; exit 1
fi
cleanup() {
    for p in "${PIDS[@]}"; do
        if kill "$p" 2>/dev/null; then wait "$p" 2>/dev/null || true; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime (no ( ) in our comm names)
TCK=$(getconf CLK_TCK)
secs() { python3 -c "print(f'{$1 / $TCK:.2f}')"; }
lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
now_ms() { date +%s%3N; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
wait_for_line() { # FILE PATTERN SECONDS
    local deadline=$(($(date +%s) + $3))
    until grep -q "$2" "$1" 2>/dev/null; do
        [ "$(date +%s)" -lt "$deadline" ] || { echo "timed out waiting for '$2' in $1:" >&2; tail -20 "$1" >&2; exit 1; }
        sleep 0.05
    done
}

PORT=$(free_port); ADMIN=$(free_port); MQTT=$(free_port)
TLS="$WORK/mqtt-tls"
start_ingest() { # MESSAGES_PER_SECOND
    "$ING" serve --port "$PORT" --device-host 127.0.0.1 --admin-addr "127.0.0.1:$ADMIN" \
        --mqtt-addr "127.0.0.1:$MQTT" --mqtt-tls-dir "$TLS" --mqtt-messages-per-second "$1" \
        --registry "sqlite:$WORK/registry.db" --sink "file:$WORK/events.jsonl" \
        --events-per-minute 100000000 >"$WORK/ingest.out" 2>>"$WORK/ingest.log" &
    INGEST_PID=$!; PIDS+=("$INGEST_PID")
    until curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null; do sleep 0.1; done
    until (exec 3<>"/dev/tcp/127.0.0.1/$MQTT") 2>/dev/null; do sleep 0.1; done
}
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
export INGEST_ADMIN_URL="http://127.0.0.1:$ADMIN" INGEST_PROJECT=bench-project INGEST_REGION=us-central1
RAISED=1000000
start_ingest "$RAISED"
"$DEV" keygen --algorithm ES256 --out "$WORK/keys" >/dev/null 2>&1
"$ING" registries create bench-reg --event-topic projects/bench-project/topics/events >/dev/null
"$ING" devices create pi-1 --registry bench-reg --public-key "$WORK/keys/public.pem" --format ES256_PEM >/dev/null
cat >"$WORK/config.toml" <<TOML
endpoint = "http://127.0.0.1:$PORT"
project = "bench-project"
registry = "bench-reg"
device = "pi-1"
private_key = "$WORK/keys/private.pem"
transport = "mqtt"
ca_file = "$TLS/ca.pem"
[mqtt]
host = "localhost"
port = $MQTT
messages_per_second = 100
[spool]
dir = "$WORK/state"
[readings]
sensors = true
interval = "60s"
[config]
poll_interval = "60s"
TOML

echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load average at start: $(load)"
BIN=$(stat -c %s "$DEV")
echo "binary: $BIN bytes, device profile ($(file -b "$DEV" | grep -o 'stripped\|not stripped'))"

# Idle: connected over MQTT, nothing to send but a sensor reading a minute.
"$DEV" run --config "$WORK/config.toml" 2>"$WORK/idle.log" &
IDLE=$!; PIDS+=("$IDLE")
wait_for_line "$WORK/idle.log" "connected to the MQTT bridge" 30
sleep 5
A_IDLE=$(rss_kb "$IDLE")
echo "agent rss idle (5 s after connecting): $A_IDLE kB"
stop "$IDLE"

# The readings: the same JSON lines for the agent's backlog and for the Python client.
python3 -c "import sys; sys.stdout.write(''.join('{\"n\": %d, \"t\": 21.5}\n' % i for i in range($N)))" >"$WORK/readings.jsonl"
sed -i 's/^sensors = true/sensors = false/' "$WORK/config.toml"

spool_backlog() { # COUNT: ingest is down; the agent takes COUNT readings into its spool
    head -n "$1" "$WORK/readings.jsonl" >"$WORK/backlog.jsonl"
    : >"$WORK/events.jsonl"
    "$DEV" run --config "$WORK/config.toml" --stdin <"$WORK/backlog.jsonl" 2>"$WORK/spool.log" &
    local agent=$!; PIDS+=("$agent")
    wait_for_line "$WORK/spool.log" "standard input closed" 120
    stop "$agent"
}

drain() { # COUNT LABEL: a fresh agent (as after a reboot) drains the spooled backlog
    local count=$1 label=$2 before t0 t1 agent
    before=$(lines "$WORK/events.jsonl")
    "$DEV" run --config "$WORK/config.toml" 2>"$WORK/drain-$label.log" &
    agent=$!; PIDS+=("$agent")
    t0=$(now_ms)
    # CPU spent starting (spool opened, token signed, TLS and CONNECT): read as the log says it
    # is connected; the drain starts right then, so this slightly overstates the start's share.
    wait_for_line "$WORK/drain-$label.log" "connected to the MQTT bridge" 60
    D_CPU0=$(cpu_ticks "$agent")
    while [ "$(($(lines "$WORK/events.jsonl") - before))" -lt "$count" ]; do
        kill -0 "$agent" 2>/dev/null || { echo "the agent ended:" >&2; tail "$WORK/drain-$label.log" >&2; exit 1; }
        sleep 0.1
    done
    t1=$(now_ms)
    D_MS=$((t1 - t0)); D_CPU=$(cpu_ticks "$agent"); D_HWM=$(hwm_kb "$agent"); D_LOAD=$(load)
    stop "$agent"
    echo "agent drain ($label): $count readings in $D_MS ms (agent start included) = $((count * 1000 / D_MS)) readings/s;" \
        "cpu $(secs "$D_CPU") s (after connecting: $(secs $((D_CPU - D_CPU0))) s); peak rss (VmHWM) $D_HWM kB; load average $D_LOAD"
}

# 1. The agent's drain with ingest's per-connection limit raised.
stop "$INGEST_PID"
spool_backlog "$N"
start_ingest "$RAISED"
sed -i "s/^messages_per_second = .*/messages_per_second = $RAISED/" "$WORK/config.toml"
drain "$N" "limit-raised"
A_MS=$D_MS; A_CPU=$D_CPU; A_CPU0=$D_CPU0; A_HWM=$D_HWM

python_send() { # COUNT MESSAGES_PER_SECOND LABEL: the Python client sends COUNT readings as pi-1
    local count=$1 rate=$2 label=$3 before t0 t1 pypid got
    before=$(lines "$WORK/events.jsonl")
    head -n "$count" "$WORK/readings.jsonl" >"$WORK/python-readings.jsonl"
    "$PY" device/bench/python_mqtt_client.py --project_id bench-project --registry_id bench-reg \
        --device_id pi-1 --private_key_file "$WORK/keys/private.pem" --algorithm ES256 \
        --ca_certs "$TLS/ca.pem" --mqtt_bridge_hostname localhost --mqtt_bridge_port "$MQTT" \
        --readings_file "$WORK/python-readings.jsonl" --messages_per_second "$rate" \
        --idle_seconds 6 --hold >"$WORK/python-$label.out" 2>"$WORK/python-$label.log" &
    pypid=$!; PIDS+=("$pypid")
    wait_for_line "$WORK/python-$label.out" "^CONNECTED" 60
    sleep 5
    P_IDLE=$(rss_kb "$pypid"); P_CPU0=$(cpu_ticks "$pypid")
    echo "python ($label) rss idle (5 s after connecting): $P_IDLE kB (cpu so far, start + imports + token + connect: $(secs "$P_CPU0") s)"
    wait_for_line "$WORK/python-$label.out" "^PUBLISHING" 30
    t0=$(now_ms)
    wait_for_line "$WORK/python-$label.out" "^DONE\|^FAILED" 3600
    t1=$(now_ms)
    grep -q "^DONE $count\$" "$WORK/python-$label.out" || { cat "$WORK/python-$label.out" "$WORK/python-$label.log" >&2; exit 1; }
    P_MS=$((t1 - t0)); P_CPU=$(cpu_ticks "$pypid"); P_HWM=$(hwm_kb "$pypid")
    stop "$pypid"
    got=$(($(lines "$WORK/events.jsonl") - before))
    echo "python ($label): $count readings in $P_MS ms (publishing only) = $((count * 1000 / P_MS)) readings/s; cpu $(secs "$P_CPU") s" \
        "(publishing only: $(secs $((P_CPU - P_CPU0))) s); peak rss (VmHWM) $P_HWM kB; events written: $got; load average $(load)"
}

# 2. The Python client, the same readings as the same device, same ingest, limit still raised.
python_send "$N" 0 "limit-raised"
R_IDLE=$P_IDLE; R_HWM=$P_HWM; R_MS=$P_MS; R_CPU=$P_CPU; R_CPU0=$P_CPU0
echo "event size in the sink, agent / python (bytes of the line with the base64 payload): $(
    python3 - "$WORK/events.jsonl" "$N" <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
n = int(sys.argv[2])
a, p = lines[:n], lines[-n:]
print(f"{sum(map(len, a)) / len(a):.0f} / {sum(map(len, p)) / len(p):.0f}")
PY
)"

# 3. The agent's drain at ingest's default per-connection limit (100 messages/s, IoT Core's).
stop "$INGEST_PID"
spool_backlog "$N_DEFAULT"
start_ingest 100
sed -i "s/^messages_per_second = .*/messages_per_second = 100/" "$WORK/config.toml"
drain "$N_DEFAULT" "limit-default"
B_MS=$D_MS; B_CPU=$D_CPU; B_HWM=$D_HWM

# 4. The Python client at the same rate, paced as the agent paces itself.
python_send "$N_DEFAULT" 100 "limit-default"
Q_MS=$P_MS; Q_CPU=$P_CPU; Q_HWM=$P_HWM
stop "$INGEST_PID"
echo "load average at the end: $(load)"

python3 - "$N" "$N_DEFAULT" "$TCK" "$BIN" "$A_IDLE" "$A_HWM" "$A_MS" "$A_CPU" "$A_CPU0" "$R_IDLE" "$R_HWM" "$R_MS" "$R_CPU" "$R_CPU0" "$B_HWM" "$B_MS" "$B_CPU" "$Q_HWM" "$Q_MS" "$Q_CPU" <<'PY'
import sys
(n, nd, tck, binary, a_idle, a_hwm, a_ms, a_cpu, a_cpu0, p_idle, p_hwm, p_ms, p_cpu, p_cpu0,
 b_hwm, b_ms, b_cpu, q_hwm, q_ms, q_cpu) = map(int, sys.argv[1:])
def per_k(ticks, count): return ticks / tck / count * 1000
rows = [
    ("resident memory, idle (VmRSS 5 s after connecting)", f"{a_idle:,} kB", f"{p_idle:,} kB", a_idle / p_idle),
    (f"limit raised: resident memory, peak while sending {n:,} (VmHWM)", f"{a_hwm:,} kB", f"{p_hwm:,} kB", a_hwm / p_hwm),
    (f"limit raised: CPU s per 1,000 readings (whole process, {n:,} readings)", f"{per_k(a_cpu, n):.4f}", f"{per_k(p_cpu, n):.4f}", per_k(a_cpu, n) / per_k(p_cpu, n)),
    ("limit raised: CPU s per 1,000 readings, sending only (after the CONNACK)", f"{per_k(a_cpu - a_cpu0, n):.4f}", f"{per_k(p_cpu - p_cpu0, n):.4f}", (a_cpu - a_cpu0) / max(p_cpu - p_cpu0, 1)),
    ("limit raised: readings/s (agent: backlog drain incl. start; Python: publishing)", f"{n * 1000 / a_ms:,.0f}", f"{n * 1000 / p_ms:,.0f}", (n / a_ms) / (n / p_ms)),
    (f"100 msg/s (IoT Core's, both paced): readings/s sending {nd:,}", f"{nd * 1000 / b_ms:,.0f}", f"{nd * 1000 / q_ms:,.0f}", (nd / b_ms) / (nd / q_ms)),
    ("100 msg/s: CPU s per 1,000 readings (whole process)", f"{per_k(b_cpu, nd):.4f}", f"{per_k(q_cpu, nd):.4f}", b_cpu / max(q_cpu, 1)),
    ("100 msg/s: resident memory, peak (VmHWM)", f"{b_hwm:,} kB", f"{q_hwm:,} kB", b_hwm / q_hwm),
    ("binary, `device` profile (opt-level s, fat LTO), stripped", f"{binary:,} bytes", "", None),
]
print()
print("| figure | agent (iotcore-device, MQTT) | Python (paho-mqtt 1.x + PyJWT) | agent / Python |")
print("|---|---|---|---|")
for name, a, p, r in rows:
    print(f"| {name} | {a} | {p} | {'' if r is None else f'{r:.2f}'} |")
PY
