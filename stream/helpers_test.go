package stream

import (
	"encoding/json"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seer-ml/seer/schemas"
)

func decodePrediction(t *testing.T, b []byte) schemas.Prediction {
	t.Helper()
	var p schemas.Prediction
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("prediction %q: %v", b, err)
	}
	return p
}

func kmsgOffsetFetch(group, topic string, partitions int32) *kmsg.OffsetFetchRequest {
	req := kmsg.NewPtrOffsetFetchRequest()
	g := kmsg.NewOffsetFetchRequestGroup()
	g.Group = group
	tp := kmsg.NewOffsetFetchRequestGroupTopic()
	tp.Topic = topic
	for p := int32(0); p < partitions; p++ {
		tp.Partitions = append(tp.Partitions, p)
	}
	g.Topics = append(g.Topics, tp)
	req.Groups = append(req.Groups, g)
	return req
}
