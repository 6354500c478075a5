#!/usr/bin/env bash
# Runs roomlet's fuzz targets for a fixed CPU time each, JOBS at once, under
# `nice -n ${NICE:-19}`; then minimises each target's corpus and prints, per
# target, what the run did. See FUZZING.md.
#
#   [JOBS=N] fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS (default 1800; 0: only minimise) is CPU time, user + system, of
# the fuzzer: a target is stopped (SIGINT, libFuzzer's own clean stop) when
# its CPU time reaches it, however busy the machine, or after WALL_FACTOR
# (default 4) times SECONDS of wall time. JOBS defaults to `nproc`; the
# targets, to all five.
# A target that crashes is restarted for the rest of its time (the crash
# is in fuzz/artifacts/TARGET/), up to 10 crashes. New inputs go to the local
# working corpus, fuzz/artifacts/corpus/TARGET (not committed); the
# committed fuzz/corpus/TARGET is then rewritten to its seeds and the
# inputs of both that reach the most edges, CORPUS_CAP files in all
# (default 300; fuzz/cover.py). Needs cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Builds with the repository's
# pinned toolchain and RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags);
# FUZZ_TOOLCHAIN=nightly uses a nightly instead, which needs the
# wasm32-wasip2 target (the host's build script builds the guests).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-1800}
cap=${CORPUS_CAP:-300}
jobs=${JOBS:-$(nproc)}
wall_cap=$((seconds * ${WALL_FACTOR:-4}))
ticks=$(getconf CLK_TCK)
shift || true
if (($# > 0)); then
    targets=("$@")
else
    targets=(frame_json frame_msgpack frame_roundtrip access_token bus_wire)
fi

if [[ -n ${FUZZ_TOOLCHAIN:-} ]]; then
    cargo_fuzz=(rustup run "$FUZZ_TOOLCHAIN" cargo fuzz)
else
    export RUSTC_BOOTSTRAP=1
    cargo_fuzz=(cargo fuzz)
fi
bin=target/x86_64-unknown-linux-gnu/release
logs=artifacts/run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$logs"

for t in "${targets[@]}"; do
    nice -n 19 "${cargo_fuzz[@]}" build "$t"
done

# The crash, timeout, out-of-memory and leak inputs of target $1.
findings() {
    find "artifacts/$1" -maxdepth 1 -type f \
        \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | sort
}

# The dictionaries (dict/*.dict) of target $1, one file: libFuzzer takes
# one -dict.
dictionary() {
    case $1 in
    frame_json) cat dict/json.dict ;;
    frame_msgpack | bus_wire) cat dict/msgpack.dict ;;
    frame_roundtrip) cat dict/json.dict dict/msgpack.dict ;;
    access_token) cat dict/json.dict dict/token.dict ;;
    esac
}

