// Package monitor is seer monitor's loop: while it holds a Redis lease (with
// a fencing token), it runs the window jobs for every closed window — one
// per model version that served in it (window.Versions) — stores
// the metrics, feeds them to the alert state machine and hands state changes
// to the sinks. Standbys take over within two windows, resume after the last
// stored window and restore firing alerts. A Monitor is run by one goroutine;
// its clock and lag reader are dependencies.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/alert"
	"github.com/seer-ml/seer/drift/labels"
	"github.com/seer-ml/seer/drift/notify"
	"github.com/seer-ml/seer/drift/window"
	"github.com/seer-ml/seer/schemas"
)

// Config configures seer monitor.
type Config struct {
	Window      time.Duration `yaml:"window"`       // tumbling window length, by event time
	Lateness    time.Duration `yaml:"lateness"`     // how long after a window ends late events may still arrive
	LeaseTTL    time.Duration `yaml:"lease_ttl"`    // a dead monitor's lease lapses after this
	AlertsTopic string        `yaml:"alerts_topic"` // Kafka topic for alerts ("" for none)
	Reference   string        `yaml:"reference"`    // "profile" (the package's), or "START/END" (RFC 3339) of the log
	WebhookURL  string        `yaml:"webhook_url"`  // Alertmanager-compatible endpoint ("" for none)
	Rules       []alert.Rule  `yaml:"rules"`
	// LabelDelay is how long labels take to arrive: a window's performance
	// is measured from its labels (and alerted on) once this has passed
	// after it ended (it is mature); before, only its label coverage and
	// the estimate from the scores are stored. 0: no labels are expected,
	// so no window ever matures.
	LabelDelay time.Duration `yaml:"label_delay"`
}

// DefaultConfig: 5-minute windows, drift alerts at a 1% false
// discovery rate, freshness and data-quality alerts.
func DefaultConfig() Config {
	healthyP := 0.05
	return Config{
		Window: 5 * time.Minute, Lateness: time.Minute, LeaseTTL: 30 * time.Second, AlertsTopic: "seer.alerts", Reference: "profile",
		Rules: []alert.Rule{
			{Name: "feature-drift", Family: window.FamilyDrift, Metric: "pvalue_adjusted", Feature: "*", Op: "<", Threshold: 0.01, Resolve: &healthyP,
				For: 1, MinSamples: 1000, Cooldown: 1, Severity: "warning"},
			{Name: "feature-stale", Family: window.FamilyFreshness, Metric: "age_p95_ms", Feature: "*", Op: ">", Threshold: float64(time.Hour.Milliseconds()),
				For: 2, MinSamples: 100, Severity: "warning"},
			{Name: "feature-missing", Family: window.FamilyFreshness, Metric: "missing_share", Feature: "*", Op: ">", Threshold: 0.2,
				For: 2, MinSamples: 100, Severity: "warning"},
			{Name: "dead-letters", Family: window.FamilyQuality, Metric: "dead_letter_share", Feature: "", Op: ">", Threshold: 0.05,
				For: 1, MinSamples: 100, Severity: "warning"},
			{Name: "no-data", Family: window.FamilyQuality, Metric: "rows", Feature: "", Op: "<", Threshold: 1,
				For: 2, Severity: "page"},
			{Name: "volume-drop", Family: window.FamilyQuality, Metric: "volume_ratio", Feature: "", Op: "<", Threshold: 0.5,
				For: 2, Severity: "warning"},
			// Performance rules see mature windows only, whose rows are
			// the labelled events.
			{Name: "performance-drop", Family: window.FamilyPerformance, Metric: "auc_drop", Feature: "", Op: ">", Threshold: 0.05,
				For: 1, MinSamples: 200, Severity: "warning"},
			{Name: "label-coverage", Family: window.FamilyPerformance, Metric: "label_coverage", Feature: "", Op: "<", Threshold: 0.5,
				For: 2, Severity: "warning"},
		},
	}
}

