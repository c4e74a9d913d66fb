package loadtest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRunEndsWhenTheBrokerDies: the broker goes away a second into a run;
// the run ends with an error that says events could not be produced,
// within its delivery timeout, instead of waiting for the broker forever.
func TestRunEndsWhenTheBrokerDies(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "in", "out", "dlq"))
	if err != nil {
		t.Fatal(err)
	}
	var stop sync.Once
	defer stop.Do(c.Close)
	gen, _ := exampleGenerator(t)
	cfg := RunConfig{InputTopic: "in", PredictionsTopic: "out", DLQTopic: "dlq",
		Profile:      Profile{Kind: "constant", Rate: 200, Duration: 4 * time.Second},
		DrainTimeout: time.Second, DeliveryTimeout: time.Second,
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)},
		EachSecond: func(elapsed time.Duration) error {
			if elapsed >= time.Second {
				stop.Do(c.Close)
			}
			return nil
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	_, err = Run(ctx, cfg, gen)
	if ctx.Err() != nil {
		t.Fatalf("Run ran until its context ended (err %v): it waited for the dead broker", err)
	}
	if err == nil || !strings.Contains(err.Error(), "could not be produced") {
		t.Fatalf("Run after the broker died = %v; want an error that events could not be produced", err)
	}
}
