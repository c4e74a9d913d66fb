package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/seer-ml/seer/drift/alert"
)

// Webhook posts alerts in Alertmanager's API v2 format (a JSON list of
// {labels, annotations, startsAt, endsAt, generatorURL}); resolved alerts
// carry endsAt.
type Webhook struct {
	URL    string
	Client *http.Client
}

// Send posts firing and resolved alerts (pending ones are not sent).
func (s Webhook) Send(ctx context.Context, alerts []alert.Alert) error {
	type amAlert struct {
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       *time.Time        `json:"endsAt,omitempty"`
		GeneratorURL string            `json:"generatorURL,omitempty"`
	}
	var body []amAlert
	for _, a := range alerts {
		if a.State == alert.Pending {
			continue
		}
		labels := map[string]string{"alertname": a.Rule, "rule": a.Rule, "severity": a.Severity, "model": a.Model, "version": a.Version, "feature": a.Feature, "service": "seer"}
		for k, v := range a.Labels {
			labels[k] = v
		}
		am := amAlert{Labels: labels, StartsAt: a.StartsAt,
			Annotations: map[string]string{"summary": a.Summary, "runbook_url": Runbook(a.Family, a.Rule), "alert_id": a.ID}}
		if a.State == alert.Resolved {
			at := a.At
			am.EndsAt = &at
		}
		body = append(body, am)
	}
	if len(body) == 0 {
		return nil
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("alert webhook: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("alert webhook: %s", resp.Status)
	}
	return nil
}

// Runbook is the runbook section of a monitor alert: the family's file in
// deploy/runbooks, at the rule's heading.
func Runbook(family, rule string) string {
	return path.Join("deploy/runbooks", family+".md") + "#" + strings.ToLower(rule)
}
