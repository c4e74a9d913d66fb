#!/usr/bin/env bash
# loadtest/bench.sh — the benchmark suite (`make bench`): seer against the
# Python baseline (loadtest/baseline/service.py) and the JVM peer
# (loadtest/baseline/jvm, built here with Maven), same model, same Kafka,
# Redis and ClickHouse, same machine, one run.
#
#   1. each system's max sustainable throughput: the highest constant rate
#      whose p99 stays within BENCH_SLO (default 100ms), by bisection
#      (seer loadtest --find-max): BENCH_SEER_STEP (25s) per trial of
#      seer's search and BENCH_STEP (15s) of the peers', the first
#      BENCH_WARMUP (5s) of each left out of its p99, a failed run run
#      again before its rate counts as failed, and the found rate
#      confirmed by a run of its own, stepping down when that fails; every
#      trial, and every run below, starts on an empty inference log
#      (empty_log in loadtest/serve.sh; docs/performance.md, "How the max
#      rate is found");
#   2. the cost per 1,000 predictions of each, at its max and at the equal
#      rate BENCH_EQUAL_RATE (default 1000/s): the CPU seconds of every
#      process — the service, Kafka, Redis and ClickHouse (from
#      /proc/PID/stat) — over a 15 s run, per 1,000 predictions, separately
#      and together; the equal-rate run gives each one's p99 at equal load;
#   3. seer's p99 at 50% of its max;
#   4. seer serve's CPU per event at saturation (a 1,000,000-event preload,
#      from its process CPU time) next to the hot path's (BenchmarkHotPath),
#      so the two cannot drift apart unseen.
#
# Writes loadtest/results/<date>-<host>.json and PNG charts beside it.
# Traffic goes to 127.0.0.1 only; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(deploy/local/stack.sh env)"
. loadtest/serve.sh
bench_database
slo=${BENCH_SLO:-100ms}
step=${BENCH_STEP:-15s}
seer_step=${BENCH_SEER_STEP:-25s}
warmup=${BENCH_WARMUP:-5s}
equal=${BENCH_EQUAL_RATE:-1000}
stamp=$(date -u +%Y-%m-%d)-$(hostname)
out=loadtest/results/$stamp.json
work=$(mktemp -d)
pids=() runs=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; drop_bench_database; drop_topics "${runs[@]}"' EXIT
export SEER_LOG_LEVEL=warn SEER_KAFKA_MAX_POLL_RECORDS=2000

# topics SYSTEM — point the SEER_KAFKA_* variables at SYSTEM's own topics
# (deleted at exit: drop_topics).
topics() {
  local run=bench-$1-$(date +%s)
  runs+=("$run")
  export SEER_KAFKA_INPUT_TOPIC=$run.events SEER_KAFKA_PREDICTIONS_TOPIC=$run.predictions
  export SEER_KAFKA_DLQ_TOPIC=$run.dlq SEER_KAFKA_GROUP=$run
}

# measure NAME START MAX STEPS TRIAL — warm up, search the max rate in
# STEPS bisection steps of TRIAL each, write $work/NAME-*.json.
measure() {
  local name=$1 lo=$2 hi=$3 steps=$4 trial=$5
  bin/seer loadtest --load-features --rate 1000 --duration 4s --report "$work/$name-warmup.json" >/dev/null
  phase "$name: max sustainable throughput with p99 <= $slo"
  bin/seer loadtest --find-max --rate "$lo" --max-rate "$hi" --search-steps "$steps" --duration "$trial" --warmup "$warmup" --slo "$slo" \
    --drain-timeout 10s --before-trial "$(truncate_log_cmd)" --report "$work/$name-max.json" 2>/dev/null
}

# cost NAME RATE — a 15 s run at RATE against the system started last,
# on an empty inference log and a quiet ClickHouse (empty_log),
# with the CPU seconds of it, Kafka, Redis and ClickHouse per 1,000
# predictions written to $work/NAME-cost.json.
cost() {
  local name=$1 rate=$2 procs before after
  procs="service:${pids[-1]} $(stack_procs)"
  empty_log
  before=$(proc_ticks $procs)
  bin/seer loadtest --rate "$rate" --duration 15s --drain-timeout 10s --report "$work/$name-costrun.json" >/dev/null 2>&1
  after=$(proc_ticks $procs)
  python3 - "$work/$name-costrun.json" "$rate" "$(cost_json "$work/$name-costrun.json" "$before" "$after")" >"$work/$name-cost.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
json.dump({"rate": float(sys.argv[2]), "predicted": report["predicted"], "cpu_seconds_per_1000_predictions": json.loads(sys.argv[3])}, sys.stdout)
PY
  echo "   cost at $rate/s: $(python3 -c "import json;print(json.load(open('$work/$name-cost.json'))['cpu_seconds_per_1000_predictions'])") CPU-s per 1,000 predictions"
}