// Validate names the bad field.
func (c *Config) Validate() error {
	switch {
	case c.Window < time.Second:
		return fmt.Errorf("monitor.window: %v is shorter than 1s", c.Window)
	case c.Lateness < 0:
		return fmt.Errorf("monitor.lateness: %v is negative", c.Lateness)
	case c.LabelDelay < 0:
		return fmt.Errorf("monitor.label_delay: %v is negative", c.LabelDelay)
	case c.LeaseTTL < time.Second || c.LeaseTTL > c.Window:
		return fmt.Errorf("monitor.lease_ttl: %v must be between 1s and the window (%v), so a standby takes over within two windows", c.LeaseTTL, c.Window)
	}
	if _, _, err := c.ReferenceRange(); err != nil {
		return err
	}
	_, err := alert.NewEvaluator(append([]alert.Rule(nil), c.Rules...), time.Now)
	return err
}

// ReferenceRange parses Reference: zero times for "profile".
func (c *Config) ReferenceRange() (start, end time.Time, err error) {
	if c.Reference == "" || c.Reference == "profile" {
		return time.Time{}, time.Time{}, nil
	}
	a, b, ok := strings.Cut(c.Reference, "/")
	if ok {
		if start, err = time.Parse(time.RFC3339, a); err == nil {
			end, err = time.Parse(time.RFC3339, b)
		}
	}
	if !ok || err != nil || !end.After(start) {
		return time.Time{}, time.Time{}, fmt.Errorf("monitor.reference: %q is not profile or START/END in RFC 3339 with END after START", c.Reference)
	}
	return start, end, nil
}

// LagFunc returns the scoring consumer group's lag in records.
type LagFunc func(ctx context.Context) (int64, error)

// FiringAlerts returns the alerts of a model (every version) that are
// firing, as stored by the ClickHouse sink.
type FiringAlerts interface {
	Firing(ctx context.Context, model string) ([]alert.Alert, error)
}

// Monitor runs the window job for each closed window while it holds the
// lease, stores the metrics and routes alert state changes to the sinks.
// Run returns nil when ctx ends.
type Monitor struct {
	cfg    Config
	jobs   *window.Versions
	perf   labels.Performance
	eval   *alert.Evaluator
	lease  *Lease
	sinks  []notify.Sink
	firing FiringAlerts
	lag    LagFunc // nil: no consumer_lag_records metric
	log    *slog.Logger
	now    func() time.Time

	leader  bool
	token   uint64
	lastEnd time.Time // end of the last window evaluated
	// matureEnd is the end of the last window whose performance was
	// measured mature.
	matureEnd time.Time
	volumes   map[string][]float64 // per version, rows of its last windows, for volume_ratio
}

// volumeWindows is how many previous windows make the volume baseline.
const volumeWindows = 6

// New wires a monitor. lag may be nil; now is the clock that decides which
// windows have closed and stamps alerts. Performance is measured in the
// database the jobs read.
func New(cfg Config, jobs *window.Versions, lease *Lease, sinks []notify.Sink, firing FiringAlerts, lag LagFunc, logger *slog.Logger, now func() time.Time) (*Monitor, error) {
	eval, err := alert.NewEvaluator(append([]alert.Rule(nil), cfg.Rules...), now)
	if err != nil {
		return nil, err
	}
	return &Monitor{cfg: cfg, jobs: jobs, perf: labels.Performance{Conn: jobs.Conn, Database: jobs.Database}, eval: eval, lease: lease, sinks: sinks, firing: firing, lag: lag,
		log: logger.With("component", "monitor", "model", jobs.Model), now: now, volumes: map[string][]float64{}}, nil
}

