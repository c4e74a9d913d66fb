package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/internal/testenv"
)

// TestLoadtestSetupOnly: seer loadtest --setup-only creates the run's
// topics, with --partitions, and sends nothing, so that a serve started
// after it finds its input topic at once; --delete-topics removes them.
func TestLoadtestSetupOnly(t *testing.T) {
	broker := testenv.Kafka(t)
	run := "setup-" + strings.ToLower(ksuid.New().String()[:10])
	topics := []string{run + ".events", run + ".predictions", run + ".dlq"}
	t.Setenv("SEER_KAFKA_BROKERS", broker)
	t.Setenv("SEER_SCORING_PACKAGE", testenv.ExamplePackage(t))
	t.Setenv("SEER_KAFKA_INPUT_TOPIC", topics[0])
	t.Setenv("SEER_KAFKA_PREDICTIONS_TOPIC", topics[1])
	t.Setenv("SEER_KAFKA_DLQ_TOPIC", topics[2])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := runSeer(ctx, "loadtest", "--setup-only", "--partitions", "3")
	if err != nil {
		t.Fatalf("seer loadtest --setup-only: %v\n%s", err, out)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	defer adm.DeleteTopics(context.Background(), topics...)
	details, err := adm.ListTopics(ctx, topics...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range topics {
		if d, ok := details[name]; !ok || d.Err != nil || len(d.Partitions) != 3 {
			t.Errorf("topic %s after --setup-only: %+v; want it with 3 partitions", name, d)
		}
	}
	ends, err := adm.ListEndOffsets(ctx, topics[0])
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset != 0 {
			t.Errorf("%s partition %d ends at offset %d; want nothing sent", o.Topic, o.Partition, o.Offset)
		}
	})
	if !strings.Contains(out, "no load sent") {
		t.Errorf("output %q does not say that no load was sent", out)
	}

	// --delete-topics removes them again, and finds nothing to do the
	// second time.
	for range 2 {
		if out, err := runSeer(ctx, "loadtest", "--delete-topics"); err != nil {
			t.Fatalf("seer loadtest --delete-topics: %v\n%s", err, out)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		details, err := adm.ListTopics(ctx, topics...)
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, name := range topics {
			if d, ok := details[name]; ok && d.Err == nil {
				left = append(left, name)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("topics %v still there 30 s after --delete-topics", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFindMaxRunsItsHookBeforeEachTrial: --before-trial runs before every
// trial of a --find-max search, after the drain, and a hook that fails
// stops the search with an error that names it. No service answers here,
// so the low rate fails twice: two trials, two runs of the hook.
func TestFindMaxRunsItsHookBeforeEachTrial(t *testing.T) {
	broker := testenv.Kafka(t)
	run := "hook-" + strings.ToLower(ksuid.New().String()[:10])
	t.Setenv("SEER_KAFKA_BROKERS", broker)
	t.Setenv("SEER_SCORING_PACKAGE", testenv.ExamplePackage(t))
	t.Setenv("SEER_KAFKA_INPUT_TOPIC", run+".events")
	t.Setenv("SEER_KAFKA_PREDICTIONS_TOPIC", run+".predictions")
	t.Setenv("SEER_KAFKA_DLQ_TOPIC", run+".dlq")
	t.Setenv("SEER_KAFKA_GROUP", run)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	search := []string{"loadtest", "--find-max", "--rate", "50", "--max-rate", "100", "--search-steps", "1",
		"--duration", "1s", "--warmup", "500ms", "--drain-timeout", "1s"}

	out, err := runSeer(ctx, append(search, "--before-trial", "echo hook ran")...)
	if err != nil {
		t.Fatalf("seer loadtest --find-max: %v\n%s", err, out)
	}
	var order []string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case line == "hook ran":
			order = append(order, "hook")
		case strings.HasPrefix(line, "rate 50/s:"):
			order = append(order, "trial")
		}
	}
	if got := strings.Join(order, ","); got != "hook,trial,hook,trial" {
		t.Errorf("hook and trials ran as %s; want hook,trial,hook,trial\n%s", got, out)
	}

	out, err = runSeer(ctx, append(search, "--before-trial", "exit 3")...)
	if err == nil || !strings.Contains(err.Error(), `--before-trial "exit 3"`) || strings.Contains(out, "rate 50/s:") {
		t.Errorf("a failing hook: error %v, output %q; want the search stopped before any trial, with an error naming the hook", err, out)
	}
}
