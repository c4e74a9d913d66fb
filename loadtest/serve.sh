# loadtest/serve.sh — sourced by the benchmark scripts.
#
# start_serve LOG — creates the run's topics (seer loadtest --setup-only),
# then starts bin/seer serve with the environment as it is, sets
# serve_pid, and waits (up to 30 s) until /readyz on $SEER_HTTP says
# ready; exits with serve's log when it dies. With the topics there first,
# serve has its partitions within seconds and the warm-up that follows
# warms it: a serve started before its input topic exists finds the topic
# only at its next metadata refresh (franz-go: every 5 s while a topic is
# missing), after the warm-up. Not ready after 30 s only warns.
start_serve() {
  local log=$1
  bin/seer loadtest --setup-only >/dev/null
  bin/seer serve >"$log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 1 120); do
    curl -fsS "http://$SEER_HTTP/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$serve_pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.25
  done
  echo "warning: seer serve is not ready after 30 s; the load goes on: $(curl -sS "http://$SEER_HTTP/readyz" 2>&1 | tr '\n' ' ')"
}

# serve_env RUN WORK HTTP — the environment of a benchmark's seer serve:
# topics and group named after RUN, its spool under WORK, its HTTP
# address, warnings only, pprof on, polls of BENCH_MAX_POLL (2000).
serve_env() {
  export SEER_KAFKA_INPUT_TOPIC=$1.events SEER_KAFKA_PREDICTIONS_TOPIC=$1.predictions SEER_KAFKA_DLQ_TOPIC=$1.dlq
  export SEER_KAFKA_GROUP=$1 SEER_CLICKHOUSE_SPOOL_DIR=$2/spool
  export SEER_HTTP=$3 SEER_LOG_LEVEL=warn SEER_PPROF=true
  export SEER_KAFKA_MAX_POLL_RECORDS=${BENCH_MAX_POLL:-2000}
}

# stack_procs — NAME:PID of the stack's Kafka, Redis and ClickHouse, the
# services a benchmarked system shares the cores with.
stack_procs() {
  local p
  for p in kafka redis clickhouse; do
    [ -f "$SEER_CACHE_DIR/run/$p.pid" ] && printf '%s:%s ' "$p" "$(cat "$SEER_CACHE_DIR/run/$p.pid")"
  done
}

# proc_ticks NAME:PID... — the CPU ticks (user + system) of each process,
# as NAME:TICKS pairs.
proc_ticks() {
  local p
  for p in "$@"; do printf '%s:%s ' "${p%%:*}" "$(awk '{print $14 + $15}' "/proc/${p#*:}/stat")"; done
}

# cost_json REPORT BEFORE AFTER — the CPU-seconds per 1,000 predictions of
# each process between two proc_ticks readings, over the run whose seer
# loadtest --report is REPORT, and of all of them ("all"), as a JSON object.
cost_json() {
  python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" <<'PY'
import json, sys
report, hz = json.load(open(sys.argv[1])), int(sys.argv[4])
b = dict(x.rsplit(":", 1) for x in sys.argv[2].split())
a = dict(x.rsplit(":", 1) for x in sys.argv[3].split())
k = max(report["predicted"], 1) / 1000
per = {n: (float(a[n]) - float(b[n])) / hz / k for n in a}
per["all"] = sum(per.values())
# 0.1 µs per event: a 15 s run at 1,000/s or more holds many ticks.
json.dump({n: round(v, 4) for n, v in per.items()}, sys.stdout)
PY
}

# timed_loadtest OUT ARGS... — runs bin/seer loadtest ARGS with its
# output in OUT (its progress in OUT.err), and prints the CPU-seconds (user
# and system) that the load generator spent: it shares the cores with what
# it measures. A failed run shows its output and fails.
timed_loadtest() {
  local out=$1 t TIMEFORMAT='%U %S'
  shift
  t=$( { time bin/seer loadtest "$@" >"$out" 2>"$out.err"; } 2>&1 ) || { cat "$out" "$out.err" >&2; return 1; }
  awk '{print $1 + $2}' <<<"$t"
}

# phase TEXT — prints a benchmark phase with the wall-clock time, so a
# long run shows where its minutes go.
phase() { echo "== $(date +%T) $*"; }

# ch_query QUERY — runs QUERY on the local stack's ClickHouse.
ch_query() { clickhouse-client --host 127.0.0.1 --port "${SEER_CLICKHOUSE_ADDR##*:}" -q "$1"; }

# quiet_clickhouse — waits, for at most 60 s, until ClickHouse runs no
# merge, so that a run's CPU figures do not include merging the parts of
# the heavier run before it.
quiet_clickhouse() {
  local i n
  for i in $(seq 60); do
    n=$(ch_query "SELECT count() FROM system.merges" 2>/dev/null || echo 0)
    [ "$n" = 0 ] && return 0
    [ "$i" = 1 ] && echo "   waiting for ClickHouse's $n merge(s) to finish (at most 60 s)" >&2
    sleep 1
  done
  echo "   ClickHouse still merges after 60 s; measuring anyway" >&2
}

# empty_log — empties the inference log of this run's bench database
# (truncate_log) and waits for a quiet ClickHouse, so that the next run
# starts from the same state as every other: ClickHouse then merges only
# that run's parts, not the ever larger parts of the runs before it, which
# took one core for seconds at a time and failed trials at rates that
# passed on an empty table (docs/performance.md, "How the max rate is
# found", step 9). truncate_log refuses a database that bench_database did
# not name; seer loadtest --before-trial runs it through truncate_log_cmd.
truncate_log() {
  [[ $SEER_CLICKHOUSE_DATABASE == seer_bench_* ]] || { echo "truncate_log: $SEER_CLICKHOUSE_DATABASE is not a bench database" >&2; return 1; }
  ch_query "TRUNCATE TABLE IF EXISTS $SEER_CLICKHOUSE_DATABASE.inference_log"
}
truncate_log_cmd() { echo "bash -c '. loadtest/serve.sh && truncate_log'"; }
empty_log() { truncate_log && quiet_clickhouse; }

# drop_topics RUN... — deletes each run's topics (RUN.events,
# RUN.predictions, RUN.dlq; seer loadtest --delete-topics), so that a
# benchmark's records do not fill the broker's disk run after run. Call it
# from the EXIT trap, once the services are stopped.
drop_topics() {
  local r
  for r in "$@"; do
    SEER_KAFKA_INPUT_TOPIC=$r.events SEER_KAFKA_PREDICTIONS_TOPIC=$r.predictions SEER_KAFKA_DLQ_TOPIC=$r.dlq \
      bin/seer loadtest --delete-topics >/dev/null 2>&1 || echo "warning: the topics of $r are not deleted" >&2
  done
}

# bench_database — points SEER_CLICKHOUSE_DATABASE at a database of this
# run's own, so that ClickHouse's CPU figures do not include merges of
# earlier runs' rows (and the disk does not fill up run after run);
# drop_bench_database drops it again (call it from the EXIT trap).
bench_database() { export SEER_CLICKHOUSE_DATABASE=seer_bench_$(date +%s)_$$; }
drop_bench_database() {
  ch_query "DROP DATABASE IF EXISTS $SEER_CLICKHOUSE_DATABASE" 2>/dev/null || true
}
