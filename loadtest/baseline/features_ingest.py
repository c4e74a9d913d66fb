#!/usr/bin/env python3
"""The baseline of seer features ingest: the same job in Python.

Consume a topic of feature updates (confluent-kafka, consumer group,
manual commits), parse each JSON object (entity_id, event_time, features),
write a batch to Redis in one pipeline of EVALSHA runs of a Lua script
that skips an update older than the stored _ts (redis-py), and commit the
batch's offsets only after Redis acknowledged it. Bad records are counted
(seer sends them to a DLQ; the benchmark has none). It is batched the way
an experienced engineer would write it: batch polling, one pipeline per
batch, no per-record round trips.

Usage: features_ingest.py --topic T --view V [--prefix P] [--idle S]
Prints one JSON object: records, written, skipped, bad, busy_seconds, rate.
"""
import argparse
import json
import os
import time
from datetime import datetime

import redis
from confluent_kafka import Consumer

SCRIPT = """
local cur = redis.call('HGET', KEYS[1], '_ts')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_ts', ARGV[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def event_ms(v):
    if isinstance(v, (int, float)):
        return int(v)
    return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--topic", required=True)
    ap.add_argument("--view", required=True)
    ap.add_argument("--prefix", default=os.environ.get("SEER_REDIS_KEY_PREFIX", "seer"))
    ap.add_argument("--group", default="baseline-features")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--idle", type=float, default=3.0)
    a = ap.parse_args()
    host, port = os.environ.get("SEER_REDIS_ADDR", "127.0.0.1:6379").rsplit(":", 1)
    r = redis.Redis(host=host, port=int(port))
    apply = r.register_script(SCRIPT)
    c = Consumer({"bootstrap.servers": os.environ.get("SEER_KAFKA_BROKERS", "127.0.0.1:9092"), "group.id": a.group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.subscribe([a.topic])
    records = written = skipped = bad = 0
    first = last = None
    idle_since = time.monotonic()
    while True:
        msgs = c.consume(a.batch, 0.5)
        msgs = [m for m in msgs if m.error() is None]
        if not msgs:
            if time.monotonic() - idle_since >= a.idle:
                break
            continue
        idle_since = time.monotonic()
        if first is None:
            first = time.monotonic()
        pipe = r.pipeline(transaction=False)
        n = 0
        for m in msgs:
            try:
                obj = json.loads(m.value())
                entity = obj.pop("entity_id", None) or (m.key() or b"").decode()
                ts = event_ms(obj.pop("event_time"))
                args = [ts, 0]
                for k, v in obj.items():
                    if v is None or isinstance(v, (dict, list)):
                        raise ValueError(k)
                    args += [k, v if isinstance(v, str) else json.dumps(v)]
                apply(keys=[f"{a.prefix}:{a.view}:{entity}"], args=args, client=pipe)
                n += 1
            except (ValueError, KeyError, TypeError):
                bad += 1
        res = pipe.execute()
        written += sum(1 for x in res if x == 1)
        skipped += sum(1 for x in res if x == 0)
        c.commit(asynchronous=False)
        records += len(msgs)
        last = time.monotonic()
    c.close()
    busy = (last - first) if first is not None else 0.0
    print(json.dumps({"records": records, "written": written, "skipped": skipped, "bad": bad,
                      "busy_seconds": busy, "rate": records / busy if busy else 0}))


if __name__ == "__main__":
    main()
