#!/usr/bin/env python3
"""The baseline: what a competent team would write instead of seer, in Python.

It does seer serve's job with the same model package, services and topics
layout: consume JSON events (confluent-kafka, consumer group, manual
commits), validate them against the input schema's required fields and
bounds, read features from Redis in one pipelined round trip per batch
(redis-py), score the batch with onnxruntime, produce predictions
(confluent-kafka), insert log rows into ClickHouse in batches
(clickhouse-driver, native protocol, explicit columns), and commit offsets
only after both. Invalid events go to the DLQ topic with a reason header.
It is batched and tuned the way an experienced engineer would write it:
batch polling, one Redis pipeline and one ONNX run per batch, lingering
producer, no per-event round trips.

Configuration comes from the same SEER_* environment variables as seer.

Usage: service.py [--package DIR] [--schema FILE] [--batch N]
"""
import argparse
import json
import math
import os
import signal
import sys
import time
from datetime import datetime, timezone

import numpy as np
import onnxruntime as ort
import redis
import yaml
from clickhouse_driver import Client as ClickHouse
from confluent_kafka import Consumer, Producer


def env(name, default):
    return os.environ.get(name, default)


def load_inputs(package, schema_path):
    with open(os.path.join(package, "model.yaml")) as f:
        m = yaml.safe_load(f)
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    return m, schema


def encode(inp, raw):
    dtype = inp["dtype"]
    if raw is None:
        raw = inp["default"]
    if dtype == "category":
        cats = inp["categories"]
        return float(cats.index(raw)) if raw in cats else float(cats.index("other")) if "other" in cats else -1.0
    if dtype == "bool":
        return 1.0 if raw in (True, "true", "1", 1) else 0.0
    return float(raw)


