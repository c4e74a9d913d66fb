-- Delayed labels and model performance. Runs on ClickHouse 18.16 and later.

-- One row per label as it arrived (seer labels ingest, seer labels load).
-- The table is not partitioned, so that every label of an event merges into
-- one; the latest label wins: the latest label_time, then the latest
-- ingest. Readers take argMax(…, (label_time_ms, ingested_ms)) per event_id
-- and so never depend on merges.
CREATE TABLE IF NOT EXISTS {db}.labels (
    event_id      String,
    label         UInt8,
    value         Float64,
    has_value     UInt8,
    label_time    DateTime,
    label_time_ms UInt64,
    ingested_ms   UInt64,
    source        String
) ENGINE = ReplacingMergeTree(label_time_ms)
ORDER BY event_id;

-- Window metrics: the performance family (labels joined to the log, and the
-- estimate from the scores alone).
ALTER TABLE {db}.window_metrics MODIFY COLUMN family Enum8('drift' = 1, 'quality' = 2, 'freshness' = 3, 'performance' = 4);