# start SYSTEM — create the current topics (seer loadtest --setup-only),
# then run seer serve or a peer on them, so that each finds its input
# topic at start (loadtest/serve.sh, start_serve); stop_last stops it
# again.
start() {
  bin/seer loadtest --setup-only >/dev/null
  case $1 in
    seer) SEER_HTTP=127.0.0.1:18090 SEER_CLICKHOUSE_SPOOL_DIR=$work/spool bin/seer serve >>"$work/seer.log" 2>&1 & ;;
    baseline) "$SEER_PYTHON" loadtest/baseline/service.py >>"$work/baseline.log" 2>&1 & ;;
    jvm) java -jar loadtest/baseline/jvm/target/jvm-peer.jar >>"$work/jvm.log" 2>&1 & ;;
  esac
  pids+=($!)
  sleep 3
}
stop_last() {
  kill "${pids[-1]}" 2>/dev/null || true
  wait "${pids[-1]}" 2>/dev/null || true
}

# system NAME LO HI STEPS TRIAL — start NAME on topics of its own and
# search its max rate; then 15 s at that rate and 15 s at the equal rate,
# each with the CPU per 1,000 predictions (the equal-rate run gives the
# p99 at equal load too). The system keeps running for the caller to
# stop.
system() {
  local name=$1 max
  topics "$name"
  start "$name"
  measure "$name" "$2" "$3" "$4" "$5"
  max=$(python3 -c "import json;print(int(json.load(open('$work/$name-max.json'))['max_sustainable_rate']))")
  phase "$name: cost per 1,000 predictions at its max and at equal load ($equal/s)"
  if [ "$max" -ge 1 ]; then
    cost "$name-max" "$max"
  else
    echo "   no rate held p99 <= $slo: no run at the max"
    echo '{"rate": 0, "predicted": 0, "cpu_seconds_per_1000_predictions": null}' >"$work/$name-max-cost.json"
  fi
  cost "$name-equal" "$equal"
}

phase "building the JVM peer (mvn package)"
(cd loadtest/baseline/jvm && mvn -q -B package)

# seer's range reaches 128,000/s: on a faster VM (AMD EPYC, runs Q and R)
# it passed the top of the old 8,000–64,000/s (p99 23–97 ms in its trials).
# Its trials are longer than the peers': near its limit one burst of
# ClickHouse's merges decided a 15 s trial, and the same rate passed in
# one search and failed in the next (docs/performance.md, "How the max
# rate is found", step 2).
system seer 8000 128000 6 "$seer_step"
seer_max=$(python3 -c "import json;print(int(json.load(open('$work/seer-max.json'))['max_sustainable_rate']))")
phase "seer: latency at 50% of its max ($((seer_max / 2))/s)"
empty_log
bin/seer loadtest --rate $((seer_max / 2)) --duration 20s --report "$work/seer-half.json" 2>/dev/null | sed -n 2,3p
phase "seer serve: CPU per event at saturation (preload of 1,000,000) against the hot path"
# ClickHouse's merges of the runs above would share the cores with it
# (empty_log). The preload takes about 9 s: a 200,000-event one took under
# 2 s, and three in a row on one serve read 6.1, 5.9 and 5.6 µs per event
# (docs/performance.md, "serve's CPU reading").
empty_log
t0=$(awk '{print $14 + $15}' "/proc/${pids[-1]}/stat")
bin/seer loadtest --preload 1000000 --report "$work/seer-preload.json" 2>/dev/null | sed -n 2p
t1=$(awk '{print $14 + $15}' "/proc/${pids[-1]}/stat")
hot_ns=$(go test -run XXX -bench HotPath -benchtime 3s ./stream 2>/dev/null | awk '/BenchmarkHotPath/ {for (i = 1; i <= NF; i++) if ($(i+1) == "ns/event") print $i}')
python3 - "$work/seer-preload.json" "$t0" "$t1" "$(getconf CLK_TCK)" "${hot_ns:-0}" >"$work/seer-process.json" <<'PY'
import json, sys
rep, t0, t1, hz, hot = json.load(open(sys.argv[1])), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
us = (t1 - t0) / hz / max(rep["predicted"], 1) * 1e6
json.dump({"preload": rep["sent"], "predicted": rep["predicted"], "achieved_rate": rep["achieved_rate"],
           "serve_cpu_us_per_event": round(us, 2), "hot_path_us_per_event": round(hot / 1000, 2)}, sys.stdout)
PY
python3 -c "import json;p=json.load(open('$work/seer-process.json'));print(f\"   serve {p['serve_cpu_us_per_event']} µs of CPU per event at {p['achieved_rate']:.0f}/s; hot path {p['hot_path_us_per_event']} µs per event (BenchmarkHotPath)\")"
stop_last

# The peers' searches take 4 steps (a final interval of about 30%, against
# seer's 4.4%): their max rates swing by 2x from run to run anyway, and the
# suite stays inside its 20 minutes (run L took 19 min 46 s with 5). Their
# ranges were doubled when runs Q and R found both at their old tops.
system jvm 1000 64000 4 "$step"
stop_last
system baseline 100 8000 4 "$step"
stop_last

