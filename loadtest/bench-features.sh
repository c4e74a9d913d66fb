#!/usr/bin/env bash
# loadtest/bench-features.sh — seer features ingest against its Python
# baseline (loadtest/baseline/features_ingest.py: confluent-kafka and
# redis-py doing the same job), in one run on this machine: BENCH_UPDATES
# feature updates (default 200000; 20000 entities, 4 features each; every
# other update of one entity in ten older than the one before it) are produced to a 4-partition
# topic on the local broker, then each consumes the whole topic in its own
# group into Redis under its own key prefix, with the same out-of-order-safe
# Lua script. The rate is records per second from the first record fetched
# to the last batch committed. Traffic stays on 127.0.0.1 and is bounded.
#
# Writes loadtest/results/<date>-<host>-features-ingest.json.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/local/stack.sh up >/dev/null
eval "$(deploy/local/stack.sh env)"
. loadtest/serve.sh
n=${BENCH_UPDATES:-200000}
id=bench-features-$(date +%s)
out=loadtest/results/$(date -u +%Y-%m-%d)-$(hostname)-features-ingest.json
py=${SEER_PYTHON:-$SEER_CACHE_DIR/venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"; redis-cli -p "${SEER_REDIS_PORT:-6379}" --scan --pattern "$id-*" | xargs -r redis-cli -p "${SEER_REDIS_PORT:-6379}" del >/dev/null' EXIT

phase "producing $n feature updates to $id"
"$py" - "$id" "$n" <<'PY'
import json, sys
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
topic, n = sys.argv[1], int(sys.argv[2])
import os
brokers = os.environ.get("SEER_KAFKA_BROKERS", "127.0.0.1:9092")
adm = AdminClient({"bootstrap.servers": brokers})  # kept: a dropped client cancels the request
adm.create_topics([NewTopic(topic, 4, 1)])[topic].result()
p = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "batch.num.messages": 10000})
for i in range(n):
    e = i % 20000
    # Entities ending in 9 get every other round late: older than the
    # round before, so out of order (a stale skip).
    late = e % 10 == 9 and (i // 20000) % 2 == 1
    ts = 1_700_000_000_000 + (i - (40000 if late else 0)) * 10
    p.produce(topic, key=f"u{e:06d}", value=json.dumps({"entity_id": f"u{e:06d}", "event_time": ts,
              "txn_count_24h": i % 37, "avg_amount_30d": round(12.5 + (i % 1000) / 7, 3), "tier": "gold" if e % 3 else "silver", "vip": e % 11 == 0}))
    if i % 10000 == 0:
        p.poll(0)
p.flush()
PY

phase "seer features ingest"
SEER_REDIS_KEY_PREFIX=$id-seer SEER_INGEST_GROUP=$id-seer SEER_LOG_LEVEL=warn \
  bin/seer features ingest --view user_stats --topic "$id" --until-idle 3s --http= 2>/dev/null | tee "$work/seer.txt"
phase "Python baseline (confluent-kafka, redis-py)"
"$py" loadtest/baseline/features_ingest.py --topic "$id" --view user_stats --prefix "$id-py" --group "$id-py" | tee "$work/py.json"

python3 - "$work" "$out" "$n" "$id" <<'PY'
import json, os, platform, re, sys
work, out, n, topic = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
line = open(f"{work}/seer.txt").read()
m = re.search(r"(\d+) written, (\d+) skipped as stale, (\d+) to .*\(([\d.]+) records/s while busy\)", line)
seer = {"written": int(m[1]), "skipped": int(m[2]), "dead": int(m[3]), "rate": float(m[4])}
py = json.load(open(f"{work}/py.json"))
cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), "?")
res = {"machine": {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count()}, "command": "loadtest/bench-features.sh",
       "updates": n, "topic_partitions": 4, "seer": seer, "python_baseline": py,
       "seer_vs_python": seer["rate"] / py["rate"] if py["rate"] else None}
json.dump(res, open(out, "w"), indent=2)
print(f"seer features ingest {seer['rate']:.0f} updates/s ({seer['written']} written, {seer['skipped']} stale skips); "
      f"Python baseline {py['rate']:.0f} updates/s ({py['written']} written, {py['skipped']} stale skips); ratio {res['seer_vs_python']:.1f}x")
print(f"written to {out}")
PY
