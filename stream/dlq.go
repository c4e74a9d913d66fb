package stream

import (
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/schemas"
)

// outputs builds the prediction and DLQ records of a prepared batch, in
// input order, and the dead-letter rows for the log. A shadow route's
// predictions go to the shadow topic only, when there is one.
func (p *Pipeline) outputs(b *batch) ([]*kgo.Record, []schemas.DeadLetter) {
	out := make([]*kgo.Record, 0, len(b.items))
	var dls []schemas.DeadLetter
	now := time.Now().UTC()
	// One array of records and one buffer of JSON for the whole batch,
	// reused from an earlier batch; the producer only reads them.
	b.preds = resize(b.preds, len(b.items))
	preds, buf := b.preds, b.json[:0]
	if want := int(p.predBytes.Load()) * len(b.items); cap(buf) < want {
		buf = make([]byte, 0, want)
	}
	for i := range b.items {
		it := &b.items[i]
		if it.Reject != nil {
			out = append(out, DeadLetterRecord(p.cfg.DLQTopic, b.recs[i], it.Reject, now))
			dls = append(dls, schemas.DeadLetter{Source: it.Event.Source, Reason: it.Reject.Reason, Stage: it.Reject.Stage, Detail: it.Reject.Error(), Time: now,
				Model: it.Model, ModelVersion: it.ModelVersion, Route: it.Route})
			continue
		}
		start := len(buf)
		buf = schemas.AppendPrediction(buf, it)
		preds[i] = kgo.Record{Topic: p.cfg.PredictionsTopic, Key: b.recs[i].Key, Value: buf[start:len(buf):len(buf)], Timestamp: it.ScoredTime}
		out = append(out, &preds[i])
		if it.Shadow != nil && p.cfg.ShadowTopic != "" {
			start = len(buf)
			buf = schemas.AppendPrediction(buf, it.Shadow)
			out = append(out, &kgo.Record{Topic: p.cfg.ShadowTopic, Key: b.recs[i].Key, Value: buf[start:len(buf):len(buf)], Timestamp: it.Shadow.ScoredTime})
		}
	}
	if len(buf) > 0 {
		per := len(buf) / len(b.items)
		p.predBytes.Store(int64(per + per/8))
	}
	b.json = buf
	return out, dls
}

// DeadLetterRecord is the DLQ record of a rejected input: its original key
// and value, and the reason headers of the contract.
func DeadLetterRecord(topic string, r *kgo.Record, why *schemas.DecodeError, now time.Time) *kgo.Record {
	return &kgo.Record{
		Topic: topic,
		Key:   r.Key,
		Value: r.Value,
		Headers: []kgo.RecordHeader{
			{Key: schemas.HeaderError, Value: []byte(why.Reason)},
			{Key: schemas.HeaderDetail, Value: []byte(why.Error())},
			{Key: schemas.HeaderStage, Value: []byte(why.Stage)},
			{Key: schemas.HeaderSourceTopic, Value: []byte(r.Topic)},
			{Key: schemas.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
			{Key: schemas.HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
			{Key: schemas.HeaderTime, Value: []byte(now.Format(time.RFC3339Nano))},
		},
	}
}