# CPU seconds (user + system) process $1 has used so far; 0 once gone.
cpu_of() {
    awk -v hz="$ticks" '{ printf "%d", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# Runs target $1 until it has had $seconds of CPU; writes "execs wall cpu
# crashes" to $logs/$1.stats and the new crash inputs to $logs/$1.crashes.
fuzz_one() {
    local t=$1 log=$logs/$1.log
    local start remaining status stops=0 cpu=0 execs=0 wall timer fuzzer
    mkdir -p "corpus/$t" "artifacts/$t" "artifacts/corpus/$t"
    touch "$log"
    findings "$t" >"$logs/$t.before"
    dictionary "$t" >"$logs/$t.dict"
    start=$(date +%s)
    while remaining=$((start + wall_cap - $(date +%s))) && ((remaining > 0)) && ((${cpu%.*} < seconds)); do
        status=0
        /usr/bin/time -f '%U %S' -o "$logs/$t.time" \
            nice -n "${NICE:-19}" "$bin/$t" \
            -max_total_time="$remaining" -print_final_stats=1 \
            -rss_limit_mb=2048 -timeout=10 -max_len=4096 -dict="$logs/$t.dict" \
            -artifact_prefix="artifacts/$t/" "artifacts/corpus/$t" "corpus/$t" \
            >>"$log" 2>&1 &
        timer=$!
        # `nice` execs the fuzzer: the one child of `time`.
        fuzzer=
        while kill -0 "$timer" 2>/dev/null; do
            fuzzer=${fuzzer:-$(pgrep -P "$timer" || true)}
            if [[ -n $fuzzer ]] && (($(awk -v c="$cpu" 'BEGIN { printf "%d", c }') + $(cpu_of "$fuzzer") >= seconds)); then
                kill -INT "$fuzzer" 2>/dev/null || true
                break
            fi
            sleep 2
        done
        wait "$timer" || status=$?
        cpu=$(awk -v c="$cpu" 'END { print c + $1 + $2 }' "$logs/$t.time")
        # 0: -max_total_time ran out; 72: our SIGINT (libFuzzer's
        # -interrupted_exitcode). Anything else is a finding or a failure.
        if ((status == 0 || status == 72)); then
            continue
        fi
        stops=$((stops + 1))
        if ((stops >= 10)); then
            break
        fi
    done
    wall=$(($(date +%s) - start))
    execs=$(awk '/^stat::number_of_executed_units:/ { n += $NF } END { print n + 0 }' "$log")
    findings "$t" | comm -13 "$logs/$t.before" - >"$logs/$t.crashes"
    echo "$execs $wall $cpu $(wc -l <"$logs/$t.crashes")" >"$logs/$t.stats"
}

echo "fuzzing ${targets[*]} for ${seconds} CPU s each, ${jobs} at once, logs in fuzz/$logs/"
running=0
for t in "${targets[@]}"; do
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait

# Minimising, as `cargo fuzz cmin` does (a libFuzzer merge) with two more
# flags: the working corpus becomes a smallest set of inputs reaching every
# edge the two corpora reach (hit counts aside); the committed one, the
# seeds and the CORPUS_CAP inputs adding the most edges.
for t in "${targets[@]}"; do
    rm -rf "$logs/$t.min"
    mkdir -p "$logs/$t.min"
    nice -n 19 "$bin/$t" -set_cover_merge=1 -use_counters=0 \
        -merge_control_file="$logs/$t.merge" "$logs/$t.min" "corpus/$t" "artifacts/corpus/$t" \
        >"$logs/$t.cmin.log" 2>&1
    python3 cover.py "$logs/$t.merge" "$cap" "corpus/$t" | tee "$logs/$t.cover"
    rm -rf "artifacts/corpus/$t"
    mv "$logs/$t.min" "artifacts/corpus/$t"
done

printf '\n%-16s %12s %7s %7s %7s %10s %7s %9s %11s %7s %7s\n' \
    target execs wall_s cpu_s exec/s exec/cpu_s corpus corpus_B edges working crashes
for t in "${targets[@]}"; do
    read -r execs wall cpu crashes <"$logs/$t.stats"
    files=$(find "corpus/$t" -type f | wc -l)
    bytes=$(find "corpus/$t" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')
    edges=$(sed -E 's/.* ([0-9]+) of ([0-9]+) edges.*/\1\/\2/' "$logs/$t.cover")
    working=$(find "artifacts/corpus/$t" -type f | wc -l)
    printf '%-16s %12d %7d %7.0f %7d %10.0f %7d %9d %11s %7d %7d\n' "$t" "$execs" "$wall" "$cpu" \
        "$((execs / (wall > 0 ? wall : 1)))" "$(awk -v e="$execs" -v c="$cpu" 'BEGIN { print (c > 0 ? e / c : 0) }')" \
        "$files" "$bytes" "$edges" "$working" "$crashes"
done | tee "$logs/summary.txt"
cat "$logs"/*.crashes
echo "new crash inputs are listed above, if any (FUZZING.md: making them regressions)"
