package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/user"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
	"github.com/seer-ml/seer/scoring/registry"
)

// openRegistry opens the registry log (creating its topic) with the
// shared Kafka options.
func openRegistry(ctx context.Context, cfg Config, logger *slog.Logger) (*registry.Log, error) {
	log, err := registry.NewLog(kafkaOpts(cfg.Kafka, "registry", logger, nil), cfg.Registry.Topic)
	if err != nil {
		return nil, err
	}
	if err := log.Ensure(ctx); err != nil {
		log.Close()
		return nil, err
	}
	return log, nil
}

// actor names who runs a command: --actor, or user@host.
func actorName(flag string) string {
	if flag != "" {
		return flag
	}
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newRegistryCmds adds register, list, show, alias and history to models.
func newRegistryCmds(g *globals) []*cobra.Command {
	var actor, reason, output string
	quiet := func(cfg Config) *slog.Logger { return newLogger(g.stderr, "warn", cfg.LogFormat) }
	withLog := func(cmd *cobra.Command, fn func(cfg Config, log *registry.Log) error) error {
		cfg, _, err := g.load()
		if err != nil {
			return err
		}
		log, err := openRegistry(cmd.Context(), cfg, quiet(cfg))
		if err != nil {
			return err
		}
		defer log.Close()
		return fn(cfg, log)
	}
	readState := func(ctx context.Context, log *registry.Log) (*registry.State, error) {
		st, skipped, err := log.Read(ctx)
		for _, s := range skipped {
			fmt.Fprintf(g.stderr, "note: registry event skipped: %v\n", s)
		}
		return st, err
	}

	register := &cobra.Command{
		Use:   "register PACKAGE_DIR",
		Short: "Run every gate on a package and register it as a new, immutable version",
		Long: `register checks the package against every gate — the manifest is complete
(owner, description, lineage, evaluation metrics), its hash and ONNX
signature fit it, its inputs fit the live input schema (kafka.input_schema),
its examples reproduce their outputs, and its signature verifies with
registry.trusted_keys (required with registry.require_signature) — and
reports every failed gate at once. A package that passes is copied to the
artifact store (registry.store) under its model name and digest, and a
version_registered event is appended to the registry topic
(registry.topic). Registering the same package again changes nothing;
another package under an existing version is refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withLog(cmd, func(cfg Config, log *registry.Log) error {
				schema, err := schemas.LoadInputSchema(cfg.Kafka.InputSchema)
				if err != nil {
					return err
				}
				if err := scoring.InitRuntime(cfg.OnnxRuntimeLib); err != nil {
					return err
				}
				keys, err := loadTrustedKeys(cfg.Registry.TrustedKeys)
				if err != nil {
					return err
				}
				store, err := registry.OpenStore(cmd.Context(), cfg.Registry.Store)
				if err != nil {
					return err
				}
				defer store.Close()
				gates := registry.Gates{Schema: schema, Scoring: cfg.Scoring, RequireSignature: cfg.Registry.RequireSignature, TrustedKeys: keys}
				e, already, err := registry.Register(cmd.Context(), log, store, gates, args[0], actorName(actor), reason)
				if err != nil {
					return err
				}
				if output == "json" {
					return printJSON(g.stdout, e)
				}
				if already {
					fmt.Fprintf(g.stdout, "%s %s is already registered with this package (digest %s…); nothing to do\n", e.Model, e.Version, e.Digest[:12])
					return nil
				}
				fmt.Fprintf(g.stdout, "registered %s %s (digest %s…, %d files, signed by %q) in %s\n", e.Model, e.Version, e.Digest[:12], len(e.Package.Files), e.Package.SignedBy, e.Artifact)
				return nil
			})
		},
	}
	register.Flags().StringVar(&reason, "reason", "", "why this version is registered")

	list := &cobra.Command{
		Use:   "list",
		Short: "List registered models, their versions and aliases",
		Long: `list folds the registry topic (registry.topic) and prints every registered
model with its versions and where each alias points. -o json prints the
same as a list of {model, versions, aliases}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withLog(cmd, func(cfg Config, log *registry.Log) error {
				st, err := readState(cmd.Context(), log)
				if err != nil {
					return err
				}
				type row struct {
					Model    string            `json:"model"`
					Versions []string          `json:"versions"`
					Aliases  map[string]string `json:"aliases"`
				}
				var rows []row
				for _, name := range slices.Sorted(maps.Keys(st.Models)) {
					m := st.Models[name]
					rows = append(rows, row{Model: name, Versions: slices.Sorted(maps.Keys(m.Versions)), Aliases: m.Aliases})
				}
				if output == "json" {
					return printJSON(g.stdout, rows)
				}
				for _, r := range rows {
					var al []string
					for _, a := range slices.Sorted(maps.Keys(r.Aliases)) {
						al = append(al, a+"→"+r.Aliases[a])
					}
					fmt.Fprintf(g.stdout, "%-20s versions %s  aliases %s\n", r.Model, strings.Join(r.Versions, ", "), strings.Join(al, ", "))
				}
				return nil
			})
		},
	}

	show := &cobra.Command{
		Use:   "show MODEL[:VERSION|@ALIAS]",
		Short: "Show what a version is: owner, lineage, metrics, hash, signer",
		Long: `show prints one registered version — named by MODEL:VERSION, MODEL@ALIAS,
or MODEL for the newest — with its aliases, owner, description, who
registered it and why, its digest and ONNX sha256, training data and code,
held-out metrics, the key that signed it and where the artifact store keeps
it. -o json prints its version_registered event.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withLog(cmd, func(cfg Config, log *registry.Log) error {
				st, err := readState(cmd.Context(), log)
				if err != nil {
					return err
				}
				model, ref := args[0], ""
				if i := strings.IndexAny(model, ":@"); i >= 0 {
					model, ref = model[:i], model[i:]
					ref = strings.TrimPrefix(ref, ":")
				}
				e, err := st.Resolve(model, ref)
				if err != nil {
					return err
				}
				if output == "json" {
					return printJSON(g.stdout, e)
				}
				p := e.Package
				var aliases []string
				for a, v := range st.Models[model].Aliases {
					if v == e.Version {
						aliases = append(aliases, a)
					}
				}
				slices.Sort(aliases)
				fmt.Fprintf(g.stdout, "%s %s  aliases %v\n  owner       %s\n  description %s\n  registered  %s by %s (%s)\n  digest      %s\n  onnx sha256 %s\n  dataset     %s\n  code        %s (sha256 %s)\n  metrics     %v\n  signed by   %q\n  stored at   %s\n",
					e.Model, e.Version, aliases, p.Owner, p.Description, e.Time.Format("2006-01-02 15:04:05Z07:00"), e.Actor, e.Reason,
					e.Digest, p.ONNXSHA256, p.Dataset, p.Code, p.CodeSHA256, p.Metrics, p.SignedBy, e.Artifact)
				return nil
			})
		},
	}

	aliasSet := &cobra.Command{
		Use:   "set MODEL ALIAS VERSION --reason TEXT",
		Short: "Point an alias at a version (an audited, conflict-checked move)",
		Long: `alias set points ALIAS of MODEL at VERSION. The move records the version
the alias pointed at before, who moved it and why; of two concurrent moves
only the first applies, and the other gets an error naming the version
that won. seer serve instances that follow the alias switch to it.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return fmt.Errorf("--reason: required; say why the alias moves")
			}
			return withLog(cmd, func(cfg Config, log *registry.Log) error {
				e, err := log.SetAlias(cmd.Context(), args[0], args[1], args[2], actorName(actor), reason)
				if err != nil {
					return err
				}
				if output == "json" {
					return printJSON(g.stdout, e)
				}
				from := e.Previous
				if from == "" {
					from = "(none)"
				}
				fmt.Fprintf(g.stdout, "%s@%s: %s → %s (%s, by %s)\n", e.Model, e.Alias, from, e.Version, e.Reason, e.Actor)
				return nil
			})
		},
	}
	aliasSet.Flags().StringVar(&reason, "reason", "", "why the alias moves (required)")
	alias := &cobra.Command{Use: "alias", Short: "Move aliases (champion, challenger, …) between versions",
		Long: `alias works on a model's aliases: names such as champion or challenger that
point at one registered version each, and that serve instances follow
(scoring.model, scoring.alias). See alias set.`}
	alias.AddCommand(aliasSet)

	history := &cobra.Command{
		Use:   "history MODEL",
		Short: "Every alias move and load event of a model: who, when, why, from which version to which",
		Long: `history lists, in log order, every alias move of MODEL (the alias, the
version it pointed at before and after, who moved it and why) and every
version a serve instance loaded or refused (with the instance and the
reason). The registry topic keeps them forever. -o json prints the events.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withLog(cmd, func(cfg Config, log *registry.Log) error {
				st, err := readState(cmd.Context(), log)
				if err != nil {
					return err
				}
				m, ok := st.Models[args[0]]
				if !ok {
					return fmt.Errorf("model %s is not registered", args[0])
				}
				if output == "json" {
					return printJSON(g.stdout, m.History)
				}
				for _, e := range m.History {
					switch e.Type {
					case registry.AliasSet:
						from := e.Previous
						if from == "" {
							from = "(none)"
						}
						fmt.Fprintf(g.stdout, "%s  %-14s @%s %s → %s  by %s: %s\n", e.Time.Format("2006-01-02 15:04:05Z"), e.Type, e.Alias, from, e.Version, e.Actor, e.Reason)
					default:
						fmt.Fprintf(g.stdout, "%s  %-14s %s on %s: %s\n", e.Time.Format("2006-01-02 15:04:05Z"), e.Type, e.Version, e.Instance, e.Reason)
					}
				}
				return nil
			})
		},
	}
	for _, c := range []*cobra.Command{register, list, show, aliasSet, history} {
		c.Flags().StringVarP(&output, "output", "o", "text", "text or json")
		c.Flags().StringVar(&actor, "actor", "", "who does this (default: user@host)")
	}
	return []*cobra.Command{register, list, show, alias, history}
}
