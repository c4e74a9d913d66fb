package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift/labels"
	"github.com/seer-ml/seer/drift/report"
	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/featurestore/ingest"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/stream"
)

// ingestFlags are the flags both ingest commands share.
type ingestFlags struct {
	http      string
	untilIdle time.Duration
}

func (f *ingestFlags) add(cmd *cobra.Command, http string) {
	cmd.Flags().StringVar(&f.http, "http", http, `address of /metrics ("" for none)`)
	cmd.Flags().DurationVar(&f.untilIdle, "until-idle", 0, "exit once nothing has arrived for this long (the topic is drained); 0 runs until stopped")
}

// runIngest consumes topic in group into write, serving /metrics on
// f.http, printing progress to stderr, until ctx ends or the topic is
// drained (--until-idle).
func runIngest[T any](ctx context.Context, g *globals, cfg Config, logger *slog.Logger, f ingestFlags, name, topic, group, dlq string,
	decode func(*kgo.Record) (T, *schemas.DecodeError), write func(context.Context, []T) (int, error)) error {
	reg := prometheus.NewRegistry()
	if f.http != "" {
		ln, err := net.Listen("tcp", f.http)
		if err != nil {
			return fmt.Errorf("--http %s: %w", f.http, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}
	cl, err := kgo.NewClient(append(kafkaOpts(cfg.Kafka, name+"-ingest", logger, reg), append(stream.IngestOpts(group, topic), kgo.AllowAutoTopicCreation())...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	in := &stream.Ingest[T]{Name: name, Client: cl, DLQTopic: dlq, Decode: decode, Write: write, MaxPollRecords: cfg.Kafka.MaxPollRecords,
		RetryBackoffMax: cfg.Kafka.RetryBackoffMax, Logger: logger, Metrics: stream.NewIngestMetrics(reg)}
	logger.Info("ingesting", "ingest", name, "topic", topic, "group", group, "dlq", dlq)
	start, last := time.Now(), time.Time{}
	tot, err := in.Run(ctx, f.untilIdle, func(t stream.Totals) {
		if time.Since(last) >= time.Second {
			last = time.Now()
			fmt.Fprintf(g.stderr, "\r%s: %d written, %d skipped as stale, %d to the DLQ (%.0f/s)", name, t.Written, t.Skipped, t.Dead,
				float64(t.Written+t.Skipped+t.Dead)/time.Since(start).Seconds())
		}
	})
	fmt.Fprintf(g.stderr, "\n")
	rate := 0.0
	if tot.Busy > 0 {
		rate = float64(tot.Written+tot.Skipped+tot.Dead) / tot.Busy.Seconds()
	}
	fmt.Fprintf(g.stdout, "%s ingest from %s: %d written, %d skipped as stale, %d to %s, in %s (%.0f records/s while busy)\n", name, topic, tot.Written, tot.Skipped, tot.Dead, dlq,
		time.Since(start).Round(time.Millisecond), rate)
	return err
}

func newLabelsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "labels",
		Short: "Take in delayed labels (outcomes) of scored events",
		Long: `labels writes the outcomes of scored events — a chargeback, a click — into the
ClickHouse labels table, where seer monitor joins them to the inference log
by event id and measures each model version's performance per window. The
contract (labels.v1, docs/contracts.md) is one JSON object per label:
event_id, label (0 or 1), label_time (RFC 3339 or epoch ms) and, optionally,
value (a business amount). An event may be labelled again; the latest
label_time wins.`,
	}
	var f ingestFlags
	in := &cobra.Command{
		Use:   "ingest",
		Short: "Consume the labels topic into ClickHouse",
		Long: `ingest consumes ingest.labels_topic in the group <ingest.group>-labels, at
least once: each polled batch's good labels are inserted in one batch, its
bad records go to ingest.labels_dlq_topic with the reason headers of the
DLQ contract, and its offsets are committed only after both. Metrics
(seer_ingest_records_total, seer_ingest_errors_total,
seer_ingest_lag_records) are served on --http.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			conn, err := openMigrated(cmd.Context(), cfg, logger)
			if err != nil {
				return err
			}
			defer conn.Close()
			dec, err := labels.NewDecoder()
			if err != nil {
				return err
			}
			w := labels.Writer{Conn: conn, Database: cfg.ClickHouse.Database}
			return runIngest(cmd.Context(), g, cfg, logger, f, "labels", cfg.Ingest.LabelsTopic, cfg.Ingest.Group+"-labels", cfg.Ingest.LabelsDLQTopic,
				func(r *kgo.Record) (labels.Label, *schemas.DecodeError) {
					return dec.Decode(r.Value, schemas.Source{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
				},
				func(ctx context.Context, ls []labels.Label) (int, error) { return 0, w.Write(ctx, ls) })
		},
	}
	f.add(in, "127.0.0.1:8091")
	var format, rejects string
	load := &cobra.Command{
		Use:   "load FILE",
		Short: "Load a CSV, JSON Lines or Parquet file of labels into ClickHouse",
		Long: `load reads FILE — CSV with a header row, JSON Lines, or a flat Parquet file
(timestamp columns are read as such) — with the columns event_id, label
(0, 1, true or false), label_time (RFC 3339 or epoch ms) and optionally
value, and inserts the labels 10,000 per batch. A bad row is not loaded: it
goes, with its row number and the reason, to --rejects (default
FILE.rejects.jsonl), and the load goes on. Progress goes to stderr.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			file := args[0]
			t, err := report.ReadTable(file, format)
			if err != nil {
				return err
			}
			for _, c := range []string{"event_id", "label", "label_time"} {
				if _, ok := t.Values[c]; !ok {
					return fmt.Errorf("%s: no column %q (want event_id, label, label_time and optionally value)", file, c)
				}
			}
			conn, err := openMigrated(cmd.Context(), cfg, logger)
			if err != nil {
				return err
			}
			defer conn.Close()
			w := labels.Writer{Conn: conn, Database: cfg.ClickHouse.Database}
			if rejects == "" {
				rejects = file + ".rejects.jsonl"
			}
			var bad []byte
			batch := make([]labels.Label, 0, 10000)
			written, start := 0, time.Now()
			flush := func() error {
				if err := w.Write(cmd.Context(), batch); err != nil {
					return err
				}
				written += len(batch)
				batch = batch[:0]
				fmt.Fprintf(g.stderr, "\rloaded %d of %d labels", written, t.Rows)
				return nil
			}
			row := map[string]string{}
			for i := range t.Rows {
				for c, vs := range t.Values {
					row[c] = vs[i]
				}
				l, err := labels.FromText(row)
				if err != nil {
					b, _ := json.Marshal(map[string]any{"row": i + 1, "reason": err.Error(), "values": row})
					bad = append(append(bad, b...), '\n')
					continue
				}
				l.Source = fmt.Sprintf("file:%s:%d", file, i+1)
				if batch = append(batch, l); len(batch) == cap(batch) {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			if err := flush(); err != nil {
				return err
			}
			fmt.Fprintln(g.stderr)
			nbad := strings.Count(string(bad), "\n")
			if nbad > 0 {
				if err := os.WriteFile(rejects, bad, 0o644); err != nil {
					return err
				}
			}
			fmt.Fprintf(g.stdout, "loaded %d labels from %s into %s.labels in %s; %d rejected", written, file, cfg.ClickHouse.Database, time.Since(start).Round(time.Millisecond), nbad)
			if nbad > 0 {
				fmt.Fprintf(g.stdout, " (see %s)", rejects)
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	}
	load.Flags().StringVar(&format, "format", "", "csv, jsonl or parquet (default: from the file extension)")
	load.Flags().StringVar(&rejects, "rejects", "", "where rejected rows go (default FILE.rejects.jsonl)")
	cmd.AddCommand(in, load)
	return cmd
}

// newFeaturesIngestCmd is seer features ingest.
func newFeaturesIngestCmd(g *globals) *cobra.Command {
	var f ingestFlags
	var view, topic string
	var u ingest.Updates
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "ingest --view V [--topic T]",
		Short: "Consume a topic of feature updates into Redis",
		Long: `ingest consumes the feature updates of one view — one JSON object per
entity: the entity id (--entity-field, or the record key), the update's
event time (--time-field, RFC 3339 or epoch ms, required) and the features
— from --topic (default <ingest.features_topic_prefix><view>) in the group
<ingest.group>-features-<view>, and writes them to Redis in the layout
seer reads ({prefix}:{view}:{entity} → features and _ts). Each polled
batch is one pipelined round trip, each update one run of a Lua script
that skips it when the stored _ts is newer: updates may arrive out of
order and an older one never overwrites a newer one (a stale skip). Offsets
are committed after Redis acknowledged the batch (at least once); bad
records go to ingest.features_dlq_topic with the reason headers of the DLQ
contract. Metrics (seer_ingest_records_total by outcome, including skipped,
seer_ingest_errors_total, seer_ingest_lag_records) are served on --http.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			if view == "" || strings.ContainsAny(view, " :") {
				return fmt.Errorf("--view: %q must be non-empty without spaces or ':'", view)
			}
			if topic == "" {
				topic = cfg.Ingest.FeaturesTopicPrefix + view
			}
			rdb := featurestore.NewClient(cfg.Redis)
			defer rdb.Close()
			if err := rdb.Ping(cmd.Context()).Err(); err != nil {
				return fmt.Errorf("redis %s: %w", cfg.Redis.Where(), err)
			}
			w := ingest.New(rdb, cfg.Redis.KeyPrefix)
			return runIngest(cmd.Context(), g, cfg, logger, f, "features", topic, cfg.Ingest.Group+"-features-"+view, cfg.Ingest.FeaturesDLQTopic,
				func(r *kgo.Record) (ingest.Row, *schemas.DecodeError) { return u.Decode(r.Key, r.Value) },
				func(ctx context.Context, rows []ingest.Row) (int, error) { return w.Apply(ctx, view, rows, ttl) })
		},
	}
	f.add(cmd, "127.0.0.1:8092")
	cmd.Flags().StringVar(&view, "view", "", "feature view name (required)")
	cmd.Flags().StringVar(&topic, "topic", "", "topic of the view's updates (default <ingest.features_topic_prefix><view>)")
	cmd.Flags().StringVar(&u.EntityField, "entity-field", "entity_id", "field holding the entity id (else the record key)")
	cmd.Flags().StringVar(&u.TimeField, "time-field", "event_time", "field holding the update's event time")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "key TTL, for example 72h (default: none)")
	cmd.MarkFlagRequired("view")
	return cmd
}
