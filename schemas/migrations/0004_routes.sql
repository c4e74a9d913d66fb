-- Rollouts. Runs on ClickHouse 18.16 and later. 18.16 has no ADD COLUMN IF
-- NOT EXISTS; Migrate treats "column already exists" as applied, so a
-- migration stopped half way can run again.

-- The inference log: each route's scoring time (the ONNX run this row was
-- scored in, in microseconds), and on a production row whether a rollout's
-- candidate failed the event (candidate_failed = 1): the canary could not
-- score it, so production did, or the shadow could not.
ALTER TABLE {db}.inference_log ADD COLUMN scoring_us UInt32 DEFAULT 0;
ALTER TABLE {db}.inference_log ADD COLUMN candidate_failed UInt8 DEFAULT 0;

-- Dead letters: the model, version and route that rejected the event at the
-- score stage; empty for events rejected before a route was chosen
-- (decode, schema, features).
ALTER TABLE {db}.dead_letters ADD COLUMN model {lc} DEFAULT '';
ALTER TABLE {db}.dead_letters ADD COLUMN model_version {lc} DEFAULT '';
ALTER TABLE {db}.dead_letters ADD COLUMN route {lc} DEFAULT '';

-- Window metrics: the route the version served on (production, or canary
-- for a rollout's candidate).
ALTER TABLE {db}.window_metrics ADD COLUMN route {lc} DEFAULT '';

-- The registry mirror: rollout events, with the rollout, the step, and the
-- gate and figures that decided it.
ALTER TABLE {db}.model_events MODIFY COLUMN type Enum8('version_registered' = 1, 'alias_set' = 2, 'version_loaded' = 3, 'load_failed' = 4,
    'rollout_started' = 5, 'rollout_stepped' = 6, 'rollout_paused' = 7, 'rollout_promoted' = 8, 'rollout_rolled_back' = 9);
ALTER TABLE {db}.model_events ADD COLUMN rollout String DEFAULT '';
ALTER TABLE {db}.model_events ADD COLUMN step String DEFAULT '';
ALTER TABLE {db}.model_events ADD COLUMN gate String DEFAULT '';
ALTER TABLE {db}.model_events ADD COLUMN figure_names Array(String);
ALTER TABLE {db}.model_events ADD COLUMN figure_values Array(Float64);
