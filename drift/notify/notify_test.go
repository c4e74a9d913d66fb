package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift/alert"
	"github.com/seer-ml/seer/drift/window"
	"github.com/seer-ml/seer/internal/testenv"
)

func TestWebhookSinkAlertmanagerFormat(t *testing.T) {
	var got []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("webhook body %s: %v", b, err)
		}
	}))
	defer srv.Close()
	now := time.Now().UTC()
	alerts := []alert.Alert{
		{ID: "a1", Rule: "feature-drift", State: alert.Firing, Severity: "warning", Model: "m", Version: "1", Feature: "amount", Family: window.FamilyDrift, StartsAt: now, At: now, Summary: "s", Labels: map[string]string{"team": "risk"}},
		{ID: "a2", Rule: "feature-drift", State: alert.Pending, Model: "m"},
		{ID: "a3", Rule: "no-data", State: alert.Resolved, Severity: "page", Model: "m", Family: window.FamilyQuality, StartsAt: now, At: now.Add(time.Minute)},
	}
	if err := (Webhook{URL: srv.URL}).Send(context.Background(), alerts); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("webhook got %d alerts, want 2 (pending is not sent)", len(got))
	}
	labels := got[0]["labels"].(map[string]any)
	if labels["alertname"] != "feature-drift" || labels["team"] != "risk" || labels["severity"] != "warning" || got[0]["startsAt"] == nil || got[0]["endsAt"] != nil {
		t.Errorf("firing alert as sent: %v", got[0])
	}
	if got[1]["endsAt"] == nil {
		t.Errorf("resolved alert has no endsAt: %v", got[1])
	}
}

// TestKafkaAlertSink sends an alert to a topic on the real broker and
// reads it back.
func TestKafkaAlertSink(t *testing.T) {
	topic := "seertest-alerts-" + ksuid.New().String()
	cl, err := kgo.NewClient(kgo.SeedBrokers(testenv.Kafka(t)), kgo.ConsumeTopics(topic), kgo.AllowAutoTopicCreation(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Cleanup(func() { kadm.NewClient(cl).DeleteTopics(context.Background(), topic) })
	a := alert.Alert{ID: "a1", DedupKey: "feature-drift|m|1|amount", Rule: "feature-drift", State: alert.Firing, Value: 0.001}
	if err := (Kafka{Client: cl, Topic: topic}).Send(ctx, []alert.Alert{a}); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for len(recs) == 0 && ctx.Err() == nil {
		recs = append(recs, cl.PollFetches(ctx).Records()...)
	}
	if len(recs) != 1 || string(recs[0].Key) != a.DedupKey {
		t.Fatalf("alerts topic holds %d records", len(recs))
	}
	var got alert.Alert
	if err := json.Unmarshal(recs[0].Value, &got); err != nil || got.ID != "a1" || got.State != alert.Firing || got.Value != 0.001 {
		t.Errorf("alert on Kafka = %+v, %v", got, err)
	}
}
