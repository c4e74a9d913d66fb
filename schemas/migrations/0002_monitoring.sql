-- Monitoring tables (seer monitor). Runs on ClickHouse 18.16 and later.

-- One row per window, model version, feature and metric. family is drift
-- (distribution shift against the reference), quality (missing, out of
-- bounds, dead letters, volume) or freshness (feature age, event lag).
-- A window computed again replaces its rows (latest computed_at wins).
CREATE TABLE IF NOT EXISTS {db}.window_metrics (
    window_start  DateTime,
    window_end    DateTime,
    model         {lc},
    model_version {lc},
    family        Enum8('drift' = 1, 'quality' = 2, 'freshness' = 3),
    feature       {lc},
    metric        {lc},
    value         Float64,
    rows          UInt64,
    computed_at   DateTime,
    computed_ms   UInt64
) ENGINE = ReplacingMergeTree(computed_ms)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model, model_version, window_start, family, feature, metric);

-- One row per alert state change (pending, firing, resolved). fence is
-- the monitor's fencing token: rows from a monitor that lost its lease
-- carry an older token.
CREATE TABLE IF NOT EXISTS {db}.alerts (
    alert_id      String,
    dedup_key     String,
    rule          {lc},
    state         Enum8('pending' = 1, 'firing' = 2, 'resolved' = 3),
    severity      {lc},
    model         {lc},
    model_version {lc},
    feature       {lc},
    metric        {lc},
    value         Float64,
    threshold     Float64,
    window_start  DateTime,
    summary       String,
    label_keys    Array(String),
    label_values  Array(String),
    fence         UInt64,
    at            DateTime,
    at_ms         UInt64
) ENGINE = ReplacingMergeTree(at_ms)
PARTITION BY toYYYYMM(at)
ORDER BY (dedup_key, alert_id, state);
