package loadtest

import (
	"context"
	"fmt"
	"math"
)

// Trial is one constant-rate run of a throughput search.
type Trial struct {
	Rate     float64 `json:"rate"`
	Achieved float64 `json:"achieved_rate"`
	P99Ms    float64 `json:"p99_ms"` // after the warm-up
	OK       bool    `json:"ok"`
	Confirm  bool    `json:"confirmation,omitempty"` // the run that confirms the found rate
	Retry    bool    `json:"retry,omitempty"`        // the second run of a rate whose first run failed
}

// Measure runs load at rate and returns the achieved rate and p99.
type Measure func(ctx context.Context, rate float64) (achieved, p99Ms float64, err error)

// SearchMax finds the highest rate in [lo, hi) at which p99 stays within
// sloMs and the pipeline keeps up (achieved ≥ 95% of the target), by
// bisection over steps trials after checking lo. hi is taken to fail
// without a trial of its own (a range is chosen to hold the answer; a
// result within the last interval below hi says the range was too low).
// The bisection is geometric (the midpoint of 1,000 and 100,000 is
// 10,000), so a wide range costs few trials: after n steps the answer is
// known to within a factor r = (hi/lo)^(1/2^n). A rate fails only when
// two runs in a row fail: one slow run near the limit (a neighbour's burst
// on a shared machine) retries instead of halving the range, so two
// searches agree more often.
//
// The found rate is then confirmed by one more run. When that fails (it
// passed by luck), the rate is taken to fail: the bisection resumes
// between it and the highest rate below it that passed, until the two are
// within r, and its answer is confirmed in turn. So a lucky pass costs
// the trials to search again below it, not the range down to an old
// passing rate. After steps failed confirmations (or when the bisection
// is back at lo) lo stands. It returns 0 when even lo fails.
func SearchMax(ctx context.Context, lo, hi, sloMs float64, steps int, measure Measure) (float64, []Trial, error) {
	if !(lo > 0 && hi > lo && sloMs > 0) {
		return 0, nil, fmt.Errorf("search needs 0 < lo < hi and a positive SLO (got %v, %v, %v)", lo, hi, sloMs)
	}
	var trials []Trial
	try := func(rate float64, confirm bool) (bool, error) {
		runs := 2 // a failed run is run again: two in a row fail a rate
		if confirm {
			runs = 1 // the rate passed before: this is its second chance
		}
		for run := range runs {
			achieved, p99, err := measure(ctx, rate)
			if err != nil {
				return false, err
			}
			ok := p99 <= sloMs && achieved >= 0.95*rate
			trials = append(trials, Trial{Rate: rate, Achieved: achieved, P99Ms: p99, OK: ok, Confirm: confirm, Retry: run == 1})
			if ok || ctx.Err() != nil {
				return ok, nil
			}
		}
		return false, nil
	}
	ok, err := try(lo, false)
	if err != nil || !ok {
		return 0, trials, err
	}
	r := math.Pow(hi/lo, 1/math.Pow(2, float64(steps)))
	good, bad := lo, hi
	bisect := func() error {
		for bad/good > r*(1+1e-9) && ctx.Err() == nil {
			mid := math.Sqrt(good * bad)
			ok, err := try(mid, false)
			if err != nil {
				return err
			}
			if ok {
				good = mid
			} else {
				bad = mid
			}
		}
		return nil
	}
	for range steps {
		if err := bisect(); err != nil || good == lo || ctx.Err() != nil {
			return lo, trials, err
		}
		ok, err := try(good, true)
		if err != nil || ok {
			return good, trials, err
		}
		// A lucky pass: search again below it, from the highest rate
		// under it that passed.
		bad, good = good, lo
		for _, tr := range trials {
			if tr.OK && tr.Rate < bad && tr.Rate > good {
				good = tr.Rate
			}
		}
	}
	return lo, trials, ctx.Err()
}

// AtRangeTop reports whether best, found by a search of [lo, hi) in
// steps, lies in the search's top interval: no rate above it failed but
// hi, which is never tried. The system may then sustain more than hi, and
// best says only how high the range reached.
func AtRangeTop(best, lo, hi float64, steps int) bool {
	top := hi / math.Pow(hi/lo, 1/math.Pow(2, float64(steps)))
	return best > 0 && best*(1+1e-9) >= top
}
