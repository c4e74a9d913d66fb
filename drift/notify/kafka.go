package notify

import (
	"context"
	"encoding/json"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift/alert"
)

// Kafka produces alerts as JSON to a topic, keyed by dedup key.
type Kafka struct {
	Client *kgo.Client
	Topic  string
}

// Send produces and waits for the acknowledgements.
func (s Kafka) Send(ctx context.Context, alerts []alert.Alert) error {
	recs := make([]*kgo.Record, 0, len(alerts))
	for _, a := range alerts {
		v, err := json.Marshal(a)
		if err != nil {
			return err
		}
		recs = append(recs, &kgo.Record{Topic: s.Topic, Key: []byte(a.DedupKey), Value: v})
	}
	return s.Client.ProduceSync(ctx, recs...).FirstErr()
}
