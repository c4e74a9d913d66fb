package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/scoring/registry"
	"github.com/seer-ml/seer/stream"
)

func newRolloutCmd(g *globals) *cobra.Command {
	var (
		steps, alias, reason, actor, output string
		stepDuration                        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Start, watch, promote and abort a shadow or canary rollout of a registered version",
		Long: `rollout moves a registered candidate version into the stream in steps:
"shadow" (the candidate scores every event besides production; its
predictions go to ClickHouse and kafka.shadow_topic only), then canary
weights in percent (the entities whose hash(rollout id, entity) mod 10000 is
below weight × 100 get the candidate's prediction; an entity stays on the
canary as the weight grows). serve instances following the alias
(scoring.model, scoring.alias) apply each step within seconds; promotion
moves the alias to the candidate, and an abort takes it off every route.
Every change is an event in the registry with who, why and the figures.`,
	}
	withLog := func(c *cobra.Command, fn func(cfg Config, log *registry.Log) error) error {
		cfg, _, err := g.load()
		if err != nil {
			return err
		}
		log, err := openRegistry(c.Context(), cfg, newLogger(g.stderr, "warn", cfg.LogFormat))
		if err != nil {
			return err
		}
		defer log.Close()
		return fn(cfg, log)
	}
	start := &cobra.Command{
		Use:   "start MODEL VERSION",
		Short: "Begin rolling VERSION out behind --alias in --steps",
		Long: `start records a rollout of VERSION (registered) against the version behind
--alias (default champion): its steps (--steps, for example
shadow,5,25,50,100) and how long each is held (--step-duration). One
rollout per model at a time.`,
		Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return withLog(c, func(cfg Config, log *registry.Log) error {
				e, err := log.StartRollout(c.Context(), args[0], args[1], alias, strings.Split(steps, ","), stepDuration, actorName(actor), reason)
				if err != nil {
					return err
				}
				if output == "json" {
					return printJSON(g.stdout, e)
				}
				fmt.Fprintf(g.stdout, "rollout %s of %s %s started: steps %s, %s each\n", e.Rollout, e.Model, e.Version, strings.Join(e.Steps, " → "), e.StepDuration)
				return nil
			})
		},
	}
	start.Flags().StringVar(&steps, "steps", "shadow,5,25,50,100", "comma-separated steps: shadow, then increasing canary weights in percent")
	start.Flags().DurationVar(&stepDuration, "step-duration", 10*time.Minute, "how long each step is held")
	start.Flags().StringVar(&alias, "alias", "champion", "the alias the candidate is rolled out behind")
	status := &cobra.Command{
		Use:   "status MODEL",
		Short: "Show the rollout's step, its last verdict with its figures, and the time left in the step",
		Long: `status prints the model's latest rollout: candidate and the version it is
measured against, the current step and its state (running, paused, promoted,
rolled_back), the last reason, gate and figures recorded, the serve
instances (members of kafka.group) still to put the step in service, and
the time left in the step, which counts from when the last of them did.
-o json prints the same.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return withLog(c, func(cfg Config, log *registry.Log) error {
				st, _, err := log.Read(c.Context())
				if err != nil {
					return err
				}
				m := st.Models[args[0]]
				if m == nil || m.Rollout == nil {
					return fmt.Errorf("%s has no rollout", args[0])
				}
				r := m.Rollout
				cl, err := kgo.NewClient(kafkaOpts(cfg.Kafka, "rollout-status", newLogger(g.stderr, "warn", cfg.LogFormat), nil)...)
				if err != nil {
					return err
				}
				defer cl.Close()
				live, err := stream.GroupMembers(c.Context(), cl, cfg.Kafka.Group)
				if err != nil {
					return err
				}
				waiting, since := r.Waiting(live)
				left := time.Until(since.Add(r.StepDuration)).Round(time.Second)
				if output == "json" {
					return printJSON(g.stdout, struct {
						*registry.Rollout
						StepName string   `json:"step_name"`
						Live     []string `json:"live_instances"`
						Waiting  []string `json:"waiting_instances"`
						LeftS    int64    `json:"step_left_s"`
					}{r, r.Steps[r.Step], live, waiting, int64(left.Seconds())})
				}
				fmt.Fprintf(g.stdout, "rollout %s: %s %s against %s@%s\n  step %d of %d (%s), %s, %s left in the step\n",
					r.ID, args[0], r.Candidate, r.From, r.Alias, r.Step+1, len(r.Steps), r.Steps[r.Step], r.State, max(left, 0))
				if r.Active() {
					fmt.Fprintf(g.stdout, "  serve instances: %d live in group %s, %d still to load the step %v\n", len(live), cfg.Kafka.Group, len(waiting), waiting)
				}
				fmt.Fprintf(g.stdout, "  last: %s", r.Reason)
				if r.Gate != "" {
					fmt.Fprintf(g.stdout, " (gate %s, figures %v)", r.Gate, r.Figures)
				}
				fmt.Fprintln(g.stdout)
				return nil
			})
		},
	}
	end := func(use, short, long string, t registry.EventType) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Long: long, Args: cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				if reason == "" {
					return fmt.Errorf("--reason: required")
				}
				return withLog(c, func(cfg Config, log *registry.Log) error {
					e, err := log.ChangeRollout(c.Context(), args[0], t, actorName(actor), reason, "manual", nil)
					if err != nil {
						return err
					}
					if output == "json" {
						return printJSON(g.stdout, e)
					}
					fmt.Fprintf(g.stdout, "rollout %s of %s %s: %s (%s)\n", e.Rollout, e.Model, e.Version, e.Type, e.Reason)
					return nil
				})
			},
		}
	}
	promote := end("promote MODEL --reason TEXT", "Promote the candidate now: the alias moves to it",
		`promote ends the model's rollout in progress by moving its alias to the
candidate, whatever step it is at: the manual override of the judge.`, registry.RolloutPromoted)
	abort := end("abort MODEL --reason TEXT", "Take the candidate off every route now",
		`abort ends the model's rollout in progress: the canary weight drops to 0,
the shadow stops, and the alias stays on the version it had.`, registry.RolloutRolledBack)
	for _, c := range []*cobra.Command{start, status, promote, abort} {
		c.Flags().StringVarP(&output, "output", "o", "text", "text or json")
		c.Flags().StringVar(&actor, "actor", "", "who does this (default: user@host)")
		if c != status {
			c.Flags().StringVar(&reason, "reason", "", "why")
		}
	}
	cmd.AddCommand(start, status, promote, abort)
	return cmd
}
