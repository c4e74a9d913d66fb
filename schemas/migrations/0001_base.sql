-- Base schema. Runs on ClickHouse 18.16 and later. {db} is replaced by the
-- database name; {lc}, {lca}, {zstd} and {delta} by LowCardinality types and
-- codecs on servers that have them (20.1 and later), by plain types on 18.16
-- (schemas.Dialect).

CREATE DATABASE IF NOT EXISTS {db};

-- One row per scored event. Replays of the same event (after a crash) carry
-- the same prediction_id and collapse on the sorting key; count with FINAL
-- or uniqExact(prediction_id).
CREATE TABLE IF NOT EXISTS {db}.inference_log (
    prediction_id    String,
    event_id         String,
    entity_id        String,
    model            {lc},
    model_version    {lc},
    route            Enum8('production' = 1, 'shadow' = 2, 'canary' = 3),
    event_time       DateTime,
    scored_time      DateTime,
    event_time_ms    UInt64{delta},
    scored_time_ms   UInt64{delta},
    input_names      {lca},
    input_values     Array(Float64){zstd},
    input_strings    Array(String){zstd},
    input_missing    Array(UInt8){zstd},
    feature_views    {lca},
    feature_age_ms   Array(Int64){zstd},
    feature_missing  Array(UInt8),
    feature_stale    Array(UInt8),
    score            Float32{zstd},
    label            Int8,
    source_topic     {lc},
    source_partition Int32,
    source_offset    Int64
) ENGINE = ReplacingMergeTree(scored_time_ms)
PARTITION BY toYYYYMM(event_time)
ORDER BY (model, model_version, route, event_id);

-- One row per dead-letter record, keyed by its source position so that a
-- replay does not count twice.
CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    source_topic     {lc},
    source_partition Int32,
    source_offset    Int64,
    reason           {lc},
    stage            {lc},
    detail           String{zstd},
    dlq_time         DateTime,
    dlq_time_ms      UInt64{delta}
) ENGINE = ReplacingMergeTree(dlq_time_ms)
PARTITION BY toYYYYMM(dlq_time)
ORDER BY (source_topic, source_partition, source_offset);

CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree()
ORDER BY version;
