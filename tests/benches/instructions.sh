#!/usr/bin/env bash
# User-space instructions a server spends per relayed frame, counted by
# callgrind: the same total for the same binary and traffic whatever else
# the machine is doing, where CPU time per frame moves by a third from run
# to run (BENCHMARKS.md, "Instructions per relayed frame").
#
# Runs the server under `valgrind --tool=callgrind` twice, fed by the load
# generator at a fixed rate for SHORT and then LONG seconds, and divides the
# difference in instructions by the difference in delivered frames: start,
# joins and leaves cancel out. Kernel time is not counted.
#
#   tests/benches/instructions.sh NAME roomlet|matchbox -- SERVER-COMMAND...
#
# `@ADDR@` in the server command is replaced by the address it must listen
# on. roomlet needs a small room limit under valgrind (the pooling
# allocator's reservation scales with it) and a precompiled cache made
# under valgrind (its CPU features differ), or both runs compile:
#
#   printf '[rooms]\nmax_rooms = 200\n' > /tmp/vg.toml
#   tests/benches/instructions.sh wasm roomlet -- target/release/roomlet serve --dev \
#     --config /tmp/vg.toml --listen @ADDR@ --internal-listen 127.0.0.1:0 --data-dir /tmp/vg-data
#   tests/benches/instructions.sh matchbox matchbox -- /tmp/matchbox/bin/matchbox_server @ADDR@
#   tests/benches/instructions.sh floor matchbox -- target/release/deps/load-HASH floor @ADDR@
#
# Env: RATE (400 frames/s: the server under valgrind must keep up), SHORT (5),
# LONG (20), ROOMS (100), PEERS (2), MIX (1:0:0), FRAME_IDS=1 (roomlet frames
# carry client frame ids, as the JS client sends them), BY_CRATE=1 for a breakdown,
# LOAD (the bench binary; default: the newest target/release/deps/load-*).
# Needs valgrind, python3, curl, taskset, and a built load generator:
# `cargo bench -p roomlet-tests --bench load --no-run`.
set -euo pipefail

name=${1:?NAME}
kind=${2:?roomlet or matchbox}
[ "${3:-}" = "--" ] || { echo "usage: $0 NAME roomlet|matchbox -- SERVER-COMMAND..." >&2; exit 2; }
shift 3
rate=${RATE:-400} short=${SHORT:-5} long=${LONG:-20}
# As `load` starts its servers: per-frame logs at info would be measured too.
export RUST_LOG=${RUST_LOG:-warn}
here=$(cd "$(dirname "$0")/../.." && pwd)
load=${LOAD:-$(ls -t "$here"/target/release/deps/load-* 2>/dev/null | grep -v '\.d$' | head -1)}
[ -x "$load" ] || { echo "no load generator: cargo bench -p roomlet-tests --bench load --no-run" >&2; exit 1; }
out=${OUT:-$(mktemp -d)}

# One server under callgrind, fed for $1 seconds; prints "INSTRUCTIONS FRAMES DUMP".
measure() {
  local secs=$1 port addr vpid dump result dps
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  addr=127.0.0.1:$port
  local cmd=("${@:2}")
  cmd=("${cmd[@]//@ADDR@/$addr}")
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out/$name-$secs.%p" \
    "${cmd[@]}" > "$out/$name-$secs.log" 2>&1 &
  vpid=$!
  local deadline=$((SECONDS + 300))
  until if [ "$kind" = roomlet ]; then curl -sf "http://$addr/readyz" > /dev/null
        else (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; fi; do
    kill -0 "$vpid" 2> /dev/null || { echo "server exited; see $out/$name-$secs.log" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "server not ready in 300 s" >&2; exit 1; }
    sleep 0.2
  done
  result=$(taskset -c 1 "$load" run --url "$addr" --target "$kind" --pid "$vpid" \
    --rooms "${ROOMS:-100}" --peers "${PEERS:-2}" --rate "$rate" --mix "${MIX:-1:0:0}" \
    --warmup 1 --duration "$secs" --label "$name-$secs" 2>&1 | grep '^RESULT')
  echo "$result" >&2
  callgrind_control -d "$vpid" > /dev/null
  dump=$out/$name-$secs.$vpid.1
  deadline=$((SECONDS + 60))
  until [ -s "$dump" ]; do
    [ $SECONDS -lt $deadline ] || { echo "no callgrind dump" >&2; exit 1; }
    sleep 0.1
  done
  kill -9 "$vpid"
  wait "$vpid" 2> /dev/null || true
  dps=$(sed -n 's/.*delivered_per_s=\([0-9]*\).*/\1/p' <<< "$result")
  echo "$(callgrind_annotate "$dump" 2> /dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }') $((dps * secs)) $dump"
}

read -r ir1 f1 dump1 <<< "$(measure "$short" "$@")"
read -r ir2 f2 dump2 <<< "$(measure "$long" "$@")"
echo "INSTRUCTIONS name=$name per_frame=$(( (ir2 - ir1) / (f2 - f1) )) frames=$((f2 - f1)) dumps=$dump1,$dump2"

if [ -n "${BY_CRATE:-}" ]; then
  python3 - "$dump1" "$dump2" "$((f2 - f1))" <<'EOF'
import re, subprocess, sys

def by_crate(dump):
    text = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", dump],
                          capture_output=True, text=True).stdout
    totals = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([\s\d.]+%\)\s+(.*)", line)
        if not m or "PROGRAM TOTALS" in m.group(2):
            continue
        # "file:function [object]": count an instruction for the crate whose
        # function ran it, not the file it was inlined from.
        where = m.group(2)
        func = re.sub(r" \[[^]]*\]$", "", where.split(":", 1)[1])
        if where.startswith("???:0x"):
            crate = "(JIT code: the wasm guests)"
        elif "libc.so" in where:
            crate = "libc malloc/free" if re.search(r"malloc|free", func) else "libc"
        else:
            if trait_impl := re.match(r"<\(.*?\) as (.*)", func):
                func = trait_impl.group(1)
            head = re.match(r"[<&\s]*(?:mut |dyn )?([A-Za-z_][A-Za-z0-9_]*)", func)
            crate = head.group(1) if head else func
            if crate in ("core", "alloc", "std"):
                crate = "std"
        totals[crate] = totals.get(crate, 0) + int(m.group(1).replace(",", ""))
    return totals

a, b, frames = by_crate(sys.argv[1]), by_crate(sys.argv[2]), int(sys.argv[3])
rows = sorted(((b.get(k, 0) - a.get(k, 0)) / frames, k) for k in set(a) | set(b))
for per_frame, crate in reversed(rows):
    if per_frame >= 50:
        print(f"{per_frame:8.0f}  {crate}")
EOF
fi