// Run loops until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	defer m.lease.Release(context.WithoutCancel(ctx))
	tick := time.NewTicker(m.cfg.LeaseTTL / 3)
	defer tick.Stop()
	for {
		if err := m.Step(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("monitor step failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Step renews or takes the lease and, as leader, evaluates every window
// that has closed (end + lateness ≤ now) since the last one.
func (m *Monitor) Step(ctx context.Context) error {
	held, token, err := m.lease.Hold(ctx)
	if err != nil {
		return err
	}
	if !held {
		if m.leader {
			m.log.Warn("lost the monitor lease; standing by")
		}
		m.leader = false
		return nil
	}
	if !m.leader || token != m.token {
		m.leader, m.token = true, token
		m.log.Info("holding the monitor lease", "fence", token)
		if err := m.takeOver(ctx); err != nil {
			return err
		}
	}
	for {
		end := m.lastEnd.Add(m.cfg.Window)
		if m.now().Before(end.Add(m.cfg.Lateness)) {
			break
		}
		if err := m.evaluate(ctx, m.lastEnd, end, true); err != nil {
			return err
		}
		m.lastEnd = end
	}
	for m.matureEnd.Before(m.lastEnd) && m.mature(m.matureEnd.Add(m.cfg.Window)) {
		end := m.matureEnd.Add(m.cfg.Window)
		if err := m.evaluatePerformance(ctx, m.matureEnd, end, true); err != nil {
			return err
		}
		m.matureEnd = end
	}
	return nil
}

// mature reports whether the labels of a window ending at end have had
// time to arrive.
func (m *Monitor) mature(end time.Time) bool {
	return m.cfg.LabelDelay > 0 && !m.now().Before(end.Add(m.cfg.LabelDelay))
}

// Backfill computes every window that starts in [from, to) — drift,
// quality, freshness and performance (mature or not, as of now) — and
// stores their metrics, then returns. It needs no lease and sends no
// alerts; run twice, it stores the same rows (the later computed_at wins).
// Use it to catch up after an outage, or to measure a past range.
func (m *Monitor) Backfill(ctx context.Context, from, to time.Time, progress func(start time.Time)) error {
	for start := from.Truncate(m.cfg.Window); start.Before(to); start = start.Add(m.cfg.Window) {
		end := start.Add(m.cfg.Window)
		if err := m.evaluate(ctx, start, end, false); err != nil {
			return fmt.Errorf("window %s: %w", start.Format(time.RFC3339), err)
		}
		if m.mature(end) {
			if err := m.evaluatePerformance(ctx, start, end, false); err != nil {
				return fmt.Errorf("window %s: %w", start.Format(time.RFC3339), err)
			}
		}
		if progress != nil {
			progress(start)
		}
	}
	return nil
}

// takeOver resumes after the last stored window and restores firing alerts.
func (m *Monitor) takeOver(ctx context.Context) error {
	last, err := m.jobs.LastEnd(ctx)
	if err != nil {
		return err
	}
	if last.IsZero() { // none yet: start with the window that closes next
		last = m.now().Add(-m.cfg.Lateness).Truncate(m.cfg.Window).Add(-m.cfg.Window)
	}
	m.lastEnd = last
	if m.matureEnd, err = m.resumeMature(ctx, last); err != nil {
		return err
	}
	open, err := m.firing.Firing(ctx, m.jobs.Model)
	if err != nil {
		return err
	}
	for _, a := range open {
		m.eval.Restore(a.DedupKey, a.ID, a.StartsAt)
	}
	return nil
}

// resumeMature returns where measuring mature windows resumes: after the
// last mature window stored, else at the first window stored immature,
// else at last (where the drift windows resume).
func (m *Monitor) resumeMature(ctx context.Context, last time.Time) (time.Time, error) {
	var mature, immature time.Time
	if err := m.jobs.Conn.QueryRow(ctx, MaturityQuery(m.jobs.Database, m.jobs.Model)).Scan(&mature, &immature); err != nil {
		return time.Time{}, fmt.Errorf("reading the last mature window: %w", err)
	}
	switch {
	case mature.Unix() > 0:
		return mature, nil
	case immature.Unix() > 0 && immature.Before(last):
		return immature, nil
	}
	return last, nil
}

// MaturityQuery is the SQL resumeMature runs: the end of the model's last
// mature window and the start of its first immature one.
func MaturityQuery(database, model string) string {
	return fmt.Sprintf("SELECT maxIf(window_end, value = 1), minIf(window_start, value = 0) FROM %s.window_metrics WHERE model = %s AND family = 'performance' AND metric = 'mature'",
		database, drift.Quote(model))
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// evaluate measures the window [start, end) for each version that served
// in it, stores the metrics and, when alerting, sends the alert state
// changes. The consumer lag belongs to the production version's window.
// An immature window's label coverage and estimated performance are stored
// with it; a mature one's performance is evaluatePerformance's.
func (m *Monitor) evaluate(ctx context.Context, start, end time.Time, alerting bool) error {
	jobs, err := m.jobs.Jobs(ctx, start, end)
	if err != nil {
		return err
	}
	var alerts []alert.Alert
	for _, job := range jobs {
		t0 := time.Now()
		w, err := job.Run(ctx, start, end)
		if err != nil {
			return err
		}
		if vs := m.volumes[w.Version]; len(vs) > 0 {
			w.Metrics = append(w.Metrics, window.Metric{Family: window.FamilyQuality, Name: "volume_ratio", Value: float64(w.Rows) / max(mean(vs), 1)})
		}
		m.volumes[w.Version] = append(m.volumes[w.Version], float64(w.Rows))
		if len(m.volumes[w.Version]) > volumeWindows {
			m.volumes[w.Version] = m.volumes[w.Version][1:]
		}
		if m.lag != nil && job.Production {
			if lag, err := m.lag(ctx); err != nil {
				m.log.Warn("reading consumer lag", "err", err)
			} else {
				w.Metrics = append(w.Metrics, window.Metric{Family: window.FamilyFreshness, Name: "consumer_lag_records", Value: float64(lag)})
			}
		}
		if err := job.Store(ctx, w); err != nil {
			return err
		}
		if !m.mature(end) {
			pw, err := m.performance(ctx, job, start, end, false)
			if err != nil {
				return err
			}
			if err := job.Store(ctx, pw); err != nil {
				return err
			}
		}
		if !alerting {
			continue
		}
		as := m.eval.Evaluate(w)
		m.log.Info("window evaluated", "version", w.Version, "production", job.Production, "start", start, "end", end, "rows", w.Rows,
			"metrics", len(w.Metrics), "alerts", len(as), "took", time.Since(t0).Round(time.Millisecond))
		alerts = append(alerts, as...)
	}
	return m.send(ctx, alerts)
}

// performance measures a job's version's performance in [start, end) as a
// window of the performance family whose rows are the labelled events.
func (m *Monitor) performance(ctx context.Context, job *window.Job, start, end time.Time, mature bool) (*window.Window, error) {
	r, err := m.perf.Measure(ctx, job.Manifest(), []schemas.Route{schemas.RouteProduction, schemas.RouteCanary}, start, end, mature)
	if err != nil {
		return nil, err
	}
	w := &window.Window{Model: job.Manifest().Name, Version: job.Manifest().Version, Route: string(job.Route()), Start: start, End: end, Rows: r.Labeled}
	for name, v := range r.Figures {
		w.Metrics = append(w.Metrics, window.Metric{Family: window.FamilyPerformance, Name: name, Value: v})
	}
	sort.Slice(w.Metrics, func(a, b int) bool { return w.Metrics[a].Name < w.Metrics[b].Name })
	return w, nil
}

// evaluatePerformance measures the performance of the mature window
// [start, end) for each version that served in it, stores it and, when
// alert is set, sends the alert state changes of the performance rules.
func (m *Monitor) evaluatePerformance(ctx context.Context, start, end time.Time, alerting bool) error {
	jobs, err := m.jobs.Jobs(ctx, start, end)
	if err != nil {
		return err
	}
	var alerts []alert.Alert
	for _, job := range jobs {
		w, err := m.performance(ctx, job, start, end, true)
		if err != nil {
			return err
		}
		if err := job.Store(ctx, w); err != nil {
			return err
		}
		m.log.Info("window performance measured", "version", w.Version, "start", start, "end", end, "labeled", w.Rows)
		if alerting {
			alerts = append(alerts, m.eval.Evaluate(w)...)
		}
	}
	return m.send(ctx, alerts)
}

// send hands alert state changes to every sink while the fencing token is
// current.
func (m *Monitor) send(ctx context.Context, alerts []alert.Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	if ok, err := m.lease.Current(ctx, m.token); err != nil || !ok {
		return errors.Join(errors.New("fencing token is no longer current; not sending alerts"), err)
	}
	for i := range alerts {
		alerts[i].Fence = m.token
	}
	// A failing sink does not hold the others or the next window back.
	for _, s := range m.sinks {
		if err := s.Send(ctx, alerts); err != nil {
			m.log.Error("alert sink failed", "sink", fmt.Sprintf("%T", s), "alerts", len(alerts), "err", err)
		}
	}
	return nil
}
