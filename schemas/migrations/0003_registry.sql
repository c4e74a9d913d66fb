-- The model registry's ClickHouse mirror, so that analysts can join any
-- prediction to its version's lineage. The registry topic stays the source
-- of truth; seer monitor keeps these tables in step with it. Runs on
-- ClickHouse 18.16 and later.

-- One row per registered version (versions are immutable).
CREATE TABLE IF NOT EXISTS {db}.model_versions (
    model         String,
    version       String,
    digest        String,
    registered_at DateTime,
    registered_ms UInt64,
    actor         String,
    reason        String,
    owner         String,
    description   String,
    onnx_sha256   String,
    dataset       String,
    code          String,
    code_sha256   String,
    signed_by     String,
    artifact      String,
    metric_names  Array(String),
    metric_values Array(Float64),
    event_id      String
) ENGINE = ReplacingMergeTree(registered_ms)
ORDER BY (model, version);

-- One row per alias move and per load or refusal by a serve instance.
CREATE TABLE IF NOT EXISTS {db}.model_events (
    event_id String,
    type     Enum8('version_registered' = 1, 'alias_set' = 2, 'version_loaded' = 3, 'load_failed' = 4),
    model    String,
    version  String,
    alias    String,
    previous String,
    actor    String,
    reason   String,
    instance String,
    at       DateTime,
    at_ms    UInt64
) ENGINE = ReplacingMergeTree()
ORDER BY (model, at_ms, event_id);