def validate(schema, ev):
    for f in schema["fields"]:
        v = ev.get(f["name"])
        if v is None:
            if f.get("required"):
                return "missing_field"
            continue
        t = f["type"]
        if t in ("number", "integer"):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return "wrong_type"
            if not math.isfinite(v):
                return "not_finite"
            if t == "integer" and v != int(v):
                return "wrong_type"
            if ("min" in f and v < f["min"]) or ("max" in f and v > f["max"]):
                return "out_of_bounds"
        elif t == "string" and not isinstance(v, str):
            return "wrong_type"
        elif t == "boolean" and not isinstance(v, bool):
            return "wrong_type"
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap.add_argument("--package", default=env("SEER_SCORING_PACKAGE", os.path.join(root, "deploy/examples/card-fraud")))
    ap.add_argument("--schema", default=os.path.join(root, "schemas/events/card_transactions.v1.yaml"))
    ap.add_argument("--batch", type=int, default=int(env("SEER_KAFKA_MAX_POLL_RECORDS", "1000")))
    args = ap.parse_args()

    m, schema = load_inputs(args.package, args.schema)
    brokers = env("SEER_KAFKA_BROKERS", "127.0.0.1:9092")
    in_topic = env("SEER_KAFKA_INPUT_TOPIC", "card-transactions")
    out_topic = env("SEER_KAFKA_PREDICTIONS_TOPIC", "card-transactions.predictions")
    dlq_topic = env("SEER_KAFKA_DLQ_TOPIC", "card-transactions.dlq")
    db = env("SEER_CLICKHOUSE_DATABASE", "seer")
    prefix = env("SEER_REDIS_KEY_PREFIX", "seer")
    rhost, rport = env("SEER_REDIS_ADDR", "127.0.0.1:6379").rsplit(":", 1)
    chost, cport = env("SEER_CLICKHOUSE_ADDR", "127.0.0.1:9000").rsplit(":", 1)

    views = []
    for inp in m["inputs"]:
        parts = inp["source"].split(".")
        if parts[0] == "feature" and parts[1] not in views:
            views.append(parts[1])
    feats = {v: [i["source"].split(".")[2] for i in m["inputs"] if i["source"].startswith(f"feature.{v}.")] for v in views}

    sess_opts = ort.SessionOptions()
    sess_opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(args.package, m["artifact"]["file"]), sess_opts, providers=["CPUExecutionProvider"])
    out = m["outputs"][0]
    threshold = m.get("threshold", 0.5)
    rdb = redis.Redis(host=rhost, port=int(rport))
    ch = ClickHouse(host=chost, port=int(cport), database=db)
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": env("SEER_KAFKA_GROUP", "seer-baseline"),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "topic.metadata.refresh.interval.ms": 2000})
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 2, "acks": "all", "enable.idempotence": True})
    consumer.subscribe([in_topic])
    names = [i["name"] for i in m["inputs"]]
    cols = ("prediction_id, event_id, entity_id, model, model_version, route, event_time, scored_time, event_time_ms, scored_time_ms, "
            "input_values, input_strings, input_missing, feature_views, feature_age_ms, feature_missing, feature_stale, "
            "score, label, source_topic, source_partition, source_offset")
    # The version's input names go to model_inputs once, as seer's writer
    # does (migration 0006), not on every log row.
    ch.execute(f"INSERT INTO {db}.model_inputs (model, model_version, input_names, logged_ms) VALUES",
               [(m["name"], str(m["version"]), names, int(time.time() * 1000))])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print(f"baseline consuming {in_topic}", file=sys.stderr, flush=True)
    while not stop:
        msgs = consumer.consume(num_messages=args.batch, timeout=0.05)
        if not msgs:
            continue
        good, events, consumed = [], [], 0
        for msg in msgs:
            if msg.error():  # e.g. the topic does not exist yet
                continue
            consumed += 1
            try:
                ev = json.loads(msg.value())
                reason = validate(schema, ev) if isinstance(ev, dict) else "invalid_json"
            except ValueError:
                reason = "invalid_json"
            if reason:
                producer.produce(dlq_topic, msg.value(), msg.key(), headers=[("seer-error", reason.encode())])
                continue
            good.append(msg)
            events.append(ev)
        if good:
            pipe = rdb.pipeline(transaction=False)
            for msg, ev in zip(good, events):
                entity = (msg.key() or b"").decode() or ev.get("user_id", "")
                for v in views:
                    pipe.hmget(f"{prefix}:{v}:{entity}", feats[v] + ["_ts"])
            replies = pipe.execute()
            now = time.time()
            rows, per_view = [], len(views)
            x = np.empty((len(good), len(names)), dtype=np.float32)
            for i, ev in enumerate(events):
                fv = {}
                ages, missing = [], []
                for j, v in enumerate(views):
                    vals = replies[i * per_view + j]
                    ts = vals[-1]
                    missing.append(1 if ts is None else 0)
                    ages.append(-1 if ts is None else int(now * 1000) - int(ts))
                    fv[v] = {k: (None if vals[k2] is None else float(vals[k2])) for k2, k in enumerate(feats[v])}
                for c, inp in enumerate(m["inputs"]):
                    parts = inp["source"].split(".")
                    raw = ev.get(parts[1]) if parts[0] == "event" else fv[parts[1]][parts[2]]
                    x[i, c] = encode(inp, raw)
                rows.append((ages, missing))
            scores = sess.run([out["tensor"]], {m["artifact"]["input"]: x})[0][:, out["index"]]
            scored = datetime.now(timezone.utc).replace(tzinfo=None)
            log = []
            for i, (msg, ev) in enumerate(zip(good, events)):
                s = float(scores[i])
                eid = ev.get("event_id") or f"{msg.topic()}-{msg.partition()}-{msg.offset()}"
                et = datetime.fromisoformat(ev["event_time"].replace("Z", "+00:00")).replace(tzinfo=None)
                pred = {"prediction_id": f"b-{eid}", "event_id": eid, "entity_id": (msg.key() or b"").decode(),
                        "model": m["name"], "model_version": str(m["version"]), "route": "production",
                        "score": s, "label": int(s >= threshold), "event_time": ev["event_time"], "scored_time": scored.isoformat() + "Z"}
                producer.produce(out_topic, json.dumps(pred).encode(), msg.key())
                ages, missing = rows[i]
                log.append((pred["prediction_id"], eid, pred["entity_id"], m["name"], str(m["version"]), "production", et, scored,
                            int(et.timestamp() * 1000), int(scored.timestamp() * 1000), [float(v) for v in x[i]],
                            [""] * len(names), [0] * len(names), views, ages, missing, [0] * len(views),
                            s, int(s >= threshold), msg.topic(), msg.partition(), msg.offset()))
            ch.execute(f"INSERT INTO {db}.inference_log ({cols}) VALUES", log)
        if consumed:
            producer.flush()
            consumer.commit(asynchronous=False)
    consumer.close()


if __name__ == "__main__":
    main()
