#!/usr/bin/env bash
# loadtest/profile.sh — CPU and allocation profiles of seer serve at
# saturation (`make profile`), for finding the cost outside the hot path.
# A BENCH_PRELOAD-event preload (default 200000) is scored as fast as
# serve can, BENCH_RUNS times (default 1) on one serve process. Each run
# appends a line in go test -bench format to loadtest/results/profile/
# serve.bench — serve's process CPU (from /proc/PID/stat), bytes and
# allocations (from its Go runtime counters) per event, and the CPU per
# event of Kafka, Redis, ClickHouse and the load generator, the processes
# it shares the cores with — so that two builds compare with benchstat.
# The first run is profiled: a CPU profile, and the allocation profile as
# the difference of two heap snapshots around it, both kept in
# loadtest/results/profile/ and summed up here.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(deploy/local/stack.sh env)"
. loadtest/serve.sh
bench_database

preload=${BENCH_PRELOAD:-200000}
dir=loadtest/results/profile
mkdir -p "$dir"
run=profile-$(date +%s)
work=$(mktemp -d)
trap 'kill $serve_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; drop_bench_database; drop_topics "$run"' EXIT
serve_env "$run" "$work" 127.0.0.1:18081

start_serve "$work/serve.log"
bin/seer loadtest --load-features --rate 2000 --duration 4s >/dev/null 2>&1
# metric NAME — a counter of serve's /metrics.
metric() { curl -fsS "http://$SEER_HTTP/metrics" | awk -v n="$1" '$1 == n {printf "%.0f", $2}'; }
: >"$dir/serve.bench"
for run in $(seq 1 "${BENCH_RUNS:-1}"); do
  [ "$run" = 1 ] && curl -fsS -o "$dir/heap0.pprof" "http://$SEER_HTTP/debug/pprof/heap"
  t0=$(awk '{print $14 + $15}' "/proc/$serve_pid/stat") m0=$(metric go_memstats_mallocs_total) b0=$(metric go_memstats_alloc_bytes_total) s0=$(proc_ticks $(stack_procs))
  # The preload is produced first, then consumed; the profile covers the
  # consuming seconds.
  if [ "$run" = 1 ]; then
    curl -fsS -o "$dir/cpu.pprof" "http://$SEER_HTTP/debug/pprof/profile?seconds=${BENCH_PROFILE_SECONDS:-6}" &
    prof=$!
  fi
  gen=$(timed_loadtest "$work/preload.out" --preload "$preload" --report "$work/preload.json")
  sed -n 2p "$work/preload.out"
  t1=$(awk '{print $14 + $15}' "/proc/$serve_pid/stat") m1=$(metric go_memstats_mallocs_total) b1=$(metric go_memstats_alloc_bytes_total) s1=$(proc_ticks $(stack_procs))
  if [ "$run" = 1 ]; then
    wait $prof || true
    curl -fsS -o "$dir/heap1.pprof" "http://$SEER_HTTP/debug/pprof/heap"
  fi
  # One line in go test -bench format, for benchstat: serve's process CPU,
  # bytes and allocations per event over the preload.
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$serve_pid/status") heap=$(metric go_memstats_heap_inuse_bytes)
  python3 - "$work/preload.json" "$t0" "$t1" "$(getconf CLK_TCK)" "$m0" "$m1" "$b0" "$b1" "$(nproc)" "$hwm" "$heap" "$s0" "$s1" "$gen" <<'PY' | tee -a "$dir/serve.bench"
import json, sys
rep = json.load(open(sys.argv[1]))
t0, t1, hz, m0, m1, b0, b1 = (float(x) for x in sys.argv[2:9])
n = max(rep["predicted"], 1)
hwm, heap = float(sys.argv[10]) / 1024, float(sys.argv[11]) / 2**20
s0, s1 = (dict(x.split(":") for x in a.split()) for a in sys.argv[12:14])
# The services' CPU includes the load generator's producing and consuming;
# the generator's own (seer loadtest: produce the preload, then read and
# match every prediction) comes last.
svc = " ".join(f"{(float(s1[k]) - float(s0[k])) / hz / n * 1e9:.0f} {k}-cpu-ns/event" for k in s0)
svc += f" {float(sys.argv[14]) / n * 1e9:.0f} loadtest-cpu-ns/event"
print(f"BenchmarkServeSaturated-{sys.argv[9]} {n} {(t1 - t0) / hz / n * 1e9:.0f} cpu-ns/event {(b1 - b0) / n:.0f} B/event {(m1 - m0) / n:.1f} allocs/event {rep['achieved_rate']:.0f} events/s {hwm:.0f} peak-rss-MB {heap:.0f} heap-inuse-MB {svc}")
PY
done
phase "CPU, top functions (cumulative view in $dir/cpu.pprof)"
go tool pprof -top -nodecount=30 bin/seer "$dir/cpu.pprof" 2>/dev/null | sed -n '4,36p'
phase "allocations during the preload (bytes)"
go tool pprof -top -nodecount=20 -sample_index=alloc_space -diff_base "$dir/heap0.pprof" bin/seer "$dir/heap1.pprof" 2>/dev/null | sed -n '4,26p'
