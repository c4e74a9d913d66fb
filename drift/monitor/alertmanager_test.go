package monitor

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/ksuid"

	"github.com/seer-ml/seer/drift/notify"
	"github.com/seer-ml/seer/internal/testenv"
)

// amGroup is one alert group of Alertmanager's API.
type amGroup struct {
	Labels map[string]string `json:"labels"`
	Alerts []struct {
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		Status      struct {
			State string `json:"state"`
		} `json:"status"`
	} `json:"alerts"`
}

// amGroups reads the active alerts of a real Alertmanager, by group.
func amGroups(t *testing.T, url string) []amGroup {
	t.Helper()
	resp, err := http.Get(url + "/api/v2/alerts/groups?active=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var groups []amGroup
	if err := json.NewDecoder(resp.Body).Decode(&groups); err != nil {
		t.Fatal(err)
	}
	return groups
}

// TestAlertsReachAlertmanager: seer monitor's alerts, sent to a real
// Alertmanager (Debian's prometheus-alertmanager, with
// deploy/alertmanager/alertmanager.yml) through the webhook sink, read back
// from its API: the drift alert is active, grouped by rule, model and
// version, sent twice but held once, with the labels model, version,
// route, feature and rule and a runbook URL; once the window resolves it,
// it is no longer active.
func TestAlertsReachAlertmanager(t *testing.T) {
	am := testenv.StartAlertmanager(t)
	conn, db, m, t0 := threeWindows(t, 31, time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC))
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.Window, cfg.Lateness, cfg.LeaseTTL = windowLen, 0, 5*time.Second
	prefix := "seertest-" + ksuid.New().String()
	rdb := redisClient(t)
	t.Cleanup(func() { rdb.Del(ctx, prefix+":lease:monitor", prefix+":fence:monitor") })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	hook := notify.Webhook{URL: am + "/api/v2/alerts"}
	ch := notify.ClickHouse{Conn: conn, Database: db}
	now := t0.Add(2 * windowLen)
	mon, err := New(cfg, versions(conn, db, m, nil), NewLease(rdb, prefix, "monitor", "test", cfg.LeaseTTL), []notify.Sink{hook, hook, ch}, ch, nil, logger,
		func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Step(ctx); err != nil { // windows 1 (normal) and 2 (amount shifted)
		t.Fatal(err)
	}
	var drift []string
	deadline := time.Now().Add(20 * time.Second)
	for ; time.Now().Before(deadline) && len(drift) == 0; time.Sleep(200 * time.Millisecond) {
		for _, g := range amGroups(t, am) {
			if g.Labels["alertname"] != "feature-drift" {
				continue
			}
			if g.Labels["model"] != m.Name || g.Labels["version"] != m.Version {
				t.Errorf("group labels %v: want grouped by alertname, model and version", g.Labels)
			}
			for _, a := range g.Alerts {
				l := a.Labels
				drift = append(drift, l["feature"])
				if l["rule"] != "feature-drift" || l["route"] != "production" || l["model"] != m.Name || l["version"] != m.Version || l["severity"] != "warning" {
					t.Errorf("alert labels %v: want rule, route, model, version and severity", l)
				}
				if a.Annotations["runbook_url"] != "deploy/runbooks/drift.md#feature-drift" || !strings.Contains(a.Annotations["summary"], "amount") {
					t.Errorf("alert annotations %v: want the runbook URL and a summary", a.Annotations)
				}
				if a.Status.State != "active" {
					t.Errorf("alert state %q, want active", a.Status.State)
				}
			}
		}
	}
	sort.Strings(drift)
	if strings.Join(drift, ",") != "amount" {
		t.Fatalf("active feature-drift alerts in Alertmanager: %v, want amount once (sent twice)", drift)
	}
	now = t0.Add(3 * windowLen) // window 3 is normal again: resolved
	if err := mon.Step(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		active := 0
		for _, g := range amGroups(t, am) {
			if g.Labels["alertname"] == "feature-drift" {
				active += len(g.Alerts)
			}
		}
		if active == 0 {
			return
		}
	}
	t.Error("the resolved drift alert is still active in Alertmanager")
}
