package loadtest

import (
	"maps"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Recorder matches predictions to the events sent, by event id, and records
// end-to-end latency from each event's scheduled send time — not its actual
// send time — so a stalled system cannot hide its queueing delay
// (no coordinated omission). It is safe for concurrent use.
type Recorder struct {
	mu         sync.Mutex
	due        map[string]time.Time // sent, not yet predicted
	hist       *hdrhistogram.Histogram
	window     *hdrhistogram.Histogram // since the last Window call
	acks       *hdrhistogram.Histogram // scheduled send to broker acknowledgement
	steady     *hdrhistogram.Histogram // events due at or after steadyFrom
	steadyFrom time.Time
	sent       int64
	matched    int64
	duplicates int64
	unknown    int64
	dlq        int64
	byReason   map[string]int64
}

// NewRecorder returns a recorder for latencies from 1 µs to 5 minutes at 3
// significant digits.
func NewRecorder() *Recorder {
	return &Recorder{
		due:      map[string]time.Time{},
		byReason: map[string]int64{},
		hist:     hdrhistogram.New(1, int64(5*time.Minute/time.Microsecond), 3),
		window:   hdrhistogram.New(1, int64(5*time.Minute/time.Microsecond), 3),
		acks:     hdrhistogram.New(1, int64(5*time.Minute/time.Microsecond), 3),
		steady:   hdrhistogram.New(1, int64(5*time.Minute/time.Microsecond), 3),
	}
}

// SteadyFrom makes Steady count only the events due at or after t: the
// warm-up before it (JIT, connection set-up, a first rebalance, caches
// filling) is left out of the figure a rate is judged on.
func (r *Recorder) SteadyFrom(t time.Time) {
	r.mu.Lock()
	r.steadyFrom = t
	r.mu.Unlock()
}

// Steady returns the percentiles of the events due since SteadyFrom.
func (r *Recorder) Steady() Latency {
	r.mu.Lock()
	defer r.mu.Unlock()
	return latencyOf(r.steady)
}

// Sent records an event scheduled for time due.
func (r *Recorder) Sent(id string, due time.Time) {
	r.mu.Lock()
	r.due[id] = due
	r.sent++
	r.mu.Unlock()
}

// Predicted records the arrival of a prediction for event id at time at.
func (r *Recorder) Predicted(id string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	due, ok := r.due[id]
	if !ok {
		if id == "" {
			r.unknown++
		} else {
			r.duplicates++ // already matched, or not sent by this run
		}
		return
	}
	delete(r.due, id)
	r.matched++
	us := max(at.Sub(due).Microseconds(), 1)
	r.hist.RecordValue(us)
	r.window.RecordValue(us)
	if !due.Before(r.steadyFrom) {
		r.steady.RecordValue(us)
	}
}

// Acked records the broker's acknowledgement of an event due at due. It
// separates the load generator's and broker's share of the latency from
// seer's.
func (r *Recorder) Acked(due, at time.Time) {
	r.mu.Lock()
	r.acks.RecordValue(max(at.Sub(due).Microseconds(), 1))
	r.mu.Unlock()
}

// AckLatency returns the percentiles of send-to-acknowledgement latency.
func (r *Recorder) AckLatency() Latency {
	r.mu.Lock()
	defer r.mu.Unlock()
	return latencyOf(r.acks)
}

// DeadLettered counts one DLQ record with its reason code.
func (r *Recorder) DeadLettered(reason string) {
	r.mu.Lock()
	r.dlq++
	r.byReason[reason]++
	r.mu.Unlock()
}

// DeadLetterReasons returns the DLQ records counted per reason code.
func (r *Recorder) DeadLetterReasons() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.byReason)
}

// Counts returns sent, matched, dead-lettered and duplicate-or-foreign
// prediction counts.
func (r *Recorder) Counts() (sent, matched, dlq, duplicates int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent, r.matched, r.dlq, r.duplicates + r.unknown
}

// Latency is a set of latency percentiles in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()),
	}
}

// Total returns the percentiles over the whole run.
func (r *Recorder) Total() Latency {
	r.mu.Lock()
	defer r.mu.Unlock()
	return latencyOf(r.hist)
}

// Window returns the percentiles since the previous Window call and starts
// a new window.
func (r *Recorder) Window() Latency {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := latencyOf(r.window)
	r.window.Reset()
	return l
}

// Outstanding returns how many sent events have no prediction yet.
func (r *Recorder) Outstanding() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.due)
}
