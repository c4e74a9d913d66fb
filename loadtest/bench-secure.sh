#!/usr/bin/env bash
# loadtest/bench-secure.sh — the cost of security, in one run on this
# machine: seer serve's maximum throughput (seer loadtest --preload) with
# every connection open, then with Kafka over SASL_SSL (SCRAM-SHA-512),
# Redis and ClickHouse over TLS, on the local stack's secured ports
# (docs/security.md). Both runs use the admin principal on Kafka, so only
# the transport and authentication differ. Traffic goes to 127.0.0.1 only
# and is bounded (BENCH_PRELOAD events per run, default 200000).
#
# Writes loadtest/results/<date>-<host>-secure.json and prints both rates.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/local/stack.sh up >/dev/null
eval "$(deploy/local/stack.sh env)"
. loadtest/serve.sh
bench_database
s=$SEER_CACHE_DIR/secure
preload=${BENCH_PRELOAD:-200000}
out=loadtest/results/$(date -u +%Y-%m-%d)-$(hostname)-secure.json
work=$(mktemp -d)
serve_pid=
trap '[ -n "$serve_pid" ] && kill $serve_pid 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; drop_bench_database' EXIT

# run NAME — serve and loadtest with the environment as it is now.
run() {
  local name=$1 id
  id=bench-$name-$(date +%s)
  export SEER_KAFKA_INPUT_TOPIC=$id.events SEER_KAFKA_PREDICTIONS_TOPIC=$id.predictions SEER_KAFKA_DLQ_TOPIC=$id.dlq
  export SEER_KAFKA_GROUP=$id SEER_CLICKHOUSE_SPOOL_DIR=$work/spool-$name
  export SEER_HTTP=127.0.0.1:18090 SEER_LOG_LEVEL=warn SEER_KAFKA_MAX_POLL_RECORDS=2000
  start_serve "$work/serve-$name.log"
  phase "$name: warm-up, then $preload events preloaded"
  bin/seer loadtest --load-features --rate 2000 --duration 5s --report "$work/warmup-$name.json" >/dev/null
  bin/seer loadtest --preload "$preload" --report "$work/$name.json" | tail -n 3
  kill -TERM $serve_pid; wait $serve_pid || true
  serve_pid=
}

export SEER_KAFKA_BROKERS=127.0.0.1:${SEER_KAFKA_SASL_PORT:-9094}
export SEER_KAFKA_TLS_CA_FILE=$s/ca.crt SEER_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 SEER_KAFKA_SASL_USERNAME=admin SEER_KAFKA_SASL_PASSWORD_FILE=$s/admin.password
export SEER_REDIS_ADDR=127.0.0.1:${SEER_REDIS_TLS_PORT:-6380} SEER_REDIS_TLS_CA_FILE=$s/ca.crt SEER_REDIS_TLS_CERT_FILE=$s/serve.crt SEER_REDIS_TLS_KEY_FILE=$s/serve.key
export SEER_CLICKHOUSE_ADDR=127.0.0.1:${SEER_CLICKHOUSE_TLS_PORT:-9440} SEER_CLICKHOUSE_TLS_CA_FILE=$s/ca.crt
run secure
unset SEER_KAFKA_TLS_CA_FILE SEER_KAFKA_SASL_MECHANISM SEER_KAFKA_SASL_USERNAME SEER_KAFKA_SASL_PASSWORD_FILE
unset SEER_REDIS_TLS_CA_FILE SEER_REDIS_TLS_CERT_FILE SEER_REDIS_TLS_KEY_FILE SEER_CLICKHOUSE_TLS_CA_FILE
eval "$(deploy/local/stack.sh env)"
run plaintext

python3 - "$work" "$out" "$preload" <<'PY'
import json, sys, platform, os
work, out, preload = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = {n: json.load(open(f"{work}/{n}.json")) for n in ("plaintext", "secure")}
for n in r:
    r[n].pop("windows", None)
cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), "?")
rate = {n: round(r[n]["achieved_rate"]) for n in r}
res = {"machine": {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count()},
       "command": "loadtest/bench-secure.sh", "preload": preload,
       "plaintext": r["plaintext"], "secure": r["secure"],
       "throughput_per_s": rate,
       "secure_vs_plaintext": (rate["secure"] / rate["plaintext"]) if rate["plaintext"] and rate["secure"] else None}
json.dump(res, open(out, "w"), indent=2)
print(f"max throughput: plaintext {rate['plaintext']}/s, secure {rate['secure']}/s, ratio {res['secure_vs_plaintext']}")
print(f"written: {out}")
PY
