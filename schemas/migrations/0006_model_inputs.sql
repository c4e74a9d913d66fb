-- The input names of each model version, once per version instead of on
-- every inference_log row. Runs on ClickHouse 18.16 and later.
--
-- A version's rows carry their inputs in manifest order, so the names of
-- input_values[i] are the same for every row of the version. From this
-- migration on the writer leaves inference_log.input_names empty (it is
-- kept, so rows written before stay readable as they were) and writes the
-- version's names here, before its first rows. Read an input by name with
-- a join on (model, model_version): docs/clickhouse.md.
CREATE TABLE IF NOT EXISTS {db}.model_inputs (
    model         {lc},
    model_version {lc},
    input_names   {lca},
    logged_ms     UInt64
) ENGINE = ReplacingMergeTree(logged_ms)
ORDER BY (model, model_version);

-- The versions logged before this migration: their names, from their rows.
-- This reads inference_log's model, model_version and input_names once.
INSERT INTO {db}.model_inputs (model, model_version, input_names, logged_ms)
SELECT model, model_version, any(input_names), max(scored_time_ms)
FROM {db}.inference_log WHERE notEmpty(input_names)
GROUP BY model, model_version;