mkdir -p loadtest/results
for f in "$work"/seer-half-*.png "$work"/*-equal-costrun-*.png; do
  cp "$f" "loadtest/results/$stamp-$(basename "$f")"
done
python3 - "$work" "$out" "$slo" <<'PY'
import json, os, platform, sys
work, out, slo = sys.argv[1:4]
j = lambda n: json.load(open(f"{work}/{n}.json"))
names = {"seer": "seer", "jvm": "JVM peer", "baseline": "Python baseline"}
mx = {n: j(n + "-max") for n in names}
eq = {n: j(n + "-equal-costrun") for n in names}
costs = {f"{n}_at_{w}": j(f"{n}-{w}-cost") for n in names for w in ("max", "equal")}
sh, proc = j("seer-half"), j("seer-process")
cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), "?")
res = {
  "command": "make bench",
  "machine": {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count()},
  "note": "seer, the JVM peer, the Python baseline, Kafka, Redis and ClickHouse all share these cores",
  "slo_p99": slo,
}
for n in names:
  res[n] = {"max_throughput": mx[n]["max_sustainable_rate"], "search": mx[n]["trials"],
            "confirmed": any(t.get("confirmation") and t["ok"] for t in mx[n]["trials"]),
            "trial_seconds": mx[n]["step_seconds"], "warmup_seconds": mx[n].get("warmup_s"),
            "at_range_top": mx[n].get("at_range_top", False)}
res["seer"].update({"p99_ms_at_half_max": sh["latency"]["p99_ms"], "half_max_rate": sh["target_rate"]})
res["equal_load"] = {"rate": eq["seer"]["target_rate"], **{f"{n}_p99_ms": eq[n]["latency"]["p99_ms"] for n in names}}
def cpu_all(k):
  c = costs[k]["cpu_seconds_per_1000_predictions"]
  return c["all"] if c else None
res["ratios"] = {
  "max_throughput_seer_over_baseline": round(mx["seer"]["max_sustainable_rate"] / max(mx["baseline"]["max_sustainable_rate"], 1), 2),
  "max_throughput_seer_over_jvm": round(mx["seer"]["max_sustainable_rate"] / max(mx["jvm"]["max_sustainable_rate"], 1), 2),
  "p99_jvm_over_seer_at_equal_load": round(eq["jvm"]["latency"]["p99_ms"] / max(eq["seer"]["latency"]["p99_ms"], 0.001), 2),
  "p99_baseline_over_seer_at_equal_load": round(eq["baseline"]["latency"]["p99_ms"] / max(eq["seer"]["latency"]["p99_ms"], 0.001), 2),
  "cpu_per_1000_jvm_over_seer_at_equal_load": round(cpu_all("jvm_at_equal") / cpu_all("seer_at_equal"), 2),
  "cpu_per_1000_baseline_over_seer_at_equal_load": round(cpu_all("baseline_at_equal") / cpu_all("seer_at_equal"), 2),
}
res["cost_per_1000_predictions"] = {
  "unit": "CPU seconds of each process per 1,000 predictions over a 15 s run at the rate (service, kafka, redis, clickhouse, all)", **costs}
res["seer_cpu_per_event"] = proc
res["targets"] = {"throughput_ratio_over_baseline": ">= 10", "seer_max_throughput": ">= 50000", "seer_p99_ms_at_half_max": "<= 25",
                  "serve_cpu_us_per_event": "<= 6", "all_four_cpu_seconds_per_1000_predictions": "<= 0.015",
                  "seer_leads_jvm_peer_on": "max throughput, p99 at equal load, CPU per 1,000 predictions"}
json.dump(res, open(out, "w"), indent=2)
for n, label in names.items():
  m = mx[n]["max_sustainable_rate"]
  top = " (the top of its search range: it may sustain more; raise the range in loadtest/bench.sh)" if res[n]["at_range_top"] else ""
  print(f"{label}: max {m:.0f}/s with p99 <= {slo}{top}" if m else f"{label}: no rate held p99 <= {slo} (lowest tried {mx[n]['trials'][0]['rate']:.0f}/s, p99 {mx[n]['trials'][0]['p99_ms']} ms)")
print(f"ratios: seer/JVM peer {res['ratios']['max_throughput_seer_over_jvm']}, seer/Python {res['ratios']['max_throughput_seer_over_baseline']} (target >= 10)")
print(f"seer p99 at 50% of its max ({sh['target_rate']:.0f}/s): {sh['latency']['p99_ms']} ms (target <= 25)")
print(f"equal load {res['equal_load']['rate']:.0f}/s, p99: " + ", ".join(f"{names[n]} {eq[n]['latency']['p99_ms']} ms" for n in names))
print(f"seer serve CPU per event at saturation {proc['serve_cpu_us_per_event']} µs (process), hot path {proc['hot_path_us_per_event']} µs (BenchmarkHotPath)")
for k, c in costs.items():
  print(f"cost {k} ({c['rate']:.0f}/s): {c['cpu_seconds_per_1000_predictions']} CPU-s per 1,000 predictions")
print(f"written to {out}")
PY
