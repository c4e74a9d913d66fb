#!/usr/bin/env bash
# loadtest/rate.sh RATE [RUNS] — latency and cost of bin/seer serve at one
# rate, for comparing two builds or settings (run it for each, alternated).
#
# Starts serve on topics and a ClickHouse database of its own (as
# loadtest/profile.sh does), warms it up for 4 s, then sends RATE events/s
# for 20 s, RUNS times (default 1). Each run prints one line: the rate, the
# p50 and p99 from scheduled send to prediction, the load generator's own
# produce p99, the CPU-seconds per 1,000 predictions of serve, Kafka,
# Redis and ClickHouse (from /proc/PID/stat), and those of the load
# generator itself (seer loadtest: it shares the cores).
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:?usage: loadtest/rate.sh RATE [RUNS]}
eval "$(deploy/local/stack.sh env)"
. loadtest/serve.sh
bench_database
run=rate-$(date +%s%N)
work=$(mktemp -d)
trap 'kill $serve_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; drop_bench_database; drop_topics "$run"' EXIT
serve_env "$run" "$work" 127.0.0.1:18083
start_serve "$work/serve.log"
bin/seer loadtest --load-features --rate 2000 --duration 4s >/dev/null 2>&1
for i in $(seq 1 "${2:-1}"); do
  procs="serve:$serve_pid $(stack_procs)"
  quiet_clickhouse
  before=$(proc_ticks $procs)
  gen=$(timed_loadtest "$work/run.out" --rate "$rate" --duration 20s --drain-timeout 10s --report "$work/run.json")
  after=$(proc_ticks $procs)
  python3 - "$work/run.json" "$(cost_json "$work/run.json" "$before" "$after")" "$gen" <<'PY'
import json, sys
r, per = json.load(open(sys.argv[1])), json.loads(sys.argv[2])
gen = float(sys.argv[3]) / max(r["predicted"], 1) * 1000
print(f'{r["target_rate"]:.0f}/s: p50 {r["latency"]["p50_ms"]:.1f} ms, p99 {r["latency"]["p99_ms"]:.1f} ms '
      f'(produce p99 {r["produce_ack_latency"]["p99_ms"]:.1f} ms); CPU-s per 1,000 predictions {per}; '
      f'load generator {gen:.3f}')
PY
done
